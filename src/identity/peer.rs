//! Unix-socket peer credentials (SO_PEERCRED) — the SSH-forwarding identity.

use tokio::net::UnixStream;

/// The kernel's view of who is on the other end of a Unix socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCred {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
}

/// Ask the kernel (SO_PEERCRED): the credentials the peer had when it called connect(2).
pub fn peer_cred(stream: &UnixStream) -> std::io::Result<PeerCred> {
    let cred = stream.peer_cred()?;
    Ok(PeerCred {
        uid: cred.uid(),
        gid: cred.gid(),
        pid: cred.pid(),
    })
}
