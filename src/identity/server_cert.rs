//! The listeners' server certificate, live: a rustls [`ResolvesServerCert`] that hands every new
//! TLS handshake the current certificate, issued from the on-box CA for the listeners' own names
//! plus every database name (clients send the database as SNI and verify it against the
//! certificate).
//!
//! The certificate changes in two ways, both by an atomic swap that only new handshakes see
//! (an established TLS session keeps the keys it negotiated):
//! - **the catalog's database names change** (`bastion db add|rm`, `bastion import`): the next
//!   handshake notices the new catalog snapshot and re-issues before it answers, so a database
//!   added through the admin socket is reachable by SNI at once, without a restart;
//! - **a reload** (`SIGHUP`, see [`crate::reload`]) installs a certificate issued from the CA as
//!   it is on disk now (a rotated CA is picked up) for the names the new config lists.
//!
//! Must never: block a handshake on anything but issuing one certificate (no I/O), or answer a
//! handshake with no certificate because a re-issue failed — the previous one stays in use and
//! the failure is logged.

use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::ca::{serial_hex, OnBoxCa};
use super::tls::TlsIdentityError;
use crate::catalog::{Catalog, CatalogHandle};
use crate::config::Config;

/// The live server certificate of every TLS listener.
pub struct ServerCert {
    catalog: CatalogHandle,
    /// What certificates are issued from and for; the lock also serializes re-issues.
    source: Mutex<Source>,
    current: ArcSwap<Issued>,
}

/// The CA that signs and the names that are the listeners' own (not database names).
struct Source {
    ca: Arc<OnBoxCa>,
    listener_names: Vec<String>,
}

/// A certificate ready to serve, with what it was issued for.
pub struct Issued {
    key: Arc<CertifiedKey>,
    /// Every SAN, sorted and deduplicated.
    names: Vec<String>,
    /// Hex serial, as logged.
    serial: String,
    /// The catalog snapshot whose database names are in `names`.
    catalog: Arc<Catalog>,
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
    /// Issue the first certificate: `listener_names` (see [`listener_names`]) plus the database
    /// names of the catalog `catalog` holds now.
    pub fn new(
        ca: Arc<OnBoxCa>,
        listener_names: Vec<String>,
        catalog: CatalogHandle,
    ) -> Result<Arc<ServerCert>, TlsIdentityError> {
        let first = issue(&ca, &listener_names, catalog.snapshot())?;
        log_issued(&first, "server certificate issued");
        Ok(Arc::new(ServerCert {
            catalog,
            source: Mutex::new(Source { ca, listener_names }),
            current: ArcSwap::from_pointee(first),
        }))
    }

    /// The CA new handshakes are verified against (replaced by a reload): client certificates
    /// `bastion cert issue` hands out must come from this one.
    pub fn ca(&self) -> Arc<OnBoxCa> {
        self.lock().ca.clone()
    }

    /// The certificate new handshakes get.
    pub fn current(&self) -> Arc<Issued> {
        self.current.load_full()
    }

    /// Issue, without installing, a certificate from `ca` for `listener_names` plus the current
    /// databases: the fallible half of a reload.
    pub fn prepare(
        &self,
        ca: &OnBoxCa,
        listener_names: &[String],
    ) -> Result<Issued, TlsIdentityError> {
        issue(ca, listener_names, self.catalog.snapshot())
    }

    /// Serve `issued` from now on, and issue later certificates from `ca` for `listener_names`.
    pub fn install(&self, issued: Issued, ca: Arc<OnBoxCa>, listener_names: Vec<String>) {
        let mut source = self.lock();
        source.ca = ca;
        source.listener_names = listener_names;
        log_issued(&issued, "server certificate re-issued (reload)");
        self.current.store(Arc::new(issued));
    }

    /// The catalog changed since the current certificate was issued: re-issue if its database
    /// names did. On failure the old certificate stays (and the failure is not retried until
    /// the catalog changes again).
    fn follow_catalog(&self) -> Arc<CertifiedKey> {
        let source = self.lock();
        // Under the lock, so a slow thread holding an older snapshot cannot undo a newer one.
        let catalog = self.catalog.snapshot();
        let current = self.current.load_full();
        if Arc::ptr_eq(&current.catalog, &catalog) {
            return current.key.clone();
        }
        let names = all_names(&source.listener_names, &catalog);
        let next = if names == current.names {
            Issued {
                key: current.key.clone(),
                names,
                serial: current.serial.clone(),
                catalog,
            }
        } else {
            match issue(&source.ca, &source.listener_names, catalog.clone()) {
                Ok(issued) => {
                    log_issued(&issued, "server certificate re-issued (databases changed)");
                    issued
                }
                Err(e) => {
                    tracing::error!(error = %e, serial = %current.serial,
                        "cannot re-issue the server certificate for the changed databases; \
                         new databases are not in it until the next change or reload");
                    Issued {
                        key: current.key.clone(),
                        names: current.names.clone(),
                        serial: current.serial.clone(),
                        catalog,
                    }
                }
            }
        };
        let key = next.key.clone();
        self.current.store(Arc::new(next));
        key
    }

    fn lock(&self) -> MutexGuard<'_, Source> {
        // Poisoned only by a panic between two whole assignments; the source is still whole.
        self.source.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl ResolvesServerCert for ServerCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let current = self.current.load();
        // One pointer comparison per handshake; a re-issue only when the catalog was swapped.
        if Arc::ptr_eq(&current.catalog, &self.catalog.snapshot()) {
            return Some(current.key.clone());
        }
        drop(current);
        Some(self.follow_catalog())
    }
}

/// The names that are the listeners' own: loopback, each listener's bound IP, and the configured
/// `server_names`. Database names are added by [`ServerCert`] from the catalog.
pub fn listener_names(config: &Config) -> Vec<String> {
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    for l in &config.listeners.tcp {
        if !l.address.ip().is_unspecified() {
            names.push(l.address.ip().to_string());
        }
        names.extend(l.server_names.iter().cloned());
    }
    names
}

fn all_names(listener_names: &[String], catalog: &Catalog) -> Vec<String> {
    let mut names: Vec<String> = listener_names
        .iter()
        .cloned()
        .chain(catalog.databases().map(|d| d.name.clone()))
        .collect();
    names.sort();
    names.dedup();
    names
}

fn issue(
    ca: &OnBoxCa,
    listener_names: &[String],
    catalog: Arc<Catalog>,
) -> Result<Issued, TlsIdentityError> {
    let names = all_names(listener_names, &catalog);
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
        catalog,
    })
}

fn log_issued(issued: &Issued, what: &str) {
    tracing::info!(serial = %issued.serial, names = ?issued.names, "{what}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AuthConfig, DatabaseConfig};

    fn database(name: &str) -> DatabaseConfig {
        DatabaseConfig::for_test(name, "127.0.0.1:6379", AuthConfig::None)
    }

    fn catalog(names: &[&str]) -> Catalog {
        let dbs: Vec<DatabaseConfig> = names.iter().map(|n| database(n)).collect();
        Catalog::build(&dbs, &[], &[]).expect("catalog")
    }

    fn setup(dbs: &[&str]) -> (tempfile::TempDir, Arc<ServerCert>, CatalogHandle) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let ca = Arc::new(OnBoxCa::load_or_create(&tmp.path().join("ca")).expect("CA"));
        let handle = CatalogHandle::new(catalog(dbs));
        let cert = ServerCert::new(ca, vec!["localhost".into()], handle.clone()).expect("cert");
        (tmp, cert, handle)
    }

    /// What a handshake would be served, via the same path `resolve` takes.
    fn served(cert: &ServerCert) -> Arc<Issued> {
        let current = cert.current();
        if !Arc::ptr_eq(&current.catalog, &cert.catalog.snapshot()) {
            cert.follow_catalog();
        }
        cert.current()
    }

    #[test]
    fn a_new_database_name_is_in_the_next_certificate() {
        let (_tmp, cert, handle) = setup(&["cache"]);
        let first = served(&cert);
        assert_eq!(first.names(), ["cache", "localhost"]);

        handle.replace(catalog(&["cache", "newdb"]));
        let second = served(&cert);
        assert_eq!(second.names(), ["cache", "localhost", "newdb"]);
        assert_ne!(second.serial(), first.serial());

        handle.replace(catalog(&["newdb"]));
        assert_eq!(served(&cert).names(), ["localhost", "newdb"]);
    }

    #[test]
    fn a_catalog_change_without_new_names_keeps_the_certificate() {
        let (_tmp, cert, handle) = setup(&["cache"]);
        let first = served(&cert);
        handle.replace(catalog(&["cache"]));
        let second = served(&cert);
        assert_eq!(second.serial(), first.serial());
        assert!(Arc::ptr_eq(&second.key, &first.key));
    }

    #[test]
    fn install_switches_ca_and_names() {
        let (tmp, cert, handle) = setup(&["cache"]);
        let other = Arc::new(OnBoxCa::load_or_create(&tmp.path().join("other")).expect("CA"));
        let names = vec!["localhost".to_string(), "bastion.example.com".to_string()];
        let issued = cert.prepare(&other, &names).expect("prepare");
        let before = cert.current().serial().to_string();
        assert_eq!(cert.current().serial(), before, "prepare installs nothing");
        cert.install(issued, other.clone(), names);
        let now = cert.current();
        assert_eq!(now.names(), ["bastion.example.com", "cache", "localhost"]);
        // Issued by the new CA: its chain verifies against it.
        let (_, x509) = x509_parser::parse_x509_certificate(&now.key.cert[0]).expect("parse");
        let issuer_cn = x509.issuer().iter_common_name().next().expect("issuer CN");
        assert_eq!(issuer_cn.as_str().expect("utf8"), other.subject());
        // Later re-issues keep the new source.
        handle.replace(catalog(&["cache", "more"]));
        assert_eq!(
            served(&cert).names(),
            ["bastion.example.com", "cache", "localhost", "more"]
        );
    }
}
