//! IAM auth end to end: redis-cli → bastion (auth mode `iam`) → IAM front → real redis-server.
//!
//! The front (tests/support/iam_front.rs) verifies each token with its own SigV4 code — not
//! aws-sigv4 — for the service, region, target, user, expiry and (serverless) ResourceType, then
//! logs in to Redis as that user with the real password. So a PONG here proves the bastion's
//! tokens are right for ElastiCache, MemoryDB and ElastiCache Serverless.

mod support;

use std::collections::HashMap;

use support::bastion::Bastion;
use support::clients::{redis_cli, Endpoint};
use support::iam_front::{IamFront, IamFrontConfig, Outcome, Rejection};
use support::redis::{RedisOpts, RedisServer};
use support::stack::current_user;

const ACCESS_KEY: &str = "AKIDBASTIONTEST0001";
const SECRET_KEY: &str = "bastion/test/secret/key/0123456789abcdefgh";
const REAL_PASSWORD: &str = "real-redis-password-7c1e";

struct Rig {
    _redis: RedisServer,
    front: IamFront,
    bastion: Bastion,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

/// Redis with user `app`, a front expecting `expect_*`, and a bastion signing for `signs_*`.
fn rig(service: &'static str, serverless: bool, expect_region: &str, signs_region: &str) -> Rig {
    rig_with(RigOpts {
        service,
        serverless,
        expect_region,
        config_region: Some(signs_region),
        ..RigOpts::default()
    })
}

struct RigOpts<'a> {
    service: &'static str,
    serverless: bool,
    /// The region the front verifies signatures for.
    expect_region: &'a str,
    /// The database's `auth.region`; `None` leaves it out.
    config_region: Option<&'a str>,
    session_token: Option<&'a str>,
    rust_log: &'a str,
    /// `[aws.imds] endpoint` (and IMDS enabled for the daemon).
    imds: Option<String>,
    /// More environment for the daemon.
    env: Vec<(&'a str, &'a str)>,
    /// The keys the front expects; `None`: the static keys, given to the daemon in its
    /// environment. `Some`: keys only IMDS hands out (nothing in the environment).
    imds_keys: Option<(&'a str, &'a str)>,
}

impl Default for RigOpts<'_> {
    fn default() -> Self {
        RigOpts {
            service: "elasticache",
            serverless: false,
            expect_region: "us-east-1",
            config_region: Some("us-east-1"),
            session_token: None,
            rust_log: "debug",
            imds: None,
            env: Vec::new(),
            imds_keys: None,
        }
    }
}

fn rig_with(o: RigOpts) -> Rig {
    let redis = RedisServer::start(RedisOpts::users(&["app"], REAL_PASSWORD));
    let (access_key_id, secret_access_key) = o.imds_keys.unwrap_or((ACCESS_KEY, SECRET_KEY));
    let front = IamFront::start(IamFrontConfig {
        service: o.service,
        region: o.expect_region.to_string(),
        target: "my-target".to_string(),
        serverless: o.serverless,
        access_key_id: access_key_id.to_string(),
        secret_access_key: secret_access_key.to_string(),
        session_token: o.session_token.map(str::to_string),
        issued: None,
        upstream: redis.plain_addr(),
        passwords: HashMap::from([("app".to_string(), REAL_PASSWORD.to_string())]),
    });
    let state = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let sock = state.path().join("sock");
    let region = o
        .config_region
        .map(|r| format!("region = \"{r}\", "))
        .unwrap_or_default();
    let imds = o
        .imds
        .as_ref()
        .map(|e| format!("[aws.imds]\nendpoint = \"{e}\"\n"))
        .unwrap_or_default();
    let config = format!(
        r#"
state_dir = "{state}"
[limits]
handshake_timeout = "10s"
[listeners.unix]
directory = "{sock}"
{imds}
[[databases]]
name = "iamdb"
address = "{front}"
auth = {{ mode = "iam", service = "{service}", {region}target = "my-target", serverless = {serverless} }}
allow_plaintext_auth = true
[[roles]]
name = "app-only"
db_users = ["app"]
db_names = ["iamdb"]
[[users]]
name = "alice"
roles = ["app-only"]
unix_user = "{me}"
"#,
        state = state.path().display(),
        sock = sock.display(),
        front = front.addr(),
        service = o.service,
        serverless = o.serverless,
        me = current_user(),
    );
    let home_str = home.path().display().to_string();
    let missing = home.path().join("none").display().to_string();
    let mut env = vec![
        ("HOME", home_str.as_str()),
        ("AWS_CONFIG_FILE", missing.as_str()),
        ("AWS_SHARED_CREDENTIALS_FILE", missing.as_str()),
        ("RUST_LOG", o.rust_log),
    ];
    if o.imds_keys.is_none() {
        env.push(("AWS_ACCESS_KEY_ID", ACCESS_KEY));
        env.push(("AWS_SECRET_ACCESS_KEY", SECRET_KEY));
    }
    if let (Some(token), None) = (o.session_token, o.imds_keys) {
        env.push(("AWS_SESSION_TOKEN", token));
    }
    if o.imds.is_some() {
        env.push(("AWS_EC2_METADATA_DISABLED", "false"));
    }
    env.extend(o.env.iter().copied());
    let bastion = Bastion::start_with_env(&config, state.path(), &env);
    Rig {
        _redis: redis,
        front,
        bastion,
        _dirs: (state, home),
    }
}

fn accepted_through(service: &'static str, serverless: bool) {
    let r = rig(service, serverless, "us-east-1", "us-east-1");
    let ep = Endpoint::unix(r.bastion.socket_path("iamdb"));

    // RESP2: the bastion sends AUTH app <token>.
    let out = redis_cli(&ep, &["ACL", "WHOAMI"]);
    assert_eq!(out.stdout().trim(), "app", "{out:?}");
    // RESP3: the bastion sends HELLO 3 AUTH app <token>; the client sees the server's map.
    let out = redis_cli(&ep, &["-3", "HELLO", "3"]);
    assert!(
        out.stdout().contains("proto") && out.stdout().contains('3'),
        "{out:?}"
    );

    let verdicts = r.front.verdicts();
    assert!(verdicts.len() >= 2, "{verdicts:?}");
    assert!(
        verdicts
            .iter()
            .all(|v| v.user == "app" && v.outcome == Outcome::Accepted),
        "{verdicts:?}"
    );
    r.bastion.assert_no_secrets(&[SECRET_KEY, REAL_PASSWORD]);
}

#[test]
fn elasticache_token_is_accepted() {
    accepted_through("elasticache", false);
}

#[test]
fn memorydb_token_is_accepted() {
    accepted_through("memorydb", false);
}

#[test]
fn serverless_token_is_accepted() {
    accepted_through("elasticache", true);
}

#[test]
fn rejected_token_is_explained() {
    // The bastion signs for the wrong region: the front (like AWS) answers WRONGPASS.
    let r = rig("elasticache", false, "us-east-1", "eu-west-1");
    let ep = Endpoint::unix(r.bastion.socket_path("iamdb"));
    let mark = r.bastion.log_mark();
    let out = redis_cli(&ep, &["PING"]);
    let text = out.stdout();
    // The client learns that it was refused and a reference; the operator's explanation (which
    // permission, which ARN) is in the audit event under that reference.
    assert!(
        text.contains("bastion:") && text.contains("rejected the bastion's credentials"),
        "{out:?}"
    );
    assert!(
        !text.contains("elasticache:Connect") && !text.contains("arn:"),
        "{out:?}"
    );
    let reference = text
        .split("(ref ")
        .nth(1)
        .and_then(|r| r.get(..8))
        .unwrap_or_else(|| panic!("no ref in {out:?}"))
        .to_string();
    assert!(
        matches!(
            r.front.last_verdict().map(|v| v.outcome),
            Some(Outcome::Rejected(Rejection::WrongRegion { .. }))
        ),
        "{:?}",
        r.front.verdicts()
    );
    let denied = r
        .bastion
        .expect_denied(mark, &["rejected the IAM auth token"]);
    assert!(
        denied.contains("elasticache:Connect") && denied.contains(&format!("ref {reference}")),
        "{denied}"
    );
    r.bastion.assert_no_secrets(&[SECRET_KEY, REAL_PASSWORD]);
}

/// Even at `RUST_LOG=trace` (where aws-sigv4 would print its canonical request), no credential,
/// session token or IAM token reaches the logs.
#[test]
fn trace_logging_leaks_no_credentials() {
    const SESSION_TOKEN: &str = "FwoGZXIvYXdzEBASESSIONTOKENbastiontest";
    let r = rig_with(RigOpts {
        session_token: Some(SESSION_TOKEN),
        rust_log: "trace",
        ..RigOpts::default()
    });
    let ep = Endpoint::unix(r.bastion.socket_path("iamdb"));
    let out = redis_cli(&ep, &["ACL", "WHOAMI"]);
    assert_eq!(out.stdout().trim(), "app", "{out:?}");
    assert_eq!(
        r.front.last_verdict().map(|v| v.outcome),
        Some(Outcome::Accepted)
    );
    // The token's signature part is what would show if the token itself leaked.
    r.bastion
        .assert_no_secrets(&[SECRET_KEY, SESSION_TOKEN, REAL_PASSWORD, "X-Amz-Signature="]);
}

/// Static stability, end to end: the bastion's only credentials come from IMDS (the emulator on
/// loopback). The credentials expire and IMDS goes away; new sessions still authenticate, with
/// the last credentials extended and a warning in the log.
#[test]
fn sessions_survive_an_imds_outage_with_expired_credentials() {
    use std::time::{Duration, SystemTime};
    use support::imds::{
        Behaviour, Emulator, INSTANCE_ID, SECRET_ACCESS_KEY as IMDS_SECRET, SESSION_TOKEN,
    };
    const IMDS_KEY: &str = "ASIAEMUSTATICSTABLE1";

    let mut imds = Emulator::start(Behaviour {
        expiration: SystemTime::now() + Duration::from_secs(2),
        fixed_access_key_id: Some(IMDS_KEY.to_string()),
        ..Behaviour::default()
    });
    let rig = rig_with(RigOpts {
        session_token: Some(SESSION_TOKEN),
        imds: Some(imds.endpoint()),
        imds_keys: Some((IMDS_KEY, IMDS_SECRET)),
        ..RigOpts::default()
    });
    let (front, bastion) = (&rig.front, &rig.bastion);
    let ep = Endpoint::unix(bastion.socket_path("iamdb"));
    // The instance id from IMDS lands in the audit events.
    bastion.expect_log_line(0, &["running on EC2 instance", INSTANCE_ID], &[]);

    let mark = bastion.log_mark();
    let out = redis_cli(&ep, &["ACL", "WHOAMI"]);
    assert_eq!(out.stdout().trim(), "app", "{out:?} {:?}", front.verdicts());
    bastion.expect_log_line(
        mark,
        &["session.start", &format!("instance=\"{INSTANCE_ID}\"")],
        &[],
    );

    // The credentials expire, then IMDS goes away.
    std::thread::sleep(Duration::from_secs(3));
    imds.stop();
    let mark = bastion.log_mark();
    let out = redis_cli(&ep, &["ACL", "WHOAMI"]);
    assert_eq!(out.stdout().trim(), "app", "{out:?}");
    bastion.expect_log_line(mark, &["static stability"], &[]);
    assert!(
        front
            .verdicts()
            .iter()
            .all(|v| v.outcome == Outcome::Accepted),
        "{:?}",
        front.verdicts()
    );
    bastion.assert_no_secrets(&[IMDS_SECRET, SESSION_TOKEN, REAL_PASSWORD]);
}

/// A database without `auth.region` on an "instance" whose IMDS (the emulator) says eu-west-3:
/// the front, which verifies the region in each token's credential scope, accepts the tokens.
/// The region is asked for once, with an IMDSv2 token, however many sessions there are.
#[test]
fn region_comes_from_imds_when_not_configured() {
    use support::imds::{Behaviour, Emulator, REGION};
    let imds = Emulator::start(Behaviour::default());
    let r = rig_with(RigOpts {
        expect_region: REGION,
        config_region: None,
        imds: Some(imds.endpoint()),
        ..RigOpts::default()
    });
    let ep = Endpoint::unix(r.bastion.socket_path("iamdb"));
    for _ in 0..3 {
        let out = redis_cli(&ep, &["ACL", "WHOAMI"]);
        assert_eq!(
            out.stdout().trim(),
            "app",
            "{out:?} {:?}",
            r.front.verdicts()
        );
    }
    let verdicts = r.front.verdicts();
    assert!(
        verdicts.len() >= 3 && verdicts.iter().all(|v| v.outcome == Outcome::Accepted),
        "{verdicts:?}"
    );
    r.bastion.expect_log_line(
        0,
        &[
            "AWS region for IAM databases",
            &format!("region={REGION}"),
            "source=\"imds\"",
        ],
        &[],
    );
    let asked: Vec<_> = imds
        .requests()
        .into_iter()
        .filter(|q| q.path == "/latest/meta-data/placement/region")
        .collect();
    assert_eq!(asked.len(), 1, "looked up once and cached: {asked:?}");
    assert!(
        asked[0].header("x-aws-ec2-metadata-token").is_some(),
        "IMDSv2 only: {asked:?}"
    );
    r.bastion.assert_no_secrets(&[SECRET_KEY, REAL_PASSWORD]);
}

/// The database's own region wins: IMDS is never asked for one.
#[test]
fn configured_region_wins_over_imds() {
    accepted_without_asking_imds("us-east-1", Some("us-east-1"), vec![]);
}

/// Without `auth.region`, AWS_REGION comes before IMDS (the AWS SDKs' order).
#[test]
fn environment_region_wins_over_imds() {
    accepted_without_asking_imds(
        "ap-southeast-2",
        None,
        vec![("AWS_REGION", "ap-southeast-2")],
    );
}

/// With an IMDS emulator that would answer, a session's token is accepted for `expect_region`
/// and IMDS was never asked for a region.
fn accepted_without_asking_imds(
    expect_region: &str,
    config_region: Option<&str>,
    env: Vec<(&str, &str)>,
) {
    use support::imds::{Behaviour, Emulator};
    let imds = Emulator::start(Behaviour::default());
    let r = rig_with(RigOpts {
        expect_region,
        config_region,
        imds: Some(imds.endpoint()),
        env,
        ..RigOpts::default()
    });
    let ep = Endpoint::unix(r.bastion.socket_path("iamdb"));
    let out = redis_cli(&ep, &["ACL", "WHOAMI"]);
    assert_eq!(
        out.stdout().trim(),
        "app",
        "{out:?} {:?}",
        r.front.verdicts()
    );
    assert_eq!(
        r.front.last_verdict().map(|v| v.outcome),
        Some(Outcome::Accepted)
    );
    assert_eq!(
        imds.count(&hyper::Method::GET, "/latest/meta-data/placement/region"),
        0,
        "{:?}",
        imds.requests()
    );
}

/// No region in the database, the environment, the profile or IMDS (disabled): the client is
/// refused with an error that names the database and how to give it a region, and nothing is
/// sent upstream.
#[test]
fn no_region_anywhere_is_an_error_naming_the_database() {
    let r = rig_with(RigOpts {
        config_region: None,
        ..RigOpts::default()
    });
    let ep = Endpoint::unix(r.bastion.socket_path("iamdb"));
    let mark = r.bastion.log_mark();
    let out = redis_cli(&ep, &["PING"]);
    let text = out.stdout();
    assert!(
        text.contains("bastion:") && text.contains("database 'iamdb' is not usable"),
        "{out:?}"
    );
    assert!(r.front.verdicts().is_empty(), "{:?}", r.front.verdicts());
    // The operator's log names the database and the three ways to set a region.
    let line = r
        .bastion
        .expect_log_line(mark, &["needs an AWS region", "iamdb"], &[]);
    assert!(
        line.contains("--region")
            && line.contains("AWS_REGION")
            && line.contains("imds (IMDS is turned off"),
        "{line}"
    );
}

/// Issue 10: a client's own AUTH on a guarded session to an IAM database is answered by
/// re-authenticating upstream with a FRESH token for the session's db-user — signed at the
/// re-AUTH, not the one from the session start (nor the previous re-AUTH's) — and the client's
/// password goes nowhere. `HELLO 3 AUTH app …` goes upstream without its AUTH part.
///
/// Two tokens signed within the same second with the same keys are byte-identical (SigV4 is
/// deterministic), so the test waits for the clock to pass a second between steps: a fresh
/// token then has a later `X-Amz-Date` and another digest, a replayed one the same.
#[tokio::test]
async fn own_auth_reauthenticates_with_a_fresh_token() {
    use std::time::Duration;
    use support::raw::{show, Raw};
    const CLIENT_PASSWORD: &str = "client-says-7d2f19";

    let r = rig("elasticache", false, "us-east-1", "us-east-1");
    let mut c = Raw::connect(&Endpoint::unix(r.bastion.socket_path("iamdb")))
        .await
        .expect("connect");
    let app = b"$3\r\napp\r\n".to_vec();
    assert_eq!(c.request_str(&["ACL", "WHOAMI"]).await.unwrap(), app);
    let tokens = r.front.tokens();
    assert!(
        tokens.len() == 1 && tokens[0].opening && tokens[0].signed_at.is_some(),
        "{tokens:?}"
    );

    let mut last = tokens[0].clone();
    for auth in [
        vec!["AUTH", "app", CLIENT_PASSWORD],
        vec!["AUTH", CLIENT_PASSWORD],
    ] {
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let reply = c.request_str(&auth).await.unwrap();
        assert_eq!(reply, b"+OK\r\n", "{auth:?}: {}", show(&reply));
        let tokens = r.front.tokens();
        let new = tokens.last().expect("a token").clone();
        assert!(
            !new.opening
                && new.user == "app"
                && new.signed_at > last.signed_at
                && new.digest != last.digest,
            "{auth:?}: not a fresh token for app: {tokens:?}"
        );
        assert_eq!(
            r.front.last_verdict().map(|v| (v.user, v.outcome)),
            Some(("app".to_string(), Outcome::Accepted))
        );
        last = new;
    }
    assert_eq!(c.request_str(&["ACL", "WHOAMI"]).await.unwrap(), app);

    // HELLO … AUTH as the own db-user: no AUTH part (no token, no password) goes upstream.
    let seen = r.front.tokens().len();
    let reply = c
        .request_str(&["HELLO", "3", "AUTH", "app", CLIENT_PASSWORD])
        .await
        .unwrap();
    assert!(reply.starts_with(b"%"), "{}", show(&reply));
    assert_eq!(r.front.tokens().len(), seen, "{:?}", r.front.tokens());
    assert_eq!(c.request_str(&["ACL", "WHOAMI"]).await.unwrap(), app);
    drop(c);
    r.bastion
        .assert_no_secrets(&[SECRET_KEY, REAL_PASSWORD, CLIENT_PASSWORD]);
}
