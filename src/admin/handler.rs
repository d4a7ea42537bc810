//! One admin request, carried out: read or change the store, then rebuild the live catalog and
//! the per-database Unix sockets from it, so new sessions see the change at once. Certificates
//! and live sessions: [`super::certs`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, UNIX_EPOCH};

use super::auth::Caller;
use super::wire::{AdminError, Declared, ImportSummary, Reply, Request, Status};
use crate::audit;
use crate::catalog::{Catalog, CatalogError, SecretDirs};
use crate::config::DatabaseConfig;
use crate::identity::server_cert::ServerCert;
use crate::metrics::StoreFigures;
use crate::proxy::listener::UnixSockets;
use crate::proxy::shared::Shared;
use crate::store::compaction::CompactionPolicy;
use crate::store::records::{DatabaseRecord, ManagedUserRecord, SerialHex};
use crate::store::{Mutation, State, Store, StoreError};

/// The `caller` of the store changes the managed-user task makes.
pub const MANAGED_CALLER: &str = "managed";

/// The daemon's side of the admin socket.
pub struct Admin {
    store: Mutex<Store>,
    pub(super) shared: Arc<Shared>,
    /// Holds the CA in use (a reload may replace it): `bastion cert issue` signs with it.
    pub(super) server_cert: Arc<ServerCert>,
    unix: Option<Arc<UnixSockets>>,
    started: Instant,
    listeners: Vec<String>,
    compaction: CompactionPolicy,
    /// Set by a mutation that left the log past `compaction`; taken by [`Admin::take_compaction`].
    compaction_due: AtomicBool,
    /// The managed-user task, once the daemon started it.
    managed: std::sync::OnceLock<Arc<crate::managed::runtime::Runtime>>,
    /// Where password files may be (`secrets_dir`, `$CREDENTIALS_DIRECTORY`).
    pub(super) secret_dirs: SecretDirs,
}

/// Build the catalog sessions use from the store's state; passwords `kept` (the catalog in
/// force) read from an unchanged source are not read again.
pub fn catalog_of(
    state: &State,
    dirs: &SecretDirs,
    kept: Option<&Catalog>,
) -> Result<Catalog, CatalogError> {
    let (databases, roles, users) = state.catalog_inputs();
    Catalog::build(databases, &roles, &users, dirs, kept)
}

impl Admin {
    /// `listeners` describes every listener for `bastion status` (e.g. `tls 127.0.0.1:6380`).
    /// The sessions' registry learns the store's certificates here, before any session runs.
    pub fn new(
        store: Store,
        shared: Arc<Shared>,
        server_cert: Arc<ServerCert>,
        unix: Option<Arc<UnixSockets>>,
        listeners: Vec<String>,
        secret_dirs: SecretDirs,
    ) -> Admin {
        shared
            .sessions
            .set_certificates(super::certs::recorded(store.state()));
        Admin {
            store: Mutex::new(store),
            shared,
            server_cert,
            unix,
            started: Instant::now(),
            listeners,
            compaction: CompactionPolicy::default(),
            compaction_due: AtomicBool::new(false),
            managed: std::sync::OnceLock::new(),
            secret_dirs,
        }
    }

    /// The managed-user task `managed ls|rotate` talk to.
    pub fn set_managed(&self, runtime: Arc<crate::managed::runtime::Runtime>) {
        let _ = self.managed.set(runtime);
    }

    /// `bastion managed rotate`: runs on the blocking thread the request already has, as the
    /// rotation's network calls need the runtime.
    fn rotate_managed(
        &self,
        caller: &Caller,
        database: &str,
        user: &str,
    ) -> Result<Reply, AdminError> {
        let runtime = self
            .managed
            .get()
            .ok_or_else(|| AdminError::Refused("no managed-user task runs".into()))?;
        tracing::info!(uid = caller.uid, caller = %caller.name, db = database, db_user = user,
            "admin: managed rotation requested");
        tokio::runtime::Handle::current()
            .block_on(runtime.rotate_now(database, user))
            .map(Reply::Rotated)
            .map_err(AdminError::Refused)
    }

    /// The managed-user records of `database` (users whose secret awaits deletion).
    pub fn managed_records(&self, database: &str) -> Vec<ManagedUserRecord> {
        self.lock()
            .state()
            .managed_users()
            .filter(|r| r.database.as_str() == database)
            .cloned()
            .collect()
    }

    /// Write managed-user records for the managed-user task, through [`Admin::mutate`] like
    /// every change of the store (checked, fsynced, audited with `caller="managed"`).
    pub fn write_managed(&self, mutations: Vec<Mutation>) -> Result<(), AdminError> {
        let caller = Caller {
            uid: nix::unistd::geteuid().as_raw(),
            name: MANAGED_CALLER.to_string(),
        };
        self.mutate(&caller, "managed", mutations).map(drop)
    }

    /// Read every database's password again (`SIGHUP`), under the store's lock so that no
    /// admin change interleaves. A password that cannot be read now makes its database refuse
    /// sessions (logged, naming the key and the path); the others serve the new readings.
    pub fn reread_passwords(&self) {
        let _store = self.lock();
        let catalog = self.shared.catalog.snapshot().reread(&self.secret_dirs);
        self.shared.catalog.replace(catalog);
    }

    /// Whether a mutation left the log long enough to compact; `true` once per such mutation
    /// (the caller then runs [`Admin::compact_if_due`], after sending its reply).
    pub fn take_compaction(&self) -> bool {
        self.compaction_due.swap(false, Ordering::AcqRel)
    }

    /// Fold the log into a snapshot if it is still past the policy's threshold. Blocking (fsync);
    /// holds the store for the duration, so admin requests wait for it — sessions never do.
    pub fn compact_if_due(&self) {
        let mut store = self.lock();
        let before = store.log_size();
        if !self.compaction.due(before) {
            return;
        }
        match store.compact() {
            Ok(()) => tracing::info!(path = %store.dir().display(), records = before.records,
                bytes = before.bytes, generation = store.generation(),
                "store: compacted the log into a snapshot"),
            Err(e) => tracing::error!(path = %store.dir().display(), error = %e,
                "store: compaction failed"),
        }
    }

    /// Carry out `request` for an authorized `caller`. Blocking (fsync): run it off the runtime.
    pub fn handle(&self, caller: &Caller, request: Request) -> Reply {
        match self.dispatch(caller, request) {
            Ok(reply) => reply,
            Err(e) => Reply::Error(e),
        }
    }

    fn dispatch(&self, caller: &Caller, request: Request) -> Result<Reply, AdminError> {
        let done = |seq| Ok(Reply::Done { seq });
        match request {
            Request::ListDatabases => Ok(Reply::Databases(
                self.lock().state().databases().cloned().collect(),
            )),
            Request::ListRoles => Ok(Reply::Roles(self.lock().state().roles().cloned().collect())),
            Request::ListUsers => Ok(Reply::Users(self.lock().state().users().cloned().collect())),
            Request::Export => Ok(Reply::Export(self.export())),
            Request::Status => Ok(Reply::Status(self.status())),
            Request::PutDatabase { record, replace } => {
                check_database(&record)?;
                self.check_password(&record)?;
                let exists = self.lock().state().database(&record.name).is_some();
                refuse_existing("database", &record.name, exists, replace)?;
                done(self.mutate(caller, "put", vec![Mutation::PutDatabase(record)])?)
            }
            Request::PutRole { record, replace } => {
                let exists = self.lock().state().role(&record.name).is_some();
                refuse_existing("role", &record.name, exists, replace)?;
                done(self.mutate(caller, "put", vec![Mutation::PutRole(record)])?)
            }
            Request::PutUser { record, replace } => {
                let exists = self.lock().state().user(&record.name).is_some();
                refuse_existing("user", &record.name, exists, replace)?;
                done(self.mutate(caller, "put", vec![Mutation::PutUser(record)])?)
            }
            Request::RemoveDatabase(name) => {
                let key = self.existing("database", &name, |s| {
                    s.database(&name).map(|d| d.name.clone())
                })?;
                done(self.mutate(caller, "remove", vec![Mutation::RemoveDatabase(key)])?)
            }
            Request::RemoveRole(name) => {
                let key =
                    self.existing("role", &name, |s| s.role(&name).map(|r| r.name.clone()))?;
                done(self.mutate(caller, "remove", vec![Mutation::RemoveRole(key)])?)
            }
            Request::RemoveUser(name) => {
                let key =
                    self.existing("user", &name, |s| s.user(&name).map(|u| u.name.clone()))?;
                done(self.mutate(caller, "remove", vec![Mutation::RemoveUser(key)])?)
            }
            Request::Import(declared) => self.import(caller, declared).map(Reply::Imported),
            Request::IssueCert { user, ttl_secs } => {
                self.issue_cert(caller, &user, ttl_secs).map(Reply::Issued)
            }
            Request::ListCerts => Ok(Reply::Certs(
                self.lock().state().certificates().cloned().collect(),
            )),
            Request::RevokeCert(serial) => self.revoke_cert(caller, &serial),
            Request::ListSessions => Ok(Reply::Sessions(self.shared.sessions.list())),
            Request::KillSession(id) => self.kill_session(caller, id).map(Reply::Killed),
            Request::ListManaged => Ok(Reply::Managed(
                self.managed.get().map(|m| m.list()).unwrap_or_default(),
            )),
            Request::RotateManaged { database, user } => {
                self.rotate_managed(caller, &database, &user)
            }
            Request::PutSecret {
                name,
                value,
                replace,
            } => self.put_secret(caller, &name, &value.0, replace),
            Request::ListSecrets => self.list_secrets().map(Reply::Secrets),
            Request::RemoveSecret(name) => self.remove_secret(caller, &name),
        }
    }

    /// Apply `mutations` as one change: all are checked against the store's rules and the
    /// catalog first, so a refusal writes nothing; then each is written (fsynced) and audited,
    /// and only then does the live catalog change.
    pub(super) fn mutate(
        &self,
        caller: &Caller,
        request: &str,
        mutations: Vec<Mutation>,
    ) -> Result<u64, AdminError> {
        let mut store = self.lock();
        // A database removed takes the managed-user records of its users with it (they only
        // time the deletion of secrets of users no longer managed: `managed/runtime.rs`).
        let mutations: Vec<Mutation> = mutations
            .into_iter()
            .flat_map(|m| {
                let mut with = Vec::new();
                if let Mutation::RemoveDatabase(name) = &m {
                    with.extend(
                        store
                            .state()
                            .managed_users()
                            .filter(|r| r.database == *name)
                            .map(|r| Mutation::RemoveManagedUser {
                                database: r.database.clone(),
                                db_user: r.db_user.clone(),
                            }),
                    );
                }
                with.push(m);
                with
            })
            .collect();
        let mut next = store.state().clone();
        for m in &mutations {
            next.apply(m)
                .map_err(|e| AdminError::Refused(e.to_string()))?;
        }
        // A database declared by these mutations reads its password anew; the others keep
        // theirs (read at start, at their own declaration, or at the last reload).
        let declared: Vec<&str> = mutations
            .iter()
            .filter_map(|m| match m {
                Mutation::PutDatabase(d) => Some(d.name.as_str()),
                _ => None,
            })
            .collect();
        let kept = self.shared.catalog.snapshot().without_databases(&declared);
        let catalog = catalog_of(&next, &self.secret_dirs, Some(&kept))
            .map_err(|e| AdminError::Catalog(e.to_string()))?;
        let mut seq = store.last_seq().0;
        let mut result = Ok(());
        for m in mutations {
            match store.apply(m.clone()) {
                Ok(s) => {
                    seq = s.0;
                    let (action, target) = describe(&m);
                    audit::admin_mutation(caller.uid, &caller.name, request, action, &target, seq);
                }
                Err(e) => {
                    result = Err(store_error(e));
                    break;
                }
            }
        }
        if self.compaction.due(store.log_size()) {
            self.compaction_due.store(true, Ordering::Release);
        }
        // Whatever was acknowledged is the truth now, even if a later write failed.
        let catalog = if result.is_ok() {
            catalog
        } else {
            catalog_of(store.state(), &self.secret_dirs, Some(&kept))
                .map_err(|e| AdminError::Catalog(e.to_string()))?
        };
        self.shared.catalog.replace(catalog);
        if let Some(unix) = &self.unix {
            let names: Vec<String> = store
                .state()
                .databases()
                .map(|d| d.name.to_string())
                .collect();
            unix.sync(names.iter().map(String::as_str))
                .map_err(|e| AdminError::Listener(e.to_string()))?;
        }
        result.map(|()| seq)
    }

    fn import(&self, caller: &Caller, d: Declared) -> Result<ImportSummary, AdminError> {
        let mut summary = ImportSummary::default();
        let mut mutations = Vec::new();
        {
            let store = self.lock();
            let state = store.state();
            let mut count = |old: Option<bool>| match old {
                None => summary.added += 1,
                Some(true) => summary.unchanged += 1,
                Some(false) => summary.changed += 1,
            };
            // Roles before the users that hold them.
            for r in d.roles {
                let old = state.role(&r.name).map(|o| *o == r);
                count(old);
                if old != Some(true) {
                    mutations.push(Mutation::PutRole(r));
                }
            }
            for db in d.databases {
                check_database(&db)?;
                let old = state.database(&db.name).map(|o| *o == db);
                count(old);
                if old != Some(true) {
                    self.check_password(&db)?;
                    mutations.push(Mutation::PutDatabase(db));
                }
            }
            for u in d.users {
                let old = state.user(&u.name).map(|o| *o == u);
                count(old);
                if old != Some(true) {
                    mutations.push(Mutation::PutUser(u));
                }
            }
        }
        if !mutations.is_empty() {
            self.mutate(caller, "import", mutations)?;
        }
        Ok(summary)
    }

    fn export(&self) -> Declared {
        let store = self.lock();
        let s = store.state();
        Declared {
            databases: s.databases().cloned().collect(),
            roles: s.roles().cloned().collect(),
            users: s.users().cloned().collect(),
        }
    }

    /// The metrics page (`[metrics]` endpoint, `bastion status`), with the gauges this side
    /// owns brought up to date first: the store's size and the credentials' expiry. Never waits
    /// for the store: while an admin write or a compaction holds it, the last figures stand.
    pub fn metrics_text(&self) -> String {
        let metrics = &self.shared.metrics;
        if let Ok(store) = self.store.try_lock() {
            let s = store.state();
            metrics.set_store(StoreFigures {
                seq: store.last_seq().0,
                log_bytes: store.log_size().bytes,
                databases: s.databases().count() as u64,
                roles: s.roles().count() as u64,
                users: s.users().count() as u64,
            });
        }
        if let Some((_, expiry)) = self.shared.credentials.cached() {
            metrics.set_credentials_expiry(expiry);
        }
        if let Some(managed) = self.managed.get() {
            metrics.set_managed(crate::metrics::ManagedFigures::of(&managed.list()));
        }
        metrics.set_upstream_warm(self.shared.warm.ready());
        metrics.encode()
    }

    fn status(&self) -> Status {
        let (seq, databases, roles, users) = {
            let store = self.lock();
            let s = store.state();
            (
                store.last_seq().0,
                s.databases().count() as u64,
                s.roles().count() as u64,
                s.users().count() as u64,
            )
        };
        let cached = self.shared.credentials.cached();
        Status {
            version: env!("CARGO_PKG_VERSION").to_string(),
            uptime_secs: self.started.elapsed().as_secs(),
            listeners: self.listeners.clone(),
            sessions: self.shared.sessions.len() as u64,
            max_sessions: self.shared.slots.max() as u64,
            credential_chain: self
                .shared
                .credentials
                .link_names()
                .map(str::to_string)
                .collect(),
            credential_source: cached.as_ref().map(|(source, _)| source.clone()),
            credential_expiry: cached.and_then(|(_, expiry)| {
                expiry
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map(|d| d.as_secs() as i64)
            }),
            store_seq: seq,
            databases,
            roles,
            users,
            metrics: self.metrics_text(),
        }
    }

    pub(super) fn existing<K>(
        &self,
        kind: &str,
        name: &str,
        find: impl FnOnce(&State) -> Option<K>,
    ) -> Result<K, AdminError> {
        find(self.lock().state()).ok_or_else(|| AdminError::NotFound {
            kind: kind.to_string(),
            name: name.to_string(),
        })
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Store> {
        // A panic while holding the lock happened between whole store operations; the store
        // itself poisons on an unknown write outcome.
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn refuse_existing(kind: &str, name: &str, exists: bool, replace: bool) -> Result<(), AdminError> {
    if exists && !replace {
        return Err(AdminError::Exists {
            kind: kind.to_string(),
            name: name.to_string(),
        });
    }
    if !exists && replace {
        return Err(AdminError::NotFound {
            kind: kind.to_string(),
            name: name.to_string(),
        });
    }
    Ok(())
}

/// The rules the boot config holds a database to ([`DatabaseConfig::check`]), with the same
/// message; the field is named `databases.<name>.<field>`.
fn check_database(record: &DatabaseRecord) -> Result<(), AdminError> {
    DatabaseConfig::from(record)
        .check()
        .map_err(|e| AdminError::Refused(format!("databases.{}.{e}", record.name)))
}

impl Admin {
    /// A database declared here (`db add`, `db add --replace`, `import`, user-data) is
    /// refused unless its password — or a self-hosted managed database's admin password — can
    /// be read now, under the rules of `catalog/password.rs` (in the secrets directory, private,
    /// small; a `BASTION_` variable). The error names the key and the path, never the file's
    /// contents.
    fn check_password(&self, record: &DatabaseRecord) -> Result<(), AdminError> {
        if let Some((key, source)) = DatabaseConfig::from(record).auth.secret_source() {
            crate::catalog::read_password_as(key, &source, &self.secret_dirs)
                .map_err(|e| AdminError::Refused(format!("databases.{}.{e}", record.name)))?;
        }
        Ok(())
    }
}

fn store_error(e: StoreError) -> AdminError {
    match e {
        StoreError::Record(e) => AdminError::Refused(e.to_string()),
        e => AdminError::Store(e.to_string()),
    }
}

/// `(action, target)` of a mutation for the audit event, e.g. `("database.put", "cache")`.
fn describe(m: &Mutation) -> (&'static str, String) {
    match m {
        Mutation::PutDatabase(d) => ("database.put", d.name.to_string()),
        Mutation::RemoveDatabase(n) => ("database.remove", n.to_string()),
        Mutation::PutRole(r) => ("role.put", r.name.to_string()),
        Mutation::RemoveRole(n) => ("role.remove", n.to_string()),
        Mutation::PutUser(u) => ("user.put", u.name.to_string()),
        Mutation::RemoveUser(n) => ("user.remove", n.to_string()),
        Mutation::IssueCert(c) => ("cert.issue", SerialHex(&c.serial).to_string()),
        Mutation::RevokeCert { serial, .. } => ("cert.revoke", SerialHex(serial).to_string()),
        Mutation::SetCa(ca) => ("ca.set", ca.common_name.to_string()),
        Mutation::PutManagedUser(m) => {
            ("managed_user.put", format!("{}/{}", m.database, m.db_user))
        }
        Mutation::RemoveManagedUser { database, db_user } => {
            ("managed_user.remove", format!("{database}/{db_user}"))
        }
    }
}

impl crate::managed::runtime::Records for Admin {
    fn managed_records(&self, database: &str) -> Vec<ManagedUserRecord> {
        Admin::managed_records(self, database)
    }

    fn write_managed(&self, mutations: Vec<Mutation>) -> Result<(), String> {
        Admin::write_managed(self, mutations).map_err(|e| e.to_string())
    }
}
