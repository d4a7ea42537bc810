//! STUB — owned by the AWS helper. Credential provider chain (env, then shared files honouring
//! AWS_PROFILE), built on aws-config providers behind the `ProvideCredentials` seam so the
//! IMDSv2 provider of a later issue plugs in as one more link.

use aws_credential_types::Credentials;

#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("no AWS credentials: {0}")]
    NotFound(String),
}

/// The chain every IAM-mode database uses. Cheap to clone.
#[derive(Debug, Clone)]
pub struct CredentialChain {}

impl CredentialChain {
    /// Environment variables, then the shared config/credentials files (AWS_PROFILE).
    pub fn default_chain() -> Self {
        todo!()
    }

    /// Current credentials (cached until near expiry) and the name of the provider that answered.
    pub async fn credentials(&self) -> Result<(Credentials, String), CredentialsError> {
        todo!()
    }
}
