//! The IMDSv2 PUT hop limit, for real: three network namespaces, client → router → imds,
//! joined by two veth pairs, with `ip_forward=1` in the router. The emulator in `imds` sends
//! its token PUT replies with `IP_TTL` = the hop limit; with hop limit 1 the router drops them
//! (TTL exceeded) while GET replies get through — exactly what a bastion in a container sees
//! on EC2. Addresses exist only inside the namespaces this test makes (10.200.1.0/30 and
//! 10.200.2.0/30); the veth pairs are created inside them, never in the host namespace.
//!
//! Needs root and iproute2. Where namespaces cannot be made, each test prints `SKIP: <reason>`
//! and returns; it never pretends to have run.

mod support;

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bastion::aws::imds::{ImdsClient, ImdsCredentialsProvider, ImdsErrorKind, ImdsSettings};
use support::imds::{enter_netns, Behaviour, Emulator, REGION};

const CLIENT_ADDR: &str = "10.200.1.1/30";
const ROUTER_CLIENT_SIDE: &str = "10.200.1.2";
const ROUTER_IMDS_SIDE: &str = "10.200.2.1";
const IMDS_IP: &str = "10.200.2.2";

/// client → router → imds. Deleted (with their veths) on drop.
struct Topology {
    names: [String; 3],
}

impl Topology {
    fn client(&self) -> PathBuf {
        netns_path(&self.names[0])
    }
    fn imds(&self) -> PathBuf {
        netns_path(&self.names[2])
    }

    /// Build it, or say why it cannot be built here.
    fn build() -> Result<Topology, String> {
        if !nix::unistd::geteuid().is_root() {
            return Err("not root: cannot create network namespaces".into());
        }
        if Command::new("ip").arg("-V").output().is_err() {
            return Err("`ip` (iproute2) is not installed".into());
        }
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let tag = format!(
            "bh{}x{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        let names = ["c", "r", "i"].map(|role| format!("{tag}{role}"));
        let mut made = Topology {
            names: [String::new(), String::new(), String::new()],
        };
        for (i, name) in names.iter().enumerate() {
            ip(&["netns", "add", name])
                .map_err(|e| format!("cannot create network namespaces: {e}"))?;
            made.names[i] = name.clone();
        }
        let [c, r, i] = &names;
        let steps: Vec<Vec<&str>> = vec![
            vec![
                "-n", c, "link", "add", "eth0", "type", "veth", "peer", "name", "toc", "netns", r,
            ],
            vec![
                "-n", r, "link", "add", "toi", "type", "veth", "peer", "name", "eth0", "netns", i,
            ],
            vec!["-n", c, "addr", "add", CLIENT_ADDR, "dev", "eth0"],
            vec!["-n", r, "addr", "add", "10.200.1.2/30", "dev", "toc"],
            vec!["-n", r, "addr", "add", "10.200.2.1/30", "dev", "toi"],
            vec!["-n", i, "addr", "add", "10.200.2.2/30", "dev", "eth0"],
            vec!["-n", c, "link", "set", "lo", "up"],
            vec!["-n", r, "link", "set", "lo", "up"],
            vec!["-n", i, "link", "set", "lo", "up"],
            vec!["-n", c, "link", "set", "eth0", "up"],
            vec!["-n", r, "link", "set", "toc", "up"],
            vec!["-n", r, "link", "set", "toi", "up"],
            vec!["-n", i, "link", "set", "eth0", "up"],
            vec![
                "-n",
                c,
                "route",
                "add",
                "default",
                "via",
                ROUTER_CLIENT_SIDE,
            ],
            vec!["-n", i, "route", "add", "default", "via", ROUTER_IMDS_SIDE],
            vec!["netns", "exec", r, "sysctl", "-qw", "net.ipv4.ip_forward=1"],
        ];
        for step in steps {
            // Namespaces exist from here on: a failure is a real failure, not a skip.
            if let Err(e) = ip(&step) {
                panic!("setting up the namespaces: ip {}: {e}", step.join(" "));
            }
        }
        Ok(made)
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for name in self.names.iter().filter(|n| !n.is_empty()) {
            let _ = ip(&["netns", "del", name]);
        }
    }
}

fn netns_path(name: &str) -> PathBuf {
    PathBuf::from("/run/netns").join(name)
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("run ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// The topology, or `None` after printing why the test is skipped.
fn topology() -> Option<Topology> {
    match Topology::build() {
        Ok(t) => Some(t),
        Err(reason) => {
            println!("SKIP: {reason}");
            None
        }
    }
}

/// The emulator inside the `imds` namespace.
fn emulator(t: &Topology, behaviour: Behaviour) -> Emulator {
    let addr = format!("{IMDS_IP}:0").parse().expect("literal address");
    Emulator::start_in(Some(&t.imds()), addr, behaviour).expect("emulator in the imds namespace")
}

/// Run `f` on a thread inside the client namespace, with its own runtime and log capture.
fn in_client<T: Send + 'static>(
    t: &Topology,
    f: impl FnOnce(Arc<Mutex<Vec<u8>>>) -> std::pin::Pin<Box<dyn std::future::Future<Output = T>>>
        + Send
        + 'static,
) -> (T, String) {
    let ns = t.client();
    let logs = Arc::new(Mutex::new(Vec::new()));
    let thread_logs = logs.clone();
    let result = std::thread::spawn(move || {
        enter_netns(&ns).expect("enter the client namespace");
        let writer = thread_logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || LogWriter(writer.clone()))
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("client runtime")
            .block_on(f(thread_logs))
    })
    .join()
    .expect("client thread");
    let text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    (result, text)
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn settings(emulator: &Emulator, allow_v1: bool) -> ImdsSettings {
    let mut s = ImdsSettings::for_endpoint(&emulator.endpoint()).expect("endpoint");
    s.read_timeout = Duration::from_secs(1);
    s.connect_timeout = Duration::from_secs(1);
    s.allow_v1_fallback = allow_v1;
    s.failure_backoff = Duration::from_millis(300);
    s.failure_backoff_max = Duration::from_millis(300);
    s
}

#[test]
fn hop_limit_1_behind_a_router_is_diagnosed_and_heals_when_raised() {
    let Some(t) = topology() else { return };
    let emulator = emulator(
        &t,
        Behaviour {
            hop_limit: Some(1),
            ..Behaviour::default()
        },
    );
    let s = settings(&emulator, false);
    let emulator = Arc::new(emulator);
    let em = emulator.clone();
    let ((status, err, healed), _logs) = in_client(&t, move |_| {
        Box::pin(async move {
            let client = ImdsClient::new(s).unwrap();
            let status = client.probe().await;
            let provider = ImdsCredentialsProvider::new(client.clone());
            let err = provider.credentials().await.unwrap_err();
            // The operator raises the hop limit; the same client heals after its back-off.
            em.set(|b| b.hop_limit = Some(2));
            tokio::time::sleep(Duration::from_millis(350)).await;
            let healed = provider
                .credentials()
                .await
                .map(|c| c.access_key_id().to_string());
            (status, err, healed)
        })
    });
    assert_eq!(
        status.kind,
        ImdsErrorKind::HopLimitExceeded,
        "{}",
        status.message
    );
    assert_eq!(status.kind.as_str(), "hop_limit_exceeded");
    assert!(
        status.message.contains("--http-put-response-hop-limit 2")
            && status.message.contains("HttpPutResponseHopLimit"),
        "{}",
        status.message
    );
    assert_eq!(err.kind(), ImdsErrorKind::HopLimitExceeded, "{err}");
    let healed = healed.expect("credentials once the hop limit is 2");
    assert!(healed.starts_with("ASIAEMU"), "{healed}");
}

#[test]
fn hop_limit_2_behind_a_router_gets_credentials() {
    let Some(t) = topology() else { return };
    let emulator = emulator(
        &t,
        Behaviour {
            hop_limit: Some(2),
            ..Behaviour::default()
        },
    );
    let s = settings(&emulator, false);
    let ((status, creds, region), _logs) = in_client(&t, move |_| {
        Box::pin(async move {
            let client = ImdsClient::new(s).unwrap();
            let status = client.probe().await;
            let creds = ImdsCredentialsProvider::new(client.clone())
                .credentials()
                .await
                .map(|c| c.access_key_id().to_string());
            (status, creds, client.region().await)
        })
    });
    assert_eq!(status.kind, ImdsErrorKind::Ok, "{}", status.message);
    assert!(creds.expect("credentials").starts_with("ASIAEMU"));
    assert_eq!(region.expect("region"), REGION);
}

#[test]
fn hop_limit_1_with_v1_fallback_allowed_gets_credentials_with_a_warning() {
    let Some(t) = topology() else { return };
    let emulator = emulator(
        &t,
        Behaviour {
            hop_limit: Some(1),
            allow_v1: true,
            ..Behaviour::default()
        },
    );
    let s = settings(&emulator, true);
    let (creds, logs) = in_client(&t, move |_| {
        Box::pin(async move {
            let client = ImdsClient::new(s).unwrap();
            ImdsCredentialsProvider::new(client)
                .credentials()
                .await
                .map(|c| c.access_key_id().to_string())
        })
    });
    assert!(creds
        .expect("credentials over IMDSv1")
        .starts_with("ASIAEMU"));
    assert!(logs.contains("WARN"), "{logs}");
    assert!(logs.contains("token-less IMDSv1 GET"), "{logs}");
    assert!(logs.contains("v1_only"), "{logs}");
    assert!(
        !logs.contains(support::imds::SECRET_ACCESS_KEY),
        "no secret in the logs"
    );
}

/// `bastion doctor --json` run inside the client namespace (`ip netns exec`), IMDS pointed at
/// the emulator behind the router. Returns the `imds` check of the JSON report.
fn doctor_imds_check(t: &Topology, emulator: &Emulator) -> serde_json::Value {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("bastion.toml");
    std::fs::write(
        &config,
        format!(
            r#"
state_dir = "{state}"
[listeners.unix]
directory = "{sock}"
[aws.imds]
endpoint = "{endpoint}"
connect_timeout = "1s"
read_timeout = "1s"
"#,
            state = dir.path().join("state").display(),
            sock = dir.path().join("sock").display(),
            endpoint = emulator.endpoint(),
        ),
    )
    .expect("write config");
    let out = Command::new("ip")
        .args(["netns", "exec", &t.names[0]])
        .arg(env!("CARGO_BIN_EXE_bastion"))
        .args(["doctor", "--json", "--config"])
        .arg(&config)
        .env_remove("AWS_EC2_METADATA_DISABLED")
        .env_remove("AWS_EC2_METADATA_SERVICE_ENDPOINT")
        .env_remove("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE")
        .output()
        .expect("run bastion doctor in the client namespace");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "doctor printed no JSON ({e}):\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    report["checks"]
        .as_array()
        .and_then(|checks| checks.iter().find(|c| c["name"] == "imds"))
        .cloned()
        .unwrap_or_else(|| panic!("no imds check in {report:#}"))
}

#[test]
fn doctor_reports_hop_limit_exceeded_behind_a_router_and_ok_at_2() {
    let Some(t) = topology() else { return };
    let emulator = emulator(
        &t,
        Behaviour {
            hop_limit: Some(1),
            ..Behaviour::default()
        },
    );
    let imds = doctor_imds_check(&t, &emulator);
    assert_eq!(imds["kind"], "hop_limit_exceeded", "{imds:#}");
    let text = imds.to_string();
    assert!(text.contains("--http-put-response-hop-limit 2"), "{imds:#}");

    emulator.set(|b| b.hop_limit = Some(2));
    let imds = doctor_imds_check(&t, &emulator);
    assert_eq!(imds["kind"], "ok", "{imds:#}");
    assert_eq!(imds["status"], "ok", "{imds:#}");
}
