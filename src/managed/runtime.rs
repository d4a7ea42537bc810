//! The daemon's managed-user task: every managed user of every managed database in the
//! catalog is rotated when its AWSCURRENT is older than `rotation_interval` (plus jitter), and
//! on demand (`bastion managed rotate`). What it knows for `bastion managed ls` is kept here.
//!
//! The schedule comes from Secrets Manager (AWSCURRENT's creation time), not from this
//! process: a restarted bastion, or another bastion of the fleet, sees the same due time, and
//! a rotation another bastion just did is not repeated. One rotation at a time per process.
//!
//! Every discovery interval (at most `secret_grace_period`), and at once when who is managed
//! changes, the task also sweeps each managed database's own secrets ([`super::retire`]): a
//! user no longer managed is recorded in the store through its one writer ([`Records`]), and
//! its secret deleted after the grace period.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::cloud::{CloudUsers, Discovered};
use super::redis::AclAdmin;
use super::retire::{self, Step};
use super::rotation::{Outcome, Rotation};
use super::secrets::{NewSecret, SecretStore};
use super::{ManagedAuth, ManagedError, ManagedKind};
use crate::catalog::{Auth, Catalog, Database};
use crate::proxy::shared::Shared;
use crate::store::records::{self, ManagedUserRecord};
use crate::store::Mutation;

/// How often the task looks for due rotations.
pub const TICK: Duration = Duration::from_secs(1);
/// How often an AWS cache's managed users are discovered again (at most every interval).
pub const DISCOVERY_EVERY: Duration = Duration::from_secs(60);

/// One managed user as `bastion managed ls` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserStatus {
    pub database: String,
    pub user: String,
    /// Why it is managed: `config` (`managed_users`) or the tag that marks it.
    pub source: String,
    /// `None` until the secret's place (region, account) is known.
    pub secret: Option<String>,
    /// Unix seconds of AWSCURRENT's creation.
    pub last_rotation: Option<i64>,
    pub next_rotation: Option<i64>,
    pub version: Option<String>,
    pub last_error: Option<String>,
}

/// Who asked for a rotation (audit `trigger`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Schedule,
    Admin,
}

impl Trigger {
    fn name(self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::Admin => "admin",
        }
    }
}

/// The store, as the managed-user task uses it: read its records, write through the store's one
/// writer (the admin side, `admin/handler.rs`), so every change is checked, fsynced and audited.
pub trait Records: Send + Sync {
    /// The managed-user records of `database`.
    fn managed_records(&self, database: &str) -> Vec<ManagedUserRecord>;
    /// Apply `mutations` (managed-user records only) as one change.
    fn write_managed(&self, mutations: Vec<Mutation>) -> Result<(), String>;
}

pub struct Runtime {
    shared: Arc<Shared>,
    /// The store (weak: the admin side holds this task).
    records: Weak<dyn Records>,
    /// Per managed database: when its secrets were last swept, and who was managed then.
    swept: Mutex<HashMap<String, (Instant, HashSet<String>)>>,
    /// Per AWS database: when its users were last discovered, and the managed ones.
    discovered: Mutex<HashMap<String, (Instant, Vec<Discovered>)>>,
    status: Mutex<BTreeMap<(String, String), UserStatus>>,
    /// One rotation at a time in this process (the scheduled task and `managed rotate`).
    rotating: tokio::sync::Mutex<()>,
}

impl Runtime {
    pub fn new(shared: Arc<Shared>, records: Weak<dyn Records>) -> Arc<Runtime> {
        Arc::new(Runtime {
            shared,
            records,
            swept: Mutex::new(HashMap::new()),
            status: Mutex::new(BTreeMap::new()),
            discovered: Mutex::new(HashMap::new()),
            rotating: tokio::sync::Mutex::new(()),
        })
    }

    /// Rotate what is due, every [`TICK`], until the task is aborted.
    pub async fn run(self: Arc<Self>) {
        loop {
            self.round().await;
            tokio::time::sleep(TICK).await;
        }
    }

    /// Every managed user now, as far as known.
    pub fn list(&self) -> Vec<UserStatus> {
        let catalog = self.shared.catalog.snapshot();
        let mut current = BTreeMap::new();
        for db in catalog.databases() {
            if let Auth::Managed(m) = &db.auth {
                for (user, source) in self.users_of(db, m) {
                    current.insert((db.name.clone(), user), source);
                }
            }
        }
        let mut status = self.lock();
        // Users of databases that are gone or no longer managed are not shown.
        status.retain(|key, _| current.contains_key(key));
        for ((db, user), source) in current {
            status
                .entry((db.clone(), user.clone()))
                .or_insert_with(|| blank(&db, &user, &source));
        }
        status.values().cloned().collect()
    }

    /// Rotate `user` of `database` now.
    pub async fn rotate_now(&self, database: &str, user: &str) -> Result<UserStatus, String> {
        let catalog = self.shared.catalog.snapshot();
        let db = catalog
            .database(database)
            .ok_or_else(|| format!("no database '{database}'"))?;
        let Auth::Managed(m) = &db.auth else {
            return Err(format!(
                "database '{database}' uses auth mode '{}', not managed",
                db.auth.mode_name()
            ));
        };
        if !self.users_of(db, m).iter().any(|(u, _)| u == user) {
            return Err(format!("'{user}' is not a managed user of '{database}'"));
        }
        let status = self.rotate_user(db, m, user, Trigger::Admin).await;
        match &status.last_error {
            Some(e) => Err(e.clone()),
            None => Ok(status),
        }
    }

    async fn round(&self) {
        let catalog = self.shared.catalog.snapshot();
        let now = unix(SystemTime::now());
        for db in catalog.databases() {
            let Auth::Managed(m) = &db.auth else { continue };
            if let ManagedKind::Aws { .. } = m.kind {
                self.discover(db, m).await;
            }
            for (user, _) in self.users_of(db, m) {
                let due = self
                    .lock()
                    .get(&(db.name.clone(), user.clone()))
                    .and_then(|s| s.next_rotation)
                    .is_none_or(|next| next <= now);
                if due {
                    self.rotate_user(db, m, &user, Trigger::Schedule).await;
                }
            }
            self.sweep(&catalog, db, m).await;
        }
    }

    /// Every `DISCOVERY_EVERY` (at most the rotation interval and the grace period), and when
    /// the managed users changed: record this database's users that stopped being managed,
    /// forget those managed again, delete the secrets whose grace period is over
    /// ([`retire::plan`]). Errors are logged; the next sweep tries again.
    async fn sweep(&self, catalog: &Catalog, db: &Database, m: &ManagedAuth) {
        // Who uses a secret of this database's namespace now: on AWS a user's secret is shared
        // by every database of the same service and prefix, and each must have been
        // discovered by this process (an unknown list is not an empty one).
        let mut managed: HashSet<String> = HashSet::new();
        for other in catalog.databases() {
            let Auth::Managed(om) = &other.auth else {
                continue;
            };
            let shares = match (&m.kind, &om.kind) {
                (ManagedKind::Aws { service, .. }, ManagedKind::Aws { service: os, .. }) => {
                    service == os && m.secret_prefix == om.secret_prefix
                }
                _ => other.name == db.name,
            };
            if !shares {
                continue;
            }
            if matches!(om.kind, ManagedKind::Aws { .. })
                && !self
                    .discovered
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .contains_key(&other.name)
            {
                return;
            }
            managed.extend(self.users_of(other, om).into_iter().map(|(u, _)| u));
        }
        // Due every interval, and at once when who is managed changed.
        let every = DISCOVERY_EVERY
            .min(m.rotation_interval)
            .min(m.secret_grace_period);
        {
            let mut swept = self.swept.lock().unwrap_or_else(|e| e.into_inner());
            let fresh = swept
                .get(&db.name)
                .is_some_and(|(at, last)| at.elapsed() < every && *last == managed);
            if fresh {
                return;
            }
            swept.insert(db.name.clone(), (Instant::now(), managed.clone()));
        }
        if let Err(e) = self.sweep_secrets(db, m, &managed).await {
            tracing::warn!(db = %db.name, error = %e,
                "managed: sweeping the secrets of users no longer managed failed; trying again later");
        }
    }

    async fn sweep_secrets(
        &self,
        db: &Database,
        m: &ManagedAuth,
        managed: &HashSet<String>,
    ) -> Result<(), String> {
        let chain = &self.shared.credentials;
        let place = super::place(&db.name, m, chain)
            .await
            .map_err(|e| e.to_string())?;
        let store = SecretStore::connect(chain, &place.region)
            .await
            .map_err(|e| e.to_string())?;
        let name_of = |user: &str| place.secret_name(&db.name, m, user);
        let owned = store
            .list_owned(&name_of(""), &db.name)
            .await
            .map_err(|e| e.to_string())?;
        let records = self.read_records(&db.name).await?;
        let now = unix(SystemTime::now());
        let steps = retire::plan(
            &owned,
            name_of,
            |u| managed.contains(u),
            &records,
            now,
            m.secret_grace_period,
        );
        for step in steps {
            match step {
                Step::Mark { user, arn } => {
                    let record = ManagedUserRecord {
                        database: records::name("managed_user.database", &db.name)
                            .map_err(|e| e.to_string())?,
                        db_user: records::pattern("managed_user.db_user", &user)
                            .map_err(|e| e.to_string())?,
                        secret_arn: records::text(
                            "managed_user.secret_arn",
                            "MAX_ARN_LEN",
                            records::Charset::Token,
                            &arn,
                        )
                        .map_err(|e| e.to_string())?,
                        last_rotation: None,
                        generation: 0,
                        unmanaged_since: Some(now),
                    };
                    self.write(vec![Mutation::PutManagedUser(record)]).await?;
                    let after = now.saturating_add(m.secret_grace_period.as_secs() as i64);
                    audit::managed_unmanaged(&db.name, &user, &name_of(&user), after);
                }
                Step::Unmark { user } | Step::Forget { user } => {
                    tracing::info!(db = %db.name, db_user = %user,
                        "managed: user managed again, or its secret gone; its deletion is off");
                    self.write(vec![remove(&db.name, &user)?]).await?;
                }
                Step::Delete {
                    user,
                    arn,
                    name,
                    since,
                } => {
                    store.delete(&arn).await.map_err(|e| e.to_string())?;
                    audit::managed_secret_deleted(&db.name, &user, &name, since);
                    self.write(vec![remove(&db.name, &user)?]).await?;
                }
            }
        }
        Ok(())
    }

    async fn read_records(&self, database: &str) -> Result<Vec<ManagedUserRecord>, String> {
        let records = self.records.upgrade().ok_or("the store is closed")?;
        let database = database.to_string();
        tokio::task::spawn_blocking(move || records.managed_records(&database))
            .await
            .map_err(|e| e.to_string())
    }

    async fn write(&self, mutations: Vec<Mutation>) -> Result<(), String> {
        let records = self.records.upgrade().ok_or("the store is closed")?;
        tokio::task::spawn_blocking(move || records.write_managed(mutations))
            .await
            .map_err(|e| e.to_string())?
    }

    async fn rotate_user(
        &self,
        db: &Database,
        m: &ManagedAuth,
        user: &str,
        trigger: Trigger,
    ) -> UserStatus {
        let _one = self.rotating.lock().await;
        let mut status = self
            .lock()
            .get(&(db.name.clone(), user.to_string()))
            .cloned()
            .unwrap_or_else(|| {
                let source = self.users_of(db, m).into_iter().find(|(u, _)| u == user);
                blank(&db.name, user, &source.map(|(_, s)| s).unwrap_or_default())
            });
        let result = self.rotate(db, m, user, trigger, &mut status).await;
        let now = SystemTime::now();
        match result {
            Ok(Outcome::Rotated { version }) => {
                let secret = status.secret.clone().unwrap_or_default();
                audit::managed_rotated(&db.name, user, &secret, &version, trigger.name());
                status.version = Some(version);
                status.last_rotation = Some(unix(now));
                status.next_rotation = Some(unix(now + m.rotation_interval + jitter(m)));
                status.last_error = None;
            }
            Ok(Outcome::NotDue { next }) => {
                status.next_rotation = Some(unix(next + jitter(m)));
                status.last_error = None;
            }
            Ok(Outcome::Superseded) => status.next_rotation = Some(unix(now)),
            Err(e) => {
                let secret = status.secret.clone().unwrap_or_default();
                let error = e.to_string();
                tracing::warn!(db = %db.name, db_user = user, error = %error,
                    "managed: rotation failed; the current password stays in use");
                audit::managed_rotation_failed(&db.name, user, &secret, &error, trigger.name());
                status.last_error = Some(error);
                status.next_rotation = Some(unix(now + retry_after(m)));
            }
        }
        self.lock()
            .insert((db.name.clone(), user.to_string()), status.clone());
        status
    }

    async fn rotate(
        &self,
        db: &Database,
        m: &ManagedAuth,
        user: &str,
        trigger: Trigger,
        status: &mut UserStatus,
    ) -> Result<Outcome, ManagedError> {
        let chain = &self.shared.credentials;
        let place = super::place(&db.name, m, chain).await?;
        let name = place.secret_name(&db.name, m, user);
        status.secret = Some(name.clone());
        let store = SecretStore::connect(chain, &place.region).await?;
        let rotation = Rotation {
            store: &store,
            name: &name,
            user,
            new_secret: NewSecret {
                database: &db.name,
                user,
                kms_key_id: m.kms_key_id.as_deref(),
            },
            interval: (trigger == Trigger::Schedule).then_some(m.rotation_interval),
        };
        let outcome = match &m.kind {
            ManagedKind::SelfHosted {
                admin_user,
                admin_password,
                ..
            } => {
                // Unreadable: nothing is stored (a password that could not be applied).
                let admin_password = admin_password.value().map_err(|e| ManagedError::Admin {
                    database: db.name.clone(),
                    message: e.to_string(),
                })?;
                let admin = AclAdmin {
                    database: db,
                    connector: &self.shared.connector,
                    admin_user,
                    admin_password,
                };
                rotation.run(&admin).await?
            }
            ManagedKind::Aws { .. } => {
                let cloud = CloudUsers::connect(&db.name, m, &place.region, chain).await?;
                rotation.run(&cloud).await?
            }
        };
        let stages = store.read(&name).await?;
        if let Some(current) = stages.current {
            status.last_rotation = Some(unix(current.created));
            status.version = Some(current.id);
            super::remember(&name, current.password, stages.previous);
        }
        Ok(outcome)
    }

    /// The managed users of `db` and why each is managed: `managed_users` (self-hosted), or
    /// the users discovery found tagged (AWS).
    fn users_of(&self, db: &Database, m: &ManagedAuth) -> Vec<(String, String)> {
        match m.kind {
            ManagedKind::SelfHosted { .. } => m
                .listed_users()
                .iter()
                .map(|u| (u.clone(), "config".to_string()))
                .collect(),
            ManagedKind::Aws { .. } => self
                .discovered
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&db.name)
                .map(|(_, found)| {
                    found
                        .iter()
                        .map(|d| (d.user.clone(), format!("tag:{}", d.tag)))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// Refresh which users of an AWS cache are managed, every [`DISCOVERY_EVERY`]. A failed
    /// discovery keeps the last list (and is logged).
    async fn discover(&self, db: &Database, m: &ManagedAuth) {
        let fresh = self
            .discovered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&db.name)
            .is_some_and(|(at, _)| at.elapsed() < DISCOVERY_EVERY.min(m.rotation_interval));
        let ManagedKind::Aws { .. } = &m.kind else {
            return;
        };
        if fresh {
            return;
        }
        let chain = &self.shared.credentials;
        let found = async {
            let place = super::place(&db.name, m, chain).await?;
            CloudUsers::connect(&db.name, m, &place.region, chain)
                .await?
                .discover()
                .await
        }
        .await;
        match found {
            Ok(found) => {
                tracing::debug!(db = %db.name, users = found.len(), "managed: users discovered");
                self.discovered
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(db.name.clone(), (Instant::now(), found));
            }
            Err(e) => tracing::warn!(db = %db.name, error = %e,
                "managed: discovering the managed users failed; keeping the last list"),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), UserStatus>> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }
}

use crate::audit;

fn remove(database: &str, user: &str) -> Result<Mutation, String> {
    Ok(Mutation::RemoveManagedUser {
        database: records::name("managed_user.database", database).map_err(|e| e.to_string())?,
        db_user: records::pattern("managed_user.db_user", user).map_err(|e| e.to_string())?,
    })
}

fn blank(database: &str, user: &str, source: &str) -> UserStatus {
    UserStatus {
        database: database.to_string(),
        user: user.to_string(),
        source: source.to_string(),
        secret: None,
        last_rotation: None,
        next_rotation: None,
        version: None,
        last_error: None,
    }
}

/// Up to a tenth of the interval, so a fleet does not call Secrets Manager in lockstep.
fn jitter(m: &ManagedAuth) -> Duration {
    let max = (m.rotation_interval / 10).as_millis() as u64;
    Duration::from_millis(fastrand::u64(0..=max))
}

/// After a failure: soon, well inside the interval (the current password stays valid).
fn retry_after(m: &ManagedAuth) -> Duration {
    (m.rotation_interval / 4).clamp(Duration::from_secs(1), Duration::from_secs(60))
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
