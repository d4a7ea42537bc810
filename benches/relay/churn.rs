//! Connection churn (`redis-benchmark -k 0`, PING, a new connection per
//! request) through the bastion with upstream auth mode `none`, `password` and `iam` side by
//! side, with direct Redis and HAProxy on Unix sockets for scale. Set-up cost is what it
//! measures: accept, identify, the upstream dial, AUTH (with an IAM token signed per session).
//!
//! Its own bastion (the bench's has auth `none` only): Redis' `default` user is on without a
//! password, so it accepts any AUTH — the password and the SigV4 token (static keys from the
//! environment, nothing fetched) are made and sent as in production, and the upstream answers
//! `+OK`. Its output (two audit lines per session) is read through a pipe as it is written, as
//! journald reads the appliance's. A second one, [`AUDIT_TO_FILE`], writes its output to a file
//! nobody reads meanwhile: the same work in the bastion without a reader's wake-ups and CPU on
//! the same two cores (HAProxy's peer configuration logs nothing).

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;

use crate::report::{human, median};
use crate::support::bastion::Bastion;
use crate::support::certs::write_private;
use crate::support::clients::{Endpoint, REDIS_BENCHMARK};
use crate::support::process::try_run;
use crate::support::redis::RedisServer;
use crate::testbed::{catch, TestBed};
use crate::{commands_processed, last_line, parse_csv, Options, TargetId};

/// Requests per run (scaled by `--scale`); each is a connection.
const REQUESTS: f64 = 20_000.0;
pub(crate) const CLIENTS: &str = "50";
const DATABASES: [&str; 3] = ["none", "password", "iam"];
/// The churn row of the bastion whose output goes to a file (auth `none`).
pub(crate) const AUDIT_TO_FILE: &str = "bastion-unix auth=none audit=file";

/// What [`run`] measured: one row per target, in the order they ran.
pub(crate) struct Churn {
    /// Connections per run (after `--scale`).
    pub(crate) requests: u64,
    pub(crate) rounds: usize,
    pub(crate) rows: Vec<ChurnRow>,
    /// Why nothing could be measured (no Redis, the churn bastion did not start).
    pub(crate) failed: Option<String>,
}

pub(crate) struct ChurnRow {
    pub(crate) target: String,
    /// conn/s of every successful run, in round order.
    pub(crate) runs: Vec<f64>,
    pub(crate) errors: Vec<String>,
}

impl Churn {
    fn failed(why: String) -> Churn {
        Churn {
            requests: 0,
            rounds: 0,
            rows: Vec::new(),
            failed: Some(why),
        }
    }

    pub(crate) fn median_of(&self, target: &str) -> Option<f64> {
        let row = self.rows.iter().find(|r| r.target == target)?;
        median(Some(&row.runs))
    }

    /// The printed table: conn/s, ratio to HAProxy, the bastion's ratio to its auth=none row.
    pub(crate) fn render(&self) -> String {
        if let Some(why) = &self.failed {
            return format!("\nchurn: {why}\n");
        }
        let (haproxy, none) = (
            self.median_of("haproxy-unix"),
            self.median_of("bastion-unix auth=none"),
        );
        let mut out = format!(
            "\n== connection churn (-k 0, PING, -c {CLIENTS}, {} connections/run): \
             median of {} ==\n{:<36}{:>12}{:>12}{:>14}\n",
            self.requests, self.rounds, "target", "conn/s", "/ haproxy", "/ auth=none"
        );
        let ratio = |v: Option<f64>, base: Option<f64>| match (v, base) {
            (Some(v), Some(b)) if b > 0.0 => format!("{:.2}x", v / b),
            _ => "-".into(),
        };
        for row in &self.rows {
            let m = median(Some(&row.runs));
            out.push_str(&format!(
                "{:<36}{:>12}{:>12}{:>14}\n",
                row.target,
                m.map_or("n/a".into(), human),
                ratio(m, haproxy),
                if row.target.starts_with("bastion") {
                    ratio(m, none)
                } else {
                    String::new()
                }
            ));
        }
        for row in &self.rows {
            for e in &row.errors {
                out.push_str(&format!("  error: {}: {e}\n", row.target));
            }
        }
        out
    }
}

/// Run the comparison: direct Redis and HAProxy on Unix sockets, then the churn bastion's three
/// auth modes, interleaved in `opts.rounds` rounds.
pub(crate) fn run(opts: &Options, bed: &TestBed, dir: &Path) -> Churn {
    let Ok(redis) = &bed.redis else {
        return Churn::failed("no redis-server".into());
    };
    let peers = Options {
        only: Some(vec![TargetId::DirectUnix, TargetId::HaproxyUnix]),
        rounds: opts.rounds,
        scale: opts.scale,
        timeout: opts.timeout,
        keep: false,
        churn_auth: false,
        idle: 0,
        setup: 0,
        order_tries: 0,
        order_delay: opts.order_delay,
        starts: 0,
        results_dir: opts.results_dir.clone(),
        write_readme: false,
        from_json: None,
    };
    let mut targets: Vec<(String, Endpoint)> = bed
        .targets(&peers)
        .into_iter()
        .filter(|t| t.id != TargetId::DirectTcp)
        .filter_map(|t| Some((t.id.name().to_string(), t.endpoint.ok()?)))
        .collect();
    let bastion = match catch(|| start_bastion(&dir.join("churn-bastion"), redis, false)) {
        Ok(b) => b,
        Err(e) => return Churn::failed(format!("bastion: {e}")),
    };
    for db in DATABASES {
        targets.push((
            format!("bastion-unix auth={db}"),
            Endpoint::unix(bastion.socket_path(db)),
        ));
    }
    // Optional: without it the three rows above still stand.
    let to_file = catch(|| start_bastion(&dir.join("churn-bastion-file"), redis, true));
    match &to_file {
        Ok(b) => targets.push((
            AUDIT_TO_FILE.to_string(),
            Endpoint::unix(b.socket_path("none")),
        )),
        Err(e) => eprintln!("relay bench: churn: the bastion logging to a file did not start: {e}"),
    }
    let requests = ((REQUESTS * opts.scale) as u64).max(100);
    let mut rows: Vec<ChurnRow> = targets
        .iter()
        .map(|(name, _)| ChurnRow {
            target: name.clone(),
            runs: Vec::new(),
            errors: Vec::new(),
        })
        .collect();
    for round in 0..opts.rounds {
        eprintln!("relay bench: churn round {}/{}", round + 1, opts.rounds);
        for i in 0..targets.len() {
            let t = (i + round) % targets.len();
            let (name, ep) = &targets[t];
            match catch(|| churn_once(opts, redis, ep, requests)).unwrap_or_else(Err) {
                Ok(v) => {
                    eprintln!("  {name:<36} {:>8} conn/s", human(v));
                    rows[t].runs.push(v);
                }
                Err(e) => {
                    eprintln!("  {name:<36} {e}");
                    rows[t].errors.push(e);
                }
            }
        }
    }
    drop((bastion, to_file));
    Churn {
        requests,
        rounds: opts.rounds,
        rows,
        failed: None,
    }
}

/// One `redis-benchmark -k 0` run: connections (= requests) per second, once Redis' counters
/// show the PINGs arrived.
fn churn_once(
    opts: &Options,
    redis: &RedisServer,
    ep: &Endpoint,
    requests: u64,
) -> Result<f64, String> {
    let before = commands_processed(redis).map_err(|e| format!("{e:#}"))?;
    let mut cmd = Command::new(REDIS_BENCHMARK);
    cmd.args(ep.cli_args()).args([
        "--csv",
        "-k",
        "0",
        "-t",
        "ping_mbulk",
        "-c",
        CLIENTS,
        "-n",
        &requests.to_string(),
    ]);
    let out = try_run(&mut cmd, None, opts.timeout).map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "redis-benchmark {}: {}",
            out.status,
            last_line(&out.stderr()).unwrap_or("no output")
        ));
    }
    let ops = parse_csv(&out.stdout(), "PING_MBULK").map_err(|e| format!("{e:#}"))?;
    let processed = commands_processed(redis)
        .map_err(|e| format!("{e:#}"))?
        .saturating_sub(before);
    if processed < requests {
        return Err(format!(
            "Redis processed only {processed} of {requests} commands"
        ));
    }
    Ok(ops)
}

/// The churn bastion in `dir`; `to_file`: its output goes to `dir/bastion.log` (see
/// [`AUDIT_TO_FILE`]).
fn start_bastion(dir: &Path, redis: &RedisServer, to_file: bool) -> Bastion {
    let state = dir.join("state");
    std::fs::create_dir_all(&state).expect("churn state dir");
    // Password files must sit directly in `secrets_dir` (0700).
    let secrets = dir.join("secrets");
    std::fs::create_dir_all(&secrets).expect("churn secrets dir");
    std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o700))
        .expect("chmod 0700 the churn secrets dir");
    let password = write_private(&secrets.join("upstream.pw"), b"churn-bench-password");
    let uid = nix::unistd::getuid().as_raw();
    let quote = |p: &Path| toml::Value::String(p.display().to_string()).to_string();
    let config = format!(
        r#"state_dir = {state}
secrets_dir = {secrets}

[listeners.unix]
directory = {sock}

[[databases]]
name = "none"
address = "{redis}"
auth = {{ mode = "none" }}
default_db_user = "default"

[[databases]]
name = "password"
address = "{redis}"
auth = {{ mode = "password", password_file = {password} }}
default_db_user = "default"

[[databases]]
name = "iam"
address = "{redis}"
auth = {{ mode = "iam", service = "elasticache", region = "us-east-1", target = "bench" }}
allow_plaintext_auth = true
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
        state = quote(&state),
        secrets = quote(&secrets),
        sock = quote(&dir.join("sock")),
        password = quote(&password),
        redis = redis.plain_addr(),
    );
    let missing = dir.join("none").display().to_string();
    let env = [
        ("RUST_LOG", "info"),
        ("AWS_ACCESS_KEY_ID", "AKIDBASTIONCHURN0001"),
        ("AWS_SECRET_ACCESS_KEY", "bastion/churn/bench/secret"),
        ("AWS_CONFIG_FILE", &missing),
        ("AWS_SHARED_CREDENTIALS_FILE", &missing),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ];
    let mut bastion = if to_file {
        Bastion::start_logging_to_file(&config, &state, &env, &dir.join("bastion.log"))
    } else {
        Bastion::start_with_env(&config, &state, &env)
    };
    bastion.quiet();
    bastion
}
