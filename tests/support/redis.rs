//! A real `redis-server` (Debian's 7.0) for one test: a plaintext port, a TLS port (server
//! certificate from a throw-away CA; client certificates asked only with
//! [`RedisOpts::client_ca_pem`]), a Unix socket, ACL users.
//!
//! `save ""` and `appendonly no`: nothing survives the test. The process is killed on drop.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use super::certs::{write_private, TestCa};
use super::clients::REDIS_CLI;
use super::process::{free_ports, poll, random_hex, run, spawn, Out};

/// The Debian package's binaries.
pub const REDIS_SERVER: &str = "/usr/bin/redis-server";

/// The user the fixture itself uses to look at what arrived upstream. Always present.
pub const ADMIN_USER: &str = "fixture-admin";

#[derive(Debug, Clone, Default)]
pub struct RedisOpts {
    /// ACL users as `(name, password)`, each `on >password ~* &* +@all`.
    pub users: Vec<(String, String)>,
    /// Extra raw ACL lines, written as `user <line>` (e.g. `"ro on >pw ~* -@all +get"`).
    pub acl_lines: Vec<String>,
    /// Keep the `default` user on, without a password, with all rights (simple cases);
    /// otherwise `user default off`.
    pub default_nopass: bool,
    /// `requirepass <password>`: the `default` user on with this password, as a Redis
    /// without ACL users (or an ElastiCache AUTH token) has it. Wins over `default_nopass`.
    pub requirepass: Option<String>,
    /// Ask TLS clients for a certificate signed by this CA (PEM), as an mTLS peer would
    /// (`tls-auth-clients optional`: the fixture's own redis-cli still connects without one).
    /// `None`: no client certificate is asked for.
    pub client_ca_pem: Option<String>,
}

impl RedisOpts {
    /// Users sharing one password (the bastion's password mode has one password per database).
    pub fn users(names: &[&str], password: &str) -> RedisOpts {
        RedisOpts {
            users: names
                .iter()
                .map(|n| (n.to_string(), password.to_string()))
                .collect(),
            ..RedisOpts::default()
        }
    }

    /// `requirepass`: one password for the `default` user, no other users (but the
    /// fixture's own).
    pub fn requirepass(password: &str) -> RedisOpts {
        RedisOpts {
            requirepass: Some(password.to_string()),
            ..RedisOpts::default()
        }
    }

    /// Only `default`, on, no password.
    pub fn open() -> RedisOpts {
        RedisOpts {
            default_nopass: true,
            ..RedisOpts::default()
        }
    }
}

pub struct RedisServer {
    child: Option<Child>,
    dir: TempDir,
    plain: SocketAddr,
    tls: SocketAddr,
    admin_password: String,
}

impl RedisServer {
    /// Start a server and wait until it answers PING on the plaintext, TLS and Unix ports.
    /// Retries with new ports if one was taken between choosing and binding it.
    #[track_caller]
    pub fn start(opts: RedisOpts) -> RedisServer {
        let mut dir = tempfile::Builder::new()
            .prefix("bastion-redis-")
            .tempdir()
            .expect("temp dir for redis");
        let ca = TestCa::new("bastion test upstream CA");
        let (cert, key) = ca.issue_server(&["localhost", "127.0.0.1"]);
        fs::write(dir.path().join("ca.crt"), ca.cert_pem()).expect("write ca.crt");
        fs::write(dir.path().join("server.crt"), cert).expect("write server.crt");
        write_private(&dir.path().join("server.key"), key.as_bytes());
        if let Some(pem) = &opts.client_ca_pem {
            fs::write(dir.path().join("client-ca.crt"), pem).expect("write client-ca.crt");
        }
        let admin_password = format!("fixture-admin-{}", random_hex());

        let mut last_log = String::new();
        for _attempt in 0..5 {
            let ports = free_ports(2);
            let mut server = RedisServer {
                child: None,
                dir,
                plain: SocketAddr::from(([127, 0, 0, 1], ports[0])),
                tls: SocketAddr::from(([127, 0, 0, 1], ports[1])),
                admin_password: admin_password.clone(),
            };
            let conf = server.dir.path().join("redis.conf");
            let text = config_text(
                server.dir.path(),
                server.plain,
                server.tls,
                &opts,
                &admin_password,
            );
            fs::write(&conf, text).expect("write redis.conf");
            let _ = fs::remove_file(server.dir.path().join("redis.log"));
            let child = spawn(
                Command::new(REDIS_SERVER)
                    .arg(&conf)
                    .current_dir(server.dir.path())
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null()),
            )
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {REDIS_SERVER} (run scripts/test to install redis-server): {e}"
                )
            });
            server.child = Some(child);
            match server.wait_ready(Duration::from_secs(20)) {
                Ok(()) => return server,
                Err(log) => {
                    server.stop();
                    let clash = log.contains("in use") || log.contains("Could not create server");
                    last_log = log;
                    if !clash {
                        break;
                    }
                    // Keep the directory (certificates) for the next attempt.
                    dir =
                        std::mem::replace(&mut server.dir, tempfile::tempdir().expect("temp dir"));
                }
            }
        }
        panic!("redis-server did not start:\n{last_log}");
    }

    pub fn plain_addr(&self) -> SocketAddr {
        self.plain
    }

    pub fn tls_addr(&self) -> SocketAddr {
        self.tls
    }

    /// The Unix socket (mode 0700: only this uid).
    pub fn unix_path(&self) -> PathBuf {
        self.dir.path().join("redis.sock")
    }

    /// The CA that signed the server certificate (SANs `localhost`, `127.0.0.1`).
    pub fn ca_pem_path(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// The server's directory: `redis.conf`, `redis.log`, the certificates.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }

    /// Run one command directly against the server (plaintext port) as the fixture's admin
    /// user, e.g. `redis.cli(&["GET", "k"])`, to see what arrived upstream.
    #[track_caller]
    pub fn cli(&self, args: &[&str]) -> Out {
        run(
            Command::new(REDIS_CLI)
                .args(["-h", "127.0.0.1", "-p", &self.plain.port().to_string()])
                .args(self.admin_args())
                .args(args),
            None,
            Duration::from_secs(60),
        )
    }

    /// The trimmed stdout of [`cli`](Self::cli); panics if redis-cli failed.
    #[track_caller]
    pub fn query(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        out.assert_success();
        out.stdout().trim_end_matches('\n').to_string()
    }

    /// The `CLIENT LIST` lines of connections that have sent no command (`cmd=NULL`, still the
    /// unauthenticated `default` user): a bastion's dialed and not yet used ones.
    pub fn unused_connections(&self) -> Vec<String> {
        self.query(&["CLIENT", "LIST"])
            .lines()
            .filter(|l| l.contains(" cmd=NULL ") && l.contains(" user=default "))
            .map(str::to_string)
            .collect()
    }

    /// The `CLIENT LIST` line of connection `id` (`None`: closed).
    pub fn client_line(&self, id: &str) -> Option<String> {
        let needle = format!("id={id} ");
        self.query(&["CLIENT", "LIST"])
            .lines()
            .find(|l| l.starts_with(&needle))
            .map(str::to_string)
    }

    /// A command over TLS with redis-cli `--tls --cacert` (no client certificate), as the admin user.
    pub fn cli_tls(&self, args: &[&str]) -> Out {
        run(
            Command::new(REDIS_CLI)
                .args(["--tls", "--cacert"])
                .arg(self.ca_pem_path())
                .args(["-h", "127.0.0.1", "-p", &self.tls.port().to_string()])
                .args(self.admin_args())
                .args(args),
            None,
            Duration::from_secs(60),
        )
    }

    /// A command over the Unix socket, as the fixture's admin user.
    pub fn cli_unix(&self, args: &[&str]) -> Out {
        run(
            Command::new(REDIS_CLI)
                .arg("-s")
                .arg(self.unix_path())
                .args(self.admin_args())
                .args(args),
            None,
            Duration::from_secs(60),
        )
    }

    /// `MONITOR` as the fixture's admin user, from now until the returned guard is dropped:
    /// every command the server receives, with AUTH/HELLO arguments shown as `"(redacted)"` —
    /// one per argument, so the form of an AUTH (one or two arguments) is visible.
    pub fn monitor(&self) -> Monitor {
        let path = self
            .dir
            .path()
            .join(format!("monitor-{}.txt", random_hex()));
        let file = fs::File::create(&path).expect("monitor output file");
        let child = Command::new(REDIS_CLI)
            .args(["-h", "127.0.0.1", "-p", &self.plain.port().to_string()])
            .args(self.admin_args())
            .arg("MONITOR")
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-cli MONITOR");
        let monitor = Monitor {
            child: Some(child),
            path,
        };
        // MONITOR answers OK once it is on: from then on every command shows.
        poll(Duration::from_secs(20), || {
            monitor.output().starts_with("OK").then_some(())
        })
        .expect("MONITOR did not start");
        monitor
    }

    /// redis-cli flags that log in as the fixture's admin user.
    fn admin_args(&self) -> [&str; 5] {
        [
            "--user",
            ADMIN_USER,
            "--pass",
            &self.admin_password,
            "--no-auth-warning",
        ]
    }

    fn wait_ready(&mut self, limit: Duration) -> Result<(), String> {
        let ready = poll(limit, || {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                return Some(Err(format!("redis-server exited ({status})")));
            }
            let pong = |out: Out| out.stdout().contains("PONG");
            let all = pong(self.cli(&["PING"]))
                && pong(self.cli_tls(&["PING"]))
                && pong(self.cli_unix(&["PING"]));
            all.then_some(Ok(()))
        });
        match ready {
            Some(Ok(())) => Ok(()),
            Some(Err(e)) => Err(format!("{e}\n{}", self.log())),
            None => Err(format!(
                "no PONG on every port within {limit:?}\n{}",
                self.log()
            )),
        }
    }

    /// Kill the server and start it again on the same ports and config (a crash and restart
    /// as a client of it sees one).
    #[track_caller]
    pub fn restart(&mut self) {
        self.stop();
        let child = spawn(
            Command::new(REDIS_SERVER)
                .arg(self.dir.path().join("redis.conf"))
                .current_dir(self.dir.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
        .expect("restart redis-server");
        self.child = Some(child);
        if let Err(log) = self.wait_ready(Duration::from_secs(20)) {
            panic!("redis-server did not come back:\n{log}");
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A running `redis-cli MONITOR` ([`RedisServer::monitor`]); killed on drop.
pub struct Monitor {
    child: Option<Child>,
    path: PathBuf,
}

impl Monitor {
    /// What it has printed so far: `OK`, then one line per command,
    /// `<time> [<db> <client addr>] "CMD" "arg" …`.
    pub fn output(&self) -> String {
        fs::read_to_string(&self.path).unwrap_or_default()
    }

    /// Wait (up to 10 s) until a line containing `needle` shows, then return the output.
    #[track_caller]
    pub fn expect(&self, needle: &str) -> String {
        poll(Duration::from_secs(10), || {
            let out = self.output();
            out.contains(needle).then_some(out)
        })
        .unwrap_or_else(|| panic!("MONITOR never showed {needle}:\n{}", self.output()))
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn config_text(
    dir: &Path,
    plain: SocketAddr,
    tls: SocketAddr,
    opts: &RedisOpts,
    admin_pw: &str,
) -> String {
    let d = dir.display();
    let (client_ca, auth_clients) = match opts.client_ca_pem {
        Some(_) => ("client-ca.crt", "optional"),
        None => ("ca.crt", "no"),
    };
    let mut c = format!(
        "bind 127.0.0.1\n\
         port {plain_port}\n\
         tls-port {tls_port}\n\
         tls-cert-file {d}/server.crt\n\
         tls-key-file {d}/server.key\n\
         tls-ca-cert-file {d}/{client_ca}\n\
         tls-auth-clients {auth_clients}\n\
         unixsocket {d}/redis.sock\n\
         unixsocketperm 700\n\
         dir {d}\n\
         logfile {d}/redis.log\n\
         save \"\"\n\
         appendonly no\n\
         daemonize no\n",
        plain_port = plain.port(),
        tls_port = tls.port(),
    );
    if let Some(password) = &opts.requirepass {
        c.push_str(&format!("requirepass {password}\n"));
    } else if opts.default_nopass {
        c.push_str("user default on nopass ~* &* +@all\n");
    } else {
        c.push_str("user default off\n");
    }
    c.push_str(&format!("user {ADMIN_USER} on >{admin_pw} ~* &* +@all\n"));
    for (name, password) in &opts.users {
        c.push_str(&format!("user {name} on >{password} ~* &* +@all\n"));
    }
    for line in &opts.acl_lines {
        c.push_str(&format!("user {line}\n"));
    }
    c
}

/// The `id=` of a `CLIENT LIST` / `CLIENT INFO` line (also as a RESP3 verbatim string).
#[track_caller]
pub fn client_id(line: &str) -> String {
    line.split_whitespace()
        .find_map(|f| f.trim_start_matches("txt:").strip_prefix("id="))
        .unwrap_or_else(|| panic!("no id= in {line}"))
        .to_string()
}
