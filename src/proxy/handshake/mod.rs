//! STUB — owned by the handshake helper. The only code that parses RESP (via redis-protocol).
//! Sans-IO: functions over byte buffers; the session does the reading and writing.

pub mod client;
pub mod upstream;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// Malformed RESP from the client or the upstream; the message never quotes a password.
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("protocol error: opening frame larger than {limit} bytes")]
    TooLarge { limit: usize },
}

/// A RESP error line for the client: `-ERR bastion: <message>\r\n` (CR/LF in `message` removed).
pub fn error_reply(message: &str) -> Vec<u8> {
    let _ = message;
    todo!()
}
