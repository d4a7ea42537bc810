//! One upstream database as the data path uses it: validated, with no state its rules forbid.
//!
//! Both declarations produce it — the boot config's `[[databases]]` and the store's records —
//! through [`Database::from_declared`]: a password comes from exactly one [`PasswordSource`],
//! and a database with `assume_role_arn` carries its ready [`RoleSpec`]. The rules a new
//! declaration must keep ([`DatabaseConfig::check`]) are checked where it is declared (config
//! validation, the admin socket), not here: a database stored before a newer rule keeps being
//! served as it was (its sessions meet the rule at run time, e.g. no token in clear).

use std::path::PathBuf;

use crate::aws::assume_role::{RoleSpec, DEFAULT_SESSION_NAME};
use crate::config::{
    AuthConfig, DatabaseConfig, DatabaseRuleError, IamService, RelayMode, UpstreamAddr, UpstreamTls,
};

/// A database the catalog serves.
#[derive(Debug, Clone, PartialEq)]
pub struct Database {
    pub name: String,
    pub address: UpstreamAddr,
    /// Upstream TLS; `None` is plaintext.
    pub tls: Option<UpstreamTls>,
    pub auth: Auth,
    /// db-user used when the client names none and its roles allow more than one.
    pub default_db_user: Option<String>,
    /// IAM only: the role the tokens are signed as (STS AssumeRole in the database's region).
    pub assume_role: Option<RoleSpec>,
    /// IAM only: an upstream without `tls` is accepted (test rigs).
    pub allow_plaintext_auth: bool,
    /// Password only: one-argument AUTH, no db-users.
    pub legacy_auth: bool,
    pub relay: RelayMode,
    /// Ranges the address policy lets this database point into.
    pub allow_addresses: Vec<ipnet::IpNet>,
}

/// How the bastion authenticates to the upstream on the user's behalf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// A SigV4-presigned IAM auth token (ElastiCache / MemoryDB).
    Iam {
        service: IamService,
        /// `None`: the instance's region.
        region: Option<String>,
        target: String,
        serverless: bool,
    },
    /// A static password, read when a session needs it.
    Password(PasswordSource),
    /// No AUTH upstream.
    None,
    /// A password the bastion generates, rotates and keeps in Secrets Manager
    /// ([`crate::managed`]).
    Managed(crate::managed::ManagedAuth),
}

/// Where a password is read from (never the password itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordSource {
    /// A file private to the bastion (absolute path).
    File(PathBuf),
    /// An environment variable of the daemon.
    Env(String),
}

impl Auth {
    pub fn mode_name(&self) -> &'static str {
        match self {
            Auth::Iam { .. } => "iam",
            Auth::Password(_) => "password",
            Auth::None => "none",
            Auth::Managed(_) => "managed",
        }
    }

    /// Whether this mode's credential is for one named db-user (an IAM token is signed for
    /// one); see [`AuthConfig::needs_db_user`].
    pub fn needs_db_user(&self) -> bool {
        matches!(self, Auth::Iam { .. })
    }

    /// Whether this mode's secret must not cross the network in clear; see
    /// [`AuthConfig::needs_tls`].
    pub fn needs_tls(&self) -> bool {
        matches!(self, Auth::Iam { .. })
    }
}

impl Database {
    /// The typed form of `declared`; refuses only what it cannot hold (a password with both
    /// or neither source, which every declaration path refuses first).
    pub fn from_declared(declared: &DatabaseConfig) -> Result<Database, DatabaseRuleError> {
        let auth = match &declared.auth {
            AuthConfig::Iam {
                service,
                region,
                target,
                serverless,
            } => Auth::Iam {
                service: *service,
                region: region.clone(),
                target: target.clone(),
                serverless: *serverless,
            },
            AuthConfig::Password {
                password_file,
                password_env,
            } => Auth::Password(match (password_file, password_env) {
                (Some(path), None) => PasswordSource::File(path.clone()),
                (None, Some(var)) => PasswordSource::Env(var.clone()),
                _ => {
                    return Err(DatabaseRuleError {
                        field: "auth",
                        message: "mode = \"password\" needs exactly one of password_file or \
                                  password_env"
                            .into(),
                    })
                }
            }),
            AuthConfig::None => Auth::None,
            AuthConfig::Managed(table) => Auth::Managed(
                crate::managed::ManagedAuth::from_config(table, &declared.managed_users)
                    .map_err(|(field, message)| DatabaseRuleError { field, message })?,
            ),
        };
        let assume_role = declared.assume_role_arn.as_ref().map(|arn| RoleSpec {
            arn: arn.clone(),
            external_id: declared.external_id.clone(),
            session_name: declared
                .session_name
                .clone()
                .unwrap_or_else(|| DEFAULT_SESSION_NAME.to_string()),
            region: match &auth {
                Auth::Iam { region, .. } => region.clone(),
                _ => None,
            },
        });
        Ok(Database {
            name: declared.name.clone(),
            address: declared.address.clone(),
            tls: declared.tls.clone(),
            auth,
            default_db_user: declared.default_db_user.clone(),
            assume_role,
            allow_plaintext_auth: declared.allow_plaintext_auth,
            legacy_auth: declared.legacy_auth,
            relay: declared.relay,
            allow_addresses: declared.allow_addresses.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn declared(auth: AuthConfig) -> DatabaseConfig {
        DatabaseConfig {
            tls: Some(UpstreamTls::default()),
            ..DatabaseConfig::for_test("cache", "10.0.0.1:6379", auth)
        }
    }

    #[test]
    fn a_password_comes_from_exactly_one_source() {
        let pw = |file: Option<&str>, env: Option<&str>| {
            Database::from_declared(&declared(AuthConfig::Password {
                password_file: file.map(PathBuf::from),
                password_env: env.map(str::to_string),
            }))
            .map(|db| db.auth)
        };
        assert_eq!(
            pw(Some("/etc/pw"), None).unwrap(),
            Auth::Password(PasswordSource::File("/etc/pw".into()))
        );
        assert_eq!(
            pw(None, Some("PW")).unwrap(),
            Auth::Password(PasswordSource::Env("PW".into()))
        );
        for (file, env) in [(None, None), (Some("/etc/pw"), Some("PW"))] {
            let e = pw(file, env).unwrap_err();
            assert_eq!(e.field, "auth", "{e}");
        }
    }

    #[test]
    fn an_assumed_role_is_ready_with_the_databases_region() {
        let mut d = declared(AuthConfig::Iam {
            service: IamService::Elasticache,
            region: Some("eu-west-1".into()),
            target: "rg".into(),
            serverless: false,
        });
        d.assume_role_arn = Some("arn:aws:iam::111122223333:role/r".into());
        let db = Database::from_declared(&d).unwrap();
        let role = db.assume_role.unwrap();
        assert_eq!(role.region.as_deref(), Some("eu-west-1"));
        assert_eq!(role.session_name, DEFAULT_SESSION_NAME);
        d.external_id = Some("ext-1".into());
        let role = Database::from_declared(&d).unwrap().assume_role.unwrap();
        assert_eq!(role.external_id.as_deref(), Some("ext-1"));
    }
}
