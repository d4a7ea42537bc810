//! One-argument `AUTH <password>` against a real `redis-server --requirepass` (what an
//! ElastiCache cluster with an AUTH token and no RBAC, and Redis before 6, expect).
//!
//! Two databases on the same server: `legacy` says `legacy_auth = true` (its role allows
//! db-user `app`, which the server does not have: `AUTH app <pw>` would be refused), and
//! `nouser` is a plain password database whose role lists no db-user at all. Sessions through
//! both get PONG with redis-cli (no AUTH, client AUTH, HELLO 3), the server's MONITOR shows
//! only one-argument AUTHs (`HELLO 3 AUTH default <pw>` for HELLO), and `bastion doctor`
//! authenticates the same way.

mod support;

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use support::bastion::{Bastion, BASTION_BIN};
use support::certs::write_private;
use support::clients::{redis_cli, Endpoint};
use support::process::run;
use support::redis::{RedisOpts, RedisServer};
use support::stack::current_user;

const PASSWORD: &str = "requirepass-secret-7c1e";

struct Rig {
    redis: RedisServer,
    bastion: Bastion,
    config: String,
    _dir: tempfile::TempDir,
}

fn rig() -> Rig {
    let redis = RedisServer::start(RedisOpts::requirepass(PASSWORD));
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let pw = write_private(&dir.path().join("redis.pw"), PASSWORD.as_bytes());
    let s = |v: &str| toml::Value::String(v.to_string()).to_string();
    let config = format!(
        r#"state_dir = {state}
secrets_dir = {secrets}
# What Redis receives is counted below: each session's own AUTH/HELLO only.
[limits]
warm_connections = 0
[listeners.unix]
directory = {sockets}

[[databases]]
name = "legacy"
address = "{tls}"
tls = {{ ca_file = {ca}, server_name = "localhost" }}
auth = {{ mode = "password", password_file = {pw} }}
legacy_auth = true

[[databases]]
name = "nouser"
address = "{plain}"
auth = {{ mode = "password", password_file = {pw} }}

[[roles]]
name = "apps"
db_users = ["app"]
db_names = ["legacy"]

[[roles]]
name = "plain"
db_names = ["nouser"]

[[users]]
name = "alice"
roles = ["apps", "plain"]
unix_user = {me}
"#,
        state = s(&state.to_string_lossy()),
        secrets = s(&dir.path().to_string_lossy()),
        sockets = s(&dir.path().join("db").to_string_lossy()),
        tls = redis.tls_addr(),
        plain = redis.plain_addr(),
        ca = s(&redis.ca_pem_path().to_string_lossy()),
        pw = s(&pw.to_string_lossy()),
        me = s(&current_user()),
    );
    let bastion = Bastion::start(&config, &state);
    Rig {
        redis,
        bastion,
        config,
        _dir: dir,
    }
}

/// The AUTH lines MONITOR showed: `"AUTH" "(redacted)"` is the one-argument form.
fn auth_lines(monitor: &str) -> Vec<&str> {
    monitor
        .lines()
        .filter(|l| l.contains("\"AUTH\"") || l.contains("\"auth\""))
        .collect()
}

#[test]
fn sessions_authenticate_with_one_argument_auth() {
    let rig = rig();
    let monitor = rig.redis.monitor();
    for db in ["legacy", "nouser"] {
        let ep = Endpoint::unix(rig.bastion.socket_path(db));
        // No AUTH from the client, a client AUTH with a db-user, and RESP3.
        let out = redis_cli(&ep, &["PING"]);
        assert_eq!(out.stdout().trim(), "PONG", "{db}: {out}");
        let out = redis_cli(
            &ep,
            &[
                "--user",
                "app",
                "--pass",
                "ignored",
                "--no-auth-warning",
                "PING",
            ],
        );
        let expect = if db == "legacy" {
            // legacy_auth: the client's db-user is ignored, like its password.
            "PONG"
        } else {
            // The roles reaching `nouser` list no db-user, so none may be asked for.
            "not allowed to act as db-user 'app'"
        };
        assert!(out.all().contains(expect), "{db}: {out}");
        let out = redis_cli(&ep, &["-3", "PING"]);
        assert_eq!(out.stdout().trim(), "PONG", "{db} HELLO 3: {out}");
        let out = redis_cli(&ep, &["ACL", "WHOAMI"]);
        assert_eq!(out.stdout().trim(), "default", "{db}: {out}");
    }

    // What the server received: one-argument AUTHs only (a two-argument `AUTH app <pw>` would
    // have been refused, `AUTH default <pw>` would show two "(redacted)"), and HELLO 3 naming
    // `default`, the user one-argument AUTH stands for.
    let seen = monitor.expect("\"HELLO\"");
    let auths = auth_lines(&seen);
    assert!(auths.len() >= 4, "{seen}");
    for line in &auths {
        assert!(
            line.ends_with("\"AUTH\" \"(redacted)\"") || line.contains("\"HELLO\""),
            "not a one-argument AUTH: {line}\n{seen}"
        );
    }
    let hellos: Vec<&str> = seen.lines().filter(|l| l.contains("\"HELLO\"")).collect();
    assert_eq!(hellos.len(), 2, "{seen}");
    for line in hellos {
        assert!(
            line.ends_with("\"HELLO\" \"3\" \"AUTH\" \"(redacted)\" \"(redacted)\""),
            "{line}"
        );
    }
    assert!(!seen.contains(PASSWORD));
    // No db-user in the audit of these sessions; the password in no log line.
    rig.bastion
        .expect_log_line(0, &["session.start", "db=\"legacy\"", "db_user=\"-\""], &[]);
    rig.bastion
        .expect_log_line(0, &["session.start", "db=\"nouser\"", "db_user=\"-\""], &[]);
    rig.bastion.assert_no_secrets(&[PASSWORD]);
}

#[test]
fn doctor_authenticates_the_way_sessions_do() {
    let rig = rig();
    let config = rig.bastion.state_dir().join("doctor.toml");
    std::fs::write(&config, &rig.config).unwrap();
    let monitor = rig.redis.monitor();
    let out = run(
        Command::new(BASTION_BIN)
            .args(["doctor", "--json", "--config"])
            .arg(&config)
            .env("AWS_EC2_METADATA_DISABLED", "true"),
        None,
        Duration::from_secs(60),
    );
    assert!(!out.all().contains(PASSWORD), "{out}");
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{out}"));
    for db in ["legacy", "nouser"] {
        let name = format!("database:{db}:auth");
        let check = report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name.as_str())
            .unwrap_or_else(|| panic!("no {name} in {report:#}"));
        assert_eq!(check["status"], "ok", "{check:#}");
        assert_eq!(check["db_user"], Value::Null, "{check:#}");
        assert!(
            check["finding"]
                .as_str()
                .unwrap()
                .contains("one-argument AUTH"),
            "{check:#}"
        );
    }
    let seen = support::process::poll(Duration::from_secs(10), || {
        let seen = monitor.output();
        (auth_lines(&seen).len() >= 2).then_some(seen)
    })
    .unwrap_or_else(|| panic!("two AUTHs never showed:\n{}", monitor.output()));
    let auths = auth_lines(&seen);
    assert_eq!(auths.len(), 2, "{seen}");
    assert!(
        auths.iter().all(|l| l.ends_with("\"AUTH\" \"(redacted)\"")),
        "{seen}"
    );
}
