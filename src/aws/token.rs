//! ElastiCache / MemoryDB IAM auth tokens: a SigV4-presigned `connect` URL without its scheme.
//!
//! The token is built the way AWS documents for ElastiCache IAM authentication (and MemoryDB,
//! which uses the same scheme under its own signing name): presign
//! `GET http://{target}/?Action=connect&User={db_user}` — plus `&ResourceType=ServerlessCache`
//! for a serverless cache, inside the signed query — with the signature in the query string,
//! `X-Amz-Expires=900`, signed header `host`, and `X-Amz-Security-Token` when the credentials
//! carry a session token; then drop the `http://`. The client sends it as the AUTH password.
//!
//! Signing is aws-sigv4's; this module only builds the request and serialises the result. It
//! must never log a token or put one into an error: tokens leave as [`Secret`]s. (aws-sigv4 itself
//! logs the canonical request — session token included — at `trace` level, so never enable
//! `aws_sigv4=trace` in production.)

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    sign, SignableBody, SignableRequest, SignatureLocation, SigningSettings,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use serde::{Deserialize, Serialize};

use crate::secret::Secret;

/// The service an IAM auth token is for (its SigV4 signing name and `Connect` action).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum IamService {
    #[value(name = "elasticache")]
    Elasticache,
    #[value(name = "memorydb")]
    Memorydb,
}

impl IamService {
    /// The SigV4 signing name.
    pub fn signing_name(self) -> &'static str {
        match self {
            IamService::Elasticache => "elasticache",
            IamService::Memorydb => "memorydb",
        }
    }
    /// The IAM action a principal needs to connect.
    pub fn connect_action(self) -> &'static str {
        match self {
            IamService::Elasticache => "elasticache:Connect",
            IamService::Memorydb => "memorydb:Connect",
        }
    }
}

/// How long a token is accepted for; the services reject anything longer.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(900);

/// SigV4's URI encoding: everything except the RFC 3986 unreserved characters.
const SIGV4_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot sign IAM auth token for {target}: {message}")]
    Signing { target: String, message: String },
    /// The target becomes the signed `host`; only host-name characters are allowed.
    #[error("invalid IAM auth target {target:?}: expected a replication group id, cluster or cache name (letters, digits, '-', '.')")]
    InvalidTarget { target: String },
    #[error("invalid AWS region {region:?} for IAM auth target {target}")]
    InvalidRegion { target: String, region: String },
    #[error("empty database user for IAM auth target {target}")]
    EmptyUser { target: String },
    /// Signing with expired credentials yields a token the service rejects; say so here instead.
    #[error("AWS credentials (access key {access_key_id}) expired before the IAM auth token for {target} was signed")]
    CredentialsExpired {
        target: String,
        access_key_id: String,
    },
}

/// What a token is for.
#[derive(Debug, Clone)]
pub struct TokenRequest<'a> {
    pub service: IamService,
    pub region: &'a str,
    pub target: &'a str,
    pub db_user: &'a str,
    pub serverless: bool,
}

/// `{target}/?Action=connect&User={db_user}[&ResourceType=ServerlessCache]&X-Amz-…` (no `http://`).
pub fn generate(
    req: &TokenRequest<'_>,
    creds: &Credentials,
    now: SystemTime,
) -> Result<Secret, TokenError> {
    validate(req)?;
    if creds.expiry().is_some_and(|expiry| expiry <= now) {
        return Err(TokenError::CredentialsExpired {
            target: req.target.to_string(),
            access_key_id: creds.access_key_id().to_string(),
        });
    }
    let signing_error = |message: String| TokenError::Signing {
        target: req.target.to_string(),
        message,
    };

    let mut token = format!(
        "{}/?Action=connect&User={}",
        req.target,
        utf8_percent_encode(req.db_user, SIGV4_ENCODE)
    );
    if req.serverless {
        token.push_str("&ResourceType=ServerlessCache");
    }
    let url = format!("http://{token}");

    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(TOKEN_LIFETIME);
    let identity = Identity::from(creds.clone());
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(req.region)
        .name(req.service.signing_name())
        .time(now)
        .settings(settings)
        .build()
        .map_err(|e| signing_error(e.to_string()))?
        .into();
    let request = SignableRequest::new(
        "GET",
        url.as_str(),
        std::iter::empty(),
        SignableBody::Bytes(&[]),
    )
    .map_err(|e| signing_error(e.to_string()))?;
    let (instructions, _signature) = sign(request, &params)
        .map_err(|e| signing_error(e.to_string()))?
        .into_parts();

    // From here on `token` holds the signature (and maybe a session token); it goes straight
    // into a `Secret`, which zeroizes it.
    for (name, value) in instructions.params() {
        token.push('&');
        token.extend(utf8_percent_encode(name, SIGV4_ENCODE));
        token.push('=');
        token.extend(utf8_percent_encode(value, SIGV4_ENCODE));
    }
    Ok(Secret::new(token))
}

/// Reject what would change the URL's meaning (or make aws-sigv4 panic on the host header).
fn validate(req: &TokenRequest<'_>) -> Result<(), TokenError> {
    let target_ok = !req.target.is_empty()
        && req.target.len() <= 253
        && req
            .target
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if !target_ok {
        return Err(TokenError::InvalidTarget {
            target: req.target.to_string(),
        });
    }
    let region_ok = !req.region.is_empty()
        && req
            .region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !region_ok {
        return Err(TokenError::InvalidRegion {
            target: req.target.to_string(),
            region: req.region.to_string(),
        });
    }
    if req.db_user.is_empty() {
        return Err(TokenError::EmptyUser {
            target: req.target.to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const AKID: &str = "AKIDEXAMPLE";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

    fn now() -> SystemTime {
        // 2024-01-02T03:04:05Z
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_704_164_645)
    }

    fn req(service: IamService, serverless: bool) -> TokenRequest<'static> {
        TokenRequest {
            service,
            region: "us-east-1",
            target: "my-cache",
            db_user: "app",
            serverless,
        }
    }

    fn static_creds() -> Credentials {
        Credentials::new(AKID, SECRET, None, None, "test")
    }

    /// The token's query as ordered (name, raw value) pairs.
    fn query(token: &Secret) -> (String, Vec<(String, String)>) {
        let (host, query) = token.expose().split_once("/?").expect("host/?query");
        let pairs = query
            .split('&')
            .map(|kv| {
                let (k, v) = kv.split_once('=').expect("k=v");
                (k.to_string(), v.to_string())
            })
            .collect();
        (host.to_string(), pairs)
    }

    fn value<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn elasticache_token_shape() {
        let token =
            generate(&req(IamService::Elasticache, false), &static_creds(), now()).expect("token");
        let (host, pairs) = query(&token);
        assert_eq!(host, "my-cache");
        assert!(!token.expose().starts_with("http"));
        let names: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "Action",
                "User",
                "X-Amz-Algorithm",
                "X-Amz-Credential",
                "X-Amz-Date",
                "X-Amz-Expires",
                "X-Amz-SignedHeaders",
                "X-Amz-Signature"
            ]
        );
        assert_eq!(value(&pairs, "Action"), Some("connect"));
        assert_eq!(value(&pairs, "User"), Some("app"));
        assert_eq!(value(&pairs, "X-Amz-Algorithm"), Some("AWS4-HMAC-SHA256"));
        assert_eq!(
            value(&pairs, "X-Amz-Credential"),
            Some("AKIDEXAMPLE%2F20240102%2Fus-east-1%2Felasticache%2Faws4_request")
        );
        assert_eq!(value(&pairs, "X-Amz-Date"), Some("20240102T030405Z"));
        assert_eq!(value(&pairs, "X-Amz-Expires"), Some("900"));
        assert_eq!(value(&pairs, "X-Amz-SignedHeaders"), Some("host"));
        let signature = value(&pairs, "X-Amz-Signature").expect("signature");
        assert_eq!(signature.len(), 64);
        assert!(signature.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(value(&pairs, "ResourceType"), None);
        assert_eq!(value(&pairs, "X-Amz-Security-Token"), None);
    }

    /// Known answer computed by an independent SigV4 implementation (Python `hmac`/`hashlib`,
    /// canonical request `GET\n/\n{sorted query}\nhost:my-cache\n\nhost\n{sha256("")}`).
    #[test]
    fn elasticache_signature_matches_independent_computation() {
        let token =
            generate(&req(IamService::Elasticache, false), &static_creds(), now()).expect("token");
        let (_, pairs) = query(&token);
        assert_eq!(
            value(&pairs, "X-Amz-Signature"),
            Some("84b887a621be2ac671bfd829315e1ac82b2c305bfa61467f9be32924b2c1b9c0")
        );
    }

    #[test]
    fn memorydb_uses_its_signing_name() {
        let token =
            generate(&req(IamService::Memorydb, false), &static_creds(), now()).expect("token");
        let (_, pairs) = query(&token);
        assert_eq!(
            value(&pairs, "X-Amz-Credential"),
            Some("AKIDEXAMPLE%2F20240102%2Fus-east-1%2Fmemorydb%2Faws4_request")
        );
    }

    #[test]
    fn session_token_is_included_when_present() {
        let creds = Credentials::new(
            AKID,
            SECRET,
            Some("FwoG/session+token=".into()),
            None,
            "test",
        );
        let token = generate(&req(IamService::Elasticache, false), &creds, now()).expect("token");
        let (_, pairs) = query(&token);
        assert_eq!(
            value(&pairs, "X-Amz-Security-Token"),
            Some("FwoG%2Fsession%2Btoken%3D")
        );
        let without =
            generate(&req(IamService::Elasticache, false), &static_creds(), now()).expect("token");
        // The session token is signed, so the signature changes with it.
        assert_ne!(
            value(&pairs, "X-Amz-Signature"),
            value(&query(&without).1, "X-Amz-Signature")
        );
    }

    #[test]
    fn serverless_adds_a_signed_resource_type() {
        let plain =
            generate(&req(IamService::Elasticache, false), &static_creds(), now()).expect("token");
        let serverless =
            generate(&req(IamService::Elasticache, true), &static_creds(), now()).expect("token");
        let (_, pairs) = query(&serverless);
        assert_eq!(
            pairs[2],
            ("ResourceType".to_string(), "ServerlessCache".to_string())
        );
        assert_ne!(
            value(&pairs, "X-Amz-Signature"),
            value(&query(&plain).1, "X-Amz-Signature"),
            "ResourceType must be inside the signed query"
        );
    }

    #[test]
    fn deterministic_for_a_fixed_time() {
        let r = req(IamService::Elasticache, false);
        let a = generate(&r, &static_creds(), now()).expect("token");
        let b = generate(&r, &static_creds(), now()).expect("token");
        let later = generate(&r, &static_creds(), now() + Duration::from_secs(1)).expect("token");
        assert_eq!(a, b);
        assert_ne!(a, later);
    }

    #[test]
    fn user_is_percent_encoded() {
        let mut r = req(IamService::Elasticache, false);
        r.db_user = "app user+1/é&x=y";
        let token = generate(&r, &static_creds(), now()).expect("token");
        let (_, pairs) = query(&token);
        assert_eq!(
            value(&pairs, "User"),
            Some("app%20user%2B1%2F%C3%A9%26x%3Dy")
        );
        assert_eq!(value(&pairs, "x"), None);
    }

    #[test]
    fn rejects_targets_that_would_change_the_url() {
        for target in [
            "",
            "evil.example/x?",
            "a b",
            "user@host",
            "host:6379",
            "my-cache#",
        ] {
            let mut r = req(IamService::Elasticache, false);
            r.target = target;
            let err = generate(&r, &static_creds(), now()).expect_err(target);
            assert!(
                matches!(err, TokenError::InvalidTarget { .. }),
                "{target}: {err}"
            );
        }
    }

    #[test]
    fn rejects_bad_region_and_empty_user() {
        let mut r = req(IamService::Elasticache, false);
        r.region = "us-east-1/x";
        assert!(matches!(
            generate(&r, &static_creds(), now()),
            Err(TokenError::InvalidRegion { .. })
        ));
        let mut r = req(IamService::Elasticache, false);
        r.db_user = "";
        assert!(matches!(
            generate(&r, &static_creds(), now()),
            Err(TokenError::EmptyUser { .. })
        ));
    }

    #[test]
    fn expired_credentials_are_refused_without_leaking_them() {
        let creds = Credentials::new(AKID, SECRET, Some("sess".into()), Some(now()), "test");
        let err =
            generate(&req(IamService::Elasticache, false), &creds, now()).expect_err("expired");
        let msg = err.to_string();
        assert!(
            matches!(err, TokenError::CredentialsExpired { .. }),
            "{msg}"
        );
        assert!(msg.contains(AKID) && msg.contains("my-cache"), "{msg}");
        assert!(!msg.contains(SECRET) && !msg.contains("sess"), "{msg}");
    }

    #[test]
    fn token_formats_as_stars() {
        let token =
            generate(&req(IamService::Elasticache, false), &static_creds(), now()).expect("token");
        assert_eq!(token.to_string(), "****");
        assert!(!format!("{token:?}").contains("Signature"));
    }
}
