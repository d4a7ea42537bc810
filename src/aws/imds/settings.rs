//! The IMDS client's settings: the `[aws.imds]` config section (its shape is defined here; the
//! config file embeds it) with the environment's overrides applied, resolved once when the
//! client is built.
//!
//! The environment is read through [`Env`], so tests pass a map and nothing below this module
//! looks at the process environment.

use std::collections::HashMap;
use std::time::Duration;

use hyper::Uri;

use super::error::ImdsError;
use serde::{Deserialize, Deserializer};

/// Default IMDSv2 token lifetime asked for (the maximum IMDS grants).
pub const DEFAULT_IMDS_TOKEN_TTL: Duration = Duration::from_secs(21_600);
/// Default bound on connecting to IMDS, and separately on waiting for its reply.
pub const DEFAULT_IMDS_TIMEOUT: Duration = Duration::from_secs(1);

/// `[aws.imds]`: the instance metadata service. Every key is optional; the environment
/// (`AWS_EC2_METADATA_SERVICE_ENDPOINT`, `..._ENDPOINT_MODE`, `AWS_EC2_METADATA_DISABLED`)
/// overrides `endpoint`, `endpoint_mode` and `disabled`, as in the AWS SDKs.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImdsConfig {
    /// Full base URL, e.g. `http://169.254.169.254`; wins over `endpoint_mode`.
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub endpoint_mode: Option<ImdsEndpointMode>,
    /// Lifetime asked for in `X-aws-ec2-metadata-token-ttl-seconds` (1s to 6h).
    #[serde(default = "default_imds_token_ttl", deserialize_with = "de_duration")]
    pub token_ttl: Duration,
    /// Use token-less IMDSv1 GETs when the IMDSv2 token cannot be had. Off unless set; each
    /// use logs a warning.
    #[serde(default)]
    pub allow_v1_fallback: bool,
    #[serde(default = "default_imds_timeout", deserialize_with = "de_duration")]
    pub connect_timeout: Duration,
    #[serde(default = "default_imds_timeout", deserialize_with = "de_duration")]
    pub read_timeout: Duration,
    /// Never ask IMDS (as `AWS_EC2_METADATA_DISABLED=true`).
    #[serde(default)]
    pub disabled: bool,
}

impl Default for ImdsConfig {
    fn default() -> Self {
        ImdsConfig {
            endpoint: None,
            endpoint_mode: None,
            token_ttl: DEFAULT_IMDS_TOKEN_TTL,
            allow_v1_fallback: false,
            connect_timeout: DEFAULT_IMDS_TIMEOUT,
            read_timeout: DEFAULT_IMDS_TIMEOUT,
            disabled: false,
        }
    }
}

fn default_imds_token_ttl() -> Duration {
    DEFAULT_IMDS_TOKEN_TTL
}
fn default_imds_timeout() -> Duration {
    DEFAULT_IMDS_TIMEOUT
}

/// Which of IMDS' two well-known addresses to use when no endpoint is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum ImdsEndpointMode {
    /// `http://169.254.169.254`
    #[default]
    #[serde(rename = "IPv4", alias = "ipv4")]
    Ipv4,
    /// `http://[fd00:ec2::254]`
    #[serde(rename = "IPv6", alias = "ipv6")]
    Ipv6,
}

impl std::str::FromStr for ImdsEndpointMode {
    type Err = String;
    /// The spelling of `AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE` (case-insensitive).
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "ipv4" => Ok(ImdsEndpointMode::Ipv4),
            "ipv6" => Ok(ImdsEndpointMode::Ipv6),
            _ => Err(format!("'{s}' is not IPv4 or IPv6")),
        }
    }
}

/// A humantime duration (`"1s"`, `"6h"`), as the rest of the config spells them.
fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map_err(|e| serde::de::Error::custom(format!("'{s}': {e}")))
}

/// `AWS_EC2_METADATA_SERVICE_ENDPOINT`: a full base URL, overriding the config's `endpoint`.
pub const ENV_ENDPOINT: &str = "AWS_EC2_METADATA_SERVICE_ENDPOINT";
/// `AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE`: `IPv4` or `IPv6`.
pub const ENV_ENDPOINT_MODE: &str = "AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE";
/// `AWS_EC2_METADATA_DISABLED=true` turns IMDS off.
pub const ENV_DISABLED: &str = "AWS_EC2_METADATA_DISABLED";

/// The IPv4 endpoint, the default.
pub const ENDPOINT_IPV4: &str = "http://169.254.169.254";
/// The IPv6 endpoint (Nitro instances with IPv6 IMDS enabled).
pub const ENDPOINT_IPV6: &str = "http://[fd00:ec2::254]";

/// Where environment variables come from.
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment (for `main` and the default credential chain only).
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Env for HashMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

impl Env for HashMap<&str, &str> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).map(|v| v.to_string())
    }
}

/// Resolved settings of an [`super::ImdsClient`].
#[derive(Debug, Clone)]
pub struct ImdsSettings {
    /// `scheme://host[:port]`, no trailing slash.
    pub endpoint: String,
    /// Why IMDS is off, if it is (names the variable or key that said so).
    pub turned_off_by: Option<&'static str>,
    pub token_ttl: Duration,
    pub allow_v1_fallback: bool,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    /// Retries after a 5xx/429 (so `max_retries + 1` attempts), with doubling back-off.
    pub max_retries: u32,
    pub retry_backoff: Duration,
    /// After a token failure (hop limit, unreachable), callers get the remembered error at once
    /// for this long, then one caller retries the PUT; doubles per failure up to the max.
    pub failure_backoff: Duration,
    pub failure_backoff_max: Duration,
}

impl ImdsSettings {
    /// Config values, with the environment's overrides (the environment wins, as in the SDKs).
    pub fn resolve(config: &ImdsConfig, env: &dyn Env) -> Result<Self, ImdsError> {
        let mode = match env.var(ENV_ENDPOINT_MODE).filter(|v| !v.is_empty()) {
            Some(v) => v
                .parse::<ImdsEndpointMode>()
                .map_err(|e| ImdsError::BadEndpoint(format!("{ENV_ENDPOINT_MODE}: {e}")))?,
            None => config.endpoint_mode.unwrap_or_default(),
        };
        let (endpoint, origin) = match env.var(ENV_ENDPOINT).filter(|v| !v.is_empty()) {
            Some(e) => (e, ENV_ENDPOINT),
            None => match &config.endpoint {
                Some(e) => (e.clone(), "[aws.imds] endpoint"),
                None => match mode {
                    ImdsEndpointMode::Ipv4 => (ENDPOINT_IPV4.to_string(), "default"),
                    ImdsEndpointMode::Ipv6 => (ENDPOINT_IPV6.to_string(), "default"),
                },
            },
        };
        let endpoint = normalize_endpoint(&endpoint)
            .map_err(|e| ImdsError::BadEndpoint(format!("{origin}: {e}")))?;
        let turned_off_by = if env
            .var(ENV_DISABLED)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
        {
            Some("AWS_EC2_METADATA_DISABLED=true")
        } else if config.disabled {
            Some("[aws.imds] disabled = true")
        } else {
            None
        };
        Ok(ImdsSettings {
            endpoint,
            turned_off_by,
            token_ttl: config.token_ttl,
            allow_v1_fallback: config.allow_v1_fallback,
            connect_timeout: config.connect_timeout,
            read_timeout: config.read_timeout,
            max_retries: 3,
            retry_backoff: Duration::from_millis(100),
            failure_backoff: Duration::from_secs(5),
            failure_backoff_max: Duration::from_secs(60),
        })
    }

    /// Defaults plus `endpoint` (tests, and callers that already know where IMDS is).
    pub fn for_endpoint(endpoint: &str) -> Result<Self, ImdsError> {
        let config = ImdsConfig {
            endpoint: Some(endpoint.to_string()),
            ..ImdsConfig::default()
        };
        Self::resolve(&config, &HashMap::<String, String>::new())
    }
}

/// `http://host[:port][/]` → `http://host[:port]`. Only plain HTTP: IMDS has no TLS.
fn normalize_endpoint(raw: &str) -> Result<String, String> {
    let uri: Uri = raw
        .parse()
        .map_err(|e| format!("'{raw}' is not a URL: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!(
            "'{raw}' must start with http:// (IMDS speaks plain HTTP)"
        ));
    }
    let Some(authority) = uri.authority() else {
        return Err(format!("'{raw}' has no host"));
    };
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(format!("'{raw}' must be a base URL without a path"));
    }
    Ok(format!("http://{authority}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&'static str, &'static str)]) -> HashMap<&'static str, &'static str> {
        pairs.iter().copied().collect()
    }

    #[test]
    fn defaults_to_the_ipv4_endpoint() {
        let s = ImdsSettings::resolve(&ImdsConfig::default(), &env(&[])).unwrap();
        assert_eq!(s.endpoint, ENDPOINT_IPV4);
        assert_eq!(s.token_ttl, Duration::from_secs(21_600));
        assert_eq!(s.read_timeout, Duration::from_secs(1));
        assert!(s.turned_off_by.is_none() && !s.allow_v1_fallback);
    }

    #[test]
    fn mode_and_endpoint_from_config_and_environment() {
        let config = ImdsConfig {
            endpoint_mode: Some(ImdsEndpointMode::Ipv6),
            ..ImdsConfig::default()
        };
        let s = ImdsSettings::resolve(&config, &env(&[])).unwrap();
        assert_eq!(s.endpoint, ENDPOINT_IPV6);
        let s = ImdsSettings::resolve(&config, &env(&[(ENV_ENDPOINT_MODE, "ipv4")])).unwrap();
        assert_eq!(s.endpoint, ENDPOINT_IPV4);
        let s = ImdsSettings::resolve(&config, &env(&[(ENV_ENDPOINT, "http://127.0.0.1:8111/")]))
            .unwrap();
        assert_eq!(s.endpoint, "http://127.0.0.1:8111");
    }

    #[test]
    fn disabled_by_the_environment_or_the_config() {
        let s =
            ImdsSettings::resolve(&ImdsConfig::default(), &env(&[(ENV_DISABLED, "TRUE")])).unwrap();
        assert!(s.turned_off_by.unwrap().contains(ENV_DISABLED));
        let s = ImdsSettings::resolve(&ImdsConfig::default(), &env(&[(ENV_DISABLED, "false")]))
            .unwrap();
        assert!(s.turned_off_by.is_none());
    }

    #[test]
    fn bad_endpoints_name_their_origin() {
        let e = ImdsSettings::resolve(
            &ImdsConfig::default(),
            &env(&[(ENV_ENDPOINT, "https://169.254.169.254")]),
        )
        .unwrap_err();
        assert!(e.to_string().contains(ENV_ENDPOINT), "{e}");
        let e = ImdsSettings::resolve(&ImdsConfig::default(), &env(&[(ENV_ENDPOINT_MODE, "v5")]))
            .unwrap_err();
        assert!(e.to_string().contains(ENV_ENDPOINT_MODE), "{e}");
    }
}
