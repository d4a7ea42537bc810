//! Unit and property tests of the reply framer and the matcher. Replies captured from a real
//! redis-server are framed in `tests/inspect_replies.rs`.

use proptest::prelude::*;
use redis_protocol::resp3::types::Resp3Frame;

use super::fuzz::frame;
use super::matcher::{Matched, Matcher};
use super::reply::{Reply, ReplyConfig, ReplyError, ReplyFramer, ReplyKind, MAX_DEPTH};

fn replies(data: &[u8]) -> (Vec<Reply>, Option<ReplyError>) {
    frame(ReplyConfig::default(), false, &[data])
}

fn kinds(data: &[u8]) -> Vec<ReplyKind> {
    let (replies, error) = replies(data);
    assert_eq!(error, None, "{data:?}");
    replies.iter().map(|r| r.kind).collect()
}

fn error(data: &[u8]) -> Option<ReplyError> {
    replies(data).1
}

#[test]
fn every_resp3_type_is_one_reply_of_its_kind() {
    use ReplyKind::*;
    let data = b"+OK\r\n-ERR x\r\n:-5\r\n,3.14\r\n(3492890328409238509324850943850943825024385\r\n\
#t\r\n#f\r\n_\r\n$-1\r\n*-1\r\n$3\r\nabc\r\n!9\r\nSYNTAX no\r\n=8\r\ntxt:abcd\r\n\
*2\r\n:1\r\n:2\r\n%1\r\n+k\r\n+v\r\n~1\r\n:1\r\n>2\r\n+pubsub\r\n+x\r\n";
    assert_eq!(
        kinds(data),
        [
            SimpleString,
            Error,
            Integer,
            Double,
            BigNumber,
            Boolean,
            Boolean,
            Null,
            Null,
            Null,
            BulkString,
            BulkError,
            Verbatim,
            Array,
            Map,
            Set,
            Push
        ]
    );
}

#[test]
fn a_reply_is_reported_at_its_last_byte_with_its_extent() {
    let mut framer = ReplyFramer::new(ReplyConfig::default());
    let data = b"*2\r\n$3\r\nabc\r\n:7\r\n+OK\r\n";
    let step = framer.advance(&data[..16]).unwrap();
    assert_eq!((step.consumed, step.reply), (16, None));
    let step = framer.advance(&data[16..]).unwrap();
    let reply = step.reply.expect("complete");
    assert_eq!((step.consumed, reply.start, reply.end), (1, 0, 17));
    assert_eq!(
        reply.head.map(|h| h.as_bytes().to_vec()),
        Some(b"abc".to_vec())
    );
    assert_eq!(reply.last_int, Some(7));
    let step = framer.advance(&data[17..]).unwrap();
    let ok = step.reply.expect("+OK");
    assert_eq!((ok.start, ok.end, ok.len()), (17, 22, 5));
}

#[test]
fn errors_report_their_code() {
    let (r, _) = replies(b"-NOPERM this user has no permissions\r\n-ERR\r\n!11\r\nWRONGTYPE x\r\n");
    let codes: Vec<_> = r
        .iter()
        .map(|r| r.code.unwrap().as_bytes().to_vec())
        .collect();
    assert_eq!(codes, [&b"NOPERM"[..], b"ERR", b"WRONGTYPE"]);
    // An error inside an array (EXEC) is not the reply's code.
    let (r, _) = replies(b"*2\r\n+OK\r\n-ERR x\r\n");
    assert_eq!((r[0].kind, r[0].code), (ReplyKind::Array, None));
}

#[test]
fn attributes_belong_to_the_value_after_them() {
    let data = b"|1\r\n+key-popularity\r\n%1\r\n$1\r\na\r\n,0.19\r\n*2\r\n:2\r\n:3\r\n";
    let (r, e) = replies(data);
    assert_eq!(e, None);
    assert_eq!(r.len(), 1);
    assert_eq!(
        (r[0].kind, r[0].attribute, r[0].start, r[0].end),
        (ReplyKind::Array, true, 0, data.len() as u64)
    );
    // Nested: the attribute is not one of the array's two elements.
    assert_eq!(
        kinds(b"*2\r\n:1\r\n|1\r\n+a\r\n+b\r\n:2\r\n+OK\r\n"),
        [ReplyKind::Array, ReplyKind::SimpleString]
    );
}

#[test]
fn streamed_strings_and_aggregates_end_where_the_spec_says() {
    use ReplyKind::*;
    let data = b"$?\r\n;4\r\nHell\r\n;1\r\no\r\n;0\r\n*?\r\n:1\r\n$?\r\n;0\r\n.\r\n%?\r\n+a\r\n:1\r\n.\r\n~?\r\n.\r\n";
    assert_eq!(kinds(data), [BulkString, Array, Map, Set]);
    // A map's `.` must come after a value, not after a key.
    assert!(matches!(
        error(b"%?\r\n+a\r\n.\r\n"),
        Some(ReplyError::MisplacedEnd { at: 8 })
    ));
    assert!(matches!(
        error(b".\r\n"),
        Some(ReplyError::MisplacedEnd { at: 0 })
    ));
    assert!(matches!(
        error(b"$?\r\n:1\r\n"),
        Some(ReplyError::MissingCrlf { .. })
    ));
}

#[test]
fn pushes_are_top_level_only() {
    assert!(matches!(
        error(b"*1\r\n>1\r\n+x\r\n"),
        Some(ReplyError::NestedPush { at: 4 })
    ));
}

#[test]
fn nesting_is_bounded() {
    let mut ok = b"*1\r\n".repeat(MAX_DEPTH);
    ok.extend_from_slice(b":1\r\n");
    assert_eq!(kinds(&ok), [ReplyKind::Array]);
    let deep = b"*1\r\n".repeat(MAX_DEPTH + 1);
    assert_eq!(
        error(&deep),
        Some(ReplyError::TooDeep {
            at: 4 * (MAX_DEPTH as u64 + 1)
        })
    );
}

#[test]
fn lines_and_lengths_are_bounded() {
    let config = ReplyConfig {
        max_line: 10,
        max_bulk: 5,
    };
    let run = |d: &[u8]| frame(config, false, &[d]).1;
    assert_eq!(run(b"+0123456789\r\n"), None);
    assert_eq!(
        run(b"+0123456789X\r\n"),
        Some(ReplyError::LineTooLong { limit: 10, at: 11 })
    );
    assert_eq!(run(b"$6\r\n"), Some(ReplyError::BadLength { at: 4 }));
    assert_eq!(run(b"$?\r\n;6\r\n"), Some(ReplyError::BadLength { at: 8 }));
    assert_eq!(
        error(b"*123456789012345678901\r\n"),
        Some(ReplyError::BadLength { at: 21 })
    );
}

#[test]
fn malformed_replies_are_typed_errors() {
    for (data, expected) in [
        (&b"?\r\n"[..], ReplyError::UnknownType { byte: b'?', at: 0 }),
        (b"+OK\rX", ReplyError::MissingCrlf { at: 4 }),
        (b"+O\nK\r\n", ReplyError::MissingCrlf { at: 2 }),
        (b"$3\r\nabcX", ReplyError::MissingCrlf { at: 7 }),
        (b"$-2\r\n", ReplyError::BadLength { at: 5 }),
        (b"%-1\r\n", ReplyError::BadLength { at: 5 }),
        (b"|?\r\n", ReplyError::BadLength { at: 4 }),
        (
            b":01\r\n",
            ReplyError::BadValue {
                what: "integer",
                at: 5,
            },
        ),
        (
            b"#x\r\n",
            ReplyError::BadValue {
                what: "boolean",
                at: 4,
            },
        ),
        (
            b"_x\r\n",
            ReplyError::BadValue {
                what: "null",
                at: 4,
            },
        ),
        (
            b",\r\n",
            ReplyError::BadValue {
                what: "double",
                at: 3,
            },
        ),
    ] {
        assert_eq!(error(data), Some(expected), "{data:?}");
    }
    // Nothing after an error.
    let mut framer = ReplyFramer::new(ReplyConfig::default());
    assert!(framer.advance(b"?").is_err());
    assert!(framer.advance(b"+OK\r\n").is_err());
}

#[test]
fn payloads_are_opaque_and_skippable() {
    let mut framer = ReplyFramer::new(ReplyConfig::default());
    let step = framer.advance(b"$10\r\n").unwrap();
    assert_eq!(step.consumed, 5);
    assert_eq!(framer.opaque_len(), 10);
    framer.skip(100);
    assert_eq!((framer.offset(), framer.opaque_len()), (15, 0));
    let reply = framer.advance(b"\r\n").unwrap().reply.expect("done");
    assert_eq!((reply.kind, reply.end), (ReplyKind::BulkString, 17));
    // The head of an array is kept, so it is not opaque.
    framer.advance(b"*1\r\n$7\r\n").unwrap();
    assert_eq!(framer.opaque_len(), 0);
}

// ---- property tests ------------------------------------------------------------------------

/// A reply value to encode.
#[derive(Debug, Clone)]
enum V {
    Simple(String),
    Error(String),
    Int(i64),
    Double(f64),
    Big(u128),
    Bool(bool),
    Null,
    Bulk(Vec<u8>),
    BulkError(String),
    Verbatim(String),
    Array(Vec<V>),
    Map(Vec<(V, V)>),
    Set(Vec<V>),
    Attributed(Vec<(V, V)>, Box<V>),
    Chunks(Vec<Vec<u8>>),
    Streamed(u8, Vec<V>),
}

fn word() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 ]{0,12}"
}

/// Scalars redis-protocol can decode (and hash, as map keys).
fn scalar() -> impl Strategy<Value = V> {
    prop_oneof![
        word().prop_map(V::Simple),
        "[A-Z]{1,8}( [a-z]{0,8})?".prop_map(V::Error),
        any::<i64>().prop_map(V::Int),
        any::<i32>().prop_map(|n| V::Double(f64::from(n) / 4.0)),
        (1u128..).prop_map(V::Big),
        any::<bool>().prop_map(V::Bool),
        prop::collection::vec(any::<u8>(), 0..40).prop_map(V::Bulk),
        "[A-Z]{1,8} [a-z]{0,8}".prop_map(V::BulkError),
        word().prop_map(V::Verbatim),
    ]
}

/// Values without streaming (redis-protocol's complete decoder reads them).
fn value() -> impl Strategy<Value = V> {
    let leaf = prop_oneof![scalar(), Just(V::Null)];
    leaf.prop_recursive(4, 40, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(V::Array),
            prop::collection::vec((scalar(), inner.clone()), 0..4).prop_map(V::Map),
            prop::collection::vec(scalar(), 0..4).prop_map(V::Set),
            (
                prop::collection::vec((scalar(), scalar()), 1..3),
                inner.clone()
            )
                // redis-protocol decodes neither an attributed null nor two attributes in a row.
                .prop_filter("attributes on a null", |(_, v)| !matches!(
                    v,
                    V::Null | V::Attributed(..)
                ))
                .prop_map(|(a, v)| V::Attributed(a, Box::new(v))),
        ]
    })
}

/// Any value, streamed ones included.
fn any_value() -> impl Strategy<Value = V> {
    prop_oneof![
        3 => value(),
        1 => prop::collection::vec(prop::collection::vec(any::<u8>(), 1..10), 0..4).prop_map(V::Chunks),
        1 => (prop::sample::select(vec![b'*', b'%', b'~']), prop::collection::vec(value(), 0..3))
            .prop_map(|(t, mut v)| {
                if t == b'%' && v.len() % 2 == 1 {
                    v.pop();
                }
                V::Streamed(t, v)
            }),
    ]
}

fn encode(v: &V, out: &mut Vec<u8>) {
    let line = |out: &mut Vec<u8>, t: u8, s: &[u8]| {
        out.push(t);
        out.extend_from_slice(s);
        out.extend_from_slice(b"\r\n");
    };
    let blob = |out: &mut Vec<u8>, t: u8, s: &[u8]| {
        line(out, t, s.len().to_string().as_bytes());
        out.extend_from_slice(s);
        out.extend_from_slice(b"\r\n");
    };
    match v {
        V::Simple(s) => line(out, b'+', s.as_bytes()),
        V::Error(s) => line(out, b'-', s.as_bytes()),
        V::Int(n) => line(out, b':', n.to_string().as_bytes()),
        V::Double(d) => line(out, b',', d.to_string().as_bytes()),
        V::Big(n) => line(out, b'(', n.to_string().as_bytes()),
        V::Bool(b) => line(out, b'#', if *b { b"t" } else { b"f" }),
        V::Null => line(out, b'_', b""),
        V::Bulk(b) => blob(out, b'$', b),
        V::BulkError(s) => blob(out, b'!', s.as_bytes()),
        V::Verbatim(s) => blob(out, b'=', format!("txt:{s}").as_bytes()),
        V::Array(items) | V::Set(items) => {
            let t = if matches!(v, V::Array(_)) { b'*' } else { b'~' };
            line(out, t, items.len().to_string().as_bytes());
            items.iter().for_each(|i| encode(i, out));
        }
        V::Map(pairs) | V::Attributed(pairs, _) => {
            let t = if matches!(v, V::Map(_)) { b'%' } else { b'|' };
            line(out, t, pairs.len().to_string().as_bytes());
            for (k, v) in pairs {
                encode(k, out);
                encode(v, out);
            }
            if let V::Attributed(_, inner) = v {
                encode(inner, out);
            }
        }
        V::Chunks(chunks) => {
            line(out, b'$', b"?");
            for c in chunks {
                blob(out, b';', c);
            }
            line(out, b';', b"0");
        }
        V::Streamed(t, items) => {
            line(out, *t, b"?");
            items.iter().for_each(|i| encode(i, out));
            line(out, b'.', b"");
        }
    }
}

fn expected_kind(v: &V) -> ReplyKind {
    match v {
        V::Simple(_) => ReplyKind::SimpleString,
        V::Error(_) => ReplyKind::Error,
        V::Int(_) => ReplyKind::Integer,
        V::Double(_) => ReplyKind::Double,
        V::Big(_) => ReplyKind::BigNumber,
        V::Bool(_) => ReplyKind::Boolean,
        V::Null => ReplyKind::Null,
        V::Bulk(_) | V::Chunks(_) => ReplyKind::BulkString,
        V::BulkError(_) => ReplyKind::BulkError,
        V::Verbatim(_) => ReplyKind::Verbatim,
        V::Array(_) | V::Streamed(b'*', _) => ReplyKind::Array,
        V::Map(_) | V::Streamed(b'%', _) => ReplyKind::Map,
        V::Set(_) | V::Streamed(..) => ReplyKind::Set,
        V::Attributed(_, inner) => expected_kind(inner),
    }
}

/// The kind redis-protocol's decoder gives the same bytes.
fn oracle_kind(frame: &redis_protocol::resp3::types::OwnedFrame) -> ReplyKind {
    use redis_protocol::resp3::types::FrameKind as K;
    match frame.kind() {
        K::SimpleString => ReplyKind::SimpleString,
        K::SimpleError => ReplyKind::Error,
        K::Number => ReplyKind::Integer,
        K::Double => ReplyKind::Double,
        K::BigNumber => ReplyKind::BigNumber,
        K::Boolean => ReplyKind::Boolean,
        K::Null => ReplyKind::Null,
        K::BlobString => ReplyKind::BulkString,
        K::BlobError => ReplyKind::BulkError,
        K::VerbatimString => ReplyKind::Verbatim,
        K::Array => ReplyKind::Array,
        K::Map => ReplyKind::Map,
        K::Set => ReplyKind::Set,
        K::Push => ReplyKind::Push,
        other => panic!("unexpected frame kind {other:?}"),
    }
}

proptest! {
    #[test]
    fn any_split_of_a_reply_stream_gives_the_same_replies(
        values in prop::collection::vec(any_value(), 1..6),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let mut data = Vec::new();
        let mut ends = Vec::new();
        for v in &values {
            encode(v, &mut data);
            ends.push(data.len() as u64);
        }
        let whole = frame(ReplyConfig::default(), false, &[&data]);
        prop_assert_eq!(whole.1, None);
        let got: Vec<_> = whole.0.iter().map(|r| (r.kind, r.end)).collect();
        let want: Vec<_> = values.iter().map(expected_kind).zip(ends).collect();
        prop_assert_eq!(got, want);

        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(data.len() + 1)).collect();
        points.sort_unstable();
        let mut chunks = Vec::new();
        let mut from = 0;
        for p in points {
            chunks.push(&data[from..p]);
            from = p;
        }
        chunks.push(&data[from..]);
        prop_assert_eq!(frame(ReplyConfig::default(), true, &chunks), whole);
    }

    #[test]
    fn redis_protocol_agrees_on_extent_and_kind(v in value()) {
        let mut data = Vec::new();
        encode(&v, &mut data);
        let (frame_, used) = redis_protocol::resp3::decode::complete::decode(&data)
            .expect("redis-protocol decodes it")
            .expect("complete");
        let (ours, error) = replies(&data);
        prop_assert_eq!(error, None);
        prop_assert_eq!(ours.len(), 1);
        prop_assert_eq!(ours[0].end, used as u64);
        prop_assert_eq!(ours[0].kind, oracle_kind(&frame_));
    }
}

// ---- matcher -------------------------------------------------------------------------------

fn reply_of(data: &[u8]) -> Reply {
    let (r, e) = replies(data);
    assert_eq!((r.len(), e), (1, None), "{data:?}");
    r[0]
}

fn sub_reply(push: bool, kind: &str, channel: &str, count: i64) -> Reply {
    let t = if push { '>' } else { '*' };
    let data = format!(
        "{t}3\r\n${}\r\n{kind}\r\n${}\r\n{channel}\r\n:{count}\r\n",
        kind.len(),
        channel.len()
    );
    reply_of(data.as_bytes())
}

#[test]
fn pipelined_replies_pair_in_order_and_pushes_answer_nothing() {
    let mut m = Matcher::new();
    assert_eq!(m.request(b"GET", 2), 0);
    assert_eq!(m.request(b"HGETALL", 2), 1);
    let invalidate = reply_of(b">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n");
    assert_eq!(m.reply(&invalidate), Matched::Push);
    assert_eq!(
        m.reply(&reply_of(b"$1\r\nv\r\n")),
        Matched::Reply { seq: 0, last: true }
    );
    assert_eq!(
        m.reply(&reply_of(b"%0\r\n")),
        Matched::Reply { seq: 1, last: true }
    );
    assert_eq!(m.reply(&reply_of(b"+OK\r\n")), Matched::Unexpected);
    assert_eq!(m.protocol_error(), 2);
    assert_eq!(
        m.reply(&reply_of(b"-ERR Protocol error\r\n")),
        Matched::Reply { seq: 2, last: true }
    );
}

#[test]
fn resp2_subscribe_confirmations_and_messages() {
    let mut m = Matcher::new();
    m.request(b"subscribe", 3); // a b
    m.request(b"PING", 1);
    assert_eq!(
        m.reply(&sub_reply(false, "subscribe", "a", 1)),
        Matched::Reply {
            seq: 0,
            last: false
        }
    );
    // A message can arrive between confirmations.
    let msg = reply_of(b"*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$2\r\nhi\r\n");
    assert_eq!(m.reply(&msg), Matched::Message);
    assert_eq!(
        m.reply(&sub_reply(false, "subscribe", "b", 2)),
        Matched::Reply { seq: 0, last: true }
    );
    let pong = reply_of(b"*2\r\n$4\r\npong\r\n$0\r\n\r\n");
    assert_eq!(m.reply(&pong), Matched::Reply { seq: 1, last: true });
    // UNSUBSCRIBE without channels: one reply per channel subscribed.
    m.request(b"PSUBSCRIBE", 2);
    assert_eq!(
        m.reply(&sub_reply(false, "psubscribe", "p*", 3)),
        Matched::Reply { seq: 2, last: true }
    );
    m.request(b"UNSUBSCRIBE", 1);
    assert_eq!(
        m.reply(&sub_reply(false, "unsubscribe", "a", 2)),
        Matched::Reply {
            seq: 3,
            last: false
        }
    );
    assert_eq!(
        m.reply(&sub_reply(false, "unsubscribe", "b", 1)),
        Matched::Reply { seq: 3, last: true }
    );
    assert!(m.subscribed());
    // No channel left: one reply (with a null channel).
    m.request(b"UNSUBSCRIBE", 1);
    let none = reply_of(b"*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:1\r\n");
    assert_eq!(m.reply(&none), Matched::Reply { seq: 4, last: true });
    m.request(b"RESET", 1);
    assert_eq!(
        m.reply(&reply_of(b"+RESET\r\n")),
        Matched::Reply { seq: 5, last: true }
    );
    assert!(!m.subscribed());
    // Not subscribed: an array starting with "message" is a plain reply (LRANGE).
    m.request(b"LRANGE", 4);
    assert_eq!(m.reply(&msg), Matched::Reply { seq: 6, last: true });
}

#[test]
fn resp3_confirmations_are_pushes_that_answer_the_subscribe() {
    let mut m = Matcher::new();
    m.request(b"SSUBSCRIBE", 2);
    m.request(b"GET", 2);
    assert_eq!(
        m.reply(&sub_reply(true, "ssubscribe", "s", 1)),
        Matched::Reply { seq: 0, last: true }
    );
    let msg = reply_of(b">3\r\n$8\r\nsmessage\r\n$1\r\ns\r\n$1\r\nx\r\n");
    assert_eq!(m.reply(&msg), Matched::Push);
    assert_eq!(
        m.reply(&reply_of(b"_\r\n")),
        Matched::Reply { seq: 1, last: true }
    );
    // A shard channel dropped by the server (slot moved): a push, counted.
    assert_eq!(
        m.reply(&sub_reply(true, "sunsubscribe", "s", 0)),
        Matched::Push
    );
    assert!(!m.subscribed());
    // SUBSCRIBE without channels is an arity error: one reply.
    m.request(b"SUBSCRIBE", 1);
    assert_eq!(
        m.reply(&reply_of(b"-ERR wrong number of arguments\r\n")),
        Matched::Reply { seq: 2, last: true }
    );
    assert_eq!(m.outstanding(), 0);
}

#[test]
fn only_the_first_bytes_of_an_arrays_head_are_looked_at() {
    let mut framer = ReplyFramer::new(ReplyConfig::default());
    framer.advance(b"*2\r\n$1000\r\n").unwrap();
    assert_eq!(framer.opaque_len(), 0);
    framer.advance(&[b'm'; 40]).unwrap();
    // 32 bytes kept, the other 8 read past.
    assert_eq!((framer.offset(), framer.opaque_len()), (51, 1000 - 40));
    framer.skip(1000 - 40);
    let reply = framer.advance(b"\r\n:5\r\n").unwrap().reply.expect("done");
    assert_eq!(reply.head.map(|h| h.as_bytes().len()), Some(32));
    assert_eq!((reply.last_int, reply.end), (Some(5), 1017));
}

#[test]
fn a_plain_reply_that_looks_like_a_confirmation_moves_no_count() {
    let mut m = Matcher::new();
    m.request(b"LRANGE", 4);
    assert_eq!(
        m.reply(&sub_reply(false, "subscribe", "x", 5)),
        Matched::Reply { seq: 0, last: true }
    );
    assert!(!m.subscribed());
    // Subscribed in RESP2, an unsubscribe nobody asked for is out of band.
    m.request(b"SSUBSCRIBE", 2);
    m.reply(&sub_reply(false, "ssubscribe", "s", 1));
    m.request(b"PING", 1);
    assert_eq!(
        m.reply(&sub_reply(false, "sunsubscribe", "s", 0)),
        Matched::Message
    );
    assert!(!m.subscribed());
    assert_eq!(
        m.reply(&reply_of(b"+PONG\r\n")),
        Matched::Reply { seq: 2, last: true }
    );
}

/// Bytes drawn mostly from RESP's alphabet, so the fuzz entry reaches deep states.
fn resp_bytes() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        4 => prop::sample::select(b"+-:,(#_$!=*%~|>;.?\r\n0123-".to_vec()),
        1 => any::<u8>(),
    ];
    prop::collection::vec(byte, 0..120)
}

proptest! {
    #[test]
    fn the_fuzz_entry_holds_on_resp_like_noise(data in resp_bytes()) {
        super::fuzz_replies(&data);
    }

    /// Pipelined plain commands with pushes anywhere between their replies: every reply pairs
    /// with its request in order, every push is a push.
    #[test]
    fn pipelined_replies_pair_in_order_around_pushes(
        shape in prop::collection::vec((any::<bool>(), 0u8..3), 1..30),
    ) {
        let mut m = Matcher::new();
        let mut data = Vec::new();
        let mut expected = Vec::new();
        for (i, (push_before, kind)) in shape.iter().enumerate() {
            m.request(b"GET", 2);
            if *push_before {
                data.extend_from_slice(b">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n");
                expected.push(Matched::Push);
            }
            data.extend_from_slice(match kind {
                0 => &b"$1\r\nv\r\n"[..],
                1 => b"*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$1\r\nb\r\n",
                _ => b"-ERR x\r\n",
            });
            expected.push(Matched::Reply { seq: i as u64, last: true });
        }
        let (replies, error) = replies(&data);
        prop_assert_eq!(error, None);
        let got: Vec<_> = replies.iter().map(|r| m.reply(r)).collect();
        prop_assert_eq!(got, expected);
        prop_assert_eq!(m.outstanding(), 0);
    }
}
