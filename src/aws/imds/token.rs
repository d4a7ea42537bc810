//! The IMDSv2 session token: `PUT /latest/api/token`, and what a failed PUT means.
//!
//! The token is a [`Secret`]; it is sent only as the `X-aws-ec2-metadata-token` header.
//! A PUT that connects but gets no reply is probed with a token-less GET to tell the hop limit
//! (GET answered 401) from IMDSv1-only (GET answered 200) and from an unreachable service.

use std::time::Duration;

use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, StatusCode};
use tokio::time::Instant;

use super::error::ImdsError;
use super::http::{Failure, Transport};
use super::settings::ImdsSettings;
use crate::secret::Secret;

pub(crate) const TOKEN_PATH: &str = "/latest/api/token";
pub(crate) const PROBE_PATH: &str = "/latest/meta-data/";
pub(crate) const TTL_HEADER: &str = "x-aws-ec2-metadata-token-ttl-seconds";
pub(crate) const TOKEN_HEADER: &str = "x-aws-ec2-metadata-token";

/// A token is refreshed this long before IMDS would expire it (or at half its life if shorter).
pub const TOKEN_REFRESH_MARGIN: Duration = Duration::from_secs(120);

/// A token and when to stop using it.
#[derive(Clone)]
pub(crate) struct Token {
    pub(crate) value: Secret,
    pub(crate) refresh_at: Instant,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("value", &self.value)
            .field("refresh_at", &self.refresh_at)
            .finish()
    }
}

impl Token {
    /// The header that carries it on a GET (marked sensitive: hyper keeps it out of Debug).
    pub(crate) fn header(&self) -> Result<(HeaderName, HeaderValue), ImdsError> {
        let mut value = HeaderValue::from_str(self.value.expose())
            .map_err(|_| ImdsError::BadEndpoint("token is not a valid header value".into()))?;
        value.set_sensitive(true);
        Ok((HeaderName::from_static(TOKEN_HEADER), value))
    }
}

/// A failed token fetch, remembered so callers within `retry_at` get it at once instead of
/// each waiting out another timeout.
#[derive(Debug, Clone)]
pub(crate) struct TokenFailure {
    pub(crate) error: ImdsError,
    pub(crate) retry_at: Instant,
    pub(crate) backoff: Duration,
}

pub(crate) type TokenState = Result<Token, TokenFailure>;

/// Whether a remembered state can still be used at `now`.
pub(crate) fn usable(state: &TokenState, now: Instant) -> bool {
    match state {
        Ok(token) => now < token.refresh_at,
        Err(failure) => now < failure.retry_at,
    }
}

/// PUT for a token; on failure remember it for a back-off that doubles after `previous`.
pub(crate) async fn fetch(
    transport: &Transport,
    settings: &ImdsSettings,
    previous: Option<Duration>,
) -> TokenState {
    put(transport, settings).await.map_err(|error| {
        let backoff = match previous {
            Some(b) => b.saturating_mul(2).min(settings.failure_backoff_max),
            None => settings.failure_backoff,
        };
        tracing::warn!(
            imds.endpoint = %settings.endpoint,
            imds.kind = error.kind().as_str(),
            retry_in = ?backoff,
            "IMDSv2 token request failed: {error}"
        );
        TokenFailure {
            error,
            retry_at: Instant::now() + backoff,
            backoff,
        }
    })
}

/// One token request (with 5xx/429 retries) and the classification of its failure.
pub(crate) async fn put(
    transport: &Transport,
    settings: &ImdsSettings,
) -> Result<Token, ImdsError> {
    let endpoint = &settings.endpoint;
    let ttl = settings.token_ttl.as_secs().max(1);
    let headers = [(HeaderName::from_static(TTL_HEADER), HeaderValue::from(ttl))];
    let sent = transport
        .send_retrying(
            Method::PUT,
            TOKEN_PATH,
            &headers,
            settings.max_retries,
            settings.retry_backoff,
        )
        .await;
    let (reply, attempts) = match sent {
        Ok(r) => r,
        Err(Failure::NoReply) => return Err(no_reply(transport, settings).await),
        Err(failure) => {
            return Err(ImdsError::Unreachable {
                endpoint: endpoint.clone(),
                method: "PUT",
                path: TOKEN_PATH.into(),
                reason: failure.to_string(),
            })
        }
    };
    match reply.status {
        StatusCode::OK => {}
        StatusCode::FORBIDDEN => {
            return Err(ImdsError::Disabled {
                endpoint: endpoint.clone(),
                method: "PUT",
                path: TOKEN_PATH.into(),
            })
        }
        status => {
            return Err(ImdsError::Status {
                endpoint: endpoint.clone(),
                method: "PUT",
                path: TOKEN_PATH.into(),
                status: status.as_u16(),
                attempts,
            })
        }
    }
    let malformed = |what: &str| ImdsError::Malformed {
        endpoint: endpoint.clone(),
        method: "PUT",
        path: TOKEN_PATH.into(),
        what: what.into(),
    };
    let granted = reply
        .headers
        .get(TTL_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|secs| *secs > 0)
        .ok_or_else(|| malformed("no valid X-aws-ec2-metadata-token-ttl-seconds header"))?;
    let value = std::str::from_utf8(&reply.body)
        .map(str::trim)
        .ok()
        .filter(|t| !t.is_empty() && HeaderValue::from_str(t).is_ok())
        .ok_or_else(|| malformed("the token is empty or not a header value"))?;
    let life = Duration::from_secs(granted);
    Ok(Token {
        value: Secret::new(value),
        refresh_at: Instant::now() + life - TOKEN_REFRESH_MARGIN.min(life / 2),
    })
}

/// The PUT connected but no reply came: ask a token-less GET why.
async fn no_reply(transport: &Transport, settings: &ImdsSettings) -> ImdsError {
    let endpoint = settings.endpoint.clone();
    match transport.send(Method::GET, PROBE_PATH, &[]).await {
        Ok(reply) => match reply.status {
            StatusCode::UNAUTHORIZED => ImdsError::HopLimitExceeded {
                endpoint,
                read_timeout: transport.read_timeout,
            },
            StatusCode::OK => ImdsError::V1Only {
                endpoint,
                reason: format!("no reply within {:?}", transport.read_timeout),
            },
            StatusCode::FORBIDDEN => ImdsError::Disabled {
                endpoint,
                method: "GET",
                path: PROBE_PATH.into(),
            },
            status => ImdsError::Unreachable {
                endpoint,
                method: "PUT",
                path: TOKEN_PATH.into(),
                reason: format!(
                    "no reply within {:?}; a token-less GET {PROBE_PATH} answered {}",
                    transport.read_timeout,
                    status.as_u16()
                ),
            },
        },
        Err(probe) => ImdsError::Unreachable {
            endpoint,
            method: "PUT",
            path: TOKEN_PATH.into(),
            reason: format!(
                "no reply within {:?}; a token-less GET {PROBE_PATH} got none either ({probe})",
                transport.read_timeout
            ),
        },
    }
}
