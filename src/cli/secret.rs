//! `bastion secret set NAME | ls | rm NAME`: password files in `secrets_dir`, written by the
//! daemon (see `admin/secrets.rs`). `set` reads the password from standard input — with echo
//! off when that is a terminal (the console), else the whole input (a pipe, `< file`) — and
//! never prints it; nothing can read one back.

use std::io::{BufRead, IsTerminal, Read, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Subcommand;
use zeroize::Zeroizing;

use super::admin::{joined, table, unexpected, AdminArgs};
use crate::admin::wire::{Reply, Request, WireSecret};
use crate::catalog::MAX_PASSWORD_FILE;
use crate::secret::Secret;

#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Store a password as NAME in secrets_dir (read from stdin; not echoed on a terminal),
    /// for a database's `--password-file <secrets_dir>/NAME`.
    Set {
        name: String,
        /// Replace an existing secret (databases using it switch to the new value at once).
        #[arg(long)]
        replace: bool,
    },
    /// List the secrets: name, size, age, the databases using each, problems. Never a value.
    Ls,
    /// Remove a secret no database uses.
    Rm { name: String },
}

pub fn run(command: SecretCommand, admin: &AdminArgs) -> anyhow::Result<()> {
    match command {
        SecretCommand::Set { name, replace } => {
            let value = read_value(&name)?;
            let reply = admin.call(Request::PutSecret {
                name: name.clone(),
                value: WireSecret(value),
                replace,
            })?;
            let Reply::SecretDone {
                replaced, used_by, ..
            } = reply
            else {
                return Err(unexpected(reply));
            };
            let json =
                serde_json::json!({ "name": name, "replaced": replaced, "used_by": used_by });
            admin.print(&json, || {
                let verb = if replaced { "replaced" } else { "stored" };
                match used_by.as_slice() {
                    [] => println!("secret '{name}' {verb}"),
                    dbs => println!(
                        "secret '{name}' {verb}; in use by {} from now on",
                        dbs.join(", ")
                    ),
                }
            })
        }
        SecretCommand::Ls => {
            let secrets = match admin.call(Request::ListSecrets)? {
                Reply::Secrets(s) => s,
                other => return Err(unexpected(other)),
            };
            admin.print(&secrets, || {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() as i64);
                let rows: Vec<Vec<String>> = secrets
                    .iter()
                    .map(|s| {
                        vec![
                            s.name.clone(),
                            s.bytes.to_string(),
                            age(now - s.modified),
                            joined(&s.used_by),
                            s.problem.clone().unwrap_or_else(|| "-".into()),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    table(&["Name", "Bytes", "Age", "Used by", "Problem"], &rows)
                );
            })
        }
        SecretCommand::Rm { name } => {
            match admin.call(Request::RemoveSecret(name.clone()))? {
                Reply::SecretDone { .. } => {}
                other => return Err(unexpected(other)),
            }
            admin.print(
                &serde_json::json!({ "name": name, "removed": true }),
                || println!("secret '{name}' removed"),
            )
        }
    }
}

/// `12s`, `5m`, `3h`, `2d`.
fn age(secs: i64) -> String {
    let secs = secs.max(0) as u64;
    let d = Duration::from_secs(secs);
    match secs {
        0..=119 => format!("{}s", d.as_secs()),
        120..=7199 => format!("{}m", secs / 60),
        7200..=172_799 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86_400),
    }
}

/// The password from standard input: one line typed with echo off on a terminal, else all of
/// it (at most the password file limit; a final newline is the daemon's to drop).
fn read_value(name: &str) -> anyhow::Result<Secret> {
    let stdin = std::io::stdin();
    let mut text = Zeroizing::new(String::new());
    if stdin.is_terminal() {
        let mut err = std::io::stderr();
        write!(err, "password for secret '{name}' (not shown): ")?;
        err.flush()?;
        let _echo = EchoOff::new(&stdin)?;
        stdin
            .lock()
            .read_line(&mut text)
            .context("reading the password from the terminal")?;
        writeln!(err)?;
    } else {
        stdin
            .lock()
            .take(MAX_PASSWORD_FILE + 2)
            .read_to_string(&mut text)
            .context("reading the password from standard input (UTF-8 text)")?;
    }
    Ok(Secret::new(text.as_str()))
}

/// Echo off on a terminal until dropped.
struct EchoOff<'a> {
    fd: &'a std::io::Stdin,
    saved: nix::sys::termios::Termios,
}

impl<'a> EchoOff<'a> {
    fn new(stdin: &'a std::io::Stdin) -> anyhow::Result<EchoOff<'a>> {
        use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
        let fd = stdin;
        let saved = tcgetattr(fd).context("reading the terminal's settings")?;
        let mut quiet = saved.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        quiet
            .local_flags
            .insert(LocalFlags::ICANON | LocalFlags::ECHONL);
        tcsetattr(fd, SetArg::TCSANOW, &quiet).context("turning the terminal's echo off")?;
        Ok(EchoOff { fd, saved })
    }
}

impl Drop for EchoOff<'_> {
    fn drop(&mut self) {
        let _ =
            nix::sys::termios::tcsetattr(self.fd, nix::sys::termios::SetArg::TCSANOW, &self.saved);
    }
}
