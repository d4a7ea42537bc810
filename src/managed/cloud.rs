//! Managed users of an AWS cache: which users are managed (discovery by tag) and applying a
//! rotation through the control plane.
//!
//! A user is managed when tagged [`MANAGED_TAGS`] with a value other than false/no/disabled.
//!
//! - MemoryDB: the cluster's ACL (DescribeClusters → DescribeACLs) lists its users, each read
//!   with DescribeUsers and its tags with ListTags; a rotation is UpdateUser with
//!   `Passwords = [current, new]`.
//! - ElastiCache: the user groups of the replication group (DescribeReplicationGroups) or of the
//!   serverless cache (DescribeServerlessCaches) list their user ids (DescribeUserGroups); the
//!   users are read with DescribeUsers, every page (Marker), keeping those ids only, and each
//!   one's tags with ListTagsForResource; a rotation is ModifyUser
//!   with `Passwords = [current, new]` on the user id. Only a user of those groups is ever
//!   modified: a rotation finds the user among them again first.
//!
//! Either way the password set replaces the old one: current and new stay valid, the one of two
//! rotations ago goes.

use aws_sdk_memorydb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_memorydb::types::{AuthenticationMode, InputAuthenticationType};

use super::rotation::Apply;
use super::secrets::retries;
use super::{ManagedAuth, ManagedError, ManagedKind};
use crate::aws::credentials::CredentialChain;
use crate::config::IamService;
use crate::secret::Secret;

/// The tags that mark a user as managed; Teleport's, so a Teleport deployment moves over
/// without re-tagging.
pub const MANAGED_TAGS: [&str; 2] = ["bastion.dev/managed", "teleport.dev/managed"];

/// A managed user found on the cache, and the tag that made it one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovered {
    /// The name sessions AUTH as.
    pub user: String,
    /// What the control plane calls it (ElastiCache's user id; MemoryDB's name).
    pub id: String,
    pub tag: String,
}

/// Whether a tag value marks a user as managed.
pub fn is_managed_value(value: &str) -> bool {
    !matches!(
        value.trim().to_ascii_lowercase().as_str(),
        "false" | "no" | "disabled" | "0" | "off"
    )
}

/// The tag that makes a user managed, among `(key, value)` tags.
fn managed_tag<'a>(
    tags: impl Iterator<Item = (Option<&'a str>, Option<&'a str>)> + Clone,
) -> Option<&'static str> {
    MANAGED_TAGS.into_iter().find(|t| {
        tags.clone()
            .any(|(key, value)| key == Some(*t) && value.is_some_and(is_managed_value))
    })
}

/// The control plane of one managed AWS cache.
pub struct CloudUsers {
    database: String,
    target: String,
    control: Control,
}

enum Control {
    MemoryDb(aws_sdk_memorydb::Client),
    ElastiCache {
        client: aws_sdk_elasticache::Client,
        serverless: bool,
    },
}

impl CloudUsers {
    /// The control plane of `database`, a managed AWS cache, in `region`.
    pub async fn connect(
        database: &str,
        auth: &ManagedAuth,
        region: &str,
        chain: &CredentialChain,
    ) -> Result<CloudUsers, ManagedError> {
        let ManagedKind::Aws {
            service,
            target,
            serverless,
        } = &auth.kind
        else {
            return Err(ManagedError::Cloud {
                database: database.to_string(),
                message: "a self-hosted database has no control plane".into(),
            });
        };
        let (service, serverless) = (*service, *serverless);
        let config = super::service_config(chain, region).await?;
        let control = match service {
            IamService::Memorydb => Control::MemoryDb(aws_sdk_memorydb::Client::from_conf(
                aws_sdk_memorydb::config::Builder::from(&config)
                    .retry_config(retries())
                    .build(),
            )),
            IamService::Elasticache => Control::ElastiCache {
                client: aws_sdk_elasticache::Client::from_conf(
                    aws_sdk_elasticache::config::Builder::from(&config)
                        .retry_config(retries())
                        .build(),
                ),
                serverless,
            },
        };
        Ok(CloudUsers {
            database: database.to_string(),
            target: target.to_string(),
            control,
        })
    }

    fn failed<E: ProvideErrorMetadata + std::error::Error + 'static, R: std::fmt::Debug>(
        &self,
        action: &str,
        e: &SdkError<E, R>,
    ) -> ManagedError {
        let service = match self.control {
            Control::MemoryDb(_) => "MemoryDB",
            Control::ElastiCache { .. } => "ElastiCache",
        };
        ManagedError::Cloud {
            database: self.database.clone(),
            message: match e.code() {
                Some(code) => {
                    format!("{service} {action}: {code}: {}", e.message().unwrap_or(""))
                }
                None => format!("{service} {action}: {}", DisplayErrorContext(e)),
            },
        }
    }

    fn cloud_error(&self, message: String) -> ManagedError {
        ManagedError::Cloud {
            database: self.database.clone(),
            message,
        }
    }

    /// The managed users of the cache.
    pub async fn discover(&self) -> Result<Vec<Discovered>, ManagedError> {
        match &self.control {
            Control::MemoryDb(client) => self.discover_memorydb(client).await,
            Control::ElastiCache { client, serverless } => {
                self.discover_elasticache(client, *serverless).await
            }
        }
    }

    async fn discover_memorydb(
        &self,
        client: &aws_sdk_memorydb::Client,
    ) -> Result<Vec<Discovered>, ManagedError> {
        let clusters = client
            .describe_clusters()
            .cluster_name(&self.target)
            .send()
            .await
            .map_err(|e| self.failed("DescribeClusters", &e))?;
        let Some(acl) = clusters.clusters().first().and_then(|c| c.acl_name()) else {
            return Err(self.cloud_error(format!("MemoryDB cluster '{}' has no ACL", self.target)));
        };
        let acls = client
            .describe_acls()
            .acl_name(acl)
            .send()
            .await
            .map_err(|e| self.failed("DescribeACLs", &e))?;
        let names: Vec<String> = acls
            .acls()
            .iter()
            .flat_map(|a| a.user_names().iter().cloned())
            .collect();
        let mut found = Vec::new();
        for name in names {
            let users = client
                .describe_users()
                .user_name(&name)
                .send()
                .await
                .map_err(|e| self.failed("DescribeUsers", &e))?;
            let Some(arn) = users.users().first().and_then(|u| u.arn()) else {
                continue;
            };
            let tags = client
                .list_tags()
                .resource_arn(arn)
                .send()
                .await
                .map_err(|e| self.failed("ListTags", &e))?;
            if let Some(tag) = managed_tag(tags.tag_list().iter().map(|t| (t.key(), t.value()))) {
                found.push(Discovered {
                    id: name.clone(),
                    user: name,
                    tag: tag.to_string(),
                });
            }
        }
        Ok(found)
    }

    async fn discover_elasticache(
        &self,
        client: &aws_sdk_elasticache::Client,
        serverless: bool,
    ) -> Result<Vec<Discovered>, ManagedError> {
        let groups: Vec<String> = if serverless {
            let caches = client
                .describe_serverless_caches()
                .serverless_cache_name(&self.target)
                .send()
                .await
                .map_err(|e| self.failed("DescribeServerlessCaches", &e))?;
            caches
                .serverless_caches()
                .iter()
                .filter_map(|c| c.user_group_id().map(str::to_string))
                .collect()
        } else {
            let groups = client
                .describe_replication_groups()
                .replication_group_id(&self.target)
                .send()
                .await
                .map_err(|e| self.failed("DescribeReplicationGroups", &e))?;
            groups
                .replication_groups()
                .iter()
                .flat_map(|g| g.user_group_ids().iter().cloned())
                .collect()
        };
        if groups.is_empty() {
            return Err(self.cloud_error(format!(
                "ElastiCache {} '{}' has no user group",
                if serverless {
                    "serverless cache"
                } else {
                    "replication group"
                },
                self.target
            )));
        }
        let mut ids: Vec<String> = Vec::new();
        for group in &groups {
            let out = client
                .describe_user_groups()
                .user_group_id(group)
                .send()
                .await
                .map_err(|e| self.failed("DescribeUserGroups", &e))?;
            for id in out.user_groups().iter().flat_map(|g| g.user_ids()) {
                if !ids.contains(id) {
                    ids.push(id.clone());
                }
            }
        }
        // Every page of DescribeUsers (Marker), keeping the users of those groups only.
        let mut users: Vec<(String, String, String)> = Vec::new();
        let mut pages = client.describe_users().into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.failed("DescribeUsers", &e))?;
            for user in page.users() {
                let (Some(id), Some(name), Some(arn)) =
                    (user.user_id(), user.user_name(), user.arn())
                else {
                    continue;
                };
                if ids.iter().any(|i| i == id) && !users.iter().any(|(i, _, _)| i == id) {
                    users.push((id.to_string(), name.to_string(), arn.to_string()));
                }
            }
        }
        let mut found = Vec::new();
        for (id, name, arn) in users {
            let tags = client
                .list_tags_for_resource()
                .resource_name(arn)
                .send()
                .await
                .map_err(|e| self.failed("ListTagsForResource", &e))?;
            if let Some(tag) = managed_tag(tags.tag_list().iter().map(|t| (t.key(), t.value()))) {
                found.push(Discovered {
                    user: name,
                    id,
                    tag: tag.to_string(),
                });
            }
        }
        Ok(found)
    }
}

impl Apply for CloudUsers {
    async fn apply(
        &self,
        user: &str,
        new: &Secret,
        keep: Option<&Secret>,
        _retire: Option<&Secret>,
    ) -> Result<(), ManagedError> {
        // The password set replaces the old one: current and new stay, older ones go.
        let passwords = keep.into_iter().chain([new]);
        match &self.control {
            Control::MemoryDb(client) => {
                let mut mode =
                    AuthenticationMode::builder().r#type(InputAuthenticationType::Password);
                for password in passwords {
                    mode = mode.passwords(password.expose());
                }
                client
                    .update_user()
                    .user_name(user)
                    .authentication_mode(mode.build())
                    .send()
                    .await
                    .map(drop)
                    .map_err(|e| self.failed("UpdateUser", &e))
            }
            Control::ElastiCache { client, .. } => {
                // Only a managed user of the cache's own user groups is ever modified.
                let Some(found) = self.discover().await?.into_iter().find(|d| d.user == user)
                else {
                    return Err(ManagedError::NotManaged {
                        database: self.database.clone(),
                        user: user.to_string(),
                    });
                };
                let mut modify = client.modify_user().user_id(found.id);
                for password in passwords {
                    modify = modify.passwords(password.expose());
                }
                modify
                    .send()
                    .await
                    .map(drop)
                    .map_err(|e| self.failed("ModifyUser", &e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_false_like_values_unmanage() {
        for v in ["true", "yes", "", "1", "anything"] {
            assert!(is_managed_value(v), "{v}");
        }
        for v in ["false", "No", "DISABLED", " off "] {
            assert!(!is_managed_value(v), "{v}");
        }
    }
}
