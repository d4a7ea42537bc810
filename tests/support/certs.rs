//! A throw-away CA made with rcgen: the upstream Redis' server certificate, and client
//! certificates from a CA the bastion does not trust.

use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use super::clients::ClientCert;

pub struct TestCa {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl TestCa {
    pub fn new(common_name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("self-signed CA");
        TestCa {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A server certificate with every entry of `names` (DNS names or IPs) as a SAN:
    /// `(cert_pem, key_pem)`.
    pub fn issue_server(&self, names: &[&str]) -> (String, String) {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).expect("server params");
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().cloned().unwrap_or_default(),
        );
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let key = KeyPair::generate().expect("server key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("sign server cert");
        (cert.pem(), key.serialize_pem())
    }

    /// A legacy server certificate: CN = `common_name` and no subjectAltName at all, which
    /// name verification (RFC 6125, webpki) never matches: `(cert_pem, key_pem)`.
    pub fn issue_server_cn_only(&self, common_name: &str) -> (String, String) {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("server params");
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let key = KeyPair::generate().expect("server key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("sign server cert");
        (cert.pem(), key.serialize_pem())
    }

    /// A client certificate with CN = `user`: `(cert_pem, key_pem)`.
    pub fn issue_client(&self, user: &str) -> (String, String) {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("client params");
        params.distinguished_name.push(DnType::CommonName, user);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().expect("client key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("sign client cert");
        (cert.pem(), key.serialize_pem())
    }

    /// Write `<dir>/<user>.crt`, `<dir>/<user>.key` (0600) and `trust_ca` as `<dir>/ca.crt`.
    ///
    /// `trust_ca` is the CA the *client* trusts for the server: for "a certificate from another
    /// CA" that is the bastion's CA, so only the client certificate is foreign.
    pub fn write_client_bundle(&self, user: &str, dir: &Path, trust_ca: &Path) -> ClientCert {
        let (cert, key) = self.issue_client(user);
        let cert_path = dir.join(format!("{user}.crt"));
        let key_path = dir.join(format!("{user}.key"));
        let ca_path = dir.join("ca.crt");
        fs::write(&cert_path, cert).expect("write client cert");
        write_private(&key_path, key.as_bytes());
        if trust_ca != ca_path {
            fs::copy(trust_ca, &ca_path).expect("copy trusted CA");
        }
        ClientCert {
            cert: cert_path,
            key: key_path,
            ca: ca_path,
        }
    }
}

/// Write a file that only its owner can read (keys, password files).
pub fn write_private(path: &Path, data: &[u8]) -> PathBuf {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    f.write_all(data)
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path.to_path_buf()
}
