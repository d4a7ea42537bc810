//! The guard's [`Policy`] for one session: its db-user, the bastion's own secret for that
//! db-user (so an AUTH the client sends as itself is answered by authenticating again), and
//! the session's audit facts.
//!
//! The secret is fetched for every re-AUTH (a new IAM token; the password the session's
//! database was built with — never a file read per session) and never leaves its zeroized
//! buffer except towards the upstream.

use zeroize::Zeroizing;

use super::driver::{GuardEvent, Policy};
use crate::audit::{self, GuardAudit, SessionFacts};
use crate::aws::credentials::CredentialChain;
use crate::catalog::Database;
use crate::proxy::handshake::client::Opening;
use crate::proxy::handshake::upstream::{auth_command, encode_command, DEFAULT_USER};
use crate::proxy::upstream;

/// What auth mode `none` re-AUTHs with: a `default` user without a password (what `none`
/// relies on) accepts any password, and this one is nobody's.
const NO_PASSWORD: &[u8] = b"bastion:auth-none";

pub struct SessionPolicy<'a> {
    pub database: &'a Database,
    pub db_user: Option<&'a str>,
    pub credentials: &'a CredentialChain,
    pub facts: &'a SessionFacts,
}

impl Policy for SessionPolicy<'_> {
    fn db_user(&self) -> Option<&str> {
        self.db_user
    }

    async fn reauth(&self) -> Result<Zeroizing<Vec<u8>>, String> {
        let secret = upstream::auth_secret(self.database, self.db_user, self.credentials)
            .await
            .map_err(|e| e.to_string())?;
        // The same AUTH the session opened with (`AUTH <db-user> <secret>`, or one-argument
        // `AUTH <secret>` without a db-user); `none` sends none, so `AUTH default <any>`.
        let opening = Opening::Auth { db_user: None };
        Ok(
            match auth_command(&opening, self.db_user, secret.as_ref()) {
                Some(auth) => auth,
                None => encode_command(&[b"AUTH", DEFAULT_USER.as_bytes(), NO_PASSWORD]),
            },
        )
    }

    fn audit(&self, event: GuardEvent<'_>) {
        let (kind, command, reason) = match event {
            GuardEvent::Refused { command, reason } => (GuardAudit::Refused, command, reason),
            GuardEvent::Rewritten { command, action } => (GuardAudit::Rewritten, command, action),
        };
        audit::command_guarded(self.facts, kind, command, reason);
    }
}
