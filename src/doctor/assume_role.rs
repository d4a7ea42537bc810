//! `database:<name>:assume_role`: for a database with `assume_role_arn`, does STS AssumeRole
//! work with the bastion's credentials, and until when are the role's credentials good?
//!
//! AccessDenied is the case this check exists for: the finding carries STS' message and the fix
//! the exact trust-policy statement to add, with the principal STS GetCallerIdentity reports
//! (an instance-profile session is named through its role). Never prints a key or token.

use std::time::Duration;

use super::{CheckResult, Doctor};
use crate::aws::assume_role::{access_denied_explanation, trust_principal, AssumeRoleError};
use crate::catalog::Database;

/// `None` when the database has no `assume_role_arn`.
pub async fn check(db: &Database, doctor: &Doctor) -> Option<CheckResult> {
    let role = db.assume_role.clone()?;
    let name = format!("database:{}:assume_role", db.name);
    let result = match doctor.credentials.assumed(&role).await {
        Ok(creds) => match creds.expiry() {
            Some(expiry) => {
                let at = humantime::format_rfc3339_seconds(expiry).to_string();
                let left = expiry
                    .duration_since((doctor.now)())
                    .map(|d| humantime::format_duration(Duration::from_secs(d.as_secs())))
                    .map(|d| format!("in {d}"))
                    .unwrap_or_else(|_| "already past".into());
                CheckResult::ok(
                    name,
                    format!(
                        "assumed {} as session '{}'; its credentials expire at {at} ({left})",
                        role.arn, role.session_name
                    ),
                )
                .with("expires", at)
            }
            None => CheckResult::ok(name, format!("assumed {}", role.arn))
                .with("expires", serde_json::Value::Null),
        },
        Err(AssumeRoleError::AccessDenied {
            role: arn,
            caller,
            external_id,
            message,
        }) => {
            let principal = caller.as_deref().map(trust_principal).ok();
            let finding = match &caller {
                Ok(caller) => format!(
                    "STS refused AssumeRole on {arn} for {caller} (AccessDenied: {message})"
                ),
                Err(_) => format!("STS refused AssumeRole on {arn} (AccessDenied: {message})"),
            };
            let fix = access_denied_explanation(&arn, &caller, external_id);
            let result = CheckResult::fail(name, finding, fix).with("error", "access_denied");
            match principal {
                Some(p) => result.with("principal", p),
                None => result,
            }
        }
        Err(e @ AssumeRoleError::Source { .. }) => CheckResult::fail(
            name,
            e.to_string(),
            "the bastion needs its own AWS credentials to assume the role: see the \
             `credentials` check",
        )
        .with("error", "no_source_credentials"),
        Err(e @ AssumeRoleError::Sts { .. }) => CheckResult::fail(
            name,
            e.to_string(),
            format!(
                "check that {} exists and that the bastion's principal may assume it",
                role.arn
            ),
        )
        .with("error", "sts"),
        Err(e @ (AssumeRoleError::Call { .. } | AssumeRoleError::NoCredentials { .. })) => {
            CheckResult::fail(
                name,
                e.to_string(),
                "check that this host reaches STS (an sts VPC endpoint, or a route to the \
                 internet; AWS_ENDPOINT_URL_STS overrides the endpoint)",
            )
            .with("error", "unreachable")
        }
    };
    Some(
        result
            .with("database", db.name.as_str())
            .with("role_arn", role.arn.as_str()),
    )
}
