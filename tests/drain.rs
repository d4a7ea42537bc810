//! Drain on stop: on SIGTERM the daemon stops accepting, lets open sessions go on for up to
//! `limits.drain_timeout`, then closes the rest — and every session, cut or not, writes its
//! `session.end` (`closed_by="shutdown"` where it was cut). With live pub/sub and BLPOP
//! sessions through the real daemon and a real redis-server.

mod support;

use support::process::rt;

use std::time::{Duration, Instant};

use support::bastion::field;
use support::clients::spawn_redis_cli;
use support::process::poll;
use support::raw::Raw;
use support::stack::{Stack, StackOpts};

#[test]
fn sigterm_drains_then_closes_what_is_left_with_its_session_end() {
    let mut s = Stack::start_with(StackOpts {
        extra_limits: "drain_timeout = \"3s\"".into(),
        ..StackOpts::default()
    });
    let (mut sub, _) = spawn_redis_cli(&s.mtls("plaindb"), &["SUBSCRIBE", "news"]);
    let (mut pop, _) = spawn_redis_cli(&s.unix("tlsdb"), &["BLPOP", "queue", "0"]);
    // A session that ends by itself during the drain.
    let rt = rt();
    let mut short = rt.block_on(async {
        let mut c = Raw::connect(&s.unix("plaindb")).await.expect("connect");
        assert_eq!(c.request_str(&["PING"]).await.unwrap(), b"+PONG\r\n");
        c
    });
    let live = poll(Duration::from_secs(20), || {
        (s.bastion.logs().matches("event=\"session.start\"").count() >= 3).then_some(())
    });
    assert!(
        live.is_some(),
        "sessions did not start:\n{}",
        s.bastion.logs()
    );

    let pid = nix::unistd::Pid::from_raw(s.bastion.pid().expect("pid") as i32);
    let mark = s.bastion.log_mark();
    let sent = Instant::now();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    // Stopped accepting: a new connection is not served.
    std::thread::sleep(Duration::from_millis(300));
    let refused = rt.block_on(async {
        match Raw::connect(&s.unix("plaindb")).await {
            Err(_) => true,
            Ok(mut c) => c.request_str(&["PING"]).await.is_err(),
        }
    });
    assert!(refused, "a new session was served while draining");
    // The open sessions still work during the drain.
    rt.block_on(async {
        assert_eq!(short.request_str(&["PING"]).await.unwrap(), b"+PONG\r\n");
    });
    drop(short);

    let exited = poll(Duration::from_secs(20), || s.bastion.exit_status());
    let took = sent.elapsed();
    let status = exited.expect("the daemon did not exit after its drain");
    assert!(status.success(), "exit status {status:?}");
    assert!(
        took >= Duration::from_secs(3),
        "exited after {took:?}, before drain_timeout = 3s"
    );
    let logs = s.bastion.logs_since(mark);
    let ends: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("event=\"session.end\""))
        .collect();
    let closed_by: Vec<String> = ends.iter().filter_map(|l| field(l, "closed_by")).collect();
    assert_eq!(
        closed_by.iter().filter(|c| *c == "shutdown").count(),
        2,
        "the SUBSCRIBE and BLPOP sessions end with closed_by=shutdown:\n{logs}"
    );
    assert!(
        closed_by.iter().any(|c| c == "client"),
        "the short session ended by its client:\n{logs}"
    );
    assert!(logs.contains("draining"), "{logs}");
    let _ = sub.wait();
    let _ = pop.wait();
}

#[test]
fn with_nothing_open_sigterm_exits_at_once() {
    let mut s = Stack::start();
    let pid = nix::unistd::Pid::from_raw(s.bastion.pid().expect("pid") as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    let exited = poll(Duration::from_secs(10), || s.bastion.exit_status());
    assert!(exited.is_some_and(|e| e.success()), "{exited:?}");
    let logs = s.bastion.logs();
    assert!(
        !logs.contains("draining"),
        "nothing was open to drain:\n{logs}"
    );
}
