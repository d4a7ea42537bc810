//! The running daemon's parts, wired together: the store (source of truth for databases, roles
//! and users), the live catalog built from it, the listeners, and the admin socket.
//!
//! `bastion serve` loads the boot config and the on-box CA, then calls [`Daemon::start`] and
//! [`Daemon::run`]. On the store's first start (no mutation ever written), the databases, roles
//! and users the boot config declares are imported into it once; after that the config's
//! declarations are ignored (with a warning) and `bastion import` / the admin verbs change them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;

use crate::address_policy::OwnListeners;
use crate::admin::{self, auth::AdminGroup, Admin};
use crate::aws::credentials::CredentialChain;
use crate::aws::imds::ProcessEnv;
use crate::catalog::CatalogHandle;
use crate::config::Config;
use crate::identity::ca::OnBoxCa;
use crate::identity::server_cert::{listener_names, ServerCert};
use crate::proxy::listener::{self, Bound, UnixSockets};
use crate::proxy::shared::Shared;
use crate::reload::Reloader;
use crate::store::compaction::CompactionPolicy;
use crate::store::records::{DatabaseRecord, RoleRecord, UserRecord};
use crate::store::{Mutation, State, Store};

/// The store's directory under the state dir.
pub const STORE_DIR: &str = "store";

/// Everything bound and ready; [`Daemon::run`] serves it.
pub struct Daemon {
    bound: Bound,
    shared: Arc<Shared>,
    /// `SIGHUP`: re-read the config, re-issue the server certificate (see crate::reload).
    pub reloader: Arc<Reloader>,
    // Held so the per-database sockets keep being served (dropping it stops them).
    _unix: Option<Arc<UnixSockets>>,
    admin_task: tokio::task::JoinHandle<()>,
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
            .admin
            .group
            .as_deref()
            .map(AdminGroup::resolve)
            .transpose()?;
        let store = open_store(config)?;
        let catalog = CatalogHandle::new(admin::handler::catalog_of(store.state())?);
        // The server certificate follows the catalog's database names (SNI) and reloads.
        let server_cert = ServerCert::new(ca.clone(), listener_names(config), catalog.clone())?;
        let tls = crate::identity::tls::server_config_with_resolver(&ca, server_cert.clone())?;
        let mut bound = listener::bind(config, &catalog.snapshot(), tls).await?;
        let credentials = CredentialChain::default_chain_with_imds(&config.aws.imds, &ProcessEnv);
        let shared = Arc::new(Shared::new(catalog, config.limits.clone(), credentials));
        // An upstream may never be one of our own listeners (a loop past the identity check).
        shared
            .connector
            .set_own_listeners(OwnListeners::with_host_addresses(bound.tcp_addresses()));
        let reloader = Arc::new(Reloader::new(
            config_path.map(Path::to_path_buf),
            config.clone(),
            ca,
            shared.clone(),
            server_cert.clone(),
            bound.tls_specs(),
        ));
        spawn_instance_id_lookup(config, shared.clone());
        let unix = config
            .listeners
            .unix
            .as_ref()
            .map(|u| Arc::new(UnixSockets::adopt(u, &mut bound, shared.clone())));

        let admin_socket = config.admin_socket();
        let mut described: Vec<String> = bound
            .tcp_addresses()
            .iter()
            .map(|a| format!("tls {a}"))
            .collect();
        if let Some(u) = &unix {
            described.push(format!("unix {}", u.directory().display()));
        }
        described.push(format!("admin {}", admin_socket.display()));

        let (databases, users) = (
            store.state().databases().count(),
            store.state().users().count(),
        );
        let listener = admin::server::bind(&admin_socket, group.as_ref())?;
        tracing::info!(kind = "admin", path = %admin_socket.display(),
            group = group.as_ref().map_or("-", |g| g.name.as_str()), "listening");
        let admin = Arc::new(Admin::new(
            store,
            shared.clone(),
            server_cert,
            unix.clone(),
            described,
        ));
        let admin_task = tokio::spawn(admin::server::serve(listener, admin, group));
        Ok(Daemon {
            bound,
            shared,
            reloader,
            _unix: unix,
            admin_task,
            admin_socket,
            databases,
            users,
        })
    }

    /// Serve until `shutdown` resolves.
    /// What every session shares (for systemd's STATUS= line).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        listener::run(self.bound, self.shared, shutdown).await;
        self.admin_task.abort();
        // Not ours to leave behind: the next start would replace it anyway.
        let _ = std::fs::remove_file(&self.admin_socket);
    }
}

/// Learn the EC2 instance id for audit events, in the background: off EC2 (or with IMDS
/// disabled) this fails quietly and events say `instance="-"`.
fn spawn_instance_id_lookup(config: &Config, shared: Arc<Shared>) {
    let client = match crate::aws::imds::ImdsClient::from_config(&config.aws.imds, &ProcessEnv) {
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

/// Open `<state_dir>/store`; on its first start import the boot config's declarations.
/// Also `bastion cert issue` when no daemon runs (it then holds the store's lock itself).
pub fn open_store(config: &Config) -> anyhow::Result<Store> {
    let dir = config.state_dir.join(STORE_DIR);
    let mut store = Store::open(&dir)?;
    let report = store.recovery_report();
    if let Some((offset, bytes)) = report.torn_tail {
        tracing::warn!(path = %dir.display(), offset, bytes, "store: cut a torn (unacknowledged) tail off the log");
    }
    if let Some(version) = report.migrated_from {
        tracing::info!(path = %dir.display(), from = version, "store: migrated to the current format");
    }
    let declared = config.databases.len() + config.roles.len() + config.users.len();
    if store.last_seq().0 == 0 {
        if declared > 0 {
            import_config(&mut store, config).with_context(|| {
                format!(
                    "importing the config's databases, roles and users into the store {}",
                    dir.display()
                )
            })?;
            tracing::info!(path = %dir.display(), databases = config.databases.len(),
                roles = config.roles.len(), users = config.users.len(),
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

fn import_config(store: &mut Store, config: &Config) -> anyhow::Result<()> {
    let mut mutations = Vec::new();
    for r in &config.roles {
        mutations.push(Mutation::PutRole(RoleRecord::try_from(r)?));
    }
    for d in &config.databases {
        mutations.push(Mutation::PutDatabase(DatabaseRecord::try_from(d)?));
    }
    for u in &config.users {
        mutations.push(Mutation::PutUser(UserRecord::try_from(u)?));
    }
    // Check the whole set first: a refusal leaves the store empty, and the next start retries.
    let mut check = State::default();
    for m in &mutations {
        check.apply(m)?;
    }
    admin::handler::catalog_of(&check)?;
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
    Ok(config.admin_socket())
}

/// Where the CLI looks for the boot config when neither `--socket` nor `--config` is given.
pub const DEFAULT_CONFIG: &str = "/etc/bastion/bastion.toml";
