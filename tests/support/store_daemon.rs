//! A daemon that is only its store and admin socket (a Unix listener directory, no database
//! at start), restartable — cleanly or with `kill -9` — on the same state directory, and the
//! admin client library (`bastion::admin::client`) to write to it without a process per write.

use std::collections::BTreeSet;
use std::path::PathBuf;

use bastion::admin::client::{self, ClientError};
use bastion::admin::wire::{Reply, Request};
use bastion::config::RoleConfig;
use bastion::store::records::RoleRecord;
use tempfile::TempDir;

use super::bastion::Bastion;

pub struct StoreDaemon {
    state: TempDir,
    config: String,
    bastion: Option<Bastion>,
}

impl StoreDaemon {
    /// Started, and ready.
    pub fn start() -> StoreDaemon {
        let state = tempfile::Builder::new()
            .prefix("bastion-store-")
            .tempdir()
            .expect("state dir");
        let config = format!(
            "state_dir = {dir}\n[listeners.unix]\ndirectory = {sock}\n",
            dir = toml::Value::String(state.path().display().to_string()),
            sock = toml::Value::String(state.path().join("sock").display().to_string()),
        );
        let mut d = StoreDaemon {
            state,
            config,
            bastion: None,
        };
        d.up();
        d
    }

    /// Start the daemon again on the same state (after [`Self::kill`] or [`Self::stop`]).
    #[track_caller]
    pub fn up(&mut self) {
        assert!(self.bastion.is_none(), "the daemon is already running");
        self.bastion = Some(Bastion::start(&self.config, self.state.path()));
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        if let Some(mut b) = self.bastion.take() {
            b.kill();
        }
    }

    /// SIGTERM, as systemd stops it.
    pub fn stop(&mut self) {
        if let Some(mut b) = self.bastion.take() {
            b.stop();
        }
    }

    pub fn bastion(&self) -> &Bastion {
        self.bastion.as_ref().expect("the daemon is running")
    }

    /// `<state>/run/admin.sock`, the default admin socket.
    pub fn socket(&self) -> PathBuf {
        self.state.path().join("run").join("admin.sock")
    }

    /// `<state>/store`.
    pub fn store_dir(&self) -> PathBuf {
        self.state.path().join("store")
    }
}

/// A role reaching every database as `app`.
pub fn role(name: &str) -> RoleRecord {
    RoleRecord::try_from(&RoleConfig {
        name: name.to_string(),
        db_users: vec!["app".into()],
        db_names: vec!["*".into()],
        ..RoleConfig::default()
    })
    .expect("a valid role")
}

/// Add role `name`; `Ok(seq)` is the daemon's acknowledgement.
pub fn add_role(socket: &std::path::Path, name: &str) -> Result<u64, ClientError> {
    match client::call(
        socket,
        &Request::PutRole {
            record: role(name),
            replace: false,
        },
    )? {
        Reply::Done { seq } => Ok(seq),
        other => panic!("unexpected reply to PutRole: {other:?}"),
    }
}

/// The names of every role in the store.
#[track_caller]
pub fn role_names(socket: &std::path::Path) -> BTreeSet<String> {
    match client::call(socket, &Request::ListRoles) {
        Ok(Reply::Roles(roles)) => roles.into_iter().map(|r| r.name.to_string()).collect(),
        other => panic!("unexpected reply to ListRoles: {other:?}"),
    }
}
