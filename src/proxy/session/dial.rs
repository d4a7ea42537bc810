//! The upstream dial started as soon as the client is identified, while its opening frame is
//! still on the way (set-up latency: an upstream TCP + TLS handshake no longer waits for the
//! client's first bytes).
//!
//! What it must never do:
//! - dial for a client that no opening could get a db-user for: it starts only for an
//!   identified user whose roles reach the database with some db-user ([`rbac::may_connect`]);
//!   the upstream address policy is still checked by the connector, at connect time;
//! - authenticate: the AUTH/HELLO waits for the grant (`handshake::authorize`), which decides
//!   the db-user from the opening;
//! - outlive its session: it is a future the session drives (no task of its own), so a refused,
//!   killed or timed-out session drops the half-made connection with it;
//! - be used for another definition of the database: a reload between identity and grant
//!   that changed it means the early connection is dropped and the grant's database dialed.

use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::Arc;

use crate::catalog::Database;
use crate::identity::Identity;
use crate::proxy::shared::Shared;
use crate::proxy::upstream::{UpstreamError, UpstreamStream};
use crate::rbac;

use super::handshake::Refusal;

type Dialing<'a> = Pin<Box<dyn Future<Output = Result<UpstreamStream, UpstreamError>> + Send + 'a>>;

/// An upstream connection begun at identity, or none.
pub(super) enum EarlyDial<'a> {
    /// Not identified, no database, or no db-user could come of it: dial after the grant.
    Skipped,
    /// Dialing `database` (as the catalog defined it at identity).
    Dialing {
        database: Arc<Database>,
        dialing: Dialing<'a>,
    },
    /// Dialed (or failed); kept until the grant says whether it is the right one.
    Done {
        database: Arc<Database>,
        result: Result<UpstreamStream, UpstreamError>,
    },
}

impl<'a> EarlyDial<'a> {
    /// Start dialing `db` for `who` if its roles reach the database with some db-user.
    pub(super) fn start(
        shared: &'a Shared,
        who: &Result<Identity, Refusal>,
        db: &Result<String, Refusal>,
    ) -> Self {
        let (Ok(identity), Ok(db)) = (who, db) else {
            return EarlyDial::Skipped;
        };
        let catalog = shared.catalog.snapshot();
        let Ok(database) = rbac::may_connect(&catalog, &identity.user, db) else {
            // The refusal itself comes from `authorize`, after the opening, as before.
            return EarlyDial::Skipped;
        };
        let database = database.clone();
        let limits = shared.limits();
        if !database.authenticates() {
            // Nothing to authenticate: any warm connection to the database will do.
            if let Some(warm) = shared.warm.take(&database, None, None, &limits) {
                tracing::debug!("took a warm upstream connection at identity");
                return EarlyDial::Done {
                    database,
                    result: Ok(warm),
                };
            }
        } else if shared.warm.has_authenticated(&database) {
            // Connections authenticated ahead wait for a db-user: the grant decides which one
            // (`handshake::connect`); a dial now would most likely be dropped.
            return EarlyDial::Skipped;
        }
        let timeout = limits.upstream_connect_timeout;
        let target = database.clone();
        tracing::debug!("dialing upstream at identity");
        EarlyDial::Dialing {
            database,
            dialing: Box::pin(async move {
                let connecting = std::time::Instant::now();
                let stream = shared.connector.connect(&target, timeout).await;
                if stream.is_ok() {
                    shared.metrics.upstream_connected(connecting.elapsed());
                }
                stream
            }),
        }
    }

    /// Run `work` to its end, moving the dial on meanwhile.
    pub(super) async fn alongside<F: Future>(&mut self, work: F) -> F::Output {
        let mut work = pin!(work);
        loop {
            let EarlyDial::Dialing { database, dialing } = self else {
                return work.await;
            };
            tokio::select! {
                biased;
                out = &mut work => return out,
                result = dialing => {
                    *self = EarlyDial::Done { database: database.clone(), result };
                }
            }
        }
    }

    /// The early connection if it was dialed for exactly `granted` (waiting for it if need
    /// be); `None`: there is none, or it is to another definition of the database (dropped
    /// here, closing it) — the caller dials.
    pub(super) async fn take(
        self,
        granted: &Database,
    ) -> Option<Result<UpstreamStream, UpstreamError>> {
        let same = |database: &Arc<Database>| **database == *granted;
        match self {
            EarlyDial::Dialing { database, dialing } if same(&database) => Some(dialing.await),
            EarlyDial::Done { database, result } if same(&database) => Some(result),
            _ => None,
        }
    }
}
