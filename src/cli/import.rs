//! `bastion import FILE` and `bastion export`: databases, roles and users as one declarative
//! TOML document (`[[databases]]`, `[[roles]]`, `[[users]]`, the boot config's syntax).
//!
//! Import adds or replaces what the file declares and leaves the rest alone, so running it twice
//! changes nothing the second time; `export` prints a file `import` takes back unchanged.

use std::path::{Path, PathBuf};

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

impl Declarative {
    /// Parse and convert to records: a value over a bound is refused naming bound and field.
    pub fn parse(text: &str, origin: &Path) -> anyhow::Result<Declared> {
        let d: Declarative =
            toml::from_str(text).with_context(|| format!("import file {}", origin.display()))?;
        let at = || format!("import file {}", origin.display());
        Ok(Declared {
            databases: d
                .databases
                .iter()
                .map(DatabaseRecord::try_from)
                .collect::<Result<_, _>>()
                .with_context(at)?,
            roles: d
                .roles
                .iter()
                .map(RoleRecord::try_from)
                .collect::<Result<_, _>>()
                .with_context(at)?,
            users: d
                .users
                .iter()
                .map(UserRecord::try_from)
                .collect::<Result<_, _>>()
                .with_context(at)?,
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

pub fn import(file: &PathBuf, admin: &AdminArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read import file {}", file.display()))?;
    let declared = Declarative::parse(&text, file)?;
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
