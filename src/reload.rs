//! `systemctl reload bastion` (SIGHUP): re-read the boot config the daemon started with, apply
//! what can change while sessions run, and name every changed key that needs a restart.
//!
//! The config's parts say what happens ([`crate::config`]): `live` is swapped, each changed
//! `boot` field is named and keeps its running value, `seed` is the store's.
//!
//! Applied live (`Config::live`), to new connections and sessions only:
//! - the server certificate, re-issued from the on-box CA as it is on disk now (a rotated CA is
//!   picked up, for the server certificate and the client-certificate verifier alike), for the
//!   listeners' names as the new config lists them (`listeners.tcp[i].server_names`);
//! - `listeners.tcp[i].database`, `.default_database`, `.server_names` (SNI routing);
//! - every `limits.*` key (`max_sessions`, `handshake_timeout`, `upstream_connect_timeout`,
//!   `max_handshake_bytes`);
//! - every database's password, read again from its file or variable (a password that cannot
//!   be read now makes its database refuse sessions, logged; see `catalog/password.rs`).
//!
//! Needs a restart (`Config::boot`; logged as a warning naming the key, the running value kept):
//! `state_dir`, `secrets_dir`, `admin.*`, `listeners.unix.*`, the number and `address` of `[[listeners.tcp]]`,
//! `aws.imds.*` (the credential chain is built once), `metrics.*`. `[[databases]]`, `[[roles]]` and
//! `[[users]]` (`Config::seed`) are ignored, as at start: the store holds them (`bastion import`).
//!
//! A reload is all or nothing: every fallible step (reading and validating the file, loading
//! the CA, issuing the certificate, building the TLS config) runs before anything is swapped, so
//! a bad config leaves the daemon serving exactly as before, and says why (the error names the
//! key). Must never close or touch a live session: they hold their own sockets, TLS state,
//! catalog snapshot and session slot.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::task::JoinHandle;

use crate::admin::Admin;
use crate::config::{
    AdminConfig, Boot, Config, ConfigError, ImdsConfig, Limits, Live, MetricsConfig, Seed,
    TcpRouting, UnixListenerConfig,
};
use crate::identity::ca::{OnBoxCa, CA_CERT_FILE, CA_KEY_FILE};
use crate::identity::server_cert::{self, ServerCert};
use crate::identity::tls::{self, TlsIdentityError};
use crate::proxy::listener::{self, LiveSpec};
use crate::proxy::shared::Shared;
use crate::systemd;

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("on-box CA {path}: {message}")]
    Ca { path: PathBuf, message: String },
    #[error(transparent)]
    Tls(#[from] TlsIdentityError),
}

/// One changed key: its name and the running and new values, as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub key: String,
    pub from: String,
    pub to: String,
}

/// What one successful reload did.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Changes in force for new connections and sessions.
    pub applied: Vec<Change>,
    /// Changes that need a restart; the running values stay.
    pub needs_restart: Vec<Change>,
    /// Config sections that changed but are not the config's to change (the store's).
    pub ignored: Vec<&'static str>,
    /// Serial of the server certificate new handshakes get.
    pub serial: String,
}

/// The daemon's reload: the config in force and every live part a reload swaps.
pub struct Reloader {
    /// The file the daemon was started with; `None` for the embedded dev config (a reload then
    /// only re-issues the server certificate and re-reads the CA).
    path: Option<PathBuf>,
    running: Mutex<Running>,
    shared: Arc<Shared>,
    server_cert: Arc<ServerCert>,
    /// The TLS listeners' settings, in config order.
    listeners: Vec<LiveSpec>,
    /// Why the last reload failed, until one succeeds (for systemd's STATUS= line).
    last_failure: Mutex<Option<String>>,
    /// Re-reads the databases' passwords, under the store's lock.
    admin: Arc<Admin>,
}

struct Running {
    config: Config,
    ca: Arc<OnBoxCa>,
}

impl Reloader {
    pub fn new(
        path: Option<PathBuf>,
        config: Config,
        ca: Arc<OnBoxCa>,
        shared: Arc<Shared>,
        server_cert: Arc<ServerCert>,
        listeners: Vec<LiveSpec>,
        admin: Arc<Admin>,
    ) -> Reloader {
        Reloader {
            path,
            running: Mutex::new(Running { config, ca }),
            shared,
            server_cert,
            listeners,
            last_failure: Mutex::new(None),
            admin,
        }
    }

    /// Why the last reload failed, if the last one did.
    pub fn last_failure(&self) -> Option<String> {
        lock(&self.last_failure).clone()
    }

    /// Re-read the config and apply it (see the module docs). Blocking: file reads and
    /// certificate issuance; call it off the async worker threads.
    pub fn reload(&self) -> Result<Outcome, ReloadError> {
        let result = self.try_reload();
        *lock(&self.last_failure) = result.as_ref().err().map(one_line);
        result
    }

    fn try_reload(&self) -> Result<Outcome, ReloadError> {
        let mut running = lock(&self.running);
        let new = match &self.path {
            Some(path) => Config::load(path)?,
            None => running.config.clone(),
        };
        let ca = load_ca(&running.config.boot.state_dir.join("ca"))?;
        let mut outcome = Outcome::default();
        let effective = merge(&running.config, new, &mut outcome);
        let names = server_cert::listener_names(&effective);
        let issued = self.server_cert.prepare(&ca, &names)?;
        let tls = tls::server_config_with_resolver(&ca, self.server_cert.clone())?;

        // Nothing below fails: swap everything.
        if ca.cert_der() != running.ca.cert_der() {
            outcome.applied.push(Change {
                key: "on-box CA".into(),
                from: running.ca.subject().to_string(),
                to: ca.subject().to_string(),
            });
        }
        outcome.serial = issued.serial().to_string();
        self.server_cert.install(issued, ca.clone(), names);
        for (spec, l) in self.listeners.iter().zip(&effective.live.tcp) {
            let address = spec.load().address;
            spec.store(Arc::new(listener::tls_spec(address, l, tls.clone())));
        }
        self.shared.set_limits(effective.live.limits.clone());
        self.admin.reread_passwords();
        *running = Running {
            config: effective,
            ca,
        };
        Ok(outcome)
    }

    fn describe_source(&self) -> String {
        self.path.as_deref().map_or_else(
            || "<embedded dev config>".to_string(),
            |p| p.display().to_string(),
        )
    }
}

/// Reload on every SIGHUP (`ExecReload=/bin/kill -HUP $MAINPID`) for as long as the runtime
/// runs: `RELOADING=1`, the reload off the async threads, one log line per change, then
/// `READY=1` with a `STATUS=` line from `status` — after a failed reload too, since the daemon
/// goes on serving.
pub fn watch_sighup(
    reloader: Arc<Reloader>,
    status: impl Fn() -> String + Send + Sync + 'static,
) -> std::io::Result<JoinHandle<()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup())?;
    Ok(tokio::spawn(async move {
        while hup.recv().await.is_some() {
            let source = reloader.describe_source();
            tracing::info!(config = %source, "SIGHUP: reload requested");
            systemd::reloading();
            let r = reloader.clone();
            let result = match tokio::task::spawn_blocking(move || r.reload()).await {
                Ok(result) => result,
                Err(e) => {
                    tracing::error!(error = %e, "reload task failed");
                    continue;
                }
            };
            match result {
                Ok(outcome) => log_outcome(&source, &outcome),
                Err(e) => tracing::error!(config = %source, error = %one_line(&e),
                    "reload failed: still running with the previous configuration"),
            }
            systemd::ready(&status());
        }
    }))
}

fn log_outcome(source: &str, o: &Outcome) {
    for c in &o.applied {
        tracing::info!(key = %c.key, from = %c.from, to = %c.to, "reload: applied {}", c.key);
    }
    for c in &o.needs_restart {
        tracing::warn!(key = %c.key, running = %c.from, config = %c.to,
            "reload: {} changed but needs a restart; still running with {}", c.key, c.from);
    }
    for section in &o.ignored {
        tracing::warn!(key = %section,
            "reload: {section} changed in the config and is ignored: the store holds them since \
             its first start (use `bastion import` or the admin verbs)");
    }
    tracing::info!(config = %source, applied = o.applied.len(), needs_restart = o.needs_restart.len(),
        server_cert.serial = %o.serial, "reload done");
}

/// Load the CA as it is on disk now. Unlike start-up, a reload never creates one: a CA that
/// vanished is an error, not a reason to invalidate every certificate handed out.
fn load_ca(dir: &Path) -> Result<Arc<OnBoxCa>, ReloadError> {
    for file in [CA_CERT_FILE, CA_KEY_FILE] {
        let path = dir.join(file);
        if !path.exists() {
            return Err(ReloadError::Ca {
                path,
                message: "missing (a reload never creates a CA; restore it or restart)".into(),
            });
        }
    }
    OnBoxCa::load_or_create(dir)
        .map(Arc::new)
        .map_err(|e| ReloadError::Ca {
            path: dir.to_path_buf(),
            message: e.to_string(),
        })
}

/// A [`Change`] for each listed field of `$ty` whose value differs between `$old` and `$new`,
/// keyed `$prefix<field>`. The list must name every field (no `..`): a new field is a compile
/// error here until it is sorted into boot or live.
macro_rules! field_changes {
    ($prefix:expr, $old:expr, $new:expr; $ty:ident { $($field:ident),+ $(,)? }) => {{
        let $ty { $($field: _),+ } = &$old;
        [$(
            ($old.$field != $new.$field).then(|| Change {
                key: format!("{}{}", $prefix, stringify!($field)),
                from: format!("{:?}", $old.$field),
                to: format!("{:?}", $new.$field),
            })
        ),+]
        .into_iter()
        .flatten()
    }};
}

/// The config to run with: `new`'s live settings (each TLS listener's routing only where the
/// listener is still the one running) and the running boot settings. Records in `outcome` each
/// boot field that changed (it needs a restart), each live field swapped in, and each seed
/// section that changed (ignored: the store's).
fn merge(old: &Config, new: Config, outcome: &mut Outcome) -> Config {
    outcome
        .needs_restart
        .extend(boot_changes(&old.boot, &new.boot));
    let live = Live {
        tcp: running_routes(old, &new),
        limits: new.live.limits,
    };
    outcome.applied.extend(live_changes(&old.live, &live));
    let Seed {
        databases,
        roles,
        users,
    } = &old.seed;
    for (section, changed) in [
        ("databases", *databases != new.seed.databases),
        ("roles", *roles != new.seed.roles),
        ("users", *users != new.seed.users),
    ] {
        if changed {
            outcome.ignored.push(section);
        }
    }
    Config {
        boot: old.boot.clone(),
        live,
        seed: new.seed,
    }
}

/// Every boot field that differs, named as the file names it.
fn boot_changes(old: &Boot, new: &Boot) -> Vec<Change> {
    let Boot {
        state_dir,
        secrets_dir,
        admin,
        imds,
        tcp,
        unix,
        metrics,
    } = old;
    let mut changes = Vec::new();
    if *state_dir != new.state_dir {
        changes.push(Change {
            key: "state_dir".into(),
            from: format!("{state_dir:?}"),
            to: format!("{:?}", new.state_dir),
        });
    }
    if *secrets_dir != new.secrets_dir {
        changes.push(Change {
            key: "secrets_dir".into(),
            from: format!("{secrets_dir:?}"),
            to: format!("{:?}", new.secrets_dir),
        });
    }
    changes.extend(field_changes!("admin.", admin, new.admin; AdminConfig { socket, group }));
    changes.extend(field_changes!("metrics.", metrics, new.metrics;
        MetricsConfig { address, socket, socket_mode, allow_remote }));
    match (unix, &new.unix) {
        (Some(a), Some(b)) => {
            let UnixListenerConfig { directory, mode } = a;
            if *directory != b.directory {
                changes.push(Change {
                    key: "listeners.unix.directory".into(),
                    from: format!("{directory:?}"),
                    to: format!("{:?}", b.directory),
                });
            }
            if *mode != b.mode {
                changes.push(Change {
                    key: "listeners.unix.mode".into(),
                    from: format!("{mode:04o}"),
                    to: format!("{:04o}", b.mode),
                });
            }
        }
        (a, b) if a.is_some() != b.is_some() => changes.push(Change {
            key: "listeners.unix".into(),
            from: present(a),
            to: present(b),
        }),
        _ => {}
    }
    changes.extend(field_changes!("aws.imds.", imds, new.imds; ImdsConfig {
        endpoint, endpoint_mode, token_ttl, allow_v1_fallback, connect_timeout, read_timeout,
        disabled,
    }));
    if tcp.len() != new.tcp.len() {
        changes.push(Change {
            key: "listeners.tcp".into(),
            from: format!("{} listener(s)", tcp.len()),
            to: format!("{} listener(s)", new.tcp.len()),
        });
    }
    for (i, (was, now)) in tcp.iter().zip(&new.tcp).enumerate() {
        if was != now {
            changes.push(Change {
                key: format!("listeners.tcp[{i}].address"),
                from: was.to_string(),
                to: now.to_string(),
            });
        }
    }
    changes
}

/// The routing for each running TLS listener: the new one where the listener at that place
/// still has the running address, else the running one (its socket stays as it is).
fn running_routes(old: &Config, new: &Config) -> Vec<TcpRouting> {
    old.tcp_listeners()
        .enumerate()
        .map(|(i, (address, running))| match new.boot.tcp.get(i) {
            Some(a) if *a == address => new.live.tcp[i].clone(),
            _ => running.clone(),
        })
        .collect()
}

/// Every live field that differs, named as the file names it.
fn live_changes(old: &Live, new: &Live) -> Vec<Change> {
    let Live { limits, tcp } = old;
    let mut changes = Vec::new();
    for (i, (was, now)) in tcp.iter().zip(&new.tcp).enumerate() {
        changes.extend(field_changes!(format!("listeners.tcp[{i}]."), was, now;
            TcpRouting { database, default_database, server_names }));
    }
    changes.extend(field_changes!("limits.", limits, new.limits; Limits {
        handshake_timeout, upstream_connect_timeout, max_handshake_bytes, max_sessions,
        max_handshakes, max_handshakes_per_source, idle_timeout, max_session_age, drain_timeout,
        max_cert_ttl, command_audit_sample, command_audit_rate, reauth_interval,
        warm_connections, reuse_connections, warm_idle,
    }));
    changes
}

fn present<T>(v: &Option<T>) -> String {
    if v.is_some() { "configured" } else { "absent" }.to_string()
}

/// An error on one line: a TOML parse error spans several (with a snippet), and neither a log
/// line nor systemd's `STATUS=` may.
fn one_line(e: &ReloadError) -> String {
    let text = e.to_string();
    let parts: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    parts.join(" ")
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Poisoned only by a panic between whole assignments; the value is still whole.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Config {
        let text = format!(
            "state_dir = \"/var/lib/bastion\"\n{extra}\n[[databases]]\nname = \"cache\"\naddress = \"127.0.0.1:6379\"\nauth = {{ mode = \"none\" }}\n"
        );
        Config::parse(&text, Path::new("test.toml")).expect("config")
    }

    const BASE: &str = r#"
[limits]
max_sessions = 10
[[listeners.tcp]]
address = "127.0.0.1:6380"
server_names = ["a.example"]
[listeners.unix]
directory = "/run/bastion/db"
"#;

    fn keys(changes: &[Change]) -> Vec<&str> {
        changes.iter().map(|c| c.key.as_str()).collect()
    }

    #[test]
    fn an_unchanged_config_changes_nothing() {
        let mut o = Outcome::default();
        merge(&config(BASE), config(BASE), &mut o);
        assert!(
            o.applied.is_empty() && o.needs_restart.is_empty() && o.ignored.is_empty(),
            "{o:?}"
        );
    }

    #[test]
    fn live_keys_are_applied_and_others_need_a_restart() {
        let new = BASE
            .replace(
                "max_sessions = 10",
                "max_sessions = 2\nhandshake_timeout = \"3s\"",
            )
            .replace("[\"a.example\"]", "[\"a.example\", \"b.example\"]")
            .replace("/run/bastion/db", "/run/other")
            + "[admin]\ngroup = \"wheel\"\n[aws.imds]\ndisabled = true\n";
        let mut o = Outcome::default();
        let eff = merge(&config(BASE), config(&new), &mut o);
        assert_eq!(
            keys(&o.applied),
            [
                "listeners.tcp[0].server_names",
                "limits.handshake_timeout",
                "limits.max_sessions"
            ]
        );
        assert_eq!(
            keys(&o.needs_restart),
            [
                "admin.group",
                "listeners.unix.directory",
                "aws.imds.disabled"
            ]
        );
        // What is applied is in force; what needs a restart keeps its running value.
        assert_eq!(eff.live.limits.max_sessions, 2);
        assert_eq!(eff.live.tcp[0].server_names, ["a.example", "b.example"]);
        assert_eq!(
            eff.boot.unix.as_ref().map(|u| u.directory.clone()),
            Some(PathBuf::from("/run/bastion/db"))
        );
        assert_eq!(eff.boot.admin.group, None);
        assert!(!eff.boot.imds.disabled);
    }

    #[test]
    fn each_changed_boot_field_is_named_and_keeps_its_running_value() {
        let old = config(BASE);
        let mut new = old.clone();
        new.boot.state_dir = "/srv/bastion".into();
        new.boot.secrets_dir = "/srv/secrets".into();
        new.boot.unix.as_mut().unwrap().mode = 0o600;
        new.boot.imds.endpoint = Some("http://[fd00:ec2::254]".into());
        new.boot.admin.socket = Some("/run/bastion/admin.sock".into());
        let mut o = Outcome::default();
        let eff = merge(&old, new, &mut o);
        assert_eq!(
            keys(&o.needs_restart),
            [
                "state_dir",
                "secrets_dir",
                "admin.socket",
                "listeners.unix.mode",
                "aws.imds.endpoint"
            ]
        );
        assert_eq!(
            (
                o.needs_restart[3].from.as_str(),
                o.needs_restart[3].to.as_str()
            ),
            ("0666", "0600")
        );
        assert!(o.applied.is_empty() && o.ignored.is_empty(), "{o:?}");
        assert_eq!(eff.boot, old.boot);
    }

    #[test]
    fn each_changed_live_field_is_applied() {
        let old = config(BASE);
        let mut new = old.clone();
        new.live.limits.drain_timeout = std::time::Duration::from_secs(5);
        new.live.limits.idle_timeout = Some(std::time::Duration::from_secs(60));
        new.live.tcp[0].default_database = Some("cache".into());
        let mut o = Outcome::default();
        let eff = merge(&old, new.clone(), &mut o);
        assert_eq!(
            keys(&o.applied),
            [
                "listeners.tcp[0].default_database",
                "limits.idle_timeout",
                "limits.drain_timeout"
            ]
        );
        assert_eq!(o.applied[1].to, "Some(60s)");
        assert!(o.needs_restart.is_empty(), "{o:?}");
        assert_eq!(eff.live, new.live);
    }

    #[test]
    fn a_moved_or_added_listener_needs_a_restart() {
        let moved = BASE.replace("6380", "6390");
        let mut o = Outcome::default();
        let eff = merge(&config(BASE), config(&moved), &mut o);
        assert_eq!(keys(&o.needs_restart), ["listeners.tcp[0].address"]);
        assert_eq!(o.needs_restart[0].from, "127.0.0.1:6380");
        assert_eq!(o.needs_restart[0].to, "127.0.0.1:6390");
        assert_eq!(eff.boot.tcp[0].port(), 6380);
        // The moved listener's new routing is not put on the socket still bound to the old
        // address.
        let moved = moved.replace("[\"a.example\"]", "[\"b.example\"]");
        let mut o = Outcome::default();
        let eff = merge(&config(BASE), config(&moved), &mut o);
        assert!(o.applied.is_empty(), "{o:?}");
        assert_eq!(eff.live.tcp[0].server_names, ["a.example"]);

        let added = format!("{BASE}[[listeners.tcp]]\naddress = \"127.0.0.1:6381\"\n");
        let mut o = Outcome::default();
        let eff = merge(&config(BASE), config(&added), &mut o);
        assert_eq!(keys(&o.needs_restart), ["listeners.tcp"]);
        assert_eq!(eff.boot.tcp.len(), 1);
    }

    #[test]
    fn catalog_sections_are_ignored_and_said_so() {
        let more = format!(
            "{BASE}[[databases]]\nname = \"other\"\naddress = \"127.0.0.1:1\"\nauth = {{ mode = \"none\" }}\n"
        );
        let mut o = Outcome::default();
        merge(&config(BASE), config(&more), &mut o);
        assert_eq!(o.ignored, ["databases"]);
        assert!(o.applied.is_empty() && o.needs_restart.is_empty());

        // A field inside a declaration counts, and each section is named on its own.
        let role = "[[roles]]\nname = \"r\"\ndb_names = [\"cache\"]\n";
        let user = "[[users]]\nname = \"u\"\nroles = [\"r\"]\n";
        let before = format!("{BASE}{role}{user}");
        let after = format!(
            "{BASE}{}{}",
            role.replace("cache", "*"),
            user.replace("\"u\"", "\"v\"")
        );
        let mut o = Outcome::default();
        merge(&config(&before), config(&after), &mut o);
        assert_eq!(o.ignored, ["roles", "users"]);
    }
}
