//! What every admin verb shares: finding and calling the admin socket, `--json`, and tables
//! laid out like `tsh db ls`.

use std::path::PathBuf;

use clap::Args;
use serde::Serialize;

use crate::admin::client;
use crate::admin::wire::{Reply, Request};

/// How an admin verb reaches the daemon, and how it prints.
#[derive(Debug, Clone, Args)]
pub struct AdminArgs {
    /// The admin socket (default: the config's `admin.socket`, else `<state_dir>/run/admin.sock`).
    #[arg(long, env = "BASTION_ADMIN_SOCKET", global = true)]
    pub socket: Option<PathBuf>,
    /// Boot configuration naming the admin socket (default /etc/bastion/bastion.toml).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

impl AdminArgs {
    /// Send `request`; an error reply is returned as an error naming what was refused.
    pub fn call(&self, request: Request) -> anyhow::Result<Reply> {
        let socket =
            crate::daemon::admin_socket_for(self.socket.as_deref(), self.config.as_deref())?;
        Ok(client::call(&socket, &request)?)
    }

    /// Print `value` as JSON with `--json`, else run `text`.
    pub fn print<T: Serialize>(&self, value: &T, text: impl FnOnce()) -> anyhow::Result<()> {
        if self.json {
            println!("{}", serde_json::to_string_pretty(value)?);
        } else {
            text();
        }
        Ok(())
    }

    /// After a mutation: `{"seq": N}` with `--json`, else `message`.
    pub fn done(&self, reply: Reply, message: &str) -> anyhow::Result<()> {
        let seq = match reply {
            Reply::Done { seq } => seq,
            other => anyhow::bail!("unexpected reply from the daemon: {other:?}"),
        };
        self.print(&serde_json::json!({ "seq": seq }), || println!("{message}"))
    }
}

/// A reply of another kind than the request asks for: the daemon and CLI disagree.
pub fn unexpected(reply: Reply) -> anyhow::Error {
    anyhow::anyhow!("unexpected reply from the daemon: {reply:?}")
}

/// Columns padded to their widest cell, a dashed rule under the header (as `tsh db ls`).
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$} "));
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    out += &line(
        widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str)
            .collect(),
    );
    for row in rows {
        out += &line(row.iter().map(String::as_str).collect());
    }
    out
}

/// A list cell: `a,b` or `-`.
pub fn joined<T: AsRef<str>>(items: &[T]) -> String {
    if items.is_empty() {
        "-".into()
    } else {
        items
            .iter()
            .map(AsRef::as_ref)
            .collect::<Vec<_>>()
            .join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_pads_columns() {
        let t = table(
            &["NAME", "X"],
            &[
                vec!["a".into(), "1".into()],
                vec!["long".into(), "2".into()],
            ],
        );
        assert_eq!(t, "NAME X\n---- -\na    1\nlong 2\n");
    }
}
