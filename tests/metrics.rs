//! The `[metrics]` endpoint, scraped with real HTTP GETs while real sessions run through the
//! daemon: the counters move with sessions, refusals and bytes; `bastion status` shows the same
//! page; a non-loopback address is refused unless `allow_remote` says so; the page names no
//! database, user or client.

mod support;

use std::time::Duration;

use support::admin::Admin;
use support::bastion::{Bastion, BASTION_BIN};
use support::clients::redis_cli;
use support::process::{poll, rt, run};
use support::raw::Raw;
use support::scrape::{http_tcp, http_unix, metrics_addr, scrape, total, value};
use support::stack::{current_user, StackOpts};

const METRICS: &str = "\n[metrics]\naddress = \"127.0.0.1:0\"\n";

#[test]
fn counters_move_with_sessions_refusals_and_bytes() {
    let admin = Admin::start_with(StackOpts {
        extra_toml: METRICS.into(),
        // The counts below are each session's own dial and AUTH.
        extra_limits: "warm_connections = 0".into(),
        ..StackOpts::default()
    });
    let s = &admin.stack;
    let addr = metrics_addr(&s.bastion);
    let before = scrape(addr);
    assert_eq!(
        value(&before, "bastion_sessions_started_total"),
        0.0,
        "{before}"
    );
    assert_eq!(value(&before, "bastion_sessions_open"), 0.0);

    // Two live sessions (one per transport) hold the open gauge at 2.
    let rt = rt();
    let (unix, tls) = rt.block_on(async {
        let mut u = Raw::connect(&s.unix("plaindb")).await.expect("unix");
        assert_eq!(u.request_str(&["PING"]).await.unwrap(), b"+PONG\r\n");
        let mut t = Raw::connect(&s.mtls("tlsdb")).await.expect("mtls");
        assert_eq!(t.request_str(&["PING"]).await.unwrap(), b"+PONG\r\n");
        (u, t)
    });
    let live = scrape(addr);
    assert_eq!(value(&live, "bastion_sessions_open"), 2.0, "{live}");
    assert_eq!(value(&live, "bastion_sessions_started_total"), 2.0);
    assert_eq!(value(&live, "bastion_handshakes_in_flight"), 0.0);
    assert_eq!(value(&live, "bastion_upstream_connect_seconds_count"), 2.0);
    assert_eq!(value(&live, "bastion_upstream_auth_seconds_count"), 2.0);

    // Refusals, by kind: an unknown database (roles), a wrong upstream password, a dead upstream.
    let out = redis_cli(&s.mtls("nosuchdb"), &["PING"]);
    assert!(out.stdout().contains("unknown database"), "{out}");
    let out = redis_cli(&s.unix("badpwdb"), &["PING"]);
    assert!(out.stdout().contains("rejected"), "{out}");
    let out = redis_cli(&s.unix("downdb"), &["PING"]);
    assert!(out.stdout().contains("unreachable"), "{out}");

    drop((unix, tls));
    // The ends are counted as the sessions notice them.
    let ended = poll(Duration::from_secs(10), || {
        let page = scrape(addr);
        (value(&page, "bastion_sessions_open") == 0.0).then_some(page)
    })
    .expect("sessions_open back to 0 after both clients closed");
    let refused = |kind: &str| {
        value(
            &ended,
            &format!("bastion_sessions_refused_total{{reason=\"{kind}\"}}"),
        )
    };
    assert_eq!(refused("denied"), 1.0, "{ended}");
    assert_eq!(refused("upstream_auth"), 1.0, "{ended}");
    assert_eq!(refused("upstream"), 1.0, "{ended}");
    // PING and PONG both ways, the AUTH reply included, per direction.
    let up = "bastion_relay_bytes_total{direction=\"client_to_upstream\",path=\"copy\"}";
    assert!(value(&ended, up) >= 2.0 * 14.0, "{ended}");
    assert!(
        total(&ended, "bastion_relay_bytes_total") >= 2.0 * (14.0 + 7.0),
        "{ended}"
    );
    // The store's figures, from the admin side.
    assert_eq!(
        value(&ended, "bastion_store_records{kind=\"users\"}"),
        1.0,
        "{ended}"
    );
    assert!(value(&ended, "bastion_store_seq") >= 1.0, "{ended}");

    // Nothing on the page names a database, user, db-user or client.
    for name in [
        "plaindb",
        "tlsdb",
        "nosuchdb",
        "alice",
        "\"app\"",
        "127.0.0.1",
    ] {
        assert!(!ended.contains(name), "the page names {name}:\n{ended}");
    }

    // `bastion status` shows the same numbers (the same page, through the admin socket).
    let status = admin.ok(&["status"]);
    assert!(
        status.contains("bastion_sessions_started_total 2"),
        "{status}"
    );
    assert!(
        status.contains("bastion_sessions_refused_total{reason=\"denied\"} 1"),
        "{status}"
    );
    assert!(!status.contains("_bucket"), "{status}");

    // Only GET /metrics.
    assert_eq!(http_tcp(addr, "GET", "/").unwrap().status, 404);
    assert_eq!(http_tcp(addr, "POST", "/metrics").unwrap().status, 405);
}

/// A config with one database and a Unix listener, plus `metrics`.
fn minimal(state: &std::path::Path, metrics: &str) -> String {
    format!(
        "state_dir = {state:?}\n[listeners.unix]\ndirectory = {sockets:?}\n\n\
         [[databases]]\nname = \"db\"\naddress = \"127.0.0.1:1\"\nauth = {{ mode = \"none\" }}\n\n\
         [[roles]]\nname = \"all\"\ndb_users = [\"*\"]\ndb_names = [\"*\"]\n\n\
         [[users]]\nname = \"alice\"\nroles = [\"all\"]\nunix_user = {me:?}\n\n[metrics]\n{metrics}\n",
        state = state.display().to_string(),
        sockets = state.join("db").display().to_string(),
        me = current_user(),
    )
}

#[test]
fn a_non_loopback_address_needs_allow_remote() {
    let state = tempfile::tempdir().unwrap();
    let config = state.path().join("bastion.toml");
    std::fs::write(&config, minimal(state.path(), "address = \"0.0.0.0:0\"")).unwrap();
    let out = run(
        std::process::Command::new(BASTION_BIN)
            .args(["serve", "--config"])
            .arg(&config)
            .env("AWS_EC2_METADATA_DISABLED", "true"),
        None,
        Duration::from_secs(30),
    );
    assert!(
        !out.status.success(),
        "started with a world-readable metrics page:\n{out}"
    );
    assert!(out.all().contains("metrics.address"), "{out}");
    assert!(out.all().contains("allow_remote"), "{out}");

    // Meant: it serves on every address.
    let text = minimal(state.path(), "address = \"0.0.0.0:0\"\nallow_remote = true");
    let b = Bastion::start(&text, state.path());
    let port = metrics_addr(&b).port();
    let page = scrape(([127, 0, 0, 1], port).into());
    assert!(page.contains("bastion_sessions_open 0"), "{page}");
}

#[test]
fn a_unix_socket_endpoint_has_its_mode_and_serves_the_page() {
    use std::os::unix::fs::PermissionsExt;
    let state = tempfile::tempdir().unwrap();
    let sock = state.path().join("metrics.sock");
    let text = minimal(
        state.path(),
        &format!("socket = {:?}", sock.display().to_string()),
    );
    let _b = Bastion::start(&text, state.path());
    let mode = std::fs::metadata(&sock)
        .expect("metrics socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let a = http_unix(&sock, "GET", "/metrics").expect("GET over the socket");
    assert_eq!(a.status, 200, "{a:?}");
    assert!(
        a.body.contains("# TYPE bastion_sessions_started counter"),
        "{}",
        a.body
    );
}
