//! The relay: the only code that moves bytes after the handshake. It receives the two legs of an
//! authenticated session and copies bytes both ways until both sides have closed or one fails.
//!
//! Two paths, chosen once per session by [`select_path`]:
//! - **plain** (`splice.rs`, reported as [`Path::Splice`]): both legs are kernel sockets, so each
//!   direction picks per burst, like HAProxy's `splice-auto`: a small request or reply is copied
//!   with one `read(2)` and one `write(2)`; bulk data (a read that fills the copy limit) goes
//!   socket → pipe → socket with `splice(2)` until a short read;
//! - **copy** (`copy.rs`): a leg is TLS terminated in user space (rustls), so each direction reads
//!   into a buffer and writes it out.
//!
//! Buffers and pipes come from a process-wide bounded pool (`pool.rs`) for the length of one
//! burst: an idle session holds neither. A session may hand its requests direction to a filter
//! instead (`filtered.rs`, the command guard): the relay then moves only the replies, by the same
//! path, and on plain legs splices the large arguments the filter lets by unread (`Bypass`).
//!
//! Both directions run concurrently in the calling task. A half-close (EOF) on one side is
//! propagated as `shutdown(Write)` on the other and the opposite direction keeps running, so a
//! client that has sent its last command still receives every reply. An I/O error on either side
//! (reset, broken pipe) ends the session at once: the other direction is dropped and both legs are
//! closed.
//!
//! This module must never parse, log or otherwise look at the bytes it moves (it knows nothing
//! about Redis, and the bytes may hold secrets), never spin on `EAGAIN` without awaiting readiness,
//! and never panic on anything the network does.

mod copy;
mod filtered;
mod handover;
mod on_wake;
mod pipe;
mod pool;
mod socket;
mod splice;
#[cfg(test)]
mod testutil;
mod unix;

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::task::Poll;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::proxy::ktls::KtlsSocket;

pub use copy::{read_pooled, Chunk, Edit, Watch};
pub use filtered::{
    relay_filtered_until, relay_inspected_until, Bypass, NoBypass, Passed, Reclaim, Requests,
};
pub use handover::Handover;
pub(crate) use unix::register as register_fd;
pub use unix::{UnixAcceptor, UnixSocket};

/// Anything the copy path can drive (TLS streams).
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// One side of a session, as the relay receives it.
pub enum Leg {
    /// A plaintext TCP socket: eligible for splice.
    Tcp(TcpStream),
    /// A plaintext Unix stream socket (read readiness registered, write on demand: `unix.rs`):
    /// eligible for splice.
    Unix(UnixSocket),
    /// A TCP socket with kernel TLS (`proxy/ktls`): plaintext to us, eligible for splice; its
    /// non-data records are handed to `ktls` when a read or splice meets one.
    Ktls(KtlsSocket),
    /// A stream whose bytes must pass through user space (TLS terminated by rustls).
    Tls(Box<dyn Stream>),
}

/// Which end of the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Upstream,
}

/// How one direction moved its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// Both legs are kernel sockets and some of the direction's bytes went by `splice(2)`
    /// socket → pipe → socket (bulk bursts; small ones are copied even then).
    Splice,
    /// Every byte was read into a user-space buffer and written out.
    Copy,
}

/// How the session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Closed {
    /// This side closed (EOF) first.
    By(Side),
    /// An I/O error (e.g. reset) on this side ended the session.
    Error { side: Side, message: String },
    /// The caller's `stop` future resolved (an administrator killed the session, or revoked
    /// its certificate): both legs were closed mid-flight.
    Stopped,
}

/// What the relay did, for the session's closing log line and audit event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub client_to_upstream: u64,
    pub upstream_to_client: u64,
    pub closed: Closed,
    pub client_to_upstream_path: Path,
    pub upstream_to_client_path: Path,
}

/// Move bytes both ways until both directions are done or one fails.
///
/// Returns when both sides have sent EOF (each EOF already propagated to the other side as a
/// half-close), or as soon as a read, write or half-close fails on either side; in both cases
/// both legs are closed when this returns. Never panics on network behaviour: a reset is reported
/// in [`Outcome::closed`], not raised.
pub async fn relay(client: Leg, upstream: Leg) -> Outcome {
    relay_until(
        client,
        upstream,
        &Counters::default(),
        std::future::pending(),
    )
    .await
}

/// [`relay`], counting into `counters` (which a caller may read while the relay runs), and
/// ending early — both legs closed, [`Closed::Stopped`] — when `stop` resolves.
///
/// `stop` is polled only after its own waker fired ([`on_wake::OnWake`]), so on the hot path it
/// costs an atomic swap per wake-up.
pub async fn relay_until(
    client: Leg,
    upstream: Leg,
    counters: &Counters,
    stop: impl Future<Output = ()>,
) -> Outcome {
    let path = select_path(&client, &upstream);
    let moved = pin!(move_bytes(path, client, upstream, counters));
    until(path, moved, counters, stop).await
}

/// Run `moved` (the path first chosen: `path`) until it ends or `stop` resolves. On the plain
/// path a direction reports [`Path::Splice`] if it spliced any bytes, else [`Path::Copy`].
async fn until(
    path: Path,
    moved: Pin<&mut impl Future<Output = Result<Side, RelayError>>>,
    counters: &Counters,
    stop: impl Future<Output = ()>,
) -> Outcome {
    // `stop` waits for hours beside a relay woken twice per request: polled only when it woke.
    let stop = on_wake::OnWake::new(stop);
    let closed = tokio::select! {
        biased;
        ended = moved => closed_by(ended),
        () = stop => Closed::Stopped,
    };
    let (client_to_upstream, upstream_to_client) = counters.totals();
    let (spliced_up, spliced_down) = counters.spliced();
    let path_of = |spliced: u64| match path {
        Path::Splice if spliced > 0 => Path::Splice,
        _ => Path::Copy,
    };
    Outcome {
        client_to_upstream,
        upstream_to_client,
        closed,
        client_to_upstream_path: path_of(spliced_up),
        upstream_to_client_path: path_of(spliced_down),
    }
}

/// Run the chosen path to its end: how it ended.
async fn move_bytes(
    path: Path,
    client: Leg,
    upstream: Leg,
    counters: &Counters,
) -> Result<Side, RelayError> {
    // Each path's future is boxed, so a session's allocation is the size of the path it takes,
    // not of the largest one (an idle session holds this state for its whole life).
    match path {
        Path::Splice => match splice::Plan::new(client, upstream) {
            Ok(plan) => Box::pin(plan.run(counters)).await,
            Err((client, upstream)) => Box::pin(copy::run(client, upstream, counters)).await,
        },
        Path::Copy => Box::pin(copy::run(client, upstream, counters)).await,
    }
}

fn closed_by(ended: Result<Side, RelayError>) -> Closed {
    match ended {
        Ok(first_eof) => Closed::By(first_eof),
        Err(error) => {
            tracing::debug!(%error, "relay: session ended by an I/O error");
            Closed::Error {
                side: error.side(),
                message: error.to_string(),
            }
        }
    }
}

/// Which path a session's directions take. The one place that decides: a kTLS leg is a plain
/// socket again as far as splice is concerned.
///
/// Both directions of a session always share a path: each direction touches both legs, so a TLS
/// leg forces user space on both. [`Path::Splice`] here means "the plain path": each direction
/// then splices only its bulk bursts.
pub fn select_path(client: &Leg, upstream: &Leg) -> Path {
    let spliceable = |leg: &Leg| match leg {
        Leg::Tcp(_) | Leg::Unix(_) => true,
        // Plaintext rustls decrypted before the hand-over must be read before the socket.
        Leg::Ktls(socket) => !socket.has_early(),
        Leg::Tls(_) => false,
    };
    if spliceable(client) && spliceable(upstream) {
        Path::Splice
    } else {
        Path::Copy
    }
}

/// A failed syscall on one leg. Carries the side so the operator's log line says who failed.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("reading from {side}: {source}")]
    Read { side: Side, source: io::Error },
    #[error("writing to {side}: {source}")]
    Write { side: Side, source: io::Error },
    #[error("half-closing {side}: {source}")]
    Shutdown { side: Side, source: io::Error },
}

impl RelayError {
    /// The leg whose syscall failed.
    pub fn side(&self) -> Side {
        match self {
            RelayError::Read { side, .. }
            | RelayError::Write { side, .. }
            | RelayError::Shutdown { side, .. } => *side,
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Client => "client",
            Side::Upstream => "upstream",
        })
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Path::Splice => "splice",
            Path::Copy => "copy",
        })
    }
}

/// One direction of a session: where bytes come from and go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    ClientToUpstream,
    UpstreamToClient,
}

impl Direction {
    fn source(self) -> Side {
        match self {
            Direction::ClientToUpstream => Side::Client,
            Direction::UpstreamToClient => Side::Upstream,
        }
    }

    fn destination(self) -> Side {
        match self {
            Direction::ClientToUpstream => Side::Upstream,
            Direction::UpstreamToClient => Side::Client,
        }
    }

    /// Stable name for the `relay.direction` tracing field.
    fn name(self) -> &'static str {
        match self {
            Direction::ClientToUpstream => "client_to_upstream",
            Direction::UpstreamToClient => "upstream_to_client",
        }
    }

    fn read_error(self, source: io::Error) -> RelayError {
        RelayError::Read {
            side: self.source(),
            source,
        }
    }

    fn write_error(self, source: io::Error) -> RelayError {
        RelayError::Write {
            side: self.destination(),
            source,
        }
    }

    fn shutdown_error(self, source: io::Error) -> RelayError {
        RelayError::Shutdown {
            side: self.destination(),
            source,
        }
    }

    /// The once-per-direction debug line naming the path.
    fn trace_start(self, path: Path) {
        tracing::debug!(
            relay.path = %path,
            relay.direction = self.name(),
            "relay direction started"
        );
    }
}

/// Bytes delivered per direction (and how many of them were spliced), and the buffers and pipes
/// the session holds right now. Shared by reference with the direction futures so the counts
/// survive a direction being dropped when the other one fails (or the relay being stopped).
/// Atomics (not `Cell`) so the relay future stays `Send` and `bastion sessions ls` can read
/// a live session's counts; only the relay writes them.
#[derive(Debug, Default)]
pub struct Counters {
    client_to_upstream: AtomicU64,
    upstream_to_client: AtomicU64,
    spliced_client_to_upstream: AtomicU64,
    spliced_upstream_to_client: AtomicU64,
    held: AtomicU32,
    /// Inspect mode: commands answered so far, and the Unix time (seconds) of the last read
    /// of requests.
    commands: AtomicU64,
    last_command: std::sync::atomic::AtomicI64,
    /// Inspect mode: Unix time (seconds) of the next re-AUTH (0: none).
    next_reauth: std::sync::atomic::AtomicI64,
}

impl Counters {
    /// Count bytes moved outside the relay (the hand-off before it starts) into the totals.
    pub fn add(&self, client_to_upstream: u64, upstream_to_client: u64) {
        self.client_to_upstream
            .fetch_add(client_to_upstream, Ordering::Relaxed);
        self.upstream_to_client
            .fetch_add(upstream_to_client, Ordering::Relaxed);
    }

    /// (client → upstream, upstream → client) so far.
    pub fn totals(&self) -> (u64, u64) {
        (
            self.client_to_upstream.load(Ordering::Relaxed),
            self.upstream_to_client.load(Ordering::Relaxed),
        )
    }

    /// Of [`Counters::totals`], the bytes that went by `splice(2)`.
    pub fn spliced(&self) -> (u64, u64) {
        (
            self.spliced_client_to_upstream.load(Ordering::Relaxed),
            self.spliced_upstream_to_client.load(Ordering::Relaxed),
        )
    }

    /// Inspect mode: `n` more commands were answered.
    pub fn commands_answered(&self, n: u64) {
        self.commands.fetch_add(n, Ordering::Relaxed);
    }

    /// Inspect mode: requests were read at Unix time `secs`.
    pub fn requests_at(&self, secs: i64) {
        self.last_command.store(secs, Ordering::Relaxed);
    }

    /// Inspect mode: the next re-AUTH is due at Unix time `secs`.
    pub fn reauth_at(&self, secs: i64) {
        self.next_reauth.store(secs, Ordering::Relaxed);
    }

    /// Unix seconds of the next re-AUTH (0: none planned).
    pub fn next_reauth(&self) -> i64 {
        self.next_reauth.load(Ordering::Relaxed)
    }

    /// (commands answered, Unix seconds of the last requests; 0: none yet).
    pub fn commands(&self) -> (u64, i64) {
        (
            self.commands.load(Ordering::Relaxed),
            self.last_command.load(Ordering::Relaxed),
        )
    }

    /// Buffers and pipes the session's relay holds at this moment (0 while it is idle).
    pub fn buffers_held(&self) -> u32 {
        self.held.load(Ordering::Relaxed)
    }

    fn held(&self) -> &AtomicU32 {
        &self.held
    }

    fn for_direction(&self, direction: Direction) -> &AtomicU64 {
        match direction {
            Direction::ClientToUpstream => &self.client_to_upstream,
            Direction::UpstreamToClient => &self.upstream_to_client,
        }
    }

    /// `n` more bytes delivered in `direction`, by splice or not.
    fn moved(&self, direction: Direction, n: u64, spliced: bool) {
        self.for_direction(direction)
            .fetch_add(n, Ordering::Relaxed);
        if spliced {
            let spliced = match direction {
                Direction::ClientToUpstream => &self.spliced_client_to_upstream,
                Direction::UpstreamToClient => &self.spliced_upstream_to_client,
            };
            spliced.fetch_add(n, Ordering::Relaxed);
        }
    }
}

/// Drive both directions in this task. A direction future resolves `Ok` when its source sent EOF
/// (already propagated to the destination) and `Err` on the first failed syscall.
///
/// Returns the side whose EOF came first once both directions are done, or the first error — at
/// which point the other direction is dropped mid-flight (the caller then closes both legs).
///
/// The directions are pinned by the caller (`std::pin::pin!`) and borrowed here: taken by value,
/// each would be stored twice in the session's future (once as an argument, once pinned), and
/// an idle session holds that future for its whole life.
///
/// `kept` is asked once, when the requests direction ends first: `true` (its filter kept the
/// upstream connection for reuse, the client being gone) returns at once, the replies direction
/// dropped mid-flight like on an error — nobody is left to read them.
async fn drive<A, B>(
    mut client_to_upstream: Pin<&mut A>,
    mut upstream_to_client: Pin<&mut B>,
    kept: &(dyn Fn() -> bool + Sync),
) -> Result<Side, RelayError>
where
    A: Future<Output = Result<(), RelayError>>,
    B: Future<Output = Result<(), RelayError>>,
{
    // The directions take turns at being polled first. Each runs until its socket would block
    // or tokio's cooperative budget for this poll is spent, so with a fixed order a client that
    // floods requests would spend the budget on every poll and hold its own replies back (seen
    // as seconds of reply latency); `select!`'s random order costs a random draw per poll.
    let mut requests_first = false;
    let first = std::future::poll_fn(|cx| {
        requests_first = !requests_first;
        for requests in [requests_first, !requests_first] {
            let polled = if requests {
                client_to_upstream
                    .as_mut()
                    .poll(cx)
                    .map_ok(|()| Side::Client)
            } else {
                upstream_to_client
                    .as_mut()
                    .poll(cx)
                    .map_ok(|()| Side::Upstream)
            };
            if polled.is_ready() {
                return polled;
            }
        }
        Poll::Pending
    })
    .await?;
    match first {
        Side::Client if kept() => {}
        Side::Client => upstream_to_client.await?,
        Side::Upstream => client_to_upstream.await?,
    }
    Ok(first)
}

#[cfg(test)]
mod tests {
    use super::testutil::{tcp_pair, unix_leg, unix_pair};
    use super::*;

    #[tokio::test]
    async fn path_is_splice_only_when_both_legs_are_plain_sockets() {
        let (a, _a) = tcp_pair().await;
        let (b, _b) = unix_pair();
        let (c, _c) = tcp_pair().await;
        let tls = Leg::Tls(Box::new(c));
        assert_eq!(select_path(&Leg::Tcp(a), &unix_leg(b)), Path::Splice);
        let (d, _d) = unix_pair();
        assert_eq!(select_path(&tls, &unix_leg(d)), Path::Copy);
        let (e, _e) = tcp_pair().await;
        assert_eq!(select_path(&Leg::Tcp(e), &tls), Path::Copy);
    }

    #[tokio::test]
    async fn relay_future_is_send_so_sessions_can_be_spawned() {
        fn assert_send<T: Send>(_: &T) {}
        let (a, _a) = tcp_pair().await;
        let (b, _b) = tcp_pair().await;
        let spliced = relay(Leg::Tcp(a), Leg::Tcp(b));
        assert_send(&spliced);
        let (c, _c) = tcp_pair().await;
        let (d, _d) = unix_pair();
        let copied = relay(Leg::Tls(Box::new(c)), unix_leg(d));
        assert_send(&copied);
    }

    #[tokio::test]
    async fn a_stopped_relay_closes_both_legs_and_keeps_its_counts() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        for tls in [false, true] {
            let (client, mut client_peer) = tcp_pair().await;
            let (upstream, mut upstream_peer) = tcp_pair().await;
            let client = if tls {
                Leg::Tls(Box::new(client))
            } else {
                Leg::Tcp(client)
            };
            let counters = Counters::default();
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let relay = relay_until(client, Leg::Tcp(upstream), &counters, async {
                let _ = stopped.await;
            });
            let peers = async {
                client_peer.write_all(b"PING\r\n").await.unwrap();
                let mut got = [0u8; 6];
                upstream_peer.read_exact(&mut got).await.unwrap();
                assert_eq!(&got, b"PING\r\n");
                stop.send(()).unwrap();
            };
            let (outcome, ()) = tokio::join!(relay, peers);
            assert_eq!(outcome.closed, Closed::Stopped, "tls={tls}");
            assert_eq!(outcome.client_to_upstream, 6);
            // Both peers see their connection end.
            let mut rest = Vec::new();
            assert_eq!(client_peer.read_to_end(&mut rest).await.unwrap_or(0), 0);
            assert_eq!(upstream_peer.read_to_end(&mut rest).await.unwrap_or(0), 0);
        }
    }

    #[test]
    fn errors_name_the_failing_side() {
        let reset = || io::Error::from(io::ErrorKind::ConnectionReset);
        let read = Direction::UpstreamToClient.read_error(reset());
        assert_eq!(read.side(), Side::Upstream);
        assert!(read.to_string().starts_with("reading from upstream: "));
        let write = Direction::UpstreamToClient.write_error(reset());
        assert_eq!(write.side(), Side::Client);
        assert!(write.to_string().starts_with("writing to client: "));
        let shut = Direction::ClientToUpstream.shutdown_error(reset());
        assert_eq!(shut.side(), Side::Upstream);
    }
}
