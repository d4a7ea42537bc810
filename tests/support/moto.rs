//! `moto_server` (from the test venv, next to its python) on `127.0.0.1:<free port>`: a local
//! STS (and Secrets Manager, ElastiCache, MemoryDB) that the AWS SDK reaches through
//! `AWS_ENDPOINT_URL_STS` / `AWS_ENDPOINT_URL`. Killed on drop.
//!
//! moto does not check signatures or trust policies, but it records every session it issues:
//! [`Moto::issued`] reads them from `/moto-api/data.json` (access key, secret, session token,
//! role), so an [`super::iam_front::IamFront`] can verify a token signed with credentials moto
//! handed to the bastion — credentials the test never saw.
//!
//! [`Moto::start_recording`] makes moto log every request it receives (method, URL, body) to
//! [`Moto::recording`], for asserting on what a client sent where moto itself ignores it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::clients::python_path;
use super::iam_front::{IssuedKey, KeyLookup};
use super::process::{free_ports, poll};

/// One session moto issued (AssumeRole / AssumeRoleWithWebIdentity).
#[derive(Debug, Clone)]
pub struct Issued {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
    pub role_arn: String,
    pub session_name: String,
    pub external_id: Option<String>,
}

pub struct Moto {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
    recording: PathBuf,
    _dir: tempfile::TempDir,
}

impl Moto {
    /// Start `moto_server` and wait until it answers.
    pub fn start() -> Moto {
        let python = python_path();
        let bin = python.with_file_name("moto_server");
        assert!(
            bin.exists(),
            "{} is missing: run scripts/test (it installs moto[server] into the venv)",
            bin.display()
        );
        for _ in 0..5 {
            let dir = tempfile::tempdir().expect("temp dir for moto");
            let port = free_ports(1)[0];
            let log = dir.path().join(format!("moto-{port}.log"));
            let out = std::fs::File::create(&log).expect("moto log");
            // Its request recorder (off until start_recording) writes here, not into the cwd.
            let recording = dir.path().join("recording.jsonl");
            let child = Command::new(&bin)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .env("MOTO_RECORDER_FILEPATH", &recording)
                .stdin(Stdio::null())
                .stdout(out.try_clone().expect("log fd"))
                .stderr(out)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
            let mut moto = Moto {
                child,
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
                log,
                recording,
                _dir: dir,
            };
            let up = poll(Duration::from_secs(30), || {
                if let Ok(Some(_)) = moto.child.try_wait() {
                    return Some(false); // exited: most likely the port was taken
                }
                get(moto.addr, "/moto-api/data.json").ok().map(|_| true)
            });
            if up == Some(true) {
                return moto;
            }
            let _ = moto.child.kill();
            let _ = moto.child.wait();
        }
        panic!("moto_server did not start");
    }

    /// `http://127.0.0.1:<port>`, for `AWS_ENDPOINT_URL_STS`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// moto's own log (requests, and tracebacks of what it does not implement).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// From now on, moto appends every request to [`Moto::recording`].
    pub fn start_recording(&self) {
        get(self.addr, "/moto-api/recorder/start-recording")
            .unwrap_or_else(|e| panic!("moto start-recording: {e}"));
    }

    /// The recorder's file: one JSON object per request (`method`, `url`, `headers`, `body`,
    /// `body_encoded` — base64 when true).
    pub fn recording(&self) -> &std::path::Path {
        &self.recording
    }

    /// Environment that points an AWS SDK at this moto (Secrets Manager, ElastiCache,
    /// MemoryDB, STS) with moto's dummy credentials in `us-east-1`.
    pub fn aws_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_REGION", "us-east-1".into()),
        ]
    }

    /// Run a boto3 script (the venv's; moto depends on it) against this moto: `sm`, `ec` and
    /// `mdb` are Secrets Manager, ElastiCache and MemoryDB clients; the script prints what the
    /// test asserts on. Panics with its stderr if it fails.
    #[track_caller]
    pub fn boto3(&self, script: &str) -> String {
        let prelude = format!(
            "import boto3, json, sys\n\
             _kw = dict(endpoint_url='{}', region_name='us-east-1', aws_access_key_id='testing', \
             aws_secret_access_key='testing')\n\
             sm = boto3.client('secretsmanager', **_kw)\n\
             ec = boto3.client('elasticache', **_kw)\n\
             mdb = boto3.client('memorydb', **_kw)\n",
            self.endpoint()
        );
        let out = Command::new(python_path())
            .arg("-c")
            .arg(format!("{prelude}{script}"))
            .output()
            .expect("run the venv's python");
        assert!(
            out.status.success(),
            "boto3 script failed:\n{script}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Every session moto has issued so far.
    pub fn issued(&self) -> Vec<Issued> {
        issued_from(self.addr).unwrap_or_else(|e| panic!("moto data.json: {e}"))
    }

    /// For the IAM front: the secret and session token of a key moto issued for `role_arn`.
    pub fn key_lookup(&self, role_arn: &str) -> KeyLookup {
        let addr = self.addr;
        let role_arn = role_arn.to_string();
        Arc::new(move |access_key_id: &str| {
            issued_from(addr)
                .ok()?
                .into_iter()
                .find(|i| i.access_key_id == access_key_id && i.role_arn == role_arn)
                .map(|i| IssuedKey {
                    secret_access_key: i.secret_access_key,
                    session_token: Some(i.session_token),
                })
        })
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn issued_from(addr: SocketAddr) -> Result<Vec<Issued>, String> {
    let body = get(addr, "/moto-api/data.json")?;
    let data: Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
    let text = |v: &Value, k: &str| v[k].as_str().unwrap_or_default().to_string();
    Ok(data["sts"]["AssumedRole"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|r| Issued {
            access_key_id: text(r, "access_key_id"),
            secret_access_key: text(r, "secret_access_key"),
            session_token: text(r, "session_token"),
            role_arn: text(r, "role_arn"),
            session_name: text(r, "session_name"),
            external_id: r["external_id"].as_str().map(str::to_string),
        })
        .collect())
}

/// A bare HTTP/1.0 GET on loopback; the body on a 200.
fn get(addr: SocketAddr, path: &str) -> Result<String, String> {
    let mut stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| "no end of headers".to_string())?;
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        return Err(head.lines().next().unwrap_or_default().to_string());
    }
    Ok(body.to_string())
}
