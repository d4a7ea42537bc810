//! The only RESP bytes the handshake reads itself: aggregate header lines (`*N\r\n`).
//!
//! Everything else — bulk strings, simple strings, errors, numbers, every RESP3 scalar — is
//! decoded by redis-protocol. We walk aggregates ourselves for two reasons:
//!
//! - redis-protocol 6.0 decodes nested aggregates by recursion with no depth bound (and
//!   pre-allocates up to 64 KiB per aggregate header): `*1\r\n` repeated ~4000 times overflows a
//!   2 MiB thread stack and aborts the whole process. Walking aggregates with an explicit stack
//!   and a depth bound means the decoder only ever sees a complete, shallow frame.
//! - A client may open with `SET k <10 MB value>`. Splitting off the `*N\r\n` header lets the
//!   opening parser decode just the first element (the command name) and decide without
//!   buffering the whole frame.

use redis_protocol::resp3::decode::complete::decode_range as resp3_decode_range;

use super::HandshakeError;

/// Deepest aggregate nesting accepted in an upstream reply. A HELLO reply nests three deep (map →
/// module array → module map); nothing the handshake waits for needs more.
pub(super) const MAX_REPLY_DEPTH: usize = 32;

/// Split an aggregate header line `<kind><count>\r\n` off the front of `buf`.
///
/// Returns the count's bytes (unparsed: RESP2 and RESP3 read them differently) and the length of
/// the whole line including CRLF, or `None` until the CRLF has arrived. Like redis-protocol, the
/// line ends at the first CRLF.
pub(super) fn header_line(buf: &[u8]) -> Option<(&[u8], usize)> {
    let rest = buf.get(1..)?;
    let end = rest.windows(2).position(|w| w == b"\r\n")?;
    Some((&rest[..end], 1 + end + 2))
}

/// The length of the first complete reply frame in `buf`, or `None` if it is not complete yet.
///
/// Aggregates are counted here; every scalar is framed by redis-protocol's RESP3 decoder (which
/// also reads RESP2). The caller decodes the returned extent with redis-protocol to classify it.
pub(super) fn reply_extent(buf: &[u8]) -> Result<Option<usize>, HandshakeError> {
    let mut pos = 0;
    // Elements each open aggregate still expects, innermost last. Every entry is at least 1.
    let mut open: Vec<usize> = Vec::new();
    loop {
        let Some(&kind) = buf.get(pos) else {
            return Ok(None);
        };
        match kind {
            b'*' | b'%' | b'~' | b'>' | b'|' => {
                let Some((count, header_len)) = header_line(&buf[pos..]) else {
                    return Ok(None);
                };
                let elements = aggregate_elements(kind, count)?;
                pos += header_len;
                if elements > 0 {
                    if open.len() == MAX_REPLY_DEPTH {
                        return Err(malformed_reply("aggregates nested too deeply"));
                    }
                    open.push(elements);
                    continue;
                }
                // An empty aggregate is a complete element: fall through to close parents.
            }
            // redis-protocol reads a frame starting with `H` as a server-side inline HELLO;
            // no upstream sends one, and its owned form cannot be re-encoded, so refuse it here.
            b'H' => return Err(malformed_reply("unexpected inline HELLO")),
            _ => match resp3_decode_range(&buf[pos..]) {
                Ok(Some((_, len))) => pos += len,
                Ok(None) => return Ok(None),
                Err(_) => return Err(malformed_reply("malformed frame")),
            },
        }
        // One element is complete; it may complete its parent, and so on outwards.
        loop {
            match open.last_mut() {
                None => return Ok(Some(pos)),
                Some(remaining) => {
                    // Entries are pushed non-zero and popped on reaching zero, so this is >= 1.
                    *remaining -= 1;
                    if *remaining > 0 {
                        break;
                    }
                    open.pop();
                }
            }
        }
    }
}

/// How many elements follow an aggregate header of `kind` with count bytes `count`.
fn aggregate_elements(kind: u8, count: &[u8]) -> Result<usize, HandshakeError> {
    // RESP3 counts are unsigned decimals; `?` (streamed) and RESP2's `-1` (null) are not
    // replies to AUTH or HELLO, and redis-protocol's complete decoder refuses them too.
    let n: usize = std::str::from_utf8(count)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| malformed_reply("bad aggregate length"))?;
    let elements = match kind {
        // A map has key/value pairs; an attribute has pairs and then annotates the next frame.
        b'%' => n.checked_mul(2),
        b'|' => n.checked_mul(2).and_then(|e| e.checked_add(1)),
        _ => Some(n),
    };
    elements.ok_or_else(|| malformed_reply("bad aggregate length"))
}

fn malformed_reply(what: &str) -> HandshakeError {
    HandshakeError::Protocol(format!("upstream reply: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_line_needs_crlf() {
        assert_eq!(header_line(b""), None);
        assert_eq!(header_line(b"*"), None);
        assert_eq!(header_line(b"*12\r"), None);
        assert_eq!(header_line(b"*12\r\n$3"), Some((&b"12"[..], 5)));
        assert_eq!(header_line(b"*\r\n"), Some((&b""[..], 3)));
    }

    #[test]
    fn extent_of_nested_replies() {
        assert_eq!(reply_extent(b"+OK\r\nrest").unwrap(), Some(5));
        assert_eq!(reply_extent(b"*0\r\n+OK\r\n").unwrap(), Some(4));
        assert_eq!(
            reply_extent(b"*2\r\n*1\r\n:1\r\n$1\r\nx\r\n").unwrap(),
            Some(19)
        );
        assert_eq!(reply_extent(b"*2\r\n*1\r\n:1\r\n").unwrap(), None);
        assert_eq!(reply_extent(b"%1\r\n+a\r\n*0\r\n").unwrap(), Some(12));
        assert_eq!(
            reply_extent(b"|1\r\n+a\r\n+b\r\n+OK\r\n").unwrap(),
            Some(17)
        );
    }

    #[test]
    fn deep_nesting_is_refused_not_recursed() {
        let mut deep = b"*1\r\n".repeat(100_000);
        deep.extend_from_slice(b"+OK\r\n");
        assert!(matches!(
            reply_extent(&deep),
            Err(HandshakeError::Protocol(_))
        ));
        let mut ok = b"*1\r\n".repeat(MAX_REPLY_DEPTH);
        ok.extend_from_slice(b"+OK\r\n");
        assert_eq!(reply_extent(&ok).unwrap(), Some(ok.len()));
    }

    #[test]
    fn streamed_and_null_aggregates_are_refused() {
        assert!(reply_extent(b"*?\r\n").is_err());
        assert!(reply_extent(b"*-1\r\n").is_err());
        assert!(reply_extent(b"%99999999999999999999\r\n").is_err());
    }
}
