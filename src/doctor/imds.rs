//! The `imds` check: can this bastion reach the instance metadata service over IMDSv2, and is a
//! role attached? Its JSON carries `"kind"`: `ok`, `hop_limit_exceeded`, `unreachable`,
//! `disabled`, `v1_only`, `no_role` (or `unexpected`), from [`ImdsClient::probe`].
//!
//! Off EC2 (a laptop, CI) IMDS is simply absent: that is a failure only when some database
//! needs AWS credentials and no other link of the chain supplied them.

use super::CheckResult;
use crate::aws::imds::{Env, ImdsClient, ImdsErrorKind};
use crate::config::Config;

pub const NAME: &str = "imds";

/// `credentials_ok`: whether the credentials check found credentials elsewhere (or none needed).
pub async fn check(config: &Config, env: &dyn Env, credentials_ok: bool) -> CheckResult {
    let client =
        match ImdsClient::from_config(&config.boot.imds, env) {
            Ok(client) => client,
            Err(e) => return CheckResult::fail(
                NAME,
                e.to_string(),
                "fix [aws.imds] in the config or the AWS_EC2_METADATA_SERVICE_ENDPOINT* variables",
            )
            .with("kind", ImdsErrorKind::Unexpected.as_str()),
        };
    let status = client.probe().await;
    let kind = status.kind;
    let result = match kind {
        ImdsErrorKind::Ok => CheckResult::ok(NAME, status.message.clone()),
        _ if credentials_ok => CheckResult::warn(NAME, status.message.clone(), fix(kind)),
        _ => CheckResult::fail(NAME, status.message.clone(), fix(kind)),
    };
    let result = result
        .with("kind", kind.as_str())
        .with("endpoint", status.endpoint.clone());
    match status.role {
        Some(role) => result.with("role", role),
        None => result,
    }
}

/// What to do about each kind (the probe's message already says what was found).
fn fix(kind: ImdsErrorKind) -> String {
    match kind {
        ImdsErrorKind::Ok => String::new(),
        ImdsErrorKind::HopLimitExceeded => "raise the PUT response hop limit: aws ec2 \
            modify-instance-metadata-options --instance-id <id> --http-put-response-hop-limit 2 \
            (or run the bastion with host networking); check it with aws ec2 describe-instances \
            --instance-ids <id> | grep HttpPutResponseHopLimit"
            .into(),
        ImdsErrorKind::Unreachable => "not on EC2, or a firewall / route blocks 169.254.169.254: \
            give credentials another way (environment, profile) or allow the metadata endpoint"
            .into(),
        ImdsErrorKind::Disabled => "enable the metadata service: aws ec2 \
            modify-instance-metadata-options --instance-id <id> --http-endpoint enabled \
            (or unset AWS_EC2_METADATA_DISABLED / [aws.imds] disabled)"
            .into(),
        ImdsErrorKind::V1Only => "the instance answers IMDSv1 but not v2 tokens: check the hop \
            limit and any proxy in between; allow_v1_fallback in [aws.imds] only as a stopgap"
            .into(),
        ImdsErrorKind::NoRole => {
            "attach an IAM role (instance profile) to the instance: aws ec2 \
            associate-iam-instance-profile --instance-id <id> --iam-instance-profile Name=<profile>"
                .into()
        }
        ImdsErrorKind::Unexpected => "IMDS gave an unexpected answer: see the finding; retry, and \
            check for a proxy between the bastion and 169.254.169.254"
            .into(),
    }
}
