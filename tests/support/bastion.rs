//! The daemon under test: `bastion serve --config FILE` as a child process, its logs, and
//! `bastion cert issue`.
//!
//! Readiness contract with the daemon (RUST_LOG=debug, NO_COLOR=1):
//! - one line per TCP listener containing `listening` and `address=IP:PORT` (configs use
//!   `address = "127.0.0.1:0"`; the real port is read from that line), logged in config order;
//! - for the Unix directory, a line containing `listening` and `directory=PATH`;
//! - a line containing `bastion ready` once every listener is bound.
//!
//! stdout and stderr are both captured (a fmt subscriber may write to either) into one buffer
//! that tests search for audit events and for secrets that must not be there. The buffer is
//! printed when the fixture is dropped, so a failing test shows the daemon's side.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use tempfile::TempDir;

use super::clients::ClientCert;
use super::process::{poll, run, spawn};

/// The binary under test, built by cargo for this test run.
pub const BASTION_BIN: &str = env!("CARGO_BIN_EXE_bastion");
/// Hang guard for start-up.
pub const READY_LIMIT: Duration = Duration::from_secs(30);
/// Hang guard for an expected log line to appear (audit events may trail the reply).
pub const LOG_LIMIT: Duration = Duration::from_secs(10);

pub struct Bastion {
    child: Option<Child>,
    logs: Logs,
    tcp: Vec<SocketAddr>,
    unix_dir: Option<PathBuf>,
    state_dir: PathBuf,
    config: PathBuf,
    _config_dir: TempDir,
    /// Print the output when dropped (for a failing test); see [`quiet`](Self::quiet).
    echo_on_drop: bool,
}

impl Bastion {
    /// Start the daemon on `config_toml` (which names `state_dir` as its `state_dir`) and wait
    /// until it logs `bastion ready`. Panics with the daemon's output if it exits or is not
    /// ready within [`READY_LIMIT`].
    #[track_caller]
    pub fn start(config_toml: &str, state_dir: &Path) -> Bastion {
        Bastion::start_with_env(config_toml, state_dir, &[])
    }

    /// [`start`](Self::start) with extra environment variables (e.g. `password_env`).
    #[track_caller]
    pub fn start_with_env(config_toml: &str, state_dir: &Path, env: &[(&str, &str)]) -> Bastion {
        Bastion::start_wrapped(config_toml, state_dir, env, &[])
    }

    /// [`start_with_env`](Self::start_with_env) run through `wrapper` (e.g. `ip netns exec NS`,
    /// which also gives the daemon `/etc/netns/NS/hosts` as its `/etc/hosts`).
    #[track_caller]
    pub fn start_wrapped(
        config_toml: &str,
        state_dir: &Path,
        env: &[(&str, &str)],
        wrapper: &[&str],
    ) -> Bastion {
        Bastion::spawn(config_toml, state_dir, env, wrapper, None)
    }

    /// [`start_with_env`](Self::start_with_env) with the daemon's stdout and stderr going to
    /// `file` rather than through a pipe this process reads: nobody reads its lines as they
    /// are written (the relay bench's measure of what writing the audit costs the daemon by
    /// itself). The log methods read the file.
    #[track_caller]
    pub fn start_logging_to_file(
        config_toml: &str,
        state_dir: &Path,
        env: &[(&str, &str)],
        file: &Path,
    ) -> Bastion {
        Bastion::spawn(config_toml, state_dir, env, &[], Some(file))
    }

    #[track_caller]
    fn spawn(
        config_toml: &str,
        state_dir: &Path,
        env: &[(&str, &str)],
        wrapper: &[&str],
        log_file: Option<&Path>,
    ) -> Bastion {
        let config_dir = tempfile::Builder::new()
            .prefix("bastion-config-")
            .tempdir()
            .expect("temp dir for the config");
        let config = config_dir.path().join("bastion.toml");
        std::fs::write(&config, config_toml).expect("write bastion.toml");

        let mut cmd = match wrapper.split_first() {
            None => Command::new(BASTION_BIN),
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(BASTION_BIN);
                cmd
            }
        };
        cmd.arg("serve")
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "debug")
            .env("NO_COLOR", "1")
            // Tests never talk to a real instance metadata service (169.254.169.254).
            .env("AWS_EC2_METADATA_DISABLED", "true")
            // Nor inherit the runner's region: tests that want one pass it.
            .env_remove("AWS_REGION")
            .env_remove("AWS_DEFAULT_REGION")
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null());
        match log_file {
            None => cmd.stdout(Stdio::piped()).stderr(Stdio::piped()),
            Some(path) => {
                let file = std::fs::File::create(path)
                    .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
                let copy = file.try_clone().expect("dup the log file");
                cmd.stdout(file).stderr(copy)
            }
        };
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child =
            spawn(&mut cmd).unwrap_or_else(|e| panic!("cannot start {BASTION_BIN}: {e}"));
        let logs = match log_file {
            None => {
                let buffer = Arc::new(Mutex::new(String::new()));
                capture(child.stdout.take(), buffer.clone());
                capture(child.stderr.take(), buffer.clone());
                Logs::Captured(buffer)
            }
            Some(path) => Logs::File(path.to_path_buf()),
        };

        let mut bastion = Bastion {
            child: Some(child),
            logs,
            tcp: Vec::new(),
            unix_dir: None,
            state_dir: state_dir.to_path_buf(),
            config,
            _config_dir: config_dir,
            echo_on_drop: true,
        };
        let ready = poll(READY_LIMIT, || {
            if let Some(Ok(Some(status))) = bastion.child.as_mut().map(Child::try_wait) {
                return Some(Err(format!(
                    "bastion exited ({status}) before it was ready"
                )));
            }
            parse_ready(&bastion.logs()).map(Ok)
        });
        match ready {
            Some(Ok((tcp, unix_dir))) => {
                bastion.tcp = tcp;
                bastion.unix_dir = unix_dir;
                bastion
            }
            Some(Err(why)) => panic!("{why}\n--- config\n{config_toml}\n--- bastion output\n{}", bastion.logs()),
            None => panic!(
                "bastion not ready within {READY_LIMIT:?} (no `bastion ready` line)\n--- config\n{config_toml}\n--- bastion output\n{}",
                bastion.logs()
            ),
        }
    }

    /// The bound address of the `i`-th `[[listeners.tcp]]` (config order).
    #[track_caller]
    pub fn tls_addr(&self, i: usize) -> SocketAddr {
        *self.tcp.get(i).unwrap_or_else(|| {
            panic!(
                "no TCP listener #{i}: the daemon logged {} `listening address=…` lines",
                self.tcp.len()
            )
        })
    }

    /// `<dir>/<db>.sock` of the Unix listener.
    #[track_caller]
    pub fn socket_path(&self, db: &str) -> PathBuf {
        self.unix_dir
            .as_ref()
            .expect("the daemon logged no `listening directory=…` line")
            .join(format!("{db}.sock"))
    }

    /// The config file the daemon runs on (for `doctor --config`).
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// Everything the daemon printed so far (ANSI colours stripped).
    pub fn logs(&self) -> String {
        match &self.logs {
            Logs::Captured(buffer) => buffer.lock().expect("log buffer").clone(),
            Logs::File(path) => strip_ansi(&String::from_utf8_lossy(
                &std::fs::read(path).unwrap_or_default(),
            )),
        }
    }

    /// A position in the logs; see [`logs_since`](Self::logs_since).
    pub fn log_mark(&self) -> usize {
        match &self.logs {
            Logs::Captured(buffer) => buffer.lock().expect("log buffer").len(),
            Logs::File(_) => self.logs().len(),
        }
    }

    /// What the daemon printed after `mark`.
    pub fn logs_since(&self, mark: usize) -> String {
        match &self.logs {
            Logs::Captured(buffer) => {
                let logs = buffer.lock().expect("log buffer");
                logs.get(mark..).unwrap_or_default().to_string()
            }
            Logs::File(_) => self.logs().get(mark..).unwrap_or_default().to_string(),
        }
    }

    /// Wait (up to [`LOG_LIMIT`]) for a line after `mark` that contains every word of `all` and
    /// at least one of `any` (case-insensitive; empty `any` = no such condition). Returns the
    /// line; panics with the logs since `mark` if none appears.
    #[track_caller]
    pub fn expect_log_line(&self, mark: usize, all: &[&str], any: &[&str]) -> String {
        let matches = |line: &str| {
            let l = line.to_lowercase();
            all.iter().all(|w| l.contains(&w.to_lowercase()))
                && (any.is_empty() || any.iter().any(|w| l.contains(&w.to_lowercase())))
        };
        let found = poll(LOG_LIMIT, || {
            self.logs_since(mark)
                .lines()
                .find(|l| matches(l))
                .map(str::to_string)
        });
        found.unwrap_or_else(|| {
            panic!(
                "no log line with all of {all:?} and one of {any:?} within {LOG_LIMIT:?}; logs since mark:\n{}",
                self.logs_since(mark)
            )
        })
    }

    /// An access-denied audit event after `mark` naming the reason (one of `reason`).
    #[track_caller]
    pub fn expect_denied(&self, mark: usize, reason: &[&str]) -> String {
        self.expect_log_line(mark, &["denied"], reason)
    }

    /// Panics if any of `secrets` appears anywhere in the logs.
    #[track_caller]
    pub fn assert_no_secrets(&self, secrets: &[&str]) {
        let logs = self.logs();
        for s in secrets {
            assert!(!s.is_empty(), "empty secret given to assert_no_secrets");
            if let Some(line) = logs.lines().find(|l| l.contains(s)) {
                panic!("a secret appears in the bastion's logs:\n{line}");
            }
        }
    }

    /// Replace the config file the daemon was started with (it reads it again on SIGHUP).
    pub fn rewrite_config(&self, config_toml: &str) {
        std::fs::write(&self.config, config_toml).expect("rewrite bastion.toml");
    }

    /// `systemctl reload`: SIGHUP, then wait for the daemon to log `reload done` or `reload
    /// failed`; returns that line. Panics if neither appears within [`LOG_LIMIT`].
    #[track_caller]
    pub fn reload(&self) -> String {
        let mark = self.log_mark();
        let child = self.child.as_ref().expect("the daemon is running");
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).expect("send SIGHUP");
        self.expect_log_line(mark, &["reload"], &["reload done", "reload failed"])
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    /// How the daemon ended, once it has (`None` while it runs, or after [`kill`](Self::kill)).
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    /// The daemon's pid while it is ours to reap.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Do not print the output on drop (the relay bench reports from it and keeps a copy).
    pub fn quiet(&mut self) {
        self.echo_on_drop = false;
    }

    /// `bastion cert issue USER --ttl TTL --out OUT --config <its config>`: through the
    /// daemon's admin socket (wherever the config puts it), which records the serial.
    #[track_caller]
    pub fn issue_cert(&self, user: &str, ttl: &str, out_dir: &Path) -> ClientCert {
        let config = self._config_dir.path().join("bastion.toml");
        issue_cert(
            &["--config".as_ref(), config.as_os_str()],
            user,
            ttl,
            out_dir,
        )
    }

    /// `kill -9` the daemon (nothing of its shutdown runs) and reap it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stop the daemon: SIGTERM, then SIGKILL after 5 s.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        if matches!(child.try_wait(), Ok(None)) {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let exited = poll(Duration::from_secs(5), || child.try_wait().ok().flatten());
            if exited.is_none() {
                let _ = child.kill();
            }
        }
        let _ = child.wait();
    }
}

impl Drop for Bastion {
    fn drop(&mut self) {
        self.stop();
        if !self.echo_on_drop {
            return;
        }
        // Captured by the test harness: shown only when the test fails.
        let logs = self.logs();
        let tail = if logs.len() > 200_000 {
            let mut start = logs.len() - 200_000;
            while !logs.is_char_boundary(start) {
                start += 1;
            }
            &logs[start..]
        } else {
            &logs[..]
        };
        eprintln!(
            "----- bastion output ({} bytes) -----\n{tail}\n----- end of bastion output -----",
            logs.len()
        );
    }
}

/// `bastion cert issue USER --ttl TTL --out OUT WHERE…` → the bundle it wrote. `place` says
/// where the daemon / state is: `--config FILE`, `--state-dir DIR`, `--socket S`.
#[track_caller]
pub fn issue_cert(place: &[&OsStr], user: &str, ttl: &str, out_dir: &Path) -> ClientCert {
    std::fs::create_dir_all(out_dir).expect("create cert out dir");
    let out = run(
        Command::new(BASTION_BIN)
            .args(["cert", "issue", user, "--ttl", ttl, "--out"])
            .arg(out_dir)
            .args(place),
        None,
        Duration::from_secs(60),
    );
    out.assert_success();
    let bundle = ClientCert {
        cert: out_dir.join(format!("{user}.crt")),
        key: out_dir.join(format!("{user}.key")),
        ca: out_dir.join("ca.crt"),
    };
    for p in [&bundle.cert, &bundle.key, &bundle.ca] {
        assert!(
            p.exists(),
            "`bastion cert issue` did not write {}\n{out}",
            p.display()
        );
    }
    bundle
}

/// Where the daemon's output goes.
enum Logs {
    /// Read through pipes by a thread per stream into one buffer (see the module docs).
    Captured(Arc<Mutex<String>>),
    /// Written to a file nobody reads until asked.
    File(PathBuf),
}

/// Append the child's output, line by line and without ANSI escapes, to `logs`.
fn capture(pipe: Option<impl Read + Send + 'static>, logs: Arc<Mutex<String>>) {
    let Some(pipe) = pipe else { return };
    thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    let text = strip_ansi(&String::from_utf8_lossy(&line));
                    let mut logs = logs.lock().expect("log buffer");
                    logs.push_str(&text);
                    if !text.ends_with('\n') {
                        logs.push('\n');
                    }
                }
            }
        }
    });
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ params final-byte(@..~)
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Once `bastion ready` has been logged: the TCP addresses and Unix directory from the
/// `listening` lines before it.
fn parse_ready(logs: &str) -> Option<(Vec<SocketAddr>, Option<PathBuf>)> {
    let mut tcp = Vec::new();
    let mut dir = None;
    for line in logs.lines() {
        if line.contains("bastion ready") {
            return Some((tcp, dir));
        }
        if !line.contains("listening") {
            continue;
        }
        if let Some(addr) = field(line, "address").and_then(|v| v.parse().ok()) {
            tcp.push(addr);
        }
        if let Some(d) = field(line, "directory") {
            dir = Some(PathBuf::from(d));
        }
    }
    None
}

/// The value of `name=value` / `name="value"` (fmt) or `"name":"value"` (JSON) in a log line.
pub fn field(line: &str, name: &str) -> Option<String> {
    let patterns = [format!("{name}="), format!("\"{name}\":")];
    for pat in &patterns {
        let mut from = 0;
        while let Some(i) = line[from..].find(pat.as_str()).map(|i| from + i) {
            from = i + pat.len();
            // A whole field name, not the tail of `client.address=` or `upstream_address=`.
            let before = line[..i].chars().next_back();
            if !matches!(before, None | Some(' ' | '{' | ',' | '\t' | ':')) {
                continue;
            }
            let rest = &line[from..];
            return Some(match rest.strip_prefix('"') {
                Some(quoted) => quoted.split('"').next().unwrap_or_default().to_string(),
                None => rest
                    .split(|c: char| c.is_whitespace() || c == ',' || c == '}')
                    .next()
                    .unwrap_or_default()
                    .to_string(),
            });
        }
    }
    None
}
