//! The boot configuration: one TOML file, parsed once at start-up into typed structs.
//!
//! Everything here is validated before the daemon binds anything; an error names the key
//! (and the file) that is wrong. Databases, users and roles declared here are imported into the
//! on-box store on its first start only (see [`crate::daemon`]); after that the store is the
//! source of truth. `bastion doctor` and `configure bootstrap` still read them from here.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::aws::region::is_region;

pub use crate::aws::imds::settings::{
    ImdsConfig, ImdsEndpointMode, DEFAULT_IMDS_TIMEOUT, DEFAULT_IMDS_TOKEN_TTL,
};
pub use crate::aws::token::IamService;

/// Default handshake budget: a client must finish AUTH/HELLO (or its first command) within it.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default bound on the bytes a client may send before its opening frame is complete.
pub const DEFAULT_MAX_HANDSHAKE_BYTES: usize = 64 * 1024;
/// Default bound on concurrent sessions.
pub const DEFAULT_MAX_SESSIONS: usize = 10_000;
/// Default bound on connecting (TCP + TLS) to an upstream.
pub const DEFAULT_UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default bound on TCP connections still in their handshake (not yet identified).
pub const DEFAULT_MAX_HANDSHAKES: usize = 1024;
/// Default bound on those from one source address.
pub const DEFAULT_MAX_HANDSHAKES_PER_SOURCE: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config: {key}: {message}")]
    Invalid { key: String, message: String },
}

impl ConfigError {
    fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// The whole boot configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the on-box CA, issued certificates and (later) the store live.
    pub state_dir: PathBuf,
    #[serde(default)]
    pub listeners: Listeners,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default, rename = "databases")]
    pub databases: Vec<DatabaseConfig>,
    #[serde(default)]
    pub roles: Vec<RoleConfig>,
    #[serde(default)]
    pub users: Vec<UserConfig>,
    #[serde(default)]
    pub aws: AwsConfig,
    #[serde(default)]
    pub admin: AdminConfig,
}

/// `[admin]`: the admin socket the `bastion db|role|user|…` verbs talk to.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Path of the socket; default `<state_dir>/run/admin.sock` (only root reaches it there:
    /// set e.g. `/run/bastion/admin.sock` when an admin group should).
    #[serde(default)]
    pub socket: Option<PathBuf>,
    /// A local group whose members may use the admin socket besides root.
    #[serde(default)]
    pub group: Option<String>,
}

impl Config {
    /// Where the admin socket is.
    pub fn admin_socket(&self) -> PathBuf {
        self.admin
            .socket
            .clone()
            .unwrap_or_else(|| self.state_dir.join("run").join("admin.sock"))
    }
}

/// `[aws]`: how the bastion reaches AWS itself (not the databases).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsConfig {
    #[serde(default)]
    pub imds: ImdsConfig,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listeners {
    /// mTLS listeners for stock Redis clients.
    #[serde(default)]
    pub tcp: Vec<TcpListenerConfig>,
    /// The Unix-socket directory (one `<db>.sock` per database), reached over `ssh -L`.
    #[serde(default)]
    pub unix: Option<UnixListenerConfig>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpListenerConfig {
    pub address: SocketAddr,
    /// A fixed database: every client of this listener reaches it, whatever its SNI says.
    #[serde(default)]
    pub database: Option<String>,
    /// The database for clients that send no SNI (e.g. `redis-cli -h 127.0.0.1` without `--sni`).
    #[serde(default)]
    pub default_database: Option<String>,
    /// Extra DNS names / IPs for the listener's server certificate (database names are always in it).
    #[serde(default)]
    pub server_names: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnixListenerConfig {
    pub directory: PathBuf,
    /// Socket file mode, octal string. Identity comes from SO_PEERCRED, so the default lets any
    /// local user connect and be refused unless bound to a bastion user.
    #[serde(default = "default_socket_mode", deserialize_with = "de_octal")]
    pub mode: u32,
}

fn default_socket_mode() -> u32 {
    0o666
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    #[serde(
        default = "default_handshake_timeout",
        deserialize_with = "de_duration"
    )]
    pub handshake_timeout: Duration,
    #[serde(default = "default_connect_timeout", deserialize_with = "de_duration")]
    pub upstream_connect_timeout: Duration,
    #[serde(default = "default_max_handshake_bytes")]
    pub max_handshake_bytes: usize,
    #[serde(default = "default_max_sessions")]
    pub max_sessions: usize,
    /// TCP connections still in their handshake; at the bound the oldest is closed.
    #[serde(default = "default_max_handshakes")]
    pub max_handshakes: usize,
    /// The same bound per source address.
    #[serde(default = "default_max_handshakes_per_source")]
    pub max_handshakes_per_source: usize,
    /// Close a session that moved no byte in either direction for this long (off by default:
    /// pub/sub subscribers and blocking commands are legitimately quiet).
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub idle_timeout: Option<Duration>,
    /// End every session this long after it started (off by default).
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub max_session_age: Option<Duration>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            upstream_connect_timeout: DEFAULT_UPSTREAM_CONNECT_TIMEOUT,
            max_handshake_bytes: DEFAULT_MAX_HANDSHAKE_BYTES,
            max_sessions: DEFAULT_MAX_SESSIONS,
            max_handshakes: DEFAULT_MAX_HANDSHAKES,
            max_handshakes_per_source: DEFAULT_MAX_HANDSHAKES_PER_SOURCE,
            idle_timeout: None,
            max_session_age: None,
        }
    }
}

fn default_handshake_timeout() -> Duration {
    DEFAULT_HANDSHAKE_TIMEOUT
}
fn default_connect_timeout() -> Duration {
    DEFAULT_UPSTREAM_CONNECT_TIMEOUT
}
fn default_max_handshake_bytes() -> usize {
    DEFAULT_MAX_HANDSHAKE_BYTES
}
fn default_max_sessions() -> usize {
    DEFAULT_MAX_SESSIONS
}
fn default_max_handshakes() -> usize {
    DEFAULT_MAX_HANDSHAKES
}
fn default_max_handshakes_per_source() -> usize {
    DEFAULT_MAX_HANDSHAKES_PER_SOURCE
}

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
    /// framed so a session can never switch db-user) or `passthrough` (byte-for-byte, trusting
    /// the upstream's own ACLs).
    #[serde(default, skip_serializing_if = "RelayMode::is_guard")]
    pub relay: RelayMode,
    /// Address ranges this database may point into although the upstream address policy
    /// refuses them by default (link-local, multicast…); never the metadata endpoints.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_addresses: Vec<ipnet::IpNet>,
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
}

impl RelayMode {
    pub fn is_guard(&self) -> bool {
        *self == RelayMode::Guard
    }

    pub fn name(self) -> &'static str {
        match self {
            RelayMode::Guard => "guard",
            RelayMode::Passthrough => "passthrough",
        }
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl DatabaseConfig {
    /// The role this database's tokens are signed as, if it has one.
    pub fn assume_role(&self) -> Option<crate::aws::assume_role::RoleSpec> {
        let arn = self.assume_role_arn.clone()?;
        let region = match &self.auth {
            AuthConfig::Iam { region, .. } => region.clone(),
            _ => None,
        };
        Some(crate::aws::assume_role::RoleSpec {
            arn,
            external_id: self.external_id.clone(),
            session_name: self
                .session_name
                .clone()
                .unwrap_or_else(|| crate::aws::assume_role::DEFAULT_SESSION_NAME.to_string()),
            region,
        })
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
    /// A static password from a 0600 file or an environment variable.
    Password {
        #[serde(default)]
        password_file: Option<PathBuf>,
        #[serde(default)]
        password_env: Option<String>,
    },
    /// No AUTH upstream (a local Redis without ACLs).
    None,
}

impl AuthConfig {
    pub fn mode_name(&self) -> &'static str {
        match self {
            AuthConfig::Iam { .. } => "iam",
            AuthConfig::Password { .. } => "password",
            AuthConfig::None => "none",
        }
    }

    /// Whether this mode's credential is for one named db-user (an IAM token is signed for
    /// one). A password, or no auth, can also authenticate as the upstream's default user —
    /// a session with no db-user (see [`crate::rbac`]).
    pub fn needs_db_user(&self) -> bool {
        match self {
            AuthConfig::Iam { .. } => true,
            AuthConfig::Password { .. } | AuthConfig::None => false,
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
            AuthConfig::Password { .. } | AuthConfig::None => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RoleConfig {
    pub name: String,
    /// Database users this role may act as; `*` wildcards.
    #[serde(default)]
    pub db_users: Vec<String>,
    /// Databases this role may reach; `*` wildcards.
    #[serde(default)]
    pub db_names: Vec<String>,
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

impl Config {
    /// Read and validate a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Parse and validate config text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_path_buf(),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Cross-field checks: unique names, references that resolve, listeners that make sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.listeners.tcp.is_empty() && self.listeners.unix.is_none() {
            return Err(ConfigError::invalid(
                "listeners",
                "no listener configured (add [[listeners.tcp]] or [listeners.unix])",
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

/// A rule of one database that its settings break: `field` is relative to the database
/// (`auth`, `tls.server_name`, …); the boot config prefixes `databases[<i>].`, the admin socket
/// `databases.<name>.`, and both say the same `message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct DatabaseRuleError {
    pub field: &'static str,
    pub message: String,
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
            AuthConfig::Password {
                password_file,
                password_env,
            } => {
                if password_file.is_some() == password_env.is_some() {
                    return broken(
                        "auth",
                        "mode = \"password\" needs exactly one of password_file or password_env",
                    );
                }
                if password_file.as_ref().is_some_and(|p| !p.is_absolute()) {
                    return broken(
                        "auth.password_file",
                        "must be an absolute path (the daemon does not run in your directory)",
                    );
                }
                if password_env.as_ref().is_some_and(|e| e.is_empty()) {
                    return broken("auth.password_env", "must not be empty");
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
            if !matches!(self.auth, AuthConfig::Password { .. }) {
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

/// Names end up in file names (`<db>.sock`, `<user>.crt`), SNI and certificate CNs: keep them tame.
pub fn check_name(key: &str, name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            key,
            format!("'{name}' must be 1-64 characters of [A-Za-z0-9._-], not starting with '.'"),
        ))
    }
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map_err(|e| serde::de::Error::custom(format!("'{s}': {e}")))
}

fn de_opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    de_duration(d).map(Some)
}

fn de_octal<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let s = String::deserialize(d)?;
    u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| serde::de::Error::custom(format!("'{s}' is not an octal file mode")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
state_dir = "/var/lib/bastion"
[limits]
handshake_timeout = "3s"
[[listeners.tcp]]
address = "127.0.0.1:6380"
default_database = "cache"
[listeners.unix]
directory = "/run/bastion/db"
mode = "0660"
[[databases]]
name = "cache"
address = "master.rg.abc.use1.cache.amazonaws.com:6379"
tls = {}
auth = { mode = "iam", service = "elasticache", region = "us-east-1", target = "rg" }
[[databases]]
name = "local"
address = "127.0.0.1:6379"
auth = { mode = "password", password_env = "REDIS_PW" }
[[roles]]
name = "ops"
db_users = ["app-*"]
db_names = ["*"]
[[users]]
name = "alice"
roles = ["ops"]
unix_user = "alice"
"#;

    #[test]
    fn parses_a_full_config() {
        let c = Config::parse(SAMPLE, Path::new("t.toml")).unwrap();
        assert_eq!(c.limits.handshake_timeout, Duration::from_secs(3));
        assert_eq!(c.listeners.unix.as_ref().unwrap().mode, 0o660);
        assert_eq!(c.databases[0].address.port, 6379);
        assert!(matches!(
            c.databases[0].auth,
            AuthConfig::Iam {
                serverless: false,
                ..
            }
        ));
        assert_eq!(c.users[0].roles, vec!["ops"]);
    }

    #[test]
    fn errors_name_the_key() {
        let bad = SAMPLE.replace("roles = [\"ops\"]", "roles = [\"nope\"]");
        let e = Config::parse(&bad, Path::new("t.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("users[0].roles") && e.contains("nope"), "{e}");

        let bad = SAMPLE.replace("default_database = \"cache\"", "default_database = \"x\"");
        let e = Config::parse(&bad, Path::new("t.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("listeners.tcp[0].default_database"), "{e}");

        let bad = SAMPLE.replace(", password_env = \"REDIS_PW\"", "");
        let e = Config::parse(&bad, Path::new("t.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("databases[1].auth"), "{e}");

        let bad = SAMPLE.replace("name = \"local\"", "name = \"../x\"");
        let e = Config::parse(&bad, Path::new("t.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("databases[1].name"), "{e}");
    }

    #[test]
    fn imds_section_is_optional_and_typed() {
        let c = Config::parse(SAMPLE, Path::new("t.toml")).unwrap();
        assert_eq!(c.aws.imds.token_ttl, DEFAULT_IMDS_TOKEN_TTL);
        assert_eq!(c.aws.imds.read_timeout, DEFAULT_IMDS_TIMEOUT);
        assert!(!c.aws.imds.allow_v1_fallback);

        let with = format!(
            "{SAMPLE}\n[aws.imds]\nendpoint_mode = \"IPv6\"\ntoken_ttl = \"1h\"\n\
             allow_v1_fallback = true\nread_timeout = \"250ms\"\n"
        );
        let c = Config::parse(&with, Path::new("t.toml")).unwrap();
        assert_eq!(c.aws.imds.endpoint_mode, Some(ImdsEndpointMode::Ipv6));
        assert_eq!(c.aws.imds.token_ttl, Duration::from_secs(3600));
        assert_eq!(c.aws.imds.read_timeout, Duration::from_millis(250));
        assert_eq!(c.aws.imds.connect_timeout, DEFAULT_IMDS_TIMEOUT);
        assert!(c.aws.imds.allow_v1_fallback);

        let bad = format!("{SAMPLE}\n[aws.imds]\ntoken_ttl = \"7h\"\n");
        let e = Config::parse(&bad, Path::new("t.toml")).unwrap_err();
        assert!(e.to_string().contains("aws.imds.token_ttl"), "{e}");
    }

    #[test]
    fn assume_role_is_optional_validated_and_named() {
        let c = Config::parse(SAMPLE, Path::new("t.toml")).unwrap();
        assert!(c.databases[0].assume_role().is_none());

        let with = |extra: &str| {
            SAMPLE.replace("target = \"rg\" }", &format!("target = \"rg\" }}\n{extra}"))
        };
        let c = Config::parse(
            &with("assume_role_arn = \"arn:aws:iam::111122223333:role/team/cache-connect\"\nexternal_id = \"ext-1\""),
            Path::new("t.toml"),
        )
        .unwrap();
        let role = c.databases[0].assume_role().unwrap();
        assert_eq!(
            role.arn,
            "arn:aws:iam::111122223333:role/team/cache-connect"
        );
        assert_eq!(role.external_id.as_deref(), Some("ext-1"));
        assert_eq!(role.session_name, "bastion");
        assert_eq!(role.region.as_deref(), Some("us-east-1"));

        for bad in [
            "assume_role_arn = \"arn:aws:iam::1111:role/r\"",
            "assume_role_arn = \"arn:aws:iam::111122223333:user/u\"",
            "assume_role_arn = \"arn:aws:sts::111122223333:role/r\"",
            "assume_role_arn = \"role/r\"",
        ] {
            let e = Config::parse(&with(bad), Path::new("t.toml"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("databases[0].assume_role_arn"), "{bad}: {e}");
        }
        let e = Config::parse(&with("external_id = \"x1\""), Path::new("t.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("databases[0].external_id") && e.contains("only applies"),
            "{e}"
        );
        let e = Config::parse(
            &with("assume_role_arn = \"arn:aws:iam::111122223333:role/r\"\nsession_name = \"a b\""),
            Path::new("t.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("databases[0].session_name"), "{e}");

        let pw = SAMPLE.replace(
            "password_env = \"REDIS_PW\" }",
            "password_env = \"REDIS_PW\" }\nassume_role_arn = \"arn:aws:iam::111122223333:role/r\"",
        );
        let e = Config::parse(&pw, Path::new("t.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("databases[1].assume_role_arn") && e.contains("'password'"),
            "{e}"
        );
    }

    #[test]
    fn database_rules_name_the_field() {
        let broken = |from: &str, to: &str| {
            assert!(SAMPLE.contains(from), "{from}");
            Config::parse(&SAMPLE.replace(from, to), Path::new("t.toml"))
                .unwrap_err()
                .to_string()
        };
        let e = broken("tls = {}", "tls = { ca_file = \"ca.pem\" }");
        assert!(
            e.contains("databases[0].tls.ca_file: must be an absolute path"),
            "{e}"
        );
        let e = broken("tls = {}", "tls = { server_name = \"a b\" }");
        assert!(e.contains("databases[0].tls.server_name"), "{e}");
        let pattern_user = broken(
            "password_env = \"REDIS_PW\" }",
            "password_env = \"REDIS_PW\" }\ndefault_db_user = \"app-*\"",
        );
        assert!(
            pattern_user.contains("databases[1].default_db_user")
                && pattern_user.contains("no '*'"),
            "{pattern_user}"
        );
        let e = broken("region = \"us-east-1\"", "region = \"Mars\"");
        assert!(e.contains("databases[0].auth.region"), "{e}");
        let e = broken("target = \"rg\"", "target = \"\"");
        assert!(
            e.contains("databases[0].auth: mode = \"iam\" needs a target"),
            "{e}"
        );
        // The same rule, the same words, from the typed database alone (the admin path).
        let c = Config::parse(SAMPLE, Path::new("t.toml")).unwrap();
        let mut db = c.databases[1].clone();
        db.default_db_user = Some("app-*".into());
        let rule = db.check().unwrap_err();
        assert_eq!(rule.field, "default_db_user");
        assert!(
            pattern_user.contains(&format!("databases[1].{rule}")),
            "{pattern_user} vs {rule}"
        );
    }

    #[test]
    fn iam_over_plaintext_is_refused_naming_the_key_unless_allowed() {
        let parse = |text: &str| Config::parse(text, Path::new("t.toml"));
        let plain = SAMPLE.replace("tls = {}\n", "");
        let e = parse(&plain).unwrap_err().to_string();
        assert!(
            e.contains("databases[0].tls: auth mode \"iam\" would send its tokens in clear")
                && e.contains("allow_plaintext_auth = true"),
            "{e}"
        );
        let allowed = plain.replace(
            "target = \"rg\" }",
            "target = \"rg\" }\nallow_plaintext_auth = true",
        );
        let c = parse(&allowed).unwrap();
        assert!(c.databases[0].allow_plaintext_auth && c.databases[0].tls.is_none());
        // The admin path (db add, import) runs the same rule on the typed database.
        let mut db = c.databases[0].clone();
        db.allow_plaintext_auth = false;
        assert_eq!(db.check().unwrap_err().field, "tls");

        let on_password = SAMPLE.replace(
            "password_env = \"REDIS_PW\" }",
            "password_env = \"REDIS_PW\" }\nallow_plaintext_auth = true",
        );
        let e = parse(&on_password).unwrap_err().to_string();
        assert!(e.contains("databases[1].allow_plaintext_auth"), "{e}");
    }

    #[test]
    fn legacy_auth_belongs_to_password_databases_without_db_users() {
        let parse = |text: &str| Config::parse(text, Path::new("t.toml"));
        let legacy = SAMPLE.replace(
            "password_env = \"REDIS_PW\" }",
            "password_env = \"REDIS_PW\" }\nlegacy_auth = true",
        );
        assert!(parse(&legacy).unwrap().databases[1].legacy_auth);
        assert!(!parse(SAMPLE).unwrap().databases[1].legacy_auth);
        let e = parse(&legacy.replace(
            "legacy_auth = true",
            "legacy_auth = true\ndefault_db_user = \"app\"",
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("databases[1].default_db_user"), "{e}");
        let on_iam = SAMPLE.replace("target = \"rg\" }", "target = \"rg\" }\nlegacy_auth = true");
        let e = parse(&on_iam).unwrap_err().to_string();
        assert!(
            e.contains("databases[0].legacy_auth") && e.contains("'iam'"),
            "{e}"
        );
    }

    #[test]
    fn upstream_addr_parses_v4_v6_and_names() {
        let a: UpstreamAddr = "[::1]:6379".parse().unwrap();
        assert_eq!((a.host.as_str(), a.port), ("::1", 6379));
        assert_eq!(a.to_string(), "[::1]:6379");
        assert!("nohost".parse::<UpstreamAddr>().is_err());
        assert!("h:99999".parse::<UpstreamAddr>().is_err());
    }
}
