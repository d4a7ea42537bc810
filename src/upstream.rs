//! The upstream side of a session: connecting (TCP, optional TLS verified with rustls) and
//! producing the secret the bastion authenticates with (IAM token, password, or nothing).
//!
//! Errors name the database, the address and which step failed; they never carry the secret.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_util::either::Either;

use crate::address_policy::{self, OwnListeners};
use crate::aws::assume_role::RoleSpec;
use crate::aws::credentials::CredentialChain;
use crate::aws::token::{self, TokenRequest};
use crate::config::{AuthConfig, DatabaseConfig, UpstreamTls};
use crate::proxy::handshake::upstream::DEFAULT_USER;
use crate::proxy::relay::Leg;
use crate::secret::Secret;

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

/// An open upstream connection, before it becomes a relay [`Leg`]: plaintext or TLS.
pub type UpstreamStream = Either<TcpStream, Box<TlsStream<TcpStream>>>;

/// Hand an upstream connection to the relay.
pub fn into_leg(stream: UpstreamStream) -> Leg {
    match stream {
        Either::Left(tcp) => Leg::Tcp(tcp),
        Either::Right(tls) => Leg::Tls(tls),
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
    async fn connect_checked(&self, db: &DatabaseConfig) -> std::io::Result<TcpStream> {
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
        db: &DatabaseConfig,
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
        let stream = tokio::time::timeout(
            timeout,
            TlsConnector::from(config).connect(server_name, tcp),
        )
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
        Ok(Either::Right(Box::new(stream)))
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
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
}

/// The secret for `db_user` on `db` (`None`: a session with no db-user, see
/// [`crate::rbac`]), or `None` for auth mode `none`.
pub async fn auth_secret(
    db: &DatabaseConfig,
    db_user: Option<&str>,
    credentials: &CredentialChain,
) -> Result<Option<Secret>, UpstreamError> {
    if db.auth.needs_tls() && db.tls.is_none() && !db.allow_plaintext_auth {
        return Err(UpstreamError::PlaintextToken {
            db: db.name.clone(),
            mode: db.auth.mode_name(),
        });
    }
    match &db.auth {
        AuthConfig::None => Ok(None),
        AuthConfig::Password {
            password_file: Some(path),
            ..
        } => read_password_file(path)
            .map(Some)
            .map_err(|message| UpstreamError::Password {
                db: db.name.clone(),
                message,
            }),
        AuthConfig::Password {
            password_env: Some(var),
            ..
        } => match std::env::var(var) {
            Ok(v) if !v.is_empty() => Ok(Some(Secret::new(v))),
            _ => Err(UpstreamError::Password {
                db: db.name.clone(),
                message: format!("environment variable {var} is not set or empty"),
            }),
        },
        AuthConfig::Password { .. } => Err(UpstreamError::Password {
            db: db.name.clone(),
            message: "neither password_file nor password_env is set".into(),
        }),
        AuthConfig::Iam {
            service,
            region,
            target,
            serverless,
        } => {
            let db_user = db_user.ok_or_else(|| UpstreamError::Token {
                db: db.name.clone(),
                message: "an IAM auth token needs a db-user".into(),
            })?;
            let region = credentials
                .regions()
                .for_database(&db.name, region.as_deref())
                .await
                .map_err(|error| UpstreamError::Region { error })?;
            let creds = match db.assume_role() {
                // The role's credentials, assumed with the chain's as the source, through STS
                // in the database's region.
                Some(role) => credentials
                    .assumed(&RoleSpec {
                        region: Some(region.region.clone()),
                        ..role
                    })
                    .await
                    .map_err(|source| UpstreamError::AssumeRole {
                        db: db.name.clone(),
                        source,
                    })?,
                None => {
                    credentials
                        .credentials()
                        .await
                        .map_err(|e| UpstreamError::Credentials {
                            db: db.name.clone(),
                            message: e.to_string(),
                        })?
                        .0
                }
            };
            let request = TokenRequest {
                service: *service,
                region: &region.region,
                target,
                db_user,
                serverless: *serverless,
            };
            token::generate(&request, &creds, SystemTime::now())
                .map(Some)
                .map_err(|e| UpstreamError::Token {
                    db: db.name.clone(),
                    message: e.to_string(),
                })
        }
    }
}

/// The largest password file read (an IAM-token-sized password is ~1.5 KB).
pub const MAX_PASSWORD_FILE: u64 = 64 * 1024;

/// A password file must be private to the bastion (no group/other bits) — like ssh keys —,
/// a regular file (no symlink) and at most [`MAX_PASSWORD_FILE`] bytes
/// ([`crate::files::read_private`]).
pub fn read_password_file(path: &Path) -> Result<Secret, String> {
    let bytes = crate::files::read_private(path, MAX_PASSWORD_FILE).map_err(|e| e.to_string())?;
    let text =
        std::str::from_utf8(&bytes).map_err(|_| format!("{} is not UTF-8 text", path.display()))?;
    let password = text.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(Secret::new(password))
}

/// Turn the upstream's refusal of our AUTH/HELLO into an operator-grade message naming the
/// likely cause. Shared by the session (the client sees it) and `bastion doctor`.
///
/// `error` is the upstream's error text; only its code and a control-free prefix are echoed.
pub fn explain_rejection(db: &DatabaseConfig, db_user: Option<&str>, error: &str) -> String {
    let code = error.split_whitespace().next().unwrap_or("");
    let auth_failure =
        matches!(code, "WRONGPASS" | "NOAUTH" | "NOPERM") || error.contains("invalid password");
    if !auth_failure {
        return format!(
            "upstream '{}' refused the handshake: {}",
            db.name,
            sanitize(error)
        );
    }
    let user = db_user.unwrap_or(DEFAULT_USER);
    match &db.auth {
        AuthConfig::Iam { service, target, .. } => format!(
            "upstream '{}' rejected the IAM auth token for db-user '{user}' ({code}): check that the \
             bastion's AWS principal is allowed {} on '{target}' and on user '{user}', and that \
             user '{user}' exists with IAM authentication enabled",
            db.name,
            service.connect_action(),
        ),
        AuthConfig::Password { .. } if db_user.is_none() => format!(
            "upstream '{}' rejected the password sent with one-argument AUTH (no db-user: the \
             server's default user) ({code})",
            db.name
        ),
        AuthConfig::Password { .. } => format!(
            "upstream '{}' rejected the password for db-user '{user}' ({code})",
            db.name
        ),
        AuthConfig::None => format!(
            "upstream '{}' requires authentication ({code}) but its auth mode is 'none'",
            db.name
        ),
    }
}

fn sanitize(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};

    #[test]
    fn password_file_must_be_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        let mut f = std::fs::OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(0o600)
            .open(&path)
            .unwrap();
        f.write_all(b"s3cret\n").unwrap();
        assert_eq!(read_password_file(&path).unwrap().expose(), "s3cret");

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = read_password_file(&path).unwrap_err();
        assert!(
            e.contains("0640") && e.contains("pw") && !e.contains("s3cret"),
            "{e}"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        let e = read_password_file(&link).unwrap_err();
        assert!(e.contains("symbolic link") && !e.contains("s3cret"), "{e}");
    }

    /// A database stored before the plaintext rule (or migrated from format 1): its sessions
    /// get no token, whatever the credentials; `allow_plaintext_auth` lifts that.
    #[tokio::test]
    async fn an_iam_database_without_tls_gets_no_token() {
        let mut db = DatabaseConfig {
            name: "rig".into(),
            address: "127.0.0.1:6390".parse().unwrap(),
            tls: None,
            auth: AuthConfig::Iam {
                service: crate::config::IamService::Elasticache,
                region: Some("us-east-1".into()),
                target: "rg".into(),
                serverless: false,
            },
            default_db_user: None,
            assume_role_arn: None,
            external_id: None,
            session_name: None,
            allow_plaintext_auth: false,
            legacy_auth: false,
            relay: Default::default(),
            allow_addresses: Vec::new(),
        };
        let chain = CredentialChain::builder().build();
        let e = auth_secret(&db, Some("app"), &chain).await.unwrap_err();
        assert!(
            matches!(e, UpstreamError::PlaintextToken { .. })
                && e.to_string().contains("'rig'")
                && e.to_string().contains("allow_plaintext_auth"),
            "{e}"
        );
        db.allow_plaintext_auth = true;
        let e = auth_secret(&db, Some("app"), &chain).await.unwrap_err();
        assert!(matches!(e, UpstreamError::Credentials { .. }), "{e}");
    }

    #[test]
    fn rejection_names_the_cause() {
        let db = DatabaseConfig {
            name: "cache".into(),
            address: "h:6379".parse().unwrap(),
            tls: None,
            auth: AuthConfig::Iam {
                service: crate::config::IamService::Memorydb,
                region: Some("eu-west-1".into()),
                target: "c1".into(),
                serverless: false,
            },
            default_db_user: None,
            assume_role_arn: None,
            external_id: None,
            session_name: None,
            allow_plaintext_auth: false,
            legacy_auth: false,
            relay: Default::default(),
            allow_addresses: Vec::new(),
        };
        let m = explain_rejection(
            &db,
            Some("app"),
            "WRONGPASS invalid username-password pair or user is disabled.",
        );
        assert!(
            m.contains("IAM auth token") && m.contains("memorydb:Connect") && m.contains("'app'"),
            "{m}"
        );
        let m = explain_rejection(&db, Some("app"), "NOPROTO unsupported protocol version");
        assert!(m.contains("NOPROTO") && !m.contains("IAM"), "{m}");
    }
}
