//! `bastion iam-token …`: print an ElastiCache / MemoryDB IAM auth token from the default
//! credential chain, like `aws rds generate-db-auth-token` does for RDS.
//!
//! The token goes to stdout as one line and nowhere else; errors go to stderr and name what
//! failed (for missing credentials, every provider tried and why it had none). Every token
//! printed is audited (`iam_token.issued`: uid, account, service, region, target, db-user —
//! never the token) to the journal, whatever the caller's stderr is, and to stderr.

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
    audit_issued(&request);
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", token.expose())
        .and_then(|()| stdout.flush())
        .context("cannot write the token to stdout")?;
    Ok(())
}

/// The `iam_token.issued` audit event, before the token is printed: to journald (when its
/// socket answers: the caller's stderr is usually a terminal, so it goes there directly, as
/// `BASTION_*` fields under the caller's own `_UID`) and to stderr.
fn audit_issued(request: &TokenRequest<'_>) {
    use tracing_subscriber::layer::SubscriberExt as _;
    let uid = nix::unistd::getuid();
    let caller = nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map_or_else(|| uid.to_string(), |u| u.name);
    let journald = tracing_journald::layer().ok().map(|layer| {
        layer
            .with_field_prefix(Some(crate::systemd::JOURNAL_FIELD_PREFIX.into()))
            .with_syslog_identifier("bastion".into())
    });
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(false);
    let subscriber = tracing_subscriber::registry().with(journald).with(stderr);
    tracing::subscriber::with_default(subscriber, || {
        crate::audit::iam_token_issued(&crate::audit::IamTokenIssued {
            uid: uid.as_raw(),
            caller: &caller,
            service: request.service.signing_name(),
            region: request.region,
            target: request.target,
            db_user: request.db_user,
        })
    });
}
