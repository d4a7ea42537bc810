//! `bastion user add|ls|rm`: bastion users, their roles and their Unix-account binding.
//!
//! `--db-users` / `--db-names` on `user add` give the user a personal role, `user.<name>`,
//! holding just those patterns (removed with the user).

use clap::{Args, Subcommand};

use super::admin::{joined, table, unexpected, AdminArgs};
use crate::admin::wire::{Declared, Reply, Request};
use crate::config::{RoleConfig, UserConfig};
use crate::store::records::{RoleRecord, UserRecord};

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a user (or change one with --replace).
    Add(UserAddArgs),
    /// List users.
    Ls,
    /// Remove a user (and its personal role).
    Rm { name: String },
}

#[derive(Debug, Args)]
pub struct UserAddArgs {
    pub name: String,
    /// Roles, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub roles: Vec<String>,
    /// Database users allowed through the personal role `user.<name>`, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub db_users: Vec<String>,
    /// Databases allowed through the personal role `user.<name>`, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub db_names: Vec<String>,
    /// Local Unix account (name or uid) whose socket connections are this user.
    #[arg(long)]
    pub unix_user: Option<String>,
    /// Change an existing user instead of adding one.
    #[arg(long)]
    pub replace: bool,
}

/// The personal role of `user`.
pub fn personal_role(user: &str) -> String {
    format!("user.{user}")
}

pub fn run(command: UserCommand, admin: &AdminArgs) -> anyhow::Result<()> {
    match command {
        UserCommand::Add(a) => add(a, admin),
        UserCommand::Ls => {
            let users = users(admin)?;
            admin.print(&users, || {
                let rows: Vec<Vec<String>> = users
                    .iter()
                    .map(|u| {
                        vec![
                            u.name.clone(),
                            joined(&u.roles),
                            u.unix_user.clone().unwrap_or_else(|| "-".into()),
                        ]
                    })
                    .collect();
                print!("{}", table(&["Name", "Roles", "Unix user"], &rows));
            })
        }
        UserCommand::Rm { name } => {
            let reply = admin.call(Request::RemoveUser(name.clone()))?;
            let personal = personal_role(&name);
            let held = users(admin)?.iter().any(|u| u.roles.contains(&personal));
            if !held
                && super::role::roles(admin)?
                    .iter()
                    .any(|r| r.name == personal)
            {
                admin.call(Request::RemoveRole(personal))?;
            }
            admin.done(reply, &format!("user '{name}' removed"))
        }
    }
}

fn add(a: UserAddArgs, admin: &AdminArgs) -> anyhow::Result<()> {
    let mut user = UserConfig {
        name: a.name,
        roles: a.roles,
        unix_user: a.unix_user,
    };
    let verb = if a.replace { "changed" } else { "added" };
    if a.db_users.is_empty() && a.db_names.is_empty() {
        let record = UserRecord::try_from(&user)?;
        let reply = admin.call(Request::PutUser {
            record,
            replace: a.replace,
        })?;
        return admin.done(reply, &format!("user '{}' {verb}", user.name));
    }
    // A personal role and the user that holds it, written together.
    let role = RoleConfig {
        name: personal_role(&user.name),
        db_users: a.db_users,
        db_names: a.db_names,
        ..RoleConfig::default()
    };
    user.roles.push(role.name.clone());
    let declared = Declared {
        databases: Vec::new(),
        roles: vec![RoleRecord::try_from(&role)?],
        users: vec![UserRecord::try_from(&user)?],
    };
    let exists = users(admin)?.iter().any(|u| u.name == user.name);
    if exists && !a.replace {
        anyhow::bail!(
            "user '{}' already exists (use --replace to change it)",
            user.name
        );
    }
    if !exists && a.replace {
        anyhow::bail!("no user named '{}'", user.name);
    }
    match admin.call(Request::Import(declared))? {
        Reply::Imported(summary) => admin.print(&summary, || {
            println!(
                "user '{}' {verb} (personal role '{}')",
                user.name, role.name
            )
        }),
        other => Err(unexpected(other)),
    }
}

pub fn users(admin: &AdminArgs) -> anyhow::Result<Vec<UserConfig>> {
    match admin.call(Request::ListUsers)? {
        Reply::Users(users) => Ok(users.iter().map(UserConfig::from).collect()),
        other => Err(unexpected(other)),
    }
}
