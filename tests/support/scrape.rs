//! Reading the daemon's `[metrics]` endpoint the way Prometheus does: a real HTTP/1.1 GET over
//! TCP or a Unix socket, the page parsed into samples.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::bastion::Bastion;
use super::process::poll;

/// An HTTP answer: status code and body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

/// `METHOD path` over `stream`, `Connection: close`, the whole answer read.
fn exchange(mut stream: impl Read + Write, method: &str, path: &str) -> std::io::Result<Answer> {
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw)?;
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((raw.as_str(), ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok(Answer {
        status,
        body: body.to_string(),
    })
}

pub fn http_tcp(addr: SocketAddr, method: &str, path: &str) -> std::io::Result<Answer> {
    let s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    exchange(s, method, path)
}

pub fn http_unix(path: &Path, method: &str, target: &str) -> std::io::Result<Answer> {
    let s = std::os::unix::net::UnixStream::connect(path)?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    exchange(s, method, target)
}

/// The page at `GET /metrics`, or a panic naming what failed.
#[track_caller]
pub fn scrape(addr: SocketAddr) -> String {
    let a = http_tcp(addr, "GET", "/metrics").unwrap_or_else(|e| panic!("GET {addr}/metrics: {e}"));
    assert_eq!(a.status, 200, "GET /metrics: {a:?}");
    a.body
}

/// The endpoint's address, from the daemon's `listening kind=metrics endpoint=…` log line.
#[track_caller]
pub fn metrics_addr(bastion: &Bastion) -> SocketAddr {
    poll(Duration::from_secs(10), || {
        bastion.logs().lines().find_map(|l| {
            let rest = l.split("metrics http://").nth(1)?;
            rest.split('/').next()?.parse().ok()
        })
    })
    .unwrap_or_else(|| panic!("no metrics endpoint logged:\n{}", bastion.logs()))
}

/// One sample's value (`name` with its labels), 0 when the page does not have it yet (a
/// labelled counter appears with its first increment).
pub fn value(page: &str, name: &str) -> f64 {
    bastion::metrics::sample(page, name).unwrap_or(0.0)
}

/// The sum of every sample of a metric family (`bastion_relay_bytes_total` over its labels).
pub fn total(page: &str, family: &str) -> f64 {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, v) = l.rsplit_once(' ')?;
            let base = name.split('{').next()?;
            (base == family).then(|| v.parse::<f64>().ok()).flatten()
        })
        .sum()
}
