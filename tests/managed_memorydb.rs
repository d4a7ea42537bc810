//! Managed users of a MemoryDB cluster: discovered by tag in the cluster's ACL, rotated with
//! UpdateUser, stored in Secrets Manager — against moto_server, with the MemoryDB shim and
//! harness of `support::control_plane` (SHIM: DescribeACLs, which moto 5.2 lacks; HARNESS:
//! UpdateUser's passwords applied to a real redis-server, as MemoryDB applies them to its
//! nodes).
//!
//! `app` (tagged `bastion.dev/managed=true`) and `legacy` (`teleport.dev/managed=yes`) are
//! managed, `off` (`bastion.dev/managed=false`) and `other` (untagged) are not. Sessions as
//! `app` work before and after forced rotations, the password of two rotations ago is refused
//! by the server, and the secret is `bastion/memorydb/us-east-1/<account>/user/app`.

mod support;

use std::time::Duration;

use serde_json::Value;

use support::bastion::Bastion;
use support::control_plane::ControlPlane;
use support::managed::{rotate_twice, session_as, wait_first_rotations};
use support::moto::Moto;
use support::redis::{RedisOpts, RedisServer};
use support::stack::current_user;

const CP_PW: &str = "control-plane-pw-77aa";
const SECRET: &str = "bastion/memorydb/us-east-1/123456789012/user/app";

#[test]
fn tagged_memorydb_users_are_discovered_rotated_and_used() {
    let redis = RedisServer::start(RedisOpts {
        acl_lines: vec![
            format!("control-plane on >{CP_PW} ~* &* +@all"),
            "app on ~* &* +@all".into(),
            "legacy on ~* &* +@all".into(),
            "off on ~* &* +@all".into(),
            "other on ~* &* +@all".into(),
        ],
        ..RedisOpts::default()
    });
    let moto = Moto::start();
    moto.boto3(
        r#"
mdb.create_cluster(ClusterName='cl', NodeType='db.t4g.small', ACLName='bastion-acl')
for name, tags in [('app', [dict(Key='bastion.dev/managed', Value='true')]),
                   ('legacy', [dict(Key='teleport.dev/managed', Value='yes')]),
                   ('off', [dict(Key='bastion.dev/managed', Value='false')]),
                   ('other', [])]:
    mdb.create_user(UserName=name, AccessString='on ~* &* +@all',
        AuthenticationMode=dict(Type='password', Passwords=['initial-password-0123456789']), Tags=tags)
"#,
    );
    let shim = ControlPlane::memorydb(
        &moto,
        &redis,
        ("control-plane", CP_PW),
        &[("bastion-acl", &["app", "legacy", "off", "other"])],
    );
    let dir = tempfile::tempdir().unwrap();
    let s = |v: &std::path::Path| toml::Value::String(v.to_string_lossy().into_owned()).to_string();
    let state = dir.path().join("state");
    let config = format!(
        r#"state_dir = {state}
[listeners.unix]
directory = {sockets}

[[databases]]
name = "mem"
address = "{plain}"
auth = {{ mode = "managed", service = "memorydb", region = "us-east-1", target = "cl", rotation_interval = "1h" }}

[[roles]]
name = "apps"
db_users = ["app", "legacy", "other"]
db_names = ["mem"]

[[users]]
name = "alice"
roles = ["apps"]
unix_user = "{me}"
"#,
        state = s(&state),
        sockets = s(&dir.path().join("db")),
        plain = redis.plain_addr(),
        me = current_user(),
    );
    let mut env = moto.aws_env();
    env.push(("AWS_ENDPOINT_URL_MEMORYDB", shim.endpoint()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let bastion = Bastion::start_with_env(&config, &state, &env);

    // Discovery and the first rotation of both managed users.
    let users = wait_first_rotations(&bastion, 2, || shim.log());
    let by_user = |u: &str| users.iter().find(|x| x["user"] == u).cloned().unwrap();
    assert_eq!(by_user("app")["source"], "tag:bastion.dev/managed");
    assert_eq!(by_user("legacy")["source"], "tag:teleport.dev/managed");
    assert_eq!(by_user("app")["secret"], SECRET);
    assert_eq!(session_as(&bastion, "mem", "app"), "True app");
    assert_eq!(session_as(&bastion, "mem", "legacy"), "True legacy");
    // Not managed: no password for it, the session is refused.
    assert!(!session_as(&bastion, "mem", "other").starts_with("True"));

    let passwords = rotate_twice(&bastion, &redis, &moto, ("mem", "app", SECRET), || {
        shim.log()
    });
    // UpdateUser carried the current and the new password (the harness saw two).
    assert!(
        shim.log().contains("applied UpdateUser app 2"),
        "{}",
        shim.log()
    );
    let all: Vec<&str> = passwords.iter().map(String::as_str).collect();
    bastion.assert_no_secrets(&all);

    // `bastion doctor`: discovery and each managed user's secret are readable.
    let mut doctor = std::process::Command::new(support::bastion::BASTION_BIN);
    doctor
        .args(["doctor", "--json", "--config"])
        .arg(bastion.config_path())
        .env("AWS_EC2_METADATA_DISABLED", "true");
    for (k, v) in &env {
        doctor.env(k, v);
    }
    let out = support::process::run(&mut doctor, None, Duration::from_secs(60));
    let report: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out}"));
    let check = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "database:mem:managed")
        .unwrap_or_else(|| panic!("no managed check in {report:#}"))
        .clone();
    assert_eq!(check["status"], "ok", "{check:#}");
    assert!(
        check["finding"]
            .as_str()
            .unwrap()
            .contains("2 managed user(s)"),
        "{check:#}"
    );
    for p in &all {
        assert!(!out.all().contains(p), "a password in doctor's output");
    }
}
