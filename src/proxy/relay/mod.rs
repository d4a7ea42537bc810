//! STUB — owned by the relay helper. The only code that moves bytes after the handshake; knows
//! nothing about Redis. splice(2) through a pipe where both ends of a direction are plaintext
//! sockets, a user-space copy where a leg is TLS.

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};

/// Anything the copy path can drive (TLS streams).
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// One side of a session, as the relay receives it.
pub enum Leg {
    Tcp(TcpStream),
    Unix(UnixStream),
    Tls(Box<dyn Stream>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Upstream,
}

/// How one direction moved its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    Splice,
    Copy,
}

/// How the session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Closed {
    /// This side closed (EOF) first.
    By(Side),
    /// An I/O error (e.g. reset) on this side ended the session.
    Error { side: Side, message: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub client_to_upstream: u64,
    pub upstream_to_client: u64,
    pub closed: Closed,
    pub client_to_upstream_path: Path,
    pub upstream_to_client_path: Path,
}

/// Move bytes both ways until both directions are done or one fails.
pub async fn relay(client: Leg, upstream: Leg) -> Outcome {
    let _ = (client, upstream);
    todo!()
}
