//! The one entry point for an IAM auth token for a database: region (the database's, else
//! the instance's), credentials (the chain's, or a per-database role assumed with them through
//! STS in that region), then SigV4 ([`super::token`]).
//!
//! Callers (the session's upstream secret, `bastion doctor`) see one function and one error;
//! which of the chain's parts ran is this module's business. Never logs a credential or token.

use std::time::SystemTime;

use super::assume_role::{AssumeRoleError, RoleSpec};
use super::credentials::{CredentialChain, CredentialsError};
use super::region::RegionError;
use super::token::IamService;
use super::token::{self, TokenError, TokenRequest};
use crate::secret::Secret;

/// What a database says about its IAM authentication.
#[derive(Debug, Clone)]
pub struct IamAuth<'a> {
    /// The database's name (for the region's error and cache).
    pub database: &'a str,
    pub service: IamService,
    /// `auth.region`; `None`: the instance's region.
    pub region: Option<&'a str>,
    pub target: &'a str,
    pub serverless: bool,
    /// `assume_role_arn` and its settings: the token is signed with that role's credentials.
    pub role: Option<RoleSpec>,
}

/// Which step of making the token failed.
#[derive(Debug, thiserror::Error)]
pub enum IamTokenError {
    #[error(transparent)]
    Region(#[from] RegionError),
    #[error(transparent)]
    AssumeRole(#[from] AssumeRoleError),
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    #[error(transparent)]
    Token(#[from] TokenError),
}

/// A token for `db_user` on the database `auth` describes, valid for
/// [`token::TOKEN_LIFETIME`].
pub async fn token(
    chain: &CredentialChain,
    auth: &IamAuth<'_>,
    db_user: &str,
) -> Result<Secret, IamTokenError> {
    let region = chain
        .regions()
        .for_database(auth.database, auth.region)
        .await?;
    let creds = match &auth.role {
        // The role's credentials, assumed with the chain's as the source, through STS in the
        // database's region.
        Some(role) => {
            chain
                .assumed(&RoleSpec {
                    region: Some(region.region.clone()),
                    ..role.clone()
                })
                .await?
        }
        None => chain.credentials().await?.0,
    };
    let request = TokenRequest {
        service: auth.service,
        region: &region.region,
        target: auth.target,
        db_user,
        serverless: auth.serverless,
    };
    Ok(token::generate(&request, &creds, SystemTime::now())?)
}
