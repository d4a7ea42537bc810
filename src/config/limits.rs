//! `[limits]`: the bounds on handshakes and sessions (all of them changeable by a reload).

use std::time::Duration;

use serde::Deserialize;

use super::de::{de_duration, de_opt_duration};

/// Default handshake budget: a client must finish AUTH/HELLO (or its first command) within it.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default bound on the bytes a client may send before its opening frame is complete.
pub const DEFAULT_MAX_HANDSHAKE_BYTES: usize = 64 * 1024;
/// Default bound on concurrent sessions.
pub const DEFAULT_MAX_SESSIONS: usize = 10_000;
/// Default bound on connecting (TCP + TLS) to an upstream.
pub const DEFAULT_UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default time open sessions get to finish on SIGTERM (within the unit's `TimeoutStopSec`).
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Default upper bound on a client certificate's validity (`cert issue --ttl`).
pub const DEFAULT_MAX_CERT_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// Default bound on TCP connections still in their handshake (not yet identified).
pub const DEFAULT_MAX_HANDSHAKES: usize = 1024;
/// Default bound on those from one source address.
pub const DEFAULT_MAX_HANDSHAKES_PER_SOURCE: usize = 64;
/// Default number of warm (dialed, unused) upstream connections per database in use.
pub const DEFAULT_WARM_CONNECTIONS: usize = 2;
/// The most warm connections per database a config may ask for.
pub const MAX_WARM_CONNECTIONS: usize = 64;
/// Default time a database stays warm after its last session (and a warm connection lives).
/// Default `limits.reuse_connections`.
pub const DEFAULT_REUSE_CONNECTIONS: usize = 256;
/// The most `limits.reuse_connections` may say (per database and db-user).
pub const MAX_REUSE_CONNECTIONS: usize = 1024;
pub const DEFAULT_WARM_IDLE: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    #[serde(
        default = "default_handshake_timeout",
        deserialize_with = "de_duration"
    )]
    pub handshake_timeout: Duration,
    #[serde(default = "default_connect_timeout", deserialize_with = "de_duration")]
    pub upstream_connect_timeout: Duration,
    #[serde(default = "default_max_handshake_bytes")]
    pub max_handshake_bytes: usize,
    #[serde(default = "default_max_sessions")]
    pub max_sessions: usize,
    /// TCP connections still in their handshake; at the bound the oldest is closed.
    #[serde(default = "default_max_handshakes")]
    pub max_handshakes: usize,
    /// The same bound per source address.
    #[serde(default = "default_max_handshakes_per_source")]
    pub max_handshakes_per_source: usize,
    /// Close a session that moved no byte in either direction for this long (off by default:
    /// pub/sub subscribers and blocking commands are legitimately quiet).
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub idle_timeout: Option<Duration>,
    /// End every session this long after it started (off by default).
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub max_session_age: Option<Duration>,
    /// On SIGTERM, how long open sessions may go on before they are closed.
    #[serde(default = "default_drain_timeout", deserialize_with = "de_duration")]
    pub drain_timeout: Duration,
    /// `cert issue --ttl` above this is refused.
    #[serde(default = "default_max_cert_ttl", deserialize_with = "de_duration")]
    pub max_cert_ttl: Duration,
    /// Inspect mode: the share of commands audited one by one as `db.command` (0.0 to 1.0;
    /// every 1/x-th command, deterministically). Every command still counts in the session's
    /// `db.command.summary`.
    #[serde(default = "default_command_audit_sample")]
    pub command_audit_sample: f64,
    /// Inspect mode: at most this many `db.command` events per second for the whole daemon
    /// (a burst of one second's worth); the rest are counted as `unlogged` in the summaries.
    #[serde(default = "default_command_audit_rate")]
    pub command_audit_rate: u32,
    /// Inspect mode: authenticate each session's upstream connection again (a fresh IAM
    /// token, or the password) this long after the last time, at a quiet point — before
    /// ElastiCache / MemoryDB close an IAM connection at 12 hours.
    #[serde(default = "default_reauth_interval", deserialize_with = "de_duration")]
    pub reauth_interval: Duration,
    /// Upstream connections dialed and authenticated ahead, per database and db-user a session
    /// was granted in the last `warm_idle` (0: none; every session dials its own, and no connection
    /// is reused). Each serves one session at a time.
    #[serde(default = "default_warm_connections")]
    pub warm_connections: usize,
    /// How many upstream connections per database and db-user may wait for the next session
    /// after a session ended cleanly (`proxy/upstream/warm.rs`: a Unix client gone between two
    /// commands, guard mode, plaintext upstream; `RESET`, a nonce `ECHO` and a fresh AUTH first).
    /// 0: a used connection is always closed.
    #[serde(default = "default_reuse_connections")]
    pub reuse_connections: usize,
    /// How long a database stays warm after its last session, and the most a warm connection
    /// waits before it is closed.
    #[serde(default = "default_warm_idle", deserialize_with = "de_duration")]
    pub warm_idle: Duration,
}

/// Default re-AUTH interval: an hour inside the 12-hour limit of IAM connections.
pub const DEFAULT_REAUTH_INTERVAL: Duration = Duration::from_secs(11 * 3600);

fn default_reauth_interval() -> Duration {
    DEFAULT_REAUTH_INTERVAL
}

/// Default share of inspect-mode commands audited one by one: all of them.
pub const DEFAULT_COMMAND_AUDIT_SAMPLE: f64 = 1.0;
/// Default bound on `db.command` events per second (daemon-wide).
pub const DEFAULT_COMMAND_AUDIT_RATE: u32 = 1000;

fn default_command_audit_sample() -> f64 {
    DEFAULT_COMMAND_AUDIT_SAMPLE
}
fn default_command_audit_rate() -> u32 {
    DEFAULT_COMMAND_AUDIT_RATE
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            upstream_connect_timeout: DEFAULT_UPSTREAM_CONNECT_TIMEOUT,
            max_handshake_bytes: DEFAULT_MAX_HANDSHAKE_BYTES,
            max_sessions: DEFAULT_MAX_SESSIONS,
            max_handshakes: DEFAULT_MAX_HANDSHAKES,
            max_handshakes_per_source: DEFAULT_MAX_HANDSHAKES_PER_SOURCE,
            idle_timeout: None,
            max_session_age: None,
            max_cert_ttl: DEFAULT_MAX_CERT_TTL,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            command_audit_sample: DEFAULT_COMMAND_AUDIT_SAMPLE,
            command_audit_rate: DEFAULT_COMMAND_AUDIT_RATE,
            reauth_interval: DEFAULT_REAUTH_INTERVAL,
            warm_connections: DEFAULT_WARM_CONNECTIONS,
            reuse_connections: DEFAULT_REUSE_CONNECTIONS,
            warm_idle: DEFAULT_WARM_IDLE,
        }
    }
}

fn default_handshake_timeout() -> Duration {
    DEFAULT_HANDSHAKE_TIMEOUT
}
fn default_connect_timeout() -> Duration {
    DEFAULT_UPSTREAM_CONNECT_TIMEOUT
}
fn default_max_handshake_bytes() -> usize {
    DEFAULT_MAX_HANDSHAKE_BYTES
}
fn default_max_sessions() -> usize {
    DEFAULT_MAX_SESSIONS
}
fn default_drain_timeout() -> Duration {
    DEFAULT_DRAIN_TIMEOUT
}
fn default_max_cert_ttl() -> Duration {
    DEFAULT_MAX_CERT_TTL
}
fn default_warm_connections() -> usize {
    DEFAULT_WARM_CONNECTIONS
}
fn default_reuse_connections() -> usize {
    DEFAULT_REUSE_CONNECTIONS
}
fn default_warm_idle() -> Duration {
    DEFAULT_WARM_IDLE
}
fn default_max_handshakes() -> usize {
    DEFAULT_MAX_HANDSHAKES
}
fn default_max_handshakes_per_source() -> usize {
    DEFAULT_MAX_HANDSHAKES_PER_SOURCE
}
