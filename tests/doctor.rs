//! `bastion doctor --json` and `bastion configure bootstrap --manual`, run as the real binary.
//!
//! Upstreams are real: redis-server over TLS with ACL users, a closed port, a TLS listener
//! whose certificate has only a legacy Common Name, and the IAM front (its own SigV4 checker)
//! in front of redis-server. Every run is also checked for leaked secrets.

mod support;

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::Value;

use support::certs::{write_private, TestCa};
use support::iam_front::{IamFront, IamFrontConfig, Outcome, Rejection};
use support::process::{closed_addr, run, Out};
use support::redis::{RedisOpts, RedisServer};

const PASSWORD: &str = "doctor-real-password-51d2";
const WRONG_PASSWORD: &str = "doctor-wrong-password-9e0a";
const ACCESS_KEY: &str = "AKIDDOCTORTEST0001";
const SECRET_KEY: &str = "doctor/test/secret/key/0123456789abcdefgh";

const BIN: &str = env!("CARGO_BIN_EXE_bastion");

/// A config file with `databases` (TOML `[[databases]]` blocks) and a role reaching all of them.
fn write_config(dir: &Path, databases: &str) -> std::path::PathBuf {
    let text = format!(
        r#"
state_dir = "{state}"
secrets_dir = "{state}"
[limits]
upstream_connect_timeout = "3s"
[listeners.unix]
directory = "{state}/db"
{databases}
[[roles]]
name = "apps"
db_users = ["app"]
db_names = ["*"]
"#,
        state = dir.display(),
    );
    let path = dir.join("bastion.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

/// Run `bastion doctor --json` with AWS credentials from the environment only.
fn doctor(config: &Path, home: &Path) -> (Out, Value) {
    doctor_with(config, home, &[])
}

/// [`doctor`] with more environment (e.g. `AWS_EC2_METADATA_DISABLED=false` for the emulator).
fn doctor_with(config: &Path, home: &Path, env: &[(&str, &str)]) -> (Out, Value) {
    let missing = home.join("none");
    let out = run(
        Command::new(BIN)
            .args(["doctor", "--json", "--config"])
            .arg(config)
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_REGION")
            .env_remove("AWS_DEFAULT_REGION")
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .env("HOME", home)
            .env("AWS_CONFIG_FILE", &missing)
            .env("AWS_SHARED_CREDENTIALS_FILE", &missing)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .envs(env.iter().copied()),
        None,
        Duration::from_secs(60),
    );
    assert_no_secrets(&out);
    let json: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{out}"));
    (out, json)
}

fn assert_no_secrets(out: &Out) {
    let all = out.all();
    for secret in [PASSWORD, WRONG_PASSWORD, SECRET_KEY] {
        assert!(!all.contains(secret), "a secret leaked:\n{out}");
    }
    // An IAM token is a presigned query string; its signature parameter must never show.
    assert!(!all.contains("X-Amz-Signature"), "a token leaked:\n{out}");
}

/// The check named `name` in the report.
#[track_caller]
fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .expect("checks array")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {report:#}"))
}

#[track_caller]
fn assert_status(report: &Value, name: &str, status: &str) {
    let c = check(report, name);
    assert_eq!(c["status"], status, "{name}: {c:#}");
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

#[test]
fn a_healthy_tls_password_database_passes_every_check() {
    let redis = RedisServer::start(RedisOpts::users(&["app"], PASSWORD));
    let dir = tempfile::tempdir().unwrap();
    let pw = write_private(&dir.path().join("app.pw"), PASSWORD.as_bytes());
    let config = write_config(
        dir.path(),
        &format!(
            r#"
[[databases]]
name = "cache"
address = "{addr}"
tls = {{ ca_file = "{ca}" }}
auth = {{ mode = "password", password_file = "{pw}" }}
default_db_user = "app"
"#,
            addr = redis.tls_addr(),
            ca = redis.ca_pem_path().display(),
            pw = pw.display(),
        ),
    );
    let (out, report) = doctor(&config, dir.path());
    assert!(out.status.success(), "{out}");
    assert_eq!(report["ok"], true, "{report:#}");
    assert_status(&report, "credentials", "skip");
    // IMDS is turned off for tests: reported (kind "disabled"), but only a warning, since no
    // database needs AWS credentials.
    assert_status(&report, "imds", "warn");
    assert_eq!(check(&report, "imds")["kind"], "disabled");
    for step in ["dns", "tcp", "tls", "auth", "unauthenticated"] {
        assert_status(&report, &format!("database:cache:{step}"), "ok");
    }
    let auth = check(&report, "database:cache:auth");
    assert_eq!(auth["db_user"], "app");
    assert_eq!(auth["auth_mode"], "password");
    assert_eq!(auth["fix"], Value::Null);
    // Every entry carries the four common keys.
    for c in report["checks"].as_array().unwrap() {
        for key in ["name", "status", "finding", "fix"] {
            assert!(c.get(key).is_some(), "{key} missing in {c:#}");
        }
    }

    // The text form: one line per check, finding indented.
    let out = run(
        Command::new(BIN)
            .args(["doctor", "--config"])
            .arg(&config)
            .env("AWS_EC2_METADATA_DISABLED", "true"),
        None,
        Duration::from_secs(60),
    );
    out.assert_success();
    assert!(
        out.stdout()
            .contains("ok    database:cache:auth\n      db-user 'app'"),
        "{out}"
    );
    assert_no_secrets(&out);
}

/// Redis as it ships (`default` on, no password): the database works, and doctor warns that
/// the upstream answers before AUTH — over TLS and plaintext, whatever the auth mode.
#[test]
fn an_upstream_answering_before_auth_is_a_warning() {
    let mut opts = RedisOpts::users(&["app"], PASSWORD);
    opts.default_nopass = true;
    let redis = RedisServer::start(opts);
    let dir = tempfile::tempdir().unwrap();
    let pw = write_private(&dir.path().join("app.pw"), PASSWORD.as_bytes());
    let config = write_config(
        dir.path(),
        &format!(
            r#"
[[databases]]
name = "open"
address = "{tls}"
tls = {{ ca_file = "{ca}" }}
auth = {{ mode = "password", password_file = "{pw}" }}
default_db_user = "app"

[[databases]]
name = "none"
address = "{plain}"
auth = {{ mode = "none" }}
"#,
            tls = redis.tls_addr(),
            plain = redis.plain_addr(),
            ca = redis.ca_pem_path().display(),
            pw = pw.display(),
        ),
    );
    let (out, report) = doctor(&config, dir.path());
    assert!(out.status.success(), "warnings do not fail doctor: {out}");
    assert_status(&report, "database:open:auth", "ok");
    for db in ["open", "none"] {
        let open = check(&report, &format!("database:{db}:unauthenticated"));
        assert_eq!(open["status"], "warn", "{open:#}");
        assert!(
            text(&open["finding"]).contains("without authentication"),
            "{open:#}"
        );
    }
    let fix = text(&check(&report, "database:open:unauthenticated")["fix"]).to_string();
    assert!(fix.contains("default off"), "{fix}");
    assert_no_secrets(&out);
}

#[test]
fn broken_databases_fail_with_the_cause_and_the_fix() {
    let redis = RedisServer::start(RedisOpts::users(&["app"], PASSWORD));
    let legacy = LegacyTlsServer::start("localhost");
    let closed = closed_addr();
    let dir = tempfile::tempdir().unwrap();
    let wrong = write_private(&dir.path().join("wrong.pw"), WRONG_PASSWORD.as_bytes());
    let legacy_ca = dir.path().join("legacy-ca.pem");
    std::fs::write(&legacy_ca, &legacy.ca_pem).unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            r#"
[[databases]]
name = "closed"
address = "{closed}"
auth = {{ mode = "none" }}

[[databases]]
name = "wrongpw"
address = "{tls}"
tls = {{ ca_file = "{ca}" }}
auth = {{ mode = "password", password_file = "{wrong}" }}

[[databases]]
name = "legacy"
address = "{legacy}"
tls = {{ ca_file = "{legacy_ca}", server_name = "localhost" }}
auth = {{ mode = "none" }}
"#,
            tls = redis.tls_addr(),
            ca = redis.ca_pem_path().display(),
            wrong = wrong.display(),
            legacy = legacy.addr,
            legacy_ca = legacy_ca.display(),
        ),
    );
    let (out, report) = doctor(&config, dir.path());
    assert!(!out.status.success(), "{out}");
    assert_eq!(report["ok"], false);
    assert!(out.stderr().contains("checks failed"), "{out}");

    // Closed port: TCP fails with the "nothing listens" hint; later steps are skipped.
    let tcp = check(&report, "database:closed:tcp");
    assert_eq!(tcp["status"], "fail", "{tcp:#}");
    assert_eq!(tcp["database"], "closed");
    assert_eq!(tcp["error"], "refused");
    assert!(
        text(&tcp["finding"]).contains(&closed.to_string()),
        "{tcp:#}"
    );
    assert!(
        text(&tcp["fix"]).contains(&format!("nothing listens on {closed}")),
        "{tcp:#}"
    );
    assert_status(&report, "database:closed:tls", "skip");
    assert_status(&report, "database:closed:auth", "skip");

    // Wrong password: connected and verified, then the server said WRONGPASS.
    assert_status(&report, "database:wrongpw:tls", "ok");
    let auth = check(&report, "database:wrongpw:auth");
    assert_eq!(auth["status"], "fail", "{auth:#}");
    assert!(
        text(&auth["finding"]).contains("rejected the password for db-user 'app'"),
        "{auth:#}"
    );

    // A certificate with only a Common Name: recognised and named.
    let tls = check(&report, "database:legacy:tls");
    assert_eq!(tls["status"], "fail", "{tls:#}");
    assert_eq!(tls["reason"], "legacy_common_name", "{tls:#}");
    assert_eq!(tls["cert_common_name"], "localhost");
    assert!(
        text(&tls["finding"]).contains("legacy Common Name (CN = localhost)")
            && text(&tls["finding"]).contains("no subjectAltName"),
        "{tls:#}"
    );
    assert!(text(&tls["fix"]).contains("subjectAltName"), "{tls:#}");
    assert_status(&report, "database:legacy:auth", "skip");
}

struct IamRig {
    _redis: RedisServer,
    front: IamFront,
    dir: tempfile::TempDir,
}

fn iam_rig(signs_region: &str) -> (IamRig, std::path::PathBuf) {
    iam_rig_in("us-east-1", Some(signs_region), "")
}

/// A front verifying `expect_region`, a database with `config_region` (or none), and `extra`
/// config lines (e.g. `[aws.imds]`).
fn iam_rig_in(
    expect_region: &str,
    config_region: Option<&str>,
    extra: &str,
) -> (IamRig, std::path::PathBuf) {
    let redis = RedisServer::start(RedisOpts::users(&["app"], PASSWORD));
    let front = IamFront::start(IamFrontConfig {
        service: "elasticache",
        region: expect_region.into(),
        target: "my-rg".into(),
        serverless: false,
        access_key_id: ACCESS_KEY.into(),
        secret_access_key: SECRET_KEY.into(),
        session_token: None,
        issued: None,
        upstream: redis.plain_addr(),
        passwords: HashMap::from([("app".to_string(), PASSWORD.to_string())]),
    });
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            r#"
{extra}
[[databases]]
name = "iamdb"
address = "{front}"
auth = {{ mode = "iam", service = "elasticache", {region}target = "my-rg" }}
allow_plaintext_auth = true
"#,
            front = front.addr(),
            region = config_region
                .map(|r| format!("region = \"{r}\", "))
                .unwrap_or_default(),
        ),
    );
    (
        IamRig {
            _redis: redis,
            front,
            dir,
        },
        config,
    )
}

#[test]
fn iam_database_with_environment_credentials_passes() {
    let (rig, config) = iam_rig("us-east-1");
    let (out, report) = doctor(&config, rig.dir.path());
    assert!(out.status.success(), "{out}");
    let creds = check(&report, "credentials");
    assert_eq!(creds["status"], "ok", "{creds:#}");
    assert_eq!(creds["provider"], "env");
    assert_eq!(creds["expires"], Value::Null);
    assert!(
        !out.all().contains(ACCESS_KEY),
        "the access key id is not printed"
    );
    let auth = check(&report, "database:iamdb:auth");
    assert_eq!(auth["status"], "ok", "{auth:#}");
    assert_eq!(auth["db_user"], "app");
    assert!(rig.front.last_verdict().is_some());
    // The rig's front is plaintext, which only allow_plaintext_auth permits: a warning (the
    // report stays ok), naming the key and the fix.
    let tls = check(&report, "database:iamdb:tls");
    assert_eq!(tls["status"], "warn", "{tls:#}");
    assert_eq!(tls["allow_plaintext_auth"], true, "{tls:#}");
    assert!(
        text(&tls["finding"]).contains("allow_plaintext_auth = true")
            && text(&tls["finding"]).contains("in clear")
            && text(&tls["fix"]).contains("tls = {}"),
        "{tls:#}"
    );
    assert_eq!(report["ok"], true);
}

/// A database without `auth.region`: `database:iamdb:region` says the region came from IMDS
/// (the emulator), and the token signed for it is accepted by the front.
#[test]
fn region_check_names_where_the_region_came_from() {
    use support::imds::{Behaviour, Emulator, REGION};
    let imds = Emulator::start(Behaviour::default());
    let (rig, config) = iam_rig_in(
        REGION,
        None,
        &format!("[aws.imds]\nendpoint = \"{}\"", imds.endpoint()),
    );
    let (out, report) = doctor_with(
        &config,
        rig.dir.path(),
        &[("AWS_EC2_METADATA_DISABLED", "false")],
    );
    assert!(out.status.success(), "{out}");
    let region = check(&report, "database:iamdb:region");
    assert_eq!(region["status"], "ok", "{region:#}");
    assert_eq!(region["region"], REGION, "{region:#}");
    assert_eq!(region["region_source"], "imds", "{region:#}");
    assert!(
        text(&region["finding"]).contains("IMDS placement/region"),
        "{region:#}"
    );
    assert_status(&report, "database:iamdb:auth", "ok");

    // Configured: no IMDS needed, and the source says so.
    let (rig, config) = iam_rig("us-east-1");
    let (_, report) = doctor(&config, rig.dir.path());
    let region = check(&report, "database:iamdb:region");
    assert_eq!(
        (&region["region"], &region["region_source"]),
        (&Value::from("us-east-1"), &Value::from("config")),
        "{region:#}"
    );
}

/// No region anywhere (IMDS disabled): the region check fails naming the fix, auth is skipped.
#[test]
fn missing_region_fails_the_region_check_and_skips_auth() {
    let (rig, config) = iam_rig_in("us-east-1", None, "");
    let (out, report) = doctor(&config, rig.dir.path());
    assert!(!out.status.success(), "{out}");
    let region = check(&report, "database:iamdb:region");
    assert_eq!(region["status"], "fail", "{region:#}");
    assert!(
        text(&region["finding"]).contains("AWS_EC2_METADATA_DISABLED"),
        "{region:#}"
    );
    assert!(
        text(&region["fix"]).contains("--region") && text(&region["fix"]).contains("AWS_REGION"),
        "{region:#}"
    );
    let auth = check(&report, "database:iamdb:auth");
    assert_eq!(auth["status"], "skip", "{auth:#}");
    assert!(
        text(&auth["finding"]).contains("database:iamdb:region"),
        "{auth:#}"
    );
    // No token was presented: the only frame the front saw is the `:unauthenticated` PING.
    let verdicts = rig.front.verdicts();
    assert!(
        verdicts
            .iter()
            .all(|v| v.outcome == Outcome::Rejected(Rejection::NotAuth)),
        "{verdicts:?}"
    );
}

/// `bastion configure bootstrap --manual --account-id 123456789012 --config CONFIG`.
fn bootstrap_for_account(config: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args([
        "configure",
        "bootstrap",
        "--manual",
        "--account-id",
        "123456789012",
        "--config",
    ])
    .arg(config);
    cmd
}

/// `configure bootstrap --manual` for a database without `auth.region`: the instance's region
/// (IMDS) goes into the ARNs; unknown, a `<REGION>` placeholder and a note saying so.
#[test]
fn bootstrap_policy_uses_the_instance_region_or_says_it_is_unknown() {
    use support::imds::{Behaviour, Emulator, REGION};
    let imds = Emulator::start(Behaviour::default());
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            r#"
[aws.imds]
endpoint = "{}"
[[databases]]
name = "rg"
address = "rg.example:6379"
tls = {{}}
auth = {{ mode = "iam", service = "elasticache", target = "my-rg" }}
"#,
            imds.endpoint()
        ),
    );
    let bootstrap = |imds_disabled: &str| {
        run(
            bootstrap_for_account(&config)
                .env_remove("AWS_REGION")
                .env_remove("AWS_DEFAULT_REGION")
                .env("AWS_CONFIG_FILE", dir.path().join("none"))
                .env("AWS_EC2_METADATA_DISABLED", imds_disabled),
            None,
            Duration::from_secs(60),
        )
    };
    let out = bootstrap("false");
    out.assert_success();
    assert!(
        out.stdout().contains(&format!(
            "arn:aws:elasticache:{REGION}:123456789012:replicationgroup:my-rg"
        )),
        "{out}"
    );
    assert!(
        out.stderr().contains("database 'rg' names no region")
            && out.stderr().contains("IMDS placement/region"),
        "{out}"
    );

    let out = bootstrap("true");
    out.assert_success();
    assert!(
        out.stdout()
            .contains("arn:aws:elasticache:<REGION>:123456789012:replicationgroup:my-rg"),
        "{out}"
    );
    assert!(
        out.stderr().contains("<REGION>") && out.stderr().contains("auth.region"),
        "{out}"
    );
}

#[test]
fn iam_token_for_the_wrong_region_names_the_missing_permission() {
    let (rig, config) = iam_rig("eu-west-1");
    let (out, report) = doctor(&config, rig.dir.path());
    assert!(!out.status.success(), "{out}");
    assert_status(&report, "credentials", "ok");
    let auth = check(&report, "database:iamdb:auth");
    assert_eq!(auth["status"], "fail", "{auth:#}");
    assert!(
        text(&auth["finding"]).contains("rejected the IAM auth token")
            && text(&auth["finding"]).contains("elasticache:Connect"),
        "{auth:#}"
    );
    assert!(
        text(&auth["fix"]).contains("configure bootstrap --manual"),
        "{auth:#}"
    );
}

#[test]
fn bootstrap_policy_covers_elasticache_serverless_and_memorydb() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        r#"
[[databases]]
name = "rg"
address = "rg.example:6379"
tls = {}
auth = { mode = "iam", service = "elasticache", region = "us-east-1", target = "my-rg" }
default_db_user = "svc"

[[databases]]
name = "sls"
address = "sls.example:6379"
tls = {}
auth = { mode = "iam", service = "elasticache", region = "us-east-1", target = "my-sls", serverless = true }

[[databases]]
name = "mdb"
address = "mdb.example:6379"
tls = {}
auth = { mode = "iam", service = "memorydb", region = "eu-west-1", target = "my-cluster" }

[[databases]]
name = "local"
address = "127.0.0.1:6379"
auth = { mode = "password", password_env = "BASTION_NOT_READ" }
"#,
    );
    let out = run(
        &mut bootstrap_for_account(&config),
        None,
        Duration::from_secs(60),
    );
    out.assert_success();
    assert!(out.stderr().contains("put-role-policy"), "{out}");
    let policy: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("policy is not JSON ({e}):\n{out}"));
    assert_eq!(policy["Version"], "2012-10-17");
    let statements = policy["Statement"].as_array().expect("statements");
    let grants = |action: &str| -> Vec<String> {
        statements
            .iter()
            .filter(|s| {
                s["Effect"] == "Allow"
                    && s["Action"].as_array().unwrap().iter().any(|a| a == action)
            })
            .flat_map(|s| s["Resource"].as_array().unwrap().iter())
            .map(|r| r.as_str().unwrap().to_string())
            .collect()
    };
    let acct = "123456789012";
    let ec = grants("elasticache:Connect");
    for arn in [
        format!("arn:aws:elasticache:us-east-1:{acct}:replicationgroup:my-rg"),
        format!("arn:aws:elasticache:us-east-1:{acct}:serverlesscache:my-sls"),
        format!("arn:aws:elasticache:us-east-1:{acct}:user:app"),
        format!("arn:aws:elasticache:us-east-1:{acct}:user:svc"),
    ] {
        assert!(ec.contains(&arn), "{arn} missing from {ec:?}");
    }
    assert!(ec.iter().all(|a| !a.contains("memorydb")), "{ec:?}");
    assert_eq!(
        grants("elasticache:DescribeServerlessCaches"),
        [format!(
            "arn:aws:elasticache:us-east-1:{acct}:serverlesscache:my-sls"
        )]
    );
    assert!(grants("elasticache:DescribeUsers")
        .contains(&format!("arn:aws:elasticache:us-east-1:{acct}:user:app")));
    let mdb = grants("memorydb:Connect");
    assert_eq!(
        mdb,
        [
            format!("arn:aws:memorydb:eu-west-1:{acct}:cluster/my-cluster"),
            format!("arn:aws:memorydb:eu-west-1:{acct}:user/app"),
        ]
    );
    for action in [
        "secretsmanager:GetSecretValue",
        "secretsmanager:PutSecretValue",
        "secretsmanager:DescribeSecret",
        "secretsmanager:CreateSecret",
        "secretsmanager:TagResource",
    ] {
        let r = grants(action);
        assert!(
            r.contains(&format!(
                "arn:aws:secretsmanager:us-east-1:{acct}:secret:bastion/*"
            )) && r.contains(&format!(
                "arn:aws:secretsmanager:eu-west-1:{acct}:secret:bastion/*"
            )),
            "{action}: {r:?}"
        );
    }
    assert!(grants("sts:AssumeRole").is_empty());

    // Without --account-id the ARNs carry a placeholder; without --manual it refuses.
    let out = run(
        Command::new(BIN)
            .args(["configure", "bootstrap", "--manual", "--config"])
            .arg(&config),
        None,
        Duration::from_secs(60),
    );
    out.assert_success();
    assert!(
        out.stdout()
            .contains(":<ACCOUNT_ID>:replicationgroup:my-rg"),
        "{out}"
    );
    let out = run(
        Command::new(BIN)
            .args(["configure", "bootstrap", "--config"])
            .arg(&config),
        None,
        Duration::from_secs(60),
    );
    assert!(
        !out.status.success() && out.stderr().contains("--manual"),
        "{out}"
    );
}

/// A TLS server whose certificate has CN = `common_name` and no subjectAltName. It completes
/// handshakes (if the client lets it) and then closes; it never speaks Redis.
struct LegacyTlsServer {
    addr: SocketAddr,
    ca_pem: String,
}

impl LegacyTlsServer {
    fn start(common_name: &str) -> LegacyTlsServer {
        let ca = TestCa::new("doctor legacy CA");
        let (cert_pem, key_pem) = ca.issue_server_cn_only(common_name);
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .expect("cert pem");
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("key pem");
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server cert");
        let config = Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("local addr");
        // The thread outlives the test's interest in it; it ends with the test process.
        std::thread::spawn(move || {
            for tcp in listener.incoming() {
                let Ok(mut tcp) = tcp else { continue };
                let config = config.clone();
                std::thread::spawn(move || {
                    let _ = tcp.set_read_timeout(Some(Duration::from_secs(10)));
                    let Ok(mut conn) = rustls::ServerConnection::new(config) else {
                        return;
                    };
                    while conn.is_handshaking() {
                        if conn.complete_io(&mut tcp).is_err() {
                            return;
                        }
                    }
                    conn.send_close_notify();
                    let _ = conn.complete_io(&mut tcp);
                });
            }
        });
        LegacyTlsServer {
            addr,
            ca_pem: ca.cert_pem().to_string(),
        }
    }
}
