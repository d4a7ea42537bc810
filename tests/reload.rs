//! `systemctl reload` (SIGHUP) against a running daemon and a real redis-server:
//! - live sessions (a held SUBSCRIBE, pipelining clients over mTLS and Unix) go on untouched
//!   while new handshakes get the re-issued server certificate (new SAN, new serial) and the new
//!   listener settings;
//! - a broken config is refused, naming the key, and the daemon serves on with the old one;
//! - a changed listener address / socket directory is reported as needing a restart;
//! - a database added through the admin socket is in the server certificate at once (a client
//!   that verifies the SNI against the certificate reaches it, no reload, no restart);
//! - a lowered `limits.max_sessions` bounds new sessions while the open ones go on.

mod support;

use std::process::Command;
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use support::bastion::BASTION_BIN;
use support::certs::write_private;
use support::process::{free_ports, run};
use support::raw::{command_str, Raw};
use support::scenarios::contains;
use support::stack::{Stack, APP};

/// The config line of listener 0 in the stack's config, and the limits section.
const SERVER_NAMES: &str = r#"server_names = ["localhost", "127.0.0.1"]"#;
const HANDSHAKE_TIMEOUT: &str = r#"handshake_timeout = "10s""#;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// `s.config` with `from` replaced by `to` (which must be there).
#[track_caller]
fn edited(s: &Stack, from: &str, to: &str) -> String {
    assert!(
        s.config.contains(from),
        "{from:?} not in the stack's config"
    );
    s.config.replacen(from, to, 1)
}

/// Serial (hex) and SANs (DNS names and IPs, as text) of a server certificate.
fn serial_and_names(cert: &CertificateDer<'_>) -> (String, Vec<String>) {
    let (_, x509) = x509_parser::parse_x509_certificate(cert).expect("server certificate parses");
    let names =
        x509.subject_alternative_name()
            .expect("SAN extension parses")
            .map(|san| {
                san.value
                    .general_names
                    .iter()
                    .map(|n| match n {
                        x509_parser::extensions::GeneralName::DNSName(d) => d.to_string(),
                        x509_parser::extensions::GeneralName::IPAddress(ip) => match ip.len() {
                            4 => std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*ip).unwrap())
                                .to_string(),
                            _ => format!("{ip:?}"),
                        },
                        other => format!("{other:?}"),
                    })
                    .collect()
            })
            .unwrap_or_default();
    (x509.raw_serial_as_string(), names)
}

/// The server certificate a new mTLS handshake with SNI `db` gets.
async fn fresh_cert(s: &Stack, db: &str) -> (String, Vec<String>) {
    let c = Raw::connect(&s.mtls(db)).await.expect("TLS connect");
    serial_and_names(c.server_cert().expect("the server presented a certificate"))
}

/// Three commands in one write, three replies in order.
async fn pipeline(c: &mut Raw, tag: &str) {
    let mut bytes = command_str(&["SET", tag, "v"]);
    bytes.extend(command_str(&["GET", tag]));
    bytes.extend(command_str(&["APPEND", tag, "w"]));
    c.send(&bytes).await.expect("send pipeline");
    let replies = c.read_frames(3).await.expect("pipelined replies");
    assert_eq!(replies[0], b"+OK\r\n", "{tag}");
    assert_eq!(replies[1], b"$1\r\nv\r\n", "{tag}");
    assert_eq!(replies[2], b":2\r\n", "{tag}");
}

async fn ping(c: &mut Raw) -> Vec<u8> {
    c.request_str(&["PING"]).await.expect("PING reply")
}

#[test]
fn a_reload_keeps_live_sessions_and_new_handshakes_get_the_new_certificate() {
    let s = Stack::start();
    runtime().block_on(async {
        // Live sessions: a subscriber over mTLS, pipelining clients over Unix and mTLS.
        let mut sub = Raw::connect(&s.mtls("plaindb")).await.expect("connect");
        let before = serial_and_names(sub.server_cert().expect("certificate"));
        sub.send(&command_str(&["SUBSCRIBE", "news"]))
            .await
            .expect("send");
        let confirm = sub.read_frame().await.expect("subscribe confirmation");
        assert!(contains(&confirm, b"subscribe"), "{confirm:?}");
        let mut unix = Raw::connect(&s.unix("plaindb")).await.expect("connect");
        pipeline(&mut unix, "unix-before").await;
        let mut tls = Raw::connect(&s.mtls("tlsdb")).await.expect("connect");
        pipeline(&mut tls, "tls-before").await;

        // Before: `reloaded.example` is not in the certificate, and as SNI it names a database.
        assert!(
            !before.1.contains(&"reloaded.example".to_string()),
            "{before:?}"
        );
        let mut c = Raw::connect(&s.mtls("reloaded.example"))
            .await
            .expect("connect");
        let reply = ping(&mut c).await;
        assert!(
            contains(&reply, b"unknown database"),
            "{}",
            String::from_utf8_lossy(&reply)
        );

        let config = edited(
            &s,
            SERVER_NAMES,
            r#"server_names = ["localhost", "127.0.0.1", "reloaded.example"]"#,
        )
        .replacen(HANDSHAKE_TIMEOUT, r#"handshake_timeout = "9s""#, 1);
        s.bastion.rewrite_config(&config);
        let mark = s.bastion.log_mark();
        let done = s.bastion.reload();
        assert!(done.contains("reload done"), "{done}");
        s.bastion
            .expect_log_line(mark, &["applied", "listeners.tcp[0].server_names"], &[]);
        s.bastion
            .expect_log_line(mark, &["applied", "limits.handshake_timeout", "9s"], &[]);

        // The live sessions go on, untouched.
        assert_eq!(s.redis.query(&["PUBLISH", "news", "after-reload"]), "1");
        let message = sub.read_frame().await.expect("published message");
        assert!(contains(&message, b"after-reload"), "{message:?}");
        pipeline(&mut unix, "unix-after").await;
        pipeline(&mut tls, "tls-after").await;

        // New handshakes get the re-issued certificate: the new SAN, a new serial.
        let after = fresh_cert(&s, "plaindb").await;
        assert!(
            after.1.contains(&"reloaded.example".to_string()),
            "{after:?}"
        );
        assert!(after.1.contains(&"plaindb".to_string()), "{after:?}");
        assert_ne!(after.0, before.0, "same serial after the reload");
        // … and the new listener setting: the name is the listener's own now, not a database.
        let mut c = Raw::connect(&s.mtls("reloaded.example"))
            .await
            .expect("connect");
        let reply = ping(&mut c).await;
        assert!(
            contains(&reply, b"no database selected"),
            "{}",
            String::from_utf8_lossy(&reply)
        );
        let mut c = Raw::connect(&s.mtls("plaindb")).await.expect("connect");
        assert_eq!(ping(&mut c).await, b"+PONG\r\n");
    });
    s.assert_no_secrets_in_logs();
}

#[test]
fn a_broken_config_is_refused_and_the_daemon_serves_on_with_the_old_one() {
    let mut s = Stack::start();
    let rt = runtime();
    let serial = rt.block_on(fresh_cert(&s, "plaindb")).0;

    for (broken, key) in [
        (
            edited(
                &s,
                HANDSHAKE_TIMEOUT,
                "handshake_timeout = \"10s\"\nmax_sessions = 0",
            ),
            "limits.max_sessions",
        ),
        (
            edited(
                &s,
                HANDSHAKE_TIMEOUT,
                "handshake_timeout = \"10s\"\nmax_sesions = 5",
            ),
            "max_sesions",
        ),
        (
            edited(
                &s,
                SERVER_NAMES,
                "server_names = [\"localhost\", \"127.0.0.1\"]\nnot toml",
            ),
            "parse error",
        ),
    ] {
        s.bastion.rewrite_config(&broken);
        let line = s.bastion.reload();
        assert!(
            line.contains("reload failed") && line.contains(key),
            "a reload of a config with a bad {key} must fail naming it: {line}"
        );
        assert!(s.bastion.is_running(), "a failed reload stopped the daemon");
        rt.block_on(async {
            // Still serving, with the very same certificate: nothing was half-applied.
            let mut c = Raw::connect(&s.mtls("plaindb")).await.expect("connect");
            assert_eq!(ping(&mut c).await, b"+PONG\r\n");
            let (now, _) = serial_and_names(c.server_cert().expect("certificate"));
            assert_eq!(now, serial, "the certificate changed in a failed reload");
            let mut u = Raw::connect(&s.unix("plaindb")).await.expect("connect");
            assert_eq!(ping(&mut u).await, b"+PONG\r\n");
        });
    }

    // Fixed, the next reload goes through.
    s.bastion.rewrite_config(&s.config);
    let line = s.bastion.reload();
    assert!(line.contains("reload done"), "{line}");
    let after = rt.block_on(fresh_cert(&s, "plaindb")).0;
    assert_ne!(after, serial);
}

#[test]
fn a_changed_listener_address_or_socket_directory_needs_a_restart() {
    let s = Stack::start();
    let port = free_ports(1)[0];
    let sockets = tempfile::tempdir().expect("temp dir");
    let moved = edited(
        &s,
        "address = \"127.0.0.1:0\"",
        &format!("address = \"127.0.0.1:{port}\""),
    );
    let unix_dir = s
        .bastion
        .socket_path("plaindb")
        .parent()
        .expect("socket dir")
        .to_path_buf();
    let dir_line = format!(
        "directory = {}",
        toml::Value::String(unix_dir.display().to_string())
    );
    assert!(moved.contains(&dir_line), "{dir_line} not in the config");
    let moved = moved.replacen(
        &dir_line,
        &format!(
            "directory = {}",
            toml::Value::String(sockets.path().display().to_string())
        ),
        1,
    );
    s.bastion.rewrite_config(&moved);
    let mark = s.bastion.log_mark();
    let line = s.bastion.reload();
    assert!(line.contains("reload done"), "{line}");
    let warning = s.bastion.expect_log_line(
        mark,
        &[
            "listeners.tcp[0].address",
            "needs a restart",
            &port.to_string(),
        ],
        &[],
    );
    assert!(warning.contains("WARN"), "{warning}");
    s.bastion
        .expect_log_line(mark, &["listeners.unix.directory", "needs a restart"], &[]);

    // Still on the old address and directory; nothing listens on the new ones.
    runtime().block_on(async {
        let mut c = Raw::connect(&s.mtls("plaindb")).await.expect("connect");
        assert_eq!(ping(&mut c).await, b"+PONG\r\n");
        let mut u = Raw::connect(&s.unix("plaindb")).await.expect("connect");
        assert_eq!(ping(&mut u).await, b"+PONG\r\n");
    });
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "something listens on the new address without a restart"
    );
    assert!(!sockets.path().join("plaindb.sock").exists());
}

#[test]
fn a_database_added_at_runtime_is_reachable_by_sni_without_a_restart() {
    let s = Stack::start();
    let socket = s.state_dir().join("run/admin.sock");
    let rt = runtime();
    let newdb = s.mtls("newdb");

    // Before: a client that checks the name refuses the certificate (newdb is not in it).
    let refused = rt.block_on(Raw::connect_verifying_name(&newdb));
    let err = refused
        .err()
        .expect("the certificate must not name newdb yet");
    assert!(
        err.to_string().to_lowercase().contains("name"),
        "expected a name mismatch: {err}"
    );

    let pw = write_private(
        &s.secrets_dir().join("newdb.pw"),
        s.upstream_password.as_bytes(),
    );
    let out = run(
        Command::new(BASTION_BIN)
            .args(["db", "add", "newdb", "--address"])
            .arg(s.redis.plain_addr().to_string())
            .args(["--auth", "password", "--password-file"])
            .arg(&pw)
            .args(["--default-db-user", APP, "--socket"])
            .arg(&socket),
        None,
        Duration::from_secs(60),
    );
    out.assert_success();

    rt.block_on(async {
        let mut c = Raw::connect_verifying_name(&newdb)
            .await
            .expect("a name-checking client reaches newdb by SNI right after `db add`");
        let (_, names) = serial_and_names(c.server_cert().expect("certificate"));
        assert!(names.contains(&"newdb".to_string()), "{names:?}");
        assert_eq!(ping(&mut c).await, b"+PONG\r\n");
        pipeline(&mut c, "newdb").await;
    });
    let logs = s.bastion.logs();
    assert!(
        !logs.contains("reload requested"),
        "no reload was asked for"
    );
    assert!(
        logs.contains("server certificate issued for a database"),
        "the issue is logged"
    );
}

/// The server certificate is shown before any client certificate is checked: it must not
/// tell a scanner which databases exist. Each database's SNI gets a certificate naming only it.
#[test]
fn no_server_certificate_lists_the_databases() {
    let s = Stack::start();
    let all = ["plaindb", "tlsdb", "envdb", "badpwdb", "downdb"];
    runtime().block_on(async {
        for sni in [None, Some("guess"), Some("plaindb"), Some("tlsdb")] {
            let ep = s.mtls("plaindb").with_sni(sni);
            let c = Raw::connect(&ep).await.expect("TLS connect");
            let (_, names) = serial_and_names(c.server_cert().expect("certificate"));
            for db in all {
                assert_eq!(
                    names.contains(&db.to_string()),
                    sni == Some(db),
                    "SNI {sni:?}: certificate names {names:?}"
                );
            }
        }
    });
}

#[test]
fn a_lowered_max_sessions_applies_to_new_sessions_only() {
    let s = Stack::start();
    let rt = runtime();
    rt.block_on(async {
        let mut a = Raw::connect(&s.unix("plaindb")).await.expect("connect");
        assert_eq!(ping(&mut a).await, b"+PONG\r\n");
        let mut b = Raw::connect(&s.mtls("plaindb")).await.expect("connect");
        assert_eq!(ping(&mut b).await, b"+PONG\r\n");

        s.bastion.rewrite_config(&edited(
            &s,
            HANDSHAKE_TIMEOUT,
            "handshake_timeout = \"10s\"\nmax_sessions = 2",
        ));
        let mark = s.bastion.log_mark();
        let line = s.bastion.reload();
        assert!(line.contains("reload done"), "{line}");
        s.bastion
            .expect_log_line(mark, &["applied", "limits.max_sessions"], &[]);

        // Two open, two allowed: a third is refused at once, with a reason.
        let mut c = Raw::connect(&s.unix("plaindb")).await.expect("connect");
        let refused = c.request_str(&["PING"]).await;
        assert!(
            refused
                .as_deref()
                .is_ok_and(|r| r.starts_with(b"-ERR bastion: session limit reached")),
            "a third session got {refused:?}"
        );
        s.bastion
            .expect_log_line(mark, &["session limit reached"], &[]);
        // The two open ones go on.
        assert_eq!(ping(&mut a).await, b"+PONG\r\n");
        pipeline(&mut b, "limits").await;

        // One ends: room for one more, and only one.
        drop(b);
        let mut d = None;
        for _ in 0..100 {
            // Hang guard: the slot is given back when the session task ends.
            let mut try_d = Raw::connect(&s.unix("plaindb")).await.expect("connect");
            if try_d.request_str(&["PING"]).await.ok().as_deref() == Some(b"+PONG\r\n") {
                d = Some(try_d);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut d = d.expect("no session slot came back after one session ended");
        let mut e = Raw::connect(&s.unix("plaindb")).await.expect("connect");
        let refused = e.request_str(&["PING"]).await;
        assert!(
            refused
                .as_deref()
                .is_ok_and(|r| r.starts_with(b"-ERR bastion:")),
            "a third session was let in: {refused:?}"
        );
        assert_eq!(ping(&mut d).await, b"+PONG\r\n");
        assert_eq!(ping(&mut a).await, b"+PONG\r\n");
    });
}
