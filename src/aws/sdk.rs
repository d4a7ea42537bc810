//! The plumbing bastion hands to aws-config's providers and to the STS client: one HTTPS client
//! (rustls on ring — aws-config's own default client would pull in aws-lc), the region STS is
//! called in, and timeouts.
//!
//! Endpoints are never chosen here: the SDK reads `AWS_ENDPOINT_URL_STS` / `AWS_ENDPOINT_URL`
//! and the profile's `services` section itself, so tests point it at moto the way operators
//! point it at a VPC endpoint.
//!
//! Must never log a credential: only the SDK's own (redacting) `Debug` of credentials is used.

use std::time::Duration;

use aws_config::environment::region::EnvironmentVariableRegionProvider;
use aws_config::identity::IdentityCache;
use aws_config::meta::region::RegionProviderChain;
use aws_config::profile::ProfileFileRegionProvider;
use aws_config::provider_config::ProviderConfig;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_credential_types::provider::ProvideCredentials;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use aws_smithy_runtime_api::client::http::SharedHttpClient;

/// STS is global; when neither the environment nor the profile names a region, its home region
/// (where the global endpoint `sts.amazonaws.com` lives) is used.
pub const FALLBACK_STS_REGION: &str = "us-east-1";

/// Bound on connecting to STS / the container credentials endpoint.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Bound on one attempt of an STS call (the SDK retries transient failures within its budget).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts of one STS call, the first included: throttling (`Throttling`,
/// `RequestLimitExceeded`, …) and 5xx answers are retried with the SDK's standard exponential
/// backoff with jitter (1 s base, 20 s cap), other errors are not retried.
pub const STS_MAX_ATTEMPTS: u32 = 3;

/// Cheap to clone: clones share the HTTP client and its connection pool.
#[derive(Clone, Debug)]
pub struct Sdk {
    http: SharedHttpClient,
}

impl Default for Sdk {
    fn default() -> Self {
        Self::new()
    }
}

impl Sdk {
    /// Build the HTTPS client. Trust roots are loaded by the client on first use (the system
    /// store), so this does no I/O.
    pub fn new() -> Self {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
            .build_https();
        Sdk { http }
    }

    pub fn http_client(&self) -> SharedHttpClient {
        self.http.clone()
    }

    /// What aws-config's providers are configured with: our HTTP client, timeouts, and the
    /// region from `AWS_REGION` / `AWS_DEFAULT_REGION` / the profile (never from IMDS: the
    /// chain asks IMDS only through its own `imds` link).
    pub async fn provider_config(&self) -> ProviderConfig {
        ProviderConfig::default()
            .with_http_client(self.http.clone())
            .with_timeout_config(timeouts())
            .with_region(Some(region().await))
    }

    /// An STS client signing with `credentials`, in `region` (resolved by
    /// [`crate::aws::region::Regions::for_sts`]). Endpoint overrides come from the environment
    /// and profile, as in every AWS SDK.
    pub async fn sts(
        &self,
        region: &str,
        credentials: impl ProvideCredentials + 'static,
    ) -> aws_sdk_sts::Client {
        aws_sdk_sts::Client::new(&self.service_config(region, credentials).await)
    }

    /// What a service client (STS, Secrets Manager, ElastiCache, MemoryDB) is built from:
    /// our HTTP client and timeouts, `region`, `credentials`; endpoint overrides from the
    /// environment and profile (`AWS_ENDPOINT_URL_<SERVICE>`), as in every AWS SDK.
    pub async fn service_config(
        &self,
        region: &str,
        credentials: impl ProvideCredentials + 'static,
    ) -> aws_config::SdkConfig {
        aws_config::defaults(BehaviorVersion::latest())
            .http_client(self.http.clone())
            .timeout_config(timeouts())
            .retry_config(RetryConfig::standard().with_max_attempts(STS_MAX_ATTEMPTS))
            .region(Region::new(region.to_string()))
            .credentials_provider(credentials)
            // The credentials come from bastion's own cached chain; a second cache would only
            // hide a refresh.
            .identity_cache(IdentityCache::no_cache())
            .load()
            .await
    }
}

fn timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .operation_attempt_timeout(ATTEMPT_TIMEOUT)
        .build()
}

/// `AWS_REGION` / `AWS_DEFAULT_REGION`, else the profile's `region`, else
/// [`FALLBACK_STS_REGION`].
async fn region() -> Region {
    RegionProviderChain::first_try(EnvironmentVariableRegionProvider::new())
        .or_else(ProfileFileRegionProvider::new())
        .or_else(Region::from_static(FALLBACK_STS_REGION))
        .region()
        .await
        .unwrap_or_else(|| Region::from_static(FALLBACK_STS_REGION))
}
