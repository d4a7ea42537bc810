//! The `[metrics]` endpoint: `GET /metrics` answers the Prometheus text page, over a loopback
//! TCP port or a Unix socket. Nothing else is served: other paths are 404, other methods 405.
//!
//! Bounded so a local client cannot use it to hold the daemon's descriptors or memory: at most
//! [`MAX_CONNECTIONS`] at once (more wait in the kernel's backlog), each closed after
//! [`CONNECTION_TIME`], requests read by hyper with its default header limits.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};

use crate::config::MetricsConfig;

/// Scrapes served at once.
pub const MAX_CONNECTIONS: usize = 16;
/// A connection (keep-alive included) lasts at most this long.
pub const CONNECTION_TIME: Duration = Duration::from_secs(30);

/// What renders the page, called once per scrape.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("metrics endpoint: cannot listen on {address}: {source}")]
    BindTcp {
        address: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("metrics endpoint: cannot listen on {path}: {source}")]
    BindUnix {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A bound endpoint, ready to [`serve`].
pub enum Endpoint {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
}

impl Endpoint {
    /// What `bastion status` lists: `metrics 127.0.0.1:9187` or `metrics /run/bastion/metrics.sock`.
    pub fn describe(&self) -> String {
        match self {
            Endpoint::Tcp(l) => match l.local_addr() {
                Ok(a) => format!("metrics http://{a}/metrics"),
                Err(_) => "metrics (tcp)".into(),
            },
            Endpoint::Unix(_, path) => format!("metrics unix {}", path.display()),
        }
    }
}

/// Bind the endpoint `config` asks for (`None`: metrics are off). The config was validated:
/// a TCP address is loopback unless `allow_remote` says otherwise.
pub async fn bind(config: &MetricsConfig) -> Result<Option<Endpoint>, MetricsError> {
    if let Some(address) = config.address {
        let l = TcpListener::bind(address)
            .await
            .map_err(|source| MetricsError::BindTcp { address, source })?;
        return Ok(Some(Endpoint::Tcp(l)));
    }
    if let Some(path) = &config.socket {
        let l = bind_unix(path, config.socket_mode).map_err(|source| MetricsError::BindUnix {
            path: path.clone(),
            source,
        })?;
        return Ok(Some(Endpoint::Unix(l, path.clone())));
    }
    Ok(None)
}

/// A socket file with its final mode before anyone can connect: bound in a fresh private
/// temporary name next to it, chmod'ed, then renamed over the final path.
fn bind_unix(path: &Path, mode: u32) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let listener = UnixListener::bind(&tmp)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
    std::fs::rename(&tmp, path)?;
    Ok(listener)
}

/// Serve scrapes until the task is aborted.
pub async fn serve(endpoint: Endpoint, render: Render) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let accepted = match &endpoint {
            Endpoint::Tcp(l) => l.accept().await.map(|(s, _)| Conn::Tcp(s)),
            Endpoint::Unix(l, _) => l.accept().await.map(|(s, _)| Conn::Unix(s)),
        };
        let conn = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(error = %e, "metrics endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let render = render.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match conn {
                Conn::Tcp(s) => one_connection(s, render).await,
                Conn::Unix(s) => one_connection(s, render).await,
            }
        });
    }
}

enum Conn {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

async fn one_connection<S>(stream: S, render: Render)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let render = render.clone();
        async move { Ok::<_, Infallible>(answer(&req, &render)) }
    });
    let conn =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    match tokio::time::timeout(CONNECTION_TIME, conn).await {
        Ok(Ok(())) | Err(_) => {}
        Ok(Err(e)) => tracing::debug!(error = %e, "metrics endpoint: connection error"),
    }
}

fn answer(req: &Request<Incoming>, render: &Render) -> Response<Full<Bytes>> {
    let (status, body, content_type) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => (
            StatusCode::OK,
            render(),
            "text/plain; version=0.0.4; charset=utf-8",
        ),
        (_, "/metrics") => (
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET\n".into(),
            "text/plain",
        ),
        _ => (StatusCode::NOT_FOUND, "see /metrics\n".into(), "text/plain"),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = content_type.parse() {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}
