//! The daemon's side of `Type=notify`, played by the test as the service manager: a Unix
//! datagram socket named by `NOTIFY_SOCKET`.
//!
//! - READY=1 arrives only once every listener accepts: the test connects to the TLS port and
//!   the Unix socket the moment READY=1 is read, with no retry.
//! - READY=1 carries a STATUS= line (sessions, credential source), refreshed periodically.
//! - With `WATCHDOG_USEC` (and `WATCHDOG_PID` naming the daemon) WATCHDOG=1 pings arrive at half
//!   the interval; with a `WATCHDOG_PID` naming another process, none do.
//! - SIGHUP (`ExecReload=`) is logged and survived; SIGTERM sends STOPPING=1.
//! - A reload is bracketed by RELOADING=1 (with MONOTONIC_USEC=) and READY=1; a failed one
//!   still ends with READY=1, and STATUS= says it failed and why until a reload works.

mod support;

use std::net::TcpStream;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use support::process::{closed_addr, free_ports};

const BASTION_BIN: &str = env!("CARGO_BIN_EXE_bastion");
/// Hang guard for READY=1 (start-up includes creating the CA).
const READY_LIMIT: Duration = Duration::from_secs(30);

struct Daemon {
    child: Child,
    notify: UnixDatagram,
    tls_port: u16,
    socket: PathBuf,
    log: PathBuf,
    config_path: PathBuf,
    config: String,
    _dir: tempfile::TempDir,
}

impl Daemon {
    /// Start `bastion serve` with `NOTIFY_SOCKET` on a socket the test owns. `watchdog`:
    /// `WATCHDOG_USEC` and whether `WATCHDOG_PID` names the daemon (`true`) or PID 1.
    fn start(watchdog: Option<(Duration, bool)>) -> Daemon {
        let dir = tempfile::tempdir().expect("temp dir");
        let notify_path = dir.path().join("notify.sock");
        let notify = UnixDatagram::bind(&notify_path).expect("bind the notify socket");
        let tls_port = free_ports(1)[0];
        let config = format!(
            r#"
state_dir = "{state}"
[[listeners.tcp]]
address = "127.0.0.1:{tls_port}"
default_database = "local"
[listeners.unix]
directory = "{sockets}"
mode = "0600"
[[databases]]
name = "local"
address = "{upstream}"
auth = {{ mode = "none" }}
"#,
            state = dir.path().join("state").display(),
            sockets = dir.path().join("run").display(),
            upstream = closed_addr(),
        );
        let config_path = dir.path().join("bastion.toml");
        std::fs::write(&config_path, &config).expect("write config");
        let log = dir.path().join("bastion.log");

        // `exec` keeps the shell's pid, so `$$` is the daemon's pid, as systemd sets it.
        let mut cmd = Command::new("sh");
        cmd.arg("-c");
        match watchdog {
            Some((_, true)) => cmd.arg("WATCHDOG_PID=$$ exec \"$0\" \"$@\""),
            _ => cmd.arg("exec \"$0\" \"$@\""),
        };
        cmd.arg(BASTION_BIN)
            .args(["serve", "--config"])
            .arg(&config_path)
            .env("NOTIFY_SOCKET", &notify_path)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env_remove("WATCHDOG_PID")
            .env_remove("WATCHDOG_USEC")
            .env_remove("JOURNAL_STREAM")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"));
        if let Some((usec, mine)) = watchdog {
            cmd.env("WATCHDOG_USEC", usec.as_micros().to_string());
            if !mine {
                cmd.env("WATCHDOG_PID", "1");
            }
        }
        let child = cmd.spawn().expect("start bastion");
        Daemon {
            child,
            notify,
            tls_port,
            socket: dir.path().join("run/local.sock"),
            log,
            config_path,
            config,
            _dir: dir,
        }
    }

    /// The next notify datagram, or `None` after `limit`.
    fn next(&self, limit: Duration) -> Option<String> {
        self.notify
            .set_read_timeout(Some(limit))
            .expect("set read timeout");
        let mut buf = [0u8; 4096];
        match self.notify.recv(&mut buf) {
            Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(_) => None,
        }
    }

    /// Datagrams until one satisfies `want`, within `limit`; all of them are returned.
    fn until(&self, limit: Duration, want: impl Fn(&str) -> bool) -> (Vec<String>, bool) {
        let deadline = Instant::now() + limit;
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let Some(msg) = self.next(left.max(Duration::from_millis(1))) else {
                break;
            };
            let done = want(&msg);
            seen.push(msg);
            if done {
                return (seen, true);
            }
        }
        (seen, false)
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- bastion output\n{}", self.logs());
        }
    }
}

fn has_line(msg: &str, line: &str) -> bool {
    msg.lines().any(|l| l == line)
}

fn status_of(msg: &str) -> Option<&str> {
    msg.lines().find_map(|l| l.strip_prefix("STATUS="))
}

#[test]
fn ready_only_after_listeners_accept_then_watchdog_status_reload_and_stop() {
    let mut d = Daemon::start(Some((Duration::from_millis(300), true)));

    let (before, ready) = d.until(READY_LIMIT, |m| has_line(m, "READY=1"));
    assert!(
        ready,
        "no READY=1 within {READY_LIMIT:?}; got {before:?}\n{}",
        d.logs()
    );
    let ready_msg = before.last().expect("the READY datagram").clone();

    // The moment READY=1 is read, both listeners must accept (no retry).
    TcpStream::connect(("127.0.0.1", d.tls_port))
        .unwrap_or_else(|e| panic!("TLS listener not accepting at READY=1: {e}"));
    UnixStream::connect(&d.socket).unwrap_or_else(|e| {
        panic!(
            "Unix listener {} not accepting at READY=1: {e}",
            d.socket.display()
        )
    });
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&d.socket)
            .expect("socket metadata")
            .permissions(),
    ) & 0o777;
    assert_eq!(mode, 0o600, "socket mode at READY=1 is the configured one");

    let status = status_of(&ready_msg).expect("READY=1 carries STATUS=");
    assert!(
        status.contains("sessions: 0 open") && status.contains("credentials:"),
        "{status}"
    );

    // WATCHDOG_USEC=300ms: pings every ~150ms. Count them over ~1.2s (hang guard, not timing).
    let start = Instant::now();
    let mut pings = 0;
    while start.elapsed() < Duration::from_millis(1200) {
        if let Some(m) = d.next(Duration::from_millis(500)) {
            if has_line(&m, "WATCHDOG=1") {
                pings += 1;
            }
        }
    }
    assert!(pings >= 3, "expected WATCHDOG=1 pings, got {pings}");

    // ExecReload: SIGHUP must not kill the daemon.
    kill(d.pid(), Signal::SIGHUP).expect("send SIGHUP");
    let logged = support::process::poll(Duration::from_secs(10), || {
        d.logs().contains("reload requested").then_some(())
    });
    assert!(logged.is_some(), "no `reload requested` log line");
    assert!(d.alive(), "SIGHUP killed the daemon");

    // The periodic STATUS= (every 10s) counts the two connections made above.
    let (seen, refreshed) = d.until(Duration::from_secs(20), |m| {
        status_of(m).is_some()
            && !has_line(m, "READY=1")
            && !has_line(m, "RELOADING=1")
            && !has_line(m, "STOPPING=1")
    });
    assert!(refreshed, "no periodic STATUS= line; got {seen:?}");
    let status = status_of(seen.last().unwrap()).unwrap().to_string();
    assert!(status.contains("2 since start"), "{status}");

    // SIGTERM: STOPPING=1 before exit.
    kill(d.pid(), Signal::SIGTERM).expect("send SIGTERM");
    let (seen, stopping) = d.until(Duration::from_secs(10), |m| has_line(m, "STOPPING=1"));
    assert!(stopping, "no STOPPING=1 after SIGTERM; got {seen:?}");
}

#[test]
fn a_reload_is_bracketed_by_reloading_and_ready_and_a_failure_shows_in_status() {
    let mut d = Daemon::start(None);
    let (seen, ready) = d.until(READY_LIMIT, |m| has_line(m, "READY=1"));
    assert!(ready, "no READY=1; got {seen:?}\n{}", d.logs());

    // A good reload: RELOADING=1 (with MONOTONIC_USEC=), then READY=1.
    kill(d.pid(), Signal::SIGHUP).expect("send SIGHUP");
    let (seen, ready) = d.until(Duration::from_secs(20), |m| has_line(m, "READY=1"));
    assert!(
        ready,
        "no READY=1 after the reload; got {seen:?}\n{}",
        d.logs()
    );
    let reloading = seen
        .iter()
        .position(|m| has_line(m, "RELOADING=1"))
        .unwrap_or_else(|| panic!("no RELOADING=1 before READY=1: {seen:?}"));
    assert!(
        seen[reloading]
            .lines()
            .any(|l| l.starts_with("MONOTONIC_USEC=")),
        "RELOADING=1 without MONOTONIC_USEC=: {seen:?}"
    );
    let status = status_of(seen.last().unwrap()).expect("READY=1 carries STATUS=");
    assert!(!status.contains("reload failed"), "{status}");

    // A broken config: still READY=1 (the daemon serves on), and STATUS= names the key.
    std::fs::write(
        &d.config_path,
        format!("{}\n[limits]\nmax_sessions = 0\n", d.config),
    )
    .expect("write the broken config");
    kill(d.pid(), Signal::SIGHUP).expect("send SIGHUP");
    let (seen, ready) = d.until(Duration::from_secs(20), |m| has_line(m, "READY=1"));
    assert!(
        ready,
        "no READY=1 after a failed reload; got {seen:?}\n{}",
        d.logs()
    );
    assert!(seen.iter().any(|m| has_line(m, "RELOADING=1")), "{seen:?}");
    let status = status_of(seen.last().unwrap()).expect("READY=1 carries STATUS=");
    assert!(
        status.contains("reload failed") && status.contains("limits.max_sessions"),
        "{status}"
    );
    assert!(d.alive(), "a failed reload stopped the daemon");
    TcpStream::connect(("127.0.0.1", d.tls_port)).expect("still accepting after a failed reload");
    assert!(d.logs().contains("reload failed"), "{}", d.logs());

    // Fixed: the next reload clears the failure from STATUS=.
    std::fs::write(&d.config_path, &d.config).expect("write the config back");
    kill(d.pid(), Signal::SIGHUP).expect("send SIGHUP");
    let (seen, ready) = d.until(Duration::from_secs(20), |m| has_line(m, "READY=1"));
    assert!(ready, "no READY=1; got {seen:?}");
    let status = status_of(seen.last().unwrap()).expect("READY=1 carries STATUS=");
    assert!(!status.contains("reload failed"), "{status}");
}

#[test]
fn no_watchdog_pings_when_watchdog_pid_is_another_process() {
    let d = Daemon::start(Some((Duration::from_millis(100), false)));
    let (seen, ready) = d.until(READY_LIMIT, |m| has_line(m, "READY=1"));
    assert!(ready, "no READY=1; got {seen:?}\n{}", d.logs());
    // Pings would come every 50ms; none may arrive in half a second.
    let (seen, pinged) = d.until(Duration::from_millis(500), |m| has_line(m, "WATCHDOG=1"));
    assert!(!pinged, "pinged for another process's watchdog: {seen:?}");
}

#[test]
fn serves_without_notify_socket() {
    // No NOTIFY_SOCKET: every notify is a no-op and the daemon still becomes ready.
    let dir = tempfile::tempdir().expect("temp dir");
    let config = format!(
        "state_dir = \"{}\"\n[listeners.unix]\ndirectory = \"{}\"\n[[databases]]\nname = \"x\"\naddress = \"{}\"\nauth = {{ mode = \"none\" }}\n",
        dir.path().join("state").display(),
        dir.path().join("run").display(),
        closed_addr()
    );
    let path: &Path = &dir.path().join("bastion.toml");
    std::fs::write(path, config).expect("write config");
    let mut child = Command::new(BASTION_BIN)
        .args(["serve", "--config"])
        .arg(path)
        .env_remove("NOTIFY_SOCKET")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start bastion");
    let sock = dir.path().join("run/x.sock");
    let up = support::process::poll(READY_LIMIT, || UnixStream::connect(&sock).ok());
    let _ = child.kill();
    let _ = child.wait();
    assert!(up.is_some(), "daemon without NOTIFY_SOCKET never accepted");
}
