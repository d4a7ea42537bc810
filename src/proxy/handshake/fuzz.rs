//! Fuzz entry points. They live in the library (not only under `fuzz/`) so `cargo test` runs
//! them over a small corpus, and the cargo-fuzz targets are one-line calls.
//!
//! Each parses `data` whole with a small limit, checks the result's own invariants, and checks
//! split invariance: every prefix answers either "need more" or exactly what the whole does.

use std::fmt::Debug;

use super::client::{parse_opening, Opening, Parsed};
use super::upstream::{parse_reply, Reply};
use super::{error_reply, HandshakeError};

/// The limit the fuzz entry points parse with: small, so fuzzers reach it.
pub const FUZZ_LIMIT: usize = 256;

/// Fuzz [`parse_opening`]: never panics, split-invariant, `consumed` within the frame.
pub fn fuzz_opening(data: &[u8]) {
    let whole = check_prefixes(data, &split_points(data), |b| parse_opening(b, FUZZ_LIMIT));
    match whole {
        Ok(Some(Parsed {
            opening: Opening::Command { .. },
            consumed,
        })) => assert_eq!(consumed, 0),
        Ok(Some(Parsed { consumed, .. })) => {
            assert!(consumed > 0 && consumed <= data.len().min(FUZZ_LIMIT));
        }
        Ok(None) => assert!(data.len() <= FUZZ_LIMIT),
        Err(e) => check_error(data, &e),
    }
}

/// Fuzz [`parse_reply`]: never panics, split-invariant, `len` within the buffer.
pub fn fuzz_reply(data: &[u8]) {
    let whole = check_prefixes(data, &split_points(data), |b| parse_reply(b, FUZZ_LIMIT));
    match whole {
        Ok(Some(Reply { len, .. })) => assert!(len > 0 && len <= data.len().min(FUZZ_LIMIT)),
        Ok(None) => assert!(data.len() <= FUZZ_LIMIT),
        Err(e) => check_error(data, &e),
    }
}

/// Parse `data` whole and each `data[..cut]`; every prefix must answer `Ok(None)` or the same as
/// the whole. Returns the whole's answer.
pub(super) fn check_prefixes<T: PartialEq + Debug>(
    data: &[u8],
    cuts: &[usize],
    parse: impl Fn(&[u8]) -> Result<Option<T>, HandshakeError>,
) -> Result<Option<T>, HandshakeError> {
    let whole = parse(data);
    for &cut in cuts {
        let prefix = parse(&data[..cut.min(data.len())]);
        if prefix != Ok(None) {
            assert_eq!(prefix, whole, "answer for the first {cut} bytes differs");
        }
    }
    whole
}

/// A few cut points that depend on the input, so the fuzzer can steer them.
fn split_points(data: &[u8]) -> Vec<usize> {
    let len = data.len();
    let mut cuts = vec![len / 2, len.saturating_sub(1), FUZZ_LIMIT];
    if let (Some(&first), Some(&last)) = (data.first(), data.last()) {
        cuts.push(usize::from(first) % (len + 1));
        cuts.push(usize::from(last) % (len + 1));
    }
    cuts.sort_unstable();
    cuts
}

fn check_error(data: &[u8], e: &HandshakeError) {
    if let HandshakeError::TooLarge { limit } = e {
        assert!(data.len() > *limit);
    }
    let line = error_reply(&e.to_string());
    assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Valid and malformed openings; the session-level cases live next to the parsers.
    const OPENINGS: &[&[u8]] = &[
        b"",
        b"*2\r\n$4\r\nAUTH\r\n$7\r\nhunter2\r\n",
        b"*3\r\n$4\r\nauth\r\n$5\r\nalice\r\n$7\r\nhunter2\r\n*1\r\n$4\r\nPING\r\n",
        b"*1\r\n$5\r\nHELLO\r\n",
        b"*7\r\n$5\r\nHELLO\r\n$1\r\n3\r\n$7\r\nSETNAME\r\n$1\r\nn\r\n$4\r\nAUTH\r\n$1\r\nu\r\n$1\r\np\r\n",
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$100000\r\nvvvv",
        b"PING\r\n",
        b"auth alice pw\nGET k\r\n",
        b"HELLO 3 SETNAME x\r\n",
        b":1\r\n",
        b"*0\r\n",
        b"*-1\r\n",
        b"*1\r\n*1\r\n*1\r\n*1\r\n",
        b"*2\r\n$4\r\nAUTH\r\n$-1\r\n",
        b"*2\r\n$4\r\nAUTH\r\n$99999999999999999999999\r\n",
        b"*99999999999999999999\r\n$4\r\nAUTH\r\n",
        b"*1\r\n$4\r\nAUTH",
        b"HELLO 9\r\n",
        b"\r\n",
        b"\"AUTH\" x\r\n",
        b"\xff\xfe\xfd\r\n",
    ];

    const REPLIES: &[&[u8]] = &[
        b"",
        b"+OK\r\n",
        b"-WRONGPASS invalid username-password pair or user is disabled.\r\n",
        b"-NOAUTH Authentication required.\r\n",
        b"!21\r\nSYNTAX invalid syntax\r\n",
        b"%1\r\n$5\r\nproto\r\n:3\r\n+OK\r\n",
        b"*2\r\n$6\r\nserver\r\n$5\r\nredis\r\n",
        b"|1\r\n+key\r\n+val\r\n-ERR annotated\r\n",
        b"=15\r\ntxt:Some string\r\n",
        b",1.5\r\n#t\r\n_\r\n(123\r\n",
        b"*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n+OK\r\n",
        b"$?\r\n;4\r\nabcd\r\n;0\r\n",
        b"HELLO 3 AUTH a b\r\n",
        b"=2\r\nx\r\n",
        b"%2\r\n*0\r\n+a\r\n",
        b"\xff",
    ];

    #[test]
    fn fuzz_entry_points_run_over_the_corpus() {
        for data in OPENINGS {
            fuzz_opening(data);
            fuzz_reply(data);
        }
        for data in REPLIES {
            fuzz_reply(data);
            fuzz_opening(data);
        }
    }

    #[test]
    fn fuzz_entry_points_check_every_prefix_of_the_corpus() {
        for data in OPENINGS.iter().chain(REPLIES) {
            let cuts: Vec<usize> = (0..=data.len()).collect();
            check_prefixes(data, &cuts, |b| parse_opening(b, FUZZ_LIMIT)).ok();
            check_prefixes(data, &cuts, |b| parse_reply(b, FUZZ_LIMIT)).ok();
        }
    }
}
