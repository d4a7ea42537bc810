//! The CLI's side of the admin socket: connect, send one request, read its reply.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::wire::{self, AdminError, Reply, Request, WireError};

/// How long the CLI waits for the daemon (an import of thousands of records fsyncs each).
const REPLY_LIMIT: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to the admin socket {path}: {source} (is `bastion serve` running, and are you root or in the admin group?)")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("{0}")]
    Admin(#[from] AdminError),
}

/// Send `request` to the daemon at `socket`; an error reply becomes [`ClientError::Admin`].
pub fn call(socket: &Path, request: &Request) -> Result<Reply, ClientError> {
    let mut stream = UnixStream::connect(socket).map_err(|source| ClientError::Connect {
        path: socket.to_path_buf(),
        source,
    })?;
    stream
        .set_read_timeout(Some(REPLY_LIMIT))
        .map_err(WireError::Io)?;
    let sent = wire::write_blocking(&mut stream, request);
    // A refused caller gets its reply at once and the daemon hangs up, perhaps before the
    // request is written: read that reply before reporting the failed write.
    let reply = match (sent, wire::read_blocking(&mut stream)) {
        (_, Ok(reply)) => reply,
        (Err(e), Err(_)) | (Ok(()), Err(e)) => return Err(e.into()),
    };
    match reply {
        Reply::Error(e) => Err(ClientError::Admin(e)),
        reply => Ok(reply),
    }
}
