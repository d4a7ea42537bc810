//! TCP socket options both legs of a session use.
//!
//! Keepalive makes a peer that vanished (powered off, cable cut, NAT entry expired) show up as
//! an error within minutes instead of holding a session slot forever.

use std::os::fd::AsFd;
use std::time::Duration;

use nix::sys::socket::{setsockopt, sockopt};

/// First probe after this much silence.
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
/// Between probes.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// Unanswered probes before the kernel reports the connection dead.
pub const KEEPALIVE_PROBES: u32 = 6;

/// `TCP_NODELAY` (Redis traffic is small request/response frames: never let Nagle hold them
/// back) and keepalive. Best effort: a socket that refuses an option still works.
pub fn tune(sock: &impl AsFd) {
    let _ = setsockopt(sock, sockopt::TcpNoDelay, &true);
    let _ = setsockopt(sock, sockopt::KeepAlive, &true);
    let _ = setsockopt(
        sock,
        sockopt::TcpKeepIdle,
        &(KEEPALIVE_IDLE.as_secs() as u32),
    );
    let _ = setsockopt(
        sock,
        sockopt::TcpKeepInterval,
        &(KEEPALIVE_INTERVAL.as_secs() as u32),
    );
    let _ = setsockopt(sock, sockopt::TcpKeepCount, &KEEPALIVE_PROBES);
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::getsockopt;

    #[tokio::test]
    async fn tune_turns_on_nodelay_and_keepalive() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = tokio::net::TcpStream::connect(l.local_addr().unwrap())
            .await
            .unwrap();
        assert!(!getsockopt(&c, sockopt::KeepAlive).unwrap());
        tune(&c);
        assert!(getsockopt(&c, sockopt::KeepAlive).unwrap());
        assert!(getsockopt(&c, sockopt::TcpNoDelay).unwrap());
        assert_eq!(getsockopt(&c, sockopt::TcpKeepIdle).unwrap(), 60);
        assert_eq!(getsockopt(&c, sockopt::TcpKeepInterval).unwrap(), 10);
        assert_eq!(getsockopt(&c, sockopt::TcpKeepCount).unwrap(), 6);
    }
}
