//! The upstream side of a session: connecting (TCP, optional TLS verified with rustls; here),
//! the secret the bastion authenticates with (IAM token, password, or nothing: `secret.rs`) and
//! the one AUTH/HELLO exchange on the open connection (`auth.rs`).
//!
//! Errors name the database, the address and which step failed; they never carry the secret.
//! Nothing here knows the relay: the session turns an [`UpstreamStream`] into its leg.

mod auth;
mod secret;
pub mod warm;

pub use auth::{authenticate, AuthError, Authenticated, MAX_REPLY};
pub use secret::{auth_secret, login};
pub use warm::WarmPool;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_util::either::Either;

use crate::address_policy::{self, OwnListeners};
use crate::catalog::Database;
use crate::config::UpstreamTls;
use crate::proxy::ktls::{self, Tls};

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream '{db}' ({addr}) unreachable: {source}")]
    Connect {
        db: String,
        addr: String,
        source: std::io::Error,
    },
    #[error("upstream '{db}' ({addr}) unreachable: no answer within {after:?}")]
    ConnectTimeout {
        db: String,
        addr: String,
        after: Duration,
    },
    #[error(
        "upstream '{db}' ({addr}): TLS handshake failed for server name '{server_name}': {source}"
    )]
    Tls {
        db: String,
        addr: String,
        server_name: String,
        source: std::io::Error,
    },
    #[error("upstream '{db}': TLS settings: {message}")]
    TlsConfig { db: String, message: String },
    #[error("upstream '{db}': password: {message}")]
    Password { db: String, message: String },
    #[error("upstream '{db}': managed password: {message}")]
    Managed { db: String, message: String },
    #[error("upstream '{db}': AWS credentials: {message}")]
    Credentials { db: String, message: String },
    /// The database's `assume_role_arn` could not be assumed (the message names the role and,
    /// for AccessDenied, the trust-policy statement to add).
    #[error("upstream '{db}': {source}")]
    AssumeRole {
        db: String,
        source: crate::aws::assume_role::AssumeRoleError,
    },
    /// An IAM database without `auth.region`, and no region from the instance either.
    #[error("upstream '{}': {error}", error.database)]
    Region {
        error: crate::aws::region::RegionError,
    },
    #[error("upstream '{db}': {message}")]
    Token { db: String, message: String },
    /// An IAM database without `tls` and without `allow_plaintext_auth` (one stored before
    /// the rule existed): no token is made, so none travels in clear.
    #[error(
        "upstream '{db}': auth mode '{mode}' needs tls (or allow_plaintext_auth = true on a \
         test rig); no token was sent"
    )]
    PlaintextToken { db: String, mode: &'static str },
}

/// An open upstream connection, before the session hands it to the relay: plaintext or TLS.
/// The TLS side is in the kernel (kTLS) when it can be (`proxy/ktls`).
pub type UpstreamStream = Either<TcpStream, Tls<TlsStream<TcpStream>>>;

/// Register `stream`'s socket with the calling runtime (a warm connection dialed or cleaned on
/// another: `proxy/cores.rs`).
pub fn rehome(stream: &mut UpstreamStream) -> std::io::Result<()> {
    match stream {
        Either::Left(tcp) => crate::proxy::cores::rehome(tcp),
        Either::Right(Tls::Kernel(ktls)) => crate::proxy::cores::rehome(ktls.tcp_mut()),
        Either::Right(Tls::User(tls)) => crate::proxy::cores::rehome(tls.get_mut().0),
    }
}

/// Connects to upstreams; caches one rustls client config per trust setting.
#[derive(Default)]
pub struct Connector {
    tls_configs: Mutex<HashMap<Option<PathBuf>, Arc<rustls::ClientConfig>>>,
    own: std::sync::RwLock<Arc<OwnListeners>>,
}

impl Connector {
    pub fn new() -> Self {
        Self::default()
    }

    /// The bastion's own TCP listeners: never an upstream (set once they are bound).
    pub fn set_own_listeners(&self, own: OwnListeners) {
        *self.own.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(own);
    }

    /// Resolve the database's host, judge EVERY address it resolves to by the upstream address
    /// policy (one refused address refuses the name: it was pointed there on purpose), then
    /// connect to the checked addresses in order — never to a second resolution of the name.
    async fn connect_checked(&self, db: &Database) -> std::io::Result<TcpStream> {
        let resolved: Vec<std::net::SocketAddr> =
            tokio::net::lookup_host((db.address.host.as_str(), db.address.port))
                .await?
                .collect();
        let own = self.own.read().unwrap_or_else(|e| e.into_inner()).clone();
        for addr in &resolved {
            if let Err(refused) = address_policy::check(*addr, &db.allow_addresses, &own) {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    format!("refused by the upstream address policy: {refused}"),
                ));
            }
        }
        let mut last = None;
        for addr in resolved {
            match TcpStream::connect(addr).await {
                Ok(tcp) => return Ok(tcp),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "the name resolved to no address",
            )
        }))
    }

    /// TCP connect (bounded by `timeout`), then TLS when the database asks for it.
    pub async fn connect(
        &self,
        db: &Database,
        timeout: Duration,
    ) -> Result<UpstreamStream, UpstreamError> {
        let addr = db.address.to_string();
        let tcp = match tokio::time::timeout(timeout, self.connect_checked(db)).await {
            Err(_) => {
                return Err(UpstreamError::ConnectTimeout {
                    db: db.name.clone(),
                    addr,
                    after: timeout,
                })
            }
            Ok(Err(source)) => {
                return Err(UpstreamError::Connect {
                    db: db.name.clone(),
                    addr,
                    source,
                })
            }
            Ok(Ok(tcp)) => tcp,
        };
        // No Nagle delay on small frames; keepalive finds an upstream that vanished.
        crate::sockopt::tune(&tcp);
        let Some(tls) = &db.tls else {
            return Ok(Either::Left(tcp));
        };
        let config = self.tls_config(&db.name, tls)?;
        let name = tls
            .server_name
            .clone()
            .unwrap_or_else(|| db.address.host.clone());
        let server_name =
            ServerName::try_from(name.clone()).map_err(|e| UpstreamError::TlsConfig {
                db: db.name.clone(),
                message: format!("server name '{name}' is invalid: {e}"),
            })?;
        let stream = tokio::time::timeout(timeout, ktls::connect(config, server_name, tcp))
            .await
            .map_err(|_| UpstreamError::ConnectTimeout {
                db: db.name.clone(),
                addr: addr.clone(),
                after: timeout,
            })?
            .map_err(|source| UpstreamError::Tls {
                db: db.name.clone(),
                addr,
                server_name: name,
                source,
            })?;
        Ok(Either::Right(stream))
    }

    fn tls_config(
        &self,
        db: &str,
        tls: &UpstreamTls,
    ) -> Result<Arc<rustls::ClientConfig>, UpstreamError> {
        let mut cache = self.tls_configs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(config) = cache.get(&tls.ca_file) {
            return Ok(config.clone());
        }
        let config = Arc::new(build_tls_config(db, tls.ca_file.as_deref())?);
        cache.insert(tls.ca_file.clone(), config.clone());
        Ok(config)
    }
}

/// The largest upstream `ca_file` read (a bundle of a few hundred CA certificates).
const MAX_CA_FILE: u64 = 1024 * 1024;

fn build_tls_config(
    db: &str,
    ca_file: Option<&Path>,
) -> Result<rustls::ClientConfig, UpstreamError> {
    let err = |message: String| UpstreamError::TlsConfig {
        db: db.to_string(),
        message,
    };
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            // Capped: a ca_file of /dev/zero or a huge file is an error, not gigabytes read.
            let pem = crate::files::read_capped(path, MAX_CA_FILE)
                .map_err(|e| err(format!("cannot read ca_file: {e}")))?;
            let certs: Vec<_> = rustls_pki_types::CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<_, _>>()
                .map_err(|e| err(format!("ca_file {}: {e}", path.display())))?;
            if certs.is_empty() {
                return Err(err(format!(
                    "ca_file {} holds no certificate",
                    path.display()
                )));
            }
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| err(format!("ca_file {}: {e}", path.display())))?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            for cert in native.certs {
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(err(
                    "no ca_file given and the system trust store is empty".into()
                ));
            }
        }
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| err(e.to_string()))
        .map(|b| {
            let mut config = b.with_root_certificates(roots).with_no_client_auth();
            // kTLS: rustls may hand the session keys to the kernel (`proxy/ktls`).
            config.enable_secret_extraction = true;
            config
        })
}

/// A plaintext IAM database for the unit tests of this module.
#[cfg(test)]
fn iam_database(
    name: &str,
    address: &str,
    service: crate::config::IamService,
    region: &str,
    target: &str,
) -> Database {
    Database {
        name: name.into(),
        address: address.parse().unwrap(),
        tls: None,
        auth: crate::catalog::Auth::Iam {
            service,
            region: Some(region.into()),
            target: target.into(),
            serverless: false,
        },
        default_db_user: None,
        assume_role: None,
        allow_plaintext_auth: false,
        legacy_auth: false,
        relay: Default::default(),
        allow_addresses: Vec::new(),
    }
}
