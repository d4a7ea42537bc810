//! What can go wrong talking to IMDS, classified the way an operator has to act on it.
//!
//! Every variant names the endpoint (and the path where one is involved). None carries a
//! token, a credential or a response body: IMDS bodies hold secrets, so errors describe the
//! reply (status, which field is missing), never quote it.

use std::fmt;
use std::time::Duration;

/// The IMDS check's verdict, as the `kind` field of `bastion doctor --json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ImdsErrorKind {
    /// A token was had and the role (if asked for) answered.
    Ok,
    /// The token PUT connected but its reply never came, while a token-less GET is answered
    /// `401`: the PUT reply was dropped in transit by the instance's hop limit.
    HopLimitExceeded,
    /// No reply at all (not on EC2, a firewall, or a timeout on connect).
    Unreachable,
    /// IMDS answered `403` (turned off or blocked for this instance), or this bastion was told
    /// not to use it (`AWS_EC2_METADATA_DISABLED`, `[aws.imds] disabled`).
    Disabled,
    /// No IMDSv2 token could be had, but a token-less IMDSv1 GET is answered.
    V1Only,
    /// `404` on the role path: no instance profile attached.
    NoRole,
    /// Anything else: an unexpected status after retries, a malformed reply, a bad endpoint.
    /// (Not one of the six kinds issue 3 lists: those all name a known situation, this one
    /// says "read the message".)
    Unexpected,
}

impl ImdsErrorKind {
    /// The stable name used in JSON output and log fields.
    pub fn as_str(self) -> &'static str {
        match self {
            ImdsErrorKind::Ok => "ok",
            ImdsErrorKind::HopLimitExceeded => "hop_limit_exceeded",
            ImdsErrorKind::Unreachable => "unreachable",
            ImdsErrorKind::Disabled => "disabled",
            ImdsErrorKind::V1Only => "v1_only",
            ImdsErrorKind::NoRole => "no_role",
            ImdsErrorKind::Unexpected => "unexpected",
        }
    }
}

impl fmt::Display for ImdsErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One failed IMDS interaction. Cheap to clone: a failed token fetch is shared by every caller
/// that waited on it, and remembered for the back-off window.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ImdsError {
    #[error("IMDS is turned off for this bastion ({by})")]
    TurnedOff { by: &'static str },

    #[error(
        "IMDS is disabled or blocked for this instance ({endpoint} answered 403 to {method} {path}); \
         enable it with `aws ec2 modify-instance-metadata-options --instance-id <id> --http-endpoint enabled`"
    )]
    Disabled {
        endpoint: String,
        method: &'static str,
        path: String,
    },

    #[error(
        "no IAM role (instance profile) is attached to this instance ({endpoint} answered 404 to GET {path}); \
         attach one with `aws ec2 associate-iam-instance-profile --instance-id <id> --iam-instance-profile Name=<profile>`"
    )]
    NoRole { endpoint: String, path: String },

    #[error(
        "IMDSv2 token request PUT {endpoint}/latest/api/token connected but got no reply within {read_timeout:?}, \
         while a token-less GET {endpoint}/latest/meta-data/ is answered 401: the PUT reply is dropped by the \
         instance's hop limit (the bastion is one network hop too far, e.g. in a container or namespace). \
         Fix: `aws ec2 modify-instance-metadata-options --instance-id <id> --http-put-response-hop-limit 2` \
         (or run with host networking). Check: \
         `aws ec2 describe-instances --instance-ids <id> | grep HttpPutResponseHopLimit`"
    )]
    HopLimitExceeded {
        endpoint: String,
        read_timeout: Duration,
    },

    #[error("IMDS at {endpoint} is unreachable ({method} {path}: {reason})")]
    Unreachable {
        endpoint: String,
        method: &'static str,
        path: String,
        reason: String,
    },

    #[error(
        "IMDSv2 token request PUT {endpoint}/latest/api/token failed ({reason}), but a token-less GET \
         {endpoint}/latest/meta-data/ is answered: IMDSv1 is enabled on this instance. If the PUT got no \
         reply, its reply is dropped by the hop limit: \
         `aws ec2 modify-instance-metadata-options --instance-id <id> --http-put-response-hop-limit 2` \
         (check: `aws ec2 describe-instances --instance-ids <id> | grep HttpPutResponseHopLimit`). \
         To use IMDSv1 meanwhile, set `allow_v1_fallback = true` in [aws.imds]"
    )]
    V1Only { endpoint: String, reason: String },

    #[error("IMDS {endpoint} answered {status} to {method} {path}{}", retried(*.attempts))]
    Status {
        endpoint: String,
        method: &'static str,
        path: String,
        status: u16,
        attempts: u32,
    },

    #[error("IMDS {endpoint} sent a malformed reply to {method} {path}: {what}")]
    Malformed {
        endpoint: String,
        method: &'static str,
        path: String,
        what: String,
    },

    #[error("IMDS {endpoint} refused credentials for role `{role}` (Code = {code})")]
    CredentialsCode {
        endpoint: String,
        role: String,
        code: String,
    },

    #[error("IMDS endpoint: {0}")]
    BadEndpoint(String),
}

fn retried(attempts: u32) -> String {
    if attempts > 1 {
        format!(" (after {attempts} attempts)")
    } else {
        String::new()
    }
}

impl ImdsError {
    pub fn kind(&self) -> ImdsErrorKind {
        match self {
            ImdsError::TurnedOff { .. } | ImdsError::Disabled { .. } => ImdsErrorKind::Disabled,
            ImdsError::NoRole { .. } => ImdsErrorKind::NoRole,
            ImdsError::HopLimitExceeded { .. } => ImdsErrorKind::HopLimitExceeded,
            ImdsError::Unreachable { .. } => ImdsErrorKind::Unreachable,
            ImdsError::V1Only { .. } => ImdsErrorKind::V1Only,
            ImdsError::Status { .. }
            | ImdsError::Malformed { .. }
            | ImdsError::CredentialsCode { .. }
            | ImdsError::BadEndpoint(_) => ImdsErrorKind::Unexpected,
        }
    }
}

/// What [`super::ImdsClient::probe`] found, for `bastion doctor`.
#[derive(Debug, Clone)]
pub struct ImdsStatus {
    pub kind: ImdsErrorKind,
    /// The endpoint probed.
    pub endpoint: String,
    /// The attached role, when one was found.
    pub role: Option<String>,
    /// One line for the operator: what was found and, on failure, the fix.
    pub message: String,
}

impl ImdsStatus {
    pub fn is_ok(&self) -> bool {
        self.kind == ImdsErrorKind::Ok
    }
}
