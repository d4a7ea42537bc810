//! End to end over mTLS: stock clients with a certificate from `bastion cert issue`, the
//! database chosen by SNI (or the listener's `database` / `default_database`), upstream Redis
//! over TLS and over plaintext.
//!
//! The `fixture_*` tests check the test machinery itself against a bare Redis (no bastion), so
//! a failure there is the harness's, not the daemon's.

mod support;

use support::clients::{redis_cli, Endpoint};
use support::raw::{frame_len, Raw};
use support::redis::{RedisOpts, RedisServer};
use support::scenarios;
use support::stack::{upstream_port, Stack, StackOpts, APP};

// ---------------------------------------------------------------------------------------------
// Through the bastion: every scenario, for an upstream over TLS (`tlsdb`) and plaintext (`plaindb`).

scenarios::scenario_tests!(bastion Mtls);

/// SNI picks the database: `tlsdb` sessions reach Redis' TLS port, `plaindb` its plaintext port.
#[test]
fn sni_routes_to_the_named_database() {
    let s = Stack::start();
    assert_eq!(upstream_port(&s.mtls("tlsdb")), s.redis.tls_addr().port());
    assert_eq!(
        upstream_port(&s.mtls("plaindb")),
        s.redis.plain_addr().port()
    );
    s.assert_no_secrets_in_logs();
}

/// A listener's `default_database` serves clients that send no SNI.
#[test]
fn no_sni_uses_the_default_database() {
    let s = Stack::start_with(StackOpts {
        extra_listeners: vec![r#"default_database = "plaindb""#.into()],
        ..StackOpts::default()
    });
    let ep = Endpoint::mtls(s.bastion.tls_addr(1), None, &s.cert);
    let out = redis_cli(&ep, &["ACL", "WHOAMI"]);
    assert_eq!(out.stdout().trim(), APP, "{out}");
    assert_eq!(upstream_port(&ep), s.redis.plain_addr().port());
    s.assert_no_secrets_in_logs();
}

/// A listener's fixed `database` wins over whatever SNI the client sends.
#[test]
fn fixed_database_ignores_sni() {
    let s = Stack::start_with(StackOpts {
        extra_listeners: vec![r#"database = "plaindb""#.into()],
        ..StackOpts::default()
    });
    let ep = Endpoint::mtls(s.bastion.tls_addr(1), Some("tlsdb"), &s.cert);
    assert_eq!(upstream_port(&ep), s.redis.plain_addr().port());
    s.assert_no_secrets_in_logs();
}

/// `password_env`: the upstream password comes from the daemon's environment.
#[test]
fn password_from_environment() {
    let s = Stack::start();
    let out = redis_cli(&s.mtls("envdb"), &["ACL", "WHOAMI"]);
    assert_eq!(out.stdout().trim(), APP, "{out}");
    s.assert_no_secrets_in_logs();
}

/// `auth = { mode = "none" }`: no AUTH upstream, the session is Redis' `default` user.
#[test]
fn auth_mode_none() {
    let s = Stack::start_with(StackOpts {
        open_db: true,
        ..StackOpts::default()
    });
    let out = redis_cli(&s.mtls("opendb"), &["ACL", "WHOAMI"]);
    assert_eq!(out.stdout().trim(), "default", "{out}");
    let out = redis_cli(&s.mtls("opendb"), &["PING"]);
    assert_eq!(out.stdout().trim(), "PONG", "{out}");
}

// ---------------------------------------------------------------------------------------------
// The fixtures themselves, against a bare Redis.

/// The TLS Redis answers redis-cli `--tls --cacert` with PONG (and the plaintext port too).
#[test]
fn fixture_redis_tls_answers_ping() {
    let redis = RedisServer::start(RedisOpts::users(&["app"], "apppw"));
    let out = redis.cli_tls(&["PING"]);
    assert_eq!(out.stdout().trim(), "PONG", "{out}");
    let out = redis.cli(&["PING"]);
    assert_eq!(out.stdout().trim(), "PONG", "{out}");
    // `user default off`: an anonymous client is refused.
    let anon = redis_cli(
        &Endpoint::Tcp {
            addr: redis.plain_addr(),
        },
        &["PING"],
    );
    assert!(anon.stdout().contains("NOAUTH"), "{anon}");
    // The ACL user given by the test exists with its password.
    let ep = Endpoint::Tls {
        addr: redis.tls_addr(),
        sni: Some("localhost".into()),
        ca: redis.ca_pem_path(),
        identity: None,
    };
    let out = support::clients::redis_cli_stdin(&ep, &[], b"AUTH app apppw\nACL WHOAMI\n");
    assert_eq!(out.lines(), ["OK", "app"], "{out}");
}

// The scenarios that do not depend on the bastion's identity mapping, straight to Redis.
scenarios::scenario_tests!(direct);

/// With `client_ca_pem` (the relay bench's direct-tls target), Redis checks a client
/// certificate when one is presented: one from that CA gets in, one from another CA is refused,
/// none at all still connects (the fixture's own redis-cli presents none).
#[test]
fn fixture_redis_checks_client_certificates_when_asked() {
    let ca = support::certs::TestCa::new("fixture client CA");
    let redis = RedisServer::start(RedisOpts {
        client_ca_pem: Some(ca.cert_pem().to_string()),
        ..RedisOpts::open()
    });
    let dir = tempfile::tempdir().unwrap();
    let ping = |cert: Option<&support::clients::ClientCert>| {
        let ep = Endpoint::Tls {
            addr: redis.tls_addr(),
            sni: None,
            ca: redis.ca_pem_path(),
            identity: cert.map(|c| (c.cert.clone(), c.key.clone())),
        };
        redis_cli(&ep, &["PING"])
    };
    let trusted = ca.write_client_bundle("bench", dir.path(), &redis.ca_pem_path());
    let out = ping(Some(&trusted));
    assert_eq!(out.stdout().trim(), "PONG", "{out}");
    let stranger_dir = tempfile::tempdir().unwrap();
    let stranger = support::certs::TestCa::new("stranger").write_client_bundle(
        "bench",
        stranger_dir.path(),
        &redis.ca_pem_path(),
    );
    let out = ping(Some(&stranger));
    assert_ne!(
        out.stdout().trim(),
        "PONG",
        "a foreign client certificate got in: {out}"
    );
    let out = ping(None);
    assert_eq!(out.stdout().trim(), "PONG", "{out}");
}

/// `try_run` (the bench's runner) kills a child that outlives its limit and says so, instead
/// of panicking like `run`.
#[test]
fn fixture_try_run_reports_a_hang() {
    use support::process::{try_run, NotRun};
    let started = std::time::Instant::now();
    let got = try_run(
        std::process::Command::new("sh").args(["-c", "echo started; exec sleep 30"]),
        None,
        std::time::Duration::from_millis(500),
    );
    match got {
        Err(NotRun::HangGuard { stdout, .. }) => assert_eq!(stdout, b"started\n"),
        other => panic!("expected a hang, got {other:?}"),
    }
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "not killed"
    );
    let missing = try_run(
        &mut std::process::Command::new("/nonexistent/program"),
        None,
        std::time::Duration::from_secs(5),
    );
    assert!(matches!(missing, Err(NotRun::Spawn { .. })), "{missing:?}");
}

/// The raw TLS client presents a client certificate and reads frames split across reads.
#[test]
fn fixture_raw_tls_client() {
    let redis = RedisServer::start(RedisOpts::open());
    let ca = support::certs::TestCa::new("fixture client CA");
    let dir = tempfile::tempdir().unwrap();
    let cert = ca.write_client_bundle("alice", dir.path(), &redis.ca_pem_path());
    let ep = Endpoint::mtls(redis.tls_addr(), Some("localhost"), &cert);
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        for ep in [ep.clone(), ep.with_sni(None)] {
            let mut c = Raw::connect(&ep).await.expect("TLS connect");
            let r = c.request_str(&["PING"]).await.unwrap();
            assert_eq!(r, b"+PONG\r\n");
            let r = c.request_str(&["GET", "missing"]).await.unwrap();
            assert_eq!(r, b"$-1\r\n");
        }
        // The chain is still verified: a server whose CA we do not trust is refused.
        let stranger = support::certs::TestCa::new("stranger");
        let other_ca = dir.path().join("other-ca.crt");
        std::fs::write(&other_ca, stranger.cert_pem()).unwrap();
        let untrusted = Endpoint::Tls {
            addr: redis.tls_addr(),
            sni: Some("localhost".into()),
            ca: other_ca,
            identity: None,
        };
        assert!(
            Raw::connect(&untrusted).await.is_err(),
            "an untrusted server was accepted"
        );
    });
}

/// The framer cuts RESP2 and RESP3 frames exactly, and waits for incomplete ones.
#[test]
fn fixture_resp_framer() {
    let cases: &[&[u8]] = &[
        b"+OK\r\n",
        b"-ERR bastion: x\r\n",
        b":12\r\n",
        b"$-1\r\n",
        b"*-1\r\n",
        b"$3\r\nabc\r\n",
        b"*2\r\n$1\r\na\r\n:1\r\n",
        b"%1\r\n+k\r\n*1\r\n_\r\n",
        b">3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nm\r\n",
        b"|1\r\n+ttl\r\n:3\r\n$1\r\nv\r\n",
        b",1.5\r\n",
        b"#t\r\n",
    ];
    for frame in cases {
        let mut buf = frame.to_vec();
        buf.extend_from_slice(b"+NEXT\r\n");
        assert_eq!(
            frame_len(&buf),
            Ok(Some(frame.len())),
            "{}",
            String::from_utf8_lossy(frame)
        );
        for cut in 0..frame.len() {
            assert_eq!(
                frame_len(&frame[..cut]),
                Ok(None),
                "prefix {cut} of {}",
                String::from_utf8_lossy(frame)
            );
        }
    }
    assert!(frame_len(b"?what\r\n").is_err());
}
