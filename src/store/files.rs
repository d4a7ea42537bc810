//! The store's file-system steps, each with the path in its error: a private directory, the
//! writer lock, reading and cutting the log. Whole-file writes (snapshot, a new log) are
//! [`crate::files`]' durable writes.

use std::fs::{DirBuilder, File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use super::error::StoreError;

/// Mode of every file the store creates.
pub const FILE_MODE: u32 = 0o600;
/// Mode of the store directory.
pub const DIR_MODE: u32 = 0o700;

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Create `dir` with mode 0700 if it is missing; refuse one that group or others can reach.
pub fn ensure_private_dir(dir: &Path) -> Result<(), StoreError> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(io("create directory", dir))?;
    let mode = std::fs::metadata(dir)
        .map_err(io("stat", dir))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(StoreError::InsecureDir {
            path: dir.to_path_buf(),
            mode: mode & 0o7777,
        });
    }
    Ok(())
}

/// Take the exclusive writer lock, without waiting: a second opener gets [`StoreError::Locked`].
/// The lock lives as long as the returned value (and dies with the process, even on SIGKILL).
pub fn lock(path: &Path) -> Result<Flock<File>, StoreError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(FILE_MODE)
        .open(path)
        .map_err(io("open lock file", path))?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
        if errno == Errno::EWOULDBLOCK {
            StoreError::Locked {
                path: path.to_path_buf(),
            }
        } else {
            StoreError::Io {
                op: "lock",
                path: path.to_path_buf(),
                source: errno.into(),
            }
        }
    })
}

pub fn read_if_exists(path: &Path) -> Result<Option<Vec<u8>>, StoreError> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io("read", path)(e)),
    }
}

/// Open the log for appending.
pub fn open_append(path: &Path) -> Result<File, StoreError> {
    OpenOptions::new()
        .append(true)
        .mode(FILE_MODE)
        .open(path)
        .map_err(io("open", path))
}

/// Cut the file at `path` to `len` bytes and make that durable.
pub fn truncate(path: &Path, len: u64) -> Result<(), StoreError> {
    let f = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io("open", path))?;
    f.set_len(len).map_err(io("truncate", path))?;
    f.sync_all().map_err(io("fsync", path))
}
