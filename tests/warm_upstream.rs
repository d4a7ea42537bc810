//! Warm upstream connections (issue 13, set-up): for a database and db-user in use the bastion
//! keeps `limits.warm_connections` connections dialed and authenticated ahead, so a new
//! session's first command waits for neither a TCP + TLS dial nor an AUTH.
//!
//! Tried as an attacker would: a warm connection must never carry a previous session's state
//! (with `limits.reuse_connections = 0` each serves exactly one session, and has run nothing
//! but the bastion's AUTH before it; reuse and its cleaning are `tests/reuse_upstream.rs`'s),
//! never be authenticated as another db-user than the session's, never be one the upstream
//! already closed, never go to an old definition of a re-pointed database, and the bastion must
//! not keep connections to a database nobody uses. Redis' own `CLIENT LIST` / `CLIENT INFO`
//! tell which connection a session got.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use support::admin::Admin;
use support::clients::Endpoint;
use support::process::{poll, rt};
use support::raw::{show, Raw};
use support::redis::{client_id, RedisServer};
use support::stack::{Stack, StackOpts, APP};

/// `CLIENT LIST` lines of warm connections: dialed and not used by a session yet — their last
/// command the bastion's AUTH (as `user`), or none at all (auth mode `none`, `user` default).
fn warm_lines(redis: &RedisServer, user: &str) -> Vec<String> {
    let list = redis.query(&["CLIENT", "LIST"]);
    list.lines()
        .filter(|l| l.contains(&format!(" user={user} ")))
        .filter(|l| l.contains(" cmd=auth ") || l.contains(" cmd=NULL "))
        .map(str::to_string)
        .collect()
}

/// Wait until `n` warm connections authenticated as `app` wait on `redis`; their ids.
#[track_caller]
fn warm(redis: &RedisServer, n: usize) -> Vec<String> {
    warm_as(redis, APP, n)
}

#[track_caller]
fn warm_as(redis: &RedisServer, user: &str, n: usize) -> Vec<String> {
    poll(Duration::from_secs(20), || {
        let ready = warm_lines(redis, user);
        (ready.len() == n).then(|| ready.iter().map(|l| client_id(l)).collect())
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

/// With reuse off: after a first session the database is warm; each later session gets one of
/// the warm connections, each exactly once, and finds it fresh: authenticated as its db-user
/// by the bastion and nothing else, db 0, no name — whatever the session before it did to its
/// own connection (SELECT, CLIENT SETNAME) is not there, because that connection closed with it.
#[test]
fn each_warm_connection_serves_one_session_and_ran_nothing_before_it() {
    let s = Stack::start_with(StackOpts {
        extra_limits: "reuse_connections = 0".into(),
        ..StackOpts::default()
    });
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
        // Reuse off: the first session's connection would make a third one ready.
        let s = Stack::start_with(StackOpts {
            extra_limits: "reuse_connections = 0".into(),
            ..StackOpts::default()
        });
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
    // Reuse off: the warm connections counted are those dialed ahead.
    let a = Admin::start_with(StackOpts {
        extra_limits: "reuse_connections = 0".into(),
        ..StackOpts::default()
    });
    let rt = rt();
    let old_port = a.stack.redis.plain_addr().port();
    let tls = a.stack.redis.tls_addr();
    // Unused connections to one of Redis' ports.
    let on_port = |port: u16| {
        let laddr = format!(" laddr=127.0.0.1:{port} ");
        let ready = warm_lines(&a.stack.redis, APP);
        ready.iter().filter(|l| l.contains(&laddr)).count()
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
    // The metrics page (here through `bastion status`) counts them.
    let status = a.ok(&["status"]);
    assert!(
        status.contains("bastion_upstream_warm_connections 2"),
        "{status}"
    );

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
        warm_lines(&s.redis, APP).is_empty().then_some(())
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

/// Connections are authenticated ahead per db-user: a session granted `other` never gets one
/// authenticated as `app` (it would run as `app` without any AUTH of its own), and the other
/// way round; a HELLO opening on a connection authenticated ahead goes without its AUTH part
/// and still gets Redis' own reply (RESP3, the name set).
#[test]
fn a_connection_authenticated_ahead_serves_only_its_own_db_user() {
    // Reuse off: these counts are of connections dialed ahead (`tests/reuse_upstream.rs` keeps
    // reused ones to their db-user).
    let s = Stack::start_with(StackOpts {
        db_users: vec![APP.into(), OTHER.into()],
        extra_upstream_users: vec![OTHER.into()],
        extra_limits: "reuse_connections = 0".into(),
        ..StackOpts::default()
    });
    let rt = rt();
    let ep = s.unix("plaindb");
    let whoami = |opening: Vec<&str>| {
        rt.block_on(async {
            let mut c = Raw::connect(&ep).await.expect("connect");
            let reply = c.request_str(&opening).await.expect("opening");
            assert!(
                reply.starts_with(b"+OK") || reply.starts_with(b"%"),
                "{}",
                show(&reply)
            );
            let who = c.request_str(&["ACL", "WHOAMI"]).await.expect("WHOAMI");
            let info = c.request_str(&["CLIENT", "INFO"]).await.expect("INFO");
            (
                String::from_utf8_lossy(&who).to_string(),
                String::from_utf8_lossy(&reply).to_string(),
                String::from_utf8_lossy(&info).to_string(),
            )
        })
    };
    let (who, _, _) = whoami(vec!["AUTH", APP, "x"]);
    assert!(who.contains(APP), "{who}");
    let apps = warm_as(&s.redis, APP, 2);
    for round in 0..2 {
        let (who, _, info) = whoami(vec!["AUTH", OTHER, "x"]);
        assert!(who.contains(OTHER), "round {round}: {who}");
        assert!(
            !apps.contains(&client_id(&info)),
            "round {round}: got app's connection: {info}"
        );
        warm_as(&s.redis, OTHER, 2);
    }
    let ready = warm_as(&s.redis, APP, 2);
    let (who, hello, info) = whoami(vec![
        "HELLO",
        "3",
        "AUTH",
        APP,
        "x",
        "SETNAME",
        "warm-hello",
    ]);
    assert!(who.contains(APP), "{who}");
    assert!(
        ready.contains(&client_id(&info)),
        "not a warm connection: {info}"
    );
    assert!(hello.contains("proto") && hello.contains(":3"), "{hello}");
    assert!(
        info.contains(" name=warm-hello ") && info.contains(" resp=3"),
        "{info}"
    );
    s.assert_no_secrets_in_logs();
}

/// The second db-user of the test above.
const OTHER: &str = "other";
