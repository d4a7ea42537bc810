//! The running daemon's parts, wired together: the store (source of truth for databases, roles
//! and users), the live catalog built from it, the listeners, and the admin socket.
//!
//! `bastion serve` loads the boot config and the on-box CA, then calls [`Daemon::start`] and
//! [`Daemon::run`]. On the store's first start (no mutation ever written), the databases, roles
//! and users the boot config declares are imported into it once; after that the config's
//! declarations are ignored (with a warning) and `bastion import` / the admin verbs change them.
//!
//! A settings document left in `<state_dir>/import.toml` (by `bastion firstboot`, from EC2
//! user-data) is imported at start, before the daemon is ready, through the admin import that
//! `bastion import` uses, then renamed `import.toml.applied` so that it is applied once: see
//! [`import_pending`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;

use crate::address_policy::OwnListeners;
use crate::admin::auth::{AdminGroup, Caller};
use crate::admin::wire::{AdminError, Reply, Request};
use crate::admin::{self, Admin};
use crate::aws::credentials::CredentialChain;
use crate::aws::imds::ProcessEnv;
use crate::catalog::{CatalogHandle, SecretDirs};
use crate::config::Config;
use crate::identity::ca::OnBoxCa;
use crate::identity::server_cert::{listener_names, ServerCert};
use crate::proxy::cores::{Cores, StopOnDrop};
use crate::proxy::listener::{self, Bound, UnixSockets};
use crate::proxy::shared::Shared;
use crate::reload::Reloader;
use crate::store::compaction::CompactionPolicy;
use crate::store::records::{DatabaseRecord, RoleRecord, UserRecord};
use crate::store::{Mutation, State, Store};

/// The store's directory under the state dir.
pub const STORE_DIR: &str = "store";
/// A settings document in the state dir waiting to be imported at the next start (`bastion
/// firstboot` writes EC2 user-data's here).
pub const PENDING_IMPORT: &str = "import.toml";
/// What the pending import is renamed to once imported…
pub const APPLIED_IMPORT: &str = "import.toml.applied";
/// …or once refused (not a settings document, or against the store's rules).
pub const REFUSED_IMPORT: &str = "import.toml.refused";
/// The `caller` of the `admin.mutation` audit events of the pending import (`uid` is the
/// daemon's own).
pub const PENDING_IMPORT_CALLER: &str = "pending-import";

/// Everything bound and ready; [`Daemon::run`] serves it.
pub struct Daemon {
    bound: Bound,
    shared: Arc<Shared>,
    /// The session runtimes; stopped when the daemon is dropped (after the drain).
    cores: StopOnDrop,
    /// `SIGHUP`: re-read the config, re-issue the server certificate (see crate::reload).
    pub reloader: Arc<Reloader>,
    // Held so the per-database sockets keep being served (dropping it stops them).
    _unix: Option<Arc<UnixSockets>>,
    admin_task: tokio::task::JoinHandle<()>,
    /// Rotates managed users' passwords (`managed/runtime.rs`).
    managed_task: tokio::task::JoinHandle<()>,
    /// Dials upstream connections ahead (`proxy/upstream/warm.rs`).
    warm_task: tokio::task::JoinHandle<()>,
    /// The `[metrics]` endpoint, when configured.
    metrics_task: Option<tokio::task::JoinHandle<()>>,
    admin: Arc<Admin>,
    pub admin_socket: PathBuf,
    pub databases: usize,
    pub users: usize,
}

impl Daemon {
    /// Open the store (importing the config's declarations on first start), build the catalog,
    /// bind every listener and the admin socket with their final permissions. `config_path` is
    /// the file a reload re-reads (`None`: the embedded dev config).
    pub async fn start(
        config: &Config,
        config_path: Option<&Path>,
        ca: Arc<OnBoxCa>,
    ) -> anyhow::Result<Daemon> {
        let group = config
            .boot
            .admin
            .group
            .as_deref()
            .map(AdminGroup::resolve)
            .transpose()?;
        let secret_dirs = secret_dirs(config);
        let store = open_store(config, &secret_dirs)?;
        let catalog = CatalogHandle::new(admin::handler::catalog_of(
            store.state(),
            &secret_dirs,
            None,
        )?);
        // The server certificate follows the catalog's database names (SNI) and reloads.
        let server_cert = ServerCert::new(ca.clone(), listener_names(config), catalog.clone())?;
        let tls = crate::identity::tls::server_config_with_resolver(&ca, server_cert.clone())?;
        let mut bound = listener::bind(config, &catalog.snapshot(), tls).await?;
        let credentials = CredentialChain::default_chain_with_imds(&config.boot.imds, &ProcessEnv);
        let shared = Arc::new(Shared::new(
            catalog,
            config.live.limits.clone(),
            credentials,
        ));
        // An upstream may never be one of our own listeners (a loop past the identity check).
        shared
            .connector
            .set_own_listeners(OwnListeners::with_host_addresses(bound.tcp_addresses()));
        spawn_instance_id_lookup(config, shared.clone());
        // Sessions run on one single-threaded runtime per core (`proxy/cores.rs`).
        let cores = Arc::new(Cores::start().context("starting the session runtimes")?);
        let unix = config.boot.unix.as_ref().map(|u| {
            Arc::new(UnixSockets::adopt(
                u,
                &mut bound,
                shared.clone(),
                cores.clone(),
            ))
        });

        let admin_socket = config.boot.admin_socket();
        let mut described: Vec<String> = bound
            .tcp_addresses()
            .iter()
            .map(|a| format!("tls {a}"))
            .collect();
        if let Some(u) = &unix {
            described.push(format!("unix {}", u.directory().display()));
        }
        described.push(format!("admin {}", admin_socket.display()));
        let metrics_endpoint = crate::metrics::server::bind(&config.boot.metrics).await?;
        if let Some(endpoint) = &metrics_endpoint {
            tracing::info!(kind = "metrics", endpoint = %endpoint.describe(), "listening");
            described.push(endpoint.describe());
        }

        let listener = admin::server::bind(&admin_socket, group.as_ref())?;
        tracing::info!(kind = "admin", path = %admin_socket.display(),
            group = group.as_ref().map_or("-", |g| g.name.as_str()), "listening");
        let admin = Arc::new(Admin::new(
            store,
            shared.clone(),
            server_cert.clone(),
            unix.clone(),
            described,
            secret_dirs,
        ));
        let reloader = Arc::new(Reloader::new(
            config_path.map(Path::to_path_buf),
            config.clone(),
            ca,
            shared.clone(),
            server_cert,
            bound.tls_specs(),
            admin.clone(),
        ));
        // Before the admin socket serves (no admin change can interleave) and before READY.
        import_pending(&admin, &config.boot.state_dir).await;
        let (databases, users) = match admin.handle(&daemon_caller(), Request::Status) {
            Reply::Status(s) => (s.databases as usize, s.users as usize),
            _ => (0, 0),
        };
        let records: std::sync::Weak<dyn crate::managed::runtime::Records> =
            Arc::downgrade(&admin) as _;
        let managed = crate::managed::runtime::Runtime::new(shared.clone(), records);
        admin.set_managed(managed.clone());
        let managed_task = tokio::spawn(managed.run());
        let warm_task = tokio::spawn(crate::proxy::upstream::warm::run(shared.clone()));
        let admin_task = tokio::spawn(admin::server::serve(listener, admin.clone(), group));
        let metrics_task = metrics_endpoint.map(|endpoint| {
            let admin = admin.clone();
            tokio::spawn(crate::metrics::server::serve(
                endpoint,
                Arc::new(move || admin.metrics_text()),
            ))
        });
        Ok(Daemon {
            bound,
            shared,
            cores: StopOnDrop(cores),
            reloader,
            _unix: unix,
            admin_task,
            managed_task,
            warm_task,
            metrics_task,
            admin,
            admin_socket,
            databases,
            users,
        })
    }

    /// Issue a client certificate for `user` from the daemon itself (`serve --dev`): recorded
    /// in the store like any `cert issue`, so the issued-only check accepts it.
    pub fn issue_local(
        &self,
        user: &str,
        ttl: std::time::Duration,
        why: &str,
    ) -> Result<crate::admin::wire::IssuedBundle, crate::admin::wire::AdminError> {
        let caller = crate::admin::auth::Caller {
            uid: nix::unistd::getuid().as_raw(),
            name: why.to_string(),
        };
        self.admin.issue_cert(&caller, user, ttl.as_secs())
    }

    /// Serve until `shutdown` resolves.
    /// What every session shares (for systemd's STATUS= line).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Serve until `shutdown` resolves, then drain: no new connection is accepted, systemd is
    /// told `STOPPING=1`, open sessions go on for up to `limits.drain_timeout`, then the rest
    /// are closed — every session still writes its `session.end` (`closed_by="shutdown"`).
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        listener::run(
            self.bound,
            self.shared.clone(),
            self.cores.0.clone(),
            shutdown,
        )
        .await;
        if let Some(unix) = &self._unix {
            unix.stop_accepting();
        }
        crate::systemd::stopping();
        // No new session will take them: the warm connections close now, not at exit.
        self.warm_task.abort();
        self.shared.warm.clear();
        drain(&self.shared).await;
        self.admin_task.abort();
        self.managed_task.abort();
        if let Some(task) = &self.metrics_task {
            task.abort();
        }
        // Not ours to leave behind: the next start would replace it anyway.
        let _ = std::fs::remove_file(&self.admin_socket);
    }
}

/// Wait for open sessions to end, up to `limits.drain_timeout`; then stop the rest and give
/// them a moment to write their `session.end`.
async fn drain(shared: &Shared) {
    let open = shared.sessions.len();
    if open == 0 {
        return;
    }
    let timeout = shared.limits().drain_timeout;
    tracing::info!(sessions = open, timeout = %humantime::format_duration(timeout),
        "draining: waiting for open sessions to end");
    let ended = |limit| async move {
        let deadline = tokio::time::Instant::now() + limit;
        while !shared.sessions.is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        shared.sessions.is_empty()
    };
    if ended(timeout).await {
        return;
    }
    let stopped = shared
        .sessions
        .stop_all(crate::proxy::registry::StopReason::Shutdown);
    tracing::info!(
        sessions = stopped,
        "drain timeout: closing the sessions still open"
    );
    // Each stopped session closes both legs and audits its end; bounded in case one is stuck.
    if !ended(std::time::Duration::from_secs(5)).await {
        tracing::warn!(
            sessions = shared.sessions.len(),
            "sessions did not end after being stopped"
        );
    }
}

/// The daemon itself, as the caller of the admin requests it makes at start.
fn daemon_caller() -> Caller {
    Caller {
        uid: nix::unistd::geteuid().as_raw(),
        name: PENDING_IMPORT_CALLER.to_string(),
    }
}

/// Import `<state_dir>/import.toml`, if there is one, the way `bastion import` does (the admin
/// import: the same checks, all or nothing, one `admin.mutation` audit event per record it
/// changes, with `request="import"` and `caller="pending-import"`), then rename it so that it is
/// applied once: a restart does not apply it again, and later admin changes stay.
///
/// - applied (or stored with a socket that could not be made): `import.toml.applied`;
/// - refused (not a settings document, or against the store's rules): `import.toml.refused`,
///   and an error that names the line or the field, never the document's text;
/// - the store could not write: left in place, for the next start.
///
/// Never fails the start: the daemon serves what the store holds either way.
pub async fn import_pending(admin: &Arc<Admin>, state_dir: &Path) {
    let path = state_dir.join(PENDING_IMPORT);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => {
            return tracing::error!(path = %path.display(), error = %e,
                "pending import: cannot read it; left for the next start")
        }
    };
    let size = bytes.len();
    let refuse = |why: &str| {
        let to = state_dir.join(REFUSED_IMPORT);
        let renamed = rename_durably(&path, &to);
        tracing::error!(path = %path.display(), renamed_to = %to.display(), error = why,
            "pending import refused: nothing of it was imported; fix it and run `bastion import`");
        if let Err(e) = renamed {
            tracing::error!(path = %path.display(), error = %e, "pending import: cannot rename it");
        }
    };
    let Ok(text) = String::from_utf8(bytes) else {
        return refuse("not UTF-8 text");
    };
    let declared = match crate::cli::import::Declarative::parse_settings(&text, &path) {
        Ok(declared) => declared,
        Err(e) => return refuse(&format!("{e:#}")),
    };
    let admin = admin.clone();
    let reply = tokio::task::spawn_blocking(move || {
        admin.handle(&daemon_caller(), Request::Import(declared))
    })
    .await;
    let applied = |summary: &str| {
        let to = state_dir.join(APPLIED_IMPORT);
        match rename_durably(&path, &to) {
            Ok(()) => {
                tracing::info!(path = %path.display(), renamed_to = %to.display(), bytes = size,
                "pending import applied: {summary}")
            }
            // Applying it again is harmless (unchanged records are not written), but it would
            // overwrite what an admin changes meanwhile: say so loudly.
            Err(e) => tracing::error!(path = %path.display(), error = %e,
                "pending import applied ({summary}) but not renamed: it will be applied again at the next start; remove it"),
        }
    };
    match reply {
        Ok(Reply::Imported(s)) => applied(&format!(
            "{} added, {} changed, {} unchanged",
            s.added, s.changed, s.unchanged
        )),
        Ok(Reply::Error(e @ AdminError::Listener(_))) => applied(&e.to_string()),
        Ok(Reply::Error(e @ AdminError::Store(_))) => {
            tracing::error!(path = %path.display(), error = %e,
                "pending import: the store could not write it; left for the next start")
        }
        Ok(Reply::Error(e)) => refuse(&e.to_string()),
        Ok(other) => tracing::error!(path = %path.display(), reply = ?other,
            "pending import: unexpected reply; left for the next start"),
        Err(e) => tracing::error!(path = %path.display(), error = %e,
            "pending import: the import task failed; left for the next start"),
    }
}

/// `rename(from, to)`, then fsync the directory so that the rename survives a power loss.
fn rename_durably(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::rename(from, to)?;
    if let Some(dir) = to.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Learn the EC2 instance id for audit events, in the background: off EC2 (or with IMDS
/// disabled) this fails quietly and events say `instance="-"`.
fn spawn_instance_id_lookup(config: &Config, shared: Arc<Shared>) {
    let client = match crate::aws::imds::ImdsClient::from_config(&config.boot.imds, &ProcessEnv) {
        Ok(client) => client,
        Err(e) => return tracing::debug!(error = %e, "no IMDS client for the instance id"),
    };
    tokio::spawn(async move {
        match client.instance_id().await {
            Ok(id) => {
                tracing::info!(instance_id = %id, "running on EC2 instance");
                let _ = shared.instance_id.set(id);
            }
            Err(e) => tracing::debug!(error = %e, "instance id not available from IMDS"),
        }
    });
}

/// Where this daemon reads password files from: the config's `secrets_dir`, and systemd's
/// `$CREDENTIALS_DIRECTORY` when the unit has credentials (`LoadCredential=`).
pub fn secret_dirs(config: &Config) -> SecretDirs {
    SecretDirs::new(
        config.boot.secrets_dir.clone(),
        std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from),
    )
}

/// Open `<state_dir>/store`; on its first start import the boot config's declarations
/// (refused, naming the key, if a password they declare cannot be read under `dirs`).
/// Also `bastion cert issue` when no daemon runs (it then holds the store's lock itself).
pub fn open_store(config: &Config, dirs: &SecretDirs) -> anyhow::Result<Store> {
    let dir = config.boot.state_dir.join(STORE_DIR);
    let mut store = Store::open(&dir)?;
    let report = store.recovery_report();
    if let Some((offset, bytes)) = report.torn_tail {
        tracing::warn!(path = %dir.display(), offset, bytes, "store: cut a torn (unacknowledged) tail off the log");
    }
    if let Some(version) = report.migrated_from {
        tracing::info!(path = %dir.display(), from = version, "store: migrated to the current format");
    }
    let declared = config.seed.databases.len() + config.seed.roles.len() + config.seed.users.len();
    if store.last_seq().0 == 0 {
        if declared > 0 {
            import_config(&mut store, config, dirs).with_context(|| {
                format!(
                    "importing the config's databases, roles and users into the store {}",
                    dir.display()
                )
            })?;
            tracing::info!(path = %dir.display(), databases = config.seed.databases.len(),
                roles = config.seed.roles.len(), users = config.seed.users.len(),
                "store: imported the config's databases, roles and users (first start)");
        }
    } else if declared > 0 {
        tracing::warn!(path = %dir.display(),
            "the config declares databases/roles/users, but the store holds them since its first start: \
             the config's are ignored (change them with `bastion db|role|user` or `bastion import`)");
    }
    let log = store.log_size();
    if CompactionPolicy::default().due(log) {
        store
            .compact()
            .with_context(|| format!("compacting the store {}", dir.display()))?;
        tracing::info!(path = %dir.display(), records = log.records, bytes = log.bytes,
            "store: compacted the recovered log into a snapshot");
    }
    tracing::info!(path = %dir.display(), seq = %store.last_seq(), "store open");
    Ok(store)
}

fn import_config(store: &mut Store, config: &Config, dirs: &SecretDirs) -> anyhow::Result<()> {
    for (i, d) in config.seed.databases.iter().enumerate() {
        if let Some((key, source)) = d.auth.secret_source() {
            crate::catalog::read_password_as(key, &source, dirs)
                .map_err(|e| anyhow::anyhow!("config: databases[{i}].{e}"))?;
        }
    }
    let mut mutations = Vec::new();
    for r in &config.seed.roles {
        mutations.push(Mutation::PutRole(RoleRecord::try_from(r)?));
    }
    for d in &config.seed.databases {
        mutations.push(Mutation::PutDatabase(DatabaseRecord::try_from(d)?));
    }
    for u in &config.seed.users {
        mutations.push(Mutation::PutUser(UserRecord::try_from(u)?));
    }
    // Check the whole set first: a refusal leaves the store empty, and the next start retries.
    let mut check = State::default();
    for m in &mutations {
        check.apply(m)?;
    }
    admin::handler::catalog_of(&check, dirs, None)?;
    for m in mutations {
        store.apply(m)?;
    }
    Ok(())
}

/// The admin socket a CLI verb talks to: `--socket`, else the config's `admin.socket` (or its
/// default under the config's state dir).
pub fn admin_socket_for(socket: Option<&Path>, config: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(s) = socket {
        return Ok(s.to_path_buf());
    }
    let path = config.unwrap_or(Path::new(DEFAULT_CONFIG));
    let config = Config::load(path).with_context(|| {
        "finding the admin socket (give --socket or --config, or set BASTION_ADMIN_SOCKET)"
    })?;
    Ok(config.boot.admin_socket())
}

/// Where the CLI looks for the boot config when neither `--socket` nor `--config` is given.
pub const DEFAULT_CONFIG: &str = "/etc/bastion/bastion.toml";
