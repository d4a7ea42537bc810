//! STUB. The client's opening frame: AUTH, HELLO, or any other command.

use super::HandshakeError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opening {
    /// `AUTH <password>` or `AUTH <db-user> <password>`; the password is discarded.
    Auth { db_user: Option<String> },
    /// `HELLO [protover [AUTH <db-user> <password>] [SETNAME <name>]]`; the password is discarded.
    Hello {
        protover: Option<u8>,
        db_user: Option<String>,
        setname: Option<Vec<u8>>,
    },
    /// Any other command: forwarded verbatim once the bastion has authenticated upstream.
    Command { name: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub opening: Opening,
    /// Bytes of `buf` the AUTH/HELLO frame took (they are not forwarded). 0 for `Command`:
    /// everything the client sent goes upstream.
    pub consumed: usize,
}

/// Look at what the client has sent so far. `Ok(None)`: need more bytes (and `buf.len()` is
/// still within `limit`). The result must not depend on how the bytes were split across reads.
pub fn parse_opening(buf: &[u8], limit: usize) -> Result<Option<Parsed>, HandshakeError> {
    let _ = (buf, limit);
    todo!()
}
