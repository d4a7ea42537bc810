//! Between the boot config's types, the store's records and the catalog.
//!
//! Config → record is `TryFrom` (a value over a bound or with the wrong characters is refused
//! with the field named); record → config is `From` (a record is always representable; `bastion
//! export` and the listings). A database record is a [`Declaration`]: the catalog builds its
//! [`crate::catalog::Database`] straight from it, through the same constructor as the config's
//! `[[databases]]`. With [`State::catalog_inputs`] the store feeds
//! [`crate::catalog::Catalog::build`].

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use super::error::RecordError;
use super::records::*;
use super::state::State;
use crate::catalog::{Declaration, DeclaredRole};
use crate::config::{
    AuthConfig, DatabaseConfig, IamService, ManagedAuthConfig, PasswordSource, RelayMode,
    RoleConfig, SelfHostedEngine, UpstreamAddr, UpstreamTls, UserConfig,
};

impl State {
    /// The databases (records, each a [`Declaration`]), roles and users the catalog is built
    /// from.
    pub fn catalog_inputs(
        &self,
    ) -> (
        impl Iterator<Item = &DatabaseRecord>,
        Vec<RoleConfig>,
        Vec<UserConfig>,
    ) {
        (
            self.databases(),
            self.roles().map(RoleConfig::from).collect(),
            self.users().map(UserConfig::from).collect(),
        )
    }
}

/// The store's record of a certificate the on-box CA just issued to `user`.
pub fn cert_record(
    user: &str,
    issued: &crate::identity::ca::IssuedCert,
) -> Result<CertRecord, RecordError> {
    let seconds = |t: std::time::SystemTime| match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    };
    Ok(CertRecord {
        serial: serial_from_hex("certificate.serial", &issued.serial)?,
        user: name("certificate.user", user)?,
        not_before: seconds(issued.not_before),
        not_after: seconds(issued.not_after),
        revoked_at: None,
    })
}

impl TryFrom<&DatabaseConfig> for DatabaseRecord {
    type Error = RecordError;
    fn try_from(c: &DatabaseConfig) -> Result<Self, RecordError> {
        let name = name("database.name", &c.name)?;
        let at = |f: &str| format!("databases.{name}.{f}");
        let assume_role = match &c.assume_role_arn {
            None => None,
            Some(arn) => Some(AssumeRoleRecord {
                role_arn: text(&at("assume_role_arn"), "MAX_ARN_LEN", Charset::Token, arn)?,
                external_id: c
                    .external_id
                    .as_deref()
                    .map(|e| text(&at("external_id"), "MAX_EXTERNAL_ID_LEN", Charset::Token, e))
                    .transpose()?,
                session_name: c
                    .session_name
                    .as_deref()
                    .map(|n| {
                        text(
                            &at("session_name"),
                            "MAX_SESSION_NAME_LEN",
                            Charset::Token,
                            n,
                        )
                    })
                    .transpose()?,
            }),
        };
        let tls = match &c.tls {
            None => None,
            Some(t) => Some(TlsRecord {
                ca_file: t
                    .ca_file
                    .as_deref()
                    .map(|p| path(&at("tls.ca_file"), p))
                    .transpose()?,
                server_name: t
                    .server_name
                    .as_deref()
                    .map(|s| text(&at("tls.server_name"), "MAX_HOST_LEN", Charset::Token, s))
                    .transpose()?,
            }),
        };
        let auth = match &c.auth {
            AuthConfig::Iam {
                service,
                region,
                target,
                serverless,
            } => AuthRecord::Iam {
                service: (*service).into(),
                region: region
                    .as_deref()
                    .map(|r| text(&at("auth.region"), "MAX_REGION_LEN", Charset::Token, r))
                    .transpose()?,
                target: text(&at("auth.target"), "MAX_TARGET_LEN", Charset::Token, target)?,
                serverless: *serverless,
            },
            AuthConfig::Password(PasswordSource::File(p)) => AuthRecord::Password {
                password_file: Some(path(&at("auth.password_file"), p)?),
                password_env: None,
            },
            AuthConfig::Password(PasswordSource::Env(e)) => AuthRecord::Password {
                password_file: None,
                password_env: Some(text(
                    &at("auth.password_env"),
                    "MAX_ENV_NAME_LEN",
                    Charset::EnvName,
                    e,
                )?),
            },
            AuthConfig::None => AuthRecord::None,
            AuthConfig::Managed(table) => {
                AuthRecord::Managed(managed_record(table, &c.managed_users, &at)?)
            }
        };
        let record = DatabaseRecord {
            host: text(
                &at("address"),
                "MAX_HOST_LEN",
                Charset::Token,
                &c.address.host,
            )?,
            port: c.address.port,
            tls,
            auth,
            default_db_user: c
                .default_db_user
                .as_deref()
                .map(|u| pattern(&at("default_db_user"), u))
                .transpose()?,
            assume_role,
            allow_plaintext_auth: c.allow_plaintext_auth,
            legacy_auth: c.legacy_auth,
            relay: match c.relay {
                RelayMode::Guard => RelayRecord::Guard,
                RelayMode::Passthrough => RelayRecord::Passthrough,
                RelayMode::Inspect => RelayRecord::Inspect,
            },
            allow_addresses: list(
                &at("allow_addresses"),
                "MAX_ALLOW_ADDRESSES",
                c.allow_addresses
                    .iter()
                    .map(|n| Ok((n.network(), n.prefix_len()))),
            )?,
            name,
        };
        record.validate()?;
        Ok(record)
    }
}

/// A managed database's `auth` table and `managed_users` as the record keeps them; `at` names a
/// field of the database.
pub(super) fn managed_record(
    table: &ManagedAuthConfig,
    users: &[String],
    at: &dyn Fn(&str) -> String,
) -> Result<ManagedAuthRecord, RecordError> {
    fn token<const N: usize>(
        field: String,
        value: &Option<String>,
        bound: &'static str,
    ) -> Result<Option<heapless::String<N>>, RecordError> {
        value
            .as_deref()
            .map(|v| text(&field, bound, Charset::Token, v))
            .transpose()
    }
    let millis = |d: Option<std::time::Duration>| d.map(|d| d.as_millis() as u64);
    Ok(ManagedAuthRecord {
        service: table.service.map(Into::into),
        engine: table.engine.map(|e| match e {
            SelfHostedEngine::Redis => EngineRecord::Redis,
            SelfHostedEngine::Valkey => EngineRecord::Valkey,
        }),
        region: token(at("auth.region"), &table.region, "MAX_REGION_LEN")?,
        target: token(at("auth.target"), &table.target, "MAX_TARGET_LEN")?,
        serverless: table.serverless,
        admin_user: table
            .admin_user
            .as_deref()
            .map(|u| pattern(&at("auth.admin_user"), u))
            .transpose()?,
        admin_password_file: table
            .admin_password_file
            .as_deref()
            .map(|p| path(&at("auth.admin_password_file"), p))
            .transpose()?,
        secret_prefix: token(
            at("auth.secret_prefix"),
            &table.secret_prefix,
            "MAX_SECRET_PREFIX_LEN",
        )?,
        kms_key_id: token(at("auth.kms_key_id"), &table.kms_key_id, "MAX_ARN_LEN")?,
        rotation_interval_ms: millis(table.rotation_interval),
        secret_grace_period_ms: millis(table.secret_grace_period),
        managed_users: list(
            &at("managed_users"),
            "MAX_MANAGED_USERS_PER_DB",
            users.iter().map(|u| pattern(&at("managed_users"), u)),
        )?,
    })
}

/// The `auth` table and `managed_users` a record's managed settings declare.
pub fn managed_config(m: &ManagedAuthRecord) -> (ManagedAuthConfig, Vec<String>) {
    let string = |s: &Option<_>| s.as_ref().map(|s: &heapless::String<_>| s.to_string());
    let duration = |ms: Option<u64>| ms.map(std::time::Duration::from_millis);
    (
        ManagedAuthConfig {
            service: m.service.map(Into::into),
            engine: m.engine.map(|e| match e {
                EngineRecord::Redis => SelfHostedEngine::Redis,
                EngineRecord::Valkey => SelfHostedEngine::Valkey,
            }),
            region: m.region.as_deref().map(str::to_string),
            target: m.target.as_deref().map(str::to_string),
            serverless: m.serverless,
            admin_user: m.admin_user.as_deref().map(str::to_string),
            admin_password_file: m.admin_password_file.as_deref().map(PathBuf::from),
            secret_prefix: string(&m.secret_prefix),
            kms_key_id: m.kms_key_id.as_deref().map(str::to_string),
            rotation_interval: duration(m.rotation_interval_ms),
            secret_grace_period: duration(m.secret_grace_period_ms),
        },
        m.managed_users.iter().map(|u| u.to_string()).collect(),
    )
}

impl Declaration for DatabaseRecord {
    fn name(&self) -> &str {
        &self.name
    }
    fn address(&self) -> UpstreamAddr {
        UpstreamAddr {
            host: self.host.to_string(),
            port: self.port,
        }
    }
    fn tls(&self) -> Option<UpstreamTls> {
        self.tls.as_ref().map(|t| UpstreamTls {
            ca_file: t.ca_file.as_deref().map(PathBuf::from),
            server_name: t.server_name.as_deref().map(str::to_string),
        })
    }
    fn auth(&self) -> Cow<'_, AuthConfig> {
        Cow::Owned(match &self.auth {
            AuthRecord::Iam {
                service,
                region,
                target,
                serverless,
            } => AuthConfig::Iam {
                service: (*service).into(),
                region: region.as_deref().map(str::to_string),
                target: target.to_string(),
                serverless: *serverless,
            },
            AuthRecord::Password {
                password_file,
                password_env,
            } => AuthConfig::Password(match (password_file, password_env) {
                (Some(path), _) => PasswordSource::File(PathBuf::from(path.as_str())),
                // The store refuses a record with neither source (`records.rs`); an empty
                // name would only be refused again where the password is read.
                (None, env) => {
                    PasswordSource::Env(env.as_deref().map(str::to_string).unwrap_or_default())
                }
            }),
            AuthRecord::None => AuthConfig::None,
            AuthRecord::Managed(m) => AuthConfig::Managed(managed_config(m).0),
        })
    }
    fn managed_users(&self) -> Cow<'_, [String]> {
        Cow::Owned(match &self.auth {
            AuthRecord::Managed(m) => managed_config(m).1,
            _ => Vec::new(),
        })
    }
    fn default_db_user(&self) -> Option<&str> {
        self.default_db_user.as_deref()
    }
    fn assume_role(&self) -> Option<DeclaredRole<'_>> {
        self.assume_role.as_ref().map(|a| DeclaredRole {
            arn: &a.role_arn,
            external_id: a.external_id.as_deref(),
            session_name: a.session_name.as_deref(),
        })
    }
    fn allow_plaintext_auth(&self) -> bool {
        self.allow_plaintext_auth
    }
    fn legacy_auth(&self) -> bool {
        self.legacy_auth
    }
    fn relay(&self) -> RelayMode {
        match self.relay {
            RelayRecord::Guard => RelayMode::Guard,
            RelayRecord::Passthrough => RelayMode::Passthrough,
            RelayRecord::Inspect => RelayMode::Inspect,
        }
    }
    fn allow_addresses(&self) -> Vec<ipnet::IpNet> {
        self.allow_addresses
            .iter()
            .filter_map(|(ip, len)| ipnet::IpNet::new(*ip, *len).ok())
            .collect()
    }
}

/// The file's shape of a record (`bastion export`, `db ls|show`, the admin socket's rule check),
/// from the same fields the catalog reads.
impl From<&DatabaseRecord> for DatabaseConfig {
    fn from(r: &DatabaseRecord) -> Self {
        let role = r.assume_role();
        DatabaseConfig {
            name: r.name().to_string(),
            address: r.address(),
            tls: r.tls(),
            auth: r.auth().into_owned(),
            default_db_user: r.default_db_user().map(str::to_string),
            assume_role_arn: role.map(|a| a.arn.to_string()),
            external_id: role.and_then(|a| a.external_id.map(str::to_string)),
            session_name: role.and_then(|a| a.session_name.map(str::to_string)),
            allow_plaintext_auth: r.allow_plaintext_auth(),
            legacy_auth: r.legacy_auth(),
            relay: r.relay(),
            allow_addresses: r.allow_addresses(),
            managed_users: r.managed_users().into_owned(),
        }
    }
}

impl From<IamService> for IamServiceRecord {
    fn from(s: IamService) -> Self {
        match s {
            IamService::Elasticache => IamServiceRecord::Elasticache,
            IamService::Memorydb => IamServiceRecord::Memorydb,
        }
    }
}

impl From<IamServiceRecord> for IamService {
    fn from(s: IamServiceRecord) -> Self {
        match s {
            IamServiceRecord::Elasticache => IamService::Elasticache,
            IamServiceRecord::Memorydb => IamService::Memorydb,
        }
    }
}

impl TryFrom<&RoleConfig> for RoleRecord {
    type Error = RecordError;
    fn try_from(c: &RoleConfig) -> Result<Self, RecordError> {
        let name = name("role.name", &c.name)?;
        let db_users = format!("roles.{name}.db_users");
        let db_names = format!("roles.{name}.db_names");
        check_rules(c)?;
        let rules = |setting: &str, value: &Option<String>| {
            value
                .as_deref()
                .map(|r| {
                    text(
                        &format!("roles.{name}.{setting}"),
                        "MAX_RULES_LEN",
                        Charset::Path,
                        r,
                    )
                })
                .transpose()
        };
        Ok(RoleRecord {
            commands: rules("commands", &c.commands)?,
            keys: rules("keys", &c.keys)?,
            db_users: list(
                &db_users,
                "MAX_DB_USERS_PER_ROLE",
                c.db_users.iter().map(|p| pattern(&db_users, p)),
            )?,
            db_names: list(
                &db_names,
                "MAX_DB_NAMES_PER_ROLE",
                c.db_names.iter().map(|p| pattern(&db_names, p)),
            )?,
            name,
        })
    }
}

impl From<&RoleRecord> for RoleConfig {
    fn from(r: &RoleRecord) -> Self {
        RoleConfig {
            name: r.name.to_string(),
            db_users: r.db_users.iter().map(|p| p.to_string()).collect(),
            db_names: r.db_names.iter().map(|p| p.to_string()).collect(),
            commands: r.commands.as_deref().map(str::to_string),
            keys: r.keys.as_deref().map(str::to_string),
        }
    }
}

impl TryFrom<&UserConfig> for UserRecord {
    type Error = RecordError;
    fn try_from(c: &UserConfig) -> Result<Self, RecordError> {
        let name = name("user.name", &c.name)?;
        let roles = format!("users.{name}.roles");
        Ok(UserRecord {
            roles: list(
                &roles,
                "MAX_ROLES_PER_USER",
                c.roles.iter().map(|r| super::records::name(&roles, r)),
            )?,
            unix_user: c
                .unix_user
                .as_deref()
                .map(|u| {
                    text(
                        &format!("users.{name}.unix_user"),
                        "MAX_UNIX_USER_LEN",
                        Charset::Token,
                        u,
                    )
                })
                .transpose()?,
            name,
        })
    }
}

impl From<&UserRecord> for UserConfig {
    fn from(r: &UserRecord) -> Self {
        UserConfig {
            name: r.name.to_string(),
            roles: r.roles.iter().map(|r| r.to_string()).collect(),
            unix_user: r.unix_user.as_deref().map(str::to_string),
        }
    }
}

fn path(field: &str, p: &Path) -> Result<PathText, RecordError> {
    let s = p.to_str().ok_or_else(|| RecordError::NotUtf8 {
        field: field.to_string(),
    })?;
    text(field, "MAX_PATH_LEN", Charset::Path, s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const CONFIG: &str = r#"
state_dir = "/var/lib/bastion"
[listeners.unix]
directory = "/run/bastion/db"
[[databases]]
name = "cache"
address = "master.rg.abc.use1.cache.amazonaws.com:6379"
tls = { ca_file = "/etc/ssl/aws.pem", server_name = "rg.example" }
auth = { mode = "iam", service = "elasticache", region = "us-east-1", target = "rg", serverless = true }
default_db_user = "app-ro"
[[databases]]
name = "mem"
address = "[fd00::1]:6379"
tls = {}
auth = { mode = "iam", service = "memorydb", region = "eu-west-1", target = "cl" }
[[databases]]
name = "pwfile"
address = "10.0.0.1:6379"
auth = { mode = "password", password_file = "/etc/bastion/pw" }
[[databases]]
name = "pwenv"
address = "10.0.0.2:6379"
auth = { mode = "password", password_env = "BASTION_REDIS_PW" }
legacy_auth = true
[[databases]]
name = "rig"
address = "127.0.0.1:6380"
auth = { mode = "iam", service = "elasticache", target = "rg" }
allow_plaintext_auth = true
[[databases]]
name = "local"
address = "127.0.0.1:6379"
auth = { mode = "none" }
[[databases]]
name = "owned"
address = "10.0.0.3:6379"
auth = { mode = "managed", engine = "valkey", admin_user = "adm", admin_password_file = "/etc/bastion/adm.pw", secret_prefix = "corp/bastion", rotation_interval = "5m", kms_key_id = "alias/k" }
managed_users = ["app", "reporting"]
[[databases]]
name = "ownedmem"
address = "10.0.0.4:6379"
tls = {}
auth = { mode = "managed", service = "memorydb", region = "eu-west-1", target = "cl" }
[[roles]]
name = "ops"
db_users = ["app-*", "admin"]
db_names = ["*"]
commands = "+@read +@write -@dangerous -flushall"
keys = "~app:* %R~shared:*"
[[roles]]
name = "empty"
[[users]]
name = "alice"
roles = ["ops", "empty"]
unix_user = "alice"
[[users]]
name = "bob"
"#;

    /// Configs have no PartialEq; compare their Debug forms, which show every field.
    fn same<T: std::fmt::Debug>(a: &[T], b: &[T]) {
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
    }

    #[test]
    fn every_config_type_and_auth_mode_round_trips() {
        let c = Config::parse(CONFIG, Path::new("t.toml")).unwrap();
        let dbs: Vec<DatabaseRecord> = c
            .seed
            .databases
            .iter()
            .map(|d| d.try_into().unwrap())
            .collect();
        let back: Vec<DatabaseConfig> = dbs.iter().map(DatabaseConfig::from).collect();
        same(&c.seed.databases, &back);
        let roles: Vec<RoleRecord> = c.seed.roles.iter().map(|r| r.try_into().unwrap()).collect();
        same(
            &c.seed.roles,
            &roles.iter().map(RoleConfig::from).collect::<Vec<_>>(),
        );
        let users: Vec<UserRecord> = c.seed.users.iter().map(|u| u.try_into().unwrap()).collect();
        same(
            &c.seed.users,
            &users.iter().map(UserConfig::from).collect::<Vec<_>>(),
        );
    }

    /// A role record with a bad rule is refused wherever it comes from (the CLI builds
    /// records with `TryFrom`; the admin socket validates decoded records), naming the rule.
    #[test]
    fn role_rules_are_checked_on_the_way_in() {
        use crate::store::records::Validate;
        let c = Config::parse(CONFIG, Path::new("t.toml")).unwrap();
        let mut role = c.seed.roles[0].clone();
        role.commands = Some("+@read -flushal".into());
        let e = RoleRecord::try_from(&role).unwrap_err().to_string();
        assert!(
            e.contains("roles.ops.commands") && e.contains("'-flushal'"),
            "{e}"
        );
        role.commands = Some("+get\n-set".into());
        assert!(RoleRecord::try_from(&role).is_err());
        role.commands = Some("+get ".repeat(300));
        let e = RoleRecord::try_from(&role).unwrap_err().to_string();
        assert!(e.contains("roles.ops.commands"), "{e}");

        let mut record = RoleRecord::try_from(&c.seed.roles[0]).unwrap();
        assert!(record.validate().is_ok());
        record.keys = Some(heapless::String::try_from("~app:* +get").unwrap());
        let e = record.validate().unwrap_err().to_string();
        assert!(e.contains("roles.ops.keys") && e.contains("'+get'"), "{e}");
    }

    #[test]
    fn state_feeds_the_catalog() {
        let c = Config::parse(CONFIG, Path::new("t.toml")).unwrap();
        let mut state = State::default();
        for d in &c.seed.databases {
            state
                .apply(&Mutation::PutDatabase(d.try_into().unwrap()))
                .unwrap();
        }
        for r in &c.seed.roles {
            state
                .apply(&Mutation::PutRole(r.try_into().unwrap()))
                .unwrap();
        }
        // The catalog resolves unix users on this machine; bind none here.
        for u in &c.seed.users {
            let mut u: UserRecord = u.try_into().unwrap();
            u.unix_user = None;
            state.apply(&Mutation::PutUser(u)).unwrap();
        }
        let (dbs, roles, users) = state.catalog_inputs();
        let catalog =
            crate::catalog::Catalog::build(dbs, &roles, &users, &Default::default(), None).unwrap();
        assert_eq!(
            (catalog.databases().count(), roles.len(), users.len()),
            (8, 2, 2)
        );
    }

    #[test]
    fn a_record_and_its_toml_make_the_same_database() {
        use crate::catalog::{Database, SecretDirs};
        let dirs = SecretDirs::default();
        let c = Config::parse(CONFIG, Path::new("t.toml")).unwrap();
        for declared in &c.seed.databases {
            let record = DatabaseRecord::try_from(declared).unwrap();
            assert_eq!(
                Database::from_declared(&record, &dirs, None),
                Database::from_declared(declared, &dirs, None),
                "{}",
                declared.name
            );
        }

        // A record written field by field (as an older store or `db add` left it), against the
        // TOML that says the same: an assumed role with its defaults, the guard, a range.
        let toml = r#"
state_dir = "/var/lib/bastion"
[listeners.unix]
directory = "/run/bastion/db"
[[databases]]
name = "cache"
address = "10.1.2.3:6379"
tls = { server_name = "rg.example" }
auth = { mode = "iam", service = "memorydb", region = "eu-west-1", target = "cl" }
assume_role_arn = "arn:aws:iam::111122223333:role/r"
external_id = "ext-1"
allow_addresses = ["169.254.10.0/24"]
"#;
        let declared = &Config::parse(toml, Path::new("t.toml"))
            .unwrap()
            .seed
            .databases[0];
        fn s<const N: usize>(v: &str) -> heapless::String<N> {
            v.try_into().expect("within the bound")
        }
        let record = DatabaseRecord {
            name: s("cache"),
            host: s("10.1.2.3"),
            port: 6379,
            tls: Some(TlsRecord {
                ca_file: None,
                server_name: Some(s("rg.example")),
            }),
            auth: AuthRecord::Iam {
                service: IamServiceRecord::Memorydb,
                region: Some(s("eu-west-1")),
                target: s("cl"),
                serverless: false,
            },
            default_db_user: None,
            assume_role: Some(AssumeRoleRecord {
                role_arn: s("arn:aws:iam::111122223333:role/r"),
                external_id: Some(s("ext-1")),
                session_name: None,
            }),
            allow_plaintext_auth: false,
            legacy_auth: false,
            relay: RelayRecord::Guard,
            allow_addresses: [("169.254.10.0".parse().unwrap(), 24)]
                .into_iter()
                .collect(),
        };
        let from_record = Database::from_declared(&record, &dirs, None);
        assert_eq!(from_record, Database::from_declared(declared, &dirs, None));
        let role = from_record.assume_role.unwrap();
        assert_eq!(
            (role.session_name.as_str(), role.region.as_deref()),
            (
                crate::aws::assume_role::DEFAULT_SESSION_NAME,
                Some("eu-west-1")
            )
        );
    }

    #[test]
    fn conversion_refuses_over_bounds_naming_bound_and_field() {
        let c = Config::parse(CONFIG, Path::new("t.toml")).unwrap();
        let mut user = c.seed.users[0].clone();
        user.roles = (0..=MAX_ROLES_PER_USER).map(|i| format!("r{i}")).collect();
        let e = UserRecord::try_from(&user).unwrap_err().to_string();
        assert!(
            e.contains("users.alice.roles") && e.contains("MAX_ROLES_PER_USER"),
            "{e}"
        );

        let mut role = c.seed.roles[0].clone();
        role.db_names = vec!["x".into(); MAX_DB_NAMES_PER_ROLE + 1];
        let e = RoleRecord::try_from(&role).unwrap_err().to_string();
        assert!(
            e.contains("roles.ops.db_names") && e.contains("MAX_DB_NAMES_PER_ROLE"),
            "{e}"
        );

        let mut db = c.seed.databases[2].clone();
        db.auth = AuthConfig::Password(PasswordSource::File(PathBuf::from(
            "/".repeat(MAX_PATH_LEN + 1),
        )));
        let e = DatabaseRecord::try_from(&db).unwrap_err().to_string();
        assert!(
            e.contains("databases.pwfile.auth.password_file") && e.contains("MAX_PATH_LEN"),
            "{e}"
        );

        let mut db = c.seed.databases[0].clone();
        db.name = "n".repeat(MAX_NAME_LEN + 1);
        let e = DatabaseRecord::try_from(&db).unwrap_err().to_string();
        assert!(
            e.contains("database.name") && e.contains("MAX_NAME_LEN"),
            "{e}"
        );

        let mut db = c.seed.databases[0].clone();
        db.address.host = "h".repeat(MAX_HOST_LEN + 1);
        let e = DatabaseRecord::try_from(&db).unwrap_err().to_string();
        assert!(
            e.contains("databases.cache.address") && e.contains("MAX_HOST_LEN"),
            "{e}"
        );

        let mut user = c.seed.users[0].clone();
        user.unix_user = Some("u".repeat(MAX_UNIX_USER_LEN + 1));
        let e = UserRecord::try_from(&user).unwrap_err().to_string();
        assert!(
            e.contains("users.alice.unix_user") && e.contains("MAX_UNIX_USER_LEN"),
            "{e}"
        );
    }
}
