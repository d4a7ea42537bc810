//! The pre-authentication budget, tried as an attacker would: floods of connections that never
//! say who they are must not lock out identified clients, must not drown the audit, and quiet
//! or dead sessions must not hold their places forever.

mod support;

use support::process::rt;

use std::time::{Duration, Instant};

use support::bastion::field;
use support::clients::redis_cli;
use support::raw::{show, Raw};
use support::stack::{Stack, StackOpts};

fn stack(limits: &str) -> Stack {
    Stack::start_with(StackOpts {
        // Long enough that nothing in these tests is closed by the handshake timeout.
        handshake_timeout: "60s".into(),
        extra_limits: limits.into(),
        ..StackOpts::default()
    })
}

#[track_caller]
fn assert_pong(s: &Stack, via: &str) {
    let ep = match via {
        "unix" => s.unix("plaindb"),
        _ => s.mtls("plaindb"),
    };
    let out = redis_cli(&ep, &["PING"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "PONG",
        "{via} client locked out: {out:?}\nlogs:\n{}",
        s.bastion.logs()
    );
}

/// The reproduction: as many silent TCP connections as `max_sessions` used to take
/// every slot before a single byte of TLS; identified clients must still get in.
#[test]
fn silent_tcp_connections_take_no_session_slot() {
    let s = stack("max_sessions = 20");
    let rt = rt();
    let silent = rt.block_on(async {
        let mut silent = Vec::new();
        for _ in 0..40 {
            silent.push(
                Raw::connect_tcp_only(s.bastion.tls_addr(0))
                    .await
                    .expect("connect"),
            );
        }
        // Let the bastion accept them all.
        tokio::time::sleep(Duration::from_millis(300)).await;
        silent
    });
    assert_pong(&s, "unix");
    assert_pong(&s, "mtls");
    drop(silent);
}

/// A flood from the client's own address beyond the per-source bound: the oldest silent
/// connections are closed to make room, and a client arriving after the flood is served.
#[test]
fn a_flood_from_the_same_address_cannot_keep_a_late_client_out() {
    let s = stack("max_sessions = 20\nmax_handshakes = 30\nmax_handshakes_per_source = 8");
    let rt = rt();
    let flood = rt.block_on(async {
        let mut flood = Vec::new();
        for i in 0..50 {
            let mut c = Raw::connect_tcp_only(s.bastion.tls_addr(0))
                .await
                .expect("connect");
            // Half of them stall inside TLS: a record header that promises more than comes.
            if i % 2 == 0 {
                let _ = c.send(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).await;
            }
            flood.push(c);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        // The first of the flood were evicted: the bastion closed them.
        let closed = flood[0].read_until_closed(Duration::from_secs(5)).await;
        assert!(
            closed.is_ok(),
            "the oldest flooder is still open: {}",
            show(&closed.unwrap_err())
        );
        flood
    });
    assert_pong(&s, "mtls");
    assert_pong(&s, "unix");
    drop(flood);
    let logs = s.bastion.logs();
    assert!(
        logs.contains("max_handshakes"),
        "no eviction was logged:\n{logs}"
    );
}

/// A flood of failing TLS handshakes is logged one by one only up to a burst; the rest are
/// counted in one summary line per interval, so the audit is not drowned (journald would drop
/// lines past its rate limit, real audit lines among them).
#[test]
fn a_refusal_flood_is_summarised_not_logged_line_by_line() {
    const FLOOD: usize = 80;
    let s = stack("");
    let mark = s.bastion.log_mark();
    rt().block_on(async {
        for _ in 0..FLOOD {
            let mut c = Raw::connect_tcp_only(s.bastion.tls_addr(0))
                .await
                .expect("connect");
            let _ = c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
            let _ = c.read_until_closed(Duration::from_secs(5)).await;
        }
    });
    // The summary comes at the end of the interval (10 s).
    let deadline = Instant::now() + Duration::from_secs(25);
    loop {
        let logs = s.bastion.logs_since(mark);
        let single = logs
            .lines()
            .filter(|l| l.contains("access.denied") && l.contains("TLS handshake failed"))
            .count();
        let summarised: usize = logs
            .lines()
            .filter(|l| l.contains("access.denied.summary"))
            .filter_map(|l| field(l, "suppressed")?.parse::<usize>().ok())
            .sum();
        if single + summarised == FLOOD {
            assert!(
                single <= 2 * 20,
                "{single} refusals logged one by one (burst 20 per interval):\n{logs}"
            );
            let summary = logs
                .lines()
                .find(|l| l.contains("access.denied.summary"))
                .expect("summary line");
            assert!(summary.contains("tls="), "{summary}");
            assert!(summary.contains("127.0.0.1="), "{summary}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{single} logged + {summarised} summarised != {FLOOD} refusals:\n{logs}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// `limits.idle_timeout` closes a session that moved nothing, not one that keeps talking.
#[test]
fn idle_sessions_are_closed_busy_ones_are_not() {
    let s = stack("idle_timeout = \"1s\"");
    let mark = s.bastion.log_mark();
    rt().block_on(async {
        let mut quiet = Raw::connect(&s.unix("plaindb")).await.expect("connect");
        let mut busy = Raw::connect(&s.unix("plaindb")).await.expect("connect");
        assert_eq!(quiet.request_str(&["PING"]).await.unwrap(), b"+PONG\r\n");
        let started = Instant::now();
        while started.elapsed() < Duration::from_millis(2500) {
            assert_eq!(
                busy.request_str(&["PING"]).await.expect("busy session cut"),
                b"+PONG\r\n"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let closed = quiet.read_until_closed(Duration::from_secs(5)).await;
        assert!(closed.is_ok(), "idle session still open");
        assert_eq!(busy.request_str(&["PING"]).await.unwrap(), b"+PONG\r\n");
    });
    let line = s
        .bastion
        .expect_log_line(mark, &["session.end", "closed_by=\"idle\""], &[]);
    assert_eq!(field(&line, "db").as_deref(), Some("plaindb"), "{line}");
}
