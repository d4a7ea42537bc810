//! The console as a login shell: how `login`, `su -` and sshd start a user's shell, turned into
//! `bastion console` command lines.
//!
//! - `login`, `su -` and sshd (interactive) run the shell with argv[0] = `-` + its file name
//!   (`-bastion`): that is `bastion console`.
//! - sshd runs `SHELL -c "LINE"` for `ssh admin@host LINE`, scp (`scp -t …`) and the sftp
//!   subsystem (`…/sftp-server`); `su -c` does the same: that is `bastion console -c LINE`,
//!   which runs LINE only if it is one bastion verb line.
//!
//! Must never: let an argv that a login program built reach any verb but `console`.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt as _;

/// The name of the appliance's login-shell link to the binary (`/usr/bin/bastion-console`).
pub const CONSOLE_LINK: &str = "bastion-console";

/// The command line as clap should parse it.
pub fn argv(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    let mut args: Vec<OsString> = args.into_iter().collect();
    // `-NAME` (login, sshd), or the appliance's `bastion-console` link started as a plain shell
    // (`su admin`): both are the console.
    let login = args.first().is_some_and(|argv0| {
        argv0.as_bytes().first() == Some(&b'-')
            || std::path::Path::new(argv0).file_name() == Some(OsStr::new(CONSOLE_LINK))
    });
    let shell_c = args.get(1).is_some_and(|a| a == "-c");
    if !(login || shell_c) {
        return args;
    }
    // Not empty: a login argv0 or a `-c` at argv[1] was found.
    let rest = args.split_off(1);
    ["bastion", "console"]
        .into_iter()
        .map(OsString::from)
        .chain(rest)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv_of(args: &[&str]) -> Vec<String> {
        argv(args.iter().map(OsString::from))
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    #[test]
    fn login_shells_and_shell_c_become_the_console() {
        assert_eq!(argv_of(&["-bastion"]), ["bastion", "console"]);
        assert_eq!(argv_of(&["-console"]), ["bastion", "console"]);
        assert_eq!(argv_of(&["-bastion-console"]), ["bastion", "console"]);
        assert_eq!(
            argv_of(&["/usr/bin/bastion-console"]),
            ["bastion", "console"]
        );
        assert_eq!(
            argv_of(&["bastion-console", "-c", "db ls"]),
            ["bastion", "console", "-c", "db ls"]
        );
        assert_eq!(
            argv_of(&["bastion", "-c", "db ls"]),
            ["bastion", "console", "-c", "db ls"]
        );
        assert_eq!(
            argv_of(&["-bastion", "-c", "sh"]),
            ["bastion", "console", "-c", "sh"]
        );
        assert_eq!(
            argv_of(&["/usr/local/bin/bastion", "-c", "scp -t /tmp"]),
            ["bastion", "console", "-c", "scp -t /tmp"]
        );
        // A login argv can select no other verb: its words are the console's arguments.
        assert_eq!(
            argv_of(&["-bastion", "serve"]),
            ["bastion", "console", "serve"]
        );
    }

    #[test]
    fn ordinary_command_lines_are_untouched() {
        assert_eq!(argv_of(&["bastion", "db", "ls"]), ["bastion", "db", "ls"]);
        assert_eq!(
            argv_of(&["/usr/bin/bastion", "console"]),
            ["/usr/bin/bastion", "console"]
        );
        assert_eq!(argv_of(&["bastion", "db", "-c"]), ["bastion", "db", "-c"]);
        assert!(argv_of(&[]).is_empty());
    }
}
