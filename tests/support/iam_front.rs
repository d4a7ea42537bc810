//! An "IAM front" for integration tests: a stand-in for the auth layer of ElastiCache / MemoryDB.
//!
//! It accepts plaintext TCP on `127.0.0.1:0`, reads the client's first RESP frame (`AUTH user
//! token` or `HELLO n AUTH user token [SETNAME x]`) and verifies the token the way the service
//! does — with its own SigV4 implementation on `hmac`/`sha2`, deliberately independent of
//! aws-sigv4, so a signer bug cannot be hidden by the same bug in the checker. A good token is
//! swapped for the user's real password on the way to a real `redis-server`; after that bytes
//! are relayed both ways, including anything the client pipelined behind its first frame. A
//! bad token gets `-WRONGPASS …` and the connection is closed.
//!
//! Later AUTH / HELLO … AUTH frames on the connection (a re-authentication) are verified the
//! same way, in stream order: a good token is swapped for the password, a bad one for a password
//! Redis refuses, so the client gets Redis' own reply in order. Every token checked is listed
//! ([`IamFront::tokens`]: when it was signed and a digest, never the token itself), so a test can
//! tell a freshly signed token from a replayed one.
//!
//! With [`IamFrontConfig::connection_limit`] a connection is closed that long after its last
//! accepted AUTH, as the services close IAM connections that did not re-authenticate within
//! 12 hours.
//!
//! Every verification is recorded ([`IamFront::verdicts`]) before the client gets its reply, so
//! a test that has read the reply can assert *why* a token was accepted or rejected.
//!
//! The front runs on its own thread and runtime, so it works the same from `#[test]` and
//! `#[tokio::test]`; dropping it stops the thread. It never prints a token or a password.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use redis_protocol::resp2::types::{OwnedFrame, Resp2Frame};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the front expects of a token, and where it forwards good ones.
#[derive(Clone)]
pub struct IamFrontConfig {
    /// SigV4 signing name: `elasticache` or `memorydb` (spelled out here, not taken from bastion).
    pub service: &'static str,
    pub region: String,
    /// The replication group / cluster / cache name: the token's host.
    pub target: String,
    /// Whether the target is a serverless cache (token must carry `ResourceType=ServerlessCache`).
    pub serverless: bool,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// If set, the token must carry exactly this `X-Amz-Security-Token`; if not, none at all.
    pub session_token: Option<String>,
    /// Other keys the front accepts: temporary credentials an issuer (moto's STS) handed out,
    /// looked up by access key id when the token is not signed with `access_key_id`.
    pub issued: Option<KeyLookup>,
    /// The real Redis.
    pub upstream: SocketAddr,
    /// Database user → real Redis password.
    pub passwords: HashMap<String, String>,
    /// Close a connection this long after its last accepted AUTH (the services' 12-hour limit
    /// on IAM connections, shortened for tests); `None`: never.
    pub connection_limit: Option<Duration>,
}

/// Finds the secret (and session token) of an access key someone else issued.
pub type KeyLookup = Arc<dyn Fn(&str) -> Option<IssuedKey> + Send + Sync>;

/// A key an issuer handed out.
#[derive(Clone)]
pub struct IssuedKey {
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

/// One verification and its result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The user named in AUTH / HELLO (empty if the first frame was not an AUTH).
    pub user: String,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Accepted,
    Rejected(Rejection),
}

/// Why a token was refused. Carries names and claims, never the token or a signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// The first frame was not `AUTH user token` or `HELLO n AUTH user token …`.
    NotAuth,
    Malformed(&'static str),
    WrongHost {
        got: String,
    },
    UnknownAccessKey {
        got: String,
    },
    WrongService {
        got: String,
    },
    WrongRegion {
        got: String,
    },
    WrongAction {
        got: String,
    },
    UserMismatch {
        auth_user: String,
        token_user: String,
    },
    ResourceTypeMissing,
    ResourceTypeUnexpected {
        got: String,
    },
    WrongExpires {
        got: String,
    },
    SessionTokenMismatch,
    BadSignature,
    Expired {
        signed_at: u64,
        expires: u64,
        now: u64,
    },
    NotYetValid {
        signed_at: u64,
        now: u64,
    },
    /// The token was good but the front has no password for the user.
    NoPassword,
}

/// A token the front checked, told apart without keeping it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenToken {
    pub user: String,
    /// `X-Amz-Date` in seconds since the epoch (`None`: none readable).
    pub signed_at: Option<u64>,
    /// The first 16 hex digits of the token's SHA-256.
    pub digest: String,
    /// `true` for the connection's first frame, `false` for a later re-authentication.
    pub opening: bool,
}

/// The reply Redis gives a bad password; the services send the same for a bad token.
pub const WRONGPASS: &str = "-WRONGPASS invalid username-password pair or user is disabled.\r\n";

/// How far in the future a signing time may be (clock skew).
const MAX_SKEW: Duration = Duration::from_secs(300);

/// A running front. Dropping it stops the server.
pub struct IamFront {
    addr: SocketAddr,
    log: Arc<Mutex<Vec<Verdict>>>,
    tokens: Arc<Mutex<Vec<SeenToken>>>,
    closed_to_new: Arc<std::sync::atomic::AtomicBool>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl IamFront {
    /// Bind `127.0.0.1:0` and serve on a thread of its own.
    pub fn start(config: IamFrontConfig) -> IamFront {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the IAM front");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let addr = listener.local_addr().expect("front address");
        let log = Arc::new(Mutex::new(Vec::new()));
        let tokens = Arc::new(Mutex::new(Vec::new()));
        let closed_to_new = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (shutdown, mut stop) = tokio::sync::oneshot::channel::<()>();
        let state = Arc::new(State {
            config,
            log: log.clone(),
            tokens: tokens.clone(),
            closed_to_new: closed_to_new.clone(),
        });
        let thread = std::thread::Builder::new()
            .name("iam-front".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("IAM front runtime");
                runtime.block_on(async move {
                    let listener = TcpListener::from_std(listener).expect("tokio listener");
                    loop {
                        tokio::select! {
                            _ = &mut stop => break,
                            accepted = listener.accept() => {
                                let Ok((client, _)) = accepted else { continue };
                                tokio::spawn(handle(state.clone(), client));
                            }
                        }
                    }
                });
            })
            .expect("spawn the IAM front thread");
        IamFront {
            addr,
            log,
            tokens,
            closed_to_new,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every verification so far, oldest first.
    pub fn verdicts(&self) -> Vec<Verdict> {
        self.log.lock().expect("verdict log").clone()
    }

    /// The most recent verification.
    pub fn last_verdict(&self) -> Option<Verdict> {
        self.log.lock().expect("verdict log").last().cloned()
    }

    /// From now on (`true`) new connections get `-WRONGPASS` for their opening AUTH and are
    /// closed, as if the service refused the token; connections already open go on.
    pub fn refuse_new_connections(&self, refuse: bool) {
        self.closed_to_new
            .store(refuse, std::sync::atomic::Ordering::SeqCst);
    }

    /// Every token checked so far (opening and re-authentication), oldest first.
    pub fn tokens(&self) -> Vec<SeenToken> {
        self.tokens.lock().expect("token log").clone()
    }
}

impl Drop for IamFront {
    fn drop(&mut self) {
        if let Some(stop) = self.shutdown.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct State {
    config: IamFrontConfig,
    log: Arc<Mutex<Vec<Verdict>>>,
    tokens: Arc<Mutex<Vec<SeenToken>>>,
    closed_to_new: Arc<std::sync::atomic::AtomicBool>,
}

impl State {
    fn record(&self, user: &str, outcome: Outcome) {
        self.log.lock().expect("verdict log").push(Verdict {
            user: user.to_string(),
            outcome,
        });
    }

    /// Verify `auth`'s token (recording the verdict and the token's facts); the password to
    /// send Redis instead.
    fn check(&self, auth: &AuthFrame, opening: bool) -> Result<String, Rejection> {
        self.tokens.lock().expect("token log").push(SeenToken {
            user: auth.user.clone(),
            signed_at: signed_at(&auth.token),
            digest: hex::encode(Sha256::digest(auth.token.as_bytes()))[..16].to_string(),
            opening,
        });
        let verdict =
            verify(&self.config, &auth.user, &auth.token, SystemTime::now()).and_then(|()| {
                self.config
                    .passwords
                    .get(&auth.user)
                    .cloned()
                    .ok_or(Rejection::NoPassword)
            });
        match &verdict {
            Ok(_) => self.record(&auth.user, Outcome::Accepted),
            Err(rejection) => self.record(&auth.user, Outcome::Rejected(rejection.clone())),
        }
        verdict
    }
}

/// The token's `X-Amz-Date`, if it has a readable one.
fn signed_at(token: &str) -> Option<u64> {
    let (_, query) = token.split_once("/?")?;
    parse_amz_date(parse_query(query).ok()?.get("X-Amz-Date")?)
}

/// The first frame, understood.
struct AuthFrame {
    user: String,
    token: String,
    /// The frame's arguments, with the token at `token_index`.
    args: Vec<Vec<u8>>,
    token_index: usize,
}

async fn handle(state: Arc<State>, mut client: TcpStream) {
    let Some((frame, leftover)) = read_first_frame(&mut client).await else {
        return;
    };
    let Some(auth) = auth_frame(frame) else {
        state.record("", Outcome::Rejected(Rejection::NotAuth));
        let _ = client
            .write_all(b"-NOAUTH Authentication required.\r\n")
            .await;
        return;
    };
    let refused = state
        .closed_to_new
        .load(std::sync::atomic::Ordering::SeqCst);
    let password = match state.check(&auth, true) {
        Ok(password) if !refused => password,
        _ => {
            let _ = client.write_all(WRONGPASS.as_bytes()).await;
            return;
        }
    };

    let Ok(mut upstream) = TcpStream::connect(state.config.upstream).await else {
        let _ = client
            .write_all(b"-ERR IAM front cannot reach upstream\r\n")
            .await;
        return;
    };
    if upstream
        .write_all(&with_password(auth, password))
        .await
        .is_err()
    {
        return;
    }
    let (mut client_rx, mut client_tx) = client.into_split();
    let (mut upstream_rx, upstream_tx) = upstream.into_split();
    let authenticated = Mutex::new(tokio::time::Instant::now());
    let replies = async {
        let _ = tokio::io::copy(&mut upstream_rx, &mut client_tx).await;
        let _ = client_tx.shutdown().await;
    };
    let relay = async {
        tokio::join!(
            requests(
                &state,
                &mut client_rx,
                upstream_tx,
                leftover,
                &authenticated
            ),
            replies
        )
    };
    let expired = async {
        let Some(limit) = state.config.connection_limit else {
            return std::future::pending().await;
        };
        loop {
            let until = *authenticated.lock().expect("auth time") + limit;
            if tokio::time::Instant::now() >= until {
                return;
            }
            tokio::time::sleep_until(until).await;
        }
    };
    // Expired: both halves are dropped, which closes the connection.
    tokio::select! {
        _ = relay => {}
        () = expired => {}
    }
}

/// `auth` with its token replaced by `password`, encoded.
fn with_password(auth: AuthFrame, password: String) -> Vec<u8> {
    let mut args = auth.args;
    args[auth.token_index] = password.into_bytes();
    encode_command(&args)
}

/// What Redis gets for a re-authentication with a bad token: a password it refuses.
const REFUSED_PASSWORD: &str = "iam-front:token-rejected";

/// The requests after the first frame, in order: AUTH / HELLO … AUTH frames verified and their
/// token swapped, everything else (inline commands too) passed on as it came.
async fn requests(
    state: &State,
    client: &mut tokio::net::tcp::OwnedReadHalf,
    mut upstream: tokio::net::tcp::OwnedWriteHalf,
    mut buf: Vec<u8>,
    authenticated: &Mutex<tokio::time::Instant>,
) {
    loop {
        // Cut every complete request at the front of `buf`.
        loop {
            let cut = match buf.first() {
                None => break,
                Some(b'*') => match redis_protocol::resp2::decode::decode(&buf) {
                    Ok(Some((frame, used))) => {
                        let out = match auth_frame(frame) {
                            Some(auth) => {
                                let password = match state.check(&auth, false) {
                                    Ok(password) => {
                                        *authenticated.lock().expect("auth time") =
                                            tokio::time::Instant::now();
                                        password
                                    }
                                    Err(_) => REFUSED_PASSWORD.to_string(),
                                };
                                with_password(auth, password)
                            }
                            None => buf[..used].to_vec(),
                        };
                        Some((out, used))
                    }
                    Ok(None) => None,
                    Err(_) => Some((buf.clone(), buf.len())),
                },
                Some(_) => buf
                    .iter()
                    .position(|&b| b == b'\n')
                    .map(|nl| (buf[..=nl].to_vec(), nl + 1)),
            };
            let Some((out, used)) = cut else { break };
            if upstream.write_all(&out).await.is_err() {
                return;
            }
            buf.drain(..used);
        }
        let mut chunk = [0u8; 64 * 1024];
        match client.read(&mut chunk).await {
            Ok(0) | Err(_) => {
                let _ = upstream.write_all(&buf).await;
                let _ = upstream.shutdown().await;
                return;
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Read until one whole RESP frame has arrived; return it and whatever followed it.
async fn read_first_frame(client: &mut TcpStream) -> Option<(OwnedFrame, Vec<u8>)> {
    let mut buf = Vec::with_capacity(1024);
    loop {
        match redis_protocol::resp2::decode::decode(&buf) {
            Ok(Some((frame, used))) => return Some((frame, buf.split_off(used))),
            Ok(None) if buf.len() < 64 * 1024 => {}
            _ => {
                let _ = client.write_all(b"-ERR Protocol error\r\n").await;
                return None;
            }
        }
        let mut chunk = [0u8; 4096];
        match client.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// `AUTH user token` or `HELLO n AUTH user token [SETNAME x]`.
fn auth_frame(frame: OwnedFrame) -> Option<AuthFrame> {
    let OwnedFrame::Array(items) = frame else {
        return None;
    };
    let args: Vec<Vec<u8>> = items
        .into_iter()
        .map(|f| match f {
            OwnedFrame::BulkString(b) | OwnedFrame::SimpleString(b) => Some(b),
            _ => None,
        })
        .collect::<Option<_>>()?;
    let name = |i: usize| args.get(i).map(|a| a.to_ascii_uppercase());
    let (user_index, token_index) = match name(0)?.as_slice() {
        b"AUTH" if args.len() == 3 => (1, 2),
        b"HELLO" if name(2).as_deref() == Some(b"AUTH") && args.len() >= 5 => (3, 4),
        _ => return None,
    };
    Some(AuthFrame {
        user: String::from_utf8(args[user_index].clone()).ok()?,
        token: String::from_utf8(args[token_index].clone()).ok()?,
        args,
        token_index,
    })
}

fn encode_command(args: &[Vec<u8>]) -> Vec<u8> {
    let frame = OwnedFrame::Array(args.iter().cloned().map(OwnedFrame::BulkString).collect());
    let mut out = vec![0u8; frame.encode_len(false)];
    let n = redis_protocol::resp2::encode::encode(&mut out, &frame, false)
        .expect("buffer sized by encode_len");
    out.truncate(n);
    out
}

// ---------------------------------------------------------------------------------------------
// Token verification: an independent SigV4 presigned-URL check.

/// SigV4's URI encoding: everything but the RFC 3986 unreserved characters.
const SIGV4_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// sha256 of the empty payload: a presigned GET signs an empty body.
const EMPTY_PAYLOAD_SHA256: &str =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// Check `token` as the service would for a client that sent `AUTH auth_user token`.
pub fn verify(
    config: &IamFrontConfig,
    auth_user: &str,
    token: &str,
    now: SystemTime,
) -> Result<(), Rejection> {
    use Rejection::*;
    let (host, query) = token
        .split_once("/?")
        .ok_or(Malformed("no `/?` after the host"))?;
    if host != config.target {
        return Err(WrongHost {
            got: host.to_string(),
        });
    }
    let params = parse_query(query)?;
    let get = |name: &'static str| params.get(name).map(String::as_str);
    let require = |name: &'static str| get(name).ok_or(Malformed(name));

    if require("X-Amz-Algorithm")? != "AWS4-HMAC-SHA256" {
        return Err(Malformed("X-Amz-Algorithm"));
    }
    let credential: Vec<&str> = require("X-Amz-Credential")?.split('/').collect();
    let [access_key, scope_date, region, service, "aws4_request"] = credential[..] else {
        return Err(Malformed("X-Amz-Credential"));
    };
    let (secret, session_token) = if access_key == config.access_key_id {
        (
            config.secret_access_key.clone(),
            config.session_token.clone(),
        )
    } else {
        match config.issued.as_ref().and_then(|lookup| lookup(access_key)) {
            Some(issued) => (issued.secret_access_key, issued.session_token),
            None => {
                return Err(UnknownAccessKey {
                    got: access_key.to_string(),
                })
            }
        }
    };
    if service != config.service {
        return Err(WrongService {
            got: service.to_string(),
        });
    }
    if region != config.region {
        return Err(WrongRegion {
            got: region.to_string(),
        });
    }
    let amz_date = require("X-Amz-Date")?;
    if amz_date.get(..8) != Some(scope_date) {
        return Err(Malformed("credential scope date differs from X-Amz-Date"));
    }
    let signed_at = parse_amz_date(amz_date).ok_or(Malformed("X-Amz-Date"))?;
    if require("X-Amz-SignedHeaders")? != "host" {
        return Err(Malformed("X-Amz-SignedHeaders"));
    }
    let action = require("Action")?;
    if action != "connect" {
        return Err(WrongAction {
            got: action.to_string(),
        });
    }
    let token_user = require("User")?;
    if token_user != auth_user {
        return Err(UserMismatch {
            auth_user: auth_user.to_string(),
            token_user: token_user.to_string(),
        });
    }
    match (config.serverless, get("ResourceType")) {
        (true, Some("ServerlessCache")) | (false, None) => {}
        (true, None) => return Err(ResourceTypeMissing),
        (_, Some(other)) => {
            return Err(ResourceTypeUnexpected {
                got: other.to_string(),
            })
        }
    }
    let expires = require("X-Amz-Expires")?;
    if expires != "900" {
        return Err(WrongExpires {
            got: expires.to_string(),
        });
    }
    if get("X-Amz-Security-Token") != session_token.as_deref() {
        return Err(SessionTokenMismatch);
    }

    let canonical_query = canonical_query(&params);
    let creq = canonical_request("GET", "/", &canonical_query, host, EMPTY_PAYLOAD_SHA256);
    let expected = signature(&secret, amz_date, region, service, &creq);
    if require("X-Amz-Signature")? != expected {
        return Err(BadSignature);
    }

    let now = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    if signed_at > now + MAX_SKEW.as_secs() {
        return Err(NotYetValid { signed_at, now });
    }
    if signed_at + 900 < now {
        return Err(Expired {
            signed_at,
            expires: 900,
            now,
        });
    }
    Ok(())
}

/// Decode `k=v&…`; duplicate names are an error (they would make "the" value ambiguous).
fn parse_query(query: &str) -> Result<BTreeMap<String, String>, Rejection> {
    let mut params = BTreeMap::new();
    for pair in query.split('&') {
        let (k, v) = pair
            .split_once('=')
            .ok_or(Rejection::Malformed("query pair without `=`"))?;
        let decode = |s: &str| {
            percent_decode_str(s)
                .decode_utf8()
                .map(|c| c.into_owned())
                .map_err(|_| Rejection::Malformed("query is not UTF-8"))
        };
        if params.insert(decode(k)?, decode(v)?).is_some() {
            return Err(Rejection::Malformed("duplicate query parameter"));
        }
    }
    Ok(params)
}

/// Every parameter but the signature, name and value URI-encoded, sorted by encoded name.
fn canonical_query(params: &BTreeMap<String, String>) -> String {
    let mut encoded: Vec<(String, String)> = params
        .iter()
        .filter(|(k, _)| k.as_str() != "X-Amz-Signature")
        .map(|(k, v)| {
            (
                utf8_percent_encode(k, SIGV4_ENCODE).to_string(),
                utf8_percent_encode(v, SIGV4_ENCODE).to_string(),
            )
        })
        .collect();
    encoded.sort();
    encoded
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// The SigV4 canonical request for a request whose only signed header is `host`.
pub fn canonical_request(
    method: &str,
    path: &str,
    canonical_query: &str,
    host: &str,
    payload_sha256: &str,
) -> String {
    format!("{method}\n{path}\n{canonical_query}\nhost:{host}\n\nhost\n{payload_sha256}")
}

/// `hex(HMAC(signing key, string to sign))` for a canonical request signed at `amz_date`.
pub fn signature(
    secret: &str,
    amz_date: &str,
    region: &str,
    service: &str,
    canonical_request: &str,
) -> String {
    let date = &amz_date[..8.min(amz_date.len())];
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{date}/{region}/{service}/aws4_request\n{}",
        hex::encode(Sha256::digest(canonical_request.as_bytes()))
    );
    let mut key = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    for part in [region, service, "aws4_request"] {
        key = hmac(&key, part.as_bytes());
    }
    hex::encode(hmac(&key, string_to_sign.as_bytes()))
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// `YYYYMMDDTHHMMSSZ` → seconds since the epoch.
fn parse_amz_date(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<u32>().ok();
    let month = time::Month::try_from(u8::try_from(num(4..6)?).ok()?).ok()?;
    let date = time::Date::from_calendar_date(
        i32::try_from(num(0..4)?).ok()?,
        month,
        u8::try_from(num(6..8)?).ok()?,
    )
    .ok()?;
    let time = time::Time::from_hms(
        u8::try_from(num(9..11)?).ok()?,
        u8::try_from(num(11..13)?).ok()?,
        u8::try_from(num(13..15)?).ok()?,
    )
    .ok()?;
    u64::try_from(
        time::PrimitiveDateTime::new(date, time)
            .assume_utc()
            .unix_timestamp(),
    )
    .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The checker's SigV4 against AWS's published presigned-URL example (S3 documentation,
    /// "Authenticating Requests: Using Query Parameters"), so the front is not merely
    /// agreeing with bastion's signer.
    #[test]
    fn signature_matches_the_aws_documentation_example() {
        let query = "X-Amz-Algorithm=AWS4-HMAC-SHA256\
            &X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request\
            &X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host";
        let params = parse_query(query).expect("query");
        assert_eq!(canonical_query(&params), query);
        let creq = canonical_request(
            "GET",
            "/test.txt",
            query,
            "examplebucket.s3.amazonaws.com",
            "UNSIGNED-PAYLOAD",
        );
        assert_eq!(
            signature(
                "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                "20130524T000000Z",
                "us-east-1",
                "s3",
                &creq
            ),
            "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
        );
    }

    #[test]
    fn amz_dates_parse() {
        assert_eq!(parse_amz_date("20240102T030405Z"), Some(1_704_164_645));
        assert_eq!(parse_amz_date("20241302T030405Z"), None);
        assert_eq!(parse_amz_date("2024-01-02T03:04"), None);
    }

    #[test]
    fn auth_and_hello_frames_are_recognised() {
        let cmd = |parts: &[&str]| {
            OwnedFrame::Array(
                parts
                    .iter()
                    .map(|p| OwnedFrame::BulkString(p.as_bytes().to_vec()))
                    .collect(),
            )
        };
        let auth = auth_frame(cmd(&["auth", "app", "tok"])).expect("AUTH");
        assert_eq!(
            (auth.user.as_str(), auth.token.as_str(), auth.token_index),
            ("app", "tok", 2)
        );
        let hello =
            auth_frame(cmd(&["HELLO", "3", "AUTH", "app", "tok", "SETNAME", "x"])).expect("HELLO");
        assert_eq!(
            (hello.user.as_str(), hello.token.as_str(), hello.token_index),
            ("app", "tok", 4)
        );
        assert!(
            auth_frame(cmd(&["AUTH", "tok"])).is_none(),
            "legacy one-argument AUTH has no user"
        );
        assert!(auth_frame(cmd(&["HELLO", "3"])).is_none());
        assert!(auth_frame(cmd(&["PING"])).is_none());
    }
}
