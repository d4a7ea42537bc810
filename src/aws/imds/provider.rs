//! [`ImdsCredentialsProvider`]: the instance profile's credentials, as the `imds` link of the
//! credential chain.
//!
//! Role name, then the credentials document; cached until [`REFRESH_BEFORE_EXPIRY`] before
//! `Expiration`, and refreshed by one fetch that every waiting caller shares (no lock held
//! across it). **Static stability:** when a refresh fails, unexpired credentials keep being
//! used; expired ones are extended by 5–15 minutes (randomized) with a warning, so an IMDS
//! outage does not cut off every new session. Never logs or prints a credential.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_credential_types::provider::error::CredentialsError as ProviderError;
use aws_credential_types::provider::{future, ProvideCredentials};
use aws_credential_types::Credentials;
use serde::Deserialize;
use zeroize::Zeroizing;

use super::client::{ImdsClient, ROLE_PATH};
use super::error::{ImdsError, ImdsErrorKind};
use super::flight::SingleFlight;

/// Credentials are refreshed this long before their `Expiration`.
pub const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(5 * 60);
/// Expired credentials kept through an outage are extended by a random time in this range.
pub const STATIC_STABILITY_EXTENSION: (Duration, Duration) =
    (Duration::from_secs(5 * 60), Duration::from_secs(15 * 60));
/// After a failed refresh that kept old credentials, the next attempt waits this long.
const RETRY_AFTER_FAILED_REFRESH: Duration = Duration::from_secs(15);

type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// Credentials from the instance profile via IMDS. Cheap to clone; clones share the cache.
#[derive(Clone)]
pub struct ImdsCredentialsProvider {
    inner: Arc<Inner>,
}

struct Inner {
    /// `Err` when the settings were unusable: every call reports it.
    client: Result<ImdsClient, ImdsError>,
    cache: SingleFlight<Loaded>,
    /// The last credentials handed out, for static stability.
    last: Mutex<Option<Credentials>>,
    clock: Clock,
}

/// One fetch's outcome and when to fetch again.
#[derive(Clone)]
struct Loaded {
    result: Result<Credentials, ImdsError>,
    refresh_at: SystemTime,
}

impl std::fmt::Debug for ImdsCredentialsProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImdsCredentialsProvider")
            .field("client", &self.inner.client)
            .finish_non_exhaustive()
    }
}

impl ImdsCredentialsProvider {
    pub fn new(client: ImdsClient) -> Self {
        Self::from_result(Ok(client))
    }

    /// A provider over a client that could not be built (bad endpoint): it reports why on
    /// every call, so the credential chain can still be built.
    pub fn from_result(client: Result<ImdsClient, ImdsError>) -> Self {
        ImdsCredentialsProvider {
            inner: Arc::new(Inner {
                client,
                cache: SingleFlight::new(),
                last: Mutex::new(None),
                clock: Arc::new(SystemTime::now),
            }),
        }
    }

    /// The clock expiries are compared against (default: the system clock). Tests only.
    pub fn with_clock(self, clock: impl Fn() -> SystemTime + Send + Sync + 'static) -> Self {
        let inner = Arc::try_unwrap(self.inner).unwrap_or_else(|shared| Inner {
            client: shared.client.clone(),
            cache: SingleFlight::new(),
            last: Mutex::new(None),
            clock: shared.clock.clone(),
        });
        ImdsCredentialsProvider {
            inner: Arc::new(Inner {
                clock: Arc::new(clock),
                ..inner
            }),
        }
    }

    pub fn client(&self) -> Result<&ImdsClient, &ImdsError> {
        self.inner.client.as_ref()
    }

    /// Current credentials: cached, refreshed by one shared fetch, or kept through an outage.
    pub async fn credentials(&self) -> Result<Credentials, ImdsError> {
        let inner = &self.inner;
        let loaded = inner
            .cache
            .get(
                |loaded| (inner.clock)() < loaded.refresh_at,
                || self.refresh(),
            )
            .await;
        loaded.result
    }

    async fn refresh(&self) -> Loaded {
        let inner = &self.inner;
        let fetched = match &inner.client {
            Ok(client) => fetch(client).await,
            Err(e) => Err(e.clone()),
        };
        let now = (inner.clock)();
        let last = inner
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let loaded = match (fetched, last) {
            (Ok(creds), _) => {
                let refresh_at = match creds.expiry() {
                    Some(expiry) => expiry
                        .checked_sub(REFRESH_BEFORE_EXPIRY)
                        .unwrap_or(SystemTime::UNIX_EPOCH),
                    None => now + REFRESH_BEFORE_EXPIRY,
                };
                Loaded {
                    result: Ok(creds),
                    refresh_at,
                }
            }
            (Err(error), Some(last)) if last.expiry().is_some_and(|e| now < e) => {
                tracing::warn!(
                    imds.kind = error.kind().as_str(),
                    "IMDS credential refresh failed; the current credentials are still valid and \
                     stay in use: {error}"
                );
                let expiry = last.expiry().unwrap_or(now);
                Loaded {
                    result: Ok(last),
                    refresh_at: expiry.min(now + RETRY_AFTER_FAILED_REFRESH),
                }
            }
            (Err(error), Some(last)) => {
                let (lo, hi) = STATIC_STABILITY_EXTENSION;
                let extra = lo + Duration::from_secs(fastrand::u64(0..=(hi - lo).as_secs()));
                let until = now + extra;
                tracing::warn!(
                    imds.kind = error.kind().as_str(),
                    extended_by = ?extra,
                    "IMDS credential refresh failed and the credentials have expired; using the \
                     last credentials for {}s more (static stability): {error}",
                    extra.as_secs()
                );
                let extended = Credentials::new(
                    last.access_key_id(),
                    last.secret_access_key(),
                    last.session_token().map(str::to_string),
                    Some(until),
                    "imds-static-stability",
                );
                Loaded {
                    result: Ok(extended),
                    refresh_at: now + RETRY_AFTER_FAILED_REFRESH,
                }
            }
            (Err(error), None) => Loaded {
                result: Err(error),
                // Errors are not cached: the client's own back-off keeps retries cheap.
                refresh_at: SystemTime::UNIX_EPOCH,
            },
        };
        if let Ok(creds) = &loaded.result {
            *inner
                .last
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(creds.clone());
        }
        loaded
    }
}

/// Role name, then its credentials document.
async fn fetch(client: &ImdsClient) -> Result<Credentials, ImdsError> {
    let role = client.role_name().await?;
    let path = format!("{ROLE_PATH}{role}");
    let body = match client.get_optional(&path).await? {
        Some(body) => body,
        // The role was detached between the two requests.
        None => {
            return Err(ImdsError::NoRole {
                endpoint: client.endpoint().into(),
                path,
            })
        }
    };
    parse(client.endpoint(), &role, &path, &body)
}

/// The credentials document. Fields are parsed straight into zeroizing strings; errors say
/// which field is wrong, never what it held.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Document {
    code: String,
    #[serde(default, deserialize_with = "zeroizing")]
    access_key_id: Option<Zeroizing<String>>,
    #[serde(default, deserialize_with = "zeroizing")]
    secret_access_key: Option<Zeroizing<String>>,
    #[serde(default, deserialize_with = "zeroizing")]
    token: Option<Zeroizing<String>>,
    expiration: Option<String>,
}

fn zeroizing<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Zeroizing<String>>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.map(Zeroizing::new))
}

/// Fuzz entry point: any body read as an IMDS credentials document gives credentials or an
/// error — never a panic — and an error never carries the secret key it may have held.
pub fn fuzz_credentials(body: &[u8]) {
    if let Err(e) = parse("http://169.254.169.254", "role", "/path", body) {
        let message = e.to_string();
        if let Ok(doc) = serde_json::from_slice::<serde_json::Value>(body) {
            let code = doc.get("Code").and_then(|v| v.as_str()).unwrap_or_default();
            if let Some(secret) = doc.get("SecretAccessKey").and_then(|v| v.as_str()) {
                // The error may quote the document's Code (by design); a "secret" that is part
                // of it, or too short to mean anything, proves nothing.
                if secret.len() >= 8 && !code.contains(secret) {
                    assert!(
                        !message.contains(secret),
                        "an IMDS error quotes the secret key"
                    );
                }
            }
        }
    }
}

fn parse(endpoint: &str, role: &str, path: &str, body: &[u8]) -> Result<Credentials, ImdsError> {
    let malformed = |what: String| ImdsError::Malformed {
        endpoint: endpoint.into(),
        method: "GET",
        path: path.into(),
        what,
    };
    // serde_json's error names line and column only, not the content.
    let doc: Document = serde_json::from_slice(body)
        .map_err(|e| malformed(format!("not a credentials document ({})", e.classify_str())))?;
    if doc.code != "Success" {
        return Err(ImdsError::CredentialsCode {
            endpoint: endpoint.into(),
            role: role.into(),
            code: doc.code.chars().take(64).collect(),
        });
    }
    let (Some(akid), Some(secret)) = (doc.access_key_id, doc.secret_access_key) else {
        return Err(malformed(
            "AccessKeyId or SecretAccessKey is missing".into(),
        ));
    };
    let expiry = match doc.expiration.as_deref() {
        Some(text) => Some(
            parse_expiration(text)
                .ok_or_else(|| malformed("Expiration is not an RFC 3339 time".into()))?,
        ),
        None => None,
    };
    Ok(Credentials::new(
        akid.as_str(),
        secret.as_str(),
        doc.token.map(|t| t.as_str().to_string()),
        expiry,
        "imds",
    ))
}

fn parse_expiration(text: &str) -> Option<SystemTime> {
    let t =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    Some(SystemTime::from(t))
}

trait ClassifyStr {
    fn classify_str(&self) -> &'static str;
}

impl ClassifyStr for serde_json::Error {
    fn classify_str(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "I/O",
            serde_json::error::Category::Syntax => "not JSON",
            serde_json::error::Category::Data => "a field is missing or has the wrong type",
            serde_json::error::Category::Eof => "truncated",
        }
    }
}

impl ProvideCredentials for ImdsCredentialsProvider {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(async move {
            self.credentials()
                .await
                .map_err(|error| match error.kind() {
                    // Normal off EC2, or on an instance without a role: let the chain say
                    // "no credentials" and list every link's reason.
                    ImdsErrorKind::Unreachable
                    | ImdsErrorKind::Disabled
                    | ImdsErrorKind::NoRole => ProviderError::not_loaded(error),
                    // IMDS is there but misconfigured: stop with the fix.
                    _ => ProviderError::provider_error(error),
                })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

    #[test]
    fn parses_a_document_and_keeps_secrets_out_of_errors() {
        let body = format!(
            r#"{{"Code":"Success","LastUpdated":"2024-01-01T00:00:00Z","Type":"AWS-HMAC",
               "AccessKeyId":"ASIAEXAMPLE","SecretAccessKey":"{SECRET}","Token":"tok",
               "Expiration":"2030-01-01T00:00:00Z"}}"#
        );
        let c = parse("http://e", "r", "/p", body.as_bytes()).unwrap();
        assert_eq!(c.access_key_id(), "ASIAEXAMPLE");
        assert_eq!(c.session_token(), Some("tok"));
        assert!(!format!("{c:?}").contains(SECRET));

        let bad = body.replace("2030-01-01T00:00:00Z", "tomorrow");
        let e = parse("http://e", "r", "/p", bad.as_bytes()).unwrap_err();
        assert!(e.to_string().contains("Expiration"), "{e}");
        assert!(!e.to_string().contains(SECRET));

        let bad = body.replace("\"Success\"", "\"AssumeRoleUnauthorizedAccess\"");
        let e = parse("http://e", "r", "/p", bad.as_bytes()).unwrap_err();
        assert!(
            e.to_string().contains("AssumeRoleUnauthorizedAccess"),
            "{e}"
        );

        let truncated = &body.as_bytes()[..body.len() / 2];
        let e = parse("http://e", "r", "/p", truncated).unwrap_err();
        assert!(!e.to_string().contains(SECRET), "{e}");
    }
}
