//! Audit events: who reached what, as whom, and how it ended.
//!
//! Every event is a tracing event with target `audit` and stable field names (`event`,
//! `session`, `user`, `identity`, `client`, `db`, `db_user`, `auth_mode`, …) so that a
//! journald layer (appliance issue) can map them to `BASTION_*` fields one-to-one. Nothing
//! secret is ever a field: the types passed in here carry no tokens or passwords. Callers hand
//! in plain facts (strings and numbers); this module knows no session, relay or socket type.

use std::time::Duration;

/// What is known about a session when an event is emitted.
#[derive(Debug, Clone, Default)]
pub struct SessionFacts {
    pub session: u64,
    pub client: String,
    pub listener: String,
    pub user: Option<String>,
    pub identity: Option<String>,
    pub evidence: Option<String>,
    pub db: Option<String>,
    pub db_user: Option<String>,
    pub auth_mode: Option<&'static str>,
    /// The EC2 instance id, when IMDS gave one.
    pub instance: Option<String>,
}

fn opt(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("-")
}

pub fn session_start(f: &SessionFacts) {
    tracing::info!(
        target: "audit",
        event = "session.start",
        session = f.session,
        instance = opt(&f.instance),
        user = opt(&f.user),
        identity = opt(&f.identity),
        evidence = opt(&f.evidence),
        client = %f.client,
        listener = %f.listener,
        db = opt(&f.db),
        db_user = opt(&f.db_user),
        auth_mode = f.auth_mode.unwrap_or("-"),
        "session start"
    );
}

/// How a session's relay ended, as plain facts (the session reads them off the relay).
#[derive(Debug, Clone)]
pub struct SessionEnd<'a> {
    pub bytes_client_to_upstream: u64,
    pub bytes_upstream_to_client: u64,
    /// `splice` or `copy`, per direction.
    pub path_client_to_upstream: &'static str,
    pub path_upstream_to_client: &'static str,
    /// Where each leg's TLS records were handled: `ktls` (kernel), `rustls` (user space) or
    /// `none` (a Unix client, a plaintext upstream).
    pub tls_client: &'static str,
    pub tls_upstream: &'static str,
    pub duration: Duration,
    /// The side that closed (`client`, `upstream`), or who stopped the session (`admin`,
    /// `policy`, `idle`).
    pub closed_by: &'a str,
    /// Why the bastion stopped it (`-` when a side closed).
    pub reason: &'a str,
    /// The I/O error that ended it, if one did.
    pub error: Option<&'a str>,
}

pub fn session_end(f: &SessionFacts, end: &SessionEnd<'_>) {
    tracing::info!(
        target: "audit",
        event = "session.end",
        session = f.session,
        instance = opt(&f.instance),
        user = opt(&f.user),
        client = %f.client,
        db = opt(&f.db),
        db_user = opt(&f.db_user),
        bytes_client_to_upstream = end.bytes_client_to_upstream,
        bytes_upstream_to_client = end.bytes_upstream_to_client,
        path_client_to_upstream = end.path_client_to_upstream,
        path_upstream_to_client = end.path_upstream_to_client,
        tls_client = end.tls_client,
        tls_upstream = end.tls_upstream,
        duration_ms = end.duration.as_millis() as u64,
        closed_by = end.closed_by,
        reason = end.reason,
        error = end.error.unwrap_or("-"),
        "session end"
    );
}

/// A refusal: before or during the handshake, for any reason (identity, roles, upstream).
pub fn denied(f: &SessionFacts, reason: &str) {
    tracing::warn!(
        target: "audit",
        event = "access.denied",
        session = f.session,
        instance = opt(&f.instance),
        user = opt(&f.user),
        identity = opt(&f.identity),
        evidence = opt(&f.evidence),
        client = %f.client,
        listener = %f.listener,
        db = opt(&f.db),
        db_user = opt(&f.db_user),
        reason,
        "access denied"
    );
}

/// What the command guard did to one command of a live session: `command.refused` (another
/// db-user's AUTH, RESET, a protocol error…; the upstream answered an error carrying `reason`)
/// or `command.rewritten` (its own db-user's AUTH answered, HELLO sent without its AUTH part;
/// `reason` says which).
pub fn command_guarded(f: &SessionFacts, event: GuardAudit, command: &str, reason: &str) {
    tracing::info!(
        target: "audit",
        event = event.name(),
        session = f.session,
        instance = opt(&f.instance),
        user = opt(&f.user),
        client = %f.client,
        db = opt(&f.db),
        db_user = opt(&f.db_user),
        command,
        reason,
        "command guarded"
    );
}

/// The two command-guard events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuardAudit {
    Refused,
    Rewritten,
}

impl GuardAudit {
    fn name(self) -> &'static str {
        match self {
            GuardAudit::Refused => "command.refused",
            GuardAudit::Rewritten => "command.rewritten",
        }
    }
}

/// The refusals of unidentified connections that were counted instead of logged one by one
/// during the last interval (see `proxy::admission::RefusalLog`).
pub fn denied_summary(
    interval: std::time::Duration,
    suppressed: u64,
    by_reason: &str,
    top_sources: &str,
) {
    tracing::warn!(
        target: "audit",
        event = "access.denied.summary",
        interval = %humantime::format_duration(interval),
        suppressed,
        by_reason,
        top_sources,
        "access denied to unidentified connections (summary)"
    );
}

/// An acknowledged change through the admin socket: who (uid and account) did what to which
/// record, and the store sequence number that holds it.
pub fn admin_mutation(uid: u32, caller: &str, request: &str, action: &str, target: &str, seq: u64) {
    tracing::info!(
        target: "audit",
        event = "admin.mutation",
        uid,
        caller,
        request,
        action,
        target_name = target,
        seq,
        "admin mutation"
    );
}

/// An admin wrote (`set`, `replace`) or removed (`remove`) a file in `secrets_dir` through
/// `bastion secret`. Names the file, never a byte of it.
pub fn admin_secret(uid: u32, caller: &str, action: &str, name: &str) {
    tracing::info!(
        target: "audit",
        event = "admin.secret",
        uid,
        caller,
        action,
        target_name = name,
        "admin secret"
    );
}

/// `bastion iam-token` minted an IAM auth token (a root-only debugging verb): who ran it (uid
/// and account), for which service, region, target and db-user. Never the token.
pub fn iam_token_issued(t: &IamTokenIssued<'_>) {
    tracing::info!(
        target: "audit",
        event = "iam_token.issued",
        uid = t.uid,
        caller = t.caller,
        service = t.service,
        region = t.region,
        target_name = t.target,
        db_user = t.db_user,
        "iam-token: an IAM auth token was printed"
    );
}

/// The facts of an `iam_token.issued` event.
#[derive(Debug, Clone)]
pub struct IamTokenIssued<'a> {
    pub uid: u32,
    pub caller: &'a str,
    pub service: &'a str,
    pub region: &'a str,
    pub target: &'a str,
    pub db_user: &'a str,
}

/// A caller the admin socket refused (not root, not in the admin group).
pub fn admin_denied(uid: u32, pid: Option<i32>) {
    tracing::warn!(
        target: "audit",
        event = "admin.denied",
        uid,
        pid = pid.unwrap_or(-1),
        "admin socket: caller refused"
    );
}

/// An administrator ended a live session (`bastion sessions kill`, or `bastion cert revoke` of
/// the certificate it presented). The session's own `session.end` (or `access.denied`, when it
/// was still in its handshake) follows.
pub fn session_killed(uid: u32, caller: &str, session: &KilledSession<'_>, reason: &str) {
    tracing::info!(
        target: "audit",
        event = "session.killed",
        uid,
        caller,
        session = session.id,
        user = session.user.unwrap_or("-"),
        client = session.client,
        db = session.db.unwrap_or("-"),
        db_user = session.db_user.unwrap_or("-"),
        reason,
        "session killed"
    );
}

/// What `session.killed` names about the session.
#[derive(Debug, Clone, Copy)]
pub struct KilledSession<'a> {
    pub id: u64,
    pub user: Option<&'a str>,
    pub client: &'a str,
    pub db: Option<&'a str>,
    pub db_user: Option<&'a str>,
}

/// One command of an inspect-mode session (`relay = "inspect"`), paired with its reply:
/// `db.command`. Sampled and rate-limited by `[limits] command_audit_sample` /
/// `command_audit_rate`. `command` is Redis' own name from its command table (`config|set`;
/// `?` for a name it does not know — the client's bytes are never echoed), `first_key` the
/// first key's first bytes, escaped (`-` when there is none, or for a command whose
/// arguments can carry secrets: AUTH, HELLO, ACL, CONFIG, MIGRATE).
pub fn db_command(f: &SessionFacts, c: &CommandFacts<'_>) {
    tracing::info!(
        target: "audit",
        event = "db.command",
        session = f.session,
        user = opt(&f.user),
        db = opt(&f.db),
        db_user = opt(&f.db_user),
        seq = c.seq,
        command = c.command,
        args = c.args,
        keys = c.keys,
        first_key = c.first_key,
        reply = c.reply,
        error = c.error,
        bytes_request = c.bytes_request,
        bytes_reply = c.bytes_reply,
        latency_us = c.latency_us,
        "db command"
    );
}

/// The facts of a `db.command` event.
#[derive(Debug, Clone, Copy)]
pub struct CommandFacts<'a> {
    /// The command's place in the session (0 for the first).
    pub seq: u64,
    pub command: &'a str,
    /// Arguments, the name included.
    pub args: u64,
    pub keys: u64,
    pub first_key: &'a str,
    /// The reply's RESP type (`error`, `bulk`, `array`, …).
    pub reply: &'static str,
    /// An error reply's code (`ERR`, `WRONGTYPE`, `NOPERM`…), else `-`.
    pub error: &'a str,
    pub bytes_request: u64,
    pub bytes_reply: u64,
    /// From the command being named to its last reply byte read, in microseconds.
    pub latency_us: u64,
}

/// An inspect-mode session authenticated its upstream connection again (`limits.
/// reauth_interval`): `session.reauth`, `result` `ok`, `failed` (the upstream refused it: the
/// session ends) or `not_sent` (no token; tried again later). Never the token.
pub fn session_reauth(f: &SessionFacts, result: &str, reason: &str) {
    tracing::info!(
        target: "audit",
        event = "session.reauth",
        session = f.session,
        user = opt(&f.user),
        db = opt(&f.db),
        db_user = opt(&f.db_user),
        result,
        reason,
        "session re-authenticated upstream"
    );
}

/// The per-command summary of an inspect-mode session at its end: `db.command.summary`.
pub fn db_command_summary(f: &SessionFacts, s: &CommandSummary<'_>) {
    tracing::info!(
        target: "audit",
        event = "db.command.summary",
        session = f.session,
        user = opt(&f.user),
        db = opt(&f.db),
        db_user = opt(&f.db_user),
        commands = s.commands,
        errors = s.errors,
        by_reply = s.by_reply,
        pushes = s.pushes,
        logged = s.logged,
        unlogged = s.unlogged,
        paired = s.paired,
        "db commands (session summary)"
    );
}

/// The facts of a `db.command.summary` event.
#[derive(Debug, Clone, Copy)]
pub struct CommandSummary<'a> {
    /// Commands answered.
    pub commands: u64,
    /// Of them, answered with an error.
    pub errors: u64,
    /// `type=count` pairs, space-separated (`bulk=10 error=1 simple=3`).
    pub by_reply: &'a str,
    /// RESP3 pushes and RESP2 pub/sub messages (answering no command).
    pub pushes: u64,
    /// `db.command` events written; those sampled but dropped by the rate limit.
    pub logged: u64,
    pub unlogged: u64,
    /// `false` once pairing was given up (MONITOR, CLIENT REPLY, a reply nobody asked for).
    pub paired: bool,
}

/// A managed user's password changed (`trigger`: `schedule` or `admin`): the new version is
/// AWSCURRENT of `secret`. Never the password.
pub fn managed_rotated(db: &str, db_user: &str, secret: &str, version: &str, trigger: &str) {
    tracing::info!(
        target: "audit",
        event = "managed.rotated",
        db,
        db_user,
        secret,
        version,
        trigger,
        "managed password rotated"
    );
}

/// A user stopped being managed: its secret is deleted after `grace` unless it is managed again.
pub fn managed_unmanaged(db: &str, db_user: &str, secret: &str, delete_after: i64) {
    tracing::info!(
        target: "audit",
        event = "managed.unmanaged",
        db,
        db_user,
        secret,
        delete_after,
        "managed user no longer managed; its secret is deleted after the grace period"
    );
}

/// The secret of a user that stopped being managed, deleted after its grace period.
pub fn managed_secret_deleted(db: &str, db_user: &str, secret: &str, unmanaged_since: i64) {
    tracing::info!(
        target: "audit",
        event = "managed.secret_deleted",
        db,
        db_user,
        secret,
        unmanaged_since,
        "secret of a no longer managed user deleted"
    );
}

/// A rotation of a managed user failed; the password in use stays valid and it is retried.
pub fn managed_rotation_failed(db: &str, db_user: &str, secret: &str, error: &str, trigger: &str) {
    tracing::warn!(
        target: "audit",
        event = "managed.rotation_failed",
        db,
        db_user,
        secret,
        error,
        trigger,
        "managed password rotation failed"
    );
}
