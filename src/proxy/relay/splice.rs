//! The plain path: both legs are kernel sockets (TCP or Unix stream), and each direction
//! chooses per burst how to move its bytes, as HAProxy's `splice-auto` does:
//!
//! - **copy** (the default): one `read(2)` of at most [`COPY_READ`] bytes into a pooled buffer,
//!   one `write(2)` of them — two syscalls for a Redis command or reply, and no pipe;
//! - **splice**: once a read fills [`COPY_READ`] (bulk data keeps coming), the next bursts go
//!   socket → pipe → socket with `splice(2)` and the bytes never enter user space; a splice that
//!   moves less than [`COPY_READ`] (the bulk is over) switches the direction back to copy.
//!
//! A burst takes its buffer or pipe from the process-wide pool ([`super::pool`]) after the source
//! is readable and returns it once its bytes are written, so an idle session holds neither.
//!
//! Readiness comes from tokio: every syscall runs inside `try_io` on the socket it may block on,
//! after awaiting `readable()`/`writable()` on that socket. Must never: clear a socket's readiness
//! on an `EAGAIN` that might have come from the pipe rather than the socket (that loses the
//! wake-up and hangs the session); retry on `EAGAIN` without awaiting readiness first (that spins
//! a core); set `SPLICE_F_MORE` (it holds a Redis reply back waiting for more); or return a pipe
//! with bytes in it to the pool. Relies on the process ignoring `SIGPIPE` (Rust's runtime does),
//! so a vanished peer is `EPIPE`.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::fcntl::{splice, SpliceFFlags};
use tokio::io::Interest;

use super::filtered::{Bypass, Passed, Reclaim};
use super::pool::{Buffer, PipeGuard};
use super::socket::{Socket, SocketIo, SocketRef};
use super::{drive, Counters, Direction, Leg, Path, RelayError, Requests, Side};
use crate::proxy::ktls::Control;

/// The most one copied burst reads; a read that fills it switches the direction to splice.
/// Redis commands and replies of ordinary size fit many times over.
pub(super) const COPY_READ: usize = 16 * 1024;

/// Both legs of a session as plain sockets. Nothing else is acquired up front: buffers and pipes
/// come from the pool per burst.
pub(super) struct Plan {
    client: Socket,
    upstream: Socket,
}

impl Plan {
    /// Both legs as plain sockets, or both back (a TLS leg: the caller copies instead).
    pub(super) fn new(client: Leg, upstream: Leg) -> Result<Plan, (Leg, Leg)> {
        match (Socket::from_leg(client), Socket::from_leg(upstream)) {
            (Ok(client), Ok(upstream)) => Ok(Plan { client, upstream }),
            (client, upstream) => Err((
                client.map_or_else(|leg| leg, Socket::into_leg),
                upstream.map_or_else(|leg| leg, Socket::into_leg),
            )),
        }
    }

    /// Move bytes both ways until both sides sent EOF (`Ok(first to close)`) or a syscall
    /// fails. Both sockets close when this returns.
    pub(super) async fn run(self, counters: &Counters) -> Result<Side, RelayError> {
        let (client, upstream) = (self.client.as_ref(), self.upstream.as_ref());
        let up = pin!(direction(
            Direction::ClientToUpstream,
            client,
            upstream,
            counters
        ));
        let down = pin!(direction(
            Direction::UpstreamToClient,
            upstream,
            client,
            counters
        ));
        drive(up, down, &|| false).await
    }

    /// Run `requests` (client → upstream, reading and writing the sockets through readiness)
    /// beside the replies, moved as in [`Plan::run`], until both are done or one fails. The
    /// filter may splice stretches it need not see ([`SpliceBypass`]), and with `reclaim` keep
    /// a TCP upstream at a Unix client's final EOF: the replies direction is then dropped and
    /// the upstream socket, open, left in `reclaim`.
    pub(super) async fn run_filtered<F: Requests>(
        self,
        counters: &Counters,
        requests: F,
        reclaim: Option<&Reclaim>,
    ) -> Result<Side, RelayError> {
        let kept = AtomicBool::new(false);
        let first = {
            let (client, upstream) = (self.client.as_ref(), self.upstream.as_ref());
            Direction::ClientToUpstream.trace_start(Path::Copy);
            let bypass = SpliceBypass {
                client,
                upstream,
                counters,
                reclaim: reclaim.is_some(),
                kept: &kept,
            };
            let up = pin!(requests.run(
                SocketIo(client),
                SocketIo(upstream),
                &bypass,
                counters.for_direction(Direction::ClientToUpstream),
            ));
            let down = pin!(direction(
                Direction::UpstreamToClient,
                upstream,
                client,
                counters
            ));
            drive(up, down, &|| kept.load(Ordering::Relaxed)).await?
        };
        if first == Side::Client && kept.load(Ordering::Relaxed) {
            if let (Some(reclaim), Socket::Tcp(tcp)) = (reclaim, self.upstream) {
                reclaim.put(tcp);
            }
        }
        Ok(first)
    }
}

/// A filter's [`Bypass`] on plain legs: the client's next bytes, at most as many as the filter
/// says it need not see, go socket → pipe → socket, counted as spliced.
struct SpliceBypass<'a> {
    client: SocketRef<'a>,
    upstream: SocketRef<'a>,
    counters: &'a Counters,
    /// The relay was given somewhere to leave a kept upstream.
    reclaim: bool,
    /// The filter kept the upstream ([`Bypass::keep_upstream`] said yes).
    kept: &'a AtomicBool,
}

impl Bypass for SpliceBypass<'_> {
    async fn pass(&self, max: u64) -> Result<Passed, RelayError> {
        let direction = Direction::ClientToUpstream;
        let max = usize::try_from(max).unwrap_or(usize::MAX);
        if max == 0 {
            return Ok(Passed::Unavailable);
        }
        loop {
            self.client
                .readable()
                .await
                .map_err(|e| direction.read_error(e))?;
            let Ok(pipe) = PipeGuard::take(self.counters.held()) else {
                // No pipe (fd or memory limits): the filter reads these bytes itself.
                return Ok(Passed::Unavailable);
            };
            match splice_burst(direction, self.client, self.upstream, pipe, max).await? {
                Burst::Nothing => {}
                Burst::Eof => return Ok(Passed::Eof),
                Burst::Moved(n) => {
                    self.counters.moved(direction, n as u64, true);
                    return Ok(Passed::Moved(n as u64));
                }
            }
        }
    }

    fn keep_upstream(&self) -> bool {
        let keep =
            self.reclaim && matches!(self.upstream, SocketRef::Tcp(_)) && self.client.peer_gone();
        if keep {
            self.kept.store(true, Ordering::Relaxed);
        }
        keep
    }
}

/// How the next burst of a direction moves its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Copy,
    Splice,
}

/// What one burst did.
enum Burst {
    /// The source had nothing after all (its read readiness is cleared), or a signal
    /// interrupted the read: wait for readiness again.
    Nothing,
    /// The source sent EOF; nothing is left to deliver.
    Eof,
    /// This many bytes were read and all of them written.
    Moved(usize),
}

/// One direction: `source` → `destination` until EOF or an error, a burst at a time, each
/// copied or spliced by the [`Mode`] the previous burst chose.
async fn direction(
    direction: Direction,
    source: SocketRef<'_>,
    destination: SocketRef<'_>,
    counters: &Counters,
) -> Result<(), RelayError> {
    direction.trace_start(Path::Splice);
    let mut mode = Mode::Copy;
    let mut pipe_failed = false;
    loop {
        source
            .readable()
            .await
            .map_err(|e| direction.read_error(e))?;
        let burst = match mode {
            Mode::Copy => copy_burst(direction, source, destination, counters).await?,
            Mode::Splice => match PipeGuard::take(counters.held()) {
                Ok(pipe) => splice_burst(direction, source, destination, pipe, usize::MAX).await?,
                // No pipe (fd or memory limits): this burst goes through user space instead.
                Err(error) => {
                    if !pipe_failed {
                        pipe_failed = true;
                        tracing::warn!(%error, relay.direction = direction.name(), "relay: no pipe for splice, copying in user space");
                    }
                    copy_burst(direction, source, destination, counters).await?
                }
            },
        };
        match burst {
            Burst::Nothing => {}
            Burst::Eof => {
                // Half-close the destination so it sees EOF too; the opposite direction keeps
                // running on the same sockets.
                return destination
                    .shutdown_write()
                    .map_err(|e| direction.shutdown_error(e));
            }
            Burst::Moved(n) => {
                counters.moved(direction, n as u64, mode == Mode::Splice);
                mode = if n >= COPY_READ {
                    Mode::Splice
                } else {
                    Mode::Copy
                };
            }
        }
    }
}

/// One copied burst: a read of at most [`COPY_READ`] bytes into a pooled buffer, then all of
/// them written. The buffer goes back to the pool when this returns.
async fn copy_burst(
    direction: Direction,
    source: SocketRef<'_>,
    destination: SocketRef<'_>,
    counters: &Counters,
) -> Result<Burst, RelayError> {
    let mut buffer = Buffer::take(Some(counters.held()));
    let n = match source.read_drained(&mut buffer[..COPY_READ]) {
        Ok(0) => return Ok(Burst::Eof),
        Ok(n) => n,
        Err(e) if is_retry(&e) => return Ok(Burst::Nothing),
        Err(e) => return Err(direction.read_error(e)),
    };
    write_out(direction, destination, n, |done| {
        destination.try_write(&buffer[done..n])
    })
    .await?;
    Ok(Burst::Moved(n))
}

/// One spliced burst of at most `max` bytes: `source` socket → `pipe` → `destination` socket.
///
/// The invariant that makes tokio readiness correct: **we only splice socket → pipe when the pipe
/// is empty** (it comes from the pool only drained). `EAGAIN` from socket → pipe can mean "socket
/// empty" *or* "pipe full"; with an empty pipe it can only mean the socket is empty, so letting
/// `try_io` clear read readiness is right and the next `readable()` wakes when data arrives. We
/// then drain the pipe completely into the destination; there the pipe holds data, so `EAGAIN`
/// can only mean the destination socket is full, and clearing its write readiness is right too.
/// Every `EAGAIN` is therefore followed by an `.await` on readiness that the kernel will signal:
/// no lost wake-ups and no busy loop. The drained pipe goes back to the pool; one left with
/// bytes in it (an error, or the session dropped mid-burst) is closed instead.
async fn splice_burst(
    direction: Direction,
    source: SocketRef<'_>,
    destination: SocketRef<'_>,
    pipe: PipeGuard<'_>,
    max: usize,
) -> Result<Burst, RelayError> {
    // Plain `try_io`, not `try_read_drained`: a short splice does not prove the socket empty
    // (the pipe also fills by slots — one per socket buffer — not only by bytes).
    let capacity = pipe.capacity().min(max);
    let filled = source.try_io(Interest::READABLE, || {
        splice_io(source.as_fd(), pipe.write_end(), capacity)
    });
    let filled = match filled {
        Ok(0) => {
            pipe.release();
            return Ok(Burst::Eof);
        }
        Ok(n) => n,
        Err(e) if is_retry(&e) => {
            pipe.release();
            return Ok(Burst::Nothing);
        }
        // kTLS: a non-data record is at the head; once it is handled the next burst goes on.
        // The pipe is still empty (the splice moved nothing).
        Err(e) => match source.control_record(&e) {
            Some(Ok(Control::Handled)) => {
                pipe.release();
                return Ok(Burst::Nothing);
            }
            Some(Ok(Control::Closed)) => {
                pipe.release();
                return Ok(Burst::Eof);
            }
            Some(Err(e)) if is_retry(&e) => {
                pipe.release();
                return Ok(Burst::Nothing);
            }
            Some(Err(e)) => return Err(direction.read_error(e)),
            None => return Err(direction.read_error(e)),
        },
    };
    write_out(direction, destination, filled, |done| {
        destination.try_io(Interest::WRITABLE, || {
            splice_io(pipe.read_end(), destination.as_fd(), filled - done)
        })
    })
    .await?;
    pipe.release();
    Ok(Burst::Moved(filled))
}

/// Deliver `len` bytes to `destination`: `write(done)` makes one non-blocking attempt at the
/// bytes after the first `done` and clears write readiness when it would block; then this waits
/// for buffer space.
async fn write_out(
    direction: Direction,
    destination: SocketRef<'_>,
    len: usize,
    mut write: impl FnMut(usize) -> io::Result<usize>,
) -> Result<(), RelayError> {
    let mut done = 0;
    while done < len {
        match write(done) {
            // Bytes on hand never write as zero into a live socket; treat it as a failed write
            // rather than loop on it.
            Ok(0) => return Err(direction.write_error(io::ErrorKind::WriteZero.into())),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => destination
                .writable()
                .await
                .map_err(|e| direction.write_error(e))?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(direction.write_error(e)),
        }
    }
    Ok(())
}

/// `EAGAIN` (readiness cleared: wait again) or `EINTR` (readiness untouched: retrying after
/// `readable()`, which returns at once, is bounded).
fn is_retry(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

/// `SPLICE_F_NONBLOCK` makes the pipe side non-blocking (the sockets already are: tokio sets
/// `O_NONBLOCK`); `SPLICE_F_MOVE` is a hint to move pages rather than copy them. Never
/// `SPLICE_F_MORE`: see the module docs.
fn flags() -> SpliceFFlags {
    SpliceFFlags::SPLICE_F_NONBLOCK | SpliceFFlags::SPLICE_F_MOVE
}

/// One non-blocking `splice(2)` of up to `len` bytes, as an `io::Result` so `EAGAIN` shows up as
/// `WouldBlock` to tokio's `try_io`.
fn splice_io(from: BorrowedFd<'_>, to: BorrowedFd<'_>, len: usize) -> io::Result<usize> {
    splice(from, None, to, None, len, flags()).map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio::time::timeout;

    use super::super::testutil::{
        half_close_exchange, receive_all, relay_both_ways, send_pattern, small_buffer_tcp_pair,
        tcp_pair, unix_leg, unix_pair, HANG_GUARD,
    };
    use super::super::{pool, relay, relay_until, Closed, Counters, Leg, Outcome, Path, Side};
    use super::COPY_READ;

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
            unix_leg(client_leg),
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
        let session = tokio::spawn(relay(unix_leg(client_leg), Leg::Tcp(upstream_leg)));
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
        let session = tokio::spawn(relay(unix_leg(client_leg), Leg::Tcp(upstream_leg)));

        let (request, reply) = timeout(HANG_GUARD, half_close_exchange(client, upstream))
            .await
            .expect("half-close exchange hung");
        let outcome = timeout(HANG_GUARD, session)
            .await
            .expect("relay hung")
            .expect("relay panicked");
        assert_eq!(outcome.closed, Closed::By(Side::Client));
        assert_eq!(outcome.client_to_upstream, request);
        assert_eq!(outcome.upstream_to_client, reply);
    }

    #[tokio::test]
    async fn upstream_reset_while_client_idles_ends_the_session() {
        let (client_leg, mut client) = unix_pair();
        let (upstream_leg, mut upstream) = tcp_pair().await;
        let session = tokio::spawn(relay(unix_leg(client_leg), Leg::Tcp(upstream_leg)));

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
        // Five bytes: copied, not spliced.
        assert_eq!(outcome.upstream_to_client_path, Path::Copy);
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

    /// Issue 13 item 1 and 3: a direction switches to splice inside a 1 MiB reply and back to
    /// copy for the small replies after it; mid-burst it holds a pipe or buffer, idle nothing.
    #[tokio::test]
    async fn bulk_is_spliced_small_replies_are_copied_and_an_idle_session_holds_nothing() {
        let (client_leg, mut client) = unix_pair();
        let (upstream_leg, mut upstream) = tcp_pair().await;
        // Pipes not the relay's (the test harness captures output through some).
        let others = pipe_fds() - 2 * pool::idle_pipes();
        let counters = Counters::default();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let relay = relay_until(
            unix_leg(client_leg),
            Leg::Tcp(upstream_leg),
            &counters,
            async {
                let _ = stopped.await;
            },
        );
        let script = async {
            let bulk: Vec<u8> = (0..MIB).map(|i| (i % 251) as u8).collect();
            let (mut client_read, mut client_write) = client.split();
            let (mut upstream_read, mut upstream_write) = upstream.split();
            // More than the client's socket buffer holds: the relay waits mid-burst until the
            // client reads, holding what carries the burst.
            let (sent, (held_mid_burst, got)) =
                tokio::join!(upstream_write.write_all(&bulk), async {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    let held = counters.buffers_held();
                    let mut got = vec![0u8; MIB];
                    client_read
                        .read_exact(&mut got)
                        .await
                        .expect("client reads 1 MiB");
                    (held, got)
                });
            sent.expect("upstream sends 1 MiB");
            assert!(got == bulk, "1 MiB reply arrived intact");
            assert!(
                held_mid_burst >= 1,
                "mid-burst the direction holds its pipe or buffer"
            );
            let (_, spliced_bulk) = counters.spliced();
            assert!(
                spliced_bulk >= (MIB / 2) as u64,
                "bulk went by splice: {spliced_bulk} of {MIB} bytes"
            );

            for _ in 0..100 {
                client_write
                    .write_all(b"*1\r\n$4\r\nPING\r\n")
                    .await
                    .unwrap();
                let mut request = [0u8; 14];
                upstream_read.read_exact(&mut request).await.unwrap();
                upstream_write.write_all(b"+PONG\r\n").await.unwrap();
                let mut reply = [0u8; 7];
                client_read.read_exact(&mut reply).await.unwrap();
                assert_eq!(&reply, b"+PONG\r\n");
            }
            let (spliced_requests, spliced_replies) = counters.spliced();
            assert_eq!(spliced_requests, 0, "small requests are copied");
            // At most the first small reply still went by splice (the burst that switched back).
            assert!(
                spliced_replies - spliced_bulk <= 7,
                "small replies are copied: {} bytes spliced",
                spliced_replies - spliced_bulk
            );
            assert_eq!(counters.totals(), (1400, MIB as u64 + 700));

            // Idle: nothing held by the session, and every pipe of this process (nextest runs
            // each test in its own) is an idle one in the pool.
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert_eq!(
                counters.buffers_held(),
                0,
                "an idle session holds no buffer or pipe"
            );
            assert_eq!(
                pipe_fds() - 2 * pool::idle_pipes(),
                others,
                "no relay pipe outside the pool"
            );
            stop.send(()).unwrap();
        };
        let (outcome, ()) = timeout(HANG_GUARD, async { tokio::join!(relay, script) })
            .await
            .expect("relay hung");
        assert_eq!(outcome.client_to_upstream_path, Path::Copy);
        assert_eq!(outcome.upstream_to_client_path, Path::Splice);
    }

    /// Small messages both ways, one at a time and pipelined, in sizes around the copy limit:
    /// every byte arrives in order (no burst lost when a short read clears readiness).
    #[tokio::test]
    async fn small_round_trips_and_pipelined_bursts_arrive_intact() {
        let (client_leg, mut client) = tcp_pair().await;
        let (upstream_leg, mut upstream) = tcp_pair().await;
        let session = tokio::spawn(relay(Leg::Tcp(client_leg), Leg::Tcp(upstream_leg)));
        let script = async {
            let mut sent = 0u64;
            for i in 0..2000usize {
                let len = match i % 4 {
                    0 => 1 + i % 40,
                    1 => COPY_READ - 1 + i % 3,
                    2 => 3 * COPY_READ + i,
                    _ => 16 * (1 + i % 30),
                };
                let message: Vec<u8> = (0..len).map(|j| (i + j) as u8).collect();
                // Alternate the direction; every 10th round pipelines 20 messages.
                let copies = if i % 10 == 9 { 20 } else { 1 };
                let burst = message.repeat(copies);
                let (from, to): (&mut TcpStream, &mut TcpStream) = if i % 2 == 0 {
                    (&mut client, &mut upstream)
                } else {
                    (&mut upstream, &mut client)
                };
                let mut got = vec![0u8; burst.len()];
                let (w, r) = tokio::join!(from.write_all(&burst), to.read_exact(&mut got));
                w.expect("send");
                r.expect("receive");
                assert!(got == burst, "round {i}: bytes intact");
                sent += burst.len() as u64;
            }
            client.shutdown().await.unwrap();
            upstream.shutdown().await.unwrap();
            let mut rest = Vec::new();
            assert_eq!(client.read_to_end(&mut rest).await.unwrap(), 0);
            assert_eq!(upstream.read_to_end(&mut rest).await.unwrap(), 0);
            sent
        };
        let sent = timeout(HANG_GUARD, script).await.expect("round trips hung");
        let outcome = timeout(HANG_GUARD, session)
            .await
            .expect("relay hung")
            .expect("relay panicked");
        assert_eq!(
            outcome.client_to_upstream + outcome.upstream_to_client,
            sent
        );
        assert!(
            matches!(outcome.closed, Closed::By(_)),
            "{:?}",
            outcome.closed
        );
    }

    /// Pipes (either end) open in this process.
    fn pipe_fds() -> usize {
        std::fs::read_dir("/proc/self/fd")
            .expect("/proc/self/fd")
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .filter(|t| t.to_string_lossy().starts_with("pipe:"))
            .count()
    }
}
