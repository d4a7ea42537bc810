//! What the managed-user tests share: `bastion managed …` against a running daemon, and
//! whether a password opens a user on the real server.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use super::bastion::{Bastion, BASTION_BIN};
use super::clients::REDIS_CLI;
use super::process::{run, Out};
use super::redis::RedisServer;

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
