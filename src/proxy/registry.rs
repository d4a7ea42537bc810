//! The live-session registry: every session from accept to its end — who, which database, from
//! where, since when, how many bytes — plus a stop switch per session and the certificates the
//! bastion issued (an allow-list: a certificate the store has no record of is refused even if
//! it chains to the on-box CA, so a stolen CA key alone cannot mint access).
//!
//! `bastion sessions ls|kill` and `bastion status` read it through the admin socket;
//! `bastion cert revoke` uses it to refuse the certificate from then on *and* to stop the live
//! sessions that presented it. Both happen under one lock, and a TLS session records its serial
//! under that same lock as it checks it ([`Registered::present_certificate`]), so a handshake
//! racing a revocation is either refused or found and stopped — never missed.
//!
//! A stop is a [`CancellationToken`]: the session `select!`s on it during its handshake and the
//! relay polls it after the byte-moving futures on each wake-up. This module never touches a
//! socket; the session closes its own legs and still writes its `session.end` audit event.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use crate::audit::{KilledSession, SessionFacts};
use crate::proxy::ktls::TlsMode;
use crate::proxy::relay::Counters;

/// The daemon's live sessions and revoked serials. One per daemon, shared by every listener.
#[derive(Default)]
pub struct Registry {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    live: BTreeMap<u64, Live>,
    /// Hex serial (as [`crate::identity::ca::serial_hex`] prints it) → the certificate the
    /// store recorded when it was issued.
    issued: HashMap<String, Issued>,
}

/// One recorded certificate, as the handshake checks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// The bastion user it was issued to (its CN must say the same).
    pub user: String,
    pub revoked: bool,
}

struct Live {
    info: SessionInfo,
    counters: Arc<Counters>,
    stop: CancellationToken,
    /// What the session was granted, once authorized; re-checked by [`Registry::enforce`].
    grant: Option<Grant>,
    /// Why it was stopped (the first reason wins).
    stop_reason: Option<StopReason>,
}

/// What a session was allowed when it was authorized: while it lives, this must still hold.
#[derive(Debug, Clone)]
pub struct Grant {
    pub user: String,
    pub db: String,
    /// `None`: the session authenticated without one (legacy one-argument AUTH).
    pub db_user: Option<String>,
    /// The database's definition (address, auth, TLS…) as granted, to notice it changing.
    pub database: Arc<crate::catalog::Database>,
    /// Unix sessions: the peer's uid (its binding to `user` must hold).
    pub uid: Option<u32>,
    /// mTLS sessions: the certificate's end of validity.
    pub expires: Option<SystemTime>,
    pub started: std::time::Instant,
}

/// Why the bastion stopped a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// `sessions kill`, `cert revoke`: an administrator's act.
    Admin(String),
    /// The grant no longer holds (user, role, database or certificate changed or ended).
    Policy(String),
    /// The daemon is stopping and the session outlived `limits.drain_timeout`.
    Shutdown,
}

/// One live session as `bastion sessions ls` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    /// The `session.id` of its tracing span and the `session` field of its audit events.
    pub id: u64,
    /// The bastion user, once identified.
    pub user: Option<String>,
    pub database: Option<String>,
    pub db_user: Option<String>,
    /// `IP:port` for TLS, `uid=N pid=M` for a Unix socket.
    pub client: String,
    pub transport: Transport,
    /// The client certificate's hex serial (TLS).
    pub serial: Option<String>,
    /// Unix seconds at accept.
    pub started: i64,
    /// `false` while in the handshake, `true` once bytes are relayed.
    pub relaying: bool,
    pub bytes_client_to_upstream: u64,
    pub bytes_upstream_to_client: u64,
    /// How the relay moves the bytes (`splice`, `copy`), once relaying.
    pub path: Option<String>,
    /// Where each leg's TLS records are handled (`ktls`, `rustls`, `none`), once relaying.
    pub tls_client: TlsMode,
    pub tls_upstream: TlsMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Transport {
    Mtls,
    Unix,
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Transport::Mtls => "mtls",
            Transport::Unix => "unix",
        }
    }
}

/// Why a certificate that chains to the on-box CA may still not start a session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertRefused {
    #[error("client certificate {serial} was revoked (ask an administrator for a new one: bastion cert issue)")]
    Revoked { serial: String },
    #[error("client certificate {serial} was not issued by this bastion (ask an administrator for one: bastion cert issue)")]
    NotIssued { serial: String },
    #[error("client certificate {serial} was issued to another user than its subject names")]
    WrongUser { serial: String },
}

impl SessionInfo {
    /// The fields the `session.killed` audit event names.
    pub fn killed(&self) -> KilledSession<'_> {
        KilledSession {
            id: self.id,
            user: self.user.as_deref(),
            client: &self.client,
            db: self.database.as_deref(),
            db_user: self.db_user.as_deref(),
        }
    }
}

impl Registry {
    /// Enter a session just accepted; it leaves the registry when the returned handle drops.
    pub fn register(self: &Arc<Self>, id: u64, client: String, transport: Transport) -> Registered {
        let stop = CancellationToken::new();
        let counters = Arc::new(Counters::default());
        let info = SessionInfo {
            id,
            user: None,
            database: None,
            db_user: None,
            client,
            transport,
            serial: None,
            started: unix_now(),
            relaying: false,
            bytes_client_to_upstream: 0,
            bytes_upstream_to_client: 0,
            path: None,
            tls_client: TlsMode::None,
            tls_upstream: TlsMode::None,
        };
        self.lock().live.insert(
            id,
            Live {
                info,
                counters: counters.clone(),
                stop: stop.clone(),
                grant: None,
                stop_reason: None,
            },
        );
        Registered {
            registry: self.clone(),
            id,
            stop,
            counters,
        }
    }

    /// Replace the recorded certificates (at start, from the store): hex serial → record.
    pub fn set_certificates(&self, certs: impl IntoIterator<Item = (String, Issued)>) {
        self.lock().issued = certs.into_iter().collect();
    }

    /// A certificate was just issued (and recorded in the store): it may start sessions.
    pub fn issued(&self, serial: &str, user: &str) {
        self.lock().issued.insert(
            serial.to_string(),
            Issued {
                user: user.to_string(),
                revoked: false,
            },
        );
    }

    /// Every live session, oldest first, with its byte counts so far.
    pub fn list(&self) -> Vec<SessionInfo> {
        self.lock().live.values().map(Live::snapshot).collect()
    }

    pub fn len(&self) -> usize {
        self.lock().live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stop session `id`; what it was, or `None` if no such session is live.
    pub fn kill(&self, id: u64) -> Option<SessionInfo> {
        let mut inner = self.lock();
        let live = inner.live.get_mut(&id)?;
        live.stop_with(StopReason::Admin(
            "killed by an administrator (sessions kill)".into(),
        ));
        Some(live.snapshot())
    }

    /// Stop every live session not stopped yet (the end of a drain); how many.
    pub fn stop_all(&self, reason: StopReason) -> usize {
        let mut inner = self.lock();
        let mut stopped = 0;
        for live in inner.live.values_mut() {
            if live.stop_reason.is_none() {
                live.stop_with(reason.clone());
                stopped += 1;
            }
        }
        stopped
    }

    /// Stop every live session whose grant `holds` rejects; those sessions and the reasons.
    /// Sessions not yet authorized, or already stopped, are left alone.
    pub fn enforce(
        &self,
        holds: impl Fn(&Grant) -> Result<(), String>,
    ) -> Vec<(SessionInfo, String)> {
        let mut inner = self.lock();
        let mut stopped = Vec::new();
        for live in inner.live.values_mut() {
            let Some(grant) = &live.grant else { continue };
            if live.stop_reason.is_some() {
                continue;
            }
            if let Err(reason) = holds(grant) {
                live.stop_with(StopReason::Policy(reason.clone()));
                stopped.push((live.snapshot(), reason));
            }
        }
        stopped
    }

    /// Refuse `serial` from now on and stop every live session that presented it; those sessions.
    pub fn revoke(&self, serial: &str) -> Vec<SessionInfo> {
        let mut inner = self.lock();
        if let Some(cert) = inner.issued.get_mut(serial) {
            cert.revoked = true;
        }
        inner
            .live
            .values_mut()
            .filter(|l| l.info.serial.as_deref() == Some(serial))
            .map(|l| {
                l.stop_with(StopReason::Admin(format!("certificate {serial} revoked")));
                l.snapshot()
            })
            .collect()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every critical section is a few map operations with no await and no I/O: a panic in
        // one leaves the maps whole.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Live {
    fn stop_with(&mut self, reason: StopReason) {
        self.stop_reason.get_or_insert(reason);
        self.stop.cancel();
    }

    fn snapshot(&self) -> SessionInfo {
        let (up, down) = self.counters.totals();
        SessionInfo {
            bytes_client_to_upstream: up,
            bytes_upstream_to_client: down,
            ..self.info.clone()
        }
    }
}

/// A session's entry in the registry, held by the session task for its whole life.
pub struct Registered {
    registry: Arc<Registry>,
    id: u64,
    stop: CancellationToken,
    counters: Arc<Counters>,
}

impl Registered {
    /// Record the serial of the (verified) client certificate of `user` and refuse it unless
    /// the store recorded it as issued to that user and it is not revoked.
    pub fn present_certificate(&self, serial: &str, user: &str) -> Result<(), CertRefused> {
        let mut inner = self.registry.lock();
        let verdict = match inner.issued.get(serial) {
            None => Err(CertRefused::NotIssued {
                serial: serial.to_string(),
            }),
            Some(c) if c.revoked => Err(CertRefused::Revoked {
                serial: serial.to_string(),
            }),
            Some(c) if c.user != user => Err(CertRefused::WrongUser {
                serial: serial.to_string(),
            }),
            Some(_) => Ok(()),
        };
        if let Some(live) = inner.live.get_mut(&self.id) {
            live.info.serial = Some(serial.to_string());
        }
        verdict
    }

    /// Copy what the session has learned so far (user, database, db-user) into its entry.
    pub fn update(&self, facts: &SessionFacts) {
        if let Some(live) = self.registry.lock().live.get_mut(&self.id) {
            live.info.user.clone_from(&facts.user);
            live.info.database.clone_from(&facts.db);
            live.info.db_user.clone_from(&facts.db_user);
        }
    }

    /// Record what the session was authorized for; from now on [`Registry::enforce`] checks it.
    pub fn grant(&self, grant: Grant) {
        if let Some(live) = self.registry.lock().live.get_mut(&self.id) {
            live.grant = Some(grant);
        }
    }

    /// Why the session was stopped, if it was.
    pub fn stop_reason(&self) -> Option<StopReason> {
        self.registry
            .lock()
            .live
            .get(&self.id)
            .and_then(|l| l.stop_reason.clone())
    }

    /// The handshake is over; bytes are being relayed along `path`, each leg's TLS handled as
    /// `tls` (client, upstream) says.
    pub fn relaying(&self, path: &str, tls: (TlsMode, TlsMode)) {
        if let Some(live) = self.registry.lock().live.get_mut(&self.id) {
            live.info.relaying = true;
            live.info.path = Some(path.to_string());
            (live.info.tls_client, live.info.tls_upstream) = tls;
        }
    }

    /// The relay counts into these, so `sessions ls` sees bytes as they move.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Resolves once an administrator stops this session.
    pub fn stopped(&self) -> WaitForCancellationFuture<'_> {
        self.stop.cancelled()
    }

    /// Run `work` unless (or until) the session is stopped: `None` if it was.
    pub async fn unless_stopped<F: Future>(&self, work: F) -> Option<F::Output> {
        tokio::select! {
            biased;
            () = self.stop.cancelled() => None,
            out = work => Some(out),
        }
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.registry.lock().live.remove(&self.id);
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(user: &str, db: &str) -> SessionFacts {
        SessionFacts {
            user: Some(user.into()),
            db: Some(db.into()),
            db_user: Some("app".into()),
            ..Default::default()
        }
    }

    #[test]
    fn sessions_come_and_go_with_their_handles() {
        let reg = Arc::new(Registry::default());
        let a = reg.register(1, "127.0.0.1:5000".into(), Transport::Mtls);
        let b = reg.register(2, "uid=0 pid=7".into(), Transport::Unix);
        a.update(&facts("alice", "cache"));
        a.counters().add(10, 20);
        a.relaying("splice", (TlsMode::Kernel, TlsMode::User));
        let listed = reg.list();
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[0].user.as_deref(), Some("alice"));
        assert_eq!(listed[0].database.as_deref(), Some("cache"));
        assert!(listed[0].relaying);
        assert_eq!(listed[0].path.as_deref(), Some("splice"));
        assert_eq!(
            (listed[0].tls_client, listed[0].tls_upstream),
            (TlsMode::Kernel, TlsMode::User)
        );
        assert_eq!(listed[1].path, None);
        assert_eq!(
            (
                listed[0].bytes_client_to_upstream,
                listed[0].bytes_upstream_to_client
            ),
            (10, 20)
        );
        assert_eq!(listed[1].user, None);
        assert_eq!(listed[1].transport, Transport::Unix);
        drop(a);
        assert_eq!(reg.list().iter().map(|s| s.id).collect::<Vec<_>>(), [2]);
        drop(b);
        assert!(reg.is_empty());
    }

    #[tokio::test]
    async fn kill_stops_exactly_that_session() {
        let reg = Arc::new(Registry::default());
        let a = reg.register(1, "a".into(), Transport::Mtls);
        let b = reg.register(2, "b".into(), Transport::Mtls);
        assert_eq!(reg.kill(1).map(|s| s.id), Some(1));
        assert_eq!(a.unless_stopped(std::future::pending::<()>()).await, None);
        assert_eq!(b.unless_stopped(async { 7 }).await, Some(7));
        assert_eq!(reg.kill(99), None);
    }

    #[tokio::test]
    async fn revoke_stops_the_serials_sessions_and_refuses_it_afterwards() {
        let reg = Arc::new(Registry::default());
        let issued = |user: &str, revoked| Issued {
            user: user.into(),
            revoked,
        };
        reg.set_certificates([
            ("0bad".to_string(), issued("a", true)),
            ("aa01".to_string(), issued("a", false)),
        ]);
        reg.issued("bb02", "b");
        let a = reg.register(1, "a".into(), Transport::Mtls);
        let b = reg.register(2, "b".into(), Transport::Mtls);
        assert_eq!(
            a.present_certificate("0bad", "a"),
            Err(CertRefused::Revoked {
                serial: "0bad".into()
            })
        );
        a.present_certificate("aa01", "a")
            .map_err(|e| e.to_string())
            .unwrap();
        b.present_certificate("bb02", "b")
            .map_err(|e| e.to_string())
            .unwrap();
        let stopped = reg.revoke("aa01");
        assert_eq!(stopped.iter().map(|s| s.id).collect::<Vec<_>>(), [1]);
        assert_eq!(a.unless_stopped(std::future::pending::<()>()).await, None);
        assert_eq!(b.unless_stopped(async { 7 }).await, Some(7));
        let c = reg.register(3, "c".into(), Transport::Mtls);
        assert!(c.present_certificate("aa01", "a").is_err());
        assert!(reg.revoke("ffff").is_empty());
    }

    #[test]
    fn only_issued_certificates_of_their_own_user_are_accepted() {
        let reg = Arc::new(Registry::default());
        reg.issued("aa01", "alice");
        let s = reg.register(1, "x".into(), Transport::Mtls);
        assert_eq!(
            s.present_certificate("ffee", "alice"),
            Err(CertRefused::NotIssued {
                serial: "ffee".into()
            })
        );
        // An issued serial in a certificate forged for another user.
        assert_eq!(
            s.present_certificate("aa01", "mallory"),
            Err(CertRefused::WrongUser {
                serial: "aa01".into()
            })
        );
        assert_eq!(s.present_certificate("aa01", "alice"), Ok(()));
    }
}
