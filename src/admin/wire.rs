//! The admin socket's wire format: one request, one reply, each a postcard-encoded value behind
//! a 4-byte big-endian length. Records travel in the store's own bounded types, so a request
//! that decodes is already within every per-record bound.
//!
//! Carries one secret only: the private key of a certificate `IssueCert` just made, in a
//! [`WireSecret`] whose `Debug` prints `****`, back to the authorized caller who asked for it.
//! Database records name where a password is read from, not the password.

use std::io::{Read, Write};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::proxy::registry::SessionInfo;
use crate::secret::Secret;
use crate::store::records::{CertRecord, DatabaseRecord, RoleRecord, UserRecord};

/// Largest frame either side accepts (an import of every database, role and user fits).
pub const MAX_FRAME: usize = 16 * 1024 * 1024;

// Records are fixed-capacity by design (bounded, no allocation per field).
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    ListDatabases,
    /// Add a database or, with `replace`, change the one of that name.
    PutDatabase {
        record: DatabaseRecord,
        replace: bool,
    },
    RemoveDatabase(String),
    ListRoles,
    PutRole {
        record: RoleRecord,
        replace: bool,
    },
    RemoveRole(String),
    ListUsers,
    PutUser {
        record: UserRecord,
        replace: bool,
    },
    RemoveUser(String),
    Status,
    /// Everything, for `bastion export`.
    Export,
    /// Make the store hold these records (added or replaced; nothing is removed).
    Import(Declared),
    /// Issue a client certificate from the daemon's CA and record its serial.
    IssueCert {
        user: String,
        ttl_secs: u64,
    },
    ListCerts,
    /// Revoke the certificate with this hex serial and end its live sessions.
    RevokeCert(String),
    ListSessions,
    KillSession(u64),
    /// Managed users: their secret, last/next rotation and last error.
    ListManaged,
    /// Rotate one managed user's password now.
    RotateManaged {
        database: String,
        user: String,
    },
    /// Store a password file in `secrets_dir` (written by the daemon, 0600, never read back).
    PutSecret {
        name: String,
        value: WireSecret,
        replace: bool,
    },
    /// The files in `secrets_dir`: names, sizes, which databases use them; never a value.
    ListSecrets,
    RemoveSecret(String),
}

/// Databases, roles and users as a set (import and export).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Declared {
    pub databases: Vec<DatabaseRecord>,
    pub roles: Vec<RoleRecord>,
    pub users: Vec<UserRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// A mutation was acknowledged (fsynced) as this store sequence number.
    Done {
        seq: u64,
    },
    Databases(Vec<DatabaseRecord>),
    Roles(Vec<RoleRecord>),
    Users(Vec<UserRecord>),
    Status(Status),
    Export(Declared),
    Imported(ImportSummary),
    Error(AdminError),
    Issued(IssuedBundle),
    Certs(Vec<CertRecord>),
    Revoked {
        seq: u64,
        sessions_closed: u32,
    },
    Sessions(Vec<SessionInfo>),
    Killed(SessionInfo),
    Managed(Vec<crate::managed::runtime::UserStatus>),
    Rotated(crate::managed::runtime::UserStatus),
    /// A secret was written (`replaced`: an older one was there) or removed.
    SecretDone {
        name: String,
        replaced: bool,
        /// Databases whose password it is (their sessions use the new value at once).
        used_by: Vec<String>,
    },
    Secrets(Vec<SecretInfo>),
}

/// A file in `secrets_dir`, as `bastion secret ls` shows it. Never its contents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretInfo {
    pub name: String,
    pub bytes: u64,
    /// Last modification (Unix seconds).
    pub modified: i64,
    /// Databases whose `password_file` it is.
    pub used_by: Vec<String>,
    /// Why a database could not use it as it is (not a regular file, wrong owner or mode…).
    pub problem: Option<String>,
}

/// A certificate the daemon issued (and recorded as `seq`), with what the caller writes out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedBundle {
    pub seq: u64,
    pub user: String,
    /// Hex, as audit events and `bastion cert ls` show it.
    pub serial: String,
    pub not_before: i64,
    pub not_after: i64,
    pub cert_pem: String,
    pub key_pem: WireSecret,
    pub ca_pem: String,
    pub ca_subject: String,
}

/// A secret on the wire (a private key in PEM, a password `bastion secret set` stores): a
/// [`Secret`] (prints `****`, zeroized on drop).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireSecret(pub Secret);

impl Serialize for WireSecret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.expose())
    }
}

impl<'de> Deserialize<'de> for WireSecret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = zeroize::Zeroizing::new(String::deserialize(d)?);
        Ok(WireSecret(Secret::new(text.as_str())))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub uptime_secs: u64,
    /// `tls 127.0.0.1:6380`, `unix /run/bastion/db`, `admin /run/bastion/admin.sock`.
    pub listeners: Vec<String>,
    pub sessions: u64,
    pub max_sessions: u64,
    /// The links of the AWS credential chain, in order.
    pub credential_chain: Vec<String>,
    /// The link that last answered, if credentials were loaded.
    pub credential_source: Option<String>,
    /// When those credentials expire (Unix seconds), if they do.
    pub credential_expiry: Option<i64>,
    pub store_seq: u64,
    pub databases: u64,
    pub roles: u64,
    pub users: u64,
    /// The metrics page (Prometheus text), as the `[metrics]` endpoint serves it.
    pub metrics: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportSummary {
    pub added: u32,
    pub changed: u32,
    pub unchanged: u32,
}

/// Why a request was not carried out. Every variant is one the operator can act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum AdminError {
    #[error("permission denied: uid {uid} is not root and not in the admin group{}", group.as_ref().map(|g| format!(" '{g}'")).unwrap_or_default())]
    Denied { uid: u32, group: Option<String> },
    /// The store's rules refused it (a bound, a reference, a name); the text names which.
    #[error("refused: {0}")]
    Refused(String),
    #[error("{kind} '{name}' already exists (use --replace to change it)")]
    Exists { kind: String, name: String },
    #[error("no {kind} named '{name}'")]
    NotFound { kind: String, name: String },
    /// The catalog could not be built from the result (e.g. an unknown Unix account).
    #[error("refused: {0}")]
    Catalog(String),
    /// The change is stored but its Unix socket could not be created.
    #[error("stored, but: {0}")]
    Listener(String),
    #[error("store: {0}")]
    Store(String),
    #[error("bad request: {0}")]
    BadRequest(String),
}

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("admin socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("admin socket: frame of {len} bytes exceeds the limit {limit}")]
    TooLarge { len: usize, limit: usize },
    #[error("admin socket: message does not decode: {0}")]
    Decode(#[from] postcard::Error),
}

/// Encode `value` as one frame.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, WireError> {
    let body = postcard::to_stdvec(value)?;
    if body.len() > MAX_FRAME {
        return Err(WireError::TooLarge {
            len: body.len(),
            limit: MAX_FRAME,
        });
    }
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    Ok(frame)
}

fn check_len(header: [u8; 4]) -> Result<usize, WireError> {
    let len = u32::from_be_bytes(header) as usize;
    if len > MAX_FRAME {
        return Err(WireError::TooLarge {
            len,
            limit: MAX_FRAME,
        });
    }
    Ok(len)
}

pub async fn read_async<T: for<'de> Deserialize<'de>>(
    r: &mut (impl AsyncRead + Unpin),
) -> Result<T, WireError> {
    let mut header = [0u8; 4];
    r.read_exact(&mut header).await?;
    let mut body = vec![0u8; check_len(header)?];
    r.read_exact(&mut body).await?;
    Ok(postcard::from_bytes(&body)?)
}

pub async fn write_async<T: Serialize>(
    w: &mut (impl AsyncWrite + Unpin),
    value: &T,
) -> Result<(), WireError> {
    w.write_all(&encode(value)?).await?;
    w.flush().await?;
    Ok(())
}

pub fn read_blocking<T: for<'de> Deserialize<'de>>(r: &mut impl Read) -> Result<T, WireError> {
    let mut header = [0u8; 4];
    r.read_exact(&mut header)?;
    let mut body = vec![0u8; check_len(header)?];
    r.read_exact(&mut body)?;
    Ok(postcard::from_bytes(&body)?)
}

pub fn write_blocking<T: Serialize>(w: &mut impl Write, value: &T) -> Result<(), WireError> {
    w.write_all(&encode(value)?)?;
    w.flush()?;
    Ok(())
}

/// Fuzz entry point: any bytes read as a request frame give a value or an error, never a panic.
pub fn fuzz_request(bytes: &[u8]) {
    let _ = read_blocking::<Request>(&mut &bytes[..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_issued_key_round_trips_but_never_prints() {
        let reply = Reply::Issued(IssuedBundle {
            seq: 3,
            user: "alice".into(),
            serial: "0a".into(),
            not_before: 1,
            not_after: 2,
            cert_pem: "CERT".into(),
            key_pem: WireSecret(Secret::new("PRIVATE-KEY-BYTES")),
            ca_pem: "CA".into(),
            ca_subject: "ca".into(),
        });
        let frame = encode(&reply).unwrap();
        let back: Reply = read_blocking(&mut &frame[..]).unwrap();
        assert_eq!(back, reply);
        assert!(!format!("{back:?}").contains("PRIVATE-KEY-BYTES"));
    }

    #[test]
    fn frames_round_trip_and_oversize_is_refused() {
        let req = Request::RemoveUser("alice".into());
        let frame = encode(&req).unwrap();
        assert_eq!(read_blocking::<Request>(&mut &frame[..]).unwrap(), req);
        let huge = ((MAX_FRAME + 1) as u32).to_be_bytes();
        assert!(matches!(
            read_blocking::<Request>(&mut &huge[..]),
            Err(WireError::TooLarge { .. })
        ));
        for cut in 0..frame.len() {
            fuzz_request(&frame[..cut]);
            assert!(read_blocking::<Request>(&mut &frame[..cut]).is_err());
        }
    }
}
