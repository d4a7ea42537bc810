//! AWS: the credential chain and SigV4 IAM auth tokens for ElastiCache / MemoryDB.
//!
//! [`credentials::CredentialChain`] finds credentials (environment, then shared profile files;
//! further links such as IMDSv2 plug in through its builder); [`token::generate`] turns them
//! into the short-lived token the bastion sends upstream as the AUTH password.
//!
//! Never logs a credential or a token; tokens are [`crate::secret::Secret`]s.

pub mod credentials;
pub mod policy;
pub mod token;
