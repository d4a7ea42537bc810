//! Listeners: bind every configured socket with its final permissions, then accept and spawn
//! one session task per connection. Knows nothing of RESP or of upstreams.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use tokio::net::{TcpListener, TcpStream, UnixListener};
use tokio::task::AbortHandle;
use tokio_rustls::TlsAcceptor;

use crate::catalog::Catalog;
use crate::config::{Config, TcpRouting, UnixListenerConfig};
use crate::proxy::cores::Cores;
use crate::proxy::relay::{UnixAcceptor, UnixSocket};
use crate::proxy::session::{self, TlsListenerSpec};
use crate::proxy::shared::Shared;

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

/// A TLS listener's settings: a reload swaps them whole, each new connection takes the current
/// ones (a connection already accepted keeps what it took).
pub type LiveSpec = Arc<ArcSwap<TlsListenerSpec>>;

/// Every listener, bound and ready to accept.
pub struct Bound {
    pub tcp: Vec<(TcpListener, LiveSpec)>,
    pub unix: Vec<(UnixListener, String, PathBuf)>,
}

impl Bound {
    /// The actual TCP addresses (port 0 in the config becomes a real port here).
    pub fn tcp_addresses(&self) -> Vec<std::net::SocketAddr> {
        self.tcp
            .iter()
            .map(|(_, spec)| spec.load().address)
            .collect()
    }

    /// The TLS listeners' live settings, in config order.
    pub fn tls_specs(&self) -> Vec<LiveSpec> {
        self.tcp.iter().map(|(_, spec)| spec.clone()).collect()
    }
}

/// The settings of the TLS listener bound at `address` (its real port) with routing `l`.
pub fn tls_spec(
    address: std::net::SocketAddr,
    l: &TcpRouting,
    tls: Arc<rustls::ServerConfig>,
) -> TlsListenerSpec {
    TlsListenerSpec {
        address,
        acceptor: TlsAcceptor::from(tls),
        database: l.database.clone(),
        default_database: l.default_database.clone(),
        server_names: l.server_names.clone(),
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
    for (configured, l) in config.tcp_listeners() {
        let listener =
            TcpListener::bind(configured)
                .await
                .map_err(|source| ListenerError::Tcp {
                    address: configured,
                    source,
                })?;
        let address = listener.local_addr().map_err(|source| ListenerError::Tcp {
            address: configured,
            source,
        })?;
        tracing::info!(kind = "tls", %address, database = l.database.as_deref().unwrap_or("-"),
            default_database = l.default_database.as_deref().unwrap_or("-"), "listening");
        let spec = tls_spec(address, l, tls.clone());
        bound
            .tcp
            .push((listener, Arc::new(ArcSwap::from_pointee(spec))));
    }
    if let Some(unix) = &config.boot.unix {
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

/// Accept until `shutdown` resolves: one accept loop per listener on every session runtime
/// (`proxy/cores.rs`), each connection one session task on the runtime it is placed on. Unix
/// sockets still in `bound` (not handed to a [`UnixSockets`]) are served too.
pub async fn run(
    bound: Bound,
    shared: Arc<Shared>,
    cores: Arc<Cores>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let mut accepting = Vec::new();
    for (listener, spec) in bound.tcp {
        match listener.into_std() {
            Ok(listener) => accepting.extend(accept_tcp(listener, spec, &shared, &cores)),
            Err(e) => tracing::error!(address = %spec.load().address, error = %e,
                "cannot accept on the TCP listener"),
        }
    }
    for (listener, db, path) in bound.unix {
        accepting.extend(accept_unix(listener, db, path, &shared, &cores));
    }
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(summarise_refusals(shared.clone()));
    tasks.spawn(session::enforce_grants(shared.clone()));
    shutdown.await;
    tasks.abort_all();
    for task in accepting {
        task.abort();
    }
}

/// The accept loops of one TLS listener, one per session runtime.
fn accept_tcp(
    listener: std::net::TcpListener,
    spec: LiveSpec,
    shared: &Arc<Shared>,
    cores: &Arc<Cores>,
) -> Vec<AbortHandle> {
    let (shared, place) = (shared.clone(), cores.clone());
    cores.on_each(move |_| {
        let listener = listener.try_clone();
        let (shared, spec, place) = (shared.clone(), spec.clone(), place.clone());
        async move {
            let address = spec.load().address;
            let listener = match listener.and_then(TcpAcceptor::new) {
                Ok(listener) => listener,
                Err(e) => {
                    tracing::error!(%address, error = %e, "cannot accept on the TCP listener");
                    return;
                }
            };
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(conn) => conn,
                    Err(e) => {
                        // EMFILE and friends: log, breathe, keep accepting.
                        tracing::warn!(%address, error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                crate::sockopt::tune(&tcp);
                // Not yet identified: a place among the pending handshakes, never a session
                // slot (the session takes one once the certificate says who it is).
                let pending = shared.admission.admit(peer.ip());
                let (shared, spec) = (shared.clone(), spec.load_full());
                place.spawn_session(async move {
                    // Registered with the runtime the session runs on.
                    match TcpStream::from_std(tcp) {
                        Ok(tcp) => session::serve_tls(shared, tcp, peer, spec, pending).await,
                        Err(e) => tracing::warn!(%address, error = %e, "accept failed"),
                    }
                });
            }
        }
    })
}

/// The accept loops of one `<dir>/<db>.sock`, one per session runtime.
fn accept_unix(
    listener: UnixListener,
    db: String,
    path: PathBuf,
    shared: &Arc<Shared>,
    cores: &Arc<Cores>,
) -> Vec<AbortHandle> {
    let listener = match listener.into_std() {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "cannot accept on the Unix socket");
            return Vec::new();
        }
    };
    let (shared, place) = (shared.clone(), cores.clone());
    cores.on_each(move |_| {
        let listener = listener.try_clone();
        let (shared, db, path, place) = (shared.clone(), db.clone(), path.clone(), place.clone());
        async move {
            // Accepted connections are registered for reads only (`relay::UnixSocket`), by
            // the runtime their session runs on.
            let listener = match listener.and_then(UnixAcceptor::new) {
                Ok(listener) => listener,
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e,
                        "cannot accept on the Unix socket");
                    return;
                }
            };
            loop {
                let stream = match listener.accept().await {
                    Ok(stream) => stream,
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let (shared, db, path) = (shared.clone(), db.clone(), path.clone());
                place.spawn_session(async move {
                    match UnixSocket::register(stream) {
                        Ok(stream) => session::serve_unix(shared, stream, db, path).await,
                        Err(e) => {
                            tracing::warn!(path = %path.display(), error = %e, "accept failed")
                        }
                    }
                });
            }
        }
    })
}

/// A listening TCP socket registered for read readiness, accepting connections left
/// unregistered (non-blocking, close-on-exec: `accept4`) for the runtime their session runs on.
struct TcpAcceptor(tokio::io::unix::AsyncFd<mio::net::TcpListener>);

impl TcpAcceptor {
    /// Must run inside the runtime that accepts.
    fn new(listener: std::net::TcpListener) -> std::io::Result<TcpAcceptor> {
        listener.set_nonblocking(true)?;
        let listener = mio::net::TcpListener::from_std(listener);
        Ok(TcpAcceptor(crate::proxy::relay::register_fd(
            listener,
            tokio::io::Interest::READABLE,
        )?))
    }

    async fn accept(&self) -> std::io::Result<(std::net::TcpStream, std::net::SocketAddr)> {
        loop {
            let mut ready = self.0.readable().await?;
            if let Ok(accepted) = ready.try_io(|listener| listener.get_ref().accept()) {
                let (stream, peer) = accepted?;
                return Ok((stream_from_mio(stream), peer));
            }
        }
    }
}

fn stream_from_mio(stream: mio::net::TcpStream) -> std::net::TcpStream {
    std::net::TcpStream::from(std::os::fd::OwnedFd::from(stream))
}

/// One `access.denied.summary` line per interval in which refusals of unidentified
/// connections went beyond the burst logged one by one.
async fn summarise_refusals(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(session::REFUSAL_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Some(s) = shared.refusals.take_summary() {
            let by_reason = s
                .by_reason
                .iter()
                .map(|(r, n)| format!("{r}={n}"))
                .collect::<Vec<_>>()
                .join(",");
            let top_sources = s
                .top_sources
                .iter()
                .map(|(ip, n)| format!("{ip}={n}"))
                .collect::<Vec<_>>()
                .join(",");
            crate::audit::denied_summary(
                session::REFUSAL_INTERVAL,
                s.suppressed,
                &by_reason,
                &top_sources,
            );
        }
    }
}

/// The Unix listener's per-database sockets while the daemon runs: a database added through
/// the admin socket gets its `<db>.sock` at once, a removed one loses it (live sessions on it
/// go on; they hold their own stream).
pub struct UnixSockets {
    dir: PathBuf,
    mode: u32,
    shared: Arc<Shared>,
    cores: Arc<Cores>,
    /// Per socket, its accept loops (one per session runtime).
    live: Mutex<BTreeMap<String, (PathBuf, Vec<AbortHandle>)>>,
}

impl UnixSockets {
    /// Take over the sockets [`bind`] created and serve them.
    pub fn adopt(
        config: &UnixListenerConfig,
        bound: &mut Bound,
        shared: Arc<Shared>,
        cores: Arc<Cores>,
    ) -> Self {
        let set = UnixSockets {
            dir: config.directory.clone(),
            mode: config.mode,
            shared,
            cores,
            live: Mutex::new(BTreeMap::new()),
        };
        for (listener, db, path) in bound.unix.drain(..) {
            set.spawn(listener, db, path);
        }
        set
    }

    pub fn directory(&self) -> &Path {
        &self.dir
    }

    /// Make the sockets match `databases`: create the missing ones, remove the others.
    pub fn sync<'a>(
        &self,
        databases: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), ListenerError> {
        let wanted: BTreeSet<&str> = databases.into_iter().collect();
        let stale: Vec<String> = self
            .lock()
            .keys()
            .filter(|db| !wanted.contains(db.as_str()))
            .cloned()
            .collect();
        for db in stale {
            if let Some((path, tasks)) = self.lock().remove(&db) {
                tasks.iter().for_each(AbortHandle::abort);
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(source) => return Err(ListenerError::Unix { path, source }),
                }
                tracing::info!(kind = "unix", path = %path.display(), database = %db, "stopped listening");
            }
        }
        for db in wanted {
            if self.lock().contains_key(db) {
                continue;
            }
            let path = self.dir.join(format!("{db}.sock"));
            let listener = bind_unix(&path, self.mode).map_err(|source| ListenerError::Unix {
                path: path.clone(),
                source,
            })?;
            tracing::info!(kind = "unix", path = %path.display(), database = %db, "listening");
            self.spawn(listener, db.to_string(), path);
        }
        Ok(())
    }

    fn spawn(&self, listener: UnixListener, db: String, path: PathBuf) {
        let tasks = accept_unix(
            listener,
            db.clone(),
            path.clone(),
            &self.shared,
            &self.cores,
        );
        self.lock().insert(db, (path, tasks));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, (PathBuf, Vec<AbortHandle>)>> {
        // Poisoned only if a panic hit between two map operations; the map is still whole.
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl UnixSockets {
    /// Stop accepting on every `<db>.sock` (the start of a drain); open sessions go on.
    pub fn stop_accepting(&self) {
        for (_, tasks) in self.lock().values() {
            tasks.iter().for_each(AbortHandle::abort);
        }
    }
}

impl Drop for UnixSockets {
    fn drop(&mut self) {
        for (_, tasks) in self.lock().values() {
            tasks.iter().for_each(AbortHandle::abort);
        }
    }
}
