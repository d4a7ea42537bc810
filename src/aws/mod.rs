//! AWS: the credential chain and SigV4 IAM auth tokens for ElastiCache / MemoryDB.
//!
//! [`credentials::CredentialChain`] finds credentials (environment, shared profile files, web
//! identity, ECS container, then the instance profile through our IMDSv2 client in [`imds`]) and
//! assumes per-database roles ([`assume_role`]) over [`sdk`]'s HTTPS client; [`token::generate`] turns them
//! into the short-lived token the bastion sends upstream as the AUTH password; [`iam::token`] is
//! the one call that does all of it for a database.
//!
//! Knows nothing of the config file: the config embeds this module's types (`IamService`,
//! `[aws.imds]`) and rules (role ARNs), not the other way round. Never logs a credential or a token; tokens are [`crate::secret::Secret`]s.

pub mod assume_role;
pub mod credentials;
pub mod iam;
pub mod imds;
pub mod region;
pub mod sdk;
pub mod token;
