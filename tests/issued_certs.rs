//! Only issued certificates open sessions. Tried as an attacker holding the CA key would:
//! certificates forged with `openssl` and the on-box CA's key — for an existing user with a
//! serial nobody issued, or reusing an issued serial under another user's name — chain to the
//! CA but are refused, because the store has no record of them. `cert issue` refuses a TTL
//! above `limits.max_cert_ttl`, and `serve --dev` records the certificate it writes.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::admin::Admin;
use support::bastion::BASTION_BIN;
use support::clients::{redis_cli, ClientCert, Endpoint};
use support::process::{free_ports, poll, run, spawn};
use support::redis::{RedisOpts, RedisServer};
use support::stack::{StackOpts, USER};

fn start() -> Admin {
    Admin::start_with(StackOpts {
        extra_toml: "\n[[users]]\nname = \"bob\"\nroles = [\"apps\"]\n".into(),
        ..StackOpts::default()
    })
}

/// Sign a new key for `cn` with the on-box CA's key, with `serial` (hex), as an attacker with
/// the CA key would; nothing is recorded anywhere.
fn forge(state: &Path, dir: &Path, cn: &str, serial: &str) -> ClientCert {
    let ca = state.join("ca");
    let key = dir.join(format!("{cn}.key"));
    let csr = dir.join(format!("{cn}.csr"));
    let crt = dir.join(format!("{cn}.crt"));
    let ext = dir.join("ext.cnf");
    std::fs::write(
        &ext,
        "extendedKeyUsage = clientAuth\nbasicConstraints = CA:FALSE\n",
    )
    .unwrap();
    for args in [
        vec![
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            key.to_str().unwrap(),
            "-out",
            csr.to_str().unwrap(),
            "-subj",
            &format!("/CN={cn}"),
        ],
        vec![
            "x509",
            "-req",
            "-in",
            csr.to_str().unwrap(),
            "-CA",
            ca.join("ca.crt").to_str().unwrap(),
            "-CAkey",
            ca.join("ca.key").to_str().unwrap(),
            "-set_serial",
            &format!("0x{serial}"),
            "-days",
            "1",
            "-extfile",
            ext.to_str().unwrap(),
            "-out",
            crt.to_str().unwrap(),
        ],
    ] {
        let out = run(
            Command::new("openssl").args(&args),
            None,
            Duration::from_secs(30),
        );
        out.assert_success();
    }
    ClientCert {
        cert: crt,
        key,
        ca: ca.join("ca.crt"),
    }
}

#[track_caller]
fn refused(a: &Admin, cert: &ClientCert, words: &str) {
    let ep = Endpoint::mtls(a.stack.bastion.tls_addr(0), Some("plaindb"), cert);
    let out = redis_cli(&ep, &["PING"]);
    let text = format!("{}{}", out.stdout(), out.stderr());
    assert!(
        !text.contains("PONG"),
        "a forged certificate got in: {text}"
    );
    assert!(text.contains(words), "{text}");
}

#[test]
fn forged_certificates_are_refused_even_though_they_chain_to_the_ca() {
    let a = start();
    let dir = tempfile::tempdir().unwrap();
    // An existing user, a serial nobody issued.
    let forged = forge(
        a.stack.state_dir(),
        dir.path(),
        USER,
        "5eed0000000000000000000000000001",
    );
    refused(&a, &forged, "was not issued by this bastion");
    // An issued serial (alice's, from `cert ls`) in a certificate made out to bob.
    let ls = a.ok(&["cert", "ls", "--json"]);
    let certs: serde_json::Value = serde_json::from_str(&ls).unwrap();
    let serial = certs
        .as_array()
        .and_then(|c| c.iter().find(|c| c["user"] == USER))
        .and_then(|c| c["serial"].as_str())
        .unwrap_or_else(|| panic!("no certificate of {USER} in {ls}"))
        .to_string();
    let dir2 = tempfile::tempdir().unwrap();
    let reuse = forge(a.stack.state_dir(), dir2.path(), "bob", &serial);
    refused(&a, &reuse, "issued to another user");
    a.stack.bastion.expect_denied(0, &["not issued"]);
    // The real one still works.
    let out = redis_cli(&a.stack.mtls("plaindb"), &["PING"]);
    assert_eq!(out.stdout().trim(), "PONG", "{out}");
}

#[test]
fn cert_issue_refuses_a_ttl_above_the_limit() {
    let a = start();
    let dir = tempfile::tempdir().unwrap();
    let out = a.cli(&[
        "cert",
        "issue",
        USER,
        "--ttl",
        "3600d",
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    assert!(!out.status.success(), "{out}");
    assert!(out.stderr().contains("limits.max_cert_ttl"), "{out}");
    assert!(!dir.path().join(format!("{USER}.crt")).exists());
    a.ok(&[
        "cert",
        "issue",
        USER,
        "--ttl",
        "30d",
        "--out",
        dir.path().to_str().unwrap(),
    ]);
}

/// `serve --dev` (the README's main job) records the certificate it writes, so it works.
#[test]
fn serve_dev_records_the_certificate_it_writes() {
    let redis = RedisServer::start(RedisOpts::open());
    let state = tempfile::tempdir().unwrap();
    let port = free_ports(1)[0];
    let listen = format!("127.0.0.1:{port}");
    let mut child = spawn(
        Command::new(BASTION_BIN)
            .args(["serve", "--dev", "--state-dir"])
            .arg(state.path())
            .args([
                "--listen",
                &listen,
                "--upstream",
                &redis.plain_addr().to_string(),
            ])
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .expect("start serve --dev");
    let certs = state.path().join("certs");
    let cert = ClientCert {
        cert: certs.join("dev.crt"),
        key: certs.join("dev.key"),
        ca: certs.join("ca.crt"),
    };
    let ep = Endpoint::mtls(listen.parse().unwrap(), None, &cert);
    let pong = poll(Duration::from_secs(30), || {
        if !cert.cert.exists() {
            return None;
        }
        let out = redis_cli(&ep, &["PING"]);
        (out.stdout().trim() == "PONG").then_some(())
    });
    let _ = child.kill();
    let _ = child.wait();
    assert!(pong.is_some(), "the dev certificate did not get PONG");
}
