//! `database:<name>:managed`: for a managed database, whether the bastion's principal can read
//! each managed user's secret in Secrets Manager (and, on MemoryDB, discover the users by tag).
//! Reads only; never shows a password.

use super::{CheckResult, Doctor};
use crate::catalog::{Auth, Database};
use crate::managed::cloud::CloudUsers;
use crate::managed::secrets::SecretStore;
use crate::managed::{self, ManagedKind};

/// Nothing for a database that is not managed.
pub async fn check(db: &Database, doctor: &Doctor) -> Option<CheckResult> {
    let Auth::Managed(m) = &db.auth else {
        return None;
    };
    let name = format!("database:{}:managed", db.name);
    let discovery = match &m.kind {
        ManagedKind::SelfHosted { .. } => "",
        ManagedKind::Aws {
            service: crate::config::IamService::Memorydb,
            ..
        } => " and memorydb:DescribeClusters, DescribeACLs, DescribeUsers, ListTags on the cluster",
        ManagedKind::Aws { .. } => {
            " and elasticache:DescribeReplicationGroups (or DescribeServerlessCaches), \
             DescribeUserGroups, DescribeUsers, ListTagsForResource on the cache and its users"
        }
    };
    let fix = format!(
        "allow the bastion's principal secretsmanager:CreateSecret, DescribeSecret, \
         GetSecretValue, PutSecretValue, TagResource, UpdateSecretVersionStage on its \
         secrets{discovery} (`bastion configure bootstrap --manual` prints the policy)"
    );
    let chain = &doctor.credentials;
    let result = async {
        let place = managed::place(&db.name, m, chain).await?;
        let users: Vec<String> = match &m.kind {
            ManagedKind::SelfHosted { users, .. } => users.clone(),
            ManagedKind::Aws { .. } => CloudUsers::connect(&db.name, m, &place.region, chain)
                .await?
                .discover()
                .await?
                .into_iter()
                .map(|d| d.user)
                .collect(),
        };
        let store = SecretStore::connect(chain, &place.region).await?;
        let mut missing = Vec::new();
        for user in &users {
            let secret = place.secret_name(&db.name, m, user);
            if store.read(&secret).await?.current.is_none() {
                missing.push(secret);
            }
        }
        Ok::<_, managed::ManagedError>((users, missing))
    }
    .await;
    Some(
        match result {
            Ok((users, missing)) if missing.is_empty() => CheckResult::ok(
                name,
                format!(
                    "{} managed user(s) ({}), each with a current password in Secrets Manager",
                    users.len(),
                    users.join(", ")
                ),
            ),
            Ok((_, missing)) => CheckResult::warn(
                name,
                format!("no password stored yet in {}", missing.join(", ")),
                "the running daemon creates them at its first rotation; see `bastion managed ls`",
            ),
            Err(e) => CheckResult::fail(name, e.to_string(), fix),
        }
        .with("database", db.name.as_str()),
    )
}
