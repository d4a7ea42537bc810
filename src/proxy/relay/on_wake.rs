//! [`OnWake`]: a future polled only when its own waker fired. `select!` polls every branch
//! whenever the task wakes, and a session's task wakes twice per request for the relay; the
//! stop signals beside it (an administrator's stop, the idle limit) wait for hours, and polling
//! a `CancellationToken`'s future takes a lock each time — as much as a small request's relay
//! work in one direction (callgrind). Wrapped, they cost an atomic swap per wake instead.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

/// `future`, polled on the first poll and then only after it woke its own waker.
pub struct OnWake<F> {
    future: Pin<Box<F>>,
    flag: Arc<Flag>,
    /// The waker `future` is given: wakes `flag`.
    own: Waker,
    /// The task's waker last stored in `flag` (compared without the lock).
    task: Option<Waker>,
}

/// Set by `future`'s waker, which then wakes the task.
#[derive(Default)]
struct Flag {
    woken: AtomicBool,
    task: Mutex<Option<Waker>>,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // Set before the task is woken, so the poll that wake causes sees it.
        self.woken.store(true, Ordering::SeqCst);
        let task = self.task.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(task) = task.as_ref() {
            task.wake_by_ref();
        }
    }
}

impl<F: Future> OnWake<F> {
    pub fn new(future: F) -> Self {
        let flag = Arc::new(Flag {
            // The first poll polls.
            woken: AtomicBool::new(true),
            task: Mutex::new(None),
        });
        OnWake {
            future: Box::pin(future),
            own: Waker::from(flag.clone()),
            flag,
            task: None,
        }
    }
}

impl<F: Future> Future for OnWake<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        if !this
            .task
            .as_ref()
            .is_some_and(|task| task.will_wake(cx.waker()))
        {
            // A new task waker (the first poll, or the future moved task): store it before
            // deciding, so a wake from now on reaches it.
            *this
                .flag
                .task
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(cx.waker().clone());
            this.task = Some(cx.waker().clone());
            this.flag.woken.store(true, Ordering::SeqCst);
        }
        if !this.flag.woken.swap(false, Ordering::SeqCst) {
            return Poll::Pending;
        }
        this.future
            .as_mut()
            .poll(&mut Context::from_waker(&this.own))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use tokio::sync::oneshot;

    use super::*;

    /// Counts its polls; ready when its sender sends.
    struct Probe {
        polls: Arc<AtomicUsize>,
        rx: oneshot::Receiver<()>,
    }

    impl Future for Probe {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls.fetch_add(1, Ordering::SeqCst);
            Pin::new(&mut self.rx).poll(cx).map(|_| ())
        }
    }

    /// Not polled when only its neighbour woke the task; polled (and done) once its own waker
    /// fires.
    #[tokio::test]
    async fn polled_only_when_its_own_waker_fires() {
        let polls = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = oneshot::channel();
        let mut stop = OnWake::new(Probe {
            polls: polls.clone(),
            rx,
        });
        let mut tx = Some(tx);
        let mut ticks = 0;
        let mut interval = tokio::time::interval(Duration::from_millis(1));
        loop {
            tokio::select! {
                biased;
                () = &mut stop => break,
                _ = interval.tick() => {
                    ticks += 1;
                    if ticks == 50 {
                        assert_eq!(polls.load(Ordering::SeqCst), 1, "polled on others' wakes");
                        let _ = tx.take().map(|tx| tx.send(()));
                    }
                    assert!(ticks < 1000, "never woken by its own waker");
                }
            }
        }
        assert_eq!(polls.load(Ordering::SeqCst), 2);
    }
}
