//! A TCP socket whose TLS records the kernel handles: keys installed from rustls' extracted
//! secrets, and the non-data records that follow the handshake taken with `recvmsg` and handed
//! to rustls' [`KernelConnection`].

use std::io;
use std::io::IoSliceMut;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::task::{ready, Context, Poll};

use nix::errno::Errno;
use nix::libc;
use nix::sys::socket::sockopt::{TcpTlsRx, TcpTlsTx, TcpUlp, TlsCryptoInfo};
use nix::sys::socket::{recvmsg, setsockopt, ControlMessageOwned, MsgFlags, TlsGetRecordType};
use rustls::client::ClientConnectionData;
use rustls::kernel::KernelConnection;
use rustls::server::ServerConnectionData;
use rustls::{ConnectionTrafficSecrets, ExtractedSecrets, ProtocolVersion};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;
use zeroize::Zeroize;

use super::probe::aead_of;
use super::KtlsError;

/// The largest plaintext of one TLS record (RFC 8446 §5.1), plus room for TLS 1.3's padding.
const MAX_RECORD: usize = 16 * 1024 + 256;

/// A TCP socket with kTLS on both directions. Reads and writes carry plaintext; the kernel
/// encrypts and decrypts.
pub struct KtlsSocket {
    tcp: TcpStream,
    /// Boxed: rustls' state is large and the socket travels by value in the relay's enums.
    state: Box<State>,
}

struct State {
    /// Plaintext rustls decrypted before the hand-over (records the peer sent right behind its
    /// handshake); served before anything the kernel decrypts.
    early: Vec<u8>,
    /// What rustls keeps after the hand-over. Shared by the two relay directions (one reads,
    /// one writes this socket); only the reading side takes it, so the lock is uncontended.
    kernel: Mutex<Kernel>,
    /// We half-closed this leg (a FIN: kTLS here cannot send `close_notify`). A peer that then
    /// answers with a fatal alert (OpenSSL: `decode_error`, its "unexpected EOF") is closing,
    /// not failing.
    write_closed: AtomicBool,
}

pub(super) enum Kernel {
    Server(KernelConnection<ServerConnectionData>),
    Client(KernelConnection<ClientConnectionData>),
}

/// What one non-data record meant for the reading direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Handled (a ticket stored, new receive keys installed): keep reading.
    Handled,
    /// The peer's `close_notify` (or EOF): this direction is done.
    Closed,
}

/// The kernel AEADs a TLS leg can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aead {
    Aes128Gcm,
    Aes256Gcm,
    Chacha20Poly1305,
}

impl Aead {
    pub(super) fn name(self) -> &'static str {
        match self {
            Aead::Aes128Gcm => "AES-128-GCM",
            Aead::Aes256Gcm => "AES-256-GCM",
            Aead::Chacha20Poly1305 => "ChaCha20-Poly1305",
        }
    }

    pub(super) fn key_len(self) -> usize {
        match self {
            Aead::Aes128Gcm => 16,
            Aead::Aes256Gcm | Aead::Chacha20Poly1305 => 32,
        }
    }
}

impl KtlsSocket {
    /// Turn on the `tls` ULP on `tcp` and install both directions' keys. `early` is plaintext
    /// rustls already decrypted.
    pub(super) fn install(
        tcp: TcpStream,
        secrets: ExtractedSecrets,
        kernel: Kernel,
        early: Vec<u8>,
    ) -> Result<KtlsSocket, KtlsError> {
        let version = kernel.protocol_version();
        let aead = kernel.aead()?;
        setsockopt(&tcp, TcpUlp::default(), b"tls").map_err(|source| KtlsError::Kernel {
            what: "enabling the tls ULP",
            source,
        })?;
        let (tx_seq, tx) = secrets.tx;
        let (rx_seq, rx) = secrets.rx;
        set_keys(&tcp, Direction::Tx, version, aead, tx_seq, &tx)?;
        set_keys(&tcp, Direction::Rx, version, aead, rx_seq, &rx)?;
        Ok(KtlsSocket {
            tcp,
            state: Box::new(State {
                early,
                kernel: Mutex::new(kernel),
                write_closed: AtomicBool::new(false),
            }),
        })
    }

    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// To re-register the socket with another runtime (`proxy::cores::rehome`).
    pub fn tcp_mut(&mut self) -> &mut TcpStream {
        &mut self.tcp
    }

    /// `shutdown(SHUT_WR)` through a shared reference (the relay's other direction keeps
    /// reading), remembered for [`alert`].
    pub fn shutdown_write(&self) -> io::Result<()> {
        self.state.write_closed.store(true, Ordering::Relaxed);
        nix::sys::socket::shutdown(self.tcp.as_raw_fd(), nix::sys::socket::Shutdown::Write)
            .map_err(io::Error::from)
    }

    /// Plaintext decrypted before the hand-over is still waiting to be read: the relay must
    /// read this leg through [`AsyncRead`] (not splice it) to deliver it first.
    pub fn has_early(&self) -> bool {
        !self.state.early.is_empty()
    }

    /// One non-blocking `read(2)`; a non-data record at the head of the queue is taken and
    /// handled ([`KtlsSocket::take_control`]) and reading goes on. `Ok(0)` is EOF or the
    /// peer's `close_notify`. On `WouldBlock` tokio clears read readiness.
    pub fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.tcp.try_read(buf) {
                Err(e) if is_control_record(&e) => match self.take_control()? {
                    Control::Handled => continue,
                    Control::Closed => return Ok(0),
                },
                done => return done,
            }
        }
    }

    /// Take the non-data record at the head of the receive queue (after `read` failed with
    /// `EIO` or `splice` with `EINVAL`) and handle it. Runs under tokio's `try_io`, so a
    /// `WouldBlock` clears read readiness.
    pub fn take_control(&self) -> io::Result<Control> {
        self.tcp
            .try_io(Interest::READABLE, || self.control_record())
    }

    fn control_record(&self) -> io::Result<Control> {
        let mut record = vec![0u8; MAX_RECORD];
        let mut cmsg = nix::cmsg_space!(u8);
        let (n, kind) = {
            let mut iov = [IoSliceMut::new(&mut record)];
            let msg = recvmsg::<()>(
                self.tcp.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::empty(),
            )?;
            let kind = msg.cmsgs()?.find_map(|c| match c {
                ControlMessageOwned::TlsGetRecordType(kind) => Some(kind),
                _ => None,
            });
            (msg.bytes, kind)
        };
        if n == 0 {
            return Ok(Control::Closed);
        }
        let content = &record[..n];
        let mut kernel = self.state.kernel.lock().unwrap_or_else(|e| e.into_inner());
        let handled = match kind {
            Some(TlsGetRecordType::Handshake) => kernel.handshake(&self.tcp, content),
            Some(TlsGetRecordType::Alert) => {
                alert(content, self.state.write_closed.load(Ordering::Relaxed))
            }
            _ => Err(KtlsError::Protocol(
                "expected a non-data record at the head of the receive queue",
            )),
        };
        record.zeroize();
        Ok(handled?)
    }
}

/// `EIO` from `read(2)` or `EINVAL` from `splice(2)`: the record at the head is not data.
pub fn is_control_record(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error().map(Errno::from_raw),
        Some(Errno::EIO | Errno::EINVAL)
    )
}

impl Kernel {
    fn protocol_version(&self) -> ProtocolVersion {
        match self {
            Kernel::Server(k) => k.protocol_version(),
            Kernel::Client(k) => k.protocol_version(),
        }
    }

    fn aead(&self) -> Result<Aead, KtlsError> {
        let suite = match self {
            Kernel::Server(k) => k.negotiated_cipher_suite(),
            Kernel::Client(k) => k.negotiated_cipher_suite(),
        }
        .suite();
        aead_of(suite).ok_or(KtlsError::Cipher(suite))
    }

    /// The handshake messages of one record (RFC 8446 §4: type, 24-bit length, body).
    fn handshake(&mut self, tcp: &TcpStream, mut messages: &[u8]) -> Result<Control, KtlsError> {
        while !messages.is_empty() {
            let [kind, a, b, c, rest @ ..] = messages else {
                return Err(KtlsError::Protocol("a truncated handshake message"));
            };
            let len = u32::from_be_bytes([0, *a, *b, *c]) as usize;
            if rest.len() < len {
                return Err(KtlsError::Protocol(
                    "a handshake message split across records",
                ));
            }
            let (body, next) = rest.split_at(len);
            messages = next;
            match rustls::HandshakeType::from(*kind) {
                rustls::HandshakeType::NewSessionTicket => match self {
                    Kernel::Client(k) => k.handle_new_session_ticket(body)?,
                    Kernel::Server(_) => {
                        return Err(KtlsError::Protocol("a client sent a NewSessionTicket"))
                    }
                },
                rustls::HandshakeType::KeyUpdate => self.key_update(tcp, body)?,
                _ => {
                    return Err(KtlsError::Protocol(
                        "an unexpected handshake message after the handshake",
                    ))
                }
            }
        }
        Ok(Control::Handled)
    }

    /// The peer changed its sending keys: derive the new receive secret and give it to the
    /// kernel. A requested update of ours is not answered (see the module docs).
    fn key_update(&mut self, tcp: &TcpStream, body: &[u8]) -> Result<(), KtlsError> {
        let requested = match body {
            [0] => false,
            [1] => true,
            _ => return Err(KtlsError::Protocol("a malformed KeyUpdate")),
        };
        let version = self.protocol_version();
        let aead = self.aead()?;
        let (seq, secrets) = match self {
            Kernel::Server(k) => k.update_rx_secret()?,
            Kernel::Client(k) => k.update_rx_secret()?,
        };
        set_keys(tcp, Direction::Rx, version, aead, seq, &secrets).map_err(|e| match e {
            KtlsError::Kernel { source, .. } => KtlsError::Kernel {
                what: "the peer sent a TLS KeyUpdate and this kernel refused the new receive \
                       key (kTLS re-keying needs Linux 6.14 or later)",
                source,
            },
            other => other,
        })?;
        tracing::debug!(
            requested,
            "kTLS: peer updated its keys; new receive key installed"
        );
        Ok(())
    }
}

/// An alert record: `close_notify` ends the direction, anything else is the peer's error.
///
/// After our own half-close any alert ends the direction too: without a `close_notify` from us
/// the peer sees an unexpected EOF, and OpenSSL answers that with `decode_error`.
fn alert(content: &[u8], write_closed: bool) -> Result<Control, KtlsError> {
    match content {
        [_, 0] => Ok(Control::Closed),
        [_, description] if write_closed => {
            tracing::debug!(
                alert = ?rustls::AlertDescription::from(*description),
                "kTLS: the peer answered our half-close with an alert; treated as its close"
            );
            Ok(Control::Closed)
        }
        [_, description] => Err(KtlsError::Alert(rustls::AlertDescription::from(
            *description,
        ))),
        _ => Err(KtlsError::Protocol("a malformed alert record")),
    }
}

#[derive(Clone, Copy)]
enum Direction {
    Tx,
    Rx,
}

fn set_keys(
    tcp: &TcpStream,
    direction: Direction,
    version: ProtocolVersion,
    aead: Aead,
    seq: u64,
    secrets: &ConnectionTrafficSecrets,
) -> Result<(), KtlsError> {
    let (key, iv) = match secrets {
        ConnectionTrafficSecrets::Aes128Gcm { key, iv }
        | ConnectionTrafficSecrets::Aes256Gcm { key, iv }
        | ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => (key.as_ref(), iv.as_ref()),
        _ => return Err(KtlsError::Protocol("secrets of an AEAD the kernel lacks")),
    };
    let mut info = crypto_info(version, seq, aead, key, iv)?;
    let set = match direction {
        Direction::Tx => setsockopt(tcp, TcpTlsTx, &info),
        Direction::Rx => setsockopt(tcp, TcpTlsRx, &info),
    };
    wipe(&mut info);
    set.map_err(|source| KtlsError::Kernel {
        what: match direction {
            Direction::Tx => "installing the send key (TLS_TX)",
            Direction::Rx => "installing the receive key (TLS_RX)",
        },
        source,
    })
}

/// The kernel's `tls12_crypto_info_*` for `aead` from rustls' key and 12-byte IV: the IV's
/// first 4 bytes are the salt (AES-GCM) and the record sequence number starts at `seq`.
pub(super) fn crypto_info(
    version: ProtocolVersion,
    seq: u64,
    aead: Aead,
    key: &[u8],
    iv: &[u8],
) -> Result<TlsCryptoInfo, KtlsError> {
    let version = match version {
        ProtocolVersion::TLSv1_2 => libc::TLS_1_2_VERSION,
        ProtocolVersion::TLSv1_3 => libc::TLS_1_3_VERSION,
        _ => return Err(KtlsError::Protocol("a TLS version the kernel lacks")),
    };
    let bad = || KtlsError::Protocol("key or IV of the wrong length");
    let rec_seq = seq.to_be_bytes();
    // The two AES-GCM layouts differ only in their key length.
    macro_rules! gcm {
        ($variant:ident, $info:ident, $cipher:ident) => {
            TlsCryptoInfo::$variant(libc::$info {
                info: libc::tls_crypto_info {
                    version,
                    cipher_type: libc::$cipher,
                },
                iv: iv
                    .get(4..)
                    .and_then(|s| s.try_into().ok())
                    .ok_or_else(bad)?,
                key: key.try_into().map_err(|_| bad())?,
                salt: iv
                    .get(..4)
                    .and_then(|s| s.try_into().ok())
                    .ok_or_else(bad)?,
                rec_seq,
            })
        };
    }
    Ok(match aead {
        Aead::Aes128Gcm => gcm!(
            Aes128Gcm,
            tls12_crypto_info_aes_gcm_128,
            TLS_CIPHER_AES_GCM_128
        ),
        Aead::Aes256Gcm => gcm!(
            Aes256Gcm,
            tls12_crypto_info_aes_gcm_256,
            TLS_CIPHER_AES_GCM_256
        ),
        Aead::Chacha20Poly1305 => {
            TlsCryptoInfo::Chacha20Poly1305(libc::tls12_crypto_info_chacha20_poly1305 {
                info: libc::tls_crypto_info {
                    version,
                    cipher_type: libc::TLS_CIPHER_CHACHA20_POLY1305,
                },
                iv: iv.try_into().map_err(|_| bad())?,
                key: key.try_into().map_err(|_| bad())?,
                salt: [],
                rec_seq,
            })
        }
    })
}

/// Overwrite the key material in a crypto info once the kernel has its copy.
fn wipe(info: &mut TlsCryptoInfo) {
    match info {
        TlsCryptoInfo::Aes128Gcm(i) => {
            i.key.zeroize();
            i.iv.zeroize();
            i.salt.zeroize();
        }
        TlsCryptoInfo::Aes256Gcm(i) => {
            i.key.zeroize();
            i.iv.zeroize();
            i.salt.zeroize();
        }
        TlsCryptoInfo::Chacha20Poly1305(i) => {
            i.key.zeroize();
            i.iv.zeroize();
        }
    }
}

impl AsyncRead for KtlsSocket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let early = &mut this.state.early;
        if !early.is_empty() {
            let n = early.len().min(buf.remaining());
            buf.put_slice(&early[..n]);
            early.drain(..n);
            if early.is_empty() {
                // Read once, never refilled: give its memory back rather than keep it idle.
                *early = Vec::new();
            }
            return Poll::Ready(Ok(()));
        }
        loop {
            ready!(this.tcp.poll_read_ready(cx))?;
            match this.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for KtlsSocket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    /// A TCP FIN: nix cannot send a `close_notify` record through kTLS (module docs).
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.state.write_closed.store(true, Ordering::Relaxed);
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crypto_info_splits_the_iv_into_salt_and_nonce_and_numbers_records_from_seq() {
        let key: Vec<u8> = (0..16).collect();
        let iv: Vec<u8> = (100..112).collect();
        let TlsCryptoInfo::Aes128Gcm(info) =
            crypto_info(ProtocolVersion::TLSv1_3, 7, Aead::Aes128Gcm, &key, &iv).unwrap()
        else {
            panic!("wrong AEAD");
        };
        assert_eq!(info.info.version, libc::TLS_1_3_VERSION);
        assert_eq!(info.info.cipher_type, libc::TLS_CIPHER_AES_GCM_128);
        assert_eq!(info.salt, [100, 101, 102, 103]);
        assert_eq!(info.iv, [104, 105, 106, 107, 108, 109, 110, 111]);
        assert_eq!(info.key[..], key[..]);
        assert_eq!(info.rec_seq, 7u64.to_be_bytes());

        let TlsCryptoInfo::Chacha20Poly1305(info) = crypto_info(
            ProtocolVersion::TLSv1_2,
            1,
            Aead::Chacha20Poly1305,
            &[9; 32],
            &iv,
        )
        .unwrap() else {
            panic!("wrong AEAD");
        };
        assert_eq!(info.info.version, libc::TLS_1_2_VERSION);
        assert_eq!(info.iv[..], iv[..]);
        // A key of the wrong length is an error, never a panic.
        assert!(crypto_info(ProtocolVersion::TLSv1_3, 0, Aead::Aes256Gcm, &key, &iv).is_err());
    }

    #[test]
    fn alerts_close_or_fail_the_direction() {
        assert_eq!(alert(&[1, 0], false).unwrap(), Control::Closed);
        let failed = alert(&[2, 40], false).unwrap_err().to_string();
        assert!(failed.contains("HandshakeFailure"), "{failed}");
        // OpenSSL's answer to a FIN without close_notify, after we half-closed: its close.
        assert_eq!(alert(&[2, 50], true).unwrap(), Control::Closed);
        assert!(alert(&[1], false).is_err());
    }
}
