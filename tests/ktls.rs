//! kTLS on the TLS legs, from outside: a redis-cli over mTLS to `tlsdb` (a redis-server behind
//! TLS) has both legs TLS. Where the kernel has the `tls` ULP the legs go to the kernel and the
//! relay splices; where it has not (this host: no CONFIG_TLS) every session falls back to
//! user-space rustls and copies, the reason is logged once per process, and the bytes are the
//! same either way. `sessions ls` and the `session.end` audit event say which path each session
//! took. The kernel side is proven in the booted image (tests/appliance_boot.rs).

mod support;

use std::time::Duration;

use serde_json::Value;
use support::admin::Admin;
use support::bastion::LOG_LIMIT;
use support::clients::{redis_cli, spawn_redis_cli};
use support::process::poll;
use support::stack::StackOpts;

#[test]
fn tls_legs_say_where_their_records_are_handled_and_carry_a_large_value_intact() {
    let a = Admin::start_with(StackOpts {
        handshake_timeout: "120s".into(),
        ..Default::default()
    });
    let bastion = &a.stack.bastion;
    // The daemon runs the same probe on the same kernel.
    let kernel = bastion::proxy::ktls::support().reason().is_none();
    let (tls, path) = if kernel {
        ("ktls", "splice")
    } else {
        ("rustls", "copy")
    };
    let mark = bastion.log_mark();

    // A 256 KiB value both ways through two TLS legs, byte for byte (many TLS records).
    let tlsdb = a.stack.mtls("tlsdb");
    let value: String = (0..256 * 1024)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let set = redis_cli_stdin_set(&a, &value);
    assert_eq!(
        set.trim(),
        "OK",
        "SET through both TLS legs answered: {set}"
    );
    let got = redis_cli(&tlsdb, &["GET", "ktls:big"]);
    assert_eq!(
        got.stdout().trim_end().len(),
        value.len(),
        "{}",
        got.stderr()
    );
    assert!(
        got.stdout().trim_end() == value,
        "the value came back altered"
    );

    // A live session shows its path and where each leg's TLS runs.
    let (mut sub, _) = spawn_redis_cli(&tlsdb, &["SUBSCRIBE", "news"]);
    let live = live_session(&a, |s| s["database"] == "tlsdb");
    assert_eq!(live["tls_client"], tls, "{live}");
    assert_eq!(live["tls_upstream"], tls, "{live}");
    assert_eq!(live["path"], path, "{live}");
    let table = a.ok(&["sessions", "ls"]);
    assert!(
        table.contains("TLS CLIENT/UPSTREAM") && table.contains(&format!("{tls}/{tls}")),
        "{table}"
    );
    // A Unix client to a plaintext upstream has no TLS leg at all.
    let (mut pop, _) = spawn_redis_cli(&a.stack.unix("plaindb"), &["BLPOP", "q", "0"]);
    let plain = live_session(&a, |s| s["transport"] == "unix");
    assert_eq!(
        (&plain["tls_client"], &plain["tls_upstream"], &plain["path"]),
        (
            &Value::from("none"),
            &Value::from("none"),
            &Value::from("splice")
        ),
        "{plain}"
    );
    let _ = sub.kill();
    let _ = pop.kill();

    // The audit's session.end names both legs' TLS beside the relay path.
    let end = bastion.expect_log_line(
        mark,
        &[
            "session.end",
            &format!("tls_client=\"{tls}\""),
            &format!("tls_upstream=\"{tls}\""),
            &format!("path_upstream_to_client=\"{path}\""),
        ],
        &[],
    );
    assert!(
        end.contains("db=\"tlsdb\"") || end.contains("db=tlsdb"),
        "{end}"
    );

    // Whichever way it went, the daemon said so once, with its reason.
    let logs = bastion.logs();
    let said: Vec<&str> = logs.lines().filter(|l| l.contains("kTLS: ")).collect();
    assert_eq!(said.len(), 1, "one kTLS line per process, got: {said:#?}");
    if !kernel {
        assert!(
            said[0].contains("unavailable") && said[0].contains("tls"),
            "{}",
            said[0]
        );
    }
}

/// `SET ktls:big <value>` with the value on stdin (`redis-cli -x`: a 256 KiB argv is too long).
fn redis_cli_stdin_set(a: &Admin, value: &str) -> String {
    let out = support::clients::redis_cli_stdin(
        &a.stack.mtls("tlsdb"),
        &["-x", "SET", "ktls:big"],
        value.as_bytes(),
    );
    format!("{}{}", out.stdout(), out.stderr())
}

/// The live session matching `pick` once it is relaying (polled; a hang guard, not a timing).
#[track_caller]
fn live_session(a: &Admin, pick: impl Fn(&Value) -> bool) -> Value {
    poll(LOG_LIMIT.max(Duration::from_secs(5)), || {
        let out = a.ok(&["sessions", "ls", "--json"]);
        let Ok(Value::Array(items)) = serde_json::from_str::<Value>(&out) else {
            return None;
        };
        items.into_iter().find(|s| pick(s) && s["state"] == "relay")
    })
    .unwrap_or_else(|| panic!("no such live session:\n{}", a.ok(&["sessions", "ls"])))
}
