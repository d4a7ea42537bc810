//! Certificates and live sessions through the admin socket: issue a client certificate from the
//! daemon's CA (its serial fsynced in the store before the bundle goes back), revoke one (the
//! store first, then the registry refuses it and stops its sessions), kill one session.
//! [`issue_and_record`] is the one issue path, also taken by `bastion cert issue` when no
//! daemon runs.
//!
//! The issued private key goes to the authorized caller only, inside a [`WireSecret`]; it is never
//! logged and never stored.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::auth::Caller;
use super::wire::{AdminError, IssuedBundle, Reply, WireSecret};
use super::Admin;
use crate::audit;
use crate::identity::ca::{CaError, OnBoxCa};
use crate::proxy::registry::{Issued, SessionInfo};
use crate::store::convert::cert_record;
use crate::store::records::{serial_from_hex, SerialHex};
use crate::store::{Mutation, RecordError, State};

/// Why a certificate could not be issued (before anything is recorded).
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error(transparent)]
    Ca(#[from] CaError),
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error(
        "--ttl {} is longer than limits.max_cert_ttl ({}): issue a shorter one, or raise the limit in the config",
        humantime::format_duration(*ttl),
        humantime::format_duration(*max)
    )]
    TtlTooLong { ttl: Duration, max: Duration },
}

impl From<IssueError> for AdminError {
    fn from(e: IssueError) -> Self {
        AdminError::Refused(e.to_string())
    }
}

/// Issue a client certificate for `user` from `ca`, have `record` fsync its serial, user and
/// validity in the store (returning the seq), and only then hand back the bundle with its key.
///
/// A `ttl` above `max_ttl` (`limits.max_cert_ttl`) is refused before anything is issued.
pub fn issue_and_record<E: From<IssueError>>(
    ca: &OnBoxCa,
    user: &str,
    ttl: Duration,
    max_ttl: Duration,
    record: impl FnOnce(Mutation) -> Result<u64, E>,
) -> Result<IssuedBundle, E> {
    if ttl > max_ttl {
        return Err(IssueError::TtlTooLong { ttl, max: max_ttl }.into());
    }
    let issued = ca.issue_client(user, ttl).map_err(IssueError::from)?;
    let cert = cert_record(user, &issued).map_err(IssueError::from)?;
    let (not_before, not_after) = (cert.not_before, cert.not_after);
    let seq = record(Mutation::IssueCert(cert))?;
    Ok(IssuedBundle {
        seq,
        user: user.to_string(),
        serial: issued.serial,
        not_before,
        not_after,
        cert_pem: issued.cert_pem,
        key_pem: WireSecret(issued.key_pem),
        ca_pem: ca.cert_pem().to_string(),
        ca_subject: ca.subject().to_string(),
    })
}

impl Admin {
    /// Issue a certificate for `user` (who must exist) valid for `ttl_secs`, record it, return it.
    pub(crate) fn issue_cert(
        &self,
        caller: &Caller,
        user: &str,
        ttl_secs: u64,
    ) -> Result<IssuedBundle, AdminError> {
        self.existing("user", user, |s| s.user(user).map(|_| ()))?;
        let ttl = Duration::from_secs(ttl_secs);
        let max = self.shared.limits().max_cert_ttl;
        let bundle = issue_and_record(&self.server_cert.ca(), user, ttl, max, |m| {
            self.mutate(caller, "issue", vec![m])
        })?;
        // Recorded (fsynced) above: from now on it may start sessions.
        self.shared.sessions.issued(&bundle.serial, user);
        Ok(bundle)
    }

    /// Revoke the certificate `text` names: fsynced in the store, then refused at every new
    /// handshake and its live sessions stopped (each audited `session.killed`).
    pub(super) fn revoke_cert(&self, caller: &Caller, text: &str) -> Result<Reply, AdminError> {
        let serial =
            serial_from_hex("serial", text).map_err(|e| AdminError::BadRequest(e.to_string()))?;
        let hex = SerialHex(&serial).to_string();
        // An unknown or already revoked serial is refused by the store's own check, by name.
        let at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let seq = self.mutate(caller, "revoke", vec![Mutation::RevokeCert { serial, at }])?;
        let stopped = self.shared.sessions.revoke(&hex);
        let reason = format!("certificate {hex} revoked");
        for session in &stopped {
            audit::session_killed(caller.uid, &caller.name, &session.killed(), &reason);
        }
        Ok(Reply::Revoked {
            seq,
            sessions_closed: stopped.len() as u32,
        })
    }

    /// Stop live session `id` (audited `session.killed`); what it was.
    pub(super) fn kill_session(&self, caller: &Caller, id: u64) -> Result<SessionInfo, AdminError> {
        let session = self
            .shared
            .sessions
            .kill(id)
            .ok_or_else(|| AdminError::NotFound {
                kind: "live session".into(),
                name: id.to_string(),
            })?;
        audit::session_killed(caller.uid, &caller.name, &session.killed(), "sessions kill");
        Ok(session)
    }
}

/// Every certificate `state` recorded, by hex serial, as the handshake checks it.
pub fn recorded(state: &State) -> Vec<(String, Issued)> {
    state
        .certificates()
        .map(|c| {
            let issued = Issued {
                user: c.user.to_string(),
                revoked: c.revoked_at.is_some(),
            };
            (SerialHex(&c.serial).to_string(), issued)
        })
        .collect()
}
