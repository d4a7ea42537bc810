//! Audit events reach journald with `BASTION_*` fields. No journald runs in the test sandbox,
//! so the test plays journald: in a private mount namespace (root and `unshare` required, else
//! the test prints why it skips) `/run/systemd/journal/socket` is a datagram socket the test
//! bound, and `JOURNAL_STREAM` names the daemon's stderr as systemd would. The test decodes the
//! native journal protocol and checks the fields `journalctl BASTION_EVENT=…` would match.

mod support;

use std::collections::HashMap;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::process::{closed_addr, is_root, poll};

const BASTION_BIN: &str = env!("CARGO_BIN_EXE_bastion");

#[test]
fn audit_events_carry_bastion_fields_in_the_journal() {
    let Some((dir, journal_dir, journal)) = private_journal() else {
        return;
    };
    let config = dir.path().join("bastion.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = \"{}\"\n[listeners.unix]\ndirectory = \"{}\"\nmode = \"0600\"\n[[databases]]\nname = \"cache\"\naddress = \"{}\"\nauth = {{ mode = \"none\" }}\n",
            dir.path().join("state").display(),
            dir.path().join("run").display(),
            closed_addr()
        ),
    )
    .unwrap();
    let stderr_file = dir.path().join("stderr");
    let script = r#"set -e
mount -t tmpfs none /run
mkdir -p /run/systemd/journal
mount --bind "$1" /run/systemd/journal
export JOURNAL_STREAM="$(stat -L -c %d:%i /proc/self/fd/2)"
exec "$0" serve --config "$2""#;
    let mut child = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", script])
        .arg(BASTION_BIN)
        .arg(&journal_dir)
        .arg(&config)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("RUST_LOG", "info")
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_file).unwrap())
        .spawn()
        .expect("start bastion in a mount namespace");

    let sock = dir.path().join("run/cache.sock");
    let up = poll(Duration::from_secs(30), || UnixStream::connect(&sock).ok());
    // The client sends nothing: the session is refused (handshake timeout, or root bound to
    // no bastion user) with an access.denied event.
    let denied = up.map(|_| {
        // Generous: on a loaded 2-core box the refusal can take well over the handshake timeout.
        let deadline = Instant::now() + Duration::from_secs(60);
        journal
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut buf = vec![0u8; 65536];
        while Instant::now() < deadline {
            if let Ok(n) = journal.recv(&mut buf) {
                let fields = decode(&buf[..n]);
                if fields.get("BASTION_EVENT").map(String::as_str) == Some("access.denied") {
                    return Some(fields);
                }
            }
        }
        None
    });
    let _ = child.kill();
    let _ = child.wait();
    let stderr = std::fs::read_to_string(&stderr_file).unwrap_or_default();
    let fields = denied
        .flatten()
        .unwrap_or_else(|| panic!("no access.denied event in the journal\n--- stderr\n{stderr}"));
    assert_eq!(fields["TARGET"], "audit");
    // Refused at identification, before the database is known.
    assert_eq!(fields["BASTION_DB"], "-");
    assert!(
        fields["BASTION_CLIENT_ADDR"].contains("uid=0"),
        "span field: {fields:?}"
    );
    assert!(!fields["BASTION_REASON"].is_empty(), "{fields:?}");
    assert!(fields["BASTION_CLIENT"].contains("uid=0"), "{fields:?}");
    for name in [
        "BASTION_SESSION",
        "BASTION_USER",
        "BASTION_DB_USER",
        "BASTION_LISTENER",
        "MESSAGE",
        "PRIORITY",
    ] {
        assert!(fields.contains_key(name), "{name} missing: {fields:?}");
    }
    // Journal mode: nothing is duplicated as text on stderr.
    assert!(!stderr.contains("access denied"), "{stderr}");
}

/// `bastion iam-token` (root-only, out of the console) audits every token it prints, to the
/// journal even from a terminal (its stderr is not the journal), with who ran it — never the
/// token itself.
#[test]
fn iam_token_is_audited_to_the_journal_without_the_token() {
    let Some((_dir, journal_dir, journal)) = private_journal() else {
        return;
    };
    journal
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let script = r#"set -e
mount -t tmpfs none /run
mkdir -p /run/systemd/journal
mount --bind "$1" /run/systemd/journal
shift
exec "$@""#;
    let secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    let out = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
        ])
        .arg(&journal_dir)
        .arg(BASTION_BIN)
        .args([
            "iam-token",
            "--service",
            "elasticache",
            "--region",
            "us-east-1",
        ])
        .args(["--target", "my-rg", "--user", "app-7"])
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE")
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .output()
        .expect("run bastion iam-token");
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("X-Amz-Signature="), "the token: {stdout}");
    // The journald layer probes the socket with an empty datagram first.
    let mut buf = vec![0u8; 65536];
    let fields = loop {
        let n = journal
            .recv(&mut buf)
            .expect("an audit entry in the journal");
        if n > 0 {
            break decode(&buf[..n]);
        }
    };
    let field = |k: &str| fields.get(k).map(String::as_str);
    assert_eq!(
        field("BASTION_EVENT"),
        Some("iam_token.issued"),
        "{fields:?}"
    );
    assert_eq!(field("BASTION_UID"), Some("0"), "{fields:?}");
    assert_eq!(field("BASTION_CALLER"), Some("root"), "{fields:?}");
    assert_eq!(field("BASTION_DB_USER"), Some("app-7"), "{fields:?}");
    assert_eq!(field("BASTION_TARGET_NAME"), Some("my-rg"), "{fields:?}");
    assert_eq!(field("BASTION_SERVICE"), Some("elasticache"), "{fields:?}");
    assert_eq!(field("TARGET"), Some("audit"), "{fields:?}");
    // The same line on stderr; the token and the secret key nowhere but stdout.
    assert!(stderr.contains("iam_token.issued"), "{stderr}");
    let signature = stdout.split("X-Amz-Signature=").nth(1).unwrap_or("-");
    for v in fields.values().map(String::as_str).chain([stderr.as_str()]) {
        assert!(!v.contains(signature) && !v.contains(secret), "{v}");
    }
}

/// A directory holding the socket the test plays journald on (bound), to be bind-mounted on
/// `/run/systemd/journal` in a private mount namespace; `None` (with a SKIP line) without root
/// or unshare(1).
fn private_journal() -> Option<(tempfile::TempDir, std::path::PathBuf, UnixDatagram)> {
    if !is_root() || Command::new("unshare").arg("--version").output().is_err() {
        println!("SKIP: needs root and unshare(1) for a private /run/systemd/journal");
        return None;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let journal_dir = dir.path().join("journal");
    std::fs::create_dir(&journal_dir).unwrap();
    let journal = UnixDatagram::bind(journal_dir.join("socket")).expect("bind journal socket");
    Some((dir, journal_dir, journal))
}

/// The native journal protocol: `NAME=value\n`, or `NAME\n<u64 LE length><value>\n`.
fn decode(mut buf: &[u8]) -> HashMap<String, String> {
    let mut fields = HashMap::new();
    while !buf.is_empty() {
        let end = buf
            .iter()
            .position(|&b| b == b'\n' || b == b'=')
            .expect("field name");
        let name = String::from_utf8_lossy(&buf[..end]).into_owned();
        if buf[end] == b'=' {
            let rest = &buf[end + 1..];
            let nl = rest.iter().position(|&b| b == b'\n').expect("newline");
            fields.insert(name, String::from_utf8_lossy(&rest[..nl]).into_owned());
            buf = &rest[nl + 1..];
        } else {
            let rest = &buf[end + 1..];
            let len = u64::from_le_bytes(rest[..8].try_into().unwrap()) as usize;
            let value = &rest[8..8 + len];
            fields.insert(name, String::from_utf8_lossy(value).into_owned());
            buf = &rest[8 + len + 1..];
        }
    }
    fields
}
