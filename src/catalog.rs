//! The catalog: databases, roles and users as the data path sees them. Databases are the
//! typed [`Database`] (`catalog/database.rs`) both the config and the store records produce.
//!
//! Built from the on-box store (`crate::admin::handler::catalog_of`, straight from its records)
//! at start and after every admin mutation; `from_config` builds one from the boot config's
//! seed for tools that read only the config. Sessions only
//! ever read an immutable `Arc<Catalog>` snapshot taken at accept time, so a change applies to
//! new sessions at once and never tears a live one.

mod database;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use crate::config::{Config, DatabaseRuleError, RoleConfig, UserConfig};

pub use database::{Auth, Database, Declaration, DeclaredRole, PasswordSource};

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("databases.{database}.{source}")]
    Database {
        database: String,
        source: DatabaseRuleError,
    },
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
    users: BTreeMap<String, UserConfig>,
    by_uid: HashMap<u32, String>,
}

impl Catalog {
    pub fn from_config(config: &Config) -> Result<Catalog, CatalogError> {
        Catalog::build(
            &config.seed.databases,
            &config.seed.roles,
            &config.seed.users,
        )
    }

    /// A catalog of `databases` (the config's declarations or the store's records), `roles`
    /// and `users`; every database goes through [`Database::from_declared`].
    pub fn build<'a, D: Declaration + 'a>(
        databases: impl IntoIterator<Item = &'a D>,
        roles: &[RoleConfig],
        users: &[UserConfig],
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
        let databases = databases
            .into_iter()
            .map(|d| {
                let database =
                    Database::from_declared(d).map_err(|source| CatalogError::Database {
                        database: d.name().to_string(),
                        source,
                    })?;
                Ok((database.name.clone(), Arc::new(database)))
            })
            .collect::<Result<_, CatalogError>>()?;
        Ok(Catalog {
            databases,
            roles: roles.iter().map(|r| (r.name.clone(), r.clone())).collect(),
            users: users.iter().map(|u| (u.name.clone(), u.clone())).collect(),
            by_uid,
        })
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

    /// The roles a user holds (unknown names were rejected when the catalog was built).
    pub fn roles_of<'a>(&'a self, user: &'a UserConfig) -> impl Iterator<Item = &'a RoleConfig> {
        user.roles.iter().filter_map(|r| self.roles.get(r))
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
