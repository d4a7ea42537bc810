//! One client session, start to end: identify → read the opening frame → authorize → connect
//! and authenticate upstream → hand both sockets to the relay.
//!
//! The whole handshake (TLS included) runs against one deadline (`limits.handshake_timeout`).
//! Every refusal is a RESP `-ERR bastion: …` to the client plus an `access.denied` audit event,
//! and closes the connection. Bytes the client pipelined behind its opening frame are written
//! upstream, in order, before the relay starts — never dropped.
//!
//! Every session is in the [`Registry`] from accept to end; an administrator's stop (kill, or
//! revocation of its certificate) ends it whether it is in the handshake or the relay.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant as StdInstant;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio::time::{timeout_at, Instant};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::either::Either;
use tracing::{field, Instrument};

use arc_swap::ArcSwap;

use crate::audit::{self, SessionFacts};
use crate::aws::credentials::CredentialChain;
use crate::catalog::CatalogHandle;
use crate::config::{DatabaseConfig, Limits};
use crate::identity::{self, Identity, Method};
use crate::proxy::admission::{Admission, Pending, RefusalLog};
use crate::proxy::guard::session_policy::SessionPolicy;
use crate::proxy::guard::Guard;
use crate::proxy::handshake::client::{parse_opening, Opening, Parsed};
use crate::proxy::handshake::upstream::{auth_command, parse_reply, Reply};
use crate::proxy::handshake::{error_reply, protocol_error_reply, HandshakeError};
use crate::proxy::registry::{Grant, StopReason};
use crate::proxy::registry::{Registered, Registry, Transport};
use crate::proxy::relay::{self, Leg};
use crate::proxy::slots::SessionSlots;
use crate::rbac;
use crate::upstream::{self, Connector, UpstreamStream};

/// Upper bound on the upstream's reply to AUTH/HELLO (a HELLO map is a few hundred bytes).
const MAX_UPSTREAM_REPLY: usize = 1024 * 1024;

/// Refusals of unidentified connections logged one by one per interval; the rest are counted.
const REFUSAL_BURST: u32 = 20;
/// How often the count of the others is logged (one `access.denied.summary` line).
pub const REFUSAL_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// The `access.denied` reason of a session stopped before its relay started.
const STOPPED_IN_HANDSHAKE: &str = "session killed by an administrator during the handshake";

/// What every session shares: the catalog, limits, credentials and upstream connector.
pub struct Shared {
    pub catalog: CatalogHandle,
    /// Swapped by a reload; a session reads them when it reaches each step.
    limits: ArcSwap<Limits>,
    pub credentials: CredentialChain,
    pub connector: Connector,
    /// One slot per identified session (`limits.max_sessions`); shared by every listener.
    pub slots: SessionSlots,
    /// TCP connections still in their handshake (`limits.max_handshakes`, per source too).
    pub admission: Arc<Admission>,
    /// Refusals of unidentified connections: logged up to a burst, then summarised.
    pub refusals: RefusalLog,
    /// The EC2 instance this bastion runs on, once IMDS has told (for audit events).
    pub instance_id: std::sync::OnceLock<String>,
    /// Live sessions (`bastion sessions`) and revoked certificate serials.
    pub sessions: Arc<Registry>,
    next_id: AtomicU64,
}

impl Shared {
    pub fn new(catalog: CatalogHandle, limits: Limits, credentials: CredentialChain) -> Self {
        Shared {
            catalog,
            slots: SessionSlots::new(limits.max_sessions),
            admission: Admission::new(limits.max_handshakes, limits.max_handshakes_per_source),
            refusals: RefusalLog::new(REFUSAL_BURST),
            limits: ArcSwap::from_pointee(limits),
            credentials,
            connector: Connector::new(),
            instance_id: std::sync::OnceLock::new(),
            sessions: Arc::new(Registry::default()),
            next_id: AtomicU64::new(1),
        }
    }

    /// Sessions accepted since start.
    pub fn sessions_started(&self) -> u64 {
        self.next_id.load(Ordering::Relaxed) - 1
    }

    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Sessions holding a slot right now.
    pub fn active_sessions(&self) -> usize {
        self.slots.open()
    }

    /// The limits in force for new sessions.
    pub fn limits(&self) -> Arc<Limits> {
        self.limits.load_full()
    }

    /// Apply `limits` to sessions from now on; open sessions keep their slots and deadlines.
    pub fn set_limits(&self, limits: Limits) {
        self.slots.set_max(limits.max_sessions);
        self.admission
            .set_bounds(limits.max_handshakes, limits.max_handshakes_per_source);
        self.limits.store(Arc::new(limits));
    }
}

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
    async move {
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
        let accept = pending.unless_evicted(timeout_at(deadline, spec.acceptor.accept(tcp)));
        let unidentified = |reason: &'static str, detail: String| {
            if shared.refusals.note(reason, peer.ip()) {
                audit::denied(&facts, &detail);
            }
        };
        let tls = match session.unless_stopped(accept).await {
            None => {
                return match session.stop_reason() {
                    Some(StopReason::Policy(reason)) => audit::denied(&facts, &reason),
                    _ => audit::denied(&facts, STOPPED_IN_HANDSHAKE),
                }
            }
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
        // Identified by its certificate (or refused below): no longer pre-authentication.
        drop(pending);
        let (_, conn) = tls.get_ref();
        let cert = conn
            .peer_certificates()
            .and_then(|chain| chain.first())
            .ok_or_else(|| "no client certificate".to_string())
            .and_then(|cert| identity::tls::cert_identity(cert).map_err(|e| e.to_string()));
        facts.evidence = cert.as_ref().ok().map(|c| format!("serial={}", c.serial));
        // Checked (and recorded) in the registry, under the lock `cert revoke` takes.
        let who = cert.and_then(|c| match session.present_certificate(&c.serial) {
            Err(revoked) => Err(revoked.to_string()),
            Ok(()) => Ok(Identity {
                user: c.user,
                method: Method::Mtls,
                evidence: format!("serial={}", c.serial),
                expires: Some(c.not_after),
                uid: None,
            }),
        });
        let db = pick_database(&spec, conn.server_name());
        tracing::debug!(
            sni = conn.server_name().unwrap_or("-"),
            "TLS handshake done"
        );
        run(
            &shared,
            &session,
            Either::Left(Box::new(tls)),
            who,
            db,
            facts,
            deadline,
        )
        .await;
    }
    .instrument(span)
    .await
}

/// A session that arrived on `<dir>/<db>.sock`.
pub async fn serve_unix(shared: Arc<Shared>, stream: UnixStream, db: String, path: PathBuf) {
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
    async move {
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
            Err(e) => Err(format!("cannot read peer credentials: {e}")),
            Ok(c) => match shared.catalog.snapshot().user_for_uid(c.uid) {
                Some(user) => Ok(Identity {
                    user: user.name.clone(),
                    method: Method::UnixPeer,
                    evidence: client.clone(),
                    expires: None,
                    uid: Some(c.uid),
                }),
                None => Err(format!("uid {} is not bound to a bastion user", c.uid)),
            },
        };
        run(
            &shared,
            &session,
            Either::Right(stream),
            who,
            Ok(db),
            facts,
            deadline,
        )
        .await;
    }
    .instrument(span)
    .await
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
fn pick_database(spec: &TlsListenerSpec, sni: Option<&str>) -> Result<String, String> {
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
        _ => spec.default_database.clone().ok_or_else(|| {
            "no database selected: connect with SNI naming the database (redis-cli --sni <db>)"
                .to_string()
        }),
    }
}

/// The part common to both listeners, from the first client byte to the end of the relay.
async fn run(
    shared: &Shared,
    session: &Registered,
    mut client: ClientStream,
    who: Result<Identity, String>,
    db: Result<String, String>,
    mut facts: SessionFacts,
    deadline: Instant,
) {
    // A session slot (`limits.max_sessions`) is taken only once the client is identified, so
    // connections that never say who they are cannot lock identified ones out.
    let _slot = match &who {
        Err(_) => None,
        Ok(_) => match shared.slots.try_acquire() {
            Some(slot) => Some(slot),
            None => {
                let reason = "session limit reached (limits.max_sessions); try again later";
                refuse(&mut client, &facts, reason).await;
                return;
            }
        },
    };
    let work = handshake(shared, session, &mut client, who, db, &mut facts, deadline);
    let ready = match session.unless_stopped(work).await {
        None => {
            return match session.stop_reason() {
                Some(StopReason::Policy(reason)) => audit::denied(&facts, &reason),
                _ => audit::denied(&facts, STOPPED_IN_HANDSHAKE),
            }
        }
        Some(None) => return,
        Some(Some(ready)) => ready,
    };
    session.counters().add(ready.handed_up, ready.handed_down);
    session.relaying();
    audit::session_start(&facts);
    let started = StdInstant::now();
    // The counters include the hand-off, so the audit counts the whole session: the client's
    // first command or pipelined bytes, and the upstream's AUTH/HELLO reply, too.
    let stopped_by = std::sync::OnceLock::new();
    let stop = async {
        let by = tokio::select! {
            () = session.stopped() => "stopped",
            () = idle(session.counters(), shared.limits().idle_timeout) => "idle",
        };
        let _ = stopped_by.set(by);
    };
    let (client, upstream) = (client_leg(client), upstream::into_leg(ready.upstream));
    let outcome = match ready.guard {
        // `relay = "guard"`: the requests go through the command guard, replies as before.
        Some(GuardStart {
            pipelined,
            database,
            db_user,
        }) => {
            let policy = SessionPolicy {
                database: &database,
                db_user: db_user.as_deref(),
                credentials: &shared.credentials,
                facts: &facts,
            };
            let requests = Guard::new(policy, pipelined);
            relay::relay_filtered_until(client, upstream, session.counters(), stop, requests).await
        }
        None => relay::relay_until(client, upstream, session.counters(), stop).await,
    };
    let stopped = match stopped_by.get().copied() {
        Some("idle") => ("idle", "no byte moved for limits.idle_timeout".to_string()),
        _ => match session.stop_reason() {
            Some(StopReason::Policy(reason)) => ("policy", reason),
            Some(StopReason::Admin(reason)) => ("admin", reason),
            None => ("admin", "-".to_string()),
        },
    };
    audit::session_end(&facts, &outcome, started.elapsed(), (stopped.0, &stopped.1));
}

/// Every second, stop the live sessions whose grant no longer holds: their user was removed or
/// lost the role, their database was removed or re-pointed, their certificate expired, or they
/// are older than `limits.max_session_age`. (Revocation and `sessions kill` stop at once.)
pub async fn enforce_grants(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let catalog = shared.catalog.snapshot();
        let max_age = shared.limits().max_session_age;
        let now = std::time::SystemTime::now();
        let stopped = shared
            .sessions
            .enforce(|g| grant_holds(&catalog, g, now, max_age));
        for (info, reason) in stopped {
            tracing::info!(session = info.id, user = info.user.as_deref().unwrap_or("-"),
                reason = %reason, "session stopped: its access was taken away");
        }
    }
}

/// `Err(reason)` when `grant` no longer holds in `catalog` at `now`.
fn grant_holds(
    catalog: &crate::catalog::Catalog,
    g: &Grant,
    now: std::time::SystemTime,
    max_age: Option<std::time::Duration>,
) -> Result<(), String> {
    if g.expires.is_some_and(|t| now >= t) {
        return Err("client certificate expired".into());
    }
    if max_age.is_some_and(|age| g.started.elapsed() >= age) {
        return Err("session reached limits.max_session_age".into());
    }
    if let Some(uid) = g.uid {
        if catalog.user_for_uid(uid).map(|u| u.name.as_str()) != Some(g.user.as_str()) {
            return Err(format!("uid {uid} is no longer bound to user '{}'", g.user));
        }
    }
    // The same decision made again must give the same db-user (or, legacy, none).
    let now_db_user = rbac::authorize(catalog, &g.user, &g.db, g.db_user.as_deref())
        .map_err(|d| d.to_string())?;
    if now_db_user != g.db_user {
        return Err(format!(
            "database '{}' no longer authenticates this session's way (db-user {} → {})",
            g.db,
            g.db_user.as_deref().unwrap_or("-"),
            now_db_user.as_deref().unwrap_or("-")
        ));
    }
    match catalog.database(&g.db) {
        Some(db) if Grant::fingerprint(db) == g.database => Ok(()),
        Some(_) => Err(format!(
            "database '{}' was changed (address, auth or TLS)",
            g.db
        )),
        None => Err(format!("database '{}' was removed", g.db)),
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

/// An authenticated upstream, after the hand-off, ready for the relay.
struct Ready {
    upstream: UpstreamStream,
    /// `relay = "guard"`: what the command guard needs (the pipelined bytes are its to send).
    guard: Option<GuardStart>,
    /// Bytes the hand-off wrote upstream (pipelined client bytes) and to the client (replies).
    handed_up: u64,
    handed_down: u64,
}

/// Opening → authorize → upstream auth → hand-off; `None` once the session was refused (and
/// audited) or the client went away.
async fn handshake(
    shared: &Shared,
    session: &Registered,
    client: &mut ClientStream,
    who: Result<Identity, String>,
    db: Result<String, String>,
    facts: &mut SessionFacts,
    deadline: Instant,
) -> Option<Ready> {
    let limits = shared.limits();
    let mut buf = BytesMut::with_capacity(4096);
    let parsed = match timeout_at(
        deadline,
        read_opening(client, &mut buf, limits.max_handshake_bytes),
    )
    .await
    {
        Err(_) => return refuse(client, facts, "handshake timeout").await,
        Ok(Err(OpeningError::Closed)) => {
            tracing::debug!("client closed before its first command");
            return None;
        }
        Ok(Err(OpeningError::Io(e))) => {
            tracing::debug!(error = %e, "client read failed during handshake");
            return None;
        }
        Ok(Err(OpeningError::Protocol(e))) => {
            // Malformed input gets Redis' own wording: `-ERR protocol error: …`.
            return refuse_with(client, facts, &e.to_string(), protocol_error_reply(&e)).await;
        }
        Ok(Ok(parsed)) => parsed,
    };

    // Identity and database first, then roles: nothing upstream happens for a refused user.
    let identity = match who {
        Ok(identity) => identity,
        Err(reason) => return refuse(client, facts, &reason).await,
    };
    facts.user = Some(identity.user.clone());
    tracing::Span::current().record("user", identity.user.as_str());
    let db_name = match db {
        Ok(db) => db,
        Err(reason) => return refuse(client, facts, &reason).await,
    };
    facts.db = Some(db_name.clone());
    tracing::Span::current().record("db.name", db_name.as_str());
    session.update(facts);
    let catalog = shared.catalog.snapshot();
    let requested = match &parsed.opening {
        Opening::Auth { db_user } | Opening::Hello { db_user, .. } => db_user.as_deref(),
        Opening::Command { .. } => None,
    };
    let db_user = match rbac::authorize(&catalog, &identity.user, &db_name, requested) {
        Ok(db_user) => db_user,
        Err(denied) => {
            facts.db_user = requested.map(str::to_string);
            return refuse(client, facts, &denied.to_string()).await;
        }
    };
    // No db-user (legacy_auth, or roles that list none): the upstream's default user.
    facts.db_user = db_user.clone();
    if let Some(db_user) = &db_user {
        tracing::Span::current().record("db.user", db_user.as_str());
    }
    session.update(facts);
    // authorize() succeeded, so the database exists in this snapshot.
    let Some(database) = catalog.database(&db_name).cloned() else {
        return refuse(client, facts, &format!("unknown database '{db_name}'")).await;
    };
    // From here on the grant is re-checked against every new catalog (and the clock) until
    // the session ends: see `enforce_grants`.
    session.grant(Grant {
        user: identity.user.clone(),
        db: db_name.clone(),
        db_user: db_user.clone(),
        database: Grant::fingerprint(&database),
        uid: identity.uid,
        expires: identity.expires,
        started: StdInstant::now(),
    });
    facts.auth_mode = Some(database.auth.mode_name());

    let upstream = match timeout_at(
        deadline,
        open_upstream(shared, &database, db_user.as_deref(), &parsed.opening),
    )
    .await
    {
        Err(_) => {
            return refuse(client, facts, "handshake timeout while connecting upstream").await
        }
        Ok(Err(reason)) => return refuse(client, facts, &reason).await,
        Ok(Ok(upstream)) => upstream,
    };
    let Authenticated {
        mut upstream,
        reply,
        extra,
    } = upstream;

    // What the client sees of the handshake: the upstream's own reply to its AUTH/HELLO.
    let client_reply: Option<Vec<u8>> = match (&parsed.opening, reply) {
        (Opening::Command { .. }, _) => None,
        (_, Some(reply)) => Some(reply),
        (Opening::Auth { .. }, None) => Some(b"+OK\r\n".to_vec()),
        (Opening::Hello { .. }, None) => None, // unreachable: HELLO is always sent upstream
    };
    let pipelined = buf.split_off(parsed.consumed);
    // In guard mode the pipelined bytes go through the guard like everything after them.
    let guarded = database.relay.is_guard();
    let handoff = async {
        if let Some(reply) = &client_reply {
            client.write_all(reply).await?;
        }
        if !extra.is_empty() {
            client.write_all(&extra).await?;
        }
        client.flush().await?;
        if !guarded && !pipelined.is_empty() {
            upstream.write_all(&pipelined).await?;
            upstream.flush().await?;
        }
        Ok::<_, std::io::Error>(())
    };
    if let Err(e) = timeout_at(deadline, handoff).await.unwrap_or_else(|_| {
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "handshake timeout",
        ))
    }) {
        tracing::debug!(error = %e, "handoff to relay failed");
        return None;
    }

    let handed_up = if guarded { 0 } else { pipelined.len() as u64 };
    Some(Ready {
        upstream,
        guard: guarded.then(|| GuardStart {
            pipelined: pipelined.to_vec(),
            database,
            db_user,
        }),
        handed_up,
        handed_down: (client_reply.as_ref().map_or(0, Vec::len) + extra.len()) as u64,
    })
}

/// The command guard's share of a session.
struct GuardStart {
    pipelined: Vec<u8>,
    database: Arc<DatabaseConfig>,
    db_user: Option<String>,
}

struct Authenticated {
    upstream: UpstreamStream,
    /// The upstream's raw reply to our AUTH/HELLO, if one was sent.
    reply: Option<Vec<u8>>,
    /// Bytes the upstream sent after that reply (normally none).
    extra: Vec<u8>,
}

/// Fetch the secret, connect, authenticate. The `Err` string is safe to show the client.
async fn open_upstream(
    shared: &Shared,
    db: &DatabaseConfig,
    db_user: Option<&str>,
    opening: &Opening,
) -> Result<Authenticated, String> {
    let secret = upstream::auth_secret(db, db_user, &shared.credentials)
        .await
        .map_err(|e| e.to_string())?;
    let mut stream = shared
        .connector
        .connect(db, shared.limits().upstream_connect_timeout)
        .await
        .map_err(|e| e.to_string())?;
    tracing::debug!(tls = db.tls.is_some(), "upstream connected");
    let Some(command) = auth_command(opening, db_user, secret.as_ref()) else {
        return Ok(Authenticated {
            upstream: stream,
            reply: None,
            extra: Vec::new(),
        });
    };
    drop(secret);
    let io = |e: std::io::Error| {
        format!(
            "upstream '{}' ({}) failed during AUTH: {e}",
            db.name, db.address
        )
    };
    stream.write_all(&command).await.map_err(io)?;
    stream.flush().await.map_err(io)?;
    drop(command);
    let mut buf = BytesMut::with_capacity(1024);
    let Reply { len, error } = loop {
        match parse_reply(&buf, MAX_UPSTREAM_REPLY) {
            Ok(Some(reply)) => break reply,
            Ok(None) => {}
            Err(e) => {
                return Err(format!(
                    "upstream '{}' sent a malformed reply to AUTH: {e}",
                    db.name
                ))
            }
        }
        if stream.read_buf(&mut buf).await.map_err(io)? == 0 {
            return Err(format!(
                "upstream '{}' ({}) closed the connection during AUTH",
                db.name, db.address
            ));
        }
    };
    if let Some(error) = error {
        return Err(upstream::explain_rejection(db, db_user, &error));
    }
    let extra = buf.split_off(len).to_vec();
    Ok(Authenticated {
        upstream: stream,
        reply: Some(buf.to_vec()),
        extra,
    })
}

enum OpeningError {
    Closed,
    Io(std::io::Error),
    Protocol(HandshakeError),
}

async fn read_opening(
    client: &mut ClientStream,
    buf: &mut BytesMut,
    limit: usize,
) -> Result<Parsed, OpeningError> {
    loop {
        if !buf.is_empty() {
            match parse_opening(buf, limit) {
                Ok(Some(parsed)) => return Ok(parsed),
                Ok(None) => {}
                Err(e) => return Err(OpeningError::Protocol(e)),
            }
        }
        match client.read_buf(buf).await {
            Ok(0) => return Err(OpeningError::Closed),
            Ok(_) => {}
            Err(e) => return Err(OpeningError::Io(e)),
        }
    }
}

/// Send `-ERR bastion: <reason>`, audit the refusal, close. Always `None`: the session is over.
async fn refuse(client: &mut ClientStream, facts: &SessionFacts, reason: &str) -> Option<Ready> {
    refuse_with(client, facts, reason, error_reply(reason)).await
}

/// Audit the refusal, send `reply`, close. Always `None`.
async fn refuse_with(
    client: &mut ClientStream,
    facts: &SessionFacts,
    reason: &str,
    reply: Vec<u8>,
) -> Option<Ready> {
    audit::denied(facts, reason);
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
        let mut sink = [0u8; 16 * 1024];
        let mut left = LINGER_BYTES;
        while left > 0 {
            match client.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_TIME, drain).await;
    None
}

/// How long, and how many bytes, a refused client's leftover input is drained before closing.
const LINGER_TIME: std::time::Duration = std::time::Duration::from_secs(1);
const LINGER_BYTES: usize = 1024 * 1024;

/// The client side of a session before it becomes a relay [`Leg`]: mTLS or a Unix socket.
type ClientStream = Either<Box<TlsStream<TcpStream>>, UnixStream>;

fn client_leg(stream: ClientStream) -> Leg {
    match stream {
        Either::Left(tls) => Leg::Tls(tls),
        Either::Right(unix) => Leg::Unix(unix),
    }
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
        assert!(pick_database(&s, None).unwrap_err().contains("--sni"));
    }
}
