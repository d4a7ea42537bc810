//! `bastion iam-token …`: print an ElastiCache / MemoryDB IAM auth token from the default
//! credential chain, like `aws rds generate-db-auth-token` does for RDS.
//!
//! The token goes to stdout as one line and nowhere else; errors go to stderr and name what
//! failed (for missing credentials, every provider tried and why it had none).

use std::io::Write;
use std::time::SystemTime;

use anyhow::Context;

use super::IamTokenArgs;
use crate::aws::credentials::CredentialChain;
use crate::aws::token::{generate, TokenRequest};

pub fn run(args: IamTokenArgs) -> anyhow::Result<()> {
    // Credential providers are async; one short-lived current-thread runtime is plenty here.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let chain = CredentialChain::default_chain();
    let (creds, _provider) = runtime.block_on(chain.credentials())?;
    // Without --region: the environment's, the profile's, else IMDS placement/region, as the
    // daemon does for databases without auth.region.
    let region = runtime
        .block_on(
            chain
                .regions()
                .for_database(&args.target, args.region.as_deref()),
        )
        .context("no region for the token (pass --region)")?
        .region;
    let request = TokenRequest {
        service: args.service,
        region: &region,
        target: &args.target,
        db_user: &args.user,
        serverless: args.serverless,
    };
    let token = generate(&request, &creds, SystemTime::now())?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", token.expose())
        .and_then(|()| stdout.flush())
        .context("cannot write the token to stdout")?;
    Ok(())
}
