//! Which addresses an upstream may be: the rule that keeps a database definition from turning
//! the bastion into a way to reach the instance's own credentials (SSRF).
//!
//! A database address is checked twice: where it is declared (config, `import`, `db add`: an IP
//! literal is judged at once, a DNS name cannot be) and on every resolved IP right before each
//! connect, because DNS can change between the two. The connect then goes to the IP that was
//! checked, never to a second resolution of the name.
//!
//! Refused, whatever the database says:
//! - the instance metadata and container-credential endpoints (169.254.169.254, 169.254.170.2,
//!   169.254.170.23, fd00:ec2::254, fd00:ec2::23), also when written as an IPv4-mapped,
//!   IPv4-compatible or NAT64 (64:ff9b::/96) IPv6 address;
//! - the bastion's own listeners (a loop through itself would bypass the identity it checked).
//!
//! Refused unless the database opts the range in with `allow_addresses`:
//! - the rest of link-local (169.254.0.0/16, fe80::/10), unspecified (0.0.0.0/8, ::),
//!   multicast and broadcast.
//!
//! Loopback and private ranges are allowed: self-hosted Redis lives there.
//!
//! This module must never resolve names or open sockets itself: it judges addresses it is given.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;

/// Why an address may not be an upstream. The message names the address and the rule; it says
/// nothing about who asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("{ip} is {what}; a database may never point there")]
    CredentialEndpoint { ip: IpAddr, what: &'static str },
    #[error("{ip} is a link-local address (allow it with allow_addresses)")]
    LinkLocal { ip: IpAddr },
    #[error("{ip} is an unspecified address (allow it with allow_addresses)")]
    Unspecified { ip: IpAddr },
    #[error("{ip} is a multicast address (allow it with allow_addresses)")]
    Multicast { ip: IpAddr },
    #[error("{ip} is the broadcast address (allow it with allow_addresses)")]
    Broadcast { ip: IpAddr },
    #[error("{addr} is one of the bastion's own listeners")]
    OwnListener { addr: SocketAddr },
}

/// The bastion's own TCP listeners, and how to tell whether an address reaches one of them.
#[derive(Debug, Clone, Default)]
pub struct OwnListeners {
    listeners: Vec<SocketAddr>,
    /// The addresses of this host's interfaces, used for a listener bound to `0.0.0.0` / `::`.
    local: Vec<IpAddr>,
}

impl OwnListeners {
    /// `listeners` as configured; `local` is the host's interface addresses (see
    /// [`OwnListeners::local_addresses`]).
    pub fn new(listeners: Vec<SocketAddr>, local: Vec<IpAddr>) -> Self {
        Self { listeners, local }
    }

    /// The listeners, with the host's interface addresses read now.
    pub fn with_host_addresses(listeners: Vec<SocketAddr>) -> Self {
        let local = if listeners.iter().any(|l| l.ip().is_unspecified()) {
            Self::local_addresses()
        } else {
            Vec::new()
        };
        Self::new(listeners, local)
    }

    /// The IP addresses of this host's interfaces (empty if they cannot be read: loopback is
    /// still recognised on its own).
    pub fn local_addresses() -> Vec<IpAddr> {
        let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
            return Vec::new();
        };
        addrs
            .filter_map(|a| a.address)
            .filter_map(|s| {
                if let Some(v4) = s.as_sockaddr_in() {
                    Some(IpAddr::V4(v4.ip()))
                } else {
                    s.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
                }
            })
            .collect()
    }

    fn contains(&self, addr: SocketAddr) -> bool {
        let ip = canonical(addr.ip());
        self.listeners.iter().any(|l| {
            if l.port() != addr.port() {
                return false;
            }
            let lip = canonical(l.ip());
            if lip.is_unspecified() {
                ip.is_loopback()
                    || ip.is_unspecified()
                    || self.local.iter().any(|h| canonical(*h) == ip)
            } else {
                lip == ip || (lip.is_loopback() && ip.is_unspecified())
            }
        })
    }
}

/// Judge one resolved upstream address for a database whose `allow_addresses` is `allow`.
pub fn check(addr: SocketAddr, allow: &[IpNet], own: &OwnListeners) -> Result<(), Refused> {
    check_ip(addr.ip(), allow)?;
    if own.contains(addr) {
        return Err(Refused::OwnListener { addr });
    }
    Ok(())
}

/// Judge an IP on its own (no listener check): what a declaration with an IP literal can be
/// refused for before any connect.
pub fn check_ip(ip: IpAddr, allow: &[IpNet]) -> Result<(), Refused> {
    // Judge the IPv4 address an IPv6 form carries, and the form itself.
    let ips = [ip, canonical(ip)];
    for candidate in ips {
        if let Some(what) = credential_endpoint(candidate) {
            return Err(Refused::CredentialEndpoint { ip, what });
        }
    }
    if ips.iter().any(|c| allow.iter().any(|net| net.contains(c))) {
        return Ok(());
    }
    for candidate in ips {
        let refusal = match candidate {
            IpAddr::V4(v4) => {
                if v4.is_link_local() {
                    Some(Refused::LinkLocal { ip })
                } else if v4.octets()[0] == 0 {
                    // 0.0.0.0/8 "this network": connecting to it reaches the host itself.
                    Some(Refused::Unspecified { ip })
                } else if v4.is_multicast() {
                    Some(Refused::Multicast { ip })
                } else if v4.is_broadcast() {
                    Some(Refused::Broadcast { ip })
                } else {
                    None
                }
            }
            IpAddr::V6(v6) => {
                if (v6.segments()[0] & 0xffc0) == 0xfe80 {
                    Some(Refused::LinkLocal { ip })
                } else if v6.is_unspecified() {
                    Some(Refused::Unspecified { ip })
                } else if v6.is_multicast() {
                    Some(Refused::Multicast { ip })
                } else {
                    None
                }
            }
        };
        if let Some(refusal) = refusal {
            return Err(refusal);
        }
    }
    Ok(())
}

/// The AWS endpoints that hand out credentials or instance identity.
fn credential_endpoint(ip: IpAddr) -> Option<&'static str> {
    const V4: [(Ipv4Addr, &str); 3] = [
        (
            Ipv4Addr::new(169, 254, 169, 254),
            "the instance metadata service",
        ),
        (
            Ipv4Addr::new(169, 254, 170, 2),
            "the ECS container credentials endpoint",
        ),
        (
            Ipv4Addr::new(169, 254, 170, 23),
            "the EKS Pod Identity credentials endpoint",
        ),
    ];
    const V6: [(Ipv6Addr, &str); 2] = [
        (
            Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254),
            "the instance metadata service",
        ),
        (
            Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x23),
            "the EKS Pod Identity credentials endpoint",
        ),
    ];
    match ip {
        IpAddr::V4(v4) => V4.iter().find(|(a, _)| *a == v4).map(|(_, w)| *w),
        IpAddr::V6(v6) => V6.iter().find(|(a, _)| *a == v6).map(|(_, w)| *w),
    }
}

/// The IPv4 address inside an IPv4-mapped (::ffff:a.b.c.d), IPv4-compatible (::a.b.c.d) or
/// well-known NAT64 (64:ff9b::a.b.c.d) IPv6 address; any other address as it is.
pub fn canonical(ip: IpAddr) -> IpAddr {
    let IpAddr::V6(v6) = ip else { return ip };
    let s = v6.segments();
    let o = v6.octets();
    let embedded = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    let mapped = s[..5] == [0; 5] && s[5] == 0xffff;
    let compatible = s[..6] == [0; 6] && !(s[6] == 0 && s[7] <= 1); // not :: or ::1
    let nat64 = s[..6] == [0x64, 0xff9b, 0, 0, 0, 0];
    if mapped || compatible || nat64 {
        IpAddr::V4(embedded)
    } else {
        ip
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn credential_endpoints_are_refused_in_every_spelling_and_cannot_be_allowed() {
        let everything: Vec<IpNet> = vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()];
        for s in [
            "169.254.169.254",
            "169.254.170.2",
            "169.254.170.23",
            "fd00:ec2::254",
            "fd00:ec2::23",
            "::ffff:169.254.169.254",
            "::169.254.169.254",
            "64:ff9b::169.254.169.254",
            "::ffff:169.254.170.2",
        ] {
            let e = check_ip(ip(s), &everything).unwrap_err();
            assert!(matches!(e, Refused::CredentialEndpoint { .. }), "{s}: {e}");
            assert!(e.to_string().starts_with(&ip(s).to_string()), "{e}");
        }
    }

    #[test]
    fn link_local_unspecified_multicast_broadcast_are_refused_unless_allowed() {
        for (s, want) in [
            ("169.254.1.1", "link-local"),
            ("fe80::1", "link-local"),
            ("febf::1", "link-local"),
            ("::ffff:169.254.1.1", "link-local"),
            ("0.0.0.0", "unspecified"),
            ("0.1.2.3", "unspecified"),
            ("::", "unspecified"),
            ("::ffff:0.0.0.0", "unspecified"),
            ("224.0.0.1", "multicast"),
            ("ff02::1", "multicast"),
            ("255.255.255.255", "broadcast"),
        ] {
            let e = check_ip(ip(s), &[]).unwrap_err();
            assert!(e.to_string().contains(want), "{s}: {e}");
        }
        let allow: Vec<IpNet> = vec!["169.254.1.0/24".parse().unwrap()];
        check_ip(ip("169.254.1.1"), &allow).unwrap();
        check_ip(ip("::ffff:169.254.1.1"), &allow).unwrap();
        assert!(check_ip(ip("169.254.2.1"), &allow).is_err());
    }

    #[test]
    fn loopback_private_and_public_addresses_are_allowed() {
        for s in [
            "127.0.0.1",
            "127.5.5.5",
            "::1",
            "10.0.0.5",
            "172.31.255.1",
            "192.168.1.1",
            "100.64.0.1",
            "fd12:3456::1",
            "203.0.113.7",
            "2001:db8::1",
            "::ffff:10.0.0.5",
        ] {
            check_ip(ip(s), &[]).unwrap_or_else(|e| panic!("{s}: {e}"));
        }
    }

    #[test]
    fn own_listeners_are_refused_on_every_address_that_reaches_them() {
        let own = OwnListeners::new(
            vec![sa("0.0.0.0:6380"), sa("127.0.0.1:7000"), sa("[::]:6390")],
            vec![ip("10.0.0.9"), ip("fd00::9")],
        );
        for s in [
            "127.0.0.1:6380",
            "127.9.9.9:6380",
            "10.0.0.9:6380",
            "[::ffff:127.0.0.1]:6380",
            "[::ffff:10.0.0.9]:6380",
            "127.0.0.1:7000",
            "[::1]:6390",
            "[fd00::9]:6390",
            "10.0.0.9:6390",
        ] {
            let e = check(sa(s), &[], &own).unwrap_err();
            assert_eq!(e, Refused::OwnListener { addr: sa(s) }, "{s}");
        }
        for s in ["127.0.0.1:6379", "10.0.0.8:6380", "127.0.0.2:7000"] {
            check(sa(s), &[], &own).unwrap_or_else(|e| panic!("{s}: {e}"));
        }
        // An allow-list cannot make the bastion dial itself.
        let all: Vec<IpNet> = vec!["0.0.0.0/0".parse().unwrap()];
        assert!(check(sa("127.0.0.1:6380"), &all, &own).is_err());
    }

    #[test]
    fn canonical_extracts_only_embedded_ipv4() {
        assert_eq!(canonical(ip("::ffff:1.2.3.4")), ip("1.2.3.4"));
        assert_eq!(canonical(ip("64:ff9b::1.2.3.4")), ip("1.2.3.4"));
        assert_eq!(canonical(ip("::1")), ip("::1"));
        assert_eq!(canonical(ip("::")), ip("::"));
        assert_eq!(canonical(ip("2001:db8::1.2.3.4")), ip("2001:db8::102:304"));
    }
}
