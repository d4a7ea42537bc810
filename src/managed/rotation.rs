//! One rotation of one managed user: the state machine that keeps two promises across crashes
//! and a fleet of bastions rotating the same user at once.
//!
//! - **Never apply a password that is not stored**: the candidate is stored first, as version
//!   `token` under [`PENDING_STAGE`], and only what that version holds is applied.
//! - **Never make current a password that is not applied**: AWSCURRENT moves to `token` only
//!   after the engine accepted it (old and new both valid), so a login with AWSCURRENT — or,
//!   while the cloud still applies, AWSPREVIOUS — always works.
//!
//! `token` (the ClientRequestToken) is derived from the AWSCURRENT version the rotation starts
//! from: two bastions starting from the same state compute the same token, the second one's
//! PutSecretValue is refused (another value under a used token) and it applies the first one's
//! candidate instead — one new version per rotation. A bastion killed at any step runs the
//! same steps again on restart from the same AWSCURRENT, so it resumes the same version.

use std::future::Future;
use std::time::{Duration, SystemTime};

use ring::digest::{digest, SHA256};

use super::secrets::{NewSecret, SecretStore, Stages};
use super::{password, ManagedError};
use crate::secret::Secret;

pub use super::secrets::PENDING_STAGE;

/// Applies a password change to the engine: after `apply`, `new` and `keep` (the current
/// password, if any) are valid, and `retire` — the password of two rotations ago — is not.
pub trait Apply {
    fn apply(
        &self,
        user: &str,
        new: &Secret,
        keep: Option<&Secret>,
        retire: Option<&Secret>,
    ) -> impl Future<Output = Result<(), ManagedError>> + Send;
}

/// What a rotation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// AWSCURRENT is now `version` (created by this bastion or, racing, by another one).
    Rotated { version: String },
    /// Not due: AWSCURRENT is younger than the interval (another bastion rotated).
    NotDue { next: SystemTime },
    /// Another bastion moved AWSCURRENT past this rotation's start; nothing was applied.
    Superseded,
}

/// One rotation of `user`'s secret `name`.
pub struct Rotation<'a> {
    pub store: &'a SecretStore,
    pub name: &'a str,
    pub user: &'a str,
    pub new_secret: NewSecret<'a>,
    /// `None`: rotate now whatever the age of AWSCURRENT.
    pub interval: Option<Duration>,
}

impl Rotation<'_> {
    pub async fn run(&self, engine: &impl Apply) -> Result<Outcome, ManagedError> {
        let before = self.store.read(self.name).await?;
        if let (Some(interval), Some(current)) = (self.interval, &before.current) {
            let next = current.created + interval;
            if SystemTime::now() < next {
                return Ok(Outcome::NotDue { next });
            }
        }
        if before.current.is_none() {
            self.store.create(self.name, &self.new_secret).await?;
        }
        let from = before.current.as_ref().map(|c| c.id.as_str());
        let token = next_token(from, self.name);
        let candidate = password::generate(password::MAX_LEN).map_err(|_| ManagedError::Random)?;
        let stored = self
            .store
            .put_pending(self.name, &token, &candidate)
            .await?;
        drop(candidate);
        // Where AWSCURRENT is now: still `from` (normal), `token` (another bastion finished
        // this very rotation; applying again is harmless), or the first version (which
        // Secrets Manager makes current on its own). Anything else: someone is ahead.
        let now = self.store.stages(self.name).await?;
        let current_now = now
            .iter()
            .find(|(_, s)| s.iter().any(|s| s == super::secrets::CURRENT_STAGE))
            .map(|(id, _)| id.as_str());
        if current_now.is_some() && current_now != from && current_now != Some(token.as_str()) {
            return Ok(Outcome::Superseded);
        }
        let Stages { current, previous } = before;
        let keep = current.as_ref().map(|c| &c.password);
        let retire = previous.filter(|p| Some(p) != keep && *p != stored);
        engine
            .apply(self.user, &stored, keep, retire.as_ref())
            .await?;
        self.store.promote(self.name, &token).await?;
        Ok(Outcome::Rotated { version: token })
    }
}

/// The ClientRequestToken of the version that follows `current` (or the first version of
/// `name`): a UUID-shaped digest, so every bastion derives the same one.
pub fn next_token(current: Option<&str>, name: &str) -> String {
    let input = match current {
        Some(id) => format!("bastion-rotation/after/{id}"),
        None => format!("bastion-rotation/first/{name}"),
    };
    let hex = hex::encode(&digest(&SHA256, input.as_bytes()).as_ref()[..16]);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_derived_uuid_shaped_and_chain() {
        let first = next_token(None, "bastion/redis/db/user/app");
        assert_eq!(first, next_token(None, "bastion/redis/db/user/app"));
        assert_ne!(first, next_token(None, "bastion/redis/db/user/other"));
        assert_eq!(first.len(), 36);
        assert_eq!(first.matches('-').count(), 4);
        let second = next_token(Some(&first), "bastion/redis/db/user/app");
        assert_ne!(second, first);
        // Derived from the version id alone: the secret name does not matter after the first.
        assert_eq!(second, next_token(Some(&first), "anything"));
    }
}
