//! When the daemon folds the log into a snapshot ([`super::Store::compact`]).
//!
//! Every acknowledged mutation appends to `store.log`; recovery replays the whole log, so an
//! unbounded log means an ever slower start and an ever larger file. The daemon compacts when
//! the log has grown past [`COMPACT_AFTER_RECORDS`] records or [`COMPACT_AFTER_BYTES`] bytes
//! since the last snapshot: after an admin mutation has been acknowledged (in the background,
//! once the caller has its reply), and at start when the recovered log is already past either.
//!
//! A compaction writes the whole state (bounded by the store's `MAX_*` limits) once, so doing it
//! every thousand mutations costs far less than replaying an unbounded log at every start.

/// Records in the log since the last snapshot that make it due.
pub const COMPACT_AFTER_RECORDS: u64 = 1000;
/// Bytes of log file (header included) that make it due.
pub const COMPACT_AFTER_BYTES: u64 = 1024 * 1024;

/// How much the log holds since the last compaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogSize {
    pub bytes: u64,
    pub records: u64,
}

/// The thresholds; [`Default`] is the documented one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactionPolicy {
    pub after_records: u64,
    pub after_bytes: u64,
}

impl Default for CompactionPolicy {
    fn default() -> Self {
        CompactionPolicy {
            after_records: COMPACT_AFTER_RECORDS,
            after_bytes: COMPACT_AFTER_BYTES,
        }
    }
}

impl CompactionPolicy {
    /// Whether a log of `size` should be folded into a snapshot now. An empty log never is.
    pub fn due(&self, size: LogSize) -> bool {
        size.records > 0 && (size.records >= self.after_records || size.bytes >= self.after_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::role;
    use crate::store::{Mutation, Store};

    #[test]
    fn log_size_counts_records_since_the_snapshot_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let mut s = Store::open(&path).unwrap();
        let empty = s.log_size();
        assert_eq!(empty.records, 0);
        for i in 0..3 {
            s.apply(Mutation::PutRole(role(&format!("r{i}"), &["*"])))
                .unwrap();
        }
        let three = s.log_size();
        assert_eq!(three.records, 3);
        assert!(three.bytes > empty.bytes);
        drop(s);
        let mut s = Store::open(&path).unwrap();
        assert_eq!(s.log_size(), three, "the same after recovery");
        s.compact().unwrap();
        assert_eq!(s.log_size(), empty);
        s.apply(Mutation::PutRole(role("r9", &["*"]))).unwrap();
        drop(s);
        assert_eq!(Store::open(&path).unwrap().log_size().records, 1);
    }

    #[test]
    fn due_past_either_threshold_never_when_empty() {
        let p = CompactionPolicy::default();
        let size = |records, bytes| LogSize { records, bytes };
        assert!(!p.due(size(0, COMPACT_AFTER_BYTES * 2)));
        assert!(!p.due(size(COMPACT_AFTER_RECORDS - 1, COMPACT_AFTER_BYTES - 1)));
        assert!(p.due(size(COMPACT_AFTER_RECORDS, 100)));
        assert!(p.due(size(1, COMPACT_AFTER_BYTES)));
    }
}
