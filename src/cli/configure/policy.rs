//! The least-privilege IAM policy for the bastion's own AWS principal, derived from the config.
//!
//! - `elasticache:Connect` on each IAM database's replication group
//!   (`arn:aws:elasticache:<region>:<account>:replicationgroup:<target>`) or serverless cache
//!   (`…:serverlesscache:<target>`) *and* on the users it may act as (`…:user:<user-id>`);
//! - `memorydb:Connect` on `arn:aws:memorydb:<region>:<account>:cluster/<target>` and
//!   `…:user/<user>`;
//! - `DescribeUsers` on those users and `elasticache:DescribeServerlessCaches` on serverless
//!   caches (read-only look-ups for checking users and endpoints);
//! - Secrets Manager on the secrets the bastion manages, `secret:bastion/*`
//!   ([`MANAGED_SECRET_PREFIX`]);
//! - `sts:AssumeRole` on each database's `assume_role_arn`. The Connect / Describe grants of
//!   such a database are then needed by *that role*, not by the bastion: they go into the role's
//!   own document ([`Bootstrap::role_policies`]), with the role's account in the ARNs.
//!
//! The users are the `db_users` of every role that reaches the database, plus its
//! `default_db_user`; a role pattern such as `app-*` becomes the ARN pattern `user:app-*`.
//! Pure: no I/O, no AWS calls.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::aws::region::Resolved;
use crate::aws::token::IamService;
use crate::config::{AuthConfig, Config, DatabaseConfig};
use crate::rbac::glob_match;

/// Names of the Secrets Manager secrets the bastion creates and rotates start with this.
pub const MANAGED_SECRET_PREFIX: &str = "bastion/";

/// Stands in for the account id when none is given.
pub const ACCOUNT_PLACEHOLDER: &str = "<ACCOUNT_ID>";

/// Stands in for the region of a database that names none when the instance's region is
/// unknown too.
pub const REGION_PLACEHOLDER: &str = "<REGION>";

/// What the bastion does with its managed secrets.
pub const SECRETS_ACTIONS: [&str; 7] = [
    "secretsmanager:CreateSecret",
    "secretsmanager:DeleteSecret",
    "secretsmanager:DescribeSecret",
    "secretsmanager:GetSecretValue",
    "secretsmanager:PutSecretValue",
    "secretsmanager:TagResource",
    "secretsmanager:UpdateSecretVersionStage",
];

/// What a managed database needs on every secret (the action takes no resource): finding its
/// own secrets by tag, to delete those of users no longer managed (see
/// [`crate::managed::retire`]).
pub const SECRETS_LIST_ACTIONS: [&str; 1] = ["secretsmanager:ListSecrets"];

/// What a managed MemoryDB database needs on its cluster, ACLs and users: discovery by tag
/// and the password change (see [`crate::managed::cloud`]).
pub const MEMORYDB_MANAGED_ACTIONS: [&str; 5] = [
    "memorydb:DescribeClusters",
    "memorydb:DescribeACLs",
    "memorydb:DescribeUsers",
    "memorydb:ListTags",
    "memorydb:UpdateUser",
];

/// What a managed ElastiCache database needs on its replication group or serverless cache,
/// user groups and users: discovery by tag within the cache's user groups and the password
/// change (see [`crate::managed::cloud`]).
pub const ELASTICACHE_MANAGED_ACTIONS: [&str; 6] = [
    "elasticache:DescribeReplicationGroups",
    "elasticache:DescribeServerlessCaches",
    "elasticache:DescribeUserGroups",
    "elasticache:DescribeUsers",
    "elasticache:ListTagsForResource",
    "elasticache:ModifyUser",
];

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("--account-id '{0}' is not a 12-digit AWS account id")]
    AccountId(String),
}

/// An IAM policy document, serialized with AWS' own key names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyDocument {
    #[serde(rename = "Version")]
    pub version: &'static str,
    #[serde(rename = "Statement")]
    pub statement: Vec<Statement>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Statement {
    #[serde(rename = "Sid")]
    pub sid: String,
    #[serde(rename = "Effect")]
    pub effect: &'static str,
    #[serde(rename = "Action")]
    pub action: Vec<String>,
    #[serde(rename = "Resource")]
    pub resource: Vec<String>,
}

/// The policy and what an operator should know about it.
#[derive(Debug, Clone)]
pub struct Bootstrap {
    /// For the bastion's own principal.
    pub document: PolicyDocument,
    /// For each `assume_role_arn`: the permissions policy that role needs (its trust policy
    /// must also allow the bastion's principal; `bastion doctor` names it).
    pub role_policies: Vec<RolePolicy>,
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolePolicy {
    pub role_arn: String,
    pub document: PolicyDocument,
}

/// Sid → (actions, resources), per principal (`None`: the bastion; `Some(arn)`: a role);
/// BTrees for a stable, diff-friendly output.
type Grants =
    BTreeMap<Option<String>, BTreeMap<&'static str, (Vec<&'static str>, BTreeSet<String>)>>;

/// The policy for every database in `config`, for account `account` (12 digits, or
/// [`ACCOUNT_PLACEHOLDER`]). `instance_region` is the region a database without `auth.region`
/// runs in (what [`crate::aws::region::Regions::instance`] found), or why it is unknown — then
/// such a database's ARNs carry [`REGION_PLACEHOLDER`].
pub fn bootstrap_policy(
    config: &Config,
    account: &str,
    instance_region: Result<&Resolved, &str>,
) -> Result<Bootstrap, PolicyError> {
    let valid = account == ACCOUNT_PLACEHOLDER
        || (account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit()));
    if !valid {
        return Err(PolicyError::AccountId(account.to_string()));
    }
    let mut grants: Grants = BTreeMap::new();
    grants.insert(None, BTreeMap::new());
    let mut grant_to =
        |principal: Option<&str>, sid: &'static str, actions: &[&'static str], resource: String| {
            grants
                .entry(principal.map(str::to_string))
                .or_default()
                .entry(sid)
                .or_insert_with(|| (actions.to_vec(), BTreeSet::new()))
                .1
                .insert(resource);
        };
    let mut notes = Vec::new();
    let mut regions = BTreeSet::new();

    for db in &config.seed.databases {
        let AuthConfig::Iam {
            service,
            region,
            target,
            serverless,
        } = &db.auth
        else {
            continue;
        };
        let region = match (region, instance_region) {
            (Some(region), _) => region.as_str(),
            (None, Ok(resolved)) => {
                notes.push(format!(
                    "database '{}' names no region: its ARNs use {resolved}",
                    db.name
                ));
                resolved.region.as_str()
            }
            (None, Err(why)) => {
                notes.push(format!(
                    "database '{}' names no region and the instance's is unknown ({why}): replace \
                     {REGION_PLACEHOLDER} in its ARNs, or set its auth.region",
                    db.name
                ));
                REGION_PLACEHOLDER
            }
        };
        regions.insert(region);
        // The Connect grants belong to whoever signs the tokens: the role, if there is one.
        let role = db.assume_role_arn.as_deref();
        if let Some(arn) = role {
            grant_to(
                None,
                "AssumeDatabaseRoles",
                &["sts:AssumeRole"],
                arn.to_string(),
            );
        }
        // A role reaches the caches of its own account (the cross-account case); the role ARN
        // is validated by the config, so its fifth field is the 12-digit account.
        let account = role
            .and_then(|arn| arn.split(':').nth(4))
            .unwrap_or(account);
        let mut grant = |sid: &'static str, actions: &[&'static str], resource: String| {
            grant_to(role, sid, actions, resource)
        };
        let users = db_users(config, db);
        if users.is_empty() {
            notes.push(format!(
                "database '{}': no role allows a db-user on it and it has no default_db_user, so \
                 no user ARN is granted (the bastion cannot connect to it until one is)",
                db.name
            ));
        }
        for pattern in users.iter().filter(|u| u.contains('*')) {
            notes.push(format!(
                "database '{}': db-user pattern '{pattern}' is granted as a wildcard ARN",
                db.name
            ));
        }
        match service {
            IamService::Elasticache => {
                let cache = if *serverless {
                    format!("arn:aws:elasticache:{region}:{account}:serverlesscache:{target}")
                } else {
                    format!("arn:aws:elasticache:{region}:{account}:replicationgroup:{target}")
                };
                if *serverless {
                    grant(
                        "ElastiCacheDescribeServerlessCaches",
                        &["elasticache:DescribeServerlessCaches"],
                        cache.clone(),
                    );
                }
                grant("ElastiCacheConnect", &["elasticache:Connect"], cache);
                for user in &users {
                    let arn = format!("arn:aws:elasticache:{region}:{account}:user:{user}");
                    grant("ElastiCacheConnect", &["elasticache:Connect"], arn.clone());
                    grant(
                        "ElastiCacheDescribeUsers",
                        &["elasticache:DescribeUsers"],
                        arn,
                    );
                }
            }
            IamService::Memorydb => {
                grant(
                    "MemoryDBConnect",
                    &["memorydb:Connect"],
                    format!("arn:aws:memorydb:{region}:{account}:cluster/{target}"),
                );
                for user in &users {
                    let arn = format!("arn:aws:memorydb:{region}:{account}:user/{user}");
                    grant("MemoryDBConnect", &["memorydb:Connect"], arn.clone());
                    grant("MemoryDBDescribeUsers", &["memorydb:DescribeUsers"], arn);
                }
            }
        }
    }
    // Managed databases: their secrets (own prefix, in their region) and, on MemoryDB, the
    // control-plane calls of discovery and rotation.
    for db in &config.seed.databases {
        let AuthConfig::Managed(m) = &db.auth else {
            continue;
        };
        let region = match (&m.region, instance_region) {
            (Some(region), _) => region.as_str(),
            (None, Ok(resolved)) => resolved.region.as_str(),
            (None, Err(_)) => REGION_PLACEHOLDER,
        };
        let prefix = m
            .secret_prefix
            .as_deref()
            .unwrap_or(crate::config::DEFAULT_SECRET_PREFIX);
        grant_to(
            None,
            "ManagedSecrets",
            &SECRETS_ACTIONS,
            format!("arn:aws:secretsmanager:{region}:{account}:secret:{prefix}/*"),
        );
        grant_to(
            None,
            "ManagedSecretsList",
            &SECRETS_LIST_ACTIONS,
            "*".to_string(),
        );
        if let (Some(IamService::Memorydb), Some(target)) = (m.service, &m.target) {
            for resource in [
                format!("arn:aws:memorydb:{region}:{account}:cluster/{target}"),
                format!("arn:aws:memorydb:{region}:{account}:acl/*"),
                format!("arn:aws:memorydb:{region}:{account}:user/*"),
            ] {
                grant_to(
                    None,
                    "MemoryDBManagedUsers",
                    &MEMORYDB_MANAGED_ACTIONS,
                    resource,
                );
            }
        }
        if let (Some(IamService::Elasticache), Some(target)) = (m.service, &m.target) {
            let cache = if m.serverless {
                format!("arn:aws:elasticache:{region}:{account}:serverlesscache:{target}")
            } else {
                format!("arn:aws:elasticache:{region}:{account}:replicationgroup:{target}")
            };
            for resource in [
                cache,
                format!("arn:aws:elasticache:{region}:{account}:usergroup:*"),
                format!("arn:aws:elasticache:{region}:{account}:user:*"),
            ] {
                grant_to(
                    None,
                    "ElastiCacheManagedUsers",
                    &ELASTICACHE_MANAGED_ACTIONS,
                    resource,
                );
            }
        }
    }
    if config.seed.databases.iter().any(|db| {
        matches!(
            db.auth,
            AuthConfig::Iam {
                service: IamService::Elasticache,
                ..
            }
        )
    }) {
        notes.push(
            "ElastiCache user ARNs carry the user *id*: IAM-enabled users must have user id = \
             user name, which is what the bastion sends"
                .into(),
        );
    }

    if regions.is_empty() {
        regions.insert("*");
        notes.push(
            "no IAM database names a region, so the managed-secrets grant covers every region"
                .into(),
        );
    }
    for region in &regions {
        grant_to(
            None,
            "ManagedSecrets",
            &SECRETS_ACTIONS,
            format!("arn:aws:secretsmanager:{region}:{account}:secret:{MANAGED_SECRET_PREFIX}*"),
        );
    }
    let mut document = None;
    let mut role_policies = Vec::new();
    for (principal, sids) in grants {
        let doc = to_document(sids);
        match principal {
            None => document = Some(doc),
            Some(role_arn) => {
                notes.push(format!(
                    "role {role_arn}: its databases' Connect permissions belong in the role's own \
                     policy (printed below), and its trust policy must allow the bastion's \
                     principal to sts:AssumeRole (`bastion doctor` names the principal)"
                ));
                role_policies.push(RolePolicy {
                    role_arn,
                    document: doc,
                });
            }
        }
    }
    Ok(Bootstrap {
        document: document.unwrap_or_else(|| to_document(BTreeMap::new())),
        role_policies,
        notes,
    })
}

fn to_document(
    sids: BTreeMap<&'static str, (Vec<&'static str>, BTreeSet<String>)>,
) -> PolicyDocument {
    let statement = sids
        .into_iter()
        .map(|(sid, (actions, resources))| Statement {
            sid: sid.to_string(),
            effect: "Allow",
            action: actions.iter().map(|a| a.to_string()).collect(),
            resource: resources.into_iter().collect(),
        })
        .collect();
    PolicyDocument {
        version: "2012-10-17",
        statement,
    }
}

/// Every db-user (or `*` pattern) the bastion may authenticate as on `db`.
fn db_users(config: &Config, db: &DatabaseConfig) -> BTreeSet<String> {
    let mut users: BTreeSet<String> = config
        .seed
        .roles
        .iter()
        .filter(|r| r.db_names.iter().any(|p| glob_match(p, &db.name)))
        .flat_map(|r| r.db_users.iter().cloned())
        .collect();
    users.extend(db.default_db_user.iter().cloned());
    users
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const CONFIG: &str = r#"
state_dir = "/tmp/x"
[listeners.unix]
directory = "/tmp/x/db"
[[databases]]
name = "rg"
address = "h:6379"
tls = {}
auth = { mode = "iam", service = "elasticache", region = "us-east-1", target = "my-rg" }
[[databases]]
name = "pw"
address = "h:6379"
auth = { mode = "password", password_env = "BASTION_X" }
[[roles]]
name = "r"
db_users = ["app", "ro-*"]
db_names = ["rg"]
"#;

    fn statement<'a>(doc: &'a PolicyDocument, sid: &str) -> &'a Statement {
        doc.statement
            .iter()
            .find(|s| s.sid == sid)
            .unwrap_or_else(|| panic!("no {sid} in {doc:#?}"))
    }

    #[test]
    fn elasticache_connect_covers_cache_and_users() {
        let c = Config::parse(CONFIG, Path::new("t")).unwrap();
        let b = bootstrap_policy(&c, "123456789012", Err("n/a")).unwrap();
        let s = statement(&b.document, "ElastiCacheConnect");
        assert_eq!(s.action, ["elasticache:Connect"]);
        assert_eq!(
            s.resource,
            [
                "arn:aws:elasticache:us-east-1:123456789012:replicationgroup:my-rg",
                "arn:aws:elasticache:us-east-1:123456789012:user:app",
                "arn:aws:elasticache:us-east-1:123456789012:user:ro-*",
            ]
        );
        let s = statement(&b.document, "ManagedSecrets");
        assert_eq!(
            s.resource,
            ["arn:aws:secretsmanager:us-east-1:123456789012:secret:bastion/*"]
        );
        assert!(b
            .document
            .statement
            .iter()
            .all(|s| s.sid != "MemoryDBConnect" && s.sid != "ManagedSecretsList"));
    }

    #[test]
    fn managed_databases_get_their_secrets_and_control_plane_actions() {
        let managed = format!(
            "{CONFIG}\n[[databases]]\nname = \"owned\"\naddress = \"10.0.0.9:6379\"\n\
             auth = {{ mode = \"managed\", engine = \"redis\", admin_user = \"a\", \
             admin_password_file = \"/p\", region = \"eu-west-1\", secret_prefix = \"corp\" }}\n\
             managed_users = [\"app\"]\n\
             [[databases]]\nname = \"mem\"\naddress = \"10.0.0.8:6379\"\n\
             auth = {{ mode = \"managed\", service = \"memorydb\", region = \"eu-west-1\", target = \"cl\" }}\n\
             [[databases]]\nname = \"ecs\"\naddress = \"10.0.0.7:6379\"\ntls = {{}}\n\
             auth = {{ mode = \"managed\", service = \"elasticache\", region = \"eu-west-1\", target = \"sc\", serverless = true }}\n"
        );
        let c = Config::parse(&managed, Path::new("t")).unwrap();
        let b = bootstrap_policy(&c, "123456789012", Err("n/a")).unwrap();
        let s = statement(&b.document, "ManagedSecrets");
        for action in [
            "secretsmanager:UpdateSecretVersionStage",
            "secretsmanager:DeleteSecret",
        ] {
            assert!(s.action.iter().any(|a| a == action), "{action}");
        }
        // Secrets of users no longer managed are found by tag: ListSecrets takes no resource.
        let list = statement(&b.document, "ManagedSecretsList");
        assert_eq!(list.action, ["secretsmanager:ListSecrets"]);
        assert_eq!(list.resource, ["*"]);
        for r in [
            "arn:aws:secretsmanager:eu-west-1:123456789012:secret:corp/*",
            "arn:aws:secretsmanager:eu-west-1:123456789012:secret:bastion/*",
        ] {
            assert!(
                s.resource.iter().any(|x| x == r),
                "{r} not in {:?}",
                s.resource
            );
        }
        let s = statement(&b.document, "MemoryDBManagedUsers");
        assert_eq!(s.action, MEMORYDB_MANAGED_ACTIONS);
        assert!(s
            .resource
            .iter()
            .any(|x| x == "arn:aws:memorydb:eu-west-1:123456789012:cluster/cl"));
        let s = statement(&b.document, "ElastiCacheManagedUsers");
        assert_eq!(s.action, ELASTICACHE_MANAGED_ACTIONS);
        for r in [
            "arn:aws:elasticache:eu-west-1:123456789012:serverlesscache:sc",
            "arn:aws:elasticache:eu-west-1:123456789012:usergroup:*",
            "arn:aws:elasticache:eu-west-1:123456789012:user:*",
        ] {
            assert!(
                s.resource.iter().any(|x| x == r),
                "{r} not in {:?}",
                s.resource
            );
        }
    }

    #[test]
    fn assume_role_moves_connect_into_the_role_policy() {
        let with_role = CONFIG.replace(
            "target = \"my-rg\" }",
            "target = \"my-rg\" }\nassume_role_arn = \"arn:aws:iam::111122223333:role/cache\"",
        );
        let c = Config::parse(&with_role, Path::new("t")).unwrap();
        let b = bootstrap_policy(&c, "123456789012", Err("n/a")).unwrap();
        let s = statement(&b.document, "AssumeDatabaseRoles");
        assert_eq!(s.action, ["sts:AssumeRole"]);
        assert_eq!(s.resource, ["arn:aws:iam::111122223333:role/cache"]);
        assert!(
            b.document
                .statement
                .iter()
                .all(|s| s.sid != "ElastiCacheConnect"),
            "the bastion itself no longer connects: {:#?}",
            b.document
        );
        statement(&b.document, "ManagedSecrets");
        assert_eq!(b.role_policies.len(), 1);
        let role = &b.role_policies[0];
        assert_eq!(role.role_arn, "arn:aws:iam::111122223333:role/cache");
        let s = statement(&role.document, "ElastiCacheConnect");
        assert!(
            s.resource.contains(
                &"arn:aws:elasticache:us-east-1:111122223333:replicationgroup:my-rg".to_string()
            ),
            "the role's account: {s:#?}"
        );
        assert!(b
            .notes
            .iter()
            .any(|n| n.contains("role arn:aws:iam::111122223333:role/cache")
                && n.contains("trust policy")));
    }

    #[test]
    fn a_database_without_region_uses_the_instances_or_a_placeholder() {
        use crate::aws::region::RegionSource;
        let c = Config::parse(
            &CONFIG.replace("region = \"us-east-1\", ", ""),
            Path::new("t"),
        )
        .unwrap();
        let imds = Resolved {
            region: "eu-west-3".into(),
            source: RegionSource::Imds,
        };
        let b = bootstrap_policy(&c, "123456789012", Ok(&imds)).unwrap();
        let s = statement(&b.document, "ElastiCacheConnect");
        assert!(
            s.resource.contains(
                &"arn:aws:elasticache:eu-west-3:123456789012:replicationgroup:my-rg".to_string()
            ),
            "{s:#?}"
        );
        assert_eq!(
            statement(&b.document, "ManagedSecrets").resource,
            ["arn:aws:secretsmanager:eu-west-3:123456789012:secret:bastion/*"]
        );
        assert!(
            b.notes
                .iter()
                .any(|n| n.contains("database 'rg' names no region")
                    && n.contains("eu-west-3 (from IMDS placement/region)")),
            "{:?}",
            b.notes
        );

        let b = bootstrap_policy(&c, "123456789012", Err("IMDS is turned off")).unwrap();
        let s = statement(&b.document, "ElastiCacheConnect");
        assert!(
            s.resource.contains(
                &"arn:aws:elasticache:<REGION>:123456789012:replicationgroup:my-rg".to_string()
            ),
            "{s:#?}"
        );
        assert!(
            b.notes
                .iter()
                .any(|n| n.contains("IMDS is turned off") && n.contains(REGION_PLACEHOLDER)),
            "{:?}",
            b.notes
        );
    }

    #[test]
    fn account_id_is_checked() {
        let c = Config::parse(CONFIG, Path::new("t")).unwrap();
        assert!(bootstrap_policy(&c, ACCOUNT_PLACEHOLDER, Err("n/a")).is_ok());
        assert!(bootstrap_policy(&c, "12345", Err("n/a")).is_err());
        assert!(bootstrap_policy(&c, "12345678901x", Err("n/a")).is_err());
    }
}
