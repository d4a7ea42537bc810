//! What the bench measures, started in its temp dir: Redis and the bastion through the
//! integration tests' fixtures (`tests/support/`), and HAProxy, the performance peer, which only
//! the bench runs.
//!
//! The fixtures panic on failure (right for a test); here a part that cannot start becomes an
//! `Err` with a one-line reason, so its targets print `n/a` and the rest still runs ([`catch`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};

use crate::idle::{self, IdleResults};
use crate::support::bastion::{issue_cert, Bastion};
use crate::support::certs::{write_private, TestCa};
use crate::support::clients::{ClientCert, Endpoint, REDIS_CLI};
use crate::support::process::{free_ports, poll, spawn, try_run};
use crate::support::redis::{RedisOpts, RedisServer};
use crate::{last_line, Options, Target, TargetId};

pub(crate) struct TestBed {
    // Field order is drop order: proxies go before the Redis they point at.
    pub(crate) bastion: Result<Bastion, String>,
    /// A second bastion for relay modes the main one does not serve ([`EXTRA_RELAYS`]): one per
    /// mode, so a mode the config still rejects makes only its own target `n/a`.
    pub(crate) extra: BTreeMap<&'static str, Result<Bastion, String>>,
    bastion_cert: Result<ClientCert, String>,
    haproxy: Result<Haproxy, String>,
    pub(crate) redis: Result<RedisServer, String>,
    /// HAProxy's server certificate and the client certificate for Redis' and HAProxy's TLS
    /// ports (the bastion uses its own CA).
    certs: Certs,
}

impl TestBed {
    /// `fd_limit`: the descriptors each child may open (HAProxy's `maxconn` is sized from it).
    pub(crate) fn start(dir: &Path, fd_limit: u64) -> TestBed {
        let certs = Certs::create(&dir.join("certs"));
        let redis = catch(|| {
            RedisServer::start(RedisOpts {
                client_ca_pem: Some(certs.ca_pem.clone()),
                ..RedisOpts::open()
            })
        })
        .map_err(|e| format!("redis-server: {}", first_line(&e)));
        let (haproxy, bastion, bastion_cert, extra) = match &redis {
            Ok(r) => {
                let extra = EXTRA_RELAYS
                    .iter()
                    .map(|&relay| {
                        let db = [(relay, relay)];
                        let dir = dir.join(format!("bastion-{relay}"));
                        (relay, start_bastion(&dir, r.plain_addr(), &db))
                    })
                    .collect();
                let haproxy =
                    Haproxy::start(&dir.join("haproxy"), r.plain_addr(), &certs, fd_limit)
                        .map_err(|e| format!("haproxy: {e:#}"));
                let bastion = start_bastion(&dir.join("bastion"), r.plain_addr(), MAIN_DATABASES);
                let cert = match &bastion {
                    Ok(_) => catch(|| {
                        let state = dir.join("bastion/state");
                        let place = ["--state-dir".as_ref(), state.as_os_str()];
                        issue_cert(&place, "bench", "1h", &dir.join("bastion/cert"))
                    })
                    .map_err(|e| format!("bastion cert issue: {}", first_line(&e))),
                    Err(e) => Err(e.clone()),
                };
                (haproxy, bastion, cert, extra)
            }
            Err(e) => (
                Err(e.clone()),
                Err(e.clone()),
                Err(e.clone()),
                BTreeMap::new(),
            ),
        };
        TestBed {
            bastion,
            extra,
            bastion_cert,
            haproxy,
            redis,
            certs,
        }
    }

    pub(crate) fn targets(&self, opts: &Options) -> Vec<Target> {
        TargetId::ALL
            .into_iter()
            .filter(|id| opts.wants(*id))
            .map(|id| self.target(id))
            .collect()
    }

    /// One target, checked with [`preflight`]: `Err` (and a line on stderr) if it cannot be
    /// measured.
    pub(crate) fn target(&self, id: TargetId) -> Target {
        let endpoint = self.endpoint(id).and_then(|e| {
            preflight(&e)
                .map(|()| e)
                .map_err(|err| format!("{}: preflight: {err:#}", id.name()))
        });
        if let Err(e) = &endpoint {
            eprintln!("relay bench: {} is n/a: {e}", id.name());
        }
        Target { id, endpoint }
    }

    fn endpoint(&self, id: TargetId) -> Result<Endpoint, String> {
        let redis = self.redis.as_ref().map_err(Clone::clone)?;
        let haproxy = self.haproxy.as_ref().map_err(Clone::clone);
        let bastion = self.bastion.as_ref().map_err(Clone::clone);
        let client = &self.certs.client;
        let local = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        Ok(match id {
            TargetId::DirectTcp => Endpoint::Tcp {
                addr: redis.plain_addr(),
            },
            TargetId::DirectUnix => Endpoint::unix(redis.unix_path()),
            TargetId::DirectTls => Endpoint::Tls {
                addr: redis.tls_addr(),
                sni: None,
                ca: redis.ca_pem_path(),
                identity: Some((client.cert.clone(), client.key.clone())),
            },
            TargetId::HaproxyTcp => Endpoint::Tcp {
                addr: local(haproxy?.port),
            },
            TargetId::HaproxyUnix => Endpoint::unix(&haproxy?.socket),
            TargetId::HaproxyTls => Endpoint::mtls(local(haproxy?.tls_port), None, client),
            TargetId::BastionUnix => Endpoint::unix(bastion?.socket_path("local")),
            TargetId::BastionUnixPass => Endpoint::unix(bastion?.socket_path("pass")),
            TargetId::BastionUnixInspect => {
                Endpoint::unix(self.extra_bastion("inspect")?.socket_path("inspect"))
            }
            TargetId::BastionTls => {
                Endpoint::mtls(bastion?.tls_addr(0), None, self.bastion_cert.as_ref()?)
            }
            TargetId::BastionTlsPass => Endpoint::mtls(
                bastion?.tls_addr(0),
                Some("pass"),
                self.bastion_cert.as_ref()?,
            ),
        })
    }

    /// The bastion serving relay mode `relay` on its own ([`EXTRA_RELAYS`]).
    fn extra_bastion(&self, relay: &str) -> Result<&Bastion, String> {
        match self.extra.get(relay) {
            Some(b) => b.as_ref().map_err(Clone::clone),
            None => Err(format!("relay = \"{relay}\" is not in EXTRA_RELAYS")),
        }
    }

    /// The process serving `id`'s sessions (direct: redis-server).
    pub(crate) fn pid_of(&self, id: TargetId, redis_pid: Option<u32>) -> Option<u32> {
        match id {
            TargetId::DirectUnix | TargetId::DirectTls | TargetId::DirectTcp => redis_pid,
            TargetId::HaproxyUnix | TargetId::HaproxyTls | TargetId::HaproxyTcp => {
                Some(self.haproxy.as_ref().ok()?.child.id())
            }
            TargetId::BastionUnixInspect => self.extra_bastion("inspect").ok()?.pid(),
            TargetId::BastionUnix
            | TargetId::BastionUnixPass
            | TargetId::BastionTls
            | TargetId::BastionTlsPass => self.bastion.as_ref().ok()?.pid(),
        }
    }

    pub(crate) fn bastion_summary(&self) -> Option<BastionSummary> {
        let bastion = self.bastion.as_ref().ok()?;
        Some(BastionSummary::of(
            &bastion.logs(),
            bastion.pid().and_then(memory),
        ))
    }

    /// The idle-memory table ([`crate::idle`]), `n` sessions per target (fewer if they would not
    /// fit in `fd_limit`); empty for `n` = 0.
    pub(crate) fn measure_idle(&self, targets: &[Target], n: usize, fd_limit: u64) -> IdleResults {
        let Ok(redis) = &self.redis else {
            return IdleResults::new();
        };
        if n == 0 {
            return IdleResults::new();
        }
        let live: Vec<(TargetId, &Endpoint)> = targets
            .iter()
            .filter_map(|t| Some((t.id, t.endpoint.as_ref().ok()?)))
            .collect();
        let n = idle::fit(&live, n, fd_limit);
        // Redis holds every session at once: direct ones and the proxies' upstream legs.
        let maxclients = fd_limit.saturating_sub(100).to_string();
        let out = redis.cli(&["CONFIG", "SET", "maxclients", &maxclients]);
        if !out.status.success() {
            eprintln!("relay bench: CONFIG SET maxclients: {}", out.all().trim());
        }
        let redis_pid = self.redis_pid();
        eprintln!("relay bench: idle memory, {n} sessions per target");
        idle::measure_all(&live, |id| self.pid_of(id, redis_pid), n)
    }

    /// redis-server's pid, as it reports it.
    pub(crate) fn redis_pid(&self) -> Option<u32> {
        self.redis
            .as_ref()
            .ok()?
            .query(&["INFO", "server"])
            .lines()
            .find_map(|l| l.strip_prefix("process_id:"))
            .and_then(|p| p.trim().parse::<u32>().ok())
    }

    pub(crate) fn haproxy_memory(&self) -> Option<Memory> {
        memory(self.haproxy.as_ref().ok()?.child.id())
    }

    /// `--keep`: copy what lives in the fixtures' own temp dirs (Redis' config and log, the
    /// bastion's output) next to the rest in `dir`.
    pub(crate) fn keep_files(&self, dir: &Path) {
        let copy = |what: &str, from: &Path, to: &Path| {
            if let Err(e) = std::fs::create_dir_all(to.parent().unwrap_or(dir))
                .and_then(|()| std::fs::copy(from, to))
            {
                eprintln!("relay bench: keeping {what}: {e}");
            }
        };
        if let Ok(redis) = &self.redis {
            for file in ["redis.conf", "redis.log"] {
                copy(file, &redis.dir().join(file), &dir.join("redis").join(file));
            }
        }
        if let Ok(bastion) = &self.bastion {
            let log = dir.join("bastion/bastion.log");
            if let Err(e) = std::fs::write(&log, bastion.logs()) {
                eprintln!("relay bench: writing {}: {e}", log.display());
            }
        }
    }
}

/// Run a fixture that panics on failure; `Err` holds its panic message. (The default hook
/// has already printed the whole message, with the child's output, on stderr.)
pub(crate) fn catch<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|payload| {
        payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panicked".into())
    })
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

/// `ECHO <nonce>` through the target must come back unchanged.
fn preflight(endpoint: &Endpoint) -> Result<()> {
    let nonce = format!("relay-bench-{}", std::process::id());
    let mut cmd = Command::new(REDIS_CLI);
    cmd.args(endpoint.cli_args()).args(["ECHO", &nonce]);
    let out = try_run(&mut cmd, None, Duration::from_secs(10))
        .map_err(|e| anyhow!("redis-cli: {}", first_line(&e.to_string())))?;
    let got = out.stdout();
    let got = got.trim();
    if !out.status.success() || got != nonce {
        bail!(
            "redis-cli ECHO answered '{}' ({}) {}",
            got,
            out.status,
            last_line(&out.stderr()).unwrap_or("")
        );
    }
    Ok(())
}

/// A throw-away CA (rcgen, ECDSA P-256 like the bastion's on-box CA, so every TLS target does
/// the same crypto): HAProxy's server certificate, and the client certificate redis-benchmark
/// presents to HAProxy and Redis.
struct Certs {
    ca_pem: String,
    /// Certificate and key in one file, as HAProxy's `crt` wants them.
    server_pem: PathBuf,
    ca: PathBuf,
    client: ClientCert,
}

impl Certs {
    fn create(dir: &Path) -> Certs {
        std::fs::create_dir_all(dir).expect("creating the certificate dir");
        let ca = TestCa::new("relay-bench-ca");
        let ca_path = dir.join("ca.crt");
        std::fs::write(&ca_path, ca.cert_pem()).expect("writing ca.crt");
        let (cert, key) = ca.issue_server(&["localhost", "127.0.0.1"]);
        let server_pem = write_private(&dir.join("server.pem"), (cert + &key).as_bytes());
        Certs {
            ca_pem: ca.cert_pem().to_string(),
            server_pem,
            client: ca.write_client_bundle("bench", dir, &ca_path),
            ca: ca_path,
        }
    }
}

/// HAProxy 2.6 as TESTBED.md measured it: `mode tcp`, `option splice-auto`, a TCP, a Unix and
/// an mTLS (OpenSSL) frontend to Redis' plaintext port. Killed on drop.
struct Haproxy {
    child: Child,
    port: u16,
    socket: PathBuf,
    tls_port: u16,
}

impl Haproxy {
    fn start(dir: &Path, redis: SocketAddr, certs: &Certs, fd_limit: u64) -> Result<Haproxy> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let [port, tls_port] = free_ports(2)[..] else {
            unreachable!("free_ports(2) returns two ports")
        };
        let socket = dir.join("haproxy.sock");
        let log = dir.join("haproxy.log");
        // The TESTBED peer configuration, with room for the idle sessions within the fd limit
        // HAProxy inherits (past it, HAProxy refuses to start): two fds per connection, and two
        // per pipe for splice (`maxpipes` defaults to maxconn / 4).
        let maxconn = (fd_limit.saturating_sub(300) * 2 / 5).max(1000);
        let mut conf = format!(
            "global\n  maxconn {maxconn}\n\
             defaults\n  mode tcp\n  option splice-auto\n  timeout connect 5s\n  timeout client 5m\n  timeout server 5m\n\
             backend redis\n  server r1 {redis}\n\
             frontend fe_tcp\n  bind 127.0.0.1:{port}\n  default_backend redis\n\
             frontend fe_unix\n  bind unix@{}\n  default_backend redis\n",
            socket.display()
        );
        let _ = write!(
            conf,
            "frontend fe_tls\n  bind 127.0.0.1:{tls_port} ssl crt {} ca-file {} verify required\n  default_backend redis\n",
            certs.server_pem.display(),
            certs.ca.display()
        );
        let cfg = dir.join("haproxy.cfg");
        std::fs::write(&cfg, conf).with_context(|| format!("writing {}", cfg.display()))?;
        let log_file =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut cmd = Command::new("haproxy");
        cmd.arg("-db")
            .arg("-f")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file);
        let child = spawn(&mut cmd).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                anyhow!("haproxy not found (apt-get install -y haproxy?)")
            }
            _ => anyhow!("starting haproxy: {e}"),
        })?;
        let mut haproxy = Haproxy {
            child,
            port,
            socket,
            tls_port,
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let ready = poll(Duration::from_secs(10), || {
            if let Ok(Some(status)) = haproxy.child.try_wait() {
                return Some(Err(anyhow!("haproxy exited: {status}")));
            }
            let up = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
                && haproxy.socket.exists();
            up.then_some(Ok(()))
        });
        ready
            .unwrap_or_else(|| Err(anyhow!("not ready within 10s")))
            .with_context(|| {
                format!("waiting for haproxy on port {port} (log {})", log.display())
            })?;
        Ok(haproxy)
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The main bastion's databases, (name, `relay`): the mTLS listener's default is the first,
/// SNI names the others; each also has `<dir>/sock/<name>.sock`.
const MAIN_DATABASES: &[(&str, &str)] = &[("local", "guard"), ("pass", "passthrough")];

/// Relay modes measured on a bastion of their own (database and socket named after the mode),
/// so a mode the config does not accept yet shows as `n/a` with the config error instead of
/// stopping the main bastion. A new mode: one line here, and a [`TargetId`] whose endpoint is
/// `extra_bastion(mode)`'s socket.
const EXTRA_RELAYS: &[&str] = &["inspect"];

/// A bastion on Redis' plaintext port serving `databases` (name, `relay`): an mTLS listener
/// (`default_database` the first, SNI the others) and `<dir>/sock/<name>.sock`, auth mode
/// `none`, user `bench` bound to the bench's own uid. Logs at `info`, the shipped level,
/// whatever the caller's environment says.
fn start_bastion(
    dir: &Path,
    redis: SocketAddr,
    databases: &[(&str, &str)],
) -> Result<Bastion, String> {
    let state_dir = dir.join("state");
    let config = bastion_config(&state_dir, &dir.join("sock"), redis, databases);
    // A copy next to the logs for `--keep` (the fixture runs on its own copy).
    let copy = dir.join("bastion.toml");
    std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&copy, &config))
        .map_err(|e| format!("bastion: writing {}: {e}", copy.display()))?;
    let mut bastion =
        catch(|| Bastion::start_with_env(&config, &state_dir, &[("RUST_LOG", "info")])).map_err(
            |e| {
                let output = e.split_once("--- bastion output\n").map_or("", |(_, o)| o);
                format!("bastion: {}: {}", first_line(&e), failure_text(output))
            },
        )?;
    bastion.quiet();
    Ok(bastion)
}

pub(crate) fn bastion_config(
    state_dir: &Path,
    socket_dir: &Path,
    redis: SocketAddr,
    databases: &[(&str, &str)],
) -> String {
    // The bench's own uid: redis-benchmark connects to the socket as this user.
    let uid = nix::unistd::getuid().as_raw();
    let quote = |p: &Path| toml::Value::String(p.display().to_string()).to_string();
    let mut dbs = String::new();
    for (name, relay) in databases {
        let _ = write!(
            dbs,
            "\n[[databases]]\nname = \"{name}\"\naddress = \"{redis}\"\nrelay = \"{relay}\"\n\
             auth = {{ mode = \"none\" }}\ndefault_db_user = \"default\"\n"
        );
    }
    format!(
        r#"state_dir = {state}

[[listeners.tcp]]
address = "127.0.0.1:0"
default_database = "{default}"

[listeners.unix]
directory = {sock}

[limits]
max_sessions = 100000
# Inspect mode's per-command audit at the sampling the issue's target is stated for.
command_audit_sample = 0.01
{dbs}
[[roles]]
name = "bench"
db_users = ["*"]
db_names = ["*"]

[[users]]
name = "bench"
roles = ["bench"]
unix_user = "{uid}"
"#,
        state = quote(state_dir),
        sock = quote(socket_dir),
        default = databases.first().map_or("local", |(name, _)| name),
    )
}

/// `Some(why)` once the bastion process has exited.
pub(crate) fn bastion_exit(bastion: &mut Result<Bastion, String>) -> Option<String> {
    let bastion = bastion.as_mut().ok()?;
    let status = bastion.exit_status()?;
    Some(format!(
        "bastion exited ({status}): {}",
        failure_text(&bastion.logs())
    ))
}

/// What went wrong, for a one-line note: the panic or `Error: …` line of `logs` if there is
/// one (with the panic's message line), else the latest line.
fn failure_text(logs: &str) -> String {
    let lines: Vec<&str> = logs.lines().map(str::trim).collect();
    if let Some(i) = lines
        .iter()
        .position(|l| l.contains("panicked at") || l.starts_with("Error:"))
    {
        let mut text = lines[i].to_string();
        if lines[i].contains("panicked at") {
            if let Some(message) = lines.get(i + 1) {
                text.push(' ');
                text.push_str(message);
            }
        }
        return text;
    }
    let mut last = lines
        .iter()
        .rfind(|l| !l.is_empty())
        .unwrap_or(&"")
        .to_string();
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

/// What the report says about the bastion, read from its output after the rounds.
pub(crate) struct BastionSummary {
    pub(crate) memory: Option<Memory>,
    /// `path_*=…` fields of `session.end` events, joined → how many sessions ended that way.
    pub(crate) paths: BTreeMap<String, u64>,
    pub(crate) warnings: u64,
    pub(crate) errors: u64,
    pub(crate) last_problem: Option<String>,
}

impl BastionSummary {
    fn of(logs: &str, memory: Option<Memory>) -> BastionSummary {
        let mut s = BastionSummary {
            memory,
            paths: BTreeMap::new(),
            warnings: 0,
            errors: 0,
            last_problem: None,
        };
        for line in logs.lines() {
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
                s.last_problem = Some(line.to_string());
            }
        }
        s
    }
}

#[derive(Clone, Copy)]
pub(crate) struct Memory {
    pub(crate) peak_kb: u64,
    pub(crate) now_kb: u64,
}

/// The CPU time `pid` has used so far (user + system, all its threads), in seconds; from
/// /proc/PID/stat (fields 14 and 15, in USER_HZ ticks: 100 per second in the kernel's ABI).
pub(crate) fn cpu_seconds(pid: u32) -> Option<f64> {
    const USER_HZ: f64 = 100.0;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after its closing ')' do not.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // fields[0] is field 3 (state): utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / USER_HZ)
}

/// Peak and current resident set size of `pid`, from /proc.
fn memory(pid: u32) -> Option<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
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
