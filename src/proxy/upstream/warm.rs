//! Warm upstream connections: for each database and db-user a session was granted in the last
//! `limits.warm_idle`, up to `limits.warm_connections` TCP (+ TLS) connections dialed — and,
//! for a database that authenticates, authenticated as that db-user — ahead of the next client,
//! so its first command goes upstream without waiting for a dial and an AUTH (set-up latency,
//! issue 13: on a TLS upstream that is a TLS handshake and a round trip more).
//!
//! And reuse: a session whose Unix client left between two commands (guard mode, plaintext
//! upstream: `relay::Reclaim`) gives its connection back through [`reuse`], which cleans it
//! ([`clean`]: `RESET`, a nonce-named command whose exact answer proves the stream's end, then
//! a fresh AUTH) before it joins the ready ones — connection churn then costs the upstream no
//! new connection (issue 13).
//!
//! One owner per step: sessions only [`WarmPool::take`] and hand back to [`reuse`]; this module
//! alone dials, cleans, authenticates (with the one login, `upstream::login`, in [`log_in`]),
//! tops up and sweeps. A taken connection is the session's, like one it dialed itself: its
//! HELLO (without AUTH), the relay and the close are the session's.
//!
//! What it must never do:
//! - hand one connection to two sessions at once, or a used one to any before [`clean`]
//!   proved it at a command boundary with nothing of the old session left (a used connection
//!   carries a selected db, a name, subscriptions, unread replies — another session's state),
//!   or send a secret to a connection not so proven;
//! - hand a connection authenticated as one db-user to a session granted another: connections
//!   are kept per (database, db-user), the db-user being the one a session was granted (the
//!   grant decides, never the pool); a database with auth mode `none` sends no AUTH at all;
//! - hand out a connection authenticated with a password that is no longer the database's: each
//!   remembers a keyed fingerprint ([`Proof`]) of the password it logged in with, and a session
//!   takes it only if the password it would send now (a `secret set`, a reload, a managed
//!   rotation) has the same one (IAM tokens differ every time: there the definition decides);
//! - hand out a connection to another definition of the database (an address, TLS setting or
//!   auth changed by a reload or `db set`), or one the upstream closed while it waited
//!   ([`alive`]): such are dropped and the session dials;
//! - dial for a database no session reached, or authenticate as a db-user no session was
//!   granted: a (database, db-user) is warmed only after a session granted it asked for a
//!   connection (a database with auth mode `none` also at identity, under the early dial's
//!   `rbac::may_connect` rule), and the connector's address policy applies to every warm dial;
//! - keep connections for a database nobody uses: after `warm_idle` without a session its
//!   connections are closed and it is forgotten; an upstream that refuses dials is retried at
//!   most once per [`RETRY_AFTER`].

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use super::UpstreamStream;
use crate::aws::iam::Freshness;
use crate::catalog::{Auth, Catalog, Database};
use crate::config::Limits;
use crate::proxy::cores::Cores;
use crate::proxy::handshake::auth_command;
use crate::proxy::handshake::client::Opening;
use crate::proxy::shared::Shared;
use crate::secret::Secret;

/// After a failed warm dial, the database is not dialed ahead again for this long (sessions
/// still dial for themselves).
pub const RETRY_AFTER: Duration = Duration::from_secs(5);

/// Whose connections: a database (by name) and the db-user they are authenticated as (`None`
/// for a database that does not authenticate, or a session with no db-user).
type Key = (String, Option<String>);

/// A keyed fingerprint of the password a connection logged in with (`None`: no password — auth
/// mode `none`, or an IAM token). Keyed with this process's random SipHash keys: it never leaves
/// memory and tells only whether two passwords are the same.
pub type Proof = Option<u64>;

/// The warm connections of every database in use.
#[derive(Default)]
pub struct WarmPool {
    state: Mutex<HashMap<Key, Warm>>,
    /// The key of every [`Proof`].
    keys: std::hash::RandomState,
    /// Wakes [`run`]: a connection was taken and the pool is short of its number.
    wanted: Notify,
}

/// One database's warm connections for one db-user.
struct Warm {
    /// The definition they were dialed for.
    database: Arc<Database>,
    /// The db-user they are authenticated as.
    db_user: Option<String>,
    /// Ready connections, when each was dialed (or cleaned after a session) and the password it
    /// logged in with, oldest first, with the session runtime each is registered with (`None`:
    /// the daemon's: `proxy/cores.rs`).
    ready: VecDeque<(UpstreamStream, Instant, Proof, Option<usize>)>,
    /// Dials under way for this definition.
    dialing: usize,
    /// Connections sessions gave back, being cleaned ([`reuse`]).
    cleaning: usize,
    /// No connection given back is taken before this (after a cleaning failed).
    reuse_retry_at: Option<Instant>,
    /// The last time a session asked for a connection.
    wanted: Instant,
    /// No warm dial before this (after a failed one).
    retry_at: Option<Instant>,
}

impl Warm {
    fn new(database: Arc<Database>, db_user: Option<String>, now: Instant) -> Warm {
        Warm {
            database,
            db_user,
            ready: VecDeque::new(),
            dialing: 0,
            cleaning: 0,
            wanted: now,
            retry_at: None,
            reuse_retry_at: None,
        }
    }

    /// How many connections the warmer should dial now: what `warm_connections` asks for,
    /// less those ready and not yet `warm_idle` old, dialing, or being cleaned (they will be
    /// ready soon); none while a failed dial's wait runs.
    fn missing(&self, limits: &Limits, now: Instant) -> usize {
        if self.retry_at.is_some_and(|at| now < at) {
            return 0;
        }
        let fresh = self
            .ready
            .iter()
            .filter(|(_, dialed, _, _)| now.duration_since(*dialed) < limits.warm_idle)
            .count();
        limits
            .warm_connections
            .saturating_sub(fresh + self.dialing + self.cleaning)
    }
}

impl WarmPool {
    /// The [`Proof`] of `secret`, the secret a session of `database` would send now.
    pub fn proof(&self, database: &Database, secret: Option<&Secret>) -> Proof {
        if matches!(database.auth, Auth::Iam { .. }) {
            return None;
        }
        secret.map(|s| std::hash::BuildHasher::hash_one(&self.keys, s.expose()))
    }

    /// A warm connection to exactly `database`, authenticated as `db_user` with the password
    /// whose proof is `proof` when the database authenticates, if one is ready and still open
    /// (the freshest); and a note that they are in use: the warmer tops them up either way.
    pub fn take(
        &self,
        database: &Arc<Database>,
        db_user: Option<&str>,
        proof: Proof,
        limits: &Limits,
    ) -> Option<UpstreamStream> {
        if limits.warm_connections == 0 {
            return None;
        }
        let now = Instant::now();
        let key = key(database, db_user);
        let (found, short) = {
            let mut state = lock(&self.state);
            let warm = state
                .entry(key.clone())
                .or_insert_with(|| Warm::new(database.clone(), key.1.clone(), now));
            if *warm.database != **database {
                // Redefined: what is warm goes to the old definition. Dropped (closed) here;
                // dials still under way for it are refused by `put`.
                *warm = Warm::new(database.clone(), key.1, now);
            }
            warm.wanted = now;
            let mut found = None;
            while let Some((mut stream, dialed, logged_in, home)) = warm.ready.pop_back() {
                // Older, or logged in with a password no longer the database's: closed here.
                if now.duration_since(dialed) < limits.warm_idle
                    && logged_in == proof
                    && alive(&mut stream)
                {
                    found = Some((stream, home));
                    break;
                }
            }
            // The warmer is woken only when it has something to dial: a session that takes a
            // connection another one gave back costs no wake-up.
            (found, warm.missing(limits, now) > 0)
        };
        if short {
            self.wanted.notify_one();
        }
        let (mut stream, home) = found?;
        // Registered where the session that takes it runs (`proxy/cores.rs`).
        if home != Cores::current() {
            if let Err(error) = super::rehome(&mut stream) {
                tracing::debug!(db = %database.name, %error,
                    "a warm connection could not be moved to the session's runtime: closed");
                return None;
            }
        }
        Some(stream)
    }

    /// Whether a database that authenticates has connections ready for some db-user (a session
    /// not yet granted then waits for its grant rather than dialing at identity).
    pub fn has_authenticated(&self, database: &Database) -> bool {
        let state = lock(&self.state);
        state.values().any(|w| {
            w.database.name == database.name && *w.database == *database && !w.ready.is_empty()
        })
    }

    /// Put a connection dialed (and authenticated) for `database` and `db_user` in, if that is
    /// still the definition wanted and there is room; else it is dropped (closed).
    fn put(
        &self,
        database: &Arc<Database>,
        db_user: Option<&str>,
        (stream, proof): (UpstreamStream, Proof),
        limits: &Limits,
    ) {
        self.current(database, db_user, |warm| {
            warm.dialing = warm.dialing.saturating_sub(1);
            if warm.ready.len() < limits.warm_connections {
                warm.ready
                    .push_back((stream, Instant::now(), proof, Cores::current()));
            }
        });
    }

    /// Run `f` on the warm connections of `database` (this definition) for `db_user`, if the
    /// pool still keeps them.
    fn current<T>(
        &self,
        database: &Arc<Database>,
        db_user: Option<&str>,
        f: impl FnOnce(&mut Warm) -> T,
    ) -> Option<T> {
        let mut state = lock(&self.state);
        let warm = state.get_mut(&key(database, db_user))?;
        (*warm.database == **database).then(|| f(warm))
    }

    /// Room for a connection a session of `database` granted `db_user` gives back ([`reuse`]):
    /// counted as being cleaned if there is. None when reuse is off, the definition changed, a
    /// cleaning failed lately, or `limits.reuse_connections` are ready or being cleaned.
    fn admit(&self, database: &Arc<Database>, db_user: Option<&str>, limits: &Limits) -> bool {
        if limits.reuse_connections == 0 || limits.warm_connections == 0 {
            return false;
        }
        let now = Instant::now();
        let room = limits.reuse_connections.max(limits.warm_connections);
        self.current(database, db_user, |warm| {
            let admit = warm.reuse_retry_at.is_none_or(|at| now >= at)
                && warm.ready.len() + warm.cleaning < room;
            warm.cleaning += usize::from(admit);
            admit
        })
        .unwrap_or(false)
    }

    /// A connection given back came out of [`clean`]: ready if it is clean, the definition
    /// still the wanted one and there is room; else closed, and after a failure nothing is
    /// taken back for [`RETRY_AFTER`] (an upstream without `RESET` costs one try).
    fn cleaned(
        &self,
        database: &Arc<Database>,
        db_user: Option<&str>,
        result: Result<(UpstreamStream, Proof), String>,
        limits: &Limits,
    ) {
        let room = limits.reuse_connections.max(limits.warm_connections);
        self.current(database, db_user, |warm| {
            warm.cleaning = warm.cleaning.saturating_sub(1);
            match result {
                Ok((stream, proof)) => {
                    if warm.ready.len() < room {
                        warm.ready.push_back((stream, Instant::now(), proof, Cores::current()));
                    }
                }
                Err(error) => {
                    tracing::debug!(db = %database.name, %error, "a used upstream connection was not clean: closed");
                    warm.reuse_retry_at = Some(Instant::now() + RETRY_AFTER);
                }
            }
        });
    }

    /// A warm dial (or its AUTH) for `database` and `db_user` failed: no other before
    /// [`RETRY_AFTER`].
    fn failed(&self, database: &Arc<Database>, db_user: Option<&str>, now: Instant) {
        self.current(database, db_user, |warm| {
            warm.dialing = warm.dialing.saturating_sub(1);
            warm.retry_at = Some(now + RETRY_AFTER);
        });
    }

    /// Sweep, then say what to dial: connections older than `warm_idle` are closed; databases
    /// no session wanted for `warm_idle`, or that `catalog` no longer defines that way, are
    /// forgotten (their connections closed); every other one is topped up to
    /// `warm_connections`, counting dials under way.
    fn plan(&self, catalog: &Catalog, limits: &Limits, now: Instant) -> Vec<Dial> {
        let mut state = lock(&self.state);
        state.retain(|(name, _), warm| {
            let current = catalog
                .database(name)
                .is_some_and(|db| **db == *warm.database);
            current
                && limits.warm_connections > 0
                && now.duration_since(warm.wanted) < limits.warm_idle
        });
        let mut dial = Vec::new();
        for warm in state.values_mut() {
            let missing = warm.missing(limits, now);
            warm.ready
                .retain(|(_, dialed, _, _)| now.duration_since(*dialed) < limits.warm_idle);
            warm.dialing += missing;
            for _ in 0..missing {
                dial.push((warm.database.clone(), warm.db_user.clone()));
            }
        }
        dial
    }

    /// Ready warm connections, all databases.
    pub fn ready(&self) -> usize {
        lock(&self.state).values().map(|w| w.ready.len()).sum()
    }

    /// Close every warm connection and forget every database (shutdown).
    pub fn clear(&self) {
        lock(&self.state).clear();
    }
}

/// A connection to make: to this database, authenticated as this db-user.
type Dial = (Arc<Database>, Option<String>);

/// The pool's key for `database` and a session's `db_user`.
fn key(database: &Database, db_user: Option<&str>) -> Key {
    let db_user = database.authenticates().then_some(db_user).flatten();
    (database.name.clone(), db_user.map(str::to_string))
}

/// The warmer: wakes when a session took (or missed) a connection and at least every quarter
/// of `warm_idle`; sweeps and dials what [`WarmPool::plan`] says, each dial (and AUTH) a task
/// of its own bounded by `limits.upstream_connect_timeout` (`handshake_timeout` for the AUTH).
pub async fn run(shared: Arc<Shared>) {
    loop {
        let limits = shared.limits();
        let tick =
            (limits.warm_idle / 4).clamp(Duration::from_millis(250), Duration::from_secs(15));
        tokio::select! {
            () = shared.warm.wanted.notified() => {}
            () = tokio::time::sleep(tick) => {}
        }
        let limits = shared.limits();
        let catalog = shared.catalog.snapshot();
        for (database, db_user) in shared.warm.plan(&catalog, &limits, Instant::now()) {
            let shared = shared.clone();
            tokio::spawn(async move {
                let limits = shared.limits();
                let db_user = db_user.as_deref();
                match warm_up(&shared, &database, db_user, &limits).await {
                    Ok(stream) => shared.warm.put(&database, db_user, stream, &limits),
                    Err(e) => {
                        tracing::debug!(db = %database.name, error = %e, "warm upstream connection failed");
                        shared.warm.failed(&database, db_user, Instant::now());
                    }
                }
            });
        }
    }
}

/// Take back the upstream connection a session of `database` granted `db_user` used, the
/// session having ended between two commands with its client gone (`relay::Reclaim`): if
/// there is room ([`WarmPool::admit`]) it is cleaned ([`clean`]: `RESET`, the nonce, a fresh
/// AUTH) and put with the ready ones; else, or if the cleaning fails, closed. Run by the
/// session's task after the session ended (deregistered, its slot free), within
/// `limits.handshake_timeout` (twice: the RESET, the AUTH).
pub async fn reuse(
    shared: &Shared,
    database: &Arc<Database>,
    db_user: Option<&str>,
    stream: TcpStream,
) {
    let limits = shared.limits();
    if !shared.warm.admit(database, db_user, &limits) {
        shared.metrics.upstream_reuse("no_room");
        return;
    }
    let result = clean(shared, database, db_user, stream, &limits).await;
    shared
        .metrics
        .upstream_reuse(if result.is_ok() { "kept" } else { "not_clean" });
    shared.warm.cleaned(database, db_user, result, &limits);
}

/// Dial `database` and, if it authenticates, log in as `db_user` ([`log_in`]).
async fn warm_up(
    shared: &Shared,
    database: &Database,
    db_user: Option<&str>,
    limits: &Limits,
) -> Result<(UpstreamStream, Proof), String> {
    let connecting = Instant::now();
    let mut stream = shared
        .connector
        .connect(database, limits.upstream_connect_timeout)
        .await
        .map_err(|e| e.to_string())?;
    shared.metrics.upstream_connected(connecting.elapsed());
    let proof = log_in(shared, &mut stream, database, db_user, limits).await?;
    Ok((stream, proof))
}

/// If `database` authenticates, log in as `db_user` (`AUTH [db-user] <secret>`, the session's
/// own secret and login, a managed database's fallbacks included): the [`Proof`] of the
/// password that was accepted. A reply followed by more bytes is not a connection to keep.
/// Within `limits.handshake_timeout`; the error names no secret.
async fn log_in(
    shared: &Shared,
    stream: &mut UpstreamStream,
    database: &Database,
    db_user: Option<&str>,
    limits: &Limits,
) -> Result<Proof, String> {
    if !database.authenticates() {
        return Ok(None);
    }
    let login = async {
        let secret = super::auth_secret(database, db_user, &shared.credentials, Freshness::Recent)
            .await
            .map_err(|e| e.to_string())?;
        let opening = Opening::Auth { db_user: None };
        let command = auth_command(&opening, db_user, secret.as_ref())
            .ok_or("no secret to authenticate with")?;
        let authenticating = Instant::now();
        let (done, fallback) = super::login(
            stream,
            database,
            db_user,
            &opening,
            &shared.credentials,
            &command,
        )
        .await
        .map_err(|e| e.to_string())?;
        if !done.extra.is_empty() {
            return Err("the upstream sent more than the AUTH reply".to_string());
        }
        shared
            .metrics
            .upstream_authenticated(authenticating.elapsed());
        // A managed database's AWSPREVIOUS, when that is what the upstream took.
        Ok::<_, String>(
            shared
                .warm
                .proof(database, fallback.as_ref().or(secret.as_ref())),
        )
    };
    tokio::time::timeout(limits.handshake_timeout, login)
        .await
        .map_err(|_| "AUTH timed out".to_string())?
}

/// The most reply bytes [`clean`] reads past (a session's unread replies) before it gives up
/// on a connection.
const CLEAN_MAX_BYTES: u64 = 4 << 20;

/// Make a connection a session used as good as a new one, or fail (the caller closes it).
///
/// The session ended between two commands (the guard framed every byte it sent), so what the
/// upstream still has of it is whole commands and their replies. `RESET` ends everything a
/// connection carries (a transaction, WATCHes, subscriptions, MONITOR, tracking, the selected
/// db, the name, RESP3, READONLY, CLIENT REPLY OFF, the login). Right behind it goes a command
/// no server has, named after a fresh random nonce: Redis answers an unknown command, naming
/// it, even to a connection not logged in (the one reply that echoes the caller's bytes before
/// AUTH). So the stream ends, exactly, with `+RESET` and an error line holding the nonce: every
/// byte before is the old session's (discarded unread, at most [`CLEAN_MAX_BYTES`]), and
/// nothing may follow. Nobody else can write the nonce, and in a command left unfinished our
/// bytes could only come back inside a bulk reply, never as those two lines. A command still
/// blocked (BLPOP), a script, or an upstream without `RESET` never answers: the connection is
/// closed at `limits.handshake_timeout`. Only then is the login sent, as on a fresh connection
/// ([`log_in`]): no secret goes to a connection not proven clean and at a command boundary.
/// (Each cleaning counts one `ERR` in the upstream's `INFO errorstats`.)
async fn clean(
    shared: &Shared,
    database: &Database,
    db_user: Option<&str>,
    mut stream: TcpStream,
    limits: &Limits,
) -> Result<(UpstreamStream, Proof), String> {
    let nonce = nonce()?;
    let marker = format!("bastion-clean-{nonce}");
    let request = format!(
        "*1\r\n$5\r\nRESET\r\n*1\r\n${}\r\n{marker}\r\n",
        marker.len()
    );
    let reset = async {
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("sending RESET: {e}"))?;
        read_through(&mut stream, nonce.as_bytes(), CLEAN_MAX_BYTES).await
    };
    tokio::time::timeout(limits.handshake_timeout, reset)
        .await
        .map_err(|_| "no RESET reply in time (a blocked command, or no RESET)".to_string())??;
    let mut stream = tokio_util::either::Either::Left(stream);
    let proof = log_in(shared, &mut stream, database, db_user, limits).await?;
    Ok((stream, proof))
}

/// 32 hex digits from the system's random source.
fn nonce() -> Result<String, String> {
    crate::random::hex::<16>().map_err(|_| "no random bytes for the RESET nonce".to_string())
}

/// How many of the stream's last bytes [`read_through`] keeps to look at: the `+RESET` line
/// and the error line (Redis cuts the command name at 128 bytes).
const CLEAN_WINDOW: usize = 1024;

/// Read `stream` until it ends with `+RESET` and an error line holding `nonce`
/// ([`reset_answered`]), reading at most `max` bytes. An error on EOF, on too many bytes, or
/// once the nonce came in any other shape (bytes after it, no `+RESET` before it).
async fn read_through<S: AsyncRead + Unpin>(
    stream: &mut S,
    nonce: &[u8],
    max: u64,
) -> Result<(), String> {
    // Read straight into the window's spare room (never zeroed, at least `CLEAN_WINDOW`
    // bytes, so the window never grows): normally one read of a few dozen bytes, and one
    // allocation per cleaning.
    let mut window: Vec<u8> = Vec::with_capacity(2 * CLEAN_WINDOW);
    let mut total = 0u64;
    loop {
        if window.len() > CLEAN_WINDOW {
            window.drain(..window.len() - CLEAN_WINDOW);
        }
        let n = stream
            .read_buf(&mut window)
            .await
            .map_err(|e| format!("reading the RESET reply: {e}"))?;
        if n == 0 {
            return Err("the upstream closed the connection".to_string());
        }
        total += n as u64;
        if total > max {
            return Err(format!("more than {max} bytes before the RESET reply"));
        }
        match reset_answered(&window, nonce) {
            Some(true) => return Ok(()),
            Some(false) => return Err("the RESET reply is not the end of the stream".to_string()),
            None => {}
        }
    }
}

/// Whether the stream's last bytes `window` end with the answer to `RESET` and the nonce's
/// unknown command: `Some(true)` if they end exactly with `+RESET\r\n`, then one line that
/// starts with `-` and holds `nonce`, then `\r\n`; `Some(false)` if the nonce is there in any
/// other shape; `None` while it is not there yet (or its line is not finished).
fn reset_answered(window: &[u8], nonce: &[u8]) -> Option<bool> {
    let at = window.windows(nonce.len()).rposition(|w| w == nonce)?;
    let rest = &window[at + nonce.len()..];
    let line_end = rest.windows(2).position(|w| w == b"\r\n")?;
    if line_end + 2 != rest.len() {
        return Some(false);
    }
    let before = &window[..at];
    let line_start = before
        .windows(2)
        .rposition(|w| w == b"\r\n")
        .map_or(0, |i| i + 2);
    let reset = b"+RESET\r\n";
    let ok = before[line_start..].starts_with(b"-")
        && !before[line_start..].contains(&b'\n')
        && before[..line_start].ends_with(reset)
        && (line_start == reset.len() || before[..line_start - reset.len()].ends_with(b"\n"));
    Some(ok)
}

/// Whether a connection that has sent nothing since its dial (or its AUTH, whose reply was
/// read) is still open and quiet: one read polled without waiting. Pending: open, nothing to
/// read (a TLS stream handles a late session ticket in the
/// same poll). EOF, an error, or bytes the upstream sent unasked: not to be used.
fn alive(stream: &mut UpstreamStream) -> bool {
    let mut byte = [0u8; 1];
    let mut buf = ReadBuf::new(&mut byte);
    let mut cx = Context::from_waker(Waker::noop());
    matches!(Pin::new(stream).poll_read(&mut cx, &mut buf), Poll::Pending)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Poisoned only by a panic between whole assignments; the map is still whole.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::path::Path;

    use tokio::net::{TcpListener, TcpStream};
    use tokio_util::either::Either;

    use super::*;
    use crate::catalog::SecretDirs;
    use crate::config::Config;

    /// Databases `a` (and `b`) with auth mode none at these loopback ports.
    fn catalog_at(a: u16, b: Option<u16>) -> Catalog {
        let mut text = format!(
            "state_dir = \"/tmp/unused\"\n[listeners.unix]\ndirectory = \"/tmp/unused\"\n\
             [[databases]]\nname = \"a\"\naddress = \"127.0.0.1:{a}\"\nauth = {{ mode = \"none\" }}\n"
        );
        if let Some(b) = b {
            text += &format!(
                "[[databases]]\nname = \"b\"\naddress = \"127.0.0.1:{b}\"\nauth = {{ mode = \"none\" }}\n"
            );
        }
        let config = Config::parse(&text, Path::new("test.toml")).expect("config");
        let dirs = SecretDirs::new("/nonexistent".into(), None);
        Catalog::from_config(&config, &dirs).expect("catalog")
    }

    async fn dial(listener: &TcpListener) -> (UpstreamStream, TcpStream) {
        let addr = listener.local_addr().unwrap();
        let (ours, theirs) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (Either::Left(ours.unwrap()), theirs.unwrap().0)
    }

    fn local_port(stream: &UpstreamStream) -> u16 {
        match stream {
            Either::Left(tcp) => tcp.local_addr().unwrap().port(),
            Either::Right(_) => unreachable!("plaintext in these tests"),
        }
    }

    #[tokio::test]
    async fn each_connection_is_handed_out_once_and_only_to_its_definition() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let catalog = catalog_at(port, None);
        let db = catalog.database("a").unwrap().clone();
        let (pool, limits) = (WarmPool::default(), Limits::default());

        assert!(
            pool.take(&db, None, None, &limits).is_none(),
            "nothing dialed yet"
        );
        let now = Instant::now();
        assert_eq!(pool.plan(&catalog, &limits, now).len(), 2, "wanted: top up");
        assert!(
            pool.plan(&catalog, &limits, now).is_empty(),
            "dials under way count"
        );
        let mut peers = Vec::new();
        let mut ports = HashSet::new();
        for _ in 0..3 {
            let (ours, theirs) = dial(&listener).await;
            ports.insert(local_port(&ours));
            pool.put(&db, None, (ours, None), &limits);
            peers.push(theirs);
        }
        assert_eq!(pool.ready(), 2, "never more than warm_connections");
        let first = pool.take(&db, None, None, &limits).expect("warm");
        let second = pool.take(&db, None, None, &limits).expect("warm");
        assert_ne!(local_port(&first), local_port(&second));
        assert!(
            pool.take(&db, None, None, &limits).is_none(),
            "each one once"
        );

        // Re-pointed: what was warmed for the old definition is dropped, never handed out.
        let (ours, theirs) = dial(&listener).await;
        pool.put(&db, None, (ours, None), &limits);
        peers.push(theirs);
        let moved = catalog_at(port + 1, None);
        let redefined = moved.database("a").unwrap().clone();
        assert!(pool.take(&redefined, None, None, &limits).is_none());
        assert_eq!(pool.ready(), 0, "the old definition's connection is closed");
        let (late, theirs) = dial(&listener).await;
        pool.put(&db, None, (late, None), &limits);
        peers.push(theirs);
        assert_eq!(
            pool.ready(),
            0,
            "a late dial for the old definition is refused"
        );
    }

    #[tokio::test]
    async fn closed_or_old_connections_are_not_handed_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let catalog = catalog_at(listener.local_addr().unwrap().port(), None);
        let db = catalog.database("a").unwrap().clone();
        let pool = WarmPool::default();
        let limits = Limits {
            warm_idle: Duration::from_millis(200),
            ..Limits::default()
        };
        assert!(pool.take(&db, None, None, &limits).is_none());
        let (ours, theirs) = dial(&listener).await;
        pool.put(&db, None, (ours, None), &limits);
        drop(theirs);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            pool.take(&db, None, None, &limits).is_none(),
            "closed by the upstream"
        );

        let (ours, theirs) = dial(&listener).await;
        pool.put(&db, None, (ours, None), &limits);
        let (talkative, mut chatty) = dial(&listener).await;
        pool.put(&db, None, (talkative, None), &limits);
        tokio::io::AsyncWriteExt::write_all(&mut chatty, b"+unasked\r\n")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let open = pool.take(&db, None, None, &limits).expect("the quiet one");
        drop((open, theirs));

        let (ours, _theirs) = dial(&listener).await;
        pool.put(&db, None, (ours, None), &limits);
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(
            pool.take(&db, None, None, &limits).is_none(),
            "older than warm_idle"
        );

        // Logged in with a password that is no longer the one a session would send.
        let limits = Limits::default();
        let (old, new) = (Secret::new("old"), Secret::new("new"));
        let (ours, _theirs) = dial(&listener).await;
        pool.put(&db, None, (ours, pool.proof(&db, Some(&old))), &limits);
        let now_sent = pool.proof(&db, Some(&new));
        assert_ne!(now_sent, pool.proof(&db, Some(&old)));
        assert!(
            pool.take(&db, None, now_sent, &limits).is_none(),
            "old password"
        );
        let (ours, _theirs) = dial(&listener).await;
        pool.put(&db, None, (ours, pool.proof(&db, Some(&new))), &limits);
        assert!(pool.take(&db, None, now_sent, &limits).is_some());
    }

    #[tokio::test]
    async fn only_databases_in_use_are_dialed() {
        let catalog = catalog_at(1, Some(2));
        let (a, b) = (
            catalog.database("a").unwrap().clone(),
            catalog.database("b").unwrap().clone(),
        );
        let pool = WarmPool::default();
        let limits = Limits::default();
        let now = Instant::now();
        assert!(
            pool.plan(&catalog, &limits, now).is_empty(),
            "nothing used yet"
        );
        assert!(pool.take(&a, None, None, &limits).is_none());
        let plan = pool.plan(&catalog, &limits, now);
        assert!(
            plan.iter().all(|(d, _)| d.name == "a") && plan.len() == 2,
            "{plan:?}"
        );

        // A failed dial: not again before RETRY_AFTER.
        pool.failed(&a, None, now);
        pool.failed(&a, None, now);
        assert!(pool.plan(&catalog, &limits, now).is_empty());
        assert_eq!(pool.plan(&catalog, &limits, now + RETRY_AFTER).len(), 2);

        // Unused for warm_idle: forgotten.
        let later = now + limits.warm_idle + Duration::from_secs(1);
        assert!(pool.plan(&catalog, &limits, later).is_empty());
        assert!(lock(&pool.state).is_empty());

        // No longer in the catalog, or warm connections off: forgotten, nothing dialed.
        assert!(pool.take(&b, None, None, &limits).is_none());
        let without_b = catalog.without_databases(&["b"]);
        assert!(pool.plan(&without_b, &limits, Instant::now()).is_empty());
        assert!(lock(&pool.state).is_empty());
        let off = Limits {
            warm_connections: 0,
            ..Limits::default()
        };
        assert!(pool.take(&a, None, None, &off).is_none());
        assert!(pool.plan(&catalog, &off, Instant::now()).is_empty());
    }

    const NONCE: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn answer() -> Vec<u8> {
        let mut a = b"+RESET\r\n-ERR unknown command 'bastion-clean-".to_vec();
        a.extend_from_slice(NONCE);
        a.extend_from_slice(b"', with args beginning with: \r\n");
        a
    }

    #[test]
    fn the_reset_answer_counts_only_as_the_last_two_lines() {
        let answer = answer();
        assert_eq!(reset_answered(&answer, NONCE), Some(true), "alone");
        let old = [b"$3\r\nold\r\n:1\r\n".to_vec(), answer.clone()].concat();
        assert_eq!(reset_answered(&old, NONCE), Some(true), "after old replies");
        assert_eq!(
            reset_answered(&answer[..answer.len() - 1], NONCE),
            None,
            "line not finished"
        );
        assert_eq!(reset_answered(b"$3\r\nold\r\n+RESET\r\n", NONCE), None);
        let after = [answer.clone(), b"+PONG\r\n".to_vec()].concat();
        assert_eq!(reset_answered(&after, NONCE), Some(false), "bytes after it");
        // The nonce echoed back inside a bulk reply (our request absorbed by a command left
        // unfinished): never the answer.
        let mut echoed = b"$57\r\n*1\r\n$5\r\nRESET\r\n*1\r\n$46\r\nbastion-clean-".to_vec();
        echoed.extend_from_slice(NONCE);
        echoed.extend_from_slice(b"\r\n");
        assert_eq!(reset_answered(&echoed, NONCE), Some(false), "echoed");
        // A status `+RESET` a script returned, then the nonce not in an error line.
        let mut forged = b"+RESET\r\n+".to_vec();
        forged.extend_from_slice(NONCE);
        forged.extend_from_slice(b"\r\n");
        assert_eq!(reset_answered(&forged, NONCE), Some(false), "not an error");
        // `+RESET` glued to the end of another line is not a RESET reply.
        let glued = [b"$5\r\nab".to_vec(), answer.clone()].concat();
        assert_eq!(reset_answered(&glued, NONCE), Some(false), "glued");
        assert_eq!(reset_answered(b"", NONCE), None);
    }

    #[tokio::test]
    async fn reading_through_stops_exactly_at_the_answer_and_bounds_the_rest() {
        use tokio::io::AsyncWriteExt;
        // Megabytes of replies nobody read, in small writes, then the answer.
        let (mut ours, mut theirs) = tokio::io::duplex(64 * 1024);
        let writer = tokio::spawn(async move {
            let mut chunk = vec![b'v'; 100_000];
            chunk.extend_from_slice(b"\r\n");
            for _ in 0..30 {
                theirs.write_all(&chunk).await.unwrap();
            }
            theirs.write_all(&answer()).await.unwrap();
            theirs
        });
        assert_eq!(read_through(&mut ours, NONCE, 4 << 20).await, Ok(()));
        drop(writer.await.unwrap());
        // Over the limit: refused before the answer.
        let (mut ours, mut theirs) = tokio::io::duplex(64 * 1024);
        tokio::spawn(async move {
            let chunk = vec![b'v'; 100_000];
            for _ in 0..30 {
                if theirs.write_all(&chunk).await.is_err() {
                    return;
                }
            }
            let _ = theirs.write_all(&answer()).await;
        });
        let e = read_through(&mut ours, NONCE, 1 << 20).await.unwrap_err();
        assert!(e.contains("more than"), "{e}");
        // Closed before it.
        let (mut ours, theirs) = tokio::io::duplex(1024);
        drop(theirs);
        assert!(read_through(&mut ours, NONCE, 4 << 20).await.is_err());
    }

    #[tokio::test]
    async fn a_take_wakes_the_warmer_only_when_the_pool_is_short() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let catalog = catalog_at(listener.local_addr().unwrap().port(), None);
        let db = catalog.database("a").unwrap().clone();
        let (pool, limits) = (WarmPool::default(), Limits::default());
        let woken = || async {
            tokio::time::timeout(Duration::from_millis(50), pool.wanted.notified())
                .await
                .is_ok()
        };
        assert!(pool.take(&db, None, None, &limits).is_none());
        assert!(woken().await, "a database newly in use: dial for it");
        let mut peers = Vec::new();
        for _ in 0..2 {
            let (ours, theirs) = dial(&listener).await;
            pool.put(&db, None, (ours, None), &limits);
            peers.push(theirs);
        }
        // A session's connection being cleaned for reuse counts as coming back.
        assert!(pool.admit(&db, None, &limits));
        assert!(pool.take(&db, None, None, &limits).is_some());
        assert!(
            !woken().await,
            "one ready and one coming back: nothing to dial"
        );
        assert!(pool.take(&db, None, None, &limits).is_some());
        assert!(woken().await, "short of warm_connections: top up");
    }

    #[test]
    fn a_connection_put_on_one_session_runtime_is_moved_to_the_one_that_takes_it() {
        // Dialed and put on a session runtime that then stops: a connection still registered
        // there would never be woken again; the one taken elsewhere is re-registered there.
        struct Gone(std::sync::mpsc::Sender<()>);
        impl Drop for Gone {
            fn drop(&mut self) {
                let _ = self.0.send(());
            }
        }
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let catalog = catalog_at(addr.port(), None);
        let db = catalog.database("a").unwrap().clone();
        let pool = Arc::new(WarmPool::default());
        assert!(
            pool.take(&db, None, None, &Limits::default()).is_none(),
            "in use: the pool keeps what is put for it"
        );
        let cores = Cores::with_threads(1).expect("session runtime");
        let (put_tx, put) = std::sync::mpsc::channel();
        let (gone_tx, gone) = std::sync::mpsc::channel();
        {
            let (pool, db) = (pool.clone(), db.clone());
            cores.on_each(move |_| {
                let (pool, db) = (pool.clone(), db.clone());
                let (put_tx, gone_tx) = (put_tx.clone(), gone_tx.clone());
                async move {
                    let _gone = Gone(gone_tx);
                    let ours = TcpStream::connect(addr).await.expect("dial");
                    pool.put(&db, None, (Either::Left(ours), None), &Limits::default());
                    put_tx.send(()).expect("test alive");
                    std::future::pending::<()>().await;
                }
            });
        }
        let (mut theirs, _) = listener.accept().expect("accept");
        put.recv_timeout(Duration::from_secs(10))
            .expect("put on the session runtime");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut taken = pool
                .take(&db, None, None, &Limits::default())
                .expect("warm");
            cores.stop();
            gone.recv_timeout(Duration::from_secs(10))
                .expect("the session runtime is gone");
            std::io::Write::write_all(&mut theirs, b"+PONG\r\n").unwrap();
            let mut reply = [0u8; 7];
            tokio::time::timeout(Duration::from_secs(5), taken.read_exact(&mut reply))
                .await
                .expect("woken by the runtime that took it")
                .expect("read");
            assert_eq!(&reply, b"+PONG\r\n");
        });
    }
}
