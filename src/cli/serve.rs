//! `bastion serve`: load the config (or the embedded dev one), prepare the on-box CA, bind every
//! listener, then run until SIGTERM / SIGINT.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use std::sync::Arc;

use anyhow::Context as _;

use super::ServeArgs;
use crate::config::Config;
use crate::identity::ca::OnBoxCa;
use crate::proxy::shared::Shared;
use crate::reload::Reloader;
use crate::systemd;

/// Log targets that could print secrets at their most verbose levels.
const SILENCED_SIGNER: &str = "aws_sigv4=off";

/// The dev user's certificate lives this long; it is re-issued on every `serve --dev`.
const DEV_CERT_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    init_tracing();
    // Before any secret is in memory: no core dump, no ptrace by same-uid processes, and
    // /proc/<pid>/{mem,environ} owned by root.
    crate::systemd::no_core_dumps().context("PR_SET_DUMPABLE 0")?;
    let config = match &args.config {
        Some(path) => Config::load(path)?,
        None => dev_config(&args)?,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(daemon(config, args.config.as_deref(), args.dev))
}

fn init_tracing() {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
        // aws-sigv4 traces the canonical request, session token included: never emit it,
        // whatever RUST_LOG says.
        .add_directive(SILENCED_SIGNER.parse().expect("static directive"));
    // Under systemd with stderr on the journal: structured fields (BASTION_*); else text.
    let journald = crate::systemd::journald_layer();
    let fmt = journald.is_none().then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
    });
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(journald)
        .with(fmt)
        .try_init();
}

/// The embedded default configuration, filled in from the command line.
fn dev_config(args: &ServeArgs) -> anyhow::Result<Config> {
    let state_dir = std::path::absolute(&args.state_dir)
        .with_context(|| format!("state dir {}", args.state_dir.display()))?;
    let quote = |s: String| toml::Value::String(s).to_string();
    let text = include_str!("dev.toml")
        .replace("@STATE_DIR@", &quote(state_dir.display().to_string()))
        .replace(
            "@SOCKET_DIR@",
            &quote(state_dir.join("run/db").display().to_string()),
        )
        .replace("@LISTEN@", &quote(args.listen.to_string()))
        .replace("@UPSTREAM@", &quote(args.upstream.to_string()))
        .replace("@UID@", &quote(nix::unistd::getuid().as_raw().to_string()));
    Ok(Config::parse(&text, Path::new("<embedded dev config>"))?)
}

async fn daemon(config: Config, path: Option<&Path>, dev: bool) -> anyhow::Result<()> {
    let state = &config.boot.state_dir;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(state)
        .with_context(|| format!("creating state dir {}", state.display()))?;
    std::fs::set_permissions(state, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("setting mode 0700 on state dir {}", state.display()))?;

    let ca = Arc::new(OnBoxCa::load_or_create(&state.join("ca"))?);
    tracing::info!(path = %state.join("ca").display(), "on-box CA ready");
    // Store, catalog, listeners and admin socket: see crate::daemon.
    let daemon = crate::daemon::Daemon::start(&config, path, ca.clone()).await?;
    if dev {
        write_dev_certificate(&config, &daemon, &ca)?;
    }
    tracing::info!(
        state_dir = %state.display(),
        databases = daemon.databases,
        users = daemon.users,
        "bastion ready"
    );
    notify_systemd(daemon.shared(), &daemon.reloader)?;
    daemon.run(shutdown_signal()).await;
    tracing::info!("bastion stopped");
    Ok(())
}

/// `serve --dev`: issue (and record, like any `cert issue`) the dev user's certificate and
/// write it under `<state>/certs`, with how to connect.
fn write_dev_certificate(
    config: &Config,
    daemon: &crate::daemon::Daemon,
    ca: &OnBoxCa,
) -> anyhow::Result<()> {
    let out = config.boot.state_dir.join("certs");
    let bundle = daemon
        .issue_local("dev", DEV_CERT_TTL, "serve --dev")
        .map_err(|e| anyhow::anyhow!("issuing the dev certificate: {e}"))?;
    let pems = crate::identity::ca::BundlePems {
        cert: &bundle.cert_pem,
        key: &bundle.key_pem.0,
        ca: &bundle.ca_pem,
    };
    let [crt, key, ca_crt] =
        crate::identity::ca::write_bundle_files("dev", &pems, &out, Some(ca.dir()))?;
    tracing::info!(cert = %crt.display(), key = %key.display(), ca = %ca_crt.display(), "dev client certificate written");
    for address in &config.boot.tcp {
        tracing::info!(
            "connect with: redis-cli --tls --cert {} --key {} --cacert {} -h {} -p {} PING",
            crt.display(),
            key.display(),
            ca_crt.display(),
            address.ip(),
            address.port()
        );
    }
    if let Some(unix) = &config.boot.unix {
        tracing::info!(
            "or over the Unix socket: redis-cli -s {} PING",
            unix.directory.join("local.sock").display()
        );
    }
    Ok(())
}

/// Every listener is bound with its final mode: SIGHUP handler, READY=1, watchdog, STATUS=.
fn notify_systemd(shared: &Arc<Shared>, reloader: &Arc<Reloader>) -> anyhow::Result<()> {
    let status_line = {
        let (shared, reloader) = (shared.clone(), reloader.clone());
        move || {
            let mut line = format!(
                "sessions: {} open, {} since start; credentials: {}",
                shared.active_sessions(),
                shared.sessions_started(),
                shared
                    .credentials
                    .last_provider()
                    .unwrap_or_else(|| "not loaded yet".into())
            );
            if let Some(why) = reloader.last_failure() {
                line.push_str(&format!(
                    "; reload failed, running the previous config: {why}"
                ));
            }
            line
        }
    };
    crate::reload::watch_sighup(reloader.clone(), status_line.clone())
        .context("installing the SIGHUP handler")?;
    systemd::ready(&status_line());
    systemd::spawn_watchdog();
    systemd::spawn_status(systemd::STATUS_INTERVAL, status_line);
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; stop with SIGINT");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: stopping"),
    }
}
