//! The shipped systemd units: exposure score (≤ 1.5, `systemd-analyze security --offline`),
//! `systemd-analyze verify` (directives known, binary executable), and the example
//! configuration parses.
//!
//! Needs `systemd-analyze` (systemd 252 on the test bed); without it the tests print why they
//! skip and pass.

use std::path::{Path, PathBuf};
use std::process::Command;

const BASTION_BIN: &str = env!("CARGO_BIN_EXE_bastion");

fn unit(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("systemd")
        .join(name)
}

fn systemd_analyze() -> Option<PathBuf> {
    let found = Command::new("systemd-analyze").arg("--version").output();
    match found {
        Ok(out) if out.status.success() => Some(PathBuf::from("systemd-analyze")),
        _ => {
            println!("SKIP: systemd-analyze is not installed; unit files not checked");
            None
        }
    }
}

#[test]
fn bastion_service_exposure_is_at_most_1_5() {
    let Some(analyze) = systemd_analyze() else {
        return;
    };
    let out = Command::new(analyze)
        .args(["security", "--offline=true", "--threshold=15", "--no-pager"])
        .arg(unit("bastion.service"))
        .output()
        .expect("run systemd-analyze security");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary = stdout
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or("<no summary line>");
    println!("{summary}");
    assert!(
        out.status.success(),
        "exposure above 1.5 (or systemd-analyze failed): {summary}\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn units_verify_with_the_built_binary() {
    let Some(analyze) = systemd_analyze() else {
        return;
    };
    // verify checks ExecStart= is executable: point the units at the binary under test.
    let dir = tempfile::tempdir().expect("temp dir");
    let mut paths = Vec::new();
    for name in ["bastion.service", "bastion-firstboot.service"] {
        let text = std::fs::read_to_string(unit(name)).expect("read unit");
        let path = dir.path().join(name);
        std::fs::write(&path, text.replace("/usr/bin/bastion", BASTION_BIN)).expect("write unit");
        paths.push(path);
    }
    let out = Command::new(analyze)
        .arg("verify")
        .args(&paths)
        .output()
        .expect("run systemd-analyze verify");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{stderr}"
    );
    // Unknown or misspelled directives are warnings, not failures: refuse them too.
    let ours: Vec<&str> = stderr.lines().filter(|l| l.contains("bastion")).collect();
    assert!(ours.is_empty(), "systemd-analyze verify warned:\n{stderr}");
}

#[test]
fn service_keeps_its_contract() {
    let text = std::fs::read_to_string(unit("bastion.service")).expect("read unit");
    for line in [
        "Type=notify",
        "NotifyAccess=main",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "LimitNOFILE=65536",
        "LimitCORE=0",
        "LogRateLimitBurst=100000",
        "StateDirectory=bastion",
        "RuntimeDirectory=bastion",
        "ConfigurationDirectory=bastion",
        "CapabilityBoundingSet=",
        "UMask=0077",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
    ] {
        assert!(
            text.lines().any(|l| l.trim() == line),
            "bastion.service lost `{line}`"
        );
    }
    assert!(text.lines().any(|l| l.starts_with("WatchdogSec=")));
    // Bounded: memory (a soft limit below the hard one) and tasks.
    for key in ["MemoryHigh=", "MemoryMax=", "TasksMax="] {
        let value = text
            .lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .unwrap_or_else(|| panic!("bastion.service has no {key}"));
        assert!(
            !value.is_empty() && value != "infinity",
            "bastion.service {key}{value} is no bound"
        );
    }
}

#[test]
fn example_config_parses() {
    bastion::config::Config::load(&unit("bastion.toml")).expect("systemd/bastion.toml parses");
}
