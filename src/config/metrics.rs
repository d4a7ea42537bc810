//! `[metrics]`: the Prometheus endpoint (off unless a section names where it listens).
//!
//! The page names no database, user or address (see [`crate::metrics`]), but it still tells
//! how busy the door is: by default a TCP `address` must be loopback. `allow_remote = true`
//! is the explicit opt-in to another address (put a firewall in front of it).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::de::de_octal;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// `127.0.0.1:9187`-style TCP address for `GET /metrics`.
    #[serde(default)]
    pub address: Option<SocketAddr>,
    /// Or a Unix socket path (HTTP over it: `curl --unix-socket`).
    #[serde(default)]
    pub socket: Option<PathBuf>,
    /// The socket's mode (default `0600`: root and the daemon's user).
    #[serde(default = "default_socket_mode", deserialize_with = "de_octal")]
    pub socket_mode: u32,
    /// Allow a TCP `address` that is not loopback.
    #[serde(default)]
    pub allow_remote: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            address: None,
            socket: None,
            socket_mode: default_socket_mode(),
            allow_remote: false,
        }
    }
}

fn default_socket_mode() -> u32 {
    0o600
}

impl MetricsConfig {
    /// `(key under metrics., message)` for a section that must not start.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.address.is_some() && self.socket.is_some() {
            return Err((
                "address",
                "set either address or socket, not both".to_string(),
            ));
        }
        if let Some(a) = self.address {
            if !a.ip().is_loopback() && !self.allow_remote {
                return Err((
                    "address",
                    format!(
                        "{a} is not a loopback address: the metrics page would be readable \
                         from the network (set allow_remote = true to mean it)"
                    ),
                ));
            }
        }
        if let Some(p) = &self.socket {
            if !p.is_absolute() {
                return Err((
                    "socket",
                    format!("'{}' must be an absolute path", p.display()),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> MetricsConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn loopback_only_unless_allowed() {
        assert!(parse("address = \"127.0.0.1:9187\"").check().is_ok());
        assert!(parse("address = \"[::1]:9187\"").check().is_ok());
        let open = parse("address = \"0.0.0.0:9187\"");
        let (key, message) = open.check().unwrap_err();
        assert_eq!(key, "address");
        assert!(message.contains("allow_remote"), "{message}");
        assert!(parse("address = \"0.0.0.0:9187\"\nallow_remote = true")
            .check()
            .is_ok());
    }

    #[test]
    fn one_endpoint_and_absolute_sockets() {
        assert!(parse("address = \"127.0.0.1:1\"\nsocket = \"/run/m.sock\"")
            .check()
            .is_err());
        assert!(parse("socket = \"run/m.sock\"").check().is_err());
        let s = parse("socket = \"/run/m.sock\"");
        assert!(s.check().is_ok());
        assert_eq!(s.socket_mode, 0o600);
        assert_eq!(MetricsConfig::default(), parse(""));
    }
}
