//! Per-database roles: STS AssumeRole with the credential chain's credentials as the source.
//!
//! A database with `assume_role_arn` signs its IAM tokens with the role's temporary credentials.
//! They are cached per (role ARN, external id) until [`REFRESH_BEFORE_EXPIRY`] before they
//! expire; each role has its own lock, so one refresh is in flight per role while other roles and
//! cached answers are not held up.
//!
//! The classic failure is "Not authorized to perform sts:AssumeRole": the role's trust policy
//! does not name the bastion's principal. [`AssumeRoleError::AccessDenied`] says which principal
//! (from STS GetCallerIdentity) and which statement to add.
//!
//! Never puts a secret key or session token into an error or a log line.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sdk_sts::error::{DisplayErrorContext, ProvideErrorMetadata};

use crate::aws::credentials::{CredentialChain, CredentialsError, REFRESH_BEFORE_EXPIRY};
use crate::aws::sdk::Sdk;

/// Default `RoleSessionName` (shows up in the role's CloudTrail events).
pub const DEFAULT_SESSION_NAME: &str = "bastion";

/// The role a database's tokens are signed as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleSpec {
    pub arn: String,
    pub external_id: Option<String>,
    pub session_name: String,
    /// Region of the STS endpoint (the database's); `None` for the instance's
    /// ([`crate::aws::region::Regions::for_sts`]).
    pub region: Option<String>,
}

/// A role setting STS would refuse: `field` is relative to the database (`assume_role_arn`,
/// `external_id`, `session_name`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct RoleRuleError {
    pub field: &'static str,
    pub message: String,
}

/// The role settings of one database: `assume_role_arn` is an IAM role ARN; `external_id` and
/// `session_name` only come with it and have the shapes STS accepts.
pub fn check_role(
    arn: Option<&str>,
    external_id: Option<&str>,
    session_name: Option<&str>,
) -> Result<(), RoleRuleError> {
    let broken = |field: &'static str, message: String| Err(RoleRuleError { field, message });
    let Some(arn) = arn else {
        if external_id.is_some() {
            return broken("external_id", "only applies with assume_role_arn".into());
        }
        if session_name.is_some() {
            return broken("session_name", "only applies with assume_role_arn".into());
        }
        return Ok(());
    };
    if !is_role_arn(arn) {
        return broken(
            "assume_role_arn",
            format!(
                "'{arn}' is not an IAM role ARN (arn:<partition>:iam::<12-digit account>:role/<name>)"
            ),
        );
    }
    if let Some(id) = external_id {
        let ok = (2..=1224).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+=,.@:/-_".contains(&b));
        if !ok {
            return broken(
                "external_id",
                "must be 2-1224 characters of [A-Za-z0-9+=,.@:/_-]".into(),
            );
        }
    }
    if let Some(name) = session_name {
        let ok = (2..=64).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+=,.@-_".contains(&b));
        if !ok {
            return broken(
                "session_name",
                format!("'{name}' must be 2-64 characters of [A-Za-z0-9+=,.@_-]"),
            );
        }
    }
    Ok(())
}

/// `arn:<partition>:iam::<12 digits>:role/<path/>name`.
fn is_role_arn(arn: &str) -> bool {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let ["arn", partition, "iam", "", account, resource] = parts[..] else {
        return false;
    };
    let name_ok = resource
        .strip_prefix("role/")
        .and_then(|rest| rest.rsplit('/').next())
        .is_some_and(|name| {
            !name.is_empty()
                && name.len() <= 64
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+=,.@-_".contains(&b))
        });
    partition.starts_with("aws")
        && account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && name_ok
}

#[derive(Debug, thiserror::Error)]
pub enum AssumeRoleError {
    /// The chain had no credentials to call STS with.
    #[error("cannot assume role {role}: no source credentials: {source}")]
    Source {
        role: String,
        source: CredentialsError,
    },
    /// STS refused: the trust policy (or the caller's own policy) does not allow it.
    #[error("cannot assume role {role}: {}", access_denied_explanation(.role, .caller, *.external_id))]
    AccessDenied {
        role: String,
        /// The principal the trust policy must name, or why it is unknown.
        caller: Result<String, String>,
        external_id: bool,
        /// STS' own message.
        message: String,
    },
    /// STS answered with another error.
    #[error("cannot assume role {role}: STS error {code}: {message}")]
    Sts {
        role: String,
        code: String,
        message: String,
    },
    /// STS could not be reached, or its answer could not be read.
    #[error("cannot assume role {role}: calling STS failed: {message}")]
    Call { role: String, message: String },
    #[error("cannot assume role {role}: STS answered without credentials")]
    NoCredentials { role: String },
}

impl AssumeRoleError {
    pub fn role(&self) -> &str {
        match self {
            AssumeRoleError::Source { role, .. }
            | AssumeRoleError::AccessDenied { role, .. }
            | AssumeRoleError::Sts { role, .. }
            | AssumeRoleError::Call { role, .. }
            | AssumeRoleError::NoCredentials { role } => role,
        }
    }
}

/// The operator's fix for an AccessDenied on `role`, naming the principal to trust.
pub fn access_denied_explanation(
    role: &str,
    caller: &Result<String, String>,
    external_id: bool,
) -> String {
    let principal = match caller {
        Ok(arn) => trust_principal(arn),
        Err(why) => format!("<the bastion's principal: GetCallerIdentity failed: {why}>"),
    };
    let condition = if external_id {
        ", Condition: {StringEquals: {sts:ExternalId: <the database's external_id>}}"
    } else {
        ""
    };
    format!(
        "Not authorized to perform sts:AssumeRole: the trust policy of {role} must allow \
         principal {principal} (add a statement {{Effect: Allow, Principal: {{AWS: {principal}}}, \
         Action: sts:AssumeRole{condition}}}); the bastion's own IAM policy must also allow \
         sts:AssumeRole on {role} (`bastion configure bootstrap --manual` prints it)"
    )
}

/// The principal a trust policy names for `caller_arn`: an assumed-role *session*
/// (`arn:aws:sts::<acct>:assumed-role/<name>/<session>`, e.g. an instance profile) is trusted
/// through its role, `arn:aws:iam::<acct>:role/<name>` (add the role's path if it has one).
pub fn trust_principal(caller_arn: &str) -> String {
    let parts: Vec<&str> = caller_arn.splitn(6, ':').collect();
    if let [arn, partition, "sts", "", account, resource] = parts[..] {
        if let Some(rest) = resource.strip_prefix("assumed-role/") {
            if let Some((name, _session)) = rest.split_once('/') {
                return format!("{arn}:{partition}:iam::{account}:role/{name}");
            }
        }
    }
    caller_arn.to_string()
}

/// The per-role cache; lives inside the [`CredentialChain`] so clones share it.
#[derive(Default)]
pub struct AssumedRoles {
    roles: Mutex<HashMap<RoleKey, Slot>>,
}

/// (role ARN, external id): the same role with another external id is another session.
type RoleKey = (String, Option<String>);
/// One role's cached credentials; its lock is held across that role's STS call.
type Slot = Arc<tokio::sync::Mutex<Option<Credentials>>>;

impl AssumedRoles {
    pub async fn credentials(
        &self,
        role: &RoleSpec,
        chain: &CredentialChain,
        sdk: &Sdk,
        now: SystemTime,
    ) -> Result<Credentials, AssumeRoleError> {
        let slot = {
            // Held only to find the slot, never across I/O.
            let mut roles = self.roles.lock().unwrap_or_else(|e| e.into_inner());
            roles
                .entry((role.arn.clone(), role.external_id.clone()))
                .or_default()
                .clone()
        };
        // Held across the STS call: callers for this role wait for one refresh.
        let mut cached = slot.lock().await;
        if let Some(creds) = cached.as_ref() {
            if fresh(creds, now) {
                return Ok(creds.clone());
            }
        }
        match assume(role, chain, sdk).await {
            Ok(creds) => {
                *cached = Some(creds.clone());
                Ok(creds)
            }
            Err(err) => {
                // Inside the refresh window but not expired: still signs valid tokens.
                if let Some(creds) = cached.as_ref() {
                    if creds.expiry().is_some_and(|expiry| now < expiry) {
                        tracing::warn!(role = %role.arn, error = %err,
                            "AssumeRole refresh failed; using the previous credentials until they expire");
                        return Ok(creds.clone());
                    }
                }
                Err(err)
            }
        }
    }
}

fn fresh(creds: &Credentials, now: SystemTime) -> bool {
    match creds.expiry() {
        Some(expiry) => expiry
            .checked_sub(REFRESH_BEFORE_EXPIRY)
            .is_some_and(|refresh_at| now < refresh_at),
        None => true,
    }
}

/// One AssumeRole call.
async fn assume(
    role: &RoleSpec,
    chain: &CredentialChain,
    sdk: &Sdk,
) -> Result<Credentials, AssumeRoleError> {
    let (source, _provider) =
        chain
            .credentials()
            .await
            .map_err(|source| AssumeRoleError::Source {
                role: role.arn.clone(),
                source,
            })?;
    let region = chain.regions().for_sts(role.region.as_deref()).await;
    let sts = sdk.sts(&region.region, source.clone()).await;
    let output = match sts
        .assume_role()
        .role_arn(&role.arn)
        .role_session_name(&role.session_name)
        .set_external_id(role.external_id.clone())
        .send()
        .await
    {
        Ok(output) => output,
        Err(err) => {
            return Err(match err.code() {
                Some("AccessDenied") => AssumeRoleError::AccessDenied {
                    role: role.arn.clone(),
                    caller: caller_identity(&sts).await,
                    external_id: role.external_id.is_some(),
                    message: err.message().unwrap_or_default().to_string(),
                },
                Some(code) => AssumeRoleError::Sts {
                    role: role.arn.clone(),
                    code: code.to_string(),
                    message: err.message().unwrap_or_default().to_string(),
                },
                None => AssumeRoleError::Call {
                    role: role.arn.clone(),
                    message: DisplayErrorContext(&err).to_string(),
                },
            })
        }
    };
    let Some(creds) = output.credentials() else {
        return Err(AssumeRoleError::NoCredentials {
            role: role.arn.clone(),
        });
    };
    let expiry = SystemTime::try_from(*creds.expiration()).map_err(|_| AssumeRoleError::Call {
        role: role.arn.clone(),
        message: "STS answered with an expiration out of range".into(),
    })?;
    Ok(Credentials::new(
        creds.access_key_id(),
        creds.secret_access_key(),
        Some(creds.session_token().to_string()),
        Some(expiry),
        "AssumeRole",
    ))
}

/// The ARN STS sees for the chain's credentials.
pub async fn caller_arn(
    chain: &CredentialChain,
    sdk: &Sdk,
    region: Option<&str>,
) -> Result<String, AssumeRoleError> {
    let (source, _) = chain
        .credentials()
        .await
        .map_err(|source| AssumeRoleError::Source {
            role: String::new(),
            source,
        })?;
    let region = chain.regions().for_sts(region).await;
    let sts = sdk.sts(&region.region, source).await;
    caller_identity(&sts)
        .await
        .map_err(|message| AssumeRoleError::Call {
            role: String::new(),
            message,
        })
}

async fn caller_identity(sts: &aws_sdk_sts::Client) -> Result<String, String> {
    match sts.get_caller_identity().send().await {
        Ok(out) => out
            .arn()
            .map(str::to_string)
            .ok_or_else(|| "GetCallerIdentity answered without an ARN".to_string()),
        Err(err) => Err(DisplayErrorContext(&err).to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_trusted_through_their_role() {
        assert_eq!(
            trust_principal("arn:aws:sts::123456789012:assumed-role/bastion-host/i-0abc"),
            "arn:aws:iam::123456789012:role/bastion-host"
        );
        assert_eq!(
            trust_principal("arn:aws-cn:sts::123456789012:assumed-role/r/s"),
            "arn:aws-cn:iam::123456789012:role/r"
        );
        assert_eq!(
            trust_principal("arn:aws:iam::123456789012:user/alice"),
            "arn:aws:iam::123456789012:user/alice"
        );
    }

    #[test]
    fn access_denied_names_role_principal_and_statement() {
        let role = "arn:aws:iam::111122223333:role/cache-connect";
        let caller = Ok("arn:aws:sts::123456789012:assumed-role/bastion/i-1".to_string());
        let m = access_denied_explanation(role, &caller, false);
        assert!(
            m.starts_with(
                "Not authorized to perform sts:AssumeRole: the trust policy of \
             arn:aws:iam::111122223333:role/cache-connect must allow principal \
             arn:aws:iam::123456789012:role/bastion (add a statement {Effect: Allow, \
             Principal: {AWS: arn:aws:iam::123456789012:role/bastion}, Action: sts:AssumeRole})"
            ),
            "{m}"
        );
        let m = access_denied_explanation(role, &caller, true);
        assert!(
            m.contains("Action: sts:AssumeRole, Condition: {StringEquals: {sts:ExternalId"),
            "{m}"
        );
        let m = access_denied_explanation(role, &Err("timeout".into()), false);
        assert!(m.contains("GetCallerIdentity failed: timeout"), "{m}");
    }
}
