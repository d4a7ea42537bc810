//! The command policy against a real `redis-server` (Debian's 7.0), from the attacker's side:
//! for every rule set here, the same rules are given to a Redis ACL user
//! (`ACL SETUSER u reset on nopass allchannels <rules>`) and every command is asked of both —
//! `ACL DRYRUN u <command> <args…>` and `CommandPolicy::check` must agree on allow or deny, on
//! the command named in a command denial and on the key named in a key denial. The only
//! difference allowed: the bastion denies (`KeysUnknown`) a command whose keys Redis' key specs
//! cannot find — a `numkeys` that is not a count (Redis then finds no key and the command fails
//! on its own), or `PFMERGE dest` without sources, which Redis 7.0 runs without checking the
//! destination against the key patterns.
//!
//! It also holds the generator of bastion's one command table
//! (`src/proxy/inspect/policy/table.rs`, read by the policy and by the audit's key count):
//! `COMMAND`, `ACL CAT` and `ACL CAT <category>` of the installed Redis, written as Rust. The
//! test fails if the committed table differs; regenerate with
//! `BASTION_REGENERATE_COMMAND_TABLE=1 cargo nextest run --test command_policy`. Key counts
//! from it are compared with `COMMAND GETKEYS`, and decisions through a live inspect-mode
//! session (commands held for their arguments) with `ACL DRYRUN`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod support;

use bastion::proxy::inspect::policy::{self, CommandPolicy, Denied};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use redis_protocol::resp2::types::OwnedFrame;
use support::redis::{RedisOpts, RedisServer};

const GUARD: Duration = Duration::from_secs(30);
const TABLE: &str = "src/proxy/inspect/policy/table.rs";
const REGENERATE: &str = "BASTION_REGENERATE_COMMAND_TABLE";

/// The suite's redis-server (`support::redis`), its `default` user on without a password so
/// the tests may create ACL users; reached over its Unix socket.
struct Redis {
    _server: RedisServer,
    socket: PathBuf,
}

impl Redis {
    fn start() -> Redis {
        let server = RedisServer::start(RedisOpts {
            default_nopass: true,
            ..RedisOpts::default()
        });
        let socket = server.unix_path();
        Redis {
            _server: server,
            socket,
        }
    }

    fn connect(&self) -> Conn {
        let stream = UnixStream::connect(&self.socket).expect("connect to redis");
        stream.set_read_timeout(Some(GUARD)).expect("read timeout");
        Conn {
            stream,
            buf: Vec::new(),
        }
    }
}

struct Conn {
    stream: UnixStream,
    buf: Vec<u8>,
}

impl Conn {
    /// Send every command at once (pipelined), read one reply each.
    fn pipeline(&mut self, commands: &[Vec<Vec<u8>>]) -> Vec<OwnedFrame> {
        let mut out = Vec::new();
        for args in commands {
            out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
            for a in args {
                out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
                out.extend_from_slice(a);
                out.extend_from_slice(b"\r\n");
            }
        }
        // Write from another thread: a large pipeline fills both socket buffers otherwise.
        let mut writer = self.stream.try_clone().expect("clone socket");
        let write = std::thread::spawn(move || writer.write_all(&out).expect("write"));
        let mut replies = Vec::with_capacity(commands.len());
        let mut chunk = vec![0u8; 1 << 16];
        while replies.len() < commands.len() {
            match redis_protocol::resp2::decode::decode(&self.buf).expect("valid RESP") {
                Some((frame, used)) => {
                    self.buf.drain(..used);
                    replies.push(frame);
                }
                None => {
                    let n = self.stream.read(&mut chunk).expect("read replies");
                    assert!(n > 0, "redis closed the connection");
                    self.buf.extend_from_slice(&chunk[..n]);
                }
            }
        }
        write.join().expect("writer");
        replies
    }

    fn call(&mut self, args: &[&str]) -> OwnedFrame {
        let args = args.iter().map(|a| a.as_bytes().to_vec()).collect();
        self.pipeline(&[args]).remove(0)
    }
}

fn text(frame: &OwnedFrame) -> String {
    match frame {
        OwnedFrame::SimpleString(s) | OwnedFrame::BulkString(s) => {
            String::from_utf8_lossy(s).into_owned()
        }
        OwnedFrame::Error(e) => e.clone(),
        OwnedFrame::Integer(i) => i.to_string(),
        other => panic!("not a string: {other:?}"),
    }
}

fn array(frame: &OwnedFrame) -> &[OwnedFrame] {
    match frame {
        OwnedFrame::Array(a) => a,
        OwnedFrame::Null => &[],
        other => panic!("not an array: {other:?}"),
    }
}

fn int(frame: &OwnedFrame) -> i64 {
    match frame {
        OwnedFrame::Integer(i) => *i,
        other => panic!("not an integer: {other:?}"),
    }
}

/// A RESP2 flat map (`[k1, v1, k2, v2…]`).
fn map(frame: &OwnedFrame) -> BTreeMap<String, &OwnedFrame> {
    array(frame)
        .chunks(2)
        .map(|kv| (text(&kv[0]), &kv[1]))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The generator.

/// One `COMMAND` entry as the table needs it.
struct Entry {
    name: String,
    arity: i64,
    no_auth: bool,
    categories: Vec<String>,
    key_specs: Vec<String>,
    subcommands: Vec<Entry>,
}

fn entry(frame: &OwnedFrame) -> Entry {
    let f = array(frame);
    let flags: Vec<String> = array(&f[2]).iter().map(text).collect();
    let mut subcommands: Vec<Entry> = array(&f[9]).iter().map(entry).collect();
    subcommands.sort_by(|a, b| a.name.cmp(&b.name));
    Entry {
        name: text(&f[0]).to_ascii_lowercase(),
        arity: int(&f[1]),
        no_auth: flags.iter().any(|f| f == "no_auth"),
        categories: array(&f[6])
            .iter()
            .map(|c| text(c).trim_start_matches('@').to_string())
            .collect(),
        key_specs: array(&f[8]).iter().map(key_spec).collect(),
        subcommands,
    }
}

/// A key spec as Rust source.
fn key_spec(frame: &OwnedFrame) -> String {
    let spec = map(frame);
    let names = policy::key_flags::NAMES;
    let flags: Vec<&str> = array(spec["flags"])
        .iter()
        .map(|f| {
            let f = text(f);
            let (_, _) = names
                .iter()
                .find(|(n, _)| *n == f)
                .unwrap_or_else(|| panic!("unknown key spec flag {f}"));
            match f.as_str() {
                "RO" => "RO",
                "RW" => "RW",
                "OW" => "OW",
                "RM" => "RM",
                "access" => "ACCESS",
                "update" => "UPDATE",
                "insert" => "INSERT",
                "delete" => "DELETE",
                "not_key" => "NOT_KEY",
                "incomplete" => "INCOMPLETE",
                "variable_flags" => "VARIABLE_FLAGS",
                other => panic!("unknown key spec flag {other}"),
            }
        })
        .collect();
    let flags = if flags.is_empty() {
        "0".to_string()
    } else {
        flags.join(" | ")
    };
    let begin = map(spec["begin_search"]);
    let begin = match text(begin["type"]).as_str() {
        "index" => format!("Index({})", int(map(begin["spec"])["index"])),
        "keyword" => {
            let s = map(begin["spec"]);
            format!(
                "Keyword {{ keyword: {:?}, startfrom: {} }}",
                text(s["keyword"]),
                int(s["startfrom"])
            )
        }
        "unknown" => "BeginSearch::Unknown".to_string(),
        other => panic!("unknown begin_search type {other}"),
    };
    let find = map(spec["find_keys"]);
    let find = match text(find["type"]).as_str() {
        "range" => {
            let s = map(find["spec"]);
            let (lastkey, limit) = (int(s["lastkey"]), int(s["limit"]));
            // keys.rs relies on Redis' own assertion: a limit only with lastkey -1.
            assert!(limit == 0 || lastkey == -1, "range spec {lastkey}/{limit}");
            format!(
                "Range {{ lastkey: {lastkey}, keystep: {}, limit: {limit} }}",
                int(s["keystep"])
            )
        }
        "keynum" => {
            let s = map(find["spec"]);
            format!(
                "Keynum {{ keynumidx: {}, firstkey: {}, keystep: {} }}",
                int(s["keynumidx"]),
                int(s["firstkey"]),
                int(s["keystep"])
            )
        }
        "unknown" => "FindKeys::Unknown".to_string(),
        other => panic!("unknown find_keys type {other}"),
    };
    format!("KeySpec {{ flags: {flags}, begin: {begin}, find: {find} }}")
}

/// The table's Rust source, from what `redis` says.
fn generate(redis: &Redis) -> String {
    let mut conn = redis.connect();
    let info = text(&conn.call(&["INFO", "server"]));
    let version = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .expect("redis_version")
        .trim()
        .to_string();
    let categories: Vec<String> = array(&conn.call(&["ACL", "CAT"]))
        .iter()
        .map(text)
        .collect();
    assert!(categories.len() <= 64, "categories fit a u64");
    let mut commands: Vec<Entry> = array(&conn.call(&["COMMAND"])).iter().map(entry).collect();
    commands.sort_by(|a, b| a.name.cmp(&b.name));

    // `ACL CAT <category>` is what ACL rules use: it must agree with COMMAND's categories.
    let mut by_acl_cat: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for c in &categories {
        for name in array(&conn.call(&["ACL", "CAT", c])).iter().map(text) {
            by_acl_cat.entry(name).or_default().push(c.clone());
        }
    }
    let mut by_command: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in commands
        .iter()
        .chain(commands.iter().flat_map(|c| &c.subcommands))
    {
        if !e.categories.is_empty() {
            let mut cats = e.categories.clone();
            cats.sort();
            by_command.insert(e.name.clone(), cats);
        }
    }
    for cats in by_acl_cat.values_mut() {
        cats.sort();
    }
    assert_eq!(by_acl_cat, by_command, "ACL CAT and COMMAND disagree");

    let mut out = String::new();
    let _ = writeln!(
        out,
        "//! Generated by `tests/command_policy.rs` from redis-server {version} (`COMMAND`, \
         `ACL CAT`):\n//! do not edit. Regenerate with `{REGENERATE}=1 cargo nextest run --test \
         command_policy`.\n"
    );
    out.push_str("use super::key_flags::*;\n");
    out.push_str("use super::BeginSearch::{self, Index, Keyword};\n");
    out.push_str("use super::FindKeys::{self, Keynum, Range};\n");
    out.push_str("use super::{CommandSpec, KeySpec};\n\n");
    let _ = writeln!(out, "pub(super) const REDIS_VERSION: &str = {version:?};\n");
    out.push_str("pub(super) const CATEGORIES: &[&str] = &[\n");
    for c in &categories {
        let _ = writeln!(out, "    {c:?},");
    }
    out.push_str("];\n\n");
    let mut id = 0u16;
    let mut body = String::new();
    for c in &commands {
        write_entry(&mut body, c, &categories, &mut id, 1);
    }
    let _ = writeln!(out, "pub(super) const COMMAND_COUNT: u16 = {id};\n");
    out.push_str("pub(super) static COMMANDS: &[CommandSpec] = &[\n");
    out.push_str(&body);
    out.push_str("];\n");
    // Keep every import used whatever this Redis' specs hold.
    out.push_str(
        "\n#[allow(dead_code)]\nconst _USED: (BeginSearch, FindKeys) = (BeginSearch::Unknown, \
         FindKeys::Unknown);\n",
    );
    out
}

fn write_entry(out: &mut String, e: &Entry, categories: &[String], id: &mut u16, depth: usize) {
    let pad = "    ".repeat(depth);
    let bits: u64 = e
        .categories
        .iter()
        .map(|c| {
            let i = categories
                .iter()
                .position(|x| x == c)
                .unwrap_or_else(|| panic!("{}: category {c} not in ACL CAT", e.name));
            1u64 << i
        })
        .sum();
    let _ = writeln!(
        out,
        "{pad}CommandSpec {{ name: {:?}, id: {id}, arity: {}, no_auth: {}, categories: {bits:#x},",
        e.name, e.arity, e.no_auth
    );
    *id += 1;
    if e.key_specs.is_empty() {
        let _ = writeln!(out, "{pad}    key_specs: &[],");
    } else {
        let _ = writeln!(out, "{pad}    key_specs: &[");
        for s in &e.key_specs {
            let _ = writeln!(out, "{pad}        {s},");
        }
        let _ = writeln!(out, "{pad}    ],");
    }
    if e.subcommands.is_empty() {
        let _ = writeln!(out, "{pad}    subcommands: &[] }},");
    } else {
        let _ = writeln!(out, "{pad}    subcommands: &[");
        for s in &e.subcommands {
            write_entry(out, s, categories, id, depth + 2);
        }
        let _ = writeln!(out, "{pad}    ] }},");
    }
}

#[test]
fn the_embedded_table_is_what_this_redis_says() {
    let redis = Redis::start();
    let generated = generate(&redis);
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(TABLE);
    if std::env::var_os(REGENERATE).is_some() {
        std::fs::write(&path, &generated).expect("write the table");
        return;
    }
    let committed = std::fs::read_to_string(&path).expect("the committed table");
    if committed != generated {
        let line = committed
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .map_or_else(|| "its length".to_string(), |i| format!("line {}", i + 1));
        panic!(
            "{TABLE} differs from what redis-server says (first at {line}); regenerate with \
             {REGENERATE}=1 and review the diff"
        );
    }
    assert_eq!(policy::table_version(), {
        let info = text(&redis.connect().call(&["INFO", "server"]));
        info.lines()
            .find_map(|l| l.strip_prefix("redis_version:"))
            .unwrap()
            .trim()
            .to_string()
    });
}

// ---------------------------------------------------------------------------------------------
// Bastion's decision against Redis' own.

/// Redis' verdict on one command.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    Allowed,
    DeniedCommand(String),
    DeniedKey(Vec<u8>),
    /// Unknown command, wrong arity: Redis refuses it before ACL.
    Error(String),
}

fn verdict(frame: &OwnedFrame) -> Verdict {
    match frame {
        OwnedFrame::SimpleString(s) if s == b"OK" => Verdict::Allowed,
        OwnedFrame::BulkString(s) => {
            let s = String::from_utf8_lossy(s);
            if let Some(rest) = s.strip_prefix("This user has no permissions to run the '") {
                Verdict::DeniedCommand(rest.trim_end_matches("' command").to_string())
            } else if let Some(rest) =
                s.strip_prefix("This user has no permissions to access the '")
            {
                Verdict::DeniedKey(rest.trim_end_matches("' key").as_bytes().to_vec())
            } else {
                panic!("unexpected DRYRUN reply {s}")
            }
        }
        OwnedFrame::Error(e) => Verdict::Error(e.clone()),
        other => panic!("unexpected DRYRUN reply {other:?}"),
    }
}

/// What one comparison found.
#[derive(Debug, Default)]
struct Tally {
    allowed: usize,
    denied_command: usize,
    denied_key: usize,
    /// Redis refused before ACL (arity, unknown): the bastion's answer is checked only for
    /// unknown commands.
    errors: usize,
    /// Bastion denied, Redis found no keys (malformed numkeys).
    stricter: usize,
}

/// `ACL SETUSER u reset on nopass allchannels <rules>`: the Redis user the bastion is compared
/// with.
fn set_user(rules: &str) -> Vec<Vec<u8>> {
    let mut setuser = argv(&[
        "ACL",
        "SETUSER",
        "u",
        "reset",
        "on",
        "nopass",
        "allchannels",
    ]);
    setuser.extend(
        rules
            .split_ascii_whitespace()
            .map(|r| r.as_bytes().to_vec()),
    );
    setuser
}

/// Give `rules` to Redis user `u`, ask both about every command, assert they agree.
fn compare(conn: &mut Conn, rules: &str, commands: &[Vec<Vec<u8>>]) -> Tally {
    let policy = CommandPolicy::parse(rules).unwrap_or_else(|e| panic!("{rules}: {e}"));
    let reply = conn.pipeline(&[set_user(rules)]).remove(0);
    assert_eq!(text(&reply), "OK", "Redis refused rules {rules}");

    let dryruns: Vec<Vec<Vec<u8>>> = commands
        .iter()
        .map(|argv| {
            let mut d = vec![b"ACL".to_vec(), b"DRYRUN".to_vec(), b"u".to_vec()];
            d.extend(argv.iter().cloned());
            d
        })
        .collect();
    let mut tally = Tally::default();
    for (argv, reply) in commands.iter().zip(conn.pipeline(&dryruns)) {
        let ours = policy.check(&argv[0], &argv[1..]);
        let show = || {
            let argv: Vec<String> = argv
                .iter()
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            format!("rules [{rules}] command {argv:?}")
        };
        match (verdict(&reply), &ours) {
            (Verdict::Allowed, Ok(())) => tally.allowed += 1,
            (Verdict::Allowed, Err(Denied::KeysUnknown { .. })) => {
                // Only where Redis' key specs fail on these arguments: a `numkeys` that is
                // not a count, or a variadic command short of its keys (`PFMERGE dest`, where
                // Redis 7.0 then checks no key at all — not even the destination it writes).
                let spec = policy::lookup(&argv[0]).expect("a known command");
                assert!(
                    spec.key_specs.iter().any(|k| matches!(
                        k.find,
                        policy::FindKeys::Keynum { .. }
                            | policy::FindKeys::Range { lastkey: ..=-1, .. }
                    )),
                    "{}: Redis allows, bastion cannot find the keys",
                    show()
                );
                tally.stricter += 1
            }
            (Verdict::DeniedCommand(name), Err(Denied::Command { command })) => {
                assert_eq!(&name, command, "{}", show());
                tally.denied_command += 1;
            }
            (Verdict::DeniedKey(key), Err(Denied::Key { position, .. })) => {
                // Redis names the key with `%s`: up to a NUL byte.
                let named = |a: &Vec<u8>| a.split(|&b| b == 0).next().unwrap_or_default().to_vec();
                assert_eq!(
                    argv.get(*position).map(named),
                    Some(key.clone()),
                    "{}: Redis denied key {:?}",
                    show(),
                    String::from_utf8_lossy(&key)
                );
                tally.denied_key += 1;
            }
            (Verdict::Error(e), ours) => {
                if e.contains("not found") {
                    let unknown = matches!(
                        ours,
                        Err(Denied::UnknownCommand | Denied::UnknownSubcommand { .. })
                    );
                    assert!(
                        unknown || (policy.allows_all_commands() && ours.is_ok()),
                        "{}: Redis: {e}, bastion: {ours:?}",
                        show()
                    );
                } else {
                    assert!(e.contains("wrong number of arguments"), "{}: {e}", show());
                }
                tally.errors += 1;
            }
            (theirs, ours) => panic!("{}: Redis {theirs:?}, bastion {ours:?}", show()),
        }
    }
    tally
}

fn argv(words: &[&str]) -> Vec<Vec<u8>> {
    words.iter().map(|w| w.as_bytes().to_vec()).collect()
}

fn commands(list: &[&[&str]]) -> Vec<Vec<Vec<u8>>> {
    list.iter().map(|w| argv(w)).collect()
}

/// Named cases an attacker would try, under rule sets an operator would write.
#[test]
fn named_cases_decide_as_redis_acl_does() {
    let redis = Redis::start();
    let mut conn = redis.connect();
    let cases = commands(&[
        &["GET", "app:1"],
        &["get", "app:1"],
        &["gEt", "other"],
        &["SET", "app:1", "v"],
        &["SET", "ro:1", "v"],
        &["SET", "ro:1", "v", "GET"],
        &["SET", "wo:1", "v", "get"],
        &["SET", "wo:1", "v"],
        &["GETDEL", "wo:1"],
        &["EXISTS", "ro:1", "wo:1", "other"],
        &["MSET", "app:1", "v", "app:2", "v"],
        &["MSET", "app:1", "v", "other", "v"],
        &["MGET", "app:1", "ro:2", "wo:3"],
        &["EVAL", "return 1", "2", "app:1", "other", "arg"],
        &["EVAL", "return 1", "1", "app:1", "other"],
        &["EVAL", "return 1", "0", "other"],
        &["EVALSHA_RO", "abc", "1", "ro:1"],
        &["FCALL", "f", "2", "app:1", "app:2"],
        &["XREAD", "COUNT", "1", "STREAMS", "app:s", "other", "0", "0"],
        &["XREAD", "STREAMS", "app:s", "0"],
        &["XREADGROUP", "GROUP", "g", "c", "STREAMS", "ro:s", ">"],
        &["ZUNIONSTORE", "app:d", "2", "ro:a", "other"],
        &["ZUNIONSTORE", "app:d", "2", "ro:a", "ro:b"],
        &["LMOVE", "ro:a", "app:b", "LEFT", "RIGHT"],
        &["SORT", "app:l", "BY", "other", "STORE", "app:d"],
        &["SORT", "app:l", "STORE", "ro:d"],
        &["SORT_RO", "ro:l"],
        &["BITFIELD", "ro:b", "GET", "u4", "0"],
        &["BITFIELD", "ro:b", "SET", "u4", "0", "1"],
        &["BITFIELD_RO", "ro:b", "GET", "u4", "0"],
        &["MIGRATE", "h", "1", "app:1", "0", "10"],
        &["MIGRATE", "h", "1", "", "0", "10", "KEYS", "app:1", "other"],
        &[
            "MIGRATE", "h", "1", "", "0", "10", "AUTH", "KEYS", "KEYS", "app:1",
        ],
        &["GEORADIUS", "ro:g", "0", "0", "1", "km", "STORE", "app:d"],
        // Keywords are compared by Redis' strcasecmp, which stops at a NUL: the keys after
        // `STREAMS\0x` are keys to Redis (and XREAD reads them).
        &["XREAD", "COUNT", "1", "STREAMS\0x", "other", "0"],
        &["XREADGROUP", "GROUP", "g", "c", "streams\0", "other", ">"],
        &["SORT", "app:l", "STORE\0x", "other"],
        &["GEORADIUS", "ro:g", "0", "0", "1", "km", "STORE\0", "other"],
        &["SET", "ro:1", "v", "GET\0x"],
        // STREAMS found with one argument after it: Redis falls back to `xreadGetKeys`.
        &[
            "XREADGROUP",
            "STREAMS",
            "STREAMS",
            "app:1",
            "3",
            "wo:1",
            "LIMIT",
            "other",
            "STREAMS",
            "u8",
        ],
        &["XREADGROUP", "GROUP", "g", "c", "x", "y", "STREAMS", "z"],
        &["CONFIG", "GET", "maxmemory"],
        &["config", "set", "maxmemory", "1"],
        &["CONFIG", "RESETSTAT"],
        &["CLIENT", "KILL", "ID", "1"],
        &["CLIENT", "LIST"],
        &["client", "id"],
        &["FLUSHALL"],
        &["FLUSHDB", "ASYNC"],
        &["KEYS", "*"],
        &["SELECT", "0"],
        &["SELECT", "1"],
        &["DEBUG", "SLEEP", "0"],
        &["OBJECT", "ENCODING", "app:1"],
        &["ACL", "SETUSER", "x", "on"],
        &["AUTH", "u", "pw"],
        &["HELLO", "3"],
        &["PING"],
        &["INFO"],
        &["PUBLISH", "ch", "m"],
        &["SUBSCRIBE", "ch"],
        &["NOSUCHCOMMAND", "app:1"],
        &["CONFIG", "NOSUCH"],
        &["MULTI"],
        &["EXEC"],
        &["SCRIPT", "FLUSH"],
        &["COPY", "ro:1", "app:2"],
        &["RENAME", "app:1", "ro:2"],
    ]);
    let rule_sets = [
        "+@all allkeys",
        "+@read allkeys",
        "+@read -@dangerous allkeys",
        "+@all -@dangerous allkeys",
        "+@all -flushall -flushdb -config|set allkeys",
        "+@read +@write -@dangerous ~app:*",
        "+@all %R~ro:* %W~wo:* ~app:*",
        "+@all %RW~app:* %R~ro:*",
        "-@all +get +set +mget +mset ~app:*",
        "+config|get +client|list +client|id +select|0 allkeys",
        "+config -config|set +client -client|kill allkeys",
        "+@admin -@dangerous allkeys",
        "+@scripting +@read ~app:* %R~ro:*",
        "+@all -@all +ping",
        "nocommands +@connection",
        "allcommands -debug resetkeys ~app:*",
        "+@all -select +select|0 allkeys",
        "+@keyspace +@stream +@sortedset +@list +@geo +@bitmap +@string %R~ro:* ~app:*",
        "+@pubsub +@fast allkeys",
        "+@all resetkeys",
    ];
    let mut total = Tally::default();
    for rules in rule_sets {
        let t = compare(&mut conn, rules, &cases);
        total.allowed += t.allowed;
        total.denied_command += t.denied_command;
        total.denied_key += t.denied_key;
        total.errors += t.errors;
        total.stricter += t.stricter;
    }
    // The cases must exercise every outcome, or the comparison proves little.
    assert!(total.allowed > 100, "{total:?}");
    assert!(total.denied_command > 100, "{total:?}");
    assert!(total.denied_key > 30, "{total:?}");
    assert_eq!(total.stricter, 0, "{total:?}");

    // And the decisions an operator expects, spelled out.
    let p = CommandPolicy::parse("+@read -@dangerous allkeys").unwrap();
    assert!(p.check(b"GET", &[b"k"]).is_ok());
    assert!(p.check(b"get", &[b"k"]).is_ok());
    assert_eq!(
        p.check(b"FLUSHALL", &[] as &[&[u8]]),
        Err(Denied::Command {
            command: "flushall"
        })
    );
    assert_eq!(
        p.check(b"NOSUCH", &[b"secret-value"]),
        Err(Denied::UnknownCommand)
    );
    let p = CommandPolicy::parse("+config|get allkeys").unwrap();
    assert!(p.check(b"CONFIG", &[&b"GET"[..], b"x"]).is_ok());
    let denied = p.check(b"CONFIG", &[&b"SET"[..], b"requirepass", b"hunter2"]);
    assert_eq!(
        denied.as_ref().unwrap_err().to_string(),
        "NOPERM bastion: the role's command policy does not allow 'config|set'"
    );
}

/// A denial names neither a key nor a value the client sent.
#[test]
fn denials_never_echo_arguments() {
    let p = CommandPolicy::parse("+@all ~app:*").unwrap();
    let secret = b"s3cr3t-key-name";
    for (name, args) in [
        (&b"GET"[..], vec![&secret[..]]),
        (b"SET", vec![&secret[..], b"v", b"GET"]),
        (b"MSET", vec![&b"app:1"[..], b"v", &secret[..], b"v"]),
    ] {
        let e = p.check(name, &args).unwrap_err();
        let text = format!("{e} {e:?} {}", String::from_utf8_lossy(&e.to_resp()));
        assert!(!text.contains("s3cr3t"), "{text}");
        assert!(text.contains("NOPERM bastion:"), "{text}");
    }
    let p = CommandPolicy::parse("+get allkeys").unwrap();
    let e = p.check(b"s3cr3t-command", &[] as &[&[u8]]).unwrap_err();
    assert!(!e.to_string().contains("s3cr3t"), "{e}");
    let e = p.check(b"CONFIG", &[b"s3cr3t"]).unwrap_err();
    assert!(!e.to_string().contains("s3cr3t"), "{e}");
}

/// Arguments for a sweep: words that are keys under some pattern, keywords key specs look
/// for, numbers (numkeys) and noise.
const WORDS: &[&str] = &[
    "app:1",
    "app:2",
    "ro:1",
    "wo:1",
    "other",
    "0",
    "1",
    "2",
    "3",
    "-1",
    "GET",
    "get",
    "STORE",
    "STREAMS",
    "KEYS",
    "BY",
    "LIMIT",
    "AUTH",
    "AUTH2",
    "SET",
    "INCRBY",
    "OVERFLOW",
    "u8",
    "",
    "*",
    "x",
    "STREAMS\0x",
    "store\0",
    "GROUP",
    "NOACK",
];

/// Rule words for a sweep (valid alone and in any order, as Redis accepts them).
fn rule_words() -> Vec<String> {
    let mut words: Vec<String> = vec![
        "+@all".into(),
        "-@all".into(),
        "allcommands".into(),
        "nocommands".into(),
        "+select|0".into(),
        "+client|id".into(),
        "-config|set".into(),
        "+config|get".into(),
        "-client".into(),
        "+get".into(),
        "-set".into(),
        "+eval".into(),
        "+sort".into(),
        "+migrate".into(),
        "+bitfield".into(),
        "+mset".into(),
        "-debug".into(),
    ];
    for c in policy::categories() {
        words.push(format!("+@{c}"));
        words.push(format!("-@{c}"));
    }
    words
}

/// Key rules for a sweep (applied after `resetkeys`).
const KEY_RULES: &[&str] = &[
    "~app:*",
    "%R~ro:*",
    "%W~wo:*",
    "%RW~app:1",
    "~*:1",
    "%R~*",
    "~[ao]*",
    "%W~o?her",
];

/// Every command of the table, asked with random arguments under random rules, decides as
/// Redis does.
#[test]
fn sweep_over_the_table_decides_as_redis_acl_does() {
    let redis = Redis::start();
    let conn = std::cell::RefCell::new(redis.connect());
    let words = rule_words();
    let mut names: Vec<Vec<&str>> = Vec::new();
    for c in policy::commands() {
        names.push(vec![c.name]);
        for s in c.subcommands {
            let (parent, sub) = s.name.split_once('|').expect("parent|sub");
            names.push(vec![parent, sub]);
        }
    }
    let strategy = (
        prop::collection::vec(prop::sample::select(words.clone()), 0..6),
        prop::option::of(prop::collection::vec(prop::sample::select(KEY_RULES), 0..4)),
        any::<u64>(),
    );
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let mut total = Tally::default();
    let totals = std::cell::RefCell::new(&mut total);
    runner
        .run(&strategy, |(rules, keys, seed)| {
            let mut rules = rules.join(" ");
            match keys {
                None => rules.push_str(" allkeys"),
                Some(k) => {
                    rules.push_str(" resetkeys ");
                    rules.push_str(&k.join(" "));
                }
            }
            let mut rng = seed;
            let mut next = |n: usize| {
                // xorshift64*: a cheap stream of choices from proptest's seed.
                rng ^= rng >> 12;
                rng ^= rng << 25;
                rng ^= rng >> 27;
                (rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n.max(1)
            };
            let mut cmds = Vec::new();
            for name in &names {
                for _ in 0..3 {
                    let spec = policy::lookup(name[0].as_bytes()).expect("table command");
                    let spec = if name.len() == 2 {
                        spec.subcommands
                            .iter()
                            .find(|s| s.name.ends_with(name[1]))
                            .expect("subcommand")
                    } else {
                        spec
                    };
                    let min = spec.arity.unsigned_abs() as usize;
                    let len = if spec.arity > 0 { min } else { min + next(5) };
                    let mut argv: Vec<Vec<u8>> = name
                        .iter()
                        .map(|w| {
                            // Case must not matter.
                            if next(2) == 0 {
                                w.to_ascii_uppercase().into_bytes()
                            } else {
                                w.as_bytes().to_vec()
                            }
                        })
                        .collect();
                    while argv.len() < len.max(name.len()) {
                        argv.push(WORDS[next(WORDS.len())].as_bytes().to_vec());
                    }
                    cmds.push(argv);
                }
            }
            let t = compare(&mut conn.borrow_mut(), &rules, &cmds);
            let mut total = totals.borrow_mut();
            total.allowed += t.allowed;
            total.denied_command += t.denied_command;
            total.denied_key += t.denied_key;
            total.errors += t.errors;
            total.stricter += t.stricter;
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("sweep: {total:?}");
    assert!(total.allowed > 1000, "{total:?}");
    assert!(total.denied_command > 1000, "{total:?}");
    assert!(total.denied_key > 100, "{total:?}");
}

/// Rules Redis refuses, the bastion refuses too (and says which rule).
#[test]
fn rules_redis_refuses_are_refused() {
    let redis = Redis::start();
    let mut conn = redis.connect();
    for rule in [
        "+nosuch",
        "-nosuch",
        "+@nosuch",
        "-@nosuch",
        "+config|nosuch",
        "-get|x",
        "+config|get|x",
        "+get|",
        "%X~a",
        "%~a",
        "allkeys ~app:*",
        "bogus",
    ] {
        let reply = conn.call(&["ACL", "SETUSER", "u", "reset", rule]);
        assert!(
            matches!(reply, OwnedFrame::Error(_)),
            "Redis accepts {rule}: {reply:?}"
        );
        let e = CommandPolicy::parse(rule).expect_err(rule);
        let token = rule.split_ascii_whitespace().last().unwrap();
        assert!(e.to_string().contains(token), "{rule}: {e}");
    }
}

/// Random rule lists, valid and not: Redis accepts a list exactly when the bastion does, and
/// an accepted list decides as Redis does. (`%R`/`%RW` without `~`, which Redis takes as an
/// empty pattern, the bastion refuses as a likely typo: left out here.)
#[test]
fn rule_lists_are_accepted_as_redis_accepts_them() {
    const TOKENS: &[&str] = &[
        "+@all",
        "-@all",
        "+@read",
        "-@write",
        "+@READ",
        "+@nosuch",
        "+get",
        "-GET",
        "+nosuch",
        "+config|get",
        "-config|set",
        "+config|nosuch",
        "+config|",
        "-config|",
        "+select|0",
        "-select|0",
        "+select|",
        "+select|0|1",
        "+config|get|x",
        "+@all|x",
        "allcommands",
        "AllCommands",
        "nocommands",
        "allkeys",
        "ALLKEYS",
        "resetkeys",
        "~app:*",
        "~",
        "%R~ro:*",
        "%W~wo:*",
        "%rw~a",
        "%WR~a",
        "%RR~a",
        "%X~a",
        "%R~",
        "~*",
        "bogus",
        "+",
        "-",
    ];
    let redis = Redis::start();
    let conn = std::cell::RefCell::new(redis.connect());
    let strategy = prop::collection::vec(prop::sample::select(TOKENS), 1..6);
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let sample = commands(&[
        &["GET", "app:1"],
        &["SET", "wo:1", "v"],
        &["CONFIG", "GET", "x"],
        &["CONFIG", "SET", "x", "y"],
        &["SELECT", "0"],
        &["MGET", "a", "ro:1"],
    ]);
    let accepted = std::cell::Cell::new(0);
    runner
        .run(&strategy, |tokens| {
            let rules = tokens.join(" ");
            let reply = conn.borrow_mut().pipeline(&[set_user(&rules)]).remove(0);
            let ours = CommandPolicy::parse(&rules);
            match (&reply, &ours) {
                (OwnedFrame::SimpleString(_), Ok(_)) => {
                    accepted.set(accepted.get() + 1);
                    compare(&mut conn.borrow_mut(), &rules, &sample);
                }
                (OwnedFrame::Error(_), Err(_)) => {}
                _ => panic!("rules [{rules}]: Redis {reply:?}, bastion {ours:?}"),
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(accepted.get() > 20, "{} lists accepted", accepted.get());
}

// ---- through a live inspect-mode session ----------------------------------------------------

/// One request of a live session: sent as a RESP array, or as an inline line.
struct Live {
    argv: Vec<Vec<u8>>,
    inline: bool,
}

fn live(words: &[&str]) -> Live {
    Live {
        argv: argv(words),
        inline: false,
    }
}

fn inline(words: &[&str]) -> Live {
    Live {
        argv: argv(words),
        inline: true,
    }
}

fn wire(req: &Live) -> Vec<u8> {
    if req.inline {
        let words: Vec<&[u8]> = req.argv.iter().map(Vec::as_slice).collect();
        [&words.join(&b' ')[..], b"\r\n"].concat()
    } else {
        let args: Vec<&[u8]> = req.argv.iter().map(Vec::as_slice).collect();
        support::raw::command(&args)
    }
}

/// A command as MONITOR shows it: `"get" "app:1"` (printable arguments only).
fn monitor_form(argv: &[Vec<u8>]) -> String {
    argv.iter()
        .map(|a| format!("\"{}\"", String::from_utf8_lossy(a)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether ACL DRYRUN lets Redis user `u` (given `rules`) run each command.
fn dryrun_allows(conn: &mut Conn, rules: &str, reqs: &[Live]) -> Vec<bool> {
    assert_eq!(
        text(&conn.pipeline(&[set_user(rules)]).remove(0)),
        "OK",
        "{rules}"
    );
    let dryruns: Vec<Vec<Vec<u8>>> = reqs
        .iter()
        .map(|r| [argv(&["ACL", "DRYRUN", "u"]), r.argv.clone()].concat())
        .collect();
    conn.pipeline(&dryruns)
        .iter()
        .zip(reqs)
        .map(|(reply, r)| match verdict(reply) {
            Verdict::Allowed => true,
            Verdict::DeniedCommand(_) | Verdict::DeniedKey(_) => false,
            Verdict::Error(e) => panic!("{:?}: DRYRUN refused: {e}", monitor_form(&r.argv)),
        })
        .collect()
}

fn is_noperm(reply: &[u8]) -> bool {
    reply.starts_with(b"-NOPERM bastion: ")
}

/// Subcommand rules and key patterns decided by a live inspect-mode session — commands held
/// until their subcommand or keys arrived — exactly as Redis' `ACL DRYRUN` decides them:
/// pipelined mixes, inline commands, keys split across reads, denials in the middle of a
/// pipeline (order kept), inside MULTI (EXECABORT). Redis (MONITOR) sees exactly the allowed
/// commands, in order, and none of the denied ones; a key longer than the hold cap is refused
/// with a clear error and never reaches Redis.
#[test]
fn a_live_inspect_session_decides_subcommands_and_keys_as_acl_dryrun() {
    use support::admin::Admin;
    use support::raw::Raw;
    use support::stack::StackOpts;

    let a = Admin::start_with(StackOpts {
        inspect_db: true,
        ..StackOpts::default()
    });
    let s = &a.stack;
    let redis = Redis::start();
    let mut conn = redis.connect();
    let roles: [(&str, Option<&str>, Vec<Live>); 2] = [
        (
            "+ping +echo +get +config|get -config|set +object|encoding +client|id",
            None,
            vec![
                live(&["CONFIG", "GET", "maxmemory"]),
                live(&["CONFIG", "SET", "maxmemory", "0"]),
                live(&["config", "resetstat"]),
                live(&["OBJECT", "ENCODING", "k:a"]),
                live(&["OBJECT", "FREQ", "k:a"]),
                live(&["CLIENT", "ID"]),
                live(&["CLIENT", "KILL", "ID", "999999"]),
                live(&["GET", "k:a"]),
                inline(&["config", "get", "maxmemory"]),
                inline(&["CONFIG", "SET", "maxmemory", "0"]),
                live(&["PING"]),
            ],
        ),
        (
            "+@read +@write -@dangerous +ping +echo +multi +exec",
            Some("~app:* %R~ro:*"),
            vec![
                live(&["SET", "app:1", "v"]),
                live(&["GET", "app:1"]),
                live(&["SET", "other", "v"]),
                live(&["SET", "ro:1", "v"]),
                live(&["GET", "ro:1"]),
                live(&["SET", "app:1", "w", "GET"]),
                live(&["SET", "ro:1", "v", "GET"]),
                live(&["MSET", "app:1", "v", "app:2", "v"]),
                live(&["MSET", "app:1", "v", "other", "v"]),
                live(&["EXISTS", "app:1", "other"]),
                live(&["ZUNIONSTORE", "app:z", "2", "app:a", "ro:b"]),
                live(&["ZUNIONSTORE", "ro:z", "2", "app:a", "app:b"]),
                live(&["LMOVE", "ro:l", "app:l", "LEFT", "RIGHT"]),
                live(&["DEL", "app:2"]),
                inline(&["SET", "other", "v"]),
                inline(&["GET", "app:1"]),
                live(&["PING"]),
            ],
        ),
    ];
    support::process::rt().block_on(async {
        let mut monitor = Raw::connect_tcp_only(s.redis.plain_addr()).await.unwrap();
        let ok = monitor
            .request_str(&["AUTH", "app", &s.upstream_password])
            .await
            .unwrap();
        assert_eq!(ok, b"+OK\r\n");
        assert_eq!(monitor.request_str(&["MONITOR"]).await.unwrap(), b"+OK\r\n");
        let mut expected = Vec::new();
        let mut never = Vec::new();
        for (round, (commands, keys, reqs)) in roles.iter().enumerate() {
            a.replace_role("apps", "app", "*", Some(commands), *keys);
            let rules = format!("{commands} {}", keys.unwrap_or("allkeys"));
            let allows = dryrun_allows(&mut conn, &rules, reqs);
            let mut c = Raw::connect(&s.unix("inspdb")).await.unwrap();
            // Everything pipelined in one write.
            let burst: Vec<u8> = reqs.iter().flat_map(wire).collect();
            c.send(&burst).await.unwrap();
            let replies = c.read_frames(reqs.len()).await.unwrap();
            for ((req, reply), allowed) in reqs.iter().zip(&replies).zip(&allows) {
                let form = monitor_form(&req.argv);
                assert_eq!(
                    !is_noperm(reply),
                    *allowed,
                    "rules [{rules}] {form}: bastion {}",
                    String::from_utf8_lossy(reply)
                );
                if *allowed {
                    expected.push(form.to_ascii_lowercase());
                } else {
                    never.push(form.to_ascii_lowercase());
                }
            }
            // Keys and subcommands split across reads (every 7 bytes), allowed and denied,
            // multibulk and inline, with a command behind each. (Keys of this round only: a
            // command denied here may be allowed in another.)
            let (allowed_key, denied_key) =
                (format!("app:split{round}"), format!("other:split{round}"));
            let inline_key = format!("app:inline{round}");
            let split = [
                live(&["SET", &allowed_key, "v"]),
                live(&["PING"]),
                live(&["SET", &denied_key, "v"]),
                live(&["PING"]),
                inline(&["SET", &inline_key, "v"]),
                inline(&["CONFIG", "SET", "maxmemory", "0"]),
                live(&["CONFIG", "GET", "maxmemory"]),
                live(&["PING"]),
            ];
            let split_allows = dryrun_allows(&mut conn, &rules, &split);
            let bytes: Vec<u8> = split.iter().flat_map(wire).collect();
            for part in bytes.chunks(7) {
                c.send(part).await.unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let replies = c.read_frames(split.len()).await.unwrap();
            for ((req, reply), allowed) in split.iter().zip(&replies).zip(&split_allows) {
                let form = monitor_form(&req.argv).to_ascii_lowercase();
                assert_eq!(!is_noperm(reply), *allowed, "split {form}");
                if *allowed {
                    expected.push(form);
                } else {
                    never.push(form);
                }
            }
            if keys.is_some() {
                // Inside MULTI a held denial aborts the transaction, as Redis' ACL makes it.
                let tx = [
                    command_bytes(&["MULTI"]),
                    command_bytes(&["SET", "other", "in-multi"]),
                    command_bytes(&["EXEC"]),
                ]
                .concat();
                c.send(&tx).await.unwrap();
                let replies = c.read_frames(3).await.unwrap().concat();
                let text = String::from_utf8_lossy(&replies);
                assert!(text.starts_with("+OK\r\n-NOPERM bastion: "), "{text}");
                assert!(text.contains("-EXECABORT"), "{text}");
                never.push("\"set\" \"other\" \"in-multi\"".into());
                // A key longer than the hold cap: refused with a clear error, nothing of it
                // upstream, the session goes on.
                let key = [&b"app:"[..], &vec![b'x'; 70_000]].concat();
                let over = [
                    support::raw::command(&[b"SET", &key, b"v"]),
                    command_bytes(&["ECHO", "after-over-cap"]),
                ]
                .concat();
                c.send(&over).await.unwrap();
                let replies = c.read_frames(2).await.unwrap();
                let text = String::from_utf8_lossy(&replies[0]);
                assert!(
                    is_noperm(&replies[0]) && text.contains("65536 bytes"),
                    "{text}"
                );
                assert_eq!(replies[1], b"$14\r\nafter-over-cap\r\n");
            }
            let marker = format!("end-of-{}", expected.len());
            let echo = c.request_str(&["ECHO", &marker]).await.unwrap();
            assert!(echo.ends_with(format!("{marker}\r\n").as_bytes()));
            expected.push(format!("\"echo\" \"{marker}\""));
        }
        // What Redis ran, from the bastion's sessions: exactly the allowed commands, in order.
        let last = expected.last().cloned().unwrap();
        let mut seen = Vec::new();
        loop {
            let frame = monitor.read_frame().await.unwrap();
            let line = String::from_utf8_lossy(&frame).to_ascii_lowercase();
            let Some((_, command)) = line.trim_end().split_once("] ") else {
                panic!("monitor line {line}");
            };
            assert!(
                !line.contains("xxxxxxxxxx"),
                "the over-cap key reached Redis"
            );
            if command.starts_with("\"auth\"") || command.starts_with("\"hello\"") {
                continue;
            }
            seen.push(command.to_string());
            if command == last {
                break;
            }
        }
        // (Every denied command of a round is one no other round allows.)
        for denied in &never {
            assert!(
                !seen.contains(denied) || expected.contains(denied),
                "Redis ran denied {denied}"
            );
        }
        let ran: Vec<&String> = seen
            .iter()
            .filter(|c| {
                !c.starts_with("\"multi\"")
                    && !c.starts_with("\"exec\"")
                    && !c.starts_with("\"echo\" \"after")
            })
            .collect();
        // MONITOR leaves out admin commands (CONFIG): their replies above were Redis' own.
        let want: Vec<&String> = expected
            .iter()
            .filter(|c| !c.starts_with("\"config\""))
            .collect();
        assert_eq!(ran, want);
    });
}

fn command_bytes(words: &[&str]) -> Vec<u8> {
    support::raw::command_str(words)
}

/// The audit's key count and first key (`CommandSpec::key_count`) are what Redis' own
/// `COMMAND GETKEYS` answers — keys found by keyword search (XREAD … STREAMS, GEORADIUS …
/// STORE, MIGRATE … KEYS), by `numkeys` (ZUNION, EVAL, LMPOP), by a command's own finder
/// (SORT … STORE), and the plain ranges; "Invalid arguments" (no keys found) counts none.
#[test]
fn key_counts_are_command_getkeys_own() {
    let redis = Redis::start();
    let mut conn = redis.connect();
    let cases = commands(&[
        &["GET", "k"],
        &["MSET", "a", "1", "b", "2"],
        &["XREAD", "COUNT", "2", "STREAMS", "s1", "s2", "0", "0"],
        &["XREAD", "STREAMS", "s1", "0"],
        &[
            "XREADGROUP",
            "GROUP",
            "g",
            "c",
            "STREAMS",
            "s1",
            "s2",
            "s3",
            ">",
            ">",
            ">",
        ],
        &[
            "XREAD", "COUNT", "2", "BLOCK", "0", "STREAMS", "streams", "s2", "0", "0",
        ],
        &["GEORADIUS", "g", "0", "0", "1", "km", "STORE", "dst"],
        &["GEORADIUS", "g", "0", "0", "1", "km", "STOREDIST", "dst"],
        &["GEORADIUS", "g", "0", "0", "1", "km"],
        &["GEORADIUSBYMEMBER", "g", "m", "1", "km", "STORE", "dst"],
        &["MIGRATE", "h", "1", "", "0", "5", "KEYS", "a", "b", "c"],
        &[
            "MIGRATE", "h", "1", "", "0", "5", "AUTH", "pw", "KEYS", "a", "b",
        ],
        &["MIGRATE", "h", "1", "k", "0", "5"],
        &["ZUNION", "2", "a", "b"],
        &["ZUNION", "2", "a", "b", "WEIGHTS", "1", "2"],
        &["ZUNIONSTORE", "d", "2", "a", "b"],
        &["ZINTERCARD", "3", "a", "b", "c", "LIMIT", "1"],
        &["EVAL", "return 1", "2", "k1", "k2", "arg"],
        &["EVAL", "return 1", "0"],
        &["LMPOP", "2", "l1", "l2", "LEFT"],
        &["BLMPOP", "0", "2", "l1", "l2", "LEFT"],
        &["SORT", "k", "BY", "w_*", "STORE", "dst"],
        &["SORT", "k", "LIMIT", "0", "1", "GET", "#"],
        &["SORT_RO", "k", "BY", "w_*"],
        &["SET", "k", "v", "GET"],
        &["BITFIELD", "k", "GET", "u8", "0"],
        &["OBJECT", "ENCODING", "k"],
        &["XINFO", "STREAM", "s"],
        &["MEMORY", "USAGE", "k"],
        &["PING"],
        &["BLPOP", "a", "b", "0"],
        &["LCS", "a", "b"],
    ]);
    // And every command of the table, with arguments drawn from WORDS (keywords, counts, keys).
    let mut cases = cases;
    let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = |n: usize| {
        rng ^= rng >> 12;
        rng ^= rng << 25;
        rng ^= rng >> 27;
        (rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n.max(1)
    };
    for c in policy::commands() {
        let entries: Vec<(Vec<&str>, &policy::CommandSpec)> = if c.subcommands.is_empty() {
            vec![(vec![c.name], c)]
        } else {
            c.subcommands
                .iter()
                .map(|s| (s.name.split('|').collect(), s))
                .collect()
        };
        for (name, spec) in entries {
            for _ in 0..8 {
                let min = spec.arity.unsigned_abs() as usize;
                let len = if spec.arity > 0 { min } else { min + next(8) };
                let mut argv = argv(&name);
                while argv.len() < len.max(name.len()) {
                    argv.push(WORDS[next(WORDS.len())].as_bytes().to_vec());
                }
                cases.push(argv);
            }
        }
    }
    let getkeys: Vec<Vec<Vec<u8>>> = cases
        .iter()
        .map(|a| [argv(&["COMMAND", "GETKEYS"]), a.clone()].concat())
        .collect();
    for (argv, reply) in cases.iter().zip(conn.pipeline(&getkeys)) {
        let theirs: Vec<Vec<u8>> = match &reply {
            OwnedFrame::Array(keys) => keys
                .iter()
                .map(|k| match k {
                    OwnedFrame::BulkString(b) => b.clone(),
                    other => panic!("GETKEYS key {other:?}"),
                })
                .collect(),
            // "The command has no key arguments", "Invalid arguments specified".
            OwnedFrame::Error(_) => Vec::new(),
            other => panic!("GETKEYS reply {other:?}"),
        };
        let spec = policy::lookup(&argv[0]).expect("known");
        let spec = match argv.get(1) {
            Some(sub) if !spec.subcommands.is_empty() => spec.subcommand(sub).expect("sub"),
            _ => spec,
        };
        let ours = spec
            .key_count(argv.len() as u64, |i| argv.get(i).map(Vec::as_slice))
            .unwrap_or_default();
        let show: Vec<String> = argv
            .iter()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        assert_eq!(
            ours.count,
            theirs.len() as u64,
            "{show:?}: Redis {theirs:?}"
        );
        assert_eq!(
            ours.first.map(|at| argv[at].clone()),
            theirs.first().cloned(),
            "{show:?}: first key"
        );
    }
}
