//! The boot configuration: one TOML file, parsed once at start-up into a typed [`Config`]
//! sorted by lifetime.
//!
//! - [`Boot`]: fixed at start (state dir, admin socket, IMDS, the sockets listened on); a reload
//!   names a change and keeps the running value.
//! - [`Live`]: what a reload swaps in for new connections (limits, each TLS listener's routing
//!   and server-certificate names).
//! - [`Seed`]: the databases, roles and users the on-box store is seeded with on its first
//!   start only (see [`crate::daemon`]); after that the store is the source of truth.
//!   `bastion doctor` and `configure bootstrap` still read them from here.
//!
//! Everything is validated before the daemon binds anything; an error names the key (and the
//! file) that is wrong. The file's serde shape is split by concern: `raw.rs` (the whole file and
//! its cross-field validation), `listeners.rs` (`[listeners]`), `limits.rs` (`[limits]`),
//! `database.rs` (`[[databases]]`, `[[roles]]`, `[[users]]`), with the rules one database must
//! keep in `rules.rs` (shared with the admin socket) and value parsers (durations, file modes)
//! in `de.rs`.

mod database;
mod de;
mod fuzz;
mod limits;
mod listeners;
mod managed;
mod metrics;
mod raw;
mod rules;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use crate::aws::imds::settings::{
    ImdsConfig, ImdsEndpointMode, DEFAULT_IMDS_TIMEOUT, DEFAULT_IMDS_TOKEN_TTL,
};
pub use crate::aws::token::IamService;
pub use database::{
    AuthConfig, DatabaseConfig, PasswordSource, RelayMode, RoleConfig, UpstreamAddr, UpstreamTls,
    UserConfig, ONE_PASSWORD_SOURCE,
};
pub use fuzz::fuzz_config;
pub use limits::{
    Limits, DEFAULT_DRAIN_TIMEOUT, DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_MAX_CERT_TTL,
    DEFAULT_MAX_HANDSHAKES, DEFAULT_MAX_HANDSHAKES_PER_SOURCE, DEFAULT_MAX_HANDSHAKE_BYTES,
    DEFAULT_MAX_SESSIONS, DEFAULT_REUSE_CONNECTIONS, DEFAULT_UPSTREAM_CONNECT_TIMEOUT,
    DEFAULT_WARM_CONNECTIONS, DEFAULT_WARM_IDLE, MAX_REUSE_CONNECTIONS, MAX_WARM_CONNECTIONS,
};
use listeners::Listeners;
pub use listeners::{TcpRouting, UnixListenerConfig};
pub use managed::{
    ManagedAuthConfig, SelfHostedEngine, ADMIN_PASSWORD_FILE, DEFAULT_ROTATION_INTERVAL,
    DEFAULT_SECRET_GRACE_PERIOD, DEFAULT_SECRET_PREFIX,
};
pub use metrics::MetricsConfig;
pub use rules::{is_password_env, DatabaseRuleError, PASSWORD_ENV_PREFIX};

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

/// The whole boot configuration, validated, by lifetime.
#[derive(Debug, Clone)]
pub struct Config {
    pub boot: Boot,
    pub live: Live,
    pub seed: Seed,
}

/// Settings fixed at start: a reload names each one that changed and keeps running with it.
#[derive(Debug, Clone, PartialEq)]
pub struct Boot {
    /// Where the on-box CA, issued certificates and the store live.
    pub state_dir: PathBuf,
    /// The only directory (besides systemd's `$CREDENTIALS_DIRECTORY`) a database's
    /// `password_file` may be in: directly, owned by root or the bastion user, mode 0600/0400.
    pub secrets_dir: PathBuf,
    pub admin: AdminConfig,
    /// `[aws.imds]`: the credential chain and region lookup are built once with it.
    pub imds: ImdsConfig,
    /// `listeners.tcp[i].address`: the TLS sockets, in file order (each one's routing is
    /// [`Live::tcp`]`[i]`).
    pub tcp: Vec<SocketAddr>,
    /// `[listeners.unix]`: the directory of `<db>.sock` sockets and their mode.
    pub unix: Option<UnixListenerConfig>,
    /// `[metrics]`: the Prometheus endpoint (off by default).
    pub metrics: MetricsConfig,
}

/// Settings a reload swaps in for new connections and sessions.
#[derive(Debug, Clone, PartialEq)]
pub struct Live {
    pub limits: Limits,
    /// Each TLS listener's routing and certificate names, in the order of [`Boot::tcp`].
    pub tcp: Vec<TcpRouting>,
}

/// `[[databases]]`, `[[roles]]`, `[[users]]`: what the store is seeded with on its first start,
/// as declared (each database keeps the rules of [`DatabaseConfig::check`]; the catalog's typed
/// form is [`crate::catalog::Database`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Seed {
    pub databases: Vec<DatabaseConfig>,
    pub roles: Vec<RoleConfig>,
    pub users: Vec<UserConfig>,
}

/// `secrets_dir` when the config names none.
pub const DEFAULT_SECRETS_DIR: &str = "/etc/bastion/secrets";

pub(super) fn default_secrets_dir() -> PathBuf {
    PathBuf::from(DEFAULT_SECRETS_DIR)
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

impl Boot {
    /// Where the admin socket is.
    pub fn admin_socket(&self) -> PathBuf {
        self.admin
            .socket
            .clone()
            .unwrap_or_else(|| self.state_dir.join("run").join("admin.sock"))
    }
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
        let raw: raw::RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_path_buf(),
            message: e.to_string(),
        })?;
        raw.into_config()
    }

    /// Each TLS listener: its configured address (boot) and its routing (live).
    pub fn tcp_listeners(&self) -> impl Iterator<Item = (SocketAddr, &TcpRouting)> {
        self.boot.tcp.iter().copied().zip(&self.live.tcp)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
auth = { mode = "password", password_env = "BASTION_REDIS_PW" }
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
        assert_eq!(c.live.limits.handshake_timeout, Duration::from_secs(3));
        assert_eq!(c.boot.unix.as_ref().unwrap().mode, 0o660);
        assert_eq!(c.seed.databases[0].address.port, 6379);
        assert!(matches!(
            c.seed.databases[0].auth,
            AuthConfig::Iam {
                serverless: false,
                ..
            }
        ));
        assert_eq!(c.seed.users[0].roles, vec!["ops"]);
    }

    #[test]
    fn role_command_policy_is_optional_and_each_bad_rule_is_named() {
        let c = Config::parse(SAMPLE, Path::new("t.toml")).unwrap();
        assert_eq!(c.seed.roles[0].policy(), Ok(None));
        let with = |extra: &str| {
            let text = SAMPLE.replace(
                "db_names = [\"*\"]",
                &format!("db_names = [\"*\"]\n{extra}"),
            );
            Config::parse(&text, Path::new("t.toml"))
        };
        let c = with("commands = \"+@read -@dangerous\"\nkeys = \"~app:* %R~shared:*\"").unwrap();
        let policy = c.seed.roles[0].policy().unwrap().expect("a policy");
        assert!(policy.check(b"GET", &[b"app:1"]).is_ok());
        assert!(policy.check(b"SET", &[&b"app:1"[..], b"v"]).is_err());
        assert!(policy.check(b"GET", &[b"other"]).is_err());
        for (extra, key, says) in [
            (
                "commands = \"+@read -flushal\"",
                "roles[0].commands",
                "'-flushal'",
            ),
            ("commands = \"+@reads\"", "roles[0].commands", "'+@reads'"),
            (
                "commands = \"+get ~app:*\"",
                "roles[0].commands",
                "'~app:*'",
            ),
            ("keys = \"~app:* +get\"", "roles[0].keys", "'+get'"),
            ("keys = \"%X~app:*\"", "roles[0].keys", "'%X~app:*'"),
            ("keys = \"\"", "roles[0].keys", "'resetkeys'"),
            (
                "commands = \"+get\\n-set\"",
                "roles[0].commands",
                "control character",
            ),
        ] {
            let e = with(extra).unwrap_err().to_string();
            assert!(e.contains(key) && e.contains(says), "{extra}: {e}");
        }
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

        // A password table with neither source, or both, is not a password source at all:
        // refused as the file is parsed, at its line, naming the keys.
        for source in [
            "",
            ", password_env = \"BASTION_X\", password_file = \"/etc/bastion/secrets/x\"",
        ] {
            let bad = SAMPLE.replace(", password_env = \"BASTION_REDIS_PW\"", source);
            let e = Config::parse(&bad, Path::new("t.toml"))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("line 19") && e.contains(ONE_PASSWORD_SOURCE),
                "{e}"
            );
        }

        let bad = SAMPLE.replace("name = \"local\"", "name = \"../x\"");
        let e = Config::parse(&bad, Path::new("t.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("databases[1].name"), "{e}");
    }

    #[test]
    fn warm_connection_limits_are_bounded_naming_the_key() {
        let config = Config::parse(SAMPLE, Path::new("t.toml")).expect("sample");
        assert_eq!(
            config.live.limits.warm_connections,
            DEFAULT_WARM_CONNECTIONS
        );
        for (limits, key) in [
            ("warm_idle = \"500ms\"", "limits.warm_idle"),
            ("warm_connections = 65", "limits.warm_connections"),
            ("reuse_connections = 1025", "limits.reuse_connections"),
        ] {
            let text = SAMPLE.replace("[limits]\n", &format!("[limits]\n{limits}\n"));
            let e = Config::parse(&text, Path::new("t.toml"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(key), "{limits}: {e}");
        }
        let text = SAMPLE.replace(
            "[limits]\n",
            "[limits]\nwarm_connections = 0\nwarm_idle = \"5m\"\n",
        );
        let limits = Config::parse(&text, Path::new("t.toml"))
            .expect("off")
            .live
            .limits;
        assert_eq!(
            (limits.warm_connections, limits.warm_idle.as_secs()),
            (0, 300)
        );
    }

    #[test]
    fn password_sources_are_refused_where_they_could_point_anywhere() {
        let with = |source: &str| {
            let text = SAMPLE.replace("password_env = \"BASTION_REDIS_PW\"", source);
            Config::parse(&text, Path::new("t.toml")).map_err(|e| e.to_string())
        };
        let c = with("password_file = \"/etc/bastion/secrets/redis\"").unwrap();
        assert_eq!(c.boot.secrets_dir, Path::new(DEFAULT_SECRETS_DIR));
        for (source, key) in [
            ("password_env = \"HOME\"", "databases[1].auth.password_env"),
            (
                "password_env = \"AWS_SECRET_ACCESS_KEY\"",
                "databases[1].auth.password_env",
            ),
            (
                "password_file = \"redis.pw\"",
                "databases[1].auth.password_file",
            ),
            (
                "password_file = \"/etc/bastion/secrets/../../../var/lib/bastion/ca/ca.key\"",
                "databases[1].auth.password_file",
            ),
        ] {
            let e = with(source).unwrap_err();
            assert!(e.contains(key), "{source}: {e}");
        }
        let e = Config::parse(
            &format!("secrets_dir = \"secrets\"\n{SAMPLE}"),
            Path::new("t.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("secrets_dir: must be an absolute path"), "{e}");
    }

    #[test]
    fn imds_section_is_optional_and_typed() {
        let c = Config::parse(SAMPLE, Path::new("t.toml")).unwrap();
        assert_eq!(c.boot.imds.token_ttl, DEFAULT_IMDS_TOKEN_TTL);
        assert_eq!(c.boot.imds.read_timeout, DEFAULT_IMDS_TIMEOUT);
        assert!(!c.boot.imds.allow_v1_fallback);

        let with = format!(
            "{SAMPLE}\n[aws.imds]\nendpoint_mode = \"IPv6\"\ntoken_ttl = \"1h\"\n\
             allow_v1_fallback = true\nread_timeout = \"250ms\"\n"
        );
        let c = Config::parse(&with, Path::new("t.toml")).unwrap();
        assert_eq!(c.boot.imds.endpoint_mode, Some(ImdsEndpointMode::Ipv6));
        assert_eq!(c.boot.imds.token_ttl, Duration::from_secs(3600));
        assert_eq!(c.boot.imds.read_timeout, Duration::from_millis(250));
        assert_eq!(c.boot.imds.connect_timeout, DEFAULT_IMDS_TIMEOUT);
        assert!(c.boot.imds.allow_v1_fallback);

        let bad = format!("{SAMPLE}\n[aws.imds]\ntoken_ttl = \"7h\"\n");
        let e = Config::parse(&bad, Path::new("t.toml")).unwrap_err();
        assert!(e.to_string().contains("aws.imds.token_ttl"), "{e}");
    }

    #[test]
    fn assume_role_is_optional_validated_and_named() {
        let c = Config::parse(SAMPLE, Path::new("t.toml")).unwrap();
        assert!(c.seed.databases[0].assume_role_arn.is_none());

        let with = |extra: &str| {
            SAMPLE.replace("target = \"rg\" }", &format!("target = \"rg\" }}\n{extra}"))
        };
        let c = Config::parse(
            &with("assume_role_arn = \"arn:aws:iam::111122223333:role/team/cache-connect\"\nexternal_id = \"ext-1\""),
            Path::new("t.toml"),
        )
        .unwrap();
        // The ready RoleSpec (default session name, the database's region) is the catalog's:
        // see `catalog::database`'s tests.
        let db = &c.seed.databases[0];
        assert_eq!(
            db.assume_role_arn.as_deref(),
            Some("arn:aws:iam::111122223333:role/team/cache-connect")
        );
        assert_eq!(db.external_id.as_deref(), Some("ext-1"));

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
            "password_env = \"BASTION_REDIS_PW\" }",
            "password_env = \"BASTION_REDIS_PW\" }\nassume_role_arn = \"arn:aws:iam::111122223333:role/r\"",
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
            "password_env = \"BASTION_REDIS_PW\" }",
            "password_env = \"BASTION_REDIS_PW\" }\ndefault_db_user = \"app-*\"",
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
        let mut db = c.seed.databases[1].clone();
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
        assert!(c.seed.databases[0].allow_plaintext_auth && c.seed.databases[0].tls.is_none());
        // The admin path (db add, import) runs the same rule on the typed database.
        let mut db = c.seed.databases[0].clone();
        db.allow_plaintext_auth = false;
        assert_eq!(db.check().unwrap_err().field, "tls");

        let on_password = SAMPLE.replace(
            "password_env = \"BASTION_REDIS_PW\" }",
            "password_env = \"BASTION_REDIS_PW\" }\nallow_plaintext_auth = true",
        );
        let e = parse(&on_password).unwrap_err().to_string();
        assert!(e.contains("databases[1].allow_plaintext_auth"), "{e}");
    }

    #[test]
    fn legacy_auth_belongs_to_password_databases_without_db_users() {
        let parse = |text: &str| Config::parse(text, Path::new("t.toml"));
        let legacy = SAMPLE.replace(
            "password_env = \"BASTION_REDIS_PW\" }",
            "password_env = \"BASTION_REDIS_PW\" }\nlegacy_auth = true",
        );
        assert!(parse(&legacy).unwrap().seed.databases[1].legacy_auth);
        assert!(!parse(SAMPLE).unwrap().seed.databases[1].legacy_auth);
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
