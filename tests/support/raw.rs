//! Byte-level clients for tests that must see exact bytes: a tokio-rustls client (ring provider)
//! presenting an issued certificate, a Unix-socket client, a plaintext TCP client (fixture
//! self-tests), and a tiny RESP2/RESP3 framer that cuts replies without interpreting them.
//!
//! Tests assert on raw frames (`b"+OK\r\n"`, `starts_with(b"-ERR bastion:")`, `b"%7\r\n"…`), so
//! a reply is exactly what the server sent.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio::time::timeout;
use tokio_rustls::TlsConnector;

use super::clients::Endpoint;

/// Hang guard for one read.
pub const READ_LIMIT: Duration = Duration::from_secs(60);

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One connection, reading whole RESP frames.
pub struct Raw {
    stream: Box<dyn Io>,
    buf: Vec<u8>,
    /// TLS: the end-entity certificate the server presented.
    server_cert: Option<CertificateDer<'static>>,
}

impl Raw {
    /// Connect (and for TLS, complete the handshake). TLS: the server's chain is verified
    /// against the endpoint's CA, its name is not (routing tests send SNIs such as `nosuchdb`
    /// that no certificate names; the name check is not what they test).
    pub async fn connect(ep: &Endpoint) -> io::Result<Raw> {
        Raw::connect_checking(ep, false).await
    }

    /// [`connect`](Self::connect), but TLS also verifies that the server certificate names the
    /// SNI, as strict clients do (e.g. redis-py with `ssl_check_hostname`).
    pub async fn connect_verifying_name(ep: &Endpoint) -> io::Result<Raw> {
        Raw::connect_checking(ep, true).await
    }

    async fn connect_checking(ep: &Endpoint, check_name: bool) -> io::Result<Raw> {
        let mut server_cert = None;
        let stream: Box<dyn Io> = match ep {
            Endpoint::Tls { addr, .. } => {
                let (connector, name) =
                    tls_client(ep, check_name)?.expect("a TLS endpoint has a TLS client side");
                let tcp = TcpStream::connect(addr).await?;
                tcp.set_nodelay(true)?;
                let tls = timeout(READ_LIMIT, connector.connect(name, tcp))
                    .await
                    .map_err(|_| {
                        io::Error::new(io::ErrorKind::TimedOut, "hang guard: TLS handshake")
                    })??;
                server_cert = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .map(|c| c.clone().into_owned());
                Box::new(tls)
            }
            Endpoint::Tcp { addr } => Box::new(TcpStream::connect(addr).await?),
            Endpoint::Unix { path } => Box::new(UnixStream::connect(path).await?),
        };
        Ok(Raw {
            stream,
            buf: Vec::new(),
            server_cert,
        })
    }

    /// The certificate a TLS server presented (`None` for Unix / plain TCP).
    pub fn server_cert(&self) -> Option<&CertificateDer<'static>> {
        self.server_cert.as_ref()
    }

    /// A TCP connection that never starts TLS (handshake-timeout tests).
    pub async fn connect_tcp_only(addr: SocketAddr) -> io::Result<Raw> {
        Ok(Raw {
            stream: Box::new(TcpStream::connect(addr).await?),
            buf: Vec::new(),
            server_cert: None,
        })
    }

    /// Write `bytes` in one write call (and flush).
    pub async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await
    }

    /// Send one command as a RESP array and read one reply frame.
    pub async fn request(&mut self, args: &[&[u8]]) -> io::Result<Vec<u8>> {
        self.send(&command(args)).await?;
        self.read_frame().await
    }

    /// [`request`](Self::request) with string arguments.
    pub async fn request_str(&mut self, args: &[&str]) -> io::Result<Vec<u8>> {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.request(&args).await
    }

    /// Read exactly one complete frame (RESP2 or RESP3), as sent.
    pub async fn read_frame(&mut self) -> io::Result<Vec<u8>> {
        loop {
            match frame_len(&self.buf) {
                Ok(Some(n)) => return Ok(self.buf.drain(..n).collect()),
                Ok(None) => {}
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
            }
            let mut chunk = vec![0u8; 256 * 1024];
            let n = timeout(READ_LIMIT, self.stream.read(&mut chunk))
                .await
                .map_err(|_| {
                    io::Error::new(io::ErrorKind::TimedOut, "hang guard: no complete reply")
                })??;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "connection closed; unparsed bytes: {}",
                        show(&self.buf[..self.buf.len().min(300)])
                    ),
                ));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Read `n` frames.
    pub async fn read_frames(&mut self, n: usize) -> io::Result<Vec<Vec<u8>>> {
        let mut frames = Vec::with_capacity(n);
        for _ in 0..n {
            frames.push(self.read_frame().await?);
        }
        Ok(frames)
    }

    /// Read until the peer closes (EOF, reset, or a TLS alert). `Ok(bytes seen)` once closed;
    /// `Err` if it is still open after `limit` (a hang guard).
    pub async fn read_until_closed(&mut self, limit: Duration) -> Result<Vec<u8>, Vec<u8>> {
        let mut seen = std::mem::take(&mut self.buf);
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let mut chunk = vec![0u8; 64 * 1024];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_) => return Err(seen),
                Ok(Ok(0)) | Ok(Err(_)) => return Ok(seen),
                Ok(Ok(n)) => seen.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

/// Encode a command as a RESP array of bulk strings.
pub fn command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// [`command`] with string arguments.
pub fn command_str(args: &[&str]) -> Vec<u8> {
    let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    command(&args)
}

/// A frame for messages: printable, cut at 300 bytes.
pub fn show(frame: &[u8]) -> String {
    let cut = &frame[..frame.len().min(300)];
    let mut s = String::from_utf8_lossy(cut).escape_debug().to_string();
    if frame.len() > cut.len() {
        s.push_str(&format!("… ({} bytes)", frame.len()));
    }
    s
}

/// Length of the first complete frame in `buf`; `None` if incomplete. Knows every RESP2 and
/// RESP3 type, including null bulk/array (`$-1`, `*-1`) and attributes (`|`, which precede the
/// frame they annotate and are returned together with it). Streamed (`$?`) types are not
/// supported (Redis does not send them).
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, String> {
    frame_end(buf, 0)
}

fn frame_end(buf: &[u8], pos: usize) -> Result<Option<usize>, String> {
    let Some(&kind) = buf.get(pos) else {
        return Ok(None);
    };
    let Some(cr) = buf[pos..]
        .windows(2)
        .position(|w| w == b"\r\n")
        .map(|i| pos + i)
    else {
        return Ok(None);
    };
    let line = &buf[pos + 1..cr];
    let after = cr + 2;
    let number = || -> Result<i64, String> {
        std::str::from_utf8(line)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad length in {}", show(&buf[pos..after])))
    };
    match kind {
        b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => Ok(Some(after)),
        b'$' | b'!' | b'=' => {
            let n = number()?;
            if n < 0 {
                return Ok(Some(after));
            }
            let end = after + n as usize + 2;
            if buf.len() < end {
                return Ok(None);
            }
            if &buf[end - 2..end] != b"\r\n" {
                return Err(format!("bulk of {n} bytes not followed by CRLF"));
            }
            Ok(Some(end))
        }
        b'*' | b'~' | b'>' | b'%' | b'|' => {
            let n = number()?;
            if n < 0 {
                return Ok(Some(after));
            }
            let items = if matches!(kind, b'%' | b'|') {
                2 * n
            } else {
                n
            };
            let mut p = after;
            for _ in 0..items {
                match frame_end(buf, p)? {
                    Some(e) => p = e,
                    None => return Ok(None),
                }
            }
            if kind == b'|' {
                return frame_end(buf, p);
            }
            Ok(Some(p))
        }
        _ => Err(format!(
            "not a RESP frame: {}",
            show(&buf[pos..buf.len().min(pos + 80)])
        )),
    }
}

/// The client side of a TLS endpoint, built once for any number of connections: its connector
/// ([`tls_connector`]) and the server name to send (an endpoint without SNI gets its IP address,
/// for which rustls sends no SNI). `None` for a Unix or plain TCP endpoint.
pub fn tls_client(
    ep: &Endpoint,
    check_name: bool,
) -> io::Result<Option<(TlsConnector, ServerName<'static>)>> {
    let Endpoint::Tls {
        addr,
        sni,
        ca,
        identity,
    } = ep
    else {
        return Ok(None);
    };
    let connector = tls_connector(
        ca,
        identity.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
        check_name,
    )?;
    let name = match sni {
        Some(s) => ServerName::try_from(s.clone())
            .map_err(|e| io::Error::other(format!("SNI '{s}': {e}")))?,
        None => ServerName::IpAddress(addr.ip().into()),
    };
    Ok(Some((connector, name)))
}

/// A rustls client config (ring provider) trusting `ca`, optionally presenting a certificate;
/// the server's name is verified only with `check_name`.
pub fn tls_connector(
    ca: &Path,
    identity: Option<(&Path, &Path)>,
    check_name: bool,
) -> io::Result<TlsConnector> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca)
        .map_err(|e| io::Error::other(format!("{}: {e}", ca.display())))?
    {
        let cert = cert.map_err(|e| io::Error::other(format!("{}: {e}", ca.display())))?;
        roots.add(cert).map_err(io::Error::other)?;
    }
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(io::Error::other)?;
    let verifier: Arc<dyn ServerCertVerifier> = if check_name {
        webpki
    } else {
        Arc::new(ChainOnly(webpki))
    };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match identity {
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| io::Error::other(format!("{}: {e}", cert.display())))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| io::Error::other(format!("{}: {e}", key.display())))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(io::Error::other)?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(TlsConnector::from(Arc::new(config)))
}

/// WebPKI verification of the chain, ignoring only "certificate not valid for this name".
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}
