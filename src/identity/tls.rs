//! STUB — owned by the identity helper. The listeners' rustls server config: client
//! certificates required and verified against the on-box CA (chain + validity), plus reading the
//! bastion user out of a verified peer certificate.

use std::sync::Arc;

use rustls_pki_types::CertificateDer;

use super::ca::{CaError, OnBoxCa};

#[derive(Debug, thiserror::Error)]
pub enum TlsIdentityError {
    #[error("building TLS server config: {0}")]
    Config(String),
    #[error(transparent)]
    Ca(#[from] CaError),
    #[error("client certificate has no usable common name: {0}")]
    NoUser(String),
}

/// The user (CN) and hex serial of a verified client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertIdentity {
    pub user: String,
    pub serial: String,
}

/// A server config that demands a client certificate from `ca` and presents a certificate for `names`.
pub fn server_config(
    ca: &OnBoxCa,
    names: &[String],
) -> Result<Arc<rustls::ServerConfig>, TlsIdentityError> {
    let _ = (ca, names);
    todo!()
}

/// Read the identity out of the (already verified) end-entity certificate.
pub fn cert_identity(cert: &CertificateDer<'_>) -> Result<CertIdentity, TlsIdentityError> {
    let _ = cert;
    todo!()
}
