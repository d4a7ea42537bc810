//! The TLS handshake of a leg that goes to the kernel, driven with rustls' unbuffered API (the
//! only one that yields a [`rustls::kernel::KernelConnection`]) over a tokio `TcpStream`.
//!
//! The socket is read one whole TLS record at a time (5-byte header, then its length), so the
//! read that completes the handshake takes nothing behind it: records the peer sends after its
//! Finished stay in the socket for the kernel to decrypt, with the sequence numbers rustls hands
//! over. Whatever rustls did decrypt (data behind a handshake message in the same read is
//! impossible here, but a server's 0.5-RTT data is not) is kept as plaintext for the socket.

use std::io;
use std::sync::{Arc, OnceLock};

use rustls::client::UnbufferedClientConnection;
use rustls::kernel::KernelConnection;
use rustls::pki_types::ServerName;
use rustls::server::{ClientHello, ResolvesServerCert, UnbufferedServerConnection};
use rustls::sign::CertifiedKey;
use rustls::unbuffered::{ConnectionState, EncodeError, InsufficientSizeError, UnbufferedStatus};
use rustls::{CommonState, ExtractedSecrets};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::socket::{Kernel, KtlsSocket};
use super::{Accepted, KtlsError, Tls};

/// The largest TLS record on the wire: 2^14 bytes of plaintext plus expansion (RFC 8446 §5.2).
const MAX_CIPHERTEXT: usize = 16 * 1024 + 256;
const HEADER: usize = 5;

/// Server side: the client's mTLS handshake, then its keys to the kernel.
pub(super) async fn accept(
    config: &Arc<rustls::ServerConfig>,
    tcp: TcpStream,
) -> io::Result<Accepted> {
    // A per-connection copy of the config: secrets extractable, and the SNI recorded as the
    // certificate resolver sees it (the unbuffered server connection does not expose it).
    let sni = Arc::new(OnceLock::new());
    let mut config = (**config).clone();
    config.enable_secret_extraction = true;
    config.cert_resolver = Arc::new(RecordSni {
        inner: config.cert_resolver.clone(),
        sni: sni.clone(),
    });
    let conn = UnbufferedServerConnection::new(Arc::new(config)).map_err(KtlsError::from)?;
    let mut tcp = tcp;
    let (conn, early) = drive(&mut tcp, conn).await?;
    let peer_certificate = conn
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|cert| cert.clone().into_owned());
    let (secrets, kernel) = conn
        .dangerous_into_kernel_connection()
        .map_err(KtlsError::from)?;
    let socket = KtlsSocket::install(tcp, secrets, Kernel::Server(kernel), early)?;
    Ok(Accepted {
        stream: Tls::Kernel(socket),
        server_name: sni.get().cloned().flatten(),
        peer_certificate,
    })
}

/// Client side: our handshake with the upstream, then its keys to the kernel.
pub(super) async fn connect<S>(
    config: Arc<rustls::ClientConfig>,
    server_name: ServerName<'static>,
    tcp: TcpStream,
) -> io::Result<Tls<S>> {
    let conn = UnbufferedClientConnection::new(config, server_name).map_err(KtlsError::from)?;
    let mut tcp = tcp;
    let (conn, early) = drive(&mut tcp, conn).await?;
    let (secrets, kernel): (ExtractedSecrets, KernelConnection<_>) = conn
        .dangerous_into_kernel_connection()
        .map_err(KtlsError::from)?;
    let socket = KtlsSocket::install(tcp, secrets, Kernel::Client(kernel), early)?;
    Ok(Tls::Kernel(socket))
}

/// The two unbuffered connections, as [`drive`] needs them.
trait Unbuffered {
    type Data;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data>;
    fn common(&self) -> &CommonState;
}

/// The same two methods on both sides (rustls has no common trait for them).
macro_rules! unbuffered {
    ($conn:ty, $data:ty) => {
        impl Unbuffered for $conn {
            type Data = $data;
            fn process<'c, 'i>(
                &'c mut self,
                incoming: &'i mut [u8],
            ) -> UnbufferedStatus<'c, 'i, Self::Data> {
                self.process_tls_records(incoming)
            }
            fn common(&self) -> &CommonState {
                self
            }
        }
    };
}
unbuffered!(
    UnbufferedServerConnection,
    rustls::server::ServerConnectionData
);
unbuffered!(
    UnbufferedClientConnection,
    rustls::client::ClientConnectionData
);

/// What to do after one `process` step (decided while rustls holds the connection).
enum Next {
    Process,
    Send,
    Read,
    Done,
}

/// Run the handshake to its end: returns the connection (complete, nothing left to send) and
/// any application data rustls decrypted on the way.
async fn drive<C: Unbuffered>(tcp: &mut TcpStream, mut conn: C) -> io::Result<(C, Vec<u8>)> {
    let mut incoming: Vec<u8> = Vec::with_capacity(MAX_CIPHERTEXT + HEADER);
    let mut outgoing: Vec<u8> = vec![0; MAX_CIPHERTEXT];
    let mut queued = 0;
    let mut early = Vec::new();
    loop {
        let UnbufferedStatus { mut discard, state } = conn.process(&mut incoming);
        let next = match state.map_err(KtlsError::from)? {
            ConnectionState::EncodeTlsData(mut encode) => loop {
                match encode.encode(&mut outgoing[queued..]) {
                    Ok(n) => {
                        queued += n;
                        break Next::Process;
                    }
                    Err(EncodeError::InsufficientSize(InsufficientSizeError { required_size })) => {
                        outgoing.resize(queued + required_size, 0);
                    }
                    Err(_) => {
                        return Err(KtlsError::Protocol("a handshake record encoded twice").into())
                    }
                }
            },
            ConnectionState::TransmitTlsData(transmit) => {
                // The records are written right below, before rustls is asked anything else.
                transmit.done();
                Next::Send
            }
            ConnectionState::ReadTraffic(mut traffic) => {
                while let Some(record) = traffic.next_record() {
                    let record = record.map_err(KtlsError::from)?;
                    discard += record.discard;
                    early.extend_from_slice(record.payload);
                }
                Next::Process
            }
            ConnectionState::BlockedHandshake => Next::Read,
            ConnectionState::WriteTraffic(_) => Next::Done,
            ConnectionState::PeerClosed | ConnectionState::Closed => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the peer closed during the TLS handshake",
                ))
            }
            _ => return Err(KtlsError::Protocol("an unexpected handshake state").into()),
        };
        incoming.drain(..discard);
        match next {
            Next::Process => {}
            Next::Send => {
                tcp.write_all(&outgoing[..queued]).await?;
                queued = 0;
            }
            // WriteTraffic can come before the handshake ends (a TLS 1.3 server may send
            // 0.5-RTT data before the client's Finished), and with a record half-read.
            Next::Done if !conn.common().is_handshaking() && incoming.is_empty() => {
                return Ok((conn, early));
            }
            Next::Done | Next::Read => read_record(tcp, &mut incoming).await?,
        }
    }
}

/// Append exactly one TLS record from `tcp` to `buf`.
async fn read_record(tcp: &TcpStream, buf: &mut Vec<u8>) -> io::Result<()> {
    let start = buf.len();
    read_to(tcp, buf, start + HEADER).await?;
    let len = usize::from(u16::from_be_bytes([buf[start + 3], buf[start + 4]]));
    if len > MAX_CIPHERTEXT {
        return Err(KtlsError::Protocol("a TLS record longer than the protocol allows").into());
    }
    read_to(tcp, buf, start + HEADER + len).await
}

/// Read from `tcp` until `buf` is `len` bytes long, never past it.
async fn read_to(tcp: &TcpStream, buf: &mut Vec<u8>, len: usize) -> io::Result<()> {
    while buf.len() < len {
        tcp.readable().await?;
        let filled = buf.len();
        buf.resize(len, 0);
        let read = tcp.try_read(&mut buf[filled..]);
        buf.truncate(filled + *read.as_ref().unwrap_or(&0));
        match read {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the peer closed during the TLS handshake",
                ))
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The listener's certificate resolver, remembering the SNI it was asked for.
#[derive(Debug)]
struct RecordSni {
    inner: Arc<dyn ResolvesServerCert>,
    sni: Arc<OnceLock<Option<String>>>,
}

impl ResolvesServerCert for RecordSni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let _ = self.sni.set(hello.server_name().map(str::to_string));
        self.inner.resolve(hello)
    }

    fn only_raw_public_keys(&self) -> bool {
        self.inner.only_raw_public_keys()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn rcgen_pair() -> (
        rustls::pki_types::CertificateDer<'static>,
        rustls::pki_types::PrivateKeyDer<'static>,
    ) {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        (
            cert.cert.der().clone(),
            rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into()),
        )
    }

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (a, b) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (a.unwrap(), b.unwrap().0)
    }

    /// The unbuffered driver completes a TLS 1.3 handshake against tokio-rustls, leaves the
    /// records the peer sent after its Finished in the socket (not decrypted by rustls: the
    /// sequence numbers handed over must match), and yields secrets for both directions. This
    /// host has no kTLS, so the test stops short of the kernel: the boot test covers that.
    #[tokio::test]
    async fn the_client_handshake_ends_at_the_record_boundary_with_extractable_secrets() {
        let (cert, key) = rcgen_pair();
        let server = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).unwrap();
        let mut client = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        client.enable_secret_extraction = true;

        let (client_tcp, server_tcp) = pair().await;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let serve = async move {
            let mut tls = acceptor.accept(server_tcp).await.unwrap();
            // Data right behind the handshake (behind the server's tickets, too).
            tls.write_all(b"+hello\r\n").await.unwrap();
            tls.flush().await.unwrap();
            tls
        };
        let name = ServerName::try_from("localhost").unwrap();
        let dial = async {
            let mut tcp = client_tcp;
            let conn = UnbufferedClientConnection::new(Arc::new(client), name).unwrap();
            let (conn, early) = drive(&mut tcp, conn).await.unwrap();
            (tcp, conn, early)
        };
        let (_server, (tcp, conn, early)) = tokio::join!(serve, dial);
        assert!(early.is_empty(), "the driver read past the handshake");
        let (secrets, kernel) = conn.dangerous_into_kernel_connection().unwrap();
        assert_eq!(kernel.protocol_version(), rustls::ProtocolVersion::TLSv1_3);
        assert_eq!(secrets.rx.0, 0, "no post-handshake record was consumed");
        // What followed the handshake is still in the socket, as whole encrypted records.
        let mut rest = vec![0u8; 4096];
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            let mut tcp = tcp;
            tcp.read(&mut rest).await.unwrap()
        })
        .await
        .unwrap();
        assert!(n > HEADER);
        assert_eq!(rest[0], 23, "an application-data record type on the wire");
    }

    /// The server side: a handshake (without client certificates here) through [`drive`], with the SNI seen by
    /// the resolver and a client that writes its first command right behind its Finished.
    #[tokio::test]
    async fn the_server_handshake_records_sni_and_leaves_the_first_command_in_the_socket() {
        let (cert, key) = rcgen_pair();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.clone()).unwrap();
        let server = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .unwrap();
        let client = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();

        let (client_tcp, server_tcp) = pair().await;
        let name = ServerName::try_from("localhost").unwrap();
        let dial = async move {
            let mut tls = tokio_rustls::TlsConnector::from(Arc::new(client))
                .connect(name, client_tcp)
                .await
                .unwrap();
            tls.write_all(b"PING\r\n").await.unwrap();
            tls.flush().await.unwrap();
            tls
        };
        let sni = Arc::new(OnceLock::new());
        let mut config = server;
        config.enable_secret_extraction = true;
        config.cert_resolver = Arc::new(RecordSni {
            inner: config.cert_resolver.clone(),
            sni: sni.clone(),
        });
        let accept = async {
            let mut tcp = server_tcp;
            let conn = UnbufferedServerConnection::new(Arc::new(config)).unwrap();
            drive(&mut tcp, conn).await.unwrap()
        };
        let (_client, (conn, early)) = tokio::join!(dial, accept);
        assert_eq!(sni.get(), Some(&Some("localhost".to_string())));
        assert!(early.is_empty());
        let (secrets, _kernel) = conn.dangerous_into_kernel_connection().unwrap();
        assert_eq!(secrets.rx.0, 0, "the client's PING was left for the kernel");
    }
}
