//! The rules one database must keep whoever declares it: the boot config, `bastion db add`,
//! `bastion import`. The role rules are STS's ([`crate::aws::assume_role::check_role`]).

use std::path::{Component, Path};

use super::{AuthConfig, DatabaseConfig, PasswordSource};
use crate::aws::region::is_region;

/// A rule of one database that its settings break: `field` is relative to the database
/// (`auth`, `tls.server_name`, …); the boot config prefixes `databases[<i>].`, the admin socket
/// `databases.<name>.`, and both say the same `message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct DatabaseRuleError {
    pub field: &'static str,
    pub message: String,
}

/// What every `password_env` name starts with.
pub const PASSWORD_ENV_PREFIX: &str = "BASTION_";

/// Whether `var` may name a password variable: `BASTION_` and at least one more of `[A-Z0-9_]`.
pub fn is_password_env(var: &str) -> bool {
    var.strip_prefix(PASSWORD_ENV_PREFIX).is_some_and(|rest| {
        !rest.is_empty()
            && rest
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
    })
}

/// Where a secret file declared under `key` (`auth.password_file`, a managed database's
/// `auth.admin_password_file`) may point: an absolute path without `..`. That it is directly in
/// the secrets directory is checked where it is read ([`crate::catalog::SecretDirs`]).
pub fn check_secret_file(key: &'static str, path: &Path) -> Result<(), DatabaseRuleError> {
    let plain = path.is_absolute()
        && path.file_name().is_some()
        && path
            .components()
            .all(|c| !matches!(c, Component::ParentDir));
    if plain {
        return Ok(());
    }
    broken(
        key,
        format!(
            "'{}' must be an absolute path without '..', naming a file directly in the secrets \
             directory (secrets_dir) or systemd's $CREDENTIALS_DIRECTORY",
            path.display()
        ),
    )
}

fn broken(field: &'static str, message: impl Into<String>) -> Result<(), DatabaseRuleError> {
    Err(DatabaseRuleError {
        field,
        message: message.into(),
    })
}

impl DatabaseConfig {
    /// The rules one database must keep whoever declares it — the boot config
    /// ([`Config::validate`]) or the admin socket (`bastion db add`, `bastion import`). Checks
    /// that need the other databases (unique names, listener references) stay with their caller.
    pub fn check(&self) -> Result<(), DatabaseRuleError> {
        match &self.auth {
            AuthConfig::Password(PasswordSource::File(path)) => {
                check_secret_file("auth.password_file", path)?;
            }
            AuthConfig::Password(PasswordSource::Env(var)) => {
                if !is_password_env(var) {
                    return broken(
                        "auth.password_env",
                        format!(
                            "'{var}' is not allowed: a password variable's name must start with \
                             {PASSWORD_ENV_PREFIX} and be [A-Z0-9_] (the daemon's other variables \
                             are not secrets to hand out)"
                        ),
                    );
                }
            }
            AuthConfig::Iam { region, target, .. } => {
                if target.is_empty() {
                    return broken("auth", "mode = \"iam\" needs a target");
                }
                if let Some(region) = region.as_deref().filter(|r| !is_region(r)) {
                    return broken(
                        "auth.region",
                        format!(
                            "'{region}' is not an AWS region name (e.g. us-east-1); leave it out \
                             to use the instance's region"
                        ),
                    );
                }
            }
            AuthConfig::None => {}
            AuthConfig::Managed(managed) => {
                if let Err((field, message)) = managed.check(&self.managed_users) {
                    return broken(field, message);
                }
            }
        }
        if !self.managed_users.is_empty() && !matches!(self.auth, AuthConfig::Managed(_)) {
            return broken("managed_users", "only applies with mode = \"managed\"");
        }
        if let Some(tls) = &self.tls {
            if tls.ca_file.as_ref().is_some_and(|p| !p.is_absolute()) {
                return broken(
                    "tls.ca_file",
                    "must be an absolute path (the daemon does not run in your directory)",
                );
            }
            if let Some(name) = &tls.server_name {
                if rustls_pki_types::ServerName::try_from(name.as_str()).is_err() {
                    return broken(
                        "tls.server_name",
                        format!("'{name}' is not a DNS name or an IP address"),
                    );
                }
            }
        }
        if let Some(user) = &self.default_db_user {
            let ok = !user.is_empty()
                && !user.contains('*')
                && user.chars().all(|c| c.is_ascii_graphic());
            if !ok {
                return broken(
                    "default_db_user",
                    format!(
                        "'{user}' must be one concrete db-user: printable, no spaces, no '*' \
                         (patterns belong in a role's db_users)"
                    ),
                );
            }
        }
        if let Ok(ip) = self.address.host.parse::<std::net::IpAddr>() {
            if let Err(refused) = crate::address_policy::check_ip(ip, &self.allow_addresses) {
                return broken("address", refused.to_string());
            }
        }
        if let Some(net) = self.allow_addresses.iter().find(|n| n.prefix_len() == 0) {
            return broken(
                "allow_addresses",
                format!("'{net}' allows everything; name the one range this database needs"),
            );
        }
        self.check_auth_flags()?;
        self.check_assume_role()
    }

    /// `allow_plaintext_auth` and `legacy_auth`: each belongs to one kind of auth mode, and a
    /// token mode without `tls` needs the former.
    fn check_auth_flags(&self) -> Result<(), DatabaseRuleError> {
        let mode = self.auth.mode_name();
        if self.auth.needs_tls() && self.tls.is_none() && !self.allow_plaintext_auth {
            return broken(
                "tls",
                format!(
                    "auth mode \"{mode}\" would send its tokens in clear: add tls = {{}} \
                     (ElastiCache and MemoryDB accept IAM auth only with in-transit encryption), \
                     or set allow_plaintext_auth = true on a test rig"
                ),
            );
        }
        if self.allow_plaintext_auth && !self.auth.needs_tls() {
            return broken(
                "allow_plaintext_auth",
                format!(
                    "only applies with mode = \"iam\"; database '{}' uses '{mode}'",
                    self.name
                ),
            );
        }
        if self.legacy_auth {
            if !matches!(self.auth, AuthConfig::Password(_)) {
                return broken(
                    "legacy_auth",
                    format!(
                        "only applies with mode = \"password\"; database '{}' uses '{mode}'",
                        self.name
                    ),
                );
            }
            if self.default_db_user.is_some() {
                return broken(
                    "default_db_user",
                    "a legacy_auth database has no db-users (one-argument AUTH); remove it",
                );
            }
        }
        Ok(())
    }

    /// `assume_role_arn` only on IAM databases, `external_id` and `session_name` only with it;
    /// their shapes are STS's ([`crate::aws::assume_role::check_role`]).
    fn check_assume_role(&self) -> Result<(), DatabaseRuleError> {
        if self.assume_role_arn.is_some() && !matches!(self.auth, AuthConfig::Iam { .. }) {
            return broken(
                "assume_role_arn",
                format!(
                    "database '{}' uses auth mode '{}'; assume_role_arn needs mode = \"iam\"",
                    self.name,
                    self.auth.mode_name()
                ),
            );
        }
        crate::aws::assume_role::check_role(
            self.assume_role_arn.as_deref(),
            self.external_id.as_deref(),
            self.session_name.as_deref(),
        )
        .map_err(|e| DatabaseRuleError {
            field: e.field,
            message: e.message,
        })
    }
}
