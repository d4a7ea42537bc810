//! Test fixtures for the relay: real socket pairs on loopback.
//! Test-only; must never be compiled into the product.

use tokio::net::{TcpListener, TcpStream, UnixStream};

/// A connected loopback TCP pair: (the end handed to the relay, the end the test drives).
pub(super) async fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local_addr");
    let (connected, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
    (connected.expect("connect"), accepted.expect("accept").0)
}

/// A connected Unix stream pair: (the relay's end, the test's end).
pub(super) fn unix_pair() -> (UnixStream, UnixStream) {
    UnixStream::pair().expect("socketpair")
}
