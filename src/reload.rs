//! `systemctl reload bastion` (SIGHUP): re-read the boot config the daemon started with, apply
//! what can change while sessions run, and name every changed key that needs a restart.
//!
//! Applied live, to new connections and sessions only:
//! - the server certificate, re-issued from the on-box CA as it is on disk now (a rotated CA is
//!   picked up, for the server certificate and the client-certificate verifier alike), for the
//!   listeners' names as the new config lists them (`listeners.tcp[i].server_names`);
//! - `listeners.tcp[i].database`, `.default_database`, `.server_names` (SNI routing);
//! - every `limits.*` key (`max_sessions`, `handshake_timeout`, `upstream_connect_timeout`,
//!   `max_handshake_bytes`).
//!
//! Needs a restart (logged as a warning naming the key, the running value kept):
//! `state_dir`, `admin.*`, `listeners.unix.*`, the number and `address` of `[[listeners.tcp]]`,
//! `aws.imds.*` (the credential chain is built once), `metrics.*`. `[[databases]]`, `[[roles]]` and
//! `[[users]]` are ignored, as at start: the store holds them (`bastion import`).
//!
//! A reload is all or nothing: every fallible step (reading and validating the file, loading
//! the CA, issuing the certificate, building the TLS config) runs before anything is swapped, so
//! a bad config leaves the daemon serving exactly as before, and says why (the error names the
//! key). Must never close or touch a live session: they hold their own sockets, TLS state,
//! catalog snapshot and session slot.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::task::JoinHandle;

use crate::config::{Config, ConfigError};
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
    ) -> Reloader {
        Reloader {
            path,
            running: Mutex::new(Running { config, ca }),
            shared,
            server_cert,
            listeners,
            last_failure: Mutex::new(None),
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
        let ca = load_ca(&running.config.state_dir.join("ca"))?;
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
        for (spec, l) in self.listeners.iter().zip(&effective.listeners.tcp) {
            let address = spec.load().address;
            spec.store(Arc::new(listener::tls_spec(address, l, tls.clone())));
        }
        self.shared.set_limits(effective.limits.clone());
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

/// `(field, running, new)` as text for each named field that differs between two values.
macro_rules! field_changes {
    ($old:expr, $new:expr; $($field:ident),+ $(,)?) => {
        [$((stringify!($field), format!("{:?}", $old.$field), format!("{:?}", $new.$field))),+]
            .into_iter()
            .filter(|(_, from, to)| from != to)
    };
}

/// The config to run with: `new`, except that every key that needs a restart keeps its running
/// value. Records what changed in `outcome`.
fn merge(old: &Config, mut new: Config, outcome: &mut Outcome) -> Config {
    let mut restart = |key: String, from: String, to: String| {
        outcome.needs_restart.push(Change { key, from, to });
    };

    for (field, from, to) in field_changes!(old, new; state_dir) {
        restart(field.to_string(), from, to);
    }
    new.state_dir = old.state_dir.clone();
    for (field, from, to) in field_changes!(old.admin, new.admin; socket, group) {
        restart(format!("admin.{field}"), from, to);
    }
    new.admin = old.admin.clone();
    match (&old.listeners.unix, &new.listeners.unix) {
        (Some(a), Some(b)) => {
            for (field, from, to) in field_changes!(a, b; directory) {
                restart(format!("listeners.unix.{field}"), from, to);
            }
            if a.mode != b.mode {
                restart(
                    "listeners.unix.mode".into(),
                    format!("{:04o}", a.mode),
                    format!("{:04o}", b.mode),
                );
            }
        }
        (a, b) if a.is_some() != b.is_some() => {
            restart("listeners.unix".into(), present(a), present(b));
        }
        _ => {}
    }
    new.listeners.unix = old.listeners.unix.clone();
    for (field, from, to) in field_changes!(old.aws.imds, new.aws.imds;
        endpoint, endpoint_mode, token_ttl, allow_v1_fallback, connect_timeout, read_timeout, disabled)
    {
        restart(format!("aws.imds.{field}"), from, to);
    }
    new.aws = old.aws.clone();
    for (field, from, to) in field_changes!(old.metrics, new.metrics;
        address, socket, socket_mode, allow_remote)
    {
        restart(format!("metrics.{field}"), from, to);
    }
    new.metrics = old.metrics.clone();

    // TLS listeners: the sockets stay; a listener whose address is unchanged takes its new
    // routing settings, any other keeps its old ones.
    if new.listeners.tcp.len() != old.listeners.tcp.len() {
        restart(
            "listeners.tcp".into(),
            format!("{} listener(s)", old.listeners.tcp.len()),
            format!("{} listener(s)", new.listeners.tcp.len()),
        );
    }
    let mut applied = Vec::new();
    let mut tcp = Vec::with_capacity(old.listeners.tcp.len());
    for (i, was) in old.listeners.tcp.iter().enumerate() {
        match new.listeners.tcp.get(i) {
            Some(l) if l.address == was.address => {
                for (field, from, to) in
                    field_changes!(was, l; database, default_database, server_names)
                {
                    let key = format!("listeners.tcp[{i}].{field}");
                    applied.push(Change { key, from, to });
                }
                tcp.push(l.clone());
            }
            Some(l) => {
                restart(
                    format!("listeners.tcp[{i}].address"),
                    was.address.to_string(),
                    l.address.to_string(),
                );
                tcp.push(was.clone());
            }
            None => tcp.push(was.clone()),
        }
    }
    new.listeners.tcp = tcp;

    for (field, from, to) in field_changes!(old.limits, new.limits;
        handshake_timeout, upstream_connect_timeout, max_handshake_bytes, max_sessions,
        max_handshakes, max_handshakes_per_source, idle_timeout, max_session_age, max_cert_ttl, drain_timeout)
    {
        let key = format!("limits.{field}");
        applied.push(Change { key, from, to });
    }
    outcome.applied.extend(applied);

    // The store's since its first start: a change here is named and ignored.
    for (section, changed) in [
        ("databases", old.databases != new.databases),
        ("roles", old.roles != new.roles),
        ("users", old.users != new.users),
    ] {
        if changed {
            outcome.ignored.push(section);
        }
    }
    new
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
        assert_eq!(eff.limits.max_sessions, 2);
        assert_eq!(
            eff.listeners.tcp[0].server_names,
            ["a.example", "b.example"]
        );
        assert_eq!(
            eff.listeners.unix.as_ref().map(|u| u.directory.clone()),
            Some(PathBuf::from("/run/bastion/db"))
        );
        assert_eq!(eff.admin.group, None);
        assert!(!eff.aws.imds.disabled);
    }

    #[test]
    fn a_moved_or_added_listener_needs_a_restart() {
        let moved = BASE.replace("6380", "6390");
        let mut o = Outcome::default();
        let eff = merge(&config(BASE), config(&moved), &mut o);
        assert_eq!(keys(&o.needs_restart), ["listeners.tcp[0].address"]);
        assert_eq!(o.needs_restart[0].from, "127.0.0.1:6380");
        assert_eq!(o.needs_restart[0].to, "127.0.0.1:6390");
        assert_eq!(eff.listeners.tcp[0].address.port(), 6380);

        let added = format!("{BASE}[[listeners.tcp]]\naddress = \"127.0.0.1:6381\"\n");
        let mut o = Outcome::default();
        let eff = merge(&config(BASE), config(&added), &mut o);
        assert_eq!(keys(&o.needs_restart), ["listeners.tcp"]);
        assert_eq!(eff.listeners.tcp.len(), 1);
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
