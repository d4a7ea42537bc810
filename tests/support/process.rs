//! Running a child process with a hang guard (panicking, or [`try_run`] for the bench), spawning
//! it so it dies with us when asked ([`children_die_with_parent`]), and a few small helpers
//! shared by the fixtures.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// What a finished child printed.
#[derive(Debug)]
pub struct Out {
    /// The command line, for failure messages.
    pub what: String,
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Out {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// stdout then stderr, for "does the client show this error anywhere" checks.
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout(), self.stderr())
    }

    /// stdout split into lines (redis-cli prints one reply element per line when not on a tty).
    pub fn lines(&self) -> Vec<String> {
        self.stdout().lines().map(str::to_string).collect()
    }

    /// Panic (with everything the child printed) unless it exited 0.
    #[track_caller]
    pub fn assert_success(&self) -> &Self {
        assert!(self.status.success(), "{} failed:\n{self}", self.what);
        self
    }
}

impl std::fmt::Display for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cut = |s: String| {
            if s.len() > 4000 {
                let head: String = s.chars().take(4000).collect();
                format!("{head}… ({} bytes)", s.len())
            } else {
                s
            }
        };
        write!(
            f,
            "$ {}\n[{}]\n--- stdout\n{}\n--- stderr\n{}",
            self.what,
            self.status,
            cut(self.stdout()),
            cut(self.stderr())
        )
    }
}

/// Run `cmd` to completion, feeding it `stdin`; kill it and panic if it outlives `limit`.
#[track_caller]
pub fn run(cmd: &mut Command, stdin: Option<&[u8]>, limit: Duration) -> Out {
    match try_run(cmd, stdin, limit) {
        Ok(out) => out,
        Err(e) => panic!("{e}"),
    }
}

/// [`run`] for callers that go on after a failure (the relay bench): a child that cannot start
/// or outlives `limit` (and is killed) is an error, not a panic.
pub fn try_run(cmd: &mut Command, stdin: Option<&[u8]>, limit: Duration) -> Result<Out, NotRun> {
    let what = describe(cmd);
    let child = spawn(
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped()),
    );
    match child {
        Ok(child) => try_wait_with_limit(child, what, stdin.map(<[u8]>::to_vec), limit),
        Err(error) => Err(NotRun::Spawn { what, error }),
    }
}

/// Why [`try_run`] / [`try_wait_with_limit`] have no [`Out`]. `Display` is the message
/// [`run`] panics with.
#[derive(Debug)]
pub enum NotRun {
    Spawn {
        what: String,
        error: std::io::Error,
    },
    /// Still running after `limit`: killed and reaped; what it printed until then.
    HangGuard {
        what: String,
        limit: Duration,
        stdout: Vec<u8>,
        stderr: Vec<u8>,
    },
}

impl std::fmt::Display for NotRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotRun::Spawn { what, error } => write!(f, "cannot start `{what}`: {error}"),
            NotRun::HangGuard {
                what,
                limit,
                stdout,
                stderr,
            } => write!(
                f,
                "hang guard: `{what}` still running after {limit:?}; killed\n--- stdout\n{}\n--- stderr\n{}",
                String::from_utf8_lossy(stdout),
                String::from_utf8_lossy(stderr)
            ),
        }
    }
}

/// Wait for a spawned child (stdout/stderr piped), killing it after `limit`.
#[track_caller]
pub fn wait_with_limit(child: Child, what: String, stdin: Option<Vec<u8>>, limit: Duration) -> Out {
    match try_wait_with_limit(child, what, stdin, limit) {
        Ok(out) => out,
        Err(e) => panic!("{e}"),
    }
}

/// [`wait_with_limit`], returning [`NotRun::HangGuard`] instead of panicking.
pub fn try_wait_with_limit(
    mut child: Child,
    what: String,
    stdin: Option<Vec<u8>>,
    limit: Duration,
) -> Result<Out, NotRun> {
    if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A writer thread: a child that does not read its stdin must not block us.
        thread::spawn(move || {
            let _ = pipe.write_all(&data);
        });
    }
    let stdout = reader(child.stdout.take());
    let stderr = reader(child.stderr.take());
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(NotRun::HangGuard {
                    what,
                    limit,
                    stdout: stdout.join().unwrap_or_default(),
                    stderr: stderr.join().unwrap_or_default(),
                });
            }
            Err(e) => panic!("waiting for `{what}`: {e}"),
        }
    };
    Ok(Out {
        what,
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

/// Whether [`spawn`] makes children die with the process ([`children_die_with_parent`]).
static DIE_WITH_PARENT: AtomicBool = AtomicBool::new(false);

/// From now on every child the fixtures spawn gets SIGKILL from the kernel when this process
/// dies, even by SIGKILL (no `Drop` runs then). For the relay bench, which spawns only from its
/// main thread: the signal follows the spawning *thread*, so tests (one thread each, fixtures
/// that may outlive it) leave it off.
pub fn children_die_with_parent() {
    DIE_WITH_PARENT.store(true, Ordering::Relaxed);
}

/// `cmd.spawn()`, with the parent-death signal when [`children_die_with_parent`] was called.
/// Every fixture spawns its children through here.
pub fn spawn(cmd: &mut Command) -> std::io::Result<Child> {
    if DIE_WITH_PARENT.load(Ordering::Relaxed) {
        // SAFETY: the closure runs in the forked child before exec; prctl is async-signal-safe
        // and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    cmd.spawn()
}

fn reader<R: Read + Send + 'static>(pipe: Option<R>) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut buf);
        }
        buf
    })
}

/// `program arg arg …` for messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Poll `f` every 20 ms until it returns `Some`, or `None` after `limit` (a hang guard).
pub fn poll<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// `n` distinct loopback ports that were free a moment ago (bound together on 127.0.0.1:0, then
/// released). Another process may take one before we use it: callers retry on a clash.
pub fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    held.iter()
        .map(|l| l.local_addr().expect("local_addr").port())
        .collect()
}

/// A loopback address where nothing listens (for "upstream down").
pub fn closed_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_ports(1)[0]))
}

/// A short random hex string (no extra dependency: std's hasher is randomly keyed per process).
pub fn random_hex() -> String {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    format!("{:016x}", h.finish())
}

/// Whether the tests run as root (needed to act as another Unix user).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A current-thread tokio runtime for a test's async client code.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}
