//! What one console line is — a bastion verb to run, a console built-in, or refused — decided
//! before anything runs. The verbs come from the clap command tree, so a verb added to the CLI
//! is available in the console without a change here, unless [`NOT_IN_CONSOLE`] names it.
//!
//! Must never: hand a line to a shell, expand anything (variables, globs, `~`, history), or let a
//! line name a program. Words are split like a POSIX shell splits them (quotes, backslashes) and
//! go to clap, nowhere else.

use clap::Command;

/// Verbs of the command tree that the console does not run, and why.
pub const NOT_IN_CONSOLE: &[(&str, &str)] = &[
    (
        "serve",
        "the daemon runs under systemd (bastion.service), not inside a console",
    ),
    ("console", "this is the console already"),
    (
        "firstboot",
        "it rewrites authorized_keys and the import file; bastion-firstboot.service runs it once",
    ),
    (
        "iam-token",
        "it mints IAM auth tokens for any target and db-user: a root-only debugging verb",
    ),
];

/// Characters a shell gives meaning to. The console gives them none, so a line holding one —
/// quoted or not — is refused rather than run with a meaning its author did not expect.
const SHELL_SYNTAX: &[(char, &str)] = &[
    ('!', "shell escapes or history expansion"),
    ('|', "pipes"),
    ('&', "background jobs or `&&`"),
    (';', "command lists"),
    ('<', "redirection"),
    ('>', "redirection"),
    ('`', "command substitution"),
    ('$', "variables or command substitution"),
    ('(', "subshells"),
    (')', "subshells"),
];

/// A line the console accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// Blank, or only a `#` comment.
    Empty,
    /// `exit`, `quit`, `logout`.
    Exit,
    /// `help [VERB [SUBVERB]]` (also `?`).
    Help(Vec<String>),
    /// The words of a bastion verb line, without a leading `bastion`, for clap.
    Run(Vec<String>),
}

/// Why a line was not run. Every message says what the console does instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{found:?}: the console has no {what} (it runs bastion verbs only, no shell)")]
    ShellSyntax { found: char, what: &'static str },
    #[error("control character {0:?}: one command per line, plain text")]
    Control(char),
    #[error("unbalanced quotes or a trailing backslash")]
    Quotes,
    #[error(
        "`{0}` is not a bastion verb: the console runs no programs (type `help` for the verbs)"
    )]
    NotAVerb(String),
    #[error("`{verb}` is not available in the console: {why}")]
    NotInConsole { verb: String, why: &'static str },
}

/// The console built-ins, as completion offers them.
pub const BUILTINS: &[&str] = &["help", "exit", "quit"];

/// Classify `line` against the verbs of `tree` (the CLI's root command).
pub fn classify(line: &str, tree: &Command) -> Result<Line, Refusal> {
    if let Some(c) = line.chars().find(|c| c.is_control() && *c != '\t') {
        return Err(Refusal::Control(c));
    }
    if let Some(&(found, what)) = SHELL_SYNTAX.iter().find(|(c, _)| line.contains(*c)) {
        return Err(Refusal::ShellSyntax { found, what });
    }
    let mut words = shlex::split(line).ok_or(Refusal::Quotes)?;
    // `bastion db ls` as well as `db ls` (what `ssh admin@box bastion db ls` sends). The word is
    // never executed, so a path to the binary is as good as its name.
    if words.first().is_some_and(|w| names_bastion(w)) {
        words.remove(0);
        if words.is_empty() {
            return Ok(Line::Help(Vec::new()));
        }
    }
    let Some(first) = words.first() else {
        return Ok(Line::Empty);
    };
    match first.as_str() {
        "exit" | "quit" | "logout" => return Ok(Line::Exit),
        "help" | "?" => return Ok(Line::Help(words.split_off(1))),
        _ => {}
    }
    // Clap's own top-level options (`--help`, `--version`) select no verb.
    if first.starts_with('-') {
        return Ok(Line::Run(words));
    }
    verb_allowed(first, tree)?;
    Ok(Line::Run(words))
}

/// `Ok` when `verb` is a verb of `tree` that the console runs.
pub fn verb_allowed(verb: &str, tree: &Command) -> Result<(), Refusal> {
    if let Some((_, why)) = NOT_IN_CONSOLE.iter().find(|(v, _)| *v == verb) {
        return Err(Refusal::NotInConsole {
            verb: verb.to_string(),
            why,
        });
    }
    match tree.find_subcommand(verb) {
        // Clap's generated `help` subcommand is answered by the built-in instead.
        Some(cmd) if cmd.get_name() != "help" => Ok(()),
        _ => Err(Refusal::NotAVerb(verb.to_string())),
    }
}

/// The verbs of `tree` the console offers: not hidden, not excluded, not clap's `help`.
pub fn console_verbs(tree: &Command) -> impl Iterator<Item = &Command> {
    tree.get_subcommands()
        .filter(|c| !c.is_hide_set() && verb_allowed(c.get_name(), tree).is_ok())
}

fn names_bastion(word: &str) -> bool {
    std::path::Path::new(word)
        .file_name()
        .is_some_and(|n| n == "bastion")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use proptest::prelude::*;

    fn tree() -> Command {
        crate::cli::Cli::command()
    }

    fn run(words: &[&str]) -> Result<Line, Refusal> {
        Ok(Line::Run(words.iter().map(|w| w.to_string()).collect()))
    }

    #[test]
    fn tricky_lines() {
        use Refusal::*;
        let t = tree();
        let not_a_verb = |w: &str| Err(NotAVerb(w.into()));
        let excluded = |verb: &str| {
            let why = NOT_IN_CONSOLE.iter().find(|(v, _)| *v == verb).unwrap().1;
            Err(NotInConsole {
                verb: verb.into(),
                why,
            })
        };
        let syntax = |found: char| {
            let what = SHELL_SYNTAX.iter().find(|(c, _)| *c == found).unwrap().1;
            Err(ShellSyntax { found, what })
        };
        let cases: Vec<(&str, Result<Line, Refusal>)> = vec![
            ("", Ok(Line::Empty)),
            ("   \t ", Ok(Line::Empty)),
            ("# a comment", Ok(Line::Empty)),
            ("db ls", run(&["db", "ls"])),
            ("  db   ls  ", run(&["db", "ls"])),
            ("bastion db ls", run(&["db", "ls"])),
            ("/usr/bin/bastion db ls", run(&["db", "ls"])),
            ("bastion", Ok(Line::Help(vec![]))),
            (
                "role add 'dev ops' --db-names '*'",
                run(&["role", "add", "dev ops", "--db-names", "*"]),
            ),
            ("db show \"a b\"", run(&["db", "show", "a b"])),
            ("db show a\\ b", run(&["db", "show", "a b"])),
            ("db ls # trailing comment", run(&["db", "ls"])),
            ("--version", run(&["--version"])),
            ("exit", Ok(Line::Exit)),
            ("quit", Ok(Line::Exit)),
            ("logout", Ok(Line::Exit)),
            ("help", Ok(Line::Help(vec![]))),
            (
                "help db add",
                Ok(Line::Help(vec!["db".into(), "add".into()])),
            ),
            ("?", Ok(Line::Help(vec![]))),
            // Shells and programs.
            ("sh", not_a_verb("sh")),
            ("/bin/bash", not_a_verb("/bin/bash")),
            ("bash -i", not_a_verb("bash")),
            ("scp -t /tmp", not_a_verb("scp")),
            (
                "/usr/lib/openssh/sftp-server",
                not_a_verb("/usr/lib/openssh/sftp-server"),
            ),
            ("internal-sftp", not_a_verb("internal-sftp")),
            ("'db' ls", run(&["db", "ls"])),
            ("d\"b\"x", not_a_verb("dbx")),
            ("env sh", not_a_verb("env")),
            ("FOO=1 db ls", not_a_verb("FOO=1")),
            ("exec sh", not_a_verb("exec")),
            ("bastion bastion db ls", not_a_verb("bastion")),
            // Shell syntax, quoted or not.
            ("!sh", syntax('!')),
            ("! sh", syntax('!')),
            ("db ls | sh", syntax('|')),
            ("db ls || sh", syntax('|')),
            ("db ls && sh", syntax('&')),
            ("db ls & sh", syntax('&')),
            ("db ls; sh", syntax(';')),
            ("db ls > /etc/passwd", syntax('>')),
            ("import < /etc/shadow", syntax('<')),
            ("db show $(id)", syntax('$')),
            ("db show `id`", syntax('`')),
            ("db show '`id`'", syntax('`')),
            ("db show \"$HOME\"", syntax('$')),
            ("(sh)", syntax('(')),
            ("db show x)", syntax(')')),
            // Not one plain line.
            ("db ls\nsh", Err(Control('\n'))),
            ("db ls\rsh", Err(Control('\r'))),
            ("db ls\u{1b}[A", Err(Control('\u{1b}'))),
            ("db ls\0", Err(Control('\0'))),
            ("db show 'x", Err(Quotes)),
            ("db show \"x", Err(Quotes)),
            ("db show x\\", Err(Quotes)),
            // Verbs of the tree the console keeps out.
            ("serve --dev", excluded("serve")),
            ("bastion serve", excluded("serve")),
            ("console", excluded("console")),
            ("firstboot", excluded("firstboot")),
            (
                "iam-token --service elasticache --target t --user u",
                excluded("iam-token"),
            ),
        ];
        for (line, want) in cases {
            assert_eq!(classify(line, &t), want, "line {line:?}");
        }
    }

    #[test]
    fn every_verb_of_the_tree_is_offered_unless_excluded() {
        let t = tree();
        let offered: Vec<&str> = console_verbs(&t).map(Command::get_name).collect();
        for sub in t.get_subcommands() {
            let name = sub.get_name();
            let excluded = NOT_IN_CONSOLE.iter().any(|(v, _)| *v == name);
            assert_eq!(offered.contains(&name), !excluded, "verb {name}");
            if !excluded {
                assert_eq!(classify(name, &t), run(&[name]));
            }
        }
        for (verb, _) in NOT_IN_CONSOLE {
            assert!(
                t.find_subcommand(verb).is_some(),
                "NOT_IN_CONSOLE names `{verb}`, which the CLI no longer has"
            );
        }
    }

    proptest! {
        /// Whatever the line, what runs starts with a verb the console allows (or a clap option):
        /// no word from the line reaches anything but clap, and shell syntax never survives.
        #[test]
        fn only_allowed_verbs_run(line in "[ -~\t]{0,40}") {
            let t = tree();
            if let Ok(Line::Run(words)) = classify(&line, &t) {
                let first = &words[0];
                prop_assert!(first.starts_with('-') || verb_allowed(first, &t).is_ok(), "{line:?} → {words:?}");
                for (c, _) in SHELL_SYNTAX {
                    prop_assert!(!line.contains(*c), "{line:?} ran with {c:?}");
                }
            }
        }

        /// Leading blanks change nothing. (Trailing ones can: `x\` is refused, `x\ ` is a word.)
        #[test]
        fn leading_blanks_do_not_change_the_decision(line in "[ -~]{0,40}", pad in "[ \t]{0,3}") {
            let t = tree();
            let padded = format!("{pad}{line}");
            prop_assert_eq!(classify(&line, &t), classify(&padded, &t));
        }
    }
}
