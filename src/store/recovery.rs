//! Recovery: from the bytes of the snapshot and the log to the state they record.
//!
//! Pure (bytes in, decision out) so that the property tests and the fuzz entry drive it without a
//! file system; [`super::Store::open`] does the I/O and carries out the decision.
//!
//! The rule for a bad frame in the log: if no valid record follows it anywhere in the file, it is
//! the torn tail of a write that was never acknowledged (the write and its fsync had not both
//! returned), and it is truncated. If a valid record follows, the bad frame is damage to an
//! acknowledged record and recovery is refused with the offset, the seq it should have had and
//! what is wrong. A frame whose CRC is good but whose content is wrong is refused wherever it is:
//! a torn write cannot produce a good CRC.

use super::codec::{self, HeaderRead, LogEntry, FORMAT_VERSION, HEADER_LEN, MAX_RECORD_LEN};
use super::error::{FileKind, FrameProblem, RecoveryError};
use super::migrate::migrate;
use super::snapshot;
use super::state::State;

/// What recovery found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    pub state: State,
    /// The seq of the last record in `state`.
    pub last_seq: u64,
    /// The snapshot's compaction generation (0 without a snapshot).
    pub generation: u64,
    /// The last seq the snapshot holds (0 without one): the log's records are the ones after it.
    pub snapshot_seq: u64,
    pub log: LogAction,
    /// The oldest format version read, when older than [`FORMAT_VERSION`]: the records were
    /// migrated, and the files must be rewritten before anything is appended.
    pub migrated_from: Option<u32>,
}

/// What must happen to the log file before appending to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogAction {
    /// The log is good up to `valid_len`; `torn` bytes after it are a torn tail to truncate.
    Keep { valid_len: u64, torn: u64 },
    /// Start a new, empty log (there is none, its creation was cut short, or it is of an older
    /// generation whose records the snapshot already holds: a compaction stopped between
    /// renaming the snapshot and replacing the log).
    Recreate,
}

/// Recover from the snapshot file's bytes (if there is one) and the log file's (if there is one).
pub fn recover(snapshot: Option<&[u8]>, log: Option<&[u8]>) -> Result<Recovered, RecoveryError> {
    let (generation, snapshot_seq, state, version) = match snapshot {
        Some(bytes) => {
            let (header, state) = snapshot::decode(bytes)?;
            (header.generation, header.seq, state, header.version)
        }
        None => (0, 0, State::default(), FORMAT_VERSION),
    };
    let mut out = Recovered {
        state,
        last_seq: snapshot_seq,
        generation,
        snapshot_seq,
        log: LogAction::Recreate,
        migrated_from: (version < FORMAT_VERSION).then_some(version),
    };
    let Some(log) = log else {
        return Ok(out);
    };
    let header = match codec::decode_header(codec::LOG_MAGIC, log) {
        HeaderRead::Valid(h) => h,
        // Logs are created under a temporary name and renamed once their header is durable,
        // so this is a creation the file system cut short; it held no records.
        HeaderRead::Torn => return Ok(out),
        HeaderRead::Bad(problem) => {
            return Err(RecoveryError::Header {
                file: FileKind::Log,
                problem,
            })
        }
    };
    if header.version > FORMAT_VERSION {
        return Err(RecoveryError::UnsupportedVersion {
            file: FileKind::Log,
            found: header.version,
            supported: FORMAT_VERSION,
        });
    }
    if header.generation > generation {
        return Err(RecoveryError::SnapshotBehindLog {
            log: header.generation,
            snapshot: generation,
        });
    }
    if header.seq > snapshot_seq {
        return Err(RecoveryError::Gap {
            log_base: header.seq,
            snapshot_seq,
        });
    }
    if header.generation < generation {
        // Compaction never appends to a log once the snapshot that replaces it is in place.
        return Ok(out);
    }

    if header.version < FORMAT_VERSION {
        out.migrated_from = Some(
            out.migrated_from
                .map_or(header.version, |v| v.min(header.version)),
        );
    }
    let mut at = HEADER_LEN;
    let mut expected = header.seq + 1;
    while at < log.len() {
        let corrupt = |problem, next_valid| RecoveryError::Corrupt {
            offset: at as u64,
            seq: expected,
            problem,
            next_valid,
        };
        let (payload, end) = match codec::read_frame(log, at, MAX_RECORD_LEN) {
            Ok(frame) => frame,
            Err(problem) => {
                return match next_valid_record(log, at + 1, header.version, expected) {
                    Some(next) => Err(corrupt(problem, Some(next as u64))),
                    None => {
                        out.log = LogAction::Keep {
                            valid_len: at as u64,
                            torn: (log.len() - at) as u64,
                        };
                        Ok(out)
                    }
                };
            }
        };
        let entry = decode_entry(header.version, payload).map_err(|p| corrupt(p, None))?;
        if entry.seq != expected {
            return Err(corrupt(
                FrameProblem::Sequence {
                    expected,
                    found: entry.seq,
                },
                None,
            ));
        }
        if entry.seq > snapshot_seq {
            out.state
                .apply(&entry.mutation)
                .map_err(|e| corrupt(FrameProblem::Replay(e), None))?;
            out.last_seq = entry.seq;
        }
        expected += 1;
        at = end;
    }
    out.log = LogAction::Keep {
        valid_len: log.len() as u64,
        torn: 0,
    };
    Ok(out)
}

fn decode_entry(version: u32, payload: &[u8]) -> Result<LogEntry, FrameProblem> {
    let payload =
        migrate(version, FileKind::Log, payload).map_err(|reason| FrameProblem::Migrate {
            found: version,
            reason,
        })?;
    let (entry, rest) = postcard::take_from_bytes::<LogEntry>(&payload)
        .map_err(|e| FrameProblem::Decode(e.to_string()))?;
    if !rest.is_empty() {
        return Err(FrameProblem::Decode(format!(
            "{} trailing bytes in the payload",
            rest.len()
        )));
    }
    Ok(entry)
}

/// The offset of the first complete, CRC-valid, decodable record at or after `from` whose seq
/// is not older than `expected`, if any: the proof that a bad frame before it is not a torn tail.
fn next_valid_record(log: &[u8], from: usize, version: u32, expected: u64) -> Option<usize> {
    (from..log.len()).find(|&p| {
        codec::read_frame(log, p, MAX_RECORD_LEN)
            .ok()
            .and_then(|(payload, _)| decode_entry(version, payload).ok())
            .is_some_and(|e| e.seq >= expected)
    })
}
