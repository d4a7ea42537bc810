//! Operational numbers: one [`Metrics`] per daemon (in [`crate::proxy::shared::Shared`]), typed
//! handles the data path calls at the points where it writes audit events, rendered as
//! Prometheus text for the `[metrics]` endpoint ([`server`]) and `bastion status`.
//!
//! What it must never do: put a database, user, db-user, address or certificate into a label.
//! Labels are closed sets (a refusal's kind, a direction, a relay path, a record kind), so the
//! endpoint tells whoever reads it how busy the door is, not what is behind it or who uses it —
//! even if an operator exposes it beyond loopback (`allow_remote`).
//!
//! Counted when they happen: sessions started, refused (by kind), AUTH/connect latencies;
//! gauges for what is open now (sessions relaying, handshakes in flight). Relay bytes are
//! counted when a session ends (per direction and path, from the same facts as `session.end`).
//! Gauges read from elsewhere (credential expiry, store size) are set by their owner right
//! before rendering ([`crate::admin::Admin::metrics_text`]). Managed-user rotation is not
//! reported yet (there are no managed users yet).

pub mod server;

use std::sync::atomic::{AtomicI64, AtomicU64};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use crate::audit::SessionEnd;

/// Latency buckets for upstream connect and AUTH: 0.5 ms doubling to ~8 s.
const LATENCY_BUCKETS: (f64, f64, u16) = (0.0005, 2.0, 15);

/// Every number the daemon publishes, and the registry that renders them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    sessions_open: Gauge,
    sessions_started: Counter,
    sessions_refused: Family<Reason, Counter>,
    handshakes_in_flight: Gauge,
    relay_bytes: Family<Flow, Counter>,
    upstream_connect: Histogram,
    upstream_auth: Histogram,
    credentials_expiry: Gauge<i64, AtomicI64>,
    store_seq: Gauge<u64, AtomicU64>,
    store_log_bytes: Gauge<u64, AtomicU64>,
    store_records: Family<Records, Gauge<u64, AtomicU64>>,
    managed_users: Gauge<u64, AtomicU64>,
    managed_failing: Gauge<u64, AtomicU64>,
    managed_oldest_rotation: Gauge<i64, AtomicI64>,
    upstream_warm: Gauge<u64, AtomicU64>,
    upstream_reuse: Family<Reuse, Counter>,
}

/// `outcome` of a used upstream connection given back (see [`Metrics::upstream_reuse`]).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reuse {
    outcome: &'static str,
}

/// `reason`: the kind of a refusal (see [`Metrics::refused`]).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: &'static str,
}

/// `direction` and relay `path` of counted bytes.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Flow {
    direction: &'static str,
    path: &'static str,
}

/// `kind` of store records.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Records {
    kind: &'static str,
}

/// Managed users' rotation state, summed over every managed database (no names: an operator
/// alerts on failures and on a rotation older than twice the interval, then asks
/// `bastion managed ls` which one).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ManagedFigures {
    pub users: u64,
    /// Users whose last rotation (or discovery) attempt failed.
    pub failing: u64,
    /// Unix seconds of the oldest current password's creation (0: none known yet).
    pub oldest_rotation: i64,
}

impl ManagedFigures {
    pub fn of(users: &[crate::managed::runtime::UserStatus]) -> ManagedFigures {
        ManagedFigures {
            users: users.len() as u64,
            failing: users.iter().filter(|u| u.last_error.is_some()).count() as u64,
            oldest_rotation: users
                .iter()
                .filter_map(|u| u.last_rotation)
                .min()
                .unwrap_or(0),
        }
    }
}

/// What the store holds, for the store gauges.
#[derive(Debug, Clone, Copy, Default)]
pub struct StoreFigures {
    pub seq: u64,
    pub log_bytes: u64,
    pub databases: u64,
    pub roles: u64,
    pub users: u64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("bastion");
        let latency = || {
            let (start, factor, n) = LATENCY_BUCKETS;
            Histogram::new(exponential_buckets(start, factor, n))
        };
        let m = Metrics {
            registry: Registry::default(),
            sessions_open: Gauge::default(),
            sessions_started: Counter::default(),
            sessions_refused: Family::default(),
            upstream_reuse: Family::default(),
            handshakes_in_flight: Gauge::default(),
            relay_bytes: Family::default(),
            upstream_connect: latency(),
            upstream_auth: latency(),
            credentials_expiry: Gauge::default(),
            store_seq: Gauge::default(),
            store_log_bytes: Gauge::default(),
            store_records: Family::default(),
            managed_users: Gauge::default(),
            managed_failing: Gauge::default(),
            managed_oldest_rotation: Gauge::default(),
            upstream_warm: Gauge::default(),
        };
        registry.register(
            "sessions_open",
            "Sessions relaying now (identified, authenticated upstream)",
            m.sessions_open.clone(),
        );
        registry.register(
            "sessions_started",
            "Sessions that reached the relay since start",
            m.sessions_started.clone(),
        );
        registry.register(
            "sessions_refused",
            "Connections refused or stopped before the relay, by kind of reason",
            m.sessions_refused.clone(),
        );
        registry.register(
            "handshakes_in_flight",
            "Connections between accept and the relay (TLS, opening, upstream AUTH)",
            m.handshakes_in_flight.clone(),
        );
        registry.register_with_unit(
            "relay",
            "Bytes relayed by sessions that ended, per direction and path (splice or copy)",
            Unit::Bytes,
            m.relay_bytes.clone(),
        );
        registry.register_with_unit(
            "upstream_connect",
            "Time to connect to an upstream (TCP and TLS)",
            Unit::Seconds,
            m.upstream_connect.clone(),
        );
        registry.register_with_unit(
            "upstream_auth",
            "Time from sending AUTH/HELLO upstream to its reply",
            Unit::Seconds,
            m.upstream_auth.clone(),
        );
        registry.register(
            "managed_users",
            "Managed users the bastion rotates passwords for",
            m.managed_users.clone(),
        );
        registry.register(
            "managed_users_failing",
            "Managed users whose last rotation attempt failed (the old password stays valid)",
            m.managed_failing.clone(),
        );
        registry.register(
            "managed_oldest_rotation_timestamp_seconds",
            "When the oldest current managed password was made (Unix time; 0: none yet)",
            m.managed_oldest_rotation.clone(),
        );
        registry.register(
            "upstream_warm_connections",
            "Upstream connections dialed (and authenticated) ahead, ready for a session",
            m.upstream_warm.clone(),
        );
        registry.register(
            "upstream_reuse",
            "Used upstream connections given back after a session: kept (cleaned, logged in \
             again), not_clean (closed: the cleaning failed) or no_room (closed)",
            m.upstream_reuse.clone(),
        );
        registry.register(
            "aws_credentials_expiry_timestamp_seconds",
            "When the bastion's AWS credentials expire (Unix time; 0: none loaded or no expiry)",
            m.credentials_expiry.clone(),
        );
        registry.register(
            "store_seq",
            "The store's last sequence number",
            m.store_seq.clone(),
        );
        registry.register_with_unit(
            "store_log",
            "Size of the store's log since its last compaction",
            Unit::Bytes,
            m.store_log_bytes.clone(),
        );
        registry.register(
            "store_records",
            "Records in the store, by kind",
            m.store_records.clone(),
        );
        Metrics { registry, ..m }
    }

    /// A connection entered its handshake; in flight until the guard is dropped.
    pub fn handshake(&self) -> InFlight {
        self.handshakes_in_flight.inc();
        InFlight(self.handshakes_in_flight.clone())
    }

    /// A session reached the relay (where `session.start` is audited); open until the guard
    /// is dropped.
    pub fn session_started(&self) -> InFlight {
        self.sessions_started.inc();
        self.sessions_open.inc();
        InFlight(self.sessions_open.clone())
    }

    /// A session ended (where `session.end` is audited): its bytes, per direction and path.
    pub fn session_ended(&self, end: &SessionEnd<'_>) {
        for (direction, path, bytes) in [
            (
                "client_to_upstream",
                end.path_client_to_upstream,
                end.bytes_client_to_upstream,
            ),
            (
                "upstream_to_client",
                end.path_upstream_to_client,
                end.bytes_upstream_to_client,
            ),
        ] {
            self.relay_bytes
                .get_or_create(&Flow { direction, path })
                .inc_by(bytes);
        }
    }

    /// A connection was refused or stopped before its relay (where `access.denied` is
    /// audited); `reason` is a fixed kind (`identity`, `denied`, `timeout`, …), never a name.
    pub fn refused(&self, reason: &'static str) {
        self.sessions_refused
            .get_or_create(&Reason { reason })
            .inc();
    }

    pub fn upstream_connected(&self, took: Duration) {
        self.upstream_connect.observe(took.as_secs_f64());
    }

    pub fn upstream_authenticated(&self, took: Duration) {
        self.upstream_auth.observe(took.as_secs_f64());
    }

    /// A used upstream connection was given back for reuse; `outcome` is `kept`, `not_clean`
    /// or `no_room` (`proxy/upstream/warm.rs`).
    pub fn upstream_reuse(&self, outcome: &'static str) {
        self.upstream_reuse.get_or_create(&Reuse { outcome }).inc();
    }

    /// The expiry of the credentials last loaded (`None`: none, or they never expire).
    pub fn set_credentials_expiry(&self, expiry: Option<SystemTime>) {
        let secs = expiry
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        self.credentials_expiry.set(secs);
    }

    pub fn set_managed(&self, managed: ManagedFigures) {
        self.managed_users.set(managed.users);
        self.managed_failing.set(managed.failing);
        self.managed_oldest_rotation.set(managed.oldest_rotation);
    }

    /// Warm upstream connections ready now (`proxy/upstream/warm.rs`).
    pub fn set_upstream_warm(&self, ready: usize) {
        self.upstream_warm.set(ready as u64);
    }

    pub fn set_store(&self, store: StoreFigures) {
        self.store_seq.set(store.seq);
        self.store_log_bytes.set(store.log_bytes);
        for (kind, n) in [
            ("databases", store.databases),
            ("roles", store.roles),
            ("users", store.users),
        ] {
            self.store_records.get_or_create(&Records { kind }).set(n);
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail; a metric that could not encode would be a bug in
        // a label type, and an empty page is what the scraper would then see.
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }
}

/// Counts one thing in a gauge while it lives (a handshake in flight, an open session).
#[derive(Debug)]
pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The value of the sample `name` (with its labels, e.g. `bastion_sessions_refused_total{reason="denied"}`)
/// in a Prometheus text page; tests and `bastion status` read pages with it.
pub fn sample(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn end(up: u64, down: u64) -> SessionEnd<'static> {
        SessionEnd {
            bytes_client_to_upstream: up,
            bytes_upstream_to_client: down,
            path_client_to_upstream: "splice",
            path_upstream_to_client: "copy",
            tls_client: "none",
            tls_upstream: "none",
            duration: Duration::from_millis(5),
            closed_by: "client",
            reason: "-",
            error: None,
        }
    }

    #[test]
    fn handles_move_the_rendered_numbers() {
        let m = Metrics::new();
        let hs = m.handshake();
        assert_eq!(
            sample(&m.encode(), "bastion_handshakes_in_flight"),
            Some(1.0)
        );
        drop(hs);
        let open = m.session_started();
        m.refused("denied");
        m.refused("denied");
        m.upstream_connected(Duration::from_millis(3));
        m.upstream_authenticated(Duration::from_millis(1));
        m.session_ended(&end(10, 32));
        m.upstream_reuse("kept");
        m.upstream_reuse("kept");
        m.upstream_reuse("not_clean");
        m.set_store(StoreFigures {
            seq: 7,
            log_bytes: 1000,
            databases: 2,
            roles: 1,
            users: 3,
        });
        let page = m.encode();
        let has = |name: &str, v: f64| assert_eq!(sample(&page, name), Some(v), "{name}\n{page}");
        has("bastion_handshakes_in_flight", 0.0);
        has("bastion_sessions_open", 1.0);
        has("bastion_upstream_reuse_total{outcome=\"kept\"}", 2.0);
        has("bastion_upstream_reuse_total{outcome=\"not_clean\"}", 1.0);
        has("bastion_sessions_started_total", 1.0);
        has("bastion_sessions_refused_total{reason=\"denied\"}", 2.0);
        has(
            "bastion_relay_bytes_total{direction=\"client_to_upstream\",path=\"splice\"}",
            10.0,
        );
        has(
            "bastion_relay_bytes_total{direction=\"upstream_to_client\",path=\"copy\"}",
            32.0,
        );
        has("bastion_upstream_connect_seconds_count", 1.0);
        has("bastion_upstream_auth_seconds_count", 1.0);
        has("bastion_store_records{kind=\"users\"}", 3.0);
        has("bastion_store_log_bytes", 1000.0);
        drop(open);
        assert_eq!(sample(&m.encode(), "bastion_sessions_open"), Some(0.0));
    }

    #[test]
    fn managed_figures_are_rendered_without_names() {
        let m = Metrics::new();
        m.set_managed(ManagedFigures {
            users: 3,
            failing: 1,
            oldest_rotation: 1_800_000_000,
        });
        let text = m.encode();
        assert_eq!(sample(&text, "bastion_managed_users"), Some(3.0));
        assert_eq!(sample(&text, "bastion_managed_users_failing"), Some(1.0));
        assert_eq!(
            sample(&text, "bastion_managed_oldest_rotation_timestamp_seconds"),
            Some(1.8e9)
        );
        assert_eq!(
            sample(&text, "bastion_upstream_warm_connections"),
            Some(0.0)
        );
        m.set_upstream_warm(2);
        assert_eq!(
            sample(&m.encode(), "bastion_upstream_warm_connections"),
            Some(2.0)
        );
    }

    #[test]
    fn credential_expiry_is_unix_seconds_or_zero() {
        let m = Metrics::new();
        m.set_credentials_expiry(Some(UNIX_EPOCH + Duration::from_secs(1_800_000_000)));
        let name = "bastion_aws_credentials_expiry_timestamp_seconds";
        assert_eq!(sample(&m.encode(), name), Some(1.8e9));
        m.set_credentials_expiry(None);
        assert_eq!(sample(&m.encode(), name), Some(0.0));
    }
}
