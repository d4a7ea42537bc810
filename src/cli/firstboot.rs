//! `bastion firstboot` (run by `bastion-firstboot.service`, before `bastion.service`): read
//! EC2 user-data over IMDSv2 and, when it is a bastion settings document, write it to the
//! daemon's pending import (`<state_dir>/import.toml`, owned by the daemon's user), which
//! `bastion serve` imports into the store at its next start and renames `import.toml.applied`
//! (crate::daemon::import_pending); install the launch key pair from IMDS `public-keys` as the
//! admin user's `authorized_keys`.
//!
//! Must never: print user-data (it may hold passwords), or leave a half-written file (every
//! file is written to a temporary name, synced, then renamed). A broken document does not keep
//! the launch key out: the keys are installed first, then the run fails (no stamp).

use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;

use crate::aws::imds::{ImdsClient, ProcessEnv, PublicKey};
use crate::config::Config;

/// A line that marks user-data as a bastion settings document.
pub const SETTINGS_MARKER: &str = "# bastion-settings";

#[derive(Debug, Args)]
pub struct FirstbootArgs {
    /// Boot configuration; `[aws.imds]` and `state_dir` are used.
    #[arg(long, default_value = "/etc/bastion/bastion.toml")]
    pub config: PathBuf,
    /// Where a settings document from user-data is written (0600) for the daemon to import at
    /// its next start [default: <state_dir>/import.toml, the daemon's pending import].
    #[arg(long)]
    pub import: Option<PathBuf>,
    /// Owner of the import file, and of the state dir if this creates it, when the user
    /// exists (the daemon's user: it renames the file once imported).
    #[arg(long, default_value = "bastion")]
    pub import_owner: String,
    /// The admin user's authorized_keys; launch keys are added, existing lines kept.
    #[arg(long, default_value = "/home/admin/.ssh/authorized_keys")]
    pub authorized_keys: PathBuf,
    /// Owner of the authorized_keys file and its directory, when the user exists.
    #[arg(long, default_value = "admin")]
    pub admin_user: String,
    /// Written when everything succeeded (the unit's ConditionPathExists=! stamp).
    #[arg(long)]
    pub stamp: Option<PathBuf>,
}

pub fn run(args: FirstbootArgs) -> anyhow::Result<()> {
    let config = Config::load(&args.config)?;
    let client = ImdsClient::from_config(&config.boot.imds, &ProcessEnv)
        .context("IMDS client from [aws.imds]")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let (user_data, keys) = runtime.block_on(async {
        let user_data = client.user_data().await.context("reading user-data")?;
        let keys = client.public_keys().await.context("reading public-keys")?;
        anyhow::Ok((user_data, keys))
    })?;

    let import = args
        .import
        .clone()
        .unwrap_or_else(|| config.boot.state_dir.join(crate::daemon::PENDING_IMPORT));
    // The launch key first: a broken settings document must not lock the admin out.
    install_launch_keys(&args, &keys)?;
    match user_data {
        None => println!("firstboot: no user-data; nothing to import"),
        Some(data) => match settings_document(&data) {
            Settings::Document(text) => write_import(&import, text, &args.import_owner)?,
            Settings::NotOurs => {
                println!(
                    "firstboot: user-data is not a bastion settings document; nothing imported"
                )
            }
        },
    }

    if let Some(stamp) = &args.stamp {
        write_atomically(stamp, b"", 0o644)?;
    }
    Ok(())
}

/// Check that `text` is TOML (a document that is not would only be refused by the daemon), then
/// write it to `import` (0600) for the daemon's next start, owned by `owner`; the state dir is
/// made (0700, same owner) if the daemon never ran.
fn write_import(import: &Path, text: &str, owner: &str) -> anyhow::Result<()> {
    toml::from_str::<toml::Table>(text).map_err(|e| {
        // The TOML error quotes the offending line, which may hold a secret.
        anyhow::anyhow!(
            "user-data is marked as a bastion settings document but is not valid TOML (line {})",
            super::import::line_of(text, e.span().map(|s| s.start))
        )
    })?;
    // A run after the daemon applied this very document (the stamp was not written, say) must
    // not apply it again over what an admin changed since.
    let applied = import.with_file_name(format!(
        "{}.applied",
        import.file_name().unwrap_or_default().to_string_lossy()
    ));
    if std::fs::read(&applied).is_ok_and(|done| done == text.as_bytes()) {
        println!(
            "firstboot: the settings document from user-data was already imported ({}); not written again",
            applied.display()
        );
        return Ok(());
    }
    let owner = lookup_user(owner)?;
    if let Some(dir) = import.parent().filter(|d| !d.as_os_str().is_empty()) {
        create_private_dir(dir, owner)?;
    }
    write_atomically(import, text.as_bytes(), 0o600)?;
    if let Some((uid, gid)) = owner {
        chown(import, Some(uid), Some(gid))?;
    }
    println!(
        "firstboot: settings document from user-data written to {} ({} bytes); bastion imports it at its next start",
        import.display(),
        text.len()
    );
    Ok(())
}

fn install_launch_keys(args: &FirstbootArgs, keys: &[PublicKey]) -> anyhow::Result<()> {
    if keys.is_empty() {
        println!("firstboot: no public keys in IMDS; authorized_keys unchanged");
        return Ok(());
    }
    let owner = lookup_user(&args.admin_user)?;
    let added = install_keys(
        &args.authorized_keys,
        keys.iter().map(|k| k.openssh_key.as_str()),
        owner,
    )?;
    let names: Vec<&str> = keys.iter().map(|k| k.name.as_str()).collect();
    println!(
        "firstboot: {added} new key(s) in {} (key pairs: {})",
        args.authorized_keys.display(),
        names.join(", ")
    );
    Ok(())
}

/// What user-data is, for us.
#[derive(Debug, PartialEq, Eq)]
pub enum Settings<'a> {
    Document(&'a str),
    NotOurs,
}

/// A settings document is UTF-8 text with a `# bastion-settings` line or a `[bastion]` (or
/// `[bastion.…]`) table. Anything else (a cloud-init script, binary) is someone else's.
pub fn settings_document(data: &[u8]) -> Settings<'_> {
    let Ok(text) = std::str::from_utf8(data) else {
        return Settings::NotOurs;
    };
    let marked = text.lines().map(str::trim).any(|l| {
        l == SETTINGS_MARKER || l == "[bastion]" || (l.starts_with("[bastion.") && l.ends_with(']'))
    });
    if marked {
        Settings::Document(text)
    } else {
        Settings::NotOurs
    }
}

/// Append the keys not already present; returns how many were added. Creates the directory
/// (0700) and file (0600), owned by `owner` when given.
fn install_keys<'a>(
    path: &Path,
    keys: impl Iterator<Item = &'a str>,
    owner: Option<(nix::unistd::Uid, nix::unistd::Gid)>,
) -> anyhow::Result<usize> {
    let dir = path
        .parent()
        .with_context(|| format!("{} has no parent directory", path.display()))?;
    create_private_dir(dir, owner)?;
    let existing = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let mut text = existing.clone();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    let mut added = 0;
    for key in keys.map(str::trim).filter(|k| !k.is_empty()) {
        if !text.lines().any(|l| l.trim() == key) {
            text.push_str(key);
            text.push('\n');
            added += 1;
        }
    }
    if added > 0 || existing.is_empty() {
        write_atomically(path, text.as_bytes(), 0o600)?;
    }
    if let Some((uid, gid)) = owner {
        chown(path, Some(uid), Some(gid))?;
    }
    Ok(added)
}

/// Create the directory if missing, then a [`crate::files`] durable write of `data` at `path`.
fn write_atomically(path: &Path, data: &[u8], mode: u32) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    crate::files::write_durably(path, data, mode, crate::files::Existing::Replace)
        .with_context(|| format!("writing {}", path.display()))
}

/// Create `dir` (mode 0700, owned by `owner`) if it does not exist; an existing one is kept.
fn create_private_dir(
    dir: &Path,
    owner: Option<(nix::unistd::Uid, nix::unistd::Gid)>,
) -> anyhow::Result<()> {
    if dir.exists() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    if let Some((uid, gid)) = owner {
        chown(dir, Some(uid), Some(gid))?;
    }
    Ok(())
}

fn lookup_user(name: &str) -> anyhow::Result<Option<(nix::unistd::Uid, nix::unistd::Gid)>> {
    let user =
        nix::unistd::User::from_name(name).with_context(|| format!("looking up user {name}"))?;
    if user.is_none() {
        println!("firstboot: user {name} does not exist; authorized_keys left owned by us");
    }
    Ok(user.map(|u| (u.uid, u.gid)))
}

fn chown(
    path: &Path,
    uid: Option<nix::unistd::Uid>,
    gid: Option<nix::unistd::Gid>,
) -> anyhow::Result<()> {
    nix::unistd::chown(path, uid, gid).with_context(|| format!("chown {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_settings_documents_only() {
        let marked = "# bastion-settings\n[[databases]]\nname = \"x\"\n";
        assert_eq!(
            settings_document(marked.as_bytes()),
            Settings::Document(marked)
        );
        let table = "[bastion]\nversion = 1\n";
        assert_eq!(
            settings_document(table.as_bytes()),
            Settings::Document(table)
        );
        let sub = "x = 1\n[bastion.users]\n";
        assert_eq!(settings_document(sub.as_bytes()), Settings::Document(sub));
        assert_eq!(
            settings_document(b"#!/bin/bash\necho hi\n"),
            Settings::NotOurs
        );
        assert_eq!(
            settings_document(b"#cloud-config\n[bastionx]\n"),
            Settings::NotOurs
        );
        assert_eq!(settings_document(&[0xff, 0xfe, 0x00]), Settings::NotOurs);
    }

    #[test]
    fn keys_are_added_once_and_existing_lines_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ssh/authorized_keys");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "ssh-ed25519 AAAA old").unwrap();
        let added = install_keys(&path, ["ssh-ed25519 BBBB new\n"].into_iter(), None).unwrap();
        assert_eq!(added, 1);
        let added = install_keys(&path, ["ssh-ed25519 BBBB new"].into_iter(), None).unwrap();
        assert_eq!(added, 0);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "ssh-ed25519 AAAA old\nssh-ed25519 BBBB new\n"
        );
    }
}
