//! `database:<name>:region`: which AWS region an IAM database's tokens are signed for, and
//! where that came from (`auth.region`, `AWS_REGION`, the profile, IMDS `placement/region`).
//!
//! Only for IAM databases. The look-up is the one sessions use
//! ([`crate::aws::region::Regions`], shared with the credential chain), so the answer here is
//! the daemon's answer on the same host with the same environment.

use super::{CheckResult, Doctor};
use crate::catalog::{Auth, Database};

/// `None` when the database does not use IAM auth.
pub async fn check(db: &Database, doctor: &Doctor) -> Option<CheckResult> {
    let Auth::Iam { region, .. } = &db.auth else {
        return None;
    };
    let name = format!("database:{}:region", db.name);
    let regions = doctor.credentials.regions();
    Some(
        match regions.for_database(&db.name, region.as_deref()).await {
            Ok(resolved) => {
                CheckResult::ok(name, format!("IAM auth tokens are signed for {resolved}"))
                    .with("region", resolved.region.as_str())
                    .with("region_source", resolved.source.as_str())
            }
            Err(e) => CheckResult::fail(
                name,
                format!("no AWS region for the IAM auth tokens: {}", e.tried),
                format!(
                    "set `region` in the database's auth (auth = {{ mode = \"iam\", region = \
                     \"<region>\", … }}, or `bastion db add {} … --region <region> --replace`), \
                     or AWS_REGION in the bastion's environment",
                    db.name
                ),
            )
            .with("region", serde_json::Value::Null),
        }
        .with("database", db.name.as_str()),
    )
}
