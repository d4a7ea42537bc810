//! One HTTP/1.1 request to IMDS on a fresh connection, with a connect timeout and a separate
//! read timeout, so "never connected" and "connected, then no reply" stay distinguishable.
//!
//! The request carries exactly the headers the caller gives plus `Host`: never
//! `X-Forwarded-For` (IMDSv2 refuses a token PUT that carries it). Replies are bounded in size.
//! Nothing here logs; callers decide what to say, and never quote a body.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::header::{HeaderMap, HeaderName, HeaderValue, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// The biggest reply read (user-data is at most 16 KiB; the rest are tiny).
const MAX_REPLY_BYTES: usize = 256 * 1024;

/// Where and how patiently to talk.
#[derive(Debug, Clone)]
pub(crate) struct Transport {
    /// `host:port` to connect to (brackets around IPv6 kept for `Host`).
    authority: String,
    host: String,
    port: u16,
    pub(crate) connect_timeout: Duration,
    pub(crate) read_timeout: Duration,
}

/// A complete reply.
pub(crate) struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Why no reply came.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The TCP connection did not open (refused, no route, or the connect timeout).
    Connect(String),
    /// The connection opened and the request went out, but no complete reply came within the
    /// read timeout.
    NoReply,
    /// The connection broke or the reply was not HTTP.
    Broken(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Connect(why) => write!(f, "connect failed: {why}"),
            Failure::NoReply => f.write_str("connected, but no reply before the read timeout"),
            Failure::Broken(why) => write!(f, "connection broken: {why}"),
        }
    }
}

impl Transport {
    /// `endpoint` is a normalized `http://host[:port]`.
    pub(crate) fn new(
        endpoint: &str,
        connect_timeout: Duration,
        read_timeout: Duration,
    ) -> Result<Self, String> {
        let authority = endpoint
            .strip_prefix("http://")
            .ok_or_else(|| format!("'{endpoint}' is not an http:// URL"))?
            .to_string();
        let parsed: hyper::http::uri::Authority = authority
            .parse()
            .map_err(|e| format!("'{endpoint}': {e}"))?;
        let host = parsed
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        Ok(Transport {
            port: parsed.port_u16().unwrap_or(80),
            host,
            authority,
            connect_timeout,
            read_timeout,
        })
    }

    /// [`Self::send`], repeated while IMDS answers 5xx or 429 (throttled), at most
    /// `max_retries` more times, waiting `backoff`, then twice that, and so on. Returns the last
    /// reply and the number of attempts made. Connection failures are not retried here: they
    /// are classified by the caller (a PUT with no reply is the hop-limit case).
    pub(crate) async fn send_retrying(
        &self,
        method: Method,
        path: &str,
        headers: &[(HeaderName, HeaderValue)],
        max_retries: u32,
        backoff: Duration,
    ) -> Result<(Reply, u32), Failure> {
        let mut attempt = 1;
        let mut wait = backoff;
        loop {
            let reply = self.send(method.clone(), path, headers).await?;
            let retryable =
                reply.status.is_server_error() || reply.status == StatusCode::TOO_MANY_REQUESTS;
            if !retryable || attempt > max_retries {
                return Ok((reply, attempt));
            }
            tokio::time::sleep(wait).await;
            wait = wait.saturating_mul(2);
            attempt += 1;
        }
    }

    /// Send `method path` with `headers` and read the whole reply.
    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(HeaderName, HeaderValue)],
    ) -> Result<Reply, Failure> {
        let connect = TcpStream::connect((self.host.as_str(), self.port));
        let stream = match tokio::time::timeout(self.connect_timeout, connect).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err(Failure::Connect(e.to_string())),
            Err(_) => {
                return Err(Failure::Connect(format!(
                    "no connection within {:?}",
                    self.connect_timeout
                )))
            }
        };
        let _ = stream.set_nodelay(true);

        let mut request = Request::builder().method(method).uri(path);
        // `Host` is not added by hyper's low-level connection.
        request = request.header(HOST, self.authority.as_str());
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let request = request
            .body(Empty::<Bytes>::new())
            .map_err(|e| Failure::Broken(format!("building the request: {e}")))?;

        let exchange = async {
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .map_err(|e| Failure::Broken(e.to_string()))?;
            // Drives the connection; ends when the reply is read and `sender` is dropped, or
            // when this future is dropped on timeout (the task then sees the socket closed).
            let _driver = AbortOnDrop(tokio::spawn(async move {
                let _ = connection.await;
            }));
            let result = async {
                let response = sender
                    .send_request(request)
                    .await
                    .map_err(|e| Failure::Broken(e.to_string()))?;
                let (parts, body) = response.into_parts();
                let body = Limited::new(body, MAX_REPLY_BYTES)
                    .collect()
                    .await
                    .map_err(|e| Failure::Broken(format!("reading the reply body: {e}")))?
                    .to_bytes();
                Ok(Reply {
                    status: parts.status,
                    headers: parts.headers,
                    body,
                })
            }
            .await;
            result
        };
        match tokio::time::timeout(self.read_timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(Failure::NoReply),
        }
    }
}

/// Stops the connection task when the exchange ends, including on the read timeout (the
/// exchange future is dropped then), so no socket outlives its request.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
