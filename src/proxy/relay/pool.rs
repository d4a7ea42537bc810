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
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use nix::errno::Errno;

use super::pipe::Pipe;

/// Bytes per copy buffer: one read takes a 100 kB value (or a batch of pipelined commands) whole.
/// Measured through the guard (a Unix client's 100 kB SETs to a TCP upstream, 8 interleaved
/// rounds of 20k): 64 KiB read each value in 3 reads and 3 sends, 256 KiB in one or two —
/// a median 16.2k → 18.2k SET/s (HAProxy 11.2k). A TLS stream's read takes several 16 KiB
/// records; plaintext copies read at most [`super::splice::COPY_READ`] of it. Only the pages a
/// read touched are resident: a small message's read touches one.
pub(super) const BUFFER_SIZE: usize = 256 * 1024;
/// Idle buffers kept (4 MiB at most), besides one per thread.
const MAX_IDLE_BUFFERS: usize = 16;
/// Idle pipes kept.
const MAX_IDLE_PIPES: usize = 32;

static BUFFERS: Mutex<Vec<Box<[u8]>>> = Mutex::new(Vec::new());

thread_local! {
    /// One idle buffer per thread, in front of [`BUFFERS`]: a burst almost always takes and
    /// returns its buffer within one poll on one worker thread, so most bursts need no lock
    /// (two per request otherwise, the largest part of a small request's pool cost). At most
    /// one buffer per thread that ever relayed; freed when the thread ends.
    static LOCAL_BUFFER: Cell<Option<Box<[u8]>>> = const { Cell::new(None) };
}
static PIPES: Mutex<Vec<Pipe>> = Mutex::new(Vec::new());

/// A copy buffer on loan from the pool; back to the pool on drop.
pub struct Buffer<'a> {
    bytes: Option<Box<[u8]>>,
    held: Option<&'a AtomicU32>,
}

impl<'a> Buffer<'a> {
    /// A buffer of [`BUFFER_SIZE`] bytes (contents unspecified): a pooled one, or a new one.
    /// `held` (a session's gauge) counts it while it is out.
    pub(super) fn take(held: Option<&'a AtomicU32>) -> Buffer<'a> {
        let pooled = LOCAL_BUFFER
            .with(Cell::take)
            .or_else(|| lock(&BUFFERS).pop());
        let bytes = pooled.unwrap_or_else(|| vec![0u8; BUFFER_SIZE].into_boxed_slice());
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
        self.bytes.as_deref().unwrap_or_default()
    }
}

impl DerefMut for Buffer<'_> {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.bytes.as_deref_mut().unwrap_or_default()
    }
}

impl Drop for Buffer<'_> {
    fn drop(&mut self) {
        if let Some(held) = self.held {
            held.fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(bytes) = self.bytes.take() {
            // The thread's slot takes it; one already there goes to the shared pool.
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
