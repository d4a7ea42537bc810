//! The listeners' rustls server config: client certificates required and verified against the
//! on-box CA (chain + validity) during the handshake, plus reading the bastion user out of a
//! verified peer certificate.
//!
//! Only the on-box CA is trusted for clients; the system trust store never is. A connection whose
//! certificate is missing, expired or from another CA fails in the TLS handshake, before a single
//! Redis byte is read. This module must never accept an unverified certificate as identity:
//! [`cert_identity`] only *reads* a certificate rustls has already verified.

use std::sync::Arc;

use rustls::server::danger::ClientCertVerifier;
use rustls::server::{NoServerSessionStorage, ResolvesServerCert, WebPkiClientVerifier};
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::CertificateDer;

use super::ca::{serial_hex, CaError, OnBoxCa};

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
    /// The end of the certificate's validity: a session that presented it ends then.
    pub not_after: std::time::SystemTime,
}

/// A server config that demands a client certificate from `ca` and presents a certificate for `names`.
///
/// TLS 1.3 and 1.2, ring provider, no ALPN. Session resumption is off: a resumed session skips
/// certificate verification, so a certificate that expired (or, later, was revoked) after the
/// first handshake could keep getting in. A full handshake per connection is cheap at a bastion's
/// connection rates.
pub fn server_config(
    ca: &OnBoxCa,
    names: &[String],
) -> Result<Arc<rustls::ServerConfig>, TlsIdentityError> {
    let (chain, key) = ca.issue_server(names)?;
    let config = builder(ca)?
        .with_single_cert(chain, key)
        .map_err(|e| TlsIdentityError::Config(format!("server certificate for {names:?}: {e}")))?;
    Ok(without_resumption(config))
}

/// [`server_config`], presenting whatever `certs` resolves per handshake (the daemon's live
/// [`super::server_cert::ServerCert`], re-issued when databases change or on reload).
pub fn server_config_with_resolver(
    ca: &OnBoxCa,
    certs: Arc<dyn ResolvesServerCert>,
) -> Result<Arc<rustls::ServerConfig>, TlsIdentityError> {
    Ok(without_resumption(builder(ca)?.with_cert_resolver(certs)))
}

fn builder(
    ca: &OnBoxCa,
) -> Result<rustls::ConfigBuilder<ServerConfig, rustls::server::WantsServerCert>, TlsIdentityError>
{
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = client_verifier(ca)?;
    Ok(ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsIdentityError::Config(format!("protocol versions: {e}")))?
        .with_client_cert_verifier(verifier))
}

fn without_resumption(mut config: ServerConfig) -> Arc<ServerConfig> {
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Arc::new(config)
}

/// The client-certificate verifier: the on-box CA as the only root, a certificate mandatory,
/// chain and validity period checked by webpki.
pub fn client_verifier(ca: &OnBoxCa) -> Result<Arc<dyn ClientCertVerifier>, TlsIdentityError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    roots.add(ca.cert_der()).map_err(|e| {
        TlsIdentityError::Config(format!(
            "on-box CA certificate in {} is not a usable trust anchor: {e}",
            ca.dir().display()
        ))
    })?;
    // Revocation is not checked here: `bastion cert revoke` puts the serial in the session
    // registry (proxy/registry.rs), which each TLS session consults right after this verifier
    // accepted the chain — under the same lock that stops the serial's live sessions, and
    // without rebuilding this config on every revocation.
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| TlsIdentityError::Config(format!("client certificate verifier: {e}")))
}

/// Read the identity out of the (already verified) end-entity certificate.
///
/// Refuses a certificate without exactly one common name, or whose CN is not a valid bastion
/// user name (see [`crate::config::check_name`]).
pub fn cert_identity(cert: &CertificateDer<'_>) -> Result<CertIdentity, TlsIdentityError> {
    let (_, x509) = x509_parser::parse_x509_certificate(cert)
        .map_err(|e| TlsIdentityError::NoUser(format!("certificate does not parse ({e})")))?;
    let mut cns = x509.subject().iter_common_name();
    let cn = cns
        .next()
        .ok_or_else(|| TlsIdentityError::NoUser("the subject has no CN".into()))?;
    if cns.next().is_some() {
        return Err(TlsIdentityError::NoUser(
            "the subject has more than one CN".into(),
        ));
    }
    let user = cn
        .as_str()
        .map_err(|_| TlsIdentityError::NoUser("the CN is not a text string".into()))?;
    // `{:?}` so a hostile CN cannot inject line breaks into a log line.
    crate::config::check_name("cn", user).map_err(|_| {
        TlsIdentityError::NoUser(format!("CN {user:?} is not a valid bastion user name"))
    })?;
    let not_after = u64::try_from(x509.validity().not_after.timestamp())
        .map_or(std::time::UNIX_EPOCH, |s| {
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(s)
        });
    Ok(CertIdentity {
        user: user.to_string(),
        serial: serial_hex(x509.raw_serial()),
        not_after,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::ca::IssuedCert;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{PrivateKeyDer, ServerName};
    use rustls::{
        CertificateError, ClientConfig, ClientConnection, ServerConnection,
        SupportedProtocolVersion,
    };
    use std::path::Path;
    use std::time::{Duration, SystemTime};

    const HOUR: Duration = Duration::from_secs(3600);
    const DAY: Duration = Duration::from_secs(86400);
    const BOTH: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];

    /// Which side of the in-memory handshake gave up, and why.
    #[derive(Debug)]
    enum Failed {
        Client(rustls::Error),
        Server(rustls::Error),
    }

    fn new_ca(root: &Path, name: &str) -> OnBoxCa {
        OnBoxCa::load_or_create(&root.join(name)).expect("create CA")
    }

    fn names() -> Vec<String> {
        ["local", "cache", "127.0.0.1"].map(String::from).to_vec()
    }

    /// A client like redis-cli: trusts `ca` for the server, presents `cert` if given.
    fn client_config(
        ca: &OnBoxCa,
        cert: Option<&IssuedCert>,
        versions: &[&'static SupportedProtocolVersion],
    ) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(ca.cert_der()).expect("CA is a trust anchor");
        let builder =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_protocol_versions(versions)
                .expect("versions")
                .with_root_certificates(roots);
        Arc::new(match cert {
            Some(c) => builder
                .with_client_auth_cert(
                    vec![CertificateDer::from_pem_slice(c.cert_pem.as_bytes()).expect("cert PEM")],
                    PrivateKeyDer::from_pem_slice(c.key_pem.expose().as_bytes()).expect("key PEM"),
                )
                .expect("client auth"),
            None => builder.with_no_client_auth(),
        })
    }

    /// Shuttle TLS records between the two ends until both are done or one fails.
    fn handshake(
        client: &mut ClientConnection,
        server: &mut ServerConnection,
    ) -> Result<(), Failed> {
        fn pump(
            from: &mut impl std::ops::DerefMut<Target = rustls::ConnectionCommon<impl Sized>>,
            to: &mut impl std::ops::DerefMut<Target = rustls::ConnectionCommon<impl Sized>>,
        ) -> bool {
            let mut buf = Vec::new();
            while from.wants_write() {
                from.write_tls(&mut buf).expect("write to a Vec");
            }
            let mut rd = &buf[..];
            while !rd.is_empty() {
                to.read_tls(&mut rd).expect("read from a slice");
            }
            !buf.is_empty()
        }
        for _ in 0..16 {
            let sent = pump(client, server);
            server.process_new_packets().map_err(Failed::Server)?;
            let answered = pump(server, client);
            client.process_new_packets().map_err(Failed::Client)?;
            if !sent && !answered && !client.is_handshaking() && !server.is_handshaking() {
                return Ok(());
            }
        }
        panic!("handshake did not settle");
    }

    fn connect(
        server: &Arc<ServerConfig>,
        client: Arc<ClientConfig>,
        sni: &str,
    ) -> (Result<(), Failed>, ServerConnection) {
        let name = ServerName::try_from(sni.to_string()).expect("server name");
        let mut c = ClientConnection::new(client, name).expect("client connection");
        let mut s = ServerConnection::new(server.clone()).expect("server connection");
        let r = handshake(&mut c, &mut s);
        (r, s)
    }

    fn server_error(r: Result<(), Failed>) -> rustls::Error {
        match r {
            Err(Failed::Server(e)) => e,
            other => panic!("expected the server to refuse the handshake, got {other:?}"),
        }
    }

    #[test]
    fn a_fresh_certificate_is_accepted_and_names_the_user() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let ca = new_ca(tmp.path(), "ca");
        let server = server_config(&ca, &names()).expect("server config");
        let issued = ca.issue_client("alice", HOUR).expect("issue");
        for versions in [
            BOTH,
            &[&rustls::version::TLS12][..],
            &[&rustls::version::TLS13][..],
        ] {
            let (r, s) = connect(
                &server,
                client_config(&ca, Some(&issued), versions),
                "local",
            );
            r.expect("handshake");
            let peer = s
                .peer_certificates()
                .expect("client presented a certificate");
            let id = cert_identity(&peer[0]).expect("identity");
            assert_eq!(
                id,
                CertIdentity {
                    user: "alice".into(),
                    serial: issued.serial.clone(),
                    not_after: id.not_after,
                }
            );
        }
    }

    #[test]
    fn an_expired_certificate_is_refused_in_the_handshake() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let ca = new_ca(tmp.path(), "ca");
        let server = server_config(&ca, &names()).expect("server config");
        let now = SystemTime::now();
        let expired = ca
            .issue_client_with_validity("alice", now - 2 * DAY, now - DAY)
            .expect("issue");
        let (r, s) = connect(&server, client_config(&ca, Some(&expired), BOTH), "local");
        let e = server_error(r);
        assert!(
            matches!(
                e,
                rustls::Error::InvalidCertificate(
                    CertificateError::Expired | CertificateError::ExpiredContext { .. }
                )
            ),
            "{e:?}"
        );
        assert!(s.is_handshaking());

        let future = ca
            .issue_client_with_validity("alice", now + DAY, now + 2 * DAY)
            .expect("issue");
        let (r, _) = connect(&server, client_config(&ca, Some(&future), BOTH), "local");
        let e = server_error(r);
        assert!(
            matches!(
                e,
                rustls::Error::InvalidCertificate(
                    CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. }
                )
            ),
            "{e:?}"
        );
    }

    #[test]
    fn a_certificate_from_another_ca_is_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let ca = new_ca(tmp.path(), "ca");
        let other = new_ca(tmp.path(), "other");
        let server = server_config(&ca, &names()).expect("server config");
        let foreign = other.issue_client("alice", HOUR).expect("issue");
        let (r, _) = connect(&server, client_config(&ca, Some(&foreign), BOTH), "local");
        let e = server_error(r);
        assert!(
            matches!(
                e,
                rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
            ),
            "{e:?}"
        );
    }

    #[test]
    fn no_certificate_is_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let ca = new_ca(tmp.path(), "ca");
        let server = server_config(&ca, &names()).expect("server config");
        for versions in [
            &[&rustls::version::TLS12][..],
            &[&rustls::version::TLS13][..],
        ] {
            let (r, _) = connect(&server, client_config(&ca, None, versions), "local");
            let e = server_error(r);
            assert!(matches!(e, rustls::Error::NoCertificatesPresented), "{e:?}");
        }
    }

    #[test]
    fn the_server_certificate_verifies_for_database_names_and_the_ip() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let ca = new_ca(tmp.path(), "ca");
        let server = server_config(&ca, &names()).expect("server config");
        let issued = ca.issue_client("alice", HOUR).expect("issue");
        let client = client_config(&ca, Some(&issued), BOTH);
        for sni in ["local", "cache", "127.0.0.1"] {
            let (r, _) = connect(&server, client.clone(), sni);
            r.unwrap_or_else(|e| panic!("{sni}: {e:?}"));
        }
        let (r, _) = connect(&server, client, "other");
        match r {
            Err(Failed::Client(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            ))) => {}
            other => panic!("a name not in the certificate must fail on the client: {other:?}"),
        }
    }

    #[test]
    fn sessions_are_never_resumed() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let ca = new_ca(tmp.path(), "ca");
        let server = server_config(&ca, &names()).expect("server config");
        let issued = ca.issue_client("alice", HOUR).expect("issue");
        for versions in [
            &[&rustls::version::TLS12][..],
            &[&rustls::version::TLS13][..],
        ] {
            // One client config = one client session cache, so a second connection would resume
            // if the server let it.
            let client = client_config(&ca, Some(&issued), versions);
            for _ in 0..2 {
                let (r, s) = connect(&server, client.clone(), "local");
                r.expect("handshake");
                assert_eq!(s.handshake_kind(), Some(rustls::HandshakeKind::Full));
            }
        }
    }

    fn self_signed_with_dn(dn: rcgen::DistinguishedName) -> CertificateDer<'static> {
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = dn;
        let key = rcgen::KeyPair::generate().expect("key");
        params.self_signed(&key).expect("cert").der().clone()
    }

    #[test]
    fn cert_identity_refuses_missing_or_bad_common_names() {
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::OrganizationName, "no cn here");
        assert!(matches!(
            cert_identity(&self_signed_with_dn(dn)),
            Err(TlsIdentityError::NoUser(_))
        ));

        for bad in ["../root", "a b", ".x", "line\nbreak"] {
            let mut dn = rcgen::DistinguishedName::new();
            dn.push(rcgen::DnType::CommonName, bad);
            let err = cert_identity(&self_signed_with_dn(dn)).expect_err(bad);
            assert!(matches!(err, TlsIdentityError::NoUser(_)), "{err:?}");
            assert!(!err.to_string().contains('\n'), "{err}");
        }

        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::CommonName, "bob");
        assert_eq!(
            cert_identity(&self_signed_with_dn(dn)).expect("ok").user,
            "bob"
        );

        assert!(cert_identity(&CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x01])).is_err());
    }

    /// What the loopback server saw: the verified identity, or the handshake error.
    fn serve_one_ping(
        listener: std::net::TcpListener,
        config: Arc<ServerConfig>,
    ) -> Result<CertIdentity, String> {
        use std::io::{Read, Write};
        let (tcp, _) = listener.accept().map_err(|e| e.to_string())?;
        tcp.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        let conn = ServerConnection::new(config).map_err(|e| e.to_string())?;
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        let mut seen = Vec::new();
        let mut buf = [0u8; 1024];
        while !seen.windows(4).any(|w| w.eq_ignore_ascii_case(b"PING")) {
            let n = tls.read(&mut buf).map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("client closed".into());
            }
            seen.extend_from_slice(&buf[..n]);
        }
        let peer = tls.conn.peer_certificates().ok_or("no peer certificate")?;
        let id = cert_identity(&peer[0]).map_err(|e| e.to_string())?;
        tls.write_all(b"+PONG\r\n").map_err(|e| e.to_string())?;
        tls.flush().map_err(|e| e.to_string())?;
        Ok(id)
    }

    /// Run redis-cli with a written bundle against a rustls server built by `server_config`.
    fn redis_cli_ping(
        dir: &Path,
        user: &str,
        server: Arc<ServerConfig>,
    ) -> (String, Result<CertIdentity, String>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port().to_string();
        let handle = std::thread::spawn(move || serve_one_ping(listener, server));
        let path = |f: &str| dir.join(f).display().to_string();
        let mut child = std::process::Command::new("redis-cli")
            .args([
                "--tls",
                "--cert",
                &path(&format!("{user}.crt")),
                "--key",
                &path(&format!("{user}.key")),
            ])
            .args([
                "--cacert",
                &path("ca.crt"),
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "--sni",
                "local",
                "PING",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn redis-cli");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while child.try_wait().expect("wait").is_none() {
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("redis-cli did not finish");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().expect("output");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (text, handle.join().expect("server thread"))
    }

    /// The bundle works with the real redis-cli (OpenSSL) as it is written, and an expired one
    /// is refused by the server before any command is read.
    #[test]
    fn redis_cli_connects_with_the_written_bundle() {
        let help = std::process::Command::new("redis-cli")
            .arg("--help")
            .output();
        match help {
            Err(_) => {
                println!("SKIPPED redis_cli_connects_with_the_written_bundle: `redis-cli` is not installed");
                return;
            }
            Ok(out)
                if !String::from_utf8_lossy(&out.stdout).contains("--tls")
                    && !String::from_utf8_lossy(&out.stderr).contains("--tls") =>
            {
                println!("SKIPPED redis_cli_connects_with_the_written_bundle: this redis-cli has no TLS support");
                return;
            }
            Ok(_) => {}
        }
        let tmp = tempfile::tempdir().expect("tempdir");
        let ca = new_ca(tmp.path(), "ca");
        let server = server_config(&ca, &names()).expect("server config");
        let out = tmp.path().join("bundle");
        ca.write_client_bundle("alice", HOUR, &out).expect("bundle");
        let (text, seen) = redis_cli_ping(&out, "alice", server.clone());
        assert_eq!(text.trim(), "PONG", "redis-cli output: {text}");
        let id = seen.expect("server accepted alice");
        assert_eq!(id.user, "alice");

        let now = SystemTime::now();
        let expired = ca
            .issue_client_with_validity("mallory", now - 2 * DAY, now - DAY)
            .expect("issue");
        ca.write_bundle("mallory", &expired, &out).expect("bundle");
        let (text, seen) = redis_cli_ping(&out, "mallory", server);
        assert!(!text.contains("PONG"), "redis-cli output: {text}");
        let err = seen.expect_err("server must refuse an expired certificate");
        assert!(err.to_lowercase().contains("expired"), "{err}");
    }
}
