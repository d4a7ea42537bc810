//! One client session, start to end: identify → read the opening frame (the upstream dial
//! already under way) → authorize → authenticate upstream → hand both sockets to the relay.
//!
//! The whole handshake (TLS included) runs against one deadline (`limits.handshake_timeout`);
//! its steps are in `handshake.rs`. Every refusal is a typed [`Refusal`]: a RESP
//! `-ERR bastion: …` to the client plus an `access.denied` audit event, then the connection
//! closes. Bytes the client pipelined behind its opening frame are written upstream, in order,
//! before the relay starts — never dropped.
//!
//! What the session learns about itself (user, database, db-user, auth mode) is written once,
//! into its [`Context`], which keeps the audit facts, the tracing span and the registry entry
//! in step. Every session is in the [`crate::proxy::registry::Registry`] from accept to end; an administrator's stop
//! (kill, or revocation of its certificate) ends it whether it is in the handshake or the
//! relay. Live grants are re-checked in `grants.rs` ([`enforce_grants`]).

mod dial;
mod grants;
mod handshake;
mod resubscribe;
mod span;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant as StdInstant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::either::Either;
use tracing::field;

use crate::audit::{self, SessionEnd, SessionFacts};
use crate::config::RelayMode;
use crate::identity::{self, Identity, Method};
use crate::metrics::InFlight;
use crate::proxy::admission::Pending;
use crate::proxy::guard::session_policy::SessionPolicy;
use crate::proxy::guard::Guard;
use crate::proxy::handshake::{error_reply, protocol_error_reply};
use crate::proxy::inspect::{AuditSettings, Inspection};
use crate::proxy::ktls::{self, Tls, TlsMode};
use crate::proxy::registry::{Grant, Registered, StopReason, Transport};
use crate::proxy::relay::{self, Closed, Leg, Outcome, Path, Side, UnixSocket};
use crate::proxy::shared::Shared;
use crate::proxy::upstream::{warm, UpstreamStream};
use handshake::GuardStart;
use span::{Quiet, SessionSpan};

pub use grants::enforce_grants;
pub use handshake::{Refusal, Step, Unidentified};

/// How often the count of the refusals of unidentified connections that were not logged one by
/// one is logged (one `access.denied.summary` line).
pub const REFUSAL_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// Why sessions still open at the end of a drain were closed.
const SHUTDOWN_REASON: &str = "the bastion is stopping (limits.drain_timeout elapsed)";

/// The `access.denied` reason of a session stopped before its relay started.
const STOPPED_IN_HANDSHAKE: &str = "session killed by an administrator during the handshake";

/// How a TLS listener picks the database.
pub struct TlsListenerSpec {
    pub address: SocketAddr,
    pub acceptor: TlsAcceptor,
    /// Fixed database: SNI is ignored.
    pub database: Option<String>,
    /// Database for clients without SNI, or whose SNI is one of `server_names`.
    pub default_database: Option<String>,
    /// Names that are the listener's own (e.g. `localhost`), not database names.
    pub server_names: Vec<String>,
}

/// A session that arrived on a TLS listener.
///
/// `pending` is its place among the unidentified connections: it may be evicted (closed) to
/// make room for a newer one until the TLS handshake proves who it is.
pub async fn serve_tls(
    shared: Arc<Shared>,
    tcp: TcpStream,
    peer: SocketAddr,
    spec: Arc<TlsListenerSpec>,
    pending: Pending,
) {
    let id = shared.next_id();
    let span = session_span(id, &peer.to_string());
    let quiet = Quiet::new(&span);
    let relay_quiet = quiet.clone();
    let work = async move {
        let handshake = shared.metrics.handshake();
        let session = shared
            .sessions
            .register(id, peer.to_string(), Transport::Mtls);
        let deadline = Instant::now() + shared.limits().handshake_timeout;
        let mut facts = SessionFacts {
            session: id,
            client: peer.to_string(),
            listener: spec.address.to_string(),
            identity: Some(Method::Mtls.to_string()),
            instance: shared.instance_id.get().cloned(),
            ..Default::default()
        };
        // kTLS: the handshake hands the keys to the kernel when it can (`proxy/ktls`).
        let accept =
            pending.unless_evicted(timeout_at(deadline, ktls::accept(&spec.acceptor, tcp)));
        let unidentified = |reason: &'static str, detail: String| {
            shared.metrics.refused(reason);
            if shared.refusals.note(reason, peer.ip()) {
                audit::denied(&facts, &detail);
            }
        };
        // Boxed like the handshake in `run`: rustls' accept state is freed once it is done.
        let tls = match Box::pin(session.unless_stopped(accept)).await {
            None => return audit_stopped(&shared, &session, &facts),
            Some(None) => {
                return unidentified(
                    "evicted",
                    "closed in its TLS handshake to make room for newer connections \
                     (limits.max_handshakes / max_handshakes_per_source)"
                        .into(),
                )
            }
            Some(Some(Err(_))) => {
                return unidentified("timeout", "handshake timeout during TLS".into())
            }
            Some(Some(Ok(Err(e)))) => {
                return unidentified("tls", format!("TLS handshake failed: {e}"))
            }
            Some(Some(Ok(Ok(tls)))) => tls,
        };
        let ktls::Accepted {
            stream,
            server_name,
            peer_certificate,
        } = tls;
        // Identified by its certificate (or refused below): no longer pre-authentication.
        drop(pending);
        let cert = peer_certificate
            .as_ref()
            .ok_or(Unidentified::NoCertificate)
            .and_then(|cert| Ok(identity::tls::cert_identity(cert)?));
        facts.evidence = cert.as_ref().ok().map(|c| format!("serial={}", c.serial));
        // Checked (and recorded) in the registry, under the lock `cert revoke` takes.
        let who = cert
            .and_then(|c| match session.present_certificate(&c.serial, &c.user) {
                Err(revoked) => Err(revoked.into()),
                Ok(()) => Ok(Identity {
                    user: c.user,
                    method: Method::Mtls,
                    evidence: format!("serial={}", c.serial),
                    expires: Some(c.not_after),
                    uid: None,
                }),
            })
            .map_err(Refusal::from);
        let db = pick_database(&spec, server_name.as_deref());
        tracing::debug!(
            sni = server_name.as_deref().unwrap_or("-"),
            tls = stream.mode().name(),
            "TLS handshake done"
        );
        // Not kept for the session's life (a live local would be, until `run` returns).
        drop((peer_certificate, server_name));
        run(
            &shared,
            &session,
            Either::Left(stream),
            who,
            db,
            facts,
            (deadline, handshake, &relay_quiet),
        )
        .await;
    };
    SessionSpan::new(quiet, work).await
}

/// A session that arrived on `<dir>/<db>.sock`.
pub async fn serve_unix(shared: Arc<Shared>, stream: UnixSocket, db: String, path: PathBuf) {
    let id = shared.next_id();
    let cred = identity::peer::peer_cred(&stream);
    let client = match &cred {
        Ok(c) => format!(
            "uid={} pid={}",
            c.uid,
            c.pid.map_or("-".into(), |p| p.to_string())
        ),
        Err(_) => "unknown-peer".to_string(),
    };
    let span = session_span(id, &client);
    let quiet = Quiet::new(&span);
    let relay_quiet = quiet.clone();
    let work = async move {
        let handshake = shared.metrics.handshake();
        let session = shared
            .sessions
            .register(id, client.clone(), Transport::Unix);
        let deadline = Instant::now() + shared.limits().handshake_timeout;
        let facts = SessionFacts {
            session: id,
            client: client.clone(),
            listener: path.display().to_string(),
            identity: Some(Method::UnixPeer.to_string()),
            evidence: Some(client.clone()),
            instance: shared.instance_id.get().cloned(),
            ..Default::default()
        };
        let who = match cred {
            Err(e) => Err(Unidentified::PeerCredentials(e).into()),
            Ok(c) => match shared.catalog.snapshot().user_for_uid(c.uid) {
                Some(user) => Ok(Identity {
                    user: user.name.clone(),
                    method: Method::UnixPeer,
                    evidence: client.clone(),
                    expires: None,
                    uid: Some(c.uid),
                }),
                None => Err(Unidentified::UnboundUid(c.uid).into()),
            },
        };
        let kept = run(
            &shared,
            &session,
            Either::Right(stream),
            who,
            Ok(db),
            facts,
            (deadline, handshake, &relay_quiet),
        )
        .await;
        // The session is over (no longer listed); its upstream connection may serve another.
        drop(session);
        if let Some(Kept {
            database,
            db_user,
            stream,
        }) = kept
        {
            // Boxed: inline, the cleaning's state (a login's buffers) would size every
            // session's task for its whole life, reused or not.
            Box::pin(warm::reuse(&shared, &database, db_user.as_deref(), stream)).await;
        }
    };
    SessionSpan::new(quiet, work).await
}

fn session_span(id: u64, client: &str) -> tracing::Span {
    tracing::info_span!(
        "session",
        session.id = id,
        client.addr = %client,
        user = field::Empty,
        db.name = field::Empty,
        db.user = field::Empty,
    )
}

/// SNI picks the database unless the listener has a fixed one; no SNI (or the listener's own
/// host name) means the listener's default database.
fn pick_database(spec: &TlsListenerSpec, sni: Option<&str>) -> Result<String, Refusal> {
    if let Some(fixed) = &spec.database {
        return Ok(fixed.clone());
    }
    let own_name = |name: &str| {
        name.eq_ignore_ascii_case("localhost")
            || spec
                .server_names
                .iter()
                .any(|n| n.eq_ignore_ascii_case(name))
    };
    match sni {
        Some(name) if !own_name(name) => Ok(name.to_string()),
        _ => spec.default_database.clone().ok_or(Refusal::NoDatabase),
    }
}

/// The part common to both listeners, from the first client byte to the end of the relay.
/// `handshake` is the session's place among the handshakes in flight (metrics) until its
/// relay starts or it is refused.
async fn run(
    shared: &Shared,
    session: &Registered,
    mut client: ClientStream,
    who: Result<Identity, Refusal>,
    db: Result<String, Refusal>,
    facts: SessionFacts,
    (deadline, handshake, quiet): (Instant, InFlight, &Quiet),
) -> Option<Kept> {
    let mut ctx = Context::new(session, facts);
    // A session slot (`limits.max_sessions`) is taken only once the client is identified, so
    // connections that never say who they are cannot lock identified ones out.
    let _slot = match &who {
        Err(_) => None,
        Ok(_) => match shared.slots.try_acquire() {
            Some(slot) => Some(slot),
            None => {
                let refusal = Refusal::SessionLimit;
                Box::pin(refuse(shared, &mut client, &ctx.facts, &refusal)).await;
                return None;
            }
        },
    };
    // Boxed: the handshake's state (the opening's buffer, the dial, AUTH, a refusal's drain
    // buffer) is many kilobytes and lives only until the relay starts. Inline, it would size
    // the session task for its whole life; on the heap it is freed when the handshake ends, and
    // an idle session holds only the relay's state.
    let work: Pin<Box<dyn Future<Output = Option<handshake::Ready>> + Send + '_>> =
        Box::pin(async {
            match handshake::run(shared, &mut ctx, &mut client, who, db, deadline).await {
                Ok(ready) => Some(ready),
                Err(handshake::Stop::Refused(refusal)) => {
                    refuse(shared, &mut client, &ctx.facts, &refusal).await;
                    None
                }
                Err(handshake::Stop::Gone) => None,
            }
        });
    let mut ready = match session.unless_stopped(work).await {
        None => {
            audit_stopped(shared, session, &ctx.facts);
            return None;
        }
        Some(None) => return None,
        Some(Some(ready)) => ready,
    };
    let facts = ctx.facts;
    session.counters().add(ready.handed_up, ready.handed_down);
    let tls = tls_modes(&client, &ready.upstream);
    let (client, upstream) = (client_leg(client), upstream_leg(ready.upstream));
    // Inspect mode copies both ways (every reply byte is framed): never the splice path.
    let path = match ready.relay {
        RelayMode::Inspect => Path::Copy,
        _ => relay::select_path(&client, &upstream),
    };
    session.relaying(&path.to_string(), tls, ready.relay.name());
    drop(handshake);
    // Counted open since before the hand-off (`handshake::run`); closed when the relay ends.
    let _open = ready.open.take();
    audit::session_start(&facts);
    quiet.relay_started();
    let started = StdInstant::now();
    // The counters include the hand-off, so the audit counts the whole session: the client's
    // first command or pipelined bytes, and the upstream's AUTH/HELLO reply, too.
    let stopped_by = std::sync::OnceLock::new();
    let stop = async {
        let by = tokio::select! {
            biased;
            () = session.stopped() => "stopped",
            () = idle(session.counters(), shared.limits().idle_timeout) => "idle",
        };
        let _ = stopped_by.set(by);
    };
    // Each mode's relay below is boxed (once per session): the task then holds the state of
    // the mode this session runs, not of the largest one.
    let mut kept = None;
    let outcome = match ready.guard {
        // `relay = "guard"`: the requests go through the command guard, replies as before.
        Some(GuardStart {
            pipelined,
            resp3,
            database,
            db_user,
        }) => {
            let policy = SessionPolicy {
                database: &database,
                db_user: db_user.as_deref(),
                credentials: &shared.credentials,
                connector: &shared.connector,
                check_timeout: shared.limits().handshake_timeout,
                facts: &facts,
            };
            if database.relay == RelayMode::Inspect {
                // `relay = "inspect"`: the guard on the requests, told of every command, and
                // the replies framed and paired with them on their way.
                let limits = shared.limits();
                let settings = AuditSettings {
                    sample: limits.command_audit_sample,
                    rate: limits.command_audit_rate,
                    // Re-AUTH keeps IAM connections past 12 hours and re-checks a password;
                    // auth mode `none` has nothing to renew.
                    reauth: database.authenticates().then_some(limits.reauth_interval),
                    resp3,
                };
                let counters = session.counters();
                // A RESP2 subscriber's move to a fresh connection goes through here.
                let handover = relay::Handover::default();
                let inspection = Inspection::new(&facts, counters, &shared.command_audit, settings)
                    .with_handover(&handover);
                // The roles' command policy (unrestricted: every command, as before).
                let rules = crate::rbac::command_policy(
                    &shared.catalog.snapshot(),
                    facts.user.as_deref().unwrap_or_default(),
                    &database,
                    db_user.as_deref(),
                );
                let policy = resubscribe::InspectPolicy {
                    session: policy,
                    shared,
                    handover: &handover,
                };
                let requests = Guard::observed(policy, pipelined, inspection.requests(&rules));
                let outcome = Box::pin(relay::relay_inspected_until(
                    client,
                    upstream,
                    counters,
                    stop,
                    (requests, inspection.replies()),
                    &handover,
                ))
                .await;
                inspection.summary();
                outcome
            } else {
                let requests = Guard::new(policy, pipelined);
                let counters = session.counters();
                // A Unix client that leaves between two commands may leave its plaintext
                // upstream connection to the warm pool, which cleans it for the next session
                // of this database and db-user (`upstream/warm.rs`).
                let limits = shared.limits();
                let reclaim = relay::Reclaim::default();
                let reuse = limits.reuse_connections > 0 && limits.warm_connections > 0;
                let outcome = Box::pin(relay::relay_filtered_until(
                    client,
                    upstream,
                    counters,
                    stop,
                    (requests, reuse.then_some(&reclaim)),
                ))
                .await;
                if let Some(stream) = reclaim.take() {
                    if outcome.closed == Closed::By(Side::Client) {
                        kept = Some(Kept {
                            database: database.clone(),
                            db_user: db_user.clone(),
                            stream,
                        });
                    }
                }
                outcome
            }
        }
        None => {
            Box::pin(relay::relay_until(
                client,
                upstream,
                session.counters(),
                stop,
            ))
            .await
        }
    };
    let _span = quiet.relay_ended();
    let stopped = match stopped_by.get().copied() {
        Some("idle") => ("idle", "no byte moved for limits.idle_timeout".to_string()),
        _ => match session.stop_reason() {
            Some(StopReason::Policy(reason)) => ("policy", reason),
            Some(StopReason::Admin(reason)) => ("admin", reason),
            Some(StopReason::Shutdown) => ("shutdown", SHUTDOWN_REASON.to_string()),
            None => ("admin", "-".to_string()),
        },
    };
    let end = ended(&outcome, started.elapsed(), (stopped.0, &stopped.1), tls);
    shared.metrics.session_ended(&end);
    audit::session_end(&facts, &end);
    kept
}

/// An upstream connection a session left open for reuse (`relay::Reclaim`), for the warm pool
/// to clean once the session is over (`upstream::warm::reuse`).
struct Kept {
    database: Arc<crate::catalog::Database>,
    db_user: Option<String>,
    stream: tokio::net::TcpStream,
}

/// The `session.end` facts of a relay `outcome`; `stopped` is who ended a session the bastion
/// stopped (`admin`, `policy`, `idle`) and why, for [`Closed::Stopped`].
fn ended<'a>(
    outcome: &'a Outcome,
    duration: std::time::Duration,
    stopped: (&'a str, &'a str),
    tls: (TlsMode, TlsMode),
) -> SessionEnd<'a> {
    let side = |side: Side| match side {
        Side::Client => "client",
        Side::Upstream => "upstream",
    };
    let path = |path: Path| match path {
        Path::Splice => "splice",
        Path::Copy => "copy",
    };
    let (closed_by, reason, error) = match &outcome.closed {
        Closed::By(s) => (side(*s), "-", None),
        Closed::Error { side: s, message } => (side(*s), "-", Some(message.as_str())),
        Closed::Stopped => (stopped.0, stopped.1, None),
    };
    SessionEnd {
        bytes_client_to_upstream: outcome.client_to_upstream,
        bytes_upstream_to_client: outcome.upstream_to_client,
        path_client_to_upstream: path(outcome.client_to_upstream_path),
        path_upstream_to_client: path(outcome.upstream_to_client_path),
        tls_client: tls.0.name(),
        tls_upstream: tls.1.name(),
        duration,
        closed_by,
        reason,
        error,
    }
}

/// What a session knows about itself, written once per fact into the audit facts, the tracing
/// span (`user`, `db.name`, `db.user`) and the registry entry (`sessions ls`) together.
struct Context<'s> {
    session: &'s Registered,
    facts: SessionFacts,
    span: tracing::Span,
}

impl<'s> Context<'s> {
    fn new(session: &'s Registered, facts: SessionFacts) -> Self {
        Context {
            session,
            facts,
            span: tracing::Span::current(),
        }
    }

    fn set_user(&mut self, user: &str) {
        self.facts.user = Some(user.to_string());
        self.span.record("user", user);
        self.session.update(&self.facts);
    }

    fn set_db(&mut self, db: &str) {
        self.facts.db = Some(db.to_string());
        self.span.record("db.name", db);
        self.session.update(&self.facts);
    }

    /// The db-user the session authenticates as (`None`: the upstream's default user).
    fn set_db_user(&mut self, db_user: Option<&str>) {
        self.facts.db_user = db_user.map(str::to_string);
        if let Some(db_user) = db_user {
            self.span.record("db.user", db_user);
        }
        self.session.update(&self.facts);
    }

    /// The db-user a refused client asked for: named in its `access.denied` event only.
    fn requested_db_user(&mut self, db_user: Option<&str>) {
        self.facts.db_user = db_user.map(str::to_string);
    }

    fn set_auth_mode(&mut self, mode: &'static str) {
        self.facts.auth_mode = Some(mode);
    }

    /// From here on the grant is re-checked until the session ends ([`enforce_grants`]).
    fn grant(&self, grant: Grant) {
        self.session.grant(grant);
    }
}

/// Audit (and count) a session stopped (killed, or its grant withdrawn) before its relay
/// started.
fn audit_stopped(shared: &Shared, session: &Registered, facts: &SessionFacts) {
    match session.stop_reason() {
        Some(StopReason::Policy(reason)) => {
            shared.metrics.refused("policy");
            audit::denied(facts, &reason)
        }
        Some(StopReason::Shutdown) => {
            shared.metrics.refused("shutdown");
            audit::denied(facts, SHUTDOWN_REASON)
        }
        _ => {
            shared.metrics.refused("killed");
            audit::denied(facts, STOPPED_IN_HANDSHAKE)
        }
    }
}

/// Resolves once no byte moved in either direction for `limit` (never without a limit).
async fn idle(counters: &relay::Counters, limit: Option<std::time::Duration>) {
    let Some(limit) = limit else {
        return std::future::pending().await;
    };
    let step = (limit / 4).clamp(
        std::time::Duration::from_millis(50),
        std::time::Duration::from_secs(5),
    );
    let mut seen = counters.totals();
    let mut quiet_since = Instant::now();
    loop {
        tokio::time::sleep(step).await;
        let now = counters.totals();
        if now != seen {
            seen = now;
            quiet_since = Instant::now();
        } else if quiet_since.elapsed() >= limit {
            return;
        }
    }
}

/// Audit the refusal, send `-ERR bastion: <refusal>` (malformed input: Redis' own
/// `-ERR protocol error: …`), close.
async fn refuse(
    shared: &Shared,
    client: &mut ClientStream,
    facts: &SessionFacts,
    refusal: &Refusal,
) {
    // The client gets what it can act on and a correlation id; the audit event gets the
    // whole reason (addresses, paths, ARNs) under the same id.
    let reference = correlation_id();
    let reason = format!("{refusal} [ref {reference}]");
    let reply = match refusal {
        Refusal::Protocol(e) => protocol_error_reply(e),
        _ => error_reply(&format!("{} (ref {reference})", refusal.client_message())),
    };
    shared.metrics.refused(refusal.kind());
    audit::denied(facts, &reason);
    let send = async {
        client.write_all(&reply).await?;
        client.flush().await?;
        client.shutdown().await
    };
    // The client may already be gone; the refusal is audited either way.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), send).await;
    // Lingering close: closing with unread input makes the kernel send RST, which can destroy
    // the error reply before the client reads it. Drain (bounded) until the client closes too.
    let drain = async {
        // On the heap: an array here would size every session's handshake future (moved, so
        // copied, once per session when it is boxed), refused or not.
        let mut sink = vec![0u8; 16 * 1024];
        let mut left = LINGER_BYTES;
        while left > 0 {
            match client.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_TIME, drain).await;
}

/// A short random id that ties a client's refusal to its audit event.
fn correlation_id() -> String {
    format!("{:08x}", fastrand::u32(..))
}

/// How long, and how many bytes, a refused client's leftover input is drained before closing.
const LINGER_TIME: std::time::Duration = std::time::Duration::from_secs(1);
const LINGER_BYTES: usize = 1024 * 1024;

/// The client side of a session before it becomes a relay [`Leg`]: mTLS (records in the
/// kernel or in rustls) or a Unix socket.
type ClientStream = Either<Tls<TlsStream<TcpStream>>, UnixSocket>;

fn client_leg(stream: ClientStream) -> Leg {
    match stream {
        Either::Left(Tls::Kernel(socket)) => Leg::Ktls(socket),
        Either::Left(Tls::User(tls)) => Leg::Tls(tls),
        Either::Right(unix) => Leg::Unix(unix),
    }
}

fn upstream_leg(stream: UpstreamStream) -> Leg {
    match stream {
        Either::Left(tcp) => Leg::Tcp(tcp),
        Either::Right(Tls::Kernel(socket)) => Leg::Ktls(socket),
        Either::Right(Tls::User(tls)) => Leg::Tls(tls),
    }
}

/// Where each leg's TLS records are handled, for `sessions ls` and the audit.
fn tls_modes(client: &ClientStream, upstream: &UpstreamStream) -> (TlsMode, TlsMode) {
    let client = match client {
        Either::Left(tls) => tls.mode(),
        Either::Right(_) => TlsMode::None,
    };
    let upstream = match upstream {
        Either::Left(_) => TlsMode::None,
        Either::Right(tls) => tls.mode(),
    };
    (client, upstream)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(database: Option<&str>, default_database: Option<&str>) -> TlsListenerSpec {
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(rustls::server::ResolvesServerCertUsingSni::new()));
        TlsListenerSpec {
            address: "127.0.0.1:6380".parse().unwrap(),
            acceptor: TlsAcceptor::from(Arc::new(config)),
            database: database.map(String::from),
            default_database: default_database.map(String::from),
            server_names: vec!["bastion.example.com".into()],
        }
    }

    #[test]
    fn database_selection() {
        let s = spec(None, Some("local"));
        assert_eq!(pick_database(&s, Some("cache")).unwrap(), "cache");
        assert_eq!(pick_database(&s, None).unwrap(), "local");
        assert_eq!(pick_database(&s, Some("localhost")).unwrap(), "local");
        assert_eq!(
            pick_database(&s, Some("BASTION.example.com")).unwrap(),
            "local"
        );
        let s = spec(Some("fixed"), Some("local"));
        assert_eq!(pick_database(&s, Some("cache")).unwrap(), "fixed");
        let s = spec(None, None);
        assert!(pick_database(&s, None)
            .unwrap_err()
            .to_string()
            .contains("--sni"));
    }

    /// The size of a function's return type (an `async fn`'s future) without calling it.
    fn future_size<F: FnOnce(A, B, C, D, E) -> R, A, B, C, D, E, R>(_: &F) -> usize {
        std::mem::size_of::<R>()
    }

    /// Regression guard for idle memory (issue 13): tokio allocates a session task's whole
    /// future, sized by its largest state, for the session's life. The handshake (~27 KB: the
    /// opening's buffer, the early dial, AUTH, a refusal's 16 KiB drain buffer) and the TLS
    /// accept are boxed, so they are freed when the relay starts; the relay's state is boxed per
    /// path/mode, so a session pays only for its own; the relay's direction futures are pinned
    /// once by their caller, not copied into `drive`/`until` as arguments. Measured after that
    /// (debug and release alike): the spawned future 2.6 KB (Unix) and 2.9 KB (TLS), 57 KB
    /// before; the guard-mode relay 3.5 KB (11.8 KB before), passthrough 0.5 KB. The bounds
    /// leave a little room: a change that inlines a large state again fails here.
    #[test]
    fn session_futures_stay_small() {
        let unix = future_size(&|a, b, c, d: PathBuf, _e: ()| serve_unix(a, b, c, d));
        let tls = future_size(&serve_tls);
        assert!(unix <= 3 * 1024, "serve_unix future is {unix} bytes");
        assert!(tls <= 3 * 1024 + 512, "serve_tls future is {tls} bytes");
        let passthrough =
            future_size(&|a: Leg,
                          b: Leg,
                          c: &'static relay::Counters,
                          d: std::future::Pending<()>,
                          _e: ()| { relay::relay_until(a, b, c, d) });
        assert!(
            passthrough <= 1024,
            "passthrough relay future is {passthrough} bytes"
        );
        let guarded =
            future_size(&|a: Leg,
                          b: Leg,
                          c: &'static relay::Counters,
                          d: std::future::Pending<()>,
                          e: Guard<SessionPolicy<'static>>| {
                relay::relay_filtered_until(a, b, c, d, (e, None))
            });
        assert!(guarded <= 4 * 1024, "guard relay future is {guarded} bytes");
    }
}
