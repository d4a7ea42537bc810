//! The listeners' server certificates, live: a rustls [`ResolvesServerCert`] that hands every
//! new TLS handshake a certificate from the on-box CA for the listeners' own names — plus, when
//! the client's SNI names a database, that one database name (clients send the database as SNI
//! and verify it against the certificate).
//!
//! One certificate per database name, issued on its first handshake and cached: anyone who can
//! reach the port sees the certificate before any client certificate is checked, so no
//! certificate lists the databases (an SNI that names no database gets the listeners' own).
//!
//! Certificates change by atomic swaps that only new handshakes see (an established TLS session
//! keeps the keys it negotiated):
//! - **a database is added** (`bastion db add`, `import`): its first handshake issues its
//!   certificate, so it is reachable by SNI at once, without a restart;
//! - **a reload** (`SIGHUP`, see [`crate::reload`]) installs a certificate issued from the CA as
//!   it is on disk now (a rotated CA is picked up) for the names the new config lists, and
//!   forgets the per-database ones (re-issued from the new CA on their next handshake).
//!
//! Must never: block a handshake on anything but issuing one certificate (no I/O), or answer a
//! handshake with no certificate because an issue failed — the listeners' own certificate is
//! served then and the failure is logged.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::ca::{serial_hex, OnBoxCa};
use super::tls::TlsIdentityError;
use crate::catalog::CatalogHandle;
use crate::config::Config;

/// The live server certificates of every TLS listener.
pub struct ServerCert {
    catalog: CatalogHandle,
    /// What certificates are issued from and for, and the per-database ones; the lock also
    /// serializes issues.
    source: Mutex<Source>,
    /// The listeners' own certificate (no database name in it).
    current: ArcSwap<Issued>,
}

/// The CA that signs, the names that are the listeners' own (not database names), and the
/// certificates issued so far per database name.
struct Source {
    ca: Arc<OnBoxCa>,
    listener_names: Vec<String>,
    per_database: HashMap<String, Arc<Issued>>,
}

/// A certificate ready to serve, with what it was issued for.
pub struct Issued {
    key: Arc<CertifiedKey>,
    /// Every SAN, sorted and deduplicated.
    names: Vec<String>,
    /// Hex serial, as logged.
    serial: String,
}

impl Issued {
    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn serial(&self) -> &str {
        &self.serial
    }
}

impl std::fmt::Debug for ServerCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The private key is deliberately absent.
        let current = self.current.load();
        f.debug_struct("ServerCert")
            .field("serial", &current.serial)
            .field("names", &current.names)
            .finish_non_exhaustive()
    }
}

impl ServerCert {
    /// Issue the listeners' certificate for `listener_names` (see [`listener_names`]).
    pub fn new(
        ca: Arc<OnBoxCa>,
        listener_names: Vec<String>,
        catalog: CatalogHandle,
    ) -> Result<Arc<ServerCert>, TlsIdentityError> {
        let first = issue(&ca, &listener_names, None)?;
        log_issued(&first, "server certificate issued");
        Ok(Arc::new(ServerCert {
            catalog,
            source: Mutex::new(Source {
                ca,
                listener_names,
                per_database: HashMap::new(),
            }),
            current: ArcSwap::from_pointee(first),
        }))
    }

    /// The CA new handshakes are verified against (replaced by a reload): client certificates
    /// `bastion cert issue` hands out must come from this one.
    pub fn ca(&self) -> Arc<OnBoxCa> {
        self.lock().ca.clone()
    }

    /// The listeners' own certificate (what a handshake without a database SNI gets).
    pub fn current(&self) -> Arc<Issued> {
        self.current.load_full()
    }

    /// Issue, without installing, a certificate from `ca` for `listener_names`: the fallible
    /// half of a reload.
    pub fn prepare(
        &self,
        ca: &OnBoxCa,
        listener_names: &[String],
    ) -> Result<Issued, TlsIdentityError> {
        issue(ca, listener_names, None)
    }

    /// Serve `issued` from now on, and issue later certificates from `ca` for `listener_names`
    /// (the per-database ones are re-issued on their next handshake).
    pub fn install(&self, issued: Issued, ca: Arc<OnBoxCa>, listener_names: Vec<String>) {
        let mut source = self.lock();
        source.ca = ca;
        source.listener_names = listener_names;
        source.per_database.clear();
        log_issued(&issued, "server certificate re-issued (reload)");
        self.current.store(Arc::new(issued));
    }

    /// What a handshake with this SNI is served: the database's own certificate when `sni`
    /// names a database (not one of the listeners' own names), else the listeners'.
    pub fn for_sni(&self, sni: Option<&str>) -> Arc<Issued> {
        let Some(name) = sni else {
            return self.current();
        };
        let catalog = self.catalog.snapshot();
        if catalog.database(name).is_none() {
            return self.current();
        }
        let mut source = self.lock();
        if source
            .listener_names
            .iter()
            .any(|n| n.eq_ignore_ascii_case(name))
        {
            return self.current();
        }
        if let Some(issued) = source.per_database.get(name) {
            return issued.clone();
        }
        match issue(&source.ca, &source.listener_names, Some(name)) {
            Ok(issued) => {
                let issued = Arc::new(issued);
                log_issued(&issued, "server certificate issued for a database");
                // Bounded by the catalog: names of removed databases are dropped here.
                source
                    .per_database
                    .retain(|db, _| catalog.database(db).is_some());
                source.per_database.insert(name.to_string(), issued.clone());
                issued
            }
            Err(e) => {
                tracing::error!(error = %e, database = name,
                    "cannot issue a server certificate for the database; serving the listeners' own");
                self.current()
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Source> {
        // Poisoned only by a panic between two whole assignments; the source is still whole.
        self.source.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl ResolvesServerCert for ServerCert {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.for_sni(hello.server_name()).key.clone())
    }
}

/// The names that are the listeners' own: loopback, each listener's bound IP, and the configured
/// `server_names`. A database's name is added to its own certificate by [`ServerCert`].
pub fn listener_names(config: &Config) -> Vec<String> {
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    for (address, l) in config.tcp_listeners() {
        if !address.ip().is_unspecified() {
            names.push(address.ip().to_string());
        }
        names.extend(l.server_names.iter().cloned());
    }
    names
}

fn issue(
    ca: &OnBoxCa,
    listener_names: &[String],
    database: Option<&str>,
) -> Result<Issued, TlsIdentityError> {
    let mut names: Vec<String> = listener_names
        .iter()
        .cloned()
        .chain(database.map(str::to_string))
        .collect();
    names.sort();
    names.dedup();
    let (chain, key) = ca.issue_server(&names)?;
    let serial = x509_parser::parse_x509_certificate(&chain[0])
        .map(|(_, x509)| serial_hex(x509.raw_serial()))
        .map_err(|e| TlsIdentityError::Config(format!("issued server certificate: {e}")))?;
    let key = CertifiedKey::from_der(chain, key, &rustls::crypto::ring::default_provider())
        .map_err(|e| TlsIdentityError::Config(format!("server certificate for {names:?}: {e}")))?;
    Ok(Issued {
        key: Arc::new(key),
        names,
        serial,
    })
}

fn log_issued(issued: &Issued, what: &str) {
    tracing::info!(serial = %issued.serial, names = ?issued.names, "{what}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;
    use crate::config::{AuthConfig, DatabaseConfig};

    fn database(name: &str) -> DatabaseConfig {
        DatabaseConfig::for_test(name, "127.0.0.1:6379", AuthConfig::None)
    }

    fn catalog(names: &[&str]) -> Catalog {
        let dbs: Vec<DatabaseConfig> = names.iter().map(|n| database(n)).collect();
        Catalog::build(&dbs, &[], &[], &Default::default(), None).expect("catalog")
    }

    fn setup(dbs: &[&str]) -> (tempfile::TempDir, Arc<ServerCert>, CatalogHandle) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let ca = Arc::new(OnBoxCa::load_or_create(&tmp.path().join("ca")).expect("CA"));
        let handle = CatalogHandle::new(catalog(dbs));
        let cert = ServerCert::new(ca, vec!["localhost".into()], handle.clone()).expect("cert");
        (tmp, cert, handle)
    }

    #[test]
    fn no_certificate_lists_the_databases() {
        let (_tmp, cert, _handle) = setup(&["cache", "secret-db"]);
        assert_eq!(cert.for_sni(None).names(), ["localhost"]);
        // An SNI that names no database (a scanner guessing) gets the listeners' own.
        assert_eq!(cert.for_sni(Some("guess")).names(), ["localhost"]);
        assert_eq!(cert.for_sni(Some("localhost")).names(), ["localhost"]);
        // A database's own certificate names that database only.
        assert_eq!(cert.for_sni(Some("cache")).names(), ["cache", "localhost"]);
        assert_eq!(
            cert.for_sni(Some("secret-db")).names(),
            ["localhost", "secret-db"]
        );
    }

    #[test]
    fn a_database_certificate_is_issued_once_and_a_new_database_gets_one_at_once() {
        let (_tmp, cert, handle) = setup(&["cache"]);
        let first = cert.for_sni(Some("cache"));
        let again = cert.for_sni(Some("cache"));
        assert_eq!(first.serial(), again.serial());
        assert!(Arc::ptr_eq(&first.key, &again.key));
        assert_eq!(cert.for_sni(Some("newdb")).names(), ["localhost"]);
        handle.replace(catalog(&["cache", "newdb"]));
        assert_eq!(cert.for_sni(Some("newdb")).names(), ["localhost", "newdb"]);
        // Removed: its name is no longer served.
        handle.replace(catalog(&["cache"]));
        assert_eq!(cert.for_sni(Some("newdb")).names(), ["localhost"]);
    }

    #[test]
    fn install_switches_ca_and_names() {
        let (tmp, cert, _handle) = setup(&["cache"]);
        let cached = cert.for_sni(Some("cache")).serial().to_string();
        let other = Arc::new(OnBoxCa::load_or_create(&tmp.path().join("other")).expect("CA"));
        let names = vec!["localhost".to_string(), "bastion.example.com".to_string()];
        let issued = cert.prepare(&other, &names).expect("prepare");
        let before = cert.current().serial().to_string();
        assert_eq!(cert.current().serial(), before, "prepare installs nothing");
        cert.install(issued, other.clone(), names);
        let now = cert.current();
        assert_eq!(now.names(), ["bastion.example.com", "localhost"]);
        // Issued by the new CA: its chain verifies against it.
        let (_, x509) = x509_parser::parse_x509_certificate(&now.key.cert[0]).expect("parse");
        let issuer_cn = x509.issuer().iter_common_name().next().expect("issuer CN");
        assert_eq!(issuer_cn.as_str().expect("utf8"), other.subject());
        // Per-database certificates are re-issued from the new source.
        let db = cert.for_sni(Some("cache"));
        assert_ne!(db.serial(), cached);
        assert_eq!(db.names(), ["bastion.example.com", "cache", "localhost"]);
    }
}
