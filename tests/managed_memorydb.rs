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
//!
//! Also on this kind: Secrets Manager throttling during rotations (SHIM: ThrottlingException in
//! front of moto) while a session opened before keeps running commands and new ones open.

mod support;

use std::time::Duration;

use serde_json::Value;

use support::bastion::Bastion;
use support::control_plane::ControlPlane;
use support::managed::{
    cloud_config, cloud_redis, env_with, ls, rotate_twice, session_as, throttle_shim,
    throttled_rotations_keep_sessions, wait_first_rotations,
};
use support::moto::Moto;
use support::process::poll;
use support::redis::RedisServer;

const CP_PW: &str = "control-plane-pw-77aa";
const SECRET: &str = "bastion/memorydb/us-east-1/123456789012/user/app";

#[test]
fn tagged_memorydb_users_are_discovered_rotated_and_used() {
    let redis = cloud_redis(CP_PW, &["app", "legacy", "off", "other"]);
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
    let (config, state) = config(
        &dir,
        &redis,
        r#"rotation_interval = "1h""#,
        &["app", "legacy", "other"],
    );
    let env = shim_env(&moto, &shim);
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

/// The config of database `mem` on cluster `cl` (`auth_more`: more keys of its auth table),
/// with `alice` allowed `db_users`; and its state dir.
fn config(
    dir: &tempfile::TempDir,
    redis: &RedisServer,
    auth_more: &str,
    db_users: &[&str],
) -> (String, std::path::PathBuf) {
    let auth = format!(r#"service = "memorydb", region = "us-east-1", target = "cl", {auth_more}"#);
    cloud_config(dir, redis, &[("mem", &auth)], db_users)
}

/// moto's environment with MemoryDB through the shim.
fn shim_env(moto: &Moto, shim: &ControlPlane) -> Vec<(&'static str, String)> {
    env_with(moto, "AWS_ENDPOINT_URL_MEMORYDB", shim.endpoint())
}

/// Whether secret `name` exists in moto.
fn secret_exists(moto: &Moto, name: &str) -> bool {
    moto.boto3(&format!(
        r#"
try:
    sm.describe_secret(SecretId='{name}'); print('yes')
except sm.exceptions.ResourceNotFoundException:
    print('no')
"#
    ))
    .trim()
        == "yes"
}

fn current_version(moto: &Moto, name: &str) -> String {
    moto.boto3(&format!(
        "print([v for v, s in sm.describe_secret(SecretId='{name}')['VersionIdsToStages'].items() \
         if 'AWSCURRENT' in s][0])"
    ))
    .trim()
    .to_string()
}

/// A user that stops being managed (tag removed) is no longer rotated, and its secret is
/// deleted after `secret_grace_period` — counted from when the bastion first saw it
/// unmanaged, across a restart (the moment is in the store). A user tagged again before the
/// grace period ends keeps its secret and is rotated again. A secret of the bastion's naming
/// that the bastion did not tag (another's) is never deleted. (SHIM: DescribeACLs.)
#[test]
fn secrets_of_users_no_longer_managed_are_deleted_after_the_grace_period() {
    let redis = cloud_redis(CP_PW, &["app", "gone", "back", "other"]);
    let moto = Moto::start();
    let secret = |u: &str| format!("bastion/memorydb/us-east-1/123456789012/user/{u}");
    moto.boto3(&format!(
        r#"
mdb.create_cluster(ClusterName='cl', NodeType='db.t4g.small', ACLName='bastion-acl')
for name in ['app', 'gone', 'back', 'other']:
    tags = [dict(Key='bastion.dev/managed', Value='true')] if name != 'other' else []
    mdb.create_user(UserName=name, AccessString='on ~* &* +@all',
        AuthenticationMode=dict(Type='password', Passwords=['initial-password-0123456789']), Tags=tags)
# Another's secret under the name the bastion would give 'other': not tagged as the bastion's.
sm.create_secret(Name='{other}', SecretString='not-the-bastions-0123456789')
"#,
        other = secret("other")
    ));
    let shim = ControlPlane::memorydb(
        &moto,
        &redis,
        ("control-plane", CP_PW),
        &[("bastion-acl", &["app", "gone", "back", "other"])],
    );
    let dir = tempfile::tempdir().unwrap();
    let grace = 12;
    let (config, state) = config(
        &dir,
        &redis,
        &format!(r#"rotation_interval = "2s", secret_grace_period = "{grace}s""#),
        &["app", "gone", "back"],
    );
    let env = shim_env(&moto, &shim);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut bastion = Bastion::start_with_env(&config, &state, &env);
    wait_first_rotations(&bastion, 3, || shim.log());

    let mark = bastion.log_mark();
    moto.boto3(
        r#"
for u in ['gone', 'back']:
    arn = mdb.describe_users(UserName=u)['Users'][0]['ARN']
    mdb.untag_resource(ResourceArn=arn, TagKeys=['bastion.dev/managed'])
"#,
    );
    // Seen unmanaged: recorded, audited with the time of deletion; not rotated any more.
    let gone_line = bastion.expect_log_line(mark, &["managed.unmanaged", "db_user=\"gone\""], &[]);
    bastion.expect_log_line(mark, &["managed.unmanaged", "db_user=\"back\""], &[]);
    moto.boto3(
        r#"
arn = mdb.describe_users(UserName='back')['Users'][0]['ARN']
mdb.tag_resource(ResourceArn=arn, Tags=[dict(Key='bastion.dev/managed', Value='yes')])
"#,
    );
    let users = poll(Duration::from_secs(20), || {
        let v: Vec<Value> = serde_json::from_value(ls(&bastion)).unwrap();
        (v.len() == 2).then_some(v)
    })
    .unwrap_or_else(|| panic!("'gone' still listed: {}", ls(&bastion)));
    assert!(users.iter().all(|u| u["user"] != "gone"), "{users:?}");
    let gone_version = current_version(&moto, &secret("gone"));
    assert!(
        secret_exists(&moto, &secret("gone")),
        "deleted before its grace period"
    );

    // Stopped until the grace period is over: the restarted bastion deletes the secret at
    // once, from the moment in the store — not a grace period counted from its start.
    bastion.stop();
    let delete_after: i64 = support::bastion::field(&gone_line, "delete_after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no delete_after in {gone_line}"));
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    };
    while now() <= delete_after {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(secret_exists(&moto, &secret("gone")));
    assert_eq!(
        current_version(&moto, &secret("gone")),
        gone_version,
        "rotated while unmanaged"
    );
    let restarted = std::time::Instant::now();
    let bastion = Bastion::start_with_env(&config, &state, &env);
    let deleted = bastion.expect_log_line(0, &["managed.secret_deleted", "db_user=\"gone\""], &[]);
    assert!(
        restarted.elapsed() < Duration::from_secs(grace / 2),
        "deleted {:?} after the restart: the grace period started again",
        restarted.elapsed()
    );
    assert!(deleted.contains(&secret("gone")), "{deleted}");
    assert!(!secret_exists(&moto, &secret("gone")));

    // Tagged again in time: its secret stays and it is rotated again; another's is left alone.
    assert!(secret_exists(&moto, &secret("back")));
    let back = current_version(&moto, &secret("back"));
    poll(Duration::from_secs(20), || {
        (current_version(&moto, &secret("back")) != back).then_some(())
    })
    .expect("'back' is not rotated again");
    assert!(secret_exists(&moto, &secret("other")));
    let deleted: Vec<String> = bastion
        .logs()
        .lines()
        .filter(|l| l.contains("managed.secret_deleted"))
        .map(str::to_string)
        .collect();
    assert_eq!(deleted.len(), 1, "{deleted:?}");
    assert!(
        !bastion.logs().contains(&secret("other")),
        "{}",
        bastion.logs()
    );
}

/// MemoryDB kind, Secrets Manager throttled (SHIM: PutSecretValue answered with
/// ThrottlingException in front of moto; SHIM: DescribeACLs; HARNESS: UpdateUser applied to a
/// real redis-server): twice, then through — the rotation succeeds; throughout — it fails after
/// exactly 4 attempts naming ThrottlingException, and the current password stays. Meanwhile a
/// session opened before the rotations runs commands without one failing, and new sessions
/// open during and after them.
#[test]
fn memorydb_rotations_under_throttling_keep_sessions_working() {
    let redis = cloud_redis(CP_PW, &["app"]);
    let moto = Moto::start();
    moto.boto3(
        r#"
mdb.create_cluster(ClusterName='cl', NodeType='db.t4g.small', ACLName='bastion-acl')
mdb.create_user(UserName='app', AccessString='on ~* &* +@all',
    AuthenticationMode=dict(Type='password', Passwords=['initial-password-0123456789']),
    Tags=[dict(Key='bastion.dev/managed', Value='true')])
"#,
    );
    let shim = ControlPlane::memorydb(
        &moto,
        &redis,
        ("control-plane", CP_PW),
        &[("bastion-acl", &["app"])],
    );
    let dir = tempfile::tempdir().unwrap();
    let (throttle, mode) = throttle_shim(&moto, &redis, &dir);
    let (config, state) = config(&dir, &redis, r#"rotation_interval = "1h""#, &["app"]);
    let mut env = shim_env(&moto, &shim);
    env.push(("AWS_ENDPOINT_URL_SECRETS_MANAGER", throttle.endpoint()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let bastion = Bastion::start_with_env(&config, &state, &env);
    wait_first_rotations(&bastion, 1, || shim.log());
    throttled_rotations_keep_sessions(
        &bastion,
        &redis,
        &moto,
        (&throttle, &mode),
        ("mem", "app", SECRET),
    );
}
