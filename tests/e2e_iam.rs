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
use support::process::poll;
use support::redis::{RedisOpts, RedisServer};
use support::stack::current_user;

const ACCESS_KEY: &str = "AKIDBASTIONTEST0001";
const SECRET_KEY: &str = "bastion/test/secret/key/0123456789abcdefgh";
const REAL_PASSWORD: &str = "real-redis-password-7c1e";

struct Rig {
    redis: RedisServer,
    front: IamFront,
    bastion: Bastion,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

/// Every login the front judged was accepted.
#[track_caller]
fn assert_all_accepted(front: &IamFront) {
    let verdicts = front.verdicts();
    assert!(
        verdicts.iter().all(|v| v.outcome == Outcome::Accepted),
        "{verdicts:?}"
    );
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
    /// The database's `relay`.
    relay: &'a str,
    /// Lines added to `[limits]`.
    limits: &'a str,
    /// The front's `connection_limit`.
    connection_limit: Option<std::time::Duration>,
    /// `limits.warm_connections` (0: each session authenticates its own connection).
    warm: usize,
    /// `limits.reuse_connections` (used connections kept for the next session).
    reuse: usize,
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
            relay: "guard",
            limits: "",
            connection_limit: None,
            warm: 0,
            reuse: 0,
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
        connection_limit: o.connection_limit,
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
# These tests count the tokens a session's own opening and re-AUTHs mint: no connections
# authenticated ahead (`warm_connections_log_in_with_tokens_for_the_granted_db_user`), none reused
# unless a test says so (`reuse`).
warm_connections = {warm}
reuse_connections = {reuse}
{limits}
[listeners.unix]
directory = "{sock}"
{imds}
[[databases]]
name = "iamdb"
address = "{front}"
auth = {{ mode = "iam", service = "{service}", {region}target = "my-target", serverless = {serverless} }}
allow_plaintext_auth = true
relay = "{relay}"
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
        limits = o.limits,
        relay = o.relay,
        warm = o.warm,
        reuse = o.reuse,
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
        redis,
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
    assert_all_accepted(front);
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

/// Signing costs about a third of a short session's CPU, so sessions that open within
/// a minute of each other for the same db-user log in with one token (`aws::iam`'s cache; the
/// front accepts a token for any number of connections within its 15 minutes, as the services
/// do). Three sessions over more than two seconds: one signature (a token signed anew would
/// carry a later `X-Amz-Date` and another digest) — while a client's own AUTH on a live
/// session still gets a token signed at that moment, which the next session does not take.
#[tokio::test]
async fn sessions_within_a_minute_share_a_token_and_a_re_auth_signs_its_own() {
    use std::time::Duration;
    use support::raw::Raw;

    let r = rig_with(RigOpts::default());
    let ep = Endpoint::unix(r.bastion.socket_path("iamdb"));
    let app = b"$3\r\napp\r\n".to_vec();
    let mut sessions = Vec::new();
    for _ in 0..3 {
        let mut c = Raw::connect(&ep).await.expect("connect");
        assert_eq!(c.request_str(&["ACL", "WHOAMI"]).await.unwrap(), app);
        sessions.push(c);
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    let tokens = r.front.tokens();
    assert!(
        tokens.len() == 3
            && tokens.iter().all(|t| t.opening && t.user == "app")
            && tokens.iter().all(|t| t.digest == tokens[0].digest),
        "three openings, one token: {tokens:?}"
    );
    assert_all_accepted(&r.front);

    let reply = sessions[0]
        .request_str(&["AUTH", "app", "client-password"])
        .await
        .unwrap();
    assert_eq!(reply, b"+OK\r\n");
    let mut c = Raw::connect(&ep).await.expect("connect");
    assert_eq!(c.request_str(&["ACL", "WHOAMI"]).await.unwrap(), app);
    let tokens = r.front.tokens();
    let reauth = &tokens[3];
    assert!(
        tokens.len() == 5
            && !reauth.opening
            && reauth.signed_at > tokens[0].signed_at
            && reauth.digest != tokens[0].digest
            && tokens[4].opening
            && tokens[4].digest == tokens[0].digest,
        "the re-AUTH signs its own token; the next session takes the kept one: {tokens:?}"
    );
    assert_all_accepted(&r.front);
    r.bastion.assert_no_secrets(&[SECRET_KEY, REAL_PASSWORD]);
}

/// Issue 12: the front closes a connection 3 s after its last accepted AUTH (the services' 12-hour
/// limit, shortened). In inspect mode with `reauth_interval = "1s"` the bastion authenticates
/// the upstream again with a fresh token at quiet points and the session outlives the limit,
/// the client seeing only its own replies; in guard mode (no re-AUTH) the same session is cut.
#[tokio::test]
async fn inspect_mode_reauthenticates_before_the_connection_limit() {
    use std::time::Duration;
    use support::raw::Raw;

    let limit = Some(Duration::from_secs(3));
    let r = rig_with(RigOpts {
        relay: "inspect",
        limits: "reauth_interval = \"1s\"",
        connection_limit: limit,
        ..RigOpts::default()
    });
    let mut c = Raw::connect(&Endpoint::unix(r.bastion.socket_path("iamdb")))
        .await
        .expect("connect");
    for i in 0..8 {
        let echo = format!("e{i}");
        let reply = c.request_str(&["ECHO", &echo]).await.expect("reply");
        assert_eq!(reply, format!("$2\r\n{echo}\r\n").as_bytes(), "after {i} s");
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    let tokens = r.front.tokens();
    let reauths: Vec<_> = tokens.iter().filter(|t| !t.opening).collect();
    assert!(reauths.len() >= 4, "{tokens:?}");
    assert!(reauths.iter().all(|t| t.user == "app"), "{tokens:?}");
    // Fresh tokens: signed later as time goes on, not the opening one replayed.
    let first = tokens[0].signed_at;
    assert!(reauths.last().unwrap().signed_at > first, "{tokens:?}");
    assert_all_accepted(&r.front);
    r.bastion.assert_no_secrets(&[SECRET_KEY, REAL_PASSWORD]);

    // The control: guard mode sends no re-AUTH, and the front cuts the session.
    let g = rig_with(RigOpts {
        connection_limit: limit,
        ..RigOpts::default()
    });
    let mut c = Raw::connect(&Endpoint::unix(g.bastion.socket_path("iamdb")))
        .await
        .expect("connect");
    assert_eq!(c.request_str(&["PING"]).await.unwrap(), b"+PONG\r\n");
    tokio::time::sleep(Duration::from_millis(4000)).await;
    assert!(
        c.request_str(&["PING"]).await.is_err(),
        "guard mode outlived the limit"
    );
}

/// Issue 12: a client that never pauses — a writer always ahead of its reader, so some reply
/// is always outstanding and the client's next bytes are always ready — is authenticated
/// again all the same (between two of its commands, the AUTH's reply cut out by position):
/// through several of the front's (shortened) connection limits every `INCR` is answered, in
/// order, counting up with no gap, and the session is not cut.
#[tokio::test]
async fn a_client_that_never_pauses_is_reauthenticated_between_its_commands() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let r = rig_with(RigOpts {
        relay: "inspect",
        limits: "reauth_interval = \"1s\"",
        connection_limit: Some(Duration::from_secs(3)),
        rust_log: "info",
        ..RigOpts::default()
    });
    let stream = tokio::net::UnixStream::connect(r.bastion.socket_path("iamdb"))
        .await
        .expect("connect");
    let (mut rx, mut tx) = stream.into_split();
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let batch = support::raw::command_str(&["INCR", "pipe:n"]).repeat(32);
    let writer = tokio::spawn({
        let (stop, sent) = (stop.clone(), sent.clone());
        async move {
            while !stop.load(Ordering::Relaxed) {
                tx.write_all(&batch).await?;
                sent.fetch_add(32, Ordering::Relaxed);
            }
            Ok::<_, std::io::Error>(tx)
        }
    });
    let stopper = tokio::spawn({
        let stop = stop.clone();
        async move {
            tokio::time::sleep(Duration::from_secs(8)).await;
            stop.store(true, Ordering::Relaxed);
        }
    });
    // Every reply is `:<n>\r\n`, n counting up from 1; read until the writer has stopped and
    // every command it sent is answered.
    let mut next = 1u64;
    let mut buf = vec![0u8; 1 << 16];
    let mut have = Vec::new();
    loop {
        if stop.load(Ordering::Relaxed)
            && next > sent.load(Ordering::Relaxed)
            && writer.is_finished()
        {
            break;
        }
        let n = tokio::time::timeout(Duration::from_secs(5), rx.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no reply for 5 s after :{}", next - 1))
            .unwrap_or_else(|e| panic!("session cut after :{}: {e}", next - 1));
        assert!(
            n > 0,
            "session closed after :{} of {} sent",
            next - 1,
            sent.load(Ordering::Relaxed)
        );
        have.extend_from_slice(&buf[..n]);
        let mut at = 0;
        while let Some(end) = have[at..].windows(2).position(|w| w == b"\r\n") {
            let line = &have[at..at + end];
            let want = format!(":{next}");
            assert_eq!(
                String::from_utf8_lossy(line),
                want,
                "reply {next} out of order or not the client's"
            );
            next += 1;
            at += end + 2;
        }
        have.drain(..at);
    }
    stopper.await.unwrap();
    let tx = writer.await.unwrap().expect("writer");
    drop(tx);
    let answered = next - 1;
    assert!(answered > 1000, "the client was too slow: {answered}");
    let tokens = r.front.tokens();
    let reauths = tokens.iter().filter(|t| !t.opening).count();
    assert!(reauths >= 4, "{reauths} re-AUTHs in 8 s: {tokens:?}");
    assert_all_accepted(&r.front);
    r.bastion.assert_no_secrets(&[SECRET_KEY, REAL_PASSWORD]);
}

/// Issue 12, item 4: a RESP2 connection in subscribe mode cannot run AUTH, so the bastion moves
/// the session to a fresh authenticated upstream connection holding the same subscriptions.
/// Through several of the front's (shortened) connection limits a steady publisher's numbered
/// messages on a channel and on a pattern all reach the subscriber once, in order.
#[tokio::test]
async fn resp2_subscriber_moves_to_fresh_connections_losing_and_repeating_nothing() {
    use std::time::Duration;

    let (r, mut sub) = pubsub_rig().await;
    subscribe_ch_and_news(&mut sub).await;
    let publisher = tokio::spawn(publish_for(r.redis.plain_addr(), Duration::from_secs(8)));
    let (n, plain, pattern) = read_messages(&mut sub, publisher, true).await;
    assert!(n > 100, "the publisher was too slow: {n}");
    let want = |p: &str| (0..n).map(|i| format!("{p}{i}")).collect::<Vec<_>>();
    assert_eq!(first_difference(&plain, &want("m")), None, "channel ch");
    assert_eq!(
        first_difference(&pattern, &want("n")),
        None,
        "pattern news.*"
    );
    // It moved: fresh connections, each opened with a fresh token (no AUTH on the old one).
    let tokens = r.front.tokens();
    assert!(
        tokens.iter().filter(|t| t.opening).count() >= 4,
        "{tokens:?}"
    );
    assert!(tokens.iter().all(|t| t.opening), "{tokens:?}");
    let logs = r.bastion.logs();
    assert!(logs.contains("session.reauth"), "no audit of the moves");
    r.bastion.assert_no_secrets(&[SECRET_KEY, REAL_PASSWORD]);
}

/// The same with redis-py (RESP2) as the subscriber, to a channel, a pattern and a shard
/// channel (`SSUBSCRIBE`, one command each on the new connection).
#[tokio::test]
async fn a_redis_py_subscriber_keeps_every_message_across_moves() {
    use std::time::Duration;

    let (r, _idle) = pubsub_rig().await;
    let ep = Endpoint::unix(r.bastion.socket_path("iamdb"));
    let script = r#"
import json, time
r = connect()
p = r.pubsub()
p.subscribe("ch")
p.psubscribe("news.*")
p.ssubscribe("sch")
got = {"message": [], "pmessage": [], "smessage": []}
start = last = time.time()
while time.time() - start < 40:
    m = p.get_message(timeout=0.5)
    now = time.time()
    if m is None:
        if now - start > 9 and now - last > 2:
            break
        continue
    last = now
    if m["type"] in got:
        got[m["type"]].append(m["data"].decode())
print(json.dumps(got))
"#;
    let py = tokio::task::spawn_blocking(move || support::clients::python(&ep, script));
    // Publish once the subscriber holds all three (its upstream connection, seen by Redis).
    let redis = r.redis.plain_addr();
    let mut admin = support::raw::Raw::connect_tcp_only(redis).await.unwrap();
    admin
        .request_str(&["AUTH", "app", REAL_PASSWORD])
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while admin
        .request_str(&["PUBSUB", "SHARDNUMSUB", "sch"])
        .await
        .unwrap()
        != b"*2\r\n$3\r\nsch\r\n:1\r\n"
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "redis-py never subscribed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let n = tokio::spawn(publish_for(redis, Duration::from_secs(8)))
        .await
        .unwrap();
    let out = py.await.unwrap();
    out.assert_success();
    let text = out.stdout();
    let want = |p: &str| {
        let list: Vec<String> = (0..n).map(|i| format!("\"{p}{i}\"")).collect();
        format!("[{}]", list.join(", "))
    };
    for (kind, p) in [("message", "m"), ("pmessage", "n"), ("smessage", "s")] {
        let key = format!("\"{kind}\": {}", want(p));
        assert!(
            text.contains(&key),
            "{kind}: lost, repeated or reordered messages: {text}"
        );
    }
    let tokens = r.front.tokens();
    assert!(
        tokens.iter().filter(|t| t.opening).count() >= 4,
        "{tokens:?}"
    );
}

/// Client UNSUBSCRIBE / SUBSCRIBE / PING during and after the moves get exactly the replies
/// Redis gives a connection that never moved (compared byte for byte with one straight to
/// Redis), and a subscriber that unsubscribed from everything is re-authenticated in place.
#[tokio::test]
async fn subscribe_commands_across_moves_get_redis_exact_replies() {
    use std::time::Duration;
    use support::raw::{command_str, show, Raw};

    let (r, mut sub) = pubsub_rig().await;
    let mut direct = Raw::connect_tcp_only(r.redis.plain_addr())
        .await
        .expect("connect to redis");
    assert_eq!(
        direct
            .request_str(&["AUTH", "app", REAL_PASSWORD])
            .await
            .unwrap(),
        b"+OK\r\n"
    );
    subscribe_ch_and_news(&mut sub).await;
    subscribe_ch_and_news(&mut direct).await;
    let same = |what: &str, a: Vec<u8>, b: Vec<u8>| {
        assert_eq!(a, b, "{what}: bastion {} / redis {}", show(&a), show(&b));
    };
    // 50 rounds, 120 ms apart: across three or four moves (reauth_interval 1 s).
    for round in 0..50 {
        // (command, its replies: one per channel for the subscribe family)
        for (cmd, n) in [
            (vec!["UNSUBSCRIBE", "ch"], 1),
            (vec!["PING"], 1),
            (vec!["SUBSCRIBE", "ch", "other"], 2),
            (vec!["UNSUBSCRIBE", "other"], 1),
        ] {
            sub.send(&command_str(&cmd)).await.unwrap();
            direct.send(&command_str(&cmd)).await.unwrap();
            let a = sub.read_frames(n).await.expect("the bastion's reply");
            let b = direct.read_frames(n).await.expect("redis' reply");
            same(&format!("round {round}: {cmd:?}"), a.concat(), b.concat());
        }
        // A pipeline, written at once.
        let pipeline = [
            command_str(&["PUNSUBSCRIBE", "news.*"]),
            command_str(&["PSUBSCRIBE", "news.*"]),
            command_str(&["PING", "x"]),
        ]
        .concat();
        sub.send(&pipeline).await.unwrap();
        direct.send(&pipeline).await.unwrap();
        same(
            &format!("round {round}: pipeline"),
            sub.read_frames(3).await.unwrap().concat(),
            direct.read_frames(3).await.unwrap().concat(),
        );
        tokio::time::sleep(Duration::from_millis(120)).await;
    }
    // Out of subscribe mode (argless forms: one confirmation per subscription).
    for cmd in [vec!["UNSUBSCRIBE"], vec!["PUNSUBSCRIBE"]] {
        let a = sub.request_str(&cmd).await.unwrap();
        let b = direct.request_str(&cmd).await.unwrap();
        same(&format!("{cmd:?}"), a, b);
    }
    // A plain session now: re-authenticated in place, past the connection limit.
    for i in 0..4 {
        let reply = sub.request_str(&["ECHO", &format!("e{i}")]).await.unwrap();
        assert_eq!(reply, format!("$2\r\ne{i}\r\n").as_bytes());
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    let tokens = r.front.tokens();
    assert!(
        tokens.iter().filter(|t| t.opening).count() >= 4,
        "{tokens:?}"
    );
    assert!(tokens.iter().any(|t| !t.opening), "{tokens:?}");
}

/// A move whose new connection is refused ends the session, audited as a failed re-AUTH (as
/// when the upstream refuses the AUTH itself).
#[tokio::test]
async fn a_refused_move_ends_the_subscribers_session_with_an_audit_event() {
    use std::time::Duration;

    let (r, mut sub) = pubsub_rig().await;
    subscribe_ch_and_news(&mut sub).await;
    let mark = r.bastion.log_mark();
    r.front.refuse_new_connections(true);
    let rest = sub
        .read_until_closed(Duration::from_secs(10))
        .await
        .expect("the session outlived a refused move");
    assert!(rest.is_empty(), "{rest:?}");
    let line = r
        .bastion
        .expect_log_line(mark, &["session.reauth", "failed"], &[]);
    assert!(line.contains("app"), "{line}");
    r.bastion.assert_no_secrets(&[SECRET_KEY, REAL_PASSWORD]);
}

/// A RESP3 (`HELLO 3`) subscriber can run AUTH in subscribe mode: it keeps its connection and
/// is re-authenticated in place, its messages uninterrupted.
#[tokio::test]
async fn a_resp3_subscriber_is_reauthenticated_in_place() {
    use std::time::Duration;

    let (r, mut sub) = pubsub_rig().await;
    let hello = sub.request_str(&["HELLO", "3"]).await.unwrap();
    assert!(hello.starts_with(b"%"), "{hello:?}");
    sub.send(&support::raw::command_str(&["SUBSCRIBE", "ch"]))
        .await
        .unwrap();
    assert_eq!(
        sub.read_frame().await.unwrap(),
        b">3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n"
    );
    let publisher = tokio::spawn(publish_for(r.redis.plain_addr(), Duration::from_secs(5)));
    let (n, got, _) = read_messages(&mut sub, publisher, false).await;
    let want: Vec<String> = (0..n).map(|i| format!("m{i}")).collect();
    assert_eq!(first_difference(&got, &want), None);
    let tokens = r.front.tokens();
    assert_eq!(tokens.iter().filter(|t| t.opening).count(), 1, "{tokens:?}");
    assert!(
        tokens.iter().filter(|t| !t.opening).count() >= 3,
        "{tokens:?}"
    );
}

/// Read `sub`'s messages until the publisher ended and its last ones arrived: how many it
/// published, the payloads on `ch` and (`pattern`) those matching `news.*`.
async fn read_messages(
    sub: &mut support::raw::Raw,
    publisher: tokio::task::JoinHandle<usize>,
    pattern: bool,
) -> (usize, Vec<String>, Vec<String>) {
    tokio::pin!(publisher);
    let (mut plain, mut matched) = (Vec::new(), Vec::new());
    let mut published = None;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Some(n) = published {
            let last = |got: &Vec<String>, p: &str| got.last() == Some(&format!("{p}{}", n - 1));
            if last(&plain, "m") && (!pattern || last(&matched, "n")) {
                return (n, plain, matched);
            }
        }
        tokio::select! {
            frame = sub.read_frame() => {
                let frame = frame.expect("the subscriber's connection was cut");
                match elements(&frame).as_slice() {
                    [kind, ch, payload] if kind == "message" && ch == "ch" => {
                        plain.push(payload.clone())
                    }
                    [kind, pat, ch, payload]
                        if kind == "pmessage" && pat == "news.*" && ch == "news.x" =>
                    {
                        matched.push(payload.clone())
                    }
                    other => panic!("not a message: {other:?}"),
                }
            }
            n = &mut publisher, if published.is_none() => {
                published = Some(n.expect("publisher"))
            }
            () = tokio::time::sleep_until(deadline) => {
                panic!("messages missing: {} / {}", plain.len(), matched.len())
            }
        }
    }
}

/// Inspect mode, `reauth_interval` 1 s, connections cut 3 s after their last AUTH; a client
/// connected to it.
async fn pubsub_rig() -> (Rig, support::raw::Raw) {
    let r = rig_with(RigOpts {
        relay: "inspect",
        limits: "reauth_interval = \"1s\"",
        connection_limit: Some(std::time::Duration::from_secs(3)),
        rust_log: "info",
        ..RigOpts::default()
    });
    let sub = support::raw::Raw::connect(&Endpoint::unix(r.bastion.socket_path("iamdb")))
        .await
        .expect("connect");
    (r, sub)
}

async fn subscribe_ch_and_news(c: &mut support::raw::Raw) {
    c.send(&support::raw::command_str(&["SUBSCRIBE", "ch"]))
        .await
        .unwrap();
    assert_eq!(
        c.read_frame().await.unwrap(),
        b"*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n"
    );
    c.send(&support::raw::command_str(&["PSUBSCRIBE", "news.*"]))
        .await
        .unwrap();
    assert_eq!(
        c.read_frame().await.unwrap(),
        b"*3\r\n$10\r\npsubscribe\r\n$6\r\nnews.*\r\n:2\r\n"
    );
}

/// Publish `m<i>` on `ch`, `n<i>` on `news.x` and (SPUBLISH) `s<i>` on `sch`, i = 0, 1, …,
/// straight to Redis for `run`; how many of each.
async fn publish_for(redis: std::net::SocketAddr, run: std::time::Duration) -> usize {
    let mut p = support::raw::Raw::connect_tcp_only(redis)
        .await
        .expect("publisher");
    assert_eq!(
        p.request_str(&["AUTH", "app", REAL_PASSWORD])
            .await
            .unwrap(),
        b"+OK\r\n"
    );
    let end = tokio::time::Instant::now() + run;
    let mut n = 0;
    // Bursts of pipelined publishes: messages arrive faster than a move takes, so some are
    // delivered on both connections at the seam.
    const BURST: usize = 16;
    while tokio::time::Instant::now() < end {
        let mut burst = Vec::new();
        for i in n..n + BURST {
            burst.extend(support::raw::command_str(&[
                "PUBLISH",
                "ch",
                &format!("m{i}"),
            ]));
            burst.extend(support::raw::command_str(&[
                "PUBLISH",
                "news.x",
                &format!("n{i}"),
            ]));
            burst.extend(support::raw::command_str(&[
                "SPUBLISH",
                "sch",
                &format!("s{i}"),
            ]));
        }
        p.send(&burst).await.unwrap();
        p.read_frames(3 * BURST).await.unwrap();
        n += BURST;
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    n
}

/// The elements of a flat array or push of bulk strings (integers as their digits).
fn elements(frame: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(frame);
    let mut lines = text.split("\r\n").skip(1);
    let mut out = Vec::new();
    while let Some(line) = lines.next() {
        if line.starts_with('$') {
            out.push(lines.next().unwrap_or_default().to_string());
        } else if let Some(int) = line.strip_prefix(':') {
            out.push(int.to_string());
        }
    }
    out
}

/// Where `got` first differs from `want` (a lost, repeated or reordered message), with context.
fn first_difference(got: &[String], want: &[String]) -> Option<String> {
    let at = got.iter().zip(want).position(|(g, w)| g != w);
    match at {
        None if got.len() == want.len() => None,
        None => Some(format!("{} messages, {} published", got.len(), want.len())),
        Some(i) => Some(format!(
            "at {i}: got {:?}, want {:?}",
            &got[i.saturating_sub(2)..(i + 3).min(got.len())],
            &want[i.saturating_sub(2)..(i + 3).min(want.len())]
        )),
    }
}

/// Connections authenticated ahead (`limits.warm_connections`) log in with tokens for the
/// granted db-user, as a session's opening does (within a minute, the token kept from the
/// first session's signing): after a first session the front sees two more opening logins
/// before any client asks, and the next sessions run on those connections as `app` without a
/// login of their own.
#[tokio::test]
async fn warm_connections_log_in_with_tokens_for_the_granted_db_user() {
    use support::raw::Raw;

    let r = rig_with(RigOpts {
        warm: 2,
        ..RigOpts::default()
    });
    let ep = Endpoint::unix(r.bastion.socket_path("iamdb"));
    let whoami = || async {
        let mut c = Raw::connect(&ep).await.expect("connect");
        c.request_str(&["ACL", "WHOAMI"]).await.unwrap()
    };
    assert_eq!(whoami().await, b"$3\r\napp\r\n");
    let openings = || r.front.tokens().iter().filter(|t| t.opening).count();
    let warm = poll(std::time::Duration::from_secs(20), || {
        (openings() == 3).then_some(())
    });
    assert!(warm.is_some(), "{:?}", r.front.tokens());
    assert!(
        r.front
            .tokens()
            .iter()
            .all(|t| t.user == "app" && t.signed_at.is_some()),
        "{:?}",
        r.front.tokens()
    );
    // The next session takes one of them: its opening sends no token (the refill does).
    assert_eq!(whoami().await, b"$3\r\napp\r\n");
    let refilled = poll(std::time::Duration::from_secs(20), || {
        (openings() >= 4).then_some(())
    });
    assert!(refilled.is_some(), "{:?}", r.front.tokens());
    // A token of the session's own would be a fifth (it comes before its reply; the refill
    // after it): give a straggler time to show.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert_eq!(openings(), 4, "{:?}", r.front.tokens());
    r.bastion.assert_no_secrets(&[SECRET_KEY, REAL_PASSWORD]);
}
