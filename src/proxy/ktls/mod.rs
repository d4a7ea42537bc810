//! Kernel TLS (kTLS) on the session's TLS legs: rustls runs the handshake, the kernel's `tls`
//! ULP then encrypts and decrypts the records, so the relay treats the socket like a plaintext
//! one and `splice(2)` moves the bytes without a trip through user space.
//!
//! Per leg, when a TLS connection is opened (the client's mTLS leg in [`accept`], the TLS
//! upstream in [`connect`]):
//! - if the kernel offers the `tls` ULP and every cipher suite the rustls config may negotiate
//!   ([`support`], probed once per process on a loopback socket pair), the handshake is driven
//!   with rustls' unbuffered API (`handshake.rs`), the secrets go to the kernel
//!   (`TCP_ULP "tls"`, `TLS_TX`, `TLS_RX`) and rustls keeps a [`rustls::kernel::KernelConnection`]
//!   for what comes after the handshake (`socket.rs`);
//! - otherwise the leg is the user-space rustls stream it always was (tokio-rustls), and the
//!   reason is logged once per process.
//!
//! After the hand-over a non-data record (TLS 1.3 NewSessionTicket or KeyUpdate, an alert) makes
//! `read`/`splice` on the socket fail (`EIO`/`EINVAL`); the relay and the reader here then take
//! that one record with `recvmsg` and its `TLS_GET_RECORD_TYPE` control message and hand it to
//! the `KernelConnection`: tickets are stored, a KeyUpdate installs the new receive key (kernels
//! before 6.14 refuse a second key: that session then ends with an error saying so), a
//! `close_notify` is the end of that direction, any other alert an error.
//!
//! Known limits: nix has no `TLS_SET_RECORD_TYPE` control message, so the bastion sends no
//! `close_notify` (a half-close is a TCP FIN, as hiredis does) and never answers a peer's
//! KeyUpdate with its own; the kernel does not count records against the cipher's
//! confidentiality limit (about 2^24 records, hundreds of GiB, for AES-GCM).
//!
//! Must never: hand the kernel a connection whose handshake is not complete or that still has
//! records to send, lose bytes rustls decrypted before the hand-over (they are served first),
//! log a secret, or use `unsafe` (nix's safe socket options carry the keys).

mod handshake;
mod probe;
mod socket;

use std::io;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use rustls::pki_types::{CertificateDer, ServerName};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

pub use probe::{support, Support};
pub use socket::{is_control_record, Control, KtlsSocket};

/// Where a leg's TLS records are encrypted and decrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum TlsMode {
    /// The leg is not TLS (a Unix socket, a plaintext upstream).
    #[default]
    None,
    /// In the kernel (kTLS): the relay splices it like a plaintext socket.
    Kernel,
    /// In user space (rustls): the relay copies through a buffer.
    User,
}

impl TlsMode {
    /// The stable name in `sessions ls` and the audit's `tls_*` fields.
    pub fn name(self) -> &'static str {
        match self {
            TlsMode::None => "none",
            TlsMode::Kernel => "ktls",
            TlsMode::User => "rustls",
        }
    }
}

/// A TLS connection after its handshake: records handled by the kernel, or by rustls in user
/// space (`S` is tokio-rustls' server or client stream).
pub enum Tls<S> {
    Kernel(KtlsSocket),
    User(Box<S>),
}

impl<S> Tls<S> {
    pub fn mode(&self) -> TlsMode {
        match self {
            Tls::Kernel(_) => TlsMode::Kernel,
            Tls::User(_) => TlsMode::User,
        }
    }
}

/// The client's leg after the mTLS handshake, with what the session needs to identify it.
pub struct Accepted {
    pub stream: Tls<tokio_rustls::server::TlsStream<TcpStream>>,
    /// The SNI the client sent.
    pub server_name: Option<String>,
    /// The client's end-entity certificate.
    pub peer_certificate: Option<CertificateDer<'static>>,
}

/// Accept a TLS client on `tcp` with `acceptor`'s config: in the kernel when [`support`] allows
/// the config's cipher suites, else with tokio-rustls as before.
pub async fn accept(acceptor: &tokio_rustls::TlsAcceptor, tcp: TcpStream) -> io::Result<Accepted> {
    let config = acceptor.config();
    if support().allows(config.crypto_provider()) {
        return handshake::accept(config, tcp).await;
    }
    let tls = acceptor.accept(tcp).await?;
    let (_, conn) = tls.get_ref();
    Ok(Accepted {
        server_name: conn.server_name().map(str::to_string),
        peer_certificate: conn
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|cert| cert.clone().into_owned()),
        stream: Tls::User(Box::new(tls)),
    })
}

/// Open TLS to an upstream on `tcp`: in the kernel when [`support`] allows the config's cipher
/// suites (the config must have `enable_secret_extraction`), else with tokio-rustls.
pub async fn connect(
    config: Arc<rustls::ClientConfig>,
    server_name: ServerName<'static>,
    tcp: TcpStream,
) -> io::Result<Tls<tokio_rustls::client::TlsStream<TcpStream>>> {
    if config.enable_secret_extraction && support().allows(config.crypto_provider()) {
        return handshake::connect(config, server_name, tcp).await;
    }
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(server_name, tcp)
        .await?;
    Ok(Tls::User(Box::new(tls)))
}

impl<S> Tls<S> {
    /// The TCP socket under the TLS connection.
    pub fn tcp(&self) -> &TcpStream
    where
        S: TcpInner,
    {
        match self {
            Tls::Kernel(socket) => socket.tcp(),
            Tls::User(stream) => stream.tcp(),
        }
    }
}

/// tokio-rustls' streams, for [`Tls::tcp`].
pub trait TcpInner {
    fn tcp(&self) -> &TcpStream;
}

impl TcpInner for tokio_rustls::client::TlsStream<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }
}

impl TcpInner for tokio_rustls::server::TlsStream<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tls<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Tls::Kernel(socket) => Pin::new(socket).poll_read(cx, buf),
            Tls::User(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tls<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Tls::Kernel(socket) => Pin::new(socket).poll_write(cx, buf),
            Tls::User(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Tls::Kernel(socket) => Pin::new(socket).poll_flush(cx),
            Tls::User(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Tls::Kernel(socket) => Pin::new(socket).poll_shutdown(cx),
            Tls::User(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Why a leg could not be handed to the kernel, or a kTLS record could not be handled.
#[derive(Debug, thiserror::Error)]
pub enum KtlsError {
    #[error("kTLS: TLS handshake: {0}")]
    Tls(#[from] rustls::Error),
    #[error("kTLS: {what}: {source}")]
    Kernel {
        what: &'static str,
        source: nix::errno::Errno,
    },
    #[error("kTLS: cipher suite {0:?} has no kernel equivalent")]
    Cipher(rustls::CipherSuite),
    #[error("kTLS: {0}")]
    Protocol(&'static str),
    #[error("kTLS: the peer sent a TLS alert ({0:?})")]
    Alert(rustls::AlertDescription),
}

impl From<KtlsError> for io::Error {
    fn from(e: KtlsError) -> io::Error {
        let kind = match &e {
            KtlsError::Kernel { source, .. } => io::Error::from(*source).kind(),
            _ => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, e)
    }
}

/// The once-per-process line saying which path TLS legs take, and why.
fn log_support_once(support: &Support) {
    static LOGGED: OnceLock<()> = OnceLock::new();
    LOGGED.get_or_init(|| match support.reason() {
        None => tracing::info!("kTLS: available; TLS legs are handed to the kernel"),
        Some(reason) => tracing::info!(
            reason = %reason,
            "kTLS: unavailable ({reason}); TLS legs stay in user space (rustls)"
        ),
    });
}
