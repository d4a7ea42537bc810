//! Sessions whose requests direction (client → upstream) is run by a filter from outside the
//! relay — the command guard — while the replies direction stays the relay's own: on plaintext
//! socket legs copied or spliced per burst as in `splice.rs`, else copied through user space,
//! byte for byte either way.
//!
//! The relay hands the filter the client as an `AsyncRead` and the upstream as an
//! `AsyncWrite`; what the filter writes, drops or inserts is its business (the relay still never
//! looks at a byte). The filter's future plays the part of the requests direction: `Ok` once the
//! client's EOF was passed on (`shutdown` of the upstream writer), `Err` on a failed syscall,
//! which ends the session like any relay error.

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::AtomicU64;

use tokio::io::{AsyncRead, AsyncWrite};

use super::handover::{Handover, SwitchRead, SwitchWrite};
use super::{
    copy, select_path, splice, Counters, Direction, Leg, Outcome, Path, RelayError, Side, Watch,
};

/// A replacement for the client → upstream direction.
pub trait Requests {
    /// Move the client's requests to the upstream until the client's EOF (then shut the
    /// upstream writer down) or a failure, adding the bytes written upstream to `moved`.
    /// Bytes the filter need not see may go by `bypass` instead (counted by it).
    fn run<R, W, B>(
        self,
        client: R,
        upstream: W,
        bypass: &B,
        moved: &AtomicU64,
    ) -> impl Future<Output = Result<(), RelayError>> + Send
    where
        R: AsyncRead + Unpin + Send,
        W: AsyncWrite + Unpin + Send,
        B: Bypass;
}

/// How a filter moves a stretch of the client's stream it need not look at (the rest of a
/// large argument it forwards): on plain socket legs by `splice(2)`, the bytes never entering
/// user space (`splice.rs`). The filter must have written everything due before it, and must
/// never pass more than belongs to the stretch: what follows is framed as usual.
pub trait Bypass: Sync {
    /// Move at most `max` bytes of the client's stream to the upstream, waiting until the
    /// client has some.
    fn pass(&self, max: u64) -> impl Future<Output = Result<Passed, RelayError>> + Send;

    /// The client sent EOF between two commands, everything before it written upstream: may
    /// the filter leave the upstream connection open (not half-closed) for the relay to hand
    /// back through its [`Reclaim`] instead of finishing the session's replies? Yes only where
    /// the relay was given a `Reclaim`, the upstream is a plaintext TCP socket and the client
    /// is gone for good (a Unix client that closed its socket, so no reply is wanted). The
    /// filter must then return without writing another byte.
    fn keep_upstream(&self) -> bool {
        false
    }
}

/// Where the relay hands back a plaintext TCP upstream connection a filter kept
/// ([`Bypass::keep_upstream`]), for the warm pool to clean and reuse (`upstream/warm.rs`).
/// Set only when the relay ended with the client's EOF first.
#[derive(Debug, Default)]
pub struct Reclaim(std::sync::Mutex<Option<tokio::net::TcpStream>>);

impl Reclaim {
    /// The kept connection, if the relay left one.
    pub fn take(&self) -> Option<tokio::net::TcpStream> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    pub(super) fn put(&self, stream: tokio::net::TcpStream) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(stream);
    }
}

/// What a [`Bypass::pass`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Passed {
    /// This many bytes (at least one) went upstream.
    Moved(u64),
    /// The client sent EOF; nothing was moved.
    Eof,
    /// No bypass here (TLS in user space) or not now (no pipe): read the bytes instead.
    Unavailable,
}

/// Legs without a bypass: every byte goes through the filter's reads.
pub struct NoBypass;

impl Bypass for NoBypass {
    async fn pass(&self, _max: u64) -> Result<Passed, RelayError> {
        Ok(Passed::Unavailable)
    }
}

/// [`super::relay_until`] with the requests direction run by `requests`. The outcome reports
/// each direction as the path its bytes took: on plain legs the replies are spliced when bulk,
/// copied when small, and the requests are spliced where the filter let large arguments by
/// ([`Bypass`]), else copied. With `reclaim`, a plain TCP upstream the filter kept at a Unix
/// client's final EOF ([`Bypass::keep_upstream`]) is left there, open, instead of closed.
pub async fn relay_filtered_until<F: Requests>(
    client: Leg,
    upstream: Leg,
    counters: &Counters,
    stop: impl Future<Output = ()>,
    (requests, reclaim): (F, Option<&Reclaim>),
) -> Outcome {
    let path = select_path(&client, &upstream);
    let moved = pin!(move_filtered(
        path, client, upstream, counters, requests, reclaim
    ));
    super::until(path, moved, counters, stop).await
}

/// Inspect mode: [`relay_filtered_until`] with the replies shown to `watch` on their way (so
/// both directions go through user space, reported as [`Path::Copy`]), and the upstream leg
/// swappable through `handover` (a RESP2 subscriber moved to a fresh connection: `handover.rs`).
/// Both legs are always driven as streams here, plain sockets too: the old upstream
/// connection must close when the relay lets go of it, not when the session ends.
pub async fn relay_inspected_until<F: Requests, V: Watch>(
    client: Leg,
    upstream: Leg,
    counters: &Counters,
    stop: impl Future<Output = ()>,
    (requests, watch): (F, V),
    handover: &Handover,
) -> Outcome {
    let path = select_path(&client, &upstream);
    let moved = pin!(copy_inspected(
        client, upstream, counters, requests, watch, handover
    ));
    let mut outcome = super::until(path, moved, counters, stop).await;
    outcome.client_to_upstream_path = Path::Copy;
    outcome.upstream_to_client_path = Path::Copy;
    outcome
}

/// [`copy_filtered`] with the upstream's halves behind the handover's switches.
async fn copy_inspected<F: Requests, V: Watch>(
    client: Leg,
    upstream: Leg,
    counters: &Counters,
    requests: F,
    watch: V,
    handover: &Handover,
) -> Result<Side, RelayError> {
    let (client_read, client_write) = tokio::io::split(copy::into_stream(client));
    let (upstream_read, upstream_write) = tokio::io::split(copy::into_stream(upstream));
    let upstream_read = SwitchRead {
        current: Box::new(upstream_read),
        handover,
    };
    let upstream_write = SwitchWrite {
        current: Box::new(upstream_write),
        handover,
    };
    let client = (client_read, client_write);
    drive_copied(
        client,
        (upstream_read, upstream_write),
        counters,
        requests,
        watch,
    )
    .await
}

async fn move_filtered<F: Requests>(
    path: Path,
    client: Leg,
    upstream: Leg,
    counters: &Counters,
    requests: F,
    reclaim: Option<&Reclaim>,
) -> Result<Side, RelayError> {
    let (client, upstream) = match path {
        Path::Splice => match splice::Plan::new(client, upstream) {
            Ok(plan) => return plan.run_filtered(counters, requests, reclaim).await,
            Err(legs) => legs,
        },
        Path::Copy => (client, upstream),
    };
    // Boxed: see `super::move_bytes`.
    Box::pin(copy_filtered(client, upstream, counters, requests)).await
}

/// Both legs through user space: the filter on one direction, the copy on the other.
async fn copy_filtered<F: Requests>(
    client: Leg,
    upstream: Leg,
    counters: &Counters,
    requests: F,
) -> Result<Side, RelayError> {
    let client = tokio::io::split(copy::into_stream(client));
    let upstream = tokio::io::split(copy::into_stream(upstream));
    drive_copied(client, upstream, counters, requests, copy::Unwatched).await
}

/// The filter from the client's read half to the upstream's write half, the copy (shown to
/// `watch`) from the upstream's read half to the client's write half.
async fn drive_copied<F, V, CR, CW, UR, UW>(
    (client_read, client_write): (CR, CW),
    (upstream_read, upstream_write): (UR, UW),
    counters: &Counters,
    requests: F,
    watch: V,
) -> Result<Side, RelayError>
where
    F: Requests,
    V: Watch,
    CR: AsyncRead + Unpin + Send,
    CW: AsyncWrite + Unpin,
    UR: AsyncRead + Unpin,
    UW: AsyncWrite + Unpin + Send,
{
    Direction::ClientToUpstream.trace_start(Path::Copy);
    let up = pin!(requests.run(
        client_read,
        upstream_write,
        &NoBypass,
        counters.for_direction(Direction::ClientToUpstream),
    ));
    let down = pin!(copy::watched(
        Direction::UpstreamToClient,
        upstream_read,
        client_write,
        counters.for_direction(Direction::UpstreamToClient),
        watch,
    ));
    super::drive(up, down, &|| false).await
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::time::timeout;

    use super::super::testutil::{tcp_pair, tls_pair, unix_leg, unix_pair, HANG_GUARD};
    use super::*;

    /// A filter that upper-cases what it forwards: proves the requests go through it while the
    /// replies come back untouched.
    struct Upper;

    impl Requests for Upper {
        async fn run<R, W, B>(
            self,
            mut client: R,
            mut upstream: W,
            _bypass: &B,
            moved: &AtomicU64,
        ) -> Result<(), RelayError>
        where
            R: AsyncRead + Unpin + Send,
            W: AsyncWrite + Unpin + Send,
            B: Bypass,
        {
            let mut buf = [0u8; 1024];
            loop {
                let n = client
                    .read(&mut buf)
                    .await
                    .map_err(|source| RelayError::Read {
                        side: Side::Client,
                        source,
                    })?;
                if n == 0 {
                    return upstream
                        .shutdown()
                        .await
                        .map_err(|source| RelayError::Shutdown {
                            side: Side::Upstream,
                            source,
                        });
                }
                buf[..n].make_ascii_uppercase();
                upstream
                    .write_all(&buf[..n])
                    .await
                    .map_err(|source| RelayError::Write {
                        side: Side::Upstream,
                        source,
                    })?;
                moved.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }

    /// A filter that upper-cases what it reads itself, but lets the `pass` bytes after the
    /// first `head` go by the bypass: proves a bypass moves at most what it is asked, in order
    /// with what the filter writes, and that the filter reads everything when there is none.
    struct UpperAround {
        head: usize,
        pass: u64,
    }

    impl Requests for UpperAround {
        async fn run<R, W, B>(
            self,
            mut client: R,
            mut upstream: W,
            bypass: &B,
            moved: &AtomicU64,
        ) -> Result<(), RelayError>
        where
            R: AsyncRead + Unpin + Send,
            W: AsyncWrite + Unpin + Send,
            B: Bypass,
        {
            let read_error = |source| RelayError::Read {
                side: Side::Client,
                source,
            };
            let write_error = |source| RelayError::Write {
                side: Side::Upstream,
                source,
            };
            let mut head = vec![0u8; self.head];
            client.read_exact(&mut head).await.map_err(read_error)?;
            head.make_ascii_uppercase();
            upstream.write_all(&head).await.map_err(write_error)?;
            moved.fetch_add(head.len() as u64, std::sync::atomic::Ordering::Relaxed);
            let mut left = self.pass;
            while left > 0 {
                match bypass.pass(left).await? {
                    Passed::Moved(n) => {
                        assert!(
                            n <= left,
                            "the bypass moved {n} of the {left} bytes it was given"
                        );
                        left -= n;
                    }
                    Passed::Eof | Passed::Unavailable => break,
                }
            }
            Upper.run(client, upstream, &NoBypass, moved).await
        }
    }

    /// `abcd`, 100,000 `x`, `tail` through [`UpperAround`] passing the `x`s: what the upstream
    /// got, and the outcome.
    async fn around(
        client: Leg,
        upstream: Leg,
        mut c: impl AsyncReadExt + AsyncWriteExt + Unpin,
        mut u: impl AsyncReadExt + AsyncWriteExt + Unpin,
    ) -> (Vec<u8>, Outcome, u64) {
        let counters = Counters::default();
        let filter = UpperAround {
            head: 4,
            pass: 100_000,
        };
        let relay = relay_filtered_until(
            client,
            upstream,
            &counters,
            std::future::pending(),
            (filter, None),
        );
        let peers = async {
            let mut sent = b"abcd".to_vec();
            sent.extend(std::iter::repeat_n(b'x', 100_000));
            sent.extend_from_slice(b"tail");
            c.write_all(&sent).await.unwrap();
            c.shutdown().await.unwrap();
            let mut got = Vec::new();
            u.read_to_end(&mut got).await.unwrap();
            u.shutdown().await.unwrap();
            let mut rest = Vec::new();
            c.read_to_end(&mut rest).await.unwrap();
            got
        };
        let (outcome, got) = timeout(HANG_GUARD, async { tokio::join!(relay, peers) })
            .await
            .expect("hang guard");
        (got, outcome, counters.spliced().0)
    }

    /// `ABCD`, 100,000 `middle`, `TAIL`, in that order.
    fn assert_arrived(got: &[u8], middle: u8) {
        let mut want = b"ABCD".to_vec();
        want.extend(std::iter::repeat_n(middle, 100_000));
        want.extend_from_slice(b"TAIL");
        assert!(
            got == want.as_slice(),
            "the upstream got {} bytes, not the {} expected in order",
            got.len(),
            want.len()
        );
    }

    #[tokio::test]
    async fn plain_legs_splice_what_the_filter_lets_by_and_no_byte_more() {
        let (client, c) = unix_pair();
        let (upstream, u) = tcp_pair().await;
        let (got, outcome, spliced) = around(unix_leg(client), Leg::Tcp(upstream), c, u).await;
        // The bypassed stretch arrives as sent, between the filter's upper-cased bytes.
        assert_arrived(&got, b'x');
        assert_eq!(spliced, 100_000);
        assert_eq!(outcome.client_to_upstream_path, Path::Splice);
        assert_eq!(outcome.client_to_upstream, 100_008);
    }

    #[tokio::test]
    async fn a_tls_leg_has_no_bypass_and_the_filter_reads_everything() {
        let (client, c) = tls_pair().await;
        let (upstream, u) = tcp_pair().await;
        let (got, outcome, spliced) =
            around(Leg::Tls(Box::new(client)), Leg::Tcp(upstream), c, u).await;
        // Everything went through the filter, upper-cased.
        assert_arrived(&got, b'X');
        assert_eq!(spliced, 0);
        assert_eq!(outcome.client_to_upstream_path, Path::Copy);
    }

    async fn exchange(
        client: Leg,
        upstream: Leg,
        mut c: impl AsyncReadExt + AsyncWriteExt + Unpin,
        mut u: impl AsyncReadExt + AsyncWriteExt + Unpin,
    ) -> Outcome {
        let counters = Counters::default();
        let relay = relay_filtered_until(
            client,
            upstream,
            &counters,
            std::future::pending(),
            (Upper, None),
        );
        let peers = async {
            c.write_all(b"ping\r\n").await.unwrap();
            c.flush().await.unwrap();
            let mut got = [0u8; 6];
            u.read_exact(&mut got).await.unwrap();
            assert_eq!(&got, b"PING\r\n");
            u.write_all(b"+pong\r\n").await.unwrap();
            u.flush().await.unwrap();
            let mut reply = [0u8; 7];
            c.read_exact(&mut reply).await.unwrap();
            assert_eq!(&reply, b"+pong\r\n", "replies are not filtered");
            c.shutdown().await.unwrap();
            let mut rest = Vec::new();
            u.read_to_end(&mut rest).await.unwrap();
            assert!(rest.is_empty());
            drop(u);
            c.read_to_end(&mut rest).await.unwrap_or(0);
        };
        let (outcome, ()) = timeout(HANG_GUARD, async { tokio::join!(relay, peers) })
            .await
            .expect("filtered relay hung");
        assert_eq!(outcome.client_to_upstream, 6);
        assert_eq!(outcome.upstream_to_client, 7);
        outcome
    }

    #[tokio::test]
    async fn plain_legs_filter_requests_and_pass_replies_untouched() {
        let (client, c) = unix_pair();
        let (upstream, u) = tcp_pair().await;
        let outcome = exchange(unix_leg(client), Leg::Tcp(upstream), c, u).await;
        assert_eq!(outcome.client_to_upstream_path, Path::Copy);
        // A 7-byte reply is copied; bulk replies splice (splice.rs tests).
        assert_eq!(outcome.upstream_to_client_path, Path::Copy);
        assert_eq!(outcome.closed, super::super::Closed::By(Side::Client));
    }

    #[tokio::test]
    async fn a_tls_leg_filters_requests_and_copies_replies() {
        let (client, c) = tls_pair().await;
        let (upstream, u) = tcp_pair().await;
        let outcome = exchange(Leg::Tls(Box::new(client)), Leg::Tcp(upstream), c, u).await;
        assert_eq!(outcome.upstream_to_client_path, Path::Copy);
    }
}
