//! End to end over the Unix-socket directory (`<dir>/<db>.sock`): the caller's uid, read with
//! SO_PEERCRED, is bound to bastion user `alice` (`unix_user` = the user running the tests),
//! upstream Redis over TLS and over plaintext.

mod support;

use support::clients::redis_cli;
use support::scenarios;
use support::stack::{upstream_port, Stack, Via, APP};

// Every scenario, for an upstream over TLS (`tlsdb`) and plaintext (`plaindb`).
scenarios::scenario_tests!(bastion Unix);

/// One socket per database, and each leads to its own database.
#[test]
fn each_database_has_its_socket() {
    let s = Stack::start();
    for db in ["tlsdb", "plaindb", "envdb", "badpwdb", "downdb"] {
        let path = s.bastion.socket_path(db);
        assert!(path.exists(), "{} missing", path.display());
    }
    assert_eq!(upstream_port(&s.unix("tlsdb")), s.redis.tls_addr().port());
    assert_eq!(
        upstream_port(&s.unix("plaindb")),
        s.redis.plain_addr().port()
    );
    let out = redis_cli(&s.unix("envdb"), &["ACL", "WHOAMI"]);
    assert_eq!(out.stdout().trim(), APP, "{out}");
    s.assert_no_secrets_in_logs();
}

/// The sockets have the configured default mode (0666): any local user may connect, and is
/// refused unless bound to a bastion user (see refusals.rs).
#[test]
fn sockets_are_world_connectable() {
    use std::os::unix::fs::PermissionsExt;
    let s = Stack::start();
    let mode = std::fs::metadata(s.bastion.socket_path("plaindb"))
        .expect("socket metadata")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o666, "socket mode {:o}", mode & 0o777);
}

/// `session.end` counts every byte of the session, including the opening command the hand-off
/// forwarded before the relay started: PING is 14 bytes up, +PONG 7 bytes down (the upstream's
/// reply to the bastion's own AUTH is not the client's and is not counted).
#[test]
fn session_end_counts_the_opening_command() {
    use support::raw::{command_str, Raw};
    let s = Stack::start();
    let ep = s.endpoint(Via::Unix, "plaindb");
    let mark = s.bastion.log_mark();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let mut c = Raw::connect(&ep).await.expect("connect");
            c.send(&command_str(&["PING"])).await.expect("send");
            assert_eq!(c.read_frame().await.expect("reply"), b"+PONG\r\n");
        });
    s.bastion.expect_log_line(
        mark,
        &[
            "session.end",
            "bytes_client_to_upstream=14",
            "bytes_upstream_to_client=7",
        ],
        &[],
    );
}
