//! Managed users of ElastiCache: discovered by tag among the users of the replication group's
//! or serverless cache's user groups, rotated with ModifyUser `Passwords = [current, new]`,
//! stored in Secrets Manager — against moto_server (users, tags, replication groups), with the
//! shims and harness of `support::control_plane::ControlPlane::elasticache` (SHIM: DescribeUserGroups,
//! DescribeServerlessCaches and ModifyUser, which moto 5.2 lacks; HARNESS: ModifyUser's
//! passwords applied to a real redis-server, as ElastiCache applies them to its nodes).
//!
//! Replication group `rg` has user group `g1` (`app`, tagged `bastion.dev/managed=true`, and
//! `off`, tagged `=false`); serverless cache `sc` has `g2` (`reporting`, tagged
//! `teleport.dev/managed=yes`). `stray` is tagged managed but in no group of either: it is
//! never discovered, rotated or modified. User ids differ from user names (`app-id` / `app`):
//! ModifyUser takes the id, sessions AUTH with the name.
//!
//! DescribeUsers is read page by page (SHIM: moto answers all users at once; the shim pages
//! them, 2 a page, as the service pages them with `Marker`): a managed user on a later page is
//! found, and users are never described one id at a time.
//!
//! Also on this kind: Secrets Manager throttling during rotations (SHIM: ThrottlingException in
//! front of moto) while a session opened before keeps running commands and new ones open.

mod support;

use support::bastion::Bastion;
use support::control_plane::ControlPlane;
use support::managed::{
    accepts, cloud_config, cloud_redis, env_with, ls, managed, rotate_twice, session_as,
    throttle_shim, throttled_rotations_keep_sessions, wait_first_rotations,
};
use support::moto::Moto;
use support::redis::RedisServer;

const CP_PW: &str = "control-plane-pw-5c1e";
const SECRET: &str = "bastion/elasticache/us-east-1/123456789012/user/app";

#[test]
fn tagged_elasticache_users_of_the_caches_groups_are_discovered_rotated_and_used() {
    let redis = cloud_redis(CP_PW, &["app", "reporting", "off", "stray"]);
    redis.query(&["ACL", "SETUSER", "stray", ">stray-password-0123456789"]);
    let moto = Moto::start();
    moto.boto3(
        r#"
for uid, name, tags in [('app-id', 'app', [dict(Key='bastion.dev/managed', Value='true')]),
                        ('rep-id', 'reporting', [dict(Key='teleport.dev/managed', Value='yes')]),
                        ('off-id', 'off', [dict(Key='bastion.dev/managed', Value='false')]),
                        ('stray-id', 'stray', [dict(Key='bastion.dev/managed', Value='true')])]:
    ec.create_user(UserId=uid, UserName=name, Engine='redis', AccessString='on ~* &* +@all',
        Passwords=['initial-password-0123456789'], Tags=tags)
ec.create_replication_group(ReplicationGroupId='rg', ReplicationGroupDescription='bastion test',
    UserGroupIds=['g1'])
"#,
    );
    let shim = ControlPlane::elasticache(
        &moto,
        &redis,
        ("control-plane", CP_PW),
        &[("g1", &["app-id", "off-id"]), ("g2", &["rep-id"])],
        &[("sc", "g2")],
        &[
            ("app-id", "app"),
            ("rep-id", "reporting"),
            ("off-id", "off"),
            ("stray-id", "stray"),
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let (config, state) = cloud_config(
        &dir,
        &redis,
        &[
            (
                "ec",
                r#"service = "elasticache", region = "us-east-1", target = "rg", rotation_interval = "1h""#,
            ),
            (
                "ecs",
                r#"service = "elasticache", region = "us-east-1", target = "sc", serverless = true, rotation_interval = "1h""#,
            ),
        ],
        &["app", "reporting", "stray"],
    );
    let env = env_with(&moto, "AWS_ENDPOINT_URL_ELASTICACHE", shim.endpoint());
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let bastion = Bastion::start_with_env(&config, &state, &env);

    // Discovery and the first rotation of both managed users.
    let users = wait_first_rotations(&bastion, 2, || {
        format!("{}\n{}", shim.log(), bastion.logs())
    });
    let by_user = |u: &str| users.iter().find(|x| x["user"] == u).cloned().unwrap();
    assert_eq!(by_user("app")["database"], "ec");
    assert_eq!(by_user("app")["source"], "tag:bastion.dev/managed");
    assert_eq!(by_user("app")["secret"], SECRET);
    assert_eq!(by_user("reporting")["database"], "ecs");
    assert_eq!(by_user("reporting")["source"], "tag:teleport.dev/managed");
    assert_eq!(session_as(&bastion, "ec", "app"), "True app");
    assert_eq!(session_as(&bastion, "ecs", "reporting"), "True reporting");

    let passwords = rotate_twice(&bastion, &redis, &moto, ("ec", "app", SECRET), || {
        shim.log()
    });
    assert_eq!(passwords[0].len(), 128, "ElastiCache's maximum length");
    // ModifyUser went to the user id with the current and the new password.
    let log = shim.log();
    assert!(log.contains("applied ModifyUser app-id app 2"), "{log}");
    assert!(log.contains("answered DescribeUserGroups g2"), "{log}");

    // Tagged but in neither cache's user groups: never modified, never managed here.
    assert!(!log.contains("stray"), "{log}");
    let out = managed(&bastion, &["rotate", "ec", "stray"]);
    assert!(!out.status.success(), "{out}");
    assert!(accepts(&redis, "stray", "stray-password-0123456789"));
    assert!(!session_as(&bastion, "ec", "stray").starts_with("True"));
    // Tagged false, in the group: not managed either.
    assert!(!shim.log().contains("applied ModifyUser off-id"));

    let all: Vec<&str> = passwords.iter().map(String::as_str).collect();
    bastion.assert_no_secrets(&all);
}

/// Replication group `rg` whose user group `g1` holds one user (id `<user>-id`, tagged
/// managed), created after `fillers` users in no group (tagged too), with the ElastiCache shim;
/// and the config of database `ec` on it.
struct Rg {
    redis: RedisServer,
    moto: Moto,
    shim: ControlPlane,
    dir: tempfile::TempDir,
    config: String,
    state: std::path::PathBuf,
}

fn rg_with(user: &str, fillers: usize) -> Rg {
    let redis = cloud_redis(CP_PW, &[user]);
    let moto = Moto::start();
    moto.boto3(&format!(
        r#"
tags = [dict(Key='bastion.dev/managed', Value='true')]
for i in range({fillers}):
    ec.create_user(UserId='filler-%d' % i, UserName='filler-%d' % i, Engine='redis',
        AccessString='on ~* &* +@all', Passwords=['initial-password-0123456789'], Tags=tags)
ec.create_user(UserId='{user}-id', UserName='{user}', Engine='redis', AccessString='on ~* &* +@all',
    Passwords=['initial-password-0123456789'], Tags=tags)
ec.create_replication_group(ReplicationGroupId='rg', ReplicationGroupDescription='bastion test',
    UserGroupIds=['g1'])
"#
    ));
    let id = format!("{user}-id");
    let shim = ControlPlane::elasticache(
        &moto,
        &redis,
        ("control-plane", CP_PW),
        &[("g1", &[id.as_str()])],
        &[],
        &[(id.as_str(), user)],
    );
    let dir = tempfile::tempdir().unwrap();
    let (config, state) = cloud_config(
        &dir,
        &redis,
        &[(
            "ec",
            r#"service = "elasticache", region = "us-east-1", target = "rg", rotation_interval = "1h""#,
        )],
        &[user],
    );
    Rg {
        redis,
        moto,
        shim,
        dir,
        config,
        state,
    }
}

impl Rg {
    /// The bastion, with `more` environment, after its first rotation.
    fn start(&self, more: &[(&'static str, String)]) -> Bastion {
        let mut env = env_with(
            &self.moto,
            "AWS_ENDPOINT_URL_ELASTICACHE",
            self.shim.endpoint(),
        );
        env.extend(more.iter().cloned());
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let bastion = Bastion::start_with_env(&self.config, &self.state, &env);
        wait_first_rotations(&bastion, 1, || {
            format!("{}\n{}", self.shim.log(), bastion.logs())
        });
        bastion
    }
}

/// The cache's managed user is on the third page of DescribeUsers: discovery follows the
/// `Marker` to it (one id at a time is never asked). SHIMS: DescribeUserGroups, ModifyUser and
/// the paging of DescribeUsers; HARNESS: ModifyUser applied to a real redis-server.
#[test]
fn elasticache_users_are_described_page_by_page() {
    // moto's own `default` user first, then four fillers in no group, then `late`.
    let rg = rg_with("late", 4);
    let bastion = rg.start(&[]);
    assert_eq!(ls(&bastion)[0]["user"], "late");
    assert_eq!(session_as(&bastion, "ec", "late"), "True late");
    let log = rg.shim.log();
    for page in [
        "paged DescribeUsers from 0 more",
        "paged DescribeUsers from 4 last",
    ] {
        assert!(log.contains(page), "{page}: {log}");
    }
    // The fillers are tagged but in no group of the cache: never modified.
    assert!(!log.contains("ModifyUser filler"), "{log}");
    assert!(!log.contains("forwarded DescribeUsers"), "{log}");
}

/// ElastiCache kind, Secrets Manager throttled during rotations, sessions running throughout
/// ([`throttled_rotations_keep_sessions`]). SHIMS: ThrottlingException in front of moto's
/// Secrets Manager; DescribeUserGroups, ModifyUser, DescribeUsers paging; HARNESS: ModifyUser
/// applied to a real redis-server.
#[test]
fn elasticache_rotations_under_throttling_keep_sessions_working() {
    let rg = rg_with("app", 0);
    let (throttle, mode) = throttle_shim(&rg.moto, &rg.redis, &rg.dir);
    let bastion = rg.start(&[("AWS_ENDPOINT_URL_SECRETS_MANAGER", throttle.endpoint())]);
    throttled_rotations_keep_sessions(
        &bastion,
        &rg.redis,
        &rg.moto,
        (&throttle, &mode),
        ("ec", "app", SECRET),
    );
}
