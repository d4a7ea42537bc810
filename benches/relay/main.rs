//! Relay throughput: `cargo bench --bench relay [-- --rounds N --scale F --timeout SECS --targets a,b]`.
//!
//! Starts a real `redis-server`, an HAProxy (the performance peer: `mode tcp`, `option
//! splice-auto`) and the release-built bastion, all on loopback in a temp dir. Then runs
//! `redis-benchmark` against every target in interleaved rounds (each round runs every target once
//! per workload, in a rotated order) and prints the median ops/s per target and the ratios that
//! matter: bastion / direct Redis and bastion / HAProxy on the same transport. Before the rounds,
//! [`idle`] measures the user and kernel memory each target holds per idle session; after them,
//! [`churn`] the connection rate with upstream auth and [`setup`] one new connection's set-up time
//! and whether its first command reaches Redis in the order it was sent.
//!
//! It never asserts on time. The machine is shared and noisy, so the output is numbers for a human
//! (or a CI log) to compare, measured side by side in one process. A target that cannot start or
//! fails its check is printed as `n/a (eN)` with the error below the table; the rest still runs.
//! Every run is also checked against Redis' own counters, so a proxy that answers errors instead
//! of relaying cannot post a good number.
//!
//! This file: options, workloads, targets and the rounds. [`testbed`] starts what is measured
//! (Redis and the bastion through the integration tests' fixtures in `tests/support/`, HAProxy
//! itself); [`idle`] opens the idle sessions; [`report`] prints the tables, [`results`] writes
//! them as JSON and the README block.

// The integration tests' fixtures. Cargo builds this `harness = false` target with `cfg(test)`
// but without the test harness, so the fixtures' own `#[cfg(test)]` modules compile with their
// `#[test]` functions stripped, leaving those modules' imports unused.
#[path = "../../tests/support/mod.rs"]
#[allow(unused_imports)]
mod support;

mod chart;
mod churn;
mod idle;
mod report;
mod results;
mod setup;
mod startup;
mod testbed;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use report::{human, Report};
use support::clients::{Endpoint, REDIS_BENCHMARK};
use support::process::{try_run, NotRun};
use support::redis::RedisServer;
use testbed::{bastion_exit, catch, TestBed};

/// The key redis-benchmark uses when `-r` is not given (the placeholder stays literal).
const BENCH_KEY: &str = "key:__rand_int__";

fn main() {
    let opts = match Options::parse(std::env::args().skip(1)) {
        Ok(opts) => opts,
        Err(e) => {
            eprintln!("relay bench: {e:#}\n\n{USAGE}");
            std::process::exit(2);
        }
    };
    if let Some(json) = &opts.from_json {
        // Redraw the chart and the README table from a saved run; nothing is measured.
        if let Err(e) = results::regenerate(json, &opts) {
            eprintln!("relay bench: {e:#}");
            std::process::exit(1);
        }
        return;
    }
    let started = Instant::now();
    let started_at = std::time::SystemTime::now();
    let load_before = results::loadavg();
    let tmp = tempfile::Builder::new()
        .prefix("bastion-relay-bench-")
        .tempdir()
        .expect("creating a temp dir");
    // No redis-server, haproxy or bastion outlives the bench, even one killed with SIGKILL.
    support::process::children_die_with_parent();
    // The idle sessions need descriptors, here and in every child.
    let fd_limit = raise_fd_limit();
    let mut bed = TestBed::start(tmp.path(), fd_limit);
    // `--churn-auth`: only the churn table (and no result files: it is not a full run).
    let full = !opts.churn_auth;
    let targets = if full { bed.targets(&opts) } else { Vec::new() };
    let env = report::environment(&bed);
    let idle = if full {
        bed.measure_idle(&targets, opts.idle, fd_limit)
    } else {
        Default::default()
    };
    let results = if full {
        run_rounds(&opts, &mut bed, &targets)
    } else {
        Results::default()
    };
    let churn = churn::run(&opts, &bed, tmp.path());
    if !full {
        print!("{}", churn.render());
        return;
    }
    let setup = setup::run(&opts, &bed, &targets);
    let startup = match &bed.redis {
        Ok(redis) => startup::measure(&tmp.path().join("startup"), redis.plain_addr(), opts.starts),
        Err(e) => startup::Startup::failed(e.clone()),
    };
    let binary = startup::binary_size(tmp.path());
    let report = Report {
        opts: &opts,
        targets: &targets,
        results: &results,
        idle: &idle,
        env,
        bastion: bed.bastion_summary(),
        haproxy_hwm: bed.haproxy_memory(),
        churn: &churn,
        setup: &setup,
        startup: &startup,
        binary: &binary,
        elapsed: started.elapsed(),
    };
    print!("{}", report.render());
    let json = results::to_json(&report, started_at, load_before, results::loadavg());
    if let Err(e) = results::save(&json, &opts) {
        eprintln!("relay bench: saving the results: {e:#}");
    }
    if opts.keep {
        bed.keep_files(tmp.path());
    }
    drop(bed); // every child is killed and reaped before the temp dir goes
    if opts.keep {
        println!("kept {}", tmp.keep().display());
    }
}

const USAGE: &str = "usage: cargo bench --bench relay [-- OPTIONS]
  --rounds N      interleaved rounds (default 5); medians are taken over them
  --scale F       multiply every request count by F (default 1.0; 0.2 for a quick look)
  --timeout SECS  kill a redis-benchmark run after this long (default 60)
  --targets LIST  comma-separated subset of: direct-tcp, haproxy-tcp, direct-unix, haproxy-unix,
                  bastion-unix, bastion-unix-pass, direct-tls, haproxy-tls, bastion-tls,
                  bastion-tls-pass (direct-tcp always runs)
  --idle N        idle sessions per target for the memory table (default 2000; 0: skip); all stay
                  open until every target is measured, so N is cut to fit the fd limit
  --setup N       new connections per target per round timed from connect() to the first PING's
                  reply (default 300; 0: skip the set-up table and the ordering trial)
  --order-tries N ordering tries per target per round: XREADGROUP on a new connection through the
                  target vs DEL on an established one to Redis (default 20; 0: skip)
  --order-delay MS  how long after the new connection is made the DEL is sent (default 1)
  --keep          keep the temp dir (configs, redis/haproxy/bastion logs) and print its path
  --starts N      bastion starts timed for exec -> READY=1 (default 5, after one cold start)
  --results DIR   where relay-<UTC>.json, latest.json and latest.png go (default benches/results)
  --write-readme  also rewrite README.md's table between <!-- bench:begin --> and <!-- bench:end -->
  --from-json F   measure nothing: redraw the chart and (with --write-readme) the README table
                  from a saved run's JSON
  --churn-auth    only connection churn (-k 0) with upstream auth none / password / iam; prints
                  its table and writes no result files";

struct Options {
    rounds: usize,
    scale: f64,
    timeout: Duration,
    only: Option<Vec<TargetId>>,
    idle: usize,
    setup: usize,
    order_tries: usize,
    order_delay: Duration,
    keep: bool,
    churn_auth: bool,
    starts: usize,
    results_dir: PathBuf,
    write_readme: bool,
    from_json: Option<PathBuf>,
}

impl Options {
    fn parse(args: impl Iterator<Item = String>) -> Result<Options> {
        let mut opts = Options {
            rounds: 5,
            scale: 1.0,
            timeout: Duration::from_secs(60),
            only: None,
            idle: 2_000,
            setup: 300,
            order_tries: 20,
            order_delay: Duration::from_millis(1),
            keep: false,
            churn_auth: false,
            starts: 5,
            results_dir: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/benches/results")),
            write_readme: false,
            from_json: None,
        };
        let mut args = args;
        while let Some(arg) = args.next() {
            let mut value =
                |name: &str| args.next().with_context(|| format!("{name} needs a value"));
            match arg.as_str() {
                // cargo passes `--bench` to every bench binary.
                "--bench" => {}
                "--rounds" => {
                    opts.rounds = value("--rounds")?.parse().context("--rounds")?;
                    if opts.rounds == 0 {
                        bail!("--rounds must be at least 1");
                    }
                }
                "--scale" => {
                    opts.scale = value("--scale")?.parse().context("--scale")?;
                    if opts.scale.is_nan() || opts.scale <= 0.0 {
                        bail!("--scale must be positive");
                    }
                }
                "--timeout" => {
                    let secs: u64 = value("--timeout")?.parse().context("--timeout")?;
                    opts.timeout = Duration::from_secs(secs);
                }
                "--targets" => {
                    let list = value("--targets")?;
                    let ids = list
                        .split(',')
                        .map(|name| {
                            TargetId::ALL
                                .into_iter()
                                .find(|t| t.name() == name.trim())
                                .with_context(|| format!("--targets: unknown target '{name}'"))
                        })
                        .collect::<Result<Vec<_>>>()?;
                    opts.only = Some(ids);
                }
                "--idle" => opts.idle = value("--idle")?.parse().context("--idle")?,
                "--setup" => opts.setup = value("--setup")?.parse().context("--setup")?,
                "--order-tries" => {
                    opts.order_tries = value("--order-tries")?.parse().context("--order-tries")?;
                }
                "--order-delay" => {
                    let ms: f64 = value("--order-delay")?.parse().context("--order-delay")?;
                    opts.order_delay = Duration::try_from_secs_f64(ms / 1e3)
                        .context("--order-delay must be a number of milliseconds, 0 or more")?;
                }
                "--keep" => opts.keep = true,
                "--churn-auth" => opts.churn_auth = true,
                "--starts" => opts.starts = value("--starts")?.parse().context("--starts")?,
                "--results" => opts.results_dir = value("--results")?.into(),
                "--write-readme" => opts.write_readme = true,
                "--from-json" => opts.from_json = Some(value("--from-json")?.into()),
                "-h" | "--help" => {
                    println!("{USAGE}");
                    std::process::exit(0);
                }
                other => eprintln!("relay bench: ignoring argument '{other}'"),
            }
        }
        Ok(opts)
    }

    fn wants(&self, id: TargetId) -> bool {
        id == TargetId::DirectTcp || self.only.as_ref().is_none_or(|ids| ids.contains(&id))
    }
}

// ---------------------------------------------------------------------------------------------
// Workloads and targets
// ---------------------------------------------------------------------------------------------

/// One redis-benchmark invocation, one test: a column of the tables.
struct Workload {
    label: &'static str,
    /// `-t`: `get` or `set`.
    test: &'static str,
    clients: u32,
    pipeline: u32,
    /// Bytes of the value: written by SET (`-d`), or put in place before a GET run.
    value_size: usize,
    requests: u64,
    /// Keep connections open (`-k 1`, redis-benchmark's default) or reconnect for every request
    /// (`-k 0`: connection churn).
    keepalive: bool,
    /// Requests on TLS targets. redis-benchmark's benchmark connections do not set TCP_NODELAY;
    /// OpenSSL writes a 100 kB SET as 16 kB records, so Nagle holds the tail until a delayed ACK
    /// (~40 ms): the client, not the server, sets the pace (forcing TCP_NODELAY into the client
    /// with LD_PRELOAD lifts direct-tls SET 100kB from 1.6k to 5.5k ops/s). Same rate with fewer
    /// requests keeps the bench short; the ratio to direct-tls (same artefact) stays meaningful.
    tls_requests: u64,
}

/// The brief's `-t get -c 50`, `-t get -c 50 -P 16` and `-t set,get -d 100000 -c 10`, the last
/// split in two so each test gets its own count, and connection churn (`-k 0`, a new connection
/// per PING); counts scaled so all of it fits in ~5 minutes. The 100 kB rows run 24,000 requests
/// (1–3 s): this machine slows down as a whole now and then for about a second (20,000 SETs
/// straight to Redis took 0.53–0.96 s in consecutive runs; a slow round through the bastion cost
/// the box twice the CPU for the same requests, redis-benchmark's own system time too), and at
/// 8,000 requests such a spell made a whole round look half as fast — more often for the faster
/// targets.
const WORKLOADS: &[Workload] = &[
    Workload {
        label: "GET c=50",
        test: "get",
        clients: 50,
        pipeline: 1,
        value_size: 3, // redis-benchmark's default -d
        requests: 80_000,
        keepalive: true,
        tls_requests: 80_000,
    },
    Workload {
        label: "GET c=50 P=16",
        test: "get",
        clients: 50,
        pipeline: 16,
        value_size: 3,
        requests: 500_000,
        keepalive: true,
        tls_requests: 500_000,
    },
    Workload {
        label: "SET 100kB c=10",
        test: "set",
        clients: 10,
        pipeline: 1,
        value_size: 100_000,
        requests: 24_000,
        keepalive: true,
        tls_requests: 800,
    },
    Workload {
        label: "GET 100kB c=10",
        test: "get",
        clients: 10,
        pipeline: 1,
        value_size: 100_000,
        requests: 24_000,
        keepalive: true,
        tls_requests: 8_000,
    },
    Workload {
        label: "PING k=0 c=50",
        test: "ping_mbulk",
        clients: 50,
        pipeline: 1,
        value_size: 3,
        requests: 20_000,
        keepalive: false,
        // A TLS handshake per request.
        tls_requests: 4_000,
    },
];

impl Workload {
    fn requests(&self, opts: &Options, endpoint: &Endpoint) -> u64 {
        let n = match endpoint {
            Endpoint::Tls { .. } => self.tls_requests,
            _ => self.requests,
        };
        ((n as f64 * opts.scale) as u64).max(100)
    }

    fn args(&self, requests: u64) -> Vec<String> {
        let mut args: Vec<String> = ["--csv", "-t", self.test, "-c"].map(String::from).into();
        args.push(self.clients.to_string());
        args.extend([
            "-n".into(),
            requests.to_string(),
            "-d".into(),
            self.value_size.to_string(),
        ]);
        if self.pipeline > 1 {
            args.extend(["-P".into(), self.pipeline.to_string()]);
        }
        if !self.keepalive {
            args.extend(["-k".into(), "0".into()]);
        }
        args
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TargetId {
    DirectTcp,
    HaproxyTcp,
    DirectUnix,
    HaproxyUnix,
    /// The bastion's default `relay = "guard"`.
    BastionUnix,
    /// `relay = "passthrough"`.
    BastionUnixPass,
    /// `relay = "inspect"` on a bastion of its own, per-command audit sampled at 1 %.
    BastionUnixInspect,
    DirectTls,
    HaproxyTls,
    BastionTls,
    BastionTlsPass,
}

impl TargetId {
    const ALL: [TargetId; 11] = [
        TargetId::DirectTcp,
        TargetId::HaproxyTcp,
        TargetId::DirectUnix,
        TargetId::HaproxyUnix,
        TargetId::BastionUnix,
        TargetId::BastionUnixPass,
        TargetId::BastionUnixInspect,
        TargetId::DirectTls,
        TargetId::HaproxyTls,
        TargetId::BastionTls,
        TargetId::BastionTlsPass,
    ];

    fn name(self) -> &'static str {
        match self {
            TargetId::DirectTcp => "direct-tcp",
            TargetId::HaproxyTcp => "haproxy-tcp",
            TargetId::DirectUnix => "direct-unix",
            TargetId::HaproxyUnix => "haproxy-unix",
            TargetId::BastionUnix => "bastion-unix",
            TargetId::BastionUnixPass => "bastion-unix-pass",
            TargetId::BastionUnixInspect => "bastion-unix-inspect",
            TargetId::DirectTls => "direct-tls",
            TargetId::HaproxyTls => "haproxy-tls",
            TargetId::BastionTls => "bastion-tls",
            TargetId::BastionTlsPass => "bastion-tls-pass",
        }
    }

    fn is_bastion(self) -> bool {
        matches!(
            self,
            TargetId::BastionUnix
                | TargetId::BastionUnixPass
                | TargetId::BastionUnixInspect
                | TargetId::BastionTls
                | TargetId::BastionTlsPass
        )
    }

    /// How the client reaches it: `tcp`, `unix` or `tls`.
    fn transport(self) -> &'static str {
        match self {
            TargetId::DirectTcp | TargetId::HaproxyTcp => "tcp",
            TargetId::DirectUnix
            | TargetId::HaproxyUnix
            | TargetId::BastionUnix
            | TargetId::BastionUnixPass
            | TargetId::BastionUnixInspect => "unix",
            TargetId::DirectTls
            | TargetId::HaproxyTls
            | TargetId::BastionTls
            | TargetId::BastionTlsPass => "tls",
        }
    }

    /// Redis itself on the same client transport: every target's "ratio to direct".
    fn direct(self) -> TargetId {
        match self.transport() {
            "unix" => TargetId::DirectUnix,
            "tls" => TargetId::DirectTls,
            _ => TargetId::DirectTcp,
        }
    }

    /// HAProxy on the same client transport: every target's "ratio to HAProxy".
    fn haproxy(self) -> TargetId {
        match self.transport() {
            "unix" => TargetId::HaproxyUnix,
            "tls" => TargetId::HaproxyTls,
            _ => TargetId::HaproxyTcp,
        }
    }
}

/// The ratios printed per workload: (numerator, denominator). The bastion's Unix socket is
/// compared with the same topology (Unix in front, TCP to Redis: HAProxy) and with the ideal
/// (Redis' own socket); its mTLS listener with plaintext Redis (the brief's reference), Redis' own
/// TLS (same client, same TLS cost on one hop) and HAProxy terminating TLS. The command guard
/// (the default) is also compared with `relay = "passthrough"` and `relay = "inspect"` (audit
/// sampled at 1 %) on the same listener.
const RATIOS: &[(TargetId, TargetId)] = &[
    (TargetId::HaproxyTcp, TargetId::DirectTcp),
    (TargetId::BastionUnix, TargetId::DirectUnix),
    (TargetId::BastionUnix, TargetId::HaproxyUnix),
    (TargetId::BastionUnix, TargetId::BastionUnixPass),
    (TargetId::BastionUnixPass, TargetId::HaproxyUnix),
    (TargetId::BastionUnixInspect, TargetId::BastionUnixPass),
    (TargetId::BastionUnixInspect, TargetId::BastionUnix),
    (TargetId::BastionUnixInspect, TargetId::HaproxyUnix),
    (TargetId::BastionTls, TargetId::DirectTcp),
    (TargetId::BastionTls, TargetId::DirectTls),
    (TargetId::BastionTls, TargetId::HaproxyTls),
    (TargetId::BastionTls, TargetId::BastionTlsPass),
];

struct Target {
    id: TargetId,
    /// `Err`: why this target cannot be measured at all (printed instead of numbers).
    endpoint: Result<Endpoint, String>,
}

// ---------------------------------------------------------------------------------------------
// Running the rounds
// ---------------------------------------------------------------------------------------------

/// Per (workload index, target): the ops/s of every successful run, the errors of the others,
/// and for each successful run the CPU the process serving the target (the proxy; direct:
/// redis-server) spent per request, µs — what a slow spell of the machine distorts less than
/// ops/s, though it still inflates everyone's system time.
#[derive(Default)]
struct Results {
    ops: BTreeMap<(usize, TargetId), Vec<f64>>,
    errors: BTreeMap<(usize, TargetId), Vec<String>>,
    cpu_us: BTreeMap<(usize, TargetId), Vec<f64>>,
}

fn run_rounds(opts: &Options, bed: &mut TestBed, targets: &[Target]) -> Results {
    let mut results = Results::default();
    let Ok(redis) = &bed.redis else {
        return results;
    };
    // A target that hung once on a workload is not run again on it: every later run would burn
    // the whole timeout too.
    let mut hung: BTreeMap<(usize, TargetId), String> = BTreeMap::new();
    let live: Vec<(TargetId, &Endpoint)> = targets
        .iter()
        .filter_map(|t| Some((t.id, t.endpoint.as_ref().ok()?)))
        .collect();
    let redis_pid = bed.redis_pid();
    for round in 0..opts.rounds {
        eprintln!("relay bench: round {}/{}", round + 1, opts.rounds);
        for (w, workload) in WORKLOADS.iter().enumerate() {
            for i in 0..live.len() {
                // Rotate the order every round so no target always follows the same neighbour.
                let (id, endpoint) = live[(i + round) % live.len()];
                let run_started = Instant::now();
                let pid = bed.pid_of(id, redis_pid);
                let cpu_before = pid.and_then(testbed::cpu_seconds);
                let outcome = if let Some(why) = hung.get(&(w, id)) {
                    Err(RunError::Skipped(why.clone()))
                } else if let (true, Some(dead)) = (id.is_bastion(), bastion_exit(&mut bed.bastion))
                {
                    Err(RunError::Failed(dead))
                } else {
                    // A fixture call that panics (redis-cli hung) fails this run, not the bench.
                    catch(|| run_one(opts, redis, workload, endpoint))
                        .unwrap_or_else(|e| Err(RunError::Failed(e)))
                };
                match outcome {
                    Ok(ops) => {
                        let secs = run_started.elapsed().as_secs_f64();
                        let cpu = cpu_before.zip(pid.and_then(testbed::cpu_seconds));
                        if let Some((before, after)) = cpu {
                            let requests = workload.requests(opts, endpoint) as f64;
                            results
                                .cpu_us
                                .entry((w, id))
                                .or_default()
                                .push((after - before) * 1e6 / requests);
                        }
                        eprintln!(
                            "  {:<13} {:<15} {:>8} ops/s ({secs:.1} s)",
                            id.name(),
                            workload.label,
                            human(ops)
                        );
                        results.ops.entry((w, id)).or_default().push(ops);
                    }
                    Err(e) => {
                        if let RunError::TimedOut(msg) = &e {
                            hung.insert((w, id), msg.clone());
                        }
                        eprintln!("  {:<13} {:<15} {e}", id.name(), workload.label);
                        results
                            .errors
                            .entry((w, id))
                            .or_default()
                            .push(e.to_string());
                    }
                }
            }
        }
    }
    results
}

#[derive(Debug, thiserror::Error)]
enum RunError {
    #[error("{0}")]
    Failed(String),
    #[error("{0}")]
    TimedOut(String),
    #[error("skipped: {0}")]
    Skipped(String),
}

/// One redis-benchmark run against `endpoint`: its ops/s, once Redis' own counters agree that
/// the commands arrived.
fn run_one(
    opts: &Options,
    redis: &RedisServer,
    workload: &Workload,
    endpoint: &Endpoint,
) -> Result<f64, RunError> {
    let failed = |e: anyhow::Error| RunError::Failed(format!("{e:#}"));
    let writes = workload.test == "set";
    // Known state: a GET run reads a value of the workload's size; a SET run starts without the
    // key and must leave the full value in Redis (proof that its SETs went through the target).
    if writes {
        call(redis, &["DEL", BENCH_KEY]).map_err(failed)?;
    } else {
        let value = "x".repeat(workload.value_size);
        call(redis, &["SET", BENCH_KEY, &value]).map_err(failed)?;
    }
    let before = commands_processed(redis).map_err(failed)?;

    let requests = workload.requests(opts, endpoint);
    let mut cmd = Command::new(REDIS_BENCHMARK);
    cmd.args(endpoint.cli_args()).args(workload.args(requests));
    let out = try_run(&mut cmd, None, opts.timeout).map_err(|e| match e {
        NotRun::HangGuard { .. } => RunError::TimedOut(format!(
            "redis-benchmark timed out after {:?}",
            opts.timeout
        )),
        NotRun::Spawn { error, .. } => {
            RunError::Failed(format!("running redis-benchmark: {error}"))
        }
    })?;
    if !out.status.success() {
        return Err(RunError::Failed(format!(
            "redis-benchmark {}: {}",
            out.status,
            last_line(&out.stderr())
                .or(last_line(&out.stdout()))
                .unwrap_or("no output")
        )));
    }
    let ops = parse_csv(&out.stdout(), workload.test).map_err(failed)?;

    // redis-benchmark counts error replies as answers: a proxy answering `-ERR` would look fast.
    let processed = commands_processed(redis)
        .map_err(failed)?
        .saturating_sub(before);
    if processed < requests {
        return Err(RunError::Failed(format!(
            "Redis processed only {processed} of the {requests} commands sent (errors answered by the proxy?)"
        )));
    }
    if writes {
        let len = call(redis, &["STRLEN", BENCH_KEY]).map_err(failed)?;
        if len != workload.value_size.to_string() {
            return Err(RunError::Failed(format!(
                "after the run STRLEN {BENCH_KEY} is {len:?}, not {}",
                workload.value_size
            )));
        }
    }
    Ok(ops)
}

/// One command straight to Redis (redis-cli as the fixture's admin user): its trimmed reply.
fn call(redis: &RedisServer, args: &[&str]) -> Result<String> {
    let out = redis.cli(args);
    if !out.status.success() {
        bail!(
            "redis-cli {}: {}",
            args[0],
            last_line(&out.all()).unwrap_or("no output")
        );
    }
    Ok(out.stdout().trim_end_matches('\n').to_string())
}

/// `total_commands_processed` from INFO stats.
fn commands_processed(redis: &RedisServer) -> Result<u64> {
    call(redis, &["INFO", "stats"])?
        .lines()
        .find_map(|l| l.strip_prefix("total_commands_processed:"))
        .and_then(|n| n.trim().parse().ok())
        .context("INFO stats has no total_commands_processed")
}

/// The `"test","rps",...` header, then a `"GET","164203.61",...` line.
fn parse_csv(stdout: &str, test: &str) -> Result<f64> {
    for line in stdout
        .lines()
        .skip_while(|l| !l.starts_with("\"test\""))
        .skip(1)
    {
        let mut cols = line.split(',').map(|c| c.trim().trim_matches('"'));
        if let (Some(name), Some(rps)) = (cols.next(), cols.next()) {
            if name.eq_ignore_ascii_case(test) {
                return rps
                    .parse()
                    .with_context(|| format!("rps in csv line '{line}'"));
            }
        }
    }
    bail!(
        "no '{test}' line in redis-benchmark output: {}",
        stdout.trim()
    )
}

/// Raise this process's `RLIMIT_NOFILE` soft limit to its hard limit (children inherit it) with
/// util-linux's `prlimit`, which needs no `unsafe` here; the idle sessions need the room. Returns
/// the limit now in force. (Raising the hard limit itself takes `CAP_SYS_RESOURCE`, which a
/// container may not grant: the idle table then runs fewer sessions, see [`idle::fit`].)
fn raise_fd_limit() -> u64 {
    let Some((soft, hard)) = fd_limits() else {
        return 1024;
    };
    if soft < hard {
        let pid = std::process::id().to_string();
        let nofile = format!("--nofile={hard}:{hard}");
        match Command::new("prlimit")
            .args(["--pid", &pid, &nofile])
            .status()
        {
            Ok(status) if status.success() => {}
            Ok(status) => eprintln!("relay bench: prlimit {nofile}: {status}"),
            Err(e) => eprintln!("relay bench: prlimit {nofile}: {e}"),
        }
    }
    fd_limits().map_or(soft, |(soft, _)| soft)
}

/// (soft, hard) `Max open files` from /proc/self/limits.
fn fd_limits() -> Option<(u64, u64)> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let mut numbers = line["Max open files".len()..].split_whitespace();
    let mut next = || numbers.next()?.parse().ok();
    Some((next()?, next()?))
}

fn last_line(s: &str) -> Option<&str> {
    s.lines().map(str::trim).rfind(|l| !l.is_empty())
}
