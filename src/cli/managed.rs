//! `bastion managed ls|rotate DB USER`: the daemon's managed users (passwords it generates,
//! keeps in Secrets Manager and rotates), from its managed-user task. Never shows a password.

use clap::Subcommand;

use super::admin::{table, unexpected, AdminArgs};
use super::cert::rfc3339;
use crate::admin::wire::{Reply, Request};
use crate::managed::runtime::UserStatus;

#[derive(Debug, Subcommand)]
pub enum ManagedCommand {
    /// List managed users: database, user, source of truth, last/next rotation, secret name,
    /// last error.
    Ls,
    /// Rotate a managed user's password now (the previous one stays valid one more rotation).
    Rotate {
        /// The database (`db ls`).
        database: String,
        /// The managed db-user.
        user: String,
    },
}

pub fn run(command: ManagedCommand, admin: &AdminArgs) -> anyhow::Result<()> {
    match command {
        ManagedCommand::Ls => {
            let users = match admin.call(Request::ListManaged)? {
                Reply::Managed(users) => users,
                other => return Err(unexpected(other)),
            };
            admin.print(&users, || print!("{}", render(&users)))
        }
        ManagedCommand::Rotate { database, user } => {
            let status = match admin.call(Request::RotateManaged { database, user })? {
                Reply::Rotated(status) => status,
                other => return Err(unexpected(other)),
            };
            admin.print(&status, || {
                println!(
                    "rotated {} on {}: version {} of {}",
                    status.user,
                    status.database,
                    status.version.as_deref().unwrap_or("-"),
                    status.secret.as_deref().unwrap_or("-")
                )
            })
        }
    }
}

fn render(users: &[UserStatus]) -> String {
    let time = |t: Option<i64>| t.map(rfc3339).unwrap_or_else(|| "-".into());
    let cells: Vec<Vec<String>> = users
        .iter()
        .map(|u| {
            vec![
                u.database.clone(),
                u.user.clone(),
                u.source.clone(),
                time(u.last_rotation),
                time(u.next_rotation),
                u.secret.clone().unwrap_or_else(|| "-".into()),
                u.last_error.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    table(
        &[
            "DATABASE",
            "USER",
            "SOURCE",
            "LAST",
            "NEXT",
            "SECRET",
            "LAST ERROR",
        ],
        &cells,
    )
}
