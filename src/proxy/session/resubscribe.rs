//! A RESP2 subscriber's move to a fresh upstream connection (issue 12, item 4), the session's
//! part. A subscribed RESP2 connection cannot run AUTH, so at a due re-AUTH the guard asks its
//! policy for a new connection: [`InspectPolicy`] is the session's own [`SessionPolicy`] plus
//! that move — dial and authenticate through the handshake's one owner ([`handshake::redial`]),
//! subscribe the new connection by the inspection's plan, read its confirmations
//! ([`await_confirmations`]) and stage it in the relay's [`Handover`]. The order of the switch
//! and the seam are the guard's and the inspection's (`inspect/seam.rs`).
//!
//! What it must never do: write to the client, or hand the relay a connection whose
//! subscriptions are not all confirmed.

use std::io;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use zeroize::Zeroizing;

use super::handshake;
use crate::aws::iam::Freshness;
use crate::proxy::guard::driver::{GuardEvent, MoveError, Policy, Resubscribe};
use crate::proxy::guard::session_policy::SessionPolicy;
use crate::proxy::inspect::seam::await_confirmations;
use crate::proxy::relay::Handover;
use crate::proxy::shared::Shared;
use crate::proxy::upstream;

/// The guard's policy for an inspect-mode session.
pub(super) struct InspectPolicy<'a> {
    pub session: SessionPolicy<'a>,
    pub shared: &'a Shared,
    pub handover: &'a Handover,
}

impl Policy for InspectPolicy<'_> {
    fn db_user(&self) -> Option<&str> {
        self.session.db_user()
    }

    async fn reauth(&self) -> Result<Zeroizing<Vec<u8>>, String> {
        self.session.reauth().await
    }

    fn audit(&self, event: GuardEvent<'_>) {
        self.session.audit(event)
    }

    async fn resubscribe(&self, plan: &Resubscribe) -> Result<(), MoveError> {
        let (db, db_user) = (self.session.database, self.session.db_user);
        let secret =
            upstream::auth_secret(db, db_user, self.session.credentials, Freshness::Recent)
                .await
                .map_err(|e| MoveError::NotSent(e.to_string()))?;
        let opened = handshake::redial(self.shared, db, db_user, secret)
            .await
            .map_err(|e| MoveError::Failed(e.to_string()))?;
        let mut stream = opened.upstream;
        let subscribe = async {
            let write = |e: io::Error| format!("writing to the new connection: {e}");
            stream.write_all(&plan.commands).await.map_err(write)?;
            stream.flush().await.map_err(write)?;
            await_confirmations(&mut stream, opened.extra, plan.confirmations).await
        };
        let limit: Duration = self.shared.limits().handshake_timeout;
        let early = tokio::time::timeout(limit, subscribe)
            .await
            .map_err(|_| {
                MoveError::Failed(format!(
                    "upstream '{}': the new connection did not confirm its subscriptions within \
                     limits.handshake_timeout",
                    db.name
                ))
            })?
            .map_err(|e| MoveError::Failed(format!("upstream '{}': {e}", db.name)))?;
        self.handover.stage(super::upstream_leg(stream), early);
        Ok(())
    }

    fn switch_over(&self) {
        self.handover.activate()
    }
}
