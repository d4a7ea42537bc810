//! The copy path: a leg is TLS terminated in user space, so each direction reads into a 64 KiB
//! buffer and writes it out. Plaintext legs paired with a TLS leg are just another
//! `AsyncRead + AsyncWrite` here.
//!
//! Must never buffer bytes it has read without writing and flushing them before the next read
//! (a Redis reply stuck in a TLS buffer is a hung client), and never end a direction without
//! `shutdown()` on the write half — for TLS that is the `close_notify` the peer needs to tell a
//! clean end from a truncation.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{drive, Counters, Direction, Leg, Path, RelayError, Side, Stream};

/// Per-direction buffer: one TLS record holds at most 16 KiB, so this takes several per read.
const BUFFER_SIZE: usize = 64 * 1024;

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
    drive(
        direction(
            Direction::ClientToUpstream,
            client_read,
            upstream_write,
            counters.for_direction(Direction::ClientToUpstream),
        ),
        direction(
            Direction::UpstreamToClient,
            upstream_read,
            client_write,
            counters.for_direction(Direction::UpstreamToClient),
        ),
    )
    .await
}

fn into_stream(leg: Leg) -> Box<dyn Stream> {
    match leg {
        Leg::Tcp(stream) => Box::new(stream),
        Leg::Unix(stream) => Box::new(stream),
        Leg::Tls(stream) => stream,
    }
}

/// One direction: read a chunk, write and flush all of it, repeat; on EOF shut the write half
/// down (TLS: `close_notify`, then the socket's `SHUT_WR`) and finish. Every read and write is an
/// `.await` on tokio, which parks on readiness: there is no retry loop here to spin.
async fn direction<R, W>(
    direction: Direction,
    mut source: R,
    mut destination: W,
    moved: &AtomicU64,
) -> Result<(), RelayError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    direction.trace_start(Path::Copy);
    let mut buffer = vec![0u8; BUFFER_SIZE];
    loop {
        let n = source
            .read(&mut buffer)
            .await
            .map_err(|e| direction.read_error(e))?;
        if n == 0 {
            destination
                .shutdown()
                .await
                .map_err(|e| direction.shutdown_error(e))?;
            return Ok(());
        }
        // n <= buffer.len(): tokio's `read` reports how much of a ReadBuf over `buffer` it filled.
        destination
            .write_all(&buffer[..n])
            .await
            .map_err(|e| direction.write_error(e))?;
        // A TLS writer may hold the record until flushed; Redis is request/response, so flush
        // every chunk rather than wait for the next read.
        destination
            .flush()
            .await
            .map_err(|e| direction.write_error(e))?;
        moved.fetch_add(n as u64, Ordering::Relaxed);
    }
}
