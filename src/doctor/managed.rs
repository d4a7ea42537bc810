//! The checks of a managed database, reading only and never showing a password:
//!
//! - `database:<name>:managed`: whether the bastion's principal can read each managed user's
//!   secret in Secrets Manager (and, on AWS, discover the users by tag);
//! - `database:<name>:managed_write`: whether it may write them — PutSecretValue on a secret
//!   name under the database's prefix that does not exist: IAM answers before the secret is
//!   looked up, so "not found" means allowed, and nothing is written — and list them
//!   (ListSecrets, what the deletion of secrets of users no longer managed needs);
//! - `database:<name>:managed_admin` (self-hosted): whether `admin_user` may run `ACL SETUSER`
//!   on each managed user — `ACL DRYRUN` (Redis ≥ 7), which runs nothing.
//!
//! What the cloud control plane allows (MemoryDB UpdateUser, ElastiCache ModifyUser) has no
//! dry run and is not checked: a denied rotation shows in `bastion managed ls`.

use super::{CheckResult, Doctor};
use crate::catalog::{Auth, Database};
use crate::managed::cloud::CloudUsers;
use crate::managed::redis::{AclAdmin, SetuserRight};
use crate::managed::secrets::SecretStore;
use crate::managed::{self, ManagedAuth, ManagedKind};

/// Nothing for a database that is not managed.
pub async fn check(db: &Database, doctor: &Doctor) -> Vec<CheckResult> {
    let Auth::Managed(m) = &db.auth else {
        return Vec::new();
    };
    let mut out = vec![read(db, m, doctor).await, write(db, m, doctor).await];
    out.extend(admin(db, m, doctor).await);
    out
}

async fn read(db: &Database, m: &ManagedAuth, doctor: &Doctor) -> CheckResult {
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
        "allow the bastion's principal secretsmanager:CreateSecret, DeleteSecret, \
         DescribeSecret, GetSecretValue, PutSecretValue, TagResource, UpdateSecretVersionStage \
         on its secrets and secretsmanager:ListSecrets{discovery} (`bastion configure \
         bootstrap --manual` prints the policy)"
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
    .with("database", db.name.as_str())
}

async fn write(db: &Database, m: &ManagedAuth, doctor: &Doctor) -> CheckResult {
    let name = format!("database:{}:managed_write", db.name);
    let chain = &doctor.credentials;
    let result = async {
        let place = managed::place(&db.name, m, chain).await?;
        let prefix = place.secret_name(&db.name, m, "");
        let probe = format!("{prefix}bastion-doctor-probe-{:016x}", fastrand::u64(..));
        let store = SecretStore::connect(chain, &place.region).await?;
        // Both asked, so one run names every missing action.
        let denied: Vec<String> = [
            store.may_put(&probe).await.err(),
            // What the sweep of secrets of users no longer managed lists them with.
            store.list_owned(&prefix, &db.name).await.err(),
        ]
        .into_iter()
        .flatten()
        .map(|e| e.to_string())
        .collect();
        Ok::<_, managed::ManagedError>((place.secret_name(&db.name, m, "*"), denied))
    }
    .await;
    match result {
        Ok((secrets, denied)) if denied.is_empty() => CheckResult::ok(
            name,
            format!(
                "the bastion's principal may write {secrets} (secretsmanager:PutSecretValue, \
                 checked on a secret that does not exist: nothing written) and list them \
                 (secretsmanager:ListSecrets)"
            ),
        ),
        Ok((_, denied)) => CheckResult::fail(
            name,
            format!("database '{}': {}", db.name, denied.join("; ")),
            "allow the bastion's principal secretsmanager:PutSecretValue on the database's \
             secrets and secretsmanager:ListSecrets (and the other actions `bastion configure \
             bootstrap --manual` prints)",
        ),
        Err(e) => CheckResult::fail(
            name,
            format!("database '{}': {e}", db.name),
            "see the database's `managed` check",
        ),
    }
    .with("database", db.name.as_str())
}

/// Self-hosted only.
async fn admin(db: &Database, m: &ManagedAuth, doctor: &Doctor) -> Option<CheckResult> {
    let ManagedKind::SelfHosted {
        admin_user,
        admin_password,
        users,
        ..
    } = &m.kind
    else {
        return None;
    };
    let name = format!("database:{}:managed_admin", db.name);
    let grant = format!(
        "let it change the managed users' passwords, e.g. `ACL SETUSER {admin_user} +acl|setuser` \
         (and keep its password in auth.admin_password_file)"
    );
    let admin_password = match admin_password.value() {
        Ok(p) => p,
        Err(e) => {
            return Some(
                CheckResult::fail(name, format!("database '{}': {e}", db.name), grant)
                    .with("database", db.name.as_str()),
            )
        }
    };
    let acl = AclAdmin {
        database: db,
        connector: &doctor.connector,
        admin_user,
        admin_password,
    };
    let mut denied = Vec::new();
    let mut unknown = None;
    for user in users {
        let right = tokio::time::timeout(doctor.timeout, acl.may_setuser(user)).await;
        match right {
            Ok(Ok(SetuserRight::Allowed)) => {}
            Ok(Ok(SetuserRight::Denied(why))) => denied.push(format!("{user}: {why}")),
            Ok(Ok(SetuserRight::Unknown(why))) => unknown = Some(why),
            Ok(Err(e)) => {
                return Some(
                    CheckResult::fail(name, e.to_string(), grant)
                        .with("database", db.name.as_str()),
                )
            }
            Err(_) => {
                return Some(
                    CheckResult::fail(
                        name,
                        format!(
                            "database '{}': admin_user '{admin_user}': no answer within {:?}",
                            db.name, doctor.timeout
                        ),
                        grant,
                    )
                    .with("database", db.name.as_str()),
                )
            }
        }
    }
    let result = if !denied.is_empty() {
        CheckResult::fail(
            name,
            format!(
                "database '{}': admin_user '{admin_user}' may not run ACL SETUSER ({})",
                db.name,
                denied.join("; ")
            ),
            grant,
        )
    } else if let Some(why) = unknown {
        CheckResult::warn(
            name,
            format!(
                "database '{}': whether admin_user '{admin_user}' may run ACL SETUSER is not \
                 known: {why}",
                db.name
            ),
            grant,
        )
    } else {
        CheckResult::ok(
            name,
            format!(
                "admin_user '{admin_user}' may run ACL SETUSER on {} (ACL DRYRUN)",
                users.join(", ")
            ),
        )
    };
    Some(result.with("database", db.name.as_str()))
}
