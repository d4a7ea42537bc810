//! A stand-in for the MemoryDB control plane in front of `moto_server`, and the harness that
//! makes its password changes real.
//!
//! - **Shim** (moto 5.2 lacks it): `DescribeACLs` is answered here from the ACLs the test
//!   gives. Every other action is forwarded to moto unchanged.
//! - **Harness**: an `UpdateUser` moto accepted is applied to a real redis-server's ACL
//!   (`ACL SETUSER u resetpass >p1 >p2`), as MemoryDB applies a user's passwords to its nodes,
//!   so a test sees sessions use what the bastion set through the control plane.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::clients::python_path;
use super::moto::Moto;
use super::process::poll;
use super::redis::RedisServer;

const SHIM: &str = r#"
import json, sys, urllib.request, urllib.error, redis
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
moto, redis_port, user, pw, acls, port_file = sys.argv[1:7]
acls = json.loads(acls)
r = redis.Redis(host='127.0.0.1', port=int(redis_port), username=user, password=pw)

class H(BaseHTTPRequestHandler):
    def reply(self, status, body, ctype='application/x-amz-json-1.1'):
        self.send_response(status)
        self.send_header('Content-Type', ctype)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get('Content-Length') or 0))
        action = self.headers.get('X-Amz-Target', '').split('.')[-1]
        if action == 'DescribeACLs':  # SHIM: not in moto 5.2
            name = json.loads(body or b'{}').get('ACLName')
            out = [dict(Name=n, Status='active', UserNames=u, MinimumEngineVersion='6.2')
                   for n, u in acls.items() if name in (None, n)]
            return self.reply(200, json.dumps(dict(ACLs=out)).encode())
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ('host', 'content-length')}
        req = urllib.request.Request(moto + self.path, data=body, headers=headers, method='POST')
        try:
            with urllib.request.urlopen(req) as resp:
                status, out, ctype = resp.status, resp.read(), resp.headers.get('Content-Type', '')
        except urllib.error.HTTPError as e:
            status, out, ctype = e.code, e.read(), e.headers.get('Content-Type', '')
        if action == 'UpdateUser' and status == 200:  # HARNESS: the nodes apply the change
            req = json.loads(body)
            mode = req.get('AuthenticationMode') or {}
            if mode.get('Type') == 'password':
                r.execute_command('ACL', 'SETUSER', req['UserName'], 'resetpass',
                                  *['>' + p for p in mode.get('Passwords', [])])
                print('applied UpdateUser', req['UserName'], len(mode['Passwords']), flush=True)
        self.reply(status, out, ctype)

    def log_message(self, *a):
        pass

srv = ThreadingHTTPServer(('127.0.0.1', 0), H)
open(port_file, 'w').write(str(srv.server_address[1]))
srv.serve_forever()
"#;

pub struct MemoryDbShim {
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl MemoryDbShim {
    /// Start the shim in front of `moto`; `acls` are the ACLs DescribeACLs answers (name →
    /// user names); `admin` a redis user allowed `ACL SETUSER` (user, password).
    pub fn start(
        moto: &Moto,
        redis: &RedisServer,
        admin: (&str, &str),
        acls: &[(&str, &[&str])],
    ) -> MemoryDbShim {
        let dir = tempfile::tempdir().unwrap();
        let port_file = dir.path().join("port");
        let log = dir.path().join("shim.log");
        let acls: serde_json::Map<String, serde_json::Value> = acls
            .iter()
            .map(|(n, users)| (n.to_string(), serde_json::json!(users)))
            .collect();
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(python_path())
            .arg("-c")
            .arg(SHIM)
            .arg(moto.endpoint())
            .arg(redis.plain_addr().port().to_string())
            .args([admin.0, admin.1])
            .arg(serde_json::Value::Object(acls).to_string())
            .arg(&port_file)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start the MemoryDB shim");
        let port = poll(Duration::from_secs(20), || {
            std::fs::read_to_string(&port_file).ok()?.parse().ok()
        })
        .expect("the MemoryDB shim did not start");
        MemoryDbShim {
            child,
            port,
            log,
            _dir: dir,
        }
    }

    /// For `AWS_ENDPOINT_URL_MEMORYDB`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// What the harness applied (`applied UpdateUser <user> <number of passwords>` lines).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for MemoryDbShim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
