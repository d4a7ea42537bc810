//! The store's errors. Every variant carries what the operator needs to act: the path, the byte
//! offset and sequence number of a damaged record, the bound and field of refused input.

use std::path::PathBuf;

/// Input over one of the named `MAX_*` bounds of [`super::records`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {actual} exceeds {bound} ({limit})")]
pub struct BoundError {
    /// Where the value was going, e.g. `users.alice.roles`.
    pub field: String,
    /// The constant's name, e.g. `MAX_ROLES_PER_USER`.
    pub bound: &'static str,
    pub limit: usize,
    pub actual: usize,
}

/// A mutation or record refused before anything is written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error(transparent)]
    Bound(#[from] BoundError),
    #[error("{field}: must not be empty")]
    Empty { field: String },
    #[error("{field}: '{value}' must be {expected}")]
    Charset {
        field: String,
        value: String,
        expected: &'static str,
    },
    #[error("{field}: {message}")]
    Rules { field: String, message: String },
    #[error("{field}: path is not UTF-8")]
    NotUtf8 { field: String },
    #[error("databases.{database}.auth: mode password needs exactly one of password_file or password_env")]
    PasswordSource { database: String },
    #[error("databases.{database}.auth: {message}")]
    Managed { database: String, message: String },
    #[error("{field}: not_after must be later than not_before")]
    Validity { field: String },
    #[error("{field}: no database named '{name}'")]
    UnknownDatabase { field: String, name: String },
    #[error("{field}: no role named '{name}'")]
    UnknownRole { field: String, name: String },
    #[error("{field}: no user named '{name}'")]
    UnknownUser { field: String, name: String },
    #[error("database '{database}' is still used by managed user '{db_user}'")]
    DatabaseInUse { database: String, db_user: String },
    #[error("role '{role}' is still held by user '{user}'")]
    RoleInUse { role: String, user: String },
    #[error("users.{user}.unix_user: '{unix_user}' is already bound to user '{other}'")]
    DuplicateUnixUser {
        user: String,
        unix_user: String,
        other: String,
    },
    #[error("certificate serial {serial} was already issued")]
    DuplicateSerial { serial: String },
    #[error("no certificate with serial {serial}")]
    UnknownSerial { serial: String },
    #[error("certificate serial {serial} is already revoked")]
    AlreadyRevoked { serial: String },
    #[error("no managed user '{db_user}' on database '{database}'")]
    UnknownManagedUser { database: String, db_user: String },
}

/// Which store file a recovery problem is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Snapshot,
    Log,
}

impl std::fmt::Display for FileKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FileKind::Snapshot => "snapshot",
            FileKind::Log => "log",
        })
    }
}

/// What is wrong with one frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameProblem {
    #[error("frame runs past the end of the file ({needed} bytes needed, {available} left)")]
    Incomplete { needed: u64, available: u64 },
    #[error("frame length {len} exceeds the limit {limit}")]
    Length { len: u64, limit: u64 },
    #[error("CRC32 mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    Crc { stored: u32, computed: u32 },
    #[error("CRC is valid but the payload does not decode: {0}")]
    Decode(String),
    #[error("sequence number {found} where {expected} was expected")]
    Sequence { expected: u64, found: u64 },
    #[error("the record cannot be applied: {0}")]
    Replay(RecordError),
    #[error("format version {found} cannot be migrated: {reason}")]
    Migrate { found: u32, reason: String },
}

/// Why the store's files cannot be recovered. Nothing is guessed: a damaged record that a valid
/// one follows is refused, never skipped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecoveryError {
    #[error("{file} header: {problem}")]
    Header { file: FileKind, problem: String },
    #[error("{file} format version {found} is newer than this bastion's ({supported})")]
    UnsupportedVersion {
        file: FileKind,
        found: u32,
        supported: u32,
    },
    #[error("snapshot at offset {offset}: {problem}")]
    Snapshot { offset: u64, problem: FrameProblem },
    #[error(
        "log record at offset {offset} (seq {seq}): {problem}; {}",
        match next_valid {
            Some(n) => format!("a valid record follows at offset {n}, so this is damage, not a torn write: refusing to drop it"),
            None => "refusing to drop it".to_string(),
        }
    )]
    Corrupt {
        offset: u64,
        /// The sequence number this record should have (the one after the last good record).
        seq: u64,
        problem: FrameProblem,
        next_valid: Option<u64>,
    },
    #[error("the log is generation {log} but the snapshot is generation {snapshot}: the snapshot is older than the log (restored from an old backup?)")]
    SnapshotBehindLog { log: u64, snapshot: u64 },
    #[error("the log starts after seq {log_base} but the snapshot ends at seq {snapshot_seq}: records in between are missing")]
    Gap { log_base: u64, snapshot_seq: u64 },
}

/// Errors of [`super::Store`].
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store: cannot {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("store: {0}")]
    File(#[from] crate::files::FileError),
    #[error("store {path} is locked by another process (only one writer: is the daemon already running?)")]
    Locked { path: PathBuf },
    #[error("store directory {path} has mode {mode:#o}: it must not be accessible to group or others (0700)")]
    InsecureDir { path: PathBuf, mode: u32 },
    #[error("store {path}: {source}")]
    Recovery {
        path: PathBuf,
        /// Boxed: it is the largest error and the rarest.
        source: Box<RecoveryError>,
    },
    #[error("store: refused: {0}")]
    Record(#[from] RecordError),
    #[error("store: encoded record is {len} bytes, over MAX_RECORD_LEN ({limit})")]
    TooLarge { len: usize, limit: usize },
    #[error(
        "store {path}: an earlier write failed and its durability is unknown; reopen the store"
    )]
    Poisoned { path: PathBuf },
}

impl From<BoundError> for StoreError {
    fn from(e: BoundError) -> Self {
        StoreError::Record(RecordError::Bound(e))
    }
}

impl RecoveryError {
    /// The file the problem is in.
    pub fn file(&self) -> FileKind {
        match self {
            RecoveryError::Header { file, .. } | RecoveryError::UnsupportedVersion { file, .. } => {
                *file
            }
            RecoveryError::Snapshot { .. } => FileKind::Snapshot,
            RecoveryError::Corrupt { .. }
            | RecoveryError::SnapshotBehindLog { .. }
            | RecoveryError::Gap { .. } => FileKind::Log,
        }
    }
}
