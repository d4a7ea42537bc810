//! Tab completion for the console, read off the clap command tree (verbs, sub-verbs, flags,
//! enum values) plus the names of databases, roles and users asked of the daemon.
//!
//! Must never: print while completing (a daemon that does not answer means no name candidates),
//! or offer a verb the console would refuse.

use clap::{Arg, Command};
use rustyline::completion::{Completer, Pair};
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::Validator;
use rustyline::Helper;

use super::line::{console_verbs, BUILTINS};

/// What a name argument names, when completion can ask the daemon for the existing ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    Database,
    Role,
    User,
}

/// Where existing names come from (the admin socket, or a list in tests).
pub type Names = Box<dyn Fn(NameKind) -> Vec<String>>;

/// The console's rustyline helper: completion only (no hints, colours or multi-line input).
pub struct Completion {
    tree: Command,
    names: Names,
}

impl Completion {
    /// `tree` must be built ([`Command::build`]) so global flags show on every sub-verb.
    pub fn new(tree: Command, names: Names) -> Completion {
        Completion { tree, names }
    }

    /// Where the word under the cursor starts, and what could replace it (each ending in a
    /// blank, so a unique candidate moves on to the next word).
    pub fn candidates(&self, before_cursor: &str) -> (usize, Vec<String>) {
        let start = before_cursor.rfind([' ', '\t']).map_or(0, |i| i + 1);
        let current = &before_cursor[start..];
        let Some(mut done) = shlex::split(&before_cursor[..start]) else {
            return (start, Vec::new());
        };
        if done.first().is_some_and(|w| w == "bastion") {
            done.remove(0);
        }
        let (offset, words) = match done.first().map(String::as_str) {
            None => (0, self.top_level()),
            Some("help" | "?") => (0, self.help_words(&done[1..])),
            Some(_) => self.in_verb(&done, current),
        };
        let mut out: Vec<String> = words
            .into_iter()
            .filter(|w| w.starts_with(&current[offset..]))
            .map(|w| format!("{w} "))
            .collect();
        out.sort();
        out.dedup();
        (start + offset, out)
    }

    fn top_level(&self) -> Vec<String> {
        console_verbs(&self.tree)
            .map(|c| c.get_name().to_string())
            .chain(BUILTINS.iter().map(|b| b.to_string()))
            .collect()
    }

    /// `help VERB SUBVERB`: verbs, then the sub-verbs of what is typed so far.
    fn help_words(&self, path: &[String]) -> Vec<String> {
        let Some((verb, rest)) = path.split_first() else {
            return console_verbs(&self.tree)
                .map(|c| c.get_name().to_string())
                .collect();
        };
        let mut cmd = match console_verbs(&self.tree).find(|c| c.get_name() == verb) {
            Some(c) => c,
            None => return Vec::new(),
        };
        for w in rest {
            match cmd.find_subcommand(w) {
                Some(sub) => cmd = sub,
                None => return Vec::new(),
            }
        }
        sub_verbs(cmd)
    }

    /// Inside a verb line: walk the typed words down the tree, then offer what may come next.
    /// Returns where, inside the current word, the candidates start (after `--flag=` or the
    /// last `,` of a list value).
    fn in_verb(&self, done: &[String], current: &str) -> (usize, Vec<String>) {
        let Some(mut cmd) = console_verbs(&self.tree).find(|c| c.get_name() == done[0]) else {
            return (0, Vec::new());
        };
        let verb = cmd.get_name().to_string();
        let mut positional = 0;
        let mut awaiting: Option<&Arg> = None;
        for w in &done[1..] {
            if awaiting.take().is_some() {
                continue;
            }
            if let Some(long) = w.strip_prefix("--") {
                if !long.contains('=') {
                    awaiting = find_long(cmd, long).filter(|a| takes_value(a));
                }
            } else if let Some(short) = w.strip_prefix('-').filter(|s| s.chars().count() == 1) {
                awaiting = short
                    .chars()
                    .next()
                    .and_then(|c| cmd.get_arguments().find(|a| a.get_short() == Some(c)))
                    .filter(|a| takes_value(a));
            } else if let Some(sub) = cmd.find_subcommand(w) {
                cmd = sub;
                positional = 0;
            } else {
                positional += 1;
            }
        }
        if let Some(arg) = awaiting {
            return self.values(&verb, arg, current, 0);
        }
        if let Some(long) = current.strip_prefix("--") {
            if let Some((name, _)) = long.split_once('=') {
                return match find_long(cmd, name) {
                    Some(arg) => self.values(&verb, arg, current, 2 + name.len() + 1),
                    None => (0, Vec::new()),
                };
            }
        }
        if current.starts_with('-') {
            let flags = cmd
                .get_arguments()
                .filter(|a| !a.is_hide_set())
                .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
                .collect();
            return (0, flags);
        }
        if cmd.has_subcommands() {
            return (0, sub_verbs(cmd));
        }
        let positionals: Vec<&Arg> = cmd.get_positionals().collect();
        match positionals.get(positional).or(positionals
            .last()
            .filter(|a| a.get_num_args().is_some_and(|n| n.max_values() > 1)))
        {
            Some(arg) => self.values(&verb, arg, current, 0),
            None => (0, Vec::new()),
        }
    }

    /// Values of `arg` for the word `current`, whose value starts at `from`; a list value
    /// (`--roles a,b`) is completed after its last comma.
    fn values(&self, verb: &str, arg: &Arg, current: &str, from: usize) -> (usize, Vec<String>) {
        let from = match arg.get_value_delimiter() {
            Some(d) => current[from..]
                .rfind(d)
                .map_or(from, |i| from + i + d.len_utf8()),
            None => from,
        };
        let enumerated: Vec<String> = arg
            .get_possible_values()
            .iter()
            .filter(|v| !v.is_hide_set())
            .map(|v| v.get_name().to_string())
            .collect();
        if !enumerated.is_empty() {
            return (from, enumerated);
        }
        match name_kind(verb, arg) {
            Some(kind) => (from, (self.names)(kind)),
            None => (from, Vec::new()),
        }
    }
}

/// Which store names an argument takes, by its id (and for a bare `name`, by the verb).
fn name_kind(verb: &str, arg: &Arg) -> Option<NameKind> {
    match arg.get_id().as_str() {
        "db_names" | "database" | "databases" | "db" => Some(NameKind::Database),
        "roles" | "role" => Some(NameKind::Role),
        "user" | "users" => Some(NameKind::User),
        "name" => match verb {
            "db" => Some(NameKind::Database),
            "role" => Some(NameKind::Role),
            "user" => Some(NameKind::User),
            _ => None,
        },
        _ => None,
    }
}

fn sub_verbs(cmd: &Command) -> Vec<String> {
    cmd.get_subcommands()
        .filter(|c| !c.is_hide_set() && c.get_name() != "help")
        .map(|c| c.get_name().to_string())
        .collect()
}

fn find_long<'a>(cmd: &'a Command, long: &str) -> Option<&'a Arg> {
    cmd.get_arguments().find(|a| a.get_long() == Some(long))
}

fn takes_value(arg: &Arg) -> bool {
    arg.get_action().takes_values()
}

impl Completer for Completion {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &rustyline::Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let (start, words) = self.candidates(&line[..pos]);
        let pairs = words
            .into_iter()
            .map(|w| Pair {
                display: w.trim_end().to_string(),
                replacement: w,
            })
            .collect();
        Ok((start, pairs))
    }
}

impl Hinter for Completion {
    type Hint = String;
}
impl Highlighter for Completion {}
impl Validator for Completion {}
impl Helper for Completion {}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn completion() -> Completion {
        let mut tree = crate::cli::Cli::command();
        tree.build();
        Completion::new(
            tree,
            Box::new(|kind| {
                match kind {
                    NameKind::Database => vec!["cache", "plaindb", "prod-eu"],
                    NameKind::Role => vec!["apps", "admins"],
                    NameKind::User => vec!["alice", "bob"],
                }
                .into_iter()
                .map(String::from)
                .collect()
            }),
        )
    }

    fn words(line: &str) -> Vec<String> {
        completion().candidates(line).1
    }

    #[test]
    fn verbs_subverbs_and_flags_come_from_the_clap_tree() {
        assert_eq!(words("ro"), ["role "]);
        assert_eq!(words("bastion ro"), ["role "]);
        assert_eq!(words("d"), ["db ", "doctor "]);
        assert_eq!(words("q"), ["quit "]);
        // Verbs the console refuses are never offered.
        assert!(
            !words("se").contains(&"serve ".to_string()),
            "{:?}",
            words("se")
        );
        assert!(words("")
            .iter()
            .all(|w| w != "console " && w != "firstboot "));
        assert_eq!(words("db "), ["add ", "ls ", "rm ", "show "]);
        assert_eq!(words("db r"), ["rm "]);
        assert_eq!(
            words("db add x --pass"),
            ["--password-env ", "--password-file "]
        );
        // Global flags of the verb reach its sub-verbs.
        assert_eq!(words("db ls --so"), ["--socket "]);
        assert_eq!(words("help d"), ["db ", "doctor "]);
        assert_eq!(words("help role "), ["add ", "ls ", "rm "]);
    }

    #[test]
    fn flag_values_come_from_value_enums() {
        assert_eq!(
            words("db add x --auth "),
            ["iam ", "managed ", "none ", "password "]
        );
        assert_eq!(words("db add x --auth=p"), ["password "]);
        assert_eq!(
            completion().candidates("db add x --auth=p").0,
            "db add x --auth=".len()
        );
        // Verbs the console does not run complete nothing.
        assert_eq!(words("iam-token --service m"), Vec::<String>::new());
    }

    #[test]
    fn names_come_from_the_store() {
        assert_eq!(words("db show pl"), ["plaindb "]);
        assert_eq!(words("db rm "), ["cache ", "plaindb ", "prod-eu "]);
        assert_eq!(words("role rm ad"), ["admins "]);
        assert_eq!(words("user rm b"), ["bob "]);
        assert_eq!(words("user add carol --roles a"), ["admins ", "apps "]);
        let (start, w) = completion().candidates("user add carol --roles apps,ad");
        assert_eq!(
            (start, w),
            (
                "user add carol --roles apps,".len(),
                vec!["admins ".to_string()]
            )
        );
        assert_eq!(words("role add r --db-names p"), ["plaindb ", "prod-eu "]);
        assert_eq!(words("cert issue a"), ["alice "]);
        // A value that is not a store name gets no candidates.
        assert!(words("db add x --address ").is_empty());
        assert!(words("user add carol --unix-user ").is_empty());
    }

    #[test]
    fn the_word_under_the_cursor_starts_after_the_last_blank() {
        assert_eq!(completion().candidates("db show pl").0, "db show ".len());
        assert_eq!(completion().candidates("ro").0, 0);
        // An open quote before the cursor: nothing to offer rather than a guess.
        assert!(words("db show 'a b").is_empty());
    }
}
