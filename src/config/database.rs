//! `[[databases]]`, `[[roles]]`, `[[users]]`: what the store is seeded with on its first start
//! (and what `bastion import` / `export` read and write), in the file's own shape.

use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::IamService;
use crate::proxy::inspect::policy::{CommandPolicy, RuleError};

/// One upstream Redis / Valkey / ElastiCache / MemoryDB endpoint.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    pub name: String,
    /// `host:port` of the upstream.
    pub address: UpstreamAddr,
    /// Upstream TLS; absent means plaintext.
    #[serde(default)]
    pub tls: Option<UpstreamTls>,
    pub auth: AuthConfig,
    /// db-user used when the client names none and its roles allow more than one.
    #[serde(default)]
    pub default_db_user: Option<String>,
    /// IAM mode only: sign tokens with this role's credentials (STS AssumeRole, with the
    /// bastion's own credentials as the source) instead of the bastion's own.
    #[serde(default)]
    pub assume_role_arn: Option<String>,
    /// `sts:ExternalId` sent with AssumeRole (the role's trust policy may require it).
    #[serde(default)]
    pub external_id: Option<String>,
    /// `RoleSessionName` of the assumed session; default [`crate::aws::assume_role::DEFAULT_SESSION_NAME`].
    #[serde(default)]
    pub session_name: Option<String>,
    /// IAM mode only: accept an upstream without `tls`, so auth tokens travel in clear. For
    /// test rigs (ElastiCache and MemoryDB refuse IAM auth without in-transit encryption);
    /// without it such a database is refused, and with it `bastion doctor` warns.
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_plaintext_auth: bool,
    /// Password mode only: the upstream knows one password and no users (Redis `requirepass`,
    /// an ElastiCache AUTH token without RBAC). Sessions authenticate with one-argument
    /// `AUTH <password>` (`HELLO n AUTH default <password>` for a client's HELLO) and have no
    /// db-user: the roles' `db_users` and a client's db-user are not used.
    #[serde(default, skip_serializing_if = "is_false")]
    pub legacy_auth: bool,
    /// How the session's bytes are relayed: `guard` (default: the requests direction is
    /// framed so a session can never switch db-user), `inspect` (the guard, and the replies
    /// framed too: every command paired with its reply, audited as `db.command`) or
    /// `passthrough` (byte-for-byte, trusting the upstream's own ACLs).
    #[serde(default, skip_serializing_if = "RelayMode::is_guard")]
    pub relay: RelayMode,
    /// Address ranges this database may point into although the upstream address policy
    /// refuses them by default (link-local, multicast…); never the metadata endpoints.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_addresses: Vec<ipnet::IpNet>,
    /// `mode = "managed"` on a self-hosted engine: the ACL users whose passwords the bastion
    /// owns and rotates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub managed_users: Vec<String>,
}

/// A database's `relay` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RelayMode {
    /// Requests framed and checked (AUTH/HELLO/RESET), replies untouched.
    #[default]
    Guard,
    /// Bytes relayed untouched both ways.
    Passthrough,
    /// The guard on the requests, and the replies framed: each command paired with its
    /// reply (per-command audit).
    Inspect,
}

impl RelayMode {
    pub fn is_guard(&self) -> bool {
        *self == RelayMode::Guard
    }

    /// Whether the requests direction runs through the command guard (guard and inspect).
    pub fn guards_requests(self) -> bool {
        self != RelayMode::Passthrough
    }

    pub fn name(self) -> &'static str {
        match self {
            RelayMode::Guard => "guard",
            RelayMode::Passthrough => "passthrough",
            RelayMode::Inspect => "inspect",
        }
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

#[cfg(test)]
impl DatabaseConfig {
    /// A plaintext database with nothing but a name, an address and an auth mode (unit tests).
    pub fn for_test(name: &str, address: &str, auth: AuthConfig) -> Self {
        DatabaseConfig {
            name: name.to_string(),
            address: address.parse().expect("address"),
            tls: None,
            auth,
            default_db_user: None,
            assume_role_arn: None,
            external_id: None,
            session_name: None,
            allow_plaintext_auth: false,
            legacy_auth: false,
            relay: RelayMode::Guard,
            allow_addresses: Vec::new(),
            managed_users: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamAddr {
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for UpstreamAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl std::str::FromStr for UpstreamAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("'{s}' is not host:port"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("'{s}' has an empty host"));
        }
        let port = port
            .parse::<u16>()
            .map_err(|_| format!("'{s}' has an invalid port"))?;
        Ok(UpstreamAddr {
            host: host.to_string(),
            port,
        })
    }
}

impl Serialize for UpstreamAddr {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        ser.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for UpstreamAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    /// PEM bundle of CAs to trust; absent means the system's trust store.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Name verified in the upstream certificate; defaults to the address host.
    #[serde(default)]
    pub server_name: Option<String>,
}

/// How the bastion authenticates to the upstream on the user's behalf.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(tag = "mode", rename_all = "lowercase", deny_unknown_fields)]
pub enum AuthConfig {
    /// A SigV4-presigned IAM auth token (ElastiCache / MemoryDB).
    Iam {
        service: IamService,
        /// Absent: the instance's region (`AWS_REGION`, the profile, IMDS `placement/region`;
        /// see [`crate::aws::region`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        region: Option<String>,
        /// Replication group id, MemoryDB cluster name or serverless cache name.
        target: String,
        #[serde(default)]
        serverless: bool,
    },
    /// A static password from a private file or an environment variable: exactly one
    /// `password_file` or `password_env` key beside `mode`.
    Password(PasswordSource),
    /// No AUTH upstream (a local Redis without ACLs).
    None,
    /// Passwords the bastion generates, rotates and keeps in Secrets Manager.
    Managed(super::managed::ManagedAuthConfig),
}

impl AuthConfig {
    /// The one secret this mode reads from the machine, and the key that declares it: a
    /// password database's source, a self-hosted managed database's `admin_password_file`.
    /// Both keep the same rules (`catalog/password.rs`), checked where they are declared.
    pub fn secret_source(&self) -> Option<(&'static str, PasswordSource)> {
        match self {
            AuthConfig::Password(source) => Some((source.key(), source.clone())),
            AuthConfig::Managed(m) => m.admin_password_file.as_ref().map(|path| {
                (
                    super::ADMIN_PASSWORD_FILE,
                    PasswordSource::File(path.clone()),
                )
            }),
            AuthConfig::Iam { .. } | AuthConfig::None => None,
        }
    }

    pub fn mode_name(&self) -> &'static str {
        match self {
            AuthConfig::Iam { .. } => "iam",
            AuthConfig::Password(_) => "password",
            AuthConfig::None => "none",
            AuthConfig::Managed(_) => "managed",
        }
    }

    /// Whether this mode's credential is for one named db-user (an IAM token is signed for
    /// one). A password, or no auth, can also authenticate as the upstream's default user —
    /// a session with no db-user (see [`crate::rbac`]).
    pub fn needs_db_user(&self) -> bool {
        match self {
            AuthConfig::Iam { .. } => true,
            AuthConfig::Password(_) | AuthConfig::None | AuthConfig::Managed(_) => false,
        }
    }

    /// Whether this mode's secret must not cross the network in clear: the upstream then needs
    /// `tls` unless the database says `allow_plaintext_auth = true`. IAM tokens are bearer
    /// credentials for any connection to the cache for 15 minutes (and ElastiCache / MemoryDB
    /// accept them only with in-transit encryption). A new token or managed mode belongs here.
    /// Passwords are not refused in clear: a local Redis with `requirepass` is their use.
    pub fn needs_tls(&self) -> bool {
        match self {
            AuthConfig::Iam { .. } => true,
            AuthConfig::Password(_) | AuthConfig::None | AuthConfig::Managed(_) => false,
        }
    }
}

/// Where a database's password is read from (never the password itself): one of the two, by
/// construction. In the file, `password_file = "/etc/bastion/secrets/NAME"` or
/// `password_env = "BASTION_NAME"`; where each may point is checked where it is declared
/// ([`DatabaseConfig::check`]) and where it is read ([`crate::catalog::SecretDirs`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "PasswordKeys", into = "PasswordKeys")]
pub enum PasswordSource {
    /// `password_file`: a file directly in the secrets directory or systemd's
    /// `$CREDENTIALS_DIRECTORY` (absolute path).
    File(PathBuf),
    /// `password_env`: an environment variable of the daemon, named `BASTION_…`.
    Env(String),
}

impl PasswordSource {
    /// The key that declares it, relative to the database (`auth.password_file`, …).
    pub fn key(&self) -> &'static str {
        match self {
            PasswordSource::File(_) => "auth.password_file",
            PasswordSource::Env(_) => "auth.password_env",
        }
    }
}

impl std::fmt::Display for PasswordSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PasswordSource::File(path) => write!(f, "file {}", path.display()),
            PasswordSource::Env(var) => write!(f, "environment variable {var}"),
        }
    }
}

/// The file's keys for a password source, before they are known to name exactly one.
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct PasswordKeys {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    password_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    password_env: Option<String>,
}

/// What a `mode = "password"` table without exactly one source is told.
pub const ONE_PASSWORD_SOURCE: &str =
    "auth: mode = \"password\" needs exactly one of password_file or password_env";

impl TryFrom<PasswordKeys> for PasswordSource {
    type Error = &'static str;
    fn try_from(keys: PasswordKeys) -> Result<Self, &'static str> {
        match (keys.password_file, keys.password_env) {
            (Some(path), None) => Ok(PasswordSource::File(path)),
            (None, Some(var)) => Ok(PasswordSource::Env(var)),
            _ => Err(ONE_PASSWORD_SOURCE),
        }
    }
}

impl From<PasswordSource> for PasswordKeys {
    fn from(source: PasswordSource) -> Self {
        match source {
            PasswordSource::File(path) => PasswordKeys {
                password_file: Some(path),
                password_env: None,
            },
            PasswordSource::Env(var) => PasswordKeys {
                password_file: None,
                password_env: Some(var),
            },
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RoleConfig {
    pub name: String,
    /// Database users this role may act as; `*` wildcards.
    #[serde(default)]
    pub db_users: Vec<String>,
    /// Databases this role may reach; `*` wildcards.
    #[serde(default)]
    pub db_names: Vec<String>,
    /// Command policy (inspect mode): Redis ACL command rules applied from no commands,
    /// e.g. `"+@read -@dangerous"`. None: every command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commands: Option<String>,
    /// Key patterns of the command policy, applied from no keys, e.g. `"~app:* %R~shared:*"`.
    /// None: every key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<String>,
}

impl RoleConfig {
    /// The role's compiled command policy; `None` when it sets neither `commands` nor `keys`
    /// (every command allowed). An error names the setting (`commands` or `keys`) and the rule.
    pub fn policy(&self) -> Result<Option<CommandPolicy>, (&'static str, RuleError)> {
        if self.commands.is_none() && self.keys.is_none() {
            return Ok(None);
        }
        for (field, rules, keys) in [
            ("commands", &self.commands, false),
            ("keys", &self.keys, true),
        ] {
            if let Some(rules) = rules {
                CommandPolicy::check_rules(rules, keys).map_err(|e| (field, e))?;
            }
        }
        CommandPolicy::for_role(self.commands.as_deref(), self.keys.as_deref())
            .map(Some)
            .map_err(|e| ("commands", e))
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    #[serde(default)]
    pub roles: Vec<String>,
    /// The local Unix account (name or numeric uid) whose socket connections are this user.
    #[serde(default)]
    pub unix_user: Option<String>,
}
