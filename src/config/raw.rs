//! The file's own shape (serde) and its whole-file validation; [`RawConfig::into_config`] sorts
//! the validated file into [`Config`]'s `boot`, `live` and `seed` once, so nothing past parsing
//! sees this shape.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::{
    check_name, AdminConfig, Boot, Config, ConfigError, DatabaseConfig, ImdsConfig, Limits,
    Listeners, Live, MetricsConfig, RoleConfig, Seed, TcpRouting, UserConfig,
    DEFAULT_IMDS_TOKEN_TTL, MAX_REUSE_CONNECTIONS, MAX_WARM_CONNECTIONS,
};

/// The whole file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    state_dir: PathBuf,
    #[serde(default = "super::default_secrets_dir")]
    secrets_dir: PathBuf,
    #[serde(default)]
    listeners: Listeners,
    #[serde(default)]
    limits: Limits,
    #[serde(default)]
    databases: Vec<DatabaseConfig>,
    #[serde(default)]
    roles: Vec<RoleConfig>,
    #[serde(default)]
    users: Vec<UserConfig>,
    #[serde(default)]
    aws: AwsConfig,
    #[serde(default)]
    admin: AdminConfig,
    #[serde(default)]
    metrics: MetricsConfig,
}

/// `[aws]`: how the bastion reaches AWS itself (not the databases).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AwsConfig {
    #[serde(default)]
    imds: ImdsConfig,
}

impl RawConfig {
    /// Validate, then sort the settings by lifetime.
    pub(super) fn into_config(self) -> Result<Config, ConfigError> {
        self.validate()?;
        let (addresses, routes) = self
            .listeners
            .tcp
            .into_iter()
            .map(|l| {
                let routing = TcpRouting {
                    database: l.database,
                    default_database: l.default_database,
                    server_names: l.server_names,
                };
                (l.address, routing)
            })
            .unzip();
        Ok(Config {
            boot: Boot {
                state_dir: self.state_dir,
                secrets_dir: self.secrets_dir,
                admin: self.admin,
                imds: self.aws.imds,
                tcp: addresses,
                unix: self.listeners.unix,
                metrics: self.metrics,
            },
            live: Live {
                limits: self.limits,
                tcp: routes,
            },
            seed: Seed {
                databases: self.databases,
                roles: self.roles,
                users: self.users,
            },
        })
    }

    /// Cross-field checks: unique names, references that resolve, listeners that make sense.
    fn validate(&self) -> Result<(), ConfigError> {
        let normal = |p: &Path| {
            p.is_absolute()
                && p.components()
                    .all(|c| !matches!(c, std::path::Component::ParentDir))
        };
        if !normal(&self.secrets_dir) {
            return Err(ConfigError::invalid(
                "secrets_dir",
                "must be an absolute path without '..'",
            ));
        }
        if self.listeners.tcp.is_empty() && self.listeners.unix.is_none() {
            return Err(ConfigError::invalid(
                "listeners",
                "no listener configured (add [[listeners.tcp]] or [listeners.unix])",
            ));
        }
        self.metrics.check().map_err(|(field, message)| {
            ConfigError::invalid(format!("metrics.{field}"), message)
        })?;
        if self.limits.reauth_interval < std::time::Duration::from_secs(1) {
            return Err(ConfigError::invalid(
                "limits.reauth_interval",
                "must be at least 1s",
            ));
        }
        if self.limits.warm_idle < std::time::Duration::from_secs(1) {
            return Err(ConfigError::invalid(
                "limits.warm_idle",
                "must be at least 1s",
            ));
        }
        if self.limits.warm_connections > MAX_WARM_CONNECTIONS {
            return Err(ConfigError::invalid(
                "limits.warm_connections",
                format!("must be at most {MAX_WARM_CONNECTIONS}"),
            ));
        }
        if self.limits.reuse_connections > MAX_REUSE_CONNECTIONS {
            return Err(ConfigError::invalid(
                "limits.reuse_connections",
                format!("must be at most {MAX_REUSE_CONNECTIONS}"),
            ));
        }
        if !(0.0..=1.0).contains(&self.limits.command_audit_sample) {
            return Err(ConfigError::invalid(
                "limits.command_audit_sample",
                "must be between 0.0 and 1.0",
            ));
        }
        if self.limits.max_sessions == 0 {
            return Err(ConfigError::invalid(
                "limits.max_sessions",
                "must be at least 1",
            ));
        }
        if self.limits.max_handshake_bytes < 1024 {
            return Err(ConfigError::invalid(
                "limits.max_handshake_bytes",
                "must be at least 1024",
            ));
        }
        let ttl = self.aws.imds.token_ttl;
        if ttl < Duration::from_secs(1) || ttl > DEFAULT_IMDS_TOKEN_TTL {
            return Err(ConfigError::invalid(
                "aws.imds.token_ttl",
                "must be between 1s and 6h (IMDS refuses other values)",
            ));
        }
        for (key, t) in [
            ("aws.imds.connect_timeout", self.aws.imds.connect_timeout),
            ("aws.imds.read_timeout", self.aws.imds.read_timeout),
        ] {
            if t.is_zero() {
                return Err(ConfigError::invalid(key, "must be more than 0s"));
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, db) in self.databases.iter().enumerate() {
            let key = format!("databases[{i}].name");
            check_name(&key, &db.name)?;
            if !seen.insert(db.name.as_str()) {
                return Err(ConfigError::invalid(
                    key,
                    format!("duplicate database '{}'", db.name),
                ));
            }
            db.check().map_err(|e| {
                ConfigError::invalid(format!("databases[{i}].{}", e.field), e.message)
            })?;
        }
        let mut roles = std::collections::BTreeSet::new();
        for (i, role) in self.roles.iter().enumerate() {
            let key = format!("roles[{i}].name");
            check_name(&key, &role.name)?;
            if !roles.insert(role.name.as_str()) {
                return Err(ConfigError::invalid(
                    key,
                    format!("duplicate role '{}'", role.name),
                ));
            }
            role.policy().map_err(|(field, e)| {
                ConfigError::invalid(format!("roles[{i}].{field}"), e.to_string())
            })?;
        }
        let mut users = std::collections::BTreeSet::new();
        for (i, user) in self.users.iter().enumerate() {
            let key = format!("users[{i}].name");
            check_name(&key, &user.name)?;
            if !users.insert(user.name.as_str()) {
                return Err(ConfigError::invalid(
                    key,
                    format!("duplicate user '{}'", user.name),
                ));
            }
            for role in &user.roles {
                if !roles.contains(role.as_str()) {
                    return Err(ConfigError::invalid(
                        format!("users[{i}].roles"),
                        format!("user '{}' names unknown role '{role}'", user.name),
                    ));
                }
            }
        }
        for (i, l) in self.listeners.tcp.iter().enumerate() {
            for (field, value) in [
                ("database", &l.database),
                ("default_database", &l.default_database),
            ] {
                if let Some(name) = value {
                    if !seen.contains(name.as_str()) {
                        return Err(ConfigError::invalid(
                            format!("listeners.tcp[{i}].{field}"),
                            format!("unknown database '{name}'"),
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}
