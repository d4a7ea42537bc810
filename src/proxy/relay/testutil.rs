//! Test fixtures for the relay: real socket pairs on loopback, a TLS pair with a throw-away
//! self-signed certificate, and a deterministic byte stream checked by SHA-256 on both ends.
//! Test-only; must never be compiled into the product.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UnixStream};

/// Hang guard for tests whose failure mode is a lost wake-up: generous, not a speed assertion.
pub(super) const HANG_GUARD: Duration = Duration::from_secs(120);

/// A connected loopback TCP pair: (the end handed to the relay, the end the test drives).
pub(super) async fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local_addr");
    let (connected, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
    (connected.expect("connect"), accepted.expect("accept").0)
}

/// Like [`tcp_pair`] but with tiny kernel buffers (the relay's end sends through `send_buffer`
/// bytes, the test's end receives into `recv_buffer` bytes), so a slow reader fills everything.
pub(super) async fn small_buffer_tcp_pair(
    send_buffer: u32,
    recv_buffer: u32,
) -> (TcpStream, TcpStream) {
    let listen = TcpSocket::new_v4().expect("socket");
    listen.set_recv_buffer_size(recv_buffer).expect("SO_RCVBUF");
    listen
        .bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind");
    let listener = listen.listen(1).expect("listen");
    let addr = listener.local_addr().expect("local_addr");
    let connect = TcpSocket::new_v4().expect("socket");
    connect
        .set_send_buffer_size(send_buffer)
        .expect("SO_SNDBUF");
    connect
        .set_recv_buffer_size(recv_buffer)
        .expect("SO_RCVBUF");
    let (connected, accepted) = tokio::join!(connect.connect(addr), listener.accept());
    (connected.expect("connect"), accepted.expect("accept").0)
}

/// A connected Unix stream pair: (the relay's end, the test's end).
pub(super) fn unix_pair() -> (UnixStream, UnixStream) {
    UnixStream::pair().expect("socketpair")
}

/// A TLS session over loopback with a fresh self-signed certificate (ring provider):
/// (the server end, as the relay would get a client's TLS, the client end the test drives).
pub(super) async fn tls_pair() -> (
    tokio_rustls::server::TlsStream<TcpStream>,
    tokio_rustls::client::TlsStream<TcpStream>,
) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("rcgen");
    let cert: CertificateDer<'static> = certified.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));

    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .expect("server cert");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).expect("root");
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();

    let (server_tcp, client_tcp) = tcp_pair().await;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let name = ServerName::try_from("localhost").expect("server name");
    let (accepted, connected) = tokio::join!(
        acceptor.accept(server_tcp),
        connector.connect(name, client_tcp)
    );
    (
        accepted.expect("tls accept"),
        connected.expect("tls connect"),
    )
}

/// A deterministic pseudo-random byte stream (xorshift64*), so a reordering, loss or duplication
/// anywhere changes the receiver's digest.
struct Pattern(u64);

impl Pattern {
    fn fill(&mut self, buf: &mut [u8]) {
        for word in buf.chunks_mut(8) {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let value = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
            word.copy_from_slice(&value[..word.len()]);
        }
    }
}

/// Write `len` pattern bytes (seeded by `seed`, non-zero) in chunks of at most `chunk`, then
/// half-close. Returns the SHA-256 of what was written.
pub(super) async fn send_pattern<W: AsyncWrite + Unpin>(
    writer: &mut W,
    seed: u64,
    len: usize,
    chunk: usize,
) -> [u8; 32] {
    let mut pattern = Pattern(seed | 1);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; chunk];
    let mut left = len;
    while left > 0 {
        let n = left.min(chunk);
        pattern.fill(&mut buf[..n]);
        hasher.update(&buf[..n]);
        writer.write_all(&buf[..n]).await.expect("test send");
        left -= n;
    }
    writer.shutdown().await.expect("test shutdown");
    hasher.finalize().into()
}

/// Read to EOF in reads of at most `chunk` bytes, sleeping `pause` after each one (a slow
/// consumer when non-zero). Returns (bytes received, their SHA-256).
pub(super) async fn receive_all<R: AsyncRead + Unpin>(
    reader: &mut R,
    chunk: usize,
    pause: Duration,
) -> (u64, [u8; 32]) {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; chunk];
    let mut total = 0u64;
    loop {
        let n = reader.read(&mut buf).await.expect("test receive");
        if n == 0 {
            return (total, hasher.finalize().into());
        }
        hasher.update(&buf[..n]);
        total += n as u64;
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
}

/// Both test ends send `len` pattern bytes at once and half-close, while each reads the other's
/// to EOF; asserts every byte arrived intact both ways.
pub(super) async fn both_ways<C, U>(client: C, upstream: U, len: usize)
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    const CHUNK: usize = 64 * 1024;
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let (mut upstream_read, mut upstream_write) = tokio::io::split(upstream);
    let (client_sent, upstream_sent, client_got, upstream_got) = tokio::join!(
        send_pattern(&mut client_write, 0xC11E, len, CHUNK),
        send_pattern(&mut upstream_write, 0x5E4E, len, CHUNK),
        receive_all(&mut client_read, CHUNK, Duration::ZERO),
        receive_all(&mut upstream_read, CHUNK, Duration::ZERO),
    );
    assert_eq!(
        upstream_got,
        (len as u64, client_sent),
        "client → upstream bytes"
    );
    assert_eq!(
        client_got,
        (len as u64, upstream_sent),
        "upstream → client bytes"
    );
}

/// Relay `client_leg` ↔ `upstream_leg` while the test ends `client` / `upstream` exchange `len`
/// bytes each way ([`both_ways`]); returns the relay's outcome once it has checked the counts.
pub(super) async fn relay_both_ways<C, U>(
    client_leg: super::Leg,
    upstream_leg: super::Leg,
    client: C,
    upstream: U,
    len: usize,
) -> super::Outcome
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let session = tokio::spawn(super::relay(client_leg, upstream_leg));
    tokio::time::timeout(HANG_GUARD, both_ways(client, upstream, len))
        .await
        .expect("transfer hung");
    let outcome = tokio::time::timeout(HANG_GUARD, session)
        .await
        .expect("relay hung")
        .expect("relay panicked");
    assert_eq!(outcome.client_to_upstream, len as u64);
    assert_eq!(outcome.upstream_to_client, len as u64);
    outcome
}

/// The Redis-shaped half-close: the client sends its last command and half-closes; the upstream
/// must still see every byte then EOF, and its reply must still reach the client.
/// Returns (request bytes, reply bytes) for checking the relay's counts.
pub(super) async fn half_close_exchange<C, U>(mut client: C, mut upstream: U) -> (u64, u64)
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let request = b"*2\r\n$4\r\nECHO\r\n$5\r\nhello\r\n".repeat(1000);
    let reply = b"$5\r\nhello\r\n".repeat(1000);
    client.write_all(&request).await.expect("client send");
    client.shutdown().await.expect("client half-close");

    let mut got = Vec::new();
    upstream
        .read_to_end(&mut got)
        .await
        .expect("upstream reads to EOF");
    assert_eq!(got, request, "upstream got the whole request, then EOF");

    upstream.write_all(&reply).await.expect("upstream reply");
    upstream.shutdown().await.expect("upstream close");
    let mut answer = Vec::new();
    client
        .read_to_end(&mut answer)
        .await
        .expect("client reads reply");
    assert_eq!(
        answer, reply,
        "client got the whole reply after its own EOF"
    );
    (request.len() as u64, reply.len() as u64)
}

/// The relay's end of a Unix pair as a leg (registered as an accepted client is).
pub(super) fn unix_leg(stream: UnixStream) -> super::Leg {
    super::Leg::Unix(super::UnixSocket::from_tokio(stream).expect("register the Unix leg"))
}
