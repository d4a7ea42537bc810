//! `bastion import FILE` and `bastion export`: databases, roles and users as one declarative
//! TOML document (`[[databases]]`, `[[roles]]`, `[[users]]`, the boot config's syntax).
//!
//! Import adds or replaces what the file declares and leaves the rest alone, so running it twice
//! changes nothing the second time; `export` prints a file `import` takes back unchanged.

use std::path::Path;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use super::admin::{unexpected, AdminArgs};
use crate::admin::wire::{Declared, Reply, Request};
use crate::config::{DatabaseConfig, RoleConfig, UserConfig};
use crate::store::records::{DatabaseRecord, RoleRecord, UserRecord};

/// The file `import` reads and `export` writes.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Declarative {
    #[serde(default)]
    pub databases: Vec<DatabaseConfig>,
    #[serde(default)]
    pub roles: Vec<RoleConfig>,
    #[serde(default)]
    pub users: Vec<UserConfig>,
}

/// A settings document (EC2 user-data, written by `bastion firstboot` for the daemon's pending
/// import): the import file, and optionally a `[bastion]` table that marks it as ours (its
/// contents are reserved and ignored).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingsDocument {
    #[serde(default, rename = "bastion")]
    _bastion: Option<toml::Table>,
    #[serde(default)]
    databases: Vec<DatabaseConfig>,
    #[serde(default)]
    roles: Vec<RoleConfig>,
    #[serde(default)]
    users: Vec<UserConfig>,
}

impl Declarative {
    /// Parse and convert to records: a value over a bound is refused naming bound and field.
    /// Like [`parse_settings`](Self::parse_settings), a parse error names the line, never
    /// shows it: from the restricted console, `import /etc/shadow` must not print the file.
    pub fn parse(text: &str, origin: &Path) -> anyhow::Result<Declared> {
        let d: Declarative = toml::from_str(text).map_err(|e| {
            anyhow::anyhow!(
                "import file {}: not valid TOML, or not databases, roles and users (line {}; \
                 the line is not shown: it may hold a secret)",
                origin.display(),
                line_of(text, e.span().map(|s| s.start))
            )
        })?;
        d.records()
            .with_context(|| format!("import file {}", origin.display()))
    }

    /// [`parse`](Self::parse) for a settings document from EC2 user-data, as the daemon imports
    /// it at start: a `[bastion]` table is allowed (and ignored), and an error never quotes the
    /// document. TOML and serde errors show the offending line or value, which may hold a secret
    /// and would land in the journal; this error names the line only. (Past parsing, the store's
    /// rules name a field and a record's name, never a value: passwords are files or
    /// environment variables, not document values.)
    pub fn parse_settings(text: &str, origin: &Path) -> anyhow::Result<Declared> {
        let d: SettingsDocument = toml::from_str(text).map_err(|e| {
            anyhow::anyhow!(
                "settings document {}: not valid TOML, or not databases, roles and users as \
                 `bastion import` takes them (line {}; the line is not shown: it may hold a secret)",
                origin.display(),
                line_of(text, e.span().map(|s| s.start))
            )
        })?;
        Declarative {
            databases: d.databases,
            roles: d.roles,
            users: d.users,
        }
        .records()
        .with_context(|| format!("settings document {}", origin.display()))
    }

    fn records(&self) -> anyhow::Result<Declared> {
        Ok(Declared {
            databases: self
                .databases
                .iter()
                .map(DatabaseRecord::try_from)
                .collect::<Result<_, _>>()?,
            roles: self
                .roles
                .iter()
                .map(RoleRecord::try_from)
                .collect::<Result<_, _>>()?,
            users: self
                .users
                .iter()
                .map(UserRecord::try_from)
                .collect::<Result<_, _>>()?,
        })
    }

    pub fn of(d: &Declared) -> Declarative {
        Declarative {
            databases: d.databases.iter().map(DatabaseConfig::from).collect(),
            roles: d.roles.iter().map(RoleConfig::from).collect(),
            users: d.users.iter().map(UserConfig::from).collect(),
        }
    }
}

/// The import file's bytes, capped: a regular file (no device, no FIFO), or standard input for
/// `-` / `/dev/stdin` (how `ssh admin@host bastion import /dev/stdin < ops.toml` hands it over).
fn read_import_file(file: &Path) -> anyhow::Result<zeroize::Zeroizing<Vec<u8>>> {
    if file == Path::new("-") || file == Path::new("/dev/stdin") {
        use std::io::Read as _;
        let mut bytes = zeroize::Zeroizing::new(Vec::new());
        std::io::stdin()
            .take(MAX_IMPORT_FILE + 1)
            .read_to_end(&mut bytes)
            .context("reading the import file from standard input")?;
        if bytes.len() as u64 > MAX_IMPORT_FILE {
            anyhow::bail!("import file on standard input is larger than {MAX_IMPORT_FILE} bytes");
        }
        return Ok(bytes);
    }
    Ok(crate::files::read_capped(file, MAX_IMPORT_FILE)?)
}

/// Fuzz entry point: any bytes read as a settings document (EC2 user-data) give records or an
/// error — never a panic — and the error never shows a line of the document.
pub fn fuzz_settings(bytes: &[u8]) {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    if let Err(e) = Declarative::parse_settings(text, Path::new("user-data")) {
        let message = format!("{e:#}");
        // The message's own words, as they read for a document that shows nothing: a line
        // that merely repeats them is not the document leaking.
        let template = Declarative::parse_settings("=", Path::new("user-data"))
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default();
        for line in text.lines().map(str::trim).filter(|l| l.len() >= 24) {
            if template.contains(line) {
                continue;
            }
            assert!(
                !message.contains(line),
                "a settings error shows a line of the document"
            );
        }
    }
}

/// The largest import file read (thousands of databases, roles and users).
pub const MAX_IMPORT_FILE: u64 = 4 * 1024 * 1024;

pub fn import(file: &Path, admin: &AdminArgs) -> anyhow::Result<()> {
    let bytes = read_import_file(file)?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| anyhow::anyhow!("import file {}: not UTF-8 text", file.display()))?;
    let declared = Declarative::parse(text, file)?;
    let summary = match admin.call(Request::Import(declared))? {
        Reply::Imported(s) => s,
        other => return Err(unexpected(other)),
    };
    admin.print(&summary, || {
        println!(
            "imported {}: {} added, {} changed, {} unchanged",
            file.display(),
            summary.added,
            summary.changed,
            summary.unchanged
        )
    })
}

/// The 1-based line of byte `offset` in `text` (`?` when unknown).
pub fn line_of(text: &str, offset: Option<usize>) -> String {
    match offset {
        Some(o) => {
            let before = &text.as_bytes()[..o.min(text.len())];
            (before.iter().filter(|b| **b == b'\n').count() + 1).to_string()
        }
        None => "?".into(),
    }
}

pub fn export(admin: &AdminArgs) -> anyhow::Result<()> {
    let declared = match admin.call(Request::Export)? {
        Reply::Export(d) => d,
        other => return Err(unexpected(other)),
    };
    let doc = Declarative::of(&declared);
    if admin.json {
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print!("{}", toml::to_string(&doc).context("exporting as TOML")?);
    }
    Ok(())
}
