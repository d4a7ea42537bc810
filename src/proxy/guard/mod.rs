//! The command guard: the requests direction (client → upstream) framed command by command, so
//! a policy can decide on each one (AUTH, HELLO … AUTH, RESET; later per-command rules) while
//! the replies direction stays a plain byte relay.
//!
//! - [`framer`]: a streaming, sans-IO RESP request framer that frames exactly as Redis 7 does,
//!   reporting each command's name as soon as it is known and letting bulk payloads pass
//!   without being buffered.
//! - `splitargs`: Redis' inline-command splitting (`sdssplitargs`), byte by byte.
//! - [`rules`]: what becomes of AUTH, HELLO … AUTH, RESET and protocol errors (and why the
//!   upstream, not the bastion, answers each of them).
//! - [`driver`]: the [`Guard`], which runs a session's requests direction through the framer
//!   and the rules as a relay filter, taking a small [`Policy`] from the session; in inspect
//!   mode it also holds a command the command policy decides by its arguments until they
//!   arrived (at most [`driver::HOLD_CAP`] bytes).
//!
//! What this module must never do: disagree with Redis about the command boundaries or names
//! (a guard that does can be walked past: it sees a harmless command while Redis runs AUTH),
//! reorder bytes or hold them longer than a rule needs, forward any byte of a held command (the
//! client's password), keep a bulk payload it was not asked for, or panic on input.
//! Its one other RESP parser is `proxy::handshake`, for the opening frame.

pub mod driver;
pub mod framer;
mod fuzz;
pub mod rules;
pub mod session_policy;
mod splitargs;

#[cfg(test)]
mod proptests;

pub use driver::{Guard, GuardEvent, Policy, Reauth};
pub use framer::{
    keyword_eq, Arg, Event, Framer, FramerConfig, Head, Kind, Step, NAME_CAP,
    PROTO_INLINE_MAX_SIZE, PROTO_MAX_BULK_LEN,
};
pub use fuzz::fuzz_framer;

/// A protocol error Redis would answer, in its own words, before closing the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("too big inline request")]
    TooBigInline,
    #[error("unbalanced quotes in request")]
    UnbalancedQuotes,
    #[error("too big mbulk count string")]
    TooBigMultibulkCount,
    #[error("invalid multibulk length")]
    InvalidMultibulkLength,
    #[error("unauthenticated multibulk length")]
    UnauthenticatedMultibulkLength,
    #[error("too big bulk count string")]
    TooBigBulkCount,
    /// `got` is the header line's first byte (`\r` for an empty line).
    #[error("expected '$', got '{}'", got.escape_ascii())]
    ExpectedDollar { got: u8 },
    #[error("invalid bulk length")]
    InvalidBulkLength,
    #[error("unauthenticated bulk length")]
    UnauthenticatedBulkLength,
}

impl ProtocolError {
    /// The exact reply Redis sends: `-ERR Protocol error: …\r\n`. Like Redis, the byte in
    /// "expected '$'" is sent as is, except CR and LF, which become spaces.
    pub fn reply(&self) -> Vec<u8> {
        let mut out = b"-ERR Protocol error: ".to_vec();
        match *self {
            ProtocolError::ExpectedDollar { got } => {
                let got = if got == b'\r' || got == b'\n' {
                    b' '
                } else {
                    got
                };
                out.extend_from_slice(b"expected '$', got '");
                out.push(got);
                out.push(b'\'');
            }
            other => out.extend_from_slice(other.to_string().as_bytes()),
        }
        out.extend_from_slice(b"\r\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_redis_own_lines() {
        assert_eq!(
            ProtocolError::InvalidBulkLength.reply(),
            b"-ERR Protocol error: invalid bulk length\r\n"
        );
        assert_eq!(
            ProtocolError::ExpectedDollar { got: b'f' }.reply(),
            b"-ERR Protocol error: expected '$', got 'f'\r\n"
        );
        assert_eq!(
            ProtocolError::ExpectedDollar { got: b'\r' }.reply(),
            b"-ERR Protocol error: expected '$', got ' '\r\n"
        );
        assert_eq!(
            ProtocolError::ExpectedDollar { got: 0xff }.reply(),
            b"-ERR Protocol error: expected '$', got '\xff'\r\n"
        );
    }

    #[test]
    fn display_escapes_the_unexpected_byte() {
        assert_eq!(
            ProtocolError::ExpectedDollar { got: 0xff }.to_string(),
            r"expected '$', got '\xff'"
        );
    }
}
