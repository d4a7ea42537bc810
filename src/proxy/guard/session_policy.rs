//! The guard's [`Policy`] for one session: its db-user, the bastion's own secret for that
//! db-user (so an AUTH the client sends as itself is answered by authenticating again), and
//! the session's audit facts.
//!
//! The secret is fetched for every re-AUTH (a new IAM token; the password the session's
//! database was built with — never a file read per session) and never leaves its zeroized
//! buffer except towards the upstream.
//!
//! A managed database's password is checked first: the upstream's reply to the re-AUTH goes to
//! the client unread, so AWSCURRENT — which the cloud may not have applied yet — is tried on a
//! connection of the bastion's own through the sessions' one login ([`upstream::login`]:
//! AWSCURRENT, afresh, then AWSPREVIOUS), and the password it accepted is the one sent.

use std::time::Duration;

use zeroize::Zeroizing;

use super::driver::{GuardEvent, Policy};
use crate::audit::{self, GuardAudit, SessionFacts};
use crate::aws::credentials::CredentialChain;
use crate::aws::iam::Freshness;
use crate::catalog::{Auth, Database};
use crate::proxy::handshake::client::Opening;
use crate::proxy::handshake::upstream::{auth_command, encode_command, DEFAULT_USER};
use crate::proxy::upstream::{self, Connector};
use crate::secret::Secret;

/// What auth mode `none` re-AUTHs with: a `default` user without a password (what `none`
/// relies on) accepts any password, and this one is nobody's.
const NO_PASSWORD: &[u8] = b"bastion:auth-none";

pub struct SessionPolicy<'a> {
    pub database: &'a Database,
    pub db_user: Option<&'a str>,
    pub credentials: &'a CredentialChain,
    /// For a managed database's password check.
    pub connector: &'a Connector,
    /// Bound on that check (connect and login).
    pub check_timeout: Duration,
    pub facts: &'a SessionFacts,
}

impl SessionPolicy<'_> {
    /// Log in with `current` on a new connection: `Some` the password the upstream accepted
    /// instead (AWSPREVIOUS while the cloud applies a rotation), `None` if `current` was.
    async fn check_managed(
        &self,
        opening: &Opening,
        current: &Secret,
    ) -> Result<Option<Secret>, String> {
        let command = auth_command(opening, self.db_user, Some(current))
            .ok_or("a managed database's AUTH needs its password")?;
        let check = async {
            let mut stream = self
                .connector
                .connect(self.database, self.check_timeout)
                .await
                .map_err(|e| e.to_string())?;
            upstream::login(
                &mut stream,
                self.database,
                self.db_user,
                opening,
                self.credentials,
                &command,
            )
            .await
            .map(|(_, accepted)| accepted)
            .map_err(|e| e.to_string())
        };
        tokio::time::timeout(self.check_timeout, check)
            .await
            .map_err(|_| {
                format!(
                    "checking the managed password took over {:?}",
                    self.check_timeout
                )
            })?
    }
}

impl Policy for SessionPolicy<'_> {
    fn db_user(&self) -> Option<&str> {
        self.db_user
    }

    async fn reauth(&self) -> Result<Zeroizing<Vec<u8>>, String> {
        let mut secret = upstream::auth_secret(
            self.database,
            self.db_user,
            self.credentials,
            // Signed now: the services extend a connection's 12 hours on an AUTH with a
            // *new* token, and a re-AUTH is rare (a client's own AUTH, one per
            // `reauth_interval`).
            Freshness::New,
        )
        .await
        .map_err(|e| e.to_string())?;
        // The same AUTH the session opened with (`AUTH <db-user> <secret>`, or one-argument
        // `AUTH <secret>` without a db-user); `none` sends none, so `AUTH default <any>`.
        let opening = Opening::Auth { db_user: None };
        if let (Auth::Managed(_), Some(current)) = (&self.database.auth, &secret) {
            if let Some(accepted) = self.check_managed(&opening, current).await? {
                secret = Some(accepted);
            }
        }
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
