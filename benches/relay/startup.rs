//! Start-up and size: how long `bastion serve --config …` takes from exec to `READY=1` on its
//! `NOTIFY_SOCKET` (as systemd would see it: after every listener accepts), and how big the
//! binary is once stripped.
//!
//! The first start is cold (a fresh state dir: it creates the on-box CA); the `--starts N`
//! after it reuse that state dir, which is what a restart or a reboot sees. Each start is
//! stopped with SIGTERM and reaped before the next.

use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};

use crate::support::bastion::BASTION_BIN;
use crate::support::process::spawn;
use crate::testbed::bastion_config;

/// A start that has not said READY=1 by then has failed.
const READY_LIMIT: Duration = Duration::from_secs(30);

/// exec → READY=1, milliseconds.
pub(crate) struct Startup {
    /// Fresh state dir (creates the CA).
    pub(crate) cold_ms: Option<f64>,
    /// Existing state dir, one per start.
    pub(crate) warm_ms: Vec<f64>,
    pub(crate) errors: Vec<String>,
}

impl Startup {
    pub(crate) fn failed(why: String) -> Startup {
        Startup {
            cold_ms: None,
            warm_ms: Vec::new(),
            errors: vec![why],
        }
    }
}

/// One cold start, then `starts` warm ones, of a bastion whose one database is Redis at `redis`
/// (never dialled: nobody connects), with a TCP and a Unix listener.
pub(crate) fn measure(dir: &Path, redis: SocketAddr, starts: usize) -> Startup {
    let mut result = Startup {
        cold_ms: None,
        warm_ms: Vec::new(),
        errors: Vec::new(),
    };
    let config = match write_config(dir, redis) {
        Ok(c) => c,
        Err(e) => return Startup::failed(format!("{e:#}")),
    };
    eprintln!("relay bench: exec -> READY=1, 1 cold + {starts} warm starts");
    for i in 0..=starts {
        match start_once(dir, &config, i) {
            Ok(ms) if i == 0 => result.cold_ms = Some(ms),
            Ok(ms) => result.warm_ms.push(ms),
            Err(e) => result.errors.push(format!("start {i}: {e:#}")),
        }
    }
    result
}

fn write_config(dir: &Path, redis: SocketAddr) -> Result<std::path::PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    // The throughput bench's own bastion config, with one database.
    let config = bastion_config(
        &dir.join("state"),
        &dir.join("sock"),
        redis,
        &[("local", "guard")],
    );
    let path = dir.join("bastion.toml");
    std::fs::write(&path, config).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// Spawn, wait for a datagram with a `READY=1` line, stop. Milliseconds from just before the
/// spawn to the datagram's arrival.
fn start_once(dir: &Path, config: &Path, i: usize) -> Result<f64> {
    let notify_path = dir.join(format!("notify-{i}.sock"));
    let notify = UnixDatagram::bind(&notify_path)
        .with_context(|| format!("binding {}", notify_path.display()))?;
    notify.set_read_timeout(Some(Duration::from_millis(200)))?;
    let log = dir.join(format!("start-{i}.log"));
    let mut cmd = Command::new(BASTION_BIN);
    cmd.args(["serve", "--config"])
        .arg(config)
        .env("NOTIFY_SOCKET", &notify_path)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("WATCHDOG_PID")
        .env_remove("WATCHDOG_USEC")
        .env_remove("JOURNAL_STREAM")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?,
        );
    let t0 = Instant::now();
    let child = spawn(&mut cmd).with_context(|| format!("starting {BASTION_BIN}"))?;
    let mut child = Stopped(child);
    let mut buf = [0u8; 4096];
    loop {
        match notify.recv(&mut buf) {
            Ok(n) => {
                let msg = String::from_utf8_lossy(&buf[..n]);
                if msg.lines().any(|l| l == "READY=1") {
                    return Ok(t0.elapsed().as_secs_f64() * 1e3);
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(anyhow!("reading the notify socket: {e}")),
        }
        if let Ok(Some(status)) = child.0.try_wait() {
            let tail = std::fs::read_to_string(&log).unwrap_or_default();
            bail!(
                "bastion exited ({status}) before READY=1: {}",
                tail.lines().last().unwrap_or("no output")
            );
        }
        if t0.elapsed() > READY_LIMIT {
            bail!("no READY=1 within {READY_LIMIT:?} (log {})", log.display());
        }
    }
}

/// SIGTERM and reap on drop (also on the error paths), SIGKILL if it does not go in 10 s.
struct Stopped(Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;
        if let Ok(pid) = i32::try_from(self.0.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The bench's bastion binary (cargo's `bench` profile: release with `debug = 1`) as built and
/// after `strip` on a copy: what an image ships.
pub(crate) struct BinarySize {
    pub(crate) built_bytes: Result<u64, String>,
    pub(crate) stripped_bytes: Result<u64, String>,
}

pub(crate) fn binary_size(dir: &Path) -> BinarySize {
    let built_bytes = std::fs::metadata(BASTION_BIN)
        .map(|m| m.len())
        .map_err(|e| format!("{BASTION_BIN}: {e}"));
    let stripped_bytes = strip_copy(dir).map_err(|e| format!("{e:#}"));
    BinarySize {
        built_bytes,
        stripped_bytes,
    }
}

fn strip_copy(dir: &Path) -> Result<u64> {
    let copy = dir.join("bastion.stripped");
    std::fs::copy(BASTION_BIN, &copy)
        .with_context(|| format!("copying {BASTION_BIN} to {}", copy.display()))?;
    let status = Command::new("strip")
        .arg(&copy)
        .status()
        .context("running strip (binutils)")?;
    if !status.success() {
        bail!("strip {}: {status}", copy.display());
    }
    let len = std::fs::metadata(&copy)
        .with_context(|| format!("{}", copy.display()))?
        .len();
    let _ = std::fs::remove_file(&copy);
    Ok(len)
}
