//! Files with something to protect, under one set of rules: durable writes and checked reads.
//!
//! **Durable write** ([`write_durably`]; [`TempFile`], [`TempFile::commit`] and [`sync_dir`] where
//! a caller needs the steps apart): a temporary file next to the target with an unpredictable
//! name (`.<name>.tmp-<16 hex>`), created `O_CREAT|O_EXCL|O_NOFOLLOW` with its final mode before
//! the first byte, written, fsynced, renamed into place — or hard-linked, which refuses an
//! existing target ([`Existing::Refuse`]) — and the directory fsynced. A crash leaves the old
//! file or the new one, never half of one; a failed write leaves no temporary file.
//!
//! **Checked read** ([`read_private`] for secrets, [`read_private_in`] for a secret that must
//! be a file directly in one directory, [`read_capped`]): open with
//! `O_NOFOLLOW|O_NONBLOCK|O_CLOEXEC` (for `read_private_in`: `openat` of one name in the opened
//! directory, so no component but the directory itself is resolved), check the *opened
//! descriptor* (a regular file; for a private file owned by root or by this process's user,
//! with no group/other permission bits; no larger than the caller's cap), then read at most
//! that much. The file checked is the file read; a symlink, a FIFO or a device is refused
//! without reading a byte, and `/dev/zero` or a huge file is never read whole.
//!
//! Errors name the operation and the path. This module must never: follow a symlink at the
//! final component, give a file a mode wider than asked (not even for an instant), read more
//! than the caller's cap, or put file contents into an error.

use std::ffi::OsStr;
use std::fs::{File, OpenOptions, Permissions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use nix::fcntl::OFlag;
use zeroize::Zeroizing;

/// What sits between a target's name and the random part of its temporary file's name.
const TEMP_INFIX: &str = ".tmp-";
/// Random bytes in a temporary file's name (shown as twice as many hex digits).
const TEMP_RANDOM_LEN: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot {op} {path}: it is a symbolic link, and links are never followed")]
    Symlink { op: &'static str, path: PathBuf },
    #[error("cannot read {path}: it is {kind}, not a regular file")]
    NotRegular { path: PathBuf, kind: &'static str },
    #[error("cannot read {path}: it is {size} bytes, over the limit of {max} bytes")]
    TooLarge { path: PathBuf, size: u64, max: u64 },
    #[error("cannot read {path}: it grew past {size} bytes while being read")]
    Grew { path: PathBuf, size: u64 },
    #[error(
        "{path} has mode {mode:04o}: group or others can access it; it must be private to \
         its owner (fix with: chmod 600 {path})"
    )]
    NotPrivate { path: PathBuf, mode: u32 },
    #[error(
        "{path} is owned by uid {uid}: a secret must belong to root or to the bastion's own \
         user (uid {own})"
    )]
    NotOwned { path: PathBuf, uid: u32, own: u32 },
    #[error("cannot read {name:?} in {dir}: it must be one file name, directly in that directory")]
    NotAName {
        dir: PathBuf,
        name: std::ffi::OsString,
    },
    #[error("cannot create {path}: it already exists, and is not replaced")]
    Exists { path: PathBuf },
    #[error("cannot write {path}: the path names no file")]
    NoFileName { path: PathBuf },
    #[error("cannot name a temporary file for {path}: the system random number generator failed")]
    Random { path: PathBuf },
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> FileError + 'a {
    move |source| {
        if source.raw_os_error() == Some(libc::ELOOP) {
            FileError::Symlink {
                op,
                path: path.to_path_buf(),
            }
        } else {
            FileError::Io {
                op,
                path: path.to_path_buf(),
                source,
            }
        }
    }
}

/// What a durable write does when the target already exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// Replace it atomically (a symlink at the target is replaced, never followed).
    Replace,
    /// Leave it and fail with [`FileError::Exists`] (create-new).
    Refuse,
}

/// Durably put `bytes` at `path` with exactly `mode`: temp file, fsync, rename (or link, for
/// [`Existing::Refuse`]), fsync the directory. The directory must exist.
pub fn write_durably(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    existing: Existing,
) -> Result<(), FileError> {
    TempFile::write(path, bytes, mode)?.commit(existing)?;
    sync_dir(parent(path))
}

/// Make the directory's entries (a create, a rename, a removal) durable.
pub fn sync_dir(dir: &Path) -> Result<(), FileError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("fsync directory", dir))
}

/// Remove the temporary files a crashed write to `path` left behind; how many there were.
/// Only for a directory whose writer is known to be this process (e.g. under its lock).
pub fn remove_stale_temps(path: &Path) -> Result<usize, FileError> {
    let dir = parent(path);
    let prefix = temp_prefix(path)?;
    let mut removed = 0;
    for entry in std::fs::read_dir(dir).map_err(io("list", dir))? {
        let entry = entry.map_err(io("list", dir))?;
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let stale = entry.path();
            std::fs::remove_file(&stale).map_err(io("remove", &stale))?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// A written and fsynced temporary file beside its target, not yet in place. Dropped without
/// [`commit`](TempFile::commit), it is removed.
#[derive(Debug)]
pub struct TempFile {
    temp: PathBuf,
    target: PathBuf,
    /// Set once the temporary name is gone (renamed) or must stay (abandoned).
    keep: bool,
}

impl TempFile {
    /// Write `bytes` to a new temporary file beside `target`, with exactly `mode` from before
    /// the first byte, and fsync it.
    pub fn write(target: &Path, bytes: &[u8], mode: u32) -> Result<TempFile, FileError> {
        let temp = parent(target).join(format!("{}{}", temp_prefix(target)?, random_hex(target)?));
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&temp)
            .map_err(io("create", &temp))?;
        let guard = TempFile {
            temp,
            target: target.to_path_buf(),
            keep: false,
        };
        // The umask may have narrowed `mode` (never widened it): make it exact before writing.
        file.set_permissions(Permissions::from_mode(mode))
            .map_err(io("set the mode of", &guard.temp))?;
        file.write_all(bytes).map_err(io("write", &guard.temp))?;
        file.sync_all().map_err(io("fsync", &guard.temp))?;
        Ok(guard)
    }

    /// Move the file into place. The directory entry is durable only after [`sync_dir`].
    pub fn commit(mut self, existing: Existing) -> Result<(), FileError> {
        match existing {
            Existing::Replace => {
                std::fs::rename(&self.temp, &self.target)
                    .map_err(io("rename into place", &self.target))?;
                self.keep = true;
                Ok(())
            }
            Existing::Refuse => {
                std::fs::hard_link(&self.temp, &self.target).map_err(|source| {
                    if source.kind() == ErrorKind::AlreadyExists {
                        FileError::Exists {
                            path: self.target.clone(),
                        }
                    } else {
                        io("link into place", &self.target)(source)
                    }
                })?;
                std::fs::remove_file(&self.temp).map_err(io("remove", &self.temp))
            }
        }
    }

    /// Leave the temporary file where it is, as a crash at this point would; its path.
    pub fn abandon(mut self) -> PathBuf {
        self.keep = true;
        self.temp.clone()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

/// Read a secret: [`read_capped`]'s checks, and the file must belong to root or to this
/// process's user and give group and others no access at all. The bytes are zeroized when
/// dropped.
pub fn read_private(path: &Path, max: u64) -> Result<Zeroizing<Vec<u8>>, FileError> {
    let file = open_no_follow(path)?;
    read_checked(file, path, max, true)
}

/// [`read_private`] of the file `name` directly in `dir`: the directory is opened, then `name`
/// in it with `openat(O_NOFOLLOW)`, so neither `..`, nor a symlink in `dir`, nor a symlinked
/// sub-directory can lead out of it. `name` must be one plain file name.
pub fn read_private_in(
    dir: &Path,
    name: &OsStr,
    max: u64,
) -> Result<Zeroizing<Vec<u8>>, FileError> {
    let path = dir.join(name);
    let mut parts = Path::new(name).components();
    if !matches!(
        (parts.next(), parts.next()),
        (Some(Component::Normal(_)), None)
    ) {
        return Err(FileError::NotAName {
            dir: dir.to_path_buf(),
            name: name.to_os_string(),
        });
    }
    let directory = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(dir)
        .map_err(io("open directory", dir))?;
    // O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused after the open.
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    let file = nix::fcntl::openat(&directory, name, flags, nix::sys::stat::Mode::empty())
        .map(File::from)
        .map_err(|errno| io("open", &path)(std::io::Error::from(errno)))?;
    read_checked(file, &path, max, true)
}

/// Read a regular file of at most `max` bytes, never following a symlink at `path`.
pub fn read_capped(path: &Path, max: u64) -> Result<Zeroizing<Vec<u8>>, FileError> {
    let file = open_no_follow(path)?;
    read_checked(file, path, max, false)
}

fn open_no_follow(path: &Path) -> Result<File, FileError> {
    // O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused after the open.
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(io("open", path))
}

/// The checks on the opened descriptor, then the read (see the module docs).
fn read_checked(
    mut file: File,
    path: &Path,
    max: u64,
    private: bool,
) -> Result<Zeroizing<Vec<u8>>, FileError> {
    let meta = file.metadata().map_err(io("stat", path))?;
    let kind = meta.file_type();
    if !kind.is_file() {
        let kind = if kind.is_dir() {
            "a directory"
        } else if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_char_device() || kind.is_block_device() {
            "a device"
        } else if kind.is_socket() {
            "a socket"
        } else {
            "something else"
        };
        return Err(FileError::NotRegular {
            path: path.to_path_buf(),
            kind,
        });
    }
    let own = nix::unistd::geteuid().as_raw();
    if private && meta.uid() != 0 && meta.uid() != own {
        return Err(FileError::NotOwned {
            path: path.to_path_buf(),
            uid: meta.uid(),
            own,
        });
    }
    let mode = meta.mode() & 0o7777;
    if private && mode & 0o077 != 0 {
        return Err(FileError::NotPrivate {
            path: path.to_path_buf(),
            mode,
        });
    }
    let size = meta.len();
    if size > max {
        return Err(FileError::TooLarge {
            path: path.to_path_buf(),
            size,
            max,
        });
    }
    // A buffer of the final size plus one byte, never grown: growing would leave copies of a
    // secret behind, unzeroized. Filling the extra byte means the file grew after the fstat.
    let len = usize::try_from(size).map_err(|_| FileError::TooLarge {
        path: path.to_path_buf(),
        size,
        max,
    })?;
    let mut buf = Zeroizing::new(vec![0u8; len + 1]);
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(io("read", path)(e)),
        }
    }
    if filled > len {
        return Err(FileError::Grew {
            path: path.to_path_buf(),
            size,
        });
    }
    buf.truncate(filled);
    Ok(buf)
}

/// The directory `path` is in (`.` for a bare name).
fn parent(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// `.<name>.tmp-`: the start of every temporary file name for `path`.
fn temp_prefix(path: &Path) -> Result<String, FileError> {
    let name = path.file_name().ok_or_else(|| FileError::NoFileName {
        path: path.to_path_buf(),
    })?;
    Ok(format!(".{}{TEMP_INFIX}", name.to_string_lossy()))
}

fn random_hex(path: &Path) -> Result<String, FileError> {
    crate::random::hex::<TEMP_RANDOM_LEN>().map_err(|_| FileError::Random {
        path: path.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: u64 = 64;

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path).expect("stat").mode() & 0o7777
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn private_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let path = dir.join(name);
        write_durably(&path, bytes, 0o600, Existing::Refuse).expect("write");
        path
    }

    #[test]
    fn a_durable_write_has_its_mode_and_leaves_only_the_file() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("import.toml");
        write_durably(&path, b"one", 0o640, Existing::Replace).expect("write");
        assert_eq!(std::fs::read(&path).expect("read"), b"one");
        assert_eq!(mode(&path), 0o640);
        write_durably(&path, b"two", 0o600, Existing::Replace).expect("replace");
        assert_eq!(std::fs::read(&path).expect("read"), b"two");
        assert_eq!(mode(&path), 0o600);
        assert_eq!(names(tmp.path()), ["import.toml"]);
    }

    #[test]
    fn refuse_keeps_an_existing_file_and_leaves_no_temp() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = private_file(tmp.path(), "ca.key", b"old");
        let err = write_durably(&path, b"new", 0o600, Existing::Refuse).expect_err("exists");
        assert!(matches!(&err, FileError::Exists { .. }), "{err:?}");
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
        assert_eq!(std::fs::read(&path).expect("read"), b"old");
        // A dangling symlink counts as existing, and is not followed.
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(tmp.path().join("nowhere"), &link).expect("symlink");
        let err = write_durably(&link, b"new", 0o600, Existing::Refuse).expect_err("link");
        assert!(matches!(err, FileError::Exists { .. }), "{err:?}");
        assert!(!tmp.path().join("nowhere").exists());
        assert_eq!(names(tmp.path()), ["ca.key", "link"]);
    }

    #[test]
    fn replace_replaces_a_symlink_instead_of_writing_through_it() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let victim = private_file(tmp.path(), "victim", b"keep me");
        let link = tmp.path().join("out.crt");
        std::os::unix::fs::symlink(&victim, &link).expect("symlink");
        write_durably(&link, b"cert", 0o644, Existing::Replace).expect("write");
        assert_eq!(std::fs::read(&victim).expect("victim"), b"keep me");
        assert!(std::fs::symlink_metadata(&link).expect("stat").is_file());
        assert_eq!(std::fs::read(&link).expect("read"), b"cert");
    }

    #[test]
    fn temp_names_are_unpredictable_and_a_failed_write_leaves_none() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let target = tmp.path().join("store.snap");
        let a = TempFile::write(&target, b"a", 0o600).expect("a").abandon();
        let b = TempFile::write(&target, b"b", 0o600).expect("b").abandon();
        assert_ne!(a, b);
        for temp in [&a, &b] {
            let name = temp
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned();
            let random = name.strip_prefix(".store.snap.tmp-").expect(&name);
            assert_eq!(random.len(), 2 * TEMP_RANDOM_LEN, "{name}");
            assert!(random.bytes().all(|c| c.is_ascii_hexdigit()), "{name}");
            assert_eq!(mode(temp), 0o600);
        }
        assert_eq!(remove_stale_temps(&target).expect("clean"), 2);
        assert!(names(tmp.path()).is_empty());

        // The rename fails (the target is a non-empty directory): the temp file goes too.
        std::fs::create_dir(&target).expect("mkdir");
        std::fs::write(target.join("x"), b"x").expect("x");
        let err = write_durably(&target, b"new", 0o600, Existing::Replace).expect_err("dir");
        assert!(
            matches!(
                &err,
                FileError::Io {
                    op: "rename into place",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("store.snap"), "{err}");
        assert_eq!(names(tmp.path()), ["store.snap"]);
        // A temp file dropped before its commit is removed.
        drop(TempFile::write(&tmp.path().join("log"), b"x", 0o600).expect("temp"));
        assert_eq!(names(tmp.path()), ["store.snap"]);
    }

    #[test]
    fn a_symlink_is_never_read_through() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let secret = private_file(tmp.path(), "secret", b"s3cret");
        let link = tmp.path().join("pw");
        std::os::unix::fs::symlink(&secret, &link).expect("symlink");
        for err in [
            read_private(&link, MAX).expect_err("private"),
            read_capped(&link, MAX).expect_err("capped"),
        ] {
            assert!(
                matches!(&err, FileError::Symlink { op: "open", .. }),
                "{err:?}"
            );
            let msg = err.to_string();
            assert!(msg.contains(&link.display().to_string()), "{msg}");
            assert!(!msg.contains("s3cret"), "{msg}");
        }
    }

    #[test]
    fn fifos_devices_and_directories_are_refused_without_reading() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let fifo = tmp.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .expect("mkfifo");
        // No writer ever opens the FIFO: a blocking open would hang the test here.
        let err = read_private(&fifo, MAX).expect_err("fifo");
        assert!(
            matches!(err, FileError::NotRegular { kind: "a FIFO", .. }),
            "{err:?}"
        );
        let err = read_capped(Path::new("/dev/zero"), MAX).expect_err("/dev/zero");
        assert!(
            matches!(
                err,
                FileError::NotRegular {
                    kind: "a device",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("/dev/zero"), "{err}");
        let err = read_capped(tmp.path(), MAX).expect_err("dir");
        assert!(
            matches!(
                err,
                FileError::NotRegular {
                    kind: "a directory",
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn a_file_over_the_cap_is_refused_with_the_cap_named() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let at_cap = private_file(tmp.path(), "at", &[b'x'; MAX as usize]);
        assert_eq!(
            read_private(&at_cap, MAX).expect("at the cap").len(),
            MAX as usize
        );
        let over = private_file(tmp.path(), "over", &[b'x'; MAX as usize + 1]);
        let err = read_private(&over, MAX).expect_err("over the cap");
        assert!(
            matches!(
                err,
                FileError::TooLarge {
                    size: 65,
                    max: MAX,
                    ..
                }
            ),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("limit of 64 bytes") && msg.contains("over"),
            "{msg}"
        );
        // A sparse file of a terabyte is refused by its size, not read.
        let huge = tmp.path().join("huge");
        File::create(&huge)
            .and_then(|f| f.set_len(1 << 40))
            .expect("sparse");
        let err = read_capped(&huge, MAX).expect_err("huge");
        assert!(matches!(err, FileError::TooLarge { .. }), "{err:?}");
        assert_eq!(
            read_capped(&private_file(tmp.path(), "empty", b""), MAX)
                .expect("empty")
                .len(),
            0
        );
    }

    #[test]
    fn private_reads_refuse_group_or_other_access() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = private_file(tmp.path(), "pw", b"s3cret\n");
        assert_eq!(
            read_private(&path, MAX).expect("0600").as_slice(),
            b"s3cret\n"
        );
        for bad in [0o640, 0o604, 0o620, 0o644, 0o601] {
            std::fs::set_permissions(&path, Permissions::from_mode(bad)).expect("chmod");
            let err = read_private(&path, MAX).expect_err("not private");
            assert!(
                matches!(err, FileError::NotPrivate { mode, .. } if mode == bad),
                "{err:?}"
            );
            let msg = err.to_string();
            assert!(
                msg.contains(&format!("{bad:04o}")) && msg.contains("/pw"),
                "{msg}"
            );
            assert!(!msg.contains("s3cret"), "{msg}");
            // A file that is not a secret may be readable by others.
            assert_eq!(
                read_capped(&path, MAX).expect("capped").as_slice(),
                b"s3cret\n"
            );
        }
        std::fs::set_permissions(&path, Permissions::from_mode(0o400)).expect("chmod");
        read_private(&path, MAX).expect("0400 is private");
    }

    #[test]
    fn a_secret_in_a_directory_is_read_only_from_there() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("secrets");
        std::fs::create_dir(&dir).expect("mkdir");
        private_file(&dir, "pw", b"s3cret");
        let outside = private_file(tmp.path(), "ca.key", b"ca-key-bytes");
        assert_eq!(
            read_private_in(&dir, OsStr::new("pw"), MAX)
                .expect("pw")
                .as_slice(),
            b"s3cret"
        );
        // A symlink in the directory pointing out of it.
        std::os::unix::fs::symlink(&outside, dir.join("link")).expect("symlink");
        let err = read_private_in(&dir, OsStr::new("link"), MAX).expect_err("link");
        assert!(matches!(err, FileError::Symlink { .. }), "{err:?}");
        // A symlinked sub-directory, `..`, and absolute names are not one file name.
        std::os::unix::fs::symlink(tmp.path(), dir.join("sub")).expect("symlink dir");
        for name in ["sub/ca.key", "../ca.key", "/etc/passwd", "..", ".", ""] {
            let err = read_private_in(&dir, OsStr::new(name), MAX).expect_err(name);
            assert!(matches!(err, FileError::NotAName { .. }), "{name}: {err:?}");
        }
        for err in [
            read_private_in(&dir, OsStr::new("link"), MAX).expect_err("link"),
            read_private_in(&dir, OsStr::new("sub/ca.key"), MAX).expect_err("sub"),
        ] {
            assert!(!err.to_string().contains("ca-key-bytes"), "{err}");
        }
    }

    #[test]
    fn a_secret_owned_by_another_user_is_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = private_file(tmp.path(), "pw", b"s3cret");
        if !nix::unistd::geteuid().is_root() {
            return; // chown needs root; the test rig runs as root
        }
        std::os::unix::fs::chown(&path, Some(65534), None).expect("chown");
        let err = read_private(&path, MAX).expect_err("nobody's");
        assert!(
            matches!(
                err,
                FileError::NotOwned {
                    uid: 65534,
                    own: 0,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("uid 65534"), "{err}");
        // Not a secret: anyone's file may be read with a cap.
        read_capped(&path, MAX).expect("capped");
    }
}
