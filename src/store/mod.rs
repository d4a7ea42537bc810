//! The on-box store: databases, roles, users, issued certificates, CA metadata and managed-user
//! state, kept in the state directory and owned by one writer (the daemon).
//!
//! On disk (all files 0600 in a 0700 directory):
//! - `store.snap`: a snapshot of the whole state as of a seq ([`snapshot`]);
//! - `store.log`: the mutations after it, one length + CRC32 framed record each ([`codec`]);
//! - `store.lock`: held with an exclusive `flock` by the one process that has the store open.
//!
//! A mutation is acknowledged ([`Store::apply`] returns its [`Seq`]) only after its record is
//! fsynced. [`Store::compact`] folds the log into a new snapshot. [`Store::open`] recovers the
//! snapshot plus the valid prefix of the log ([`recovery`]): a torn tail is truncated, damage
//! followed by valid records is refused — the store never starts with an acknowledged record
//! silently missing.
//!
//! This module must never hold a secret (passwords stay in their files; managed users are kept
//! by secret ARN) and never parse anything it did not frame and checksum itself.

pub mod codec;
pub mod compaction;
pub mod convert;
pub mod error;
mod files;
pub mod migrate;
pub mod records;
pub mod recovery;
pub mod snapshot;
pub mod state;

#[cfg(test)]
mod crash_tests;
#[cfg(test)]
mod kill_tests;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod test_support;

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use nix::fcntl::Flock;

pub use error::{BoundError, RecordError, RecoveryError, StoreError};
pub use records::Mutation;
pub use state::State;

use crate::files::{Existing, TempFile};
use codec::{Header, LogEntry, FORMAT_VERSION, FRAME_HEADER_LEN, HEADER_LEN, MAX_RECORD_LEN};
use files::FILE_MODE;
use recovery::LogAction;

pub const SNAPSHOT_FILE: &str = "store.snap";
pub const LOG_FILE: &str = "store.log";
pub const LOCK_FILE: &str = "store.lock";

/// The sequence number of an acknowledged mutation: 1 for the first, then one more for each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Seq(pub u64);

impl std::fmt::Display for Seq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// What [`Store::open`] had to repair, for the daemon to log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// A torn tail (an unacknowledged, partly written record) cut off the log: (offset, bytes).
    pub torn_tail: Option<(u64, u64)>,
    /// The log was started afresh (new store, or finishing an interrupted compaction).
    pub log_recreated: bool,
    /// The files were of this older format version: their records were migrated and the
    /// store rewritten (compacted) in the current one.
    pub migrated_from: Option<u32>,
}

/// The open store. Only one exists per directory at a time, across processes.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    _lock: Flock<File>,
    log: File,
    log_len: u64,
    state: State,
    last_seq: u64,
    /// The last seq in the snapshot: the log holds the records after it.
    snapshot_seq: u64,
    generation: u64,
    /// Set when a write's durability is unknown (a failed fsync); every later write is refused.
    poisoned: bool,
    report: RecoveryReport,
}

impl Store {
    /// Open (creating if needed) the store in `dir`, recovering its state.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        files::ensure_private_dir(dir)?;
        let lock = files::lock(&dir.join(LOCK_FILE))?;
        let snapshot_path = dir.join(SNAPSHOT_FILE);
        let log_path = dir.join(LOG_FILE);
        // Leftovers of a compaction that stopped before its rename: never part of the state.
        crate::files::remove_stale_temps(&snapshot_path)?;
        crate::files::remove_stale_temps(&log_path)?;
        let snapshot = files::read_if_exists(&snapshot_path)?;
        let log = files::read_if_exists(&log_path)?;
        let recovered =
            recovery::recover(snapshot.as_deref(), log.as_deref()).map_err(|source| {
                StoreError::Recovery {
                    path: match source.file() {
                        error::FileKind::Snapshot => snapshot_path.clone(),
                        error::FileKind::Log => log_path.clone(),
                    },
                    source: Box::new(source),
                }
            })?;

        let mut report = RecoveryReport::default();
        let log_len = match recovered.log {
            LogAction::Recreate => {
                start_log(dir, recovered.generation, recovered.last_seq)?;
                report.log_recreated = true;
                HEADER_LEN as u64
            }
            LogAction::Keep { valid_len, torn } => {
                if torn > 0 {
                    files::truncate(&log_path, valid_len)?;
                    report.torn_tail = Some((valid_len, torn));
                }
                valid_len
            }
        };
        let mut store = Store {
            log: files::open_append(&log_path)?,
            dir: dir.to_path_buf(),
            _lock: lock,
            log_len,
            state: recovered.state,
            last_seq: recovered.last_seq,
            snapshot_seq: recovered.snapshot_seq,
            generation: recovered.generation,
            poisoned: false,
            report,
        };
        if let Some(version) = recovered.migrated_from {
            // Records are appended in the current format only: rewrite both files in it first.
            store.compact()?;
            store.report.migrated_from = Some(version);
        }
        Ok(store)
    }

    /// Check `mutation`, append it to the log and fsync; only then is it applied and its seq
    /// returned. A refused mutation writes nothing.
    pub fn apply(&mut self, mutation: Mutation) -> Result<Seq, StoreError> {
        self.usable()?;
        self.state.check(&mutation)?;
        let entry = LogEntry {
            seq: self.last_seq + 1,
            mutation,
        };
        let frame = codec::encode_entry(&entry);
        if frame.len() - FRAME_HEADER_LEN > MAX_RECORD_LEN {
            return Err(StoreError::TooLarge {
                len: frame.len() - FRAME_HEADER_LEN,
                limit: MAX_RECORD_LEN,
            });
        }
        let path = self.dir.join(LOG_FILE);
        if let Err(source) = self.log.write_all(&frame) {
            // Leave no partial frame behind: a record appended after it would turn this
            // unacknowledged write into damage in the middle of the log.
            if self.log.set_len(self.log_len).is_err() {
                self.poisoned = true;
            }
            return Err(StoreError::Io {
                op: "append to",
                path,
                source,
            });
        }
        if let Err(source) = self.log.sync_data() {
            // After a failed fsync the kernel may have dropped the dirty pages: what is on disk
            // is unknown, so stop writing until the store is reopened and recovered.
            self.poisoned = true;
            return Err(StoreError::Io {
                op: "fsync",
                path,
                source,
            });
        }
        self.log_len += frame.len() as u64;
        self.state
            .apply(&entry.mutation)
            .expect("State::check accepted this mutation just before");
        self.last_seq = entry.seq;
        Ok(Seq(entry.seq))
    }

    /// Fold the log into a new snapshot and start an empty log.
    ///
    /// Steps, and what a crash after each leaves: (1) the snapshot is written to a temp file and
    /// fsynced — the temp file is removed at open; (2) renamed over the old snapshot and the
    /// directory fsynced — the new snapshot is the truth, the old log is of an older generation
    /// and recovery discards it (its records are all in the snapshot); (3) a new log of the new
    /// generation replaces the old one the same way.
    pub fn compact(&mut self) -> Result<(), StoreError> {
        self.compact_until(None)
    }

    fn compact_until(&mut self, stop: Option<CompactStep>) -> Result<(), StoreError> {
        self.usable()?;
        let generation = self.generation + 1;
        let bytes = snapshot::encode(generation, self.last_seq, &self.state);
        // A failed write or rename removes the temp file (TempFile's drop).
        let snapshot = TempFile::write(&self.dir.join(SNAPSHOT_FILE), &bytes, FILE_MODE)?;
        if stop == Some(CompactStep::SnapshotWritten) {
            snapshot.abandon();
            self.poisoned = true;
            return Ok(());
        }
        snapshot.commit(Existing::Replace)?;
        // From here the old log must never be appended to again: any failure poisons.
        self.poisoned = true;
        crate::files::sync_dir(&self.dir)?;
        self.generation = generation;
        if stop == Some(CompactStep::SnapshotRenamed) {
            return Ok(());
        }
        start_log(&self.dir, generation, self.last_seq)?;
        self.log = files::open_append(&self.dir.join(LOG_FILE))?;
        self.log_len = HEADER_LEN as u64;
        self.snapshot_seq = self.last_seq;
        self.poisoned = false;
        Ok(())
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    /// The seq of the last acknowledged mutation (0 for an empty store).
    pub fn last_seq(&self) -> Seq {
        Seq(self.last_seq)
    }

    /// How long the log has grown since the last compaction (what [`compaction`] decides on).
    pub fn log_size(&self) -> compaction::LogSize {
        compaction::LogSize {
            bytes: self.log_len,
            records: self.last_seq - self.snapshot_seq,
        }
    }

    /// How many compactions this store has been through.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What opening the store repaired.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.report
    }

    fn usable(&self) -> Result<(), StoreError> {
        if self.poisoned {
            return Err(StoreError::Poisoned {
                path: self.dir.clone(),
            });
        }
        Ok(())
    }
}

/// Where a test stops a compaction, as a crash would.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CompactStep {
    SnapshotWritten,
    SnapshotRenamed,
}

/// Durably replace the log with an empty one of `generation` that follows `seq`.
fn start_log(dir: &Path, generation: u64, seq: u64) -> Result<(), StoreError> {
    let header = codec::encode_header(
        codec::LOG_MAGIC,
        Header {
            version: FORMAT_VERSION,
            generation,
            seq,
        },
    );
    crate::files::write_durably(&dir.join(LOG_FILE), &header, FILE_MODE, Existing::Replace)?;
    Ok(())
}

/// Fuzz entry point: recovery over arbitrary bytes must return a value or an error, never panic.
/// The bytes are tried as a bare log, as a log behind a valid header, and as a snapshot.
pub fn fuzz_recover(bytes: &[u8]) {
    let _ = recovery::recover(None, Some(bytes));
    let mut log = codec::encode_header(
        codec::LOG_MAGIC,
        Header {
            version: FORMAT_VERSION,
            generation: 0,
            seq: 0,
        },
    )
    .to_vec();
    log.extend_from_slice(bytes);
    let _ = recovery::recover(None, Some(&log));
    let _ = recovery::recover(Some(bytes), None);
}
