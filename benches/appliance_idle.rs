//! Memory per idle session at 10,000 sessions, measured inside the booted appliance.
//!
//! The relay bench (`benches/relay`) measures idle memory on this host, but here a process may
//! hold at most 20,000 descriptors (hard `RLIMIT_NOFILE`, no `CAP_SYS_RESOURCE` to raise it) and
//! the bastion holds two per session, so 10,000 sessions cannot be held on the host. The booted
//! image has no such limit: this bench builds (or reuses) the boot test's image
//! (`tests/support/appliance.rs`), boots it in qemu with more memory and asks its check, through
//! qemu's fw_cfg (`opt/bastion/idle-sessions`), to run `image/test/rootfs/usr/lib/bastion-test/idle`
//! after every boot check passed: N direct Redis connections (the baseline), N sessions through
//! the bastion's Unix socket and N over mTLS (kTLS in the guest kernel), one PING each, all held
//! at once; for each kind the bastion's RSS growth and the kernel's unreclaimable slab growth per
//! session. It prints the table and writes `benches/results/appliance-idle-<UTC>.json`.
//!
//! ```sh
//! cargo bench --bench appliance_idle                     # 10,000 sessions of each kind
//! cargo bench --bench appliance_idle -- --sessions 1000  # quicker
//! ```
//!
//! Options: `--sessions N` (default 10000), `--memory MIB` (guest memory, default 4096),
//! `--results DIR` (default `benches/results`), `--timeout SECS` (hang guard for the boot and
//! the measurement, default 3600). Needs what the boot test needs (root, image/tools.sh, the
//! Debian mirror); without it the bench prints `SKIP: …` and measures nothing. Under TCG a run
//! takes 15–30 minutes, most of it the 10,000 TLS handshakes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context as _, Result};
use serde_json::json;

// The integration tests' fixtures (see benches/relay/main.rs for why unused imports appear).
#[path = "../tests/support/mod.rs"]
#[allow(unused_imports)]
mod support;

use support::appliance::{self, tail, BootOptions, STATUS_PREFIX, USER_DATA};
use support::imds::{Behaviour, Emulator};

/// The check's lines with the figures (image/test/rootfs/usr/lib/bastion-test/idle).
const IDLE_MARK: &str = "bastion-check: idle: ";
/// The kinds of session the guest measures, baseline first.
const KINDS: [&str; 3] = ["direct", "unix", "mtls"];

struct Options {
    sessions: u32,
    memory_mib: u32,
    results: PathBuf,
    timeout: Duration,
}

fn options() -> Result<Options> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut opts = Options {
        sessions: 10_000,
        memory_mib: 4096,
        results: repo.join("benches/results"),
        timeout: Duration::from_secs(3600),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--sessions" => opts.sessions = value("--sessions")?.parse().context("--sessions")?,
            "--memory" => opts.memory_mib = value("--memory")?.parse().context("--memory")?,
            "--results" => opts.results = PathBuf::from(value("--results")?),
            "--timeout" => {
                opts.timeout =
                    Duration::from_secs(value("--timeout")?.parse().context("--timeout")?)
            }
            // cargo bench passes --bench to every bench binary.
            "--bench" => {}
            other => bail!("unknown option {other} (see benches/appliance_idle.rs)"),
        }
    }
    if opts.sessions == 0 {
        bail!("--sessions must be at least 1");
    }
    Ok(opts)
}

/// One kind's figures, as the guest printed them.
#[derive(Debug, Clone)]
struct Kind {
    sessions: u64,
    user_kib: f64,
    kernel_kib: f64,
    pipes: u64,
    opened_in_s: f64,
}

/// `KIND key=value …` after [`IDLE_MARK`].
fn parse(serial: &str) -> Result<BTreeMap<String, Kind>> {
    let mut kinds = BTreeMap::new();
    for line in serial.lines() {
        let Some((_, rest)) = line.split_once(IDLE_MARK) else {
            continue;
        };
        let mut words = rest.split_whitespace();
        let Some(kind) = words.next().filter(|k| KINDS.contains(k)) else {
            continue;
        };
        let fields: BTreeMap<&str, &str> = words.filter_map(|w| w.split_once('=')).collect();
        let get = |key: &str| -> Result<f64> {
            fields
                .get(key)
                .with_context(|| format!("no {key}= in `{}`", line.trim()))?
                .parse()
                .with_context(|| format!("{key}= in `{}`", line.trim()))
        };
        kinds.insert(
            kind.to_string(),
            Kind {
                sessions: get("sessions")? as u64,
                user_kib: get("user_kib")?,
                kernel_kib: get("kernel_kib")?,
                pipes: get("pipes")? as u64,
                opened_in_s: get("opened_in_s")?,
            },
        );
    }
    for kind in KINDS {
        if !kinds.contains_key(kind) {
            bail!("the guest printed no `{IDLE_MARK}{kind} …` line");
        }
    }
    Ok(kinds)
}

fn main() {
    if let Err(e) = run() {
        eprintln!("appliance_idle bench: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let opts = options()?;
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let started = SystemTime::now();
    let image = match appliance::test_image(repo) {
        Ok(image) => image,
        Err(reason) => {
            println!("SKIP: {reason}");
            return Ok(());
        }
    };
    let imds = Emulator::start(Behaviour {
        user_data: Some(USER_DATA.as_bytes().to_vec()),
        ..Behaviour::default()
    });
    let serial = image.work.join("idle-serial.log");
    let status = image.work.join("idle-status.log");
    println!(
        "booting with {} MiB, {} sessions of each kind (TCG: this takes a while; serial log {})",
        opts.memory_mib,
        opts.sessions,
        serial.display()
    );
    let boot = appliance::boot(
        repo,
        &image.image,
        &imds,
        (&serial, &status),
        &BootOptions {
            timeout: opts.timeout,
            memory_mib: Some(opts.memory_mib),
            qemu_args: vec![
                "-fw_cfg".into(),
                format!("name=opt/bastion/idle-sessions,string={}", opts.sessions),
            ],
        },
    );
    let check_status = boot
        .status_port
        .lines()
        .find_map(|l| l.trim().strip_prefix(STATUS_PREFIX).map(str::to_string));
    if check_status.as_deref() != Some("0") {
        bail!(
            "the guest's check did not pass (status {check_status:?}, qemu {}); serial log {}:\n{}",
            boot.qemu,
            serial.display(),
            tail(&boot.serial, 60)
        );
    }
    let kinds = parse(&boot.serial)?;
    let direct = &kinds["direct"];
    println!();
    println!(
        "== memory per idle session inside the appliance (guest: {} MiB, 2 vCPUs, TCG) ==",
        opts.memory_mib
    );
    println!(
        "{:<8} {:>9} {:>10} {:>12} {:>16} {:>6} {:>10}",
        "kind", "sessions", "user KiB", "kernel KiB", "kernel - direct", "pipes", "opened in"
    );
    for name in KINDS {
        let k = &kinds[name];
        println!(
            "{:<8} {:>9} {:>10.1} {:>12.1} {:>16} {:>6} {:>9.0}s",
            name,
            k.sessions,
            k.user_kib,
            k.kernel_kib,
            if name == "direct" {
                "-".to_string()
            } else {
                format!("{:.1}", k.kernel_kib - direct.kernel_kib)
            },
            k.pipes,
            k.opened_in_s
        );
    }
    for line in boot.serial.lines().filter(|l| l.contains(IDLE_MARK)) {
        println!("  guest: {}", line.trim());
    }
    let stamp = humantime::format_rfc3339_seconds(started).to_string();
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(repo)
            .args(args)
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let json = json!({
        "started_utc": stamp,
        "sessions": opts.sessions,
        "guest_memory_mib": opts.memory_mib,
        "where": "inside the booted test image (qemu TCG, 2 vCPUs); bastion with kTLS on the mTLS leg",
        "kinds": kinds.iter().map(|(name, k)| (name.clone(), json!({
            "sessions": k.sessions,
            "user_kib_per_session": k.user_kib,
            "kernel_kib_per_session": k.kernel_kib,
            "kernel_kib_per_session_beyond_direct": if name == "direct" { None } else { Some(((k.kernel_kib - direct.kernel_kib) * 10.0).round() / 10.0) },
            "pipes": k.pipes,
            "opened_in_s": k.opened_in_s,
        }))).collect::<serde_json::Map<_, _>>(),
        "git_commit": git(&["rev-parse", "HEAD"]),
        "git_dirty": git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty()),
        "boot_and_measure_s": boot.took.as_secs(),
    });
    std::fs::create_dir_all(&opts.results)
        .with_context(|| format!("creating {}", opts.results.display()))?;
    let path = opts.results.join(format!(
        "appliance-idle-{}.json",
        stamp.replace([':', '-'], "")
    ));
    std::fs::write(&path, serde_json::to_string_pretty(&json)? + "\n")
        .with_context(|| format!("writing {}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}
