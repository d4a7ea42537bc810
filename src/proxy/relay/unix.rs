//! A Unix client socket registered with the runtime for read readiness only.
//!
//! tokio's `UnixStream` registers for both readiness kinds. A Unix stream socket signals write
//! space (`EPOLLOUT`) every time its peer *reads* — each reply the client takes off the socket —
//! and with an edge-triggered epoll that wakes a thread asleep in `epoll_wait` for nothing: under
//! an unpipelined load, one extra wake-up (and context switch) for about every fourth request. (A
//! TCP socket signals write space only after a write found its buffer full, so the TCP legs keep
//! tokio's streams.) HAProxy subscribes to write readiness only after a write would block; so
//! does this: writes go straight to the socket, and only one that would block registers write
//! interest, on a duplicate of the descriptor, kept for the rest of the session.
//!
//! Accepted with [`UnixAcceptor::accept`] and registered with [`UnixSocket::register`] on the
//! runtime that serves the session (`proxy/cores.rs`): one `accept4` and one `epoll_ctl`, as
//! tokio's own accept.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{ready, Context, Poll};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};

use super::socket::{SocketIo, SocketRef};

/// A listening Unix socket, registered for read readiness (a connection to accept).
pub struct UnixAcceptor(AsyncFd<mio::net::UnixListener>);

impl UnixAcceptor {
    /// Must run inside the runtime that accepts (it registers with its I/O driver).
    pub fn new(listener: std::os::unix::net::UnixListener) -> io::Result<UnixAcceptor> {
        listener.set_nonblocking(true)?;
        let listener = mio::net::UnixListener::from_std(listener);
        Ok(UnixAcceptor(register(listener, Interest::READABLE)?))
    }

    /// The next connection, non-blocking and close-on-exec (`accept4`), not yet registered:
    /// [`UnixSocket::register`] it on the runtime that serves it.
    pub async fn accept(&self) -> io::Result<std::os::unix::net::UnixStream> {
        loop {
            let mut ready = self.0.readable().await?;
            if let Ok(accepted) = ready.try_io(|listener| listener.get_ref().accept()) {
                // Already non-blocking (`accept4` with `SOCK_NONBLOCK`).
                let (stream, _) = accepted?;
                return Ok(stream.into());
            }
        }
    }
}

/// A connected Unix stream socket: read readiness registered, write readiness on demand.
pub struct UnixSocket {
    read: AsyncFd<std::os::unix::net::UnixStream>,
    /// Registered the first time a write would block (boxed: most sessions never do).
    write: OnceLock<Box<AsyncFd<OwnedFd>>>,
}

impl UnixSocket {
    /// Register an accepted connection for read readiness with the calling runtime. `stream`
    /// must already be non-blocking (as [`UnixAcceptor::accept`] gives it).
    pub fn register(stream: std::os::unix::net::UnixStream) -> io::Result<UnixSocket> {
        Ok(UnixSocket {
            read: register(stream, Interest::READABLE)?,
            write: OnceLock::new(),
        })
    }

    /// A tokio stream (a test's socket pair) re-registered for read readiness only; accepted
    /// connections come from [`UnixAcceptor::accept`] without the extra `epoll_ctl`s.
    #[cfg(test)]
    pub(super) fn from_tokio(stream: tokio::net::UnixStream) -> io::Result<UnixSocket> {
        // `into_std` leaves the socket non-blocking.
        UnixSocket::register(stream.into_std()?)
    }

    pub(super) fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The guard is dropped without clearing: readiness stays until a read would block.
        self.read.poll_read_ready(cx).map_ok(drop)
    }

    pub(super) async fn readable(&self) -> io::Result<()> {
        self.read.readable().await.map(drop)
    }

    /// Run a read-like `op`; if it fails with `WouldBlock`, read readiness is cleared.
    pub(super) fn try_read_io<R>(&self, op: impl FnOnce() -> io::Result<R>) -> io::Result<R> {
        self.read.try_io(Interest::READABLE, |_| op())
    }

    /// Ready once the socket has signalled write space since the last time this returned
    /// ready. Callers come here only after a write would block, so the signal to wait for is
    /// the next one: the readiness is consumed here rather than by the failed write (which
    /// goes to the socket directly, not through the registration).
    pub(super) fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let writer = self.writer()?;
        let mut ready = ready!(writer.poll_write_ready(cx))?;
        ready.clear_ready();
        Poll::Ready(Ok(()))
    }

    pub(super) async fn writable(&self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.poll_write_ready(cx)).await
    }

    /// One non-blocking `send(2)` (not `write(2)`: no file-layer work per call; and a client
    /// gone raises `EPIPE`, never `SIGPIPE`).
    pub(super) fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        let fd = std::os::fd::AsRawFd::as_raw_fd(&self.as_fd());
        nix::sys::socket::send(fd, buf, nix::sys::socket::MsgFlags::MSG_NOSIGNAL)
            .map_err(io::Error::from)
    }

    fn writer(&self) -> io::Result<&AsyncFd<OwnedFd>> {
        if let Some(writer) = self.write.get() {
            return Ok(writer);
        }
        // epoll keys an entry by descriptor: a duplicate is a second entry for the same
        // socket, so the read registration stays as it is.
        let writer = register(self.as_fd().try_clone_to_owned()?, Interest::WRITABLE)?;
        Ok(self.write.get_or_init(|| Box::new(writer)))
    }
}

impl AsFd for UnixSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.read.get_ref().as_fd()
    }
}

// The handshake reads and writes the client as a stream: the same calls the relay makes.
impl AsyncRead for UnixSocket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut SocketIo(SocketRef::Unix(&self))).poll_read(cx, buf)
    }
}

impl AsyncWrite for UnixSocket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut SocketIo(SocketRef::Unix(&self))).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut SocketIo(SocketRef::Unix(&self))).poll_shutdown(cx)
    }
}

/// `AsyncFd` registration of a type that owns its descriptor. tokio deprecated the safe
/// constructors because an arbitrary `AsRawFd` type may close or swap the descriptor while
/// registered; `UnixListener`, `TcpListener`, `UnixStream` and `OwnedFd` own theirs for as long as the
/// `AsyncFd` holds them, which is what the unsafe `register_with_interest` asks the caller to
/// promise (and this crate forbids `unsafe`).
#[allow(deprecated)]
pub(crate) fn register<T: std::os::fd::AsRawFd>(
    io: T,
    interest: Interest,
) -> io::Result<AsyncFd<T>> {
    AsyncFd::with_interest(io, interest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    fn pair() -> (UnixSocket, tokio::net::UnixStream) {
        let (a, b) = tokio::net::UnixStream::pair().expect("socketpair");
        (UnixSocket::from_tokio(a).expect("register"), b)
    }

    #[tokio::test]
    async fn reads_and_writes_both_ways() {
        let (mut ours, mut peer) = pair();
        peer.write_all(b"PING\r\n").await.unwrap();
        let mut buf = [0u8; 6];
        ours.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"PING\r\n");
        ours.write_all(b"+PONG\r\n").await.unwrap();
        let mut buf = [0u8; 7];
        peer.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"+PONG\r\n");
        ours.shutdown().await.unwrap();
        assert_eq!(peer.read(&mut buf).await.unwrap(), 0, "EOF after shutdown");
    }

    /// A write into a full socket waits for the peer to read, and then finishes: the write
    /// registration made on demand sees the space the peer's reads free.
    #[tokio::test]
    async fn a_blocked_write_resumes_when_the_peer_reads() {
        let (mut ours, mut peer) = pair();
        let data = vec![7u8; 8 << 20];
        let reader = tokio::spawn(async move {
            // Let the writer fill the socket and block first.
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            let mut got = Vec::new();
            peer.read_to_end(&mut got).await.unwrap();
            got
        });
        tokio::time::timeout(std::time::Duration::from_secs(20), async {
            ours.write_all(&data).await.unwrap();
            ours.shutdown().await.unwrap();
        })
        .await
        .expect("the blocked write resumed");
        assert!(
            ours.write.get().is_some(),
            "the write blocked at least once"
        );
        assert_eq!(reader.await.unwrap().len(), data.len());
    }

    /// Nothing is registered for writes while no write blocked: the peer's reads wake nobody.
    #[tokio::test]
    async fn writes_that_never_block_register_nothing() {
        let (ours, mut peer) = pair();
        for _ in 0..100 {
            assert_eq!(ours.try_write(b"+OK\r\n").unwrap(), 5);
            let mut buf = [0u8; 5];
            peer.read_exact(&mut buf).await.unwrap();
        }
        assert!(ours.write.get().is_none());
    }

    #[tokio::test]
    async fn accepts_into_a_read_only_registration() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let acceptor = UnixAcceptor::new(listener).unwrap();
        let (ours, peer) = tokio::join!(acceptor.accept(), tokio::net::UnixStream::connect(&path));
        let (ours, mut peer) = (ours.unwrap(), peer.unwrap());
        // Accepted non-blocking, registered by whoever serves it.
        let mut ours = UnixSocket::register(ours).unwrap();
        peer.write_all(b"x").await.unwrap();
        let mut buf = [0u8; 1];
        ours.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"x");
    }
}
