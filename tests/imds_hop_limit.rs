//! The IMDSv2 PUT hop limit, for real: three network namespaces, client → router → imds,
//! joined by two veth pairs, with `ip_forward=1` in the router (`support::netns::Routed`). The emulator in `imds` sends
//! its token PUT replies with `IP_TTL` = the hop limit; with hop limit 1 the router drops them
//! (TTL exceeded) while GET replies get through — exactly what a bastion in a container sees
//! on EC2. Addresses exist only inside the namespaces this test makes (10.200.1.0/30 and
//! 10.200.2.0/30); the veth pairs are created inside them, never in the host namespace.
//!
//! Needs root and iproute2. Where namespaces cannot be made, each test prints `SKIP: <reason>`
//! and returns; it never pretends to have run.

mod support;

use std::sync::Arc;
use std::time::Duration;

use bastion::aws::imds::{ImdsClient, ImdsCredentialsProvider, ImdsErrorKind, ImdsSettings};
use support::imds::{Behaviour, Emulator, REGION};
use support::logs::Logs;
use support::netns::{on_thread_in, or_skip, Routed};

/// The topology, and the emulator inside its `imds` namespace with the given hop limit (and
/// IMDSv1 allowed or not); `None` after printing why the test is skipped.
fn behind_router(hop_limit: u32, allow_v1: bool) -> Option<(Routed, Emulator)> {
    let t = or_skip(Routed::build())?;
    let addr = format!("{}:0", Routed::IMDS_IP)
        .parse()
        .expect("literal address");
    let behaviour = Behaviour {
        hop_limit: Some(hop_limit),
        allow_v1,
        ..Behaviour::default()
    };
    let emulator = Emulator::start_in(Some(&t.imds.path()), addr, behaviour)
        .expect("emulator in the imds namespace");
    Some((t, emulator))
}

/// Run `f` on a thread inside the client namespace, with its own runtime; its result and what
/// the library logged meanwhile.
fn in_client<T: Send + 'static>(
    t: &Routed,
    f: impl FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = T>>> + Send + 'static,
) -> (T, String) {
    on_thread_in(&t.client.path(), move || {
        let (logs, _guard) = Logs::capture(tracing::Level::INFO);
        let result = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("client runtime")
            .block_on(f());
        (result, logs.text())
    })
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
    let Some((t, emulator)) = behind_router(1, false) else {
        return;
    };
    let s = settings(&emulator, false);
    let emulator = Arc::new(emulator);
    let em = emulator.clone();
    let ((status, err, healed), _logs) = in_client(&t, move || {
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
    let Some((t, emulator)) = behind_router(2, false) else {
        return;
    };
    let s = settings(&emulator, false);
    let ((status, creds, region), _logs) = in_client(&t, move || {
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
    let Some((t, emulator)) = behind_router(1, true) else {
        return;
    };
    let s = settings(&emulator, true);
    let (creds, logs) = in_client(&t, move || {
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
fn doctor_imds_check(t: &Routed, emulator: &Emulator) -> serde_json::Value {
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
    let out = t
        .client
        .exec(env!("CARGO_BIN_EXE_bastion"))
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
    let Some((t, emulator)) = behind_router(1, false) else {
        return;
    };
    let imds = doctor_imds_check(&t, &emulator);
    assert_eq!(imds["kind"], "hop_limit_exceeded", "{imds:#}");
    let text = imds.to_string();
    assert!(text.contains("--http-put-response-hop-limit 2"), "{imds:#}");

    emulator.set(|b| b.hop_limit = Some(2));
    let imds = doctor_imds_check(&t, &emulator);
    assert_eq!(imds["kind"], "ok", "{imds:#}");
    assert_eq!(imds["status"], "ok", "{imds:#}");
}
