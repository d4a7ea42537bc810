//! `bastion console` against a running daemon: on a real pseudo-terminal (rexpect) for line
//! editing, tab completion of verbs and store names, refusals that leave the console running,
//! `exit` and Ctrl-D; as a login shell (`-bastion`) that job-control signals do not end; and as
//! sshd runs a shell for `ssh admin@host LINE` (`SHELL -c LINE`), with no terminal — including
//! import/export through the verbs' own stdin/stdout, since scp is refused.

mod support;

use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::sys::wait::WaitStatus;
use rexpect::reader::Options;
use rexpect::session::{spawn_with_options, PtySession};
use support::bastion::{Bastion, BASTION_BIN};
use support::process::{closed_addr, is_root, run, Out};
use tempfile::TempDir;

/// Hang guard for every expectation on the terminal (never a speed assertion).
const PTY_LIMIT_MS: u64 = 30_000;

/// A daemon with two databases, a role and a user in its store, and its admin socket.
struct Daemon {
    _bastion: Bastion,
    socket: PathBuf,
    _dirs: [TempDir; 2],
}

impl Daemon {
    fn start() -> Daemon {
        let state = tempfile::Builder::new()
            .prefix("bastion-console-state-")
            .tempdir()
            .expect("state dir");
        let run_dir = tempfile::Builder::new()
            .prefix("bastion-console-run-")
            .tempdir()
            .expect("run dir");
        let socket = run_dir.path().join("admin.sock");
        let s = |p: &Path| toml::Value::String(p.display().to_string()).to_string();
        // Not root: the admin socket admits the test user's own group.
        let group = if is_root() {
            String::new()
        } else {
            let gid = nix::unistd::getegid();
            let g = nix::unistd::Group::from_gid(gid)
                .ok()
                .flatten()
                .expect("the test user's primary group has a name");
            format!("group = {}\n", toml::Value::String(g.name))
        };
        let config = format!(
            r#"state_dir = {state}

[listeners.unix]
directory = {db_dir}

[admin]
socket = {socket}
{group}
[[databases]]
name = "plaindb"
address = "{down}"
auth = {{ mode = "none" }}

[[databases]]
name = "cache"
address = "{down}"
auth = {{ mode = "none" }}

[[roles]]
name = "apps"
db_users = ["app"]
db_names = ["*"]

[[users]]
name = "alice"
roles = ["apps"]
"#,
            state = s(state.path()),
            db_dir = s(&run_dir.path().join("db")),
            socket = s(&socket),
            down = closed_addr(),
        );
        let bastion = Bastion::start(&config, state.path());
        Daemon {
            _bastion: bastion,
            socket,
            _dirs: [state, run_dir],
        }
    }

    /// `bastion ARGS` as sshd would run the login shell: argv[0] `argv0`, no terminal, the
    /// admin socket from the environment.
    fn shell(&self, argv0: &str, args: &[&str]) -> Out {
        self.shell_with_input(argv0, args, None)
    }

    fn shell_with_input(&self, argv0: &str, args: &[&str], stdin: Option<&[u8]>) -> Out {
        run(
            Command::new(BASTION_BIN)
                .arg0(argv0)
                .args(args)
                .env("BASTION_ADMIN_SOCKET", &self.socket),
            stdin,
            Duration::from_secs(60),
        )
    }
}

/// `bastion` with argv[0] `argv0` and `args` on a new pseudo-terminal, HOME in `home`.
fn on_pty(argv0: &str, args: &[&str], socket: &Path, home: &Path) -> PtySession {
    let mut cmd = Command::new(BASTION_BIN);
    cmd.arg0(argv0)
        .args(args)
        .env("TERM", "xterm")
        .env("HOME", home)
        .env_remove("XDG_STATE_HOME")
        .env("BASTION_ADMIN_SOCKET", socket);
    spawn_with_options(
        cmd,
        Options::new()
            .timeout_ms(Some(PTY_LIMIT_MS))
            .strip_ansi_escape_codes(true),
    )
    .expect("spawn bastion on a pty")
}

/// What the console printed up to `needle`, or a panic naming what was expected.
#[track_caller]
fn expect(p: &mut PtySession, needle: &str) -> String {
    p.exp_string(needle)
        .unwrap_or_else(|e| panic!("the console never printed {needle:?}: {e}"))
}

/// Send `line` + Enter and wait for the next prompt; returns what came between.
#[track_caller]
fn line(p: &mut PtySession, line: &str) -> String {
    p.send(line).expect("write to the pty");
    p.send("\r").expect("write to the pty");
    p.flush().expect("flush the pty");
    expect(p, "bastion> ")
}

#[track_caller]
fn exited_with(p: &mut PtySession) -> i32 {
    p.exp_eof().expect("the console did not end");
    match p.process().wait().expect("wait for the console") {
        WaitStatus::Exited(_, code) => code,
        other => panic!("the console ended with {other:?}"),
    }
}

#[test]
fn interactive_console_completes_runs_refuses_and_exits() {
    let daemon = Daemon::start();
    let home = tempfile::tempdir().expect("home");
    let mut p = on_pty("bastion", &["console"], &daemon.socket, home.path());
    expect(&mut p, "bastion> ");

    // A verb completed from the clap tree, then run: `ro<TAB>` becomes `role `.
    p.send("ro\t").unwrap();
    p.flush().unwrap();
    expect(&mut p, "role ");
    let out = line(&mut p, "ls");
    assert!(
        out.contains("DB users") && out.contains("apps"),
        "role ls printed:\n{out}"
    );

    // A database name completed from the store (asked of the daemon): `pl<TAB>` → `plaindb`.
    p.send("db show pl\t").unwrap();
    p.flush().unwrap();
    expect(&mut p, "plaindb ");
    let out = line(&mut p, "");
    assert!(
        out.contains("name             plaindb"),
        "db show printed:\n{out}"
    );

    // `help` lists the verbs the console runs, not the ones it refuses.
    let out = line(&mut p, "help");
    assert!(
        out.contains("  db ") && out.contains("  status "),
        "help printed:\n{out}"
    );
    assert!(!out.contains("  serve "), "help offers serve:\n{out}");

    // A verb prints its table.
    let out = line(&mut p, "db ls");
    for want in ["Name", "Address", "Default DB user", "plaindb", "cache"] {
        assert!(out.contains(want), "db ls lacks {want:?}:\n{out}");
    }

    // Shells, shell syntax and excluded verbs are refused, and the console carries on.
    for (text, why) in [
        ("!sh", "no shell escapes"),
        ("sh", "`sh` is not a bastion verb"),
        ("/bin/bash -i", "`/bin/bash` is not a bastion verb"),
        ("serve --dev", "`serve` is not available in the console"),
        ("console", "`console` is not available in the console"),
        ("db show $(id)", "no variables or command substitution"),
        ("db show `id`", "no command substitution"),
        ("db ls | sh", "no pipes"),
    ] {
        let out = line(&mut p, text);
        assert!(
            out.contains("refused") && out.contains(why),
            "{text:?} was not refused with {why:?}:\n{out}"
        );
    }
    // A failing verb prints its error and the console carries on.
    let out = line(&mut p, "db show nosuch");
    assert!(out.contains("no database named 'nosuch'"), "{out}");
    // A usage error (here a flag carrying a would-be secret) is clap's message, not the end.
    let out = line(&mut p, "db add x --password hunter2-secret");
    assert!(out.contains("unexpected argument '--password'"), "{out}");
    // Still alive and talking to the daemon after all that.
    let out = line(&mut p, "db ls");
    assert!(out.contains("plaindb"), "db ls after the refusals:\n{out}");

    p.send("exit\r").unwrap();
    p.flush().unwrap();
    assert_eq!(
        exited_with(&mut p),
        0,
        "exit must end the console with status 0"
    );

    // History: a private file, with the verb lines and without the line holding a secret.
    let file = home.path().join(".local/state/bastion/console_history");
    let mode = std::fs::metadata(&file)
        .unwrap_or_else(|e| panic!("no history file {}: {e}", file.display()))
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "history file mode {mode:o}");
    let history = std::fs::read_to_string(&file).unwrap();
    assert!(
        history.contains("db ls") && history.contains("role ls"),
        "{history}"
    );
    assert!(
        !history.contains("hunter2"),
        "a secret reached the history:\n{history}"
    );
}

#[test]
fn login_shell_argv0_starts_the_console_and_ctrl_d_leaves() {
    let daemon = Daemon::start();
    let home = tempfile::tempdir().expect("home");
    // As sshd / login start a login shell: argv[0] `-bastion`, no arguments.
    let mut p = on_pty("-bastion", &[], &daemon.socket, home.path());
    expect(&mut p, "bastion> ");
    let out = line(&mut p, "user ls");
    assert!(out.contains("alice"), "user ls printed:\n{out}");
    let out = line(&mut p, "sh");
    assert!(out.contains("refused"), "{out}");
    // Ctrl-C abandons the line being typed.
    p.send("db sh").unwrap();
    p.send_control('c').unwrap();
    expect(&mut p, "bastion> ");
    // The job-control signals a cooked terminal sends while a verb runs neither end nor stop
    // the login shell (delivered here with kill(2), as the tty driver would).
    for signal in [Signal::SIGINT, Signal::SIGQUIT, Signal::SIGTSTP] {
        p.process_mut().signal(signal).expect("signal the console");
    }
    // A signal that lands while the line editor waits redraws the prompt, so how many prompts
    // come before the verb's output varies: wait for the output itself, then its prompt.
    p.send("db ls\r").expect("write to the pty");
    p.flush().expect("flush the pty");
    expect(&mut p, "plaindb");
    expect(&mut p, "bastion> ");
    p.send_control('d').unwrap();
    assert_eq!(
        exited_with(&mut p),
        0,
        "Ctrl-D must end the console with status 0"
    );
}

#[test]
fn shell_c_runs_one_bastion_verb_line_and_refuses_anything_else() {
    let daemon = Daemon::start();
    // sshd runs `SHELL -c LINE` with argv[0] the shell's name; a login shell's `-name` too.
    for argv0 in ["bastion", "-bastion", "/usr/local/bin/bastion"] {
        for text in ["db ls", "bastion db ls"] {
            let out = daemon.shell(argv0, &["-c", text]);
            out.assert_success();
            assert!(
                out.stdout().contains("plaindb"),
                "{argv0} -c {text:?}:\n{out}"
            );
        }
    }
    // Nothing but a verb line runs: no shell, no program, no scp/sftp, no chaining.
    let scratch = tempfile::tempdir().unwrap();
    let marker = scratch.path().join("ran");
    let touch = format!("db ls; touch {}", marker.display());
    let touch_sub = format!("db show $(touch {})", marker.display());
    for text in [
        "sh",
        "/bin/bash",
        "bash -c id",
        "scp -t /tmp",
        "/usr/lib/openssh/sftp-server",
        "internal-sftp",
        "serve --dev",
        "console",
        touch.as_str(),
        touch_sub.as_str(),
        "db ls\nsh",
    ] {
        let out = daemon.shell("bastion", &["-c", text]);
        assert!(!out.status.success(), "-c {text:?} was not refused:\n{out}");
        assert!(
            out.stderr().contains("refused"),
            "-c {text:?} did not say why:\n{out}"
        );
        assert!(!marker.exists(), "-c {text:?} ran a program");
    }
    // A verb that fails exits non-zero too; a usage error with clap's status 2.
    let out = daemon.shell("bastion", &["-c", "db show nosuch"]);
    assert_eq!(out.status.code(), Some(1), "{out}");
    let out = daemon.shell("bastion", &["-c", "db frobnicate"]);
    assert_eq!(out.status.code(), Some(2), "{out}");
}

#[test]
fn files_travel_over_ssh_as_verb_input_and_output() {
    let daemon = Daemon::start();
    // `ssh admin@host bastion import /dev/stdin < ops.toml`: sshd gives the line to `-c`.
    let declared = b"[[roles]]\nname = \"ops\"\ndb_users = [\"app\"]\ndb_names = [\"plaindb\"]\n";
    daemon
        .shell_with_input(
            "bastion",
            &["-c", "bastion import /dev/stdin"],
            Some(declared),
        )
        .assert_success();
    // `ssh admin@host bastion export > catalog.toml`.
    let out = daemon.shell("bastion", &["-c", "bastion export"]);
    out.assert_success();
    let exported = out.stdout();
    assert!(
        exported.contains("name = \"ops\"") && exported.contains("name = \"plaindb\""),
        "export lacks the imported role or a database:\n{exported}"
    );
}
