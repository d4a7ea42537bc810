//! Stand-ins for the MemoryDB and ElastiCache control planes in front of `moto_server`, and the
//! harnesses that make their password changes real ([`ControlPlane`]). MemoryDB
//! ([`ControlPlane::memorydb`]):
//!
//! - **Shim** (moto 5.2 lacks it): `DescribeACLs` is answered here from the ACLs the test
//!   gives. Every other action is forwarded to moto unchanged.
//! - **Harness**: an `UpdateUser` moto accepted is applied to a real redis-server's ACL
//!   (`ACL SETUSER u resetpass >p1 >p2`), as MemoryDB applies a user's passwords to its nodes,
//!   so a test sees sessions use what the bastion set through the control plane.
//!
//! ElastiCache ([`ControlPlane::elasticache`]): SHIMS for DescribeUserGroups, DescribeServerlessCaches and
//! ModifyUser (moto 5.2 has none of them), the HARNESS applying ModifyUser's passwords.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::clients::python_path;
use super::moto::Moto;
use super::process::poll;
use super::redis::RedisServer;

/// What every shim script starts with: `Proxy`, a handler that replies and forwards a request
/// to moto unchanged; the script defines `class H(Proxy)` and its arguments (`sys.argv`).
const PROXY_PRELUDE: &str = r#"
import urllib.request, urllib.error
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Proxy(BaseHTTPRequestHandler):
    ctype = 'application/x-amz-json-1.1'

    def reply(self, status, body, ctype=None):
        self.send_response(status)
        self.send_header('Content-Type', ctype or self.ctype)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def forward(self, body):
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ('host', 'content-length')}
        req = urllib.request.Request(sys.argv[1] + self.path, data=body, headers=headers, method='POST')
        try:
            with urllib.request.urlopen(req) as resp:
                return resp.status, resp.read(), resp.headers.get('Content-Type', '')
        except urllib.error.HTTPError as e:
            return e.code, e.read(), e.headers.get('Content-Type', '')

    def log_message(self, *a):
        pass
"#;

/// What every shim script ends with: serve `H` on a loopback port written to the port file.
const PROXY_SERVE: &str = r#"
srv = ThreadingHTTPServer(('127.0.0.1', 0), H)
open(sys.argv[6], 'w').write(str(srv.server_address[1]))
srv.serve_forever()
"#;

const SHIM: &str = r#"
import json, sys, redis
moto, redis_port, user, pw, acls, port_file = sys.argv[1:7]
acls = json.loads(acls)
r = redis.Redis(host='127.0.0.1', port=int(redis_port), username=user, password=pw)

class H(Proxy):
    ctype = 'application/x-amz-json-1.1'

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get('Content-Length') or 0))
        action = self.headers.get('X-Amz-Target', '').split('.')[-1]
        if action == 'DescribeACLs':  # SHIM: not in moto 5.2
            name = json.loads(body or b'{}').get('ACLName')
            out = [dict(Name=n, Status='active', UserNames=u, MinimumEngineVersion='6.2')
                   for n, u in acls.items() if name in (None, n)]
            return self.reply(200, json.dumps(dict(ACLs=out)).encode())
        status, out, ctype = self.forward(body)
        if action == 'UpdateUser' and status == 200:  # HARNESS: the nodes apply the change
            req = json.loads(body)
            mode = req.get('AuthenticationMode') or {}
            if mode.get('Type') == 'password':
                r.execute_command('ACL', 'SETUSER', req['UserName'], 'resetpass',
                                  *['>' + p for p in mode.get('Passwords', [])])
                print('applied UpdateUser', req['UserName'], len(mode['Passwords']), flush=True)
        self.reply(status, out, ctype)
"#;

/// A control-plane shim running (`python -c SCRIPT <moto> <redis port> <admin> <admin pw> <data>
/// <port file>`), in front of moto.
///
/// ElastiCache ([`ControlPlane::elasticache`], query protocol):
/// - **Shims** (moto 5.2 lacks them): `DescribeUserGroups` and `DescribeServerlessCaches`,
///   answered from the user groups and serverless caches the test gives; `ModifyUser`; and
///   `DescribeUsers` of all users paged as the service pages it (2 users a page, `Marker`;
///   moto answers all at once), logged `paged DescribeUsers from <n> more|last`.
/// - **Harness**: `ModifyUser`'s `Passwords` are applied to a real redis-server's ACL
///   (`ACL SETUSER <user name> resetpass >p1 >p2`), as ElastiCache applies them to its nodes.
///
/// Every other action (DescribeReplicationGroups, DescribeUsers of one user id,
/// ListTagsForResource) is moto's.
pub struct ControlPlane {
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl ControlPlane {
    /// Start the shim in front of `moto`; `acls` are the ACLs DescribeACLs answers (name →
    /// user names); `admin` a redis user allowed `ACL SETUSER` (user, password).
    pub fn memorydb(
        moto: &Moto,
        redis: &RedisServer,
        admin: (&str, &str),
        acls: &[(&str, &[&str])],
    ) -> ControlPlane {
        let acls: serde_json::Map<String, serde_json::Value> = acls
            .iter()
            .map(|(n, users)| (n.to_string(), serde_json::json!(users)))
            .collect();
        ControlPlane::spawn(
            "MemoryDB",
            SHIM,
            moto,
            redis,
            admin,
            &serde_json::Value::Object(acls),
        )
    }

    /// `groups`: user group id → user ids; `serverless`: serverless cache name → user group id;
    /// `names`: user id → user name (what ModifyUser changes on the server); `admin` a redis
    /// user allowed `ACL SETUSER`.
    pub fn elasticache(
        moto: &Moto,
        redis: &RedisServer,
        admin: (&str, &str),
        groups: &[(&str, &[&str])],
        serverless: &[(&str, &str)],
        names: &[(&str, &str)],
    ) -> ControlPlane {
        let data = serde_json::json!({
            "groups": groups.iter().map(|(g, ids)| (g.to_string(), serde_json::json!(ids)))
                .collect::<serde_json::Map<_, _>>(),
            "serverless": serverless.iter().map(|(n, g)| (n.to_string(), serde_json::json!(g)))
                .collect::<serde_json::Map<_, _>>(),
            "names": names.iter().map(|(id, n)| (id.to_string(), serde_json::json!(n)))
                .collect::<serde_json::Map<_, _>>(),
        });
        ControlPlane::spawn("ElastiCache", ELASTICACHE_SHIM, moto, redis, admin, &data)
    }

    fn spawn(
        what: &str,
        script: &str,
        moto: &Moto,
        redis: &RedisServer,
        admin: (&str, &str),
        data: &serde_json::Value,
    ) -> ControlPlane {
        let dir = tempfile::tempdir().unwrap();
        let port_file = dir.path().join("port");
        let log = dir.path().join("shim.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(python_path())
            .arg("-c")
            .arg(format!("import sys\n{PROXY_PRELUDE}{script}{PROXY_SERVE}"))
            .arg(moto.endpoint())
            .arg(redis.plain_addr().port().to_string())
            .args([admin.0, admin.1])
            .arg(data.to_string())
            .arg(&port_file)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("start the {what} shim: {e}"));
        let port = poll(Duration::from_secs(20), || {
            std::fs::read_to_string(&port_file).ok()?.parse().ok()
        })
        .unwrap_or_else(|| panic!("the {what} shim did not start"));
        ControlPlane {
            child,
            port,
            log,
            _dir: dir,
        }
    }

    /// For `AWS_ENDPOINT_URL_MEMORYDB` / `AWS_ENDPOINT_URL_ELASTICACHE`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// What the shim did (`applied UpdateUser <user> <n>`, `applied ModifyUser <id> <name> <n>`,
    /// `answered …`, `forwarded …`).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const ELASTICACHE_SHIM: &str = r#"
import json, re, sys, urllib.parse, redis
from xml.sax.saxutils import escape
USERS_PAGE = 2
moto, redis_port, user, pw, data, port_file = sys.argv[1:7]
data = json.loads(data)
groups, serverless, names = data['groups'], data['serverless'], data['names']
r = redis.Redis(host='127.0.0.1', port=int(redis_port), username=user, password=pw)
NS = 'http://elasticache.amazonaws.com/doc/2015-02-02/'

def members(tag, items):
    return '<%s>%s</%s>' % (tag, ''.join('<member>%s</member>' % i for i in items), tag)

def xml(action, result):
    return ('<%sResponse xmlns="%s"><%sResult>%s</%sResult><ResponseMetadata><RequestId>shim'
            '</RequestId></ResponseMetadata></%sResponse>' % (action, NS, action, result, action, action)).encode()

class H(Proxy):
    ctype = 'text/xml'

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get('Content-Length') or 0))
        form = dict(urllib.parse.parse_qsl(body.decode()))
        action = form.get('Action', '')
        if action == 'DescribeUserGroups':  # SHIM: not in moto 5.2
            want = form.get('UserGroupId')
            out = ''.join('<member><UserGroupId>%s</UserGroupId><Status>active</Status><Engine>redis</Engine>%s</member>'
                          % (escape(g), members('UserIds', map(escape, ids)))
                          for g, ids in groups.items() if want in (None, g))
            if want and want not in groups:
                return self.reply(404, b'<ErrorResponse><Error><Type>Sender</Type><Code>UserGroupNotFound</Code>'
                                  b'<Message>no such user group</Message></Error></ErrorResponse>')
            print('answered DescribeUserGroups', want, flush=True)
            return self.reply(200, xml(action, '<UserGroups>%s</UserGroups>' % out))
        if action == 'DescribeServerlessCaches':  # SHIM: not in moto 5.2
            want = form.get('ServerlessCacheName')
            out = ''.join('<member><ServerlessCacheName>%s</ServerlessCacheName><Status>available</Status>'
                          '<Engine>valkey</Engine><UserGroupId>%s</UserGroupId></member>' % (escape(n), escape(g))
                          for n, g in serverless.items() if want in (None, n))
            return self.reply(200, xml(action, '<ServerlessCaches>%s</ServerlessCaches>' % out))
        if action == 'DescribeUsers' and 'UserId' not in form:
            # SHIM: moto 5.2 answers every user at once; the service pages them (Marker).
            status, out, ctype = self.forward(body)
            if status != 200:
                return self.reply(status, out, ctype)
            ids = re.findall(r'<UserId>(.*?)</UserId>', out.decode())
            start = int(form.get('Marker') or 0)
            page = ids[start:start + USERS_PAGE]
            found = ''
            for uid in page:
                one = self.forward(urllib.parse.urlencode(dict(
                    Action='DescribeUsers', Version=form.get('Version', ''), UserId=uid)).encode())[1].decode()
                found += one[one.index('<Users>') + 7:one.index('</Users>')]
            more = start + USERS_PAGE < len(ids)
            print('paged DescribeUsers from', start, 'more' if more else 'last', flush=True)
            marker = '<Marker>%d</Marker>' % (start + USERS_PAGE) if more else ''
            return self.reply(200, xml(action, '<Users>%s</Users>%s' % (found, marker)))
        if action == 'ModifyUser':  # SHIM: not in moto 5.2; HARNESS: the nodes apply it
            uid = form['UserId']
            pws = [v for k, v in sorted(form.items()) if k.startswith('Passwords.member.')]
            name = names[uid]
            r.execute_command('ACL', 'SETUSER', name, 'resetpass', *['>' + p for p in pws])
            print('applied ModifyUser', uid, name, len(pws), flush=True)
            return self.reply(200, xml(action, '<UserId>%s</UserId><UserName>%s</UserName><Status>modifying</Status>'
                                       '<Engine>redis</Engine>' % (escape(uid), escape(name))))
        status, out, ctype = self.forward(body)
        print('forwarded', action, status, flush=True)
        self.reply(status, out, ctype)
"#;

const THROTTLING_SECRETS_SHIM: &str = r#"
import json, sys
moto, _redis_port, _user, _pw, data, port_file = sys.argv[1:7]
mode_file = json.loads(data)['mode_file']

class H(Proxy):
    ctype = 'application/x-amz-json-1.1'

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get('Content-Length') or 0))
        action = self.headers.get('X-Amz-Target', '').split('.')[-1]
        mode = open(mode_file).read().strip()
        if mode == 'deny' and action in ('PutSecretValue', 'ListSecrets'):  # SHIM: deny
            print('denied', action, flush=True)
            return self.reply(400, json.dumps({'__type': 'AccessDeniedException',
                'message': 'User: arn:aws:iam::123456789012:user/bastion is not authorized to '
                           'perform: secretsmanager:' + action}).encode())
        if action == 'PutSecretValue':  # SHIM: throttle as the file says
            if mode == 'always' or (mode.isdigit() and int(mode) > 0):
                if mode.isdigit():
                    open(mode_file, 'w').write(str(int(mode) - 1))
                print('throttled PutSecretValue', flush=True)
                return self.reply(400, json.dumps({'__type': 'ThrottlingException',
                                                   'message': 'Rate exceeded'}).encode())
        status, out, ctype = self.forward(body)
        print('forwarded', action, status, flush=True)
        self.reply(status, out, ctype)
"#;

impl ControlPlane {
    /// Secrets Manager in front of `moto` answering PutSecretValue with `ThrottlingException`
    /// as `mode_file` says: a number N (the next N calls, counted down) or `always`; or
    /// PutSecretValue and ListSecrets with `AccessDeniedException` (`deny`: the principal lacks
    /// both).
    /// SHIM: moto never throttles and, by default, allows everything. For
    /// `AWS_ENDPOINT_URL_SECRETS_MANAGER`.
    pub fn throttling_secrets_manager(
        moto: &Moto,
        redis: &RedisServer,
        mode_file: &std::path::Path,
    ) -> ControlPlane {
        let data = serde_json::json!({ "mode_file": mode_file });
        ControlPlane::spawn(
            "Secrets Manager",
            THROTTLING_SECRETS_SHIM,
            moto,
            redis,
            ("-", "-"),
            &data,
        )
    }
}
