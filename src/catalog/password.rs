//! A password database's password: read once, under the rules, when the catalog is built
//! (start, an admin change that declares the database, `SIGHUP`), and kept as a [`Secret`] in
//! the catalog's [`super::Database`]. Sessions never read a file or the environment.
//!
//! The rules, wherever the source was declared (config, `db add`, `import`, user-data):
//! - `password_file` names a file *directly* in `secrets_dir` or in systemd's
//!   `$CREDENTIALS_DIRECTORY` (`LoadCredential=`); it is opened with `openat(O_NOFOLLOW)` in
//!   that directory and checked on the opened descriptor: a regular file, owned by root or the
//!   bastion's user, no group/other bits, at most [`MAX_PASSWORD_FILE`] bytes, read into a
//!   zeroizing buffer ([`crate::files::read_private_in`]);
//! - `password_env` names a variable starting with `BASTION_`.
//!
//! A self-hosted managed database's `admin_password_file` is such a file too (it is sent
//! upstream as the admin's AUTH): [`read_as`] reads it under the same rules, naming its key.
//!
//! So an admin who may declare databases cannot make the daemon send its CA key, another
//! file, or its environment to a host of their choosing. Errors name the key and the path or
//! variable, never a byte of the file.

use std::path::{Path, PathBuf};

use crate::config::{is_password_env, DatabaseRuleError, PasswordSource, PASSWORD_ENV_PREFIX};
use crate::secret::Secret;

/// The largest password file read (an ElastiCache AUTH token is at most 128 bytes, an
/// IAM-token-sized password ~1.5 KB).
pub const MAX_PASSWORD_FILE: u64 = 4096;

/// The directories a `password_file` may be in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretDirs {
    /// The config's `secrets_dir`.
    secrets_dir: PathBuf,
    /// systemd's `$CREDENTIALS_DIRECTORY` of the running daemon, if it has one.
    credentials_dir: Option<PathBuf>,
}

/// The default `secrets_dir` and no `$CREDENTIALS_DIRECTORY`.
impl Default for SecretDirs {
    fn default() -> Self {
        SecretDirs::new(crate::config::DEFAULT_SECRETS_DIR.into(), None)
    }
}

impl SecretDirs {
    pub fn new(secrets_dir: PathBuf, credentials_dir: Option<PathBuf>) -> SecretDirs {
        SecretDirs {
            secrets_dir,
            credentials_dir: credentials_dir.filter(|d| d.is_absolute()),
        }
    }

    /// The config's `secrets_dir` (where `bastion secret set` writes).
    pub fn secrets_dir(&self) -> &Path {
        &self.secrets_dir
    }

    /// The directory and name `path` is read as, if it is directly in one of the directories.
    fn locate<'a>(&self, path: &'a Path) -> Option<(&Path, &'a std::ffi::OsStr)> {
        let parent = path.parent()?;
        let name = path.file_name()?;
        [Some(&self.secrets_dir), self.credentials_dir.as_ref()]
            .into_iter()
            .flatten()
            .find(|dir| dir.as_path() == parent)
            .map(|dir| (dir.as_path(), name))
    }

    fn describe(&self) -> String {
        match &self.credentials_dir {
            Some(c) => format!(
                "the secrets directory {} or $CREDENTIALS_DIRECTORY {}",
                self.secrets_dir.display(),
                c.display()
            ),
            None => format!(
                "the secrets directory {} (secrets_dir; the daemon has no \
                 $CREDENTIALS_DIRECTORY)",
                self.secrets_dir.display()
            ),
        }
    }
}

/// A password as the catalog holds it: where it comes from, and what reading it gave.
#[derive(Debug, Clone)]
pub struct Password {
    pub source: PasswordSource,
    /// The key that declares it (`auth.password_file`, `auth.admin_password_file`, …).
    key: &'static str,
    value: Result<Secret, DatabaseRuleError>,
}

/// Two databases' passwords are the same declaration when their sources are: a new reading of
/// the same file does not make a live session's database a different one.
impl PartialEq for Password {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source && self.key == other.key
    }
}

impl Eq for Password {}

impl Password {
    /// Read `source` now, under the rules (module docs).
    pub fn read(source: &PasswordSource, dirs: &SecretDirs) -> Password {
        Password::read_as(source.key(), source, dirs)
    }

    /// Read `source`, declared under `key`, now, under the same rules.
    pub fn read_as(key: &'static str, source: &PasswordSource, dirs: &SecretDirs) -> Password {
        Password {
            source: source.clone(),
            key,
            value: read_as(key, source, dirs),
        }
    }

    /// The same source read again (`SIGHUP`).
    pub fn reread(&self, dirs: &SecretDirs) -> Password {
        Password::read_as(self.key, &self.source, dirs)
    }

    /// `kept` if it is this declaration read successfully (a catalog build keeps the readings
    /// of unchanged sources), else `key`'s `source` read now.
    pub fn keep_or_read(
        key: &'static str,
        source: &PasswordSource,
        dirs: &SecretDirs,
        kept: Option<&Password>,
    ) -> Password {
        match kept {
            Some(k) if k.key == key && k.source == *source && k.value.is_ok() => k.clone(),
            _ => Password::read_as(key, source, dirs),
        }
    }

    /// The password, or why it could not be read (naming the key and the path or variable).
    pub fn value(&self) -> Result<&Secret, &DatabaseRuleError> {
        self.value.as_ref()
    }
}

/// Read the password `source` names, under the rules (module docs). The error's field is the
/// declaring key (`auth.password_file` / `auth.password_env`).
pub fn read(source: &PasswordSource, dirs: &SecretDirs) -> Result<Secret, DatabaseRuleError> {
    read_as(source.key(), source, dirs)
}

/// [`read`] for a source declared under another key (a managed database's
/// `auth.admin_password_file`): the same rules, the error names `key`.
pub fn read_as(
    key: &'static str,
    source: &PasswordSource,
    dirs: &SecretDirs,
) -> Result<Secret, DatabaseRuleError> {
    let refuse = |message: String| DatabaseRuleError {
        field: key,
        message,
    };
    match source {
        PasswordSource::File(path) => {
            let (dir, name) = dirs.locate(path).ok_or_else(|| {
                refuse(format!(
                    "{} is not a file directly in {}",
                    path.display(),
                    dirs.describe()
                ))
            })?;
            let bytes = crate::files::read_private_in(dir, name, MAX_PASSWORD_FILE)
                .map_err(|e| refuse(e.to_string()))?;
            let text = std::str::from_utf8(&bytes)
                .map_err(|_| refuse(format!("{} is not UTF-8 text", path.display())))?;
            let password = text.trim_end_matches(['\r', '\n']);
            if password.is_empty() {
                return Err(refuse(format!("{} is empty", path.display())));
            }
            Ok(Secret::new(password))
        }
        PasswordSource::Env(var) => {
            if !is_password_env(var) {
                return Err(refuse(format!(
                    "'{var}' is not allowed: a password variable's name must start with \
                     {PASSWORD_ENV_PREFIX}"
                )));
            }
            match std::env::var(var) {
                Ok(value) if !value.is_empty() => Ok(Secret::new(value)),
                _ => Err(refuse(format!(
                    "environment variable {var} of the daemon is not set or empty"
                ))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::{write_durably, Existing};
    use std::os::unix::fs::PermissionsExt;

    struct Rig {
        _tmp: tempfile::TempDir,
        dirs: SecretDirs,
        secrets: PathBuf,
        outside: PathBuf,
    }

    fn rig() -> Rig {
        let tmp = tempfile::tempdir().expect("tempdir");
        let secrets = tmp.path().join("secrets");
        std::fs::create_dir(&secrets).expect("mkdir");
        write_durably(&secrets.join("pw"), b"s3cret\n", 0o600, Existing::Refuse).expect("pw");
        let outside = tmp.path().join("ca.key");
        write_durably(&outside, b"CA-KEY-BYTES", 0o600, Existing::Refuse).expect("key");
        Rig {
            dirs: SecretDirs::new(secrets.clone(), None),
            secrets,
            outside,
            _tmp: tmp,
        }
    }

    fn file(p: &Path) -> PasswordSource {
        PasswordSource::File(p.to_path_buf())
    }

    #[test]
    fn a_password_file_is_read_from_the_secrets_directory() {
        let r = rig();
        let pw = read(&file(&r.secrets.join("pw")), &r.dirs).expect("pw");
        assert_eq!(pw.expose(), "s3cret");
    }

    #[test]
    fn paths_out_of_the_secrets_directory_are_refused_without_reading() {
        let r = rig();
        let evil = r.secrets.with_file_name("secrets-evil");
        std::fs::create_dir(&evil).expect("mkdir");
        write_durably(&evil.join("pw"), b"x", 0o600, Existing::Refuse).expect("evil pw");
        std::os::unix::fs::symlink(&r.outside, r.secrets.join("link")).expect("symlink");
        std::os::unix::fs::symlink(r.outside.parent().unwrap(), r.secrets.join("up"))
            .expect("dir symlink");
        let dotdot = r.secrets.join("..").join("ca.key");
        for path in [
            r.outside.clone(),
            evil.join("pw"),
            dotdot,
            r.secrets.join("link"),
            r.secrets.join("up").join("ca.key"),
            PathBuf::from("/proc/self/environ"),
        ] {
            let e = read(&file(&path), &r.dirs).expect_err(&path.display().to_string());
            assert_eq!(e.field, "auth.password_file");
            let msg = e.to_string();
            assert!(msg.contains(&path.display().to_string()), "{msg}");
            assert!(!msg.contains("CA-KEY-BYTES"), "{msg}");
        }
    }

    #[test]
    fn the_credentials_directory_is_the_other_place() {
        let r = rig();
        let creds = r.outside.with_file_name("credentials");
        std::fs::create_dir(&creds).expect("mkdir");
        write_durably(&creds.join("redis"), b"cred", 0o400, Existing::Refuse).expect("cred");
        let source = file(&creds.join("redis"));
        let e = read(&source, &r.dirs).expect_err("no $CREDENTIALS_DIRECTORY");
        assert!(e.message.contains("no $CREDENTIALS_DIRECTORY"), "{e}");
        let dirs = SecretDirs::new(r.secrets.clone(), Some(creds.clone()));
        assert_eq!(read(&source, &dirs).expect("credential").expose(), "cred");
    }

    #[test]
    fn a_readable_or_large_file_is_refused() {
        let r = rig();
        let pw = r.secrets.join("pw");
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        let e = read(&file(&pw), &r.dirs).expect_err("group-readable");
        assert!(e.message.contains("0640"), "{e}");
        let big = r.secrets.join("big");
        write_durably(&big, &[b'x'; 5 * 1024], 0o600, Existing::Refuse).expect("big");
        let e = read(&file(&big), &r.dirs).expect_err("5 KiB");
        assert!(e.message.contains("limit of 4096 bytes"), "{e}");
    }

    #[test]
    fn password_variables_start_with_bastion() {
        let r = rig();
        for var in [
            "HOME",
            "PATH",
            "AWS_SECRET_ACCESS_KEY",
            "BASTION_",
            "bastion_x",
        ] {
            let e = read(&PasswordSource::Env(var.into()), &r.dirs).expect_err(var);
            assert_eq!(e.field, "auth.password_env");
            assert!(e.message.contains("BASTION_"), "{e}");
        }
        let e = read(&PasswordSource::Env("BASTION_UNSET_7E1".into()), &r.dirs).expect_err("unset");
        assert!(e.message.contains("not set"), "{e}");
    }
}
