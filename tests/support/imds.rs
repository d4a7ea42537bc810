//! An IMDSv2 emulator: the parts of EC2's instance metadata service the bastion relies on,
//! strict where IMDS is strict (moto's IMDS is not: no token check, no TTL header).
//!
//! - `PUT /latest/api/token` needs `X-aws-ec2-metadata-token-ttl-seconds` in 1..=21600 (else
//!   400), is refused with 403 when it carries `X-Forwarded-For`, and answers the token with the
//!   TTL header. GETs need a known, unexpired token (else 401) unless IMDSv1 is allowed.
//! - Modes: disabled (403 to everything), no role (404 on the role path), credentials with a
//!   chosen `Expiration`, scripted 5xx/429 replies, a PUT "black hole" (never answered).
//! - **Hop limit:** with `hop_limit = Some(n)`, the reply to a token PUT leaves with `IP_TTL = n`
//!   set on the accepted socket (other replies with the default 64, as on EC2, where only PUT
//!   replies are hop-limited). Across a router, n = 1 drops the PUT reply in transit.
//! - Runs on its own thread and runtime, optionally inside a network namespace
//!   ([`Emulator::start_in`]), records every request, and can be stopped and restarted on the
//!   same address with the same state.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use super::netns::enter_netns;

/// The secret access key every emulated credentials document carries: tests grep logs for it.
pub const SECRET_ACCESS_KEY: &str = "emuSECRETwJalrXUtnFEMI/K7MDENG/bPxRfiCY";
/// The session token of every credentials document.
pub const SESSION_TOKEN: &str = "emuSESSIONTOKEN/IQoJb3JpZ2luX2VjEXAMPLE";
pub const ROLE: &str = "bastion-instance-role";
pub const REGION: &str = "eu-west-3";
pub const INSTANCE_ID: &str = "i-0123456789abcdef0";
/// The launch key pair the emulated instance was started with (`public-keys/0/openssh-key`).
pub const OPENSSH_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEXAMPLEEXAMPLEEXAMPLEEXAMPLEEXAMPLE admin";
pub const TOKEN_PATH: &str = "/latest/api/token";
pub const ROLE_PATH: &str = "/latest/meta-data/iam/security-credentials/";
pub const CREDENTIALS_PATH: &str =
    "/latest/meta-data/iam/security-credentials/bastion-instance-role";

/// How the emulated instance is set up. Change it while running with [`Emulator::set`].
#[derive(Debug, Clone)]
pub struct Behaviour {
    /// IMDS turned off for the instance: 403 to every request.
    pub disabled: bool,
    /// No instance profile: 404 on the role path.
    pub no_role: bool,
    /// Token-less GETs answered (IMDSv1 enabled, `HttpTokens=optional`).
    pub allow_v1: bool,
    /// `IP_TTL` for token PUT replies (`HttpPutResponseHopLimit`); `None` leaves the default.
    pub hop_limit: Option<u32>,
    /// Never answer token PUTs (simulates a dropped reply without namespaces).
    pub put_black_hole: bool,
    /// `Expiration` of the credentials handed out.
    pub expiration: SystemTime,
    /// Statuses to answer the next requests with, in order, before normal handling.
    pub fail_next: VecDeque<u16>,
    /// The user-data; `None` answers 404.
    pub user_data: Option<Vec<u8>>,
    /// Delay before answering a credentials document (to make concurrent callers overlap).
    pub credentials_delay: Duration,
    /// Hand out this access key id in every document instead of a numbered one (for tests
    /// whose upstream must know the key in advance).
    pub fixed_access_key_id: Option<String>,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            disabled: false,
            no_role: false,
            allow_v1: false,
            hop_limit: None,
            put_black_hole: false,
            expiration: SystemTime::now() + Duration::from_secs(6 * 3600),
            fail_next: VecDeque::new(),
            user_data: None,
            credentials_delay: Duration::ZERO,
            fixed_access_key_id: None,
        }
    }
}

/// One request as the emulator saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    pub path: String,
    /// Lower-case header names and their values.
    pub headers: Vec<(String, String)>,
    pub status: u16,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct State {
    behaviour: Behaviour,
    /// Token → when it expires.
    tokens: HashMap<String, Instant>,
    requests: Vec<Recorded>,
    issued: u64,
}

/// A running (or stopped) emulator. Dropping it stops it.
pub struct Emulator {
    addr: SocketAddr,
    netns: Option<PathBuf>,
    state: Arc<Mutex<State>>,
    running: Option<Running>,
}

struct Running {
    stop: tokio::sync::oneshot::Sender<()>,
    thread: JoinHandle<()>,
}

impl Emulator {
    /// On `127.0.0.1:0`.
    pub fn start(behaviour: Behaviour) -> Emulator {
        Self::start_in(
            None,
            "127.0.0.1:0".parse().expect("literal address"),
            behaviour,
        )
        .expect("start the IMDS emulator on loopback")
    }

    /// On `addr`, inside the network namespace at `netns` (`/run/netns/<name>`) when given.
    pub fn start_in(
        netns: Option<&Path>,
        addr: SocketAddr,
        behaviour: Behaviour,
    ) -> Result<Emulator, String> {
        let mut emulator = Emulator {
            addr,
            netns: netns.map(Path::to_path_buf),
            state: Arc::new(Mutex::new(State {
                behaviour,
                ..State::default()
            })),
            running: None,
        };
        emulator.run()?;
        Ok(emulator)
    }

    /// `http://ip:port`, for the client's endpoint override.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Change the behaviour while running.
    pub fn set(&self, change: impl FnOnce(&mut Behaviour)) {
        change(&mut self.lock().behaviour);
    }

    /// Forget every token issued, as if they had expired.
    pub fn expire_tokens(&self) {
        self.lock().tokens.clear();
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().requests.clone()
    }

    /// How many requests had this method and path.
    pub fn count(&self, method: &Method, path: &str) -> usize {
        self.lock()
            .requests
            .iter()
            .filter(|r| r.method == *method && r.path == path)
            .count()
    }

    /// Stop listening and close every connection (pending replies are never sent).
    pub fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            let _ = running.stop.send(());
            let _ = running.thread.join();
        }
    }

    /// Listen again on the same address, with the same state.
    pub fn restart(&mut self) -> Result<(), String> {
        self.stop();
        self.run()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn run(&mut self) -> Result<(), String> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<SocketAddr, String>>();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let state = self.state.clone();
        let netns = self.netns.clone();
        let addr = self.addr;
        let thread = std::thread::spawn(move || {
            if let Some(ns) = &netns {
                // Only this thread moves; the runtime below is built after, so its threads
                // (current-thread runtime: this one) live in the namespace.
                if let Err(e) = enter_netns(ns) {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            }
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(format!("emulator runtime: {e}")));
                    return;
                }
            };
            runtime.block_on(async move {
                let listener = match bind(addr) {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("emulator bind {addr}: {e}")));
                        return;
                    }
                };
                let local = listener
                    .local_addr()
                    .expect("bound listener has an address");
                let _ = ready_tx.send(Ok(local));
                let accept = async {
                    loop {
                        let Ok((stream, _)) = listener.accept().await else {
                            continue;
                        };
                        let state = state.clone();
                        tokio::spawn(serve(stream, state));
                    }
                };
                tokio::select! {
                    _ = accept => {}
                    _ = stop_rx => {}
                }
            });
            // Dropping the runtime drops every connection task, closing their sockets.
            drop(runtime);
        });
        match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(local)) => {
                self.addr = local;
                self.running = Some(Running {
                    stop: stop_tx,
                    thread,
                });
                Ok(())
            }
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => Err("the emulator did not start within 10 s".into()),
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.stop();
    }
}

fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // Restarting on the same address must not wait out TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(64)
}

async fn serve(stream: tokio::net::TcpStream, state: Arc<Mutex<State>>) {
    // A second descriptor of the accepted socket, so the handler can set the TTL its reply
    // leaves with.
    let fd: Option<Arc<OwnedFd>> = stream.as_fd().try_clone_to_owned().ok().map(Arc::new);
    let service = hyper::service::service_fn(move |req| {
        let (state, fd) = (state.clone(), fd.clone());
        async move { Ok::<_, Infallible>(handle(req, &state, fd.as_deref()).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

async fn handle(
    req: Request<Incoming>,
    state: &Mutex<State>,
    fd: Option<&OwnedFd>,
) -> Response<Full<Bytes>> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let is_put = method == Method::PUT && path == TOKEN_PATH;

    let (reply, hold, hop_limit, delay) = {
        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
        let hold = is_put && s.behaviour.put_black_hole;
        let hop_limit = s.behaviour.hop_limit;
        let delay = if path == CREDENTIALS_PATH {
            s.behaviour.credentials_delay
        } else {
            Duration::ZERO
        };
        let reply = decide(&mut s, &method, &path, is_put, header);
        s.requests.push(Recorded {
            method: method.clone(),
            path: path.clone(),
            headers: headers.clone(),
            status: reply.0.as_u16(),
        });
        (reply, hold, hop_limit, delay)
    };
    if hold {
        std::future::pending::<()>().await;
    }
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if let Some(fd) = fd {
        // EC2 hop-limits only the token PUT's reply; GET replies leave with the usual TTL.
        let ttl = match (is_put, hop_limit) {
            (true, Some(limit)) => limit as i32,
            _ => 64,
        };
        let _ = nix::sys::socket::setsockopt(fd, nix::sys::socket::sockopt::Ipv4Ttl, &ttl);
    }
    let (status, extra, body) = reply;
    let mut response = Response::builder().status(status);
    for (name, value) in extra {
        response = response.header(name, value);
    }
    response
        .body(Full::new(Bytes::from(body)))
        .expect("static response parts are valid")
}

type Reply = (StatusCode, Vec<(&'static str, String)>, Vec<u8>);

fn status(code: StatusCode) -> Reply {
    (code, Vec::new(), Vec::new())
}

fn ok(body: impl Into<Vec<u8>>) -> Reply {
    (StatusCode::OK, Vec::new(), body.into())
}

fn decide(
    s: &mut State,
    method: &Method,
    path: &str,
    is_put: bool,
    header: impl Fn(&str) -> Option<String>,
) -> Reply {
    if let Some(code) = s.behaviour.fail_next.pop_front() {
        return status(StatusCode::from_u16(code).expect("scripted status is valid"));
    }
    if s.behaviour.disabled {
        return status(StatusCode::FORBIDDEN);
    }
    if is_put {
        if header("x-forwarded-for").is_some() {
            return status(StatusCode::FORBIDDEN);
        }
        let ttl = header("x-aws-ec2-metadata-token-ttl-seconds")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|t| (1..=21_600).contains(t));
        let Some(ttl) = ttl else {
            return status(StatusCode::BAD_REQUEST);
        };
        s.issued += 1;
        let token = format!("emu-token-{}-{:016x}", s.issued, fastrand::u64(..));
        s.tokens
            .insert(token.clone(), Instant::now() + Duration::from_secs(ttl));
        return (
            StatusCode::OK,
            vec![("x-aws-ec2-metadata-token-ttl-seconds", ttl.to_string())],
            token.into_bytes(),
        );
    }
    if *method != Method::GET {
        return status(StatusCode::METHOD_NOT_ALLOWED);
    }
    match header("x-aws-ec2-metadata-token") {
        Some(token) => {
            let valid = s
                .tokens
                .get(&token)
                .is_some_and(|expires| Instant::now() < *expires);
            if !valid {
                return status(StatusCode::UNAUTHORIZED);
            }
        }
        None if s.behaviour.allow_v1 => {}
        None => return status(StatusCode::UNAUTHORIZED),
    }
    match path {
        "/latest/meta-data/" => ok("ami-id\ninstance-id\niam/\nplacement/\npublic-keys/\n"),
        ROLE_PATH if s.behaviour.no_role => status(StatusCode::NOT_FOUND),
        ROLE_PATH => ok(ROLE),
        CREDENTIALS_PATH if s.behaviour.no_role => status(StatusCode::NOT_FOUND),
        CREDENTIALS_PATH => {
            s.issued += 1;
            let access_key_id = s
                .behaviour
                .fixed_access_key_id
                .clone()
                .unwrap_or_else(|| format!("ASIAEMU{:012}", s.issued));
            // Whole seconds, as IMDS writes it (`2024-05-01T06:00:00Z`).
            let expiration = time::OffsetDateTime::from(s.behaviour.expiration)
                .replace_nanosecond(0)
                .expect("0 is a valid nanosecond")
                .format(&time::format_description::well_known::Rfc3339)
                .expect("a SystemTime formats as RFC 3339");
            ok(format!(
                r#"{{
  "Code" : "Success",
  "LastUpdated" : "2024-05-01T00:00:00Z",
  "Type" : "AWS-HMAC",
  "AccessKeyId" : "{access_key_id}",
  "SecretAccessKey" : "{SECRET_ACCESS_KEY}",
  "Token" : "{SESSION_TOKEN}",
  "Expiration" : "{expiration}"
}}"#
            ))
        }
        "/latest/meta-data/placement/region" => ok(REGION),
        "/latest/meta-data/instance-id" => ok(INSTANCE_ID),
        "/latest/user-data" => match &s.behaviour.user_data {
            Some(data) => ok(data.clone()),
            None => status(StatusCode::NOT_FOUND),
        },
        "/latest/meta-data/public-keys/" => ok("0=bastion-admin"),
        "/latest/meta-data/public-keys/0/openssh-key" => ok(format!("{OPENSSH_KEY}\n")),
        _ => status(StatusCode::NOT_FOUND),
    }
}
