//! The handshake engine: parses the RESP of the opening (the requests stream after it is
//! `proxy::guard::framer`'s).
//!
//! Sans-IO: pure functions over byte buffers. The session reads from the sockets, appends to a
//! buffer and calls in again on `Ok(None)`; nothing here knows about sockets, TLS or splice.
//!
//! - [`client::parse_opening`] classifies what the client sent first (AUTH, HELLO, or any other
//!   command) and says how many bytes the AUTH/HELLO frame took, so the bytes after it (pipelined
//!   commands) go upstream untouched.
//! - [`upstream::auth_command`] builds what the bastion sends upstream on the client's behalf.
//! - [`upstream::parse_reply`] frames the upstream's one reply and pulls out its error text.
//!
//! What this module must never do: panic on bytes from either peer, keep or echo a password
//! (client passwords are discarded while parsing; error messages name the problem, never an
//! argument), or hand-write a RESP parser — framing is redis-protocol's. The one exception, in
//! `frame.rs`, is reading aggregate header lines (`*N\r\n`) so nesting depth stays bounded and a
//! huge first command can be recognised by its name alone.
//!
//! Every parser is split-invariant: its answer does not depend on how the bytes were split across
//! reads, and once it has answered (a frame or an error) more bytes never change the answer. The
//! fuzz entry points [`fuzz_opening`] and [`fuzz_reply`] check exactly that.

pub mod client;
mod frame;
mod fuzz;
pub mod upstream;

#[cfg(test)]
mod proptests;

pub use client::{parse_opening, Opening, Parsed};
pub use fuzz::{fuzz_opening, fuzz_reply};
pub use upstream::{auth_command, parse_reply, Reply};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// Malformed RESP from the client or the upstream; the message never quotes a password.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// More than `limit` bytes arrived without a complete frame (or, for a client, a decision).
    #[error("protocol error: handshake frame larger than {limit} bytes")]
    TooLarge { limit: usize },
}

/// A RESP error line for the client: `-ERR bastion: <message>\r\n` (CR/LF in `message` removed).
pub fn error_reply(message: &str) -> Vec<u8> {
    error_line("ERR bastion: ", message)
}

/// The reply to malformed client input, in Redis' own wording: `-ERR protocol error: …\r\n`.
pub fn protocol_error_reply(error: &HandshakeError) -> Vec<u8> {
    error_line("ERR ", &error.to_string())
}

fn error_line(prefix: &str, message: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(prefix.len() + message.len() + 3);
    out.push(b'-');
    out.extend_from_slice(prefix.as_bytes());
    // A CR or LF would end the error line early and let the rest be read as another reply.
    out.extend(message.bytes().filter(|b| *b != b'\r' && *b != b'\n'));
    out.extend_from_slice(b"\r\n");
    out
}

/// The first `limit` bytes of `buf`: every parser decides on this window only, so an answer
/// never depends on bytes past the limit (that is what keeps `TooLarge` split-invariant).
fn window(buf: &[u8], limit: usize) -> &[u8] {
    &buf[..buf.len().min(limit)]
}

/// Turn "no answer within the window" into `Ok(None)` or `TooLarge`.
fn undecided<T>(buf: &[u8], limit: usize) -> Result<Option<T>, HandshakeError> {
    if buf.len() > limit {
        Err(HandshakeError::TooLarge { limit })
    } else {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_reply_is_one_line() {
        assert_eq!(error_reply("no route"), b"-ERR bastion: no route\r\n");
        assert_eq!(
            error_reply("a\r\n+OK\r\nb"),
            b"-ERR bastion: a+OKb\r\n".to_vec()
        );
        assert_eq!(error_reply(""), b"-ERR bastion: \r\n");
    }

    #[test]
    fn error_display_names_the_limit() {
        let e = HandshakeError::TooLarge { limit: 1024 };
        assert!(e.to_string().contains("1024"));
        let e = HandshakeError::Protocol("empty command".into());
        assert_eq!(e.to_string(), "protocol error: empty command");
    }
}
