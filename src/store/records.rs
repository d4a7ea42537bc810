//! The records the store keeps, their bounds, and the checks every record passes before it is
//! written.
//!
//! Every variable-length field is a `heapless` type whose capacity is one of the named `MAX_*`
//! constants below, so a record that decoded is already within its bounds. Text that comes in as
//! `&str` goes through [`text`] (or [`name`]) and is refused with a [`BoundError`] that names the
//! bound and the field. No record holds a secret: passwords stay in their file or environment
//! variable, and managed users are kept by secret ARN only.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::error::{BoundError, RecordError};

/// Bytes in a database, role or user name (the boot config's `check_name` uses the same limit).
pub const MAX_NAME_LEN: usize = 64;
/// Bytes in a `db_users` / `db_names` pattern of a role, or a database user name.
pub const MAX_PATTERN_LEN: usize = 64;
/// Bytes in an upstream host name or address (a DNS name is at most 253).
pub const MAX_HOST_LEN: usize = 253;
/// Bytes in a file path kept in a record (a CA bundle, a password file).
pub const MAX_PATH_LEN: usize = 1024;
/// Bytes in an AWS region name.
pub const MAX_REGION_LEN: usize = 32;
/// Bytes in an IAM target (replication group id, MemoryDB cluster or serverless cache name).
pub const MAX_TARGET_LEN: usize = 64;
/// Bytes in an environment variable name (`password_env`).
pub const MAX_ENV_NAME_LEN: usize = 128;
/// Bytes in a local Unix account name or numeric uid (Linux allows 32).
pub const MAX_UNIX_USER_LEN: usize = 32;
/// Bytes in a Secrets Manager ARN (AWS allows 2048).
pub const MAX_ARN_LEN: usize = 2048;
/// Longest `external_id` (STS allows 1224).
pub const MAX_EXTERNAL_ID_LEN: usize = 1224;
/// Longest `session_name` (STS allows 64).
pub const MAX_SESSION_NAME_LEN: usize = 64;
/// Bytes in a certificate serial number (RFC 5280 allows 20 octets).
pub const MAX_SERIAL_LEN: usize = 20;
/// Roles one user may hold.
pub const MAX_ROLES_PER_USER: usize = 16;
/// `db_users` patterns in one role.
pub const MAX_DB_USERS_PER_ROLE: usize = 32;
/// `db_names` patterns in one role.
pub const MAX_DB_NAMES_PER_ROLE: usize = 32;
/// Bytes of a role's `commands` or `keys` rules (the policy's own bound).
pub const MAX_RULES_LEN: usize = crate::proxy::inspect::policy::MAX_RULES_LEN;
/// `allow_addresses` ranges of one database.
pub const MAX_ALLOW_ADDRESSES: usize = 16;
/// Databases in the store.
pub const MAX_DATABASES: usize = 1024;
/// Roles in the store.
pub const MAX_ROLES: usize = 1024;
/// Users in the store.
pub const MAX_USERS: usize = 4096;
/// Issued certificates (live, expired and revoked) in the store.
pub const MAX_CERTIFICATES: usize = 65_536;
/// `managed_users` of one managed database.
pub const MAX_MANAGED_USERS_PER_DB: usize = 128;
/// Bytes in a managed database's `secret_prefix` (its own rule allows 128).
pub const MAX_SECRET_PREFIX_LEN: usize = 128;
/// Managed database users (rotated secrets) in the store.
pub const MAX_MANAGED_USERS: usize = 1024;

/// A database, role or user name: 1..=64 bytes of `[A-Za-z0-9._-]`, not starting with '.'.
pub type Name = heapless::String<MAX_NAME_LEN>;
/// A role pattern (`*` wildcards) or a database user name.
pub type Pattern = heapless::String<MAX_PATTERN_LEN>;
/// A path kept as UTF-8 text.
pub type PathText = heapless::String<MAX_PATH_LEN>;
/// A certificate serial number, big-endian bytes as in the certificate.
pub type Serial = heapless::Vec<u8, MAX_SERIAL_LEN>;
/// Seconds since the Unix epoch.
pub type UnixSeconds = i64;

/// One upstream endpoint (the store's form of [`crate::config::DatabaseConfig`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseRecord {
    pub name: Name,
    pub host: heapless::String<MAX_HOST_LEN>,
    pub port: u16,
    /// Upstream TLS; `None` means plaintext.
    pub tls: Option<TlsRecord>,
    pub auth: AuthRecord,
    pub default_db_user: Option<Pattern>,
    /// Per-database STS role (IAM mode only): the token is signed with its credentials.
    pub assume_role: Option<AssumeRoleRecord>,
    /// `allow_plaintext_auth`: IAM tokens may go to an upstream without TLS (test rigs).
    /// Added in format version 2.
    pub allow_plaintext_auth: bool,
    /// `legacy_auth`: one-argument `AUTH <password>`, no db-users. Added in format version 2.
    pub legacy_auth: bool,
    /// `relay`. Added in format version 2 as a bool (`passthrough` or not); from version 3 an
    /// enum whose first two variants encode exactly as that bool did (postcard: one varint
    /// byte, 0 or 1), so version-2 payloads decode unchanged.
    pub relay: RelayRecord,
    /// `allow_addresses`: (network address, prefix length). Added in format version 2.
    pub allow_addresses: heapless::Vec<(std::net::IpAddr, u8), MAX_ALLOW_ADDRESSES>,
}

/// A database's relay mode. The variant order is the on-disk encoding: never reorder.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum RelayRecord {
    #[default]
    Guard,
    Passthrough,
    /// Added in format version 3.
    Inspect,
}

/// `assume_role_arn` / `external_id` / `session_name` of a database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssumeRoleRecord {
    pub role_arn: heapless::String<MAX_ARN_LEN>,
    pub external_id: Option<heapless::String<MAX_EXTERNAL_ID_LEN>>,
    pub session_name: Option<heapless::String<MAX_SESSION_NAME_LEN>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsRecord {
    pub ca_file: Option<PathText>,
    pub server_name: Option<heapless::String<MAX_HOST_LEN>>,
}

/// How the bastion authenticates upstream; every mode of [`crate::config::AuthConfig`].
// Fixed-capacity fields by design (bounded, no allocation per field), so variants differ in size.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthRecord {
    Iam {
        service: IamServiceRecord,
        /// `None`: the instance's region, resolved at run time ([`crate::aws::region`]).
        region: Option<heapless::String<MAX_REGION_LEN>>,
        target: heapless::String<MAX_TARGET_LEN>,
        serverless: bool,
    },
    /// Where the password is read from; never the password itself.
    Password {
        password_file: Option<PathText>,
        password_env: Option<heapless::String<MAX_ENV_NAME_LEN>>,
    },
    None,
    /// `mode = "managed"`: the `auth` table and `managed_users`, checked on write and on read
    /// by the rules of a declaration. No password: those live in Secrets Manager and the
    /// admin's password file. (Format 3 kept these as a JSON string.)
    Managed(ManagedAuthRecord),
}

/// A managed database's settings ([`crate::config::ManagedAuthConfig`] and `managed_users`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManagedAuthRecord {
    /// AWS: the cache's service (with `target`); `None`: self-hosted (with `engine`).
    pub service: Option<IamServiceRecord>,
    pub engine: Option<EngineRecord>,
    pub region: Option<heapless::String<MAX_REGION_LEN>>,
    pub target: Option<heapless::String<MAX_TARGET_LEN>>,
    pub serverless: bool,
    pub admin_user: Option<Pattern>,
    pub admin_password_file: Option<PathText>,
    pub secret_prefix: Option<heapless::String<MAX_SECRET_PREFIX_LEN>>,
    pub kms_key_id: Option<heapless::String<MAX_ARN_LEN>>,
    /// Milliseconds.
    pub rotation_interval_ms: Option<u64>,
    /// Milliseconds.
    pub secret_grace_period_ms: Option<u64>,
    pub managed_users: heapless::Vec<Pattern, MAX_MANAGED_USERS_PER_DB>,
}

/// A self-hosted managed database's engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EngineRecord {
    Redis,
    Valkey,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum IamServiceRecord {
    Elasticache,
    Memorydb,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleRecord {
    pub name: Name,
    pub db_users: heapless::Vec<Pattern, MAX_DB_USERS_PER_ROLE>,
    pub db_names: heapless::Vec<Pattern, MAX_DB_NAMES_PER_ROLE>,
    /// Command policy: ACL command rules (`+@read -@dangerous`). Added in format version 3.
    pub commands: Option<Rules>,
    /// Command policy: key patterns (`~app:*`). Added in format version 3.
    pub keys: Option<Rules>,
}

/// A role's `commands` or `keys` rules as written.
pub type Rules = heapless::String<MAX_RULES_LEN>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    pub name: Name,
    pub roles: heapless::Vec<Name, MAX_ROLES_PER_USER>,
    /// Local Unix account (name or numeric uid) whose socket connections are this user.
    pub unix_user: Option<heapless::String<MAX_UNIX_USER_LEN>>,
}

/// A client certificate the on-box CA issued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertRecord {
    pub serial: Serial,
    pub user: Name,
    pub not_before: UnixSeconds,
    pub not_after: UnixSeconds,
    /// When it was revoked; a revoked certificate is refused at the handshake.
    pub revoked_at: Option<UnixSeconds>,
}

/// What the store remembers about the on-box CA (its key and certificate live in files).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaRecord {
    pub common_name: Name,
    /// SHA-256 of the CA certificate's DER.
    pub fingerprint_sha256: [u8; 32],
    pub not_before: UnixSeconds,
    pub not_after: UnixSeconds,
}

/// A database user whose password the bastion rotates through Secrets Manager.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManagedUserRecord {
    pub database: Name,
    pub db_user: Pattern,
    pub secret_arn: heapless::String<MAX_ARN_LEN>,
    pub last_rotation: Option<UnixSeconds>,
    /// Bumped at every rotation.
    pub generation: u64,
    /// When the bastion saw the user stop being managed (tag removed or false, dropped from
    /// `managed_users`); its secret `secret_arn` is deleted `secret_grace_period` later.
    /// `None`: managed.
    pub unmanaged_since: Option<UnixSeconds>,
}

/// One change to the store: what the log holds, one per record.
// Fixed-capacity records by design (bounded, no allocation per field), so variants differ in size.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mutation {
    /// Add a database, or replace the one of that name.
    PutDatabase(DatabaseRecord),
    RemoveDatabase(Name),
    /// Add a role, or replace the one of that name.
    PutRole(RoleRecord),
    RemoveRole(Name),
    /// Add a user, or replace the one of that name.
    PutUser(UserRecord),
    RemoveUser(Name),
    IssueCert(CertRecord),
    RevokeCert {
        serial: Serial,
        at: UnixSeconds,
    },
    SetCa(CaRecord),
    /// Add a managed user, or replace the one for that (database, db_user).
    PutManagedUser(ManagedUserRecord),
    RemoveManagedUser {
        database: Name,
        db_user: Pattern,
    },
}

/// Which characters a text field may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charset {
    /// `[A-Za-z0-9._-]`, not starting with '.' (names end up in file names, SNI, CNs).
    Name,
    /// Printable ASCII without spaces (patterns, hosts, regions, ARNs, Unix users).
    Token,
    /// `[A-Za-z0-9_]` (environment variable names).
    EnvName,
    /// Any UTF-8 without control characters (paths).
    Path,
}

impl Charset {
    fn admits(self, s: &str) -> bool {
        match self {
            Charset::Name => {
                !s.starts_with('.')
                    && s.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            }
            Charset::Token => s.bytes().all(|b| b.is_ascii_graphic()),
            Charset::EnvName => s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
            Charset::Path => !s.chars().any(char::is_control),
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Charset::Name => "characters of [A-Za-z0-9._-], not starting with '.'",
            Charset::Token => "printable ASCII without spaces",
            Charset::EnvName => "characters of [A-Za-z0-9_]",
            Charset::Path => "text without control characters",
        }
    }
}

/// Turn `s` into a bounded text field: non-empty, at most `N` bytes (the bound called `bound`),
/// only characters of `charset`.
pub fn text<const N: usize>(
    field: &str,
    bound: &'static str,
    charset: Charset,
    s: &str,
) -> Result<heapless::String<N>, RecordError> {
    let out = heapless::String::<N>::try_from(s).map_err(|_| {
        RecordError::Bound(BoundError {
            field: field.to_string(),
            bound,
            limit: N,
            actual: s.len(),
        })
    })?;
    check_text(field, charset, &out)?;
    Ok(out)
}

/// A database, role or user name.
pub fn name(field: &str, s: &str) -> Result<Name, RecordError> {
    text(field, "MAX_NAME_LEN", Charset::Name, s)
}

/// A role pattern or database user name.
pub fn pattern(field: &str, s: &str) -> Result<Pattern, RecordError> {
    text(field, "MAX_PATTERN_LEN", Charset::Token, s)
}

/// Collect `items` into a bounded list, refusing more than `N` (the bound called `bound`).
pub fn list<T, const N: usize>(
    field: &str,
    bound: &'static str,
    items: impl ExactSizeIterator<Item = Result<T, RecordError>>,
) -> Result<heapless::Vec<T, N>, RecordError> {
    let actual = items.len();
    if actual > N {
        return Err(RecordError::Bound(BoundError {
            field: field.to_string(),
            bound,
            limit: N,
            actual,
        }));
    }
    let mut out = heapless::Vec::new();
    for item in items {
        // Cannot fail: the length was checked against the capacity above.
        let _ = out.push(item?);
    }
    Ok(out)
}

/// A serial number: 1..=20 bytes.
pub fn serial(field: &str, bytes: &[u8]) -> Result<Serial, RecordError> {
    let out = Serial::from_slice(bytes).map_err(|_| {
        RecordError::Bound(BoundError {
            field: field.to_string(),
            bound: "MAX_SERIAL_LEN",
            limit: MAX_SERIAL_LEN,
            actual: bytes.len(),
        })
    })?;
    if out.is_empty() {
        return Err(RecordError::Empty {
            field: field.to_string(),
        });
    }
    Ok(out)
}

/// A role's command policy compiles; the error names the setting and the rule.
pub fn check_rules(role: &crate::config::RoleConfig) -> Result<(), RecordError> {
    role.policy()
        .map(|_| ())
        .map_err(|(setting, e)| RecordError::Rules {
            field: format!("roles.{}.{setting}", role.name),
            message: e.to_string(),
        })
}

fn check_text(field: &str, charset: Charset, s: &str) -> Result<(), RecordError> {
    if s.is_empty() {
        return Err(RecordError::Empty {
            field: field.to_string(),
        });
    }
    if !charset.admits(s) {
        return Err(RecordError::Charset {
            field: field.to_string(),
            value: s.escape_debug().to_string(),
            expected: charset.describe(),
        });
    }
    Ok(())
}

/// Record-local checks (charsets, non-empty fields, consistent modes). The capacities are already
/// enforced by the types; references between records are [`super::state::State`]'s business.
pub trait Validate {
    fn validate(&self) -> Result<(), RecordError>;
}

impl Validate for DatabaseRecord {
    fn validate(&self) -> Result<(), RecordError> {
        let at = |f: &str| format!("databases.{}.{f}", self.name);
        check_text("database.name", Charset::Name, &self.name)?;
        check_text(&at("host"), Charset::Token, &self.host)?;
        if let Some(tls) = &self.tls {
            if let Some(ca) = &tls.ca_file {
                check_text(&at("tls.ca_file"), Charset::Path, ca)?;
            }
            if let Some(sn) = &tls.server_name {
                check_text(&at("tls.server_name"), Charset::Token, sn)?;
            }
        }
        if let Some(u) = &self.default_db_user {
            check_text(&at("default_db_user"), Charset::Token, u)?;
        }
        match &self.auth {
            AuthRecord::Iam { region, target, .. } => {
                if let Some(region) = region {
                    check_text(&at("auth.region"), Charset::Token, region)?;
                }
                check_text(&at("auth.target"), Charset::Token, target)?;
            }
            AuthRecord::Password {
                password_file,
                password_env,
            } => {
                if password_file.is_some() == password_env.is_some() {
                    return Err(RecordError::PasswordSource {
                        database: self.name.to_string(),
                    });
                }
                if let Some(p) = password_file {
                    check_text(&at("auth.password_file"), Charset::Path, p)?;
                }
                if let Some(e) = password_env {
                    check_text(&at("auth.password_env"), Charset::EnvName, e)?;
                }
            }
            AuthRecord::None => {}
            AuthRecord::Managed(m) => {
                let texts = [
                    ("auth.region", Charset::Token, m.region.as_deref()),
                    ("auth.target", Charset::Token, m.target.as_deref()),
                    ("auth.admin_user", Charset::Token, m.admin_user.as_deref()),
                    (
                        "auth.admin_password_file",
                        Charset::Path,
                        m.admin_password_file.as_deref(),
                    ),
                    (
                        "auth.secret_prefix",
                        Charset::Token,
                        m.secret_prefix.as_deref(),
                    ),
                    ("auth.kms_key_id", Charset::Token, m.kms_key_id.as_deref()),
                ];
                for (field, charset, value) in texts {
                    if let Some(value) = value {
                        check_text(&at(field), charset, value)?;
                    }
                }
                for user in &m.managed_users {
                    check_text(&at("managed_users"), Charset::Token, user)?;
                }
                // The rules of a declaration (`config/managed.rs`), on the typed settings.
                let (auth, users) = super::convert::managed_config(m);
                auth.check(&users)
                    .map_err(|(field, message)| RecordError::Managed {
                        database: self.name.to_string(),
                        message: format!("{field}: {message}"),
                    })?;
            }
        }
        Ok(())
    }
}

impl Validate for RoleRecord {
    fn validate(&self) -> Result<(), RecordError> {
        check_text("role.name", Charset::Name, &self.name)?;
        for p in &self.db_users {
            check_text(&format!("roles.{}.db_users", self.name), Charset::Token, p)?;
        }
        for p in &self.db_names {
            check_text(&format!("roles.{}.db_names", self.name), Charset::Token, p)?;
        }
        for (field, rules) in [("commands", &self.commands), ("keys", &self.keys)] {
            if let Some(rules) = rules {
                check_text(
                    &format!("roles.{}.{field}", self.name),
                    Charset::Path,
                    rules,
                )?;
            }
        }
        check_rules(&crate::config::RoleConfig::from(self))
    }
}

impl Validate for UserRecord {
    fn validate(&self) -> Result<(), RecordError> {
        check_text("user.name", Charset::Name, &self.name)?;
        for r in &self.roles {
            check_text(&format!("users.{}.roles", self.name), Charset::Name, r)?;
        }
        if let Some(u) = &self.unix_user {
            check_text(&format!("users.{}.unix_user", self.name), Charset::Token, u)?;
        }
        Ok(())
    }
}

impl Validate for CertRecord {
    fn validate(&self) -> Result<(), RecordError> {
        if self.serial.is_empty() {
            return Err(RecordError::Empty {
                field: "certificate.serial".into(),
            });
        }
        check_text("certificate.user", Charset::Name, &self.user)?;
        if self.not_after <= self.not_before {
            return Err(RecordError::Validity {
                field: format!("certificates.{}", SerialHex(&self.serial)),
            });
        }
        Ok(())
    }
}

impl Validate for CaRecord {
    fn validate(&self) -> Result<(), RecordError> {
        check_text("ca.common_name", Charset::Name, &self.common_name)?;
        if self.not_after <= self.not_before {
            return Err(RecordError::Validity { field: "ca".into() });
        }
        Ok(())
    }
}

impl Validate for ManagedUserRecord {
    fn validate(&self) -> Result<(), RecordError> {
        check_text("managed_user.database", Charset::Name, &self.database)?;
        check_text("managed_user.db_user", Charset::Token, &self.db_user)?;
        check_text(
            &format!(
                "managed_users.{}.{}.secret_arn",
                self.database, self.db_user
            ),
            Charset::Token,
            &self.secret_arn,
        )
    }
}

/// A serial from its hex form (`0A:1b…`, `0x…`; case and colons ignored) as audit events and
/// `bastion cert ls` print it. Leading zero bytes are dropped, as
/// [`crate::identity::ca::serial_hex`] drops them, so both forms name the same record.
pub fn serial_from_hex(field: &str, text: &str) -> Result<Serial, RecordError> {
    let digits: String = text
        .trim()
        .trim_start_matches("0x")
        .chars()
        .filter(|c| *c != ':')
        .collect();
    let bad = || RecordError::Charset {
        field: field.to_string(),
        value: text.to_string(),
        expected: "hexadecimal digits (a certificate serial)",
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(bad());
    }
    let padded = if digits.len() % 2 == 1 {
        format!("0{digits}")
    } else {
        digits
    };
    let bytes: Vec<u8> = (0..padded.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&padded[i..i + 2], 16).map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    let start = bytes
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(bytes.len().saturating_sub(1));
    serial(field, &bytes[start..])
}

/// Hex form of a serial for messages (`01ab…`).
pub struct SerialHex<'a>(pub &'a [u8]);

impl fmt::Display for SerialHex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_read_back_from_their_hex_form() {
        let s = serial_from_hex("serial", "00:0A:bc").unwrap();
        assert_eq!(&s[..], &[0x0a, 0xbc]);
        assert_eq!(SerialHex(&s).to_string(), "0abc");
        assert_eq!(
            &serial_from_hex("serial", "0xabc").unwrap()[..],
            &[0x0a, 0xbc]
        );
        assert!(serial_from_hex("serial", "xyz").is_err());
        assert!(serial_from_hex("serial", "").is_err());
        let e = serial_from_hex("serial", &"ab".repeat(21)).unwrap_err();
        assert!(e.to_string().contains("MAX_SERIAL_LEN"), "{e}");
    }

    #[test]
    fn text_over_its_bound_names_bound_and_field() {
        let long = "a".repeat(MAX_NAME_LEN + 1);
        let e = name("users.x.name", &long).unwrap_err().to_string();
        assert!(
            e.contains("MAX_NAME_LEN") && e.contains("users.x.name") && e.contains("65"),
            "{e}"
        );
        assert!(name("n", &"a".repeat(MAX_NAME_LEN)).is_ok());
        let e = name("n", ".hidden").unwrap_err().to_string();
        assert!(e.contains("'.'"), "{e}");
        let e = name("n", "").unwrap_err().to_string();
        assert!(e.contains("empty"), "{e}");
    }

    #[test]
    fn list_over_its_bound_names_bound_and_field() {
        let items = (0..MAX_ROLES_PER_USER + 1).map(|i| name("r", &format!("r{i}")));
        let e = list::<Name, MAX_ROLES_PER_USER>("users.a.roles", "MAX_ROLES_PER_USER", items)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("MAX_ROLES_PER_USER") && e.contains("users.a.roles"),
            "{e}"
        );
    }

    #[test]
    fn serial_bounds() {
        assert!(serial("s", &[1; MAX_SERIAL_LEN]).is_ok());
        let e = serial("s", &[1; MAX_SERIAL_LEN + 1])
            .unwrap_err()
            .to_string();
        assert!(e.contains("MAX_SERIAL_LEN"), "{e}");
        assert!(serial("s", &[]).is_err());
    }
}
