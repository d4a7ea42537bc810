//! AWS: the credential chain and SigV4 IAM auth tokens for ElastiCache / MemoryDB.
//!
//! Never logs a credential or a token; tokens are [`crate::secret::Secret`]s.

pub mod credentials;
pub mod token;
