//! The credential chain's links and per-database AssumeRole, against real parts:
//!
//! - `moto_server` as STS (AssumeRole, AssumeRoleWithWebIdentity, GetCallerIdentity), reached
//!   through `AWS_ENDPOINT_URL_STS` exactly as an operator points the SDK at a VPC endpoint;
//! - the IAM front in front of a real redis-server, verifying each token with its own SigV4 code
//!   and the secret moto issued (read back from moto's `/moto-api/data.json`, never seen by the
//!   bastion's side of the test);
//! - a loopback HTTP server as the ECS container credentials endpoint, and as an STS that answers
//!   AssumeRole with AccessDenied (moto does not evaluate trust policies, so it cannot refuse).
//!
//! Every bastion run has `AWS_EC2_METADATA_DISABLED=true` and talks only to 127.0.0.1.

mod support;

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use support::bastion::Bastion;
use support::clients::{redis_cli, Endpoint};
use support::http_stub::HttpStub;
use support::iam_front::{IamFront, IamFrontConfig, Outcome};
use support::moto::Moto;
use support::process::{run, Out};
use support::redis::{RedisOpts, RedisServer};
use support::stack::current_user;

const BIN: &str = env!("CARGO_BIN_EXE_bastion");
const PASSWORD: &str = "chain-real-redis-password-3f9a";
/// The bastion's own (source) credentials.
const SOURCE_KEY: &str = "AKIDCHAINSOURCE0001";
const SOURCE_SECRET: &str = "chain/source/secret/key/0123456789abcdefg";
const ROLE_ARN: &str = "arn:aws:iam::111122223333:role/cache-connect";
const REGION: &str = "us-east-1";
const TARGET: &str = "my-cache";

/// Redis with user `app`, and a front that accepts only keys moto issued for `role` (or, with
/// `key`, that static key and session token).
fn front(
    redis: &RedisServer,
    moto: Option<(&Moto, &str)>,
    key: Option<(&str, &str, Option<&str>)>,
) -> IamFront {
    let (akid, secret, token) = key.unwrap_or(("AKIDNOTTHISONE", "unused", None));
    IamFront::start(IamFrontConfig {
        service: "elasticache",
        region: REGION.into(),
        target: TARGET.into(),
        serverless: false,
        access_key_id: akid.into(),
        secret_access_key: secret.into(),
        session_token: token.map(str::to_string),
        issued: moto.map(|(m, role)| m.key_lookup(role)),
        upstream: redis.plain_addr(),
        passwords: HashMap::from([("app".to_string(), PASSWORD.to_string())]),
        connection_limit: None,
    })
}

fn assert_all_accepted(front: &IamFront, at_least: usize) {
    let verdicts = front.verdicts();
    assert!(verdicts.len() >= at_least, "{verdicts:?}");
    assert!(
        verdicts
            .iter()
            .all(|v| v.user == "app" && v.outcome == Outcome::Accepted),
        "{verdicts:?}"
    );
}

/// A boot config with one IAM database at `front` (extra keys in `db_extra`).
fn config(state: &Path, front: &IamFront, db_extra: &str) -> String {
    format!(
        r#"
state_dir = "{state}"
[limits]
upstream_connect_timeout = "3s"
[listeners.unix]
directory = "{state}/db"
[[databases]]
name = "cache"
address = "{front}"
auth = {{ mode = "iam", service = "elasticache", region = "{REGION}", target = "{TARGET}" }}
allow_plaintext_auth = true
default_db_user = "app"
{db_extra}
[[roles]]
name = "apps"
db_users = ["app"]
db_names = ["*"]
[[users]]
name = "alice"
roles = ["apps"]
unix_user = "{me}"
"#,
        state = state.display(),
        front = front.addr(),
        me = current_user(),
    )
}

/// The process environment of a bastion that has only the source keys, STS at `sts`.
fn source_env<'a>(home: &'a str, missing: &'a str, sts: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("AWS_ACCESS_KEY_ID", SOURCE_KEY),
        ("AWS_SECRET_ACCESS_KEY", SOURCE_SECRET),
        ("HOME", home),
        ("AWS_CONFIG_FILE", missing),
        ("AWS_SHARED_CREDENTIALS_FILE", missing),
        ("AWS_ENDPOINT_URL_STS", sts),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ]
}

fn doctor(config: &Path, env: &[(&str, &str)]) -> (Out, Value) {
    let mut cmd = Command::new(BIN);
    cmd.args(["doctor", "--json", "--config"])
        .arg(config)
        .env_clear()
        .envs(env.iter().copied());
    let out = run(&mut cmd, None, Duration::from_secs(90));
    let json: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{out}"));
    (out, json)
}

fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no check {name} in {report:#}"))
}

// ---------------------------------------------------------------------------------------------
// Per-database assume_role_arn

#[test]
fn assumed_role_signs_the_tokens_end_to_end_and_is_assumed_once() {
    let moto = Moto::start();
    let redis = RedisServer::start(RedisOpts::users(&["app"], PASSWORD));
    let front = front(&redis, Some((&moto, ROLE_ARN)), None);
    let state = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let (home_s, missing) = (
        home.path().display().to_string(),
        home.path().join("none").display().to_string(),
    );
    let sts = moto.endpoint();
    let toml = config(
        state.path(),
        &front,
        &format!("assume_role_arn = \"{ROLE_ARN}\"\nexternal_id = \"ext-42\""),
    );
    let bastion =
        Bastion::start_with_env(&toml, state.path(), &source_env(&home_s, &missing, &sts));
    let ep = Endpoint::unix(bastion.socket_path("cache"));

    for _ in 0..3 {
        let out = redis_cli(&ep, &["ACL", "WHOAMI"]);
        assert_eq!(out.stdout().trim(), "app", "{out:?}\n{}", bastion.logs());
    }
    // Each token was signed with a key moto issued for the role (the front knows no other key).
    assert_all_accepted(&front, 3);
    let issued = moto.issued();
    let ours: Vec<_> = issued.iter().filter(|i| i.role_arn == ROLE_ARN).collect();
    assert_eq!(
        ours.len(),
        1,
        "one AssumeRole for three sessions (cached): {issued:?}"
    );
    assert_eq!(ours[0].session_name, "bastion");
    assert_eq!(ours[0].external_id.as_deref(), Some("ext-42"));
    bastion.assert_no_secrets(&[SOURCE_SECRET, PASSWORD, &ours[0].secret_access_key]);

    // doctor, with the same config: the role is assumed, and AUTH with its token works.
    let config_path = state.path().join("doctor.toml");
    std::fs::write(&config_path, &toml).unwrap();
    let (out, report) = doctor(&config_path, &source_env(&home_s, &missing, &sts));
    let role = check(&report, "database:cache:assume_role");
    assert_eq!(role["status"], "ok", "{out}");
    assert_eq!(role["role_arn"], ROLE_ARN);
    assert!(
        role["expires"].as_str().is_some_and(|e| e.ends_with('Z')),
        "{role}"
    );
    assert!(
        role["finding"].as_str().unwrap().contains("expire at"),
        "{role}"
    );
    assert_eq!(
        check(&report, "database:cache:auth")["status"],
        "ok",
        "{out}"
    );
    assert!(!out.all().contains(SOURCE_SECRET));
}

/// An STS that knows the caller and refuses every AssumeRole, as AWS does when the role's
/// trust policy does not name the caller.
fn refusing_sts(caller: &'static str) -> HttpStub {
    HttpStub::start(move |req| {
        let ns = "https://sts.amazonaws.com/doc/2011-06-15/";
        if req.body.contains("Action=GetCallerIdentity") {
            (
                200,
                "text/xml",
                format!(
                    "<GetCallerIdentityResponse xmlns=\"{ns}\"><GetCallerIdentityResult>\
                     <Arn>{caller}</Arn><UserId>AROAEXAMPLE:i-0abc</UserId>\
                     <Account>123456789012</Account></GetCallerIdentityResult>\
                     <ResponseMetadata><RequestId>r1</RequestId></ResponseMetadata>\
                     </GetCallerIdentityResponse>"
                ),
            )
        } else {
            (
                403,
                "text/xml",
                format!(
                    "<ErrorResponse xmlns=\"{ns}\"><Error><Type>Sender</Type>\
                     <Code>AccessDenied</Code><Message>User: {caller} is not authorized to \
                     perform: sts:AssumeRole on resource: {ROLE_ARN}</Message></Error>\
                     <RequestId>r2</RequestId></ErrorResponse>"
                ),
            )
        }
    })
}

#[test]
fn access_denied_names_the_missing_trust_policy_statement_and_principal() {
    // The instance profile's session; the trust policy names its role.
    let sts = refusing_sts("arn:aws:sts::123456789012:assumed-role/bastion-host/i-0abc");
    let redis = RedisServer::start(RedisOpts::users(&["app"], PASSWORD));
    let front = front(&redis, None, Some((SOURCE_KEY, SOURCE_SECRET, None)));
    let state = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let (home_s, missing) = (
        home.path().display().to_string(),
        home.path().join("none").display().to_string(),
    );
    let endpoint = sts.url("");
    let config_path = state.path().join("bastion.toml");
    std::fs::write(
        &config_path,
        config(
            state.path(),
            &front,
            &format!("assume_role_arn = \"{ROLE_ARN}\"\nexternal_id = \"ext-42\""),
        ),
    )
    .unwrap();
    let (out, report) = doctor(&config_path, &source_env(&home_s, &missing, &endpoint));
    assert_eq!(
        out.status.code(),
        Some(1),
        "a failed check fails doctor: {out}"
    );
    let role = check(&report, "database:cache:assume_role");
    assert_eq!(role["status"], "fail", "{role}");
    assert_eq!(role["error"], "access_denied");
    let principal = "arn:aws:iam::123456789012:role/bastion-host";
    assert_eq!(role["principal"], principal);
    let fix = role["fix"].as_str().unwrap();
    assert!(
        fix.starts_with(&format!(
            "Not authorized to perform sts:AssumeRole: the trust policy of {ROLE_ARN} must allow \
             principal {principal} (add a statement {{Effect: Allow, Principal: {{AWS: {principal}}}, \
             Action: sts:AssumeRole, Condition: {{StringEquals: {{sts:ExternalId:"
        )),
        "{fix}"
    );
    assert!(
        role["finding"]
            .as_str()
            .unwrap()
            .contains("is not authorized to perform: sts:AssumeRole"),
        "{role}"
    );
    // AUTH is not attempted without the role's credentials, and says why.
    let auth = check(&report, "database:cache:auth");
    assert_eq!(auth["status"], "skip", "{auth}");
    assert!(auth["finding"]
        .as_str()
        .unwrap()
        .contains("database:cache:assume_role"));
    // The AssumeRole carried the role, session name and external id.
    let requests = sts.requests();
    let assume = requests
        .iter()
        .find(|r| r.body.contains("Action=AssumeRole"))
        .expect("an AssumeRole request");
    assert!(
        assume.body.contains("RoleSessionName=bastion"),
        "{}",
        assume.body
    );
    assert!(assume.body.contains("ExternalId=ext-42"), "{}", assume.body);
    assert!(
        assume
            .header("authorization")
            .is_some_and(|a| a.contains(&format!("Credential={SOURCE_KEY}/"))),
        "signed with the source credentials"
    );
    assert!(!out.all().contains(SOURCE_SECRET));
}

// ---------------------------------------------------------------------------------------------
// The chain's links, through `bastion iam-token` (a clean environment each time)

fn iam_token(home: &Path, env: &[(&str, &str)]) -> Out {
    iam_token_in(Some(REGION), home, env)
}

/// `bastion iam-token`, with `--region region` or without one.
fn iam_token_in(region: Option<&str>, home: &Path, env: &[(&str, &str)]) -> Out {
    let mut cmd = Command::new(BIN);
    cmd.args(["iam-token", "--service", "elasticache"]);
    if let Some(region) = region {
        cmd.args(["--region", region]);
    }
    cmd.args(["--target", TARGET, "--user", "app"])
        .env_clear()
        .env("HOME", home)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .envs(env.iter().copied());
    run(&mut cmd, None, Duration::from_secs(60))
}

fn token(out: &Out) -> String {
    assert!(out.status.success(), "bastion iam-token failed: {out}");
    out.stdout().trim().to_string()
}

/// Send `AUTH app <token>` to the front, expect `+OK` from the real Redis behind it.
fn assert_accepted(front: &IamFront, token: &str) {
    let reply = auth_reply(front, token);
    assert_eq!(
        reply,
        b"+OK\r\n",
        "{:?} {:?}",
        String::from_utf8_lossy(&reply),
        front.last_verdict()
    );
}

/// The front's reply to `AUTH app <token>`.
fn auth_reply(front: &IamFront, token: &str) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(front.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "*3\r\n$4\r\nAUTH\r\n$3\r\napp\r\n${}\r\n{token}\r\n",
        token.len()
    )
    .unwrap();
    let mut buf = [0u8; 256];
    let n = s.read(&mut buf).unwrap();
    buf[..n].to_vec()
}

#[test]
fn credential_process_profile_yields_accepted_tokens() {
    let redis = RedisServer::start(RedisOpts::users(&["app"], PASSWORD));
    let front = front(
        &redis,
        None,
        Some((SOURCE_KEY, SOURCE_SECRET, Some("proc-token-1"))),
    );
    let home = tempfile::tempdir().unwrap();
    let script = home.path().join("creds.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ncat <<'EOF'\n{{\"Version\": 1, \"AccessKeyId\": \"{SOURCE_KEY}\", \
             \"SecretAccessKey\": \"{SOURCE_SECRET}\", \"SessionToken\": \"proc-token-1\", \
             \"Expiration\": \"2099-01-01T00:00:00Z\"}}\nEOF\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::create_dir(home.path().join(".aws")).unwrap();
    std::fs::write(
        home.path().join(".aws/config"),
        format!(
            "[profile proc]\ncredential_process = {}\n",
            script.display()
        ),
    )
    .unwrap();
    let out = iam_token(home.path(), &[("AWS_PROFILE", "proc")]);
    assert_accepted(&front, &token(&out));
}

#[test]
fn iam_token_without_region_takes_the_profiles_or_names_what_is_missing() {
    let redis = RedisServer::start(RedisOpts::users(&["app"], PASSWORD));
    let front = front(&redis, None, Some((SOURCE_KEY, SOURCE_SECRET, None)));
    let home = tempfile::tempdir().unwrap();
    let keys = [
        ("AWS_ACCESS_KEY_ID", SOURCE_KEY),
        ("AWS_SECRET_ACCESS_KEY", SOURCE_SECRET),
    ];
    // No region anywhere (IMDS is off): refused, naming the target and how to give one.
    let out = iam_token_in(None, home.path(), &keys);
    assert!(!out.status.success(), "{out}");
    assert!(out.stderr().contains(TARGET), "{out}");
    assert!(out.stdout().is_empty(), "{out}");
    // The profile's region: the front verifies the token was signed for it.
    std::fs::create_dir(home.path().join(".aws")).unwrap();
    std::fs::write(
        home.path().join(".aws/config"),
        format!("[default]\nregion = {REGION}\n"),
    )
    .unwrap();
    let out = iam_token_in(None, home.path(), &keys);
    assert_accepted(&front, &token(&out));
    // A token for another region is refused by the front: the region really is in the signature.
    let out = iam_token_in(Some("eu-west-3"), home.path(), &keys);
    assert_ne!(auth_reply(&front, &token(&out)), b"+OK\r\n");
}

#[test]
fn role_arn_with_source_profile_assumes_the_role_through_sts() {
    let moto = Moto::start();
    let redis = RedisServer::start(RedisOpts::users(&["app"], PASSWORD));
    let role = "arn:aws:iam::111122223333:role/profile-role";
    let front = front(&redis, Some((&moto, role)), None);
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir(home.path().join(".aws")).unwrap();
    std::fs::write(
        home.path().join(".aws/config"),
        format!(
            "[profile base]\naws_access_key_id = {SOURCE_KEY}\naws_secret_access_key = {SOURCE_SECRET}\n\n\
             [profile role]\nrole_arn = {role}\nsource_profile = base\nrole_session_name = from-profile\n\
             region = {REGION}\n"
        ),
    )
    .unwrap();
    let sts = moto.endpoint();
    let out = iam_token(
        home.path(),
        &[("AWS_PROFILE", "role"), ("AWS_ENDPOINT_URL_STS", &sts)],
    );
    assert_accepted(&front, &token(&out));
    assert!(!out.all().contains(SOURCE_SECRET));
    assert!(moto
        .issued()
        .iter()
        .any(|i| i.role_arn == role && i.session_name == "from-profile"));
}

#[test]
fn profile_with_imds_source_uses_our_imds_provider_and_fails_cleanly_when_disabled() {
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir(home.path().join(".aws")).unwrap();
    std::fs::write(
        home.path().join(".aws/config"),
        "[profile imds]\ncredential_source = Ec2InstanceMetadata\n\
         role_arn = arn:aws:iam::123456789012:role/r\n",
    )
    .unwrap();
    let out = iam_token(home.path(), &[("AWS_PROFILE", "imds")]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a clean failure, not a panic: {out}"
    );
    let stderr = out.stderr();
    assert!(stderr.contains("provider `profile` failed"), "{stderr}");
    // Our IMDS client's wording for AWS_EC2_METADATA_DISABLED, not aws-config's.
    assert!(stderr.to_lowercase().contains("disabled"), "{stderr}");
}

#[test]
fn web_identity_token_file_assumes_the_role_through_sts() {
    let moto = Moto::start();
    let redis = RedisServer::start(RedisOpts::users(&["app"], PASSWORD));
    let role = "arn:aws:iam::111122223333:role/irsa";
    let front = front(&redis, Some((&moto, role)), None);
    let home = tempfile::tempdir().unwrap();
    let token_file = home.path().join("web-identity-token");
    std::fs::write(&token_file, "eyJhbGciOiJSUzI1NiJ9.e30.c2ln").unwrap();
    let token_path = token_file.display().to_string();
    let sts = moto.endpoint();
    let out = iam_token(
        home.path(),
        &[
            ("AWS_WEB_IDENTITY_TOKEN_FILE", token_path.as_str()),
            ("AWS_ROLE_ARN", role),
            ("AWS_ROLE_SESSION_NAME", "irsa-session"),
            ("AWS_REGION", REGION),
            ("AWS_ENDPOINT_URL_STS", &sts),
        ],
    );
    assert_accepted(&front, &token(&out));
    assert!(moto
        .issued()
        .iter()
        .any(|i| i.role_arn == role && i.session_name == "irsa-session"));
}

#[test]
fn ecs_container_endpoint_credentials_are_used() {
    let redis = RedisServer::start(RedisOpts::users(&["app"], PASSWORD));
    let front = front(
        &redis,
        None,
        Some((SOURCE_KEY, SOURCE_SECRET, Some("ecs-token-1"))),
    );
    let ecs = HttpStub::start(|req| {
        if req.path == "/creds" && req.header("authorization") == Some("ecs-auth-abc") {
            (
                200,
                "application/json",
                format!(
                    "{{\"AccessKeyId\": \"{SOURCE_KEY}\", \"SecretAccessKey\": \"{SOURCE_SECRET}\", \
                     \"Token\": \"ecs-token-1\", \"Expiration\": \"2099-01-01T00:00:00Z\", \
                     \"RoleArn\": \"arn:aws:iam::123456789012:role/task\"}}"
                ),
            )
        } else {
            (404, "text/plain", "no".into())
        }
    });
    let home = tempfile::tempdir().unwrap();
    let uri = ecs.url("/creds");
    let out = iam_token(
        home.path(),
        &[
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI", uri.as_str()),
            ("AWS_CONTAINER_AUTHORIZATION_TOKEN", "ecs-auth-abc"),
        ],
    );
    assert_accepted(&front, &token(&out));
    assert_eq!(ecs.requests().len(), 1, "{:?}", ecs.requests());
}

#[test]
fn without_credentials_every_link_is_named() {
    let home = tempfile::tempdir().unwrap();
    let out = iam_token(home.path(), &[]);
    assert_eq!(out.status.code(), Some(1), "{out}");
    let stderr = out.stderr();
    for link in ["env (", "profile (", "web_identity (", "ecs (", "imds ("] {
        assert!(stderr.contains(link), "{link} missing: {stderr}");
    }
}
