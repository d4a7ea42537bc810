//! What the managed-user tests share: `bastion managed …` against a running daemon, and
//! whether a password opens a user on the real server.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use super::bastion::{Bastion, BASTION_BIN};
use super::clients::{python, Endpoint, REDIS_CLI};
use super::control_plane::ControlPlane;
use super::moto::Moto;
use super::process::{poll, run, Out};
use super::redis::{RedisOpts, RedisServer};
use super::stack::current_user;

/// `bastion managed ARGS --config <the daemon's config>`.
pub fn managed(bastion: &Bastion, args: &[&str]) -> Out {
    run(
        Command::new(BASTION_BIN)
            .arg("managed")
            .args(args)
            .arg("--config")
            .arg(bastion.config_path()),
        None,
        Duration::from_secs(60),
    )
}

/// `bastion managed ls --json`, parsed.
pub fn ls(bastion: &Bastion) -> Value {
    let out = managed(bastion, &["ls", "--json"]);
    out.assert_success();
    serde_json::from_str(&out.stdout()).unwrap()
}

/// `AUTH <user> <pw>` straight to the server's plaintext port: `true` when accepted.
pub fn accepts(redis: &RedisServer, user: &str, pw: &str) -> bool {
    let out = run(
        Command::new(REDIS_CLI)
            .args(["-h", "127.0.0.1", "-p"])
            .arg(redis.plain_addr().port().to_string())
            .args(["AUTH", user, pw]),
        None,
        Duration::from_secs(10),
    );
    out.stdout().trim() == "OK"
}

/// A session through the daemon's Unix socket for `db` as db-user `user` (redis-py):
/// `"True <user>"` when it worked, else what it printed.
pub fn session_as(bastion: &Bastion, db: &str, user: &str) -> String {
    let ep = Endpoint::unix(bastion.socket_path(db));
    let out = python(
        &ep,
        &format!(
            "r = connect(username='{user}', password='ignored'); print(r.ping(), r.acl_whoami())"
        ),
    );
    out.stdout().trim().to_string() + &out.stderr()
}

/// The AWSCURRENT password of `secret` in moto.
pub fn current_password(moto: &Moto, secret: &str) -> String {
    moto.boto3(&format!(
        // By stage: moto's default version does not follow UpdateSecretVersionStage.
        "print(sm.get_secret_value(SecretId='{secret}', VersionStage='AWSCURRENT')['SecretString'])"
    ))
    .trim()
    .to_string()
}

/// `bastion managed rotate DB USER` twice through a cloud control plane (`log`: its shim's),
/// checking each time that the new and the previous password open `user` on the server, the
/// one of two rotations ago does not, and a session works. Every password seen, oldest first.
pub fn rotate_twice(
    bastion: &Bastion,
    redis: &RedisServer,
    moto: &Moto,
    (db, user, secret): (&str, &str, &str),
    log: impl Fn() -> String,
) -> Vec<String> {
    let mut passwords = vec![current_password(moto, secret)];
    for round in 1..=2 {
        managed(bastion, &["rotate", db, user]).assert_success();
        passwords.push(current_password(moto, secret));
        let n = passwords.len();
        assert!(
            accepts(redis, user, &passwords[n - 1]),
            "round {round}: {}",
            log()
        );
        assert!(accepts(redis, user, &passwords[n - 2]), "round {round}");
        if n >= 3 {
            assert!(
                !accepts(redis, user, &passwords[n - 3]),
                "round {round}: two rotations old works"
            );
        }
        assert_eq!(
            session_as(bastion, db, user),
            format!("True {user}"),
            "round {round}"
        );
    }
    passwords
}

/// Wait (up to 40 s) until `managed ls` shows `n` users, each with a current version: discovery
/// and the first rotation done. `context` is added to the failure message (shim and daemon logs).
pub fn wait_first_rotations(
    bastion: &Bastion,
    n: usize,
    context: impl Fn() -> String,
) -> Vec<Value> {
    poll(Duration::from_secs(40), || {
        let v: Vec<Value> = serde_json::from_value(ls(bastion)).unwrap();
        (v.len() == n && v.iter().all(|u| u["version"].is_string())).then_some(v)
    })
    .unwrap_or_else(|| {
        panic!(
            "no discovery / first rotation: {:?}\n{}",
            ls(bastion),
            context()
        )
    })
}

/// A redis-server with `control-plane` (password `cp_pw`, what a cloud harness applies
/// passwords as) and each of `users` with every right and no password.
pub fn cloud_redis(cp_pw: &str, users: &[&str]) -> RedisServer {
    let mut acl_lines = vec![format!("control-plane on >{cp_pw} ~* &* +@all")];
    acl_lines.extend(users.iter().map(|u| format!("{u} on ~* &* +@all")));
    RedisServer::start(RedisOpts {
        acl_lines,
        ..RedisOpts::default()
    })
}

/// A config with `databases` (name, the inner keys of its managed `auth` table) on `redis`'
/// plaintext port, and `alice` (this Unix user) allowed `db_users` on all of them; and its
/// state dir, in `dir`.
pub fn cloud_config(
    dir: &tempfile::TempDir,
    redis: &RedisServer,
    databases: &[(&str, &str)],
    db_users: &[&str],
) -> (String, std::path::PathBuf) {
    let s = |v: &std::path::Path| toml::Value::String(v.to_string_lossy().into_owned()).to_string();
    let quoted = |items: &mut dyn Iterator<Item = &str>| {
        items
            .map(|i| format!("\"{i}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let state = dir.path().join("state");
    let mut config = format!(
        "state_dir = {}\n[listeners.unix]\ndirectory = {}\n",
        s(&state),
        s(&dir.path().join("db"))
    );
    for (name, auth) in databases {
        config += &format!(
            "\n[[databases]]\nname = \"{name}\"\naddress = \"{}\"\n\
             auth = {{ mode = \"managed\", {auth} }}\n",
            redis.plain_addr()
        );
    }
    config += &format!(
        "\n[[roles]]\nname = \"apps\"\ndb_users = [{}]\ndb_names = [{}]\n\n\
         [[users]]\nname = \"alice\"\nroles = [\"apps\"]\nunix_user = \"{}\"\n",
        quoted(&mut db_users.iter().copied()),
        quoted(&mut databases.iter().map(|(n, _)| *n)),
        current_user()
    );
    (config, state)
}

/// moto's environment with one service's endpoint (`var`) through a shim.
pub fn env_with(moto: &Moto, var: &'static str, endpoint: String) -> Vec<(&'static str, String)> {
    let mut env = moto.aws_env();
    env.push((var, endpoint));
    env
}

/// Secrets Manager throttled in front of moto (`throttle`, with its `mode` file) while `user` of
/// `db` is rotated (`bastion managed rotate`): throttled twice, then through — the rotation
/// succeeds; throughout — it fails after exactly 4 attempts naming ThrottlingException, and
/// the current password stays. Meanwhile a session opened before the rotations runs commands
/// without one failing (about 8 s), and new sessions open during and after them.
pub fn throttled_rotations_keep_sessions(
    bastion: &Bastion,
    redis: &RedisServer,
    moto: &Moto,
    (throttle, mode): (&ControlPlane, &std::path::Path),
    (db, user, secret): (&str, &str, &str),
) {
    let throttled = || throttle.log().matches("throttled PutSecretValue").count();

    // A session opened now runs commands through every rotation below (about 8 s).
    let ep = Endpoint::unix(bastion.socket_path(db));
    let script = format!(
        r#"
import time
r = connect(username='{user}', password='ignored')
failures, n, end = 0, 0, time.time() + 8
while time.time() < end:
    try:
        r.set('k', n); assert int(r.get('k')) == n
    except Exception as e:
        failures += 1
    n += 1
    time.sleep(0.02)
print(failures, n > 50, r.acl_whoami())
"#
    );
    let long = std::thread::spawn(move || python(&ep, &script));

    std::fs::write(mode, "2").unwrap();
    let before = current_password(moto, secret);
    managed(bastion, &["rotate", db, user]).assert_success();
    assert_eq!(throttled(), 2, "{}", throttle.log());
    let rotated = current_password(moto, secret);
    assert_ne!(rotated, before);
    assert!(accepts(redis, user, &rotated) && accepts(redis, user, &before));
    assert_eq!(session_as(bastion, db, user), format!("True {user}"));

    std::fs::write(mode, "always").unwrap();
    let out = managed(bastion, &["rotate", db, user]);
    assert!(!out.status.success(), "{out}");
    assert!(out.stderr().contains("ThrottlingException"), "{out}");
    assert_eq!(throttled(), 2 + 4, "{}", throttle.log());
    assert_eq!(current_password(moto, secret), rotated);
    assert!(accepts(redis, user, &rotated));
    assert_eq!(session_as(bastion, db, user), format!("True {user}"));

    std::fs::write(mode, "0").unwrap();
    managed(bastion, &["rotate", db, user]).assert_success();
    assert_eq!(session_as(bastion, db, user), format!("True {user}"));
    let out = long.join().unwrap();
    assert_eq!(
        out.stdout().trim(),
        format!("0 True {user}"),
        "{}",
        out.stderr()
    );
    bastion.assert_no_secrets(&[&before, &rotated]);
}

/// A Secrets Manager shim in front of `moto` throttling as its mode file (in `dir`) says —
/// `0` (nothing) to begin with ([`ControlPlane::throttling_secrets_manager`]).
pub fn throttle_shim(
    moto: &Moto,
    redis: &RedisServer,
    dir: &tempfile::TempDir,
) -> (ControlPlane, std::path::PathBuf) {
    let mode = dir.path().join("throttle");
    std::fs::write(&mode, "0").unwrap();
    (
        ControlPlane::throttling_secrets_manager(moto, redis, &mode),
        mode,
    )
}
