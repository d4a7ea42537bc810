//! Access ends when it is taken away: every live session's [`Grant`] is re-checked against the
//! current catalog and the clock, and the session is stopped (`closed_by="policy"`) once it no
//! longer holds.

use std::sync::Arc;

use crate::catalog::Catalog;
use crate::proxy::registry::Grant;
use crate::proxy::shared::Shared;
use crate::rbac;

/// Twice a second, stop the live sessions whose grant no longer holds: their user was removed or
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
    catalog: &Catalog,
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
    // The same decision made again must give the same db-user (or, legacy, none), on the
    // same definition of the database (a removed one is `unknown database` here).
    let now = rbac::authorize(catalog, &g.user, &g.db, g.db_user.as_deref())
        .map_err(|d| d.to_string())?;
    if now.db_user != g.db_user {
        return Err(format!(
            "database '{}' no longer authenticates this session's way (db-user {} → {})",
            g.db,
            g.db_user.as_deref().unwrap_or("-"),
            now.db_user.as_deref().unwrap_or("-")
        ));
    }
    if **now.database != *g.database {
        return Err(format!(
            "database '{}' was changed (address, auth or TLS)",
            g.db
        ));
    }
    Ok(())
}
