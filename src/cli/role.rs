//! `bastion role add|ls|rm`: which database users and databases a role allows, and its command
//! policy (inspect mode).

use clap::{Args, Subcommand};

use super::admin::{joined, table, unexpected, AdminArgs};
use crate::admin::wire::{Reply, Request};
use crate::config::RoleConfig;
use crate::store::records::RoleRecord;

#[derive(Debug, Subcommand)]
pub enum RoleCommand {
    /// Add a role (or change one with --replace).
    Add(RoleAddArgs),
    /// List roles.
    Ls,
    /// Remove a role no user holds.
    Rm { name: String },
}

#[derive(Debug, Args)]
pub struct RoleAddArgs {
    pub name: String,
    /// Database users the role may act as (`*` wildcards), comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub db_users: Vec<String>,
    /// Databases the role may reach (`*` wildcards), comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub db_names: Vec<String>,
    /// Command policy: Redis ACL command rules, applied from no commands, in one argument
    /// (e.g. --commands "+@read -@dangerous -keys"). Default: every command.
    #[arg(long, allow_hyphen_values = true)]
    pub commands: Option<String>,
    /// Key patterns of the command policy, applied from no keys (e.g. --keys "~app:* %R~ref:*").
    /// Default: every key.
    #[arg(long, allow_hyphen_values = true)]
    pub keys: Option<String>,
    /// Change an existing role instead of adding one.
    #[arg(long)]
    pub replace: bool,
}

pub fn run(command: RoleCommand, admin: &AdminArgs) -> anyhow::Result<()> {
    match command {
        RoleCommand::Add(a) => {
            let config = RoleConfig {
                name: a.name,
                db_users: a.db_users,
                db_names: a.db_names,
                commands: a.commands,
                keys: a.keys,
            };
            let record = RoleRecord::try_from(&config)?;
            let reply = admin.call(Request::PutRole {
                record,
                replace: a.replace,
            })?;
            let verb = if a.replace { "changed" } else { "added" };
            admin.done(reply, &format!("role '{}' {verb}", config.name))
        }
        RoleCommand::Ls => {
            let roles = roles(admin)?;
            admin.print(&roles, || {
                let rows: Vec<Vec<String>> = roles
                    .iter()
                    .map(|r| {
                        let rules = |r: &Option<String>| r.clone().unwrap_or_else(|| "-".into());
                        vec![
                            r.name.clone(),
                            joined(&r.db_users),
                            joined(&r.db_names),
                            rules(&r.commands),
                            rules(&r.keys),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    table(&["Name", "DB users", "DB names", "Commands", "Keys"], &rows)
                );
            })
        }
        RoleCommand::Rm { name } => {
            let reply = admin.call(Request::RemoveRole(name.clone()))?;
            admin.done(reply, &format!("role '{name}' removed"))
        }
    }
}

pub fn roles(admin: &AdminArgs) -> anyhow::Result<Vec<RoleConfig>> {
    match admin.call(Request::ListRoles)? {
        Reply::Roles(roles) => Ok(roles.iter().map(RoleConfig::from).collect()),
        other => Err(unexpected(other)),
    }
}
