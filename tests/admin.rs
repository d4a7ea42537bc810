//! The admin socket and the admin verbs, against a running daemon: who may call it, changes
//! that reach new sessions without a restart, import/export, named bound errors, audit events,
//! and a store that outlives the daemon.

mod support;

use std::process::Command;
use std::time::Duration;
use support::admin::{cli, Admin, NOBODY};
use support::bastion::{Bastion, BASTION_BIN};
use support::clients::{redis_cli, redis_cli_as, Endpoint};
use support::process::run;
use support::stack::{APP, PASSWORD_ENV};

#[test]
fn a_caller_with_another_uid_is_refused() {
    let a = Admin::start();
    let mark = a.stack.bastion.log_mark();
    let out = a.cli_as_nobody(&["db", "rm", "plaindb"]);
    assert!(!out.status.success(), "{out}");
    assert!(
        out.stderr().contains("permission denied: uid 65534"),
        "{out}"
    );
    a.stack
        .bastion
        .expect_log_line(mark, &["admin.denied", "uid=65534"], &[]);
    // Nothing changed; root still may.
    assert!(a.ok(&["db", "ls"]).contains("plaindb"));
}

#[test]
fn added_database_role_and_user_serve_new_sessions_at_once() {
    let a = Admin::start();
    let mark = a.stack.bastion.log_mark();
    let plain = a.stack.redis.plain_addr().to_string();
    a.add_password_db("newdb", &plain, &[]);
    a.ok(&[
        "role",
        "add",
        "newrole",
        "--db-users",
        APP,
        "--db-names",
        "newdb",
    ]);
    a.ok(&[
        "user",
        "add",
        "bob",
        "--roles",
        "newrole",
        "--unix-user",
        "nobody",
    ]);

    // The socket exists at once; alice (any database) and bob (newdb only) get through it.
    let ep = Endpoint::unix(a.stack.bastion.socket_path("newdb"));
    let out = redis_cli(&ep, &["ACL", "WHOAMI"]);
    assert_eq!(out.stdout().trim(), APP, "{out}");
    let out = redis_cli_as(NOBODY, &ep, &["ACL", "WHOAMI"]);
    assert_eq!(out.stdout().trim(), APP, "{out}");
    // bob's role does not reach plaindb.
    let out = redis_cli_as(NOBODY, &a.stack.unix("plaindb"), &["PING"]);
    assert!(!out.stdout().contains("PONG"), "{out}");

    // Tables and JSON.
    let ls = a.ok(&["db", "ls"]);
    assert!(ls.lines().next().unwrap().starts_with("Name"), "{ls}");
    assert!(ls.contains("newdb") && ls.contains(&plain), "{ls}");
    let json: serde_json::Value = serde_json::from_str(&a.ok(&["user", "ls", "--json"])).unwrap();
    let bob = json
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "bob")
        .expect("bob in user ls --json");
    assert_eq!(bob["unix_user"], "nobody");
    let show = a.ok(&["db", "show", "newdb"]);
    assert!(show.contains("password (file"), "{show}");

    // Every mutation is audited with the caller's uid.
    for (action, target) in [
        ("database.put", "newdb"),
        ("role.put", "newrole"),
        ("user.put", "bob"),
    ] {
        a.stack.bastion.expect_log_line(
            mark,
            &["admin.mutation", "uid=0", "caller=\"root\"", action, target],
            &[],
        );
    }

    // Removing them: the socket goes, and new sessions for bob are refused.
    a.ok(&["user", "rm", "bob"]);
    a.ok(&["role", "rm", "newrole"]);
    a.ok(&["db", "rm", "newdb"]);
    assert!(!a.stack.bastion.socket_path("newdb").exists());
    a.stack
        .bastion
        .expect_log_line(mark, &["admin.mutation", "uid=0", "database.remove"], &[]);
    a.stack.assert_no_secrets_in_logs();
}

#[test]
fn every_auth_mode_and_tls_options() {
    let a = Admin::start();
    a.ok(&[
        "db",
        "add",
        "iamdb",
        "--address",
        "rg.example.com:6379",
        "--auth",
        "iam",
        "--service",
        "elasticache",
        "--region",
        "us-east-1",
        "--target",
        "rg",
        "--serverless",
        "--tls",
    ]);
    a.ok(&[
        "db",
        "add",
        "envpw",
        "--address",
        "10.0.0.1:6379",
        "--auth",
        "password",
        "--password-env",
        PASSWORD_ENV,
        "--tls-ca-file",
        "/etc/ssl/ca.pem",
        "--tls-server-name",
        "redis.internal",
    ]);
    a.ok(&[
        "db",
        "add",
        "nopw",
        "--address",
        "[::1]:6379",
        "--auth",
        "none",
    ]);
    let json: serde_json::Value =
        serde_json::from_str(&a.ok(&["db", "show", "iamdb", "--json"])).unwrap();
    assert_eq!(json["auth"]["mode"], "iam");
    assert_eq!(json["auth"]["serverless"], true);
    let json: serde_json::Value =
        serde_json::from_str(&a.ok(&["db", "show", "envpw", "--json"])).unwrap();
    assert_eq!(json["tls"]["server_name"], "redis.internal");
    assert_eq!(json["auth"]["password_env"], PASSWORD_ENV);
    assert!(a.ok(&["db", "ls"]).contains("[::1]:6379"));
    // Without --region the database signs for the instance's region, resolved at run time.
    a.ok(&[
        "db",
        "add",
        "iamauto",
        "--address",
        "rg.example.com:6379",
        "--auth",
        "iam",
        "--service",
        "memorydb",
        "--target",
        "cl",
        "--tls",
    ]);
    let json: serde_json::Value =
        serde_json::from_str(&a.ok(&["db", "show", "iamauto", "--json"])).unwrap();
    assert!(json["auth"].get("region").is_none(), "{json}");
    // IAM over plaintext only when the database says so (a test rig), and then it shows.
    let rig = [
        "db",
        "add",
        "iamrig",
        "--address",
        "127.0.0.1:6379",
        "--auth",
        "iam",
        "--service",
        "elasticache",
        "--target",
        "rg",
    ];
    let out = a.cli(&rig);
    assert!(
        !out.status.success() && out.stderr().contains("databases.iamrig.tls"),
        "{out}"
    );
    a.ok(&[&rig[..], &["--allow-plaintext-auth"]].concat());
    let json: serde_json::Value =
        serde_json::from_str(&a.ok(&["db", "show", "iamrig", "--json"])).unwrap();
    assert_eq!(json["allow_plaintext_auth"], true, "{json}");
    assert!(a
        .ok(&["db", "show", "iamrig"])
        .contains("plaintext auth   allowed"));
    assert!(a
        .ok(&["db", "ls"])
        .contains("iam (memorydb instance-region cl)"));

    let out = a.cli(&["db", "add", "x", "--address", "h:1", "--auth", "iam"]);
    assert!(out.stderr().contains("--service"), "{out}");
    let out = a.cli(&["db", "add", "iamdb", "--address", "h:1", "--auth", "none"]);
    assert!(out.stderr().contains("already exists"), "{out}");
    a.ok(&[
        "db",
        "add",
        "iamdb",
        "--address",
        "h:1",
        "--auth",
        "none",
        "--replace",
    ]);
}

#[test]
fn bounds_and_rules_are_named_errors() {
    let a = Admin::start();
    let long = "n".repeat(65);
    let out = a.cli(&["role", "add", &long]);
    assert!(!out.status.success());
    assert!(out.stderr().contains("MAX_NAME_LEN"), "{out}");

    let many: Vec<String> = (0..33).map(|i| format!("u{i}")).collect();
    let out = a.cli(&["role", "add", "r", "--db-users", &many.join(",")]);
    assert!(
        out.stderr().contains("MAX_DB_USERS_PER_ROLE") && out.stderr().contains("roles.r.db_users"),
        "{out}"
    );

    let roles: Vec<String> = (0..17).map(|i| format!("r{i}")).collect();
    let out = a.cli(&["user", "add", "carol", "--roles", &roles.join(",")]);
    assert!(
        out.stderr().contains("MAX_ROLES_PER_USER") && out.stderr().contains("users.carol.roles"),
        "{out}"
    );

    // Rules only the daemon's store can check.
    let out = a.cli(&["user", "add", "carol", "--roles", "nosuch"]);
    assert!(out.stderr().contains("no role named 'nosuch'"), "{out}");
    let out = a.cli(&["role", "rm", "apps"]);
    assert!(out.stderr().contains("still held by user 'alice'"), "{out}");
    let out = a.cli(&["db", "rm", "nosuch"]);
    assert!(out.stderr().contains("no database named 'nosuch'"), "{out}");
    let out = a.cli(&["user", "add", "dave", "--unix-user", "no-such-account-x"]);
    assert!(out.stderr().contains("no local Unix account"), "{out}");
    // None of that was written.
    assert!(!a.ok(&["user", "ls"]).contains("carol"));
}

#[test]
fn import_is_idempotent_and_export_round_trips() {
    let a = Admin::start();
    let dir = a.stack.cert_dir("import");
    let file = dir.join("decl.toml");
    std::fs::write(
        &file,
        r#"
[[databases]]
name = "imported"
address = "10.1.2.3:6379"
tls = { server_name = "x.internal" }
auth = { mode = "iam", service = "memorydb", region = "eu-west-1", target = "cl" }

[[databases]]
name = "legacy"
address = "10.1.2.4:6379"
auth = { mode = "password", password_env = "BASTION_TEST_UPSTREAM_PASSWORD" }
legacy_auth = true

[[databases]]
name = "iamrig"
address = "127.0.0.1:6390"
auth = { mode = "iam", service = "elasticache", target = "rg" }
allow_plaintext_auth = true

[[roles]]
name = "readers"
db_users = ["ro-*"]
db_names = ["imported"]

[[users]]
name = "erin"
roles = ["readers"]
"#,
    )
    .unwrap();
    let f = file.to_str().unwrap();
    let first = a.ok(&["import", f]);
    assert!(first.contains("5 added, 0 changed, 0 unchanged"), "{first}");
    let second = a.ok(&["import", f]);
    assert!(
        second.contains("0 added, 0 changed, 5 unchanged"),
        "{second}"
    );

    let exported = a.ok(&["export"]);
    // Both flags survive the store and come back out (and only where they are set).
    assert_eq!(
        exported.matches("legacy_auth = true").count(),
        1,
        "{exported}"
    );
    assert_eq!(
        exported.matches("allow_plaintext_auth = true").count(),
        1,
        "{exported}"
    );
    let back = dir.join("export.toml");
    std::fs::write(&back, &exported).unwrap();
    let again = a.ok(&["import", back.to_str().unwrap(), "--json"]);
    let summary: serde_json::Value = serde_json::from_str(&again).unwrap();
    assert_eq!(summary["added"], 0, "{exported}");
    assert_eq!(summary["changed"], 0, "{exported}");
    // The stack's 5 databases, 1 role, 1 user and the 5 imported.
    assert_eq!(summary["unchanged"], 12, "{exported}");
    assert_eq!(a.ok(&["export"]), exported);

    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[[roles]]\nname = \"r\"\ndb_names = [\"\"]\n").unwrap();
    let out = a.cli(&["import", bad.to_str().unwrap()]);
    assert!(out.stderr().contains("roles.r.db_names"), "{out}");

    let plain = dir.join("plain.toml");
    std::fs::write(
        &plain,
        "[[databases]]\nname = \"plain\"\naddress = \"10.1.2.5:6379\"\n\
         auth = { mode = \"iam\", service = \"elasticache\", target = \"rg\" }\n",
    )
    .unwrap();
    let out = a.cli(&["import", plain.to_str().unwrap()]);
    assert!(
        !out.status.success() && out.stderr().contains("databases.plain.tls"),
        "{out}"
    );
}

#[test]
fn status_reports_listeners_sessions_and_store() {
    let a = Admin::start();
    let text = a.ok(&["status"]);
    assert!(
        text.contains("uptime") && text.contains("tls 127.0.0.1:"),
        "{text}"
    );
    let json: serde_json::Value = serde_json::from_str(&a.ok(&["status", "--json"])).unwrap();
    assert_eq!(json["databases"], 5);
    assert_eq!(json["sessions"], 0);
    assert_eq!(
        json["credential_chain"],
        serde_json::json!(["env", "profile", "web_identity", "ecs", "imds"])
    );
    let listeners = json["listeners"].as_array().unwrap();
    assert!(listeners
        .iter()
        .any(|l| l.as_str().unwrap().starts_with("admin ")));
}

#[test]
fn the_store_outlives_the_daemon() {
    let mut a = Admin::start();
    let plain = a.stack.redis.plain_addr().to_string();
    a.add_password_db("kept", &plain, &[]);
    // The config's own declarations are not imported again, so a removal sticks too.
    a.ok(&["db", "rm", "downdb"]);
    a.stack.bastion.stop();
    let config = a.stack.config.clone();
    let state = a.stack.state_dir().to_path_buf();
    let password = a.stack.upstream_password.clone();
    a.stack.bastion = Bastion::start_with_env(&config, &state, &[(PASSWORD_ENV, &password)]);
    let ls = a.ok(&["db", "ls"]);
    assert!(ls.contains("kept") && !ls.contains("downdb"), "{ls}");
    let ep = Endpoint::unix(a.stack.bastion.socket_path("kept"));
    let out = redis_cli(&ep, &["PING"]);
    assert_eq!(out.stdout().trim(), "PONG", "{out}");
    a.stack
        .bastion
        .expect_log_line(0, &["config declares databases"], &[]);
}

/// `bastion db add` over the admin socket is held to the same per-database rules as the boot
/// config, and says so in the same words: for each broken combination, the config path's
/// `databases[0].<field>: <message>` comes back from the daemon as `databases.x.<field>: <message>`.
#[test]
fn db_add_is_refused_with_the_config_paths_message() {
    let d = support::store_daemon::StoreDaemon::start();
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&[&str], &str); 9] = [
        (
            &[
                "--auth",
                "none",
                "--assume-role-arn",
                "arn:aws:iam::111122223333:role/r",
            ],
            r#"auth = { mode = "none" }
assume_role_arn = "arn:aws:iam::111122223333:role/r""#,
        ),
        (
            &[
                "--auth",
                "iam",
                "--service",
                "elasticache",
                "--target",
                "rg",
                "--tls",
                "--assume-role-arn",
                "arn:aws:iam::1111:role/r",
            ],
            r#"auth = { mode = "iam", service = "elasticache", target = "rg" }
tls = {}
assume_role_arn = "arn:aws:iam::1111:role/r""#,
        ),
        // IAM tokens in clear: refused naming `tls` unless allow_plaintext_auth.
        (
            &[
                "--auth",
                "iam",
                "--service",
                "elasticache",
                "--target",
                "rg",
            ],
            r#"auth = { mode = "iam", service = "elasticache", target = "rg" }"#,
        ),
        (
            &["--auth", "none", "--allow-plaintext-auth"],
            r#"auth = { mode = "none" }
allow_plaintext_auth = true"#,
        ),
        (
            &["--auth", "none", "--legacy-auth"],
            r#"auth = { mode = "none" }
legacy_auth = true"#,
        ),
        (
            &[
                "--auth",
                "iam",
                "--service",
                "memorydb",
                "--target",
                "c",
                "--region",
                "US-EAST",
            ],
            r#"auth = { mode = "iam", service = "memorydb", target = "c", region = "US-EAST" }"#,
        ),
        (
            &["--auth", "none", "--tls-server-name", "a..b"],
            r#"auth = { mode = "none" }
tls = { server_name = "a..b" }"#,
        ),
        (
            &["--auth", "none", "--tls-ca-file", "relative/ca.pem"],
            r#"auth = { mode = "none" }
tls = { ca_file = "relative/ca.pem" }"#,
        ),
        (
            &["--auth", "none", "--default-db-user", "app-*"],
            r#"auth = { mode = "none" }
default_db_user = "app-*""#,
        ),
    ];
    for (flags, toml_lines) in cases {
        let config = dir.path().join("bastion.toml");
        std::fs::write(
            &config,
            format!(
                "state_dir = \"/nonexistent\"\n[listeners.unix]\ndirectory = \"/nonexistent/db\"\n\
                 [[databases]]\nname = \"x\"\naddress = \"h:6379\"\n{toml_lines}\n"
            ),
        )
        .unwrap();
        let from_config = run(
            Command::new(BASTION_BIN)
                .args(["configure", "bootstrap", "--manual", "--config"])
                .arg(&config),
            None,
            Duration::from_secs(60),
        );
        assert!(!from_config.status.success(), "{from_config}");
        let stderr = from_config.stderr();
        let rule = stderr
            .split("databases[0].")
            .nth(1)
            .unwrap_or_else(|| panic!("no databases[0] key in: {from_config}"))
            .trim_end()
            .to_string();

        let mut args = vec!["db", "add", "x", "--address", "h:6379"];
        args.extend_from_slice(flags);
        let from_admin = cli(&d.socket(), &args);
        assert!(
            !from_admin.status.success(),
            "{flags:?} was accepted: {from_admin}"
        );
        assert!(
            from_admin.stderr().contains(&format!("databases.x.{rule}")),
            "{flags:?}: the daemon said\n{}\nthe config path said\n{stderr}",
            from_admin.stderr()
        );
    }
    // Nothing was written.
    let out = cli(&d.socket(), &["db", "ls", "--json"]);
    out.assert_success();
    assert_eq!(out.stdout().trim(), "[]", "{out}");
}

/// From the restricted console an admin can run `import FILE`: the error must never show the
/// file's lines (else the console reads any file the admin can: /etc/shadow, a key), and a
/// device or a huge file is refused without reading it.
#[test]
fn import_errors_never_show_the_files_lines() {
    let a = Admin::start();
    let dir = tempfile::tempdir().unwrap();
    let secretish = dir.path().join("not-toml.txt");
    std::fs::write(
        &secretish,
        "root:$6$saltsalt$hashhashhash:19000:0:99999:7:::\n[[databases]]\nname = \"x\"\nsecret_key = \"s3cr3t-value-8c1f\"\n",
    )
    .unwrap();
    for file in [secretish.to_str().unwrap(), "/etc/passwd"] {
        let out = a.cli(&["import", file]);
        assert!(!out.status.success(), "{out}");
        let all = format!("{}{}", out.stdout(), out.stderr());
        for leaked in [
            "hashhashhash",
            "s3cr3t-value-8c1f",
            "root:x:0:0",
            "/bin/bash",
            "secret_key",
        ] {
            assert!(!all.contains(leaked), "import echoed {leaked:?}: {all}");
        }
        assert!(all.contains("line"), "{all}");
    }
    let out = a.cli(&["import", "/dev/zero"]);
    assert!(
        !out.status.success() && out.stderr().contains("/dev/zero"),
        "{out}"
    );
}

/// A role's command policy through the admin verbs: set with `role add --commands/--keys`,
/// listed, exported, and a bad rule refused naming the setting and the rule, nothing written.
#[test]
fn role_command_policy_is_set_listed_exported_and_checked() {
    let a = Admin::start();
    a.ok(&[
        "role",
        "add",
        "readers",
        "--db-users",
        APP,
        "--db-names",
        "*",
        "--commands",
        "+@read -@dangerous -keys",
        "--keys",
        "~app:* %R~shared:*",
    ]);
    let ls = a.ok(&["role", "ls"]);
    assert!(
        ls.contains("+@read -@dangerous -keys") && ls.contains("~app:* %R~shared:*"),
        "{ls}"
    );
    let json: serde_json::Value = serde_json::from_str(&a.ok(&["role", "ls", "--json"])).unwrap();
    let readers = json
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "readers")
        .expect("readers in role ls --json");
    assert_eq!(readers["commands"], "+@read -@dangerous -keys");
    assert_eq!(readers["keys"], "~app:* %R~shared:*");
    let exported = a.ok(&["export"]);
    assert!(
        exported.contains("commands = \"+@read -@dangerous -keys\""),
        "{exported}"
    );

    for (flag, rules, says) in [
        ("--commands", "+@read -flushal", "'-flushal'"),
        ("--commands", "+@read ~app:*", "'~app:*'"),
        ("--keys", "%X~app:*", "'%X~app:*'"),
    ] {
        let out = a.cli(&["role", "add", "bad", flag, rules]);
        assert!(!out.status.success(), "{out}");
        let setting = flag.trim_start_matches("--");
        assert!(
            out.stderr().contains(&format!("roles.bad.{setting}")) && out.stderr().contains(says),
            "{out}"
        );
    }
    assert!(!a.ok(&["role", "ls"]).contains("bad"));
}
