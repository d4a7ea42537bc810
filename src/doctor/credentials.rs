//! The `credentials` check: which link of the AWS credential chain answered, and until when.
//!
//! Only IAM-mode databases need credentials; without one the check is a `skip`. Never prints
//! the access key id, the secret key or the session token — only the provider's name.

use std::time::{Duration, SystemTime};

use serde_json::Value;

use super::{CheckResult, Doctor};
use crate::aws::credentials::{CredentialsError, REFRESH_BEFORE_EXPIRY};
use crate::config::{AuthConfig, Config};

pub const NAME: &str = "credentials";

pub async fn check(config: &Config, doctor: &Doctor) -> CheckResult {
    let iam_dbs: Vec<&str> = config
        .seed
        .databases
        .iter()
        .filter(|db| matches!(db.auth, AuthConfig::Iam { .. }))
        .map(|db| db.name.as_str())
        .collect();
    let tried: Vec<&str> = doctor.credentials.link_names().collect();
    if iam_dbs.is_empty() {
        return CheckResult::skip(
            NAME,
            "no database uses auth mode 'iam'; AWS credentials are not needed",
        );
    }
    let result = match doctor.credentials.credentials().await {
        Ok((creds, provider)) => judge(&provider, creds.expiry(), (doctor.now)()),
        Err(CredentialsError::NotFound(reasons)) => CheckResult::fail(
            NAME,
            format!("no credential provider answered ({reasons})"),
            "give the bastion AWS credentials: attach an IAM role (instance profile) to the \
             instance, or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE naming \
             a profile with keys in the shared credentials file",
        ),
        Err(e @ CredentialsError::ProviderFailed { .. }) => {
            let provider = match &e {
                CredentialsError::ProviderFailed { provider, .. } => provider.clone(),
                CredentialsError::NotFound(_) => String::new(),
            };
            CheckResult::fail(
                NAME,
                e.to_string(),
                format!(
                    "fix the configuration of credential provider `{provider}` (it found \
                     settings but could not turn them into credentials)"
                ),
            )
            .with("provider", provider)
        }
    };
    result
        .with("providers_tried", tried)
        .with("iam_databases", iam_dbs)
}

/// Status of credentials from `provider` expiring at `expiry`, seen at `now`.
fn judge(provider: &str, expiry: Option<SystemTime>, now: SystemTime) -> CheckResult {
    let Some(expiry) = expiry else {
        return CheckResult::ok(
            NAME,
            format!("provider `{provider}` answered with long-term keys (no expiry)"),
        )
        .with("provider", provider)
        .with("expires", Value::Null);
    };
    let at = humantime::format_rfc3339_seconds(expiry).to_string();
    let result = match expiry.duration_since(now) {
        Err(_) => CheckResult::fail(
            NAME,
            format!("provider `{provider}` answered with credentials that expired at {at}"),
            format!("provider `{provider}` hands out stale credentials: refresh its source"),
        ),
        Ok(left) if left <= REFRESH_BEFORE_EXPIRY => CheckResult::warn(
            NAME,
            format!(
                "provider `{provider}` answered; its credentials expire at {at}, in {}",
                rounded(left)
            ),
            format!(
                "credentials this close to expiry are refreshed on every use; if they stay \
                 near expiry, check that provider `{provider}` rotates them"
            ),
        ),
        Ok(left) => CheckResult::ok(
            NAME,
            format!(
                "provider `{provider}` answered; credentials expire at {at} (in {})",
                rounded(left)
            ),
        ),
    };
    result.with("provider", provider).with("expires", at)
}

fn rounded(d: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(Duration::from_secs(d.as_secs()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Status;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    #[test]
    fn expiry_decides_the_status() {
        let now = at(0);
        let r = judge("env", None, now);
        assert_eq!(r.status, Status::Ok);
        assert!(r.finding.contains("`env`") && r.finding.contains("no expiry"));

        let r = judge("imds", Some(at(6 * 3600)), now);
        assert_eq!(r.status, Status::Ok);
        assert!(r.finding.contains("in 6h"), "{}", r.finding);
        assert_eq!(r.fields["expires"], "2023-11-15T04:13:20Z");

        let r = judge("imds", Some(at(60)), now);
        assert_eq!(r.status, Status::Warn);
        let r = judge("imds", Some(now - Duration::from_secs(1)), now);
        assert_eq!(r.status, Status::Fail);
    }
}
