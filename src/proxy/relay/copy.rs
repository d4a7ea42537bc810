//! The copy path: a leg is TLS terminated in user space, so each direction reads into a pooled
//! buffer (`pool::BUFFER_SIZE`) and writes it out. Plaintext legs paired with a TLS leg are just
//! another `AsyncRead + AsyncWrite` here. The buffer is taken from the pool only for a read that
//! has bytes to give ([`read_pooled`]) and goes back once they are written, so an idle session
//! holds none.
//!
//! Must never buffer bytes it has read without writing and flushing them before the next read
//! (a Redis reply stuck in a TLS buffer is a hung client), and never end a direction without
//! `shutdown()` on the write half — for TLS that is the `close_notify` the peer needs to tell a
//! clean end from a truncation.

use std::io;
use std::ops::Deref;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::pool::Buffer;
use super::{drive, Counters, Direction, Leg, Path, RelayError, Side, Stream};

/// Copy both ways until both sides sent EOF (`Ok(first to close)`) or a read/write fails.
/// Both legs close when this returns.
pub(super) async fn run(
    client: Leg,
    upstream: Leg,
    counters: &Counters,
) -> Result<Side, RelayError> {
    // tokio::io::split, not a TLS-specific split: each half locks the stream only for the length
    // of one poll, and a TLS stream has to be shared because reading may also write (alerts).
    let (client_read, client_write) = tokio::io::split(into_stream(client));
    let (upstream_read, upstream_write) = tokio::io::split(into_stream(upstream));
    let up = pin!(direction(
        Direction::ClientToUpstream,
        client_read,
        upstream_write,
        counters.for_direction(Direction::ClientToUpstream),
    ));
    let down = pin!(direction(
        Direction::UpstreamToClient,
        upstream_read,
        client_write,
        counters.for_direction(Direction::UpstreamToClient),
    ));
    drive(up, down, &|| false).await
}

pub(super) fn into_stream(leg: Leg) -> Box<dyn Stream> {
    match leg {
        Leg::Tcp(stream) => Box::new(stream),
        Leg::Unix(stream) => Box::new(stream),
        Leg::Ktls(socket) => Box::new(socket),
        Leg::Tls(stream) => stream,
    }
}

/// One direction: read a chunk, write and flush all of it, repeat; on EOF shut the write half
/// down (TLS: `close_notify`, then the socket's `SHUT_WR`) and finish. Every read and write is an
/// `.await` on tokio, which parks on readiness: there is no retry loop here to spin.
pub(super) async fn direction<R, W>(
    direction: Direction,
    source: R,
    destination: W,
    moved: &AtomicU64,
) -> Result<(), RelayError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    watched(direction, source, destination, moved, Unwatched).await
}

/// [`direction`] with every chunk shown to `watch` before it is written (inspect mode's
/// replies framer); the bytes written are the chunk's, whatever the watcher makes of them. A
/// watcher's error ends the session like a failed read of that direction.
pub(super) async fn watched<R, W, V>(
    direction: Direction,
    mut source: R,
    mut destination: W,
    moved: &AtomicU64,
    mut watch: V,
) -> Result<(), RelayError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
    V: Watch,
{
    direction.trace_start(Path::Copy);
    // Grows only when a watcher edits (a re-AUTH, a refusal): never for the plain copy.
    let mut edits = Vec::new();
    loop {
        let chunk = match read_pooled(&mut source).await {
            Ok(chunk) => chunk,
            // A TLS peer that closes its socket without close_notify (hiredis and redis-py
            // do) is a close, not a failure: RESP frames its own messages, so there is no
            // truncation for close_notify to catch.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Chunk::EMPTY,
            Err(e) => return Err(direction.read_error(e)),
        };
        if chunk.is_empty() {
            destination
                .shutdown()
                .await
                .map_err(|e| direction.shutdown_error(e))?;
            return Ok(());
        }
        edits.clear();
        watch
            .chunk(&chunk, &mut edits)
            .map_err(|e| direction.read_error(e))?;
        let written = write_edited(&mut destination, &chunk, &edits)
            .await
            .map_err(|e| direction.write_error(e))?;
        // A TLS writer may hold the record until flushed; Redis is request/response, so flush
        // every chunk rather than wait for the next read.
        destination
            .flush()
            .await
            .map_err(|e| direction.write_error(e))?;
        moved.fetch_add(written as u64, Ordering::Relaxed);
    }
}

/// What sees a direction's bytes as they pass: inspect mode's replies framer. It changes
/// nothing, except whole replies it owns: the reply to a command of the bastion's own (a
/// re-AUTH, cut out) and the upstream's answer to a refusal (replaced by the bastion's).
pub trait Watch: Send {
    /// The next bytes of the stream, just before they are written on: `edits` (empty when
    /// called) gets the changes to make, in order and not overlapping. `Err` ends the session.
    fn chunk(&mut self, bytes: &[u8], edits: &mut Vec<Edit>) -> io::Result<()>;
}

/// `range` of a chunk written as `with` instead (empty: cut out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edit {
    pub range: std::ops::Range<usize>,
    pub with: Vec<u8>,
}

/// Nothing watches.
pub(super) struct Unwatched;

impl Watch for Unwatched {
    fn chunk(&mut self, _: &[u8], _: &mut Vec<Edit>) -> io::Result<()> {
        Ok(())
    }
}

/// Write `chunk` with `edits` applied; the bytes written.
async fn write_edited<W: AsyncWrite + Unpin>(
    destination: &mut W,
    chunk: &[u8],
    edits: &[Edit],
) -> io::Result<usize> {
    if edits.is_empty() {
        destination.write_all(chunk).await?;
        return Ok(chunk.len());
    }
    let mut written = 0;
    let mut from = 0;
    for edit in edits {
        let start = edit.range.start.clamp(from, chunk.len());
        for part in [&chunk[from..start], &edit.with[..]] {
            destination.write_all(part).await?;
            written += part.len();
        }
        from = edit.range.end.clamp(start, chunk.len());
    }
    destination.write_all(&chunk[from..]).await?;
    Ok(written + chunk.len() - from)
}

/// Bytes of one read, in a pooled buffer that goes back to the pool on drop.
pub struct Chunk {
    buffer: Option<Buffer<'static>>,
    len: usize,
}

impl Chunk {
    /// No bytes: what a read at EOF returns.
    const EMPTY: Chunk = Chunk {
        buffer: None,
        len: 0,
    };
}

impl Deref for Chunk {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // len <= the buffer's length: it is what a ReadBuf over that buffer reported filled.
        self.buffer.as_deref().map_or(&[][..], |b| &b[..self.len])
    }
}

/// Read once from `source` (up to `pool::BUFFER_SIZE`; empty at EOF). A buffer is taken from the
/// pool for each poll and given back at once if the read is not ready, so a reader parked on an
/// idle peer holds no buffer — the relay's copy directions and the command guard read this way.
pub async fn read_pooled<R: AsyncRead + Unpin + ?Sized>(source: &mut R) -> io::Result<Chunk> {
    std::future::poll_fn(|cx| {
        let mut buffer = Buffer::take(None);
        let mut read = ReadBuf::new(&mut buffer);
        match Pin::new(&mut *source).poll_read(cx, &mut read) {
            Poll::Ready(Ok(())) => {
                let len = read.filled().len();
                Poll::Ready(Ok(Chunk {
                    buffer: Some(buffer),
                    len,
                }))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            // Nothing was read (poll_read's contract): the buffer goes back to the pool.
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::time::timeout;

    use super::super::testutil::{
        half_close_exchange, relay_both_ways, tcp_pair, tls_pair, HANG_GUARD,
    };
    use super::super::{relay, Closed, Leg, Outcome, Path, Side};

    const MIB: usize = 1024 * 1024;

    fn assert_copied(outcome: &Outcome) {
        assert_eq!(outcome.client_to_upstream_path, Path::Copy);
        assert_eq!(outcome.upstream_to_client_path, Path::Copy);
    }

    #[tokio::test]
    async fn tls_client_and_tcp_upstream_copy_both_ways_intact() {
        let (client_leg, client) = tls_pair().await;
        let (upstream_leg, upstream) = tcp_pair().await;
        let outcome = relay_both_ways(
            Leg::Tls(Box::new(client_leg)),
            Leg::Tcp(upstream_leg),
            client,
            upstream,
            8 * MIB,
        )
        .await;
        assert_copied(&outcome);
        assert!(
            matches!(outcome.closed, Closed::By(_)),
            "{:?}",
            outcome.closed
        );
    }

    #[tokio::test]
    async fn tcp_client_and_tls_upstream_copy_both_ways_intact() {
        let (client_leg, client) = tcp_pair().await;
        // The relay is the TLS client towards the upstream here.
        let (upstream, upstream_leg) = tls_pair().await;
        let outcome = relay_both_ways(
            Leg::Tcp(client_leg),
            Leg::Tls(Box::new(upstream_leg)),
            client,
            upstream,
            2 * MIB,
        )
        .await;
        assert_copied(&outcome);
    }

    #[tokio::test]
    async fn tls_client_half_close_still_delivers_the_upstream_reply() {
        let (client_leg, client) = tls_pair().await;
        let (upstream_leg, upstream) = tcp_pair().await;
        let session = tokio::spawn(relay(
            Leg::Tls(Box::new(client_leg)),
            Leg::Tcp(upstream_leg),
        ));

        let (request, reply) = timeout(HANG_GUARD, half_close_exchange(client, upstream))
            .await
            .expect("half-close exchange hung");
        let outcome = timeout(HANG_GUARD, session)
            .await
            .expect("relay hung")
            .expect("relay panicked");
        assert_copied(&outcome);
        assert_eq!(outcome.closed, Closed::By(Side::Client));
        assert_eq!(outcome.client_to_upstream, request);
        assert_eq!(outcome.upstream_to_client, reply);
    }

    #[tokio::test]
    async fn tls_client_closing_without_close_notify_is_a_clean_close() {
        let (client_leg, mut client) = tls_pair().await;
        let (upstream_leg, mut upstream) = tcp_pair().await;
        let session = tokio::spawn(relay(
            Leg::Tls(Box::new(client_leg)),
            Leg::Tcp(upstream_leg),
        ));
        client.write_all(b"PING").await.expect("write");
        client.flush().await.expect("flush");
        // End the TCP stream under the TLS session: FIN without close_notify, as hiredis does.
        client.get_mut().0.shutdown().await.expect("TCP shutdown");
        let mut got = Vec::new();
        timeout(HANG_GUARD, upstream.read_to_end(&mut got))
            .await
            .expect("upstream never saw EOF")
            .expect("upstream read");
        assert_eq!(got, b"PING");
        drop(upstream);
        let outcome = timeout(HANG_GUARD, session)
            .await
            .expect("relay hung")
            .expect("relay panicked");
        assert_eq!(outcome.closed, Closed::By(Side::Client), "{outcome:?}");
    }

    #[tokio::test]
    async fn upstream_reset_under_tls_client_ends_the_session() {
        let (client_leg, mut client) = tls_pair().await;
        let (upstream_leg, upstream) = tcp_pair().await;
        let session = tokio::spawn(relay(
            Leg::Tls(Box::new(client_leg)),
            Leg::Tcp(upstream_leg),
        ));

        upstream.set_zero_linger().expect("SO_LINGER 0");
        drop(upstream);
        let outcome = timeout(HANG_GUARD, session)
            .await
            .expect("relay hung after upstream reset")
            .expect("relay panicked");
        assert_copied(&outcome);
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
        // The client's TLS ends without close_notify (an error) or cleanly — never a hang.
        let mut rest = Vec::new();
        let _ = timeout(HANG_GUARD, client.read_to_end(&mut rest))
            .await
            .expect("client hung");
    }
}
