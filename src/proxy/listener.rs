//! Listeners: bind every configured socket with its final permissions, then accept and spawn
//! one session task per connection. Knows nothing of RESP or of upstreams.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::{TcpListener, UnixListener};
use tokio_rustls::TlsAcceptor;

use crate::catalog::Catalog;
use crate::config::Config;
use crate::proxy::session::{self, Shared, TlsListenerSpec};

#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    #[error("cannot listen on {address}: {source}")]
    Tcp {
        address: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot create Unix socket {path}: {source}")]
    Unix {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Every listener, bound and ready to accept.
pub struct Bound {
    pub tcp: Vec<(TcpListener, Arc<TlsListenerSpec>)>,
    pub unix: Vec<(UnixListener, String, PathBuf)>,
}

impl Bound {
    /// The actual TCP addresses (port 0 in the config becomes a real port here).
    pub fn tcp_addresses(&self) -> Vec<std::net::SocketAddr> {
        self.tcp.iter().map(|(_, spec)| spec.address).collect()
    }
}

/// Bind all listeners: TCP+TLS ones, and `<dir>/<db>.sock` for each database.
pub async fn bind(
    config: &Config,
    catalog: &Catalog,
    tls: Arc<rustls::ServerConfig>,
) -> Result<Bound, ListenerError> {
    let mut bound = Bound {
        tcp: Vec::new(),
        unix: Vec::new(),
    };
    for l in &config.listeners.tcp {
        let listener = TcpListener::bind(l.address)
            .await
            .map_err(|source| ListenerError::Tcp {
                address: l.address,
                source,
            })?;
        let address = listener.local_addr().map_err(|source| ListenerError::Tcp {
            address: l.address,
            source,
        })?;
        tracing::info!(kind = "tls", %address, database = l.database.as_deref().unwrap_or("-"),
            default_database = l.default_database.as_deref().unwrap_or("-"), "listening");
        let spec = TlsListenerSpec {
            address,
            acceptor: TlsAcceptor::from(tls.clone()),
            database: l.database.clone(),
            default_database: l.default_database.clone(),
            server_names: l.server_names.clone(),
        };
        bound.tcp.push((listener, Arc::new(spec)));
    }
    if let Some(unix) = &config.listeners.unix {
        let dir = &unix.directory;
        create_socket_dir(dir).map_err(|source| ListenerError::Unix {
            path: dir.clone(),
            source,
        })?;
        for db in catalog.databases() {
            let path = dir.join(format!("{}.sock", db.name));
            let listener = bind_unix(&path, unix.mode).map_err(|source| ListenerError::Unix {
                path: path.clone(),
                source,
            })?;
            bound.unix.push((listener, db.name.clone(), path));
        }
        tracing::info!(kind = "unix", directory = %dir.display(), mode = format!("{:04o}", unix.mode), "listening");
    }
    Ok(bound)
}

fn create_socket_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    // Traversable by the local users who connect; sockets carry their own mode.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
}

fn bind_unix(path: &Path, mode: u32) -> std::io::Result<UnixListener> {
    match std::fs::symlink_metadata(path) {
        // A socket left by a previous run: safe to replace. Anything else is not ours.
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path)?,
        Ok(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "exists and is not a socket; refusing to replace it",
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(listener)
}

/// Accept until `shutdown` resolves. Each connection becomes one session task.
pub async fn run(
    bound: Bound,
    shared: Arc<Shared>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let slots = shared.slots.clone();
    let mut tasks = tokio::task::JoinSet::new();
    for (listener, spec) in bound.tcp {
        let (shared, slots) = (shared.clone(), slots.clone());
        tasks.spawn(async move {
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(conn) => conn,
                    Err(e) => {
                        // EMFILE and friends: log, breathe, keep accepting.
                        tracing::warn!(address = %spec.address, error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    tracing::warn!(client.addr = %peer, "session limit reached; connection closed");
                    continue;
                };
                let (shared, spec) = (shared.clone(), spec.clone());
                tokio::spawn(async move {
                    session::serve_tls(shared, tcp, peer, spec).await;
                    drop(permit);
                });
            }
        });
    }
    for (listener, db, path) in bound.unix {
        let (shared, slots) = (shared.clone(), slots.clone());
        tasks.spawn(async move {
            loop {
                let stream = match listener.accept().await {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    tracing::warn!(path = %path.display(), "session limit reached; connection closed");
                    continue;
                };
                let (shared, db, path) = (shared.clone(), db.clone(), path.clone());
                tokio::spawn(async move {
                    session::serve_unix(shared, stream, db, path).await;
                    drop(permit);
                });
            }
        });
    }
    shutdown.await;
    tasks.abort_all();
}
