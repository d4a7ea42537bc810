//! The splice path: both legs are plaintext kernel sockets, so each direction moves bytes
//! socket → pipe → socket with `splice(2)` and they never enter user space.
//!
//! Readiness comes from tokio: every `splice` runs inside `try_io` on the socket it may block on,
//! after awaiting `readable()`/`writable()` on that socket. The pipe is only ever touched by its own
//! direction, so its fill level is known exactly and is never a reason to wait.
//!
//! Must never: clear a socket's readiness on an `EAGAIN` that might have come from the pipe rather
//! than the socket (that loses the wake-up and hangs the session); retry on `EAGAIN` without
//! awaiting readiness first (that spins a core); or touch the pipe from another direction.
//! Relies on the process ignoring `SIGPIPE` (Rust's runtime does), so a vanished peer is `EPIPE`.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::errno::Errno;
use nix::fcntl::{splice, SpliceFFlags};
use nix::sys::socket::Shutdown;
use tokio::io::Interest;
use tokio::net::{TcpStream, UnixStream};

use super::pipe::Pipe;
use super::{drive, Counters, Direction, Leg, Path, RelayError, Side};

/// Both legs as plain sockets plus one pipe per direction: everything a spliced session needs,
/// acquired before any byte moves so a failure can still fall back to the copy path.
pub(super) struct Plan {
    client: Socket,
    upstream: Socket,
    client_to_upstream: Pipe,
    upstream_to_client: Pipe,
}

/// Why a session could not be spliced; it gets the legs back to copy instead.
pub(super) struct Fallback {
    pub(super) client: Leg,
    pub(super) upstream: Leg,
    pub(super) error: NoSplice,
}

#[derive(Debug, thiserror::Error)]
pub(super) enum NoSplice {
    #[error("creating a pipe: {0}")]
    Pipe(#[source] Errno),
    #[error("a leg is not a plaintext socket")]
    NotPlain,
}

impl Plan {
    pub(super) fn new(client: Leg, upstream: Leg) -> Result<Plan, Fallback> {
        let (client, upstream) = match (Socket::from_leg(client), Socket::from_leg(upstream)) {
            (Ok(client), Ok(upstream)) => (client, upstream),
            (client, upstream) => {
                return Err(Fallback {
                    client: client.map_or_else(|leg| leg, Socket::into_leg),
                    upstream: upstream.map_or_else(|leg| leg, Socket::into_leg),
                    error: NoSplice::NotPlain,
                })
            }
        };
        match (Pipe::new(), Pipe::new()) {
            (Ok(client_to_upstream), Ok(upstream_to_client)) => Ok(Plan {
                client,
                upstream,
                client_to_upstream,
                upstream_to_client,
            }),
            (Err(errno), _) | (_, Err(errno)) => Err(Fallback {
                client: client.into_leg(),
                upstream: upstream.into_leg(),
                error: NoSplice::Pipe(errno),
            }),
        }
    }

    /// Splice both ways until both sides sent EOF (`Ok(first to close)`) or a syscall fails.
    /// Both sockets and pipes close when this returns.
    pub(super) async fn run(self, counters: &Counters) -> Result<Side, RelayError> {
        let Plan {
            client,
            upstream,
            client_to_upstream,
            upstream_to_client,
        } = self;
        drive(
            direction(
                Direction::ClientToUpstream,
                &client,
                &upstream,
                client_to_upstream,
                counters.for_direction(Direction::ClientToUpstream),
            ),
            direction(
                Direction::UpstreamToClient,
                &upstream,
                &client,
                upstream_to_client,
                counters.for_direction(Direction::UpstreamToClient),
            ),
        )
        .await
    }
}

/// `SPLICE_F_NONBLOCK` makes the pipe side non-blocking (the sockets already are: tokio sets
/// `O_NONBLOCK`); `SPLICE_F_MOVE` is a hint to move pages rather than copy them.
fn flags() -> SpliceFFlags {
    SpliceFFlags::SPLICE_F_NONBLOCK | SpliceFFlags::SPLICE_F_MOVE
}

/// One direction: `source` socket → `pipe` → `destination` socket, until EOF or an error.
///
/// The invariant that makes tokio readiness correct: **we only splice socket → pipe when the pipe
/// is empty.** `EAGAIN` from socket → pipe can mean "socket empty" *or* "pipe full"; with an empty
/// pipe it can only mean the socket is empty, so letting `try_io` clear read readiness is right
/// and the next `readable()` wakes when data arrives. We then drain the pipe completely into the
/// destination; there the pipe holds data, so `EAGAIN` can only mean the destination socket is
/// full, and clearing its write readiness is right too. Every `EAGAIN` is therefore followed by an
/// `.await` on readiness that the kernel will signal: no lost wake-ups and no busy loop.
async fn direction(
    direction: Direction,
    source: &Socket,
    destination: &Socket,
    pipe: Pipe,
    moved: &AtomicU64,
) -> Result<(), RelayError> {
    direction.trace_start(Path::Splice);
    loop {
        // The pipe is empty here (fresh, or drained by the loop below).
        let filled = loop {
            source
                .readable()
                .await
                .map_err(|e| direction.read_error(e))?;
            let spliced = source.try_io(Interest::READABLE, || {
                splice_io(source.as_fd(), pipe.write_end(), pipe.capacity())
            });
            match spliced {
                Ok(n) => break n,
                // try_io cleared read readiness: the next readable() really waits.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                // Readiness untouched; retrying at once is bounded (a signal, not a wait).
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(direction.read_error(e)),
            }
        };
        if filled == 0 {
            // EOF with an empty pipe: nothing left to deliver. Half-close the destination so it
            // sees EOF too; the opposite direction keeps running on the same sockets.
            destination
                .shutdown_write()
                .map_err(|e| direction.shutdown_error(e))?;
            return Ok(());
        }

        let mut in_pipe = filled;
        while in_pipe > 0 {
            destination
                .writable()
                .await
                .map_err(|e| direction.write_error(e))?;
            let spliced = destination.try_io(Interest::WRITABLE, || {
                splice_io(pipe.read_end(), destination.as_fd(), in_pipe)
            });
            match spliced {
                // A pipe with data in it never splices zero bytes into a live socket; treat it as
                // a failed write rather than loop on it.
                Ok(0) => return Err(direction.write_error(io::ErrorKind::WriteZero.into())),
                Ok(n) => {
                    in_pipe -= n;
                    moved.fetch_add(n as u64, Ordering::Relaxed);
                }
                // try_io cleared write readiness: the next writable() waits for buffer space.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(direction.write_error(e)),
            }
        }
    }
}

/// One non-blocking `splice(2)` of up to `len` bytes, as an `io::Result` so `EAGAIN` shows up as
/// `WouldBlock` to tokio's `try_io`.
fn splice_io(from: BorrowedFd<'_>, to: BorrowedFd<'_>, len: usize) -> io::Result<usize> {
    splice(from, None, to, None, len, flags()).map_err(io::Error::from)
}

/// A plaintext socket leg, in the shape splice needs: a file descriptor plus tokio readiness.
/// Shared by reference between the two directions (one reads it, the other writes it).
enum Socket {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Socket {
    fn from_leg(leg: Leg) -> Result<Socket, Leg> {
        match leg {
            Leg::Tcp(stream) => Ok(Socket::Tcp(stream)),
            Leg::Unix(stream) => Ok(Socket::Unix(stream)),
            tls @ Leg::Tls(_) => Err(tls),
        }
    }

    fn into_leg(self) -> Leg {
        match self {
            Socket::Tcp(stream) => Leg::Tcp(stream),
            Socket::Unix(stream) => Leg::Unix(stream),
        }
    }

    async fn readable(&self) -> io::Result<()> {
        match self {
            Socket::Tcp(stream) => stream.readable().await,
            Socket::Unix(stream) => stream.readable().await,
        }
    }

    async fn writable(&self) -> io::Result<()> {
        match self {
            Socket::Tcp(stream) => stream.writable().await,
            Socket::Unix(stream) => stream.writable().await,
        }
    }

    /// Run `op`; if it fails with `WouldBlock`, tokio clears `interest` readiness.
    fn try_io<R>(&self, interest: Interest, op: impl FnOnce() -> io::Result<R>) -> io::Result<R> {
        match self {
            Socket::Tcp(stream) => stream.try_io(interest, op),
            Socket::Unix(stream) => stream.try_io(interest, op),
        }
    }

    /// `shutdown(SHUT_WR)` through a shared reference, so the reading direction keeps going.
    /// (tokio's `AsyncWriteExt::shutdown` would need `&mut`, which both directions can't have.)
    fn shutdown_write(&self) -> io::Result<()> {
        nix::sys::socket::shutdown(self.as_fd().as_raw_fd(), Shutdown::Write)
            .map_err(io::Error::from)
    }
}

impl AsFd for Socket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Socket::Tcp(stream) => stream.as_fd(),
            Socket::Unix(stream) => stream.as_fd(),
        }
    }
}
