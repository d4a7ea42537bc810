//! Inspect mode's reply framer and matcher against a real `redis-server` (Debian's 7.0): pipelined
//! commands in RESP2 and after `HELLO 3` — every RESP3 type through `DEBUG PROTOCOL`, client
//! tracking invalidation pushes, pub/sub confirmations and messages, MULTI/EXEC, errors — are
//! sent as one stream per phase; the replies Redis writes are framed (whole, byte by byte, and
//! cut where the fuzz entry point cuts) and paired with the requests framed by the guard's
//! framer. The transcript (request → reply kind, pushes, messages) must be what Redis means.
//!
//! The server is started here rather than through `support::redis` because `DEBUG` needs
//! `enable-debug-command yes`, which only a start-up option can set.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bastion::proxy::guard::{Event, Framer, FramerConfig};
use bastion::proxy::inspect::{
    fuzz_replies, Matched, Matcher, Reply, ReplyConfig, ReplyFramer, ReplyKind,
};

/// Hang guard for every wait.
const GUARD: Duration = Duration::from_secs(20);

struct Redis {
    child: Child,
    _dir: tempfile::TempDir,
    socket: PathBuf,
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Redis {
    fn start() -> Redis {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("redis.sock");
        let child = Command::new("/usr/bin/redis-server")
            .args(["--port", "0", "--save", "", "--appendonly", "no"])
            .args(["--enable-debug-command", "yes", "--unixsocket"])
            .arg(&socket)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start /usr/bin/redis-server");
        let deadline = Instant::now() + GUARD;
        while UnixStream::connect(&socket).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Redis {
            child,
            _dir: dir,
            socket,
        }
    }

    fn connect(&self) -> UnixStream {
        let conn = UnixStream::connect(&self.socket).expect("connect to redis");
        conn.set_read_timeout(Some(GUARD)).expect("read timeout");
        conn
    }

    /// One command on a fresh connection, its reply read whole (a publisher, a writer).
    fn command(&self, args: &[&str]) -> Reply {
        let mut conn = self.connect();
        conn.write_all(&resp(&[args])).expect("write");
        let mut out = Vec::new();
        read_replies(&mut conn, &mut out, 1).remove(0)
    }
}

/// Commands as RESP arrays.
fn resp(commands: &[&[&str]]) -> Vec<u8> {
    let mut out = Vec::new();
    for args in commands {
        out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for a in *args {
            out.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
        }
    }
    out
}

/// Read from `conn` into `out` until `out` holds `n` more complete replies than before
/// (framed from the start each time: a test helper, not the relay).
fn read_replies(conn: &mut UnixStream, out: &mut Vec<u8>, n: usize) -> Vec<Reply> {
    let before = frame_all(out).len();
    let mut buf = [0u8; 4096];
    loop {
        let replies = frame_all(out);
        if replies.len() >= before + n {
            return replies[before..].to_vec();
        }
        let got = conn.read(&mut buf).expect("read replies");
        assert!(got > 0, "redis closed early");
        out.extend_from_slice(&buf[..got]);
    }
}

fn read_to_end(mut conn: UnixStream, out: &mut Vec<u8>) {
    conn.shutdown(std::net::Shutdown::Write)
        .expect("half-close");
    let mut buf = [0u8; 4096];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) => panic!("reading replies: {e}"),
        }
    }
}

/// Every complete reply in `data`; the stream must be well-formed.
fn frame_all(data: &[u8]) -> Vec<Reply> {
    let mut framer = ReplyFramer::new(ReplyConfig::default());
    let mut replies = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let step = framer
            .advance(rest)
            .expect("redis writes well-formed replies");
        rest = &rest[step.consumed..];
        replies.extend(step.reply);
    }
    replies
}

/// The commands in a request stream, as the guard's framer names them.
fn commands(requests: &[u8]) -> Vec<(String, u64)> {
    let mut framer = Framer::new(FramerConfig::default());
    let mut out = Vec::new();
    let mut rest = requests;
    loop {
        let step = framer.advance(rest);
        rest = &rest[step.consumed..];
        match step.event {
            None if step.consumed == 0 => break,
            Some(Event::Command(head)) => out.push((
                String::from_utf8_lossy(head.name()).to_uppercase(),
                head.argc,
            )),
            Some(Event::Dead { .. }) => panic!("test requests are well-formed"),
            _ => {}
        }
    }
    out
}

/// Pair the replies with the requests and describe each reply: `NAME: Kind` for a reply,
/// `push head` / `message head` otherwise.
fn transcript(requests: &[u8], replies_bytes: &[u8]) -> Vec<String> {
    // The framer must agree with itself over any split of what Redis wrote.
    let mut seeded = vec![7u8];
    seeded.extend_from_slice(replies_bytes);
    fuzz_replies(&seeded);

    let commands = commands(requests);
    let mut matcher = Matcher::new();
    for (name, argc) in &commands {
        matcher.request(name.as_bytes(), *argc);
    }
    let head = |r: &Reply| {
        r.head
            .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
            .unwrap_or_default()
    };
    let lines = frame_all(replies_bytes)
        .iter()
        .map(|r| match matcher.reply(r) {
            Matched::Reply { seq, .. } => {
                let code = r
                    .code
                    .map(|c| format!(" {}", String::from_utf8_lossy(c.as_bytes())))
                    .unwrap_or_default();
                let attr = if r.attribute { " (attribute)" } else { "" };
                format!("{}: {:?}{code}{attr}", commands[seq as usize].0, r.kind)
            }
            Matched::Push => format!("push {}", head(r)),
            Matched::Message => format!("message {}", head(r)),
            Matched::Unexpected => format!("unexpected {:?}", r.kind),
        })
        .collect();
    assert_eq!(matcher.outstanding(), 0, "every request answered");
    lines
}

#[test]
fn resp2_replies_pair_with_their_requests() {
    let redis = Redis::start();
    let mut conn = redis.connect();
    let mut requests = resp(&[
        &["SET", "k", "v"],
        &["GET", "k"],
        &["GET", "missing"],
        &["HSET", "h", "a", "1", "b", "2"],
        &["HGETALL", "h"],
        &["SADD", "s", "x", "y"],
        &["SMEMBERS", "s"],
        &["INCR", "k"],
        &["NOSUCHCOMMAND"],
        &["MULTI"],
        &["INCR", "n"],
        &["LPUSH", "k", "x"],
        &["EXEC"],
        &["DEBUG", "PROTOCOL", "double"],
        &["DEBUG", "PROTOCOL", "map"],
        &["DEBUG", "PROTOCOL", "null"],
        &["DEBUG", "PROTOCOL", "true"],
        &["SUBSCRIBE", "c1", "c2"],
    ]);
    conn.write_all(&requests).expect("write");
    let mut replies = Vec::new();
    read_replies(&mut conn, &mut replies, 19);
    // A message on c1 arrives while the connection is subscribed.
    assert_eq!(
        redis.command(&["PUBLISH", "c1", "hello"]).kind,
        ReplyKind::Integer
    );
    let more = resp(&[&["PING"], &["UNSUBSCRIBE"], &["GET", "k"]]);
    conn.write_all(&more).expect("write");
    requests.extend_from_slice(&more);
    read_to_end(conn, &mut replies);

    assert_eq!(
        transcript(&requests, &replies),
        [
            "SET: SimpleString",
            "GET: BulkString",
            "GET: Null",
            "HSET: Integer",
            "HGETALL: Array",
            "SADD: Integer",
            "SMEMBERS: Array",
            "INCR: Error ERR",
            "NOSUCHCOMMAND: Error ERR",
            "MULTI: SimpleString",
            "INCR: SimpleString",
            "LPUSH: SimpleString",
            "EXEC: Array",
            // RESP2 renders RESP3 types as it can: a double as a bulk string, a map as an array,
            // true as 1.
            "DEBUG: BulkString",
            "DEBUG: Array",
            "DEBUG: Null",
            "DEBUG: Integer",
            "SUBSCRIBE: Array",
            "SUBSCRIBE: Array",
            "message message",
            "PING: Array",
            "UNSUBSCRIBE: Array",
            "UNSUBSCRIBE: Array",
            "GET: BulkString",
        ]
    );
}

#[test]
fn resp3_replies_pushes_and_attributes() {
    let redis = Redis::start();
    redis.command(&["SET", "k", "v"]);
    let mut conn = redis.connect();
    let mut requests = resp(&[
        &["HELLO", "3"],
        &["CLIENT", "TRACKING", "ON"],
        &["GET", "k"],
    ]);
    conn.write_all(&requests).expect("write");
    let mut replies = Vec::new();
    read_replies(&mut conn, &mut replies, 3);
    // Another client changes the tracked key: an invalidation push comes before what follows.
    redis.command(&["SET", "k", "w"]);
    let more = resp(&[
        &["HSET", "h", "a", "1"],
        &["HGETALL", "h"],
        &["SADD", "s", "x"],
        &["SMEMBERS", "s"],
        &["DEBUG", "PROTOCOL", "attrib"],
        &["DEBUG", "PROTOCOL", "bignum"],
        &["DEBUG", "PROTOCOL", "double"],
        &["DEBUG", "PROTOCOL", "verbatim"],
        &["DEBUG", "PROTOCOL", "true"],
        &["DEBUG", "PROTOCOL", "false"],
        &["DEBUG", "PROTOCOL", "null"],
        &["DEBUG", "PROTOCOL", "push"],
        &["LPUSH", "h", "x"],
        &["SUBSCRIBE", "c1", "c2"],
    ]);
    conn.write_all(&more).expect("write");
    requests.extend_from_slice(&more);
    // 14 requests: one more frame for SUBSCRIBE's second channel, DEBUG PROTOCOL push's push,
    // and the invalidation.
    read_replies(&mut conn, &mut replies, 17);
    assert_eq!(
        redis.command(&["PUBLISH", "c2", "hello"]).kind,
        ReplyKind::Integer
    );
    let last = resp(&[&["UNSUBSCRIBE", "c1"], &["GET", "k"]]);
    conn.write_all(&last).expect("write");
    requests.extend_from_slice(&last);
    read_to_end(conn, &mut replies);

    assert_eq!(
        transcript(&requests, &replies),
        [
            "HELLO: Map",
            "CLIENT: SimpleString",
            "GET: BulkString",
            "push invalidate",
            "HSET: Integer",
            "HGETALL: Map",
            "SADD: Integer",
            "SMEMBERS: Set",
            "DEBUG: BulkString (attribute)",
            "DEBUG: BigNumber",
            "DEBUG: Double",
            "DEBUG: Verbatim",
            "DEBUG: Boolean",
            "DEBUG: Boolean",
            "DEBUG: Null",
            "push server-cpu-usage",
            "DEBUG: BulkString",
            "LPUSH: Error WRONGTYPE",
            "SUBSCRIBE: Push",
            "SUBSCRIBE: Push",
            "push message",
            "UNSUBSCRIBE: Push",
            "GET: BulkString",
        ]
    );
}
