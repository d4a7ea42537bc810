//! The admin socket: bound with its final owner and mode before the daemon says it is ready,
//! then one task per connection: check the peer's credentials, then read requests and answer
//! each until the caller hangs up.

use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{UnixListener, UnixStream};

use super::auth::{self, AdminGroup};
use super::wire::{self, AdminError, Reply, Request, WireError};
use super::Admin;
use crate::audit;
use crate::identity::peer::peer_cred;

/// How long a connected caller may take to send its next request.
const IDLE_LIMIT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
#[error("admin socket {path}: cannot {op}: {source}")]
pub struct AdminSocketError {
    pub path: PathBuf,
    pub op: &'static str,
    pub source: std::io::Error,
}

/// Create `path` (mode 0660 and the admin group's gid with a group, 0600 without). A missing
/// parent directory is created 0750 (group: the admin group).
pub fn bind(path: &Path, group: Option<&AdminGroup>) -> Result<UnixListener, AdminSocketError> {
    let err = |op| {
        move |source| AdminSocketError {
            path: path.to_path_buf(),
            op,
            source,
        }
    };
    let gid = group.map(|g| nix::unistd::Gid::from_raw(g.gid));
    if let Some(dir) = path.parent().filter(|d| !d.exists()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(dir)
            .map_err(err("create its directory"))?;
        if gid.is_some() {
            nix::unistd::chown(dir, None, gid)
                .map_err(|e| err("set its directory's group")(e.into()))?;
        }
    }
    match std::fs::symlink_metadata(path) {
        // Left by a previous run: ours to replace. Anything else is not.
        Ok(meta) if meta.file_type().is_socket() => {
            std::fs::remove_file(path).map_err(err("remove the old socket"))?
        }
        Ok(_) => {
            return Err(err("create it")(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "exists and is not a socket; refusing to replace it",
            )))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err("inspect it")(e)),
    }
    let listener = UnixListener::bind(path).map_err(err("bind"))?;
    let mode = if gid.is_some() { 0o660 } else { 0o600 };
    if gid.is_some() {
        nix::unistd::chown(path, None, gid).map_err(|e| err("set its group")(e.into()))?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(err("set its mode"))?;
    Ok(listener)
}

/// Accept admin connections until the task is dropped.
pub async fn serve(listener: UnixListener, admin: Arc<Admin>, group: Option<AdminGroup>) {
    let group = Arc::new(group);
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "admin socket: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (admin, group) = (admin.clone(), group.clone());
        tokio::spawn(async move {
            if let Err(e) = connection(stream, admin, group.as_ref().as_ref()).await {
                tracing::debug!(error = %e, "admin connection ended");
            }
        });
    }
}

async fn connection(
    mut stream: UnixStream,
    admin: Arc<Admin>,
    group: Option<&AdminGroup>,
) -> Result<(), WireError> {
    let cred = peer_cred(&stream)?;
    let Some(caller) = auth::authorize(&cred, group) else {
        audit::admin_denied(cred.uid, cred.pid);
        let denied = AdminError::Denied {
            uid: cred.uid,
            group: group.map(|g| g.name.clone()),
        };
        return wire::write_async(&mut stream, &Reply::Error(denied)).await;
    };
    loop {
        let request: Request =
            match tokio::time::timeout(IDLE_LIMIT, wire::read_async(&mut stream)).await {
                Err(_) => return Ok(()),
                Ok(Err(WireError::Io(e))) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    return Ok(())
                }
                Ok(Err(WireError::Decode(e))) => {
                    let reply = Reply::Error(AdminError::BadRequest(e.to_string()));
                    return wire::write_async(&mut stream, &reply).await;
                }
                Ok(Err(e)) => return Err(e),
                Ok(Ok(r)) => r,
            };
        tracing::debug!(uid = caller.uid, ?request, "admin request");
        let (handler, who) = (admin.clone(), caller.clone());
        // The store fsyncs: keep that off the runtime's worker threads.
        let reply = tokio::task::spawn_blocking(move || handler.handle(&who, request))
            .await
            .unwrap_or_else(|e| Reply::Error(AdminError::Store(format!("request failed: {e}"))));
        wire::write_async(&mut stream, &reply).await?;
        // The caller has its acknowledgement: a log grown past the threshold is folded into a
        // snapshot in the background, not on this request's time.
        if admin.take_compaction() {
            let admin = admin.clone();
            tokio::task::spawn_blocking(move || admin.compact_if_due());
        }
    }
}
