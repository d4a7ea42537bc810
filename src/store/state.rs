//! The store's in-memory state and the rules a mutation must pass to change it.
//!
//! [`State::apply`] checks everything first and only then changes anything, so a refused mutation
//! leaves the state untouched; the same function replays the log at start-up.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::error::{BoundError, RecordError};
use super::records::*;

/// Everything the store holds, as of one sequence number.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub(super) databases: BTreeMap<Name, DatabaseRecord>,
    pub(super) roles: BTreeMap<Name, RoleRecord>,
    pub(super) users: BTreeMap<Name, UserRecord>,
    pub(super) certificates: BTreeMap<Serial, CertRecord>,
    pub(super) ca: Option<CaRecord>,
    pub(super) managed_users: BTreeMap<(Name, Pattern), ManagedUserRecord>,
}

impl State {
    pub fn databases(&self) -> impl Iterator<Item = &DatabaseRecord> {
        self.databases.values()
    }
    pub fn database(&self, name: &str) -> Option<&DatabaseRecord> {
        self.databases.get(&key(name)?)
    }
    pub fn roles(&self) -> impl Iterator<Item = &RoleRecord> {
        self.roles.values()
    }
    pub fn role(&self, name: &str) -> Option<&RoleRecord> {
        self.roles.get(&key(name)?)
    }
    pub fn users(&self) -> impl Iterator<Item = &UserRecord> {
        self.users.values()
    }
    pub fn user(&self, name: &str) -> Option<&UserRecord> {
        self.users.get(&key(name)?)
    }
    pub fn certificates(&self) -> impl Iterator<Item = &CertRecord> {
        self.certificates.values()
    }
    pub fn certificate(&self, serial: &[u8]) -> Option<&CertRecord> {
        self.certificates.get(&Serial::from_slice(serial).ok()?)
    }
    pub fn ca(&self) -> Option<&CaRecord> {
        self.ca.as_ref()
    }
    pub fn managed_users(&self) -> impl Iterator<Item = &ManagedUserRecord> {
        self.managed_users.values()
    }

    /// Check `m` against the records and the store-wide bounds, then apply it. On error nothing
    /// has changed.
    pub fn apply(&mut self, m: &Mutation) -> Result<(), RecordError> {
        self.check(m)?;
        self.commit(m);
        Ok(())
    }

    /// Whether [`State::apply`] would accept `m`, without changing anything.
    pub fn check(&self, m: &Mutation) -> Result<(), RecordError> {
        match m {
            Mutation::PutDatabase(db) => {
                db.validate()?;
                room(
                    &self.databases,
                    &db.name,
                    "databases",
                    "MAX_DATABASES",
                    MAX_DATABASES,
                )
            }
            Mutation::RemoveDatabase(name) => {
                if !self.databases.contains_key(name) {
                    return Err(RecordError::UnknownDatabase {
                        field: "remove database".into(),
                        name: name.to_string(),
                    });
                }
                if let Some(m) = self.managed_users.values().find(|m| m.database == *name) {
                    return Err(RecordError::DatabaseInUse {
                        database: name.to_string(),
                        db_user: m.db_user.to_string(),
                    });
                }
                Ok(())
            }
            Mutation::PutRole(role) => {
                role.validate()?;
                room(&self.roles, &role.name, "roles", "MAX_ROLES", MAX_ROLES)
            }
            Mutation::RemoveRole(name) => {
                if !self.roles.contains_key(name) {
                    return Err(RecordError::UnknownRole {
                        field: "remove role".into(),
                        name: name.to_string(),
                    });
                }
                if let Some(u) = self.users.values().find(|u| u.roles.contains(name)) {
                    return Err(RecordError::RoleInUse {
                        role: name.to_string(),
                        user: u.name.to_string(),
                    });
                }
                Ok(())
            }
            Mutation::PutUser(user) => {
                user.validate()?;
                for role in &user.roles {
                    if !self.roles.contains_key(role) {
                        return Err(RecordError::UnknownRole {
                            field: format!("users.{}.roles", user.name),
                            name: role.to_string(),
                        });
                    }
                }
                if let Some(unix) = &user.unix_user {
                    let other = self
                        .users
                        .values()
                        .find(|o| o.name != user.name && o.unix_user.as_ref() == Some(unix));
                    if let Some(other) = other {
                        return Err(RecordError::DuplicateUnixUser {
                            user: user.name.to_string(),
                            unix_user: unix.to_string(),
                            other: other.name.to_string(),
                        });
                    }
                }
                room(&self.users, &user.name, "users", "MAX_USERS", MAX_USERS)
            }
            Mutation::RemoveUser(name) => {
                if self.users.contains_key(name) {
                    Ok(())
                } else {
                    Err(RecordError::UnknownUser {
                        field: "remove user".into(),
                        name: name.to_string(),
                    })
                }
            }
            Mutation::IssueCert(cert) => {
                cert.validate()?;
                if self.certificates.contains_key(&cert.serial) {
                    return Err(RecordError::DuplicateSerial {
                        serial: SerialHex(&cert.serial).to_string(),
                    });
                }
                if !self.users.contains_key(&cert.user) {
                    return Err(RecordError::UnknownUser {
                        field: format!("certificates.{}.user", SerialHex(&cert.serial)),
                        name: cert.user.to_string(),
                    });
                }
                room(
                    &self.certificates,
                    &cert.serial,
                    "certificates",
                    "MAX_CERTIFICATES",
                    MAX_CERTIFICATES,
                )
            }
            Mutation::RevokeCert { serial, .. } => match self.certificates.get(serial) {
                None => Err(RecordError::UnknownSerial {
                    serial: SerialHex(serial).to_string(),
                }),
                Some(c) if c.revoked_at.is_some() => Err(RecordError::AlreadyRevoked {
                    serial: SerialHex(serial).to_string(),
                }),
                Some(_) => Ok(()),
            },
            Mutation::SetCa(ca) => ca.validate(),
            Mutation::PutManagedUser(mu) => {
                mu.validate()?;
                if !self.databases.contains_key(&mu.database) {
                    return Err(RecordError::UnknownDatabase {
                        field: format!("managed_users.{}.{}.database", mu.database, mu.db_user),
                        name: mu.database.to_string(),
                    });
                }
                room(
                    &self.managed_users,
                    &(mu.database.clone(), mu.db_user.clone()),
                    "managed_users",
                    "MAX_MANAGED_USERS",
                    MAX_MANAGED_USERS,
                )
            }
            Mutation::RemoveManagedUser { database, db_user } => {
                if self
                    .managed_users
                    .contains_key(&(database.clone(), db_user.clone()))
                {
                    Ok(())
                } else {
                    Err(RecordError::UnknownManagedUser {
                        database: database.to_string(),
                        db_user: db_user.to_string(),
                    })
                }
            }
        }
    }

    /// Apply a mutation [`State::check`] accepted.
    fn commit(&mut self, m: &Mutation) {
        match m.clone() {
            Mutation::PutDatabase(db) => {
                self.databases.insert(db.name.clone(), db);
            }
            Mutation::RemoveDatabase(name) => {
                self.databases.remove(&name);
            }
            Mutation::PutRole(role) => {
                self.roles.insert(role.name.clone(), role);
            }
            Mutation::RemoveRole(name) => {
                self.roles.remove(&name);
            }
            Mutation::PutUser(user) => {
                self.users.insert(user.name.clone(), user);
            }
            Mutation::RemoveUser(name) => {
                self.users.remove(&name);
            }
            Mutation::IssueCert(cert) => {
                self.certificates.insert(cert.serial.clone(), cert);
            }
            Mutation::RevokeCert { serial, at } => {
                if let Some(c) = self.certificates.get_mut(&serial) {
                    c.revoked_at = Some(at);
                }
            }
            Mutation::SetCa(ca) => self.ca = Some(ca),
            Mutation::PutManagedUser(mu) => {
                self.managed_users
                    .insert((mu.database.clone(), mu.db_user.clone()), mu);
            }
            Mutation::RemoveManagedUser { database, db_user } => {
                self.managed_users.remove(&(database, db_user));
            }
        }
    }
}

fn key(name: &str) -> Option<Name> {
    Name::try_from(name).ok()
}

/// Refuse a new key once a store-wide collection is full; replacing an existing one is fine.
fn room<K: Ord, V>(
    map: &BTreeMap<K, V>,
    key: &K,
    field: &str,
    bound: &'static str,
    limit: usize,
) -> Result<(), RecordError> {
    if map.len() >= limit && !map.contains_key(key) {
        return Err(RecordError::Bound(BoundError {
            field: field.to_string(),
            bound,
            limit,
            actual: map.len() + 1,
        }));
    }
    Ok(())
}
