//! Why an upstream's TLS verification failed, in words an operator can act on.
//!
//! The verdict is always the real one ([`crate::proxy::upstream::Connector::connect`], rustls with the
//! configured trust). Only after it failed does [`diagnose`] open a second connection through
//! [`danger::RecordingVerifier`], which accepts any certificate so the chain can be read, then
//! closes it without sending a byte of Redis. The chain is parsed with x509-parser to name the
//! cause: a legacy certificate with a Common Name and no subjectAltName (which no modern
//! verifier matches names against), the names it does carry, its issuer, its validity.

use std::time::Duration;

use rustls::CertificateError;
use rustls_pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;

use super::CheckResult;
use crate::catalog::Database;
use crate::proxy::upstream::UpstreamError;

/// The `database:<name>:tls` result for a failed [`crate::proxy::upstream::Connector::connect`].
pub async fn diagnose(
    db: &Database,
    server_name: &str,
    error: &UpstreamError,
    timeout: Duration,
) -> CheckResult {
    let name = format!("database:{}:tls", db.name);
    let source =
        match error {
            UpstreamError::Tls { source, .. } => source,
            UpstreamError::TlsConfig { message, .. } => return CheckResult::fail(
                name,
                format!("TLS settings: {message}"),
                "check tls.ca_file (a readable PEM bundle of CA certificates) and tls.server_name",
            ),
            UpstreamError::ConnectTimeout { .. } => {
                return CheckResult::fail(
                    name,
                    format!(
                        "TLS handshake with {} did not finish within {timeout:?}",
                        db.address
                    ),
                    format!(
                        "check that {} speaks TLS (in-transit encryption enabled on the database): \
                         a plaintext Redis port never answers a TLS hello, it waits for a newline",
                        db.address
                    ),
                )
            }
            other => {
                return CheckResult::fail(
                    name,
                    other.to_string(),
                    "the TCP check passed a moment ago: retry, then check the network path",
                )
            }
        };
    let rustls_error = source
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>());
    let cert = match danger::fetch_chain(db, server_name, timeout).await {
        Ok(chain) => chain.first().and_then(|leaf| Leaf::parse(leaf)),
        Err(_) => None,
    };

    if let Some(leaf) = cert.as_ref().filter(|l| l.sans.is_none()) {
        let cn = leaf.common_name.as_deref().unwrap_or("");
        return CheckResult::fail(
            name,
            format!(
                "the server certificate of {} has only a legacy Common Name (CN = {cn}) and no \
                 subjectAltName; names are verified against subjectAltName only (RFC 6125), so \
                 it is not valid for '{server_name}' or any other name",
                db.address
            ),
            format!(
                "re-issue the upstream's certificate with a subjectAltName for '{server_name}' \
                 (e.g. openssl … -addext \"subjectAltName=DNS:{server_name}\")"
            ),
        )
        .with("reason", "legacy_common_name")
        .with("cert_common_name", cn);
    }

    let (reason, finding, fix) = match rustls_error {
        Some(rustls::Error::InvalidCertificate(e)) => {
            certificate_error(e, server_name, db, cert.as_ref())
        }
        Some(rustls::Error::InvalidMessage(_))
        | Some(rustls::Error::InappropriateMessage { .. }) => (
            "not_tls",
            format!("{} did not answer with TLS: {source}", db.address),
            format!(
                "{} looks like a plaintext port: remove tls from database '{}' or use the TLS port",
                db.address, db.name
            ),
        ),
        Some(other) => (
            "handshake",
            format!("TLS handshake with {} failed: {other}", db.address),
            "check the upstream's TLS settings (protocol versions, cipher suites)".to_string(),
        ),
        None => (
            "io",
            format!("TLS handshake with {} failed: {source}", db.address),
            format!("check that {} speaks TLS", db.address),
        ),
    };
    let mut result = CheckResult::fail(name, finding, fix).with("reason", reason);
    if let Some(leaf) = cert {
        result = result.with("cert_names", leaf.sans.unwrap_or_default());
        if let Some(issuer) = leaf.issuer {
            result = result.with("cert_issuer", issuer);
        }
    }
    result
}

fn certificate_error(
    e: &CertificateError,
    server_name: &str,
    db: &Database,
    leaf: Option<&Leaf>,
) -> (&'static str, String, String) {
    let trust = match db.tls.as_ref().and_then(|t| t.ca_file.as_ref()) {
        Some(path) => format!("tls.ca_file {}", path.display()),
        None => "the system trust store".to_string(),
    };
    let issuer = leaf
        .and_then(|l| l.issuer.clone())
        .map(|i| format!(" (issuer: {i})"))
        .unwrap_or_default();
    match e {
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            let names = leaf
                .and_then(|l| l.sans.clone())
                .map(|n| n.join(", "))
                .unwrap_or_else(|| "unknown".into());
            (
                "name_mismatch",
                format!(
                    "the server certificate of {} is not valid for '{server_name}'; it names: {names}",
                    db.address
                ),
                format!(
                    "set tls.server_name of database '{}' to a name the certificate carries, or \
                     use an address whose host it carries",
                    db.name
                ),
            )
        }
        CertificateError::UnknownIssuer => (
            "unknown_issuer",
            format!(
                "the server certificate of {} is not signed by a CA in {trust}{issuer}",
                db.address
            ),
            "set tls.ca_file to the PEM of the CA that issued the upstream's certificate".into(),
        ),
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => (
            "expired",
            format!("the server certificate of {} has expired: {e}", db.address),
            "renew the upstream's certificate (or check this host's clock)".into(),
        ),
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => (
            "not_yet_valid",
            format!(
                "the server certificate of {} is not valid yet: {e}",
                db.address
            ),
            "check this host's clock (chrony / systemd-timesyncd)".into(),
        ),
        other => (
            "invalid_certificate",
            format!(
                "the server certificate of {} was rejected: {other}",
                db.address
            ),
            format!("check the upstream's certificate against {trust}"),
        ),
    }
}

/// What the diagnosis needs from the leaf certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Leaf {
    common_name: Option<String>,
    /// `None`: no subjectAltName extension at all. DNS names and IPs, as text.
    sans: Option<Vec<String>>,
    issuer: Option<String>,
}

impl Leaf {
    fn parse(der: &CertificateDer<'_>) -> Option<Leaf> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let common_name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_string);
        let sans = match cert.subject_alternative_name() {
            Ok(Some(ext)) => Some(
                ext.value
                    .general_names
                    .iter()
                    .filter_map(|n| match n {
                        GeneralName::DNSName(d) => Some(d.to_string()),
                        GeneralName::IPAddress(ip) => ip_text(ip),
                        _ => None,
                    })
                    .collect(),
            ),
            // A duplicated or malformed extension is not "no SAN": don't call it legacy.
            Err(_) => Some(Vec::new()),
            Ok(None) => None,
        };
        let issuer = Some(cert.issuer().to_string()).filter(|s| !s.is_empty());
        Some(Leaf {
            common_name,
            sans,
            issuer,
        })
    }
}

fn ip_text(bytes: &[u8]) -> Option<String> {
    match bytes.len() {
        4 => Some(std::net::Ipv4Addr::from(<[u8; 4]>::try_from(bytes).ok()?).to_string()),
        16 => Some(std::net::Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?).to_string()),
        _ => None,
    }
}

/// A certificate verifier that verifies nothing. It exists only so [`diagnose`] can read the
/// chain of a server the real verifier already refused; no data ever goes over its connection.
mod danger {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::CryptoProvider;
    use rustls::{DigitallySignedStruct, SignatureScheme};
    use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpStream;
    use tokio_rustls::TlsConnector;

    use crate::catalog::Database;

    /// Accepts any server certificate and records the chain it was shown. Handshake signatures
    /// are still checked against the presented key, so what is recorded is what the peer holds.
    #[derive(Debug)]
    pub struct RecordingVerifier {
        provider: Arc<CryptoProvider>,
        chain: Mutex<Vec<CertificateDer<'static>>>,
    }

    impl ServerCertVerifier for RecordingVerifier {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp_response: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            let mut chain = self.chain.lock().unwrap_or_else(|e| e.into_inner());
            *chain = std::iter::once(end_entity)
                .chain(intermediates)
                .map(|c| c.clone().into_owned())
                .collect();
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.provider
                .signature_verification_algorithms
                .supported_schemes()
        }
    }

    /// The certificate chain `db` presents for `server_name` (leaf first), unverified.
    pub async fn fetch_chain(
        db: &Database,
        server_name: &str,
        timeout: Duration,
    ) -> Result<Vec<CertificateDer<'static>>, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = Arc::new(RecordingVerifier {
            provider: provider.clone(),
            chain: Mutex::new(Vec::new()),
        });
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone())
            .with_no_client_auth();
        let name = ServerName::try_from(server_name.to_string()).map_err(|e| e.to_string())?;
        let handshake = async {
            let tcp = TcpStream::connect((db.address.host.as_str(), db.address.port))
                .await
                .map_err(|e| e.to_string())?;
            let mut tls = TlsConnector::from(Arc::new(config))
                .connect(name, tcp)
                .await
                .map_err(|e| e.to_string())?;
            let _ = tls.shutdown().await;
            Ok::<(), String>(())
        };
        let outcome = tokio::time::timeout(timeout, handshake)
            .await
            .unwrap_or_else(|_| Err("timed out".into()));
        let chain = std::mem::take(&mut *verifier.chain.lock().unwrap_or_else(|e| e.into_inner()));
        // The chain is recorded before the handshake finishes: a later failure (a server asking
        // for a client certificate) still leaves it to look at.
        match (chain.is_empty(), outcome) {
            (false, _) => Ok(chain),
            (true, Err(e)) => Err(e),
            (true, Ok(())) => Err("the server presented no certificate".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair};

    fn der(params: CertificateParams) -> CertificateDer<'static> {
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn leaf_tells_legacy_cn_from_san() {
        let mut legacy = CertificateParams::new(Vec::<String>::new()).unwrap();
        legacy
            .distinguished_name
            .push(DnType::CommonName, "redis.internal");
        let leaf = Leaf::parse(&der(legacy)).unwrap();
        assert_eq!(leaf.common_name.as_deref(), Some("redis.internal"));
        assert_eq!(leaf.sans, None);

        let modern =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        let leaf = Leaf::parse(&der(modern)).unwrap();
        assert_eq!(
            leaf.sans,
            Some(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        );
    }
}
