//! What every session shares: the catalog, the limits in force, credentials, the upstream
//! connector, the admission and session-slot bounds, the live-session registry and the metrics.
//!
//! One per daemon, built at start; a reload swaps the limits here (`set_limits`) and nothing a
//! live session holds changes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::aws::credentials::CredentialChain;
use crate::catalog::CatalogHandle;
use crate::config::Limits;
use crate::metrics::Metrics;
use crate::proxy::admission::{Admission, RefusalLog};
use crate::proxy::registry::Registry;
use crate::proxy::slots::SessionSlots;
use crate::proxy::upstream::{Connector, WarmPool};

/// Refusals of unidentified connections logged one by one per interval; the rest are counted.
const REFUSAL_BURST: u32 = 20;

/// What every session shares: the catalog, limits, credentials and upstream connector.
pub struct Shared {
    pub catalog: CatalogHandle,
    /// Swapped by a reload; a session reads them when it reaches each step.
    limits: ArcSwap<Limits>,
    pub credentials: CredentialChain,
    pub connector: Connector,
    /// Upstream connections dialed ahead for the databases in use (`upstream/warm.rs`).
    pub warm: WarmPool,
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
    /// The numbers the `[metrics]` endpoint and `bastion status` show.
    pub metrics: Metrics,
    /// The daemon-wide bound on `db.command` audit events (`limits.command_audit_rate`).
    pub command_audit: crate::proxy::inspect::AuditBudget,
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
            warm: WarmPool::default(),
            instance_id: std::sync::OnceLock::new(),
            sessions: Arc::new(Registry::default()),
            metrics: Metrics::new(),
            command_audit: crate::proxy::inspect::AuditBudget::default(),
            next_id: AtomicU64::new(1),
        }
    }

    /// Sessions accepted since start.
    pub fn sessions_started(&self) -> u64 {
        self.next_id.load(Ordering::Relaxed) - 1
    }

    pub(super) fn next_id(&self) -> u64 {
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
