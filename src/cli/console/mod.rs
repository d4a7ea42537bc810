//! `bastion console`: a restricted interactive shell for the serial / SSH console, usable as an
//! admin user's login shell. It runs bastion verbs, in this process, and nothing else.
//!
//! - [`line`]: what a line is (verb, built-in, refused), from the clap command tree.
//! - [`complete`]: tab completion of verbs, flags and store names.
//! - [`history`]: where history lives and which lines it keeps.
//! - [`login`]: `-bastion` (login shell) and `bastion -c LINE` (sshd's `SHELL -c`).
//!
//! Must never: start a program or a shell, exit because a verb failed, or keep a line that may
//! hold a secret in its history. Verbs run in this process, so a verb must return its error
//! rather than exit the process (none calls `std::process::exit`).

pub mod complete;
pub mod history;
pub mod line;
pub mod login;

use std::io::{IsTerminal as _, Write as _};
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context as _;
use clap::error::ErrorKind;
use clap::{Args, Command, CommandFactory as _, FromArgMatches as _};
use rustyline::config::{CompletionType, Config};
use rustyline::error::ReadlineError;
use rustyline::history::DefaultHistory;
use rustyline::Editor;

use self::complete::{Completion, NameKind};
use self::line::{console_verbs, verb_allowed, Line};
use crate::admin::client;
use crate::admin::wire::{Reply, Request};
use crate::cli::Cli;

pub use self::login::argv;

const PROMPT: &str = "bastion> ";

#[derive(Debug, Args)]
pub struct ConsoleArgs {
    /// Run one verb line and exit, as `sh -c` would (sshd runs `SHELL -c LINE` for
    /// `ssh admin@host LINE`); anything but a bastion verb line is refused.
    #[arg(short = 'c', long = "command", value_name = "LINE")]
    pub command: Option<String>,
    /// The admin socket verbs and completion use (default: the config's `admin.socket`).
    #[arg(long, env = "BASTION_ADMIN_SOCKET")]
    pub socket: Option<PathBuf>,
    /// Boot configuration naming the admin socket (default /etc/bastion/bastion.toml).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// Run the console: one line with `-c`, else interactively until `exit` or end of input.
pub fn run(args: ConsoleArgs) -> anyhow::Result<()> {
    // No socket is not fatal: `doctor` and `cert issue` need none, and a verb that does says so.
    let socket =
        crate::daemon::admin_socket_for(args.socket.as_deref(), args.config.as_deref()).ok();
    let mut console = Console::new(socket);
    match args.command {
        Some(line) => console.one_shot(&line),
        None => console.interactive(),
    }
}

/// What the console knows: the verb tree (with the console's socket as every verb's default).
struct Console {
    tree: Command,
    socket: Option<PathBuf>,
}

/// How a line ended, for `-c`'s exit status.
enum Outcome {
    Done,
    Exit,
    Failed(anyhow::Error),
    /// Clap's own answer (usage error, `--help`, `--version`), printed as the CLI prints it.
    Clap(clap::Error),
}

impl Console {
    fn new(socket: Option<PathBuf>) -> Console {
        let mut tree = Cli::command();
        tree.build();
        if let Some(s) = &socket {
            default_socket(&mut tree, s);
        }
        Console { tree, socket }
    }

    fn one_shot(&mut self, text: &str) -> anyhow::Result<()> {
        match self.line(text) {
            Outcome::Done | Outcome::Exit => Ok(()),
            Outcome::Failed(e) => Err(e),
            // Exactly what `bastion LINE` would have printed and exited with.
            Outcome::Clap(e) => e.exit(),
        }
    }

    fn interactive(&mut self) -> anyhow::Result<()> {
        let config = Config::builder()
            .max_history_size(history::MAX_ENTRIES)?
            .history_ignore_dups(true)?
            .history_ignore_space(true)
            .completion_type(CompletionType::List)
            .auto_add_history(false)
            .build();
        let mut editor: Editor<Completion, DefaultHistory> = Editor::with_config(config)?;
        editor.set_helper(Some(Completion::new(
            self.tree.clone(),
            names_from(self.socket.clone()),
        )));
        let history_file = history::path(|k| std::env::var_os(k));
        let history_file = history_file.filter(|f| match history::prepare(f) {
            Ok(()) => true,
            Err(e) => {
                eprintln!("console: history stays in memory: {e:#}");
                false
            }
        });
        if let Some(f) = &history_file {
            let _ = editor.load_history(f);
        }
        if std::io::stdin().is_terminal() {
            println!("bastion console: bastion verbs only. `help` lists them, `exit` leaves.");
        }
        let interrupted = hold_job_control_signals()?;
        loop {
            let _ = std::io::stdout().flush();
            let text = match editor.readline(PROMPT) {
                Ok(text) => text,
                // Ctrl-C abandons the line being typed, as in a shell.
                Err(ReadlineError::Interrupted) => continue,
                Err(ReadlineError::Eof) => return Ok(()),
                Err(e) => return Err(e.into()),
            };
            if history::keep(&text) {
                let _ = editor.add_history_entry(text.as_str());
                if let Some(f) = &history_file {
                    if let Err(e) = editor.append_history(f) {
                        eprintln!("console: cannot write history {}: {e}", f.display());
                    }
                }
            }
            interrupted.store(false, Ordering::SeqCst);
            let outcome = self.line(&text);
            if interrupted.swap(false, Ordering::SeqCst) {
                eprintln!("console: interrupt ignored: a verb runs to completion (each has its own time limits)");
            }
            match outcome {
                Outcome::Exit => return Ok(()),
                Outcome::Done => {}
                Outcome::Failed(e) => eprintln!("bastion: {}", crate::cli::error_chain(&e)),
                Outcome::Clap(e) => {
                    let _ = e.print();
                }
            }
        }
    }

    /// Classify and carry out one line. Nothing here exits the process.
    fn line(&mut self, text: &str) -> Outcome {
        match line::classify(text, &self.tree) {
            Err(refusal) => Outcome::Failed(anyhow::anyhow!("refused: {refusal}")),
            Ok(Line::Empty) => Outcome::Done,
            Ok(Line::Exit) => Outcome::Exit,
            Ok(Line::Help(path)) => self.help(&path),
            Ok(Line::Run(words)) => self.run_verb(words),
        }
    }

    fn run_verb(&mut self, words: Vec<String>) -> Outcome {
        let argv = std::iter::once("bastion".to_string()).chain(words);
        let matches = match self.tree.try_get_matches_from_mut(argv) {
            Ok(m) => m,
            Err(e) => return Outcome::Clap(e),
        };
        // The classifier allowed the first word; this holds whatever clap made of the line.
        if let Some(verb) = matches.subcommand_name() {
            if let Err(refusal) = verb_allowed(verb, &self.tree) {
                return Outcome::Failed(anyhow::anyhow!("refused: {refusal}"));
            }
        }
        let cli = match Cli::from_arg_matches(&matches) {
            Ok(cli) => cli,
            Err(e) => return Outcome::Clap(e),
        };
        // A verb that panics is a bug, but must not end the operator's login session.
        match panic::catch_unwind(AssertUnwindSafe(|| crate::cli::run(cli))) {
            Ok(Ok(())) => Outcome::Done,
            Ok(Err(e)) => Outcome::Failed(e),
            Err(_) => Outcome::Failed(anyhow::anyhow!("the command panicked (a bug)")),
        }
    }

    /// `help`: the verbs; `help VERB [SUB]`: clap's help for it, as `bastion VERB --help`.
    fn help(&mut self, path: &[String]) -> Outcome {
        if path.is_empty() {
            print!("{}", verb_list(&self.tree));
            return Outcome::Done;
        }
        if let Err(refusal) = verb_allowed(&path[0], &self.tree) {
            return Outcome::Failed(anyhow::anyhow!("{refusal}"));
        }
        let argv = std::iter::once("bastion")
            .chain(path.iter().map(String::as_str))
            .chain(["--help"]);
        match self.tree.try_get_matches_from_mut(argv) {
            Err(e) if e.kind() == ErrorKind::DisplayHelp => {
                let _ = e.print();
                Outcome::Done
            }
            Err(e) => Outcome::Clap(e),
            Ok(_) => Outcome::Done,
        }
    }
}

/// While a verb runs the terminal is out of raw mode, so Ctrl-C, Ctrl-\\ and Ctrl-Z would kill
/// or stop the login shell — ending or freezing the operator's session. They set the returned
/// flag instead. (At the prompt they are keys: Ctrl-C abandons the line.)
fn hold_job_control_signals() -> anyhow::Result<Arc<AtomicBool>> {
    use signal_hook::consts::{SIGINT, SIGQUIT, SIGTSTP};
    let flag = Arc::new(AtomicBool::new(false));
    for signal in [SIGINT, SIGQUIT, SIGTSTP] {
        signal_hook::flag::register(signal, flag.clone())
            .with_context(|| format!("holding signal {signal} while verbs run"))?;
    }
    Ok(flag)
}

/// The `help` screen: every verb the console runs, with its one-line description.
fn verb_list(tree: &Command) -> String {
    let verbs: Vec<(String, String)> = console_verbs(tree)
        .map(|c| {
            let about = c.get_about().map(|a| a.to_string()).unwrap_or_default();
            (c.get_name().to_string(), about)
        })
        .collect();
    let width = verbs.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
    let mut out = String::from("Verbs (`help VERB` or `VERB --help` for details):\n");
    for (name, about) in &verbs {
        out += &format!("  {name:<width$}  {about}\n");
    }
    out += "Console: help [VERB], exit | quit | Ctrl-D. Tab completes verbs, flags and names.\n";
    out += "Words are split like a shell's (quotes, backslashes), but nothing is expanded and no\n";
    out += "shell syntax (| & ; < > ` $ ( ) !) is accepted.\n";
    out
}

/// Make `socket` the default of every `--socket` in the tree (explicit `--socket` still wins;
/// the environment variable no longer does: the console already resolved it).
fn default_socket(cmd: &mut Command, socket: &Path) {
    let taken = std::mem::take(cmd);
    *cmd = taken.mut_args(|a| {
        if a.get_id() == "socket" {
            a.default_value(socket.as_os_str().to_os_string()).env(None)
        } else {
            a
        }
    });
    for sub in cmd.get_subcommands_mut() {
        default_socket(sub, socket);
    }
}

/// Existing names for completion, asked of the daemon each time (it is local and quick, and a
/// name added a moment ago should complete). No socket, or no answer: no names.
fn names_from(socket: Option<PathBuf>) -> complete::Names {
    Box::new(move |kind| {
        let Some(socket) = &socket else {
            return Vec::new();
        };
        let request = match kind {
            NameKind::Database => Request::ListDatabases,
            NameKind::Role => Request::ListRoles,
            NameKind::User => Request::ListUsers,
        };
        match client::call(socket, &request) {
            Ok(Reply::Databases(v)) => v.iter().map(|r| r.name.to_string()).collect(),
            Ok(Reply::Roles(v)) => v.iter().map(|r| r.name.to_string()).collect(),
            Ok(Reply::Users(v)) => v.iter().map(|r| r.name.to_string()).collect(),
            _ => Vec::new(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(console: &mut Console, line: &str) -> Cli {
        let words = std::iter::once("bastion").chain(line.split(' '));
        let m = console.tree.try_get_matches_from_mut(words).unwrap();
        Cli::from_arg_matches(&m).unwrap()
    }

    fn socket_of(cli: Cli) -> Option<PathBuf> {
        match cli.command {
            crate::cli::Command::Db { admin, .. } | crate::cli::Command::Role { admin, .. } => {
                admin.socket
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn the_console_socket_is_every_verbs_default_and_an_explicit_one_wins() {
        let mut console = Console::new(Some(PathBuf::from("/run/x/admin.sock")));
        assert_eq!(
            socket_of(parse(&mut console, "db ls")),
            Some(PathBuf::from("/run/x/admin.sock"))
        );
        assert_eq!(
            socket_of(parse(&mut console, "role rm r")),
            Some(PathBuf::from("/run/x/admin.sock"))
        );
        assert_eq!(
            socket_of(parse(&mut console, "db ls --socket /other")),
            Some(PathBuf::from("/other"))
        );
        let mut plain = Console::new(None);
        // Without a console socket, verbs find theirs as the CLI does (here: no env set by
        // the test runner for this variable).
        if std::env::var_os("BASTION_ADMIN_SOCKET").is_none() {
            assert_eq!(socket_of(parse(&mut plain, "db ls")), None);
        }
    }

    #[test]
    fn refused_and_failed_lines_do_not_end_the_console() {
        let mut console = Console::new(Some(PathBuf::from("/nonexistent/admin.sock")));
        for text in ["sh", "!sh", "serve --dev", "db ls | sh", "db show 'x"] {
            match console.line(text) {
                Outcome::Failed(e) => assert!(e.to_string().starts_with("refused: "), "{e}"),
                _ => panic!("{text:?} was not refused"),
            }
        }
        // A verb whose daemon is not there fails with the socket named, and returns.
        match console.line("db ls") {
            Outcome::Failed(e) => {
                assert!(
                    crate::cli::error_chain(&e).contains("/nonexistent/admin.sock"),
                    "{e:#}"
                )
            }
            _ => panic!("db ls without a daemon did not fail"),
        }
        assert!(matches!(console.line("db frobnicate"), Outcome::Clap(_)));
        // Clap options before the verb do not smuggle an excluded verb past the classifier.
        for text in ["-- serve --dev", "--help serve --dev"] {
            match console.line(text) {
                Outcome::Clap(_) => {}
                Outcome::Failed(e) => assert!(e.to_string().starts_with("refused: "), "{e}"),
                Outcome::Done | Outcome::Exit => panic!("{text:?} ran"),
            }
        }
        assert!(matches!(console.line("exit"), Outcome::Exit));
        assert!(matches!(console.line("help db"), Outcome::Done));
        assert!(matches!(console.line("help serve"), Outcome::Failed(_)));
    }

    #[test]
    fn help_lists_the_console_verbs_only() {
        let mut tree = Cli::command();
        tree.build();
        let text = verb_list(&tree);
        for verb in [
            "db", "role", "user", "status", "import", "export", "cert", "doctor", "secret",
        ] {
            assert!(
                text.contains(&format!("  {verb} ")),
                "{verb} missing:\n{text}"
            );
        }
        for verb in ["serve", "console", "firstboot"] {
            assert!(
                !text.contains(&format!("  {verb} ")),
                "{verb} listed:\n{text}"
            );
        }
    }
}
