//! Managed users of an AWS cache: which users are managed (discovery by tag) and applying a
//! rotation through the control plane.
//!
//! MemoryDB: the cluster's ACL (DescribeClusters → DescribeACLs) lists its users; a user is
//! managed when tagged [`MANAGED_TAGS`] with a value other than false/no/disabled (ListTags);
//! a rotation is UpdateUser with `Passwords = [current, new]`, which also drops the password
//! of two rotations ago. ElastiCache (ModifyUser, user groups) is not wired yet: such a
//! database reports that as its rotation error.

use aws_sdk_memorydb::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_memorydb::types::{AuthenticationMode, InputAuthenticationType};

use super::rotation::Apply;
use super::secrets::retries;
use super::ManagedError;
use crate::aws::credentials::CredentialChain;
use crate::config::IamService;
use crate::secret::Secret;

/// The tags that mark a user as managed; Teleport's, so a Teleport deployment moves over
/// without re-tagging.
pub const MANAGED_TAGS: [&str; 2] = ["bastion.dev/managed", "teleport.dev/managed"];

/// A managed user found on the cache, and the tag that made it one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovered {
    pub user: String,
    pub tag: String,
}

/// Whether a tag value marks a user as managed.
pub fn is_managed_value(value: &str) -> bool {
    !matches!(
        value.trim().to_ascii_lowercase().as_str(),
        "false" | "no" | "disabled" | "0" | "off"
    )
}

/// The control plane of one managed AWS cache.
pub struct CloudUsers {
    database: String,
    target: String,
    client: aws_sdk_memorydb::Client,
}

impl CloudUsers {
    pub async fn connect(
        database: &str,
        service: IamService,
        target: &str,
        region: &str,
        chain: &CredentialChain,
    ) -> Result<CloudUsers, ManagedError> {
        if service != IamService::Memorydb {
            return Err(ManagedError::Cloud {
                database: database.to_string(),
                message: "managed ElastiCache users are not supported by this build yet \
                          (ModifyUser); MemoryDB and self-hosted are"
                    .into(),
            });
        }
        let config = super::service_config(chain, region).await?;
        let config = aws_sdk_memorydb::config::Builder::from(&config)
            .retry_config(retries())
            .build();
        Ok(CloudUsers {
            database: database.to_string(),
            target: target.to_string(),
            client: aws_sdk_memorydb::Client::from_conf(config),
        })
    }

    fn failed<E: ProvideErrorMetadata + std::error::Error + 'static, R: std::fmt::Debug>(
        &self,
        action: &str,
        e: &aws_sdk_memorydb::error::SdkError<E, R>,
    ) -> ManagedError {
        ManagedError::Cloud {
            database: self.database.clone(),
            message: match e.code() {
                Some(code) => format!("MemoryDB {action}: {code}: {}", e.message().unwrap_or("")),
                None => format!("MemoryDB {action}: {}", DisplayErrorContext(e)),
            },
        }
    }

    /// The managed users of the cluster's ACL.
    pub async fn discover(&self) -> Result<Vec<Discovered>, ManagedError> {
        let clusters = self
            .client
            .describe_clusters()
            .cluster_name(&self.target)
            .send()
            .await
            .map_err(|e| self.failed("DescribeClusters", &e))?;
        let Some(acl) = clusters.clusters().first().and_then(|c| c.acl_name()) else {
            return Err(ManagedError::Cloud {
                database: self.database.clone(),
                message: format!("MemoryDB cluster '{}' has no ACL", self.target),
            });
        };
        let acls = self
            .client
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
            let users = self
                .client
                .describe_users()
                .user_name(&name)
                .send()
                .await
                .map_err(|e| self.failed("DescribeUsers", &e))?;
            let Some(arn) = users.users().first().and_then(|u| u.arn()) else {
                continue;
            };
            let tags = self
                .client
                .list_tags()
                .resource_arn(arn)
                .send()
                .await
                .map_err(|e| self.failed("ListTags", &e))?;
            let tag = MANAGED_TAGS.iter().find(|t| {
                tags.tag_list()
                    .iter()
                    .any(|tag| tag.key() == Some(**t) && tag.value().is_some_and(is_managed_value))
            });
            if let Some(tag) = tag {
                found.push(Discovered {
                    user: name,
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
        let mut mode = AuthenticationMode::builder().r#type(InputAuthenticationType::Password);
        for password in keep.into_iter().chain([new]) {
            mode = mode.passwords(password.expose());
        }
        self.client
            .update_user()
            .user_name(user)
            .authentication_mode(mode.build())
            .send()
            .await
            .map(drop)
            .map_err(|e| self.failed("UpdateUser", &e))
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
