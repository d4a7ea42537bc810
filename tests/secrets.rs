//! No secret leaves the box through the bastion's own outputs. Full sessions run first — the
//! upstream password from a file and from the environment, a wrong password, an IAM database
//! (tokens signed with the daemon's AWS keys, checked by the test IAM front), clients sending
//! their own AUTH and HELLO AUTH passwords — then every log line and every admin output
//! (`export`, `status`, `doctor`, `sessions ls`, `cert ls`, all as JSON) is searched for each
//! secret used, and for the on-box CA's private key: none may appear.

mod support;

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use support::admin::Admin;
use support::bastion::BASTION_BIN;
use support::clients::{python, redis_cli};
use support::iam_front::{IamFront, IamFrontConfig};
use support::process::run;
use support::stack::{StackOpts, APP, CLIENT_PASSWORD, PASSWORD_ENV};

const ACCESS_KEY: &str = "AKIDBASTIONSECRETS01";
const SECRET_KEY: &str = "bastion/secrets/test/key/0123456789abcdef";

#[test]
fn no_secret_appears_in_logs_or_admin_outputs() {
    let a = Admin::start_with(StackOpts {
        handshake_timeout: "30s".into(),
        env: vec![
            ("AWS_ACCESS_KEY_ID".into(), ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY".into(), SECRET_KEY.into()),
        ],
        ..StackOpts::default()
    });
    let s = &a.stack;
    // An IAM database in front of the same Redis: the front checks each token's signature and
    // logs in as `app` with the real password.
    let front = IamFront::start(IamFrontConfig {
        service: "elasticache",
        region: "us-east-1".into(),
        target: "my-rg".into(),
        serverless: false,
        access_key_id: ACCESS_KEY.into(),
        secret_access_key: SECRET_KEY.into(),
        session_token: None,
        issued: None,
        upstream: s.redis.plain_addr(),
        passwords: HashMap::from([(APP.to_string(), s.upstream_password.clone())]),
    });
    a.ok(&[
        "db",
        "add",
        "iamdb",
        "--address",
        &front.addr().to_string(),
        "--auth",
        "iam",
        "--service",
        "elasticache",
        "--region",
        "us-east-1",
        "--target",
        "my-rg",
        "--allow-plaintext-auth",
        "--default-db-user",
        APP,
    ]);
    for args in [
        &["PING"][..],
        &["--user", APP, "--pass", CLIENT_PASSWORD, "PING"],
    ] {
        let out = redis_cli(&s.unix("iamdb"), args);
        assert!(out.stdout().contains("PONG"), "iamdb {args:?}: {out}");
    }
    // Sessions that use every secret.
    for db in ["plaindb", "envdb", "tlsdb"] {
        let out = redis_cli(
            &s.unix(db),
            &["--user", APP, "--pass", CLIENT_PASSWORD, "PING"],
        );
        assert!(out.stdout().contains("PONG"), "{db}: {out}");
        let out = redis_cli(
            &s.mtls(db),
            &["-3", "--user", APP, "--pass", CLIENT_PASSWORD, "PING"],
        );
        assert!(out.stdout().contains("PONG"), "{db}: {out}");
    }
    let out = python(
        &s.unix("plaindb"),
        &format!("r = connect(username='{APP}', password='{CLIENT_PASSWORD}', protocol=3)\nprint(r.ping())"),
    );
    assert!(out.stdout().contains("True"), "{out}");
    // A refused session with the wrong upstream password.
    let out = redis_cli(&s.unix("badpwdb"), &["PING"]);
    assert!(!out.stdout().contains("PONG"), "{out}");

    let mut outputs = vec![("logs".to_string(), s.bastion.logs())];
    for args in [
        &["export"][..],
        &["status", "--json"],
        &["sessions", "ls", "--json"],
        &["cert", "ls", "--json"],
        &["db", "ls", "--json"],
    ] {
        let out = a.cli(args);
        outputs.push((args.join(" "), format!("{}{}", out.stdout(), out.stderr())));
    }
    let doctor = run(
        Command::new(BASTION_BIN)
            .args(["doctor", "--json", "--config"])
            .arg(s.bastion.config_path())
            .env(PASSWORD_ENV, &s.upstream_password)
            .env("AWS_EC2_METADATA_DISABLED", "true"),
        None,
        Duration::from_secs(120),
    );
    outputs.push((
        "doctor --json".into(),
        format!("{}{}", doctor.stdout(), doctor.stderr()),
    ));

    // The CA key: every base64 line of its PEM body.
    let ca_key = std::fs::read_to_string(s.state_dir().join("ca/ca.key")).expect("ca.key");
    let mut secrets: Vec<String> = vec![
        s.upstream_password.clone(),
        s.wrong_password.clone(),
        CLIENT_PASSWORD.to_string(),
        SECRET_KEY.to_string(),
        // Any IAM token (its signature parameter) in any output.
        "X-Amz-Signature=".to_string(),
    ];
    secrets.extend(
        ca_key
            .lines()
            .filter(|l| !l.starts_with("-----") && l.len() >= 16)
            .map(str::to_string),
    );
    for (what, text) in &outputs {
        assert!(
            !text.is_empty() || what == "sessions ls --json",
            "{what} printed nothing"
        );
        for secret in &secrets {
            if let Some(line) = text.lines().find(|l| l.contains(secret.as_str())) {
                panic!("a secret appears in {what}:\n{line}");
            }
        }
    }
}
