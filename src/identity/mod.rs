//! Who is connecting: a client certificate from the on-box CA, or the kernel's peer credentials
//! on a Unix socket. Nothing a client *says* (AUTH passwords) is ever identity.

pub mod ca;
pub mod peer;
pub mod server_cert;
pub mod tls;

use std::fmt;

/// How the bastion learned who the client is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// A verified client certificate issued by the on-box CA.
    Mtls,
    /// SO_PEERCRED on a Unix socket (the `ssh -L` path).
    UnixPeer,
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Method::Mtls => "mtls",
            Method::UnixPeer => "unix-peer",
        })
    }
}

/// A proven identity: the bastion user plus evidence for the audit log.
#[derive(Debug, Clone)]
pub struct Identity {
    pub user: String,
    pub method: Method,
    /// Certificate serial (hex) for mTLS, `uid=N pid=M` for Unix peers.
    pub evidence: String,
    /// mTLS: the certificate's end of validity. The session ends then.
    pub expires: Option<std::time::SystemTime>,
    /// Unix: the peer's uid. The session ends if the uid stops being bound to the user.
    pub uid: Option<u32>,
}
