//! The EC2 instance metadata service (IMDSv2): the bastion's own client, and the instance
//! profile's credentials as a link of [`super::credentials::CredentialChain`].
//!
//! - [`settings`]: `[aws.imds]` plus the `AWS_EC2_METADATA_*` environment overrides.
//! - [`client`]: token-carrying GETs, metadata helpers and [`ImdsClient::probe`] for doctor.
//! - `token`: the `PUT /latest/api/token` session token and the hop-limit diagnosis.
//! - [`provider`]: credentials, refreshed ahead of expiry, statically stable through outages.
//! - [`error`]: [`ImdsError`] and the operator-facing [`ImdsErrorKind`].
//!
//! Must never: log or put into an error a token, a credential or a response body; send
//! `X-Forwarded-For`; read the process environment anywhere but [`settings::ProcessEnv`];
//! hold a lock across a request.

pub mod client;
pub mod error;
mod flight;
mod http;
pub mod provider;
pub mod settings;
mod token;

pub use client::{ImdsClient, PublicKey};
pub use error::{ImdsError, ImdsErrorKind, ImdsStatus};
pub use provider::{fuzz_credentials, ImdsCredentialsProvider};
pub use settings::{Env, ImdsSettings, ProcessEnv};
pub use token::TOKEN_REFRESH_MARGIN;
