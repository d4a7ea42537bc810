//! `--churn-auth`: connection churn (`redis-benchmark -k 0`, PING, a new connection per
//! request) through the bastion with upstream auth mode `none`, `password` and `iam` side by
//! side, with direct Redis and HAProxy on Unix sockets for scale. Set-up cost is what it
//! measures: accept, identify, the upstream dial, AUTH (with an IAM token signed per session).
//!
//! Its own bastion (the bench's has auth `none` only): Redis' `default` user is on without a
//! password, so it accepts any AUTH — the password and the SigV4 token (static keys from the
//! environment, nothing fetched) are made and sent as in production, and the upstream answers
//! `+OK`.

use std::path::Path;
use std::process::Command;

use crate::report::human;
use crate::support::bastion::Bastion;
use crate::support::certs::write_private;
use crate::support::clients::{Endpoint, REDIS_BENCHMARK};
use crate::support::process::try_run;
use crate::support::redis::RedisServer;
use crate::testbed::{catch, TestBed};
use crate::{commands_processed, last_line, parse_csv, Options, TargetId};

/// Requests per run (scaled by `--scale`); each is a connection.
const REQUESTS: f64 = 20_000.0;
const CLIENTS: &str = "50";
const DATABASES: [&str; 3] = ["none", "password", "iam"];

/// Run the comparison; the printed table.
pub(crate) fn run(opts: &Options, bed: &TestBed, dir: &Path) -> String {
    let Ok(redis) = &bed.redis else {
        return "churn: no redis-server\n".into();
    };
    let peers = Options {
        only: Some(vec![TargetId::DirectUnix, TargetId::HaproxyUnix]),
        rounds: opts.rounds,
        scale: opts.scale,
        timeout: opts.timeout,
        keep: false,
        churn_auth: false,
        idle: 0,
    };
    let mut targets: Vec<(String, Endpoint)> = bed
        .targets(&peers)
        .into_iter()
        .filter(|t| t.id != TargetId::DirectTcp)
        .filter_map(|t| Some((t.id.name().to_string(), t.endpoint.ok()?)))
        .collect();
    let bastion = match catch(|| start_bastion(dir, redis)) {
        Ok(b) => b,
        Err(e) => return format!("churn: bastion: {e}\n"),
    };
    for db in DATABASES {
        targets.push((
            format!("bastion-unix auth={db}"),
            Endpoint::unix(bastion.socket_path(db)),
        ));
    }
    let requests = ((REQUESTS * opts.scale) as u64).max(100);
    let mut ops: Vec<Vec<f64>> = vec![Vec::new(); targets.len()];
    let mut errors = Vec::new();
    for round in 0..opts.rounds {
        eprintln!("relay bench: churn round {}/{}", round + 1, opts.rounds);
        for i in 0..targets.len() {
            let t = (i + round) % targets.len();
            let (name, ep) = &targets[t];
            match catch(|| churn_once(opts, redis, ep, requests)).unwrap_or_else(Err) {
                Ok(v) => {
                    eprintln!("  {name:<24} {:>8} conn/s", human(v));
                    ops[t].push(v);
                }
                Err(e) => errors.push(format!("{name}: {e}")),
            }
        }
    }
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        (!v.is_empty()).then(|| v[v.len() / 2])
    };
    let medians: Vec<Option<f64>> = ops.iter().map(|v| median(v)).collect();
    let by_name = |n: &str| {
        targets
            .iter()
            .position(|(name, _)| name == n)
            .and_then(|i| medians[i])
    };
    let (haproxy, none) = (by_name("haproxy-unix"), by_name("bastion-unix auth=none"));
    let mut out = format!(
        "\n== connection churn (-k 0, PING, -c {CLIENTS}, {requests} connections/run): \
         median of {} ==\n{:<26}{:>12}{:>12}{:>14}\n",
        opts.rounds, "target", "conn/s", "/ haproxy", "/ auth=none"
    );
    let ratio = |v: Option<f64>, base: Option<f64>| match (v, base) {
        (Some(v), Some(b)) if b > 0.0 => format!("{:.2}x", v / b),
        _ => "-".into(),
    };
    for ((name, _), m) in targets.iter().zip(&medians) {
        out.push_str(&format!(
            "{name:<26}{:>12}{:>12}{:>14}\n",
            m.map_or("n/a".into(), human),
            ratio(*m, haproxy),
            if name.starts_with("bastion") {
                ratio(*m, none)
            } else {
                String::new()
            }
        ));
    }
    for e in errors {
        out.push_str(&format!("  error: {e}\n"));
    }
    drop(bastion);
    out
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

fn start_bastion(dir: &Path, redis: &RedisServer) -> Bastion {
    let dir = dir.join("churn-bastion");
    let state = dir.join("state");
    std::fs::create_dir_all(&state).expect("churn state dir");
    let password = write_private(&dir.join("upstream.pw"), b"churn-bench-password");
    let uid = nix::unistd::getuid().as_raw();
    let quote = |p: &Path| toml::Value::String(p.display().to_string()).to_string();
    let config = format!(
        r#"state_dir = {state}

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
        sock = quote(&dir.join("sock")),
        password = quote(&password),
        redis = redis.plain_addr(),
    );
    let missing = dir.join("none").display().to_string();
    let mut bastion = Bastion::start_with_env(
        &config,
        &state,
        &[
            ("RUST_LOG", "info"),
            ("AWS_ACCESS_KEY_ID", "AKIDBASTIONCHURN0001"),
            ("AWS_SECRET_ACCESS_KEY", "bastion/churn/bench/secret"),
            ("AWS_CONFIG_FILE", &missing),
            ("AWS_SHARED_CREDENTIALS_FILE", &missing),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ],
    );
    bastion.quiet();
    bastion
}
