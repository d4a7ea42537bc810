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
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{ready, Context, Poll};

use nix::errno::Errno;
use nix::fcntl::{splice, SpliceFFlags};
use nix::sys::socket::Shutdown;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

use super::pipe::Pipe;
use super::{drive, Counters, Direction, Leg, Path, RelayError, Requests, Side};
use crate::proxy::ktls::{Control, KtlsSocket};

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
        let (client, upstream) = sockets(client, upstream)?;
        match (Pipe::new(), Pipe::new()) {
            (Ok(client_to_upstream), Ok(upstream_to_client)) => Ok(Plan {
                client,
                upstream,
                client_to_upstream,
                upstream_to_client,
            }),
            (Err(errno), _) | (_, Err(errno)) => Err(Fallback::pipe(client, upstream, errno)),
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
                client.as_ref(),
                upstream.as_ref(),
                client_to_upstream,
                counters.for_direction(Direction::ClientToUpstream),
            ),
            direction(
                Direction::UpstreamToClient,
                upstream.as_ref(),
                client.as_ref(),
                upstream_to_client,
                counters.for_direction(Direction::UpstreamToClient),
            ),
        )
        .await
    }
}

/// A session whose requests direction is run by a [`Requests`] filter in user space: one pipe,
/// for the replies, which are spliced exactly as in [`Plan`].
pub(super) struct RepliesPlan {
    client: Socket,
    upstream: Socket,
    upstream_to_client: Pipe,
}

impl RepliesPlan {
    pub(super) fn new(client: Leg, upstream: Leg) -> Result<RepliesPlan, Fallback> {
        let (client, upstream) = sockets(client, upstream)?;
        match Pipe::new() {
            Ok(upstream_to_client) => Ok(RepliesPlan {
                client,
                upstream,
                upstream_to_client,
            }),
            Err(errno) => Err(Fallback::pipe(client, upstream, errno)),
        }
    }

    /// Run `requests` (client → upstream, reading and writing the sockets through readiness)
    /// beside the spliced replies, until both are done or one fails.
    pub(super) async fn run<F: Requests>(
        self,
        counters: &Counters,
        requests: F,
    ) -> Result<Side, RelayError> {
        let RepliesPlan {
            client,
            upstream,
            upstream_to_client,
        } = self;
        Direction::ClientToUpstream.trace_start(Path::Copy);
        drive(
            requests.run(
                SocketIo(client.as_ref()),
                SocketIo(upstream.as_ref()),
                counters.for_direction(Direction::ClientToUpstream),
            ),
            direction(
                Direction::UpstreamToClient,
                upstream.as_ref(),
                client.as_ref(),
                upstream_to_client,
                counters.for_direction(Direction::UpstreamToClient),
            ),
        )
        .await
    }
}

/// Both legs as plain sockets, or both back to copy.
fn sockets(client: Leg, upstream: Leg) -> Result<(Socket, Socket), Fallback> {
    match (Socket::from_leg(client), Socket::from_leg(upstream)) {
        (Ok(client), Ok(upstream)) => Ok((client, upstream)),
        (client, upstream) => Err(Fallback {
            client: client.map_or_else(|leg| leg, Socket::into_leg),
            upstream: upstream.map_or_else(|leg| leg, Socket::into_leg),
            error: NoSplice::NotPlain,
        }),
    }
}

impl Fallback {
    fn pipe(client: Socket, upstream: Socket, errno: Errno) -> Fallback {
        Fallback {
            client: client.into_leg(),
            upstream: upstream.into_leg(),
            error: NoSplice::Pipe(errno),
        }
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
    source: SocketRef<'_>,
    destination: SocketRef<'_>,
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
                // kTLS: a non-data record (ticket, KeyUpdate, alert) is at the head.
                Err(e) => match source.control_record(&e) {
                    Some(Ok(Control::Handled)) => continue,
                    Some(Ok(Control::Closed)) => break 0,
                    Some(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Some(Err(e)) => return Err(direction.read_error(e)),
                    None => return Err(direction.read_error(e)),
                },
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
    Ktls(KtlsSocket),
}

impl Socket {
    fn from_leg(leg: Leg) -> Result<Socket, Leg> {
        match leg {
            Leg::Tcp(stream) => Ok(Socket::Tcp(stream)),
            Leg::Unix(stream) => Ok(Socket::Unix(stream)),
            Leg::Ktls(socket) => Ok(Socket::Ktls(socket)),
            tls @ Leg::Tls(_) => Err(tls),
        }
    }

    fn into_leg(self) -> Leg {
        match self {
            Socket::Tcp(stream) => Leg::Tcp(stream),
            Socket::Unix(stream) => Leg::Unix(stream),
            Socket::Ktls(socket) => Leg::Ktls(socket),
        }
    }

    fn as_ref(&self) -> SocketRef<'_> {
        match self {
            Socket::Tcp(stream) => SocketRef::Tcp(stream),
            Socket::Unix(stream) => SocketRef::Unix(stream),
            Socket::Ktls(socket) => SocketRef::Ktls(socket),
        }
    }
}

/// A borrowed plaintext socket: what one direction reads from or writes to.
#[derive(Clone, Copy)]
enum SocketRef<'a> {
    Tcp(&'a TcpStream),
    Unix(&'a UnixStream),
    Ktls(&'a KtlsSocket),
}

impl SocketRef<'_> {
    async fn readable(&self) -> io::Result<()> {
        match self {
            SocketRef::Tcp(stream) => stream.readable().await,
            SocketRef::Ktls(socket) => socket.tcp().readable().await,
            SocketRef::Unix(stream) => stream.readable().await,
        }
    }

    async fn writable(&self) -> io::Result<()> {
        match self {
            SocketRef::Tcp(stream) => stream.writable().await,
            SocketRef::Ktls(socket) => socket.tcp().writable().await,
            SocketRef::Unix(stream) => stream.writable().await,
        }
    }

    /// Run `op`; if it fails with `WouldBlock`, tokio clears `interest` readiness.
    fn try_io<R>(&self, interest: Interest, op: impl FnOnce() -> io::Result<R>) -> io::Result<R> {
        match self {
            SocketRef::Tcp(stream) => stream.try_io(interest, op),
            SocketRef::Ktls(socket) => socket.tcp().try_io(interest, op),
            SocketRef::Unix(stream) => stream.try_io(interest, op),
        }
    }

    /// After a failed splice from this socket: if it is a kTLS socket and the failure means a
    /// non-data record is at the head of its queue, take and handle that record.
    fn control_record(&self, error: &io::Error) -> Option<io::Result<Control>> {
        match self {
            SocketRef::Ktls(socket) if crate::proxy::ktls::is_control_record(error) => {
                Some(socket.take_control())
            }
            _ => None,
        }
    }

    /// `shutdown(SHUT_WR)` through a shared reference, so the reading direction keeps going.
    /// (tokio's `AsyncWriteExt::shutdown` would need `&mut`, which both directions can't have.)
    fn shutdown_write(&self) -> io::Result<()> {
        if let SocketRef::Ktls(socket) = self {
            return socket.shutdown_write();
        }
        nix::sys::socket::shutdown(self.as_fd().as_raw_fd(), Shutdown::Write)
            .map_err(io::Error::from)
    }

    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            SocketRef::Tcp(stream) => stream.poll_read_ready(cx),
            SocketRef::Ktls(socket) => socket.tcp().poll_read_ready(cx),
            SocketRef::Unix(stream) => stream.poll_read_ready(cx),
        }
    }

    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            SocketRef::Tcp(stream) => stream.poll_write_ready(cx),
            SocketRef::Ktls(socket) => socket.tcp().poll_write_ready(cx),
            SocketRef::Unix(stream) => stream.poll_write_ready(cx),
        }
    }

    /// A non-blocking read; on `WouldBlock` tokio clears read readiness.
    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            SocketRef::Tcp(stream) => stream.try_read(buf),
            // Takes a non-data record in its way (a guard reading a kTLS client).
            SocketRef::Ktls(socket) => socket.try_read(buf),
            SocketRef::Unix(stream) => stream.try_read(buf),
        }
    }

    /// A non-blocking write; on `WouldBlock` tokio clears write readiness.
    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        match self {
            SocketRef::Tcp(stream) => stream.try_write(buf),
            SocketRef::Ktls(socket) => socket.tcp().try_write(buf),
            SocketRef::Unix(stream) => stream.try_write(buf),
        }
    }
}

impl AsFd for SocketRef<'_> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            SocketRef::Tcp(stream) => stream.as_fd(),
            SocketRef::Ktls(socket) => socket.tcp().as_fd(),
            SocketRef::Unix(stream) => stream.as_fd(),
        }
    }
}

/// A borrowed socket as `AsyncRead + AsyncWrite` for a [`Requests`] filter, so the filter reads
/// the client and writes the upstream while the spliced replies use the same sockets' other
/// readiness halves (read interest of the upstream, write interest of the client). Each
/// `try_read`/`try_write` that would block clears that readiness before waiting again.
struct SocketIo<'a>(SocketRef<'a>);

impl AsyncRead for SocketIo<'_> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            ready!(self.0.poll_read_ready(cx))?;
            match self.0.try_read(buf.initialize_unfilled()) {
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
        loop {
            ready!(self.0.poll_write_ready(cx))?;
            match self.0.try_write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::time::timeout;

    use super::super::testutil::{
        half_close_exchange, receive_all, relay_both_ways, send_pattern, small_buffer_tcp_pair,
        tcp_pair, unix_pair, HANG_GUARD,
    };
    use super::super::{relay, Closed, Leg, Outcome, Path, Side};

    const MIB: usize = 1024 * 1024;

    fn assert_spliced(outcome: &Outcome) {
        assert_eq!(outcome.client_to_upstream_path, Path::Splice);
        assert_eq!(outcome.upstream_to_client_path, Path::Splice);
    }

    #[tokio::test]
    async fn unix_client_and_tcp_upstream_splice_32_mib_each_way() {
        let (client_leg, client) = unix_pair();
        let (upstream_leg, upstream) = tcp_pair().await;
        let outcome = relay_both_ways(
            Leg::Unix(client_leg),
            Leg::Tcp(upstream_leg),
            client,
            upstream,
            32 * MIB,
        )
        .await;
        assert_spliced(&outcome);
        assert!(
            matches!(outcome.closed, Closed::By(_)),
            "{:?}",
            outcome.closed
        );
    }

    /// The lost-wake-up case: a destination drains slowly while its source offers far more than
    /// the pipe and socket buffers hold, so splice keeps hitting EAGAIN on both sides of the pipe.
    /// One direction at a time, on purpose: with traffic the other way on the same sockets, every
    /// epoll event re-reports all ready bits and would mask a wrongly cleared read readiness.
    #[tokio::test]
    async fn slow_reader_behind_a_full_pipe_still_gets_every_byte() {
        const LEN: usize = 6 * MIB;
        const READ: usize = 16 * 1024;
        const PAUSE: Duration = Duration::from_millis(1);
        let (client_leg, client) = unix_pair();
        let (upstream_leg, upstream) = small_buffer_tcp_pair(16 * 1024, 16 * 1024).await;
        let session = tokio::spawn(relay(Leg::Unix(client_leg), Leg::Tcp(upstream_leg)));
        let (mut client_read, mut client_write) = tokio::io::split(client);
        let (mut upstream_read, mut upstream_write) = tokio::io::split(upstream);

        // Unix source → slow TCP reader, while nothing flows the other way.
        let (sent, got) = timeout(HANG_GUARD, async {
            tokio::join!(
                send_pattern(&mut client_write, 7, LEN, MIB),
                receive_all(&mut upstream_read, READ, PAUSE),
            )
        })
        .await
        .expect("client → upstream hung");
        assert_eq!(got, (LEN as u64, sent));

        // TCP source → slow Unix reader, the client direction already finished.
        let (sent, got) = timeout(HANG_GUARD, async {
            tokio::join!(
                send_pattern(&mut upstream_write, 11, LEN, MIB),
                receive_all(&mut client_read, READ, PAUSE),
            )
        })
        .await
        .expect("upstream → client hung");
        assert_eq!(got, (LEN as u64, sent));

        let outcome = timeout(HANG_GUARD, session)
            .await
            .expect("relay hung")
            .expect("relay panicked");
        assert_spliced(&outcome);
        assert_eq!(outcome.closed, Closed::By(Side::Client));
        assert_eq!(outcome.client_to_upstream, LEN as u64);
        assert_eq!(outcome.upstream_to_client, LEN as u64);
    }

    #[tokio::test]
    async fn client_half_close_still_delivers_the_upstream_reply() {
        // A client on a real Unix listener path, as the bastion's local socket would be.
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bastion.sock");
        let listener = tokio::net::UnixListener::bind(&path).expect("bind unix");
        let (connected, accepted) =
            tokio::join!(tokio::net::UnixStream::connect(&path), listener.accept());
        let client = connected.expect("connect unix");
        let client_leg = accepted.expect("accept unix").0;
        let (upstream_leg, upstream) = tcp_pair().await;
        let session = tokio::spawn(relay(Leg::Unix(client_leg), Leg::Tcp(upstream_leg)));

        let (request, reply) = timeout(HANG_GUARD, half_close_exchange(client, upstream))
            .await
            .expect("half-close exchange hung");
        let outcome = timeout(HANG_GUARD, session)
            .await
            .expect("relay hung")
            .expect("relay panicked");
        assert_spliced(&outcome);
        assert_eq!(outcome.closed, Closed::By(Side::Client));
        assert_eq!(outcome.client_to_upstream, request);
        assert_eq!(outcome.upstream_to_client, reply);
    }

    #[tokio::test]
    async fn upstream_reset_while_client_idles_ends_the_session() {
        let (client_leg, mut client) = unix_pair();
        let (upstream_leg, mut upstream) = tcp_pair().await;
        let session = tokio::spawn(relay(Leg::Unix(client_leg), Leg::Tcp(upstream_leg)));

        // Prove the session is live, then reset the upstream while the client is only reading.
        upstream.write_all(b"+OK\r\n").await.expect("upstream send");
        let mut greeting = [0u8; 5];
        client.read_exact(&mut greeting).await.expect("client read");
        assert_eq!(&greeting, b"+OK\r\n");
        upstream.set_zero_linger().expect("SO_LINGER 0");
        drop(upstream);

        let outcome = timeout(HANG_GUARD, session)
            .await
            .expect("relay hung after upstream reset")
            .expect("relay panicked");
        assert_spliced(&outcome);
        match &outcome.closed {
            Closed::Error { side, message } => {
                assert_eq!(*side, Side::Upstream);
                assert!(message.contains("upstream"), "{message}");
            }
            other => panic!("expected an upstream error, got {other:?}"),
        }
        assert_eq!(outcome.upstream_to_client, 5);

        // The relay closed the client's leg: the client sees EOF (or a reset), never a hang.
        let mut rest = Vec::new();
        let seen = timeout(HANG_GUARD, client.read_to_end(&mut rest))
            .await
            .expect("client hung");
        assert!(matches!(seen, Ok(0) | Err(_)), "{seen:?}");
    }

    #[tokio::test]
    async fn upstream_reset_while_client_sends_ends_the_session() {
        let (client_leg, client) = tcp_pair().await;
        let (upstream_leg, upstream) = tcp_pair().await;
        let session = tokio::spawn(relay(Leg::Tcp(client_leg), Leg::Tcp(upstream_leg)));

        upstream.set_zero_linger().expect("SO_LINGER 0");
        drop(upstream);
        // The client keeps pushing bytes the upstream will never take.
        let (_client_read, mut client_write) = client.into_split();
        let pusher = tokio::spawn(async move {
            let chunk = vec![0x2au8; 64 * 1024];
            while client_write.write_all(&chunk).await.is_ok() {}
        });

        let outcome = timeout(HANG_GUARD, session)
            .await
            .expect("relay hung after upstream reset")
            .expect("relay panicked");
        assert!(
            matches!(
                outcome.closed,
                Closed::Error {
                    side: Side::Upstream,
                    ..
                }
            ),
            "{:?}",
            outcome.closed
        );
        // With the session gone the client's writes fail and the pusher stops.
        timeout(HANG_GUARD, pusher)
            .await
            .expect("client writes hung")
            .expect("pusher panicked");
    }

    #[tokio::test]
    async fn client_reset_is_reported_on_the_client_side() {
        let (client_leg, client) = tcp_pair().await;
        let (upstream_leg, mut upstream) = tcp_pair().await;
        let session = tokio::spawn(relay(Leg::Tcp(client_leg), Leg::Tcp(upstream_leg)));

        client.set_zero_linger().expect("SO_LINGER 0");
        drop(client);
        let outcome = timeout(HANG_GUARD, session)
            .await
            .expect("relay hung after client reset")
            .expect("relay panicked");
        assert!(
            matches!(
                outcome.closed,
                Closed::Error {
                    side: Side::Client,
                    ..
                }
            ),
            "{:?}",
            outcome.closed
        );
        let mut rest = Vec::new();
        let seen = upstream.read_to_end(&mut rest).await;
        assert!(matches!(seen, Ok(0) | Err(_)), "{seen:?}");
    }
}
