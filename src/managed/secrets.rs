//! The Secrets Manager side of managed users: one secret per (database, user), its name, its
//! tags, and the four calls rotation needs — read the AWSCURRENT/AWSPREVIOUS passwords, create
//! the secret, put a candidate under a derived ClientRequestToken, promote it to AWSCURRENT.
//!
//! The client is built like STS's ([`crate::aws::sdk::Sdk`]): bastion's credential chain,
//! region, the SDK's endpoint overrides (`AWS_ENDPOINT_URL_SECRETS_MANAGER`), and a bounded
//! retry with backoff for throttling and 5xx. Never logs or returns a secret value except as a
//! [`Secret`]; SDK errors are rendered without the request.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use aws_config::retry::RetryConfig;
use aws_sdk_secretsmanager::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_secretsmanager::types::{Filter, FilterNameStringType, Tag};

use super::ManagedError;
use crate::aws::credentials::CredentialChain;
use crate::secret::Secret;

/// The stage a candidate is stored under until it is applied: a label of bastion's own (AWS
/// allows custom staging labels), not AWSPENDING, so the same ClientRequestToken with another
/// value is refused as AWS and moto both refuse it for ordinary versions.
pub const PENDING_STAGE: &str = "BASTIONPENDING";
pub const CURRENT_STAGE: &str = "AWSCURRENT";
pub const PREVIOUS_STAGE: &str = "AWSPREVIOUS";

/// Tags on every secret bastion creates: who owns it and what it is for.
pub const TAG_MANAGED_BY: &str = "bastion.dev/managed-by";
pub const TAG_DATABASE: &str = "bastion.dev/database";
pub const TAG_USER: &str = "bastion.dev/db-user";
/// The value of [`TAG_MANAGED_BY`] on the bastion's own secrets.
pub const MANAGED_BY: &str = "bastion";

/// Attempts per call: throttling and 5xx are retried with exponential backoff and jitter
/// (the SDK's standard mode) until this many.
pub const MAX_ATTEMPTS: u32 = 4;

/// A password as stored: its version id and when that version was created.
#[derive(Debug, Clone)]
pub struct Version {
    pub id: String,
    pub password: Secret,
    pub created: SystemTime,
}

/// What a secret holds now.
#[derive(Debug, Clone, Default)]
pub struct Stages {
    pub current: Option<Version>,
    pub previous: Option<Secret>,
}

/// Secrets Manager in one region, with bastion's credentials.
#[derive(Clone, Debug)]
pub struct SecretStore {
    client: aws_sdk_secretsmanager::Client,
}

/// A secret the bastion tagged as its own, as ListSecrets shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owned {
    pub arn: String,
    pub name: String,
    /// Its [`TAG_USER`].
    pub user: String,
}

/// What the secret's creation carries besides its name.
#[derive(Debug, Clone, Default)]
pub struct NewSecret<'a> {
    pub database: &'a str,
    pub user: &'a str,
    pub kms_key_id: Option<&'a str>,
}

impl SecretStore {
    /// A client in `region` signing with the chain's current credentials.
    pub async fn connect(chain: &CredentialChain, region: &str) -> Result<Self, ManagedError> {
        let config = super::service_config(chain, region).await?;
        let config = aws_sdk_secretsmanager::config::Builder::from(&config)
            .retry_config(retries())
            .build();
        Ok(SecretStore {
            client: aws_sdk_secretsmanager::Client::from_conf(config),
        })
    }

    /// AWSCURRENT and AWSPREVIOUS of `name`; nothing for a secret that does not exist or has
    /// no value yet.
    pub async fn read(&self, name: &str) -> Result<Stages, ManagedError> {
        let Some(current) = self.version(name, Some(CURRENT_STAGE), None).await? else {
            return Ok(Stages::default());
        };
        let previous = self
            .version(name, Some(PREVIOUS_STAGE), None)
            .await?
            .map(|v| v.password);
        Ok(Stages {
            current: Some(current),
            previous,
        })
    }

    async fn version(
        &self,
        name: &str,
        stage: Option<&str>,
        id: Option<&str>,
    ) -> Result<Option<Version>, ManagedError> {
        let out = match self
            .client
            .get_secret_value()
            .secret_id(name)
            .set_version_stage(stage.map(str::to_string))
            .set_version_id(id.map(str::to_string))
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) if e.code() == Some("ResourceNotFoundException") => return Ok(None),
            Err(e) => return Err(call_failed("GetSecretValue", name, &e)),
        };
        let (Some(id), Some(password)) = (out.version_id(), out.secret_string()) else {
            return Ok(None);
        };
        let created = out
            .created_date()
            .and_then(|d| SystemTime::try_from(*d).ok())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        Ok(Some(Version {
            id: id.to_string(),
            password: Secret::new(password),
            created,
        }))
    }

    /// Create `name` without a value (rotation puts the first one); one that exists is fine —
    /// another bastion, or an earlier run, made it.
    pub async fn create(&self, name: &str, new: &NewSecret<'_>) -> Result<(), ManagedError> {
        let tag = |k: &str, v: &str| Tag::builder().key(k).value(v).build();
        let result = self
            .client
            .create_secret()
            .name(name)
            .description(format!(
                "Password of db-user '{}' on '{}', generated and rotated by bastion; do not edit",
                new.user, new.database
            ))
            .set_kms_key_id(new.kms_key_id.map(str::to_string))
            .tags(tag(TAG_MANAGED_BY, MANAGED_BY))
            .tags(tag(TAG_DATABASE, new.database))
            .tags(tag(TAG_USER, new.user))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("ResourceExistsException") => Ok(()),
            Err(e) => Err(call_failed("CreateSecret", name, &e)),
        }
    }

    /// Store `candidate` as version `token` under [`PENDING_STAGE`] and return what version
    /// `token` holds: `candidate`, or — when another bastion stored its own candidate under
    /// the same token first — that one.
    pub async fn put_pending(
        &self,
        name: &str,
        token: &str,
        candidate: &Secret,
    ) -> Result<Secret, ManagedError> {
        let result = self
            .client
            .put_secret_value()
            .secret_id(name)
            .client_request_token(token)
            .secret_string(candidate.expose())
            .version_stages(PENDING_STAGE)
            .send()
            .await;
        match result {
            Ok(_) => Ok(candidate.clone()),
            Err(e) if e.code() == Some("ResourceExistsException") => {
                match self.version(name, None, Some(token)).await? {
                    Some(v) => Ok(v.password),
                    None => Err(ManagedError::Secrets {
                        action: "GetSecretValue",
                        secret: name.to_string(),
                        message: format!("version {token} exists but could not be read"),
                    }),
                }
            }
            Err(e) => Err(call_failed("PutSecretValue", name, &e)),
        }
    }

    /// Whether the principal may PutSecretValue on `absent`, a secret name under the bastion's
    /// prefix that does not exist (`bastion doctor`): IAM decides before the secret is looked
    /// up, so `ResourceNotFoundException` means allowed — and nothing is written.
    pub async fn may_put(&self, absent: &str) -> Result<(), ManagedError> {
        let result = self
            .client
            .put_secret_value()
            .secret_id(absent)
            .secret_string("bastion-doctor-probe")
            .send()
            .await;
        match result {
            Err(e) if e.code() == Some("ResourceNotFoundException") => Ok(()),
            // Only if the random name existed: allowed, though it wrote.
            Ok(_) => Ok(()),
            Err(e) => Err(call_failed("PutSecretValue", absent, &e)),
        }
    }

    /// Which version carries each stage.
    pub async fn stages(&self, name: &str) -> Result<HashMap<String, Vec<String>>, ManagedError> {
        let out = self
            .client
            .describe_secret()
            .secret_id(name)
            .send()
            .await
            .map_err(|e| call_failed("DescribeSecret", name, &e))?;
        Ok(out.version_ids_to_stages().cloned().unwrap_or_default())
    }

    /// Move AWSCURRENT to `token` (AWSPREVIOUS follows to the version it leaves). Done already
    /// — by another bastion — is success.
    pub async fn promote(&self, name: &str, token: &str) -> Result<(), ManagedError> {
        let current_of = |stages: &HashMap<String, Vec<String>>| {
            stages
                .iter()
                .find(|(_, s)| s.iter().any(|s| s == CURRENT_STAGE))
                .map(|(id, _)| id.clone())
        };
        let stages = self.stages(name).await?;
        let from = current_of(&stages);
        if from.as_deref() == Some(token) {
            return Ok(());
        }
        let result = self
            .client
            .update_secret_version_stage()
            .secret_id(name)
            .version_stage(CURRENT_STAGE)
            .move_to_version_id(token)
            .set_remove_from_version_id(from)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            // Lost a race with another bastion promoting the same version.
            Err(e) if current_of(&self.stages(name).await?).as_deref() == Some(token) => {
                tracing::debug!(secret = name, error = %DisplayErrorContext(&e),
                    "managed: the version was promoted by another bastion");
                Ok(())
            }
            Err(e) => Err(call_failed("UpdateSecretVersionStage", name, &e)),
        }
    }

    /// The secrets whose names start with `name_prefix` and that the bastion tagged as its own
    /// for `database`: [`TAG_MANAGED_BY`] = `bastion`, [`TAG_DATABASE`] = `database` and a
    /// [`TAG_USER`] (ListSecrets, every page). A secret of that name someone else made, or
    /// tagged otherwise, is not listed.
    pub async fn list_owned(
        &self,
        name_prefix: &str,
        database: &str,
    ) -> Result<Vec<Owned>, ManagedError> {
        let filter = |key, value: &str| Filter::builder().key(key).values(value).build();
        let mut owned = Vec::new();
        let mut pages = self
            .client
            .list_secrets()
            .filters(filter(FilterNameStringType::Name, name_prefix))
            .filters(filter(FilterNameStringType::TagKey, TAG_MANAGED_BY))
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| call_failed("ListSecrets", name_prefix, &e))?;
            for entry in page.secret_list() {
                let tag = |key: &str| {
                    entry
                        .tags()
                        .iter()
                        .find(|t| t.key() == Some(key))
                        .and_then(|t| t.value())
                };
                let ours =
                    tag(TAG_MANAGED_BY) == Some(MANAGED_BY) && tag(TAG_DATABASE) == Some(database);
                let (Some(user), Some(arn), Some(name)) =
                    (tag(TAG_USER), entry.arn(), entry.name())
                else {
                    continue;
                };
                if ours && name.starts_with(name_prefix) {
                    owned.push(Owned {
                        arn: arn.to_string(),
                        name: name.to_string(),
                        user: user.to_string(),
                    });
                }
            }
        }
        Ok(owned)
    }

    /// Delete the secret `arn` at once (a user that stopped being managed, after its grace
    /// period). By ARN: a secret made again under the same name is another one, not deleted.
    pub async fn delete(&self, arn: &str) -> Result<(), ManagedError> {
        match self
            .client
            .delete_secret()
            .secret_id(arn)
            .force_delete_without_recovery(true)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("ResourceNotFoundException") => Ok(()),
            Err(e) => Err(call_failed("DeleteSecret", arn, &e)),
        }
    }
}

/// The SDK's standard retry mode, bounded: throttling, 5xx and transient errors.
pub fn retries() -> RetryConfig {
    RetryConfig::standard()
        .with_max_attempts(MAX_ATTEMPTS)
        .with_initial_backoff(Duration::from_millis(200))
        .with_max_backoff(Duration::from_secs(5))
}

fn call_failed<E: std::error::Error + ProvideErrorMetadata + 'static, R: std::fmt::Debug>(
    action: &'static str,
    secret: &str,
    e: &aws_sdk_secretsmanager::error::SdkError<E, R>,
) -> ManagedError {
    ManagedError::Secrets {
        action,
        secret: secret.to_string(),
        message: match e.code() {
            Some(code) => format!("{code}: {}", e.message().unwrap_or_default()),
            None => DisplayErrorContext(e).to_string(),
        },
    }
}
