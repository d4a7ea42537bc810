//! The catalog: databases, roles and users as the data path sees them. Databases are the
//! typed [`Database`] (`catalog/database.rs`) both the config and the store records produce;
//! a password database holds its password, read when the catalog is built
//! (`catalog/password.rs`): a build keeps the readings of the catalog in force for databases
//! whose source did not change, [`Catalog::reread`] (a reload) reads every one again.
//!
//! Built from the on-box store (`crate::admin::handler::catalog_of`, straight from its records)
//! at start and after every admin mutation; `from_config` builds one from the boot config's
//! seed for tools that read only the config. Sessions only
//! ever read an immutable `Arc<Catalog>` snapshot taken at accept time, so a change applies to
//! new sessions at once and never tears a live one.

mod database;
mod password;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use crate::config::{Config, RoleConfig, UserConfig};
use crate::proxy::inspect::policy::CommandPolicy;

pub use crate::config::PasswordSource;
pub use database::{Auth, Database, Declaration, DeclaredRole};
pub use password::{
    read as read_password, read_as as read_password_as, Password, SecretDirs, MAX_PASSWORD_FILE,
};

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("users.{user}.unix_user: no local Unix account named '{unix_user}'")]
    UnknownUnixUser { user: String, unix_user: String },
    #[error("users.{user}.unix_user: uid {uid} is already bound to user '{other}'")]
    DuplicateUid {
        user: String,
        uid: u32,
        other: String,
    },
}

#[derive(Debug, Default)]
pub struct Catalog {
    databases: BTreeMap<String, Arc<Database>>,
    roles: BTreeMap<String, RoleConfig>,
    /// The compiled command policy of each role that sets one.
    policies: BTreeMap<String, Arc<CommandPolicy>>,
    users: BTreeMap<String, UserConfig>,
    by_uid: HashMap<u32, String>,
}

impl Catalog {
    pub fn from_config(config: &Config, dirs: &SecretDirs) -> Result<Catalog, CatalogError> {
        Catalog::build(
            &config.seed.databases,
            &config.seed.roles,
            &config.seed.users,
            dirs,
            None,
        )
    }

    /// The catalog of `databases` (the config's declarations or the store's records), `roles`
    /// and `users`; every database goes through [`Database::from_declared`]. Passwords are read
    /// under `dirs`' rules, except those `kept` (the catalog in force) read successfully from the
    /// same source. A password that cannot be read does not fail the build: its database refuses
    /// sessions, saying why, and the error is logged here.
    pub fn build<'a, D: Declaration + 'a>(
        databases: impl IntoIterator<Item = &'a D>,
        roles: &[RoleConfig],
        users: &[UserConfig],
        dirs: &SecretDirs,
        kept: Option<&Catalog>,
    ) -> Result<Catalog, CatalogError> {
        let mut by_uid = HashMap::new();
        for user in users {
            if let Some(unix_user) = &user.unix_user {
                let uid =
                    resolve_unix_user(unix_user).ok_or_else(|| CatalogError::UnknownUnixUser {
                        user: user.name.clone(),
                        unix_user: unix_user.clone(),
                    })?;
                if let Some(other) = by_uid.insert(uid, user.name.clone()) {
                    return Err(CatalogError::DuplicateUid {
                        user: user.name.clone(),
                        uid,
                        other,
                    });
                }
            }
        }
        let mut policies = BTreeMap::new();
        for role in roles {
            // Checked where the role was declared (config, store record); compiled once here.
            // Should a rule stop compiling (a command table without a command an older one
            // had), the role allows nothing rather than everything, and the build goes on.
            let policy = role.policy().unwrap_or_else(|(setting, e)| {
                tracing::error!(role = %role.name, key = setting, error = %e,
                    "command policy does not compile: the role allows no command until it is fixed");
                CommandPolicy::parse("nocommands").ok()
            });
            if let Some(policy) = policy {
                policies.insert(role.name.clone(), Arc::new(policy));
            }
        }
        let databases = databases
            .into_iter()
            .map(|d| {
                let kept = kept.and_then(|k| k.database(d.name())).map(Arc::as_ref);
                let database = Database::from_declared(d, dirs, kept);
                log_unreadable(&database);
                (database.name.clone(), Arc::new(database))
            })
            .collect();
        Ok(Catalog {
            databases,
            roles: roles.iter().map(|r| (r.name.clone(), r.clone())).collect(),
            policies,
            users: users.iter().map(|u| (u.name.clone(), u.clone())).collect(),
            by_uid,
        })
    }

    /// This catalog with every password read again (`SIGHUP`): a file changed since is
    /// picked up, one removed or broken since makes its database refuse sessions.
    pub fn reread(&self, dirs: &SecretDirs) -> Catalog {
        let databases = self
            .databases
            .iter()
            .map(|(name, db)| {
                let mut db = Database::clone(db);
                if let Some(p) = db.auth.password_mut() {
                    *p = p.reread(dirs);
                    log_unreadable(&db);
                }
                (name.clone(), Arc::new(db))
            })
            .collect();
        Catalog {
            databases,
            roles: self.roles.clone(),
            policies: self.policies.clone(),
            users: self.users.clone(),
            by_uid: self.by_uid.clone(),
        }
    }

    /// This catalog without the databases `names` (their passwords are then read again when
    /// it is a build's `kept`: a database declared anew reads its password anew).
    pub fn without_databases(&self, names: &[&str]) -> Catalog {
        Catalog {
            databases: self
                .databases
                .iter()
                .filter(|(name, _)| !names.contains(&name.as_str()))
                .map(|(name, db)| (name.clone(), db.clone()))
                .collect(),
            roles: self.roles.clone(),
            policies: self.policies.clone(),
            users: self.users.clone(),
            by_uid: self.by_uid.clone(),
        }
    }

    pub fn database(&self, name: &str) -> Option<&Arc<Database>> {
        self.databases.get(name)
    }

    pub fn databases(&self) -> impl Iterator<Item = &Arc<Database>> {
        self.databases.values()
    }

    pub fn user(&self, name: &str) -> Option<&UserConfig> {
        self.users.get(name)
    }

    /// The bastion user bound to a local uid (the Unix-socket identity).
    pub fn user_for_uid(&self, uid: u32) -> Option<&UserConfig> {
        self.by_uid.get(&uid).and_then(|name| self.users.get(name))
    }

    /// A role's compiled command policy; `None` when the role sets none (every command).
    pub fn policy_of(&self, role: &str) -> Option<&Arc<CommandPolicy>> {
        self.policies.get(role)
    }

    /// The roles a user holds (unknown names were rejected when the catalog was built).
    pub fn roles_of<'a>(&'a self, user: &'a UserConfig) -> impl Iterator<Item = &'a RoleConfig> {
        user.roles.iter().filter_map(|r| self.roles.get(r))
    }
}

/// Say once, when the catalog is built, that a database's password could not be read.
fn log_unreadable(db: &Database) {
    if let Some(p) = db.auth.password() {
        match (p.value(), &db.auth) {
            (Ok(_), _) => {}
            (Err(e), Auth::Managed(_)) => {
                tracing::error!(db.name = %db.name, key = e.field, error = %e.message,
                    "admin password unavailable: rotations of this database's managed users \
                     fail until it can be read (fix it, then `systemctl reload bastion`)")
            }
            (Err(e), _) => {
                tracing::error!(db.name = %db.name, key = e.field, error = %e.message,
                    "password unavailable: sessions to this database are refused until it can \
                     be read (fix it, then `systemctl reload bastion`)")
            }
        }
    }
}

/// A Unix user given as a name or a numeric uid.
fn resolve_unix_user(spec: &str) -> Option<u32> {
    if let Ok(uid) = spec.parse::<u32>() {
        return Some(uid);
    }
    nix::unistd::User::from_name(spec)
        .ok()
        .flatten()
        .map(|u| u.uid.as_raw())
}

/// The live catalog: sessions take a snapshot, admin changes swap in a new one.
#[derive(Debug, Clone)]
pub struct CatalogHandle(Arc<RwLock<Arc<Catalog>>>);

impl CatalogHandle {
    pub fn new(catalog: Catalog) -> Self {
        CatalogHandle(Arc::new(RwLock::new(Arc::new(catalog))))
    }

    pub fn snapshot(&self) -> Arc<Catalog> {
        // A poisoned lock only means a writer panicked between two whole-Arc assignments;
        // the Arc inside is still a complete catalog.
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn replace(&self, catalog: Catalog) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(catalog);
    }
}
