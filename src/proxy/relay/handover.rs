//! Inspect mode's change of upstream connection in the middle of a session: a RESP2 subscriber
//! cannot re-authenticate in place, so it is moved to a fresh connection holding the same
//! subscriptions (`proxy/session/resubscribe.rs` makes that connection, `proxy/inspect/seam.rs`
//! decides where the old connection's last reply for the client ends).
//!
//! The relay still moves every byte; it only learns to swap the upstream leg, in two steps:
//! - the requests direction writes to the new connection from its first write after
//!   [`Handover::activate`] (the session's requests are held while the new connection is made,
//!   so nothing is written to either meanwhile);
//! - the replies direction reads the old connection until the watch calls
//!   [`Handover::old_done`] (its marker reply passed), then the new one — so the client gets
//!   every reply of the old connection before any of the new one's.
//!
//! The old connection closes when both its halves are gone (the writer at the swap, the reader
//! at the switch of readers). What this module must never do: read the new connection before
//! the old one is done, or look at a byte.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

use super::{copy, Leg};

type Reader = Box<dyn AsyncRead + Unpin + Send>;
type Writer = Box<dyn AsyncWrite + Unpin + Send>;

/// A new upstream connection on its way into a running relay (see the module docs). Shared by
/// the session (which stages and activates it) and the relay (which takes it).
#[derive(Default)]
pub struct Handover {
    slot: Mutex<Slot>,
    /// Something is due for a direction: the lock is taken only then (every read and write of
    /// an inspect-mode session looks here).
    due: AtomicBool,
}

#[derive(Default)]
struct Slot {
    /// Made, not yet in use.
    staged: Option<(Reader, Writer)>,
    /// Activated: the writer for the requests direction's next write (a connection activated
    /// earlier keeps its place until that write took it)…
    writer_due: Option<Writer>,
    /// …and the reader, waiting for the old connection's end, then due.
    reader_waiting: Option<Reader>,
    reader_due: Option<Reader>,
}

impl Handover {
    fn slot(&self) -> std::sync::MutexGuard<'_, Slot> {
        // Poisoned only by a panic between two plain field updates.
        self.slot.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A fresh connection, ready to take over; `early`: its bytes read already (after the
    /// replies the caller consumed), which the replies direction reads first. Not used until
    /// [`Handover::activate`].
    pub fn stage(&self, upstream: Leg, early: Vec<u8>) {
        let (read, write) = tokio::io::split(copy::into_stream(upstream));
        let reader: Reader = Box::new(std::io::Cursor::new(early).chain(read));
        self.slot().staged = Some((reader, Box::new(write)));
    }

    /// The staged connection takes the requests from the next write on.
    pub fn activate(&self) {
        let mut slot = self.slot();
        if let Some((reader, writer)) = slot.staged.take() {
            slot.writer_due = Some(writer);
            slot.reader_waiting = Some(reader);
            self.due.store(true, Ordering::Release);
        }
    }

    /// The old connection's last reply for the client has been seen: the replies direction
    /// reads the new connection from its next read.
    pub fn old_done(&self) {
        let mut slot = self.slot();
        slot.reader_due = slot.reader_waiting.take();
        self.due.store(true, Ordering::Release);
    }

    fn take_writer(&self) -> Option<Writer> {
        if !self.due.load(Ordering::Acquire) {
            return None;
        }
        let mut slot = self.slot();
        let writer = slot.writer_due.take();
        self.settle(&slot);
        writer
    }

    fn take_reader(&self) -> Option<Reader> {
        if !self.due.load(Ordering::Acquire) {
            return None;
        }
        let mut slot = self.slot();
        let reader = slot.reader_due.take();
        self.settle(&slot);
        reader
    }

    /// Nothing left for either direction: back to the lock-free check.
    fn settle(&self, slot: &Slot) {
        if slot.writer_due.is_none() && slot.reader_due.is_none() {
            self.due.store(false, Ordering::Release);
        }
    }
}

/// The upstream's read half as the replies direction sees it: the old connection, then the
/// handed-over one.
pub(super) struct SwitchRead<'h> {
    pub(super) current: Reader,
    pub(super) handover: &'h Handover,
}

impl AsyncRead for SwitchRead<'_> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(next) = this.handover.take_reader() {
            // The old read half goes: with its write half gone already, the connection closes.
            this.current = next;
        }
        Pin::new(&mut this.current).poll_read(cx, buf)
    }
}

/// The upstream's write half as the requests direction sees it.
pub(super) struct SwitchWrite<'h> {
    pub(super) current: Writer,
    pub(super) handover: &'h Handover,
}

impl SwitchWrite<'_> {
    fn current(&mut self) -> Pin<&mut Writer> {
        if let Some(next) = self.handover.take_writer() {
            self.current = next;
        }
        Pin::new(&mut self.current)
    }
}

impl AsyncWrite for SwitchWrite<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().current().poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().current().poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().current().poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::super::testutil::tcp_pair;
    use super::*;

    /// Writes go to the new connection only once activated; reads come from the old one until
    /// it is done, then from the new one, its early bytes first; the old one is closed.
    #[tokio::test]
    async fn the_upstream_is_swapped_writes_first_then_reads() {
        let (old, mut old_peer) = tcp_pair().await;
        let (new, mut new_peer) = tcp_pair().await;
        let handover = Handover::default();
        let (read, write) = tokio::io::split(old);
        let mut reader = SwitchRead {
            current: Box::new(read),
            handover: &handover,
        };
        let mut writer = SwitchWrite {
            current: Box::new(write),
            handover: &handover,
        };
        handover.stage(Leg::Tcp(new), b"early ".to_vec());
        writer.write_all(b"to old").await.unwrap();
        handover.activate();
        writer.write_all(b"to new").await.unwrap();
        let mut got = [0u8; 6];
        old_peer.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"to old");
        new_peer.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"to new");

        old_peer.write_all(b"old reply").await.unwrap();
        new_peer.write_all(b"new reply").await.unwrap();
        let mut got = [0u8; 9];
        reader.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"old reply");
        handover.old_done();
        let mut got = [0u8; 15];
        reader.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"early new reply");
        // Both halves of the old connection are gone: its peer sees the end.
        let mut rest = Vec::new();
        assert_eq!(old_peer.read_to_end(&mut rest).await.unwrap_or(0), 0);

        // A next move staged before anything was written since the last one: its marker
        // still goes to the connection it ends.
        let (third, mut third_peer) = tcp_pair().await;
        handover.stage(Leg::Tcp(third), Vec::new());
        writer.write_all(b"marker").await.unwrap();
        handover.activate();
        writer.write_all(b"after!").await.unwrap();
        let mut got = [0u8; 6];
        new_peer.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"marker");
        third_peer.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"after!");
    }
}
