//! The one entry point for an IAM auth token for a database: region (the database's, else
//! the instance's), credentials (the chain's, or a per-database role assumed with them through
//! STS in that region), then SigV4 ([`super::token`]).
//!
//! Callers (the session's upstream secret, `bastion doctor`) see one function and one error;
//! which of the chain's parts ran is this module's business. Never logs a credential or token.
//!
//! A token is a presigned URL the service accepts for [`token::TOKEN_LIFETIME`] (15 minutes), for
//! any number of connections. Signing one costs about a third of the bastion's CPU for a short
//! session (30–40 µs of ≈ 90 in `-k 0` churn), so a token is handed to further logins for the
//! same (service, region, target, serverless, db-user), signed with the same credentials, for
//! [`TOKEN_REUSE`] — never to another db-user or target, never after the credentials changed
//! (a refresh, a database's role assumed afresh), and never to a re-AUTH, which asks for
//! [`Freshness::New`]. The cache ([`TokenCache`]) lives in the chain and is bounded.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;

use super::assume_role::{AssumeRoleError, RoleSpec};
use super::credentials::{CredentialChain, CredentialsError};
use super::region::RegionError;
use super::token::IamService;
use super::token::{self, TokenError, TokenRequest};
use crate::secret::Secret;

/// What a database says about its IAM authentication.
#[derive(Debug, Clone)]
pub struct IamAuth<'a> {
    /// The database's name (for the region's error and cache).
    pub database: &'a str,
    pub service: IamService,
    /// `auth.region`; `None`: the instance's region.
    pub region: Option<&'a str>,
    pub target: &'a str,
    pub serverless: bool,
    /// `assume_role_arn` and its settings: the token is signed with that role's credentials.
    pub role: Option<RoleSpec>,
}

/// Which step of making the token failed.
#[derive(Debug, thiserror::Error)]
pub enum IamTokenError {
    #[error(transparent)]
    Region(#[from] RegionError),
    #[error(transparent)]
    AssumeRole(#[from] AssumeRoleError),
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    #[error(transparent)]
    Token(#[from] TokenError),
}

/// How long a signed token is handed to further logins: at a login it has at least
/// [`token::TOKEN_LIFETIME`] minus this (14 minutes) left.
pub const TOKEN_REUSE: Duration = Duration::from_secs(60);

/// At most this many tokens are kept (one per db-user and target in use); beyond it, tokens
/// are signed per login until older ones expire.
pub const MAX_CACHED_TOKENS: usize = 1024;

/// Whether a login may use a token signed a moment ago (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// One signed within [`TOKEN_REUSE`] for the same db-user, target and credentials will do:
    /// a session's opening, a warm or reused connection, a subscriber's move.
    Recent,
    /// Signed now, and not handed to anyone else: a re-AUTH on a live connection, `doctor`.
    New,
}

/// A token for `db_user` on the database `auth` describes, valid for
/// [`token::TOKEN_LIFETIME`] from its signing (at most [`TOKEN_REUSE`] ago with
/// [`Freshness::Recent`]).
pub async fn token(
    chain: &CredentialChain,
    auth: &IamAuth<'_>,
    db_user: &str,
    freshness: Freshness,
) -> Result<Secret, IamTokenError> {
    let region = chain
        .regions()
        .for_database(auth.database, auth.region)
        .await?;
    let creds = match &auth.role {
        // The role's credentials, assumed with the chain's as the source, through STS in the
        // database's region.
        Some(role) => {
            chain
                .assumed(&RoleSpec {
                    region: Some(region.region.clone()),
                    ..role.clone()
                })
                .await?
        }
        None => chain.credentials().await?.0,
    };
    let request = TokenRequest {
        service: auth.service,
        region: &region.region,
        target: auth.target,
        db_user,
        serverless: auth.serverless,
    };
    let now = SystemTime::now();
    if freshness == Freshness::New {
        return Ok(token::generate(&request, &creds, now)?);
    }
    // Only a token `generate` accepted this request for (target, region, db-user) is kept.
    let key = TokenKey::of(&request);
    if let Some(recent) = chain.tokens().recent(&key, &creds, now) {
        return Ok(recent);
    }
    let signed = token::generate(&request, &creds, now)?;
    chain.tokens().keep(key, &creds, now, &signed);
    Ok(signed)
}

/// What a token says, besides its signature: a token is handed only to a login that would
/// have signed exactly these.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenKey {
    service: IamService,
    serverless: bool,
    region: String,
    target: String,
    db_user: String,
}

impl TokenKey {
    pub fn of(request: &TokenRequest<'_>) -> Self {
        TokenKey {
            service: request.service,
            serverless: request.serverless,
            region: request.region.to_string(),
            target: request.target.to_string(),
            db_user: request.db_user.to_string(),
        }
    }
}

struct Kept {
    /// The credentials it was signed with: compared whole (key id, secret, session token,
    /// expiry), so refreshed credentials sign anew.
    creds: Credentials,
    signed_at: SystemTime,
    token: Secret,
}

impl Kept {
    /// Signed no more than [`TOKEN_REUSE`] before `now` (a clock that went back: not recent),
    /// with credentials that have not expired.
    fn is_recent(&self, now: SystemTime) -> bool {
        now.duration_since(self.signed_at)
            .is_ok_and(|age| age < TOKEN_REUSE)
            && self.creds.expiry().is_none_or(|expiry| now < expiry)
    }
}

/// Tokens signed lately, one per [`TokenKey`] (held by the [`CredentialChain`]). Expired ones
/// are dropped (and zeroized) at the next signing.
#[derive(Default)]
pub struct TokenCache {
    kept: Mutex<HashMap<TokenKey, Kept>>,
}

impl TokenCache {
    /// The token kept for `key` if it was signed with `creds` and is still recent at `now`.
    pub fn recent(&self, key: &TokenKey, creds: &Credentials, now: SystemTime) -> Option<Secret> {
        let kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        kept.get(key)
            .filter(|k| k.is_recent(now) && k.creds == *creds)
            .map(|k| k.token.clone())
    }

    /// Keep `token`, signed at `now` with `creds`, for `key`, in place of any before it.
    pub fn keep(&self, key: TokenKey, creds: &Credentials, now: SystemTime, token: &Secret) {
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        kept.retain(|_, k| k.is_recent(now));
        if kept.len() >= MAX_CACHED_TOKENS && !kept.contains_key(&key) {
            return;
        }
        kept.insert(
            key,
            Kept {
                creds: creds.clone(),
                signed_at: now,
                token: token.clone(),
            },
        );
    }

    /// How many tokens are kept (tests).
    pub fn len(&self) -> usize {
        self.kept.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use aws_credential_types::provider::{future, ProvideCredentials};

    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    fn creds(key_id: &str, secret: &str, expiry: Option<SystemTime>) -> Credentials {
        Credentials::new(key_id, secret, Some("session".into()), expiry, "test")
    }

    fn request<'a>(target: &'a str, db_user: &'a str) -> TokenRequest<'a> {
        TokenRequest {
            service: IamService::Elasticache,
            region: "us-east-1",
            target,
            db_user,
            serverless: false,
        }
    }

    fn kept(cache: &TokenCache, key: &TokenKey, creds: &Credentials, now: SystemTime) -> String {
        let secret = cache.recent(key, creds, now).expect("a kept token");
        secret.expose().to_string()
    }

    /// Within [`TOKEN_REUSE`] of its signing, a token goes to the same key and credentials
    /// only: not to another db-user, target, region, service or kind of cache, not after the
    /// credentials changed in any part, not once they expired, not at or after the TTL, and
    /// not when the clock went back before the signing.
    #[test]
    fn a_kept_token_goes_to_exactly_its_own_logins_for_a_minute() {
        let cache = TokenCache::default();
        let c = creds("AKIDONE", "secret-one", None);
        let key = TokenKey::of(&request("rg", "app"));
        cache.keep(key.clone(), &c, at(0), &Secret::new("token-app"));
        assert_eq!(kept(&cache, &key, &c, at(0)), "token-app");
        assert_eq!(kept(&cache, &key, &c, at(59)), "token-app");

        assert!(cache.recent(&key, &c, at(60)).is_none(), "at the TTL");
        assert!(cache.recent(&key, &c, at(600)).is_none());
        let before = SystemTime::UNIX_EPOCH + Duration::from_secs(1_699_999_990);
        assert!(cache.recent(&key, &c, before).is_none(), "clock went back");

        let others = [
            TokenKey::of(&request("rg", "admin")),
            TokenKey::of(&request("rg", "App")),
            TokenKey::of(&request("other-rg", "app")),
            TokenKey::of(&TokenRequest {
                region: "eu-west-1",
                ..request("rg", "app")
            }),
            TokenKey::of(&TokenRequest {
                service: IamService::Memorydb,
                ..request("rg", "app")
            }),
            TokenKey::of(&TokenRequest {
                serverless: true,
                ..request("rg", "app")
            }),
        ];
        for other in &others {
            assert!(cache.recent(other, &c, at(1)).is_none(), "{other:?}");
        }
        for changed in [
            creds("AKIDTWO", "secret-one", None),
            creds("AKIDONE", "secret-two", None),
            Credentials::new("AKIDONE", "secret-one", Some("other".into()), None, "test"),
            Credentials::new("AKIDONE", "secret-one", None, None, "test"),
        ] {
            assert!(cache.recent(&key, &changed, at(1)).is_none(), "{changed:?}");
        }

        // Credentials that expire while the token is kept: not handed out after.
        let short = creds("AKIDSHORT", "s", Some(at(30)));
        cache.keep(key.clone(), &short, at(0), &Secret::new("token-short"));
        assert_eq!(kept(&cache, &key, &short, at(29)), "token-short");
        assert!(cache.recent(&key, &short, at(30)).is_none());
        // The newer token replaced the older for the key.
        assert!(cache.recent(&key, &c, at(1)).is_none());
    }

    /// The cache is bounded (db-users may be any name a role's wildcard allows): at
    /// [`MAX_CACHED_TOKENS`] a new key is not kept (its logins sign their own), a kept key is
    /// still replaced, and expired tokens are dropped at the next keep.
    #[test]
    fn the_cache_is_bounded_and_drops_expired_tokens() {
        let cache = TokenCache::default();
        let c = creds("AKIDONE", "secret-one", None);
        for i in 0..MAX_CACHED_TOKENS {
            let user = format!("user{i}");
            cache.keep(
                TokenKey::of(&request("rg", &user)),
                &c,
                at(0),
                &Secret::new(format!("t{i}")),
            );
        }
        assert_eq!(cache.len(), MAX_CACHED_TOKENS);
        let extra = TokenKey::of(&request("rg", "one-too-many"));
        cache.keep(extra.clone(), &c, at(1), &Secret::new("x"));
        assert!(cache.recent(&extra, &c, at(1)).is_none());
        let first = TokenKey::of(&request("rg", "user0"));
        cache.keep(first.clone(), &c, at(2), &Secret::new("t0-again"));
        assert_eq!(kept(&cache, &first, &c, at(2)), "t0-again");
        assert_eq!(cache.len(), MAX_CACHED_TOKENS);

        // A minute on, every token but `first`'s has expired: the next keep drops them.
        cache.keep(extra.clone(), &c, at(61), &Secret::new("x"));
        assert_eq!(cache.len(), 2);
        assert_eq!(kept(&cache, &extra, &c, at(61)), "x");
    }

    /// Credentials the test swaps; each answer expires within the chain's refresh margin, so
    /// the chain asks again at every token.
    #[derive(Debug)]
    struct Swappable(Arc<Mutex<Credentials>>);

    impl ProvideCredentials for Swappable {
        fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            future::ProvideCredentials::ready(Ok(self.0.lock().unwrap().clone()))
        }
    }

    fn auth(target: &str) -> IamAuth<'_> {
        IamAuth {
            database: "cache",
            service: IamService::Elasticache,
            region: Some("us-east-1"),
            target,
            serverless: false,
            role: None,
        }
    }

    /// Through the chain: logins that accept a recent token for the same db-user get the one
    /// signed first; another db-user or target gets its own; new credentials sign anew;
    /// [`Freshness::New`] neither takes nor leaves a token in the cache.
    #[tokio::test]
    async fn recent_logins_share_a_token_only_with_their_own_db_user_and_credentials() {
        let soon = SystemTime::now() + Duration::from_secs(120);
        let current = Arc::new(Mutex::new(creds("AKIDFIRST", "first-secret", Some(soon))));
        let chain = CredentialChain::builder()
            .link("test", Swappable(current.clone()))
            .build();
        let sign = |target: &'static str, user: &'static str, freshness| {
            let chain = chain.clone();
            async move {
                let t = token(&chain, &auth(target), user, freshness).await;
                t.expect("token").expose().to_string()
            }
        };

        let app = sign("rg", "app", Freshness::Recent).await;
        assert!(
            app.contains("User=app&") && app.contains("AKIDFIRST"),
            "{app}"
        );
        // Sleep past a second: a token signed anew would carry another X-Amz-Date.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(sign("rg", "app", Freshness::Recent).await, app);
        let admin = sign("rg", "admin", Freshness::Recent).await;
        assert!(admin.contains("User=admin&") && admin != app, "{admin}");
        let other = sign("other-rg", "app", Freshness::Recent).await;
        assert!(other.starts_with("other-rg/") && other != app, "{other}");
        assert_eq!(chain.tokens().len(), 3);

        let fresh = sign("rg", "app", Freshness::New).await;
        assert!(fresh.contains("User=app&") && fresh != app, "{fresh}");
        assert_eq!(sign("rg", "app", Freshness::Recent).await, app);
        assert_eq!(chain.tokens().len(), 3);

        *current.lock().unwrap() = creds("AKIDSECOND", "second-secret", Some(soon));
        let rotated = sign("rg", "app", Freshness::Recent).await;
        assert!(rotated.contains("AKIDSECOND"), "{rotated}");
        assert_eq!(sign("rg", "app", Freshness::Recent).await, rotated);

        // Credentials that have expired: an error, not the token kept from the ones before.
        let past = SystemTime::now() - Duration::from_secs(1);
        *current.lock().unwrap() = creds("AKIDEXPIRED", "expired-secret", Some(past));
        let e = token(&chain, &auth("rg"), "app", Freshness::Recent).await;
        assert!(
            matches!(
                e,
                Err(IamTokenError::Token(TokenError::CredentialsExpired { .. }))
            ),
            "{e:?}"
        );
    }
}
