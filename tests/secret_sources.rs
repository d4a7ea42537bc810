//! Where a database's password may come from, and when it is read (issue 11, items 1–2).
//!
//! An admin who may declare databases (`db add`, `db add --replace`, `import`) must not be
//! able to make the daemon send a file or a variable of its choosing to a host of theirs: the
//! on-box CA key, `/proc/self/environ`, a file reached through a symlink, a group-readable or
//! oversized file, `HOME`. Each is refused where it is declared, naming the key and the path,
//! and a TCP sink standing in for the attacker's host receives no byte.
//!
//! A password is read when the database is declared and on `SIGHUP`, never per session.

mod support;

use std::io::Read;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use std::process::Command;

use support::admin::Admin;
use support::bastion::BASTION_BIN;
use support::certs::write_private;
use support::clients::redis_cli;
use support::process::run;
use support::stack::APP;

/// A TCP listener standing in for the attacker's host: counts every byte sent to it.
struct Sink {
    listener: TcpListener,
}

impl Sink {
    fn start() -> Sink {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind sink");
        listener.set_nonblocking(true).expect("nonblocking");
        Sink { listener }
    }

    fn addr(&self) -> String {
        self.listener.local_addr().expect("addr").to_string()
    }

    /// Every byte any connection sent so far.
    fn received(&self) -> Vec<u8> {
        let mut all = Vec::new();
        while let Ok((mut c, _)) = self.listener.accept() {
            c.set_read_timeout(Some(Duration::from_millis(500))).ok();
            let _ = c.read_to_end(&mut all);
        }
        all
    }
}

/// A path a test creates beside the stack's temp dirs (named after the secrets dir, so outside
/// it): removed when the test ends, passed or failed, instead of left in /tmp.
struct Beside(std::path::PathBuf);

impl Drop for Beside {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn password_sources_outside_the_secrets_dir_are_refused_where_declared() {
    let a = Admin::start();
    let s = &a.stack;
    let sink = Sink::start();
    let secrets = s.secrets_dir();
    let ca_key = s.state_dir().join("ca").join("ca.key");
    assert!(ca_key.exists(), "{}", ca_key.display());

    // A symlink in the secrets dir pointing at the CA key; a sibling directory whose name
    // starts like the secrets dir's; a group-readable file; a 5 KiB file.
    std::os::unix::fs::symlink(&ca_key, secrets.join("link.pw")).expect("symlink");
    let evil_dir = format!("{}-evil", secrets.display());
    std::fs::create_dir_all(&evil_dir).expect("evil dir");
    let _evil_dir = Beside(evil_dir.clone().into());
    let evil = write_private(&Path::new(&evil_dir).join("pw"), b"evil");
    let readable = write_private(&secrets.join("readable.pw"), b"pw");
    std::fs::set_permissions(&readable, std::fs::Permissions::from_mode(0o640)).unwrap();
    let big = write_private(&secrets.join("big.pw"), &[b'x'; 5 * 1024]);
    let dotdot = secrets
        .join("..")
        .join(secrets.file_name().unwrap())
        .join("up.pw");
    write_private(&secrets.join("up.pw"), s.upstream_password.as_bytes());

    let files = [
        (ca_key.clone(), "directly in the secrets directory"),
        (
            "/proc/self/environ".into(),
            "directly in the secrets directory",
        ),
        (secrets.join("link.pw"), "symbolic link"),
        (evil, "directly in the secrets directory"),
        (readable.clone(), "0640"),
        (big, "over the limit of 4096 bytes"),
        (dotdot, "without '..'"),
    ];
    let sink_addr = sink.addr();
    for (file, why) in &files {
        let file = file.to_string_lossy();
        for replace in [false, true] {
            let name = if replace { "plaindb" } else { "x" };
            let mut args = vec![
                "db",
                "add",
                name,
                "--address",
                &sink_addr,
                "--auth",
                "password",
                "--password-file",
                &file,
                "--default-db-user",
                APP,
            ];
            if replace {
                args.push("--replace");
            }
            let out = a.cli(&args);
            assert!(!out.status.success(), "{args:?} was accepted: {out}");
            let err = out.stderr();
            assert!(
                err.contains("auth.password_file") && err.contains(&*file) && err.contains(why),
                "{args:?}: {out}"
            );
        }
    }
    for var in ["HOME", "PATH", "AWS_SECRET_ACCESS_KEY", "NOTIFY_SOCKET"] {
        let out = a.cli(&[
            "db",
            "add",
            "x",
            "--address",
            &sink_addr,
            "--auth",
            "password",
            "--password-env",
            var,
        ]);
        assert!(
            !out.status.success(),
            "--password-env {var} was accepted: {out}"
        );
        assert!(
            out.stderr().contains("auth.password_env") && out.stderr().contains("BASTION_"),
            "{out}"
        );
    }
    // The same through `import` (the path user-data takes too).
    let doc = s.secrets_dir().with_extension("import.toml");
    let _doc = Beside(doc.clone());
    std::fs::write(
        &doc,
        format!(
            "[[databases]]\nname = \"x\"\naddress = \"{}\"\nauth = {{ mode = \"password\", password_file = {} }}\n",
            sink.addr(),
            toml::Value::String(ca_key.display().to_string())
        ),
    )
    .unwrap();
    let out = a.cli(&["import", &doc.to_string_lossy()]);
    assert!(!out.status.success(), "import accepted the CA key: {out}");
    assert!(out.stderr().contains("auth.password_file"), "{out}");

    // Nothing was declared; plaindb still has its own password and works.
    assert!(!a.ok(&["db", "ls"]).contains(&sink.addr()));
    let out = redis_cli(&s.unix("plaindb"), &["PING"]);
    assert!(out.stdout().contains("PONG"), "{out}");
    let key = std::fs::read(&ca_key).unwrap();
    let got = sink.received();
    assert!(got.is_empty(), "the sink received {} bytes", got.len());
    let logs = s.bastion.logs();
    assert!(!logs.contains(String::from_utf8_lossy(&key[40..80]).as_ref()));

    // A file in the secrets dir, private and small, is accepted.
    add_fresh(&a, &secrets.join("up.pw"));
    let out = redis_cli(&s.unix("fresh"), &["PING"]);
    assert!(out.stdout().contains("PONG"), "{out}");
}

/// A self-hosted managed database's `admin_password_file` is a secret the daemon sends upstream
/// (`AUTH admin_user <file>` before each `ACL SETUSER`): it keeps the rules of every password
/// file. Declared through `import` (user-data takes it too) or `db add --auth managed` pointing at the CA key, `/proc/self/environ` or a symlink to the CA key, it is
/// refused naming `auth.admin_password_file`, the path and the rule, and the host it names hears
/// nothing.
#[test]
fn a_managed_admin_password_file_keeps_the_password_file_rules() {
    let a = Admin::start();
    let s = &a.stack;
    let sink = Sink::start();
    let secrets = s.secrets_dir();
    let ca_key = s.state_dir().join("ca").join("ca.key");
    assert!(ca_key.exists(), "{}", ca_key.display());
    std::os::unix::fs::symlink(&ca_key, secrets.join("admin-link.pw")).expect("symlink");
    let doc = s.secrets_dir().with_extension("managed.toml");
    let _doc = Beside(doc.clone());
    for (file, why) in [
        (ca_key.clone(), "directly in the secrets directory"),
        (
            "/proc/self/environ".into(),
            "directly in the secrets directory",
        ),
        (secrets.join("admin-link.pw"), "symbolic link"),
    ] {
        std::fs::write(
            &doc,
            format!(
                "[[databases]]\nname = \"owned\"\naddress = \"{}\"\n\
                 auth = {{ mode = \"managed\", engine = \"redis\", admin_user = \"adm\", \
                 admin_password_file = {} }}\nmanaged_users = [\"app\"]\n",
                sink.addr(),
                toml::Value::String(file.display().to_string())
            ),
        )
        .unwrap();
        let import = a.cli(&["import", &doc.to_string_lossy()]);
        // The same through `db add --auth managed`.
        let sink_addr = sink.addr();
        let path = file.to_string_lossy();
        let add = a.cli(&[
            "db",
            "add",
            "owned",
            "--address",
            &sink_addr,
            "--auth",
            "managed",
            "--engine",
            "redis",
            "--admin-user",
            "adm",
            "--admin-password-file",
            &path,
            "--managed-users",
            "app",
        ]);
        for out in [import, add] {
            assert!(!out.status.success(), "accepted {}: {out}", file.display());
            let err = out.stderr();
            assert!(
                err.contains("auth.admin_password_file")
                    && err.contains(&*path)
                    && err.contains(why),
                "{}: {out}",
                file.display()
            );
        }
    }
    assert!(!a.ok(&["db", "ls"]).contains("owned"));

    // In the secrets directory it is accepted, and `secret rm` then refuses to take it away.
    write_private(&secrets.join("admin.pw"), b"adm-pw");
    std::fs::write(
        &doc,
        format!(
            "[[databases]]\nname = \"owned\"\naddress = \"{}\"\n\
             auth = {{ mode = \"managed\", engine = \"redis\", admin_user = \"adm\", \
             admin_password_file = {} }}\nmanaged_users = [\"app\"]\n",
            s.redis.plain_addr(),
            toml::Value::String(secrets.join("admin.pw").display().to_string())
        ),
    )
    .unwrap();
    a.ok(&["import", &doc.to_string_lossy()]);
    a.ok(&[
        "db",
        "add",
        "owned2",
        "--address",
        &s.redis.plain_addr().to_string(),
        "--auth",
        "managed",
        "--engine",
        "valkey",
        "--admin-user",
        "adm",
        "--admin-password-file",
        &secrets.join("admin.pw").to_string_lossy(),
        "--managed-users",
        "app,reporting",
        "--rotation-interval",
        "5m",
    ]);
    let shown = a.ok(&["db", "show", "owned2"]);
    assert!(shown.contains("managed"), "{shown}");
    let out = a.cli(&["secret", "rm", "admin.pw"]);
    assert!(!out.status.success(), "{out}");
    assert!(out.stderr().contains("owned"), "{out}");

    let got = sink.received();
    assert!(got.is_empty(), "the sink received {} bytes", got.len());
    let key = std::fs::read(&ca_key).unwrap();
    assert!(!s
        .bastion
        .logs()
        .contains(String::from_utf8_lossy(&key[40..80]).as_ref()));
}

/// The boot config's databases seed the store on its first start: one whose password source
/// breaks the rules stops the start, naming the key, and nothing is imported.
#[test]
fn the_config_is_refused_at_first_start_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secrets");
    std::fs::create_dir(&secrets).unwrap();
    let s = |p: &Path| toml::Value::String(p.display().to_string()).to_string();
    for (source, key, why) in [
        (
            "password_file = \"/proc/self/environ\"".to_string(),
            "databases[0].auth.password_file",
            "directly in the secrets directory",
        ),
        (
            format!("password_file = {}", s(&dir.path().join("state/ca/ca.key"))),
            "databases[0].auth.password_file",
            "directly in the secrets directory",
        ),
        (
            "password_env = \"HOME\"".to_string(),
            "databases[0].auth.password_env",
            "BASTION_",
        ),
        (
            "admin_password_file = \"/proc/self/environ\"".to_string(),
            "databases[0].auth.admin_password_file",
            "directly in the secrets directory",
        ),
        (
            format!(
                "admin_password_file = {}",
                s(&dir.path().join("state/ca/ca.key"))
            ),
            "databases[0].auth.admin_password_file",
            "directly in the secrets directory",
        ),
    ] {
        // A managed (self-hosted) database declares its admin's password file instead.
        let (auth, tail) = if source.starts_with("admin_") {
            (
                format!("mode = \"managed\", engine = \"redis\", admin_user = \"adm\", {source}"),
                "managed_users = [\"app\"]\n",
            )
        } else {
            (format!("mode = \"password\", {source}"), "")
        };
        let config = dir.path().join("bastion.toml");
        std::fs::write(
            &config,
            format!(
                "state_dir = {state}\nsecrets_dir = {secrets}\n[listeners.unix]\ndirectory = {run}\n\
                 [[databases]]\nname = \"x\"\naddress = \"127.0.0.1:9\"\n\
                 auth = {{ {auth} }}\n{tail}",
                state = s(&dir.path().join("state")),
                secrets = s(&secrets),
                run = s(&dir.path().join("run")),
            ),
        )
        .unwrap();
        let out = run(
            Command::new(BASTION_BIN)
                .arg("serve")
                .arg("--config")
                .arg(&config),
            None,
            Duration::from_secs(30),
        );
        assert!(!out.status.success(), "{source}: {out}");
        assert!(
            out.stderr().contains(key) && out.stderr().contains(why),
            "{source}: {out}"
        );
    }
}

#[test]
fn a_password_is_read_when_declared_and_on_reload_not_per_session() {
    let a = Admin::start();
    let s = &a.stack;
    let pw = write_private(
        &s.secrets_dir().join("fresh.pw"),
        s.upstream_password.as_bytes(),
    );
    add_fresh(&a, &pw);
    let ping = || redis_cli(&s.unix("fresh"), &["PING"]);
    assert!(ping().stdout().contains("PONG"), "{}", ping());

    // The file changes: sessions go on with the password read at declaration…
    write_private(&pw, s.wrong_password.as_bytes());
    assert!(ping().stdout().contains("PONG"), "{}", ping());
    // …until a reload reads the new one (wrong: the upstream refuses it).
    assert!(s.bastion.reload().contains("reload done"));
    let out = ping();
    assert!(!out.stdout().contains("PONG"), "{out}");

    // Right again after the next reload; then the file goes: sessions go on…
    write_private(&pw, s.upstream_password.as_bytes());
    assert!(s.bastion.reload().contains("reload done"));
    assert!(ping().stdout().contains("PONG"), "{}", ping());
    std::fs::remove_file(&pw).unwrap();
    assert!(ping().stdout().contains("PONG"), "{}", ping());
    // …until a reload finds it gone: the database refuses sessions, and the log says why.
    let mark = s.bastion.log_mark();
    assert!(s.bastion.reload().contains("reload done"));
    let line = s.bastion.expect_log_line(
        mark,
        &["password unavailable", "fresh"],
        &["auth.password_file"],
    );
    assert!(line.contains(&*pw.to_string_lossy()), "{line}");
    let out = ping();
    assert!(!out.stdout().contains("PONG"), "{out}");
    // The other databases were read again too, and work.
    assert!(redis_cli(&s.unix("plaindb"), &["PING"])
        .stdout()
        .contains("PONG"));
    s.assert_no_secrets_in_logs();
}

/// `db add fresh` on the stack's Redis with the password in `pw`.
fn add_fresh(a: &Admin, pw: &Path) {
    a.ok(&[
        "db",
        "add",
        "fresh",
        "--address",
        &a.stack.redis.plain_addr().to_string(),
        "--auth",
        "password",
        "--password-file",
        &pw.to_string_lossy(),
        "--default-db-user",
        APP,
    ]);
}
