//! `auth = { mode = "managed", … }` and a database's `managed_users`: passwords the bastion
//! generates, applies, keeps in Secrets Manager and rotates (see [`crate::managed`]).
//!
//! Two shapes share the table: an AWS cache (`service` + `target`, users discovered by tag) or
//! a self-hosted Redis/Valkey (`engine` + `admin_user` + `admin_password_file`, users listed in
//! `managed_users`). The rules are here; what they mean at run time is in `managed/`.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::IamService;

/// Default `rotation_interval`.
pub const DEFAULT_ROTATION_INTERVAL: Duration = Duration::from_secs(15 * 60);
/// Default `secret_grace_period`: how long the secret of a user that stopped being managed is
/// kept before the bastion deletes it.
pub const DEFAULT_SECRET_GRACE_PERIOD: Duration = Duration::from_secs(7 * 24 * 3600);
/// Default `secret_prefix`.
pub const DEFAULT_SECRET_PREFIX: &str = "bastion";

/// The key of a self-hosted managed database's admin password file, relative to the database.
pub const ADMIN_PASSWORD_FILE: &str = "auth.admin_password_file";

/// The self-hosted engines (`ACL SETUSER` through an admin user).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SelfHostedEngine {
    Redis,
    Valkey,
}

/// The table of `mode = "managed"`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ManagedAuthConfig {
    /// AWS: `elasticache` or `memorydb` (with `target`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<IamService>,
    /// Self-hosted: `redis` or `valkey` (with `admin_user`, `admin_password_file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<SelfHostedEngine>,
    /// The cache's region (AWS) and the Secrets Manager region; absent: the instance's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Replication group id, serverless cache name or MemoryDB cluster name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub serverless: bool,
    /// Self-hosted: the ACL user the bastion changes passwords with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_user: Option<String>,
    /// Self-hosted: its password, a 0600 file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_password_file: Option<PathBuf>,
    /// First part of every secret name; default [`DEFAULT_SECRET_PREFIX`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_prefix: Option<String>,
    /// KMS key the secrets are encrypted with; absent: the account's `aws/secretsmanager` key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_key_id: Option<String>,
    /// How often each user's password changes (jittered); default 15 minutes.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_duration"
    )]
    pub rotation_interval: Option<Duration>,
    /// How long the secret of a user that stopped being managed (tag removed or false, dropped
    /// from `managed_users`) is kept before the bastion deletes it; default 7 days.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_duration"
    )]
    pub secret_grace_period: Option<Duration>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// An optional duration as the config writes it (`"15m"`), both ways.
mod opt_duration {
    use std::time::Duration;

    pub(super) use super::super::de::de_opt_duration as deserialize;

    pub(super) fn serialize<S: serde::Serializer>(
        d: &Option<Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.collect_str(&humantime::format_duration(*d)),
            None => s.serialize_none(),
        }
    }
}

/// A rule of the managed table that a declaration breaks (`field` relative to the database).
pub type ManagedRuleError = (&'static str, String);

impl ManagedAuthConfig {
    /// The rules of the table and of `managed_users` (see [`super::DatabaseConfig::check`]).
    pub fn check(&self, managed_users: &[String]) -> Result<(), ManagedRuleError> {
        let bad = |field, message: String| Err((field, message));
        match (self.service, self.engine) {
            (Some(_), Some(_)) | (None, None) => {
                return bad(
                    "auth",
                    "mode = \"managed\" needs exactly one of service (elasticache, memorydb) or \
                     engine (redis, valkey)"
                        .into(),
                )
            }
            (Some(_), None) => {
                if self.target.as_deref().is_none_or(str::is_empty) {
                    return bad("auth.target", "a managed AWS cache needs its target".into());
                }
                if self.admin_user.is_some() || self.admin_password_file.is_some() {
                    return bad(
                        "auth.admin_user",
                        "admin_user / admin_password_file are for a self-hosted engine".into(),
                    );
                }
                if !managed_users.is_empty() {
                    return bad(
                        "managed_users",
                        "an AWS cache's managed users are the ones tagged bastion.dev/managed"
                            .into(),
                    );
                }
            }
            (None, Some(_)) => {
                if self.target.is_some() || self.serverless {
                    return bad("auth.target", "target / serverless are for service".into());
                }
                if self.admin_user.as_deref().is_none_or(str::is_empty) {
                    return bad("auth.admin_user", "a self-hosted engine needs it".into());
                }
                match &self.admin_password_file {
                    // A secret the daemon sends upstream: the rules of every password file.
                    Some(path) => {
                        super::rules::check_secret_file(ADMIN_PASSWORD_FILE, path)
                            .map_err(|e| (e.field, e.message))?;
                    }
                    None => {
                        return bad(ADMIN_PASSWORD_FILE, "a self-hosted engine needs it".into());
                    }
                }
                if managed_users.is_empty() {
                    return bad(
                        "managed_users",
                        "a self-hosted engine needs the users the bastion owns".into(),
                    );
                }
            }
        }
        if let Some(region) = self
            .region
            .as_deref()
            .filter(|r| !crate::aws::region::is_region(r))
        {
            return bad(
                "auth.region",
                format!("'{region}' is not an AWS region name"),
            );
        }
        if let Some(prefix) = &self.secret_prefix {
            let ok = !prefix.is_empty()
                && prefix.len() <= 128
                && prefix
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"/_+=.@-".contains(&b));
            if !ok {
                return bad(
                    "auth.secret_prefix",
                    format!("'{prefix}' must be 1..=128 characters of [A-Za-z0-9/_+=.@-]"),
                );
            }
        }
        if self
            .rotation_interval
            .is_some_and(|d| d < Duration::from_secs(1))
        {
            return bad("auth.rotation_interval", "must be at least 1s".into());
        }
        if self
            .secret_grace_period
            .is_some_and(|d| d < Duration::from_secs(1))
        {
            return bad("auth.secret_grace_period", "must be at least 1s".into());
        }
        for user in managed_users {
            let ok = !user.is_empty()
                && user.len() <= 64
                && !user.contains('*')
                && user.bytes().all(|b| b.is_ascii_graphic());
            if !ok || Some(user) == self.admin_user.as_ref() {
                return bad(
                    "managed_users",
                    format!(
                        "'{user}' must be one concrete ACL user (printable, no spaces, no '*', \
                         at most 64 bytes), not the admin_user"
                    ),
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{AuthConfig, Config};
    use std::path::Path;

    fn parse(auth: &str, users: &str) -> Result<Config, String> {
        let text = format!(
            "state_dir = \"/s\"\n[listeners.unix]\ndirectory = \"/d\"\n[[databases]]\nname = \"db\"\n\
             address = \"10.0.0.1:6379\"\nauth = {auth}\n{users}\n"
        );
        Config::parse(&text, Path::new("t.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn self_hosted_and_aws_shapes_parse() {
        let c = parse(
            r#"{ mode = "managed", engine = "redis", admin_user = "adm", admin_password_file = "/p", rotation_interval = "2m" }"#,
            r#"managed_users = ["app"]"#,
        )
        .unwrap();
        let AuthConfig::Managed(m) = &c.seed.databases[0].auth else {
            panic!("{:?}", c.seed.databases[0].auth)
        };
        assert_eq!(
            m.rotation_interval,
            Some(std::time::Duration::from_secs(120))
        );
        assert_eq!(c.seed.databases[0].managed_users, ["app"]);
        assert_eq!(m.secret_grace_period, None);
        let c = parse(
            r#"{ mode = "managed", service = "elasticache", region = "us-east-1", target = "rg", secret_grace_period = "2d" }"#,
            "",
        )
        .unwrap();
        let AuthConfig::Managed(m) = &c.seed.databases[0].auth else {
            panic!()
        };
        assert_eq!(
            m.secret_grace_period,
            Some(std::time::Duration::from_secs(2 * 86400))
        );
    }

    #[test]
    fn rules_name_the_key() {
        let cases = [
            (
                r#"{ mode = "managed", target = "rg" }"#,
                "",
                "exactly one of service",
            ),
            (
                r#"{ mode = "managed", service = "memorydb", engine = "redis", target = "c" }"#,
                "",
                "exactly one of service",
            ),
            (
                r#"{ mode = "managed", service = "memorydb" }"#,
                "",
                "auth.target",
            ),
            (
                r#"{ mode = "managed", engine = "redis", admin_user = "a", admin_password_file = "/p" }"#,
                "",
                "managed_users",
            ),
            (
                r#"{ mode = "managed", engine = "redis", admin_user = "a", admin_password_file = "rel" }"#,
                r#"managed_users = ["app"]"#,
                "absolute",
            ),
            (
                r#"{ mode = "managed", engine = "redis", admin_user = "a", admin_password_file = "/p" }"#,
                r#"managed_users = ["a*"]"#,
                "concrete ACL user",
            ),
            (
                r#"{ mode = "managed", engine = "redis", admin_user = "a", admin_password_file = "/p" }"#,
                r#"managed_users = ["a"]"#,
                "not the admin_user",
            ),
            (
                r#"{ mode = "managed", engine = "redis", admin_user = "a", admin_password_file = "/p", secret_prefix = "sp ace" }"#,
                r#"managed_users = ["app"]"#,
                "auth.secret_prefix",
            ),
            (
                r#"{ mode = "managed", service = "memorydb", target = "c", secret_grace_period = "0s" }"#,
                "",
                "auth.secret_grace_period",
            ),
            (
                r#"{ mode = "password", password_file = "/p" }"#,
                r#"managed_users = ["app"]"#,
                "only applies with mode = \"managed\"",
            ),
        ];
        for (auth, users, expect) in cases {
            let e = parse(auth, users).unwrap_err();
            assert!(e.contains(expect), "{auth} {users}: {e}");
        }
    }
}
