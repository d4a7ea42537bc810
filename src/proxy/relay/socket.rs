//! A plain socket leg (TCP or Unix stream, or a TCP socket whose TLS the kernel runs) in the shape the
//! plain path needs: a file descriptor plus tokio readiness, shared by reference between the two
//! directions (one reads it, the other writes it).
//!
//! Must never clear a socket's readiness unless the socket itself said it had nothing more
//! (`EAGAIN`, or a short read: see [`SocketRef::try_read_drained`]), or a wake-up is lost and
//! the session hangs.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use nix::sys::socket::{MsgFlags, Shutdown};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

use super::unix::UnixSocket;
use super::Leg;
use crate::proxy::ktls::{is_control_record, Control, KtlsSocket};

/// A plain socket leg, owned for the session.
pub(super) enum Socket {
    Tcp(TcpStream),
    Unix(UnixSocket),
    Ktls(KtlsSocket),
}

impl Socket {
    pub(super) fn from_leg(leg: Leg) -> Result<Socket, Leg> {
        match leg {
            Leg::Tcp(stream) => Ok(Socket::Tcp(stream)),
            Leg::Unix(stream) => Ok(Socket::Unix(stream)),
            Leg::Ktls(socket) => Ok(Socket::Ktls(socket)),
            tls @ Leg::Tls(_) => Err(tls),
        }
    }

    pub(super) fn into_leg(self) -> Leg {
        match self {
            Socket::Tcp(stream) => Leg::Tcp(stream),
            Socket::Unix(stream) => Leg::Unix(stream),
            Socket::Ktls(socket) => Leg::Ktls(socket),
        }
    }

    pub(super) fn as_ref(&self) -> SocketRef<'_> {
        match self {
            Socket::Tcp(stream) => SocketRef::Tcp(stream),
            Socket::Unix(stream) => SocketRef::Unix(stream),
            Socket::Ktls(socket) => SocketRef::Ktls(socket),
        }
    }
}

/// A borrowed plaintext socket: what one direction reads from or writes to.
#[derive(Clone, Copy)]
pub(super) enum SocketRef<'a> {
    Tcp(&'a TcpStream),
    Unix(&'a UnixSocket),
    Ktls(&'a KtlsSocket),
}

impl SocketRef<'_> {
    pub(super) async fn readable(&self) -> io::Result<()> {
        match self {
            SocketRef::Tcp(stream) => stream.readable().await,
            SocketRef::Ktls(socket) => socket.tcp().readable().await,
            SocketRef::Unix(socket) => socket.readable().await,
        }
    }

    pub(super) async fn writable(&self) -> io::Result<()> {
        match self {
            SocketRef::Tcp(stream) => stream.writable().await,
            SocketRef::Ktls(socket) => socket.tcp().writable().await,
            SocketRef::Unix(socket) => socket.writable().await,
        }
    }

    /// Run `op`; if it fails with `WouldBlock`, tokio clears `interest` readiness. (A Unix
    /// client's writes are not registered until one would block: `op` runs directly, and the
    /// `writable()` that follows a `WouldBlock` waits for the next write-space signal.)
    pub(super) fn try_io<R>(
        &self,
        interest: Interest,
        op: impl FnOnce() -> io::Result<R>,
    ) -> io::Result<R> {
        match self {
            SocketRef::Tcp(stream) => stream.try_io(interest, op),
            SocketRef::Ktls(socket) => socket.tcp().try_io(interest, op),
            SocketRef::Unix(_) if interest == Interest::WRITABLE => op(),
            SocketRef::Unix(socket) => socket.try_read_io(op),
        }
    }

    /// Run a `read(2)`-like `op` that moves at most `len` bytes out of this socket. Read
    /// readiness is cleared on `WouldBlock` (as `try_io` does) and also after a short read
    /// (`0 < n < len`): `read(2)` on a TCP or Unix stream socket (without `SO_PASSCRED`) copies
    /// everything queued up to `len`, so a short one left it empty, and bytes that arrive later
    /// raise a new readiness event. This saves the `EAGAIN` read that would otherwise follow
    /// every request and every reply. (`try_io` captured the readiness before `op` ran: an event
    /// delivered since is not cleared.) Not for `splice(2)` into a pipe, which can stop short
    /// with bytes left (the pipe runs out of slots), nor for a socket whose reads stop at
    /// record boundaries (kernel TLS: a control record ends a read short).
    pub(super) fn try_read_drained(
        &self,
        len: usize,
        op: impl FnOnce() -> io::Result<usize>,
    ) -> io::Result<usize> {
        let mut short = 0;
        let outcome = self.try_io(Interest::READABLE, || match op()? {
            n if n > 0 && n < len => {
                short = n;
                Err(io::ErrorKind::WouldBlock.into())
            }
            n => Ok(n),
        });
        match outcome {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && short > 0 => Ok(short),
            other => other,
        }
    }

    /// One non-blocking `read(2)` into `buf`, clearing read readiness when it drained the
    /// socket ([`Self::try_read_drained`]).
    pub(super) fn read_drained(&self, buf: &mut [u8]) -> io::Result<usize> {
        if let SocketRef::Ktls(socket) = self {
            // Reads stop at record boundaries: a short one proves nothing. A non-data record
            // in the way is taken and handled; `Ok(0)` is EOF or the peer's close_notify.
            return socket.try_read(buf);
        }
        let len = buf.len();
        // `recv(2)`, not `read(2)`: the same bytes without the file layer's work per call
        // (position lock, access notification), as HAProxy reads its sockets.
        self.try_read_drained(len, || {
            nix::sys::socket::recv(self.as_fd().as_raw_fd(), buf, MsgFlags::empty())
                .map_err(io::Error::from)
        })
    }

    /// `shutdown(SHUT_WR)` through a shared reference, so the reading direction keeps going.
    /// (tokio's `AsyncWriteExt::shutdown` would need `&mut`, which both directions can't have.)
    pub(super) fn shutdown_write(&self) -> io::Result<()> {
        if let SocketRef::Ktls(socket) = self {
            return socket.shutdown_write();
        }
        nix::sys::socket::shutdown(self.as_fd().as_raw_fd(), Shutdown::Write)
            .map_err(io::Error::from)
    }

    /// A Unix client that closed its socket, not only its sending half: nobody is left to read
    /// a reply (`POLLHUP`: both directions shut). One `poll(2)` that does not wait. TCP (and
    /// kTLS) peers: never — a FIN says only that the peer sends no more.
    pub(super) fn peer_gone(&self) -> bool {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let SocketRef::Unix(_) = self else {
            return false;
        };
        let mut fds = [PollFd::new(self.as_fd(), PollFlags::empty())];
        matches!(poll(&mut fds, PollTimeout::ZERO), Ok(1))
            && fds[0]
                .revents()
                .is_some_and(|r| r.contains(PollFlags::POLLHUP))
    }

    /// After a failed splice from this socket: if it is a kTLS socket and the failure means a
    /// non-data record (TLS 1.3 NewSessionTicket, KeyUpdate, an alert) is at the head of its
    /// queue, take and handle that record.
    pub(super) fn control_record(&self, error: &io::Error) -> Option<io::Result<Control>> {
        match self {
            SocketRef::Ktls(socket) if is_control_record(error) => Some(socket.take_control()),
            _ => None,
        }
    }

    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            SocketRef::Tcp(stream) => stream.poll_read_ready(cx),
            SocketRef::Ktls(socket) => socket.tcp().poll_read_ready(cx),
            SocketRef::Unix(socket) => socket.poll_read_ready(cx),
        }
    }

    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            SocketRef::Tcp(stream) => stream.poll_write_ready(cx),
            SocketRef::Ktls(socket) => socket.tcp().poll_write_ready(cx),
            SocketRef::Unix(socket) => socket.poll_write_ready(cx),
        }
    }

    /// A non-blocking write; on `WouldBlock` tokio clears write readiness.
    pub(super) fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        match self {
            SocketRef::Tcp(stream) => stream.try_write(buf),
            SocketRef::Ktls(socket) => socket.tcp().try_write(buf),
            SocketRef::Unix(socket) => socket.try_write(buf),
        }
    }
}

impl AsFd for SocketRef<'_> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            SocketRef::Tcp(stream) => stream.as_fd(),
            SocketRef::Ktls(socket) => socket.tcp().as_fd(),
            SocketRef::Unix(socket) => socket.as_fd(),
        }
    }
}

/// A borrowed socket as `AsyncRead + AsyncWrite` for a [`Requests`] filter, so the filter reads
/// the client and writes the upstream while the spliced replies use the same sockets' other
/// readiness halves (read interest of the upstream, write interest of the client). Each
/// `try_read`/`try_write` that would block clears that readiness before waiting again.
pub(super) struct SocketIo<'a>(pub(super) SocketRef<'a>);

impl AsyncRead for SocketIo<'_> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            ready!(self.0.poll_read_ready(cx))?;
            match self.0.read_drained(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for SocketIo<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        // Write first: tokio remembers the socket's readiness (a write it knows cannot
        // succeed fails at once, without a syscall), so readiness is polled only after a
        // write would block — not before every write.
        loop {
            match self.0.try_write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    ready!(self.0.poll_write_ready(cx))?;
                }
                done => return Poll::Ready(done),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.0.shutdown_write())
    }
}
