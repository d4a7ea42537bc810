//! [`ImdsClient`]: GETs against the instance metadata service with an IMDSv2 token, the
//! metadata the bastion needs (role, region, instance id, user-data, public keys), and
//! [`ImdsClient::probe`] for `bastion doctor`.
//!
//! The token is fetched once and shared: concurrent callers wait for one PUT, no lock is held
//! across it. A GET answered 401 gets a fresh token and is sent once more. After a failed PUT
//! (hop limit, unreachable) callers get the same error at once for a back-off window that
//! doubles up to a minute; then the next caller tries the PUT again, so fixing the hop limit
//! heals a running bastion.

use std::sync::Arc;

use bytes::Bytes;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, StatusCode};
use tokio::time::Instant;

use super::error::{ImdsError, ImdsErrorKind, ImdsStatus};
use super::flight::SingleFlight;
use super::http::{Reply, Transport};
use super::settings::{Env, ImdsSettings};
use super::token::{self, TokenState};
use crate::aws::imds::settings::ImdsConfig;

/// Lists the role attached to the instance; `<role>` under it is the credentials document.
pub const ROLE_PATH: &str = "/latest/meta-data/iam/security-credentials/";
pub const REGION_PATH: &str = "/latest/meta-data/placement/region";
pub const INSTANCE_ID_PATH: &str = "/latest/meta-data/instance-id";
pub const USER_DATA_PATH: &str = "/latest/user-data";
pub const PUBLIC_KEYS_PATH: &str = "/latest/meta-data/public-keys/";

/// An IMDS client. Cheap to clone; clones share the token.
#[derive(Clone)]
pub struct ImdsClient {
    inner: Arc<Inner>,
}

struct Inner {
    settings: ImdsSettings,
    transport: Transport,
    token: SingleFlight<TokenState>,
}

impl std::fmt::Debug for ImdsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImdsClient")
            .field("endpoint", &self.inner.settings.endpoint)
            .finish_non_exhaustive()
    }
}

/// An SSH public key from `public-keys/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    /// The key pair's name in EC2.
    pub name: String,
    /// The `openssh-key` line.
    pub openssh_key: String,
}

impl ImdsClient {
    /// The `[aws.imds]` section with the environment's overrides.
    pub fn from_config(config: &ImdsConfig, env: &dyn Env) -> Result<Self, ImdsError> {
        Self::new(ImdsSettings::resolve(config, env)?)
    }

    pub fn new(settings: ImdsSettings) -> Result<Self, ImdsError> {
        let transport = Transport::new(
            &settings.endpoint,
            settings.connect_timeout,
            settings.read_timeout,
        )
        .map_err(ImdsError::BadEndpoint)?;
        Ok(ImdsClient {
            inner: Arc::new(Inner {
                settings,
                transport,
                token: SingleFlight::new(),
            }),
        })
    }

    pub fn settings(&self) -> &ImdsSettings {
        &self.inner.settings
    }

    pub fn endpoint(&self) -> &str {
        &self.inner.settings.endpoint
    }

    /// The body of `path` as text.
    pub async fn get(&self, path: &str) -> Result<String, ImdsError> {
        match self.get_optional(path).await? {
            Some(body) => self.text(path, body),
            None => Err(self.status_error(path, StatusCode::NOT_FOUND, 1)),
        }
    }

    /// The body of `path`, or `None` when IMDS answers 404.
    pub async fn get_optional(&self, path: &str) -> Result<Option<Bytes>, ImdsError> {
        let reply = self.send_get(path).await?;
        match reply.0.status {
            StatusCode::OK => Ok(Some(reply.0.body)),
            StatusCode::NOT_FOUND => Ok(None),
            StatusCode::FORBIDDEN => Err(ImdsError::Disabled {
                endpoint: self.endpoint().into(),
                method: "GET",
                path: path.into(),
            }),
            status => Err(self.status_error(path, status, reply.1)),
        }
    }

    /// The name of the instance profile's role.
    pub async fn role_name(&self) -> Result<String, ImdsError> {
        let Some(body) = self.get_optional(ROLE_PATH).await? else {
            return Err(ImdsError::NoRole {
                endpoint: self.endpoint().into(),
                path: ROLE_PATH.into(),
            });
        };
        let text = self.text(ROLE_PATH, body)?;
        match text.lines().map(str::trim).find(|l| !l.is_empty()) {
            // The name becomes a path segment: refuse anything that could change the path.
            Some(role) if !role.contains(['/', '?', '#', '%']) && role != ".." => {
                Ok(role.to_string())
            }
            Some(_) => Err(self.malformed(ROLE_PATH, "the role name is not a path segment")),
            None => Err(ImdsError::NoRole {
                endpoint: self.endpoint().into(),
                path: ROLE_PATH.into(),
            }),
        }
    }

    /// `placement/region`, e.g. `us-east-1`.
    pub async fn region(&self) -> Result<String, ImdsError> {
        Ok(self.get(REGION_PATH).await?.trim().to_string())
    }

    /// `instance-id`, e.g. `i-0123456789abcdef0` (for audit records).
    pub async fn instance_id(&self) -> Result<String, ImdsError> {
        Ok(self.get(INSTANCE_ID_PATH).await?.trim().to_string())
    }

    /// The instance's user-data, `None` when it has none. May hold secrets: never log it.
    pub async fn user_data(&self) -> Result<Option<Bytes>, ImdsError> {
        self.get_optional(USER_DATA_PATH).await
    }

    /// The SSH public keys the instance was launched with (empty when none).
    pub async fn public_keys(&self) -> Result<Vec<PublicKey>, ImdsError> {
        let Some(list) = self.get_optional(PUBLIC_KEYS_PATH).await? else {
            return Ok(Vec::new());
        };
        let list = self.text(PUBLIC_KEYS_PATH, list)?;
        let mut keys = Vec::new();
        // Lines are `<index>=<key name>`.
        for line in list.lines().filter(|l| !l.trim().is_empty()) {
            let Some((index, name)) = line.trim().split_once('=') else {
                return Err(self.malformed(PUBLIC_KEYS_PATH, "a line is not <index>=<name>"));
            };
            let index: u32 = index
                .parse()
                .map_err(|_| self.malformed(PUBLIC_KEYS_PATH, "a key index is not a number"))?;
            let key = self
                .get(&format!("{PUBLIC_KEYS_PATH}{index}/openssh-key"))
                .await?;
            keys.push(PublicKey {
                name: name.to_string(),
                openssh_key: key.trim().to_string(),
            });
        }
        Ok(keys)
    }

    /// Check IMDS end to end for `bastion doctor`: a fresh token (not the cached one, nor a
    /// remembered failure), then the role. Never fails; the status says what was found.
    pub async fn probe(&self) -> ImdsStatus {
        let endpoint = self.endpoint().to_string();
        let status = |kind: ImdsErrorKind, role: Option<String>, message: String| ImdsStatus {
            kind,
            endpoint: endpoint.clone(),
            role,
            message,
        };
        if let Some(by) = self.inner.settings.turned_off_by {
            let e = ImdsError::TurnedOff { by };
            return status(e.kind(), None, e.to_string());
        }
        let fresh = token::fetch(&self.inner.transport, &self.inner.settings, None).await;
        // Whatever the probe learnt is the newest truth: let callers use it too.
        self.inner.token.invalidate_if(|_| true);
        let fresh_for_cache = fresh.clone();
        let _ = self
            .inner
            .token
            .get(|_| true, || async move { fresh_for_cache })
            .await;
        let (v1_note, fallback) = match &fresh {
            Ok(_) => (String::new(), false),
            Err(f) if self.falls_back(&f.error) => (
                format!(
                    " (allow_v1_fallback is on: the bastion uses IMDSv1 instead; {})",
                    f.error
                ),
                true,
            ),
            Err(f) => return status(f.error.kind(), None, f.error.to_string()),
        };
        match self.role_name().await {
            Ok(role) if fallback => status(
                ImdsErrorKind::V1Only,
                Some(role.clone()),
                format!("IMDSv2 token unavailable; role `{role}` read over IMDSv1{v1_note}"),
            ),
            Ok(role) => status(
                ImdsErrorKind::Ok,
                Some(role.clone()),
                format!("IMDSv2 token obtained from {endpoint}; role `{role}` is attached"),
            ),
            Err(e) => status(e.kind(), None, format!("{e}{v1_note}")),
        }
    }

    /// GET `path` with the token (one retry with a fresh token on 401), or token-less when the
    /// token cannot be had and the config allows IMDSv1.
    async fn send_get(&self, path: &str) -> Result<(Reply, u32), ImdsError> {
        if let Some(by) = self.inner.settings.turned_off_by {
            return Err(ImdsError::TurnedOff { by });
        }
        for attempt in 0..2 {
            let token = match self.token().await {
                Ok(token) => token,
                Err(error) if self.falls_back(&error) => {
                    tracing::warn!(
                        imds.endpoint = %self.endpoint(),
                        imds.path = path,
                        imds.kind = error.kind().as_str(),
                        "IMDSv2 token unavailable; using a token-less IMDSv1 GET because \
                         [aws.imds] allow_v1_fallback = true"
                    );
                    return self.send(path, &[]).await;
                }
                Err(error) => return Err(error),
            };
            let reply = self.send(path, &[token.header()?]).await?;
            if reply.0.status == StatusCode::UNAUTHORIZED && attempt == 0 {
                // Expired or revoked before we thought: drop exactly this token, fetch anew.
                self.inner
                    .token
                    .invalidate_if(|state| matches!(state, Ok(t) if t.value == token.value));
                continue;
            }
            return Ok(reply);
        }
        unreachable!("the loop returns on its second pass")
    }

    async fn send(
        &self,
        path: &str,
        headers: &[(HeaderName, HeaderValue)],
    ) -> Result<(Reply, u32), ImdsError> {
        let s = &self.inner.settings;
        self.inner
            .transport
            .send_retrying(Method::GET, path, headers, s.max_retries, s.retry_backoff)
            .await
            .map_err(|failure| ImdsError::Unreachable {
                endpoint: s.endpoint.clone(),
                method: "GET",
                path: path.into(),
                reason: failure.to_string(),
            })
    }

    /// The shared token: cached, or one PUT for all waiting callers, or the remembered failure.
    async fn token(&self) -> Result<token::Token, ImdsError> {
        let inner = &self.inner;
        let previous = match inner.token.peek() {
            Some(Err(failure)) => Some(failure.backoff),
            _ => None,
        };
        let state = inner
            .token
            .get(
                |state| token::usable(state, Instant::now()),
                || token::fetch(&inner.transport, &inner.settings, previous),
            )
            .await;
        state.map_err(|failure| failure.error)
    }

    /// Whether a token failure may be worked around with IMDSv1: only when allowed, and only
    /// when IMDS answered something (a disabled or unreachable IMDS will not answer a GET).
    fn falls_back(&self, error: &ImdsError) -> bool {
        self.inner.settings.allow_v1_fallback
            && matches!(
                error.kind(),
                ImdsErrorKind::V1Only | ImdsErrorKind::HopLimitExceeded | ImdsErrorKind::Unexpected
            )
    }

    fn text(&self, path: &str, body: Bytes) -> Result<String, ImdsError> {
        String::from_utf8(body.to_vec()).map_err(|_| self.malformed(path, "the reply is not UTF-8"))
    }

    fn malformed(&self, path: &str, what: &str) -> ImdsError {
        ImdsError::Malformed {
            endpoint: self.endpoint().into(),
            method: "GET",
            path: path.into(),
            what: what.into(),
        }
    }

    fn status_error(&self, path: &str, status: StatusCode, attempts: u32) -> ImdsError {
        ImdsError::Status {
            endpoint: self.endpoint().into(),
            method: "GET",
            path: path.into(),
            status: status.as_u16(),
            attempts,
        }
    }
}
