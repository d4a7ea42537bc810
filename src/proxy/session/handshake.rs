//! A session's handshake, one step per function, each against the session's one deadline:
//! [`read_opening`] → [`authorize`] → [`connect`] → [`hand_off`].
//!
//! A step either passes its result on or stops the session: with a [`Refusal`] (the client gets
//! `-ERR bastion: <refusal>` and an `access.denied` event is audited, see [`super::refuse`]) or,
//! when the client is gone, silently ([`Stop::Gone`]). The upstream TCP + TLS connection may be
//! begun at identity, while the opening is read (`dial.rs`: only for a user whose roles reach
//! the database with some db-user); nothing is sent upstream before [`authorize`] passed.

use std::sync::Arc;
use std::time::Instant as StdInstant;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{timeout_at, Instant};

use super::dial::EarlyDial;
use super::{ClientStream, Context};
use crate::aws::iam::Freshness;
use crate::catalog::Catalog;
use crate::catalog::Database;
use crate::identity::tls::TlsIdentityError;
use crate::identity::Identity;
use crate::proxy::handshake::client::{parse_opening, Opening, Parsed};
use crate::proxy::handshake::{auth_command, HandshakeError};
use crate::proxy::registry::{CertRefused, Grant};
use crate::proxy::shared::Shared;
use crate::proxy::upstream::{self, AuthError, Authenticated, UpstreamError, UpstreamStream};
use crate::rbac::{self, Denied};

/// Why a session was refused. The `Display` text is the client's `-ERR bastion: …` line and
/// the `reason` of the `access.denied` event: it never carries a secret.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The client could not be identified (certificate, revocation, peer credentials).
    #[error(transparent)]
    Identity(#[from] Unidentified),
    /// A TLS client that named no database, on a listener without a default one.
    #[error("no database selected: connect with SNI naming the database (redis-cli --sni <db>)")]
    NoDatabase,
    /// The roles refuse it (or the database is unknown).
    #[error(transparent)]
    Denied(#[from] Denied),
    /// No secret for the upstream, or no connection to it.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The upstream refused (or garbled) our AUTH/HELLO.
    #[error(transparent)]
    UpstreamAuth(#[from] AuthError),
    /// The handshake deadline (`limits.handshake_timeout`) passed during `step`.
    #[error("{}", match .0 {
        Step::Opening => "handshake timeout",
        Step::Upstream => "handshake timeout while connecting upstream",
    })]
    Timeout(Step),
    /// Every session slot is taken (`limits.max_sessions`).
    #[error("session limit reached (limits.max_sessions); try again later")]
    SessionLimit,
    /// The client's opening frame is malformed; answered in Redis' own wording.
    #[error(transparent)]
    Protocol(HandshakeError),
}

impl Refusal {
    /// The refusal's kind, a fixed word for the `reason` label of the refusals metric (never a
    /// name or an address).
    pub fn kind(&self) -> &'static str {
        match self {
            Refusal::Identity(_) => "identity",
            Refusal::NoDatabase => "no_database",
            Refusal::Denied(_) => "denied",
            Refusal::Upstream(_) => "upstream",
            Refusal::UpstreamAuth(_) => "upstream_auth",
            Refusal::Timeout(_) => "timeout",
            Refusal::SessionLimit => "session_limit",
            Refusal::Protocol(_) => "protocol",
        }
    }

    /// What the client is told: what the person can act on, never the upstream's address, a
    /// file path or mode, a role ARN or an access key id (those stay in the log and the audit
    /// event, which the reply points to with its correlation id).
    pub fn client_message(&self) -> String {
        match self {
            Refusal::Upstream(e) => match e {
                UpstreamError::Connect { db, .. }
                | UpstreamError::ConnectTimeout { db, .. }
                | UpstreamError::Tls { db, .. } => {
                    format!("database '{db}' is unreachable right now; try again later")
                }
                UpstreamError::Region { error } => format!(
                    "database '{}' is not usable: the bastion's configuration is incomplete; \
                     ask an administrator",
                    error.database
                ),
                UpstreamError::TlsConfig { db, .. }
                | UpstreamError::Password { db, .. }
                | UpstreamError::Managed { db, .. }
                | UpstreamError::Credentials { db, .. }
                | UpstreamError::AssumeRole { db, .. }
                | UpstreamError::Token { db, .. }
                | UpstreamError::PlaintextToken { db, .. } => format!(
                    "database '{db}' is not usable: the bastion cannot authenticate to it right \
                     now; ask an administrator"
                ),
            },
            Refusal::UpstreamAuth(e) => match e {
                AuthError::Rejected { code, .. } => format!(
                    "the database rejected the bastion's credentials for this db-user ({code}); \
                     ask an administrator"
                ),
                AuthError::Io { .. } | AuthError::Closed { .. } | AuthError::Malformed { .. } => {
                    "the database dropped the connection while the bastion authenticated; try \
                     again later"
                        .to_string()
                }
            },
            Refusal::Identity(Unidentified::PeerCredentials(_)) => {
                "cannot read the connection's peer credentials".to_string()
            }
            // The rest names only what the client itself sent or is (its certificate's serial,
            // its uid, the database and db-user it asked for) and a limit it can act on.
            Refusal::Identity(_)
            | Refusal::NoDatabase
            | Refusal::Denied(_)
            | Refusal::Timeout(_)
            | Refusal::SessionLimit
            | Refusal::Protocol(_) => self.to_string(),
        }
    }
}

/// The step a deadline passed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Opening,
    Upstream,
}

/// Who the client is not.
#[derive(Debug, thiserror::Error)]
pub enum Unidentified {
    #[error("no client certificate")]
    NoCertificate,
    #[error(transparent)]
    Certificate(#[from] TlsIdentityError),
    #[error(transparent)]
    NotAllowed(#[from] CertRefused),
    #[error("cannot read peer credentials: {0}")]
    PeerCredentials(std::io::Error),
    #[error("uid {0} is not bound to a bastion user")]
    UnboundUid(u32),
}

/// How a handshake stopped short of the relay.
#[derive(Debug)]
pub enum Stop {
    /// Refused: reply, audit, close.
    Refused(Refusal),
    /// The client went away (or a hand-off write failed): nothing to say to anyone.
    Gone,
}

impl From<Refusal> for Stop {
    fn from(refusal: Refusal) -> Self {
        Stop::Refused(refusal)
    }
}

/// An authenticated upstream, after the hand-off, ready for the relay.
pub struct Ready {
    pub upstream: UpstreamStream,
    /// `relay = "guard"` or `"inspect"`: what the command guard needs (the pipelined bytes are
    /// its to send).
    pub guard: Option<GuardStart>,
    /// The database's relay mode.
    pub relay: crate::config::RelayMode,
    /// Bytes the hand-off wrote upstream (pipelined client bytes) and to the client (replies).
    pub handed_up: u64,
    pub handed_down: u64,
    /// The session's place in `bastion_sessions_open` (taken before the hand-off), held for the
    /// relay.
    pub open: Option<crate::metrics::InFlight>,
}

/// The command guard's share of a session.
pub struct GuardStart {
    pub pipelined: Vec<u8>,
    /// The client opened with `HELLO 3`: the connection speaks RESP3.
    pub resp3: bool,
    pub database: Arc<Database>,
    pub db_user: Option<String>,
}

/// The whole handshake: the four steps in order, the upstream dial begun at identity.
pub async fn run(
    shared: &Shared,
    ctx: &mut Context<'_>,
    client: &mut ClientStream,
    who: Result<Identity, Refusal>,
    db: Result<String, Refusal>,
    deadline: Instant,
) -> Result<Ready, Stop> {
    let limit = shared.limits().max_handshake_bytes;
    let mut buf = BytesMut::with_capacity(4096);
    let mut early = EarlyDial::start(shared, &who, &db);
    let parsed = early
        .alongside(read_opening(client, &mut buf, limit, deadline))
        .await?;
    let catalog = shared.catalog.snapshot();
    let granted = authorize(&catalog, ctx, who, db, &parsed.opening)?;
    let opened = connect(shared, &granted, &parsed.opening, early, deadline).await?;
    // Counted open before the hand-off gives the client its first reply: a client that has
    // its answer is always among `bastion_sessions_open`.
    let open = shared.metrics.session_started();
    let mut ready = hand_off(client, opened, &granted, &parsed, buf, deadline).await?;
    ready.open = Some(open);
    Ok(ready)
}

/// Read until the opening frame is classified (AUTH, HELLO or another command).
async fn read_opening(
    client: &mut ClientStream,
    buf: &mut BytesMut,
    limit: usize,
    deadline: Instant,
) -> Result<Parsed, Stop> {
    let read = async {
        loop {
            if !buf.is_empty() {
                match parse_opening(buf, limit) {
                    Ok(Some(parsed)) => return Ok(parsed),
                    Ok(None) => {}
                    Err(e) => return Err(Stop::Refused(Refusal::Protocol(e))),
                }
            }
            match client.read_buf(buf).await {
                Ok(0) => {
                    tracing::debug!("client closed before its first command");
                    return Err(Stop::Gone);
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "client read failed during handshake");
                    return Err(Stop::Gone);
                }
            }
        }
    };
    timeout_at(deadline, read)
        .await
        .unwrap_or(Err(Stop::Refused(Refusal::Timeout(Step::Opening))))
}

/// What [`authorize`] decided: the database as the snapshot defines it, and the db-user.
struct Granted<'c> {
    database: &'c Arc<Database>,
    db_user: Option<String>,
}

/// Identity and database first, then roles: nothing upstream happens for a refused user. On
/// success the grant is registered: from here on it is re-checked against every new catalog
/// (and the clock) until the session ends (see `super::grants`).
fn authorize<'c>(
    catalog: &'c Catalog,
    ctx: &mut Context<'_>,
    who: Result<Identity, Refusal>,
    db: Result<String, Refusal>,
    opening: &Opening,
) -> Result<Granted<'c>, Refusal> {
    let identity = who?;
    ctx.set_user(&identity.user);
    let db = db?;
    ctx.set_db(&db);
    let requested = match opening {
        Opening::Auth { db_user } | Opening::Hello { db_user, .. } => db_user.as_deref(),
        Opening::Command { .. } => None,
    };
    let authorized = match rbac::authorize(catalog, &identity.user, &db, requested) {
        Ok(authorized) => authorized,
        Err(denied) => {
            ctx.requested_db_user(requested);
            return Err(denied.into());
        }
    };
    // A role's command policy is enforced by inspect mode only: anywhere else, refuse the
    // session rather than relay what the policy would refuse.
    if authorized.database.relay != crate::config::RelayMode::Inspect
        && !rbac::command_policy(
            catalog,
            &identity.user,
            authorized.database,
            authorized.db_user.as_deref(),
        )
        .is_unrestricted()
    {
        return Err(Denied::PolicyNeedsInspect {
            user: identity.user.clone(),
            db: db.clone(),
        }
        .into());
    }
    // No db-user (legacy_auth, or roles that list none): the upstream's default user.
    ctx.set_db_user(authorized.db_user.as_deref());
    ctx.grant(Grant {
        user: identity.user,
        db,
        db_user: authorized.db_user.clone(),
        database: authorized.database.clone(),
        uid: identity.uid,
        expires: identity.expires,
        started: StdInstant::now(),
    });
    ctx.set_auth_mode(authorized.database.auth.mode_name());
    Ok(Granted {
        database: authorized.database,
        db_user: authorized.db_user,
    })
}

/// An upstream connection after our AUTH/HELLO (if one was needed).
pub(super) struct Opened {
    pub(super) upstream: UpstreamStream,
    /// The upstream's raw reply to our AUTH/HELLO, if one was sent.
    reply: Option<Vec<u8>>,
    /// Bytes the upstream sent after that reply (normally none).
    pub(super) extra: Vec<u8>,
}

/// Fetch the secret (while the early dial goes on), connect unless that dial is to the granted
/// database, authenticate — before the deadline. A secret that cannot be had is refused before
/// a failed dial, as when the dial came after it.
async fn connect(
    shared: &Shared,
    granted: &Granted<'_>,
    opening: &Opening,
    mut early: EarlyDial<'_>,
    deadline: Instant,
) -> Result<Opened, Refusal> {
    let (db, db_user) = (granted.database, granted.db_user.as_deref());
    let open = async {
        let secret = early
            .alongside(upstream::auth_secret(
                db,
                db_user,
                &shared.credentials,
                Freshness::Recent,
            ))
            .await?;
        if db.authenticates() {
            let proof = shared.warm.proof(db, secret.as_ref());
            if let Some(warm) = shared.warm.take(db, db_user, proof, &shared.limits()) {
                // Authenticated ahead as exactly this db-user, with this password: no AUTH;
                // a HELLO goes without its AUTH part. A connection dialed at identity is
                // dropped.
                drop((early, secret));
                return authenticate(shared, warm, db, db_user, opening, None).await;
            }
        }
        let stream = match early.take(db).await {
            Some(dialed) => dialed?,
            // No early dial (or one to an older definition): a warm connection (one that
            // needs no AUTH: those that do were looked for above), else a dial.
            None => {
                let warm = (!db.authenticates())
                    .then(|| shared.warm.take(db, None, None, &shared.limits()))
                    .flatten();
                match warm {
                    Some(warm) => warm,
                    None => dial(shared, db).await?,
                }
            }
        };
        authenticate(shared, stream, db, db_user, opening, secret).await
    };
    timeout_at(deadline, open)
        .await
        .unwrap_or(Err(Refusal::Timeout(Step::Upstream)))
}

/// A fresh upstream connection for a session already relaying — a RESP2 subscriber moved off
/// a connection it cannot re-authenticate (`resubscribe.rs`): the same dial and AUTH as
/// [`connect`] with `secret` (fetched by the caller), sent as `AUTH [db-user] <secret>` (RESP2,
/// like the in-place re-AUTH), within `limits.handshake_timeout`.
pub(super) async fn redial(
    shared: &Shared,
    db: &Database,
    db_user: Option<&str>,
    secret: Option<crate::secret::Secret>,
) -> Result<Opened, Refusal> {
    let opening = Opening::Auth { db_user: None };
    let open = async {
        let stream = dial(shared, db).await?;
        authenticate(shared, stream, db, db_user, &opening, secret).await
    };
    let deadline = Instant::now() + shared.limits().handshake_timeout;
    timeout_at(deadline, open)
        .await
        .unwrap_or(Err(Refusal::Timeout(Step::Upstream)))
}

/// TCP (+ TLS) to the database, timed into the metrics.
async fn dial(shared: &Shared, db: &Database) -> Result<UpstreamStream, UpstreamError> {
    let connecting = StdInstant::now();
    let stream = shared
        .connector
        .connect(db, shared.limits().upstream_connect_timeout)
        .await?;
    shared.metrics.upstream_connected(connecting.elapsed());
    Ok(stream)
}

/// Our AUTH/HELLO for `opening` on a new connection (none without a secret), a managed
/// database's fallback secrets tried on refusal.
async fn authenticate(
    shared: &Shared,
    mut stream: UpstreamStream,
    db: &Database,
    db_user: Option<&str>,
    opening: &Opening,
    secret: Option<crate::secret::Secret>,
) -> Result<Opened, Refusal> {
    tracing::debug!(tls = db.tls.is_some(), "upstream connected");
    let Some(command) = auth_command(opening, db_user, secret.as_ref()) else {
        return Ok(Opened {
            upstream: stream,
            reply: None,
            extra: Vec::new(),
        });
    };
    drop(secret);
    let authenticating = StdInstant::now();
    let (Authenticated { reply, extra }, _) = upstream::login(
        &mut stream,
        db,
        db_user,
        opening,
        &shared.credentials,
        &command,
    )
    .await?;
    shared
        .metrics
        .upstream_authenticated(authenticating.elapsed());
    Ok(Opened {
        upstream: stream,
        reply: Some(reply),
        extra,
    })
}

/// Give the client the upstream's reply to its AUTH/HELLO (nothing if it opened with another
/// command), then write upstream every byte it sent after that frame — or its whole first
/// command — in order.
async fn hand_off(
    client: &mut ClientStream,
    opened: Opened,
    granted: &Granted<'_>,
    parsed: &Parsed,
    mut buf: BytesMut,
    deadline: Instant,
) -> Result<Ready, Stop> {
    let Opened {
        mut upstream,
        reply,
        extra,
    } = opened;
    let client_reply: Option<Vec<u8>> = match (&parsed.opening, reply) {
        (Opening::Command { .. }, _) => None,
        (_, Some(reply)) => Some(reply),
        (Opening::Auth { .. }, None) => Some(b"+OK\r\n".to_vec()),
        (Opening::Hello { .. }, None) => None, // unreachable: HELLO is always sent upstream
    };
    let pipelined = buf.split_off(parsed.consumed);
    // In guard mode the pipelined bytes go through the guard like everything after them.
    let guarded = granted.database.relay.guards_requests();
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
        return Err(Stop::Gone);
    }
    let handed_up = if guarded { 0 } else { pipelined.len() as u64 };
    Ok(Ready {
        upstream,
        guard: guarded.then(|| GuardStart {
            pipelined: pipelined.to_vec(),
            resp3: matches!(
                parsed.opening,
                Opening::Hello {
                    protover: Some(3),
                    ..
                }
            ),
            database: granted.database.clone(),
            db_user: granted.db_user.clone(),
        }),
        relay: granted.database.relay,
        handed_up,
        handed_down: (client_reply.as_ref().map_or(0, Vec::len) + extra.len()) as u64,
        open: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The refusal texts are what clients and audit readers match on: typed, they read as before.
    #[test]
    fn refusals_read_as_the_client_sees_them() {
        let text = |r: Refusal| r.to_string();
        assert_eq!(text(Refusal::Timeout(Step::Opening)), "handshake timeout");
        assert_eq!(
            text(Refusal::Timeout(Step::Upstream)),
            "handshake timeout while connecting upstream"
        );
        assert_eq!(
            text(Refusal::SessionLimit),
            "session limit reached (limits.max_sessions); try again later"
        );
        assert_eq!(
            text(Unidentified::UnboundUid(1001).into()),
            "uid 1001 is not bound to a bastion user"
        );
        assert_eq!(
            text(Unidentified::NoCertificate.into()),
            "no client certificate"
        );
        assert_eq!(
            text(Denied::UnknownDatabase("x".into()).into()),
            "unknown database 'x'"
        );
        let protocol = HandshakeError::TooLarge { limit: 8 };
        assert_eq!(
            text(Refusal::Protocol(protocol.clone())),
            protocol.to_string()
        );
    }
}
