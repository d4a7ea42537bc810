//! The one place where older on-disk formats become the current one.
//!
//! Both files carry the format version in their header. Recovery passes every payload (the
//! snapshot body and each log record) of an older version through [`migrate`] before decoding
//! it, so the decoders only ever know [`FORMAT_VERSION`]. A version newer than this binary's is
//! refused before anything is read (a downgrade must never half-understand a record). A store
//! recovered from an older version is compacted at once by [`super::Store::open`], so records
//! of the current format are never appended to a log whose header names an older one.
//!
//! A change to a record bumps [`FORMAT_VERSION`] and adds an arm here that decodes the old
//! types (kept, frozen, in a `vN` module below) and re-encodes them as the current ones.
//!
//! - Version 1 → 2: [`DatabaseRecord`] gained `allow_plaintext_auth` and `legacy_auth`; a
//!   version-1 database has neither (both `false`, what version 1 did — except that an IAM
//!   database without TLS is now refused at its sessions until it says
//!   `allow_plaintext_auth`).
//! - Version 2 → 3: [`RoleRecord`] gained `commands` and `keys` (the command policy); a
//!   version-2 role has neither (every command and key, as before). And
//!   `DatabaseRecord::relay_passthrough` (bool) became `relay` ([`RelayRecord`]: guard,
//!   passthrough, inspect); postcard encodes the first two variants as the bool's 0 and 1, so a
//!   version-2 database decodes as a version-3 one unchanged. Version 1 goes through version 2.
//! - Version 3 → 4: [`ManagedUserRecord`] gained `unmanaged_since` (when the user stopped being
//!   managed, so its secret's grace period survives a restart); a version-3 record was a
//!   managed one (`None`). And a managed database's settings, a JSON string in version 3,
//!   became typed fields ([`ManagedAuthRecord`]); settings that do not parse, or break a rule,
//!   refuse the migration (version 3 refused such a record too). Versions 1 and 2 go through
//!   version 3.
//!
//! [`ManagedUserRecord`]: super::records::ManagedUserRecord
//! [`ManagedAuthRecord`]: super::records::ManagedAuthRecord
//!
//! [`RelayRecord`]: super::records::RelayRecord

use std::borrow::Cow;

use super::codec::{LogEntry, FORMAT_VERSION};
use super::error::FileKind;
use super::records::{DatabaseRecord, ManagedUserRecord, RoleRecord};
use super::state::State;

/// Turn a payload of `file` written by format `version` into the current format's bytes.
pub fn migrate(version: u32, file: FileKind, bytes: &[u8]) -> Result<Cow<'_, [u8]>, String> {
    match version {
        FORMAT_VERSION => Ok(Cow::Borrowed(bytes)),
        v if v > FORMAT_VERSION => Err(format!(
            "version {v} is newer than this bastion's {FORMAT_VERSION}"
        )),
        1..=3 => {
            let v3_state = |bytes| -> Result<v3::State, String> {
                Ok(match version {
                    1 => v2::State::from(decode::<v1::State>(bytes)?).into(),
                    2 => decode::<v2::State>(bytes)?.into(),
                    _ => decode::<v3::State>(bytes)?,
                })
            };
            let v3_entry = |bytes| -> Result<v3::LogEntry, String> {
                Ok(match version {
                    1 => v2::LogEntry::from(decode::<v1::LogEntry>(bytes)?).into(),
                    2 => decode::<v2::LogEntry>(bytes)?.into(),
                    _ => decode::<v3::LogEntry>(bytes)?,
                })
            };
            let current = match file {
                FileKind::Snapshot => postcard::to_stdvec(&State::try_from(v3_state(bytes)?)?),
                FileKind::Log => postcard::to_stdvec(&LogEntry::try_from(v3_entry(bytes)?)?),
            };
            // Encoding into a Vec cannot fail for these types (the codec's own invariant).
            Ok(Cow::Owned(current.expect("postcard encodes store types")))
        }
        v => Err(format!("no migration from version {v}")),
    }
}

/// Decode a whole payload of an old version (trailing bytes are damage, as for the current one).
fn decode<'a, T: serde::Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, String> {
    let (value, rest) = postcard::take_from_bytes::<T>(bytes).map_err(|e| e.to_string())?;
    if !rest.is_empty() {
        return Err(format!("{} trailing bytes in the payload", rest.len()));
    }
    Ok(value)
}

/// Format version 1, frozen: only the types whose encoding differs from the current ones.
pub(super) mod v1 {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Serialize};

    use super::super::records::*;
    use super::v2::RoleRecord;
    use super::v3::{AuthRecord, ManagedUserRecord};

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct DatabaseRecord {
        pub name: Name,
        pub host: heapless::String<MAX_HOST_LEN>,
        pub port: u16,
        pub tls: Option<TlsRecord>,
        pub auth: AuthRecord,
        pub default_db_user: Option<Pattern>,
        pub assume_role: Option<AssumeRoleRecord>,
    }

    #[allow(clippy::large_enum_variant)]
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub enum Mutation {
        PutDatabase(DatabaseRecord),
        RemoveDatabase(Name),
        PutRole(RoleRecord),
        RemoveRole(Name),
        PutUser(UserRecord),
        RemoveUser(Name),
        IssueCert(CertRecord),
        RevokeCert { serial: Serial, at: UnixSeconds },
        SetCa(CaRecord),
        PutManagedUser(ManagedUserRecord),
        RemoveManagedUser { database: Name, db_user: Pattern },
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct LogEntry {
        pub seq: u64,
        pub mutation: Mutation,
    }

    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
    pub struct State {
        pub databases: BTreeMap<Name, DatabaseRecord>,
        pub roles: BTreeMap<Name, RoleRecord>,
        pub users: BTreeMap<Name, UserRecord>,
        pub certificates: BTreeMap<Serial, CertRecord>,
        pub ca: Option<CaRecord>,
        pub managed_users: BTreeMap<(Name, Pattern), ManagedUserRecord>,
    }
}

/// Format version 2, frozen: the types whose encoding differs from the current ones.
pub(super) mod v2 {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Serialize};

    use super::super::records::*;
    use super::v3::{DatabaseRecord, ManagedUserRecord};

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct RoleRecord {
        pub name: Name,
        pub db_users: heapless::Vec<Pattern, MAX_DB_USERS_PER_ROLE>,
        pub db_names: heapless::Vec<Pattern, MAX_DB_NAMES_PER_ROLE>,
    }

    #[allow(clippy::large_enum_variant)]
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub enum Mutation {
        PutDatabase(DatabaseRecord),
        RemoveDatabase(Name),
        PutRole(RoleRecord),
        RemoveRole(Name),
        PutUser(UserRecord),
        RemoveUser(Name),
        IssueCert(CertRecord),
        RevokeCert { serial: Serial, at: UnixSeconds },
        SetCa(CaRecord),
        PutManagedUser(ManagedUserRecord),
        RemoveManagedUser { database: Name, db_user: Pattern },
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct LogEntry {
        pub seq: u64,
        pub mutation: Mutation,
    }

    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
    pub struct State {
        pub databases: BTreeMap<Name, DatabaseRecord>,
        pub roles: BTreeMap<Name, RoleRecord>,
        pub users: BTreeMap<Name, UserRecord>,
        pub certificates: BTreeMap<Serial, CertRecord>,
        pub ca: Option<CaRecord>,
        pub managed_users: BTreeMap<(Name, Pattern), ManagedUserRecord>,
    }
}

/// Format version 3, frozen: the types whose encoding differs from the current ones.
pub(super) mod v3 {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Serialize};

    use super::super::records::*;

    /// Bytes of a managed database's settings as JSON.
    pub const MAX_MANAGED_SETTINGS_LEN: usize = 8192;

    #[allow(clippy::large_enum_variant)]
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub enum AuthRecord {
        Iam {
            service: IamServiceRecord,
            region: Option<heapless::String<MAX_REGION_LEN>>,
            target: heapless::String<MAX_TARGET_LEN>,
            serverless: bool,
        },
        Password {
            password_file: Option<PathText>,
            password_env: Option<heapless::String<MAX_ENV_NAME_LEN>>,
        },
        None,
        /// `{"auth": <the auth table>, "managed_users": [..]}`.
        Managed {
            settings: heapless::String<MAX_MANAGED_SETTINGS_LEN>,
        },
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct DatabaseRecord {
        pub name: Name,
        pub host: heapless::String<MAX_HOST_LEN>,
        pub port: u16,
        pub tls: Option<TlsRecord>,
        pub auth: AuthRecord,
        pub default_db_user: Option<Pattern>,
        pub assume_role: Option<AssumeRoleRecord>,
        pub allow_plaintext_auth: bool,
        pub legacy_auth: bool,
        pub relay: RelayRecord,
        pub allow_addresses: heapless::Vec<(std::net::IpAddr, u8), MAX_ALLOW_ADDRESSES>,
    }

    /// What version 3's JSON settings held.
    #[derive(Debug, Clone, PartialEq, Deserialize)]
    pub struct ManagedSettings {
        pub auth: crate::config::ManagedAuthConfig,
        #[serde(default)]
        pub managed_users: Vec<String>,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct ManagedUserRecord {
        pub database: Name,
        pub db_user: Pattern,
        pub secret_arn: heapless::String<MAX_ARN_LEN>,
        pub last_rotation: Option<UnixSeconds>,
        pub generation: u64,
    }

    #[allow(clippy::large_enum_variant)]
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub enum Mutation {
        PutDatabase(DatabaseRecord),
        RemoveDatabase(Name),
        PutRole(RoleRecord),
        RemoveRole(Name),
        PutUser(UserRecord),
        RemoveUser(Name),
        IssueCert(CertRecord),
        RevokeCert { serial: Serial, at: UnixSeconds },
        SetCa(CaRecord),
        PutManagedUser(ManagedUserRecord),
        RemoveManagedUser { database: Name, db_user: Pattern },
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct LogEntry {
        pub seq: u64,
        pub mutation: Mutation,
    }

    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
    pub struct State {
        pub databases: BTreeMap<Name, DatabaseRecord>,
        pub roles: BTreeMap<Name, RoleRecord>,
        pub users: BTreeMap<Name, UserRecord>,
        pub certificates: BTreeMap<Serial, CertRecord>,
        pub ca: Option<CaRecord>,
        pub managed_users: BTreeMap<(Name, Pattern), ManagedUserRecord>,
    }
}

impl From<v3::ManagedUserRecord> for ManagedUserRecord {
    fn from(m: v3::ManagedUserRecord) -> Self {
        ManagedUserRecord {
            database: m.database,
            db_user: m.db_user,
            secret_arn: m.secret_arn,
            last_rotation: m.last_rotation,
            generation: m.generation,
            unmanaged_since: None,
        }
    }
}

impl TryFrom<v3::DatabaseRecord> for DatabaseRecord {
    type Error = String;

    fn try_from(d: v3::DatabaseRecord) -> Result<Self, String> {
        use super::records::AuthRecord as A;
        use v3::AuthRecord as Old;
        let auth = match d.auth {
            Old::Iam {
                service,
                region,
                target,
                serverless,
            } => A::Iam {
                service,
                region,
                target,
                serverless,
            },
            Old::Password {
                password_file,
                password_env,
            } => A::Password {
                password_file,
                password_env,
            },
            Old::None => A::None,
            Old::Managed { settings } => {
                let at = |f: &str| format!("databases.{}.{f}", d.name);
                let m: v3::ManagedSettings = serde_json::from_str(&settings)
                    .map_err(|e| format!("{}: managed settings: {e}", at("auth")))?;
                A::Managed(
                    super::convert::managed_record(&m.auth, &m.managed_users, &at)
                        .map_err(|e| e.to_string())?,
                )
            }
        };
        let record = DatabaseRecord {
            name: d.name,
            host: d.host,
            port: d.port,
            tls: d.tls,
            auth,
            default_db_user: d.default_db_user,
            assume_role: d.assume_role,
            allow_plaintext_auth: d.allow_plaintext_auth,
            legacy_auth: d.legacy_auth,
            relay: d.relay,
            allow_addresses: d.allow_addresses,
        };
        // Version 3 checked the settings' rules when it read them; so does the migration.
        if matches!(record.auth, super::records::AuthRecord::Managed(_)) {
            super::records::Validate::validate(&record).map_err(|e| e.to_string())?;
        }
        Ok(record)
    }
}

impl TryFrom<v3::LogEntry> for LogEntry {
    type Error = String;

    fn try_from(e: v3::LogEntry) -> Result<Self, String> {
        use super::records::Mutation as M;
        use v3::Mutation as Old;
        let mutation = match e.mutation {
            Old::PutDatabase(d) => M::PutDatabase(d.try_into()?),
            Old::RemoveDatabase(n) => M::RemoveDatabase(n),
            Old::PutRole(r) => M::PutRole(r),
            Old::RemoveRole(n) => M::RemoveRole(n),
            Old::PutUser(u) => M::PutUser(u),
            Old::RemoveUser(n) => M::RemoveUser(n),
            Old::IssueCert(c) => M::IssueCert(c),
            Old::RevokeCert { serial, at } => M::RevokeCert { serial, at },
            Old::SetCa(c) => M::SetCa(c),
            Old::PutManagedUser(m) => M::PutManagedUser(m.into()),
            Old::RemoveManagedUser { database, db_user } => {
                M::RemoveManagedUser { database, db_user }
            }
        };
        Ok(LogEntry {
            seq: e.seq,
            mutation,
        })
    }
}

impl TryFrom<v3::State> for State {
    type Error = String;

    fn try_from(s: v3::State) -> Result<Self, String> {
        Ok(State {
            databases: s
                .databases
                .into_iter()
                .map(|(n, d)| Ok((n, d.try_into()?)))
                .collect::<Result<_, String>>()?,
            roles: s.roles,
            users: s.users,
            certificates: s.certificates,
            ca: s.ca,
            managed_users: s
                .managed_users
                .into_iter()
                .map(|(k, m)| (k, m.into()))
                .collect(),
        })
    }
}

impl From<v2::RoleRecord> for RoleRecord {
    fn from(r: v2::RoleRecord) -> Self {
        RoleRecord {
            name: r.name,
            db_users: r.db_users,
            db_names: r.db_names,
            commands: None,
            keys: None,
        }
    }
}

impl From<v2::LogEntry> for v3::LogEntry {
    fn from(e: v2::LogEntry) -> Self {
        use v2::Mutation as Old;
        use v3::Mutation as M;
        let mutation = match e.mutation {
            Old::PutDatabase(d) => M::PutDatabase(d),
            Old::RemoveDatabase(n) => M::RemoveDatabase(n),
            Old::PutRole(r) => M::PutRole(r.into()),
            Old::RemoveRole(n) => M::RemoveRole(n),
            Old::PutUser(u) => M::PutUser(u),
            Old::RemoveUser(n) => M::RemoveUser(n),
            Old::IssueCert(c) => M::IssueCert(c),
            Old::RevokeCert { serial, at } => M::RevokeCert { serial, at },
            Old::SetCa(c) => M::SetCa(c),
            Old::PutManagedUser(m) => M::PutManagedUser(m),
            Old::RemoveManagedUser { database, db_user } => {
                M::RemoveManagedUser { database, db_user }
            }
        };
        v3::LogEntry {
            seq: e.seq,
            mutation,
        }
    }
}

impl From<v2::State> for v3::State {
    fn from(s: v2::State) -> Self {
        v3::State {
            databases: s.databases,
            roles: s.roles.into_iter().map(|(n, r)| (n, r.into())).collect(),
            users: s.users,
            certificates: s.certificates,
            ca: s.ca,
            managed_users: s.managed_users,
        }
    }
}

impl From<v1::DatabaseRecord> for v3::DatabaseRecord {
    fn from(d: v1::DatabaseRecord) -> Self {
        v3::DatabaseRecord {
            name: d.name,
            host: d.host,
            port: d.port,
            tls: d.tls,
            auth: d.auth,
            default_db_user: d.default_db_user,
            assume_role: d.assume_role,
            allow_plaintext_auth: false,
            legacy_auth: false,
            relay: super::records::RelayRecord::Guard,
            allow_addresses: heapless::Vec::new(),
        }
    }
}

impl From<v1::LogEntry> for v2::LogEntry {
    fn from(e: v1::LogEntry) -> Self {
        use v1::Mutation as Old;
        use v2::Mutation as M;
        let mutation = match e.mutation {
            Old::PutDatabase(d) => M::PutDatabase(d.into()),
            Old::RemoveDatabase(n) => M::RemoveDatabase(n),
            Old::PutRole(r) => M::PutRole(r),
            Old::RemoveRole(n) => M::RemoveRole(n),
            Old::PutUser(u) => M::PutUser(u),
            Old::RemoveUser(n) => M::RemoveUser(n),
            Old::IssueCert(c) => M::IssueCert(c),
            Old::RevokeCert { serial, at } => M::RevokeCert { serial, at },
            Old::SetCa(c) => M::SetCa(c),
            Old::PutManagedUser(m) => M::PutManagedUser(m),
            Old::RemoveManagedUser { database, db_user } => {
                M::RemoveManagedUser { database, db_user }
            }
        };
        v2::LogEntry {
            seq: e.seq,
            mutation,
        }
    }
}

impl From<v1::State> for v2::State {
    fn from(s: v1::State) -> Self {
        v2::State {
            databases: s
                .databases
                .into_iter()
                .map(|(name, d)| (name, d.into()))
                .collect(),
            roles: s.roles,
            users: s.users,
            certificates: s.certificates,
            ca: s.ca,
            managed_users: s.managed_users,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::records::{AuthRecord, Mutation, Validate};
    use crate::store::test_support::{db, n};

    /// A current database record without managed settings, as version 3 held it.
    fn v3_db(d: DatabaseRecord) -> v3::DatabaseRecord {
        let auth = match d.auth {
            AuthRecord::Iam {
                service,
                region,
                target,
                serverless,
            } => v3::AuthRecord::Iam {
                service,
                region,
                target,
                serverless,
            },
            AuthRecord::Password {
                password_file,
                password_env,
            } => v3::AuthRecord::Password {
                password_file,
                password_env,
            },
            AuthRecord::None => v3::AuthRecord::None,
            AuthRecord::Managed(_) => unreachable!("test records are not managed"),
        };
        v3::DatabaseRecord {
            name: d.name,
            host: d.host,
            port: d.port,
            tls: d.tls,
            auth,
            default_db_user: d.default_db_user,
            assume_role: d.assume_role,
            allow_plaintext_auth: d.allow_plaintext_auth,
            legacy_auth: d.legacy_auth,
            relay: d.relay,
            allow_addresses: d.allow_addresses,
        }
    }

    fn v1_db(name: &str) -> v1::DatabaseRecord {
        let d = v3_db(db(name, 6379, 0));
        v1::DatabaseRecord {
            name: d.name,
            host: d.host,
            port: d.port,
            tls: None,
            auth: d.auth,
            default_db_user: d.default_db_user,
            assume_role: d.assume_role,
        }
    }

    #[test]
    fn current_version_passes_through_newer_and_unknown_are_refused() {
        assert_eq!(
            &*migrate(FORMAT_VERSION, FileKind::Log, b"x").unwrap(),
            b"x"
        );
        assert!(migrate(0, FileKind::Log, b"x").is_err());
        assert!(migrate(FORMAT_VERSION + 1, FileKind::Log, b"x").is_err());
    }

    #[test]
    fn a_version_2_relay_bool_decodes_as_the_relay_mode() {
        use crate::store::records::RelayRecord;
        // Version 2's field was a bool: `relay_passthrough`.
        for (passthrough, mode) in [
            (false, RelayRecord::Guard),
            (true, RelayRecord::Passthrough),
        ] {
            let mut current = db("cache", 6379, 0);
            current.relay = mode;
            let v3 = postcard::to_stdvec(&current).unwrap();
            // The bool is the last fixed field before `allow_addresses` (empty: one byte).
            let at = v3.len() - 2;
            assert_eq!(v3[at], u8::from(passthrough));
            // A version-2 log entry carrying it migrates to a version-3 one with that mode.
            let entry = v2::LogEntry {
                seq: 1,
                mutation: v2::Mutation::PutDatabase(v3_db(current)),
            };
            let v2_bytes = postcard::to_stdvec(&entry).unwrap();
            let migrated = migrate(2, FileKind::Log, &v2_bytes).unwrap();
            let back: LogEntry = decode(&migrated).unwrap();
            let Mutation::PutDatabase(back) = back.mutation else {
                panic!("{back:?}")
            };
            assert_eq!(back.relay, mode);
            assert_eq!(
                postcard::to_stdvec(&passthrough).unwrap(),
                [u8::from(passthrough)]
            );
        }
        let mut inspect = db("cache", 6379, 0);
        inspect.relay = RelayRecord::Inspect;
        let bytes = postcard::to_stdvec(&inspect).unwrap();
        assert_eq!(bytes[bytes.len() - 2], 2);
        // A version-2 binary (a bool) refuses it rather than misreading it.
        assert!(postcard::from_bytes::<bool>(&[2]).is_err());
    }

    #[test]
    fn version_1_log_entries_and_snapshots_decode_with_the_new_fields_off() {
        let old = v1::LogEntry {
            seq: 7,
            mutation: v1::Mutation::PutDatabase(v1_db("cache")),
        };
        let bytes = postcard::to_stdvec(&old).unwrap();
        // The current decoder cannot read it as is: the migration is what makes it readable.
        assert!(decode::<LogEntry>(&bytes).is_err());
        let entry: LogEntry = decode(&migrate(1, FileKind::Log, &bytes).unwrap()).unwrap();
        let Mutation::PutDatabase(d) = entry.mutation else {
            panic!("{entry:?}")
        };
        assert_eq!(entry.seq, 7);
        assert!(matches!(d.auth, AuthRecord::Iam { .. }));
        assert!(!d.allow_plaintext_auth && !d.legacy_auth);

        let remove = v1::LogEntry {
            seq: 8,
            mutation: v1::Mutation::RemoveRole(n("ops")),
        };
        let bytes = postcard::to_stdvec(&remove).unwrap();
        let entry: LogEntry = decode(&migrate(1, FileKind::Log, &bytes).unwrap()).unwrap();
        assert_eq!(entry.mutation, Mutation::RemoveRole(n("ops")));

        let mut state = v1::State::default();
        state.databases.insert(n("cache"), v1_db("cache"));
        let bytes = postcard::to_stdvec(&state).unwrap();
        let state: State = decode(&migrate(1, FileKind::Snapshot, &bytes).unwrap()).unwrap();
        let d = state.database("cache").unwrap();
        assert_eq!(d.port, 6379);
        assert!(!d.allow_plaintext_auth);

        assert!(migrate(1, FileKind::Snapshot, b"\xff\xff").is_err());
    }

    #[test]
    fn version_2_roles_decode_without_a_command_policy() {
        let v2_role = v2::RoleRecord {
            name: n("ops"),
            db_users: heapless::Vec::new(),
            db_names: heapless::Vec::from_slice(&[crate::store::test_support::p("*")]).unwrap(),
        };
        let old = v2::LogEntry {
            seq: 3,
            mutation: v2::Mutation::PutRole(v2_role.clone()),
        };
        let bytes = postcard::to_stdvec(&old).unwrap();
        assert!(
            decode::<LogEntry>(&bytes).is_err(),
            "the migration is needed"
        );
        let entry: LogEntry = decode(&migrate(2, FileKind::Log, &bytes).unwrap()).unwrap();
        let Mutation::PutRole(role) = entry.mutation else {
            panic!("{entry:?}")
        };
        assert_eq!((role.name.as_str(), role.db_names.len()), ("ops", 1));
        assert_eq!((role.commands, role.keys), (None, None));

        let mut state = v2::State::default();
        state.roles.insert(n("ops"), v2_role.clone());
        state
            .databases
            .insert(n("cache"), v3_db(db("cache", 6379, 0)));
        let bytes = postcard::to_stdvec(&state).unwrap();
        let state: State = decode(&migrate(2, FileKind::Snapshot, &bytes).unwrap()).unwrap();
        assert!(state.database("cache").is_some());
        assert_eq!(state.roles().count(), 1);

        // Version 1 roles go through version 2.
        let old = v1::LogEntry {
            seq: 4,
            mutation: v1::Mutation::PutRole(v2_role),
        };
        let bytes = postcard::to_stdvec(&old).unwrap();
        let entry: LogEntry = decode(&migrate(1, FileKind::Log, &bytes).unwrap()).unwrap();
        assert!(matches!(entry.mutation, Mutation::PutRole(r) if r.commands.is_none()));
    }

    #[test]
    fn version_3_managed_users_decode_as_still_managed() {
        let old = v3::ManagedUserRecord {
            database: n("cache"),
            db_user: crate::store::test_support::p("app"),
            secret_arn: heapless::String::try_from("arn:aws:secretsmanager:us-east-1:1:secret:x")
                .unwrap(),
            last_rotation: Some(1_700_000_000),
            generation: 2,
        };
        let entry = v3::LogEntry {
            seq: 5,
            mutation: v3::Mutation::PutManagedUser(old.clone()),
        };
        let bytes = postcard::to_stdvec(&entry).unwrap();
        assert!(
            decode::<LogEntry>(&bytes).is_err(),
            "the migration is needed"
        );
        let entry: LogEntry = decode(&migrate(3, FileKind::Log, &bytes).unwrap()).unwrap();
        let Mutation::PutManagedUser(m) = entry.mutation else {
            panic!("{entry:?}")
        };
        assert_eq!((m.generation, m.unmanaged_since), (2, None));
        assert_eq!(m.secret_arn, old.secret_arn);

        let mut state = v3::State::default();
        state
            .databases
            .insert(n("cache"), v3_db(db("cache", 6379, 0)));
        state
            .managed_users
            .insert((old.database.clone(), old.db_user.clone()), old.clone());
        let bytes = postcard::to_stdvec(&state).unwrap();
        let state: State = decode(&migrate(3, FileKind::Snapshot, &bytes).unwrap()).unwrap();
        let m: Vec<_> = state.managed_users().collect();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].unmanaged_since, None);
        assert_eq!(m[0].last_rotation, Some(1_700_000_000));

        // Versions 1 and 2 carry version 3's managed users through.
        let v1 = v1::LogEntry {
            seq: 6,
            mutation: v1::Mutation::PutManagedUser(old),
        };
        let bytes = postcard::to_stdvec(&v1).unwrap();
        let entry: LogEntry = decode(&migrate(1, FileKind::Log, &bytes).unwrap()).unwrap();
        assert!(
            matches!(entry.mutation, Mutation::PutManagedUser(m) if m.unmanaged_since.is_none())
        );
    }

    #[test]
    fn version_3_managed_settings_become_typed_fields_or_refuse_the_migration() {
        let settings = r#"{"auth":{"engine":"valkey","admin_user":"adm","admin_password_file":"/etc/bastion/adm.pw","secret_prefix":"corp","rotation_interval":"5m"},"managed_users":["app","reporting"]}"#;
        let mut old = v3_db(db("owned", 6379, 2));
        old.auth = v3::AuthRecord::Managed {
            settings: heapless::String::try_from(settings).unwrap(),
        };
        let entry = v3::LogEntry {
            seq: 3,
            mutation: v3::Mutation::PutDatabase(old.clone()),
        };
        let bytes = postcard::to_stdvec(&entry).unwrap();
        let entry: LogEntry = decode(&migrate(3, FileKind::Log, &bytes).unwrap()).unwrap();
        let Mutation::PutDatabase(d) = entry.mutation else {
            panic!("{entry:?}")
        };
        let AuthRecord::Managed(m) = &d.auth else {
            panic!("{:?}", d.auth)
        };
        assert_eq!(m.engine, Some(crate::store::records::EngineRecord::Valkey));
        assert_eq!(m.admin_user.as_deref(), Some("adm"));
        assert_eq!(m.rotation_interval_ms, Some(300_000));
        assert_eq!(m.secret_grace_period_ms, None);
        let users: Vec<&str> = m.managed_users.iter().map(|u| u.as_str()).collect();
        assert_eq!(users, ["app", "reporting"]);
        d.validate().unwrap();

        // Settings that break a rule (no managed_users for an engine) refuse the migration,
        // naming the database.
        old.auth = v3::AuthRecord::Managed {
            settings: heapless::String::try_from(
                r#"{"auth":{"engine":"redis","admin_user":"a","admin_password_file":"/p"}}"#,
            )
            .unwrap(),
        };
        let mut state = v3::State::default();
        state.databases.insert(n("owned"), old);
        let bytes = postcard::to_stdvec(&state).unwrap();
        let e = migrate(3, FileKind::Snapshot, &bytes).unwrap_err();
        assert!(e.contains("owned") && e.contains("managed_users"), "{e}");
    }

    /// A store written by format 1 on disk: it opens with every record, is rewritten in the
    /// current format at once, and takes (and keeps) new records.
    #[test]
    fn a_version_1_store_opens_is_rewritten_and_keeps_working() {
        use crate::store::codec::{self, Header, HEADER_LEN};
        use crate::store::{Store, LOG_FILE, SNAPSHOT_FILE};
        use std::os::unix::fs::PermissionsExt;

        let tmp = tempfile::tempdir().unwrap();
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let dir = tmp.path().join("store");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let header = |magic, seq| {
            codec::encode_header(
                magic,
                Header {
                    version: 1,
                    generation: 1,
                    seq,
                },
            )
        };
        let mut state = v1::State::default();
        state.databases.insert(n("cache"), v1_db("cache"));
        let mut snap = header(codec::SNAPSHOT_MAGIC, 1).to_vec();
        snap.extend(codec::encode_frame(&postcard::to_stdvec(&state).unwrap()));
        let mut log = header(codec::LOG_MAGIC, 1).to_vec();
        let entry = v1::LogEntry {
            seq: 2,
            mutation: v1::Mutation::PutDatabase(v1_db("other")),
        };
        log.extend(codec::encode_frame(&postcard::to_stdvec(&entry).unwrap()));
        std::fs::write(dir.join(SNAPSHOT_FILE), snap).unwrap();
        std::fs::write(dir.join(LOG_FILE), log).unwrap();

        let mut store = Store::open(&dir).unwrap();
        assert_eq!(store.recovery_report().migrated_from, Some(1));
        assert_eq!(store.last_seq().0, 2);
        assert!(store.state().database("cache").is_some());
        assert!(!store.state().database("other").unwrap().legacy_auth);
        for file in [SNAPSHOT_FILE, LOG_FILE] {
            let bytes = std::fs::read(dir.join(file)).unwrap();
            let version = u32::from_le_bytes(bytes[8..12].try_into().unwrap());
            assert_eq!(version, FORMAT_VERSION, "{file}");
        }
        let mut legacy = db("pw", 6380, 1);
        legacy.legacy_auth = true;
        store.apply(Mutation::PutDatabase(legacy.clone())).unwrap();
        drop(store);

        let store = Store::open(&dir).unwrap();
        assert_eq!(store.recovery_report().migrated_from, None);
        assert_eq!(store.state().database("pw"), Some(&legacy));
        assert_eq!(store.state().databases().count(), 3);
        assert!(std::fs::metadata(dir.join(LOG_FILE)).unwrap().len() > HEADER_LEN as u64);
    }
}
