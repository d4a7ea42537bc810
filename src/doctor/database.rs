//! Per-database checks, in the order a connection needs them: `database:<name>:region` (only
//! for IAM), `:assume_role` (only with `assume_role_arn`), `:dns`, `:tcp`, `:tls`, `:auth`,
//! then `:unauthenticated` (a warning when the upstream answers a PING sent before any AUTH,
//! on a connection of its own: its `default` user is on without a password). A failed network
//! step skips the ones after it, saying which step stopped them; a failed region or
//! AssumeRole skips only `:auth`.
//!
//! Connecting reuses [`Connector::connect`] and the secret comes from [`upstream::auth_secret`],
//! exactly as a session does; the one AUTH frame is built by the handshake's `auth_command` and
//! sent, its reply read and a refusal worded by [`upstream::authenticate`] — the same exchange
//! and text a client gets. Nothing here parses RESP or holds a secret longer than the write.

use std::net::IpAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::either::Either;

use super::{tls, CheckResult, Doctor};
use crate::aws::iam::Freshness;
use crate::catalog::{Auth, Database};
use crate::config::{Config, IamService};
use crate::proxy::handshake::upstream::DEFAULT_USER;
use crate::proxy::handshake::{auth_command, Opening};
use crate::proxy::upstream::{self, AuthError, UpstreamError, UpstreamStream};
use crate::rbac::glob_match;

/// Sent when auth mode is `none`: does the upstream serve unauthenticated clients?
const PING: &[u8] = b"*1\r\n$4\r\nPING\r\n";

/// The db-user the auth probe authenticates as, and why that one. `name: None` is no db-user:
/// one-argument `AUTH <password>`, the form a session with no db-user sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeUser {
    pub name: Option<String>,
    pub source: &'static str,
}

impl ProbeUser {
    /// How findings name it.
    fn label(&self) -> String {
        match &self.name {
            Some(name) => format!("db-user '{name}'"),
            None => "one-argument AUTH (no db-user: the server's default user)".into(),
        }
    }
}

/// `legacy_auth`: no db-user, as every session. Else the database's `default_db_user`; else
/// the first concrete db-user a role allows on it; else no db-user (one-argument AUTH), or for
/// IAM, whose tokens name a user, Redis' `default` user.
pub fn probe_user(config: &Config, db: &Database) -> ProbeUser {
    if db.legacy_auth {
        return ProbeUser {
            name: None,
            source: "legacy_auth",
        };
    }
    if let Some(user) = &db.default_db_user {
        return ProbeUser {
            name: Some(user.clone()),
            source: "default_db_user",
        };
    }
    let mut concrete: Vec<&str> = config
        .seed
        .roles
        .iter()
        .filter(|r| r.db_names.iter().any(|p| glob_match(p, &db.name)))
        .flat_map(|r| r.db_users.iter())
        .filter(|u| !u.contains('*'))
        .map(String::as_str)
        .collect();
    concrete.sort_unstable();
    let source = "no default_db_user and no concrete db-user in the roles";
    match concrete.first() {
        Some(user) => ProbeUser {
            name: Some(user.to_string()),
            source: "the first db-user a role allows",
        },
        None if db.auth.needs_db_user() => ProbeUser {
            name: Some(DEFAULT_USER.into()),
            source,
        },
        None => ProbeUser { name: None, source },
    }
}

/// Every step for one database.
pub async fn check(db: &Database, user: &ProbeUser, doctor: &Doctor) -> Vec<CheckResult> {
    let name = |step: &str| format!("database:{}:{step}", db.name);
    let mut out = Vec::with_capacity(6);
    out.extend(super::region::check(db, doctor).await);
    out.extend(super::assume_role::check(db, doctor).await);
    out.extend(super::managed::check(db, doctor).await);
    let skip_rest = |out: &mut Vec<CheckResult>, steps: &[&str], why: &str| {
        for step in steps {
            out.push(
                CheckResult::skip(name(step), format!("not run: {why}"))
                    .with("database", db.name.as_str()),
            );
        }
    };

    let dns = dns(db, doctor.timeout)
        .await
        .with("database", db.name.as_str());
    let dns_ok = dns.status != super::Status::Fail;
    out.push(dns);
    if !dns_ok {
        skip_rest(
            &mut out,
            &["tcp", "tls", "auth", "unauthenticated"],
            "the host does not resolve",
        );
        return out;
    }

    let plain = Database {
        tls: None,
        ..db.clone()
    };
    let tcp_result = doctor.connector.connect(&plain, doctor.timeout).await;
    let tcp_stream = match tcp_result {
        Ok(stream) => {
            out.push(tcp_ok(db, &stream));
            stream
        }
        Err(e) => {
            out.push(tcp_failed(db, &e, doctor.timeout));
            skip_rest(
                &mut out,
                &["tls", "auth", "unauthenticated"],
                "no TCP connection",
            );
            return out;
        }
    };

    let stream = match &db.tls {
        None => {
            out.push(plaintext(db).with("database", db.name.as_str()));
            tcp_stream
        }
        Some(settings) => {
            drop(tcp_stream);
            let server_name = settings
                .server_name
                .clone()
                .unwrap_or_else(|| db.address.host.clone());
            match doctor.connector.connect(db, doctor.timeout).await {
                Ok(stream) => {
                    out.push(
                        CheckResult::ok(
                            name("tls"),
                            format!(
                                "certificate of {} verified for server name '{server_name}'",
                                db.address
                            ),
                        )
                        .with("database", db.name.as_str())
                        .with("server_name", server_name),
                    );
                    stream
                }
                Err(e) => {
                    let result = tls::diagnose(db, &server_name, &e, doctor.timeout).await;
                    out.push(result.with("database", db.name.as_str()));
                    skip_rest(&mut out, &["auth", "unauthenticated"], "TLS failed");
                    return out;
                }
            }
        }
    };

    out.push(
        auth(db, user, stream, doctor)
            .await
            .with("database", db.name.as_str())
            .with("auth_mode", db.auth.mode_name())
            .with("db_user", user.name.as_deref()),
    );
    out.push(
        unauthenticated(db, doctor)
            .await
            .with("database", db.name.as_str()),
    );
    out
}

/// A PING before any AUTH, on a fresh connection: `+PONG` means anyone who reaches the
/// upstream is its `default` user without a password. The command guard keeps sessions from
/// becoming `default`, but not everything else that can reach the address (nor sessions of
/// `relay = "passthrough"` databases).
async fn unauthenticated(db: &Database, doctor: &Doctor) -> CheckResult {
    let name = format!("database:{}:unauthenticated", db.name);
    let mut stream = match doctor.connector.connect(db, doctor.timeout).await {
        Ok(stream) => stream,
        Err(e) => return CheckResult::skip(name, format!("not run: {e}")),
    };
    let reply = tokio::time::timeout(
        doctor.timeout,
        upstream::authenticate(&mut stream, db, None, PING),
    )
    .await;
    match reply {
        Ok(Ok(_)) => {
            let fix = match db.auth {
                Auth::None => format!(
                    "auth mode 'none' trusts every path to {}: prefer a password or IAM auth \
                     and `user default off` on the server",
                    db.address
                ),
                _ => format!(
                    "turn the server's default user off (`ACL SETUSER default off`, or \
                     `user default off` in its config) so {} answers nothing before AUTH",
                    db.address
                ),
            };
            CheckResult::warn(
                name,
                format!(
                    "{} answers commands without authentication (PING before AUTH got a \
                     reply): its `default` user is on with no password",
                    db.address
                ),
                fix,
            )
        }
        Ok(Err(upstream::AuthError::Rejected { .. })) => {
            CheckResult::ok(name, format!("{} refuses commands before AUTH", db.address))
        }
        Ok(Err(e)) => CheckResult::skip(name, format!("not run: no reply to PING: {e}")),
        Err(_) => CheckResult::skip(
            name,
            format!("not run: no reply to PING within {:?}", doctor.timeout),
        ),
    }
}

async fn dns(db: &Database, timeout: Duration) -> CheckResult {
    let name = format!("database:{}:dns", db.name);
    let host = db.address.host.as_str();
    if host.parse::<IpAddr>().is_ok() {
        return CheckResult::ok(name, format!("{host} is an IP address: nothing to resolve"))
            .with("addresses", vec![host.to_string()]);
    }
    let fix = format!(
        "check the host name in the address of database '{}'; inside a VPC, check that the VPC \
         has DNS resolution and DNS hostnames enabled and that this host uses the VPC resolver \
         (/etc/resolv.conf)",
        db.name
    );
    match tokio::time::timeout(timeout, tokio::net::lookup_host((host, db.address.port))).await {
        Err(_) => CheckResult::fail(
            name,
            format!("no DNS answer for '{host}' within {timeout:?}"),
            fix,
        ),
        Ok(Err(e)) => CheckResult::fail(name, format!("'{host}' does not resolve: {e}"), fix),
        Ok(Ok(addrs)) => {
            let mut ips: Vec<String> = addrs.map(|a| a.ip().to_string()).collect();
            ips.dedup();
            if ips.is_empty() {
                CheckResult::fail(name, format!("'{host}' resolves to no address"), fix)
            } else {
                CheckResult::ok(name, format!("{host} resolves to {}", ips.join(", ")))
                    .with("addresses", ips)
            }
        }
    }
}

fn tcp_ok(db: &Database, stream: &UpstreamStream) -> CheckResult {
    let peer = match stream {
        Either::Left(tcp) => tcp.peer_addr().ok(),
        Either::Right(tls) => tls.tcp().peer_addr().ok(),
    };
    let finding = match peer {
        Some(peer) if peer.to_string() != db.address.to_string() => {
            format!("connected to {} ({peer})", db.address)
        }
        _ => format!("connected to {}", db.address),
    };
    CheckResult::ok(format!("database:{}:tcp", db.name), finding).with("database", db.name.as_str())
}

/// Classify a failed TCP connect: a timeout is the firewall case, a refusal an empty port.
pub fn tcp_failed(db: &Database, error: &UpstreamError, timeout: Duration) -> CheckResult {
    let name = format!("database:{}:tcp", db.name);
    let addr = &db.address;
    let (host, port) = (&db.address.host, db.address.port);
    let unreachable = format!(
        "security group / route / NACL: the bastion cannot reach {addr} (the `nc -zv {host} \
         {port}` case): allow TCP {port} from this host's security group in the database's \
         security group, and check the route tables and network ACLs between the subnets"
    );
    let result = match error {
        UpstreamError::ConnectTimeout { .. } => CheckResult::fail(
            name,
            format!("TCP connect to {addr} timed out after {timeout:?}: nothing answered"),
            unreachable,
        )
        .with("error", "timeout"),
        UpstreamError::Connect { source, .. }
            if source.kind() == std::io::ErrorKind::ConnectionRefused =>
        {
            CheckResult::fail(
                name,
                format!("TCP connect to {addr} was refused"),
                format!(
                    "nothing listens on {addr}: check the port in the address of database '{}' \
                     and that the database is running at that endpoint",
                    db.name
                ),
            )
            .with("error", "refused")
        }
        UpstreamError::Connect { source, .. } => CheckResult::fail(
            name,
            format!("TCP connect to {addr} failed: {source}"),
            unreachable,
        )
        .with("error", "unreachable"),
        other => CheckResult::fail(name, other.to_string(), "check the address of the database"),
    };
    result.with("database", db.name.as_str())
}

/// The `:tls` check of a database without `tls`: a skip, or a warning when its auth tokens
/// travel in clear (only `allow_plaintext_auth = true` lets such a database be declared).
fn plaintext(db: &Database) -> CheckResult {
    let name = format!("database:{}:tls", db.name);
    if !db.auth.needs_tls() {
        return CheckResult::skip(name, "no tls configured: plaintext upstream");
    }
    CheckResult::warn(
        name,
        format!(
            "no tls configured and allow_plaintext_auth = true: auth mode '{}' sends its tokens \
             in clear (ElastiCache and MemoryDB accept IAM auth only with in-transit encryption)",
            db.auth.mode_name()
        ),
        format!(
            "add tls = {{}} to database '{}' and remove allow_plaintext_auth (meant for test rigs)",
            db.name
        ),
    )
    .with("allow_plaintext_auth", true)
}

/// One AUTH (or, for mode `none`, one PING) and its reply.
async fn auth<S>(db: &Database, user: &ProbeUser, mut stream: S, doctor: &Doctor) -> CheckResult
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let name = format!("database:{}:auth", db.name);
    let secret = match upstream::auth_secret(
        db,
        user.name.as_deref(),
        &doctor.credentials,
        Freshness::New,
    )
    .await
    {
        Ok(secret) => secret,
        // Without credentials there is no token to try; the `credentials` check says why.
        Err(UpstreamError::Credentials { .. }) => return CheckResult::skip(
            name,
            "not run: no AWS credentials to sign the IAM token with (see the `credentials` check)",
        ),
        Err(UpstreamError::Region { .. }) => {
            return CheckResult::skip(
                name,
                format!(
                    "not run: no AWS region to sign the IAM token for (see the \
                     `database:{}:region` check)",
                    db.name
                ),
            )
        }
        Err(UpstreamError::AssumeRole { .. }) => {
            return CheckResult::skip(
                name,
                format!(
                    "not run: the database's role could not be assumed (see the \
                     `database:{}:assume_role` check)",
                    db.name
                ),
            )
        }
        Err(e) => {
            let fix = match &e {
                UpstreamError::Password { .. } => {
                    "make the password_file readable by the bastion only (chmod 600) and \
                     non-empty, or set the password_env variable"
                }
                _ => "check the database's auth settings",
            };
            return CheckResult::fail(name, e.to_string(), fix);
        }
    };
    let opening = Opening::Auth {
        db_user: user.name.clone(),
    };
    let command = auth_command(&opening, user.name.as_deref(), secret.as_ref());
    drop(secret);
    let bytes: &[u8] = command.as_deref().map(Vec::as_slice).unwrap_or(PING);
    let what = if command.is_some() { "AUTH" } else { "PING" };

    let reply = tokio::time::timeout(
        doctor.timeout,
        upstream::authenticate(&mut stream, db, user.name.as_deref(), bytes),
    )
    .await;
    drop(command);
    let Ok(reply) = reply else {
        return CheckResult::fail(
            name,
            format!(
                "no reply to {what} from {} within {:?}",
                db.address, doctor.timeout
            ),
            wrong_protocol_fix(db),
        );
    };
    match reply {
        Err(AuthError::Io { source, .. }) => CheckResult::fail(
            name,
            format!("{what} to {} failed: {source}", db.address),
            wrong_protocol_fix(db),
        ),
        Err(AuthError::Closed { .. }) => CheckResult::fail(
            name,
            format!(
                "no valid reply to {what} from {}: the upstream closed the connection",
                db.address
            ),
            wrong_protocol_fix(db),
        ),
        Err(AuthError::Malformed { source, .. }) => CheckResult::fail(
            name,
            format!("no valid reply to {what} from {}: {source}", db.address),
            wrong_protocol_fix(db),
        ),
        Err(AuthError::Rejected { explained, .. }) => {
            CheckResult::fail(name, explained, rejection_fix(db, user))
        }
        Ok(_) => match &db.auth {
            Auth::None => CheckResult::ok(
                name,
                "the upstream serves unauthenticated clients (PING answered)",
            ),
            mode => CheckResult::ok(
                name,
                format!(
                    "{} ({}) authenticated with auth mode '{}'",
                    user.label(),
                    user.source,
                    mode.mode_name()
                ),
            ),
        },
    }
}

/// The connection worked but the bytes did not: usually TLS on one side only.
fn wrong_protocol_fix(db: &Database) -> String {
    if db.tls.is_some() {
        format!("check that {} is a Redis endpoint", db.address)
    } else {
        format!(
            "check that {} is a Redis endpoint; if the database has in-transit encryption \
             enabled, add tls = {{}} to database '{}'",
            db.address, db.name
        )
    }
}

fn rejection_fix(db: &Database, user: &ProbeUser) -> String {
    let db_user = user.name.as_deref().unwrap_or(DEFAULT_USER);
    match &db.auth {
        Auth::Iam {
            service, target, ..
        } => {
            let (describe, kind) = match service {
                IamService::Elasticache => (
                    format!("aws elasticache describe-users --user-id {db_user}"),
                    "ElastiCache",
                ),
                IamService::Memorydb => (
                    format!("aws memorydb describe-users --user-name {db_user}"),
                    "MemoryDB",
                ),
            };
            format!(
                "allow {} on '{target}' and on user '{db_user}' for the bastion's AWS principal \
                 (`bastion configure bootstrap --manual` prints the policy), and check that the \
                 {kind} user exists with authentication type iam (`{describe}`); the region and \
                 target in the config must be the cache's own",
                service.connect_action()
            )
        }
        Auth::Password(_) if user.name.is_none() => format!(
            "check that the configured password is the server's (requirepass, or the AUTH \
             token); if the server has ACL users instead, name the db-user (default_db_user, \
             or a role's db_users) and leave legacy_auth off (database '{}')",
            db.name
        ),
        Auth::Password(_) => format!(
            "check that the configured password is the one of db-user '{db_user}' on the server \
             (ACL GETUSER {db_user}), and that the user is on"
        ),
        Auth::None => {
            "the upstream requires AUTH: set auth mode 'password' or 'iam' for this database".into()
        }
        Auth::Managed(_) => format!(
            "db-user '{db_user}' refused its managed password: check `bastion managed ls` for \
             the last rotation's error, and that the user is on (ACL GETUSER {db_user})"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Status;
    use std::path::Path;

    const CONFIG: &str = r#"
state_dir = "/tmp/x"
[listeners.unix]
directory = "/tmp/x/db"
[[databases]]
name = "a"
address = "10.0.0.1:6379"
auth = { mode = "none" }
default_db_user = "fixed"
[[databases]]
name = "b"
address = "10.0.0.2:6379"
auth = { mode = "none" }
[[databases]]
name = "c"
address = "10.0.0.3:6379"
auth = { mode = "none" }
[[roles]]
name = "r"
db_users = ["zed", "app-*", "app"]
db_names = ["b"]
"#;

    #[test]
    fn probe_user_prefers_default_then_roles_then_default_user() {
        let c = Config::parse(CONFIG, Path::new("t")).unwrap();
        let db =
            |i: usize| Database::from_declared(&c.seed.databases[i], &Default::default(), None);
        let name = |i: usize| probe_user(&c, &db(i)).name;
        assert_eq!(name(0).as_deref(), Some("fixed"));
        assert_eq!(name(1).as_deref(), Some("app"));
        // No db-user: the one-argument AUTH a session with no db-user sends.
        assert_eq!(name(2), None);
        let mut iam = db(2);
        iam.auth = Auth::Iam {
            service: IamService::Elasticache,
            region: None,
            target: "rg".into(),
            serverless: false,
        };
        assert_eq!(probe_user(&c, &iam).name.as_deref(), Some("default"));
        let mut legacy = db(1);
        legacy.legacy_auth = true;
        assert_eq!(probe_user(&c, &legacy).name, None);
    }

    #[test]
    fn tcp_failures_are_told_apart() {
        let c = Config::parse(CONFIG, Path::new("t")).unwrap();
        let db = &Database::from_declared(&c.seed.databases[0], &Default::default(), None);
        let t = Duration::from_secs(5);
        let timeout = UpstreamError::ConnectTimeout {
            db: "a".into(),
            addr: "10.0.0.1:6379".into(),
            after: t,
        };
        let r = tcp_failed(db, &timeout, t);
        assert_eq!(r.status, Status::Fail);
        let fix = r.fix.unwrap();
        assert!(
            fix.contains("security group / route / NACL") && fix.contains("nc -zv 10.0.0.1 6379"),
            "{fix}"
        );
        let refused = UpstreamError::Connect {
            db: "a".into(),
            addr: "10.0.0.1:6379".into(),
            source: std::io::ErrorKind::ConnectionRefused.into(),
        };
        let r = tcp_failed(db, &refused, t);
        assert!(r.fix.unwrap().contains("nothing listens on 10.0.0.1:6379"));
        assert_eq!(r.fields["error"], "refused");
    }
}
