//! Whether this kernel can take TLS legs: the `tls` ULP, and which AEADs it accepts keys for.
//! Asked once per process, on a loopback TCP pair, with the same socket options a session uses
//! (all-zero throw-away keys); the answer and its reason are logged once.

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::sync::OnceLock;

use nix::errno::Errno;
use nix::sys::socket::{setsockopt, sockopt};
use rustls::crypto::CryptoProvider;
use rustls::CipherSuite;

use super::socket::{crypto_info, Aead};

/// What the kernel offers, found by [`support`].
#[derive(Debug)]
pub struct Support {
    answer: Result<Vec<Aead>, Unsupported>,
}

/// Why TLS legs stay in user space.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Unsupported {
    #[error("the kernel has no `tls` ULP (TCP_ULP: {0}; CONFIG_TLS, `modprobe tls`)")]
    Ulp(Errno),
    #[error("the kernel refuses {aead} keys (TLS_TX/TLS_RX: {errno})")]
    Cipher { aead: &'static str, errno: Errno },
    #[error("probing kTLS on a loopback socket failed: {0}")]
    Probe(String),
}

/// The kernel's answer, probed on first use.
pub fn support() -> &'static Support {
    static SUPPORT: OnceLock<Support> = OnceLock::new();
    SUPPORT.get_or_init(|| {
        let support = Support { answer: probe() };
        super::log_support_once(&support);
        support
    })
}

impl Support {
    /// True if every cipher suite `provider` may negotiate can be handed to the kernel, so the
    /// decision is made before the handshake and never strands a session half-way.
    pub fn allows(&self, provider: &CryptoProvider) -> bool {
        match &self.answer {
            Err(_) => false,
            Ok(aeads) => provider
                .cipher_suites
                .iter()
                .all(|suite| aead_of(suite.suite()).is_some_and(|aead| aeads.contains(&aead))),
        }
    }

    /// Why kTLS is not used, or `None` when it is available.
    pub fn reason(&self) -> Option<&Unsupported> {
        self.answer.as_ref().err()
    }
}

/// The kernel AEAD a rustls cipher suite uses, if the kernel has one.
pub(super) fn aead_of(suite: CipherSuite) -> Option<Aead> {
    use CipherSuite::*;
    match suite {
        TLS13_AES_128_GCM_SHA256
        | TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
        | TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => Some(Aead::Aes128Gcm),
        TLS13_AES_256_GCM_SHA384
        | TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
        | TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => Some(Aead::Aes256Gcm),
        TLS13_CHACHA20_POLY1305_SHA256
        | TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
        | TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => Some(Aead::Chacha20Poly1305),
        _ => None,
    }
}

fn probe() -> Result<Vec<Aead>, Unsupported> {
    let probe_err = |e: std::io::Error| Unsupported::Probe(e.to_string());
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(probe_err)?;
    let addr = listener.local_addr().map_err(probe_err)?;
    let mut supported = Vec::new();
    for aead in [Aead::Aes128Gcm, Aead::Aes256Gcm, Aead::Chacha20Poly1305] {
        // The ULP needs an established connection; each AEAD needs a fresh one (keys are
        // set once per socket).
        let socket = TcpStream::connect(addr).map_err(probe_err)?;
        let _peer = listener.accept().map_err(probe_err)?;
        setsockopt(&socket, sockopt::TcpUlp::default(), b"tls").map_err(Unsupported::Ulp)?;
        let info = crypto_info(
            rustls::ProtocolVersion::TLSv1_3,
            0,
            aead,
            &[0u8; 32][..aead.key_len()],
            &[0u8; 12],
        )
        .map_err(|e| Unsupported::Probe(e.to_string()))?;
        let set = setsockopt(&socket, sockopt::TcpTlsTx, &info)
            .and_then(|()| setsockopt(&socket, sockopt::TcpTlsRx, &info));
        match set {
            Ok(()) => supported.push(aead),
            Err(errno) => {
                return Err(Unsupported::Cipher {
                    aead: aead.name(),
                    errno,
                })
            }
        }
    }
    Ok(supported)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_suite_of_the_ring_provider_has_a_kernel_aead() {
        let provider = rustls::crypto::ring::default_provider();
        for suite in &provider.cipher_suites {
            assert!(aead_of(suite.suite()).is_some(), "{:?}", suite.suite());
        }
    }

    /// This host's kernel has no CONFIG_TLS: the probe says so, with a reason an operator can
    /// act on, and no provider is allowed. (On a kernel with kTLS the answer is the opposite:
    /// the boot test in tests/appliance_boot.rs proves that side.)
    #[test]
    fn the_probe_answers_with_a_reason_or_every_aead() {
        let support = support();
        let provider = rustls::crypto::ring::default_provider();
        match support.reason() {
            Some(reason) => {
                assert!(!support.allows(&provider));
                assert!(reason.to_string().contains("tls"), "{reason}");
            }
            None => assert!(support.allows(&provider)),
        }
    }
}
