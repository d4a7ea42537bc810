//! The IMDSv2 client and the instance-profile credentials provider against the emulator
//! (tests/support/imds.rs) on loopback. The real hop limit, across a router between network
//! namespaces, is in tests/imds_hop_limit.rs.
//!
//! Read timeouts are 1 s: hang guards, not speed assertions.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_credential_types::provider::ProvideCredentials;
use bastion::aws::credentials::CredentialChain;
use bastion::aws::imds::{ImdsClient, ImdsCredentialsProvider, ImdsErrorKind, ImdsSettings};
use bastion::config::ImdsConfig;
use hyper::Method;
use support::imds::{
    Behaviour, Emulator, CREDENTIALS_PATH, INSTANCE_ID, REGION, ROLE, ROLE_PATH, SECRET_ACCESS_KEY,
    SESSION_TOKEN, TOKEN_PATH,
};
use support::logs::Logs;

/// Settings for `emulator` with short back-offs so tests don't sleep long.
fn settings(emulator: &Emulator) -> ImdsSettings {
    let mut s = ImdsSettings::for_endpoint(&emulator.endpoint()).expect("loopback endpoint");
    s.retry_backoff = Duration::from_millis(10);
    s.failure_backoff = Duration::from_millis(300);
    s.failure_backoff_max = Duration::from_millis(300);
    s
}

fn client(emulator: &Emulator) -> ImdsClient {
    ImdsClient::new(settings(emulator)).expect("client")
}

/// Nothing secret in `text`: no credential, no session token, no IMDS token.
fn assert_no_secrets(text: &str, emulator: &Emulator) {
    assert!(
        !text.contains(SECRET_ACCESS_KEY),
        "secret key leaked: {text}"
    );
    assert!(
        !text.contains(SESSION_TOKEN),
        "session token leaked: {text}"
    );
    assert!(!text.contains("emu-token-"), "IMDS token leaked: {text}");
    for r in emulator.requests() {
        if let Some(token) = r.header("x-aws-ec2-metadata-token") {
            assert!(!text.contains(token), "IMDS token leaked: {text}");
        }
    }
}

#[tokio::test]
async fn token_is_cached_sent_on_every_get_and_refreshed_on_401() {
    let emulator = Emulator::start(Behaviour::default());
    let client = client(&emulator);
    assert_eq!(client.region().await.unwrap(), REGION);
    assert_eq!(client.instance_id().await.unwrap(), INSTANCE_ID);
    assert_eq!(
        emulator.count(&Method::PUT, TOKEN_PATH),
        1,
        "one token, cached"
    );

    emulator.expire_tokens();
    assert_eq!(
        client.region().await.unwrap(),
        REGION,
        "a 401 gets a new token"
    );
    assert_eq!(emulator.count(&Method::PUT, TOKEN_PATH), 2);

    let requests = emulator.requests();
    for r in &requests {
        assert!(
            r.header("x-forwarded-for").is_none(),
            "X-Forwarded-For sent: {r:?}"
        );
        if r.method == Method::PUT {
            assert_eq!(
                r.header("x-aws-ec2-metadata-token-ttl-seconds"),
                Some("21600")
            );
        } else {
            assert!(r.header("x-aws-ec2-metadata-token").is_some(), "{r:?}");
        }
    }
    let statuses: Vec<u16> = requests.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 200, 200, 401, 200, 200]);
}

#[tokio::test]
async fn token_is_refreshed_before_it_expires() {
    let emulator = Emulator::start(Behaviour::default());
    let mut s = settings(&emulator);
    // A 2 s token is refreshed at half its life (the 120 s margin is more than that).
    s.token_ttl = Duration::from_secs(2);
    let client = ImdsClient::new(s).unwrap();
    client.region().await.unwrap();
    client.region().await.unwrap();
    assert_eq!(emulator.count(&Method::PUT, TOKEN_PATH), 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    client.region().await.unwrap();
    assert_eq!(
        emulator.count(&Method::PUT, TOKEN_PATH),
        2,
        "refreshed early"
    );
    assert!(
        emulator.requests().iter().all(|r| r.status == 200),
        "no request was refused for an expired token"
    );
}

#[tokio::test]
async fn disabled_and_no_role_say_what_is_wrong() {
    let emulator = Emulator::start(Behaviour {
        disabled: true,
        ..Behaviour::default()
    });
    let e = client(&emulator).region().await.unwrap_err();
    assert_eq!(e.kind(), ImdsErrorKind::Disabled);
    assert!(
        e.to_string()
            .contains("IMDS is disabled or blocked for this instance"),
        "{e}"
    );
    assert!(e.to_string().contains(&emulator.endpoint()), "{e}");

    emulator.set(|b| {
        b.disabled = false;
        b.no_role = true;
    });
    let provider = ImdsCredentialsProvider::new(client(&emulator));
    let e = provider.credentials().await.unwrap_err();
    assert_eq!(e.kind(), ImdsErrorKind::NoRole);
    assert!(
        e.to_string()
            .contains("no IAM role (instance profile) is attached"),
        "{e}"
    );
    assert!(e.to_string().contains(ROLE_PATH), "{e}");
    let status = client(&emulator).probe().await;
    assert_eq!(status.kind.as_str(), "no_role", "{}", status.message);
}

#[tokio::test]
async fn environment_turns_imds_off_and_overrides_the_endpoint() {
    let emulator = Emulator::start(Behaviour::default());
    let endpoint = emulator.endpoint();
    let env: HashMap<&str, &str> = [
        ("AWS_EC2_METADATA_SERVICE_ENDPOINT", endpoint.as_str()),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ]
    .into();
    let off = ImdsClient::from_config(&ImdsConfig::default(), &env).unwrap();
    let e = off.region().await.unwrap_err();
    assert_eq!(e.kind(), ImdsErrorKind::Disabled);
    assert!(e.to_string().contains("AWS_EC2_METADATA_DISABLED"), "{e}");
    assert_eq!(off.probe().await.kind, ImdsErrorKind::Disabled);
    assert!(emulator.requests().is_empty(), "nothing was sent");

    let env: HashMap<&str, &str> =
        [("AWS_EC2_METADATA_SERVICE_ENDPOINT", endpoint.as_str())].into();
    let on = ImdsClient::from_config(&ImdsConfig::default(), &env).unwrap();
    assert_eq!(on.endpoint(), endpoint);
    assert_eq!(on.region().await.unwrap(), REGION);
}

#[tokio::test]
async fn server_errors_and_throttling_are_retried_a_bounded_number_of_times() {
    let emulator = Emulator::start(Behaviour::default());
    emulator.set(|b| b.fail_next = [500, 429, 503].into());
    let client = client(&emulator);
    assert_eq!(
        client.region().await.unwrap(),
        REGION,
        "recovers within the retries"
    );

    emulator.set(|b| b.fail_next = std::iter::repeat_n(500, 20).collect());
    let before = emulator.requests().len();
    let e = client.instance_id().await.unwrap_err();
    let sent = emulator.requests().len() - before;
    assert_eq!(sent, 4, "one attempt and three retries");
    assert!(
        e.to_string().contains("500") && e.to_string().contains("after 4 attempts"),
        "{e}"
    );
}

#[tokio::test]
async fn unreachable_endpoint_is_reported_as_unreachable() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client =
        ImdsClient::new(ImdsSettings::for_endpoint(&format!("http://127.0.0.1:{port}")).unwrap())
            .unwrap();
    let e = client.region().await.unwrap_err();
    assert_eq!(e.kind(), ImdsErrorKind::Unreachable, "{e}");
    assert_eq!(client.probe().await.kind.as_str(), "unreachable");
}

#[tokio::test]
async fn an_unanswered_put_with_a_401_get_is_the_hop_limit_and_heals_after_the_back_off() {
    let emulator = Emulator::start(Behaviour {
        put_black_hole: true,
        ..Behaviour::default()
    });
    let client = client(&emulator);
    let e = client.region().await.unwrap_err();
    assert_eq!(e.kind(), ImdsErrorKind::HopLimitExceeded, "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("--http-put-response-hop-limit 2")
            && msg.contains("modify-instance-metadata-options")
            && msg.contains("describe-instances")
            && msg.contains("HttpPutResponseHopLimit"),
        "the message gives the fix and the check: {msg}"
    );

    // Within the back-off, callers get the remembered verdict without another PUT.
    let puts = emulator.count(&Method::PUT, TOKEN_PATH);
    let started = std::time::Instant::now();
    let again = client.instance_id().await.unwrap_err();
    assert_eq!(again.kind(), ImdsErrorKind::HopLimitExceeded);
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "no second timeout"
    );
    assert_eq!(emulator.count(&Method::PUT, TOKEN_PATH), puts);

    // The hop limit is fixed: after the back-off the v2 path is tried again and works.
    emulator.set(|b| b.put_black_hole = false);
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(client.region().await.unwrap(), REGION);
    assert_eq!(client.probe().await.kind, ImdsErrorKind::Ok);
}

#[tokio::test]
async fn imds_v1_is_used_only_when_allowed_and_with_a_warning_each_time() {
    let (logs, _guard) = Logs::capture(tracing::Level::DEBUG);
    let emulator = Emulator::start(Behaviour {
        put_black_hole: true,
        allow_v1: true,
        ..Behaviour::default()
    });
    let strict = client(&emulator);
    let e = strict.region().await.unwrap_err();
    assert_eq!(e.kind(), ImdsErrorKind::V1Only, "{e}");
    assert!(e.to_string().contains("IMDSv1 is enabled"), "{e}");
    assert!(e.to_string().contains("allow_v1_fallback"), "{e}");
    let status = strict.probe().await;
    assert_eq!(status.kind.as_str(), "v1_only", "{}", status.message);

    let mut s = settings(&emulator);
    s.allow_v1_fallback = true;
    let lenient = ImdsClient::new(s).unwrap();
    let before = emulator.requests().len();
    let provider = ImdsCredentialsProvider::new(lenient.clone());
    let creds = provider
        .credentials()
        .await
        .expect("credentials over IMDSv1");
    assert!(creds.access_key_id().starts_with("ASIAEMU"));
    assert_eq!(lenient.region().await.unwrap(), REGION);
    let gets: Vec<_> = emulator.requests()[before..]
        .iter()
        .filter(|r| r.method == Method::GET && r.status == 200)
        .cloned()
        .collect();
    assert!(gets.len() >= 3, "{gets:?}");
    assert!(gets
        .iter()
        .all(|r| r.header("x-aws-ec2-metadata-token").is_none()));
    let text = logs.text();
    let warnings = text.matches("using a token-less IMDSv1 GET").count();
    assert!(warnings >= 3, "one warning per v1 GET: {text}");
    assert_no_secrets(&text, &emulator);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn credentials_are_refreshed_ahead_of_expiry_by_one_fetch_for_100_callers() {
    let expiration = SystemTime::now() + Duration::from_secs(3600);
    let emulator = Emulator::start(Behaviour {
        expiration,
        credentials_delay: Duration::from_millis(200),
        ..Behaviour::default()
    });
    let now = Arc::new(Mutex::new(SystemTime::now()));
    let clock = now.clone();
    let provider =
        ImdsCredentialsProvider::new(client(&emulator)).with_clock(move || *clock.lock().unwrap());

    let first = provider.credentials().await.unwrap();
    assert_eq!(first.expiry(), Some(expiration_secs(expiration)));
    provider.credentials().await.unwrap();
    assert_eq!(emulator.count(&Method::GET, CREDENTIALS_PATH), 1, "cached");

    // Four minutes before expiry: inside the five-minute refresh window.
    *now.lock().unwrap() = expiration - Duration::from_secs(4 * 60);
    let mut callers = Vec::new();
    for _ in 0..100 {
        let provider = provider.clone();
        callers.push(tokio::spawn(async move { provider.credentials().await }));
    }
    let mut keys = std::collections::BTreeSet::new();
    for c in callers {
        keys.insert(c.await.unwrap().unwrap().access_key_id().to_string());
    }
    assert_eq!(
        emulator.count(&Method::GET, CREDENTIALS_PATH),
        2,
        "one shared fetch"
    );
    assert_eq!(keys.len(), 1, "every caller got the refreshed credentials");
    assert_ne!(
        keys.first().map(String::as_str),
        Some(first.access_key_id())
    );
    assert_eq!(
        emulator.count(&Method::PUT, TOKEN_PATH),
        1,
        "the token was reused"
    );
}

/// IMDS' Expiration has whole seconds.
fn expiration_secs(t: SystemTime) -> SystemTime {
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

#[tokio::test]
async fn expired_credentials_are_extended_while_imds_is_down() {
    let (logs, _guard) = Logs::capture(tracing::Level::DEBUG);
    let expiration = SystemTime::now() + Duration::from_secs(600);
    let mut emulator = Emulator::start(Behaviour {
        expiration,
        ..Behaviour::default()
    });
    let now = Arc::new(Mutex::new(SystemTime::now()));
    let clock = now.clone();
    let provider =
        ImdsCredentialsProvider::new(client(&emulator)).with_clock(move || *clock.lock().unwrap());
    let original = provider.credentials().await.unwrap();

    emulator.stop();
    // Inside the refresh window, not yet expired: kept as they are.
    *now.lock().unwrap() = expiration - Duration::from_secs(60);
    let kept = provider.credentials().await.unwrap();
    assert_eq!(kept.access_key_id(), original.access_key_id());
    assert_eq!(kept.expiry(), original.expiry());

    // Expired, IMDS still down: the same keys, extended by 5 to 15 minutes.
    let at = expiration + Duration::from_secs(120);
    *now.lock().unwrap() = at;
    let extended = provider.credentials().await.expect("static stability");
    assert_eq!(extended.access_key_id(), original.access_key_id());
    assert_eq!(extended.secret_access_key(), SECRET_ACCESS_KEY);
    let until = extended.expiry().expect("extended expiry");
    assert!(
        until >= at + Duration::from_secs(300) && until <= at + Duration::from_secs(900),
        "extended by {:?}",
        until.duration_since(at)
    );
    let text = logs.text();
    assert!(text.contains("static stability"), "{text}");
    assert!(text.contains("WARN"), "{text}");

    // Through the chain, as sessions see it.
    let chain = CredentialChain::builder()
        .link("imds", provider.clone())
        .clock({
            let now = now.clone();
            move || *now.lock().unwrap()
        })
        .build();
    let (creds, link) = chain
        .credentials()
        .await
        .expect("sessions still get credentials");
    assert_eq!(
        (creds.access_key_id(), link.as_str()),
        (original.access_key_id(), "imds")
    );

    // IMDS is back: fresh credentials again.
    emulator.restart().unwrap();
    emulator.set(|b| b.expiration = at + Duration::from_secs(3600));
    *now.lock().unwrap() = at + Duration::from_secs(30);
    let fresh = provider.credentials().await.unwrap();
    assert_ne!(fresh.access_key_id(), original.access_key_id());
    assert_no_secrets(&logs.text(), &emulator);
}

#[tokio::test]
async fn the_provider_is_a_chain_link_and_nothing_secret_is_printed() {
    let (logs, _guard) = Logs::capture(tracing::Level::DEBUG);
    let emulator = Emulator::start(Behaviour::default());
    let client = client(&emulator);
    let provider = ImdsCredentialsProvider::new(client.clone());
    let chain = CredentialChain::builder()
        .link("imds", provider.clone())
        .build();
    let (creds, link) = chain.credentials().await.unwrap();
    assert_eq!(link, "imds");
    assert_eq!(creds.session_token(), Some(SESSION_TOKEN));
    let via_trait = provider.provide_credentials().await.unwrap();
    assert_eq!(via_trait.access_key_id(), creds.access_key_id());

    let status = client.probe().await;
    assert_eq!(status.kind, ImdsErrorKind::Ok);
    assert_eq!(status.role.as_deref(), Some(ROLE));
    let printed = format!(
        "{creds:?} {provider:?} {client:?} {chain:?} {status:?} {}",
        status.message
    );
    assert_no_secrets(&printed, &emulator);
    assert_no_secrets(&logs.text(), &emulator);

    // No role: the chain says "no credentials" and gives the reason.
    emulator.set(|b| b.no_role = true);
    let e = ImdsCredentialsProvider::new(client.clone())
        .provide_credentials()
        .await
        .unwrap_err();
    assert!(matches!(
        e,
        aws_credential_types::provider::error::CredentialsError::CredentialsNotLoaded(_)
    ));
}

#[tokio::test]
async fn metadata_helpers() {
    let emulator = Emulator::start(Behaviour::default());
    let client = client(&emulator);
    assert_eq!(
        client.user_data().await.unwrap(),
        None,
        "404 is no user-data"
    );
    emulator.set(|b| b.user_data = Some(b"#cloud-config\n".to_vec()));
    assert_eq!(
        client.user_data().await.unwrap().as_deref(),
        Some(&b"#cloud-config\n"[..])
    );
    let keys = client.public_keys().await.unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].name, "bastion-admin");
    assert!(keys[0].openssh_key.starts_with("ssh-ed25519 "));
    assert_eq!(client.role_name().await.unwrap(), ROLE);
}

/// The emulator is as strict as IMDS about what the client must (not) send.
#[tokio::test]
async fn emulator_refuses_bad_token_requests() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let emulator = Emulator::start(Behaviour::default());
    let ask = |request: String| {
        let addr = emulator.addr();
        async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(request.as_bytes()).await.unwrap();
            let mut reply = vec![0; 64];
            let n = s.read(&mut reply).await.unwrap();
            String::from_utf8_lossy(&reply[..n]).into_owned()
        }
    };
    let put = "PUT /latest/api/token HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n";
    let cases = [
        (format!("{put}\r\n"), "HTTP/1.1 400"),
        (
            format!("{put}X-aws-ec2-metadata-token-ttl-seconds: 0\r\n\r\n"),
            "HTTP/1.1 400",
        ),
        (
            format!("{put}X-aws-ec2-metadata-token-ttl-seconds: 60\r\nX-Forwarded-For: 10.0.0.1\r\n\r\n"),
            "HTTP/1.1 403",
        ),
        (
            "GET /latest/meta-data/ HTTP/1.1\r\nHost: x\r\n\r\n".to_string(),
            "HTTP/1.1 401",
        ),
        (
            "GET /latest/meta-data/ HTTP/1.1\r\nHost: x\r\nX-aws-ec2-metadata-token: forged\r\n\r\n"
                .to_string(),
            "HTTP/1.1 401",
        ),
    ];
    for (request, expected) in cases {
        let reply = ask(request.clone()).await;
        assert!(reply.starts_with(expected), "{request:?} -> {reply:?}");
    }
}
