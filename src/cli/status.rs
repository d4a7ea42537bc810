//! `bastion status`: uptime, listeners, sessions, credential source and the store's size.

use std::time::Duration;

use super::admin::{unexpected, AdminArgs};
use crate::admin::wire::{Reply, Request};

pub fn run(admin: &AdminArgs) -> anyhow::Result<()> {
    let status = match admin.call(Request::Status)? {
        Reply::Status(s) => s,
        other => return Err(unexpected(other)),
    };
    admin.print(&status, || {
        println!("version      {}", status.version);
        println!(
            "uptime       {}",
            humantime::format_duration(Duration::from_secs(status.uptime_secs))
        );
        for (i, l) in status.listeners.iter().enumerate() {
            println!(
                "{}{l}",
                if i == 0 {
                    "listeners    "
                } else {
                    "             "
                }
            );
        }
        println!(
            "sessions     {} (limit {})",
            status.sessions, status.max_sessions
        );
        let chain = status.credential_chain.join(" → ");
        match &status.credential_source {
            Some(source) => {
                let expiry = status
                    .credential_expiry
                    .and_then(|s| u64::try_from(s).ok())
                    .map(|s| {
                        humantime::format_rfc3339_seconds(
                            std::time::UNIX_EPOCH + Duration::from_secs(s),
                        )
                        .to_string()
                    })
                    .unwrap_or_else(|| "never".into());
                println!("credentials  {source} (expires {expiry}; chain {chain})");
            }
            None => println!("credentials  none loaded yet (chain {chain})"),
        }
        println!(
            "store        seq {}: {} databases, {} roles, {} users",
            status.store_seq, status.databases, status.roles, status.users
        );
    })
}
