//! `bastion sessions ls|kill ID`: the daemon's live sessions, from its session registry.

use clap::Subcommand;
use serde::Serialize;

use super::admin::{table, unexpected, AdminArgs};
use super::cert::rfc3339;
use crate::admin::wire::{Reply, Request};
use crate::proxy::registry::SessionInfo;

#[derive(Debug, Subcommand)]
pub enum SessionsCommand {
    /// List live sessions: id, user, database, db-user, client, transport, start, state, bytes,
    /// relay path and where each leg's TLS runs (`ktls`: the kernel, `rustls`: user space).
    Ls,
    /// End a live session (in its handshake or relay); its `session.end` is still audited.
    Kill {
        /// The session id (`sessions ls`, the `session` field of audit events).
        id: u64,
    },
}

pub fn run(command: SessionsCommand, admin: &AdminArgs) -> anyhow::Result<()> {
    match command {
        SessionsCommand::Ls => list(admin),
        SessionsCommand::Kill { id } => kill(id, admin),
    }
}

/// One session as `--json` prints it.
#[derive(Debug, Serialize)]
struct Row<'a> {
    id: u64,
    user: Option<&'a str>,
    database: Option<&'a str>,
    db_user: Option<&'a str>,
    client: &'a str,
    transport: &'static str,
    serial: Option<&'a str>,
    started: String,
    state: &'static str,
    bytes_client_to_upstream: u64,
    bytes_upstream_to_client: u64,
    /// `splice` or `copy` once relaying.
    path: Option<&'a str>,
    /// `ktls`, `rustls` or `none`, per leg.
    tls_client: &'static str,
    tls_upstream: &'static str,
}

fn row(s: &SessionInfo) -> Row<'_> {
    Row {
        id: s.id,
        user: s.user.as_deref(),
        database: s.database.as_deref(),
        db_user: s.db_user.as_deref(),
        client: &s.client,
        transport: s.transport.name(),
        serial: s.serial.as_deref(),
        started: rfc3339(s.started),
        state: if s.relaying { "relay" } else { "handshake" },
        bytes_client_to_upstream: s.bytes_client_to_upstream,
        bytes_upstream_to_client: s.bytes_upstream_to_client,
        path: s.path.as_deref(),
        tls_client: s.tls_client.name(),
        tls_upstream: s.tls_upstream.name(),
    }
}

fn list(admin: &AdminArgs) -> anyhow::Result<()> {
    let sessions = match admin.call(Request::ListSessions)? {
        Reply::Sessions(sessions) => sessions,
        other => return Err(unexpected(other)),
    };
    let rows: Vec<Row<'_>> = sessions.iter().map(row).collect();
    admin.print(&rows, || {
        let dash = |v: Option<&str>| v.unwrap_or("-").to_string();
        let cells: Vec<Vec<String>> = rows
            .iter()
            .map(|r| {
                vec![
                    r.id.to_string(),
                    dash(r.user),
                    dash(r.database),
                    dash(r.db_user),
                    r.client.to_string(),
                    r.transport.to_string(),
                    r.started.clone(),
                    r.state.to_string(),
                    format!(
                        "{}/{}",
                        r.bytes_client_to_upstream, r.bytes_upstream_to_client
                    ),
                    dash(r.path),
                    format!("{}/{}", r.tls_client, r.tls_upstream),
                ]
            })
            .collect();
        print!(
            "{}",
            table(
                &[
                    "ID",
                    "USER",
                    "DATABASE",
                    "DB-USER",
                    "CLIENT",
                    "TRANSPORT",
                    "STARTED",
                    "STATE",
                    "BYTES UP/DOWN",
                    "PATH",
                    "TLS CLIENT/UPSTREAM",
                ],
                &cells
            )
        );
    })
}

fn kill(id: u64, admin: &AdminArgs) -> anyhow::Result<()> {
    let session = match admin.call(Request::KillSession(id))? {
        Reply::Killed(session) => session,
        other => return Err(unexpected(other)),
    };
    let r = row(&session);
    admin.print(&r, || {
        println!(
            "killed session {} (user {}, database {}, client {})",
            r.id,
            r.user.unwrap_or("-"),
            r.database.unwrap_or("-"),
            r.client
        )
    })
}
