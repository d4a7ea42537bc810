//! `[listeners]`: the mTLS TCP listeners and the Unix-socket directory.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::de::de_octal;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Listeners {
    /// mTLS listeners for stock Redis clients.
    #[serde(default)]
    pub tcp: Vec<TcpListenerConfig>,
    /// The Unix-socket directory (one `<db>.sock` per database), reached over `ssh -L`.
    #[serde(default)]
    pub unix: Option<UnixListenerConfig>,
}

/// One `[[listeners.tcp]]` as written; parsing splits it into its address (boot) and its
/// [`TcpRouting`] (live).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TcpListenerConfig {
    pub address: SocketAddr,
    /// A fixed database: every client of this listener reaches it, whatever its SNI says.
    #[serde(default)]
    pub database: Option<String>,
    /// The database for clients that send no SNI (e.g. `redis-cli -h 127.0.0.1` without `--sni`).
    #[serde(default)]
    pub default_database: Option<String>,
    /// Extra DNS names / IPs for the listener's server certificate (database names are always in it).
    #[serde(default)]
    pub server_names: Vec<String>,
}

/// Which database a TLS listener's clients reach and the names its server certificate carries:
/// a reload swaps these.
#[derive(Debug, Clone, PartialEq)]
pub struct TcpRouting {
    /// A fixed database: every client of this listener reaches it, whatever its SNI says.
    pub database: Option<String>,
    /// The database for clients that send no SNI.
    pub default_database: Option<String>,
    /// Extra DNS names / IPs for the listener's server certificate.
    pub server_names: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnixListenerConfig {
    pub directory: PathBuf,
    /// Socket file mode, octal string. Identity comes from SO_PEERCRED, so the default lets any
    /// local user connect and be refused unless bound to a bastion user.
    #[serde(default = "default_socket_mode", deserialize_with = "de_octal")]
    pub mode: u32,
}

fn default_socket_mode() -> u32 {
    0o666
}
