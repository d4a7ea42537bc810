//! Process-wide pools of the relay's working memory: copy buffers and splice pipes. A session
//! holds one only while a burst of bytes is in flight (read, then written out) and gives it back
//! at once, so an idle session holds neither — thousands of quiet sessions cost sockets and task
//! state, not 256 KiB buffers and kernel pipes each.
//!
//! Each pool keeps at most a fixed number of idle items; past that, a returned item is freed
//! (a buffer) or closed (a pipe). Bursts rarely overlap for long (a burst is one read and its
//! write, usually without waiting), so a small bound serves many sessions.
//!
//! Must never hand out a pipe with bytes in it: only a direction that drained its pipe returns
//! it ([`PipeGuard::release`]); one dropped mid-burst (an error, a stopped session) is closed.

use std::cell::Cell;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Mutex;

use nix::errno::Errno;

use super::pipe::Pipe;

/// Bytes per copy buffer: one read takes a 100 kB value (or a batch of pipelined commands) whole.
/// Measured through the guard (a Unix client's 100 kB SETs to a TCP upstream, 8 interleaved
/// rounds of 20k): 64 KiB read each value in 3 reads and 3 sends, 256 KiB in one or two —
/// a median 16.2k → 18.2k SET/s (HAProxy 11.2k). A TLS stream's read takes several 16 KiB
/// records; plaintext copies read at most [`super::splice::COPY_READ`] of it. (A buffer is
/// zeroed when it is allocated, so count it whole.)
pub(super) const BUFFER_SIZE: usize = 256 * 1024;
/// Idle buffers kept (4 MiB at most), besides one per thread.
const MAX_IDLE_BUFFERS: usize = 16;
/// Idle pipes kept.
const MAX_IDLE_PIPES: usize = 32;
/// [`BUFFER_SIZE`] buffers in existence at once (lent, idle in the pool or in a thread's slot):
/// 64 MiB. Past it a burst gets a [`SMALL_BUFFER_SIZE`] one, freed when it comes back — so
/// sessions whose bytes are not taken (a client that stops reading its replies keeps its burst's
/// buffer) cost 64 KiB each beyond the first 256, as before the buffers grew, not 256 KiB.
const MAX_LARGE_BUFFERS: usize = 256;
/// The size of a buffer lent past [`MAX_LARGE_BUFFERS`].
pub(super) const SMALL_BUFFER_SIZE: usize = 64 * 1024;

/// How many [`Large`] buffers exist.
static LARGE_BUFFERS: AtomicUsize = AtomicUsize::new(0);
static BUFFERS: Mutex<Vec<Large>> = Mutex::new(Vec::new());

/// A [`BUFFER_SIZE`] buffer, counted in [`LARGE_BUFFERS`] from its allocation to its drop
/// (wherever that happens: a full pool, a thread's slot at thread exit).
struct Large(Box<[u8]>);

impl Large {
    /// A new one, if fewer than [`MAX_LARGE_BUFFERS`] exist.
    fn new() -> Option<Large> {
        LARGE_BUFFERS
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < MAX_LARGE_BUFFERS).then_some(n + 1)
            })
            .ok()?;
        Some(Large(vec![0u8; BUFFER_SIZE].into_boxed_slice()))
    }
}

impl Drop for Large {
    fn drop(&mut self) {
        LARGE_BUFFERS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The bytes a [`Buffer`] lends: a pooled large buffer, or a small one past the cap.
enum Bytes {
    Large(Large),
    Small(Box<[u8]>),
}

thread_local! {
    /// One idle buffer per thread, in front of [`BUFFERS`]: a burst almost always takes and
    /// returns its buffer within one poll on one worker thread, so most bursts need no lock
    /// (two per request otherwise, the largest part of a small request's pool cost). At most
    /// one buffer per thread that ever relayed; freed when the thread ends.
    static LOCAL_BUFFER: Cell<Option<Large>> = const { Cell::new(None) };
}
static PIPES: Mutex<Vec<Pipe>> = Mutex::new(Vec::new());

/// A copy buffer on loan from the pool; back to the pool on drop.
pub struct Buffer<'a> {
    bytes: Option<Bytes>,
    held: Option<&'a AtomicU32>,
}

impl<'a> Buffer<'a> {
    /// A buffer of [`BUFFER_SIZE`] bytes (contents unspecified): a pooled one, or a new one —
    /// of [`SMALL_BUFFER_SIZE`] bytes once [`MAX_LARGE_BUFFERS`] exist. `held` (a session's
    /// gauge) counts it while it is out.
    pub(super) fn take(held: Option<&'a AtomicU32>) -> Buffer<'a> {
        let large = LOCAL_BUFFER
            .with(Cell::take)
            .or_else(|| lock(&BUFFERS).pop())
            .or_else(Large::new);
        let bytes = match large {
            Some(large) => Bytes::Large(large),
            None => Bytes::Small(vec![0u8; SMALL_BUFFER_SIZE].into_boxed_slice()),
        };
        if let Some(held) = held {
            held.fetch_add(1, Ordering::Relaxed);
        }
        Buffer {
            bytes: Some(bytes),
            held,
        }
    }
}

impl Deref for Buffer<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &self.bytes {
            Some(Bytes::Large(Large(bytes)) | Bytes::Small(bytes)) => bytes,
            None => &[],
        }
    }
}

impl DerefMut for Buffer<'_> {
    fn deref_mut(&mut self) -> &mut [u8] {
        match &mut self.bytes {
            Some(Bytes::Large(Large(bytes)) | Bytes::Small(bytes)) => bytes,
            None => &mut [],
        }
    }
}

impl Drop for Buffer<'_> {
    fn drop(&mut self) {
        if let Some(held) = self.held {
            held.fetch_sub(1, Ordering::Relaxed);
        }
        // A small one is freed; a large one goes to the thread's slot, one already there to the
        // shared pool.
        if let Some(Bytes::Large(bytes)) = self.bytes.take() {
            if let Some(spare) = LOCAL_BUFFER.with(|slot| slot.replace(Some(bytes))) {
                let mut idle = lock(&BUFFERS);
                if idle.len() < MAX_IDLE_BUFFERS {
                    idle.push(spare);
                }
            }
        }
    }
}

/// A pipe on loan to one direction for one spliced burst. Dropping it closes the pipe (it may
/// hold bytes); [`PipeGuard::release`] returns a drained one to the pool.
pub(super) struct PipeGuard<'a> {
    pipe: Option<Pipe>,
    held: &'a AtomicU32,
}

impl<'a> PipeGuard<'a> {
    /// A pooled pipe, or a new one; `held` counts it while it is out.
    pub(super) fn take(held: &'a AtomicU32) -> Result<PipeGuard<'a>, Errno> {
        let pooled = lock(&PIPES).pop();
        let pipe = match pooled {
            Some(pipe) => pipe,
            None => Pipe::new()?,
        };
        held.fetch_add(1, Ordering::Relaxed);
        Ok(PipeGuard {
            pipe: Some(pipe),
            held,
        })
    }

    /// Give back a pipe whose bytes were all spliced out.
    pub(super) fn release(mut self) {
        if let Some(pipe) = self.pipe.take() {
            let mut idle = lock(&PIPES);
            if idle.len() < MAX_IDLE_PIPES {
                idle.push(pipe);
            }
        }
    }
}

impl Deref for PipeGuard<'_> {
    type Target = Pipe;
    fn deref(&self) -> &Pipe {
        // Some until `release` consumes the guard.
        self.pipe
            .as_ref()
            .expect("a pipe guard holds its pipe until released")
    }
}

impl Drop for PipeGuard<'_> {
    fn drop(&mut self) {
        self.held.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Idle pipes in the pool (tests: every pipe the process has is either here or in a burst).
#[cfg(test)]
pub(super) fn idle_pipes() -> usize {
    lock(&PIPES).len()
}

/// A poisoned pool only means a thread panicked while pushing or popping a `Vec`: the `Vec` is
/// still sound, so keep using it.
fn lock<T>(pool: &'static Mutex<Vec<T>>) -> std::sync::MutexGuard<'static, Vec<T>> {
    pool.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sessions whose bytes are not taken each keep a buffer: past the cap they get small ones,
    /// and the cap is counted again once buffers are freed.
    #[test]
    fn large_buffers_are_capped_and_counted_back() {
        let lent: Vec<Buffer<'_>> = (0..MAX_LARGE_BUFFERS + 8)
            .map(|_| Buffer::take(None))
            .collect();
        let large = lent.iter().filter(|b| b.len() == BUFFER_SIZE).count();
        let small = lent.iter().filter(|b| b.len() == SMALL_BUFFER_SIZE).count();
        assert_eq!(
            large + small,
            lent.len(),
            "every buffer is one of the two sizes"
        );
        assert!(
            large <= MAX_LARGE_BUFFERS,
            "{large} large buffers lent at once"
        );
        assert!(small >= 8, "only {small} small buffers past the cap");
        assert!(LARGE_BUFFERS.load(Ordering::Relaxed) <= MAX_LARGE_BUFFERS);
        drop(lent);
        // Kept: one in this thread's slot, the pool's bound; the rest were freed and uncounted.
        assert!(LARGE_BUFFERS.load(Ordering::Relaxed) <= MAX_IDLE_BUFFERS + 1);
        assert_eq!(
            Buffer::take(None).len(),
            BUFFER_SIZE,
            "large again below the cap"
        );
    }
}
