//! Running a child process with a hang guard, and a few small helpers shared by the fixtures.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, ExitStatus, Stdio};
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
    let what = describe(cmd);
    let child = cmd
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start `{what}`: {e}"));
    wait_with_limit(child, what, stdin.map(<[u8]>::to_vec), limit)
}

/// Wait for a spawned child (stdout/stderr piped), killing it after `limit`.
#[track_caller]
pub fn wait_with_limit(
    mut child: Child,
    what: String,
    stdin: Option<Vec<u8>>,
    limit: Duration,
) -> Out {
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
                let out = String::from_utf8_lossy(&stdout.join().unwrap_or_default()).into_owned();
                let err = String::from_utf8_lossy(&stderr.join().unwrap_or_default()).into_owned();
                panic!("hang guard: `{what}` still running after {limit:?}; killed\n--- stdout\n{out}\n--- stderr\n{err}");
            }
            Err(e) => panic!("waiting for `{what}`: {e}"),
        }
    };
    Out {
        what,
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
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
