//! `bastion cert issue USER --ttl 8h --out DIR`: issue a client certificate from the on-box CA
//! (`<state_dir>/ca`, created on first use) and write the bundle stock Redis clients take as is.
//!
//! Prints paths, serial and expiry — never the key.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context;

use super::CertIssueArgs;
use crate::config::Config;
use crate::identity::ca::OnBoxCa;

/// Where `redis-cli` connects in the printed example when no config says otherwise
/// (the `serve --dev` defaults).
const DEV_LISTEN: ([u8; 4], u16) = ([127, 0, 0, 1], 6380);
const DEV_DATABASE: &str = "local";

pub fn issue(args: CertIssueArgs) -> anyhow::Result<()> {
    let (state_dir, example) = match &args.config {
        Some(path) => {
            let config = Config::load(path)?;
            let example = example_target(&config);
            (config.state_dir, example)
        }
        None => (args.state_dir.clone(), default_target()),
    };
    let ca_dir = state_dir.join("ca");
    let ca = OnBoxCa::load_or_create(&ca_dir)
        .with_context(|| format!("on-box CA in {}", ca_dir.display()))?;
    let issued = ca.issue_client(&args.user, args.ttl)?;
    let [cert, key, ca_cert] = ca.write_bundle(&args.user, &issued, &args.out)?;

    let expires = humantime::format_rfc3339_seconds(issued.not_after);
    println!(
        "issued a client certificate for '{}' from {}",
        args.user,
        ca.subject()
    );
    println!("  certificate  {}", cert.display());
    println!(
        "  private key  {}  (mode 0600; keep it secret)",
        key.display()
    );
    println!("  CA           {}", ca_cert.display());
    println!("  serial       {}", issued.serial);
    println!(
        "  expires      {expires}  (in {})",
        humantime::format_duration(args.ttl)
    );
    println!();
    println!("connect with:");
    println!("  {}", redis_cli_example(&cert, &key, &ca_cert, &example));
    Ok(())
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
    let Some(listener) = config.listeners.tcp.first() else {
        return default_target();
    };
    let mut addr = listener.address;
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
        .or_else(|| config.databases.first().map(|d| d.name.clone()));
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

    #[test]
    fn issue_creates_the_ca_and_writes_the_bundle() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let args = |user: &str| CertIssueArgs {
            user: user.into(),
            ttl: std::time::Duration::from_secs(600),
            out: tmp.path().join("out"),
            state_dir: tmp.path().join("state"),
            config: None,
        };
        issue(args("alice")).expect("issue");
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
