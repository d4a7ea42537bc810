//! `bastion doctor [--json] --config FILE`: run every check, print the report, exit non-zero
//! when one failed.
//!
//! The report goes to stdout (text, or the JSON document the README describes); the one-line
//! "N checks failed" goes to stderr through the usual error path, so stdout stays parseable.

use std::io::Write;
use std::sync::Arc;

use anyhow::Context;

use super::DoctorArgs;
use crate::aws::credentials::CredentialChain;
use crate::aws::imds::ProcessEnv;
use crate::config::Config;
use crate::doctor::{self, Doctor, Status};

pub fn run(args: DoctorArgs) -> anyhow::Result<()> {
    let config = Config::load(&args.config)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let doctor = Arc::new(Doctor::new(
        CredentialChain::default_chain_with_imds(&config.boot.imds, &ProcessEnv),
        config.live.limits.upstream_connect_timeout,
    ));
    let report = runtime.block_on(doctor::run(&config, doctor));
    let mut stdout = std::io::stdout().lock();
    if args.json {
        report.write_json(&mut stdout)
    } else {
        report.write_text(&mut stdout)
    }
    .and_then(|()| stdout.flush())
    .context("cannot write the report to stdout")?;
    if report.ok {
        Ok(())
    } else {
        anyhow::bail!(
            "{} of {} checks failed",
            report.count(Status::Fail),
            report.checks.len()
        )
    }
}
