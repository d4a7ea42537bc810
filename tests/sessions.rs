//! Certificates and live sessions against a running daemon, a real redis-server and real
//! clients: `cert issue` through the admin socket records the serial, `cert ls` shows it,
//! `cert revoke` ends that certificate's live session and refuses it from then on while other
//! certificates keep working, `sessions ls|kill` see and end exactly one session (in its relay
//! or still in its handshake), unknown ids and serials are clear errors, and a non-admin caller
//! is refused. A certificate issued with no daemon running is recorded too.

mod support;

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Child;
use std::time::Duration;

use serde_json::Value;
use support::admin::Admin;
use support::bastion::{Bastion, BASTION_BIN, LOG_LIMIT};
use support::clients::{redis_cli, spawn_redis_cli, ClientCert, Endpoint};
use support::process::{is_root, poll, run};
use support::stack::{StackOpts, PASSWORD_ENV, USER};

/// Hang guard for a client to notice its session ended.
const EXIT_LIMIT: Duration = Duration::from_secs(20);

/// A stack whose handshake deadline cannot end a test's idle handshake before the test does.
fn start() -> Admin {
    Admin::start_with(StackOpts {
        handshake_timeout: "120s".into(),
        extra_toml: "\n[[users]]\nname = \"bob\"\nroles = [\"apps\"]\n".into(),
        ..Default::default()
    })
}

/// `bastion cert issue USER --out DIR --socket S` → the bundle and its serial.
#[track_caller]
fn issue(a: &Admin, user: &str, dir: &Path) -> (ClientCert, String) {
    let out = a.ok(&[
        "cert",
        "issue",
        user,
        "--ttl",
        "1h",
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert!(out.contains("via the daemon"), "{out}");
    bundle(&out, user, dir)
}

/// The bundle `cert issue` wrote into `dir`, and the serial it printed.
#[track_caller]
fn bundle(stdout: &str, user: &str, dir: &Path) -> (ClientCert, String) {
    let serial = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("serial"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| panic!("no serial line in:\n{stdout}"));
    let cert = ClientCert {
        cert: dir.join(format!("{user}.crt")),
        key: dir.join(format!("{user}.key")),
        ca: dir.join("ca.crt"),
    };
    (cert, serial)
}

#[track_caller]
fn json(a: &Admin, args: &[&str]) -> Vec<Value> {
    let mut args = args.to_vec();
    args.push("--json");
    let out = a.ok(&args);
    match serde_json::from_str(&out) {
        Ok(Value::Array(items)) => items,
        other => panic!("`{args:?}` did not print a JSON array ({other:?}):\n{out}"),
    }
}

/// The live session matching `pick` once it is relaying (polled; a hang guard, not a timing).
#[track_caller]
fn live_session(a: &Admin, pick: impl Fn(&Value) -> bool) -> Value {
    poll(LOG_LIMIT, || {
        json(a, &["sessions", "ls"])
            .into_iter()
            .find(|s| pick(s) && s["state"] == "relay")
    })
    .unwrap_or_else(|| {
        panic!(
            "no such live session; sessions ls:\n{}",
            a.ok(&["sessions", "ls"])
        )
    })
}

#[track_caller]
fn wait_exit(child: &mut Child, what: &str) {
    let exited = poll(EXIT_LIMIT, || child.try_wait().ok().flatten());
    if exited.is_none() {
        let _ = child.kill();
        panic!("`{what}` still runs: its session was not ended");
    }
}

fn mtls(a: &Admin, cert: &ClientCert) -> Endpoint {
    Endpoint::mtls(a.stack.bastion.tls_addr(0), Some("plaindb"), cert)
}

#[test]
fn revoking_a_certificate_ends_its_session_and_refuses_it_afterwards() {
    let a = start();
    let (cert, serial) = issue(&a, USER, &a.stack.cert_dir("alice2"));
    let (bob, bob_serial) = issue(&a, "bob", &a.stack.cert_dir("bob"));

    let certs = json(&a, &["cert", "ls"]);
    let row = certs
        .iter()
        .find(|c| c["serial"] == serial.as_str())
        .unwrap_or_else(|| panic!("{serial} not in cert ls: {certs:?}"));
    assert_eq!(row["user"], USER);
    assert_eq!(row["status"], "active");
    assert!(certs.iter().any(|c| c["serial"] == bob_serial.as_str()));
    assert!(a.ok(&["cert", "ls"]).contains(&serial));

    let (mut sub, what) = spawn_redis_cli(&mtls(&a, &cert), &["SUBSCRIBE", "news"]);
    let live = live_session(&a, |s| s["serial"] == serial.as_str());
    assert_eq!(live["user"], USER);
    assert_eq!(live["database"], "plaindb");
    assert_eq!(live["transport"], "mtls");
    let id = live["id"].as_u64().expect("numeric id");

    let mark = a.stack.bastion.log_mark();
    let out = a.ok(&["cert", "revoke", &serial]);
    assert!(out.contains("closed 1 live session"), "{out}");
    wait_exit(&mut sub, &what);
    let bastion = &a.stack.bastion;
    bastion.expect_log_line(
        mark,
        &["session.killed", &format!("session={id} "), &serial],
        &[],
    );
    bastion.expect_log_line(mark, &["admin.mutation", "cert.revoke", &serial], &[]);
    bastion.expect_log_line(
        mark,
        &["session.end", &format!("session={id} "), "admin"],
        &[],
    );

    // A new handshake with the revoked certificate is refused, naming it, and audited.
    let mark = bastion.log_mark();
    let out = redis_cli(&mtls(&a, &cert), &["PING"]);
    assert!(
        out.stdout().contains("revoked") && out.stdout().contains(&serial),
        "{out}"
    );
    assert!(!out.stdout().contains("PONG"), "{out}");
    bastion.expect_log_line(mark, &["access.denied", &serial, "revoked"], &[]);

    // Other certificates still work: alice's first one and bob's.
    for other in [&a.stack.cert, &bob] {
        let out = redis_cli(&mtls(&a, other), &["PING"]);
        assert_eq!(out.stdout().trim(), "PONG", "{out}");
    }
    let certs = json(&a, &["cert", "ls"]);
    let row = certs
        .iter()
        .find(|c| c["serial"] == serial.as_str())
        .expect("revoked cert still listed");
    assert_eq!(row["status"], "revoked");

    // Twice, unknown, or not a serial: clear errors, non-zero exit.
    let out = a.cli(&["cert", "revoke", &serial]);
    assert!(
        !out.status.success() && out.stderr().contains("already revoked"),
        "{out}"
    );
    let out = a.cli(&["cert", "revoke", "0123456789abcdef"]);
    assert!(
        !out.status.success()
            && out
                .stderr()
                .contains("no certificate with serial 0123456789abcdef"),
        "{out}"
    );
    let out = a.cli(&["cert", "revoke", "not-hex"]);
    assert!(
        !out.status.success() && out.stderr().contains("hexadecimal"),
        "{out}"
    );

    // The revocation outlives the daemon: it is in the store, not only in memory.
    let mut a = a;
    a.stack.bastion.stop();
    let (config, state) = (a.stack.config.clone(), a.stack.state_dir().to_path_buf());
    let password = a.stack.upstream_password.clone();
    a.stack.bastion = Bastion::start_with_env(&config, &state, &[(PASSWORD_ENV, &password)]);
    let out = redis_cli(&mtls(&a, &cert), &["PING"]);
    assert!(out.stdout().contains("revoked"), "{out}");
    let out = redis_cli(&mtls(&a, &bob), &["PING"]);
    assert_eq!(out.stdout().trim(), "PONG", "{out}");
}

#[test]
fn sessions_kill_ends_exactly_that_session() {
    let a = start();
    let bastion = &a.stack.bastion;
    let (mut sub, sub_what) = spawn_redis_cli(&a.stack.mtls("plaindb"), &["SUBSCRIBE", "news"]);
    let (mut pop, pop_what) = spawn_redis_cli(&a.stack.unix("tlsdb"), &["BLPOP", "queue", "0"]);
    let over_tls = live_session(&a, |s| s["transport"] == "mtls");
    let over_unix = live_session(&a, |s| s["transport"] == "unix");
    assert_eq!(over_tls["database"], "plaindb");
    assert_eq!(over_unix["database"], "tlsdb");
    for s in [&over_tls, &over_unix] {
        assert_eq!(s["user"], USER);
        assert_eq!(s["db_user"], "app");
    }
    let table = a.ok(&["sessions", "ls"]);
    assert!(
        table.contains("plaindb") && table.contains("tlsdb"),
        "{table}"
    );
    let status = a.ok(&["status", "--json"]);
    assert!(status.contains("\"sessions\": 2"), "{status}");

    let (pop_id, sub_id) = (
        over_unix["id"].as_u64().unwrap(),
        over_tls["id"].as_u64().unwrap(),
    );
    let mark = bastion.log_mark();
    let out = a.ok(&["sessions", "kill", &pop_id.to_string()]);
    assert!(out.contains(&format!("killed session {pop_id}")), "{out}");
    wait_exit(&mut pop, &pop_what);
    bastion.expect_log_line(
        mark,
        &["session.end", &format!("session={pop_id} "), "admin"],
        &[],
    );
    bastion.expect_log_line(
        mark,
        &["session.killed", &format!("session={pop_id} ")],
        &[],
    );
    // The other one is untouched.
    assert!(matches!(sub.try_wait(), Ok(None)), "`{sub_what}` ended too");
    let only_sub = poll(LOG_LIMIT, || {
        let ids: Vec<u64> = json(&a, &["sessions", "ls"])
            .iter()
            .filter_map(|s| s["id"].as_u64())
            .collect();
        (ids == [sub_id]).then_some(())
    });
    assert!(only_sub.is_some(), "{}", a.ok(&["sessions", "ls"]));

    // An unknown id is a clear error; so is the one just killed.
    for id in [pop_id, 999_999] {
        let out = a.cli(&["sessions", "kill", &id.to_string()]);
        assert!(
            !out.status.success()
                && out
                    .stderr()
                    .contains(&format!("no live session named '{id}'")),
            "{out}"
        );
    }
    a.ok(&["sessions", "kill", &sub_id.to_string()]);
    wait_exit(&mut sub, &sub_what);
}

#[test]
fn a_session_still_in_its_handshake_can_be_killed() {
    let a = start();
    // Connected, nothing sent: the session waits for its first command.
    let mut idle = UnixStream::connect(a.stack.bastion.socket_path("plaindb")).expect("connect");
    let waiting = poll(LOG_LIMIT, || {
        json(&a, &["sessions", "ls"])
            .into_iter()
            .find(|s| s["state"] == "handshake")
    })
    .expect("the idle session is listed in its handshake");
    let id = waiting["id"].as_u64().unwrap();
    let mark = a.stack.bastion.log_mark();
    a.ok(&["sessions", "kill", &id.to_string()]);
    idle.set_read_timeout(Some(EXIT_LIMIT)).unwrap();
    let mut rest = Vec::new();
    // EOF (Ok) — a timeout here would mean the session is still open.
    idle.read_to_end(&mut rest)
        .expect("the killed session closes the connection");
    a.stack.bastion.expect_log_line(
        mark,
        &[
            "access.denied",
            &format!("session={id} "),
            "killed by an administrator",
        ],
        &[],
    );
    let gone = poll(LOG_LIMIT, || {
        json(&a, &["sessions", "ls"]).is_empty().then_some(())
    });
    assert!(gone.is_some(), "{}", a.ok(&["sessions", "ls"]));
}

#[test]
fn a_non_admin_caller_is_refused() {
    if !is_root() {
        eprintln!("SKIP a_non_admin_caller_is_refused: needs root to run the CLI as nobody");
        return;
    }
    let a = start();
    for args in [
        &["sessions", "ls"][..],
        &["sessions", "kill", "1"],
        &["cert", "ls"],
        &["cert", "revoke", "01"],
        &[
            "cert",
            "issue",
            USER,
            "--out",
            "/tmp/bastion-nobody-should-not-write",
        ],
    ] {
        let out = a.cli_as_nobody(args);
        assert!(
            !out.status.success() && out.stderr().contains("permission denied: uid 65534"),
            "{args:?}: {out}"
        );
    }
    assert!(!Path::new("/tmp/bastion-nobody-should-not-write").exists());
}

#[test]
fn without_a_daemon_issue_records_the_certificate_in_the_store() {
    let mut a = start();
    a.stack.bastion.stop();
    let dir = a.stack.cert_dir("offline");
    // The state dir, and a socket nothing listens on (the daemon removed it as it stopped).
    let out = run(
        std::process::Command::new(BASTION_BIN)
            .args(["cert", "issue", USER, "--ttl", "1h", "--out"])
            .arg(&dir)
            .arg("--state-dir")
            .arg(a.stack.state_dir())
            .arg("--socket")
            .arg(&a.socket),
        None,
        Duration::from_secs(60),
    );
    out.assert_success();
    assert!(out.stdout().contains("no daemon running"), "{out}");
    let (cert, serial) = bundle(&out.stdout(), USER, &dir);
    let (config, state) = (a.stack.config.clone(), a.stack.state_dir().to_path_buf());
    let password = a.stack.upstream_password.clone();
    a.stack.bastion = Bastion::start_with_env(&config, &state, &[(PASSWORD_ENV, &password)]);
    let certs = json(&a, &["cert", "ls"]);
    assert!(
        certs
            .iter()
            .any(|c| c["serial"] == serial.as_str() && c["status"] == "active"),
        "{certs:?}"
    );
    let out = redis_cli(&mtls(&a, &cert), &["PING"]);
    assert_eq!(out.stdout().trim(), "PONG", "{out}");
}
