//! STUB — owned by the AWS helper. ElastiCache / MemoryDB IAM auth tokens (SigV4 presigned URL).

use std::time::SystemTime;

use aws_credential_types::Credentials;

use crate::config::IamService;
use crate::secret::Secret;

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot sign IAM auth token for {target}: {message}")]
    Signing { target: String, message: String },
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
    let _ = (req, creds, now);
    todo!()
}
