//! `bastion configure bootstrap --manual --config FILE [--account-id ID]`: print the
//! least-privilege IAM policy the bastion's AWS principal needs for the configured databases.
//!
//! The policy (JSON) goes to stdout so it can be piped to `aws iam put-role-policy`; what it
//! covers and what to do with it goes to stderr.

use std::io::Write;

use anyhow::Context;

pub mod policy;

use super::ConfigureCommand;
use crate::aws::imds::{ImdsClient, ProcessEnv};
use crate::aws::region::{Regions, Resolved};
use crate::config::{AuthConfig, Config};
use policy::ACCOUNT_PLACEHOLDER;

pub fn run(command: ConfigureCommand) -> anyhow::Result<()> {
    match command {
        ConfigureCommand::Bootstrap {
            config,
            manual,
            account_id,
        } => {
            if !manual {
                anyhow::bail!(
                    "only `configure bootstrap --manual` exists so far: it prints the IAM policy \
                     for you to attach to the bastion's role"
                );
            }
            let config = Config::load(&config)?;
            let instance_region = instance_region(&config)?;
            let bootstrap = policy::bootstrap_policy(
                &config,
                &account_id,
                instance_region.as_ref().map_err(String::as_str),
            )?;
            let mut stdout = std::io::stdout().lock();
            serde_json::to_writer_pretty(&mut stdout, &bootstrap.document)
                .map_err(std::io::Error::from)
                .and_then(|()| writeln!(stdout))
                .and_then(|()| stdout.flush())
                .context("cannot write the policy to stdout")?;
            let mut stderr = std::io::stderr().lock();
            let _ = writeln!(
                stderr,
                "Attach this policy to the IAM role of the bastion's instance profile, e.g.\n  \
                 bastion configure bootstrap --manual --config FILE > bastion-policy.json\n  \
                 aws iam put-role-policy --role-name ROLE --policy-name bastion \
                 --policy-document file://bastion-policy.json"
            );
            if account_id == ACCOUNT_PLACEHOLDER {
                let _ = writeln!(
                    stderr,
                    "Replace {ACCOUNT_PLACEHOLDER} with your account id, or pass --account-id."
                );
            }
            for note in &bootstrap.notes {
                let _ = writeln!(stderr, "- {note}");
            }
            for role in &bootstrap.role_policies {
                let _ = writeln!(
                    stderr,
                    "\nPermissions policy for {} (aws iam put-role-policy --role-name <its name> \
                     --policy-name bastion-connect --policy-document file://…):",
                    role.role_arn
                );
                let _ = serde_json::to_writer_pretty(&mut stderr, &role.document);
                let _ = writeln!(stderr);
            }
            Ok(())
        }
    }
}

/// The region of databases without `auth.region`, as the daemon would find it (environment,
/// profile, IMDS with `[aws.imds]`); only looked up when such a database exists.
fn instance_region(config: &Config) -> anyhow::Result<Result<Resolved, String>> {
    let needed = config
        .seed
        .databases
        .iter()
        .any(|db| matches!(db.auth, AuthConfig::Iam { region: None, .. }));
    if !needed {
        return Ok(Err("not needed".into()));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let regions = Regions::new(ImdsClient::from_config(&config.boot.imds, &ProcessEnv));
    Ok(runtime.block_on(regions.instance()))
}
