//! Managed users on a self-hosted Redis: the bastion generates `app`'s password, keeps it in
//! Secrets Manager (moto_server) and rotates it with `ACL SETUSER` through `bastion-admin` on a
//! real redis-server.
//!
//! - Sessions work before, during and after several forced rotations; after each, the
//!   password of two rotations ago no longer works on the server, the last two do; the secret
//!   has the documented name, tags and stages; no password reaches the logs.
//! - Two bastions rotating the same user at the same moment (both held in the apply step by
//!   CLIENT PAUSE, so both start from the same AWSCURRENT): one new version per rotation (the
//!   derived ClientRequestToken), the server holds exactly AWSCURRENT and AWSPREVIOUS; a
//!   bastion whose cached password the other one rotated away logs in with the fresh one.
//! - `kill -9` while a rotation waits for the server (paused with CLIENT PAUSE) after storing
//!   its candidate: sessions keep working, and the restarted bastion finishes that very
//!   version instead of making another.
//! - Secrets Manager throttling (SHIM: PutSecretValue answered with ThrottlingException in
//!   front of moto): retried with backoff; throttled throughout, exactly 4 attempts, a clear
//!   error and the current password still working.
//! - The Secrets Manager under test refuses a ClientRequestToken reused with another value, as
//!   AWS does (what the one-version-per-rotation rests on).
//! - Users dropped from `managed_users` (`db add --replace`): no longer rotated, their secret
//!   deleted after `secret_grace_period`; `db rm` of the database while one waits for its
//!   grace period works and leaves that secret.
//! - `bastion doctor` names the database and the missing right: an admin_user without
//!   `acl|setuser` (ACL DRYRUN), a principal without secretsmanager:PutSecretValue and
//!   ListSecrets (SHIM: AccessDeniedException in front of moto, which allows everything).
//! - A client's mid-session `AUTH app x` (answered by the guard re-authenticating as `app`)
//!   while AWSCURRENT is not applied on the server yet: AWSPREVIOUS is used, as at login.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use support::bastion::{Bastion, BASTION_BIN};
use support::certs::write_private;
use support::clients::{python, Endpoint};
use support::control_plane::ControlPlane;
use support::managed::{accepts, ls, managed};
use support::moto::Moto;
use support::process::{poll, run};
use support::redis::{RedisOpts, RedisServer};
use support::stack::current_user;

const ADMIN_PW: &str = "bastion-admin-pw-41f9";
const SECRET: &str = "bastion/redis/self/user/app";

struct Rig {
    redis: RedisServer,
    moto: Moto,
    dir: tempfile::TempDir,
}

fn rig() -> Rig {
    rig_with("~* &* +@all")
}

/// [`rig`] with `bastion-admin`'s rights `admin_rules`.
fn rig_with(admin_rules: &str) -> Rig {
    let redis = RedisServer::start(RedisOpts {
        acl_lines: vec![
            format!("bastion-admin on >{ADMIN_PW} {admin_rules}"),
            // The operator creates the user with its rights and no password: the bastion owns it.
            "app on ~* &* +@all".into(),
        ],
        ..RedisOpts::default()
    });
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    // The admin's password file keeps the rules of every password file: in secrets_dir.
    std::fs::create_dir(dir.path().join("secrets")).unwrap();
    write_private(&dir.path().join("secrets/admin.pw"), ADMIN_PW.as_bytes());
    Rig { redis, moto, dir }
}

impl Rig {
    fn config(&self, name: &str, interval: &str) -> (String, std::path::PathBuf) {
        let s = |v: &Path| toml::Value::String(v.to_string_lossy().into_owned()).to_string();
        let state = self.dir.path().join(name).join("state");
        let config = format!(
            r#"state_dir = {state}
secrets_dir = {secrets}
[listeners.unix]
directory = {sockets}

[[databases]]
name = "self"
address = "{plain}"
auth = {{ mode = "managed", engine = "redis", admin_user = "bastion-admin", admin_password_file = {pw}, rotation_interval = "{interval}" }}
managed_users = ["app"]

[[roles]]
name = "apps"
db_users = ["app"]
db_names = ["self"]

[[users]]
name = "alice"
roles = ["apps"]
unix_user = "{me}"
"#,
            state = s(&state),
            sockets = s(&self.dir.path().join(name).join("db")),
            plain = self.redis.plain_addr(),
            secrets = s(&self.dir.path().join("secrets")),
            pw = s(&self.dir.path().join("secrets/admin.pw")),
            me = current_user(),
        );
        (config, state)
    }

    fn start(&self, name: &str, interval: &str) -> Bastion {
        self.start_with(name, interval, &[])
    }

    /// [`Rig::start`] with more environment (endpoint overrides).
    fn start_with(&self, name: &str, interval: &str, more: &[(&'static str, String)]) -> Bastion {
        let (config, state) = self.config(name, interval);
        let mut env = self.moto.aws_env();
        env.extend(more.iter().cloned());
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        Bastion::start_with_env(&config, &state, &env)
    }

    /// `{"current": id, "previous": id, "pw": {id: value}, "stages": {id: [..]}, "tags": .., "name": ..}`
    fn secret(&self) -> Value {
        let out = self.moto.boto3(&format!(
            r#"
d = sm.describe_secret(SecretId='{SECRET}')
stages = d.get('VersionIdsToStages', {{}})
pw = {{}}
for v in stages:
    pw[v] = sm.get_secret_value(SecretId='{SECRET}', VersionId=v)['SecretString']
cur = [v for v, s in stages.items() if 'AWSCURRENT' in s]
prev = [v for v, s in stages.items() if 'AWSPREVIOUS' in s]
print(json.dumps(dict(name=d['Name'], tags={{t['Key']: t['Value'] for t in d.get('Tags', [])}},
    stages=stages, pw=pw, current=cur[0] if cur else None, previous=prev[0] if prev else None,
    description=d.get('Description'))))
"#
        ));
        serde_json::from_str(&out).unwrap()
    }

    fn current_password(&self) -> String {
        let s = self.secret();
        s["pw"][s["current"].as_str().unwrap()]
            .as_str()
            .unwrap()
            .to_string()
    }

    fn accepts(&self, pw: &str) -> bool {
        accepts(&self.redis, "app", pw)
    }
}

/// Wait for the first rotation (at start) to have made a password current.
fn wait_first_rotation(bastion: &Bastion) {
    let done = poll(Duration::from_secs(30), || {
        let v = ls(bastion);
        v[0]["version"].as_str().map(|_| ())
    });
    assert!(done.is_some(), "no first rotation: {}", ls(bastion));
}

fn session_ping(bastion: &Bastion) -> String {
    let ep = Endpoint::unix(bastion.socket_path("self"));
    let out = python(&ep, "r = connect(); print(r.ping(), r.acl_whoami())");
    out.stdout().trim().to_string() + &out.stderr()
}

#[test]
fn sessions_survive_forced_rotations_and_old_passwords_die() {
    let rig = rig();
    let bastion = rig.start("one", "1h");
    wait_first_rotation(&bastion);
    assert_eq!(session_ping(&bastion), "True app");

    let first = rig.secret();
    assert_eq!(first["name"], SECRET);
    assert_eq!(
        first["tags"]["bastion.dev/managed-by"], "bastion",
        "{first}"
    );
    assert_eq!(first["tags"]["bastion.dev/database"], "self");
    assert_eq!(first["tags"]["bastion.dev/db-user"], "app");
    assert_eq!(first["previous"], Value::Null);
    let mut passwords = vec![rig.current_password()];
    assert_eq!(passwords[0].len(), 128);
    assert!(rig.accepts(&passwords[0]));

    // Sessions, each a new login, run the whole time the rotations happen.
    let ep = Endpoint::unix(bastion.socket_path("self"));
    let during = std::thread::spawn(move || {
        python(
            &ep,
            r#"
import time
ok = bad = 0
end = time.time() + 8
while time.time() < end:
    try:
        r = connect(); r.ping(); r.set('k', 'v'); r.close(); ok += 1
    except Exception as e:
        bad += 1; print(repr(e), file=sys.stderr)
print(ok, bad)
"#,
        )
    });

    let mark = bastion.log_mark();
    for round in 1..=3 {
        let out = managed(&bastion, &["rotate", "self", "app"]);
        out.assert_success();
        assert!(
            out.stdout().contains("rotated app on self"),
            "{}",
            out.all()
        );
        let s = rig.secret();
        let current = rig.current_password();
        assert_ne!(
            Some(&current),
            passwords.last(),
            "round {round}: no new password"
        );
        // Stages: the new one current, the one before previous.
        assert_eq!(
            s["pw"][s["previous"].as_str().unwrap()].as_str().unwrap(),
            passwords.last().unwrap()
        );
        passwords.push(current);
        let n = passwords.len();
        assert!(
            rig.accepts(&passwords[n - 1]),
            "round {round}: current refused"
        );
        assert!(
            rig.accepts(&passwords[n - 2]),
            "round {round}: previous refused"
        );
        if n >= 3 {
            assert!(
                !rig.accepts(&passwords[n - 3]),
                "round {round}: a password two rotations old still works"
            );
        }
        assert_eq!(session_ping(&bastion), "True app", "round {round}");
    }
    let during = during.join().unwrap();
    let counts = during.stdout();
    let (ok, bad) = counts.trim().split_once(' ').unwrap();
    assert_eq!(
        bad,
        "0",
        "sessions failed during rotations: {}",
        during.all()
    );
    assert!(ok.parse::<u32>().unwrap() > 5, "{}", during.all());

    // Audit: one managed.rotated per forced rotation, naming the secret, never a password.
    let logs = bastion.logs_since(mark);
    let rotated: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("event=\"managed.rotated\"") && l.contains("trigger=\"admin\""))
        .collect();
    assert_eq!(rotated.len(), 3, "{logs}");
    assert!(rotated[0].contains(SECRET), "{}", rotated[0]);
    let all: Vec<&str> = passwords.iter().map(String::as_str).collect();
    bastion.assert_no_secrets(&all);

    // `managed ls`: database, user, source, secret, times, no error.
    let v = ls(&bastion);
    assert_eq!(v[0]["database"], "self");
    assert_eq!(v[0]["user"], "app");
    assert_eq!(v[0]["source"], "config");
    assert_eq!(v[0]["secret"], SECRET);
    assert_eq!(v[0]["last_error"], Value::Null);
    assert!(v[0]["next_rotation"].as_i64().unwrap() > v[0]["last_rotation"].as_i64().unwrap());
    let table = managed(&bastion, &["ls"]).stdout();
    assert!(
        table.contains("DATABASE") && table.contains(SECRET),
        "{table}"
    );
    let out = managed(&bastion, &["rotate", "self", "nobody"]);
    assert!(
        !out.status.success() && out.all().contains("not a managed user"),
        "{}",
        out.all()
    );

    // The metrics page counts the managed user, none failing, and when its password was made
    // (as `managed ls` says); it names no database or user.
    let status = run(
        Command::new(BASTION_BIN)
            .args(["status", "--json", "--config"])
            .arg(bastion.config_path()),
        None,
        Duration::from_secs(60),
    );
    status.assert_success();
    let status: Value = serde_json::from_str(&status.stdout()).unwrap();
    let page = status["metrics"].as_str().unwrap().to_string();
    let sample = |name: &str| {
        page.lines()
            .find_map(|l| {
                l.strip_prefix(name)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .unwrap_or_else(|| panic!("no {name} in\n{page}"))
    };
    assert_eq!(sample("bastion_managed_users"), 1.0);
    assert_eq!(sample("bastion_managed_users_failing"), 0.0);
    assert_eq!(
        sample("bastion_managed_oldest_rotation_timestamp_seconds"),
        v[0]["last_rotation"].as_i64().unwrap() as f64
    );
    assert!(
        !page.contains("app\"") && !page.contains("self\""),
        "{page}"
    );
}

#[test]
fn two_bastions_rotating_one_user_make_one_version_per_rotation() {
    let rig = rig();
    let a = rig.start("a", "1h");
    let b = rig.start("b", "1h");
    wait_first_rotation(&a);
    let versions = || -> Vec<String> {
        serde_json::from_str(&rig.moto.boto3(&format!(
            "print(json.dumps([v['VersionId'] for v in sm.list_secret_version_ids(\
             SecretId='{SECRET}', IncludeDeprecated=True)['Versions']]))"
        )))
        .unwrap()
    };
    assert_eq!(
        versions().len(),
        1,
        "both bastions started: still one first version"
    );
    for round in 1..=3 {
        let before = versions().len();
        // The server holds both rotations in apply, so both start from the same AWSCURRENT
        // and store their candidates before either promotes: a true race.
        rig.redis.query(&["CLIENT", "PAUSE", "2500", "ALL"]);
        let rotate = |bastion: &Bastion| {
            Command::new(BASTION_BIN)
                .args(["managed", "rotate", "self", "app", "--config"])
                .arg(bastion.config_path())
                .output()
                .unwrap()
        };
        let (ra, rb) = std::thread::scope(|s| {
            let ta = s.spawn(|| rotate(&a));
            let tb = s.spawn(|| rotate(&b));
            (ta.join().unwrap(), tb.join().unwrap())
        });
        assert!(ra.status.success() && rb.status.success(), "{ra:?} {rb:?}");
        assert_eq!(
            versions().len(),
            before + 1,
            "round {round}: one new version"
        );
        assert_eq!(session_ping(&a), "True app");
        assert_eq!(session_ping(&b), "True app");
        // The server holds exactly AWSCURRENT and AWSPREVIOUS: nothing unstored was applied.
        let s = rig.secret();
        let hashes = rig.redis.query(&["ACL", "GETUSER", "app"]);
        let expect: Vec<String> = [s["current"].as_str(), s["previous"].as_str()]
            .into_iter()
            .flatten()
            .map(|id| sha256_hex(s["pw"][id].as_str().unwrap()))
            .collect();
        assert_eq!(expect.len(), 2);
        for h in &expect {
            assert!(
                hashes.contains(h.as_str()),
                "round {round}: {h} not in {hashes}"
            );
        }
        let held = hashes
            .lines()
            .filter(|l| l.len() == 64 && l.bytes().all(|b| b.is_ascii_hexdigit()))
            .count();
        assert_eq!(held, 2, "round {round}: {hashes}");
    }

    // `a` caches the password it just used; `b` rotates twice, so that one is gone from the
    // server: `a`'s next login is refused with it and retries with AWSCURRENT read afresh.
    assert_eq!(session_ping(&a), "True app");
    for _ in 0..2 {
        managed(&b, &["rotate", "self", "app"]).assert_success();
    }
    assert_eq!(session_ping(&a), "True app");
}

#[test]
fn kill_9_mid_rotation_then_restart_finishes_the_same_version() {
    let rig = rig();
    let mut bastion = rig.start("k", "1h");
    wait_first_rotation(&bastion);
    let before = rig.secret();
    let current = rig.current_password();

    // The server stops answering clients; the rotation stores its candidate, then waits.
    rig.redis.query(&["CLIENT", "PAUSE", "6000", "ALL"]);
    let config = bastion.config_path().to_path_buf();
    let mut rotate = Command::new(BASTION_BIN)
        .args(["managed", "rotate", "self", "app", "--config"])
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pending = poll(Duration::from_secs(20), || {
        let s = rig.secret();
        s["stages"]
            .as_object()
            .unwrap()
            .iter()
            .find(|(_, st)| st.as_array().unwrap().len() == 1 && st[0] == "BASTIONPENDING")
            .map(|(id, _)| id.clone())
    })
    .expect("no pending version stored");
    bastion.kill();
    let _ = rotate.wait();
    // Nothing moved: the stored candidate is not current, the current password still works.
    let s = rig.secret();
    assert_eq!(s["current"], before["current"]);
    std::thread::sleep(Duration::from_secs(6));
    assert!(rig.accepts(&current));

    let bastion = rig.start("k", "1h");
    assert_eq!(session_ping(&bastion), "True app");
    managed(&bastion, &["rotate", "self", "app"]).assert_success();
    let after = rig.secret();
    assert_eq!(after["current"].as_str(), Some(pending.as_str()), "{after}");
    assert_eq!(after["previous"], before["current"]);
    assert_eq!(after["stages"].as_object().unwrap().len(), 2, "{after}");
    assert_eq!(session_ping(&bastion), "True app");
    assert!(rig.accepts(&current));
}

fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

/// What a fleet's one-version-per-rotation rests on, checked on the Secrets Manager these tests
/// use, as AWS documents it: PutSecretValue with a ClientRequestToken already used is the same
/// version when the value is the same, and refused (ResourceExistsException) with another value
/// — so a second bastion's candidate never replaces the first's under the derived token.
#[test]
fn secrets_manager_refuses_a_token_reused_with_another_value() {
    let moto = Moto::start();
    let out = moto.boto3(
        r#"
sm.create_secret(Name='t', SecretString='v0')
tok = '11111111-2222-3333-4444-555555555555'
a = sm.put_secret_value(SecretId='t', ClientRequestToken=tok, SecretString='one', VersionStages=['BASTIONPENDING'])
b = sm.put_secret_value(SecretId='t', ClientRequestToken=tok, SecretString='one', VersionStages=['BASTIONPENDING'])
try:
    sm.put_secret_value(SecretId='t', ClientRequestToken=tok, SecretString='two', VersionStages=['BASTIONPENDING'])
    print('accepted')
except sm.exceptions.ResourceExistsException:
    print('refused')
print(a['VersionId'] == b['VersionId'] == tok,
      sm.get_secret_value(SecretId='t', VersionId=tok)['SecretString'])
"#,
    );
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["refused", "True", "one"],
        "{out}"
    );
}

/// Secrets Manager throttling (SHIM: a proxy in front of moto answering PutSecretValue with
/// ThrottlingException): a rotation retries with backoff and succeeds when the throttling
/// passes; throttled throughout, it stops after exactly 4 attempts with an error naming the
/// throttling, stores nothing, and the current password goes on working.
#[test]
fn throttled_secrets_manager_calls_are_retried_a_bounded_number_of_times() {
    let rig = rig();
    let mode = rig.dir.path().join("throttle");
    std::fs::write(&mode, "0").unwrap();
    let shim = ControlPlane::throttling_secrets_manager(&rig.moto, &rig.redis, &mode);
    let bastion = rig.start_with(
        "throttled",
        "1h",
        &[("AWS_ENDPOINT_URL_SECRETS_MANAGER", shim.endpoint())],
    );
    wait_first_rotation(&bastion);
    let throttled = || shim.log().matches("throttled PutSecretValue").count();

    // Throttled twice, then through: the rotation succeeds.
    std::fs::write(&mode, "2").unwrap();
    let before = rig.current_password();
    managed(&bastion, &["rotate", "self", "app"]).assert_success();
    assert_eq!(throttled(), 2, "{}", shim.log());
    let rotated = rig.current_password();
    assert_ne!(rotated, before);
    assert!(rig.accepts(&rotated));

    // Throttled throughout: exactly MAX_ATTEMPTS calls, a clear error, nothing changed.
    std::fs::write(&mode, "always").unwrap();
    let out = managed(&bastion, &["rotate", "self", "app"]);
    assert!(!out.status.success(), "{out}");
    assert!(out.stderr().contains("ThrottlingException"), "{out}");
    assert_eq!(throttled(), 2 + 4, "{}", shim.log());
    assert_eq!(rig.current_password(), rotated);
    assert!(rig.accepts(&rotated));
    assert_eq!(session_ping(&bastion), "True app");
    bastion.assert_no_secrets(&[&before, &rotated]);
}

/// AWSCURRENT is a password the server does not have yet (a rotation the engine has not applied:
/// the cloud's delay), AWSPREVIOUS the one it has. A session logs in with AWSPREVIOUS, and its
/// client's own `AUTH app x` mid-session — which the guard answers by authenticating upstream
/// as `app` again — works too: it falls back as the login does instead of sending AWSCURRENT.
#[test]
fn a_mid_session_auth_falls_back_to_awsprevious_while_awscurrent_is_not_applied() {
    let rig = rig();
    let first = rig.start("applied", "1h");
    wait_first_rotation(&first);
    let applied = rig.current_password();
    drop(first);
    let unapplied = "not-yet-applied-0123456789abcdef";
    // A new version: AWSCURRENT, the applied one AWSPREVIOUS.
    rig.moto.boto3(&format!(
        "sm.put_secret_value(SecretId='{SECRET}', SecretString='{unapplied}')"
    ));
    assert!(!rig.accepts(unapplied) && rig.accepts(&applied));
    // A bastion whose cache holds the unapplied AWSCURRENT (not due: just made).
    let bastion = rig.start("delayed", "1h");
    wait_first_rotation(&bastion);
    let mark = bastion.log_mark();
    let ep = Endpoint::unix(bastion.socket_path("self"));
    let out = python(
        &ep,
        "r = connect()\n\
         print(r.acl_whoami())\n\
         print(r.execute_command('AUTH', 'app', 'anything'))\n\
         print(r.acl_whoami(), r.ping())",
    );
    assert_eq!(
        out.stdout().trim(),
        "app\nTrue\napp True",
        "{}\n{}",
        out.stderr(),
        bastion.logs_since(mark)
    );
    bastion.expect_log_line(mark, &["command.rewritten", "re-authenticating"], &[]);
    // Nothing was rotated meanwhile: the server still has only the applied password.
    assert!(!rig.accepts(unapplied) && rig.accepts(&applied));
    bastion.assert_no_secrets(&[unapplied, &applied]);
}

/// `bastion doctor --json` for the daemon's config, with `env`; the parsed report.
fn doctor(bastion: &Bastion, env: &[(&'static str, String)]) -> (support::process::Out, Value) {
    let mut doctor = Command::new(BASTION_BIN);
    doctor
        .args(["doctor", "--json", "--config"])
        .arg(bastion.config_path())
        .env("AWS_EC2_METADATA_DISABLED", "true");
    for (k, v) in env {
        doctor.env(k, v);
    }
    let out = run(&mut doctor, None, Duration::from_secs(60));
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out}"));
    (out, report)
}

fn check(report: &Value, name: &str) -> Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {report:#}"))
        .clone()
}

/// An admin_user that may not run `ACL SETUSER`, and a principal denied PutSecretValue: each
/// is a failed doctor check naming the database and the missing right — found without changing
/// anything (ACL DRYRUN; PutSecretValue on a secret that does not exist). Granted, both pass.
#[test]
fn doctor_names_the_database_and_the_missing_write_rights() {
    let rig = rig_with("~* &* +@all -acl|setuser");
    let mode = rig.dir.path().join("deny");
    std::fs::write(&mode, "deny").unwrap();
    let shim = ControlPlane::throttling_secrets_manager(&rig.moto, &rig.redis, &mode);
    let bastion = rig.start("doctor", "1h");
    let mut env = rig.moto.aws_env();
    env.push(("AWS_ENDPOINT_URL_SECRETS_MANAGER", shim.endpoint()));
    let acl_before = rig.redis.query(&["ACL", "LIST"]);

    let (out, report) = doctor(&bastion, &env);
    let admin = check(&report, "database:self:managed_admin");
    assert_eq!(admin["status"], "fail", "{admin:#}");
    let finding = admin["finding"].as_str().unwrap();
    for word in ["'self'", "bastion-admin", "ACL SETUSER", "acl|setuser"] {
        assert!(finding.contains(word), "{word}: {admin:#}");
    }
    let write = check(&report, "database:self:managed_write");
    assert_eq!(write["status"], "fail", "{write:#}");
    let finding = write["finding"].as_str().unwrap();
    for word in [
        "'self'",
        "secretsmanager:PutSecretValue",
        "secretsmanager:ListSecrets",
        "AccessDeniedException",
    ] {
        assert!(finding.contains(word), "{word}: {write:#}");
    }
    assert!(
        shim.log().contains("denied PutSecretValue"),
        "{}",
        shim.log()
    );
    // Nothing changed on the server or in Secrets Manager by the checks.
    assert_eq!(rig.redis.query(&["ACL", "LIST"]), acl_before);
    let names = rig
        .moto
        .boto3("print(json.dumps([s['Name'] for s in sm.list_secrets()['SecretList']]))");
    assert!(!names.contains("doctor-probe"), "{names}");
    assert!(
        !out.all().contains(ADMIN_PW),
        "the admin password in doctor's output"
    );

    // Granted: both pass.
    rig.redis
        .query(&["ACL", "SETUSER", "bastion-admin", "+acl|setuser"]);
    std::fs::write(&mode, "0").unwrap();
    let (_, report) = doctor(&bastion, &env);
    for name in ["database:self:managed_admin", "database:self:managed_write"] {
        let c = check(&report, name);
        assert_eq!(c["status"], "ok", "{c:#}");
    }
}

/// Whether secret `name` exists in moto.
fn secret_exists(moto: &Moto, name: &str) -> bool {
    moto.boto3(&format!(
        "try:\n    sm.describe_secret(SecretId='{name}'); print('yes')\n\
         except sm.exceptions.ResourceNotFoundException:\n    print('no')"
    ))
    .trim()
        == "yes"
}

/// `managed_users` shrinks through the admin socket: the dropped user is not rotated any more
/// and its secret goes after the grace period (`managed.secret_deleted`); the others stay.
/// Then, with a user waiting for its grace period (a store record), `db rm` still works (the
/// record goes with the database) and that secret is left in place.
#[test]
fn users_dropped_from_managed_users_lose_their_secret_after_the_grace_period() {
    let rig = rig();
    for user in ["reporting", "extra"] {
        rig.redis
            .query(&["ACL", "SETUSER", user, "on", "~*", "&*", "+@all"]);
    }
    let (config, state) = rig.config("drop", "1h");
    let config = config
        .replace(
            r#"managed_users = ["app"]"#,
            r#"managed_users = ["app", "reporting", "extra"]"#,
        )
        .replace(
            r#"rotation_interval = "1h" }"#,
            r#"rotation_interval = "1h", secret_grace_period = "3s" }"#,
        );
    let mut env = rig.moto.aws_env();
    env.push(("AWS_REGION", "us-east-1".into()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let bastion = Bastion::start_with_env(&config, &state, &env);
    poll(Duration::from_secs(30), || {
        let v = ls(&bastion);
        let all = v.as_array()?;
        (all.len() == 3 && all.iter().all(|u| u["version"].is_string())).then_some(())
    })
    .unwrap_or_else(|| panic!("no first rotations: {}", ls(&bastion)));
    let secret = |u: &str| format!("bastion/redis/self/user/{u}");
    let replace = |users: &str, grace: &str| {
        let pw = rig.dir.path().join("secrets/admin.pw");
        let out = run(
            Command::new(BASTION_BIN)
                .args(["db", "add", "self", "--replace", "--address"])
                .arg(rig.redis.plain_addr().to_string())
                .args([
                    "--auth",
                    "managed",
                    "--engine",
                    "redis",
                    "--admin-user",
                    "bastion-admin",
                ])
                .arg("--admin-password-file")
                .arg(&pw)
                .args(["--managed-users", users, "--rotation-interval", "1h"])
                .args(["--secret-grace-period", grace, "--config"])
                .arg(bastion.config_path()),
            None,
            Duration::from_secs(30),
        );
        out.assert_success();
    };

    let mark = bastion.log_mark();
    replace("app,extra", "3s");
    bastion.expect_log_line(mark, &["managed.unmanaged", "db_user=\"reporting\""], &[]);
    let deleted = bastion.expect_log_line(
        mark,
        &["managed.secret_deleted", "db_user=\"reporting\""],
        &[],
    );
    assert!(deleted.contains(&secret("reporting")), "{deleted}");
    assert!(!secret_exists(&rig.moto, &secret("reporting")));
    for user in ["app", "extra"] {
        assert!(secret_exists(&rig.moto, &secret(user)), "{user}");
    }

    // `extra` waits for its (long) grace period: a store record of database `self`.
    let mark = bastion.log_mark();
    replace("app", "1h");
    bastion.expect_log_line(mark, &["managed.unmanaged", "db_user=\"extra\""], &[]);
    let out = run(
        Command::new(BASTION_BIN)
            .args(["db", "rm", "self", "--config"])
            .arg(bastion.config_path()),
        None,
        Duration::from_secs(30),
    );
    out.assert_success();
    assert!(secret_exists(&rig.moto, &secret("extra")));
    assert!(secret_exists(&rig.moto, &secret("app")));
}
