//! Unix-socket peer credentials (SO_PEERCRED) — the SSH-forwarding identity.

use std::os::fd::AsFd;

use nix::sys::socket::{getsockopt, sockopt};

/// The kernel's view of who is on the other end of a Unix socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCred {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
}

/// Ask the kernel (SO_PEERCRED): the credentials the peer had when it called connect(2).
pub fn peer_cred(stream: &impl AsFd) -> std::io::Result<PeerCred> {
    let cred = getsockopt(stream, sockopt::PeerCredentials)?;
    Ok(PeerCred {
        uid: cred.uid(),
        gid: cred.gid(),
        pid: Some(cred.pid()),
    })
}
