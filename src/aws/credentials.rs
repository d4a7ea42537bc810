//! The AWS credential provider chain behind every IAM-mode database.
//!
//! A [`CredentialChain`] is an ordered list of named links, each an
//! [`aws_credential_types::provider::ProvideCredentials`]. The default chain is, in the order
//! of the AWS SDKs:
//!
//! 1. `env`: `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN`;
//! 2. `profile`: the shared config/credentials files honouring `AWS_PROFILE` — static keys,
//!    `credential_process`, `role_arn` with `source_profile` or `credential_source`
//!    (`Ec2InstanceMetadata` is served by *our* IMDS provider, `EcsContainer` by the `ecs` link's
//!    provider, `Environment` by aws-config's);
//! 3. `web_identity`: `AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN` through
//!    STS AssumeRoleWithWebIdentity (EKS IRSA);
//! 4. `ecs`: `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` / `_FULL_URI` (ECS task roles, EKS pod
//!    identity);
//! 5. `imds`: the instance profile through our IMDSv2 client
//!    ([`crate::aws::imds::ImdsCredentialsProvider`]).
//!
//! Links 2–4 are aws-config's own providers, given the HTTP client of [`crate::aws::sdk`]. The
//! chain is walked by aws-config's [`CredentialsProviderChain`].
//!
//! Answers are cached until [`REFRESH_BEFORE_EXPIRY`] before they expire (credentials without an
//! expiry are re-asked for after [`STATIC_TTL`]); one refresh runs at a time. Per-database roles
//! ([`CredentialChain::assumed`]) are assumed with the chain's credentials as the source; see
//! [`crate::aws::assume_role`].
//!
//! This module must never put a secret access key or session token into an error, a log line or
//! a panic message: errors name the links that were tried and why each gave nothing.

use std::borrow::Cow;
use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_config::ecs::EcsCredentialsProvider;
use aws_config::environment::credentials::EnvironmentVariableCredentialsProvider;
use aws_config::meta::credentials::CredentialsProviderChain;
use aws_config::meta::ProviderChainError;
use aws_config::profile::ProfileFileCredentialsProvider;
use aws_config::provider_config::ProviderConfig;
use aws_config::web_identity_token::WebIdentityTokenCredentialsProvider;
use aws_credential_types::provider::error::CredentialsError as ProviderError;
use aws_credential_types::provider::{future, ProvideCredentials, SharedCredentialsProvider};
use aws_credential_types::Credentials;

use crate::aws::assume_role::{AssumeRoleError, AssumedRoles, RoleSpec};
use crate::aws::iam::TokenCache;
use crate::aws::imds::settings::ImdsConfig;
use crate::aws::imds::{Env, ImdsClient, ImdsCredentialsProvider, ProcessEnv};
use crate::aws::region::Regions;
use crate::aws::sdk::Sdk;

/// Credentials with an expiry are refreshed this long before it, so a token signed with them
/// stays usable for its whole connection handshake.
pub const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(5 * 60);

/// Credentials without an expiry (static keys) are asked for again after this long.
pub const STATIC_TTL: Duration = Duration::from_secs(15 * 60);

#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// Every link was tried and none had credentials; the message lists `link: reason` for each.
    #[error("no AWS credentials: {0}")]
    NotFound(String),
    /// A link found configuration for credentials but could not turn it into credentials (for
    /// example a profile that needs a feature this build does not have). The chain stops there,
    /// as the AWS SDKs do, rather than silently falling through to the next link.
    #[error("AWS credential provider `{provider}` failed (tried before it, without credentials: {tried_before}): {reason}")]
    ProviderFailed {
        provider: String,
        tried_before: String,
        reason: String,
    },
}

/// The chain every IAM-mode database uses. Cheap to clone; clones share one cache.
#[derive(Clone)]
pub struct CredentialChain {
    inner: Arc<Inner>,
}

struct Inner {
    names: Vec<Cow<'static, str>>,
    /// `None` when the chain was built without links.
    chain: Option<CredentialsProviderChain>,
    cache: tokio::sync::Mutex<Option<Cached>>,
    clock: Clock,
    sdk: Sdk,
    roles: AssumedRoles,
    regions: Regions,
    /// IAM auth tokens signed with this chain's credentials, handed to further logins for a
    /// short while ([`crate::aws::iam`]).
    tokens: TokenCache,
}

type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

struct Cached {
    creds: Credentials,
    provider: String,
    refresh_at: SystemTime,
}

impl fmt::Debug for CredentialChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialChain")
            .field("links", &self.inner.names)
            .finish_non_exhaustive()
    }
}

impl CredentialChain {
    /// The default chain (see the module docs), with default `[aws.imds]` settings and the
    /// `AWS_EC2_METADATA_*` overrides from the process environment.
    pub fn default_chain() -> Self {
        Self::default_chain_with_imds(&ImdsConfig::default(), &ProcessEnv)
    }

    /// [`Self::default_chain`] with the `imds` link built from the config's `[aws.imds]`.
    ///
    /// Builds no connection and reads no file: every link looks at its environment variables
    /// and files when it is asked.
    pub fn default_chain_with_imds(imds: &ImdsConfig, env: &dyn Env) -> Self {
        let sdk = Sdk::new();
        let client = ImdsClient::from_config(imds, env);
        // One IMDS client (one token) for the `imds` link and the region look-up.
        let regions = Regions::new(client.clone());
        let imds = ImdsCredentialsProvider::from_result(client);
        // Built once: its configuration comes from the environment, which does not change.
        let ecs = SharedCredentialsProvider::new(
            EcsCredentialsProvider::builder()
                .configure(&ProviderConfig::default().with_http_client(sdk.http_client()))
                .connect_timeout(crate::aws::sdk::CONNECT_TIMEOUT)
                .read_timeout(crate::aws::sdk::CONNECT_TIMEOUT)
                .build(),
        );
        let profile = ProfileLink::new(
            std::env::var("AWS_PROFILE").unwrap_or_else(|_| "default".into()),
            sdk.clone(),
            Sources {
                imds: SharedCredentialsProvider::new(imds.clone()),
                ecs: ecs.clone(),
            },
            |builder| builder,
        );
        Self::builder()
            .sdk(sdk.clone())
            .regions(regions)
            .link("env", EnvironmentVariableCredentialsProvider::new())
            .link("profile", profile)
            .link("web_identity", WebIdentityLink { sdk })
            .link("ecs", ecs)
            .link("imds", imds)
            .build()
    }

    /// An empty chain to add links to, in the order they are asked.
    pub fn builder() -> CredentialChainBuilder {
        CredentialChainBuilder {
            links: Vec::new(),
            clock: None,
            sdk: None,
            regions: None,
        }
    }

    /// A chain of exactly one link (tests, or a fixed provider from configuration).
    pub fn from_provider(
        name: impl Into<Cow<'static, str>>,
        provider: impl ProvideCredentials + 'static,
    ) -> Self {
        Self::builder().link(name, provider).build()
    }

    /// The link names, in the order they are asked.
    pub fn link_names(&self) -> impl Iterator<Item = &str> {
        self.inner.names.iter().map(|n| n.as_ref())
    }

    /// The link that answered last, without loading anything (for systemd's `STATUS=` line).
    /// `None` before the first load, or while a refresh holds the cache.
    pub fn last_provider(&self) -> Option<String> {
        let cache = self.inner.cache.try_lock().ok()?;
        cache.as_ref().map(|c| c.provider.clone())
    }

    /// The provider that answered last and when its credentials expire, without loading any
    /// (`None` if none are cached, or a refresh holds the cache right now).
    pub fn cached(&self) -> Option<(String, Option<SystemTime>)> {
        let cache = self.inner.cache.try_lock().ok()?;
        cache
            .as_ref()
            .map(|c| (c.provider.clone(), c.creds.expiry()))
    }

    /// Current credentials (cached until near expiry) and the name of the provider that answered.
    pub async fn credentials(&self) -> Result<(Credentials, String), CredentialsError> {
        // Held across the load: concurrent callers wait for one refresh instead of each
        // starting their own.
        let mut cache = self.inner.cache.lock().await;
        let now = (self.inner.clock)();
        if let Some(cached) = cache.as_ref() {
            if now < cached.refresh_at {
                return Ok((cached.creds.clone(), cached.provider.clone()));
            }
        }
        match self.load().await {
            Ok((creds, provider)) => {
                let refresh_at = match creds.expiry() {
                    Some(expiry) => expiry
                        .checked_sub(REFRESH_BEFORE_EXPIRY)
                        .unwrap_or(SystemTime::UNIX_EPOCH),
                    None => now + STATIC_TTL,
                };
                *cache = Some(Cached {
                    creds: creds.clone(),
                    provider: provider.clone(),
                    refresh_at,
                });
                Ok((creds, provider))
            }
            Err(err) => {
                // Credentials inside their refresh window but not yet expired still sign valid
                // tokens; a failed refresh should not cut every new connection off early.
                if let Some(cached) = cache.as_ref() {
                    if cached.creds.expiry().is_none_or(|expiry| now < expiry) {
                        tracing::warn!(
                            provider = %cached.provider,
                            error = %err,
                            "credential refresh failed; using the previous credentials until they expire"
                        );
                        return Ok((cached.creds.clone(), cached.provider.clone()));
                    }
                }
                Err(err)
            }
        }
    }

    /// Credentials of `role`, assumed through STS with this chain's credentials as the source;
    /// cached per (role, external id) until [`REFRESH_BEFORE_EXPIRY`] before they expire, one
    /// refresh at a time per role. Clones of the chain share the cache.
    pub async fn assumed(&self, role: &RoleSpec) -> Result<Credentials, AssumeRoleError> {
        self.inner
            .roles
            .credentials(role, self, &self.inner.sdk, (self.inner.clock)())
            .await
    }

    /// The HTTPS client and service-client plumbing this chain's STS calls use.
    pub fn sdk(&self) -> &Sdk {
        &self.inner.sdk
    }

    /// Where regions come from for databases that name none, and for STS (see
    /// [`crate::aws::region`]); shares the `imds` link's IMDS client.
    pub fn regions(&self) -> &Regions {
        &self.inner.regions
    }

    /// The IAM auth tokens signed lately with this chain's credentials (see
    /// [`crate::aws::iam::token`]); clones of the chain share them.
    pub(crate) fn tokens(&self) -> &TokenCache {
        &self.inner.tokens
    }

    /// The ARN of the principal this chain's credentials belong to (STS GetCallerIdentity).
    pub async fn caller_arn(&self, region: Option<&str>) -> Result<String, AssumeRoleError> {
        crate::aws::assume_role::caller_arn(self, &self.inner.sdk, region).await
    }

    /// Walk the links once, without the cache.
    async fn load(&self) -> Result<(Credentials, String), CredentialsError> {
        let Some(chain) = self.inner.chain.as_ref() else {
            return Err(CredentialsError::NotFound(
                "the credential chain has no providers".into(),
            ));
        };
        match chain.provide_credentials().await {
            Ok(creds) => {
                let provider = creds
                    .get_property::<AnsweredBy>()
                    .map(|a| a.0.to_string())
                    .unwrap_or_else(|| "unknown".into());
                Ok((creds, provider))
            }
            Err(err) => Err(self.classify(err)),
        }
    }

    /// Turn the chain's error into one that names each link and its reason.
    fn classify(&self, err: ProviderError) -> CredentialsError {
        if let ProviderError::CredentialsNotLoaded(_) = err {
            let attempts = err
                .source()
                .and_then(|s| s.downcast_ref::<ProviderChainError<ProviderError>>());
            return match attempts {
                Some(chain_err) => CredentialsError::NotFound(format!(
                    "tried {}",
                    chain_err
                        .attempts()
                        .iter()
                        .map(|a| format!("{} ({})", a.name(), reason(a.error())))
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
                None => {
                    CredentialsError::NotFound(format!("tried {}: {}", self.names(), reason(&err)))
                }
            };
        }
        // Hard failures come back from the link wrapped in `LinkFailed` so the link is named.
        match err.source().and_then(|s| s.downcast_ref::<LinkFailed>()) {
            Some(failed) => {
                let before: Vec<&str> = self
                    .link_names()
                    .take_while(|n| *n != failed.link.as_ref())
                    .collect();
                CredentialsError::ProviderFailed {
                    provider: failed.link.to_string(),
                    tried_before: if before.is_empty() {
                        "none".into()
                    } else {
                        before.join(", ")
                    },
                    reason: reason(&failed.source),
                }
            }
            None => CredentialsError::ProviderFailed {
                provider: self.names(),
                tried_before: "unknown".into(),
                reason: reason(&err),
            },
        }
    }

    fn names(&self) -> String {
        self.link_names().collect::<Vec<_>>().join(", ")
    }
}

/// Builds a [`CredentialChain`]; links are asked in the order they are added.
pub struct CredentialChainBuilder {
    links: Vec<(Cow<'static, str>, SharedCredentialsProvider)>,
    clock: Option<Clock>,
    sdk: Option<Sdk>,
    regions: Option<Regions>,
}

impl CredentialChainBuilder {
    /// Append a link. `name` is what errors and [`CredentialChain::credentials`] report.
    pub fn link(
        mut self,
        name: impl Into<Cow<'static, str>>,
        provider: impl ProvideCredentials + 'static,
    ) -> Self {
        self.links
            .push((name.into(), SharedCredentialsProvider::new(provider)));
        self
    }

    /// The clock the cache compares expiries against (default: the system clock).
    pub fn clock(mut self, clock: impl Fn() -> SystemTime + Send + Sync + 'static) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }

    /// The HTTP client STS calls for per-database roles use (default: a new one).
    pub fn sdk(mut self, sdk: Sdk) -> Self {
        self.sdk = Some(sdk);
        self
    }

    /// Where regions come from (default: environment and profile only, no IMDS).
    pub fn regions(mut self, regions: Regions) -> Self {
        self.regions = Some(regions);
        self
    }

    pub fn build(self) -> CredentialChain {
        let names = self.links.iter().map(|(n, _)| n.clone()).collect();
        let mut chain: Option<CredentialsProviderChain> = None;
        for (name, provider) in self.links {
            let link = Tagged {
                name: name.clone(),
                inner: provider,
            };
            chain = Some(match chain {
                None => CredentialsProviderChain::first_try(name, link),
                Some(c) => c.or_else(name, link),
            });
        }
        CredentialChain {
            inner: Arc::new(Inner {
                names,
                chain,
                cache: tokio::sync::Mutex::new(None),
                clock: self.clock.unwrap_or_else(|| Arc::new(SystemTime::now)),
                sdk: self.sdk.unwrap_or_default(),
                roles: AssumedRoles::default(),
                regions: self.regions.unwrap_or_else(Regions::without_imds),
                tokens: TokenCache::default(),
            }),
        }
    }
}

/// aws-config's shared-files provider, rebuilt for every load.
///
/// * Rebuilt per load: the provider parses the files once and, if that fails, reports the real
///   error once and "initialization error already taken" (a hard error) on every later call.
///   A daemon that refreshes every few minutes needs the real reason each time, a fall-through
///   to the next link when the profile is missing, and to see rotated keys in the files.
/// * `credential_source = Ec2InstanceMetadata` is served by our IMDS provider (hop-limit
///   diagnosis, static stability) and `EcsContainer` by the chain's own ECS provider, both
///   registered as aws-config custom sources; aws-config would otherwise build its own.
/// * STS (for `role_arn`) is reached through [`Sdk`]'s client, in the region of
///   [`Sdk::provider_config`].
///
/// It also replaces aws-config's bare "not enabled" (no files, or no keys in the profile) with a
/// message naming the profile and where it was looked for.
struct ProfileLink {
    profile: String,
    sdk: Sdk,
    sources: Sources,
    configure: Box<ProfileConfigure>,
}

/// The providers a profile's `credential_source` may name.
#[derive(Clone)]
struct Sources {
    imds: SharedCredentialsProvider,
    ecs: SharedCredentialsProvider,
}

type ProfileConfigure = dyn Fn(ProfileBuilder) -> ProfileBuilder + Send + Sync;
type ProfileBuilder = aws_config::profile::credentials::Builder;

impl ProfileLink {
    /// `profile` is only for messages; `configure` may point the builder at other files.
    fn new(
        profile: String,
        sdk: Sdk,
        sources: Sources,
        configure: impl Fn(ProfileBuilder) -> ProfileBuilder + Send + Sync + 'static,
    ) -> Self {
        ProfileLink {
            profile,
            sdk,
            sources,
            configure: Box::new(configure),
        }
    }

    async fn provider(&self) -> ProfileFileCredentialsProvider {
        let config = self.sdk.provider_config().await;
        (self.configure)(
            ProfileFileCredentialsProvider::builder()
                .configure(&config)
                .with_custom_provider("Ec2InstanceMetadata", self.sources.imds.clone())
                .with_custom_provider("EcsContainer", self.sources.ecs.clone()),
        )
        .build()
    }
}

impl fmt::Debug for ProfileLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProfileLink")
            .field("profile", &self.profile)
            .finish_non_exhaustive()
    }
}

impl ProvideCredentials for ProfileLink {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(async move {
            match self.provider().await.provide_credentials().await {
                Err(err @ ProviderError::CredentialsNotLoaded(_)) if err.source().is_none() => {
                    Err(ProviderError::not_loaded(format!(
                        "no credentials for profile `{}` in the shared config/credentials files \
                         (AWS_CONFIG_FILE, AWS_SHARED_CREDENTIALS_FILE; default ~/.aws/config, ~/.aws/credentials)",
                        self.profile
                    )))
                }
                other => other,
            }
        })
    }
}

/// aws-config's web identity provider, built per load so it sees the region of the moment.
/// Without `AWS_WEB_IDENTITY_TOKEN_FILE` / `AWS_ROLE_ARN` it answers "not loaded".
#[derive(Debug)]
struct WebIdentityLink {
    sdk: Sdk,
}

impl ProvideCredentials for WebIdentityLink {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(async move {
            let config = self.sdk.provider_config().await;
            WebIdentityTokenCredentialsProvider::builder()
                .configure(&config)
                .build()
                .provide_credentials()
                .await
        })
    }
}

/// Marks credentials with the link that produced them.
#[derive(Debug, Clone)]
struct AnsweredBy(Cow<'static, str>);

/// A hard (not "not loaded") failure of one link, so the chain's error can name it.
#[derive(Debug)]
struct LinkFailed {
    link: Cow<'static, str>,
    source: ProviderError,
}

impl fmt::Display for LinkFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "credential provider `{}` failed", self.link)
    }
}

impl StdError for LinkFailed {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&self.source)
    }
}

/// One link of the chain: tags what it returns with its name, and wraps hard errors so they
/// carry it. "Not loaded" passes through untouched so the chain moves on to the next link.
#[derive(Debug)]
struct Tagged {
    name: Cow<'static, str>,
    inner: SharedCredentialsProvider,
}

impl ProvideCredentials for Tagged {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(async move {
            match self.inner.provide_credentials().await {
                Ok(mut creds) => {
                    creds.set_property(AnsweredBy(self.name.clone()));
                    Ok(creds)
                }
                Err(err @ ProviderError::CredentialsNotLoaded(_)) => Err(err),
                Err(err) => Err(ProviderError::provider_error(LinkFailed {
                    link: self.name.clone(),
                    source: err,
                })),
            }
        })
    }
}

/// An error and its causes on one line. aws-config's messages name variables, files and
/// profiles, never credential values.
fn reason(err: &(dyn StdError + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        // Wrappers often repeat their cause verbatim; print it once.
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

    type Answer = Box<dyn FnMut() -> Result<Credentials, ProviderError> + Send>;

    /// A provider that counts calls and returns what it is told to.
    struct Scripted {
        calls: Arc<AtomicUsize>,
        answer: Mutex<Answer>,
    }

    impl fmt::Debug for Scripted {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("Scripted")
        }
    }

    impl Scripted {
        fn new(
            answer: impl FnMut() -> Result<Credentials, ProviderError> + Send + 'static,
        ) -> (Self, Arc<AtomicUsize>) {
            let calls = Arc::new(AtomicUsize::new(0));
            (
                Scripted {
                    calls: calls.clone(),
                    answer: Mutex::new(Box::new(answer)),
                },
                calls,
            )
        }
    }

    impl ProvideCredentials for Scripted {
        fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let result = match self.answer.lock() {
                Ok(mut answer) => answer(),
                Err(_) => Err(ProviderError::unhandled("poisoned")),
            };
            future::ProvideCredentials::ready(result)
        }
    }

    fn creds(expiry: Option<SystemTime>) -> Credentials {
        Credentials::new("AKIDTEST", SECRET, Some("session".into()), expiry, "test")
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    /// A settable clock for cache tests.
    fn clock() -> (
        Arc<Mutex<SystemTime>>,
        impl Fn() -> SystemTime + Send + Sync,
    ) {
        let now = Arc::new(Mutex::new(at(0)));
        let read = now.clone();
        (now, move || *read.lock().expect("clock lock"))
    }

    #[tokio::test]
    async fn first_link_with_credentials_answers_and_is_named() {
        let (empty, _) =
            Scripted::new(|| Err(ProviderError::not_loaded("AWS_ACCESS_KEY_ID not set")));
        let (full, _) = Scripted::new(|| Ok(creds(None)));
        let chain = CredentialChain::builder()
            .link("env", empty)
            .link("profile", full)
            .build();
        let (got, provider) = chain.credentials().await.expect("credentials");
        assert_eq!(provider, "profile");
        assert_eq!(got.access_key_id(), "AKIDTEST");
        assert_eq!(chain.link_names().collect::<Vec<_>>(), ["env", "profile"]);
    }

    #[tokio::test]
    async fn not_found_names_every_link_and_its_reason() {
        let (a, _) = Scripted::new(|| Err(ProviderError::not_loaded("AWS_ACCESS_KEY_ID not set")));
        let (b, _) = Scripted::new(|| Err(ProviderError::not_loaded("no profile file")));
        let chain = CredentialChain::builder()
            .link("env", a)
            .link("profile", b)
            .build();
        let err = chain.credentials().await.expect_err("no credentials");
        let msg = err.to_string();
        assert!(matches!(err, CredentialsError::NotFound(_)), "{msg}");
        assert!(
            msg.contains("env (") && msg.contains("AWS_ACCESS_KEY_ID not set"),
            "{msg}"
        );
        assert!(
            msg.contains("profile (") && msg.contains("no profile file"),
            "{msg}"
        );
    }

    #[tokio::test]
    async fn hard_failure_stops_the_chain_and_names_the_link() {
        let (a, _) = Scripted::new(|| Err(ProviderError::not_loaded("AWS_ACCESS_KEY_ID not set")));
        let (b, _) =
            Scripted::new(|| Err(ProviderError::invalid_configuration("profile `x` uses sso")));
        let (c, c_calls) = Scripted::new(|| Ok(creds(None)));
        let chain = CredentialChain::builder()
            .link("env", a)
            .link("profile", b)
            .link("imds", c)
            .build();
        let err = chain.credentials().await.expect_err("hard failure");
        match &err {
            CredentialsError::ProviderFailed {
                provider,
                tried_before,
                reason,
            } => {
                assert_eq!(provider, "profile");
                assert_eq!(tried_before, "env");
                assert!(reason.contains("profile `x` uses sso"), "{reason}");
            }
            other => panic!("expected ProviderFailed, got {other}"),
        }
        assert_eq!(c_calls.load(Ordering::SeqCst), 0, "imds must not be asked");
    }

    #[tokio::test]
    async fn empty_chain_is_an_error_not_a_panic() {
        let chain = CredentialChain::builder().build();
        assert!(matches!(
            chain.credentials().await,
            Err(CredentialsError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn static_credentials_are_cached_for_the_static_ttl() {
        let (p, calls) = Scripted::new(|| Ok(creds(None)));
        let (now, read) = clock();
        let chain = CredentialChain::builder()
            .link("env", p)
            .clock(read)
            .build();
        chain.credentials().await.expect("first");
        chain
            .clone()
            .credentials()
            .await
            .expect("cached, via a clone");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        *now.lock().expect("clock") = at(0) + STATIC_TTL;
        chain.credentials().await.expect("refreshed");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn expiring_credentials_are_refreshed_before_expiry() {
        let expiry = at(3600);
        let (p, calls) = Scripted::new(move || Ok(creds(Some(expiry))));
        let (now, read) = clock();
        let chain = CredentialChain::builder()
            .link("imds", p)
            .clock(read)
            .build();
        chain.credentials().await.expect("first");
        *now.lock().expect("clock") = expiry - REFRESH_BEFORE_EXPIRY - Duration::from_secs(1);
        chain.credentials().await.expect("still cached");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        *now.lock().expect("clock") = expiry - REFRESH_BEFORE_EXPIRY;
        chain.credentials().await.expect("refreshed");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn failed_refresh_keeps_unexpired_credentials_then_gives_up() {
        let expiry = at(3600);
        let mut first = true;
        let (p, _) = Scripted::new(move || {
            if std::mem::take(&mut first) {
                Ok(creds(Some(expiry)))
            } else {
                Err(ProviderError::not_loaded("imds unreachable"))
            }
        });
        let (now, read) = clock();
        let chain = CredentialChain::builder()
            .link("imds", p)
            .clock(read)
            .build();
        chain.credentials().await.expect("first");
        *now.lock().expect("clock") = expiry - Duration::from_secs(60);
        let (_, provider) = chain.credentials().await.expect("previous, still valid");
        assert_eq!(provider, "imds");
        *now.lock().expect("clock") = expiry;
        let err = chain
            .credentials()
            .await
            .expect_err("expired and no refresh");
        assert!(err.to_string().contains("imds unreachable"), "{err}");
    }

    /// A profile link reading only `path` as the shared credentials file, with `imds` as its
    /// `Ec2InstanceMetadata` source.
    fn profile_link_with(
        profile: &'static str,
        path: std::path::PathBuf,
        imds: impl ProvideCredentials + 'static,
    ) -> ProfileLink {
        let sources = Sources {
            imds: SharedCredentialsProvider::new(imds),
            ecs: SharedCredentialsProvider::new(Credentials::new("A", "B", None, None, "t")),
        };
        ProfileLink::new(
            profile.into(),
            Sdk::new(),
            sources,
            move |builder: ProfileBuilder| {
                #[allow(deprecated)]
                // the non-deprecated type lives in aws-runtime, not a dependency
                let files = aws_config::profile::profile_file::ProfileFiles::builder()
                    .with_file(
                        aws_config::profile::profile_file::ProfileFileKind::Credentials,
                        path.clone(),
                    )
                    .build();
                builder.profile_name(profile).profile_files(files)
            },
        )
    }

    fn profile_link(profile: &'static str, path: std::path::PathBuf) -> ProfileLink {
        let (imds, _) = Scripted::new(|| Err(ProviderError::not_loaded("no imds in unit tests")));
        profile_link_with(profile, path, imds)
    }

    #[tokio::test]
    async fn profile_link_rereads_the_files_and_reports_the_same_reason_every_time() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("credentials");
        std::fs::write(
            &path,
            "[other]\naws_access_key_id = A\naws_secret_access_key = B\n",
        )
        .expect("write");
        let chain = CredentialChain::from_provider("profile", profile_link("app", path.clone()));
        for attempt in 0..2 {
            let err = chain
                .credentials()
                .await
                .expect_err("profile `app` missing");
            assert!(
                matches!(&err, CredentialsError::NotFound(m) if m.contains("`app`")),
                "attempt {attempt}: {err}"
            );
        }
        std::fs::write(
            &path,
            format!("[app]\naws_access_key_id = AKIDONE\naws_secret_access_key = {SECRET}\n"),
        )
        .expect("write");
        let (creds, provider) = chain.credentials().await.expect("profile now present");
        assert_eq!(
            (creds.access_key_id(), provider.as_str()),
            ("AKIDONE", "profile")
        );
    }

    #[tokio::test]
    async fn profile_credential_source_imds_is_our_imds_provider() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("credentials");
        std::fs::write(
            &path,
            "[app]\ncredential_source = Ec2InstanceMetadata\nrole_arn = arn:aws:iam::123456789012:role/r\n",
        )
        .expect("write");
        let (imds, calls) =
            Scripted::new(|| Err(ProviderError::not_loaded("scripted imds: no role attached")));
        let chain = CredentialChain::from_provider("profile", profile_link_with("app", path, imds));
        let err = chain
            .credentials()
            .await
            .expect_err("the source has nothing");
        assert_eq!(calls.load(Ordering::SeqCst), 1, "our provider was asked");
        assert!(
            matches!(&err, CredentialsError::ProviderFailed { provider, reason, .. }
                if provider == "profile" && reason.contains("scripted imds: no role attached")),
            "{err}"
        );
    }

    #[tokio::test]
    async fn default_chain_has_the_sdk_order() {
        let chain = CredentialChain::default_chain();
        assert_eq!(
            chain.link_names().collect::<Vec<_>>(),
            ["env", "profile", "web_identity", "ecs", "imds"]
        );
    }
}
