//! Connection set-up (issue 13: "connection set-up hidden behind the client's first bytes"),
//! measured two ways on every target that accepts Unix clients, and on the mTLS ones:
//!
//! - **Latency**: `--setup N` brand-new connections per target per round, one at a time with
//!   nothing else running, each timed from just before `connect()` (TCP connect and TLS handshake
//!   included) to the reply of its first `PING`. Each round gives a p50 and a p90 per target; the
//!   report takes the median of each over the rounds.
//! - **Ordering**: `--order-tries N` tries per target per round. An established connection E,
//!   straight to Redis and opened before the rounds (some other client of the same database),
//!   and per try a new connection N through the target. N sends `XREADGROUP GROUP g c BLOCK
//!   2000 STREAMS <key> >` as soon as its connect returns; `--order-delay MS` after that E sends
//!   `DEL <key>` (the key is a fresh stream per try, made over E with `XGROUP CREATE … MKSTREAM`).
//!   Redis 7.0 tells which arrived first: XREADGROUP first blocks and is then woken by the DEL
//!   with `-UNBLOCKED the stream key no longer exists`; DEL first leaves no group, so XREADGROUP
//!   gets `-NOGROUP No such key …`. Any other reply is counted as unknown. A proxy that dials
//!   Redis only after the client's first bytes (or after an upstream handshake) makes the new
//!   connection's command arrive later than it was sent; direct Redis and HAProxy order them as
//!   sent once the delay exceeds a loopback round trip.
//!
//! Targets are interleaved per round in a rotated order, like the throughput rounds. A target
//! that fails prints `n/a` with its error; it never stops the bench. This module never measures
//! under load and never asserts on time.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpStream, UnixStream};
use tokio::time::timeout;
use tokio_rustls::TlsConnector;

use crate::report::median;
use crate::support::clients::Endpoint;
use crate::support::raw::{command_str, frame_len, show, tls_client};
use crate::testbed::TestBed;
use crate::{Options, Target, TargetId};

/// The targets measured (when asked for, and the baselines they need): every one a client
/// reaches by a Unix socket or mTLS, in [`TargetId::ALL`]'s order (per transport, direct Redis
/// first).
fn measured() -> impl Iterator<Item = TargetId> {
    TargetId::ALL
        .into_iter()
        .filter(|id| id.transport() != "tcp")
}

/// Hang guard for one connect, handshake or reply.
const LIMIT: Duration = Duration::from_secs(5);
/// XREADGROUP's `BLOCK`, ms: longer than any delay, shorter than [`LIMIT`].
const BLOCK_MS: &str = "2000";

/// Ordering tries that may fail per target and round before the rest of its tries are skipped.
const FAILED_TRIES: usize = 2;

/// What [`run`] measured.
pub(crate) struct Setup {
    /// New connections per target per round (`--setup`; 0: nothing was measured).
    pub(crate) connections: usize,
    /// Ordering tries per target per round (`--order-tries`).
    pub(crate) tries: usize,
    /// From N's connect to E's DEL.
    pub(crate) delay: Duration,
    pub(crate) rounds: usize,
    pub(crate) rows: Vec<SetupRow>,
    /// Why nothing could be measured (no Redis, no established connection).
    pub(crate) failed: Option<String>,
}

pub(crate) struct SetupRow {
    pub(crate) id: TargetId,
    /// Each successful round's p50 and p90 set-up time, µs, in round order.
    pub(crate) p50_us: Vec<f64>,
    pub(crate) p90_us: Vec<f64>,
    pub(crate) order: Order,
    /// Why the target, a round's latency batch or an ordering try failed.
    pub(crate) errors: Vec<String>,
}

/// The ordering trial's outcomes.
#[derive(Default, Clone)]
pub(crate) struct Order {
    /// Tries that got an answer on N (the three buckets below add up to it).
    pub(crate) tries: usize,
    /// `-UNBLOCKED`: N's XREADGROUP reached Redis before E's DEL.
    pub(crate) new_first: usize,
    /// `-NOGROUP`: E's DEL reached Redis first.
    pub(crate) established_first: usize,
    pub(crate) unknown: usize,
    /// The first few unknown replies, as received.
    pub(crate) unknown_replies: Vec<String>,
    /// Tries that failed before N answered (not in `tries`).
    pub(crate) failed: usize,
}

impl Setup {
    fn empty(opts: &Options, failed: Option<String>) -> Setup {
        Setup {
            connections: opts.setup,
            tries: opts.order_tries,
            delay: opts.order_delay,
            rounds: opts.rounds,
            rows: Vec::new(),
            failed,
        }
    }

    /// Median over the rounds of a row's p50 (or, `p90`, its p90).
    pub(crate) fn median_of(&self, id: TargetId, p90: bool) -> Option<f64> {
        let row = self.rows.iter().find(|r| r.id == id)?;
        median(Some(if p90 { &row.p90_us } else { &row.p50_us }))
    }
}

/// Measure [`measured`] targets: those `opts` asks for, and the direct Redis and HAProxy on their
/// transport so every row has its ratios. `targets`: the bench's checked targets (others are
/// checked here).
pub(crate) fn run(opts: &Options, bed: &TestBed, targets: &[Target]) -> Setup {
    if opts.setup == 0 {
        return Setup::empty(opts, None);
    }
    let Ok(redis) = &bed.redis else {
        return Setup::empty(opts, Some("no redis-server".into()));
    };
    let wanted: Vec<TargetId> = measured().filter(|id| opts.wants(*id)).collect();
    let ids: Vec<TargetId> = measured()
        .filter(|id| {
            wanted
                .iter()
                .any(|w| w == id || w.direct() == *id || w.haproxy() == *id)
        })
        .collect();
    let mut rows: Vec<SetupRow> = Vec::new();
    let mut dialers: Vec<Option<Dialer>> = Vec::new();
    for id in ids {
        let endpoint = match targets.iter().find(|t| t.id == id) {
            Some(t) => t.endpoint.clone(),
            None => bed.target(id).endpoint,
        };
        let mut row = SetupRow {
            id,
            p50_us: Vec::new(),
            p90_us: Vec::new(),
            order: Order::default(),
            errors: Vec::new(),
        };
        let dialer = endpoint.and_then(|e| Dialer::new(&e).map_err(|e| format!("{e:#}")));
        match dialer {
            Ok(d) => dialers.push(Some(d)),
            Err(e) => {
                row.errors.push(e);
                dialers.push(None);
            }
        }
        rows.push(row);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return Setup::empty(opts, Some(format!("no tokio runtime: {e}"))),
    };
    // The established connection: plaintext TCP, like the proxies' own upstream legs.
    let established = Dialer::Tcp(redis.plain_addr());
    let mut e_conn = if opts.order_tries > 0 {
        match runtime.block_on(open_established(&established)) {
            Ok(c) => Some(c),
            Err(e) => {
                return Setup::empty(
                    opts,
                    Some(format!("established connection to Redis: {e:#}")),
                )
            }
        }
    } else {
        None
    };
    let live: Vec<usize> = (0..rows.len()).filter(|i| dialers[*i].is_some()).collect();
    for round in 0..opts.rounds {
        eprintln!(
            "relay bench: connection set-up round {}/{}",
            round + 1,
            opts.rounds
        );
        for k in 0..live.len() {
            let i = live[(k + round) % live.len()];
            let Some(dialer) = &dialers[i] else { continue };
            let row = &mut rows[i];
            let name = row.id.name();
            {
                match runtime.block_on(latency_batch(dialer, opts.setup)) {
                    Ok((p50, p90)) => {
                        eprintln!("  {name:<21} set-up p50 {p50:.0} µs, p90 {p90:.0} µs");
                        row.p50_us.push(p50);
                        row.p90_us.push(p90);
                    }
                    Err(e) => {
                        eprintln!("  {name:<21} set-up: {e:#}");
                        row.errors
                            .push(format!("round {}: set-up: {e:#}", round + 1));
                    }
                }
            }
            let before = row.order.clone();
            for t in 0..opts.order_tries {
                // A broken target would spend the hang guard on every try.
                if row.order.failed - before.failed == FAILED_TRIES {
                    row.errors.push(format!(
                        "round {}: ordering: stopped after {FAILED_TRIES} failed tries",
                        round + 1
                    ));
                    break;
                }
                let key = format!("relay-bench:order:{name}:{round}:{t}");
                let outcome = match &mut e_conn {
                    Some(e) => runtime.block_on(order_once(dialer, e, &key, opts.order_delay)),
                    None => Err(anyhow!("no established connection")),
                };
                match outcome {
                    Ok(arrival) => row.order.count(arrival),
                    Err(err) => {
                        row.order.failed += 1;
                        let msg = format!("round {}: ordering: {err:#}", round + 1);
                        if !row.errors.contains(&msg) {
                            row.errors.push(msg);
                        }
                        // E may be what broke: a fresh one for the next try.
                        e_conn = runtime.block_on(open_established(&established)).ok();
                    }
                }
            }
            if opts.order_tries > 0 {
                let o = &row.order;
                eprintln!(
                    "  {name:<21} ordering: new connection first {}/{} (DEL first {}, unknown {}, failed {})",
                    o.new_first - before.new_first,
                    o.tries - before.tries,
                    o.established_first - before.established_first,
                    o.unknown - before.unknown,
                    o.failed - before.failed,
                );
            }
        }
    }
    Setup {
        rows,
        ..Setup::empty(opts, None)
    }
}

/// `n` connections, one at a time: (p50, p90) of connect → first PING's reply, µs. Stops at
/// the first failure.
async fn latency_batch(dialer: &Dialer, n: usize) -> Result<(f64, f64)> {
    let ping = command_str(&["PING"]);
    let mut us = Vec::with_capacity(n);
    for i in 0..n {
        let t0 = Instant::now();
        let mut conn = dialer.connect().await?;
        conn.send(&ping).await?;
        let reply = conn.reply().await?;
        let elapsed = t0.elapsed();
        if reply != b"+PONG\r\n" {
            bail!("connection {i}: PING answered {}", show(&reply));
        }
        us.push(elapsed.as_secs_f64() * 1e6);
    }
    us.sort_by(f64::total_cmp);
    Ok((percentile(&us, 0.5), percentile(&us, 0.9)))
}

/// Nearest-rank percentile of sorted, non-empty `v`.
fn percentile(v: &[f64], p: f64) -> f64 {
    let rank = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

/// Which command reached Redis first, by N's reply.
#[derive(Debug)]
enum Arrival {
    New,
    Established,
    Unknown(Vec<u8>),
}

impl Order {
    fn count(&mut self, arrival: Arrival) {
        self.tries += 1;
        match arrival {
            Arrival::New => self.new_first += 1,
            Arrival::Established => self.established_first += 1,
            Arrival::Unknown(reply) => {
                self.unknown += 1;
                if self.unknown_replies.len() < 3 {
                    self.unknown_replies.push(show(&reply));
                }
            }
        }
    }
}

/// One ordering try on `key`: the stream and group made over `e`, XREADGROUP on a new
/// connection through `dialer`, DEL over `e` `delay` after that connection was made.
async fn order_once(dialer: &Dialer, e: &mut Conn, key: &str, delay: Duration) -> Result<Arrival> {
    let made = e
        .request(&["XGROUP", "CREATE", key, "g", "$", "MKSTREAM"])
        .await
        .context("XGROUP CREATE over the established connection")?;
    if made != b"+OK\r\n" {
        bail!("XGROUP CREATE {key} answered {}", show(&made));
    }
    let read = command_str(&[
        "XREADGROUP",
        "GROUP",
        "g",
        "c",
        "BLOCK",
        BLOCK_MS,
        "STREAMS",
        key,
        ">",
    ]);
    let result = async {
        let mut n = dialer.connect().await.context("new connection")?;
        let connected = Instant::now();
        n.send(&read).await.context("sending XREADGROUP")?;
        // A blocking sleep, on purpose: tokio's timer ticks in whole milliseconds, and nothing
        // else runs on this runtime meanwhile (both requests wait in the kernel or the proxy).
        if let Some(rest) = delay.checked_sub(connected.elapsed()) {
            std::thread::sleep(rest);
        }
        let deleted = e
            .request(&["DEL", key])
            .await
            .context("DEL over the established connection")?;
        if deleted != b":1\r\n" {
            bail!("DEL {key} answered {}", show(&deleted));
        }
        let reply = n.reply().await.context("XREADGROUP's reply")?;
        Ok(if reply.starts_with(b"-UNBLOCKED") {
            Arrival::New
        } else if reply.starts_with(b"-NOGROUP") {
            Arrival::Established
        } else {
            Arrival::Unknown(reply)
        })
    }
    .await;
    if result.is_err() {
        // Leave nothing behind if the DEL was never sent.
        let _ = e.request(&["DEL", key]).await;
    }
    result
}

async fn open_established(dialer: &Dialer) -> Result<Conn> {
    let mut e = dialer
        .connect()
        .await
        .context("connecting to Redis' TCP port")?;
    let pong = e.request(&["PING"]).await?;
    if pong != b"+PONG\r\n" {
        bail!("PING answered {}", show(&pong));
    }
    Ok(e)
}

/// How to open a new connection to one target; a TLS client configuration is built once, not
/// per (timed) connection.
enum Dialer {
    Unix(PathBuf),
    Tcp(SocketAddr),
    Tls {
        addr: SocketAddr,
        name: ServerName<'static>,
        connector: TlsConnector,
    },
}

impl Dialer {
    fn new(endpoint: &Endpoint) -> Result<Dialer> {
        let tls = tls_client(endpoint, false).context("TLS client configuration")?;
        Ok(match (endpoint, tls) {
            (Endpoint::Tls { addr, .. }, Some((connector, name))) => Dialer::Tls {
                addr: *addr,
                name,
                connector,
            },
            (Endpoint::Tls { addr, .. }, None) => bail!("no TLS client for {addr}"),
            (Endpoint::Unix { path }, _) => Dialer::Unix(path.clone()),
            (Endpoint::Tcp { addr }, _) => Dialer::Tcp(*addr),
        })
    }

    /// A new connection (TLS: handshake done), within [`LIMIT`].
    async fn connect(&self) -> Result<Conn> {
        let stream: Box<dyn Io> = match self {
            Dialer::Unix(path) => Box::new(
                within(UnixStream::connect(path))
                    .await
                    .with_context(|| format!("connecting to {}", path.display()))?,
            ),
            Dialer::Tcp(addr) => {
                let tcp = within(TcpStream::connect(addr))
                    .await
                    .with_context(|| format!("connecting to {addr}"))?;
                tcp.set_nodelay(true)?;
                Box::new(tcp)
            }
            Dialer::Tls {
                addr,
                name,
                connector,
            } => {
                let tcp = within(TcpStream::connect(addr))
                    .await
                    .with_context(|| format!("connecting to {addr}"))?;
                tcp.set_nodelay(true)?;
                Box::new(
                    within(connector.connect(name.clone(), tcp))
                        .await
                        .with_context(|| format!("TLS handshake with {addr}"))?,
                )
            }
        };
        Ok(Conn {
            stream,
            buf: Vec::new(),
        })
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One connection reading whole RESP frames into a small buffer. (The fixtures' `Raw` reads
/// into a fresh 256 KiB buffer per read, which would be timed here.)
struct Conn {
    stream: Box<dyn Io>,
    buf: Vec<u8>,
}

impl Conn {
    async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await
    }

    async fn request(&mut self, args: &[&str]) -> Result<Vec<u8>> {
        self.send(&command_str(args)).await?;
        self.reply().await
    }

    /// One whole reply frame, as sent.
    async fn reply(&mut self) -> Result<Vec<u8>> {
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(n) = frame_len(&self.buf).map_err(|e| anyhow!("bad reply: {e}"))? {
                return Ok(self.buf.drain(..n).collect());
            }
            let n = within(self.stream.read(&mut chunk))
                .await
                .context("reading a reply")?;
            if n == 0 {
                bail!(
                    "connection closed; unparsed bytes: {}",
                    show(&self.buf[..self.buf.len().min(300)])
                );
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// `fut` within [`LIMIT`] (a timeout is an `io::Error` of kind `TimedOut`).
async fn within<T>(fut: impl std::future::Future<Output = io::Result<T>>) -> io::Result<T> {
    timeout(LIMIT, fut).await.unwrap_or_else(|_| {
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no answer within {LIMIT:?}"),
        ))
    })
}
