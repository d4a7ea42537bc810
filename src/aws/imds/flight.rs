//! One value shared by every caller, refreshed by one fetch at a time, with no lock held
//! across the fetch.
//!
//! The current generation is an `Arc<OnceCell>`. A caller takes the `Arc` (a short std mutex,
//! never held across an await) and, if its value is still good, uses it. Otherwise it swaps in
//! an empty cell — unless another caller already did — and awaits `get_or_init` on it: the
//! first caller there runs the fetch, the others wait for its result. If that caller is
//! cancelled, tokio's `OnceCell` lets the next waiter run the fetch instead.

use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;

pub(crate) struct SingleFlight<T> {
    current: Mutex<Arc<OnceCell<T>>>,
}

impl<T: Clone> SingleFlight<T> {
    pub(crate) fn new() -> Self {
        SingleFlight {
            current: Mutex::new(Arc::new(OnceCell::new())),
        }
    }

    /// The current value if `good(value)`, else the result of one shared `fetch`.
    pub(crate) async fn get<F, Fut>(&self, good: impl Fn(&T) -> bool, fetch: F) -> T
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        let cell = self.cell();
        let cell = match cell.get() {
            Some(value) if good(value) => return value.clone(),
            Some(_) => self.replace(&cell),
            None => cell,
        };
        cell.get_or_init(fetch).await.clone()
    }

    /// The value now held, without fetching.
    pub(crate) fn peek(&self) -> Option<T> {
        self.cell().get().cloned()
    }

    /// Drop the value if `stale(value)`, so the next [`Self::get`] fetches.
    pub(crate) fn invalidate_if(&self, stale: impl Fn(&T) -> bool) {
        let cell = self.cell();
        if cell.get().is_some_and(stale) {
            self.replace(&cell);
        }
    }

    fn cell(&self) -> Arc<OnceCell<T>> {
        self.lock().clone()
    }

    /// Swap `seen` for an empty cell unless someone already swapped it; return the current one.
    fn replace(&self, seen: &Arc<OnceCell<T>>) -> Arc<OnceCell<T>> {
        let mut current = self.lock();
        if Arc::ptr_eq(&current, seen) {
            *current = Arc::new(OnceCell::new());
        }
        current.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Arc<OnceCell<T>>> {
        // The guarded section only clones or replaces an Arc and cannot panic, so poisoning
        // cannot leave a half-updated value: take the guard either way.
        self.current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn concurrent_callers_share_one_fetch_and_stale_values_are_refetched() {
        let flight = Arc::new(SingleFlight::<usize>::new());
        let fetches = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let (flight, fetches) = (flight.clone(), fetches.clone());
            tasks.push(tokio::spawn(async move {
                flight
                    .get(
                        |_| true,
                        || async {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            fetches.fetch_add(1, Ordering::SeqCst) + 1
                        },
                    )
                    .await
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), 1);
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        let again = flight.get(|v| *v > 1, || async { 2 }).await;
        assert_eq!(again, 2);
        flight.invalidate_if(|v| *v == 2);
        assert_eq!(flight.peek(), None);
    }
}
