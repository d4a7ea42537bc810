//! The printed report: median ops/s per target and workload, the ratios, every run's number,
//! the bastion's memory, relay paths and log problems, and the errors behind `n/a (eN)` cells.

use std::fmt::Write as _;
use std::process::Command;
use std::time::Duration;

use crate::churn::Churn;
use crate::idle::IdleResults;
use crate::setup::Setup;
use crate::startup::{BinarySize, Startup};
use crate::testbed::{BastionSummary, Memory, TestBed};
use crate::{Options, Results, Target, TargetId, RATIOS, WORKLOADS};

pub(crate) struct Report<'a> {
    pub(crate) opts: &'a Options,
    pub(crate) targets: &'a [Target],
    pub(crate) results: &'a Results,
    pub(crate) idle: &'a IdleResults,
    pub(crate) env: String,
    pub(crate) bastion: Option<BastionSummary>,
    pub(crate) haproxy_hwm: Option<Memory>,
    pub(crate) churn: &'a Churn,
    pub(crate) setup: &'a Setup,
    pub(crate) startup: &'a Startup,
    pub(crate) binary: &'a BinarySize,
    pub(crate) elapsed: Duration,
}

const TLS_NOTE: &str = "\
bastion-tls terminates TLS in user space (rustls) and relays with a copy; direct-tcp has no TLS,
direct-tls is Redis' own TLS (OpenSSL), haproxy-tls terminates with OpenSSL and relays in plaintext.
TLS SET 100kB is paced by the client: redis-benchmark leaves Nagle on (see Workload::tls_requests).";

/// Width of the first column and of each workload column.
const NAME_W: usize = 28;
const CELL_W: usize = 16;

impl Report<'_> {
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        let mut notes = Notes::default();
        let _ = writeln!(
            out,
            "\n== bastion relay bench: {} interleaved rounds ==",
            self.opts.rounds
        );
        let _ = writeln!(out, "{}", self.env);
        let requests: Vec<String> = WORKLOADS
            .iter()
            .map(|w| {
                let (n, tls) = (
                    w.requests as f64 * self.opts.scale,
                    w.tls_requests as f64 * self.opts.scale,
                );
                if n == tls {
                    format!("{} {n:.0}", w.label)
                } else {
                    format!("{} {n:.0} ({tls:.0} on TLS)", w.label)
                }
            })
            .collect();
        let _ = writeln!(out, "requests per run: {}", requests.join(", "));

        let _ = writeln!(out, "\nmedian ops/s");
        header(&mut out, "target");
        for t in self.targets {
            let _ = write!(out, "{:<NAME_W$}", t.id.name());
            for w in 0..WORKLOADS.len() {
                let cell = self.median_cell(t, w, &mut notes);
                let _ = write!(out, "{cell:>CELL_W$}");
            }
            out.push('\n');
        }

        let _ = writeln!(
            out,
            "\nratios of the medians (higher is better for the numerator)"
        );
        header(&mut out, "ratio");
        for (num, den) in RATIOS {
            if !self.targets.iter().any(|t| t.id == *num)
                || !self.targets.iter().any(|t| t.id == *den)
            {
                continue;
            }
            let _ = write!(
                out,
                "{:<NAME_W$}",
                format!("{} / {}", num.name(), den.name())
            );
            for w in 0..WORKLOADS.len() {
                let m = |id: TargetId| median(self.results.ops.get(&(w, id)));
                let cell = match (m(*num), m(*den)) {
                    (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
                    _ => "n/a".into(),
                };
                let _ = write!(out, "{cell:>CELL_W$}");
            }
            out.push('\n');
        }
        if self.targets.iter().any(|t| t.id == TargetId::BastionTls) {
            let _ = writeln!(out, "{TLS_NOTE}");
        }
        self.cpu_section(&mut out);

        let _ = writeln!(
            out,
            "\nall runs, k ops/s in round order (judge the noise here)"
        );
        for (w, workload) in WORKLOADS.iter().enumerate() {
            for t in self.targets {
                if let Some(v) = self.results.ops.get(&(w, t.id)) {
                    let runs: Vec<String> =
                        v.iter().map(|x| format!("{:.1}", x / 1000.0)).collect();
                    let _ = writeln!(
                        out,
                        "  {:<15} {:<13} {}",
                        workload.label,
                        t.id.name(),
                        runs.join("  ")
                    );
                }
            }
        }

        self.idle_section(&mut out, &mut notes);
        out.push_str(&self.churn.render());
        self.setup_section(&mut out, &mut notes);
        self.startup_section(&mut out);
        out.push('\n');
        self.bastion_section(&mut out);
        notes.render(&mut out);
        let _ = writeln!(out, "\nbench took {:.0} s", self.elapsed.as_secs_f64());
        out
    }

    /// CPU per request of the process serving each target (medians over the rounds), and each
    /// proxy's against HAProxy's on the same transport.
    fn cpu_section(&self, out: &mut String) {
        let m = |w: usize, id: TargetId| median(self.results.cpu_us.get(&(w, id)));
        let _ = writeln!(
            out,
            "\nCPU per request, µs: the process serving the target (a proxy; direct: redis-server), \
             user + system, median of the rounds"
        );
        header(out, "target");
        for t in self.targets {
            let _ = write!(out, "{:<NAME_W$}", t.id.name());
            for w in 0..WORKLOADS.len() {
                let cell = m(w, t.id).map_or("n/a".into(), |us| format!("{us:.2}"));
                let _ = write!(out, "{cell:>CELL_W$}");
            }
            out.push('\n');
        }
        let _ = writeln!(out, "\nCPU per request ÷ HAProxy's (lower is better)");
        header(out, "ratio");
        for t in self.targets.iter().filter(|t| t.id.is_bastion()) {
            let den = t.id.haproxy();
            if !self.targets.iter().any(|t| t.id == den) {
                continue;
            }
            let _ = write!(
                out,
                "{:<NAME_W$}",
                format!("{} / {}", t.id.name(), den.name())
            );
            for w in 0..WORKLOADS.len() {
                let cell = match (m(w, t.id), m(w, den)) {
                    (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
                    _ => "n/a".into(),
                };
                let _ = write!(out, "{cell:>CELL_W$}");
            }
            out.push('\n');
        }
    }

    /// The median, `n/a (eN)` when nothing succeeded, or `median* (eN)` when some runs failed.
    fn median_cell(&self, t: &Target, w: usize, notes: &mut Notes) -> String {
        let col = WORKLOADS[w].label;
        if let Err(e) = &t.endpoint {
            return format!("n/a ({})", notes.add(e.clone()));
        }
        let key = (w, t.id);
        let ok = self.results.ops.get(&key).map_or(0, Vec::len);
        let last_error = self
            .results
            .errors
            .get(&key)
            .and_then(|e| e.first())
            .cloned();
        match median(self.results.ops.get(&key)) {
            None => {
                let e = last_error.unwrap_or_else(|| "no run".into());
                format!("n/a ({})", notes.add(format!("{} {col}: {e}", t.id.name())))
            }
            Some(m) if ok < self.opts.rounds => {
                let e = last_error.unwrap_or_default();
                let n = notes.add(format!(
                    "{} {col}: {ok}/{} runs ok; first error: {e}",
                    t.id.name(),
                    self.opts.rounds
                ));
                format!("{}* ({n})", human(m))
            }
            Some(m) => human(m),
        }
    }

    /// Memory per idle session; a proxy's kernel share is its row minus direct Redis on the
    /// same client transport (both include the bench's client socket and Redis' own).
    fn idle_section(&self, out: &mut String, notes: &mut Notes) {
        if self.idle.is_empty() {
            return;
        }
        let _ = writeln!(
            out,
            "\nmemory per idle session (sessions open at once, one PING each; KiB per session)"
        );
        let _ = writeln!(
            out,
            "{:<NAME_W$}{:>10}{:>12}{:>12}{:>16}{:>8}",
            "target", "sessions", "user RSS", "kernel", "kernel - direct", "pipes"
        );
        let direct = |id: TargetId| {
            let base = id.direct();
            self.idle
                .get(&base)
                .and_then(|r| r.as_ref().ok())
                .map(|i| i.kernel_kib)
        };
        for (id, result) in self.idle {
            match result {
                Ok(idle) => {
                    let extra = match direct(*id) {
                        Some(base) if !id.name().starts_with("direct") => {
                            format!("{:.1}", idle.kernel_kib - base)
                        }
                        _ => "-".into(),
                    };
                    let _ = writeln!(
                        out,
                        "{:<NAME_W$}{:>10}{:>12.1}{:>12.1}{extra:>16}{:>8}",
                        id.name(),
                        idle.sessions,
                        idle.user_kib,
                        idle.kernel_kib,
                        idle.pipes
                    );
                }
                Err(e) => {
                    let n = notes.add(format!("{} idle: {e}", id.name()));
                    let _ = writeln!(out, "{:<NAME_W$}{:>10}", id.name(), format!("n/a ({n})"));
                }
            }
        }
        let _ = writeln!(
            out,
            "user RSS: the target process (direct: redis-server); kernel: SUnreclaim, system-wide"
        );
    }

    /// Connection set-up latency and the ordering trial ([`crate::setup`]).
    fn setup_section(&self, out: &mut String, notes: &mut Notes) {
        let s = self.setup;
        if let Some(why) = &s.failed {
            let _ = writeln!(out, "\nconnection set-up: n/a ({why})");
            return;
        }
        if s.rows.is_empty() {
            return;
        }
        let _ = writeln!(
            out,
            "\nconnection set-up: connect() to the first PING's reply, one connection at a time, \
             {} per target per round; median over {} rounds of each round's p50 / p90",
            s.connections, s.rounds
        );
        let _ = writeln!(
            out,
            "ordering: XREADGROUP BLOCK on a new connection through the target, DEL {} ms later on \
             an established one straight to Redis; {} tries per target per round",
            s.delay.as_secs_f64() * 1e3,
            s.tries
        );
        let _ = writeln!(
            out,
            "{:<NAME_W$}{:>10}{:>10}{:>12}{:>12}{:>16}{:>10}",
            "target", "p50 µs", "p90 µs", "p50/haproxy", "p50/direct", "new conn first", "unknown"
        );
        let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
            _ => "-".into(),
        };
        for row in &s.rows {
            let id = row.id;
            let (p50, p90) = (s.median_of(id, false), s.median_of(id, true));
            // One note per row, with every error of its rounds.
            let note = if row.errors.is_empty() {
                String::new()
            } else {
                let text = format!("{} set-up: {}", id.name(), row.errors.join("; "));
                format!(" ({})", notes.add(text))
            };
            let us =
                |v: Option<f64>, note: &str| v.map_or(format!("n/a{note}"), |v| format!("{v:.0}"));
            let o = &row.order;
            let order = if o.tries == 0 {
                "n/a".to_string()
            } else {
                format!("{}/{}", o.new_first, o.tries)
            };
            let _ = writeln!(
                out,
                "{:<NAME_W$}{:>10}{:>10}{:>12}{:>12}{:>16}{:>10}",
                id.name(),
                us(p50, &note),
                us(p90, ""),
                ratio(p50, s.median_of(id.haproxy(), false)),
                ratio(p50, s.median_of(id.direct(), false)),
                order,
                o.unknown
            );
            if p50.is_some() && !note.is_empty() {
                let _ = writeln!(out, "{:<NAME_W$}  not every run or try succeeded{note}", "");
            }
            for reply in &o.unknown_replies {
                let _ = writeln!(out, "{:<NAME_W$}  unknown reply: {reply}", "");
            }
        }
        let _ = writeln!(
            out,
            "new conn first: its XREADGROUP reached Redis before the DEL (-UNBLOCKED); \
             otherwise -NOGROUP (DEL first)"
        );
    }

    /// exec → READY=1 and the stripped binary's size.
    fn startup_section(&self, out: &mut String) {
        let s = self.startup;
        let warm = median(Some(&s.warm_ms));
        let _ = writeln!(
            out,
            "\nexec -> READY=1: cold (creates the CA) {}, warm median {} over {} starts ({})",
            s.cold_ms.map_or("n/a".into(), |ms| format!("{ms:.0} ms")),
            warm.map_or("n/a".into(), |ms| format!("{ms:.0} ms")),
            s.warm_ms.len(),
            s.warm_ms
                .iter()
                .map(|ms| format!("{ms:.0}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        for e in &s.errors {
            let _ = writeln!(out, "  error: {e}");
        }
        let size = |r: &Result<u64, String>| match r {
            Ok(b) => format!("{b} bytes ({:.2} MiB)", *b as f64 / 1048576.0),
            Err(e) => format!("n/a ({e})"),
        };
        let _ = writeln!(
            out,
            "bastion binary: stripped {}; as built (bench profile, debug = 1) {}",
            size(&self.binary.stripped_bytes),
            size(&self.binary.built_bytes)
        );
    }

    fn bastion_section(&self, out: &mut String) {
        let Some(b) = &self.bastion else {
            let _ = writeln!(out, "bastion: not running (see the notes)");
            return;
        };
        match b.memory {
            Some(m) => {
                let _ = writeln!(
                    out,
                    "bastion memory after the run: peak RSS (VmHWM) {} MiB, RSS now {} MiB",
                    mib(m.peak_kb),
                    mib(m.now_kb)
                );
            }
            None => {
                let _ = writeln!(out, "bastion memory: n/a (process gone)");
            }
        }
        if let Some(h) = self.haproxy_hwm {
            let _ = writeln!(
                out,
                "haproxy memory, for scale: peak RSS (VmHWM) {} MiB",
                mib(h.peak_kb)
            );
        }
        let _ = writeln!(
            out,
            "bastion sessions by relay path (session.end events in its log):"
        );
        if b.paths.is_empty() {
            let _ = writeln!(out, "  none logged");
        }
        for (paths, n) in &b.paths {
            let paths = if paths.is_empty() {
                "(no path_* fields)"
            } else {
                paths
            };
            let _ = writeln!(out, "  {n:>6}  {paths}");
        }
        let _ = writeln!(
            out,
            "bastion log: {} WARN, {} ERROR lines",
            b.warnings, b.errors
        );
        if let Some(p) = &b.last_problem {
            let _ = writeln!(out, "  last: {p}");
        }
    }
}

fn header(out: &mut String, first: &str) {
    let _ = write!(out, "{first:<NAME_W$}");
    for w in WORKLOADS {
        let _ = write!(out, "{:>CELL_W$}", w.label);
    }
    out.push('\n');
}

/// Errors printed once below the tables and referred to as `eN` in the cells.
#[derive(Default)]
struct Notes(Vec<String>);

impl Notes {
    fn add(&mut self, text: String) -> String {
        let i = self.0.iter().position(|n| *n == text).unwrap_or_else(|| {
            self.0.push(text);
            self.0.len() - 1
        });
        format!("e{}", i + 1)
    }

    fn render(&self, out: &mut String) {
        if self.0.is_empty() {
            return;
        }
        let _ = writeln!(out, "\nnotes:");
        for (i, n) in self.0.iter().enumerate() {
            let _ = writeln!(out, "  e{}: {n}", i + 1);
        }
    }
}

pub(crate) fn median(values: Option<&Vec<f64>>) -> Option<f64> {
    let mut v = values?.clone();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

pub(crate) fn human(ops: f64) -> String {
    if ops >= 1e6 {
        format!("{:.2}M", ops / 1e6)
    } else {
        format!("{:.1}k", ops / 1e3)
    }
}

fn mib(kb: u64) -> String {
    format!("{:.1}", kb as f64 / 1024.0)
}

/// Versions, CPU count and load: the context a reader needs to trust (or not) the numbers.
pub(crate) fn environment(bed: &TestBed) -> String {
    let first_line = |prog: &str, arg: &str| -> String {
        Command::new(prog)
            .arg(arg)
            .output()
            .ok()
            .and_then(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()
                    .map(str::to_string)
            })
            .unwrap_or_else(|| format!("{prog}: ?"))
    };
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    let bastion_state = match &bed.bastion {
        Ok(_) => "bastion up".to_string(),
        Err(_) => "bastion DOWN".to_string(),
    };
    format!(
        "{} | {} | {} | {cpus} CPUs, loadavg {} before the rounds | {bastion_state}",
        first_line("redis-server", "--version")
            .split(" sha=")
            .next()
            .unwrap_or(""),
        first_line("haproxy", "-v")
            .split(" - ")
            .next()
            .unwrap_or(""),
        first_line("redis-benchmark", "--version"),
        load.join(" ")
    )
}
