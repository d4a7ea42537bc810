//! `bastion doctor`: the checks an operator would otherwise run by hand (`dig`, `nc -zv`,
//! `openssl s_client`, `redis-cli AUTH`), each ending in a status, a finding and a fix.
//!
//! A check is an async function that returns [`CheckResult`]s; [`run`] calls them in a fixed
//! order and collects a [`Report`]. Adding a check (the IMDS probe of `aws::imds`, the
//! per-database AssumeRole of STS) means one more function in its own file and one more line
//! in [`run`] — a plain function rather than a trait object, because every check needs the same
//! inputs ([`Doctor`] and the config) and nothing picks checks at run time.
//!
//! Check names are stable (`credentials`, `imds`, `database:<name>:region|assume_role|managed|managed_write|managed_admin|dns|tcp|tls|auth`): scripts
//! key on them in the `--json` form documented in the README.
//!
//! What this module must never do: put a password, token or secret key into a finding (secrets
//! stay in [`crate::secret::Secret`] and go only to the upstream), panic on what a peer sends, or
//! send anything to an upstream beyond one AUTH (or PING) frame.

pub mod assume_role;
pub mod credentials;
pub mod database;
pub mod imds;
pub mod managed;
pub mod region;
pub mod report;
mod tls;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde_json::{Map, Value};

use crate::aws::credentials::CredentialChain;
use crate::aws::imds::{Env, ProcessEnv};
use crate::config::Config;
use crate::proxy::upstream::Connector;

pub use report::Report;

/// The outcome of one check. Any `Fail` makes `bastion doctor` exit non-zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    /// Works now, but will not for long or only by luck (credentials about to expire).
    Warn,
    Fail,
    /// Not applicable, or not run because an earlier step it depends on failed.
    Skip,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "fail",
            Status::Skip => "skip",
        }
    }
}

/// One check's answer: what was found and, unless it is fine, what to do about it.
///
/// `fields` are the check-specific extras of the JSON form (`kind` for `imds`, `provider` for
/// `credentials`, `db_user` for an auth check …); they are flattened into the check's object.
#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    pub name: String,
    pub status: Status,
    pub finding: String,
    pub fix: Option<String>,
    #[serde(flatten)]
    pub fields: Map<String, Value>,
}

impl CheckResult {
    pub fn new(name: impl Into<String>, status: Status, finding: impl Into<String>) -> Self {
        CheckResult {
            name: name.into(),
            status,
            finding: finding.into(),
            fix: None,
            fields: Map::new(),
        }
    }

    pub fn ok(name: impl Into<String>, finding: impl Into<String>) -> Self {
        Self::new(name, Status::Ok, finding)
    }

    pub fn skip(name: impl Into<String>, finding: impl Into<String>) -> Self {
        Self::new(name, Status::Skip, finding)
    }

    pub fn fail(
        name: impl Into<String>,
        finding: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self::new(name, Status::Fail, finding).with_fix(fix)
    }

    pub fn warn(
        name: impl Into<String>,
        finding: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self::new(name, Status::Warn, finding).with_fix(fix)
    }

    pub fn with_fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }

    /// Add a check-specific JSON field. The key must not be one of the common ones.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        debug_assert!(!matches!(key, "name" | "status" | "finding" | "fix"));
        self.fields.insert(key.to_string(), value.into());
        self
    }
}

/// What the checks run with, passed in so tests can point them anywhere.
pub struct Doctor {
    pub credentials: CredentialChain,
    /// Bound on each network step (DNS, TCP, TLS, AUTH reply) of each database.
    pub timeout: Duration,
    pub connector: Connector,
    /// The clock credential expiries are compared against.
    pub now: fn() -> SystemTime,
    /// Where the IMDS settings' environment overrides come from.
    pub env: Box<dyn Env + Send + Sync>,
}

impl Doctor {
    pub fn new(credentials: CredentialChain, timeout: Duration) -> Self {
        Doctor {
            credentials,
            timeout,
            connector: Connector::new(),
            now: SystemTime::now,
            env: Box::new(ProcessEnv),
        }
    }
}

/// Run every check: credentials, IMDS, then each database's DNS → TCP → TLS → AUTH chain.
///
/// Databases are checked concurrently (each step has its own timeout, so ten unreachable
/// databases take one timeout, not ten); the report keeps the config's order.
pub async fn run(config: &Config, doctor: Arc<Doctor>) -> Report {
    let credentials = credentials::check(config, &doctor).await;
    let credentials_ok = credentials.status != Status::Fail;
    let imds = imds::check(config, doctor.env.as_ref(), credentials_ok).await;
    let mut checks = vec![credentials, imds];

    let secret_dirs = crate::catalog::SecretDirs::new(
        config.boot.secrets_dir.clone(),
        doctor
            .env
            .var("CREDENTIALS_DIRECTORY")
            .map(std::path::PathBuf::from),
    );
    let mut tasks = tokio::task::JoinSet::new();
    for (i, declared) in config.seed.databases.iter().enumerate() {
        // A password is read here as the daemon reads it (the same rules); one that cannot be
        // read fails the AUTH check, naming the key and the path.
        let db = crate::catalog::Database::from_declared(declared, &secret_dirs, None);
        let db_user = database::probe_user(config, &db);
        let doctor = doctor.clone();
        tasks.spawn(async move { (i, database::check(&db, &db_user, &doctor).await) });
    }
    let mut per_db: Vec<(usize, Vec<CheckResult>)> =
        Vec::with_capacity(config.seed.databases.len());
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(done) => per_db.push(done),
            // A panic in a check is a bug; report it as a failed check rather than losing it.
            Err(e) => checks.push(CheckResult::fail(
                "doctor",
                format!("a database check stopped unexpectedly: {e}"),
                "report this as a bastion bug",
            )),
        }
    }
    per_db.sort_by_key(|(i, _)| *i);
    checks.extend(per_db.into_iter().flat_map(|(_, results)| results));
    Report::new(checks)
}
