//! Managed users: database passwords the bastion generates, applies, keeps in AWS Secrets
//! Manager and rotates every `rotation_interval`, so no person ever knows one and a leaked one
//! is useless within minutes.
//!
//! - [`password`]: crypto-random passwords of the engine's maximum length.
//! - [`secrets`]: the Secrets Manager side (names, tags, stages, derived ClientRequestTokens).
//! - [`rotation`]: the state machine — store, apply, promote — safe across crashes and a
//!   fleet of bastions.
//! - [`redis`]: self-hosted Redis/Valkey (`ACL SETUSER` through `admin_user`).
//! - [`runtime`]: the daemon's rotation task, `bastion managed ls|rotate`, audit events.
//! - [`retire`]: secrets of users no longer managed, deleted after `secret_grace_period`.
//! - Sessions authenticate with [`session_password`] (AWSCURRENT, cached briefly) and, when
//!   the engine refuses it, [`fallback_passwords`] (AWSCURRENT afresh, then AWSPREVIOUS: the
//!   cloud applies changes with a delay).
//!
//! Must never log, audit or return in an error a password: they are [`Secret`]s from the
//! generator to the wire.

pub mod cloud;
pub mod password;
pub mod redis;
pub mod retire;
pub mod rotation;
pub mod runtime;
pub mod secrets;

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use crate::aws::credentials::CredentialChain;
use crate::catalog::{Database, Password, PasswordSource, SecretDirs};
use crate::config::{
    IamService, ManagedAuthConfig, SelfHostedEngine, ADMIN_PASSWORD_FILE,
    DEFAULT_ROTATION_INTERVAL, DEFAULT_SECRET_GRACE_PERIOD, DEFAULT_SECRET_PREFIX,
};
use crate::secret::Secret;

/// A managed database's settings, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedAuth {
    pub kind: ManagedKind,
    /// The cache's and Secrets Manager's region; `None`: the instance's.
    pub region: Option<String>,
    pub secret_prefix: String,
    pub kms_key_id: Option<String>,
    pub rotation_interval: Duration,
    /// How long the secret of a user that stopped being managed is kept ([`runtime`]'s sweep).
    pub secret_grace_period: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManagedKind {
    /// Redis/Valkey the bastion changes with `ACL SETUSER` as `admin_user`.
    SelfHosted {
        engine: SelfHostedEngine,
        admin_user: String,
        /// `admin_password_file`, read when the catalog was built under the rules of every
        /// password file (`catalog/password.rs`), never per rotation.
        admin_password: Password,
        /// `managed_users`.
        users: Vec<String>,
    },
    /// An ElastiCache replication group / serverless cache or a MemoryDB cluster; its users
    /// tagged `bastion.dev/managed` are the managed ones.
    Aws {
        service: IamService,
        target: String,
        serverless: bool,
    },
}

impl ManagedAuth {
    /// The typed form of a declaration. Its rules ([`ManagedAuthConfig::check`]) were checked
    /// where it was declared (config, admin socket, a store record read back), so every key the
    /// shape needs is there; without `service` it is self-hosted. The admin's password is read
    /// now under `dirs`' rules, unless `kept` (this database as the catalog in force holds it)
    /// read the same file successfully.
    pub fn from_declared(
        c: &ManagedAuthConfig,
        users: &[String],
        dirs: &SecretDirs,
        kept: Option<&ManagedAuth>,
    ) -> ManagedAuth {
        let kind = match c.service {
            Some(service) => ManagedKind::Aws {
                service,
                target: c.target.clone().unwrap_or_default(),
                serverless: c.serverless,
            },
            None => {
                // A missing file (only an unchecked declaration has none) is refused where it
                // is read, like any path outside the secrets directory.
                let source =
                    PasswordSource::File(c.admin_password_file.clone().unwrap_or_default());
                let kept = kept.and_then(|k| match &k.kind {
                    ManagedKind::SelfHosted { admin_password, .. } => Some(admin_password),
                    ManagedKind::Aws { .. } => None,
                });
                ManagedKind::SelfHosted {
                    engine: c.engine.unwrap_or(SelfHostedEngine::Redis),
                    admin_user: c.admin_user.clone().unwrap_or_default(),
                    admin_password: Password::keep_or_read(
                        ADMIN_PASSWORD_FILE,
                        &source,
                        dirs,
                        kept,
                    ),
                    users: users.to_vec(),
                }
            }
        };
        ManagedAuth {
            kind,
            region: c.region.clone(),
            secret_prefix: c
                .secret_prefix
                .clone()
                .unwrap_or_else(|| DEFAULT_SECRET_PREFIX.into()),
            kms_key_id: c.kms_key_id.clone(),
            rotation_interval: c.rotation_interval.unwrap_or(DEFAULT_ROTATION_INTERVAL),
            secret_grace_period: c.secret_grace_period.unwrap_or(DEFAULT_SECRET_GRACE_PERIOD),
        }
    }

    /// A self-hosted database's admin password as the catalog read it.
    pub fn admin_password(&self) -> Option<&Password> {
        match &self.kind {
            ManagedKind::SelfHosted { admin_password, .. } => Some(admin_password),
            ManagedKind::Aws { .. } => None,
        }
    }

    pub fn admin_password_mut(&mut self) -> Option<&mut Password> {
        match &mut self.kind {
            ManagedKind::SelfHosted { admin_password, .. } => Some(admin_password),
            ManagedKind::Aws { .. } => None,
        }
    }

    /// The users listed in the config (self-hosted); AWS users are discovered.
    pub fn listed_users(&self) -> &[String] {
        match &self.kind {
            ManagedKind::SelfHosted { users, .. } => users,
            ManagedKind::Aws { .. } => &[],
        }
    }

    /// The secret of `user`: `<prefix>/redis/<database>/user/<user>` self-hosted,
    /// `<prefix>/<engine>/<region>/<account>/user/<user>` on AWS.
    pub fn secret_name(&self, database: &str, place: Option<(&str, &str)>, user: &str) -> String {
        match (&self.kind, place) {
            (ManagedKind::Aws { service, .. }, Some((region, account))) => format!(
                "{}/{}/{region}/{account}/user/{user}",
                self.secret_prefix,
                service.signing_name()
            ),
            _ => format!("{}/redis/{database}/user/{user}", self.secret_prefix),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ManagedError {
    #[error("AWS credentials: {0}")]
    Credentials(String),
    #[error("{0}")]
    Region(String),
    #[error("Secrets Manager {action} on '{secret}': {message}")]
    Secrets {
        action: &'static str,
        secret: String,
        message: String,
    },
    #[error("database '{database}': admin connection: {message}")]
    Admin { database: String, message: String },
    #[error("database '{database}': applying the new password of '{user}' failed: {message}")]
    Apply {
        database: String,
        user: String,
        message: String,
    },
    #[error("database '{database}': {message}")]
    Cloud { database: String, message: String },
    #[error("database '{database}': db-user '{user}' is not a managed user")]
    NotManaged { database: String, user: String },
    #[error("database '{database}': a managed password needs a db-user")]
    NoDbUser { database: String },
    #[error("secret '{secret}' holds no password yet (its first rotation has not run)")]
    NoPassword { secret: String },
    #[error("the system's random generator failed")]
    Random,
}

/// What a managed-user service client (Secrets Manager, MemoryDB) is built from: the chain's
/// current credentials in `region`, through [`crate::aws::sdk::Sdk::service_config`].
async fn service_config(
    chain: &CredentialChain,
    region: &str,
) -> Result<aws_config::SdkConfig, ManagedError> {
    let (credentials, _) = chain
        .credentials()
        .await
        .map_err(|e| ManagedError::Credentials(e.to_string()))?;
    Ok(chain.sdk().service_config(region, credentials).await)
}

/// Where one database's secrets live: region, and for AWS the account.
#[derive(Debug, Clone)]
pub struct Place {
    pub region: String,
    pub account: Option<String>,
}

/// The region (and, on AWS, the account) of `db`'s secrets.
pub async fn place(
    db: &str,
    auth: &ManagedAuth,
    chain: &CredentialChain,
) -> Result<Place, ManagedError> {
    let region = chain
        .regions()
        .for_database(db, auth.region.as_deref())
        .await
        .map_err(|e| ManagedError::Region(e.to_string()))?
        .region;
    let account = match auth.kind {
        ManagedKind::SelfHosted { .. } => None,
        ManagedKind::Aws { .. } => Some(account(chain, &region).await?),
    };
    Ok(Place { region, account })
}

/// The caller's account (STS GetCallerIdentity), looked up once per region.
async fn account(chain: &CredentialChain, region: &str) -> Result<String, ManagedError> {
    static ACCOUNTS: LazyLock<Mutex<HashMap<String, String>>> = LazyLock::new(Default::default);
    if let Some(a) = lock(&ACCOUNTS).get(region) {
        return Ok(a.clone());
    }
    let arn = chain
        .caller_arn(Some(region))
        .await
        .map_err(|e| ManagedError::Credentials(e.to_string()))?;
    let account = arn.split(':').nth(4).unwrap_or_default().to_string();
    lock(&ACCOUNTS).insert(region.to_string(), account.clone());
    Ok(account)
}

impl Place {
    pub fn secret_name(&self, database: &str, auth: &ManagedAuth, user: &str) -> String {
        let place = self.account.as_deref().map(|a| (self.region.as_str(), a));
        auth.secret_name(database, place, user)
    }
}

/// Passwords sessions authenticate with, per secret name, as last read or rotated.
struct Cached {
    current: Secret,
    previous: Option<Secret>,
    at: Instant,
}

static CACHE: LazyLock<Mutex<HashMap<String, Cached>>> = LazyLock::new(Default::default);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// How long a cached password is used before Secrets Manager is asked again: well inside one
/// rotation interval, during which the previous password stays valid.
fn cache_ttl(auth: &ManagedAuth) -> Duration {
    (auth.rotation_interval / 4).min(Duration::from_secs(30))
}

/// Record what a rotation made current (this bastion's sessions need not ask).
pub fn remember(secret: &str, current: Secret, previous: Option<Secret>) {
    lock(&CACHE).insert(
        secret.to_string(),
        Cached {
            current,
            previous,
            at: Instant::now(),
        },
    );
}

/// The password a session of `db_user` on `db` authenticates with: AWSCURRENT (cached for
/// [`cache_ttl`]).
pub async fn session_password(
    db: &Database,
    auth: &ManagedAuth,
    db_user: Option<&str>,
    chain: &CredentialChain,
) -> Result<Secret, ManagedError> {
    lookup(db, auth, db_user, chain, false)
        .await
        .map(|(current, _)| current)
}

/// What a login tries after the engine refused [`session_password`]: AWSCURRENT read afresh
/// (another bastion rotated since the cache), then AWSPREVIOUS (the cloud applies a change
/// with a delay).
pub async fn fallback_passwords(
    db: &Database,
    auth: &ManagedAuth,
    db_user: Option<&str>,
    chain: &CredentialChain,
) -> Result<Vec<Secret>, ManagedError> {
    let (current, previous) = lookup(db, auth, db_user, chain, true).await?;
    Ok(std::iter::once(current).chain(previous).collect())
}

async fn lookup(
    db: &Database,
    auth: &ManagedAuth,
    db_user: Option<&str>,
    chain: &CredentialChain,
    fresh: bool,
) -> Result<(Secret, Option<Secret>), ManagedError> {
    let user = db_user.ok_or_else(|| ManagedError::NoDbUser {
        database: db.name.clone(),
    })?;
    if let ManagedKind::SelfHosted { users, .. } = &auth.kind {
        if !users.iter().any(|u| u == user) {
            return Err(ManagedError::NotManaged {
                database: db.name.clone(),
                user: user.to_string(),
            });
        }
    }
    let place = place(&db.name, auth, chain).await?;
    let name = place.secret_name(&db.name, auth, user);
    if !fresh {
        if let Some(c) = lock(&CACHE).get(&name) {
            if c.at.elapsed() < cache_ttl(auth) {
                return Ok((c.current.clone(), c.previous.clone()));
            }
        }
    }
    let store = secrets::SecretStore::connect(chain, &place.region).await?;
    let stages = store.read(&name).await?;
    let Some(current) = stages.current else {
        return Err(ManagedError::NoPassword { secret: name });
    };
    remember(&name, current.password.clone(), stages.previous.clone());
    Ok((current.password, stages.previous))
}
