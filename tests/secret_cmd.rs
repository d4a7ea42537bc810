//! `bastion secret set|ls|rm`: the daemon writes the password files of `secrets_dir` (on the
//! appliance the root file system is read-only and the console has no shell, so this is how a
//! password database gets its password). Tried as a hostile admin: a secret can be written but
//! never read back (not by `ls`, not in a log, not in an error), a name cannot reach outside
//! `secrets_dir` (`..`, `/`, a planted symbolic link to the CA key), a file a database uses
//! cannot be removed, and a caller outside the admin group is refused.

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::admin::Admin;
use support::bastion::BASTION_BIN;
use support::clients::redis_cli;
use support::process::{run, Out};
use support::stack::APP;

/// `bastion secret set NAME [extra…]` with `value` on standard input (a pipe).
fn set(a: &Admin, name: &str, value: &str, extra: &[&str]) -> Out {
    run(
        Command::new(BASTION_BIN)
            .args(["secret", "set", name])
            .args(extra)
            .arg("--socket")
            .arg(&a.socket),
        Some(value.as_bytes()),
        Duration::from_secs(60),
    )
}

fn add_db(a: &Admin, name: &str, file: &Path) {
    a.ok(&[
        "db",
        "add",
        name,
        "--address",
        &a.stack.redis.plain_addr().to_string(),
        "--auth",
        "password",
        "--password-file",
        &file.to_string_lossy(),
        "--default-db-user",
        APP,
    ]);
}

#[test]
fn an_admin_stores_a_password_a_database_uses_and_can_never_read_it_back() {
    let a = Admin::start();
    let s = &a.stack;
    let right = s.upstream_password.clone();
    let wrong = s.wrong_password.clone();
    let file = s.secrets_dir().join("cache.pw");

    let out = set(&a, "cache.pw", &format!("{right}\n"), &[]);
    out.assert_success();
    assert!(out.stdout().contains("secret 'cache.pw' stored"), "{out}");
    let meta = std::fs::symlink_metadata(&file).expect("written");
    assert!(meta.is_file());
    assert_eq!(meta.mode() & 0o7777, 0o600);
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        format!("{right}\n")
    );

    add_db(&a, "cached", &file);
    let ping = || redis_cli(&s.unix("cached"), &["PING"]);
    assert!(ping().stdout().contains("PONG"), "{}", ping());

    // Not replaced by accident; replaced on purpose, and the database switches at once.
    let out = set(&a, "cache.pw", &wrong, &[]);
    assert!(!out.status.success(), "{out}");
    assert!(out.stderr().contains("already exists"), "{out}");
    assert!(ping().stdout().contains("PONG"), "{}", ping());
    let out = set(&a, "cache.pw", &wrong, &["--replace"]);
    out.assert_success();
    assert!(out.stdout().contains("in use by cached"), "{out}");
    assert!(
        !ping().stdout().contains("PONG"),
        "the old password is still used"
    );
    set(&a, "cache.pw", &right, &["--replace"]).assert_success();
    assert!(ping().stdout().contains("PONG"), "{}", ping());

    // ls shows the name, size and user, never the value; rm of a used secret is refused.
    let listed = a.ok(&["secret", "ls", "--json"]);
    let json: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let entry = json
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "cache.pw")
        .unwrap_or_else(|| panic!("{listed}"));
    assert_eq!(entry["used_by"][0], "cached", "{listed}");
    assert_eq!(entry["bytes"], right.len() as u64 + 1, "{listed}");
    assert!(entry["problem"].is_null(), "{listed}");
    let out = a.cli(&["secret", "rm", "cache.pw"]);
    assert!(!out.status.success(), "{out}");
    assert!(out.stderr().contains("cached"), "{out}");
    assert!(file.exists());

    // Values that are not one password are refused without being quoted.
    for bad in ["", "\n", "two\nlines-hunter2-x"] {
        let out = set(&a, "bad.pw", bad, &[]);
        assert!(!out.status.success(), "{bad:?}: {out}");
        assert!(!out.all().contains("hunter2"), "{out}");
    }
    let out = set(&a, "big.pw", &"x".repeat(5000), &[]);
    assert!(!out.status.success(), "{out}");
    assert!(!s.secrets_dir().join("big.pw").exists());

    // Once the database is gone the secret can go too.
    a.ok(&["db", "rm", "cached"]);
    a.ok(&["secret", "rm", "cache.pw"]);
    assert!(!file.exists());
    let out = a.cli(&["secret", "rm", "cache.pw"]);
    assert!(out.stderr().contains("no secret named 'cache.pw'"), "{out}");

    // Nothing anyone printed or logged holds either password; the audit names the file.
    let logs = s.bastion.logs();
    for pw in [&right, &wrong] {
        assert!(
            !logs.contains(pw.as_str()),
            "a password in the daemon's log"
        );
        assert!(!listed.contains(pw.as_str()));
    }
    assert!(
        logs.contains("admin.secret") && logs.contains("cache.pw"),
        "no audit event:\n{logs}"
    );
}

#[test]
fn names_and_planted_links_reach_nothing_outside_the_secrets_dir() {
    let a = Admin::start();
    let s = &a.stack;
    let ca_key = s.state_dir().join("ca").join("ca.key");
    let key_before = std::fs::read(&ca_key).expect("CA key");

    for name in [
        "../ca/ca.key",
        "/etc/passwd",
        "..",
        ".hidden",
        "a/b",
        &format!("{}", ca_key.display()),
    ] {
        let out = set(&a, name, "attacker-value", &["--replace"]);
        assert!(!out.status.success(), "{name:?} accepted: {out}");
        assert!(out.stderr().contains("secret name"), "{name:?}: {out}");
        let out = a.cli(&["secret", "rm", name]);
        assert!(!out.status.success(), "rm {name:?} accepted: {out}");
    }

    // A link planted in the secrets dir (by whoever could) is listed as a problem without
    // being followed, and a set replaces the link itself, never the CA key behind it.
    let link = s.secrets_dir().join("evil.pw");
    std::os::unix::fs::symlink(&ca_key, &link).unwrap();
    let listed = a.ok(&["secret", "ls", "--json"]);
    let json: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let entry = json
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "evil.pw")
        .unwrap_or_else(|| panic!("{listed}"));
    assert!(
        entry["problem"].as_str().unwrap().contains("symbolic link"),
        "{listed}"
    );
    let key_text = String::from_utf8_lossy(&key_before[30..70]).to_string();
    assert!(!listed.contains(&key_text), "ls showed the CA key");
    let out = set(&a, "evil.pw", "attacker-value", &[]);
    assert!(!out.status.success(), "{out}");
    set(&a, "evil.pw", "attacker-value", &["--replace"]).assert_success();
    assert_eq!(
        std::fs::read(&ca_key).unwrap(),
        key_before,
        "CA key changed"
    );
    let meta = std::fs::symlink_metadata(&link).unwrap();
    assert!(meta.is_file(), "the link was followed");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);

    // Outside the admin group: nothing, not even the names.
    let out = a.cli_as_nobody(&["secret", "ls"]);
    assert!(!out.status.success(), "{out}");
    assert!(out.stderr().contains("permission denied"), "{out}");
}

/// The appliance ships with `secrets_dir` on /var, which does not exist until the first
/// secret: the daemon creates it private.
#[test]
fn a_missing_secrets_dir_is_created_private_on_first_use() {
    let a = Admin::start();
    let dir = a.stack.secrets_dir();
    std::fs::remove_dir_all(dir).unwrap();
    set(&a, "first.pw", "value-1", &[]).assert_success();
    let meta = std::fs::symlink_metadata(dir).unwrap();
    assert!(meta.is_dir());
    assert_eq!(meta.permissions().mode() & 0o777, 0o700);
}
