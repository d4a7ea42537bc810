//! Inspect mode (issue 12, `relay = "inspect"`) against a real `redis-server` through the real
//! daemon: replies are byte-identical to a direct connection's (pipelines, MULTI/EXEC, pub/sub,
//! BLPOP, large values, RESP3 client-tracking pushes), every command is counted and audited as
//! `db.command` with its secrets masked, the audit is sampled and rate-limited, and
//! `sessions ls` shows the mode and command counts.

mod support;

use std::time::Duration;

use support::admin::Admin;
use support::clients::{python, redis_benchmark};
use support::raw::{command, command_str, show, Raw};
use support::stack::{Stack, StackOpts, Via, APP};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn stack(extra_limits: &str) -> Stack {
    admin(extra_limits).stack
}

fn admin(extra_limits: &str) -> Admin {
    Admin::start_with(StackOpts {
        inspect_db: true,
        extra_limits: extra_limits.to_string(),
        ..StackOpts::default()
    })
}

/// A direct connection to Redis, authenticated as `app` (what the bastion does).
async fn direct(s: &Stack) -> Raw {
    let mut c = Raw::connect_tcp_only(s.redis.plain_addr())
        .await
        .expect("direct");
    let ok = c
        .request_str(&["AUTH", "app", &s.upstream_password])
        .await
        .expect("auth");
    assert_eq!(ok, b"+OK\r\n");
    c
}

/// Forget the keys the workload uses (on a connection of its own, not compared).
async fn reset(s: &Stack) {
    let mut d = direct(s).await;
    d.request_str(&["DEL", "i:s", "i:l", "i:h", "i:n", "i:big", "i:empty"])
        .await
        .expect("DEL");
}

/// Send `requests` in one write and read `n` frames: the bytes as received.
async fn exchange(c: &mut Raw, requests: &[u8], n: usize) -> Vec<u8> {
    c.send(requests).await.expect("send");
    let frames = tokio::time::timeout(Duration::from_secs(30), c.read_frames(n))
        .await
        .expect("replies in time")
        .expect("replies");
    frames.concat()
}

/// One pipelined burst touching most reply types: errors, MULTI/EXEC, scripts, a value larger
/// than any read, BLPOP served at once and timing out, container commands.
fn workload() -> (Vec<u8>, usize) {
    let big = vec![b'v'; 300_000];
    let mut cmds: Vec<Vec<u8>> = vec![
        command_str(&["SET", "i:s", "hello"]),
        command_str(&["GET", "i:s"]),
        command_str(&["INCR", "i:n"]),
        command_str(&["INCR", "i:s"]),
        command_str(&["LPUSH", "i:l", "a", "b", "c"]),
        command_str(&["LRANGE", "i:l", "0", "-1"]),
        command_str(&["HSET", "i:h", "f", "1", "g", "2"]),
        command_str(&["HGETALL", "i:h"]),
        command(&[b"SET", b"i:big", &big]),
        command_str(&["GET", "i:big"]),
        command_str(&["STRLEN", "i:big"]),
        command_str(&["NOSUCHCOMMAND", "x"]),
        command_str(&["MULTI"]),
        command_str(&["SET", "i:s", "x"]),
        command_str(&["INCR", "i:n"]),
        command_str(&["LPOP", "i:s"]),
        command_str(&["EXEC"]),
        command_str(&["EVAL", "return {KEYS[1], ARGV[1]}", "1", "i:s", "arg"]),
        command_str(&["OBJECT", "ENCODING", "i:l"]),
        command_str(&["CONFIG", "GET", "maxmemory"]),
        command_str(&["BLPOP", "i:l", "1"]),
        command_str(&["BLPOP", "i:empty", "0.2"]),
        b"PING inline\r\n".to_vec(),
        command_str(&["ECHO", "done"]),
    ];
    let n = cmds.len();
    (std::mem::take(&mut cmds).concat(), n)
}

#[test]
fn replies_are_byte_identical_to_a_direct_connection() {
    let s = stack("");
    let (requests, n) = workload();
    rt().block_on(async {
        reset(&s).await;
        let mut d = direct(&s).await;
        let want = exchange(&mut d, &requests, n).await;
        assert!(want.len() > 300_000, "{}", show(&want));
        for (via, db) in [
            (Via::Unix, "inspdb"),
            (Via::Mtls, "inspdb"),
            (Via::Unix, "insptlsdb"),
        ] {
            reset(&s).await;
            let mut c = Raw::connect(&s.endpoint(via, db)).await.expect("connect");
            let got = exchange(&mut c, &requests, n).await;
            assert!(
                got == want,
                "{via:?} {db}: {} vs {}",
                show(&got),
                show(&want)
            );
            // Split into single bytes, too: the framers do not depend on how reads fall.
            let mut c = Raw::connect(&s.endpoint(via, db)).await.expect("connect");
            let small = command_str(&["GET", "i:s"]);
            for b in &small {
                c.send(std::slice::from_ref(b)).await.unwrap();
            }
            let got = c.read_frame().await.unwrap();
            assert_eq!(got, b"$1\r\nx\r\n");
        }
    });
    let summary = s.bastion.expect_log_line(
        0,
        &[
            "db.command.summary",
            &format!("commands={n}"),
            "paired=true",
        ],
        &[],
    );
    // INCR of a string and the unknown command; the WRONGTYPE inside EXEC's array is not
    // a top-level error.
    assert!(summary.contains("errors=2"), "{summary}");
    s.bastion.expect_log_line(
        0,
        &[
            "db.command",
            "command=\"object|encoding\"",
            "first_key=\"i:l\"",
        ],
        &[],
    );
    s.bastion.expect_log_line(
        0,
        &[
            "db.command",
            "command=\"eval\"",
            "keys=1",
            "first_key=\"i:s\"",
        ],
        &[],
    );
    s.bastion.expect_log_line(
        0,
        &[
            "db.command",
            "command=\"?\"",
            "reply=\"error\"",
            "error=\"ERR\"",
        ],
        &[],
    );
    s.bastion.expect_log_line(
        0,
        &[
            "db.command",
            "command=\"lpush\"",
            "keys=1",
            "first_key=\"i:l\"",
        ],
        &[],
    );
    let big = s.bastion.expect_log_line(
        0,
        &["db.command", "command=\"set\"", "first_key=\"i:big\""],
        &[],
    );
    assert!(big.contains("bytes_request=300035"), "{big}");
    s.bastion.expect_log_line(
        0,
        &["db.command", "command=\"exec\"", "reply=\"array\""],
        &[],
    );
    s.assert_no_secrets_in_logs();
}

#[test]
fn pubsub_and_resp3_tracking_pushes_pass_and_pair() {
    let s = stack("");
    rt().block_on(async {
        let run = |mut c: Raw, mut other: Raw| async move {
            let mut out = Vec::new();
            other.request_str(&["DEL", "i:t"]).await.unwrap();
            // RESP2 pub/sub: confirmations, a message, unsubscribe, PING while subscribed.
            out.push(exchange(&mut c, &command_str(&["SUBSCRIBE", "i:ch1", "i:ch2"]), 2).await);
            other
                .request_str(&["PUBLISH", "i:ch1", "m1"])
                .await
                .unwrap();
            out.push(c.read_frame().await.unwrap());
            out.push(exchange(&mut c, &command_str(&["PING"]), 1).await);
            out.push(exchange(&mut c, &command_str(&["UNSUBSCRIBE"]), 2).await);
            out.push(exchange(&mut c, &command_str(&["PING"]), 1).await);
            // RESP3 with client tracking: an invalidation push before the PONG.
            let hello = exchange(&mut c, &command_str(&["HELLO", "3"]), 1).await;
            assert!(hello.starts_with(b"%"), "{}", show(&hello));
            out.push(exchange(&mut c, &command_str(&["CLIENT", "TRACKING", "on"]), 1).await);
            out.push(exchange(&mut c, &command_str(&["GET", "i:t"]), 1).await);
            other.request_str(&["SET", "i:t", "1"]).await.unwrap();
            out.push(exchange(&mut c, &command_str(&["PING"]), 2).await);
            out.push(exchange(&mut c, &command_str(&["SUBSCRIBE", "i:ch3"]), 1).await);
            other
                .request_str(&["PUBLISH", "i:ch3", "m3"])
                .await
                .unwrap();
            out.push(c.read_frame().await.unwrap());
            out.push(exchange(&mut c, &command_str(&["GET", "i:t"]), 1).await);
            out
        };
        let want = run(direct(&s).await, direct(&s).await).await;
        assert!(
            want[7].starts_with(b">2\r\n$10\r\ninvalidate"),
            "{}",
            show(&want[7])
        );
        for via in [Via::Unix, Via::Mtls] {
            let c = Raw::connect(&s.endpoint(via, "inspdb")).await.unwrap();
            let got = run(c, direct(&s).await).await;
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(show(g), show(w), "{via:?} step {i}");
            }
        }
    });
    // The invalidation and the messages answer no command; the rest pair up.
    let summary = s
        .bastion
        .expect_log_line(0, &["db.command.summary", "paired=true"], &[]);
    assert!(summary.contains("pushes=3"), "{summary}");
}

#[test]
fn pipelines_benchmark_and_redis_py_work_and_the_audit_is_bounded() {
    // 1 % sampled, at most 20 events a second daemon-wide.
    let s = stack("command_audit_sample = 0.01\ncommand_audit_rate = 20");
    let ep = s.unix("inspdb");
    let mark = s.bastion.log_mark();
    let out = redis_benchmark(
        &ep,
        &["-q", "-n", "20000", "-c", "4", "-P", "16", "-t", "set,get"],
    );
    out.assert_success();
    let text = out.stdout();
    assert!(text.contains("SET") && text.contains("GET"), "{text}");
    let script = r#"
import redis
r = connect()
p = r.pipeline(transaction=False)
for i in range(500):
    p.set(f"i:p{i}", i)
    p.get(f"i:p{i}")
res = p.execute()
assert res[1] == b"0" and res[-1] == b"499", res[-4:]
t = r.pipeline(transaction=True)
t.incr("i:tx").incr("i:tx").get("i:tx")
print(t.execute())
"#;
    let py = python(&ep, script);
    py.assert_success();
    assert!(py.stdout().contains("[1, 2, b'2']"), "{}", py.all());
    std::thread::sleep(Duration::from_millis(300));
    let logs = s.bastion.logs_since(mark);
    let total: u64 = logs
        .lines()
        .filter(|l| l.contains("db.command.summary"))
        .filter_map(|l| support::bastion::field(l, "commands"))
        .filter_map(|v| v.parse::<u64>().ok())
        .sum();
    assert!(total >= 40_000, "summaries count {total} commands\n{logs}");
    // 1 % of ~42 000 is ~420, cut to ~20 a second.
    let per_command = logs
        .lines()
        .filter(|l| l.contains("db.command") && !l.contains("db.command.summary"))
        .count();
    assert!(
        per_command > 0 && per_command < 200,
        "{per_command} db.command lines"
    );
    assert!(
        logs.lines()
            .any(|l| l.contains("db.command.summary") && !l.contains("unlogged=0")),
        "the rate limit dropped none:\n{logs}"
    );
}

#[test]
fn secrets_in_commands_never_reach_a_log_line() {
    let s = stack("");
    let secrets = [
        "auth-secret-5e1f0a",
        "hello-secret-77c2b1",
        "acl-secret-90d3e4",
        "requirepass-secret-1b2c",
        "migrate-secret-4d5e6f",
        "migrate2-secret-a0b1",
        "migrate-key-secret-c3d4",
        "name-secret-e5f6",
    ];
    rt().block_on(async {
        for via in [Via::Unix, Via::Mtls] {
            let mut c = Raw::connect(&s.endpoint(via, "inspdb")).await.unwrap();
            let requests = [
                command_str(&["AUTH", "app", secrets[0]]),
                command_str(&["AUTH", secrets[0]]),
                format!("AUTH default {}\r\n", secrets[0]).into_bytes(),
                command_str(&["HELLO", "2", "AUTH", "app", secrets[1]]),
                command_str(&[
                    "ACL",
                    "SETUSER",
                    "i-user",
                    "on",
                    &format!(">{}", secrets[2]),
                ]),
                command_str(&["CONFIG", "SET", "requirepass", secrets[3]]),
                command_str(&[
                    "MIGRATE",
                    "127.0.0.1",
                    "1",
                    "",
                    "0",
                    "100",
                    "AUTH",
                    secrets[4],
                    "KEYS",
                    "i:k",
                ]),
                command_str(&[
                    "MIGRATE",
                    "127.0.0.1",
                    "1",
                    "i:k",
                    "0",
                    "100",
                    "AUTH2",
                    "u",
                    secrets[5],
                ]),
                // A secret where MIGRATE's key goes, and one typed as a command name.
                command_str(&["MIGRATE", "127.0.0.1", "1", secrets[6], "0", "100"]),
                command_str(&[secrets[7], "x"]),
                command_str(&["CONFIG", "SET", "requirepass", ""]),
                command_str(&["ACL", "DELUSER", "i-user"]),
                command_str(&["PING"]),
            ];
            let got = exchange(&mut c, &requests.concat(), requests.len()).await;
            assert!(got.ends_with(b"+PONG\r\n"), "{}", show(&got));
        }
    });
    s.bastion.expect_log_line(
        0,
        &["db.command", "command=\"config|set\"", "first_key=\"-\""],
        &[],
    );
    s.bastion.expect_log_line(
        0,
        &["db.command", "command=\"acl|setuser\"", "first_key=\"-\""],
        &[],
    );
    s.bastion.expect_log_line(
        0,
        &["db.command", "command=\"migrate\"", "first_key=\"-\""],
        &[],
    );
    s.bastion
        .expect_log_line(0, &["db.command", "command=\"auth\""], &[]);
    s.bastion.assert_no_secrets(&secrets);
    s.assert_no_secrets_in_logs();
}

#[test]
fn sessions_ls_shows_the_relay_mode_and_commands() {
    let a = admin("");
    let s = &a.stack;
    rt().block_on(async {
        let mut c = Raw::connect(&s.unix("inspdb")).await.unwrap();
        let requests = [
            command_str(&["PING"]),
            command_str(&["PING"]),
            command_str(&["PING"]),
        ];
        exchange(&mut c, &requests.concat(), 3).await;
        let mut g = Raw::connect(&s.unix("plaindb")).await.unwrap();
        g.request_str(&["PING"]).await.unwrap();
        let out = a.ok(&["sessions", "ls", "--json"]);
        let rows: serde_json::Value = serde_json::from_str(&out).expect("json");
        let rows = rows.as_array().expect("rows");
        let insp = rows
            .iter()
            .find(|r| r["database"] == "inspdb")
            .expect("inspdb row");
        assert_eq!(insp["relay"], "inspect");
        assert_eq!(insp["path"], "copy", "{insp}");
        // The opening PING went through the handshake; the other two were relayed.
        assert!(insp["commands"].as_u64().unwrap() >= 2, "{insp}");
        assert!(insp["last_command"].is_string(), "{insp}");
        let guard = rows
            .iter()
            .find(|r| r["database"] == "plaindb")
            .expect("plaindb row");
        assert_eq!(guard["relay"], "guard");
        assert!(guard["commands"].is_null(), "{guard}");
        drop(c);
        drop(g);
    });
}

/// `limits.reauth_interval` (1 s here): the upstream connection is authenticated again at quiet
/// points only — never inside MULTI/EXEC, never while BLPOP waits, fine while RESP3 pushes flow
/// — and the client never sees the reply.
#[test]
fn the_upstream_is_authenticated_again_at_quiet_points_only() {
    let a = admin("reauth_interval = \"1s\"");
    let s = &a.stack;
    let wait = Duration::from_millis(2500);
    rt().block_on(async {
        let mut c = Raw::connect(&s.unix("inspdb")).await.unwrap();
        assert_eq!(c.request_str(&["PING"]).await.unwrap(), b"+PONG\r\n");
        let out = a.ok(&["sessions", "ls", "--json"]);
        let rows: serde_json::Value = serde_json::from_str(&out).expect("json");
        assert!(rows[0]["next_reauth"].is_string(), "{out}");
        tokio::time::sleep(wait).await;
        assert_eq!(c.request_str(&["ECHO", "a"]).await.unwrap(), b"$1\r\na\r\n");
        // A transaction open across due times: EXEC answers with its own replies only.
        let multi = [command_str(&["MULTI"]), command_str(&["SET", "i:m", "1"])].concat();
        assert_eq!(exchange(&mut c, &multi, 2).await, b"+OK\r\n+QUEUED\r\n");
        tokio::time::sleep(wait).await;
        assert_eq!(
            exchange(&mut c, &command_str(&["EXEC"]), 1).await,
            b"*1\r\n+OK\r\n"
        );
        // A blocking command waiting across due times.
        let blpop = exchange(&mut c, &command_str(&["BLPOP", "i:q-empty", "2.5"]), 1).await;
        assert_eq!(blpop, b"*-1\r\n");
        assert_eq!(c.request_str(&["PING"]).await.unwrap(), b"+PONG\r\n");
        // RESP3 with pub/sub pushes flowing while re-AUTHs happen.
        let hello = exchange(&mut c, &command_str(&["HELLO", "3"]), 1).await;
        assert!(hello.starts_with(b"%"), "{}", show(&hello));
        let sub = exchange(&mut c, &command_str(&["SUBSCRIBE", "i:rch"]), 1).await;
        assert!(sub.starts_with(b">3\r\n"), "{}", show(&sub));
        let mut other = direct(s).await;
        for i in 0..10 {
            let m = format!("m{i}");
            other.request_str(&["PUBLISH", "i:rch", &m]).await.unwrap();
            let got = c.read_frame().await.unwrap();
            let want = format!(">3\r\n$7\r\nmessage\r\n$5\r\ni:rch\r\n$2\r\n{m}\r\n");
            assert_eq!(show(&got), show(want.as_bytes()));
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        assert_eq!(c.request_str(&["PING"]).await.unwrap(), b"+PONG\r\n");
    });
    let logs = s.bastion.logs();
    let ok = logs
        .lines()
        .filter(|l| l.contains("session.reauth") && l.contains("result=\"ok\""))
        .count();
    assert!(ok >= 4, "{ok} re-AUTHs:\n{logs}");
    s.bastion
        .expect_log_line(0, &["db.command.summary", "paired=true"], &[]);
    s.assert_no_secrets_in_logs();
}

/// A re-AUTH the upstream refuses (the db-user's password changed under the session) ends the
/// session, with an audit event.
#[test]
fn a_refused_reauth_ends_the_session_with_an_audit_event() {
    let s = stack("reauth_interval = \"1s\"");
    rt().block_on(async {
        let mut c = Raw::connect(&s.unix("inspdb")).await.unwrap();
        assert_eq!(c.request_str(&["PING"]).await.unwrap(), b"+PONG\r\n");
        let mut d = direct(&s).await;
        let r = d
            .request_str(&["ACL", "SETUSER", "app", "resetpass", ">i-other-pw-9f8e"])
            .await
            .unwrap();
        assert_eq!(r, b"+OK\r\n");
        let rest = c.read_until_closed(Duration::from_secs(10)).await;
        let rest = rest.expect("the session is closed");
        assert!(
            rest.is_empty(),
            "the refusal is not the client's: {}",
            show(&rest)
        );
    });
    s.bastion.expect_log_line(
        0,
        &["session.reauth", "result=\"failed\"", "WRONGPASS"],
        &[],
    );
    s.bastion
        .expect_log_line(0, &["session.end", "closed_by="], &[]);
    s.assert_no_secrets_in_logs();
}

/// What the matcher cannot pair (MONITOR's stream, CLIENT REPLY OFF) still flows byte for byte;
/// the session's summary says pairing was given up.
#[test]
fn monitor_and_client_reply_off_pass_unpaired() {
    let s = stack("");
    rt().block_on(async {
        let mut c = Raw::connect(&s.unix("inspdb")).await.unwrap();
        let off = [
            command_str(&["CLIENT", "REPLY", "OFF"]),
            command_str(&["SET", "i:r", "1"]),
            command_str(&["CLIENT", "REPLY", "ON"]),
            command_str(&["GET", "i:r"]),
        ]
        .concat();
        assert_eq!(exchange(&mut c, &off, 2).await, b"+OK\r\n$1\r\n1\r\n");
        let mut m = Raw::connect(&s.unix("inspdb")).await.unwrap();
        assert_eq!(m.request_str(&["MONITOR"]).await.unwrap(), b"+OK\r\n");
        let mut d = direct(&s).await;
        d.request_str(&["SET", "i:mon", "seen"]).await.unwrap();
        // The direct connection's AUTH first, then the SET.
        let mut lines = Vec::new();
        while !lines
            .iter()
            .any(|l: &Vec<u8>| l.windows(6).any(|w| w == b"\"i:mon"))
        {
            assert!(lines.len() < 5, "{lines:?}");
            let line = m.read_frame().await.unwrap();
            assert!(line.starts_with(b"+"), "{}", show(&line));
            lines.push(line);
        }
    });
    s.bastion
        .expect_log_line(0, &["db.command.summary", "paired=false"], &[]);
}

/// A role's command policy (`role add --commands`), tried as a user who holds only `+@read`:
/// in inspect mode a write, `FLUSHALL` and a command decided by its subcommand are answered
/// `-NOPERM bastion: …` by the bastion and never reach Redis (inside MULTI, the transaction
/// aborts as Redis' own ACL makes it); on a database whose relay cannot enforce the policy
/// (guard, passthrough) the session is refused instead of relaying what the policy forbids.
#[test]
fn a_command_policy_is_enforced_in_inspect_mode_and_refused_elsewhere() {
    let a = admin("");
    let s = &a.stack;
    // The stack's role `apps` (db-user `app` on every database), now with a command policy.
    a.replace_role("apps", APP, "*", Some("+@read +ping +multi +exec"), None);
    rt().block_on(async {
        reset(s).await;
        let mut d = direct(s).await;
        d.request_str(&["SET", "i:s", "before"]).await.unwrap();

        let mut c = Raw::connect(&s.unix("inspdb")).await.unwrap();
        let got = c.request_str(&["GET", "i:s"]).await.unwrap();
        assert_eq!(got, b"$6\r\nbefore\r\n");
        for (args, why) in [
            (&["SET", "i:s", "after"][..], "'set'"),
            (&["FLUSHALL"][..], "'flushall'"),
            (&["CONFIG", "SET", "maxmemory", "1"][..], "'config|set'"),
        ] {
            let got = c.request_str(args).await.unwrap();
            let text = String::from_utf8_lossy(&got);
            assert!(
                text.starts_with("-NOPERM bastion: ") && text.contains(why),
                "{args:?}: {text}"
            );
        }
        // Pipelined around a denial: order kept, the allowed ones run.
        let burst = [
            command_str(&["PING"]),
            command_str(&["DEL", "i:s"]),
            command_str(&["GET", "i:s"]),
        ]
        .concat();
        let replies = exchange(&mut c, &burst, 3).await;
        let text = String::from_utf8_lossy(&replies);
        assert!(text.starts_with("+PONG\r\n-NOPERM bastion: "), "{text}");
        assert!(text.ends_with("$6\r\nbefore\r\n"), "{text}");
        // Inside MULTI a denial aborts the transaction, as Redis' ACL does.
        let tx = [
            command_str(&["MULTI"]),
            command_str(&["SET", "i:s", "in-multi"]),
            command_str(&["EXEC"]),
        ]
        .concat();
        let replies = exchange(&mut c, &tx, 3).await;
        let text = String::from_utf8_lossy(&replies);
        assert!(text.starts_with("+OK\r\n-NOPERM bastion: "), "{text}");
        assert!(text.contains("-EXECABORT"), "{text}");
        // Redis never saw any of it.
        let got = d.request_str(&["GET", "i:s"]).await.unwrap();
        assert_eq!(got, b"$6\r\nbefore\r\n");
        let got = d.request_str(&["DBSIZE"]).await.unwrap();
        assert_ne!(got, b":0\r\n", "FLUSHALL reached Redis");

        // The same user on a guard database: refused, naming why, before anything upstream.
        let mut g = Raw::connect(&s.unix("plaindb")).await.unwrap();
        let got = g.request_str(&["SET", "i:s", "via-guard"]).await.unwrap();
        let text = String::from_utf8_lossy(&got);
        assert!(
            text.starts_with("-ERR bastion: ") && text.contains("relay = \"inspect\""),
            "{text}"
        );
        let got = d.request_str(&["GET", "i:s"]).await.unwrap();
        assert_eq!(got, b"$6\r\nbefore\r\n");
    });
    // Denials are audited; no value the client sent is in the log.
    let logs = s.bastion.logs();
    assert!(!logs.contains("in-multi") && !logs.contains("via-guard"));
}

/// The `db.command` audit counts keys as Redis' `COMMAND GETKEYS` does, keys found by keyword
/// (`XREAD … STREAMS`, `GEORADIUS … STORE`) and by `numkeys` (`ZUNION`) included, and names
/// the first; MIGRATE's keys after `KEYS` are counted, its arguments still never logged.
#[test]
fn keys_found_by_keyword_or_numkeys_are_counted_in_the_audit() {
    let s = stack("");
    rt().block_on(async {
        let mut c = Raw::connect(&s.unix("inspdb")).await.unwrap();
        let requests = [
            command_str(&[
                "XREAD", "COUNT", "1", "STREAMS", "i:x1", "i:x2", "i:x3", "0", "0", "0",
            ]),
            command_str(&["GEORADIUS", "i:geo", "0", "0", "1", "km", "STORE", "i:dst"]),
            command_str(&["ZUNION", "2", "i:za", "i:zb", "WEIGHTS", "1", "2"]),
            command_str(&[
                "MIGRATE",
                "127.0.0.1",
                "1",
                "",
                "0",
                "100",
                "KEYS",
                "i:m1",
                "i:m2",
                "i:m3",
                "i:m4",
            ]),
            command_str(&["PING"]),
        ];
        let got = exchange(&mut c, &requests.concat(), requests.len()).await;
        assert!(got.ends_with(b"+PONG\r\n"), "{}", show(&got));
    });
    for (command, keys, first) in [
        ("xread", 3, "\"i:x1\""),
        ("georadius", 2, "\"i:geo\""),
        ("zunion", 2, "\"i:za\""),
        ("migrate", 4, "\"-\""),
    ] {
        s.bastion.expect_log_line(
            0,
            &[
                "db.command",
                &format!("command=\"{command}\""),
                &format!("keys={keys} "),
                &format!("first_key={first}"),
            ],
            &[],
        );
    }
}

/// A RESP2 subscriber whose role denies `PING` (a command Redis allows in subscribe mode)
/// sends it again and again while a publisher's numbered messages flow: every message arrives
/// exactly once and in order, and each PING gets exactly one `-NOPERM bastion: …` line, a
/// frame of its own — the shape a real Redis ACL user denied `PING` gets — never cut out of
/// (or in place of) a message. The same for a RESP3 subscriber, whose messages are pushes.
#[test]
fn a_denied_command_of_a_subscriber_never_cuts_a_message() {
    const MESSAGES: usize = 400;
    const PINGS: usize = 80;
    let a = admin("");
    let s = &a.stack;
    a.replace_role("apps", APP, "*", Some("+@all -ping"), None);
    /// What a frame is: a message (its payload), a NOPERM line, or anything else.
    fn classify(frames: &[Vec<u8>]) -> (Vec<String>, usize, Vec<String>) {
        let (mut messages, mut noperms, mut other) = (Vec::new(), 0, Vec::new());
        for f in frames {
            let text = String::from_utf8_lossy(f).into_owned();
            let rest = text
                .strip_prefix("*3\r\n$7\r\nmessage\r\n$4\r\ni:dc\r\n")
                .or_else(|| text.strip_prefix(">3\r\n$7\r\nmessage\r\n$4\r\ni:dc\r\n"));
            if let Some(rest) = rest {
                messages.push(rest.to_string());
            } else if text.starts_with("-NOPERM ")
                && text.ends_with("\r\n")
                && text.lines().count() == 1
            {
                noperms += 1;
            } else {
                other.push(text);
            }
        }
        (messages, noperms, other)
    }
    rt().block_on(async {
        let run = |mut c: Raw, mut publisher: Raw, resp3: bool| async move {
            if resp3 {
                let hello = exchange(&mut c, &command_str(&["HELLO", "3"]), 1).await;
                assert!(hello.starts_with(b"%"), "{}", show(&hello));
            }
            let got = exchange(&mut c, &command_str(&["SUBSCRIBE", "i:dc"]), 1).await;
            assert!(
                got[1..].starts_with(b"3\r\n$9\r\nsubscribe\r\n"),
                "{}",
                show(&got)
            );
            let publish = async {
                for k in 0..MESSAGES {
                    let n = format!("{k:06}");
                    let got = publisher
                        .request_str(&["PUBLISH", "i:dc", &n])
                        .await
                        .unwrap();
                    assert_eq!(got, b":1\r\n");
                    if k % 8 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            };
            let ping = async {
                for _ in 0..PINGS {
                    c.send(&command_str(&["PING"])).await.unwrap();
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            };
            tokio::join!(publish, ping);
            c.send(&command_str(&["UNSUBSCRIBE", "i:dc"]))
                .await
                .unwrap();
            let mut frames = Vec::new();
            loop {
                let f = tokio::time::timeout(Duration::from_secs(30), c.read_frame())
                    .await
                    .expect("frames in time")
                    .expect("frame");
                if f[1..].starts_with(b"3\r\n$11\r\nunsubscribe\r\n") {
                    break;
                }
                frames.push(f);
            }
            frames
        };
        // Redis' own answer: an ACL user denied PING gets one NOPERM line per PING.
        let mut d = direct(s).await;
        let got = d
            .request_str(&[
                "ACL",
                "SETUSER",
                "i:noping",
                "reset",
                "on",
                ">i-noping-pw",
                "~*",
                "&*",
                "+@all",
                "-ping",
            ])
            .await
            .unwrap();
        assert_eq!(got, b"+OK\r\n");
        let want: Vec<String> = (0..MESSAGES).map(|k| format!("$6\r\n{k:06}\r\n")).collect();
        for resp3 in [false, true] {
            let mut own = Raw::connect_tcp_only(s.redis.plain_addr()).await.unwrap();
            let ok = own
                .request_str(&["AUTH", "i:noping", "i-noping-pw"])
                .await
                .unwrap();
            assert_eq!(ok, b"+OK\r\n");
            let (messages, noperms, other) = classify(&run(own, direct(s).await, resp3).await);
            assert!(other.is_empty(), "direct, resp3={resp3}: {other:?}");
            assert_eq!((messages == want, noperms), (true, PINGS), "direct");

            for via in [Via::Unix, Via::Mtls] {
                let c = Raw::connect(&s.endpoint(via, "inspdb")).await.unwrap();
                let frames = run(c, direct(s).await, resp3).await;
                let (messages, noperms, other) = classify(&frames);
                let at = format!("{via:?}, resp3={resp3}");
                assert!(other.is_empty(), "{at}: unexpected frames {other:?}");
                let missing: Vec<_> = want.iter().filter(|m| !messages.contains(m)).collect();
                assert!(missing.is_empty(), "{at}: messages lost: {missing:?}");
                assert_eq!(messages, want, "{at}: messages out of order or repeated");
                assert_eq!(noperms, PINGS, "{at}: one NOPERM per denied PING");
                for f in frames.iter().filter(|f| f.starts_with(b"-")) {
                    assert!(f.starts_with(b"-NOPERM bastion: "), "{at}: {}", show(f));
                }
            }
        }
    });
}
