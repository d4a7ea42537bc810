//! `bastion status`: uptime, listeners, sessions, credential source, the store's size, and the
//! numbers of the metrics page (the same page the `[metrics]` endpoint serves).

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
        for (i, line) in metric_lines(&status.metrics).enumerate() {
            println!(
                "{}{line}",
                if i == 0 {
                    "metrics      "
                } else {
                    "             "
                }
            );
        }
    })
}

/// The samples of a metrics page, without comments and histogram buckets (their `_sum` and
/// `_count` stay).
fn metric_lines(page: &str) -> impl Iterator<Item = &str> {
    page.lines().filter(|l| {
        !l.starts_with('#')
            && !l.is_empty()
            && !l
                .split(['{', ' '])
                .next()
                .unwrap_or("")
                .ends_with("_bucket")
    })
}
