//! The pre-authentication budget: TCP connections that have not yet proved who they are.
//!
//! Anyone who can reach the mTLS port can open a connection and say nothing. Such connections
//! must never take the places of identified sessions (`limits.max_sessions` counts only those),
//! and a flood of them must never lock out a client that arrives after it — even one from the
//! same address. So pending handshakes are bounded on their own, in total
//! (`limits.max_handshakes`) and per source address (`limits.max_handshakes_per_source`), and
//! when a bound is reached the *oldest* pending handshake (of that source, or of all) is closed
//! to make room: the newcomer always gets its chance, and a flooder only evicts itself.
//!
//! This module decides; the session owns the connection and closes it when its [`Pending`]
//! says it was evicted. It never blocks, sleeps or logs.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio_util::sync::CancellationToken;

/// Pending handshakes and their bounds (changeable by a reload).
#[derive(Debug)]
pub struct Admission {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    max_total: usize,
    max_per_source: usize,
    next: u64,
    /// Admission order (oldest first) → the handshake.
    pending: BTreeMap<u64, Entry>,
    per_source: HashMap<IpAddr, usize>,
    evicted: u64,
}

#[derive(Debug)]
struct Entry {
    source: IpAddr,
    evict: CancellationToken,
}

/// One connection's place among the pending handshakes; given back on drop (when the
/// handshake finished, failed, or the connection was evicted).
#[derive(Debug)]
pub struct Pending {
    admission: Arc<Admission>,
    id: u64,
    evicted: CancellationToken,
}

impl Admission {
    pub fn new(max_total: usize, max_per_source: usize) -> Arc<Self> {
        Arc::new(Admission {
            state: Mutex::new(State {
                max_total: max_total.max(1),
                max_per_source: max_per_source.max(1),
                next: 0,
                pending: BTreeMap::new(),
                per_source: HashMap::new(),
                evicted: 0,
            }),
        })
    }

    /// Applies from the next [`admit`](Self::admit); pending handshakes are not evicted by it.
    pub fn set_bounds(&self, max_total: usize, max_per_source: usize) {
        let mut s = self.lock();
        s.max_total = max_total.max(1);
        s.max_per_source = max_per_source.max(1);
    }

    /// Admit a new connection from `source`, evicting the oldest pending handshake of the same
    /// source, then the oldest of all, when a bound is reached. Always admits.
    pub fn admit(self: &Arc<Self>, source: IpAddr) -> Pending {
        let mut s = self.lock();
        if s.per_source.get(&source).copied().unwrap_or(0) >= s.max_per_source {
            let oldest = s
                .pending
                .iter()
                .find(|(_, e)| e.source == source)
                .map(|(id, _)| *id);
            if let Some(id) = oldest {
                s.evict(id);
            }
        }
        if s.pending.len() >= s.max_total {
            if let Some(id) = s.pending.keys().next().copied() {
                s.evict(id);
            }
        }
        let id = s.next;
        s.next += 1;
        let token = CancellationToken::new();
        s.pending.insert(
            id,
            Entry {
                source,
                evict: token.clone(),
            },
        );
        *s.per_source.entry(source).or_insert(0) += 1;
        Pending {
            admission: self.clone(),
            id,
            evicted: token,
        }
    }

    /// Handshakes pending right now.
    pub fn pending(&self) -> usize {
        self.lock().pending.len()
    }

    /// Handshakes evicted to make room since start.
    pub fn evicted(&self) -> u64 {
        self.lock().evicted
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock leaves consistent maps (every update is a single
        // insert/remove pair), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl State {
    /// Take `id` out of the pending set and tell its session to close.
    fn evict(&mut self, id: u64) {
        if let Some(entry) = self.remove(id) {
            entry.evict.cancel();
            self.evicted += 1;
        }
    }

    fn remove(&mut self, id: u64) -> Option<Entry> {
        let entry = self.pending.remove(&id)?;
        if let Some(n) = self.per_source.get_mut(&entry.source) {
            *n -= 1;
            if *n == 0 {
                self.per_source.remove(&entry.source);
            }
        }
        Some(entry)
    }
}

impl Pending {
    /// Run `work` unless (or until) this connection is evicted: `None` if it was.
    pub async fn unless_evicted<F: std::future::Future>(&self, work: F) -> Option<F::Output> {
        tokio::select! {
            biased;
            () = self.evicted.cancelled() => None,
            out = work => Some(out),
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.admission.lock().remove(self.id);
    }
}

/// Refusals of connections that never identified themselves, logged so that a flood cannot
/// drown the audit: the first `burst` of each interval are logged one by one, the rest are
/// counted by reason and source and reported in one summary line per interval.
#[derive(Debug)]
pub struct RefusalLog {
    burst: u32,
    state: Mutex<Window>,
}

#[derive(Debug, Default)]
struct Window {
    logged: u32,
    suppressed: BTreeMap<&'static str, u64>,
    sources: HashMap<IpAddr, u64>,
}

/// What was not logged one by one during an interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusalSummary {
    pub suppressed: u64,
    /// `reason=count` pairs, most frequent first.
    pub by_reason: Vec<(&'static str, u64)>,
    /// The sources with the most suppressed refusals (at most 5), most first.
    pub top_sources: Vec<(IpAddr, u64)>,
}

impl RefusalLog {
    pub fn new(burst: u32) -> Self {
        RefusalLog {
            burst,
            state: Mutex::new(Window::default()),
        }
    }

    /// Count a refusal; `true` when it should be logged on its own.
    pub fn note(&self, reason: &'static str, source: IpAddr) -> bool {
        let mut w = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if w.logged < self.burst {
            w.logged += 1;
            return true;
        }
        *w.suppressed.entry(reason).or_insert(0) += 1;
        // Bounded: a flood from many addresses keeps the first 1024 it saw.
        if w.sources.len() < 1024 || w.sources.contains_key(&source) {
            *w.sources.entry(source).or_insert(0) += 1;
        }
        false
    }

    /// End the interval: what was suppressed in it, if anything.
    pub fn take_summary(&self) -> Option<RefusalSummary> {
        let w = std::mem::take(&mut *self.state.lock().unwrap_or_else(|p| p.into_inner()));
        let suppressed: u64 = w.suppressed.values().sum();
        if suppressed == 0 {
            return None;
        }
        let mut by_reason: Vec<_> = w.suppressed.into_iter().collect();
        by_reason.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let mut top_sources: Vec<_> = w.sources.into_iter().collect();
        top_sources.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        top_sources.truncate(5);
        Some(RefusalSummary {
            suppressed,
            by_reason,
            top_sources,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[tokio::test]
    async fn the_oldest_pending_handshake_makes_room_for_a_newcomer() {
        let a = Admission::new(2, 10);
        let first = a.admit(ip("10.0.0.1"));
        let second = a.admit(ip("10.0.0.2"));
        let third = a.admit(ip("10.0.0.3"));
        assert_eq!(a.pending(), 2);
        assert_eq!(
            first.unless_evicted(std::future::pending::<()>()).await,
            None
        );
        assert_eq!(second.unless_evicted(async { 1 }).await, Some(1));
        assert_eq!(third.unless_evicted(async { 2 }).await, Some(2));
        assert_eq!(a.evicted(), 1);
        drop(first); // an evicted handshake's drop changes nothing
        assert_eq!(a.pending(), 2);
    }

    #[tokio::test]
    async fn a_source_at_its_bound_evicts_its_own_oldest_not_others() {
        let a = Admission::new(100, 2);
        let other = a.admit(ip("192.0.2.9"));
        let f1 = a.admit(ip("10.0.0.1"));
        let f2 = a.admit(ip("10.0.0.1"));
        let f3 = a.admit(ip("10.0.0.1"));
        assert_eq!(f1.unless_evicted(std::future::pending::<()>()).await, None);
        assert_eq!(f2.unless_evicted(async {}).await, Some(()));
        assert_eq!(f3.unless_evicted(async {}).await, Some(()));
        assert_eq!(other.unless_evicted(async {}).await, Some(()));
        assert_eq!(a.pending(), 3);
    }

    #[test]
    fn finished_handshakes_give_their_place_back() {
        let a = Admission::new(1, 1);
        for _ in 0..1000 {
            let p = a.admit(ip("10.0.0.1"));
            drop(p);
        }
        assert_eq!(a.pending(), 0);
        assert_eq!(a.evicted(), 0);
        assert!(a.lock().per_source.is_empty());
    }

    #[test]
    fn refusals_beyond_the_burst_are_summarised_per_interval() {
        let log = RefusalLog::new(3);
        let logged = (0..10)
            .filter(|i| log.note(if i % 2 == 0 { "tls" } else { "evicted" }, ip("10.0.0.1")))
            .count();
        assert_eq!(logged, 3);
        assert!(!log.note("timeout", ip("10.0.0.2")));
        let s = log.take_summary().expect("summary");
        assert_eq!(s.suppressed, 8);
        assert_eq!(
            s.by_reason,
            vec![("evicted", 4), ("tls", 3), ("timeout", 1)]
        );
        assert_eq!(
            s.top_sources,
            vec![(ip("10.0.0.1"), 7), (ip("10.0.0.2"), 1)]
        );
        // A new interval logs its burst again, and a quiet one has no summary.
        assert!(log.note("tls", ip("10.0.0.1")));
        assert_eq!(log.take_summary(), None);
    }

    #[tokio::test]
    async fn a_flood_never_keeps_the_last_arrival_out() {
        let a = Admission::new(16, 4);
        let mut flood: Vec<Pending> = (0..10_000)
            .map(|i| a.admit(IpAddr::from([10, 0, (i % 7) as u8, 1])))
            .collect();
        assert!(a.pending() <= 16);
        let late = a.admit(ip("10.0.0.1"));
        assert_eq!(
            late.unless_evicted(async { "served" }).await,
            Some("served")
        );
        flood.clear();
        assert_eq!(a.pending(), 1);
    }
}
