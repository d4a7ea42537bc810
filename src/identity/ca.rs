//! STUB — owned by the identity helper. The on-box CA (rcgen): created on first start under
//! `<state>/ca/` (key 0600), issues client certificates (CN = bastion user) and the listeners'
//! server certificates.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::secret::Secret;

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("CA file {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("certificate generation for '{subject}' failed: {message}")]
    Generate { subject: String, message: String },
}

pub struct OnBoxCa {}

/// A freshly issued client certificate.
pub struct IssuedCert {
    pub cert_pem: String,
    pub key_pem: Secret,
    /// Hex serial, as shown in audit events.
    pub serial: String,
    pub not_after: std::time::SystemTime,
}

impl OnBoxCa {
    /// Load `<dir>/ca.crt` + `<dir>/ca.key`, or create them (key 0600, dir 0700) if absent.
    pub fn load_or_create(dir: &Path) -> Result<OnBoxCa, CaError> {
        let _ = dir;
        todo!()
    }

    pub fn cert_pem(&self) -> &str {
        todo!()
    }

    pub fn cert_der(&self) -> CertificateDer<'static> {
        todo!()
    }

    /// A client certificate for `user` (CN = user), valid for `ttl` from now.
    pub fn issue_client(&self, user: &str, ttl: Duration) -> Result<IssuedCert, CaError> {
        let _ = (user, ttl);
        todo!()
    }

    /// Write `<out>/<user>.crt`, `<out>/<user>.key` (0600) and `<out>/ca.crt`; returns the paths.
    pub fn write_client_bundle(
        &self,
        user: &str,
        ttl: Duration,
        out: &Path,
    ) -> Result<[PathBuf; 3], CaError> {
        let _ = (user, ttl, out);
        todo!()
    }

    /// A server certificate for the listeners, with every name/IP in `names` as a SAN.
    pub fn issue_server(
        &self,
        names: &[String],
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), CaError> {
        let _ = names;
        todo!()
    }
}
