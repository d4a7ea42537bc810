//! The console's history: where it lives (XDG state dir, 0600 in a 0700 directory) and which
//! lines it keeps.
//!
//! Must never: keep a line that may hold a secret. Bastion verbs take no password on the command
//! line, but an operator may still type one (a mistyped flag, a pasted token): any line with a
//! word that looks like it names a credential is left out, in memory and on disk, and so is a
//! line starting with a blank (as bash's `HISTCONTROL=ignorespace`).

use std::ffi::OsString;
use std::fs::{DirBuilder, OpenOptions};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// Entries kept in the file.
pub const MAX_ENTRIES: usize = 1000;

/// Words that make a line too risky to keep (lower-case substrings of any word).
const SECRET_HINTS: &[&str] = &["pass", "secret", "token", "key", "credential"];

/// `$XDG_STATE_HOME/bastion/console_history`, else `$HOME/.local/state/bastion/console_history`;
/// `None` when neither is set to an absolute path (history then lives in memory only).
pub fn path(env: impl Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    let absolute = |name: &str| env(name).map(PathBuf::from).filter(|p| p.is_absolute());
    let state = absolute("XDG_STATE_HOME")
        .or_else(|| absolute("HOME").map(|home| home.join(".local").join("state")))?;
    Some(state.join("bastion").join("console_history"))
}

/// Create the history file's directory (0700) and the file (0600, narrowed if it was wider).
pub fn prepare(file: &Path) -> anyhow::Result<()> {
    if let Some(dir) = file.parent() {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating the history directory {}", dir.display()))?;
    }
    let f = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(file)
        .with_context(|| format!("opening the history file {}", file.display()))?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod 600 {}", file.display()))?;
    Ok(())
}

/// Whether `line` may be kept in the history.
pub fn keep(line: &str) -> bool {
    if line.trim().is_empty() || line.starts_with([' ', '\t']) {
        return false;
    }
    let lower = line.to_lowercase();
    !SECRET_HINTS.iter().any(|hint| lower.contains(hint))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_verb_lines_and_drops_anything_that_may_hold_a_secret() {
        for line in [
            "db ls",
            "role add dev --db-names *",
            "user rm bob",
            "help db",
        ] {
            assert!(keep(line), "{line:?}");
        }
        for line in [
            "",
            "   ",
            " db ls",
            "\tdb ls",
            "db add x --password hunter2",
            "db add x --PASSWORD=hunter2",
            "db add x --auth password --password-file /etc/x.pw",
            "iam-token --service elasticache --region r --target t --user u",
            "db add x --secret abc",
            "user add bob --api-key abc",
            "AKIAIOSFODNN7EXAMPLE credentials",
        ] {
            assert!(!keep(line), "{line:?}");
        }
    }

    #[test]
    fn path_prefers_xdg_state_home_then_home() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| OsString::from(v))
            }
        };
        assert_eq!(
            path(env(&[("XDG_STATE_HOME", "/s"), ("HOME", "/h")])),
            Some(PathBuf::from("/s/bastion/console_history"))
        );
        assert_eq!(
            path(env(&[("XDG_STATE_HOME", "relative"), ("HOME", "/h")])),
            Some(PathBuf::from("/h/.local/state/bastion/console_history"))
        );
        assert_eq!(path(env(&[("HOME", "")])), None);
        assert_eq!(path(env(&[])), None);
    }

    #[test]
    fn prepare_makes_a_private_file_and_narrows_a_wide_one() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("state/bastion/console_history");
        prepare(&file).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&file), 0o600);
        assert_eq!(mode(file.parent().unwrap()), 0o700);
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        prepare(&file).unwrap();
        assert_eq!(mode(&file), 0o600);
    }
}
