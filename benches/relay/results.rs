//! The run as data: `benches/results/relay-<UTC>.json` (every run's number, medians, ratios to
//! direct Redis and to HAProxy, the machine it ran on), the same as `latest.json`, the chart
//! `latest.png` ([`crate::chart`]), and with `--write-readme` the table in README.md's
//! "Performance" section between `<!-- bench:begin -->` and `<!-- bench:end -->`.
//!
//! The chart and the README table are drawn from the JSON alone, so `--from-json FILE` redraws
//! them for a saved run without measuring anything.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use anyhow::{bail, Context as _, Result};
use serde_json::{json, Value};

use crate::report::{median, Report};
use crate::{chart, Options, TargetId, RATIOS, WORKLOADS};

/// Bumped when a field changes meaning; the README and chart readers check it.
const SCHEMA: u64 = 1;
const BEGIN: &str = "<!-- bench:begin";
const END: &str = "<!-- bench:end -->";

/// The 1-, 5- and 15-minute load averages.
pub(crate) fn loadavg() -> Vec<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .filter_map(|v| v.parse().ok())
        .collect()
}

pub(crate) fn to_json(
    report: &Report,
    started: SystemTime,
    load_before: Vec<f64>,
    load_after: Vec<f64>,
) -> Value {
    let opts = report.opts;
    let m = |w: usize, id: TargetId| median(report.results.ops.get(&(w, id)));
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    let workloads: Vec<Value> = WORKLOADS
        .iter()
        .map(|w| {
            json!({
                "label": w.label,
                "args": w.args(((w.requests as f64 * opts.scale) as u64).max(100)).join(" "),
                "requests": ((w.requests as f64 * opts.scale) as u64).max(100),
                "tls_requests": ((w.tls_requests as f64 * opts.scale) as u64).max(100),
            })
        })
        .collect();
    let targets: Vec<Value> = report
        .targets
        .iter()
        .map(|t| {
            json!({
                "name": t.id.name(),
                "transport": t.id.transport(),
                "direct": t.id.direct().name(),
                "haproxy": t.id.haproxy().name(),
                "error": t.endpoint.as_ref().err(),
            })
        })
        .collect();
    let mut throughput = Vec::new();
    for (w, workload) in WORKLOADS.iter().enumerate() {
        for t in report.targets {
            let id = t.id;
            let med = m(w, id);
            let cpu = |id: TargetId| median(report.results.cpu_us.get(&(w, id)));
            throughput.push(json!({
                "workload": workload.label,
                "target": id.name(),
                "ops_per_s": report.results.ops.get(&(w, id)).cloned().unwrap_or_default(),
                "errors": report.results.errors.get(&(w, id)).cloned().unwrap_or_default(),
                "median": med,
                "ratio_to_direct": ratio(med, m(w, id.direct())),
                "ratio_to_haproxy": ratio(med, m(w, id.haproxy())),
                // The serving process's (proxy's; direct: redis-server's) user + system CPU.
                "cpu_us_per_request": report.results.cpu_us.get(&(w, id)).cloned().unwrap_or_default(),
                "cpu_us_median": cpu(id),
                "cpu_ratio_to_haproxy": ratio(cpu(id), cpu(id.haproxy())),
            }));
        }
    }
    let ratios: Vec<Value> = RATIOS
        .iter()
        .map(|(num, den)| {
            let per: serde_json::Map<String, Value> = WORKLOADS
                .iter()
                .enumerate()
                .map(|(w, wl)| (wl.label.to_string(), json!(ratio(m(w, *num), m(w, *den)))))
                .collect();
            json!({ "numerator": num.name(), "denominator": den.name(), "by_workload": per })
        })
        .collect();
    let churn = report.churn;
    let churn_rows: Vec<Value> = churn
        .rows
        .iter()
        .map(|r| {
            let med = median(Some(&r.runs));
            json!({
                "target": r.target,
                "conn_per_s": r.runs,
                "errors": r.errors,
                "median": med,
                "ratio_to_direct": ratio(med, churn.median_of("direct-unix")),
                "ratio_to_haproxy": ratio(med, churn.median_of("haproxy-unix")),
            })
        })
        .collect();
    let setup = report.setup;
    let setup_rows: Vec<Value> = setup
        .rows
        .iter()
        .map(|r| {
            let (p50, p90) = (setup.median_of(r.id, false), setup.median_of(r.id, true));
            let o = &r.order;
            json!({
                "target": r.id.name(),
                "p50_us": r.p50_us,
                "p90_us": r.p90_us,
                "median_p50_us": p50,
                "median_p90_us": p90,
                "p50_ratio_to_direct": ratio(p50, setup.median_of(r.id.direct(), false)),
                "p50_ratio_to_haproxy": ratio(p50, setup.median_of(r.id.haproxy(), false)),
                "order": {
                    "tries": o.tries,
                    "new_first": o.new_first,
                    "established_first": o.established_first,
                    "unknown": o.unknown,
                    "unknown_replies": o.unknown_replies,
                    "failed": o.failed,
                },
                "errors": r.errors,
            })
        })
        .collect();
    let idle: Vec<Value> = report
        .idle
        .iter()
        .map(|(id, r)| match r {
            Ok(i) => json!({
                "target": id.name(),
                "sessions": i.sessions,
                "user_kib": i.user_kib,
                "kernel_kib": i.kernel_kib,
                "pipes": i.pipes,
            }),
            Err(e) => json!({ "target": id.name(), "error": e }),
        })
        .collect();
    let s = report.startup;
    let b = report.binary;
    let bastion = report.bastion.as_ref().map(|b| {
        json!({
            "peak_rss_kib": b.memory.map(|m| m.peak_kb),
            "rss_kib": b.memory.map(|m| m.now_kb),
            "sessions_by_path": b.paths,
            "log_warnings": b.warnings,
            "log_errors": b.errors,
        })
    });
    json!({
        "schema": SCHEMA,
        "bench": "relay",
        "started_utc": humantime::format_rfc3339_seconds(started).to_string(),
        "elapsed_s": report.elapsed.as_secs_f64().round(),
        "smoke": opts.scale < 1.0 || opts.rounds < 3,
        "options": {
            "rounds": opts.rounds,
            "scale": opts.scale,
            "timeout_s": opts.timeout.as_secs(),
            "idle_sessions": opts.idle,
            "setup": opts.setup,
            "order_tries": opts.order_tries,
            "order_delay_ms": opts.order_delay.as_secs_f64() * 1e3,
            "starts": opts.starts,
        },
        "machine": machine(load_before, load_after),
        "workloads": workloads,
        "targets": targets,
        "throughput": throughput,
        "ratios": ratios,
        "churn": {
            "workload": format!("-t ping_mbulk -k 0 -c {}", crate::churn::CLIENTS),
            "requests": churn.requests,
            "rows": churn_rows,
            "error": churn.failed,
        },
        "setup": {
            "connections_per_round": setup.connections,
            "order_tries_per_round": setup.tries,
            "order_delay_ms": setup.delay.as_secs_f64() * 1e3,
            "rows": setup_rows,
            "error": setup.failed,
        },
        "idle": idle,
        "startup": {
            "cold_ms": s.cold_ms,
            "warm_ms": s.warm_ms,
            "warm_median_ms": median(Some(&s.warm_ms)),
            "errors": s.errors,
        },
        "binary": {
            "stripped_bytes": b.stripped_bytes.as_ref().ok(),
            "stripped_mib": b.stripped_bytes.as_ref().ok().map(|n| *n as f64 / 1048576.0),
            "built_bytes": b.built_bytes.as_ref().ok(),
            "built_profile": "bench (release, debug = 1)",
            "error": b.stripped_bytes.as_ref().err(),
        },
        "bastion": bastion,
        "haproxy_peak_rss_kib": report.haproxy_hwm.map(|m| m.peak_kb),
    })
}

/// CPUs, kernel, load before and after, and the versions of everything measured.
fn machine(load_before: Vec<f64>, load_after: Vec<f64>) -> Value {
    let first_line = |prog: &str, args: &[&str]| -> Option<String> {
        let out = Command::new(prog).args(args).output().ok()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines().next().map(|l| l.trim().to_string())
    };
    let root = env!("CARGO_MANIFEST_DIR");
    json!({
        "nproc": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").ok().map(|s| s.trim().to_string()),
        "loadavg_before": load_before,
        "loadavg_after": load_after,
        "versions": {
            "bastion": first_line(crate::support::bastion::BASTION_BIN, &["--version"]),
            "git_commit": first_line("git", &["-C", root, "rev-parse", "HEAD"]),
            "git_dirty": first_line("git", &["-C", root, "status", "--porcelain", "--untracked-files=no"]).is_some(),
            "redis_server": first_line("redis-server", &["--version"]),
            "redis_benchmark": first_line("redis-benchmark", &["--version"]),
            "haproxy": first_line("haproxy", &["-v"]),
            "rustc": first_line("rustc", &["--version"]),
        },
    })
}

/// Write the JSON twice (timestamped and latest), draw the chart, and rewrite the README block
/// when asked.
pub(crate) fn save(json: &Value, opts: &Options) -> Result<()> {
    let dir = &opts.results_dir;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let stamp = json["started_utc"]
        .as_str()
        .unwrap_or("unknown")
        .replace([':', '-'], "");
    let text = serde_json::to_string_pretty(json)? + "\n";
    for name in [format!("relay-{stamp}.json"), "latest.json".into()] {
        let path = dir.join(name);
        std::fs::write(&path, &text).with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    draw(json, &dir.join("latest.png"));
    if opts.write_readme {
        write_readme(json, &dir.join("latest.json"))?;
    }
    Ok(())
}

/// `--from-json FILE`: the chart next to it (`FILE` with `.png`), and the README block.
pub(crate) fn regenerate(path: &Path, opts: &Options) -> Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let json: Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    if json["schema"].as_u64() != Some(SCHEMA) {
        bail!("{}: not a schema {SCHEMA} relay result", path.display());
    }
    draw(&json, &path.with_extension("png"));
    if opts.write_readme {
        write_readme(&json, path)?;
    }
    Ok(())
}

fn draw(json: &Value, path: &Path) {
    match chart::draw(json, path) {
        Ok(()) => println!("wrote {}", path.display()),
        Err(e) => eprintln!("relay bench: chart {}: {e:#}", path.display()),
    }
}

fn readme_path() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
}

/// Replace everything between the markers in README.md with [`readme_block`].
fn write_readme(json: &Value, source: &Path) -> Result<()> {
    let path = readme_path();
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let (Some(begin), Some(end)) = (text.find(BEGIN), text.find(END)) else {
        bail!("{} has no {BEGIN} … {END} block", path.display());
    };
    if end < begin {
        bail!("{}: {END} comes before {BEGIN}", path.display());
    }
    // A JSON inside the repository is named relative to it, and its chart is linked — also
    // when named relative to the working directory (`--from-json benches/results/latest.json`).
    let absolute = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let source = &absolute(source);
    let inside = source
        .strip_prefix(absolute(Path::new(env!("CARGO_MANIFEST_DIR"))))
        .ok();
    let shown = inside.unwrap_or(source).display().to_string();
    let chart = inside.map(|p| p.with_extension("png").display().to_string());
    let new = format!(
        "{}{}{}",
        &text[..begin],
        readme_block(json, &shown, chart.as_deref()),
        &text[end + END.len()..]
    );
    std::fs::write(&path, new).with_context(|| format!("writing {}", path.display()))?;
    println!("rewrote the table in {}", path.display());
    Ok(())
}

/// The README's columns: (numerator, denominator, heading). Unix rows compare the same
/// topology (Unix socket in front, TCP to Redis); TLS rows mTLS terminators, and Redis' own TLS.
const README_RATIOS: &[(&str, &str, &str)] = &[
    ("bastion-unix", "haproxy-unix", "guard ÷ HAProxy"),
    ("bastion-unix-pass", "haproxy-unix", "passthrough ÷ HAProxy"),
    ("bastion-unix-inspect", "haproxy-unix", "inspect ÷ HAProxy"),
    ("bastion-unix", "direct-unix", "guard ÷ direct"),
    ("bastion-tls", "haproxy-tls", "mTLS guard ÷ HAProxy mTLS"),
    (
        "bastion-tls-pass",
        "haproxy-tls",
        "mTLS passthrough ÷ HAProxy mTLS",
    ),
    ("bastion-tls", "direct-tls", "mTLS guard ÷ Redis TLS"),
];

/// The generated Markdown, markers included; `chart`: the PNG to link, relative to the README.
pub(crate) fn readme_block(json: &Value, source: &str, chart: Option<&str>) -> String {
    // A number of the throughput row for workload `w` and target `t`.
    let row = |w: &str, t: &str, field: &str| -> Option<f64> {
        json["throughput"]
            .as_array()?
            .iter()
            .find(|r| r["workload"] == w && r["target"] == t)?[field]
            .as_f64()
    };
    let median = |w: &str, t: &str| row(w, t, "median");
    let cell = |v: Option<f64>| v.map_or("n/a".into(), |r| format!("{r:.2}"));
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    let opts = &json["options"];
    let machine = &json["machine"];
    let load = |k: &str| {
        machine[k]
            .as_array()
            .and_then(|a| a.first())
            .and_then(Value::as_f64)
            .map_or("?".into(), |l| format!("{l:.1}"))
    };
    let mut out = format!(
        "{BEGIN} generated from {source} by `cargo bench --bench relay -- --write-readme`; do not edit -->\n"
    );
    out.push_str(&format!(
        "Measured {}{}: {} CPUs, load {} before and {} after, `--rounds {} --scale {}`, \
         medians of ops/s; a ratio above 1 means the bastion is faster.\n\n",
        json["started_utc"].as_str().unwrap_or("?"),
        if json["smoke"].as_bool() == Some(true) {
            " (**smoke run**: too short to quote)"
        } else {
            ""
        },
        machine["nproc"],
        load("loadavg_before"),
        load("loadavg_after"),
        opts["rounds"],
        opts["scale"],
    ));
    out.push_str("| workload | direct-unix ops/s |");
    for (_, _, heading) in README_RATIOS {
        out.push_str(&format!(" {heading} |"));
    }
    out.push_str("\n|---|---|");
    out.push_str(&"---|".repeat(README_RATIOS.len()));
    out.push('\n');
    for w in json["workloads"].as_array().into_iter().flatten() {
        let w = w["label"].as_str().unwrap_or("?");
        let direct = median(w, "direct-unix").map_or("n/a".into(), crate::report::human);
        out.push_str(&format!("| {w} | {direct} |"));
        for (num, den, _) in README_RATIOS {
            out.push_str(&format!(
                " {} |",
                cell(ratio(median(w, num), median(w, den)))
            ));
        }
        out.push('\n');
    }

    // CPU per request of the serving process (runs from before it was recorded have none).
    let cpu = |w: &str, t: &str| row(w, t, "cpu_us_median");
    let labels: Vec<&str> = json["workloads"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|w| w["label"].as_str())
        .collect();
    let cpu_line = |num: &str, den: &str| -> Option<String> {
        let parts: Vec<String> = labels
            .iter()
            .filter_map(|w| Some(format!("{w} {:.2}", ratio(cpu(w, num), cpu(w, den))?)))
            .collect();
        (!parts.is_empty()).then(|| parts.join(", "))
    };
    if let Some(unix) = cpu_line("bastion-unix", "haproxy-unix") {
        out.push_str(&format!(
            "\nCPU per request of the proxy process (user + system over each run ÷ its requests, \
             median of the rounds; below 1: the bastion costs less), guard ÷ HAProxy: {unix}"
        ));
        if let Some(tls) = cpu_line("bastion-tls", "haproxy-tls") {
            out.push_str(&format!("; mTLS guard ÷ HAProxy mTLS: {tls}"));
        }
        out.push_str(".\n");
    }

    let churn = &json["churn"];
    let churn_median = |t: &str| -> Option<f64> {
        churn["rows"]
            .as_array()?
            .iter()
            .find(|r| r["target"] == t)?["median"]
            .as_f64()
    };
    let haproxy = churn_median("haproxy-unix");
    let mut parts = Vec::new();
    for auth in ["none", "password", "iam"] {
        let v = churn_median(&format!("bastion-unix auth={auth}"));
        parts.push(format!(
            "auth={auth} {} ({}× HAProxy)",
            v.map_or("n/a".into(), crate::report::human),
            cell(ratio(v, haproxy))
        ));
    }
    // The bastion whose output went to a file (none in runs from before it existed).
    let to_file = churn_median(crate::churn::AUDIT_TO_FILE).map_or(String::new(), |v| {
        format!(
            "; auth=none with its output written to a file instead of read through a pipe \
             meanwhile {} ({}× HAProxy)",
            crate::report::human(v),
            cell(ratio(Some(v), haproxy))
        )
    });
    out.push_str(&format!(
        "\nConnection churn (`{}`, Unix socket, conn/s): {}; HAProxy {}, direct {}{to_file}.\n",
        churn["workload"].as_str().unwrap_or("-k 0"),
        parts.join(", "),
        haproxy.map_or("n/a".into(), crate::report::human),
        churn_median("direct-unix").map_or("n/a".into(), crate::report::human),
    ));

    let setup = &json["setup"];
    let setup_rows = setup["rows"].as_array().filter(|rows| !rows.is_empty());
    if let Some(rows) = setup_rows {
        out.push_str(&format!(
            "\nConnection set-up, one new connection at a time ({} per target per round): \
             `connect()` to the first `PING`'s reply, µs (medians of each round's percentile); \
             and how often a blocking `XREADGROUP` sent on a new connection reached Redis before a \
             `DEL` sent {} ms later on an established one (a ratio above 1: slower set-up than the \
             baseline):\n\n\
             | target | p50 µs | p90 µs | p50 ÷ HAProxy | p50 ÷ direct | XREADGROUP first |\n\
             |---|---|---|---|---|---|\n",
            setup["connections_per_round"],
            setup["order_delay_ms"].as_f64().unwrap_or(f64::NAN),
        ));
        for r in rows {
            let us = |k: &str| r[k].as_f64().map_or("n/a".into(), |v| format!("{v:.0}"));
            let order = &r["order"];
            let first = match (order["new_first"].as_u64(), order["tries"].as_u64()) {
                (Some(n), Some(t)) if t > 0 => format!("{n}/{t}"),
                _ => "n/a".into(),
            };
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {first} |\n",
                r["target"].as_str().unwrap_or("?"),
                us("median_p50_us"),
                us("median_p90_us"),
                cell(r["p50_ratio_to_haproxy"].as_f64()),
                cell(r["p50_ratio_to_direct"].as_f64()),
            ));
        }
    }

    let sessions = json["idle"]
        .as_array()
        .and_then(|a| a.iter().find_map(|r| r["sessions"].as_u64()));
    if let Some(sessions) = sessions {
        out.push_str(&format!(
            "\nMemory per idle session ({sessions} sessions per target open at once, one PING each; \
             kernel: `SUnreclaim` growth, system-wide):\n\n\
             | target | user RSS KiB | kernel KiB | pipes the process holds |\n|---|---|---|---|\n"
        ));
        for r in json["idle"].as_array().into_iter().flatten() {
            let kib = |k: &str| r[k].as_f64().map_or("n/a".into(), |v| format!("{v:.1}"));
            out.push_str(&format!(
                "| {} | {} | {} | {} |\n",
                r["target"].as_str().unwrap_or("?"),
                kib("user_kib"),
                kib("kernel_kib"),
                r["pipes"].as_u64().map_or("n/a".into(), |p| p.to_string()),
            ));
        }
    }

    let startup = &json["startup"];
    let ms = |v: &Value| v.as_f64().map_or("n/a".into(), |ms| format!("{ms:.0} ms"));
    let binary = &json["binary"];
    out.push_str(&format!(
        "\nexec → READY=1: {} warm (median of {}), {} cold (creates the CA). Stripped binary: {}.\n",
        ms(&startup["warm_median_ms"]),
        startup["warm_ms"].as_array().map_or(0, Vec::len),
        ms(&startup["cold_ms"]),
        match (binary["stripped_bytes"].as_u64(), binary["stripped_mib"].as_f64()) {
            (Some(b), Some(mib)) => format!("{b} bytes ({mib:.1} MiB)"),
            _ => "n/a".into(),
        }
    ));
    if let Some(chart) = chart {
        out.push_str(&format!("\n![bastion ÷ HAProxy per workload]({chart})\n"));
    }
    out.push_str(END);
    out
}
