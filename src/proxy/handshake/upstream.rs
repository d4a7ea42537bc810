//! STUB. What the bastion says to the upstream, and reading its one reply.

use super::client::Opening;
use super::HandshakeError;
use crate::secret::Secret;

/// The command that authenticates upstream for `opening`, or `None` when nothing needs sending
/// (auth mode `none` and the client did not send HELLO).
///
/// - AUTH / other command + secret → `AUTH <db_user> <secret>`
/// - HELLO → `HELLO <protover or 2> [AUTH <db_user> <secret>] [SETNAME <name>]`
pub fn auth_command(opening: &Opening, db_user: &str, secret: Option<&Secret>) -> Option<Vec<u8>> {
    let _ = (opening, db_user, secret);
    todo!()
}

/// One upstream reply frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Length of the whole frame in the buffer (forwarded verbatim to the client when it asked).
    pub len: usize,
    /// `Some(text)` when the reply is an error (`WRONGPASS invalid …`), without the leading `-`.
    pub error: Option<String>,
}

/// Parse one RESP2/RESP3 reply from the upstream. `Ok(None)`: need more bytes.
pub fn parse_reply(buf: &[u8], limit: usize) -> Result<Option<Reply>, HandshakeError> {
    let _ = (buf, limit);
    todo!()
}
