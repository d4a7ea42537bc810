//! `bastion secret set|ls|rm`: the password files of `secrets_dir`, written by the daemon.
//!
//! On the appliance the root file system is read-only and the console user has no shell, so
//! the daemon itself is the one writer of its password files: an admin hands a password in
//! (`set`), and from then on can see only its name, size, age and which databases use it
//! (`ls`) — never its value, nor any other file. Names are one plain file name (letters,
//! digits, `.`, `_`, `-`, not starting with `.`), so a request can reach nothing outside
//! `secrets_dir`; the file is written durably with mode 0600 by [`crate::files`], a symlink in
//! its place is replaced, never followed. A replaced password is read again at once by every
//! database that names it (as `SIGHUP` would); a file a database names cannot be removed.

use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::auth::Caller;
use super::handler::Admin;
use super::wire::{AdminError, Reply, SecretInfo};
use crate::audit;
use crate::catalog::MAX_PASSWORD_FILE;
use crate::config::{DatabaseConfig, PasswordSource};
use crate::files::{self, Existing, FileError};
use crate::secret::Secret;

/// The longest secret name.
pub const MAX_SECRET_NAME: usize = 64;

/// A secret's name: one file name of letters, digits, `.`, `_`, `-`, not starting with `.` (so
/// never `..`, never a hidden temporary file), at most [`MAX_SECRET_NAME`] bytes.
pub fn check_name(name: &str) -> Result<(), AdminError> {
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty()
        || name.len() > MAX_SECRET_NAME
        || name.starts_with('.')
        || !name.chars().all(plain)
    {
        return Err(AdminError::Refused(format!(
            "secret name {name:?}: must be 1 to {MAX_SECRET_NAME} letters, digits, '.', '_' or \
             '-', not starting with '.' (one file name in secrets_dir)"
        )));
    }
    Ok(())
}

/// A password as a database would read it: UTF-8, not empty, one line (a final newline is
/// dropped, as when the file is read), at most [`MAX_PASSWORD_FILE`] bytes.
fn check_value(value: &Secret) -> Result<&str, AdminError> {
    let text = value.expose().trim_end_matches(['\r', '\n']);
    let refuse = |why: &str| AdminError::Refused(format!("secret value: {why}"));
    if text.is_empty() {
        return Err(refuse("empty"));
    }
    if text.len() as u64 > MAX_PASSWORD_FILE {
        return Err(refuse(&format!(
            "{} bytes, over the limit of {MAX_PASSWORD_FILE}",
            text.len()
        )));
    }
    if text.contains(['\r', '\n', '\0']) {
        return Err(refuse("more than one line (or a NUL byte)"));
    }
    Ok(text)
}

impl Admin {
    pub(super) fn put_secret(
        &self,
        caller: &Caller,
        name: &str,
        value: &Secret,
        replace: bool,
    ) -> Result<Reply, AdminError> {
        check_name(name)?;
        let text = check_value(value)?;
        let dir = self.secret_dirs.secrets_dir().to_path_buf();
        ensure_dir(&dir)?;
        let path = dir.join(name);
        let replaced = path.symlink_metadata().is_ok();
        let existing = if replace {
            Existing::Replace
        } else {
            Existing::Refuse
        };
        let mut bytes = zeroize::Zeroizing::new(Vec::with_capacity(text.len() + 1));
        bytes.extend_from_slice(text.as_bytes());
        bytes.push(b'\n');
        files::write_durably(&path, &bytes, 0o600, existing).map_err(|e| match e {
            FileError::Exists { .. } => AdminError::Exists {
                kind: "secret".into(),
                name: name.into(),
            },
            other => AdminError::Refused(other.to_string()),
        })?;
        audit::admin_secret(
            caller.uid,
            &caller.name,
            if replaced { "replace" } else { "set" },
            name,
        );
        // Databases that name it (perhaps refusing sessions until now) read it again.
        self.reread_passwords();
        Ok(Reply::SecretDone {
            name: name.into(),
            replaced,
            used_by: self.secret_users(&path),
        })
    }

    pub(super) fn remove_secret(&self, caller: &Caller, name: &str) -> Result<Reply, AdminError> {
        check_name(name)?;
        let path = self.secret_dirs.secrets_dir().join(name);
        let used_by = self.secret_users(&path);
        if !used_by.is_empty() {
            return Err(AdminError::Refused(format!(
                "secret '{name}' is the password_file of database(s) {}: change or remove them \
                 first",
                used_by.join(", ")
            )));
        }
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(AdminError::NotFound {
                    kind: "secret".into(),
                    name: name.into(),
                })
            }
            Err(e) => {
                return Err(AdminError::Refused(format!(
                    "cannot remove {}: {e}",
                    path.display()
                )))
            }
        }
        files::sync_dir(self.secret_dirs.secrets_dir())
            .map_err(|e| AdminError::Refused(e.to_string()))?;
        audit::admin_secret(caller.uid, &caller.name, "remove", name);
        Ok(Reply::SecretDone {
            name: name.into(),
            replaced: false,
            used_by: Vec::new(),
        })
    }

    /// Every entry of `secrets_dir` a secret could be (hidden and temporary files skipped), with
    /// what a database reading it would say about it.
    pub(super) fn list_secrets(&self) -> Result<Vec<SecretInfo>, AdminError> {
        let dir = self.secret_dirs.secrets_dir();
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(AdminError::Refused(format!(
                    "cannot list {}: {e}",
                    dir.display()
                )))
            }
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if name.starts_with('.') {
                continue;
            }
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            // The checks a database's read makes (type, owner, mode, size); the bytes read
            // are zeroized on drop and go nowhere.
            let problem =
                files::read_private_in(dir, entry.file_name().as_os_str(), MAX_PASSWORD_FILE)
                    .err()
                    .map(|e| e.to_string());
            out.push(SecretInfo {
                used_by: self.secret_users(&entry.path()),
                name,
                bytes: meta.len(),
                modified: meta.mtime(),
                problem,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The stored databases whose `password_file` (or managed `admin_password_file`) is `path`.
    fn secret_users(&self, path: &Path) -> Vec<String> {
        self.lock()
            .state()
            .databases()
            .filter(|d| {
                matches!(
                    DatabaseConfig::from(*d).auth.secret_source(),
                    Some((_, PasswordSource::File(file))) if file == path
                )
            })
            .map(|d| d.name.to_string())
            .collect()
    }
}

/// `secrets_dir` as a real directory (created 0700 if missing; its parent must exist).
fn ensure_dir(dir: &PathBuf) -> Result<(), AdminError> {
    match dir.symlink_metadata() {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(AdminError::Refused(format!(
            "secrets_dir {} is not a directory (a symbolic link is not followed)",
            dir.display()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::DirBuilder::new()
            .mode(0o700)
            .create(dir)
            .map_err(|e| {
                AdminError::Refused(format!("cannot create secrets_dir {}: {e}", dir.display()))
            }),
        Err(e) => Err(AdminError::Refused(format!(
            "secrets_dir {}: {e}",
            dir.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_reach_nothing_outside_the_directory() {
        for bad in [
            "",
            ".",
            "..",
            "../ca/ca.key",
            "a/b",
            "/etc/passwd",
            ".hidden",
            ".x.tmp",
            "a b",
            "a\0b",
            "é",
            &"x".repeat(MAX_SECRET_NAME + 1),
        ] {
            assert!(check_name(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["cache.pw", "a", "old-redis_2", &"x".repeat(MAX_SECRET_NAME)] {
            check_name(good).unwrap();
        }
    }

    #[test]
    fn values_are_one_line_and_errors_never_quote_them() {
        for (bad, why) in [
            ("", "empty"),
            ("\n", "empty"),
            ("two\nlines-hunter2", "more than one line"),
            ("nul\0hunter2", "NUL"),
        ] {
            let e = check_value(&Secret::new(bad)).unwrap_err().to_string();
            assert!(e.contains(why), "{e}");
            assert!(!e.contains("hunter2"), "{e}");
        }
        let long = "y".repeat(MAX_PASSWORD_FILE as usize + 1);
        assert!(check_value(&Secret::new(long)).is_err());
        assert_eq!(check_value(&Secret::new("pw\r\n")).unwrap(), "pw");
    }
}
