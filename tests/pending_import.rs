//! The daemon's pending import: a settings document in `<state_dir>/import.toml` (where
//! `bastion firstboot` writes EC2 user-data's) is imported into the store at start, before the
//! daemon is ready, through the admin import (audited like `bastion import`), then renamed
//! `import.toml.applied`: a restart does not apply it again, and an admin's later changes stay.
//! The same document handed over again changes nothing. A bad document (broken TOML, an unknown
//! field, a rule the store refuses) is renamed `import.toml.refused`, logged with its line at
//! most, never its text, and the daemon serves what the store holds.

mod support;

use std::path::Path;

use support::admin::cli;
use support::bastion::Bastion;
use support::certs::write_private;
use support::clients::{redis_cli, Endpoint};
use support::redis::{RedisOpts, RedisServer};
use support::stack::current_user;

const APP: &str = "app";
/// Sits on a line of every bad document: it must never reach the logs.
const SECRET: &str = "user-data-secret-5e1f0c";

struct Rig {
    redis: RedisServer,
    state: tempfile::TempDir,
    config: String,
    pw_file: std::path::PathBuf,
    _sockets: tempfile::TempDir,
}

impl Rig {
    fn new() -> Rig {
        let password = format!("pw-{}", support::process::random_hex());
        let redis = RedisServer::start(RedisOpts::users(&[APP], &password));
        let state = tempfile::Builder::new()
            .prefix("bastion-pending-")
            .tempdir()
            .expect("state dir");
        let sockets = tempfile::Builder::new()
            .prefix("bastion-pending-sock-")
            .tempdir()
            .expect("socket dir");
        let secrets = state.path().join("secrets");
        std::fs::create_dir(&secrets).expect("secrets dir");
        let pw_file = write_private(&secrets.join("up.pw"), password.as_bytes());
        let s = |p: &Path| toml::Value::String(p.display().to_string()).to_string();
        let config = format!(
            "state_dir = {}\nsecrets_dir = {}\n[listeners.unix]\ndirectory = {}\n",
            s(state.path()),
            s(&secrets),
            s(sockets.path())
        );
        Rig {
            redis,
            state,
            config,
            pw_file,
            _sockets: sockets,
        }
    }

    fn state(&self) -> &Path {
        self.state.path()
    }

    fn pending(&self) -> std::path::PathBuf {
        self.state().join("import.toml")
    }

    /// A settings document as user-data carries it: a database on the test's Redis, a role
    /// and a user bound to the Unix user running the tests.
    fn document(&self) -> String {
        let s = |v: &str| toml::Value::String(v.to_string()).to_string();
        format!(
            r#"# bastion-settings
[bastion]
version = 1

[[databases]]
name = "fromud"
address = {addr}
auth = {{ mode = "password", password_file = {pw} }}
default_db_user = "app"

[[roles]]
name = "udrole"
db_users = ["app"]
db_names = ["fromud"]

[[users]]
name = "carol"
roles = ["udrole"]
unix_user = {me}
"#,
            addr = s(&self.redis.plain_addr().to_string()),
            pw = s(&self.pw_file.display().to_string()),
            me = s(&current_user()),
        )
    }

    fn start(&self) -> Bastion {
        Bastion::start(&self.config, self.state())
    }

    fn admin(&self, args: &[&str]) -> String {
        let out = cli(&self.state().join("run/admin.sock"), args);
        out.assert_success();
        out.stdout()
    }
}

fn ping(b: &Bastion, db: &str) -> String {
    redis_cli(&Endpoint::unix(b.socket_path(db)), &["PING"])
        .stdout()
        .trim()
        .to_string()
}

#[test]
fn a_pending_document_is_imported_once_audited_and_renamed() {
    let rig = Rig::new();
    std::fs::write(rig.pending(), rig.document()).unwrap();

    let mut b = rig.start();
    // Imported before READY: the socket of the new database is there at once.
    b.expect_log_line(
        0,
        &["pending import applied", "3 added, 0 changed, 0 unchanged"],
        &[],
    );
    assert_eq!(ping(&b, "fromud"), "PONG", "{}", b.logs());
    for (action, target) in [
        ("database.put", "fromud"),
        ("role.put", "udrole"),
        ("user.put", "carol"),
    ] {
        b.expect_log_line(
            0,
            &[
                "admin.mutation",
                "request=\"import\"",
                "caller=\"pending-import\"",
                action,
                target,
            ],
            &[],
        );
    }
    assert!(!rig.pending().exists());
    let applied = rig.state().join("import.toml.applied");
    assert_eq!(std::fs::read_to_string(&applied).unwrap(), rig.document());
    let ready = b.logs().find("bastion ready").expect("ready line");
    let imported = b.logs().find("pending import applied").unwrap();
    assert!(imported < ready, "imported after READY:\n{}", b.logs());
    assert!(rig.admin(&["user", "ls"]).contains("carol"));
    assert!(rig.admin(&["db", "ls"]).contains("fromud"));

    // Handed over again (a second firstboot run): nothing written, nothing audited.
    b.stop();
    std::fs::write(rig.pending(), rig.document()).unwrap();
    let mut b = rig.start();
    b.expect_log_line(
        0,
        &["pending import applied", "0 added, 0 changed, 3 unchanged"],
        &[],
    );
    assert!(!b.logs().contains("admin.mutation"), "{}", b.logs());
    assert!(!rig.pending().exists());

    // An admin's change after the import stays across restarts: nothing is applied again.
    rig.admin(&["user", "rm", "carol"]);
    b.stop();
    let b = rig.start();
    assert!(!b.logs().contains("pending import"), "{}", b.logs());
    assert!(!rig.admin(&["user", "ls"]).contains("carol"));
    assert!(rig.admin(&["role", "ls"]).contains("udrole"));
    // The database is still served; the test's uid is bound to no one now.
    let answer = ping(&b, "fromud");
    assert!(answer.contains("not bound to a bastion user"), "{answer}");
}

#[test]
fn a_bad_document_is_refused_without_its_text_and_the_daemon_serves() {
    let rig = Rig::new();
    std::fs::write(rig.pending(), rig.document()).unwrap();
    let mut b = rig.start();
    b.expect_log_line(0, &["pending import applied"], &[]);
    b.stop();

    let refused = rig.state().join("import.toml.refused");
    let cases = [
        // Broken TOML: the parser's message would quote line 3.
        (
            format!("# bastion-settings\n[[databases]]\nname = \"{SECRET}\n"),
            "line 3",
        ),
        // Valid TOML, unknown field: serde's message would quote the line, or the value.
        (
            format!("# bastion-settings\n[[databases]]\nname = \"x\"\naddress = \"127.0.0.1:1\"\npassword = \"{SECRET}\"\n"),
            "line 5",
        ),
        // A wrong type: serde's message would name the value.
        (
            format!("# bastion-settings\n[[users]]\nname = \"u\"\nroles = \"{SECRET}\"\n"),
            "line 4",
        ),
        // Against the store's rules: a user holding a role no one declared.
        (
            "# bastion-settings\n[[users]]\nname = \"dave\"\nroles = [\"nosuchrole\"]\n".to_string(),
            "nosuchrole",
        ),
        // User-data naming the on-box CA key, or the daemon's environment, as a password: the
        // daemon would send it to the database's address (issue 11).
        (
            format!(
                "# bastion-settings\n[[databases]]\nname = \"steal\"\naddress = \"127.0.0.1:9\"\n\
                 auth = {{ mode = \"password\", password_file = {} }}\n",
                toml::Value::String(rig.state().join("ca/ca.key").display().to_string())
            ),
            "auth.password_file",
        ),
        (
            "# bastion-settings\n[[databases]]\nname = \"steal\"\naddress = \"127.0.0.1:9\"\n\
             auth = { mode = \"password\", password_env = \"HOME\" }\n"
                .to_string(),
            "auth.password_env",
        ),
    ];
    for (document, says) in cases {
        std::fs::write(rig.pending(), &document).unwrap();
        let mut b = rig.start();
        let line = b.expect_log_line(0, &["pending import refused", says], &[]);
        b.assert_no_secrets(&[SECRET]);
        assert!(!line.contains("name ="), "{line}");
        assert!(!rig.pending().exists());
        assert_eq!(std::fs::read_to_string(&refused).unwrap(), document);
        // Nothing of it was imported, and what the store held still serves.
        assert!(!b.logs().contains("admin.mutation"), "{}", b.logs());
        assert!(!rig.admin(&["user", "ls"]).contains("dave"));
        assert_eq!(ping(&b, "fromud"), "PONG", "{}", b.logs());
        b.stop();
    }
}
