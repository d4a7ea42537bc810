//! The fuzz entry point for the reply framer and the matcher, in the library so `cargo test`
//! runs it over a corpus and the cargo-fuzz target (`fuzz/fuzz_targets/inspect_replies.rs`) is
//! a one-line call.
//!
//! It frames `data` whole, one byte at a time, and cut at a point the data chooses while moving
//! opaque payload bytes with `skip`; all must report the same replies and the same error, and
//! the replies must tile the stream. The replies then go through a [`Matcher`] fed requests the
//! data chooses, which must never panic.

use super::matcher::{Matched, Matcher};
use super::reply::{Reply, ReplyConfig, ReplyError, ReplyFramer};

/// Small limits so a fuzzer reaches them.
const FUZZ_CONFIG: ReplyConfig = ReplyConfig {
    max_line: 100,
    max_bulk: 1000,
};

/// Fuzz the reply framer and the matcher: never panic, split-invariant, replies tile the stream.
pub fn fuzz_replies(data: &[u8]) {
    let (opts, data) = data.split_first().map_or((0, data), |(o, d)| (*o, d));
    let whole = frame(FUZZ_CONFIG, false, &[data]);
    check_tiling(&whole, data.len() as u64);
    let bytes: Vec<&[u8]> = data.chunks(1).collect();
    assert_eq!(frame(FUZZ_CONFIG, false, &bytes), whole, "byte by byte");
    assert_eq!(frame(FUZZ_CONFIG, true, &[data]), whole, "with skip");
    let cut = usize::from(opts) % (data.len() + 1);
    let (a, b) = data.split_at(cut);
    assert_eq!(frame(FUZZ_CONFIG, true, &[a, b]), whole, "cut at {cut}");

    // Requests chosen by the option byte, one before each reply.
    const REQUESTS: [(&[u8], u64); 8] = [
        (b"GET", 2),
        (b"SUBSCRIBE", 3),
        (b"UNSUBSCRIBE", 1),
        (b"psubscribe", 2),
        (b"PUNSUBSCRIBE", 1),
        (b"SSUBSCRIBE", 2),
        (b"RESET", 1),
        (b"SUBSCRIBE", 1),
    ];
    let mut matcher = Matcher::new();
    let mut last_seq = None;
    for (i, reply) in whole.0.iter().enumerate() {
        let (name, argc) = REQUESTS[(usize::from(opts) + i) % REQUESTS.len()];
        matcher.request(name, argc);
        if let Matched::Reply { seq, .. } = matcher.reply(reply) {
            assert!(last_seq.is_none_or(|l| seq >= l), "replies out of order");
            last_seq = Some(seq);
        }
    }
}

/// Every reply of `chunks` in order and the error that ended them, if any; opaque payload bytes
/// moved with `skip` if `use_skip`.
pub(super) fn frame(
    config: ReplyConfig,
    use_skip: bool,
    chunks: &[&[u8]],
) -> (Vec<Reply>, Option<ReplyError>) {
    let mut framer = ReplyFramer::new(config);
    let mut replies = Vec::new();
    for chunk in chunks {
        let mut rest: &[u8] = chunk;
        loop {
            if use_skip {
                let n = framer.opaque_len().min(rest.len() as u64);
                framer.skip(n);
                rest = &rest[n as usize..];
            }
            match framer.advance(rest) {
                Err(error) => return (replies, Some(error)),
                Ok(step) => {
                    rest = &rest[step.consumed..];
                    match step.reply {
                        Some(reply) => replies.push(reply),
                        None if rest.is_empty() => break,
                        None => {}
                    }
                }
            }
        }
    }
    (replies, None)
}

/// Each reply starts where the one before ended, none is empty, none ends past the data, an
/// error comes after the last reply.
fn check_tiling((replies, error): &(Vec<Reply>, Option<ReplyError>), len: u64) {
    let mut at = 0;
    for reply in replies {
        assert_eq!(reply.start, at, "{reply:?}");
        assert!(reply.end > reply.start && reply.end <= len, "{reply:?}");
        at = reply.end;
    }
    if let Some(error) = error {
        let offset = match *error {
            ReplyError::UnknownType { at, .. }
            | ReplyError::BadLength { at }
            | ReplyError::BadValue { at, .. }
            | ReplyError::LineTooLong { at, .. }
            | ReplyError::MissingCrlf { at }
            | ReplyError::TooDeep { at }
            | ReplyError::NestedPush { at }
            | ReplyError::MisplacedEnd { at } => at,
        };
        assert!(offset >= at && offset <= len, "{error:?} at {offset}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ordinary and odd reply streams; the option byte comes first.
    pub(in crate::proxy::inspect) const CORPUS: &[&[u8]] = &[
        b"",
        b"\x00+OK\r\n-ERR no\r\n:1\r\n$3\r\nabc\r\n$-1\r\n*-1\r\n",
        b"\x01*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$2\r\nhi\r\n",
        b"\x02>3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n>3\r\n$7\r\nmessage\r\n$1\r\na\r\n$1\r\nx\r\n",
        b"\x03%1\r\n+a\r\n~2\r\n:1\r\n,1.5\r\n|1\r\n+k\r\n#t\r\n(123\r\n_\r\n=7\r\ntxt:abc\r\n!5\r\nERR x\r\n",
        b"\x04$?\r\n;2\r\nab\r\n;0\r\n*?\r\n:1\r\n%?\r\n+a\r\n+b\r\n.\r\n.\r\n",
        b"\x05*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:0\r\n",
        b"\x06*1\r\n>0\r\n",
        b"\x07+OK\rX",
        b"\x08$3\r\nabcXY",
        b"\x09.\r\n",
        b"\x0a%?\r\n+a\r\n.\r\n",
        b"\x0b:01\r\n",
        b"\x0c$1001\r\n",
        b"\x0d#x\r\n",
        b"\x0e?\r\n",
        b"\xff-NOPERM this user has no permissions\r\n",
    ];

    #[test]
    fn fuzz_entry_point_runs_over_the_corpus() {
        for data in CORPUS {
            fuzz_replies(data);
        }
    }

    #[test]
    fn every_cut_of_the_corpus_gives_the_same_replies() {
        for data in CORPUS {
            let whole = frame(FUZZ_CONFIG, false, &[data]);
            for cut in 0..=data.len() {
                let (a, b) = data.split_at(cut);
                assert_eq!(
                    frame(FUZZ_CONFIG, true, &[a, b]),
                    whole,
                    "{data:?} at {cut}"
                );
            }
        }
    }
}
