//! Warm upstream connections (issue 13, set-up): for a database in use the bastion keeps
//! `limits.warm_connections` connections dialed ahead, so a new session's first command does
//! not wait for a TCP + TLS dial.
//!
//! Tried as an attacker would: a warm connection must never carry a previous session's state
//! (each serves exactly one session, and has run no command before it), never be one the
//! upstream already closed, never go to an old definition of a re-pointed database, and the
//! bastion must not keep connections to a database nobody uses. Redis' own `CLIENT LIST` /
//! `CLIENT INFO` tell which connection a session got.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use support::admin::Admin;
use support::clients::Endpoint;
use support::process::{poll, rt};
use support::raw::{show, Raw};
use support::redis::{client_id, RedisServer};
use support::stack::{Stack, StackOpts, APP};

/// Wait until `n` dialed-and-unused connections wait on `redis`; their ids.
#[track_caller]
fn warm(redis: &RedisServer, n: usize) -> Vec<String> {
    poll(Duration::from_secs(20), || {
        let unused = redis.unused_connections();
        (unused.len() == n).then(|| unused.iter().map(|l| client_id(l)).collect())
    })
    .unwrap_or_else(|| {
        panic!(
            "not {n} warm connections:\n{}",
            redis.query(&["CLIENT", "LIST"])
        )
    })
}

/// A session's own upstream connection, as Redis sees it (`CLIENT INFO`, after AUTH).
async fn client_info(ep: &Endpoint) -> (Raw, String) {
    let mut c = Raw::connect(ep).await.expect("connect");
    let reply = c
        .request_str(&["CLIENT", "INFO"])
        .await
        .expect("CLIENT INFO");
    let text = String::from_utf8_lossy(&reply).to_string();
    assert!(text.starts_with('$'), "{}", show(&reply));
    (c, text)
}

/// After a first session the database is warm; each later session gets one of the warm
/// connections, each exactly once, and finds it fresh: its first command upstream was the
/// bastion's AUTH, db 0, no name — whatever the session before it did to its own connection
/// (SELECT, CLIENT SETNAME) is not there, because that connection closed with it.
#[test]
fn each_warm_connection_serves_one_session_and_ran_nothing_before_it() {
    let s = Stack::start();
    let rt = rt();
    let ep = s.unix("plaindb");
    rt.block_on(async {
        let mut first = Raw::connect(&ep).await.expect("connect");
        assert_eq!(first.request_str(&["PING"]).await.unwrap(), b"+PONG\r\n");
    });
    let mut seen = HashSet::new();
    for round in 0..4 {
        let ready: HashSet<String> = warm(&s.redis, 2).into_iter().collect();
        let (mut c, info) = rt.block_on(client_info(&ep));
        let id = client_id(&info);
        assert!(
            ready.contains(&id),
            "round {round}: the session did not get a warm connection ({id} not in {ready:?}):\n{info}"
        );
        assert!(
            seen.insert(id.clone()),
            "round {round}: connection {id} served twice"
        );
        for fresh in [" db=0 ", " name= ", " multi=-1 ", " sub=0 ", " psub=0 "] {
            assert!(
                info.contains(fresh),
                "round {round}: not fresh ({fresh}):\n{info}"
            );
        }
        assert!(info.contains(&format!(" user={APP} ")), "{info}");
        // Leave state behind on this connection: the next session must not see it.
        rt.block_on(async {
            for cmd in [&["SELECT", "3"][..], &["CLIENT", "SETNAME", "left-behind"]] {
                assert_eq!(c.request_str(cmd).await.unwrap(), b"+OK\r\n", "{cmd:?}");
            }
        });
        drop(c);
        poll(Duration::from_secs(20), || {
            s.redis.client_line(&id).is_none().then_some(())
        })
        .unwrap_or_else(|| panic!("round {round}: the used connection {id} was kept"));
    }
    let listed = s.redis.query(&["CLIENT", "LIST"]);
    assert!(!listed.contains("left-behind"), "{listed}");
}

/// Warm connections the upstream closed while they waited (a `CLIENT KILL`, Redis' `timeout`)
/// are never handed to a session: the next session works, on a connection that is open.
#[test]
fn a_warm_connection_the_upstream_closed_is_not_handed_out() {
    let rt = rt();
    for db in ["plaindb", "tlsdb"] {
        let s = Stack::start();
        let ep = s.unix(db);
        rt.block_on(async {
            let mut first = Raw::connect(&ep).await.expect("connect");
            assert_eq!(first.request_str(&["PING"]).await.unwrap(), b"+PONG\r\n");
        });
        let killed = warm(&s.redis, 2);
        for id in &killed {
            s.redis.query(&["CLIENT", "KILL", "ID", id]);
        }
        let (_c, info) = rt.block_on(client_info(&ep));
        assert!(!killed.contains(&client_id(&info)), "{db}: {info}");
        assert!(info.contains(&format!(" user={APP} ")), "{db}: {info}");
    }
}

/// A database re-pointed (`db add --replace` with another address) never gets a connection
/// warmed for its old address: the next session goes to the new one, and the old warm
/// connections are closed.
#[test]
fn a_repointed_database_never_gets_a_connection_warmed_for_its_old_address() {
    let a = Admin::start();
    let rt = rt();
    let old_port = a.stack.redis.plain_addr().port();
    let tls = a.stack.redis.tls_addr();
    // Unused connections to one of Redis' ports.
    let on_port = |port: u16| {
        let laddr = format!(" laddr=127.0.0.1:{port} ");
        let unused = a.stack.redis.unused_connections();
        unused.iter().filter(|l| l.contains(&laddr)).count()
    };
    let ep = a.stack.unix("envdb");
    let (c, info) = rt.block_on(client_info(&ep));
    drop(c);
    assert!(
        info.contains(&format!(" laddr=127.0.0.1:{old_port} ")),
        "{info}"
    );
    poll(Duration::from_secs(20), || {
        (on_port(old_port) == 2).then_some(())
    })
    .expect("envdb warm on its first address");

    // Re-pointed to the same server's TLS port.
    let ca = a.stack.redis.ca_pem_path();
    let more = [
        "--replace",
        "--tls-ca-file",
        ca.to_str().unwrap(),
        "--tls-server-name",
        "localhost",
    ];
    a.add_password_db("envdb", &tls.to_string(), &more);
    for round in 0..3 {
        let (c, info) = rt.block_on(client_info(&ep));
        drop(c);
        assert!(
            info.contains(&format!(" laddr=127.0.0.1:{} ", tls.port())),
            "round {round}: a session of the re-pointed database went to the old address:\n{info}"
        );
    }
    poll(Duration::from_secs(20), || {
        (on_port(old_port) == 0).then_some(())
    })
    .expect("the connections warmed for the old address are closed");
}

/// A database no session reached for `warm_idle` keeps no warm connection, and the bastion
/// dials it no more.
#[test]
fn a_database_nobody_uses_keeps_no_warm_connections() {
    let s = Stack::start_with(StackOpts {
        extra_limits: "warm_idle = \"1s\"".into(),
        ..StackOpts::default()
    });
    let rt = rt();
    rt.block_on(async {
        let mut c = Raw::connect(&s.unix("plaindb")).await.expect("connect");
        assert_eq!(c.request_str(&["PING"]).await.unwrap(), b"+PONG\r\n");
    });
    poll(Duration::from_secs(20), || {
        s.redis.unused_connections().is_empty().then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "warm connections outlived warm_idle:\n{}",
            s.redis.query(&["CLIENT", "LIST"])
        )
    });
    let received = || -> u64 {
        let info = s.redis.query(&["INFO", "stats"]);
        info.lines()
            .find_map(|l| l.strip_prefix("total_connections_received:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("total_connections_received")
    };
    let before = received();
    std::thread::sleep(Duration::from_secs(3));
    // One more: the query's own connection.
    assert_eq!(
        received(),
        before + 1,
        "the bastion kept dialing an unused database"
    );
}
