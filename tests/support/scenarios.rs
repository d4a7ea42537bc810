//! Behaviours every client path must show, written and listed once ([`scenario_tests!`]) and run
//! by `e2e_mtls` and `e2e_unix` for each upstream kind — and, for those that do not depend on the
//! bastion's identity mapping, straight against Redis by the fixtures' self-tests (which proves
//! the test itself before the daemon exists).
//!
//! Each scenario ends by checking that no secret reached the bastion's logs.

use std::io::{BufRead, BufReader};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use super::bastion::Bastion;
use super::clients::{
    python, redis_benchmark, redis_cli, redis_cli_stdin, spawn_redis_cli, Endpoint,
};
use super::process::{poll, rt, wait_with_limit};
use super::raw::{command_str, show, Raw};
use super::redis::{RedisOpts, RedisServer};
use super::stack::{Stack, Via, APP, CLIENT_PASSWORD};

/// One `#[test]` per scenario, so a scenario added to the list below runs everywhere it should:
///
/// - `scenario_tests!(bastion Mtls)` (`e2e_mtls`) and `scenario_tests!(bastion Unix)`
///   (`e2e_unix`), a [`Via`]: every scenario through a fresh [`Stack`], in modules
///   `tls_upstream` (database `tlsdb`) and `plain_upstream` (`plaindb`);
/// - `scenario_tests!(direct)` (the fixtures' self-tests in `e2e_mtls`): the scenarios that do
///   not depend on the bastion's identity mapping, straight against a bare Redis over TLS and
///   over its Unix socket, in modules `fixture_direct_tls` and `fixture_direct_unix`.
///
/// The caller's crate root has `mod support;`.
// Most binaries that include the fixtures run no scenario.
#[allow(unused_macros)]
macro_rules! scenario_tests {
    (@expand [bastion $via:ident] [$($mapped:ident),*] [$($any:ident),*]) => {
        mod tls_upstream {
            $(#[test] fn $mapped() { $crate::support::scenarios::through_bastion($crate::support::stack::Via::$via, "tlsdb", $crate::support::scenarios::$mapped); })*
            $(#[test] fn $any() { $crate::support::scenarios::through_bastion($crate::support::stack::Via::$via, "tlsdb", $crate::support::scenarios::$any); })*
        }
        mod plain_upstream {
            $(#[test] fn $mapped() { $crate::support::scenarios::through_bastion($crate::support::stack::Via::$via, "plaindb", $crate::support::scenarios::$mapped); })*
            $(#[test] fn $any() { $crate::support::scenarios::through_bastion($crate::support::stack::Via::$via, "plaindb", $crate::support::scenarios::$any); })*
        }
    };
    (@expand [direct] [$($mapped:ident),*] [$($any:ident),*]) => {
        mod fixture_direct_tls {
            $(#[test] fn $any() { $crate::support::scenarios::direct_tls($crate::support::scenarios::$any); })*
        }
        mod fixture_direct_unix {
            $(#[test] fn $any() { $crate::support::scenarios::direct_unix($crate::support::scenarios::$any); })*
        }
    };
    ($($how:tt)+) => {
        $crate::support::scenarios::scenario_tests!(@expand [$($how)+]
            // Through the bastion only: they check the identity it maps the client to.
            [auth_then_commands, late_auth_is_answered, upstream_identity, hello3_auth_setname]
            // Any path to Redis.
            [
                ping_set_get,
                hello3,
                pipelined_in_one_write,
                benchmark_pipelined,
                multi_exec,
                subscribe_publish,
                blpop_unblocked,
                big_values,
                redis_py
            ]
        );
    };
}
#[allow(unused_imports)]
pub(crate) use scenario_tests;

/// Run `scenario` through a fresh stack over `via`, to database `db`.
#[track_caller]
pub fn through_bastion(via: Via, db: &str, scenario: fn(&Target)) {
    let s = Stack::start();
    scenario(&s.target(via, db));
}

/// Run `scenario` straight against a bare Redis' TLS port, sending an SNI that its certificate
/// does not name (Redis ignores it), as the bastion tests do with database names.
#[track_caller]
pub fn direct_tls(scenario: fn(&Target)) {
    let redis = RedisServer::start(RedisOpts::open());
    let ep = Endpoint::Tls {
        addr: redis.tls_addr(),
        sni: Some("somedb".into()),
        ca: redis.ca_pem_path(),
        identity: None,
    };
    scenario(&Target::direct(ep, &redis));
}

/// Run `scenario` straight against a bare Redis' Unix socket.
#[track_caller]
pub fn direct_unix(scenario: fn(&Target)) {
    let redis = RedisServer::start(RedisOpts::open());
    scenario(&Target::direct(Endpoint::unix(redis.unix_path()), &redis));
}

/// Hang guard for a waited-for event (a message, an unblocked BLPOP).
const EVENT_LIMIT: Duration = Duration::from_secs(30);
/// 10 MiB.
pub const BIG: usize = 10 * 1024 * 1024;

/// Where a scenario runs.
pub struct Target<'a> {
    pub ep: Endpoint,
    /// The upstream, to check what arrived there.
    pub redis: &'a RedisServer,
    /// Through the bastion (identity-mapping checks apply), or `None` straight to Redis.
    pub bastion: Option<&'a Bastion>,
    /// Strings that must not appear in the bastion's logs.
    pub secrets: Vec<String>,
}

impl<'a> Target<'a> {
    /// Straight to `redis` (no bastion, no secrets to look for).
    pub fn direct(ep: Endpoint, redis: &'a RedisServer) -> Target<'a> {
        Target {
            ep,
            redis,
            bastion: None,
            secrets: vec![],
        }
    }

    fn via_bastion(&self) -> bool {
        self.bastion.is_some()
    }

    /// `AUTH app <client password>` through the bastion (the password is ignored there);
    /// nothing when talking to Redis directly (its `default` user is open in self-tests).
    fn auth_prefix(&self) -> Vec<u8> {
        if self.via_bastion() {
            command_str(&["AUTH", APP, CLIENT_PASSWORD])
        } else {
            Vec::new()
        }
    }

    #[track_caller]
    fn finish(&self) {
        if let Some(b) = self.bastion {
            let secrets: Vec<&str> = self.secrets.iter().map(String::as_str).collect();
            b.assert_no_secrets(&secrets);
        }
    }
}

#[track_caller]
fn assert_frame(got: &[u8], want: &[u8], what: &str) {
    assert!(got == want, "{what}: got {} want {}", show(got), show(want));
}

/// PING, SET, GET with redis-cli; the value arrives upstream.
#[track_caller]
pub fn ping_set_get(t: &Target) {
    let ping = redis_cli(&t.ep, &["PING"]);
    assert_eq!(ping.stdout().trim(), "PONG", "{ping}");
    let set = redis_cli(&t.ep, &["SET", "greeting", "hello"]);
    assert_eq!(set.stdout().trim(), "OK", "{set}");
    let get = redis_cli(&t.ep, &["GET", "greeting"]);
    assert_eq!(get.stdout().trim(), "hello", "{get}");
    assert_eq!(t.redis.query(&["GET", "greeting"]), "hello");
    t.finish();
}

/// `AUTH app <anything>` then commands on the same connection: AUTH succeeds whatever the
/// password, the session is upstream user `app`.
#[track_caller]
pub fn auth_then_commands(t: &Target) {
    // `--user/--pass` make redis-cli open with `AUTH app <password>`, before anything else.
    let input = "SET k v\nGET k\nACL WHOAMI\n";
    let out = redis_cli_stdin(
        &t.ep,
        &[
            "--no-auth-warning",
            "--user",
            APP,
            "--pass",
            CLIENT_PASSWORD,
        ],
        input.as_bytes(),
    );
    assert_eq!(out.lines(), ["OK", "v", APP], "{out}");
    t.finish();
}

/// An AUTH later in the stream (as typed into an interactive redis-cli, which opens with
/// `COMMAND DOCS`) naming the session's own db-user is answered by the command guard: the
/// bastion authenticates as that db-user again with its own secret, the client gets that
/// `+OK` (its made-up password never goes upstream), and the session stays the db-user.
#[track_caller]
pub fn late_auth_is_answered(t: &Target) {
    rt().block_on(async {
        let mut c = Raw::connect(&t.ep).await.expect("connect");
        let r = c.request_str(&["PING"]).await.expect("PING");
        assert_frame(&r, b"+PONG\r\n", "opening PING");
        let r = c
            .request_str(&["AUTH", APP, CLIENT_PASSWORD])
            .await
            .expect("late AUTH");
        assert_frame(&r, b"+OK\r\n", "late AUTH as the own db-user");
        let r = c.request_str(&["ACL", "WHOAMI"]).await.expect("WHOAMI");
        assert_frame(&r, b"$3\r\napp\r\n", "ACL WHOAMI after a late AUTH");
    });
    t.finish();
}

/// `ACL WHOAMI` without AUTH: the bastion chose the only allowed db-user, `app`.
#[track_caller]
pub fn upstream_identity(t: &Target) {
    let out = redis_cli(&t.ep, &["ACL", "WHOAMI"]);
    assert_eq!(out.stdout().trim(), APP, "{out}");
    rt().block_on(async {
        let mut c = Raw::connect(&t.ep).await.expect("connect");
        let r = c
            .request_str(&["AUTH", APP, CLIENT_PASSWORD])
            .await
            .expect("AUTH");
        assert_frame(&r, b"+OK\r\n", "AUTH app <client password>");
        let r = c.request_str(&["ACL", "WHOAMI"]).await.expect("WHOAMI");
        assert_frame(&r, b"$3\r\napp\r\n", "ACL WHOAMI after AUTH");
    });
    t.finish();
}

/// `HELLO 3` as the first command: the reply is the server's own RESP3 map (`%7`: server,
/// version, proto, id, mode, role, modules), and the connection then speaks RESP3.
#[track_caller]
pub fn hello3(t: &Target) {
    rt().block_on(async {
        let mut c = Raw::connect(&t.ep).await.expect("connect");
        let r = c.request_str(&["HELLO", "3"]).await.expect("HELLO 3");
        assert!(
            r.starts_with(b"%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n"),
            "HELLO 3: {}",
            show(&r)
        );
        assert!(
            contains(&r, b"$5\r\nproto\r\n:3\r\n"),
            "HELLO 3: {}",
            show(&r)
        );
        let r = c.request_str(&["GET", "nokey"]).await.expect("GET");
        assert_frame(&r, b"_\r\n", "RESP3 null after HELLO 3");
    });
    t.finish();
}

/// `HELLO 3 AUTH app <anything> SETNAME n`: RESP3 map, the name is set upstream, user `app`.
#[track_caller]
pub fn hello3_auth_setname(t: &Target) {
    rt().block_on(async {
        let mut c = Raw::connect(&t.ep).await.expect("connect");
        let r = c
            .request_str(&[
                "HELLO",
                "3",
                "AUTH",
                APP,
                CLIENT_PASSWORD,
                "SETNAME",
                "e2e-name",
            ])
            .await
            .expect("HELLO 3 AUTH SETNAME");
        assert!(r.starts_with(b"%7\r\n"), "HELLO 3 AUTH: {}", show(&r));
        assert!(
            contains(&r, b"$5\r\nproto\r\n:3\r\n"),
            "HELLO 3 AUTH: {}",
            show(&r)
        );
        let r = c
            .request_str(&["CLIENT", "GETNAME"])
            .await
            .expect("GETNAME");
        assert_frame(&r, b"$8\r\ne2e-name\r\n", "CLIENT GETNAME");
        let r = c.request_str(&["ACL", "WHOAMI"]).await.expect("WHOAMI");
        assert_frame(&r, b"$3\r\napp\r\n", "ACL WHOAMI");
        let clients = t.redis.query(&["CLIENT", "LIST"]);
        assert!(
            clients
                .lines()
                .any(|l| l.contains(" name=e2e-name ") && l.contains(" user=app ")),
            "no upstream client named e2e-name as app:\n{clients}"
        );
    });
    t.finish();
}

/// AUTH (through the bastion) + 100 SETs + GET written in ONE write: every reply, in order.
#[track_caller]
pub fn pipelined_in_one_write(t: &Target) {
    rt().block_on(async {
        let mut c = Raw::connect(&t.ep).await.expect("connect");
        let mut batch = t.auth_prefix();
        let with_auth = !batch.is_empty();
        for i in 0..100 {
            batch.extend(command_str(&["SET", &format!("p{i}"), &format!("v{i}")]));
        }
        batch.extend(command_str(&["GET", "p99"]));
        c.send(&batch).await.expect("write the batch");
        let n = 101 + usize::from(with_auth);
        let frames = c.read_frames(n).await.expect("replies");
        for (i, f) in frames[..n - 1].iter().enumerate() {
            assert_frame(f, b"+OK\r\n", &format!("reply #{i}"));
        }
        assert_frame(&frames[n - 1], b"$3\r\nv99\r\n", "GET p99");
    });
    assert_eq!(t.redis.query(&["GET", "p0"]), "v0");
    t.finish();
}

/// `redis-benchmark -P 16 -t set,get -n 20000 -q` completes without errors.
#[track_caller]
pub fn benchmark_pipelined(t: &Target) {
    let out = redis_benchmark(&t.ep, &["-P", "16", "-t", "set,get", "-n", "20000", "-q"]);
    out.assert_success();
    let text = out.all();
    assert!(text.contains("SET:") && text.contains("GET:"), "{out}");
    assert!(!text.to_lowercase().contains("error"), "{out}");
    t.finish();
}

/// MULTI as the first command, queued commands, EXEC — written in one go.
#[track_caller]
pub fn multi_exec(t: &Target) {
    rt().block_on(async {
        let mut c = Raw::connect(&t.ep).await.expect("connect");
        let mut batch = command_str(&["MULTI"]);
        batch.extend(command_str(&["SET", "tx", "1"]));
        batch.extend(command_str(&["INCR", "tx"]));
        batch.extend(command_str(&["EXEC"]));
        c.send(&batch).await.expect("write");
        let f = c.read_frames(4).await.expect("replies");
        assert_frame(&f[0], b"+OK\r\n", "MULTI");
        assert_frame(&f[1], b"+QUEUED\r\n", "SET queued");
        assert_frame(&f[2], b"+QUEUED\r\n", "INCR queued");
        assert_frame(&f[3], b"*2\r\n+OK\r\n:2\r\n", "EXEC");
    });
    assert_eq!(t.redis.query(&["GET", "tx"]), "2");
    t.finish();
}

/// SUBSCRIBE in one redis-cli, PUBLISH from another: the message arrives.
#[track_caller]
pub fn subscribe_publish(t: &Target) {
    let (mut child, what) = spawn_redis_cli(&t.ep, &["SUBSCRIBE", "news"]);
    let lines = line_channel(child.stdout.take().expect("stdout"));
    let got = collect_until(&lines, |seen| {
        seen.ends_with(&["subscribe".into(), "news".into(), "1".into()])
    });
    let subscribed = got.is_ok();
    let mut seen = got.unwrap_or_else(|s| s);
    let mut published = String::new();
    if subscribed {
        let out = redis_cli(&t.ep, &["PUBLISH", "news", "hello-e2e"]);
        published = out.to_string();
        assert_eq!(
            out.stdout().trim(),
            "1",
            "PUBLISH reached no subscriber: {out}"
        );
        match collect_until(&lines, |s| {
            s.ends_with(&["message".into(), "news".into(), "hello-e2e".into()])
        }) {
            Ok(more) | Err(more) => seen.extend(more),
        }
    }
    let _ = child.kill();
    let rest = wait_with_limit(child, what, None, EVENT_LIMIT);
    assert!(
        subscribed,
        "no subscribe confirmation; saw {seen:?}\n{rest}"
    );
    assert!(
        seen.ends_with(&["message".into(), "news".into(), "hello-e2e".into()]),
        "message not received; saw {seen:?}\n{published}\n{rest}"
    );
    t.finish();
}

/// BLPOP blocks (seen upstream as `cmd=blpop`), an RPUSH from another client unblocks it.
#[track_caller]
pub fn blpop_unblocked(t: &Target) {
    let (mut child, what) = spawn_redis_cli(&t.ep, &["BLPOP", "jobs", "0"]);
    let blocked = poll(EVENT_LIMIT, || {
        if !matches!(child.try_wait(), Ok(None)) {
            return Some(false); // redis-cli gave up: its output says why
        }
        t.redis
            .query(&["CLIENT", "LIST"])
            .contains("cmd=blpop")
            .then_some(true)
    });
    let push = redis_cli(&t.ep, &["RPUSH", "jobs", "job-1"]);
    let out = wait_with_limit(child, what, None, EVENT_LIMIT);
    assert_eq!(blocked, Some(true), "BLPOP never blocked upstream\n{out}");
    assert_eq!(push.stdout().trim(), "1", "{push}");
    out.assert_success();
    assert_eq!(out.lines(), ["jobs", "job-1"], "{out}");
    t.finish();
}

/// A 10 MiB value: SET as the very first command (no AUTH), GET it back intact; then the
/// same after AUTH (through the bastion), and with redis-cli `-x`.
#[track_caller]
pub fn big_values(t: &Target) {
    let first = pattern(BIG, 1);
    let second = pattern(BIG, 2);
    rt().block_on(async {
        let mut c = Raw::connect(&t.ep).await.expect("connect");
        let r = c
            .request(&[b"SET", b"big1", &first])
            .await
            .expect("SET big1");
        assert_frame(&r, b"+OK\r\n", "SET big1 as the first command");
        let r = c.request(&[b"GET", b"big1"]).await.expect("GET big1");
        assert!(
            r == bulk(&first),
            "GET big1: {} bytes, not the value set",
            r.len()
        );

        let mut c = Raw::connect(&t.ep).await.expect("connect");
        let auth = t.auth_prefix();
        if !auth.is_empty() {
            c.send(&auth).await.expect("AUTH");
            let r = c.read_frame().await.expect("AUTH reply");
            assert_frame(&r, b"+OK\r\n", "AUTH");
        }
        let r = c
            .request(&[b"SET", b"big2", &second])
            .await
            .expect("SET big2");
        assert_frame(&r, b"+OK\r\n", "SET big2 after AUTH");
        let r = c.request(&[b"GET", b"big2"]).await.expect("GET big2");
        assert!(
            r == bulk(&second),
            "GET big2: {} bytes, not the value set",
            r.len()
        );
    });
    assert_eq!(t.redis.query(&["STRLEN", "big1"]), BIG.to_string());

    let third = pattern(BIG, 3);
    let set = redis_cli_stdin(&t.ep, &["-x", "SET", "big3"], &third);
    assert_eq!(set.stdout().trim(), "OK", "{set}");
    let get = redis_cli(&t.ep, &["GET", "big3"]);
    assert!(
        get.stdout.strip_suffix(b"\n") == Some(&third[..]),
        "redis-cli GET big3: {} bytes back",
        get.stdout.len()
    );
    t.finish();
}

/// redis-py: PING/SET/GET, AUTH with username/password, RESP3 (`protocol=3`, HELLO map,
/// client name), a MULTI/EXEC pipeline, pub/sub, and a 10 MiB value.
#[track_caller]
pub fn redis_py(t: &Target) {
    let (auth, whoami) = if t.via_bastion() {
        (
            format!("dict(username={APP:?}, password={CLIENT_PASSWORD:?})"),
            APP,
        )
    } else {
        ("dict()".to_string(), "default")
    };
    let script = format!(
        r#"
import time
AUTH = {auth}
r = connect()
print("ping", r.ping())
r.set("py", "v")
print("get", r.get("py").decode())
r2 = connect(**AUTH)
print("whoami", r2.execute_command("ACL", "WHOAMI").decode())
r3 = connect(protocol=3, client_name="py-e2e", **AUTH)
hello = r3.execute_command("HELLO", 3)
print("proto", hello.get(b"proto", hello.get("proto")))
print("name", r3.client_getname().decode())
print("whoami3", r3.execute_command("ACL", "WHOAMI").decode())
p = r.pipeline(transaction=True)
p.set("pyc", 1)
p.incr("pyc")
print("multi", p.execute())
ps = connect().pubsub()
ps.subscribe("pych")
deadline = time.time() + 30
msg = None
while time.time() < deadline and msg is None:
    m = ps.get_message(timeout=1)
    if m and m["type"] == "subscribe":
        r.publish("pych", "py-msg")
    elif m and m["type"] == "message":
        msg = m["data"].decode()
print("message", msg)
big = b"0123456789abcdef" * (10 * 1024 * 1024 // 16)
r.set("pybig", big)
print("big", r.get("pybig") == big)
"#
    );
    let out = python(&t.ep, &script);
    out.assert_success();
    let want = [
        "ping True".to_string(),
        "get v".into(),
        format!("whoami {whoami}"),
        "proto 3".into(),
        "name py-e2e".into(),
        format!("whoami3 {whoami}"),
        "multi [True, 2]".into(),
        "message py-msg".into(),
        "big True".into(),
    ];
    assert_eq!(out.lines(), want, "{out}");
    t.finish();
}

/// `n` bytes of printable, non-repeating-looking data (no newline: redis-cli `-x` keeps it).
pub fn pattern(n: usize, seed: u8) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut x: u32 = 0x9e37_79b9 ^ u32::from(seed);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            ALPHABET[(x % ALPHABET.len() as u32) as usize]
        })
        .collect()
}

/// The RESP bulk string holding `v`.
pub fn bulk(v: &[u8]) -> Vec<u8> {
    let mut out = format!("${}\r\n", v.len()).into_bytes();
    out.extend_from_slice(v);
    out.extend_from_slice(b"\r\n");
    out
}

pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// A child's stdout as a channel of lines.
fn line_channel(pipe: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// Lines until `done(seen)` holds: `Ok(seen)`, or `Err(seen)` after [`EVENT_LIMIT`] / EOF.
fn collect_until(
    rx: &mpsc::Receiver<String>,
    done: impl Fn(&[String]) -> bool,
) -> Result<Vec<String>, Vec<String>> {
    let deadline = std::time::Instant::now() + EVENT_LIMIT;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                seen.push(line);
                if done(&seen) {
                    return Ok(seen);
                }
            }
            Err(_) => return Err(seen),
        }
    }
}
