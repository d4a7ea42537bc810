//! The command guard's framer against a real `redis-server`: for odd request streams, the
//! commands the framer reports (name and arguments, in order) and the protocol error it predicts
//! must be exactly what Redis runs and answers.
//!
//! How Redis' view is observed: the stream is written to a fresh connection, which is then
//! half-closed, and every reply is read until Redis closes. The framer's view is turned into the
//! same commands written canonically (RESP arrays) on another fresh connection; its predicted
//! error reply is appended. The two reply streams must be byte-identical. The commands are
//! chosen so their replies reveal what was parsed (ECHO echoes its argument, an unknown command
//! quotes its name and arguments, a wrong arity names the command) and change no state.
//!
//! For each predicted protocol error, the offset the framer gives is checked too: Redis answers
//! the error for the stream cut there, and not for the stream cut one byte earlier.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use bastion::proxy::guard::{Event, Framer, FramerConfig, ProtocolError, PROTO_INLINE_MAX_SIZE};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use support::redis::{RedisOpts, RedisServer};

/// Hang guard for reading one connection's replies until Redis closes it.
const READ_GUARD: Duration = Duration::from_secs(20);

/// What the framer says Redis will do with a stream.
#[derive(Debug, Default)]
struct Verdict {
    /// Each command Redis runs: its arguments, the name first.
    commands: Vec<Vec<Vec<u8>>>,
    /// The protocol error and the offset at which Redis sees it.
    dead: Option<(ProtocolError, u64)>,
}

/// Frame `data` as the relay would, inspecting every argument (all kept whole).
fn frame(data: &[u8], authenticated: bool) -> Verdict {
    let mut framer = Framer::new(FramerConfig {
        authenticated,
        inspect_bytes: 1 << 20,
        ..FramerConfig::default()
    });
    let mut verdict = Verdict::default();
    let mut current: Option<(u64, Vec<Vec<u8>>)> = None;
    let mut rest = data;
    loop {
        let step = framer.advance(rest);
        rest = &rest[step.consumed..];
        match step.event {
            None if step.consumed == 0 => break,
            None => {}
            Some(Event::Command(head)) => {
                assert!(current.is_none(), "command inside a command");
                current = Some((head.argc, vec![head.name().to_vec()]));
                assert_eq!(
                    head.name().len() as u64,
                    head.name_len,
                    "test names are short"
                );
                framer.inspect();
            }
            Some(Event::Arg(arg)) => {
                let (_, args) = current.as_mut().expect("argument outside a command");
                args.push(arg.value().expect("test arguments are kept whole").to_vec());
            }
            Some(Event::End { .. }) => {
                let (argc, args) = current.take().expect("end without a command");
                assert_eq!(args.len() as u64, argc, "every argument reported");
                verdict.commands.push(args);
            }
            Some(Event::Dead { error, at }) => verdict.dead = Some((error, at)),
        }
    }
    verdict
}

/// Write `data` on a fresh connection, half-close it, and read every reply until Redis closes.
fn replies(socket: &Path, data: &[u8]) -> Vec<u8> {
    let mut conn = UnixStream::connect(socket).expect("connect to redis");
    conn.set_read_timeout(Some(READ_GUARD))
        .expect("read timeout");
    // Redis may close early (a protocol error) while we still write: what it answered is
    // what matters, so a failed write is not an error here.
    let _ = conn.write_all(data);
    let _ = conn.shutdown(std::net::Shutdown::Write);
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            // Redis closed with our bytes unread: what it sent before is still delivered.
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) => panic!("reading replies for {:?}: {e}", show(data)),
        }
    }
    out
}

/// The replies the framer's verdict predicts: its commands written canonically, then its error.
/// Before authentication Redis refuses arrays of more than 10 elements, so there the commands
/// are written as inline lines (every argument quoted, other than letters and digits escaped).
fn predicted(socket: &Path, verdict: &Verdict, authenticated: bool) -> Vec<u8> {
    let mut canonical = Vec::new();
    for args in &verdict.commands {
        if authenticated {
            canonical.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
            for a in args {
                canonical.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
                canonical.extend_from_slice(a);
                canonical.extend_from_slice(b"\r\n");
            }
        } else {
            for a in args {
                canonical.push(b'"');
                for &b in a {
                    if b.is_ascii_alphanumeric() {
                        canonical.push(b);
                    } else {
                        canonical.extend_from_slice(format!("\\x{b:02x}").as_bytes());
                    }
                }
                canonical.extend_from_slice(b"\" ");
            }
            canonical.extend_from_slice(b"\r\n");
        }
    }
    let mut out = replies(socket, &canonical);
    if let Some((error, _)) = verdict.dead {
        out.extend_from_slice(&error.reply());
    }
    out
}

/// The differential check for one stream.
fn check(socket: &Path, authenticated: bool, data: &[u8]) {
    let verdict = frame(data, authenticated);
    let actual = replies(socket, data);
    let expected = predicted(socket, &verdict, authenticated);
    assert!(
        actual == expected,
        "stream {}\nframer: {verdict:?}\nredis answered   {}\nframer predicts  {}",
        show(data),
        show(&actual),
        show(&expected)
    );
    if let Some((error, at)) = verdict.dead {
        let reply = error.reply();
        let at = at as usize;
        assert!(
            replies(socket, &data[..at]).ends_with(&reply),
            "Redis sees {error} with the first {at} bytes of {}",
            show(data)
        );
        assert!(
            !replies(socket, &data[..at - 1]).ends_with(&reply),
            "Redis sees {error} before byte {at} of {}",
            show(data)
        );
    }
}

/// Bytes for messages, every byte visible (`support::raw::show` is lossy for non-UTF-8).
fn show(bytes: &[u8]) -> String {
    let shown: String = bytes
        .iter()
        .take(200)
        .flat_map(|b| b.escape_ascii())
        .map(char::from)
        .collect();
    if bytes.len() > 200 {
        format!("\"{shown}\"… ({} bytes)", bytes.len())
    } else {
        format!("\"{shown}\"")
    }
}

fn repeat(prefix: &[u8], fill: u8, len: usize, suffix: &[u8]) -> Vec<u8> {
    let mut out = prefix.to_vec();
    out.resize(len, fill);
    out.extend_from_slice(suffix);
    out
}

/// Odd streams on a connection Redis considers authenticated (`default` on, no password).
fn authenticated_corpus() -> Vec<Vec<u8>> {
    let max = PROTO_INLINE_MAX_SIZE as usize;
    let mut corpus: Vec<Vec<u8>> = [
        &b"*1\r\n$4\r\nPING\r\n"[..],
        b"\r\n\n  \r\n\t\nPING\r\n",
        b"PING\nPING\nECHO x\n",
        b"ECHO \"a b\" 'c d'\r\n",
        b"ECHO \"\\x41\\x4a\\n\\q\\xzz\" 'it\\'s'\r\n",
        b"ECHO a\"b c\"\r\n",
        b"ECHO \"a\"b\r\nPING\r\n",
        b"ECHO 'a\r\nPING\r\n",
        b"ECHO \"a\r\n",
        b"\x0bECHO a\x0bb\x0c\r\n",
        b"ECHO a\rb\r\n",
        b"ECHO \"\" ''\r\n",
        b"\"ECHO\\x00z\" hi\r\n",
        b"*0\r\n*-1\r\n*-5\r\nECHO after\r\n",
        b"*1\rX$4\rYPING\r\n",
        b"*2\r\n$4\r\nECHO\r\n$3\r\nabcXY*1\r\n$4\r\nPING\r\n",
        b"*2\r\n$4\r\nECHO\r\n$3\r\nabc\r*1\r\n$4\r\nPING\r\n",
        b"*2\r\n$4\r\nECHO\r\n$0\r\n\r\n",
        b"*2\r\n$4\r\nECHO\r\n$3\r\na\0c\r\n",
        b"*3\r\n$4\r\nECHO\r\n$1\r\na\r\n$1\r\nb\r\n",
        b"*1\r\n$4\r\necho\r\n",
        b"*01\r\n",
        b"*-0\r\n",
        b"*+1\r\n",
        b"*\r\n",
        b"* 1\r\n",
        b"*3000000000\r\n",
        b"*99999999999999999999999\r\n",
        b"*1\n\r\n",
        b"*1\r\n$-1\r\n",
        b"*1\r\n$04\r\n",
        b"*1\r\n$\r\n",
        b"*1\r\n$536870913\r\n",
        b"*1\r\n\r\n",
        b"*1\r\n\n$4\r\n",
        b"*3\r\n$3\r\nSET\r\n$1\r\nx\r\nfooz\r\n",
        b"*1\r\n\xff\r\n",
        b"PING\0\r\nPING\r\n",
        b"*1\r\n$4\0\r\nPING\r\n",
        b"*1\0\r\n$4\r\nPING\r\n",
        b"PING\r\n*1\r\n$4\r\nPING\r\n \r\nECHO y\r\n*2\r\n$4\r\nECHO\r\n$1\r\nz\r\n",
    ]
    .iter()
    .map(|c| c.to_vec())
    .collect();
    // A 100 kB argument.
    corpus.push(repeat(
        b"*2\r\n$4\r\nECHO\r\n$100000\r\n",
        b'v',
        22 + 100_000,
        b"\r\nPING\r\n",
    ));
    // Lines at and over the 64 KiB bound.
    corpus.push(repeat(b"ECHO ", b'a', max, b"\n"));
    corpus.push(repeat(b"", b'a', max + 1, b""));
    corpus.push(repeat(b"PING\0", b'\n', max + 1, b""));
    corpus.push(repeat(b"*1", b'1', max + 1, b""));
    corpus.push(repeat(b"*1\r\n$", b'1', 4 + max + 1, b""));
    // A header line far longer than a number but ending before the bound: invalid, not too big.
    corpus.push(repeat(b"*1\r\n$", b'1', 4 + 1000, b"\r\n"));
    corpus
}

#[test]
fn the_framer_agrees_with_redis_on_odd_streams() {
    let redis = RedisServer::start(RedisOpts::open());
    let socket = redis.unix_path();
    for data in authenticated_corpus() {
        check(&socket, true, &data);
    }
}

#[test]
fn before_authentication_the_framer_applies_redis_limits() {
    let redis = RedisServer::start(RedisOpts::users(&["app"], "app-password"));
    let socket = redis.unix_path();
    for data in [
        &b"*11\r\n"[..],
        b"*10\r\n",
        b"*1\r\n$16385\r\n",
        b"*2\r\n$4\r\nECHO\r\n$16384\r\n",
        b"PING\r\n*2\r\n$4\r\nECHO\r\n$1\r\nx\r\n*3000000000\r\n",
        b"ECHO a b c d e f g h i j k l\r\n",
    ] {
        check(&socket, false, data);
    }
}

/// `strcasecmp` stops at NUL: Redis runs some `ECHO\0<n>` as ECHO (those landing in ECHO's
/// hash bucket) and answers "unknown command" for the rest. The framer reports the name with
/// its NUL, and [`bastion::proxy::guard::Head::is`] says it may be ECHO.
#[test]
fn names_with_a_nul_may_run_as_the_command_before_it() {
    let redis = RedisServer::start(RedisOpts::open());
    let socket = redis.unix_path();
    let mut data = Vec::new();
    for i in 0..2000 {
        let name = format!("ECHO\0{i}");
        data.extend_from_slice(
            format!("*2\r\n${}\r\n{name}\r\n$2\r\nhi\r\n", name.len()).as_bytes(),
        );
    }
    check(&socket, true, &data);
    let ran_as_echo = replies(&socket, &data)
        .windows(8)
        .filter(|w| w == b"$2\r\nhi\r\n")
        .count();
    assert!(ran_as_echo > 0, "no ECHO\\0<n> ran as ECHO in 2000 tries");

    let mut framer = Framer::new(FramerConfig::default());
    let step = framer.advance(b"*2\r\n$6\r\nAUTH\0x\r\n");
    let Some(Event::Command(head)) = step.event else {
        panic!("no command: {:?}", step.event)
    };
    assert!(head.is("AUTH") && head.name_has_nul());
}

/// Random streams of commands, inline lines, header fragments and stray bytes.
fn fragment() -> impl Strategy<Value = Vec<u8>> {
    let word = "[a-z\"' \\\\]{0,6}";
    let command = proptest::collection::vec(word, 1..4).prop_map(|args| {
        let mut out = format!("*{}\r\n", args.len() + 1).into_bytes();
        out.extend_from_slice(b"$4\r\nECHO\r\n");
        for a in args {
            out.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
        }
        out
    });
    let inline = "(ECHO|PING|echo|zz) [a-z\"' \\\\\t\r]{0,16}\n".prop_map(String::into_bytes);
    prop_oneof![
        4 => command,
        3 => inline,
        1 => "\\$[0-9]{1,2}\r\n".prop_map(String::into_bytes),
        1 => "\\*-?[0-9]{1,2}\r\n".prop_map(String::into_bytes),
        1 => Just(b"\r\n".to_vec()),
        1 => Just(b"\r".to_vec()),
        1 => Just(b"\n".to_vec()),
        1 => Just(b"\0".to_vec()),
        1 => "[a-z\"'*$ ]{1,3}".prop_map(String::into_bytes),
    ]
}

#[test]
fn the_framer_agrees_with_redis_on_random_streams() {
    let redis = RedisServer::start(RedisOpts::open());
    let socket = redis.unix_path();
    let mut runner = TestRunner::new(Config {
        cases: 150,
        failure_persistence: None,
        ..Config::default()
    });
    // Fragments can join into one line longer than the framer keeps of a name (NAME_CAP, 64
    // bytes, by design), and then the name cannot be compared with Redis' error text: such
    // streams are left out (every line ≤ 64 bytes bounds every name).
    let streams = proptest::collection::vec(fragment(), 1..10)
        .prop_map(|f| f.concat())
        .prop_filter("every line fits a name", |d| {
            d.split(|b| *b == b'\n').all(|line| line.len() <= 64)
        });
    runner
        .run(&streams, |data| {
            check(&socket, true, &data);
            Ok(())
        })
        .unwrap();
}
