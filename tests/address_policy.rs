//! The upstream address policy, tried as an attacker would: a database pointed at the instance
//! metadata service or the container-credential endpoints — by IP in any spelling, or by a DNS
//! name that resolves there — or at the bastion's own listener, is refused where it is declared
//! or at connect, and not one byte reaches the target.
//!
//! The metadata addresses live on the loopback of a network namespace this test makes, with a
//! sink that records every connection and byte; the bastion runs inside that namespace with
//! `ip netns exec`, which also gives it `/etc/netns/<ns>/hosts` as its resolver's hosts file.

mod support;

use support::process::rt;

use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::admin::Admin;
use support::bastion::Bastion;
use support::clients::Endpoint;
use support::netns::{on_thread_in, or_skip, Netns};
use support::raw::{show, Raw};
use support::stack::current_user;

/// Every metadata spelling is refused by `db add`, naming the key and the endpoint.
#[test]
fn credential_endpoints_are_refused_where_they_are_declared() {
    let a = Admin::start();
    for address in [
        "169.254.169.254:80",
        "169.254.170.2:80",
        "169.254.170.23:80",
        "[fd00:ec2::254]:80",
        "[fd00:ec2::23]:80",
        "[::ffff:169.254.169.254]:80",
        "[64:ff9b::a9fe:a9fe]:80",
    ] {
        let out = a.cli(&["db", "add", "imds", "--address", address, "--auth", "none"]);
        assert!(
            !out.status.success(),
            "db add {address} was accepted: {out}"
        );
        let err = out.stderr();
        assert!(
            err.contains("address") && err.contains("may never point there"),
            "{address}: {err}"
        );
    }
    // Even with an allow-list that covers everything link-local.
    let out = a.cli(&[
        "db",
        "add",
        "imds",
        "--address",
        "169.254.169.254:80",
        "--auth",
        "none",
        "--allow-addresses",
        "169.254.0.0/16",
    ]);
    assert!(!out.status.success(), "{out}");
    // Other link-local addresses only with an explicit range.
    let out = a.cli(&[
        "db",
        "add",
        "ll",
        "--address",
        "169.254.10.1:6379",
        "--auth",
        "none",
    ]);
    assert!(
        !out.status.success() && out.stderr().contains("link-local"),
        "{out}"
    );
    a.ok(&[
        "db",
        "add",
        "ll",
        "--address",
        "169.254.10.1:6379",
        "--auth",
        "none",
        "--allow-addresses",
        "169.254.10.0/24",
    ]);
    assert!(a.ok(&["db", "ls"]).contains("ll"));
}

/// The boot config is checked by the same rule (the daemon refuses to start, naming the key).
#[test]
fn a_boot_config_pointing_at_metadata_does_not_start() {
    let state = tempfile::tempdir().unwrap();
    let config = format!(
        "state_dir = {:?}\n[[listeners.tcp]]\naddress = \"127.0.0.1:0\"\n[[databases]]\nname = \"imds\"\naddress = \"[fd00:ec2::254]:80\"\nauth = {{ mode = \"none\" }}\n",
        state.path().display().to_string()
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bastion.toml");
    std::fs::write(&path, config).unwrap();
    let out = std::process::Command::new(support::bastion::BASTION_BIN)
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started: {err}");
    assert!(
        err.contains("databases[0].address") && err.contains("instance metadata"),
        "{err}"
    );
}

/// Connections and bytes a sink received.
#[derive(Default)]
struct Seen {
    connections: usize,
    bytes: Vec<u8>,
}

/// Listen on `addrs` inside `ns` and record everything that arrives.
fn sink(ns: &Netns, addrs: Vec<SocketAddr>) -> Arc<Mutex<Seen>> {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let listeners: Vec<TcpListener> = on_thread_in(&ns.path(), move || {
        addrs
            .iter()
            .map(|a| TcpListener::bind(a).unwrap_or_else(|e| panic!("sink on {a}: {e}")))
            .collect()
    });
    for l in listeners {
        let seen = seen.clone();
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(mut conn) = conn else { return };
                seen.lock().unwrap().connections += 1;
                let seen = seen.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = conn.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        seen.lock().unwrap().bytes.extend_from_slice(&buf[..n]);
                    }
                });
            }
        });
    }
    seen
}

/// `/etc/netns/<ns>/hosts`, removed on drop.
struct HostsFile(std::path::PathBuf);

impl HostsFile {
    fn new(ns: &Netns, text: &str) -> HostsFile {
        let dir = std::path::Path::new("/etc/netns").join(ns.name());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("hosts"), text).unwrap();
        HostsFile(dir)
    }
}

impl Drop for HostsFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Names that resolve to the metadata service, and the bastion's own listener given as an
/// upstream: the session is refused at connect and the sink sees nothing.
#[test]
fn names_resolving_to_metadata_and_loops_to_ourselves_are_refused_at_connect() {
    let Some(ns) = or_skip(Netns::new("ssrf")) else {
        return;
    };
    ns.ip(&["link", "set", "lo", "up"]);
    ns.ip(&["addr", "add", "169.254.169.254/32", "dev", "lo"]);
    ns.ip(&["addr", "add", "169.254.170.2/32", "dev", "lo"]);
    ns.ip(&["addr", "add", "fd00:ec2::254/128", "dev", "lo", "nodad"]);
    let seen = sink(
        &ns,
        vec![
            "169.254.169.254:80".parse().unwrap(),
            "169.254.170.2:80".parse().unwrap(),
            "[fd00:ec2::254]:80".parse().unwrap(),
        ],
    );
    let _hosts = HostsFile::new(
        &ns,
        "127.0.0.1 localhost\n\
         169.254.169.254 imds.bastion.test\n\
         fd00:ec2::254 imds6.bastion.test\n\
         169.254.170.2 ecs.bastion.test\n\
         10.9.9.9 mixed.bastion.test\n\
         169.254.169.254 mixed.bastion.test\n",
    );
    // Sanity: from inside the namespace, the sink is reachable (so silence below means
    // refused, not unreachable).
    on_thread_in(&ns.path(), || {
        std::net::TcpStream::connect("169.254.169.254:80").expect("sink reachable");
    });
    std::thread::sleep(Duration::from_millis(100));
    seen.lock().unwrap().connections = 0;

    let state = tempfile::tempdir().unwrap();
    let sockets = tempfile::Builder::new().tempdir_in("/tmp").unwrap();
    let me = current_user();
    let mut config = format!(
        "state_dir = {state:?}\n\n[[listeners.tcp]]\naddress = \"127.0.0.1:0\"\n\n\
         [listeners.unix]\ndirectory = {sockets:?}\n\n\
         [[roles]]\nname = \"all\"\ndb_users = [\"*\"]\ndb_names = [\"*\"]\n\n\
         [[users]]\nname = \"alice\"\nroles = [\"all\"]\nunix_user = {me:?}\n",
        state = state.path().display().to_string(),
        sockets = sockets.path().display().to_string(),
    );
    for (name, address) in [
        ("imds", "imds.bastion.test:80"),
        ("imds6", "imds6.bastion.test:80"),
        ("ecs", "ecs.bastion.test:80"),
        ("mixed", "mixed.bastion.test:80"),
    ] {
        config.push_str(&format!(
            "\n[[databases]]\nname = \"{name}\"\naddress = \"{address}\"\nauth = {{ mode = \"none\" }}\ndefault_db_user = \"x\"\n"
        ));
    }
    let bastion = Bastion::start_wrapped(
        &config,
        state.path(),
        &[],
        &["ip", "netns", "exec", ns.name()],
    );
    let rt = rt();
    for db in ["imds", "imds6", "ecs", "mixed"] {
        let mark = bastion.log_mark();
        let reply = rt.block_on(async {
            let mut c = Raw::connect(&Endpoint::unix(bastion.socket_path(db)))
                .await
                .expect("connect");
            // What an attacker would send to IMDS: an inline command to the bastion.
            let _ = c.send(b"PUT /latest/api/token HTTP/1.1\r\n").await;
            c.read_frame().await
        });
        let reply = reply.unwrap_or_else(|e| panic!("{db}: no refusal: {e}"));
        assert!(
            reply.starts_with(b"-ERR bastion:"),
            "{db}: {}",
            show(&reply)
        );
        let line = bastion.expect_denied(mark, &["address policy"]);
        assert!(line.contains(db), "{line}");
    }

    // The bastion's own TLS listener as an upstream, through the admin socket.
    let own = bastion.tls_addr(0);
    let admin_sock = state.path().join("run/admin.sock");
    let out = support::admin::cli(
        &admin_sock,
        &[
            "db",
            "add",
            "loop",
            "--address",
            &own.to_string(),
            "--auth",
            "none",
            "--default-db-user",
            "x",
        ],
    );
    out.assert_success();
    let mark = bastion.log_mark();
    let reply = rt.block_on(async {
        let mut c = Raw::connect(&Endpoint::unix(bastion.socket_path("loop")))
            .await
            .expect("connect");
        c.request_str(&["PING"]).await
    });
    let reply = reply.expect("a refusal");
    assert!(reply.starts_with(b"-ERR bastion:"), "{}", show(&reply));
    // The log is read from the daemon's stderr by another thread: wait for the line.
    bastion.expect_denied(mark, &["own listeners"]);

    std::thread::sleep(Duration::from_millis(200));
    let seen = seen.lock().unwrap();
    assert_eq!(
        (seen.connections, seen.bytes.len()),
        (0, 0),
        "the metadata sink was reached: {}",
        String::from_utf8_lossy(&seen.bytes)
    );
}
