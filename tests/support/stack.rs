//! One Redis and one bastion wired together: the world most end-to-end tests run in.
//!
//! Upstream (one `redis-server`, `user default off`):
//! - ACL users `app` and `admin` (plus [`StackOpts::extra_upstream_users`]), all with the
//!   upstream password (password mode has one password per database).
//!
//! Bastion databases (all on that server):
//! | name      | upstream                  | auth                                   |
//! |-----------|---------------------------|----------------------------------------|
//! | `tlsdb`   | TLS port (CA file, SNI `localhost`) | `password_file` (right password) |
//! | `plaindb` | plaintext port            | `password_file` (right password)       |
//! | `envdb`   | plaintext port            | `password_env` (right password)        |
//! | `badpwdb` | plaintext port            | `password_file` (WRONG password)       |
//! | `downdb`  | a closed loopback port    | `password_file`                        |
//! | `opendb`  | plaintext port, only with [`StackOpts::open_db`] (Redis `default` on nopass) | `none` |
//! | `passdb`  | plaintext port, only with [`StackOpts::passthrough_db`]: `relay = "passthrough"` | `password_file` |
//!
//! Password files are in the config's `secrets_dir` ([`Stack::secrets_dir`]).
//! Every database has `default_db_user = "app"`. Role `apps` allows db_users
//! [`StackOpts::db_users`] (default `["app"]`) on every database; bastion user `alice` has it and
//! is bound to the Unix user running the tests. Listener 0 routes by SNI (no default database);
//! [`StackOpts::extra_listeners`] follow it in config order. Unix sockets live in a 0755
//! directory under /tmp, so another local user can reach them (and be refused).
//!
//! Which upstream port a session reached tells which database it was routed to: see
//! [`upstream_port`].

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tempfile::TempDir;

use super::bastion::Bastion;
use super::certs::write_private;
use super::clients::{ClientCert, Endpoint};
use super::process::{closed_addr, random_hex};
use super::redis::{RedisOpts, RedisServer};
use super::scenarios::Target;

/// The bastion user whose certificate / Unix account the tests use.
pub const USER: &str = "alice";
/// The upstream user the role allows.
pub const APP: &str = "app";
/// An upstream user that exists in Redis but that no role allows.
pub const ADMIN: &str = "admin";
/// What clients send as their AUTH password. The bastion ignores it (identity is the
/// certificate or the socket's peer) and must never log it.
pub const CLIENT_PASSWORD: &str = "client-pw-7c41d9e2aa";
/// The environment variable `envdb` reads its password from.
pub const PASSWORD_ENV: &str = "BASTION_TEST_UPSTREAM_PASSWORD";

#[derive(Debug, Clone)]
pub struct StackOpts {
    /// `[limits] handshake_timeout`. Generous by default: a loaded CI machine must not make a
    /// 10 MB first command time out. The handshake-timeout test sets `"1s"`.
    pub handshake_timeout: String,
    /// The role's `db_users`.
    pub db_users: Vec<String>,
    /// Upstream ACL users besides `app` and `admin` (same password).
    pub extra_upstream_users: Vec<String>,
    /// Bodies of further `[[listeners.tcp]]` tables (without the header), after listener 0,
    /// e.g. `database = "plaindb"`. Their `address` is added (`127.0.0.1:0`).
    pub extra_listeners: Vec<String>,
    /// Add database `opendb` (auth mode none) and turn Redis' `default` user on without a password.
    pub open_db: bool,
    /// Add database `passdb`: like `plaindb`, with `relay = "passthrough"`.
    pub passthrough_db: bool,
    /// Raw TOML appended to the config (more roles and users).
    pub extra_toml: String,
    /// Lines added to `[limits]`, e.g. `max_sessions = 20`.
    pub extra_limits: String,
    /// More environment for the daemon (e.g. AWS credentials for an IAM database).
    pub env: Vec<(String, String)>,
}

impl Default for StackOpts {
    fn default() -> Self {
        StackOpts {
            handshake_timeout: "10s".into(),
            db_users: vec![APP.into()],
            extra_upstream_users: Vec::new(),
            extra_listeners: Vec::new(),
            open_db: false,
            passthrough_db: false,
            extra_toml: String::new(),
            extra_limits: String::new(),
            env: Vec::new(),
        }
    }
}

/// Which client path a test takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// mTLS on listener 0, the database named by SNI.
    Mtls,
    /// `<dir>/<db>.sock`, identity from SO_PEERCRED.
    Unix,
}

pub struct Stack {
    pub redis: RedisServer,
    pub bastion: Bastion,
    /// Alice's certificate from `bastion cert issue`.
    pub cert: ClientCert,
    pub upstream_password: String,
    pub wrong_password: String,
    /// The config the bastion runs on, for failure messages.
    pub config: String,
    state: TempDir,
    certs: TempDir,
    _sockets: TempDir,
    _secrets: TempDir,
}

impl Stack {
    #[track_caller]
    pub fn start() -> Stack {
        Stack::start_with(StackOpts::default())
    }

    #[track_caller]
    pub fn start_with(opts: StackOpts) -> Stack {
        let upstream_password = format!("upstream-pw-{}", random_hex());
        let wrong_password = format!("wrong-pw-{}", random_hex());
        let mut names = vec![APP, ADMIN];
        names.extend(opts.extra_upstream_users.iter().map(String::as_str));
        let mut redis_opts = RedisOpts::users(&names, &upstream_password);
        redis_opts.default_nopass = opts.open_db;
        let redis = RedisServer::start(redis_opts);

        let state = tempfile::Builder::new()
            .prefix("bastion-state-")
            .tempdir()
            .expect("state dir");
        let certs = tempfile::Builder::new()
            .prefix("bastion-certs-")
            .tempdir()
            .expect("cert dir");
        let secrets = tempfile::Builder::new()
            .prefix("bastion-secrets-")
            .tempdir()
            .expect("secrets dir");
        // Outside a 0700 temp dir and 0755 itself: `nobody` must reach the sockets to be refused.
        let sockets = tempfile::Builder::new()
            .prefix("bastion-sock-")
            .tempdir_in("/tmp")
            .expect("socket dir");
        fs::set_permissions(sockets.path(), fs::Permissions::from_mode(0o755))
            .expect("chmod socket dir");

        let good = write_private(
            &secrets.path().join("upstream.pw"),
            upstream_password.as_bytes(),
        );
        let bad = write_private(&secrets.path().join("wrong.pw"), wrong_password.as_bytes());

        let config = config_text(&ConfigInputs {
            opts: &opts,
            redis: &redis,
            state: state.path(),
            secrets: secrets.path(),
            sockets: sockets.path(),
            good_pw_file: &good,
            bad_pw_file: &bad,
        });
        let mut env = vec![(PASSWORD_ENV, upstream_password.as_str())];
        env.extend(opts.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let bastion = Bastion::start_with_env(&config, state.path(), &env);
        let cert = bastion.issue_cert(USER, "1h", certs.path());
        Stack {
            redis,
            bastion,
            cert,
            upstream_password,
            wrong_password,
            config,
            state,
            certs,
            _sockets: sockets,
            _secrets: secrets,
        }
    }

    /// Listener 0 with SNI = `db`, presenting alice's certificate.
    pub fn mtls(&self, db: &str) -> Endpoint {
        Endpoint::mtls(self.bastion.tls_addr(0), Some(db), &self.cert)
    }

    /// The socket of `db`.
    pub fn unix(&self, db: &str) -> Endpoint {
        Endpoint::unix(self.bastion.socket_path(db))
    }

    pub fn endpoint(&self, via: Via, db: &str) -> Endpoint {
        match via {
            Via::Mtls => self.mtls(db),
            Via::Unix => self.unix(db),
        }
    }

    /// A scenario target: `db` through the bastion by `via`.
    pub fn target(&self, via: Via, db: &str) -> Target<'_> {
        Target {
            ep: self.endpoint(via, db),
            redis: &self.redis,
            bastion: Some(&self.bastion),
            secrets: self.secrets(),
        }
    }

    /// Strings that must never appear in the bastion's logs.
    pub fn secrets(&self) -> Vec<String> {
        vec![
            self.upstream_password.clone(),
            self.wrong_password.clone(),
            CLIENT_PASSWORD.to_string(),
        ]
    }

    #[track_caller]
    pub fn assert_no_secrets_in_logs(&self) {
        let secrets = self.secrets();
        let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
        self.bastion.assert_no_secrets(&refs);
    }

    pub fn state_dir(&self) -> &Path {
        self.state.path()
    }

    /// The config's `secrets_dir` (0700): the only place password files may be.
    pub fn secrets_dir(&self) -> &Path {
        self._secrets.path()
    }

    /// A fresh directory for more certificates.
    pub fn cert_dir(&self, name: &str) -> PathBuf {
        let dir = self.certs.path().join(name);
        fs::create_dir_all(&dir).expect("cert sub-dir");
        dir
    }
}

struct ConfigInputs<'a> {
    opts: &'a StackOpts,
    redis: &'a RedisServer,
    state: &'a Path,
    secrets: &'a Path,
    sockets: &'a Path,
    good_pw_file: &'a Path,
    bad_pw_file: &'a Path,
}

fn config_text(i: &ConfigInputs<'_>) -> String {
    let s = |v: &str| toml::Value::String(v.to_string()).to_string();
    let p = |v: &Path| s(&v.to_string_lossy());
    let list = |v: &[String]| {
        format!(
            "[{}]",
            v.iter().map(|x| s(x)).collect::<Vec<_>>().join(", ")
        )
    };
    let me = current_user();
    let good = p(i.good_pw_file);
    let bad = p(i.bad_pw_file);
    let mut c = format!(
        r#"state_dir = {state}
secrets_dir = {secrets}

[limits]
handshake_timeout = {ht}
{extra_limits}

[[listeners.tcp]]
address = "127.0.0.1:0"
server_names = ["localhost", "127.0.0.1"]
"#,
        state = p(i.state),
        secrets = p(i.secrets),
        ht = s(&i.opts.handshake_timeout),
        extra_limits = i.opts.extra_limits,
    );
    for body in &i.opts.extra_listeners {
        c.push_str(&format!(
            "\n[[listeners.tcp]]\naddress = \"127.0.0.1:0\"\n{body}\n"
        ));
    }
    c.push_str(&format!(
        r#"
[listeners.unix]
directory = {sockets}

[[databases]]
name = "tlsdb"
address = "{tls}"
tls = {{ ca_file = {ca}, server_name = "localhost" }}
auth = {{ mode = "password", password_file = {good} }}
default_db_user = "app"

[[databases]]
name = "plaindb"
address = "{plain}"
auth = {{ mode = "password", password_file = {good} }}
default_db_user = "app"

[[databases]]
name = "envdb"
address = "{plain}"
auth = {{ mode = "password", password_env = "{PASSWORD_ENV}" }}
default_db_user = "app"

[[databases]]
name = "badpwdb"
address = "{plain}"
auth = {{ mode = "password", password_file = {bad} }}
default_db_user = "app"

[[databases]]
name = "downdb"
address = "{down}"
auth = {{ mode = "password", password_file = {good} }}
default_db_user = "app"
"#,
        sockets = p(i.sockets),
        tls = i.redis.tls_addr(),
        plain = i.redis.plain_addr(),
        ca = p(&i.redis.ca_pem_path()),
        down = closed_addr(),
    ));
    if i.opts.open_db {
        c.push_str(&format!(
            r#"
[[databases]]
name = "opendb"
address = "{plain}"
auth = {{ mode = "none" }}
"#,
            plain = i.redis.plain_addr(),
        ));
    }
    if i.opts.passthrough_db {
        c.push_str(&format!(
            r#"
[[databases]]
name = "passdb"
address = "{plain}"
relay = "passthrough"
auth = {{ mode = "password", password_file = {good} }}
default_db_user = "app"
"#,
            plain = i.redis.plain_addr(),
        ));
    }
    c.push_str(&format!(
        r#"
[[roles]]
name = "apps"
db_users = {db_users}
db_names = ["*"]

[[users]]
name = "{USER}"
roles = ["apps"]
unix_user = {me}
"#,
        db_users = list(&i.opts.db_users),
        me = s(&me),
    ));
    c.push_str(&i.opts.extra_toml);
    c
}

/// The name of the Unix user running the tests (its uid if it has no name).
pub fn current_user() -> String {
    let uid = nix::unistd::geteuid();
    match nix::unistd::User::from_uid(uid) {
        Ok(Some(u)) => u.name,
        _ => uid.to_string(),
    }
}

/// The upstream (Redis-side) port of the session behind `ep`: `CLIENT INFO` through the
/// bastion reports the upstream connection's `laddr`, i.e. which Redis port the bastion
/// dialled (plaintext or TLS) — which tells which database the session was routed to.
#[track_caller]
pub fn upstream_port(ep: &Endpoint) -> u16 {
    let out = super::clients::redis_cli(ep, &["CLIENT", "INFO"]);
    let text = out.stdout();
    text.split_whitespace()
        .find_map(|f| f.strip_prefix("laddr="))
        .and_then(|a| a.rsplit_once(':'))
        .and_then(|(_, port)| port.parse().ok())
        .unwrap_or_else(|| panic!("no laddr= in CLIENT INFO:\n{out}"))
}
