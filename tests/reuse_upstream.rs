//! Upstream connections reused across sessions (issue 13, connection churn): a Unix client
//! that closes its socket between two commands, in guard mode, to a plaintext upstream, leaves
//! its upstream connection to the warm pool, which sends `RESET` and a random-nonce `ECHO`,
//! reads everything up to their replies, logs in afresh and only then hands it to the next
//! session of the same database and db-user.
//!
//! Tried as an attacker would: whatever a session leaves on its connection (a selected db, a
//! name, an open MULTI, subscriptions, RESP3, unread replies) must not reach the next session;
//! a session that leaves in the middle of a command — so that the bastion's own bytes would
//! complete it — or with a command still blocked must never have its connection reused; a
//! client that only half-closes still gets every reply. Redis' own `CLIENT INFO` / `CLIENT
//! LIST` tell which connection a session got (its `id`).

mod support;

use std::time::Duration;

use support::clients::Endpoint;
use support::process::{poll, rt};
use support::raw::{show, Raw};
use support::redis::{client_id, RedisServer};
use support::stack::{Stack, StackOpts, APP};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A session's `CLIENT INFO` (its upstream connection as Redis sees it).
async fn client_info(c: &mut Raw) -> String {
    let reply = c
        .request_str(&["CLIENT", "INFO"])
        .await
        .expect("CLIENT INFO");
    assert!(reply.starts_with(b"$"), "{}", show(&reply));
    String::from_utf8_lossy(&reply).to_string()
}

/// A new session and its upstream connection's id.
async fn session(ep: &Endpoint) -> (Raw, String, String) {
    let mut c = Raw::connect(ep).await.expect("connect");
    let info = client_info(&mut c).await;
    (c, client_id(&info), info)
}

/// New sessions, one after another, each leaving `leave` on its connection (sent, and with
/// `read` replies read unless it is `None`: then gone without reading them) before it closes,
/// until one is on a connection a session before it used: that session and its `CLIENT INFO`.
/// Panics if 40 sessions never got a used connection (nothing was reused).
async fn until_reused(ep: &Endpoint, leave: &[Vec<u8>], read: Option<usize>) -> (Raw, String) {
    let mut used = std::collections::HashSet::new();
    for _ in 0..40 {
        let (mut c, id, info) = session(ep).await;
        if used.contains(&id) {
            return (c, info);
        }
        for bytes in leave {
            c.send(bytes).await.unwrap();
        }
        if let Some(n) = read {
            let replies = c.read_frames(n).await.unwrap();
            for reply in replies {
                assert!(!reply.starts_with(b"-"), "{}", show(&reply));
            }
        }
        used.insert(id);
        drop(c);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("40 sessions, no connection reused")
}

/// A session that sends `bytes`, waits for the guard to have read them, and closes: the id
/// of the upstream connection it was on.
async fn leave_after(ep: &Endpoint, bytes: &[u8]) -> String {
    let (mut a, id, _) = session(ep).await;
    a.send(bytes).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(a);
    id
}

/// Connection `id` is closed within 30 s (the cleaning gives up after `handshake_timeout`).
#[track_caller]
fn closed(redis: &RedisServer, id: &str, why: &str) {
    poll(Duration::from_secs(30), || {
        redis.client_line(id).is_none().then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "{why}: connection {id} was kept:\n{}",
            redis.query(&["CLIENT", "LIST"])
        )
    });
}

/// The state a session leaves on its connection (a selected db, a name, an open MULTI with a
/// queued SET, then subscriptions; or RESP3) is gone when the connection serves the next
/// session — which proves it was reused (same `id`), fresh: db 0, no name, no transaction, no
/// subscription, RESP2, logged in as the db-user; the queued SET never ran, and a message
/// published to the old channel reaches nobody.
#[test]
fn a_reused_connection_carries_nothing_of_the_session_before() {
    let s = Stack::start_with(StackOpts {
        open_db: true,
        ..StackOpts::default()
    });
    let rt = rt();
    let cmd = |args: &[&str]| support::raw::command_str(args);
    // What each session leaves behind, and how many replies it reads first.
    let leavings = [
        (
            vec![
                cmd(&["SELECT", "3"]),
                cmd(&["CLIENT", "SETNAME", "left-behind"]),
                cmd(&["MULTI"]),
                cmd(&["SET", "queued-in-multi", "1"]),
            ],
            4,
        ),
        (vec![cmd(&["SUBSCRIBE", "left-channel"])], 1),
        (vec![cmd(&["HELLO", "3"])], 1),
    ];
    for (db, user) in [("plaindb", APP), ("opendb", "default")] {
        let ep = s.unix(db);
        for (leave, read) in &leavings {
            let what = show(&leave.concat());
            rt.block_on(async {
                let (mut b, info) = until_reused(&ep, leave, Some(*read)).await;
                for fresh in [
                    " db=0 ",
                    " name= ",
                    " multi=-1 ",
                    " sub=0 ",
                    " psub=0 ",
                    " resp=2",
                    " flags=N ",
                ] {
                    assert!(
                        info.contains(fresh),
                        "{db} after {what}: not fresh ({fresh}):\n{info}"
                    );
                }
                assert!(info.contains(&format!(" user={user} ")), "{db}: {info}");
                assert_eq!(b.request_str(&["PING"]).await.unwrap(), b"+PONG\r\n");
            });
            assert_eq!(
                s.redis.query(&["EXISTS", "queued-in-multi"]),
                "0",
                "the queued SET ran"
            );
            assert_eq!(
                s.redis.query(&["PUBLISH", "left-channel", "hello"]),
                "0",
                "{db}: a subscriber is left"
            );
        }
    }
    let listed = s.redis.query(&["CLIENT", "LIST"]);
    assert!(!listed.contains("left-behind"), "{listed}");
}

/// A session that leaves in the middle of a command must not have its connection cleaned: the
/// bastion's `RESET` and `ECHO` would be the rest of that command. Here the value's length is
/// exactly theirs (RESP), or the line is left open (inline): reused, the key would hold the
/// bastion's bytes (and the AUTH that follows, its secret). The connection is closed instead,
/// nothing is set, and no later session gets it.
#[test]
fn a_session_that_leaves_mid_command_never_passes_its_connection_on() {
    let s = Stack::start();
    let rt = rt();
    let ep = s.unix("plaindb");
    // `*1 $5 RESET` (15 bytes) and `*1 $46 bastion-clean-<32 hex>` (57 bytes): a value of
    // all but their last CRLF, which then ends it.
    let cleaning_len = 15 + 57 - 2;
    let partials = [
        format!("*3\r\n$3\r\nSET\r\n$4\r\nleak\r\n${cleaning_len}\r\n").into_bytes(),
        b"SET leak ".to_vec(),
    ];
    for partial in partials {
        let id = rt.block_on(leave_after(&ep, &partial));
        closed(&s.redis, &id, "left mid-command");
        assert_eq!(
            s.redis.query(&["EXISTS", "leak"]),
            "0",
            "{}",
            show(&partial)
        );
        rt.block_on(async {
            for _ in 0..5 {
                let (_c, got, _) = session(&ep).await;
                assert_ne!(got, id);
            }
        });
    }
}

/// A session that leaves with a command still blocked (`BLPOP` with no timeout) cannot be
/// cleaned (Redis runs nothing behind it): its connection is closed, which also ends the
/// BLPOP — a value pushed afterwards stays in the list, taken by nobody.
#[test]
fn a_session_that_leaves_a_blocked_command_has_its_connection_closed() {
    let s = Stack::start_with(StackOpts {
        handshake_timeout: "2s".into(),
        ..StackOpts::default()
    });
    let rt = rt();
    let ep = s.unix("plaindb");
    let command = support::raw::command_str(&["BLPOP", "blocked-queue", "0"]);
    let id = rt.block_on(leave_after(&ep, &command));
    closed(&s.redis, &id, "left blocked");
    assert_eq!(s.redis.query(&["LPUSH", "blocked-queue", "x"]), "1");
    assert_eq!(s.redis.query(&["LLEN", "blocked-queue"]), "1");
}

/// A session that leaves `CLIENT REPLY SKIP` behind would have Redis swallow the `+RESET`
/// reply (RESET clears SKIP for the command after it, not for itself): without that line the
/// cleaning cannot prove the stream's end, so the connection is closed, never reused.
#[test]
fn a_session_that_leaves_reply_skip_has_its_connection_closed() {
    let s = Stack::start();
    let rt = rt();
    let ep = s.unix("plaindb");
    let command = support::raw::command_str(&["CLIENT", "REPLY", "SKIP"]);
    let id = rt.block_on(leave_after(&ep, &command));
    closed(&s.redis, &id, "left CLIENT REPLY SKIP");
    rt.block_on(async {
        for _ in 0..5 {
            let (mut c, got, _) = session(&ep).await;
            assert_ne!(got, id);
            assert_eq!(c.request_str(&["PING"]).await.unwrap(), b"+PONG\r\n");
        }
    });
}

/// Replies a session never read (3 MB of pipelined GETs, then gone) are read past, never
/// delivered: the session that gets the connection next sees only its own replies.
#[test]
fn replies_a_session_did_not_read_never_reach_the_next() {
    let s = Stack::start();
    let rt = rt();
    let ep = s.unix("plaindb");
    let gets = support::raw::command_str(&["GET", "big"]).repeat(3);
    rt.block_on(async {
        let (mut a, _, _) = session(&ep).await;
        let value = "v".repeat(1 << 20);
        assert_eq!(
            a.request_str(&["SET", "big", &value]).await.unwrap(),
            b"+OK\r\n"
        );
        drop(a);
        let (mut b, _) = until_reused(&ep, &[gets], None).await;
        assert_eq!(b.request_str(&["PING"]).await.unwrap(), b"+PONG\r\n");
        assert_eq!(
            b.request_str(&["ECHO", "mine"]).await.unwrap(),
            b"$4\r\nmine\r\n"
        );
    });
}

/// A client that only half-closes (has sent its last command, still reads) gets every reply:
/// its EOF goes upstream as before, and the connection is not kept.
#[test]
fn a_half_closed_client_still_gets_every_reply() {
    let s = Stack::start();
    let rt = rt();
    let Endpoint::Unix { path } = s.unix("plaindb") else {
        unreachable!("a Unix endpoint")
    };
    rt.block_on(async {
        let mut c = tokio::net::UnixStream::connect(&path).await.unwrap();
        let mut sent = Vec::new();
        for i in 0..50 {
            sent.extend(support::raw::command_str(&["ECHO", &format!("reply-{i}")]));
        }
        c.write_all(&sent).await.unwrap();
        c.shutdown().await.unwrap();
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(30), c.read_to_end(&mut got))
            .await
            .expect("EOF in time")
            .unwrap();
        let mut want = Vec::new();
        for i in 0..50 {
            let r = format!("reply-{i}");
            want.extend(format!("${}\r\n{r}\r\n", r.len()).into_bytes());
        }
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&want)
        );
    });
}

/// A used connection goes back only to sessions granted the same db-user: sessions as `app`
/// and as another db-user, alternating and each gone between two commands, never get each
/// other's connections (while each db-user's are reused), and each is who it was granted.
#[test]
fn a_used_connection_serves_only_its_own_db_user() {
    const OTHER: &str = "reporting";
    let s = Stack::start_with(StackOpts {
        db_users: vec![APP.into(), OTHER.into()],
        extra_upstream_users: vec![OTHER.into()],
        ..StackOpts::default()
    });
    let rt = rt();
    let ep = s.unix("plaindb");
    let mut ids = [
        std::collections::HashMap::<String, usize>::new(),
        std::collections::HashMap::new(),
    ];
    rt.block_on(async {
        for round in 0..30 {
            for (i, user) in [APP, OTHER].into_iter().enumerate() {
                let mut c = Raw::connect(&ep).await.expect("connect");
                let opened = c.request_str(&["AUTH", user, "x"]).await.unwrap();
                assert_eq!(opened, b"+OK\r\n", "{user}: {}", show(&opened));
                let who = c.request_str(&["ACL", "WHOAMI"]).await.unwrap();
                assert_eq!(
                    who,
                    format!("${}\r\n{user}\r\n", user.len()).into_bytes(),
                    "round {round}: {}",
                    show(&who)
                );
                let id = client_id(&client_info(&mut c).await);
                *ids[i].entry(id).or_default() += 1;
                drop(c);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    });
    let [app, other] = &ids;
    assert!(
        app.keys().all(|id| !other.contains_key(id)),
        "shared: {app:?} {other:?}"
    );
    for (user, seen) in [(APP, app), (OTHER, other)] {
        assert!(
            seen.values().any(|&n| n > 1),
            "{user}: nothing reused: {seen:?}"
        );
    }
}
