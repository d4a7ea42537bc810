//! bastion's IAM auth tokens against an independent verifier standing in front of a real
//! `redis-server`: good tokens reach Redis, each kind of bad token is refused for the right
//! reason, and `bastion iam-token` finds credentials in the environment or a shared profile.

mod support;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use aws_credential_types::Credentials;
use bastion::aws::token::{generate, TokenRequest};
use bastion::config::IamService;
use redis_protocol::resp2::types::OwnedFrame;
use support::iam_front::{IamFront, IamFrontConfig, Outcome, Rejection, Verdict, WRONGPASS};

const AKID: &str = "AKIDBASTIONTEST";
const SECRET: &str = "bastion/test+secret/KEY0123456789abcdefghij";
const REGION: &str = "us-east-1";
const TARGET: &str = "my-cache";
const PASSWORD: &str = "pw";

// ---------------------------------------------------------------------------------------------
// Fixtures

/// A real `redis-server` on a free port with ACL user `app` (password `pw`) and the default user
/// off, so nothing works without the real password. Killed on drop.
struct RedisServer {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    fn start() -> RedisServer {
        // The port is free when we look; another test may grab it before redis binds, so retry.
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("free port")
                .port();
            let dir = tempfile::tempdir().expect("temp dir");
            let conf = dir.path().join("redis.conf");
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\nsave \"\"\nappendonly no\ndir {}\n\
                     user default off\nuser app on >{PASSWORD} ~* &* +@all\n",
                    dir.path().display()
                ),
            )
            .expect("write redis.conf");
            let child = Command::new("/usr/bin/redis-server")
                .arg(&conf)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn /usr/bin/redis-server");
            let mut server = RedisServer {
                child,
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
                _dir: dir,
            };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = server.child.try_wait() {
                    break; // exited: most likely the port was taken; try another
                }
                if TcpStream::connect(server.addr).is_ok() {
                    return server;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("redis-server did not start");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn front_config(redis: &RedisServer, service: &'static str, serverless: bool) -> IamFrontConfig {
    IamFrontConfig {
        service,
        region: REGION.into(),
        target: TARGET.into(),
        serverless,
        access_key_id: AKID.into(),
        secret_access_key: SECRET.into(),
        session_token: None,
        issued: None,
        upstream: redis.addr,
        passwords: HashMap::from([("app".to_string(), PASSWORD.to_string())]),
    }
}

fn creds() -> Credentials {
    Credentials::new(AKID, SECRET, None, None, "test")
}

/// A token from bastion's signer, as the string a client would send.
fn token(
    service: IamService,
    region: &str,
    user: &str,
    serverless: bool,
    creds: &Credentials,
    now: SystemTime,
) -> String {
    let req = TokenRequest {
        service,
        region,
        target: TARGET,
        db_user: user,
        serverless,
    };
    generate(&req, creds, now)
        .expect("token")
        .expose()
        .to_string()
}

/// A raw RESP client.
struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    fn connect(front: &IamFront) -> Client {
        let stream = TcpStream::connect(front.addr()).expect("connect to the front");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("read timeout");
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    fn send(&mut self, args: &[&str]) {
        self.stream.write_all(&command(args)).expect("send");
    }

    /// The next reply frame.
    fn reply(&mut self) -> OwnedFrame {
        loop {
            if let Some((frame, used)) =
                redis_protocol::resp2::decode::decode(&self.buf).expect("valid RESP")
            {
                self.buf.drain(..used);
                return frame;
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).expect("read reply");
            assert!(n > 0, "connection closed before a reply");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn call(&mut self, args: &[&str]) -> OwnedFrame {
        self.send(args);
        self.reply()
    }

    /// True if the server closed the connection (reading gives EOF).
    fn closed(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(self.stream.read(&mut byte), Ok(0))
    }
}

fn command(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
    }
    out
}

fn simple(s: &str) -> OwnedFrame {
    OwnedFrame::SimpleString(s.as_bytes().to_vec())
}

fn bulk(s: &str) -> OwnedFrame {
    OwnedFrame::BulkString(s.as_bytes().to_vec())
}

/// AUTH with `token` and expect the front to accept it and Redis to serve us as `app`.
fn assert_reaches_redis(front: &IamFront, user: &str, token: &str) {
    let mut c = Client::connect(front);
    assert_eq!(c.call(&["AUTH", user, token]), simple("OK"));
    assert_eq!(
        front.last_verdict(),
        Some(Verdict {
            user: user.into(),
            outcome: Outcome::Accepted
        })
    );
    assert_eq!(c.call(&["PING"]), simple("PONG"));
    assert_eq!(c.call(&["ACL", "WHOAMI"]), bulk(user));
}

/// AUTH with `token` and expect WRONGPASS, a closed connection, and `reason` in the log.
fn assert_rejected(front: &IamFront, user: &str, token: &str, reason: Rejection) {
    let mut c = Client::connect(front);
    let reply = c.call(&["AUTH", user, token]);
    assert_eq!(
        reply,
        OwnedFrame::Error(WRONGPASS.trim_start_matches('-').trim_end().into())
    );
    assert!(
        c.closed(),
        "the front must close the connection after WRONGPASS"
    );
    assert_eq!(
        front.last_verdict(),
        Some(Verdict {
            user: user.into(),
            outcome: Outcome::Rejected(reason)
        })
    );
}

// ---------------------------------------------------------------------------------------------
// Tokens from the library

#[test]
fn elasticache_token_reaches_redis() {
    let redis = RedisServer::start();
    let front = IamFront::start(front_config(&redis, "elasticache", false));
    let t = token(
        IamService::Elasticache,
        REGION,
        "app",
        false,
        &creds(),
        SystemTime::now(),
    );
    assert_reaches_redis(&front, "app", &t);
}

#[test]
fn memorydb_token_reaches_redis() {
    let redis = RedisServer::start();
    let front = IamFront::start(front_config(&redis, "memorydb", false));
    let t = token(
        IamService::Memorydb,
        REGION,
        "app",
        false,
        &creds(),
        SystemTime::now(),
    );
    assert_reaches_redis(&front, "app", &t);
}

#[test]
fn serverless_token_reaches_redis_and_resource_type_must_match() {
    let redis = RedisServer::start();
    let serverless = IamFront::start(front_config(&redis, "elasticache", true));
    let now = SystemTime::now();
    let good = token(IamService::Elasticache, REGION, "app", true, &creds(), now);
    assert_reaches_redis(&serverless, "app", &good);

    let plain = token(IamService::Elasticache, REGION, "app", false, &creds(), now);
    assert_rejected(&serverless, "app", &plain, Rejection::ResourceTypeMissing);

    // ResourceType must be inside the signed query: bolting it on afterwards breaks the signature.
    let bolted_on = format!("{plain}&ResourceType=ServerlessCache");
    assert_rejected(&serverless, "app", &bolted_on, Rejection::BadSignature);

    let cluster = IamFront::start(front_config(&redis, "elasticache", false));
    assert_rejected(
        &cluster,
        "app",
        &good,
        Rejection::ResourceTypeUnexpected {
            got: "ServerlessCache".into(),
        },
    );
}

#[test]
fn session_token_is_signed_and_checked() {
    let redis = RedisServer::start();
    let session = Credentials::new(
        AKID,
        SECRET,
        Some("FQoG/session+token==".into()),
        None,
        "test",
    );
    let mut config = front_config(&redis, "elasticache", false);
    config.session_token = Some("FQoG/session+token==".into());
    let front = IamFront::start(config.clone());
    let t = token(
        IamService::Elasticache,
        REGION,
        "app",
        false,
        &session,
        SystemTime::now(),
    );
    assert_reaches_redis(&front, "app", &t);

    config.session_token = Some("another-session".into());
    let other = IamFront::start(config);
    assert_rejected(&other, "app", &t, Rejection::SessionTokenMismatch);
}

#[test]
fn hello_with_a_token_is_rewritten_and_pipelined_commands_arrive() {
    let redis = RedisServer::start();
    let front = IamFront::start(front_config(&redis, "elasticache", false));
    let t = token(
        IamService::Elasticache,
        REGION,
        "app",
        false,
        &creds(),
        SystemTime::now(),
    );
    let mut c = Client::connect(&front);
    // One write: HELLO with AUTH and SETNAME, then two commands behind it.
    let mut bytes = command(&["HELLO", "2", "AUTH", "app", &t, "SETNAME", "through-front"]);
    bytes.extend(command(&["PING"]));
    bytes.extend(command(&["CLIENT", "GETNAME"]));
    c.stream.write_all(&bytes).expect("send");
    let OwnedFrame::Array(hello) = c.reply() else {
        panic!("HELLO 2 replies with an array");
    };
    assert!(hello.contains(&bulk("redis")), "{hello:?}");
    assert_eq!(c.reply(), simple("PONG"));
    assert_eq!(c.reply(), bulk("through-front"));
    assert_eq!(
        front.last_verdict().map(|v| v.outcome),
        Some(Outcome::Accepted)
    );
}

#[test]
fn first_frame_that_is_not_auth_is_refused() {
    let redis = RedisServer::start();
    let front = IamFront::start(front_config(&redis, "elasticache", false));
    let mut c = Client::connect(&front);
    assert!(matches!(c.call(&["PING"]), OwnedFrame::Error(e) if e.starts_with("NOAUTH")));
    assert_eq!(
        front.last_verdict().map(|v| v.outcome),
        Some(Outcome::Rejected(Rejection::NotAuth))
    );
}

#[test]
fn wrong_secret_is_rejected() {
    let redis = RedisServer::start();
    let front = IamFront::start(front_config(&redis, "elasticache", false));
    let wrong = Credentials::new(AKID, "not-the-secret", None, None, "test");
    let t = token(
        IamService::Elasticache,
        REGION,
        "app",
        false,
        &wrong,
        SystemTime::now(),
    );
    assert_rejected(&front, "app", &t, Rejection::BadSignature);
}

#[test]
fn wrong_user_is_rejected() {
    let redis = RedisServer::start();
    let front = IamFront::start(front_config(&redis, "elasticache", false));
    let now = SystemTime::now();
    let for_other = token(
        IamService::Elasticache,
        REGION,
        "other",
        false,
        &creds(),
        now,
    );
    assert_rejected(
        &front,
        "app",
        &for_other,
        Rejection::UserMismatch {
            auth_user: "app".into(),
            token_user: "other".into(),
        },
    );
    // Editing the user inside a token breaks its signature.
    let edited = for_other.replace("User=other", "User=app");
    assert_rejected(&front, "app", &edited, Rejection::BadSignature);
}

#[test]
fn wrong_service_or_region_is_rejected() {
    let redis = RedisServer::start();
    let front = IamFront::start(front_config(&redis, "elasticache", false));
    let now = SystemTime::now();
    let memorydb = token(IamService::Memorydb, REGION, "app", false, &creds(), now);
    assert_rejected(
        &front,
        "app",
        &memorydb,
        Rejection::WrongService {
            got: "memorydb".into(),
        },
    );
    let eu = token(
        IamService::Elasticache,
        "eu-west-1",
        "app",
        false,
        &creds(),
        now,
    );
    assert_rejected(
        &front,
        "app",
        &eu,
        Rejection::WrongRegion {
            got: "eu-west-1".into(),
        },
    );
}

#[test]
fn expired_token_is_rejected_but_a_ten_minute_old_one_is_not() {
    let redis = RedisServer::start();
    let front = IamFront::start(front_config(&redis, "elasticache", false));
    let now = SystemTime::now();
    let fresh_enough = token(
        IamService::Elasticache,
        REGION,
        "app",
        false,
        &creds(),
        now - Duration::from_secs(600),
    );
    assert_reaches_redis(&front, "app", &fresh_enough);
    let old = token(
        IamService::Elasticache,
        REGION,
        "app",
        false,
        &creds(),
        now - Duration::from_secs(1000),
    );
    let mut c = Client::connect(&front);
    assert!(
        matches!(c.call(&["AUTH", "app", &old]), OwnedFrame::Error(e) if e.starts_with("WRONGPASS"))
    );
    match front.last_verdict().map(|v| v.outcome) {
        Some(Outcome::Rejected(Rejection::Expired {
            signed_at,
            expires,
            now,
        })) => {
            assert_eq!(expires, 900);
            assert!(signed_at + expires < now);
        }
        other => panic!("expected Expired, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// `bastion iam-token`

/// Run `bastion iam-token` for `app` on the elasticache front's target with exactly `env`.
fn iam_token(home: &Path, env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bastion"))
        .args([
            "iam-token",
            "--service",
            "elasticache",
            "--region",
            REGION,
            "--target",
            TARGET,
            "--user",
            "app",
        ])
        .env_clear()
        .env("HOME", home)
        // Never reach for a real metadata service from a test.
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .envs(env.iter().copied())
        .output()
        .expect("run bastion iam-token")
}

fn printed_token(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bastion iam-token failed: {stderr}");
    // On success stderr holds only the audit line (`iam_token.issued`, no token).
    assert!(
        stderr.lines().count() == 1 && stderr.contains("event=\"iam_token.issued\""),
        "only the audit line on stderr on success: {stderr}"
    );
    let stdout = String::from_utf8(out.stdout.clone()).expect("UTF-8 token");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "exactly one line on stdout");
    lines[0].to_string()
}

#[test]
fn cli_token_from_environment_is_accepted() {
    let redis = RedisServer::start();
    let front = IamFront::start(front_config(&redis, "elasticache", false));
    let home = tempfile::tempdir().expect("home");
    let out = iam_token(
        home.path(),
        &[
            ("AWS_ACCESS_KEY_ID", AKID),
            ("AWS_SECRET_ACCESS_KEY", SECRET),
        ],
    );
    let t = printed_token(&out);
    assert!(
        t.starts_with("my-cache/?Action=connect&User=app&"),
        "token shape"
    );
    assert_reaches_redis(&front, "app", &t);
}

#[test]
fn cli_token_from_shared_credentials_profile_is_accepted() {
    let redis = RedisServer::start();
    let front = IamFront::start(front_config(&redis, "elasticache", false));
    let home = tempfile::tempdir().expect("home");
    std::fs::create_dir(home.path().join(".aws")).expect("~/.aws");
    std::fs::write(
        home.path().join(".aws/credentials"),
        format!(
            "[default]\naws_access_key_id = AKIDWRONGPROFILE\naws_secret_access_key = nope\n\n\
             [bastion-test]\naws_access_key_id = {AKID}\naws_secret_access_key = {SECRET}\n"
        ),
    )
    .expect("write credentials");
    let out = iam_token(home.path(), &[("AWS_PROFILE", "bastion-test")]);
    assert_reaches_redis(&front, "app", &printed_token(&out));
}

#[test]
fn cli_without_credentials_names_the_providers_tried() {
    let home = tempfile::tempdir().expect("home");
    let out = iam_token(home.path(), &[]);
    assert_eq!(out.status.code(), Some(1), "a clean failure, not a panic");
    assert!(out.stdout.is_empty(), "no token on stdout");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no AWS credentials"), "{stderr}");
    assert!(
        stderr.contains("env (") && stderr.contains("environment variable not set"),
        "{stderr}"
    );
    assert!(
        stderr.contains("profile (") && stderr.contains("profile `default`"),
        "{stderr}"
    );
}

#[test]
fn cli_profile_whose_source_has_nothing_fails_cleanly_without_leaking_the_key() {
    let home = tempfile::tempdir().expect("home");
    std::fs::create_dir(home.path().join(".aws")).expect("~/.aws");
    // The role's source is the instance profile, and IMDS is disabled in tests. (Profiles that
    // assume a role through STS are tested against moto in tests/credential_chain.rs.)
    std::fs::write(
        home.path().join(".aws/config"),
        format!(
            "[profile base]\naws_access_key_id = {AKID}\naws_secret_access_key = {SECRET}\n\n\
             [profile imds]\ncredential_source = Ec2InstanceMetadata\nrole_arn = arn:aws:iam::123456789012:role/r\n"
        ),
    )
    .expect("write config");
    let out = iam_token(home.path(), &[("AWS_PROFILE", "imds")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a clean failure, not a panic: {stderr}"
    );
    assert!(out.stdout.is_empty(), "no token on stdout");
    assert!(stderr.contains("provider `profile` failed"), "{stderr}");
    assert!(!stderr.contains(SECRET), "the secret key leaked");
}
