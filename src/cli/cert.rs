//! `bastion cert issue USER --ttl 8h --out DIR`, `bastion cert ls`, `bastion cert revoke SERIAL`.
//!
//! `issue` asks the running daemon (admin socket): it issues from its CA, fsyncs the serial,
//! user and validity in the store, and sends the bundle back; this side writes the files stock
//! Redis clients take as is (key 0600). With no daemon (nothing listens on the socket — first
//! boot, before start) `issue` does the same itself: it takes the store's writer lock, loads the
//! CA from the state dir, records the serial, then writes the bundle. If the store is locked
//! (a daemon runs but its socket was not found) it refuses rather than guess.
//!
//! Prints paths, serial and expiry — never the key.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde::Serialize;

use super::admin::{table, unexpected, AdminArgs};
use super::CertIssueArgs;
use crate::admin::certs::issue_and_record;
use crate::admin::client::{self, ClientError};
use crate::admin::wire::{IssuedBundle, Reply, Request};
use crate::config::Config;
use crate::identity::ca::{write_bundle_files, BundlePems, OnBoxCa};
use crate::store::records::{CertRecord, SerialHex};
use crate::store::{Store, StoreError};

/// Where `redis-cli` connects in the printed example when no config says otherwise
/// (the `serve --dev` defaults).
const DEV_LISTEN: ([u8; 4], u16) = ([127, 0, 0, 1], 6380);
const DEV_DATABASE: &str = "local";

pub fn issue(args: CertIssueArgs) -> anyhow::Result<()> {
    let config = args.config.as_deref().map(Config::load).transpose()?;
    let state_dir = config
        .as_ref()
        .map_or_else(|| args.state_dir.clone(), |c| c.boot.state_dir.clone());
    let example = config.as_ref().map_or_else(default_target, example_target);
    let socket = match (&args.socket, &config) {
        (Some(socket), _) => socket.clone(),
        (None, Some(config)) => config.boot.admin_socket(),
        // `Config::admin_socket`'s default.
        (None, None) => state_dir.join("run").join("admin.sock"),
    };
    let ttl_secs = args
        .ttl
        .as_secs()
        .max(u64::from(args.ttl.subsec_nanos() > 0));
    let request = Request::IssueCert {
        user: args.user.clone(),
        ttl_secs,
    };
    let (bundle, ca_dir, via) = match client::call(&socket, &request) {
        Ok(Reply::Issued(bundle)) => (bundle, None, format!("the daemon ({})", socket.display())),
        Ok(other) => return Err(unexpected(other)),
        Err(ClientError::Connect { source, .. }) if no_daemon(&source) => {
            let ca_dir = state_dir.join("ca");
            let bundle =
                issue_without_daemon(&state_dir, config.as_ref(), &args).with_context(|| {
                    format!(
                        "no daemon listens on {}; issuing from {} directly",
                        socket.display(),
                        state_dir.display()
                    )
                })?;
            (
                bundle,
                Some(ca_dir),
                "the state dir (no daemon running)".to_string(),
            )
        }
        Err(e) => return Err(e.into()),
    };
    let pems = BundlePems {
        cert: &bundle.cert_pem,
        key: &bundle.key_pem.0,
        ca: &bundle.ca_pem,
    };
    let [cert, key, ca_cert] = write_bundle_files(&args.user, &pems, &args.out, ca_dir.as_deref())?;

    println!(
        "issued a client certificate for '{}' from {} via {via}",
        args.user, bundle.ca_subject
    );
    println!("  certificate  {}", cert.display());
    println!(
        "  private key  {}  (mode 0600; keep it secret)",
        key.display()
    );
    println!("  CA           {}", ca_cert.display());
    println!("  serial       {}", bundle.serial);
    println!(
        "  expires      {}  (in {})",
        rfc3339(bundle.not_after),
        humantime::format_duration(args.ttl)
    );
    println!("  recorded     store seq {}", bundle.seq);
    println!();
    println!("connect with:");
    println!("  {}", redis_cli_example(&cert, &key, &ca_cert, &example));
    Ok(())
}

/// Nothing listens on the admin socket: no file, or a file left by a daemon that is gone.
fn no_daemon(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
    )
}

/// Issue and record a certificate with the store's writer lock held by this process, as the
/// daemon would: the serial is fsynced before the bundle is returned.
fn issue_without_daemon(
    state_dir: &Path,
    config: Option<&Config>,
    args: &CertIssueArgs,
) -> anyhow::Result<IssuedBundle> {
    // With a config, a store that never started imports the config's users first, exactly as
    // the daemon's first start would (the store is then no longer "first start" for it).
    let opened = match config {
        Some(config) => crate::daemon::open_store(config, &crate::daemon::secret_dirs(config)),
        None => Store::open(&state_dir.join(crate::daemon::STORE_DIR)).map_err(Into::into),
    };
    let mut store = match opened {
        Err(e) if matches!(e.downcast_ref(), Some(StoreError::Locked { .. })) => {
            return Err(e.context(
                "a running daemon holds the store but does not listen on that socket: give \
                 its admin socket with --socket, or its config with --config",
            ))
        }
        other => other?,
    };
    if store.state().user(&args.user).is_none() {
        anyhow::bail!(
            "no user '{}' in the store {}: add it first (`bastion user add` on the running \
             daemon, or declare it in the config before the daemon's first start)",
            args.user,
            store.dir().display()
        );
    }
    let ca_dir = state_dir.join("ca");
    let ca = OnBoxCa::load_or_create(&ca_dir)
        .with_context(|| format!("on-box CA in {}", ca_dir.display()))?;
    let max_ttl = config.map_or(crate::config::DEFAULT_MAX_CERT_TTL, |c| {
        c.live.limits.max_cert_ttl
    });
    issue_and_record(&ca, &args.user, args.ttl, max_ttl, |m| {
        Ok(store.apply(m)?.0)
    })
}

/// One row of `bastion cert ls` (and its `--json` element).
#[derive(Debug, Serialize, PartialEq, Eq)]
struct CertRow {
    serial: String,
    user: String,
    issued: String,
    expires: String,
    status: &'static str,
    revoked_at: Option<String>,
}

fn cert_row(c: &CertRecord, now: i64) -> CertRow {
    let status = match c.revoked_at {
        Some(_) => "revoked",
        None if c.not_after <= now => "expired",
        None => "active",
    };
    CertRow {
        serial: SerialHex(&c.serial).to_string(),
        user: c.user.to_string(),
        issued: rfc3339(c.not_before),
        expires: rfc3339(c.not_after),
        status,
        revoked_at: c.revoked_at.map(rfc3339),
    }
}

pub fn list(admin: &AdminArgs) -> anyhow::Result<()> {
    let mut certs = match admin.call(Request::ListCerts)? {
        Reply::Certs(certs) => certs,
        other => return Err(unexpected(other)),
    };
    certs.sort_by_key(|c| c.not_before);
    let now = unix_now();
    let rows: Vec<CertRow> = certs.iter().map(|c| cert_row(c, now)).collect();
    admin.print(&rows, || {
        let cells: Vec<Vec<String>> = rows
            .iter()
            .map(|r| {
                vec![
                    r.serial.clone(),
                    r.user.clone(),
                    r.issued.clone(),
                    r.expires.clone(),
                    r.status.to_string(),
                ]
            })
            .collect();
        print!(
            "{}",
            table(&["SERIAL", "USER", "ISSUED", "EXPIRES", "STATUS"], &cells)
        );
    })
}

pub fn revoke(serial: &str, admin: &AdminArgs) -> anyhow::Result<()> {
    let (seq, closed) = match admin.call(Request::RevokeCert(serial.to_string()))? {
        Reply::Revoked {
            seq,
            sessions_closed,
        } => (seq, sessions_closed),
        other => return Err(unexpected(other)),
    };
    admin.print(
        &serde_json::json!({ "seq": seq, "sessions_closed": closed }),
        || {
            println!(
                "revoked certificate {serial}: new connections with it are refused; \
                 closed {closed} live session(s)"
            )
        },
    )
}

/// Unix seconds as `2026-01-01T00:00:00Z`.
pub fn rfc3339(secs: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Where the printed example connects: an address and the database to name in `--sni`.
#[derive(Debug, PartialEq, Eq)]
struct ExampleTarget {
    addr: SocketAddr,
    database: Option<String>,
}

fn default_target() -> ExampleTarget {
    ExampleTarget {
        addr: SocketAddr::from(DEV_LISTEN),
        database: Some(DEV_DATABASE.to_string()),
    }
}

/// The first TCP listener of the config, with its fixed/default database or else the first one.
fn example_target(config: &Config) -> ExampleTarget {
    let Some((mut addr, listener)) = config.tcp_listeners().next() else {
        return default_target();
    };
    // A wildcard bind is reachable on loopback from the bastion itself.
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    let database = listener
        .database
        .clone()
        .or_else(|| listener.default_database.clone())
        .or_else(|| config.seed.databases.first().map(|d| d.name.clone()));
    ExampleTarget { addr, database }
}

fn redis_cli_example(cert: &Path, key: &Path, ca: &Path, target: &ExampleTarget) -> String {
    let mut line = format!(
        "redis-cli --tls --cert {} --key {} --cacert {} -h {} -p {}",
        shell_quote(cert),
        shell_quote(key),
        shell_quote(ca),
        target.addr.ip(),
        target.addr.port()
    );
    if let Some(db) = &target.database {
        line.push_str(&format!(" --sni {db}"));
    }
    line.push_str(" PING");
    line
}

/// Quote a path for a POSIX shell when it contains anything beyond the obviously safe characters.
fn shell_quote(path: &Path) -> String {
    let s = path.display().to_string();
    let safe = !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(b, b'/' | b'.' | b'_' | b'-' | b'+' | b',' | b':' | b'@')
        });
    if safe {
        s
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_line_is_ready_to_paste() {
        let line = redis_cli_example(
            Path::new("out/alice.crt"),
            Path::new("out dir/alice.key"),
            Path::new("out/ca.crt"),
            &default_target(),
        );
        assert_eq!(
            line,
            "redis-cli --tls --cert out/alice.crt --key 'out dir/alice.key' --cacert out/ca.crt \
             -h 127.0.0.1 -p 6380 --sni local PING"
        );
    }

    #[test]
    fn shell_quote_escapes_single_quotes() {
        assert_eq!(shell_quote(Path::new("it's")), r"'it'\''s'");
    }

    #[test]
    fn example_target_follows_the_config() {
        let text = r#"
state_dir = "/tmp/x"
[[listeners.tcp]]
address = "0.0.0.0:7000"
default_database = "cache"
[[databases]]
name = "cache"
address = "127.0.0.1:6379"
auth = { mode = "none" }
"#;
        let config = match Config::parse(text, Path::new("test.toml")) {
            Ok(c) => c,
            Err(e) => panic!("sample config should parse: {e}"),
        };
        assert_eq!(
            example_target(&config),
            ExampleTarget {
                addr: "127.0.0.1:7000".parse().expect("literal address"),
                database: Some("cache".into()),
            }
        );
    }

    fn seed_user(state: &Path, user: &str) {
        use crate::store::records::{name, RoleRecord, UserRecord};
        use crate::store::Mutation;
        let mut store = Store::open(&state.join(crate::daemon::STORE_DIR)).expect("store");
        let role = RoleRecord {
            name: name("role", "r").unwrap(),
            db_users: Default::default(),
            db_names: Default::default(),
        };
        store.apply(Mutation::PutRole(role)).expect("role");
        let mut roles = heapless::Vec::new();
        roles.push(name("role", "r").unwrap()).unwrap();
        let user = UserRecord {
            name: name("user", user).unwrap(),
            roles,
            unix_user: None,
        };
        store.apply(Mutation::PutUser(user)).expect("user");
    }

    #[test]
    fn without_a_daemon_issue_records_the_serial_and_writes_the_bundle() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let args = |user: &str| CertIssueArgs {
            user: user.into(),
            ttl: std::time::Duration::from_secs(600),
            out: tmp.path().join("out"),
            state_dir: tmp.path().join("state"),
            config: None,
            socket: Some(tmp.path().join("no-daemon.sock")),
        };
        let err = issue(args("alice")).expect_err("alice is not in the store yet");
        assert!(format!("{err:#}").contains("no user 'alice'"), "{err:#}");
        assert!(!tmp.path().join("out/alice.key").exists());
        seed_user(&tmp.path().join("state"), "alice");
        issue(args("alice")).expect("issue");
        let store = Store::open(&tmp.path().join("state/store")).expect("store");
        let certs: Vec<_> = store.state().certificates().collect();
        assert_eq!(certs.len(), 1);
        assert_eq!(certs[0].user.as_str(), "alice");
        assert!(certs[0].not_after > certs[0].not_before);
        // The store's lock is held: issuing refuses instead of writing beside the holder.
        let err = issue(args("alice")).expect_err("store locked");
        assert!(format!("{err:#}").contains("locked"), "{err:#}");
        drop(store);
        for f in [
            "state/ca/ca.crt",
            "state/ca/ca.key",
            "out/alice.crt",
            "out/alice.key",
            "out/ca.crt",
        ] {
            assert!(tmp.path().join(f).is_file(), "{f} missing");
        }
        let err = issue(args(".alice")).expect_err("bad user");
        assert!(format!("{err:#}").contains(".alice"), "{err:#}");
        assert!(!tmp.path().join("out/.alice.key").exists());
    }
}
