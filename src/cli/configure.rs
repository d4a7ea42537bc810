//! `bastion configure bootstrap --manual --config FILE [--account-id ID]`: print the
//! least-privilege IAM policy the bastion's AWS principal needs for the configured databases.
//!
//! The policy (JSON) goes to stdout so it can be piped to `aws iam put-role-policy`; what it
//! covers and what to do with it goes to stderr.

use std::io::Write;

use anyhow::Context;

use super::ConfigureCommand;
use crate::aws::policy::{self, ACCOUNT_PLACEHOLDER};
use crate::config::Config;

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
            let bootstrap = policy::bootstrap_policy(&config, &account_id)?;
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
