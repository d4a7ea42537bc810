//! Stock clients, run as child processes: `redis-cli`, `redis-benchmark`, and redis-py from the
//! project's venv. Byte-level clients live in [`super::raw`].
//!
//! One [`Endpoint`] describes how to reach a server; every client takes it, so a test body can
//! run unchanged over mTLS, a Unix socket, or (for the fixtures' own tests) straight to Redis.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::process::{describe, run, Out};

pub const REDIS_CLI: &str = "/usr/bin/redis-cli";
pub const REDIS_BENCHMARK: &str = "/usr/bin/redis-benchmark";

/// Hang guard for one client run.
pub const CLIENT_LIMIT: Duration = Duration::from_secs(120);

/// A client certificate bundle as `bastion cert issue` writes it.
#[derive(Debug, Clone)]
pub struct ClientCert {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The CA that signs the server's certificate (the bastion's on-box CA).
    pub ca: PathBuf,
}

/// How a client reaches a server.
#[derive(Debug, Clone)]
pub enum Endpoint {
    /// TLS to `addr`, with SNI `sni` (none: no SNI), trusting `ca`, presenting `identity`
    /// (`(cert, key)`; none: no client certificate).
    Tls {
        addr: SocketAddr,
        sni: Option<String>,
        ca: PathBuf,
        identity: Option<(PathBuf, PathBuf)>,
    },
    /// Plaintext TCP (fixture self-tests only: the bastion has no plaintext listener).
    Tcp { addr: SocketAddr },
    /// A Unix socket.
    Unix { path: PathBuf },
}

impl Endpoint {
    /// mTLS with an issued certificate, as stock clients reach the bastion.
    pub fn mtls(addr: SocketAddr, sni: Option<&str>, cert: &ClientCert) -> Endpoint {
        Endpoint::Tls {
            addr,
            sni: sni.map(str::to_string),
            ca: cert.ca.clone(),
            identity: Some((cert.cert.clone(), cert.key.clone())),
        }
    }

    pub fn unix(path: impl Into<PathBuf>) -> Endpoint {
        Endpoint::Unix { path: path.into() }
    }

    /// The same endpoint with another SNI.
    pub fn with_sni(&self, new: Option<&str>) -> Endpoint {
        let mut ep = self.clone();
        if let Endpoint::Tls { sni, .. } = &mut ep {
            *sni = new.map(str::to_string);
        }
        ep
    }

    /// Connection flags shared by redis-cli and redis-benchmark.
    pub fn cli_args(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = Vec::new();
        match self {
            Endpoint::Tls {
                addr,
                sni,
                ca,
                identity,
            } => {
                a.push("--tls".into());
                if let Some((cert, key)) = identity {
                    a.extend(["--cert".into(), cert.into(), "--key".into(), key.into()]);
                }
                a.extend(["--cacert".into(), ca.into()]);
                if let Some(sni) = sni {
                    a.extend(["--sni".into(), sni.into()]);
                }
                a.extend(host_port(*addr));
            }
            Endpoint::Tcp { addr } => a.extend(host_port(*addr)),
            Endpoint::Unix { path } => a.extend(["-s".into(), path.into()]),
        }
        a
    }
}

fn host_port(addr: SocketAddr) -> [OsString; 4] {
    [
        "-h".into(),
        addr.ip().to_string().into(),
        "-p".into(),
        addr.port().to_string().into(),
    ]
}

/// `redis-cli <endpoint> ARGS…`: one command, one connection. redis-cli prints replies (and
/// error replies, without the leading `-`) on stdout when it is not on a tty, one element per line.
#[track_caller]
pub fn redis_cli(ep: &Endpoint, args: &[&str]) -> Out {
    run(cli_command(ep).args(args), None, CLIENT_LIMIT)
}

/// `redis-cli <endpoint> FLAGS… < input`: every line of `input` is one command, all sent over
/// ONE connection, in order (AUTH then commands, MULTI/EXEC…). `flags` go before the input,
/// e.g. `["-x", "SET", "big"]` reads a value from stdin instead.
#[track_caller]
pub fn redis_cli_stdin(ep: &Endpoint, flags: &[&str], input: &[u8]) -> Out {
    run(cli_command(ep).args(flags), Some(input), CLIENT_LIMIT)
}

/// A long-running redis-cli (SUBSCRIBE, BLPOP) with stdout piped; the caller reads and kills it.
pub fn spawn_redis_cli(ep: &Endpoint, args: &[&str]) -> (Child, String) {
    let mut cmd = cli_command(ep);
    cmd.args(args);
    let what = describe(&cmd);
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start `{what}`: {e}"));
    (child, what)
}

/// `redis-cli` as another Unix user (uid = gid = `uid`, no supplementary groups), via setpriv.
/// Needs root; callers skip otherwise (see [`super::process::is_root`]).
#[track_caller]
pub fn redis_cli_as(uid: u32, ep: &Endpoint, args: &[&str]) -> Out {
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={uid}"))
        .arg("--clear-groups")
        .arg(REDIS_CLI)
        .args(ep.cli_args())
        .args(args)
        .env("HOME", "/nonexistent");
    run(&mut cmd, None, CLIENT_LIMIT)
}

fn cli_command(ep: &Endpoint) -> Command {
    let mut cmd = Command::new(REDIS_CLI);
    cmd.args(ep.cli_args())
        // No ~/.redisclirc, no history file: the test's view only.
        .env("HOME", "/nonexistent")
        .env_remove("REDISCLI_AUTH");
    cmd
}

/// `redis-benchmark <endpoint> ARGS…`, e.g. `["-P", "16", "-t", "set,get", "-n", "20000", "-q"]`.
#[track_caller]
pub fn redis_benchmark(ep: &Endpoint, args: &[&str]) -> Out {
    run(
        Command::new(REDIS_BENCHMARK).args(ep.cli_args()).args(args),
        None,
        Duration::from_secs(300),
    )
}

/// The venv's Python: `$BASTION_TEST_PYTHON`, else `<crate>/.venv/bin/python`.
/// Panics (the test fails, it never passes silently) when neither exists.
pub fn python_path() -> PathBuf {
    if let Some(p) = std::env::var_os("BASTION_TEST_PYTHON") {
        let p = PathBuf::from(p);
        assert!(
            p.exists(),
            "BASTION_TEST_PYTHON={} does not exist: run scripts/test to create the venv",
            p.display()
        );
        return p;
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        p.exists(),
        "{} is missing: run scripts/test to create the venv (it installs redis-py)",
        p.display()
    );
    p
}

/// Prelude of every redis-py script: `connect(**kw)` returns a `redis.Redis` for the endpoint
/// given in the environment. For TLS with SNI the database name is resolved to the listener's
/// address, so Python's TLS sends it as SNI exactly as it would for a real DNS name.
const PY_PRELUDE: &str = r#"
import os, socket, sys
import redis
_E = os.environ
def connect(**kw):
    kw.setdefault("socket_timeout", 60)
    if _E.get("BT_UNIX"):
        return redis.Redis(unix_socket_path=_E["BT_UNIX"], **kw)
    host, port = _E["BT_IP"], int(_E["BT_PORT"])
    if not _E.get("BT_TLS"):
        return redis.Redis(host=host, port=port, **kw)
    sni = _E.get("BT_SNI")
    if sni:
        _real = socket.getaddrinfo
        def _resolve(h, *a, **k):
            return _real(_E["BT_IP"] if h == sni else h, *a, **k)
        socket.getaddrinfo = _resolve
        host = sni
    tls = dict(ssl=True, ssl_ca_certs=_E["BT_CA"], ssl_cert_reqs="required", ssl_check_hostname=False)
    if _E.get("BT_CERT"):
        tls.update(ssl_certfile=_E["BT_CERT"], ssl_keyfile=_E["BT_KEY"])
    tls.update(kw)
    return redis.Redis(host=host, port=port, **tls)
"#;

/// Run a redis-py script against `ep`: the script calls `connect(**kw)` and prints what the
/// test asserts on. A Python exception makes the script exit non-zero.
#[track_caller]
pub fn python(ep: &Endpoint, script: &str) -> Out {
    let mut cmd = Command::new(python_path());
    cmd.arg("-c").arg(format!("{PY_PRELUDE}\n{script}"));
    for var in [
        "BT_UNIX", "BT_IP", "BT_PORT", "BT_TLS", "BT_SNI", "BT_CA", "BT_CERT", "BT_KEY",
    ] {
        cmd.env_remove(var);
    }
    match ep {
        Endpoint::Tls {
            addr,
            sni,
            ca,
            identity,
        } => {
            cmd.env("BT_IP", addr.ip().to_string())
                .env("BT_PORT", addr.port().to_string())
                .env("BT_TLS", "1")
                .env("BT_CA", ca);
            if let Some(sni) = sni {
                cmd.env("BT_SNI", sni);
            }
            if let Some((cert, key)) = identity {
                cmd.env("BT_CERT", cert).env("BT_KEY", key);
            }
        }
        Endpoint::Tcp { addr } => {
            cmd.env("BT_IP", addr.ip().to_string())
                .env("BT_PORT", addr.port().to_string());
        }
        Endpoint::Unix { path } => {
            cmd.env("BT_UNIX", path);
        }
    }
    run(&mut cmd, None, CLIENT_LIMIT)
}
