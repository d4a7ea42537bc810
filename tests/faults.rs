//! Faults, with real parts: the upstream redis-server restarted under a live session, an
//! upstream that black-holes connections (nftables in a namespace), the store's disk full
//! (a size-limited tmpfs), and the daemon `kill -9`'d under live sessions. Each ends in a clear, audited result, leaks nothing (no session
//! slot, no acknowledged write), and the daemon keeps serving. On the AWS side: IMDS gone for 30
//! minutes of simulated time (static stability), STS throttling and 5xx (bounded retries).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::admin::cli;
use support::bastion::{field, Bastion};
use support::clients::{redis_cli, Endpoint};
use support::netns::{or_skip, Netns};
use support::process::{poll, rt};
use support::raw::{show, Raw};
use support::stack::{current_user, Stack};

#[test]
fn an_upstream_restart_ends_the_session_cleanly_and_the_next_one_works() {
    let mut s = Stack::start();
    let rt = rt();
    let mut c = rt.block_on(async {
        let mut c = Raw::connect(&s.unix("plaindb")).await.expect("connect");
        assert_eq!(c.request_str(&["PING"]).await.unwrap(), b"+PONG\r\n");
        c
    });
    let mark = s.bastion.log_mark();
    s.redis.restart();
    let closed = rt.block_on(c.read_until_closed(Duration::from_secs(10)));
    assert!(closed.is_ok(), "the session outlived its upstream");
    // The client closes on EOF, as Redis clients do (the relay propagates half-closes).
    drop(c);
    let line = s.bastion.expect_log_line(mark, &["session.end"], &[]);
    assert_eq!(
        field(&line, "closed_by").as_deref(),
        Some("upstream"),
        "{line}"
    );
    let out = redis_cli(&s.unix("plaindb"), &["PING"]);
    assert_eq!(out.stdout().trim(), "PONG", "{out}");
}

/// A config with one database at `address`, a Unix listener and alice bound to us.
fn config(state: &Path, sockets: &Path, address: &str, limits: &str) -> String {
    format!(
        "state_dir = {state:?}\n\n[limits]\n{limits}\n\n[listeners.unix]\ndirectory = {sockets:?}\n\n\
         [[databases]]\nname = \"db\"\naddress = \"{address}\"\nauth = {{ mode = \"none\" }}\n\
         default_db_user = \"app\"\n\n\
         [[roles]]\nname = \"all\"\ndb_users = [\"*\"]\ndb_names = [\"*\"]\n\n\
         [[users]]\nname = \"alice\"\nroles = [\"all\"]\nunix_user = {me:?}\n",
        state = state.display().to_string(),
        sockets = sockets.display().to_string(),
        me = current_user(),
    )
}

#[test]
fn a_black_holed_upstream_times_out_clearly_and_leaks_no_slot() {
    let Some(ns) = or_skip(Netns::new("hole")) else {
        return;
    };
    if Command::new("nft").arg("--version").output().is_err() {
        println!("SKIP: nft (nftables) is not installed");
        return;
    }
    ns.ip(&["link", "set", "lo", "up"]);
    // Every SYN to 127.0.0.99:6379 vanishes: connect neither succeeds nor fails.
    let rules = "table inet hole {\n chain out {\n  type filter hook output priority 0;\n  ip daddr 127.0.0.99 tcp dport 6379 drop\n }\n}\n";
    let mut nft = ns.exec("nft");
    nft.args(["-f", "-"]).stdin(std::process::Stdio::piped());
    let mut child = nft.spawn().expect("nft");
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), rules.as_bytes()).unwrap();
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success(), "nft rules");

    let state = tempfile::tempdir().unwrap();
    let sockets = tempfile::Builder::new().tempdir_in("/tmp").unwrap();
    let text = config(
        state.path(),
        sockets.path(),
        "127.0.0.99:6379",
        "upstream_connect_timeout = \"1s\"\nmax_sessions = 1",
    );
    let bastion = Bastion::start_wrapped(
        &text,
        state.path(),
        &[],
        &["ip", "netns", "exec", ns.name()],
    );
    let rt = rt();
    let admin = state.path().join("run/admin.sock");
    let open_sessions = || {
        let status = cli(&admin, &["status", "--json"]);
        status.assert_success();
        let v: serde_json::Value = serde_json::from_str(&status.stdout()).expect("status JSON");
        v["sessions"].as_u64().expect("sessions")
    };
    // With one session slot, each of these would be refused "session limit" if a timed-out
    // connect leaked its slot.
    for attempt in 0..3 {
        // The previous refusal's task ends once its client hung up: then no slot is held.
        let freed = poll(Duration::from_secs(10), || {
            (open_sessions() == 0).then_some(())
        });
        assert!(
            freed.is_some(),
            "attempt {attempt}: a session slot is still held"
        );
        let reply = rt.block_on(async {
            let mut c = Raw::connect(&Endpoint::unix(bastion.socket_path("db")))
                .await
                .expect("connect");
            c.request_str(&["PING"]).await
        });
        let reply = reply.unwrap_or_else(|e| panic!("attempt {attempt}: no reply: {e}"));
        let text = String::from_utf8_lossy(&reply).to_string();
        assert!(
            text.starts_with("-ERR bastion:") && !text.contains("session limit"),
            "attempt {attempt}: {}",
            show(&reply)
        );
    }
    let logs = bastion.logs();
    assert!(
        logs.contains("no answer within 1s"),
        "the timeout is not named:\n{logs}"
    );
    let freed = poll(Duration::from_secs(10), || {
        (open_sessions() == 0).then_some(())
    });
    assert!(
        freed.is_some(),
        "a session slot is still held after the refusals"
    );
}

/// A size-limited tmpfs mounted for the test; unmounted on drop (the temp dir under it is
/// kept alive only to be removed after).
struct Tmpfs(PathBuf, #[allow(dead_code)] tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Result<Tmpfs, String> {
        if !nix::unistd::geteuid().is_root() {
            return Err("not root: cannot mount a tmpfs".into());
        }
        let dir = tempfile::Builder::new().tempdir_in("/tmp").unwrap();
        let path = dir.path().to_path_buf();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(&path)
            .output()
            .map_err(|e| format!("mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount tmpfs: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(Tmpfs(path, dir))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_refuses_the_admin_write_loses_nothing_and_keeps_serving() {
    let Some(fs) = or_skip(Tmpfs::mount("8m")) else {
        return;
    };
    let redis = support::redis::RedisServer::start(support::redis::RedisOpts::open());
    let state = fs.0.join("state");
    let sockets = tempfile::Builder::new().tempdir_in("/tmp").unwrap();
    let addr = redis.plain_addr().to_string();
    let bastion = Bastion::start(&config(&state, sockets.path(), &addr, ""), &state);
    let admin = state.join("run/admin.sock");
    cli(
        &admin,
        &["db", "add", "before", "--address", &addr, "--auth", "none"],
    )
    .assert_success();

    // Fill the disk.
    let filler = fs.0.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    while std::io::Write::write_all(&mut f, &chunk).is_ok() {}
    drop(f);

    // A small record may still fit in the slack of the log's last page: write until the disk
    // says no. Every acknowledged write must survive; the refused one must say why.
    let mut acknowledged = Vec::new();
    let refused = (0..200).find_map(|i| {
        let name = format!("during{i}");
        let out = cli(
            &admin,
            &["db", "add", &name, "--address", &addr, "--auth", "none"],
        );
        if out.status.success() {
            acknowledged.push(name);
            None
        } else {
            Some((name, out))
        }
    });
    let (refused_name, out) = refused.expect("200 writes acknowledged on a full disk");
    assert!(
        out.stderr().to_lowercase().contains("no space"),
        "the refusal does not say why: {out}"
    );
    // Still serving, with what was acknowledged.
    let ls = cli(&admin, &["db", "ls"]);
    assert!(ls.stdout().contains("before"), "{ls}");
    assert!(!ls.stdout().contains(&format!("{refused_name} ")), "{ls}");
    let ep = Endpoint::unix(bastion.socket_path("db"));
    assert_eq!(redis_cli(&ep, &["PING"]).stdout().trim(), "PONG");

    // Room again: writes work, and a restart finds exactly the acknowledged ones.
    std::fs::remove_file(&filler).unwrap();
    cli(
        &admin,
        &["db", "add", "after", "--address", &addr, "--auth", "none"],
    )
    .assert_success();
    drop(bastion);
    let bastion = Bastion::start(&config(&state, sockets.path(), &addr, ""), &state);
    let ls = poll(Duration::from_secs(10), || {
        let ls = cli(&admin, &["db", "ls"]);
        ls.status.success().then(|| ls.stdout())
    })
    .expect("db ls after the restart");
    for db in ["db", "before", "after"]
        .into_iter()
        .chain(acknowledged.iter().map(String::as_str))
    {
        assert!(ls.contains(db), "{db} lost:\n{ls}");
    }
    assert!(
        !ls.lines()
            .any(|l| l.split_whitespace().next() == Some(refused_name.as_str())),
        "the refused write appeared after the restart:\n{ls}"
    );
    drop(bastion);
}

/// `kill -9` with live sessions, then a restart on the same state: the clients see their
/// sessions end, reconnect and are served; the store (databases, users, issued certificates —
/// the allow-list the handshake checks) is intact.
#[test]
fn kill_9_with_live_sessions_then_restart_serves_the_same_clients() {
    let mut s = Stack::start();
    let rt = rt();
    let (mut a, mut b) = rt.block_on(async {
        let mut a = Raw::connect(&s.unix("plaindb")).await.expect("connect");
        let mut b = Raw::connect(&s.mtls("tlsdb")).await.expect("connect");
        assert_eq!(a.request_str(&["PING"]).await.unwrap(), b"+PONG\r\n");
        assert_eq!(b.request_str(&["PING"]).await.unwrap(), b"+PONG\r\n");
        (a, b)
    });
    let before = cli(&s.state_dir().join("run/admin.sock"), &["db", "ls"]).stdout();
    s.bastion.kill();
    for c in [&mut a, &mut b] {
        let closed = rt.block_on(c.read_until_closed(Duration::from_secs(10)));
        assert!(closed.is_ok(), "a session outlived its daemon");
    }
    s.bastion = Bastion::start_with_env(
        &s.config,
        s.state_dir(),
        &[(support::stack::PASSWORD_ENV, &s.upstream_password)],
    );
    let after = cli(&s.state_dir().join("run/admin.sock"), &["db", "ls"]).stdout();
    assert_eq!(before, after, "the store changed across kill -9");
    // The same certificate (issued before the kill, recorded in the store) is accepted.
    for ep in [s.unix("plaindb"), s.mtls("tlsdb")] {
        let out = redis_cli(&ep, &["PING"]);
        assert_eq!(out.stdout().trim(), "PONG", "{out}");
    }
}

/// IMDS gone for 30 minutes of simulated time (a clock the provider and the chain read, moved
/// in 20 s steps; the instance profile's credentials expire 10 minutes in): every step still
/// yields credentials that sign an IAM token the service accepts (static stability), and fresh
/// credentials are in use once IMDS is back.
#[test]
fn imds_gone_for_thirty_simulated_minutes_keeps_iam_sessions_authenticating() {
    use std::sync::{Arc, Mutex};
    use std::time::SystemTime;

    use bastion::aws::credentials::CredentialChain;
    use bastion::aws::iam::{token, Freshness, IamAuth};
    use bastion::aws::imds::{ImdsClient, ImdsCredentialsProvider, ImdsSettings};
    use bastion::config::IamService;
    use support::iam_front::{verify, IamFrontConfig};
    use support::imds::{Behaviour, Emulator, SECRET_ACCESS_KEY, SESSION_TOKEN};

    const KEY: &str = "ASIAIMDSEMULATOR0001";
    let rt = rt();
    let start = SystemTime::now();
    let mut emulator = Emulator::start(Behaviour {
        expiration: start + Duration::from_secs(600),
        fixed_access_key_id: Some(KEY.into()),
        ..Behaviour::default()
    });
    let mut settings = ImdsSettings::for_endpoint(&emulator.endpoint()).expect("endpoint");
    settings.retry_backoff = Duration::from_millis(10);
    settings.failure_backoff = Duration::from_millis(10);
    settings.failure_backoff_max = Duration::from_millis(10);
    let now = Arc::new(Mutex::new(start));
    let clock = move |now: &Arc<Mutex<SystemTime>>| {
        let now = now.clone();
        move || *now.lock().unwrap()
    };
    let provider = ImdsCredentialsProvider::new(ImdsClient::new(settings).expect("client"))
        .with_clock(clock(&now));
    let chain = CredentialChain::builder()
        .link("imds", provider)
        .clock(clock(&now))
        .build();
    let auth = IamAuth {
        database: "cache",
        service: IamService::Elasticache,
        region: Some("us-east-1"),
        target: "my-cache",
        serverless: false,
        role: None,
    };
    let service = IamFrontConfig {
        service: "elasticache",
        region: "us-east-1".into(),
        target: "my-cache".into(),
        serverless: false,
        access_key_id: KEY.into(),
        secret_access_key: SECRET_ACCESS_KEY.into(),
        session_token: Some(SESSION_TOKEN.into()),
        issued: None,
        upstream: support::process::closed_addr(),
        passwords: Default::default(),
        connection_limit: None,
    };
    let authenticate = |chain: &CredentialChain| {
        let t = rt
            .block_on(token(chain, &auth, "app", Freshness::New))
            .expect("an IAM token");
        verify(&service, "app", t.expose(), SystemTime::now())
    };
    assert_eq!(authenticate(&chain), Ok(()));
    let fetched = emulator.requests().len();
    assert!(fetched > 0);

    emulator.stop();
    let step = Duration::from_secs(20);
    let steps = 30 * 60 / step.as_secs();
    for i in 1..=steps {
        *now.lock().unwrap() = start + step * i as u32;
        if let Err(e) = authenticate(&chain) {
            panic!(
                "{}s into the IMDS outage, no session could authenticate: {e:?}",
                i * 20
            );
        }
    }
    // IMDS is back: once the extended credentials are due for refresh (at most the longest
    // extension later), the ones IMDS hands out now are in use.
    emulator.restart().expect("IMDS back");
    emulator.set(|b| b.expiration = start + Duration::from_secs(3 * 3600));
    *now.lock().unwrap() = start + Duration::from_secs(30 * 60 + 16 * 60);
    assert_eq!(authenticate(&chain), Ok(()));
    let (_, expiry) = chain.cached().expect("cached credentials");
    // IMDS' Expiration has whole seconds: within a second of what the emulator set.
    let left = expiry.map(|e| e.duration_since(start).unwrap().as_secs());
    assert!(
        matches!(left, Some(s) if s + 1 >= 3 * 3600),
        "the credentials IMDS handed out after the outage are not in use: {left:?}"
    );
}

/// STS AssumeRole answering throttling and 5xx: retried with backoff up to
/// `STS_MAX_ATTEMPTS`, so a transient failure costs a delay, not the session; a persistent one
/// fails after exactly that many attempts; AccessDenied is not retried. Through a shim
/// (tests/support/sts_shim.rs) because neither moto nor AWS throttles on demand. Secrets
/// Manager's throttling belongs with the managed users that call it (not built yet).
#[test]
fn sts_throttling_and_5xx_are_retried_a_bounded_number_of_times() {
    use aws_credential_types::Credentials;
    use bastion::aws::assume_role::RoleSpec;
    use bastion::aws::credentials::CredentialChain;
    use bastion::aws::sdk::STS_MAX_ATTEMPTS;
    use support::sts_shim::{Answer, StsShim, ASSUMED_KEY, ASSUMED_SECRET};

    let rt = rt();
    let role = RoleSpec {
        arn: "arn:aws:iam::123456789012:role/cache-connect".into(),
        external_id: None,
        session_name: "bastion".into(),
        region: Some("us-east-1".into()),
    };
    let assume = |shim: &StsShim| {
        // The SDK reads the endpoint from the environment when the STS client is built, as an
        // operator's VPC endpoint; each shim is used by one assume.
        std::env::set_var("AWS_ENDPOINT_URL_STS", shim.url());
        let chain = CredentialChain::from_provider(
            "static",
            Credentials::new(
                "AKIDSOURCE0000000001",
                "source-secret-never-shown",
                None,
                None,
                "t",
            ),
        );
        let started = std::time::Instant::now();
        let result = rt.block_on(chain.assumed(&role));
        (result, started.elapsed())
    };

    let shim = StsShim::start(
        &[Answer::Throttling, Answer::ServerError(503)],
        Answer::Success,
    );
    let (result, took) = assume(&shim);
    let creds = result.expect("assumed after two transient failures");
    assert_eq!(creds.access_key_id(), ASSUMED_KEY);
    assert_eq!(shim.assume_role_calls(), 3);
    println!("throttled, 503, then success: {took:?} (backoff with jitter)");

    let shim = StsShim::start(&[], Answer::ServerError(500));
    let (result, took) = assume(&shim);
    let error = result.expect_err("STS never answered");
    assert_eq!(shim.assume_role_calls(), STS_MAX_ATTEMPTS as usize);
    let text = error.to_string();
    assert!(!text.contains("source-secret-never-shown") && !text.contains(ASSUMED_SECRET));
    println!("always 500: gave up after {STS_MAX_ATTEMPTS} attempts in {took:?}: {text}");

    let shim = StsShim::start(&[], Answer::AccessDenied);
    let (result, _) = assume(&shim);
    assert!(result.is_err());
    assert_eq!(shim.assume_role_calls(), 1, "AccessDenied is not retried");
}
