//! Relay throughput: `cargo bench --bench relay [-- --rounds N --scale F --timeout SECS --targets a,b]`.
//!
//! Starts a real `redis-server`, an HAProxy (the performance peer: `mode tcp`, `option
//! splice-auto`) and the release-built bastion, all on loopback in a temp dir. Then runs
//! `redis-benchmark` against every target in interleaved rounds (each round runs every target once
//! per workload, in a rotated order) and prints the median ops/s per target and the ratios that
//! matter: bastion / direct Redis and bastion / HAProxy on the same transport.
//!
//! It never asserts on time. The machine is shared and noisy, so the output is numbers for a human
//! (or a CI log) to compare, measured side by side in one process. A target that cannot start or
//! fails its check is printed as `n/a (eN)` with the error below the table; the rest still runs.
//! Every run is also checked against Redis' own counters, so a proxy that answers errors instead
//! of relaying cannot post a good number.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};

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
    let started = Instant::now();
    let tmp = tempfile::Builder::new()
        .prefix("bastion-relay-bench-")
        .tempdir()
        .expect("creating a temp dir");
    let bed = TestBed::start(tmp.path());
    let targets = bed.targets(&opts);
    let env = environment(&bed);
    let results = run_rounds(&opts, &bed, &targets);
    let report = Report {
        opts: &opts,
        targets: &targets,
        results: &results,
        env,
        bastion: bed.bastion.as_ref().ok().map(|b| b.summary()),
        haproxy_hwm: bed.haproxy.as_ref().ok().and_then(|h| h.proc.memory()),
        elapsed: started.elapsed(),
    };
    print!("{}", report.render());
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
                  bastion-unix, direct-tls, haproxy-tls, bastion-tls (direct-tcp always runs)
  --keep          keep the temp dir (configs, redis/haproxy/bastion logs) and print its path";

struct Options {
    rounds: usize,
    scale: f64,
    timeout: Duration,
    only: Option<Vec<TargetId>>,
    keep: bool,
}

impl Options {
    fn parse(args: impl Iterator<Item = String>) -> Result<Options> {
        let mut opts = Options {
            rounds: 5,
            scale: 1.0,
            timeout: Duration::from_secs(60),
            only: None,
            keep: false,
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
                "--keep" => opts.keep = true,
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
    /// Requests on TLS targets. redis-benchmark's benchmark connections do not set TCP_NODELAY;
    /// OpenSSL writes a 100 kB SET as 16 kB records, so Nagle holds the tail until a delayed ACK
    /// (~40 ms): the client, not the server, sets the pace (forcing TCP_NODELAY into the client
    /// with LD_PRELOAD lifts direct-tls SET 100kB from 1.6k to 5.5k ops/s). Same rate with fewer
    /// requests keeps the bench short; the ratio to direct-tls (same artefact) stays meaningful.
    tls_requests: u64,
}

/// The brief's `-t get -c 50`, `-t get -c 50 -P 16` and `-t set,get -d 100000 -c 10`, the last
/// split in two so each test gets its own count; counts scaled so all of it fits in ~5 minutes.
const WORKLOADS: &[Workload] = &[
    Workload {
        label: "GET c=50",
        test: "get",
        clients: 50,
        pipeline: 1,
        value_size: 3, // redis-benchmark's default -d
        requests: 80_000,
        tls_requests: 80_000,
    },
    Workload {
        label: "GET c=50 P=16",
        test: "get",
        clients: 50,
        pipeline: 16,
        value_size: 3,
        requests: 500_000,
        tls_requests: 500_000,
    },
    Workload {
        label: "SET 100kB c=10",
        test: "set",
        clients: 10,
        pipeline: 1,
        value_size: 100_000,
        requests: 8_000,
        tls_requests: 800,
    },
    Workload {
        label: "GET 100kB c=10",
        test: "get",
        clients: 10,
        pipeline: 1,
        value_size: 100_000,
        requests: 8_000,
        tls_requests: 8_000,
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
        args
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TargetId {
    DirectTcp,
    HaproxyTcp,
    DirectUnix,
    HaproxyUnix,
    BastionUnix,
    DirectTls,
    HaproxyTls,
    BastionTls,
}

impl TargetId {
    const ALL: [TargetId; 8] = [
        TargetId::DirectTcp,
        TargetId::HaproxyTcp,
        TargetId::DirectUnix,
        TargetId::HaproxyUnix,
        TargetId::BastionUnix,
        TargetId::DirectTls,
        TargetId::HaproxyTls,
        TargetId::BastionTls,
    ];

    fn name(self) -> &'static str {
        match self {
            TargetId::DirectTcp => "direct-tcp",
            TargetId::HaproxyTcp => "haproxy-tcp",
            TargetId::DirectUnix => "direct-unix",
            TargetId::HaproxyUnix => "haproxy-unix",
            TargetId::BastionUnix => "bastion-unix",
            TargetId::DirectTls => "direct-tls",
            TargetId::HaproxyTls => "haproxy-tls",
            TargetId::BastionTls => "bastion-tls",
        }
    }

    fn is_bastion(self) -> bool {
        matches!(self, TargetId::BastionUnix | TargetId::BastionTls)
    }
}

/// The ratios printed per workload: (numerator, denominator). The bastion's Unix socket is
/// compared with the same topology (Unix in front, TCP to Redis: HAProxy) and with the ideal
/// (Redis' own socket); its mTLS listener with plaintext Redis (the brief's reference), Redis' own
/// TLS (same client, same TLS cost on one hop) and HAProxy terminating TLS.
const RATIOS: &[(TargetId, TargetId)] = &[
    (TargetId::HaproxyTcp, TargetId::DirectTcp),
    (TargetId::BastionUnix, TargetId::DirectUnix),
    (TargetId::BastionUnix, TargetId::HaproxyUnix),
    (TargetId::BastionTls, TargetId::DirectTcp),
    (TargetId::BastionTls, TargetId::DirectTls),
    (TargetId::BastionTls, TargetId::HaproxyTls),
];

/// How redis-benchmark and redis-cli reach a target (the two tools share these flags).
#[derive(Clone)]
enum Endpoint {
    Tcp(u16),
    Unix(PathBuf),
    Tls { port: u16, tls: ClientTls },
}

#[derive(Clone)]
struct ClientTls {
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
}

impl Endpoint {
    fn args(&self) -> Vec<String> {
        let path = |p: &Path| p.display().to_string();
        match self {
            Endpoint::Tcp(port) => vec![
                "-h".into(),
                "127.0.0.1".into(),
                "-p".into(),
                port.to_string(),
            ],
            Endpoint::Unix(p) => vec!["-s".into(), path(p)],
            Endpoint::Tls { port, tls } => vec![
                "--tls".into(),
                "--cert".into(),
                path(&tls.cert),
                "--key".into(),
                path(&tls.key),
                "--cacert".into(),
                path(&tls.ca),
                "-h".into(),
                "127.0.0.1".into(),
                "-p".into(),
                port.to_string(),
            ],
        }
    }
}

struct Target {
    id: TargetId,
    /// `Err`: why this target cannot be measured at all (printed instead of numbers).
    endpoint: Result<Endpoint, String>,
}

// ---------------------------------------------------------------------------------------------
// Running the rounds
// ---------------------------------------------------------------------------------------------

/// Per (workload index, target): the ops/s of every successful run, the errors of the others.
#[derive(Default)]
struct Results {
    ops: BTreeMap<(usize, TargetId), Vec<f64>>,
    errors: BTreeMap<(usize, TargetId), Vec<String>>,
}

fn run_rounds(opts: &Options, bed: &TestBed, targets: &[Target]) -> Results {
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
    for round in 0..opts.rounds {
        eprintln!("relay bench: round {}/{}", round + 1, opts.rounds);
        for (w, workload) in WORKLOADS.iter().enumerate() {
            for i in 0..live.len() {
                // Rotate the order every round so no target always follows the same neighbour.
                let (id, endpoint) = live[(i + round) % live.len()];
                let run_started = Instant::now();
                let outcome = if let Some(why) = hung.get(&(w, id)) {
                    Err(RunError::Skipped(why.clone()))
                } else if let (true, Some(dead)) = (id.is_bastion(), bed.bastion_exit()) {
                    Err(RunError::Failed(dead))
                } else {
                    run_one(opts, redis, workload, endpoint)
                };
                match outcome {
                    Ok(ops) => {
                        let secs = run_started.elapsed().as_secs_f64();
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
    redis: &Redis,
    workload: &Workload,
    endpoint: &Endpoint,
) -> Result<f64, RunError> {
    let failed = |e: anyhow::Error| RunError::Failed(format!("{e:#}"));
    let writes = workload.test == "set";
    // Known state: a GET run reads a value of the workload's size; a SET run starts without the
    // key and must leave the full value in Redis (proof that its SETs went through the target).
    if writes {
        redis.call(&["DEL", BENCH_KEY]).map_err(failed)?;
    } else {
        let value = "x".repeat(workload.value_size);
        redis.call(&["SET", BENCH_KEY, &value]).map_err(failed)?;
    }
    let before = redis.commands_processed().map_err(failed)?;

    let requests = workload.requests(opts, endpoint);
    let mut cmd = Command::new("redis-benchmark");
    cmd.args(endpoint.args()).args(workload.args(requests));
    let out = run_with_timeout(&mut cmd, opts.timeout).map_err(|e| match e {
        Wait::TimedOut => RunError::TimedOut(format!(
            "redis-benchmark timed out after {:?}",
            opts.timeout
        )),
        Wait::Io(e) => RunError::Failed(format!("running redis-benchmark: {e}")),
    })?;
    if !out.status.success() {
        return Err(RunError::Failed(format!(
            "redis-benchmark {}: {}",
            out.status,
            last_line(&out.stderr)
                .or(last_line(&out.stdout))
                .unwrap_or("no output")
        )));
    }
    let ops = parse_csv(&out.stdout, workload.test).map_err(failed)?;

    // redis-benchmark counts error replies as answers: a proxy answering `-ERR` would look fast.
    let processed = redis
        .commands_processed()
        .map_err(failed)?
        .saturating_sub(before);
    if processed < requests {
        return Err(RunError::Failed(format!(
            "Redis processed only {processed} of the {requests} commands sent (errors answered by the proxy?)"
        )));
    }
    if writes {
        let len = redis.call(&["STRLEN", BENCH_KEY]).map_err(failed)?;
        if len != Reply::Int(workload.value_size as i64) {
            return Err(RunError::Failed(format!(
                "after the run STRLEN {BENCH_KEY} is {len:?}, not {}",
                workload.value_size
            )));
        }
    }
    Ok(ops)
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

fn last_line(s: &str) -> Option<&str> {
    s.lines().map(str::trim).rfind(|l| !l.is_empty())
}

// ---------------------------------------------------------------------------------------------
// The test bed: redis-server, HAProxy, bastion
// ---------------------------------------------------------------------------------------------

struct TestBed {
    // Field order is drop order: proxies go before the Redis they point at.
    bastion: Result<Bastion, String>,
    bastion_cert: Result<ClientTls, String>,
    haproxy: Result<Haproxy, String>,
    redis: Result<Redis, String>,
    /// Certificates for Redis' and HAProxy's TLS ports (the bastion uses its own CA).
    certs: Result<Certs, String>,
}

impl TestBed {
    fn start(dir: &Path) -> TestBed {
        let certs = Certs::create(&dir.join("certs"))
            .map_err(|e| format!("TLS certificates (openssl): {e:#}"));
        let redis = Redis::start(&dir.join("redis"), certs.as_ref().ok())
            .map_err(|e| format!("redis-server: {e:#}"));
        let (haproxy, bastion, bastion_cert) = match &redis {
            Ok(r) => {
                let haproxy = Haproxy::start(&dir.join("haproxy"), r.port, certs.as_ref().ok())
                    .map_err(|e| format!("haproxy: {e:#}"));
                let bastion = Bastion::start(&dir.join("bastion"), r.port)
                    .map_err(|e| format!("bastion: {e:#}"));
                let cert = match &bastion {
                    Ok(b) => b
                        .issue_cert()
                        .map_err(|e| format!("bastion cert issue: {e:#}")),
                    Err(e) => Err(e.clone()),
                };
                (haproxy, bastion, cert)
            }
            Err(e) => (Err(e.clone()), Err(e.clone()), Err(e.clone())),
        };
        TestBed {
            bastion,
            bastion_cert,
            haproxy,
            redis,
            certs,
        }
    }

    fn targets(&self, opts: &Options) -> Vec<Target> {
        TargetId::ALL
            .into_iter()
            .filter(|id| opts.wants(*id))
            .map(|id| {
                let endpoint = self.endpoint(id).and_then(|e| {
                    preflight(&e)
                        .map(|()| e)
                        .map_err(|err| format!("{}: preflight: {err:#}", id.name()))
                });
                if let Err(e) = &endpoint {
                    eprintln!("relay bench: {} is n/a: {e}", id.name());
                }
                Target { id, endpoint }
            })
            .collect()
    }

    fn endpoint(&self, id: TargetId) -> Result<Endpoint, String> {
        let redis = self.redis.as_ref().map_err(Clone::clone)?;
        let haproxy = self.haproxy.as_ref().map_err(Clone::clone);
        let bastion = self.bastion.as_ref().map_err(Clone::clone);
        let client = || {
            self.certs
                .as_ref()
                .map(|c| c.client.clone())
                .map_err(Clone::clone)
        };
        let tls_port =
            |port: Option<u16>| port.ok_or_else(|| "no TLS port (certificates failed)".to_string());
        Ok(match id {
            TargetId::DirectTcp => Endpoint::Tcp(redis.port),
            TargetId::DirectUnix => Endpoint::Unix(redis.socket.clone()),
            TargetId::DirectTls => Endpoint::Tls {
                port: tls_port(redis.tls_port)?,
                tls: client()?,
            },
            TargetId::HaproxyTcp => Endpoint::Tcp(haproxy?.port),
            TargetId::HaproxyUnix => Endpoint::Unix(haproxy?.socket.clone()),
            TargetId::HaproxyTls => Endpoint::Tls {
                port: tls_port(haproxy?.tls_port)?,
                tls: client()?,
            },
            TargetId::BastionUnix => Endpoint::Unix(bastion?.socket.clone()),
            TargetId::BastionTls => Endpoint::Tls {
                port: bastion?.tls_port,
                tls: self.bastion_cert.clone()?,
            },
        })
    }

    /// `Some(why)` once the bastion process has exited.
    fn bastion_exit(&self) -> Option<String> {
        let bastion = self.bastion.as_ref().ok()?;
        let status = bastion.proc.exited()?;
        Some(format!(
            "bastion exited ({status}): {}",
            bastion.log.failure_text()
        ))
    }
}

/// `ECHO <nonce>` through the target must come back unchanged.
fn preflight(endpoint: &Endpoint) -> Result<()> {
    let nonce = format!("relay-bench-{}", std::process::id());
    let mut cmd = Command::new("redis-cli");
    cmd.args(endpoint.args()).args(["ECHO", &nonce]);
    let out = run_with_timeout(&mut cmd, Duration::from_secs(10))
        .map_err(|e| anyhow!("redis-cli: {e}"))?;
    let got = out.stdout.trim();
    if !out.status.success() || got != nonce {
        bail!(
            "redis-cli ECHO answered '{}' ({}) {}",
            got,
            out.status,
            last_line(&out.stderr).unwrap_or("")
        );
    }
    Ok(())
}

/// A throw-away CA with a server certificate for 127.0.0.1 and a client certificate, made with
/// openssl: ECDSA P-256 like the bastion's on-box CA, so every TLS target does the same crypto.
struct Certs {
    server_crt: PathBuf,
    server_key: PathBuf,
    /// Certificate and key in one file, as HAProxy's `crt` wants them.
    server_pem: PathBuf,
    ca: PathBuf,
    client: ClientTls,
}

impl Certs {
    fn create(dir: &Path) -> Result<Certs> {
        mkdir(dir)?;
        let out = Command::new("sh")
            .args(["-c", CERTS_SH])
            .current_dir(dir)
            .output()
            .context("running sh")?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            bail!("openssl: {}", last_line(&stderr).unwrap_or("failed"));
        }
        Ok(Certs {
            server_crt: dir.join("server.crt"),
            server_key: dir.join("server.key"),
            server_pem: dir.join("server.pem"),
            ca: dir.join("ca.crt"),
            client: ClientTls {
                cert: dir.join("client.crt"),
                key: dir.join("client.key"),
                ca: dir.join("ca.crt"),
            },
        })
    }
}

const CERTS_SH: &str = r#"set -e
ec="-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
sign="-CA ca.crt -CAkey ca.key -CAcreateserial -days 2"
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' > san.ext
openssl req -x509 $ec -keyout ca.key -out ca.crt -days 2 -subj /CN=relay-bench-ca
openssl req $ec -keyout server.key -out server.csr -subj /CN=localhost
openssl x509 -req -in server.csr $sign -out server.crt -extfile san.ext
openssl req $ec -keyout client.key -out client.csr -subj /CN=bench
openssl x509 -req -in client.csr $sign -out client.crt
cat server.crt server.key > server.pem
"#;

struct Redis {
    proc: Proc,
    port: u16,
    socket: PathBuf,
    tls_port: Option<u16>,
}

impl Redis {
    fn start(dir: &Path, certs: Option<&Certs>) -> Result<Redis> {
        mkdir(dir)?;
        let port = free_port()?;
        let socket = dir.join("redis.sock");
        let log = dir.join("redis.log");
        let mut conf = format!(
            "bind 127.0.0.1\nport {port}\nunixsocket {}\nunixsocketperm 700\nsave \"\"\nappendonly no\n\
             dir {}\nlogfile {}\n",
            socket.display(),
            dir.display(),
            log.display()
        );
        let tls_port = match certs {
            Some(c) => {
                let p = free_port()?;
                let _ = write!(
                    conf,
                    "tls-port {p}\ntls-cert-file {}\ntls-key-file {}\ntls-ca-cert-file {}\n",
                    c.server_crt.display(),
                    c.server_key.display(),
                    c.ca.display()
                );
                Some(p)
            }
            None => None,
        };
        write_file(&dir.join("redis.conf"), &conf)?;
        let mut cmd = Command::new("redis-server");
        cmd.arg(dir.join("redis.conf"));
        let proc = Proc::spawn("redis-server", &mut cmd)?;
        let redis = Redis {
            proc,
            port,
            socket,
            tls_port,
        };
        wait_until(Duration::from_secs(10), &redis.proc, || {
            Ok(redis
                .call(&["PING"])
                .is_ok_and(|r| r == Reply::Simple("PONG".into()))
                && redis.socket.exists())
        })
        .with_context(|| {
            format!(
                "waiting for redis-server on port {port} (log {})",
                log.display()
            )
        })?;
        Ok(redis)
    }

    fn call(&self, args: &[&str]) -> Result<Reply> {
        call(SocketAddr::from(([127, 0, 0, 1], self.port)), args)
    }

    /// `total_commands_processed` from INFO stats.
    fn commands_processed(&self) -> Result<u64> {
        let Reply::Bulk(info) = self.call(&["INFO", "stats"])? else {
            bail!("INFO stats: not a bulk reply");
        };
        String::from_utf8_lossy(&info)
            .lines()
            .find_map(|l| l.strip_prefix("total_commands_processed:"))
            .and_then(|n| n.trim().parse().ok())
            .context("INFO stats has no total_commands_processed")
    }
}

struct Haproxy {
    proc: Proc,
    port: u16,
    socket: PathBuf,
    /// The mTLS frontend (OpenSSL), when there are certificates.
    tls_port: Option<u16>,
}

impl Haproxy {
    fn start(dir: &Path, redis_port: u16, certs: Option<&Certs>) -> Result<Haproxy> {
        mkdir(dir)?;
        let port = free_port()?;
        let socket = dir.join("haproxy.sock");
        let log = dir.join("haproxy.log");
        // The TESTBED peer configuration; maxconn 10000 fails on the default fd limit.
        let mut conf = format!(
            "global\n  maxconn 4000\n\
             defaults\n  mode tcp\n  option splice-auto\n  timeout connect 5s\n  timeout client 5m\n  timeout server 5m\n\
             backend redis\n  server r1 127.0.0.1:{redis_port}\n\
             frontend fe_tcp\n  bind 127.0.0.1:{port}\n  default_backend redis\n\
             frontend fe_unix\n  bind unix@{}\n  default_backend redis\n",
            socket.display()
        );
        let tls_port = match certs {
            Some(c) => {
                let p = free_port()?;
                let _ = write!(
                    conf,
                    "frontend fe_tls\n  bind 127.0.0.1:{p} ssl crt {} ca-file {} verify required\n  default_backend redis\n",
                    c.server_pem.display(),
                    c.ca.display()
                );
                Some(p)
            }
            None => None,
        };
        write_file(&dir.join("haproxy.cfg"), &conf)?;
        let log_file =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut cmd = Command::new("haproxy");
        cmd.arg("-db")
            .arg("-f")
            .arg(dir.join("haproxy.cfg"))
            .stdout(log_file.try_clone()?)
            .stderr(log_file);
        let proc = Proc::spawn("haproxy", &mut cmd)?;
        wait_until(Duration::from_secs(10), &proc, || {
            Ok(
                call(SocketAddr::from(([127, 0, 0, 1], port)), &["PING"]).is_ok()
                    && socket.exists(),
            )
        })
        .with_context(|| format!("waiting for haproxy on port {port} (log {})", log.display()))?;
        Ok(Haproxy {
            proc,
            port,
            socket,
            tls_port,
        })
    }
}

struct Bastion {
    proc: Proc,
    log: Arc<BastionLog>,
    tls_port: u16,
    socket: PathBuf,
    state_dir: PathBuf,
    cert_dir: PathBuf,
}

impl Bastion {
    fn start(dir: &Path, redis_port: u16) -> Result<Bastion> {
        mkdir(dir)?;
        let state_dir = dir.join("state");
        let socket_dir = dir.join("sock");
        // The bench's own uid: redis-benchmark connects to the socket as this user.
        let uid = nix::unistd::getuid().as_raw();
        let conf = dir.join("bastion.toml");
        let quote = |p: &Path| toml::Value::String(p.display().to_string()).to_string();
        write_file(
            &conf,
            &format!(
                r#"state_dir = {state}

[[listeners.tcp]]
address = "127.0.0.1:0"
default_database = "local"

[listeners.unix]
directory = {sock}

[[databases]]
name = "local"
address = "127.0.0.1:{redis_port}"
auth = {{ mode = "none" }}
default_db_user = "default"

[[roles]]
name = "bench"
db_users = ["*"]
db_names = ["*"]

[[users]]
name = "bench"
roles = ["bench"]
unix_user = "{uid}"
"#,
                state = quote(&state_dir),
                sock = quote(&socket_dir),
            ),
        )?;
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_bastion"));
        cmd.arg("serve")
            .arg("--config")
            .arg(&conf)
            // Measure the shipped log level, whatever the caller's environment says.
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stderr(Stdio::piped());
        let mut proc = Proc::spawn("bastion", &mut cmd)?;
        let stderr = proc
            .child
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .stderr
            .take()
            .context("bastion stderr")?;
        let copy = std::fs::File::create(dir.join("bastion.log")).context("bastion.log")?;
        let log = BastionLog::follow(stderr, copy);
        let tls_port = log
            .wait_ready(Duration::from_secs(30))
            .map_err(|e| anyhow!("{e}: {}", log.failure_text()))?;
        let socket = socket_dir.join("local.sock");
        wait_until(Duration::from_secs(5), &proc, || Ok(socket.exists()))
            .with_context(|| format!("waiting for {}", socket.display()))?;
        Ok(Bastion {
            proc,
            log,
            tls_port,
            socket,
            state_dir,
            cert_dir: dir.join("cert"),
        })
    }

    fn issue_cert(&self) -> Result<ClientTls> {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_bastion"));
        cmd.args(["cert", "issue", "bench", "--ttl", "1h", "--out"])
            .arg(&self.cert_dir)
            .arg("--state-dir")
            .arg(&self.state_dir)
            .env("NO_COLOR", "1");
        let out =
            run_with_timeout(&mut cmd, Duration::from_secs(30)).map_err(|e| anyhow!("{e}"))?;
        if !out.status.success() {
            bail!(
                "{}: {}",
                out.status,
                last_line(&out.stderr).unwrap_or("no output")
            );
        }
        let tls = ClientTls {
            cert: self.cert_dir.join("bench.crt"),
            key: self.cert_dir.join("bench.key"),
            ca: self.cert_dir.join("ca.crt"),
        };
        for f in [&tls.cert, &tls.key, &tls.ca] {
            if !f.exists() {
                bail!("{} was not written", f.display());
            }
        }
        Ok(tls)
    }

    fn summary(&self) -> BastionSummary {
        let state = self.log.state();
        BastionSummary {
            memory: self.proc.memory(),
            paths: state.paths.clone(),
            warnings: state.warnings,
            errors: state.errors,
            last_problem: state.last_problem.clone(),
        }
    }
}

struct BastionSummary {
    memory: Option<Memory>,
    /// `path_*=…` fields of `session.end` events, joined → how many sessions ended that way.
    paths: BTreeMap<String, u64>,
    warnings: u64,
    errors: u64,
    last_problem: Option<String>,
}

/// The bastion's stderr, read line by line on a thread for the whole run (an unread pipe would
/// eventually block the daemon's logging).
struct BastionLog {
    state: Mutex<LogState>,
    changed: Condvar,
}

#[derive(Default)]
struct LogState {
    /// The latest line.
    last: String,
    tls_ports: Vec<u16>,
    ready: bool,
    eof: bool,
    paths: BTreeMap<String, u64>,
    warnings: u64,
    errors: u64,
    last_problem: Option<String>,
    /// `panicked at …` and the message line after it, or an `Error: …` line from main.
    failure: Option<String>,
    /// The previous line was `panicked at …`: the next one is the message.
    in_panic: bool,
}

impl BastionLog {
    /// Follow `stderr`, copying every line to `copy` (kept with `--keep`).
    fn follow(stderr: impl Read + Send + 'static, mut copy: std::fs::File) -> Arc<BastionLog> {
        let log = Arc::new(BastionLog {
            state: Mutex::new(LogState::default()),
            changed: Condvar::new(),
        });
        let writer = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).split(b'\n') {
                let Ok(line) = line else { break };
                let _ = copy.write_all(&line).and_then(|()| copy.write_all(b"\n"));
                writer.observe(strip_ansi(&String::from_utf8_lossy(&line)));
            }
            writer.state().eof = true;
            writer.changed.notify_all();
        });
        log
    }

    fn observe(&self, line: String) {
        let mut s = self.state();
        if line.contains("listening") {
            if let Some(port) = field(&line, "address")
                .and_then(|a| a.parse::<SocketAddr>().ok())
                .map(|a| a.port())
            {
                s.tls_ports.push(port);
            }
        }
        if line.contains("bastion ready") {
            s.ready = true;
        }
        if s.in_panic {
            s.in_panic = false;
            if let Some(f) = &mut s.failure {
                f.push(' ');
                f.push_str(line.trim());
            }
        }
        if s.failure.is_none() && (line.contains("panicked at") || line.starts_with("Error:")) {
            s.in_panic = line.contains("panicked at");
            s.failure = Some(line.trim().to_string());
        }
        if line.contains("session.end") {
            let mut paths: Vec<&str> = line
                .split_whitespace()
                .filter(|t| t.starts_with("path_"))
                .collect();
            paths.sort_unstable();
            *s.paths.entry(paths.join(" ")).or_default() += 1;
        }
        let level = line.split_whitespace().nth(1).unwrap_or("");
        if level == "WARN" || level == "ERROR" {
            if level == "WARN" {
                s.warnings += 1;
            } else {
                s.errors += 1;
            }
            s.last_problem = Some(line.clone());
        }
        s.last = line;
        drop(s);
        self.changed.notify_all();
    }

    /// The first TCP listener's port, once `bastion ready` is logged.
    fn wait_ready(&self, timeout: Duration) -> Result<u16, String> {
        let deadline = Instant::now() + timeout;
        let mut s = self.state();
        loop {
            if s.ready {
                return s
                    .tls_ports
                    .first()
                    .copied()
                    .ok_or_else(|| "ready, but no `listening address=` line".into());
            }
            if s.eof {
                return Err("exited before `bastion ready`".into());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(format!("no `bastion ready` within {timeout:?}"));
            }
            s = self
                .changed
                .wait_timeout(s, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, LogState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What went wrong, for a one-line note: the panic or error if there was one, else the latest line.
    fn failure_text(&self) -> String {
        if let Some(f) = &self.state().failure {
            return f.clone();
        }
        let mut last = self.state().last.clone();
        if last.len() > 160 {
            let cut = (0..=160)
                .rev()
                .find(|i| last.is_char_boundary(*i))
                .unwrap_or(0);
            last.truncate(cut);
            last.push('…');
        }
        format!("last log line: {last}")
    }
}

/// `key=value` out of a tracing fmt line.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|t| t.strip_prefix(key)?.strip_prefix('='))
}

/// Drop `ESC [ … letter` sequences (in case the daemon colours its output anyway).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------

/// A long-running child, killed and reaped on drop. The lock lets `try_wait` run through `&self`.
struct Proc {
    name: &'static str,
    child: Mutex<Child>,
}

impl Proc {
    fn spawn(name: &'static str, cmd: &mut Command) -> Result<Proc> {
        let child = spawn(cmd).map_err(|e| match e.kind() {
            // redis-server and haproxy are Debian packages of the same name.
            std::io::ErrorKind::NotFound => {
                anyhow!("{name} not found (apt-get install -y {name}?)")
            }
            _ => anyhow!("starting {name}: {e}"),
        })?;
        Ok(Proc {
            name,
            child: Mutex::new(child),
        })
    }

    fn pid(&self) -> u32 {
        self.child.lock().unwrap_or_else(|p| p.into_inner()).id()
    }

    fn exited(&self) -> Option<ExitStatus> {
        self.child
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .try_wait()
            .ok()
            .flatten()
    }

    /// Peak and current resident set size, from /proc.
    fn memory(&self) -> Option<Memory> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let kb = |key: &str| -> Option<u64> {
            let line = status.lines().find(|l| l.starts_with(key))?;
            line[key.len()..]
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()
        };
        Some(Memory {
            peak_kb: kb("VmHWM:")?,
            now_kb: kb("VmRSS:")?,
        })
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = child.kill() {
            // Already exited is fine; anything else is worth a line.
            if e.kind() != std::io::ErrorKind::InvalidInput {
                eprintln!("relay bench: killing {}: {e}", self.name);
            }
        }
        let _ = child.wait();
    }
}

#[derive(Clone, Copy)]
struct Memory {
    peak_kb: u64,
    now_kb: u64,
}

/// Spawn with SIGKILL as the parent-death signal, so a bench killed with SIGKILL (no Drop runs)
/// leaves no redis-server, haproxy or bastion behind.
fn spawn(cmd: &mut Command) -> std::io::Result<Child> {
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent; it runs in the
    // forked child before exec. PR_SET_PDEATHSIG follows the spawning *thread*: every spawn here
    // happens on the main thread, which lives until the children are dropped.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.stdin(Stdio::null()).spawn()
}

struct Output {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

#[derive(Debug, thiserror::Error)]
enum Wait {
    #[error("timed out")]
    TimedOut,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Run a short-lived command to completion, killing it after `timeout` (redis-benchmark waits
/// forever on a server that accepted and then went silent).
fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Result<Output, Wait> {
    let child = spawn(cmd.stdout(Stdio::piped()).stderr(Stdio::piped()))?;
    let proc = Proc {
        name: "command",
        child: Mutex::new(child),
    };
    let (stdout, stderr) = {
        let mut c = proc.child.lock().unwrap_or_else(|p| p.into_inner());
        (c.stdout.take(), c.stderr.take())
    };
    let reader = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut p) = pipe {
                let mut buf = Vec::new();
                let _ = p.read_to_end(&mut buf);
                s = String::from_utf8_lossy(&buf).into_owned();
            }
            s
        })
    };
    let out_thread = reader(stdout.map(|p| Box::new(p) as Box<dyn Read + Send>));
    let err_thread = reader(stderr.map(|p| Box::new(p) as Box<dyn Read + Send>));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = proc.exited() {
            break status;
        }
        if Instant::now() >= deadline {
            drop(proc); // kills and reaps; the pipes close and the readers finish
            let _ = (out_thread.join(), err_thread.join());
            return Err(Wait::TimedOut);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ok(Output {
        status,
        stdout: out_thread.join().unwrap_or_default(),
        stderr: err_thread.join().unwrap_or_default(),
    })
}

fn wait_until(
    timeout: Duration,
    proc: &Proc,
    mut ready: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if ready()? {
            return Ok(());
        }
        if let Some(status) = proc.exited() {
            bail!("{} exited: {status}", proc.name);
        }
        if Instant::now() >= deadline {
            bail!("not ready within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0 to find a free port")?;
    Ok(l.local_addr()?.port())
}

fn mkdir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}

fn write_file(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

// ---------------------------------------------------------------------------------------------
// A minimal RESP client for set-up and checks (the measurements all go through redis-benchmark)
// ---------------------------------------------------------------------------------------------

#[derive(Debug, PartialEq, Eq)]
enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Vec<u8>),
    Nil,
}

fn call(addr: SocketAddr, args: &[&str]) -> Result<Reply> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        let _ = write!(req, "${}\r\n{a}\r\n", a.len());
    }
    stream
        .write_all(req.as_bytes())
        .with_context(|| format!("writing to {addr}"))?;
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    r.read_line(&mut line)
        .with_context(|| format!("reading from {addr}"))?;
    let line = line.trim_end();
    let (kind, rest) = line
        .split_at_checked(1)
        .with_context(|| format!("{addr} closed the connection"))?;
    Ok(match kind {
        "+" => Reply::Simple(rest.into()),
        "-" => Reply::Error(rest.into()),
        ":" => Reply::Int(rest.parse().context("integer reply")?),
        "$" if rest == "-1" => Reply::Nil,
        "$" => {
            let len: usize = rest.parse().context("bulk length")?;
            let mut buf = vec![0; len + 2];
            r.read_exact(&mut buf).context("bulk reply")?;
            buf.truncate(len);
            Reply::Bulk(buf)
        }
        _ => bail!("unexpected reply '{line}' from {addr}"),
    })
}

// ---------------------------------------------------------------------------------------------
// The report
// ---------------------------------------------------------------------------------------------

struct Report<'a> {
    opts: &'a Options,
    targets: &'a [Target],
    results: &'a Results,
    env: String,
    bastion: Option<BastionSummary>,
    haproxy_hwm: Option<Memory>,
    elapsed: Duration,
}

const TLS_NOTE: &str = "\
bastion-tls terminates TLS in user space (rustls) and relays with a copy; direct-tcp has no TLS,
direct-tls is Redis' own TLS (OpenSSL), haproxy-tls terminates with OpenSSL and relays in plaintext.
TLS SET 100kB is paced by the client: redis-benchmark leaves Nagle on (see Workload::tls_requests).";

/// Width of the first column and of each workload column.
const NAME_W: usize = 28;
const CELL_W: usize = 16;

impl Report<'_> {
    fn render(&self) -> String {
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

        out.push('\n');
        self.bastion_section(&mut out);
        notes.render(&mut out);
        let _ = writeln!(out, "\nbench took {:.0} s", self.elapsed.as_secs_f64());
        out
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

fn median(values: Option<&Vec<f64>>) -> Option<f64> {
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

fn human(ops: f64) -> String {
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
fn environment(bed: &TestBed) -> String {
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
