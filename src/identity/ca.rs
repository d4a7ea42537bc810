//! The on-box certificate authority: created on first start under `<state>/ca/`, it issues the
//! client certificates stock Redis clients present (CN = bastion user) and the listeners' server
//! certificates.
//!
//! Files: `ca.crt` (PEM) and `ca.key` (PKCS#8 PEM, mode 0600) in a 0700 directory. Every file is
//! a [`crate::files`] durable write (a temporary name with its final mode from the first byte,
//! fsynced, then moved into place), so a crash never leaves a half-written or briefly
//! world-readable key; the key is read with [`crate::files::read_private`].
//!
//! This module must never: log or put key material into an error, write a private key with a
//! mode wider than 0600 (not even for an instant), or load a CA key that group or others can read.

use std::fs::DirBuilder;
use std::io::ErrorKind;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber, PKCS_ECDSA_P256_SHA256,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::files::{self, Existing, FileError};
use crate::secret::Secret;

/// The CA certificate's file name, in the CA directory and in every client bundle.
pub const CA_CERT_FILE: &str = "ca.crt";
/// The CA private key's file name in the CA directory.
pub const CA_KEY_FILE: &str = "ca.key";
/// Client and server certificates start this far in the past, so a client whose clock runs a
/// little behind the bastion's can use a certificate the moment it is issued.
pub const CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);
/// Lifetime of the on-box CA.
pub const CA_VALIDITY: Duration = Duration::from_secs(3653 * 24 * 3600);
/// Lifetime of a listener certificate (re-issued on every start anyway).
pub const SERVER_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

/// Common-name prefix of the CA; a random suffix keeps two boxes' CAs apart by name too.
const CA_CN_PREFIX: &str = "bastion on-box CA";
/// Serial numbers: 16 random bytes (RFC 5280 allows up to 20).
const SERIAL_LEN: usize = 16;
/// The largest `ca.key` / `ca.crt` read (a P-256 key is ~250 bytes, its certificate ~700).
const MAX_CA_FILE: u64 = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("CA file {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("certificate generation for '{subject}' failed: {message}")]
    Generate { subject: String, message: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "CA key {path} has mode {mode:04o}: group or others can read it; refusing to use it \
         (fix with: chmod 600 {path})"
    )]
    KeyPermissions { path: PathBuf, mode: u32 },
    #[error("invalid user name {user:?}: {message}")]
    InvalidUser { user: String, message: String },
    #[error(transparent)]
    Files(#[from] FileError),
}

impl CaError {
    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CaError + '_ {
        move |source| CaError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    fn file(path: &Path, message: impl Into<String>) -> CaError {
        CaError::File {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }

    fn generate(subject: &str, message: impl ToString) -> CaError {
        CaError::Generate {
            subject: subject.to_string(),
            message: message.to_string(),
        }
    }
}

/// The loaded CA: its certificate and a signer holding its key.
pub struct OnBoxCa {
    dir: PathBuf,
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    subject: String,
    not_after: OffsetDateTime,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for OnBoxCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The signing key is deliberately absent.
        f.debug_struct("OnBoxCa")
            .field("dir", &self.dir)
            .field("subject", &self.subject)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// A freshly issued client certificate.
#[derive(Debug)]
pub struct IssuedCert {
    pub cert_pem: String,
    pub key_pem: Secret,
    /// Hex serial, as shown in audit events.
    pub serial: String,
    pub not_before: std::time::SystemTime,
    pub not_after: std::time::SystemTime,
}

impl OnBoxCa {
    /// Load `<dir>/ca.crt` + `<dir>/ca.key`, or create them (key 0600, dir 0700) if absent.
    pub fn load_or_create(dir: &Path) -> Result<OnBoxCa, CaError> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        match (exists(&cert_path)?, exists(&key_path)?) {
            (false, false) => create(dir)?,
            (true, true) => {}
            // Never paper over half a CA with a new one: that silently invalidates every
            // certificate already handed out.
            (true, false) => return Err(half_ca(&key_path, &cert_path)),
            (false, true) => return Err(half_ca(&cert_path, &key_path)),
        }
        load(dir)
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn cert_der(&self) -> CertificateDer<'static> {
        self.cert_der.clone()
    }

    /// The directory holding `ca.crt` and `ca.key`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The CA's common name (`bastion on-box CA <suffix>`).
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// When the CA certificate expires; no certificate is issued past it.
    pub fn not_after(&self) -> SystemTime {
        self.not_after.into()
    }

    /// A client certificate for `user` (CN = user), valid for `ttl` from now.
    pub fn issue_client(&self, user: &str, ttl: Duration) -> Result<IssuedCert, CaError> {
        check_user(user)?;
        if ttl.is_zero() {
            return Err(CaError::generate(
                user,
                "the validity (ttl) must be longer than zero",
            ));
        }
        let now = now_seconds();
        let not_after = add(now, ttl)
            .ok_or_else(|| CaError::generate(user, format!("ttl {ttl:?} is too large")))?;
        if not_after > self.not_after {
            return Err(CaError::generate(
                user,
                format!(
                    "ttl {} reaches past the CA's own expiry ({}); choose a shorter one",
                    humantime::format_duration(ttl),
                    humantime::format_rfc3339_seconds(self.not_after.into())
                ),
            ));
        }
        self.issue_client_at(user, sub(now, CLOCK_SKEW), not_after)
    }

    /// A client certificate with an explicit validity window, for tests that need an expired or
    /// not-yet-valid certificate. The only difference from [`OnBoxCa::issue_client`] is that the
    /// window is not checked against the clock or the CA's own lifetime.
    pub fn issue_client_with_validity(
        &self,
        user: &str,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<IssuedCert, CaError> {
        check_user(user)?;
        if not_after <= not_before {
            return Err(CaError::generate(
                user,
                "not_after must be later than not_before",
            ));
        }
        self.issue_client_at(user, not_before.into(), not_after.into())
    }

    /// Write `<out>/<user>.crt`, `<out>/<user>.key` (0600) and `<out>/ca.crt`; returns the paths.
    pub fn write_client_bundle(
        &self,
        user: &str,
        ttl: Duration,
        out: &Path,
    ) -> Result<[PathBuf; 3], CaError> {
        let issued = self.issue_client(user, ttl)?;
        self.write_bundle(user, &issued, out)
    }

    /// Write an already issued certificate as `<out>/<user>.crt`, `<out>/<user>.key` (0600) and
    /// `<out>/ca.crt` — the files redis-cli (`--cert/--key/--cacert`) and redis-py
    /// (`ssl_certfile/ssl_keyfile/ssl_ca_certs`) take as they are. Creates `out` (0700) if missing;
    /// existing files of the same names are replaced atomically.
    pub fn write_bundle(
        &self,
        user: &str,
        issued: &IssuedCert,
        out: &Path,
    ) -> Result<[PathBuf; 3], CaError> {
        let pems = BundlePems {
            cert: &issued.cert_pem,
            key: &issued.key_pem,
            ca: &self.cert_pem,
        };
        write_bundle_files(user, &pems, out, Some(&self.dir))
    }

    /// A server certificate for the listeners, with every name/IP in `names` as a SAN.
    pub fn issue_server(
        &self,
        names: &[String],
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), CaError> {
        let subject = names.first().map(String::as_str).unwrap_or("server");
        if names.is_empty() {
            return Err(CaError::generate(
                subject,
                "a server certificate needs at least one name or IP",
            ));
        }
        let mut sans = Vec::with_capacity(names.len());
        for name in names {
            // Parse with the same rules the clients' verifier (and rustls) use for SNI.
            let san = match ServerName::try_from(name.as_str()) {
                Ok(ServerName::IpAddress(_)) => SanType::IpAddress(
                    name.parse::<IpAddr>()
                        .map_err(|e| CaError::generate(subject, format!("{name:?}: {e}")))?,
                ),
                Ok(ServerName::DnsName(_)) => SanType::DnsName(
                    name.as_str()
                        .try_into()
                        .map_err(|e| CaError::generate(subject, format!("{name:?}: {e}")))?,
                ),
                Ok(_) | Err(_) => {
                    return Err(CaError::generate(
                        subject,
                        format!("{name:?} is neither an IP address nor a DNS name"),
                    ))
                }
            };
            if !sans.contains(&san) {
                sans.push(san);
            }
        }
        let now = now_seconds();
        let not_after = add(now, SERVER_VALIDITY).map_or(self.not_after, |t| t.min(self.not_after));
        let mut params = leaf_params(subject, sub(now, CLOCK_SKEW), not_after)?;
        params.subject_alt_names = sans;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .map_err(|e| CaError::generate(subject, e))?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| CaError::generate(subject, e))?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Ok((vec![cert.der().clone()], key_der))
    }

    fn issue_client_at(
        &self,
        user: &str,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<IssuedCert, CaError> {
        let mut params = leaf_params(user, not_before, not_after)?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let serial = serial_hex(
            params
                .serial_number
                .as_ref()
                .map_or(&[][..], |s| s.as_ref()),
        );
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .map_err(|e| CaError::generate(user, e))?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| CaError::generate(user, e))?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: Secret::new(key.serialize_pem()),
            serial,
            not_before: params.not_before.into(),
            not_after: params.not_after.into(),
        })
    }
}

/// The three PEM texts of a client bundle.
pub struct BundlePems<'a> {
    pub cert: &'a str,
    pub key: &'a Secret,
    pub ca: &'a str,
}

/// Write `<out>/<user>.crt`, `<out>/<user>.key` (0600) and `<out>/ca.crt` (see
/// [`OnBoxCa::write_bundle`]) — also for a bundle the daemon issued and sent over the admin
/// socket. `ca_dir`, when known, is refused as `out` so the CA's own files are never touched.
pub fn write_bundle_files(
    user: &str,
    pems: &BundlePems<'_>,
    out: &Path,
    ca_dir: Option<&Path>,
) -> Result<[PathBuf; 3], CaError> {
    check_user(user)?;
    // `<user>.crt` must not collide with the bundle's `ca.crt`.
    if format!("{user}.crt") == CA_CERT_FILE {
        return Err(CaError::InvalidUser {
            user: user.to_string(),
            message: format!("its certificate file would collide with {CA_CERT_FILE}"),
        });
    }
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(out)
        .map_err(CaError::io(out))?;
    // Writing a bundle into the CA's own directory could clobber the CA; refuse outright.
    if let Some(ca_dir) = ca_dir {
        if same_dir(out, ca_dir)? {
            return Err(CaError::file(
                out,
                "is the CA directory; write client bundles somewhere else",
            ));
        }
    }
    let [cert, key, ca] = [
        out.join(format!("{user}.crt")),
        out.join(format!("{user}.key")),
        out.join(CA_CERT_FILE),
    ];
    files::write_durably(&key, pems.key.expose().as_bytes(), 0o600, Existing::Replace)?;
    files::write_durably(&cert, pems.cert.as_bytes(), 0o644, Existing::Replace)?;
    files::write_durably(&ca, pems.ca.as_bytes(), 0o644, Existing::Replace)?;
    Ok([cert, key, ca])
}

/// Lower-case hex of a DER serial with any sign-padding zero bytes removed — the form used in
/// audit events, `bastion cert issue` output and [`crate::identity::tls::cert_identity`].
pub fn serial_hex(raw: &[u8]) -> String {
    let start = raw
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(raw.len().saturating_sub(1));
    hex::encode(&raw[start..])
}

/// Parameters shared by client and server leaves: CN, random serial, not a CA, signature only.
fn leaf_params(
    cn: &str,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<CertificateParams, CaError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    params.serial_number = Some(random_serial(cn)?);
    params.not_before = not_before;
    params.not_after = not_after;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

/// 16 random bytes, first byte in 0x01..=0x7f: positive, and exactly 16 bytes in DER.
fn random_serial(subject: &str) -> Result<SerialNumber, CaError> {
    let mut bytes = [0u8; SERIAL_LEN];
    fill_random(&mut bytes).map_err(|e| CaError::generate(subject, e))?;
    bytes[0] &= 0x7f;
    if bytes[0] == 0 {
        bytes[0] = 0x01;
    }
    Ok(SerialNumber::from_slice(&bytes))
}

fn fill_random(buf: &mut [u8]) -> Result<(), String> {
    crate::random::fill(buf).map_err(|e| e.to_string())
}

fn check_user(user: &str) -> Result<(), CaError> {
    crate::config::check_name("user", user).map_err(|e| CaError::InvalidUser {
        user: user.to_string(),
        message: match e {
            crate::config::ConfigError::Invalid { message, .. } => message,
            other => other.to_string(),
        },
    })
}

/// Now, truncated to whole seconds (certificates carry seconds; `not_after` should match them).
fn now_seconds() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now.replace_nanosecond(0).unwrap_or(now)
}

fn add(t: OffsetDateTime, d: Duration) -> Option<OffsetDateTime> {
    t.checked_add(time::Duration::try_from(d).ok()?)
}

fn sub(t: OffsetDateTime, d: Duration) -> OffsetDateTime {
    time::Duration::try_from(d)
        .ok()
        .and_then(|d| t.checked_sub(d))
        .unwrap_or(t)
}

fn exists(path: &Path) -> Result<bool, CaError> {
    match std::fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(CaError::io(path)(e)),
    }
}

/// One CA file without the other: say which is missing and what replacing them costs.
fn half_ca(missing: &Path, present: &Path) -> CaError {
    CaError::file(
        missing,
        format!(
            "missing while {} exists; restore it, or remove both files to create a new CA \
             (which invalidates every issued certificate)",
            present.display()
        ),
    )
}

/// Generate a new CA into `dir` (created 0700 if missing). Both files must be absent.
fn create(dir: &Path) -> Result<(), CaError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(CaError::io(dir))?;

    let mut suffix = [0u8; 4];
    fill_random(&mut suffix).map_err(|e| CaError::generate(CA_CN_PREFIX, e))?;
    let cn = format!("{CA_CN_PREFIX} {}", serial_hex_all(&suffix));

    let now = now_seconds();
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn.as_str());
    params.distinguished_name = dn;
    params.serial_number = Some(random_serial(&cn)?);
    params.not_before = sub(now, CLOCK_SKEW);
    params.not_after =
        add(now, CA_VALIDITY).ok_or_else(|| CaError::generate(&cn, "validity overflows"))?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];

    let key =
        KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| CaError::generate(&cn, e))?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| CaError::generate(&cn, e))?;
    let key_pem = Zeroizing::new(key.serialize_pem());
    // Key first: a crash in between leaves a key without a certificate, which load_or_create
    // reports rather than replaces. Neither file may clobber one created concurrently.
    files::write_durably(
        &dir.join(CA_KEY_FILE),
        key_pem.as_bytes(),
        0o600,
        Existing::Refuse,
    )?;
    files::write_durably(
        &dir.join(CA_CERT_FILE),
        cert.pem().as_bytes(),
        0o644,
        Existing::Refuse,
    )?;
    Ok(())
}

/// Load and cross-check an existing CA.
fn load(dir: &Path) -> Result<OnBoxCa, CaError> {
    let cert_path = dir.join(CA_CERT_FILE);
    let key_path = dir.join(CA_KEY_FILE);

    let key_der = read_private_key(&key_path)?;
    let key = KeyPair::try_from(&*key_der)
        .map_err(|e| CaError::file(&key_path, format!("not a usable PEM private key ({e})")))?;

    let cert_pem = String::from_utf8(files::read_capped(&cert_path, MAX_CA_FILE)?.to_vec())
        .map_err(|_| CaError::file(&cert_path, "is not UTF-8 text"))?;
    let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .map_err(|e| CaError::file(&cert_path, format!("not a PEM certificate ({e})")))?;
    let (_, x509) = x509_parser::parse_x509_certificate(&cert_der)
        .map_err(|e| CaError::file(&cert_path, format!("certificate does not parse ({e})")))?;

    match x509.basic_constraints() {
        Ok(Some(bc)) if bc.value.ca => {}
        _ => return Err(CaError::file(&cert_path, "is not a CA certificate")),
    }
    if x509.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
        return Err(CaError::file(
            &key_path,
            format!("does not match the CA certificate {}", cert_path.display()),
        ));
    }
    let subject = x509
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default()
        .to_string();
    let not_after = x509.validity().not_after.to_datetime();

    let issuer = Issuer::from_ca_cert_der(&cert_der, key)
        .map_err(|e| CaError::file(&cert_path, format!("cannot sign with this CA ({e})")))?;
    Ok(OnBoxCa {
        dir: dir.to_path_buf(),
        cert_pem,
        cert_der: cert_der.into_owned(),
        subject,
        not_after,
        issuer,
    })
}

/// Read the CA key ([`files::read_private`]: no symlink, a regular file, no group/other
/// access, checked on the opened descriptor) and decode its PEM into a zeroizing PKCS#8 DER.
/// The file's bytes and the DER are zeroized when dropped; the PEM is decoded here rather than
/// by rcgen, whose PEM decoding leaves unzeroized copies. (The `KeyPair` made from the DER
/// keeps its own copy for as long as the CA is loaded: rcgen offers no way to zeroize it; the
/// process is not dumpable and writes no core — see `systemd::no_core_dumps`.)
fn read_private_key(path: &Path) -> Result<Zeroizing<PrivatePkcs8KeyDer<'static>>, CaError> {
    let bytes = files::read_private(path, MAX_CA_FILE).map_err(|e| match e {
        FileError::NotPrivate { path, mode } => CaError::KeyPermissions { path, mode },
        other => other.into(),
    })?;
    PrivatePkcs8KeyDer::from_pem_slice(&bytes)
        .map(Zeroizing::new)
        .map_err(|e| CaError::file(path, format!("not a PEM PKCS#8 private key ({e})")))
}

/// Hex of every byte (no zero stripping), for temporary file names.
fn serial_hex_all(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

fn same_dir(a: &Path, b: &Path) -> Result<bool, CaError> {
    let ma = std::fs::metadata(a).map_err(CaError::io(a))?;
    match std::fs::metadata(b) {
        Ok(mb) => Ok(ma.dev() == mb.dev() && ma.ino() == mb.ino()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(CaError::io(b)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::process::Command;
    use x509_parser::extensions::GeneralName;

    const HOUR: Duration = Duration::from_secs(3600);

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).expect("metadata").mode() & 0o7777
    }

    fn new_ca(root: &Path) -> OnBoxCa {
        OnBoxCa::load_or_create(&root.join("ca")).expect("create CA")
    }

    fn parse(pem: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(pem.as_bytes()).expect("PEM certificate")
    }

    #[test]
    fn created_files_have_private_modes() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("state/ca");
        let ca = OnBoxCa::load_or_create(&dir).expect("create CA");
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(CA_KEY_FILE)), 0o600);
        let key = std::fs::read_to_string(dir.join(CA_KEY_FILE)).expect("read key");
        assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"), "PKCS#8 PEM");
        assert_eq!(
            std::fs::read_to_string(dir.join(CA_CERT_FILE)).expect("read cert"),
            ca.cert_pem()
        );
        // No temporary files left behind.
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
            .collect();
        names.sort();
        assert_eq!(names, [CA_CERT_FILE, CA_KEY_FILE]);
    }

    #[test]
    fn ca_certificate_has_the_promised_shape() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let ca = new_ca(tmp.path());
        let der = ca.cert_der();
        let (_, x509) = x509_parser::parse_x509_certificate(&der).expect("parse");
        assert!(
            ca.subject().starts_with("bastion on-box CA "),
            "{}",
            ca.subject()
        );
        assert!(ca.subject().len() > CA_CN_PREFIX.len() + 1);
        let bc = x509
            .basic_constraints()
            .expect("bc")
            .expect("bc present")
            .value;
        assert!(bc.ca);
        assert_eq!(bc.path_len_constraint, Some(0));
        let ku = x509.key_usage().expect("ku").expect("ku present").value;
        assert!(ku.key_cert_sign() && ku.crl_sign() && !ku.digital_signature());
        let years = (x509.validity().not_after.timestamp()
            - OffsetDateTime::now_utc().unix_timestamp())
            / (365 * 86400);
        assert_eq!(years, 10);
        assert_eq!(
            x509.public_key().algorithm.algorithm,
            x509_parser::oid_registry::OID_KEY_TYPE_EC_PUBLIC_KEY
        );
        // Two CAs never share a name.
        let other = OnBoxCa::load_or_create(&tmp.path().join("other")).expect("second CA");
        assert_ne!(ca.subject(), other.subject());
    }

    #[test]
    fn load_after_create_gives_the_same_ca() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let first = new_ca(tmp.path());
        let key_before = std::fs::read(tmp.path().join("ca").join(CA_KEY_FILE)).expect("key");
        let again = new_ca(tmp.path());
        assert_eq!(first.cert_pem(), again.cert_pem());
        assert_eq!(first.subject(), again.subject());
        assert_eq!(
            key_before,
            std::fs::read(tmp.path().join("ca").join(CA_KEY_FILE)).expect("key")
        );
        // The reloaded CA signs as the same issuer: same DN, and an AKI equal to the CA's SKI.
        let issued = again.issue_client("alice", HOUR).expect("issue");
        let leaf = parse(&issued.cert_pem);
        let (_, leaf) = x509_parser::parse_x509_certificate(&leaf).expect("parse leaf");
        let ca_der = first.cert_der();
        let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).expect("parse CA");
        assert_eq!(leaf.issuer(), ca.subject());
        let ski = ca
            .extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(k) => {
                    Some(k.0.to_vec())
                }
                _ => None,
            })
            .expect("CA has an SKI");
        let aki = leaf
            .extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                x509_parser::extensions::ParsedExtension::AuthorityKeyIdentifier(a) => {
                    a.key_identifier.as_ref().map(|k| k.0.to_vec())
                }
                _ => None,
            })
            .expect("leaf has an AKI");
        assert_eq!(ski, aki);
        leaf.verify_signature(Some(ca.public_key()))
            .expect("signed by the CA key");
    }

    #[test]
    fn group_or_world_readable_key_is_refused_with_path_and_mode() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("ca");
        new_ca(tmp.path());
        let key = dir.join(CA_KEY_FILE);
        for bad in [0o644, 0o640, 0o604] {
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(bad)).expect("chmod");
            let err = OnBoxCa::load_or_create(&dir).expect_err("must refuse");
            assert!(
                matches!(err, CaError::KeyPermissions { mode, .. } if mode == bad),
                "{err:?}"
            );
            let msg = err.to_string();
            assert!(msg.contains(&key.display().to_string()), "{msg}");
            assert!(msg.contains(&format!("{bad:04o}")), "{msg}");
        }
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o400)).expect("chmod");
        OnBoxCa::load_or_create(&dir).expect("0400 is fine");
    }

    #[test]
    fn a_key_that_does_not_match_the_certificate_is_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        new_ca(tmp.path());
        OnBoxCa::load_or_create(&tmp.path().join("other")).expect("other CA");
        let key = tmp.path().join("ca").join(CA_KEY_FILE);
        // Same mode, wrong key.
        std::fs::copy(tmp.path().join("other").join(CA_KEY_FILE), &key).expect("copy");
        let err = OnBoxCa::load_or_create(&tmp.path().join("ca")).expect_err("must refuse");
        let msg = err.to_string();
        assert!(
            msg.contains(&key.display().to_string()) && msg.contains("does not match"),
            "{msg}"
        );
    }

    #[test]
    fn a_symlinked_key_is_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        new_ca(tmp.path());
        let key = tmp.path().join("ca").join(CA_KEY_FILE);
        let moved = tmp.path().join("elsewhere.key");
        std::fs::rename(&key, &moved).expect("move");
        std::os::unix::fs::symlink(&moved, &key).expect("symlink");
        let err = OnBoxCa::load_or_create(&tmp.path().join("ca")).expect_err("must refuse");
        assert!(
            err.to_string().contains(&key.display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn ca_files_over_the_cap_are_refused_naming_it() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("ca");
        new_ca(tmp.path());
        for name in [CA_CERT_FILE, CA_KEY_FILE] {
            let path = dir.join(name);
            let before = std::fs::read(&path).expect("read");
            let mut big = before.clone();
            big.resize(MAX_CA_FILE as usize + 1, b'\n');
            std::fs::write(&path, &big).expect("grow");
            let err = OnBoxCa::load_or_create(&dir).expect_err("over the cap");
            let msg = err.to_string();
            assert!(
                msg.contains(&path.display().to_string()) && msg.contains("65536"),
                "{msg}"
            );
            std::fs::write(&path, &before).expect("restore");
        }
        OnBoxCa::load_or_create(&dir).expect("restored CA loads");
    }

    #[test]
    fn half_a_ca_is_reported_not_replaced() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("ca");
        new_ca(tmp.path());
        let key_before = std::fs::read(dir.join(CA_KEY_FILE)).expect("key");
        std::fs::remove_file(dir.join(CA_CERT_FILE)).expect("rm");
        let err = OnBoxCa::load_or_create(&dir).expect_err("must refuse");
        assert!(
            err.to_string()
                .contains(&dir.join(CA_CERT_FILE).display().to_string()),
            "{err}"
        );
        assert_eq!(
            std::fs::read(dir.join(CA_KEY_FILE)).expect("key"),
            key_before
        );
        assert!(!dir.join(CA_CERT_FILE).exists());

        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("ca");
        new_ca(tmp.path());
        std::fs::remove_file(dir.join(CA_KEY_FILE)).expect("rm");
        let err = OnBoxCa::load_or_create(&dir).expect_err("must refuse");
        assert!(
            err.to_string()
                .contains(&dir.join(CA_KEY_FILE).display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn client_certificate_has_the_promised_fields() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let ca = new_ca(tmp.path());
        let before = now_seconds();
        let issued = ca.issue_client("alice", 8 * HOUR).expect("issue");
        let der = parse(&issued.cert_pem);
        let (_, x509) = x509_parser::parse_x509_certificate(&der).expect("parse");

        let cn: Vec<_> = x509
            .subject()
            .iter_common_name()
            .map(|c| c.as_str().expect("utf8"))
            .collect();
        assert_eq!(cn, ["alice"]);
        let raw = x509.raw_serial();
        assert_eq!(raw.len(), SERIAL_LEN);
        assert!(raw[0] != 0 && raw[0] < 0x80, "positive, minimal 16 bytes");
        assert_eq!(issued.serial, serial_hex_all(raw));
        assert_eq!(issued.serial.len(), 32);

        let nb = x509.validity().not_before.to_datetime();
        let na = x509.validity().not_after.to_datetime();
        let skew = time::Duration::try_from(CLOCK_SKEW).expect("fits");
        assert!(
            (nb - (before - skew)).whole_seconds().abs() <= 5,
            "not_before {nb} vs {before}"
        );
        assert!(
            (na - (before + time::Duration::hours(8)))
                .whole_seconds()
                .abs()
                <= 5
        );
        assert_eq!(SystemTime::from(na), issued.not_after);

        let eku = x509
            .extended_key_usage()
            .expect("eku")
            .expect("eku present")
            .value;
        assert!(eku.client_auth && !eku.server_auth && !eku.any);
        let bc = x509
            .basic_constraints()
            .expect("bc")
            .expect("bc present")
            .value;
        assert!(!bc.ca);
        assert!(issued
            .key_pem
            .expose()
            .starts_with("-----BEGIN PRIVATE KEY-----"));

        let second = ca.issue_client("alice", 8 * HOUR).expect("issue");
        assert_ne!(second.serial, issued.serial);
    }

    #[test]
    fn bad_user_names_and_ttls_are_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let ca = new_ca(tmp.path());
        let long = "x".repeat(65);
        for bad in [
            "",
            ".hidden",
            "a/b",
            "../etc",
            "al ice",
            "ali\nce",
            long.as_str(),
        ] {
            let err = ca.issue_client(bad, HOUR).expect_err(bad);
            assert!(
                matches!(err, CaError::InvalidUser { .. }),
                "{bad:?}: {err:?}"
            );
        }
        ca.issue_client(&"x".repeat(64), HOUR)
            .expect("64 characters is fine");
        ca.issue_client("a.b_c-D9", HOUR)
            .expect("all allowed characters");
        assert!(ca.issue_client("alice", Duration::ZERO).is_err());
        assert!(ca.issue_client("alice", CA_VALIDITY * 2).is_err());
        assert!(ca.issue_client("alice", Duration::MAX).is_err());
        let now = SystemTime::now();
        assert!(ca
            .issue_client_with_validity("alice", now, now - HOUR)
            .is_err());
    }

    #[test]
    fn bundle_files_and_modes() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let ca = new_ca(tmp.path());
        let out = tmp.path().join("new/bundle");
        let [cert, key, ca_cert] = ca.write_client_bundle("alice", HOUR, &out).expect("bundle");
        assert_eq!(cert, out.join("alice.crt"));
        assert_eq!(key, out.join("alice.key"));
        assert_eq!(ca_cert, out.join("ca.crt"));
        assert_eq!(mode(&out), 0o700);
        assert_eq!(mode(&key), 0o600);
        assert_eq!(
            std::fs::read_to_string(&ca_cert).expect("ca"),
            ca.cert_pem()
        );
        assert!(std::fs::read_to_string(&key)
            .expect("key")
            .starts_with("-----BEGIN PRIVATE KEY-----"));

        // Re-issuing replaces the files, and a key that had been loosened comes back 0600.
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let old = std::fs::read_to_string(&cert).expect("cert");
        ca.write_client_bundle("alice", HOUR, &out).expect("again");
        assert_ne!(old, std::fs::read_to_string(&cert).expect("cert"));
        assert_eq!(mode(&key), 0o600);
        assert_eq!(
            std::fs::read_dir(&out).expect("read_dir").count(),
            3,
            "no temp files left"
        );
    }

    #[test]
    fn bundle_never_lands_on_the_ca() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let ca = new_ca(tmp.path());
        let ca_dir = tmp.path().join("ca");
        let key_before = std::fs::read(ca_dir.join(CA_KEY_FILE)).expect("key");
        let err = ca
            .write_client_bundle("alice", HOUR, &ca_dir)
            .expect_err("must refuse");
        assert!(err.to_string().contains("CA directory"), "{err}");
        // Same directory through a different spelling.
        let err = ca
            .write_client_bundle("alice", HOUR, &tmp.path().join("ca/../ca"))
            .expect_err("must refuse");
        assert!(err.to_string().contains("CA directory"), "{err}");
        let err = ca
            .write_client_bundle("ca", HOUR, &tmp.path().join("out"))
            .expect_err("user 'ca'");
        assert!(matches!(err, CaError::InvalidUser { .. }), "{err:?}");
        assert_eq!(
            std::fs::read(ca_dir.join(CA_KEY_FILE)).expect("key"),
            key_before
        );
        OnBoxCa::load_or_create(&ca_dir).expect("CA still loads");
    }

    #[test]
    fn server_certificate_names_and_usage() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let ca = new_ca(tmp.path());
        let names: Vec<String> = [
            "local",
            "cache",
            "127.0.0.1",
            "::1",
            "bastion.example.com",
            "local",
        ]
        .map(String::from)
        .to_vec();
        let (chain, _key) = ca.issue_server(&names).expect("server cert");
        assert_eq!(chain.len(), 1);
        let (_, x509) = x509_parser::parse_x509_certificate(&chain[0]).expect("parse");
        let sans = &x509
            .subject_alternative_name()
            .expect("san")
            .expect("san present")
            .value
            .general_names;
        let mut dns = Vec::new();
        let mut ips = Vec::new();
        for san in sans {
            match san {
                GeneralName::DNSName(d) => dns.push(d.to_string()),
                GeneralName::IPAddress(ip) => ips.push(ip.to_vec()),
                other => panic!("unexpected SAN {other:?}"),
            }
        }
        assert_eq!(dns, ["local", "cache", "bastion.example.com"]);
        assert_eq!(
            ips,
            [
                vec![127, 0, 0, 1],
                std::net::Ipv6Addr::LOCALHOST.octets().to_vec()
            ]
        );
        let eku = x509
            .extended_key_usage()
            .expect("eku")
            .expect("eku present")
            .value;
        assert!(eku.server_auth && !eku.client_auth);
        let days = (x509.validity().not_after.timestamp()
            - OffsetDateTime::now_utc().unix_timestamp())
            / 86400;
        assert!((364..=365).contains(&days), "{days}");

        assert!(ca.issue_server(&[]).is_err());
        assert!(ca.issue_server(&["bad name!".to_string()]).is_err());
    }

    #[test]
    fn debug_output_never_shows_key_material() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let ca = new_ca(tmp.path());
        let issued = ca.issue_client("alice", HOUR).expect("issue");
        let key_body = issued
            .key_pem
            .expose()
            .lines()
            .nth(1)
            .expect("base64 line")
            .to_string();
        let shown = format!("{issued:?} {}", issued.key_pem);
        assert!(
            !shown.contains("PRIVATE KEY") && !shown.contains(&key_body),
            "{shown}"
        );

        let ca_key = std::fs::read_to_string(tmp.path().join("ca").join(CA_KEY_FILE)).expect("key");
        let ca_body = ca_key.lines().nth(1).expect("base64 line");
        let shown = format!("{ca:?}");
        assert!(
            !shown.contains(ca_body) && !shown.contains("PRIVATE"),
            "{shown}"
        );
    }

    #[test]
    fn serial_hex_strips_sign_padding_only() {
        assert_eq!(serial_hex(&[0x00, 0x80, 0x01]), "8001");
        assert_eq!(serial_hex(&[0x7f, 0x00]), "7f00");
        assert_eq!(serial_hex(&[0x00]), "00");
        assert_eq!(serial_hex(&[]), "");
    }

    /// The written bundle is what OpenSSL (under redis-cli and redis-py) accepts as it is.
    #[test]
    fn openssl_accepts_the_bundle() {
        if Command::new("openssl").arg("version").output().is_err() {
            println!("SKIPPED openssl_accepts_the_bundle: the `openssl` binary is not installed");
            return;
        }
        let openssl = |args: &[&str], dir: &Path| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .expect("run openssl");
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned()
                    + &String::from_utf8_lossy(&out.stderr),
            )
        };
        let tmp = tempfile::tempdir().expect("tempdir");
        let ca = new_ca(tmp.path());
        let out = tmp.path().join("bundle");
        ca.write_client_bundle("alice", HOUR, &out).expect("bundle");

        let (ok, text) = openssl(&["verify", "-CAfile", "ca.crt", "alice.crt"], &out);
        assert!(ok && text.contains("alice.crt: OK"), "{text}");
        let (ok, text) = openssl(
            &[
                "verify",
                "-purpose",
                "sslclient",
                "-CAfile",
                "ca.crt",
                "alice.crt",
            ],
            &out,
        );
        assert!(ok, "{text}");
        let (ok, text) = openssl(
            &[
                "verify",
                "-purpose",
                "sslserver",
                "-CAfile",
                "ca.crt",
                "alice.crt",
            ],
            &out,
        );
        assert!(
            !ok,
            "a client certificate must not pass as a server certificate: {text}"
        );

        // The key is PKCS#8 and belongs to the certificate.
        let (ok, key_pub) = openssl(&["pkey", "-in", "alice.key", "-pubout"], &out);
        assert!(ok, "{key_pub}");
        let (ok, cert_pub) = openssl(&["x509", "-in", "alice.crt", "-noout", "-pubkey"], &out);
        assert!(ok, "{cert_pub}");
        assert_eq!(key_pub, cert_pub);

        // A different CA does not vouch for it.
        let other = OnBoxCa::load_or_create(&tmp.path().join("other")).expect("other CA");
        std::fs::write(out.join("other.pem"), other.cert_pem()).expect("write");
        let (ok, text) = openssl(&["verify", "-CAfile", "other.pem", "alice.crt"], &out);
        assert!(!ok, "{text}");

        // The listener certificate verifies for a database name (SNI) and for the IP.
        let (chain, _) = ca
            .issue_server(&["local".into(), "127.0.0.1".into()])
            .expect("server");
        std::fs::write(out.join("server.der"), &chain[0]).expect("write");
        let (ok, text) = openssl(
            &[
                "x509",
                "-inform",
                "DER",
                "-in",
                "server.der",
                "-out",
                "server.crt",
            ],
            &out,
        );
        assert!(ok, "{text}");
        let base = ["verify", "-purpose", "sslserver", "-CAfile", "ca.crt"];
        for (extra, want) in [
            (["-verify_hostname", "local"], true),
            (["-verify_ip", "127.0.0.1"], true),
            (["-verify_hostname", "other"], false),
        ] {
            let args: Vec<&str> = base
                .iter()
                .chain(extra.iter())
                .chain(["server.crt"].iter())
                .copied()
                .collect();
            let (ok, text) = openssl(&args, &out);
            assert_eq!(ok, want, "{args:?}: {text}");
        }
    }
}
