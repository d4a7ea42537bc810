//! Memory per idle session: open `--idle N` sessions to each target, one `PING` each (so every
//! proxied session is past its handshake and relaying), and see what the target process and the
//! kernel hold for them.
//!
//! User memory is the target process's RSS growth; kernel memory is the growth of `SUnreclaim` in
//! /proc/meminfo (sockets, pipes and epoll entries are unreclaimable slab), system-wide, so it
//! includes the bench's own client sockets and Redis' — compare a proxy with direct Redis on the
//! same transport. Pipes held are counted in the target's /proc/PID/fd. Sessions stay open until
//! every target is measured: memory freed by one target's closed sessions (in malloc's arenas or
//! the kernel's slabs) would otherwise be reused by the next and hide its cost.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use tokio::sync::Semaphore;

use crate::support::clients::Endpoint;
use crate::support::raw::Raw;
use crate::TargetId;

/// The measured targets, in this order (directs first: their numbers are the baseline).
pub(crate) const TARGETS: [TargetId; 8] = [
    TargetId::DirectUnix,
    TargetId::DirectTls,
    TargetId::HaproxyUnix,
    TargetId::HaproxyTls,
    TargetId::BastionUnix,
    TargetId::BastionUnixPass,
    TargetId::BastionTls,
    TargetId::BastionTlsPass,
];

/// Connections opened at once (TLS handshakes overlap; the listeners' backlogs hold them).
const PARALLEL: usize = 64;

/// `n`, or fewer so that every measured target's sessions fit in `fd_limit` at once: the bench
/// holds one fd per session, Redis one, a proxy two for each of its targets' sessions.
pub(crate) fn fit(live: &[(TargetId, &Endpoint)], n: usize, fd_limit: u64) -> usize {
    let measured = |pick: fn(&TargetId) -> bool| {
        TARGETS
            .iter()
            .filter(|t| pick(t) && live.iter().any(|(l, _)| l == *t))
            .count()
    };
    let all = measured(|_| true);
    let bastion = measured(|t| t.name().starts_with("bastion"));
    let haproxy = measured(|t| t.name().starts_with("haproxy"));
    let busiest = all.max(2 * bastion).max(2 * haproxy).max(1);
    // Room for the processes' own fds (listeners, logs, pooled pipes).
    let room = usize::try_from(fd_limit.saturating_sub(300)).unwrap_or(usize::MAX);
    let fitted = n.min(room / busiest);
    if fitted < n {
        eprintln!(
            "relay bench: --idle {n} does not fit in {fd_limit} fds with {all} targets open at once; using {fitted}"
        );
    }
    fitted
}

/// What one target holds for `sessions` idle sessions.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Idle {
    pub(crate) sessions: usize,
    /// Target process RSS growth per session, KiB.
    pub(crate) user_kib: f64,
    /// System-wide unreclaimable slab growth per session, KiB.
    pub(crate) kernel_kib: f64,
    /// Pipes (two fds each) the target process holds with every session open.
    pub(crate) pipes: usize,
}

pub(crate) type IdleResults = BTreeMap<TargetId, Result<Idle, String>>;

/// Measure every target of `live` that [`TARGETS`] names, `n` sessions each; `pid` says which
/// process serves a target. All sessions are closed when this returns.
pub(crate) fn measure_all(
    live: &[(TargetId, &Endpoint)],
    pid: impl Fn(TargetId) -> Option<u32>,
    n: usize,
) -> IdleResults {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("relay bench: idle memory: no runtime: {e}");
            return IdleResults::new();
        }
    };
    let mut results = IdleResults::new();
    let mut open: Vec<Raw> = Vec::new();
    for id in TARGETS {
        let Some((_, endpoint)) = live.iter().find(|(t, _)| *t == id) else {
            continue;
        };
        let result = pid(id)
            .context("no process id")
            .and_then(|pid| runtime.block_on(measure(endpoint, pid, n, &mut open)));
        match &result {
            Ok(idle) => eprintln!(
                "  {:<17} idle x{}: {:.1} KiB user + {:.1} KiB kernel per session, {} pipes",
                id.name(),
                idle.sessions,
                idle.user_kib,
                idle.kernel_kib,
                idle.pipes
            ),
            Err(e) => eprintln!("  {:<17} idle: {e:#}", id.name()),
        }
        results.insert(id, result.map_err(|e| format!("{e:#}")));
    }
    drop(open);
    // Let the targets see every close before the throughput rounds.
    std::thread::sleep(Duration::from_secs(2));
    results
}

async fn measure(endpoint: &Endpoint, pid: u32, n: usize, open: &mut Vec<Raw>) -> Result<Idle> {
    settle().await;
    let (rss0, slab0) = (rss_kib(pid)?, slab_kib()?);
    let permits = Arc::new(Semaphore::new(PARALLEL));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (endpoint, permits) = (endpoint.clone(), permits.clone());
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await;
            let mut raw = Raw::connect(&endpoint).await.context("connect")?;
            let reply = raw.request_str(&["PING"]).await.context("PING")?;
            if reply != b"+PONG\r\n" {
                bail!("PING answered {:?}", String::from_utf8_lossy(&reply));
            }
            Ok(raw)
        });
    }
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        match joined.context("client task").and_then(|r| r) {
            Ok(raw) => open.push(raw),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_error {
        return Err(e.context(format!("opening {n} sessions")));
    }
    settle().await;
    let (rss1, slab1) = (rss_kib(pid)?, slab_kib()?);
    let per = |before: u64, after: u64| after.saturating_sub(before) as f64 / n as f64;
    Ok(Idle {
        sessions: n,
        user_kib: per(rss0, rss1),
        kernel_kib: per(slab0, slab1),
        pipes: pipes_of(pid),
    })
}

/// Time for the target to finish with what just happened (closes, a last reply).
async fn settle() {
    tokio::time::sleep(Duration::from_millis(700)).await;
}

fn rss_kib(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    field_kib(&status, "VmRSS:").with_context(|| format!("no VmRSS in {path}"))
}

fn slab_kib() -> Result<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").context("reading /proc/meminfo")?;
    field_kib(&meminfo, "SUnreclaim:").context("no SUnreclaim in /proc/meminfo")
}

fn field_kib(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(key))?;
    line[key.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// Pipes open in `pid` (each has two fds; a fd of either end counts half).
fn pipes_of(pid: u32) -> usize {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    let ends = dir
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with("pipe:"))
        .count();
    ends / 2
}
