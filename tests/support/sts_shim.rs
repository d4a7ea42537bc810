//! A shim standing in for STS (on [`super::http_stub`]): it answers `AssumeRole` from a script
//! — throttling, 5xx, AccessDenied, then success — which neither moto nor AWS can be made to do
//! on demand. Only what the bastion's STS client reads is produced; nothing else of STS is here.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use super::http_stub::{HttpStub, Request};

const NS: &str = "https://sts.amazonaws.com/doc/2011-06-15/";
/// The access key id of the credentials a successful AssumeRole hands out.
pub const ASSUMED_KEY: &str = "ASIASHIMASSUMED00001";
pub const ASSUMED_SECRET: &str = "shimAssumedSecretKEYwJalrXUtnFEMIK7MDENG";

/// One scripted answer to an AssumeRole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// 400 `Throttling` (`Rate exceeded`), as STS throttles.
    Throttling,
    /// This 5xx status with an `InternalFailure` / `ServiceUnavailable` body.
    ServerError(u16),
    /// 403 `AccessDenied`: not retryable.
    AccessDenied,
    /// 200 with credentials valid for an hour.
    Success,
}

pub struct StsShim {
    stub: HttpStub,
}

impl StsShim {
    /// Answers AssumeRole with `script` in order, then with `then` for ever.
    pub fn start(script: &[Answer], then: Answer) -> StsShim {
        let script = Arc::new(Mutex::new(script.iter().copied().collect::<VecDeque<_>>()));
        let stub = HttpStub::start(move |req: &Request| {
            if !req.body.contains("Action=AssumeRole") {
                return (
                    400,
                    "text/xml",
                    error("Sender", "InvalidAction", "only AssumeRole"),
                );
            }
            let next = script.lock().unwrap().pop_front().unwrap_or(then);
            match next {
                Answer::Throttling => (
                    400,
                    "text/xml",
                    error("Sender", "Throttling", "Rate exceeded"),
                ),
                Answer::ServerError(status) => {
                    let code = if status == 503 {
                        "ServiceUnavailable"
                    } else {
                        "InternalFailure"
                    };
                    (status, "text/xml", error("Receiver", code, "try again"))
                }
                Answer::AccessDenied => (
                    403,
                    "text/xml",
                    error(
                        "Sender",
                        "AccessDenied",
                        "not authorized to perform: sts:AssumeRole",
                    ),
                ),
                Answer::Success => (200, "text/xml", success()),
            }
        });
        StsShim { stub }
    }

    /// What to set `AWS_ENDPOINT_URL_STS` to.
    pub fn url(&self) -> String {
        self.stub.url("")
    }

    /// How many AssumeRole requests arrived.
    pub fn assume_role_calls(&self) -> usize {
        self.stub
            .requests()
            .iter()
            .filter(|r| r.body.contains("Action=AssumeRole"))
            .count()
    }
}

fn error(kind: &str, code: &str, message: &str) -> String {
    format!(
        "<ErrorResponse xmlns=\"{NS}\"><Error><Type>{kind}</Type><Code>{code}</Code>\
         <Message>{message}</Message></Error><RequestId>shim</RequestId></ErrorResponse>"
    )
}

fn success() -> String {
    let expiry = SystemTime::now() + Duration::from_secs(3600);
    let expiry = time::OffsetDateTime::from(expiry)
        .replace_nanosecond(0)
        .expect("whole seconds")
        .format(&time::format_description::well_known::Rfc3339)
        .expect("RFC 3339");
    format!(
        "<AssumeRoleResponse xmlns=\"{NS}\"><AssumeRoleResult><Credentials>\
         <AccessKeyId>{ASSUMED_KEY}</AccessKeyId><SecretAccessKey>{ASSUMED_SECRET}</SecretAccessKey>\
         <SessionToken>shim-session-token</SessionToken><Expiration>{expiry}</Expiration>\
         </Credentials><AssumedRoleUser><AssumedRoleId>AROASHIM:bastion</AssumedRoleId>\
         <Arn>arn:aws:sts::123456789012:assumed-role/cache-connect/bastion</Arn></AssumedRoleUser>\
         </AssumeRoleResult><ResponseMetadata><RequestId>shim</RequestId></ResponseMetadata>\
         </AssumeRoleResponse>"
    )
}
