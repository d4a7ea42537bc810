//! The bound on concurrent sessions (`limits.max_sessions`), shared by every listener, with a
//! maximum a reload may change while sessions are open.
//!
//! Lowering the maximum below the number of open sessions closes none of them: new sessions are
//! refused until enough have ended. A semaphore cannot shrink while its permits are out, hence
//! this small counter.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Open sessions and the current maximum.
#[derive(Debug)]
pub struct SessionSlots {
    open: Arc<AtomicUsize>,
    max: AtomicUsize,
}

/// One open session's slot, given back on drop.
#[derive(Debug)]
pub struct Slot {
    open: Arc<AtomicUsize>,
}

impl SessionSlots {
    pub fn new(max: usize) -> Self {
        SessionSlots {
            open: Arc::new(AtomicUsize::new(0)),
            max: AtomicUsize::new(max),
        }
    }

    /// A slot if fewer than the maximum are open, else `None` (the caller closes the connection).
    pub fn try_acquire(&self) -> Option<Slot> {
        let max = self.max.load(Ordering::Acquire);
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < max).then_some(open + 1)
            })
            .ok()
            .map(|_| Slot {
                open: self.open.clone(),
            })
    }

    /// Applies to the next [`try_acquire`](Self::try_acquire); open sessions keep their slots.
    pub fn set_max(&self, max: usize) {
        self.max.store(max, Ordering::Release);
    }

    pub fn max(&self) -> usize {
        self.max.load(Ordering::Acquire)
    }

    /// Slots held right now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_maximum_bounds_new_slots_and_can_change_while_slots_are_held() {
        let slots = SessionSlots::new(2);
        let a = slots.try_acquire().expect("first");
        let b = slots.try_acquire().expect("second");
        assert!(slots.try_acquire().is_none(), "third over a maximum of 2");
        assert_eq!(slots.open(), 2);

        // Lowered below what is open: nobody loses a slot, nobody new gets one.
        slots.set_max(1);
        assert_eq!(slots.open(), 2);
        drop(a);
        assert!(
            slots.try_acquire().is_none(),
            "still 1 open of a maximum of 1"
        );
        drop(b);
        let c = slots.try_acquire().expect("room again");
        assert!(slots.try_acquire().is_none());

        slots.set_max(3);
        let d = slots.try_acquire().expect("raised");
        let e = slots.try_acquire().expect("raised");
        assert!(slots.try_acquire().is_none());
        assert_eq!(slots.open(), 3);
        drop((c, d, e));
        assert_eq!(slots.open(), 0);
    }
}
