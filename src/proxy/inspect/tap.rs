//! Inspect mode on the wire: one [`Inspection`] per session, fed from both directions — the
//! guard's [`Observer`] hook on the requests ([`RequestTap`]) and the relay's [`Watch`] hook on
//! the replies ([`ReplyTap`]) — so every reply is paired with its request ([`Matcher`]) and
//! each command is counted, and sampled ones audited as `db.command` (`audit::db_command`).
//!
//! Both hooks only observe: the guard still decides on and moves the requests, the relay moves
//! the replies byte for byte as they are read (a reply is never held until it is complete, and
//! pipelined requests are never held for their replies). The two directions run in one task
//! (`relay::drive`), so the lock between them is never contended; it is taken once per
//! request and once per read of replies. Nothing is allocated per command once the queue of
//! requests waiting for replies has grown to the pipeline's depth.
//!
//! What it must never do: log an argument of a command that can carry a secret (AUTH, HELLO,
//! ACL, CONFIG, MIGRATE: [`Spec::secret_bearing`]), echo a command name Redis does not know,
//! or change a byte.
//!
//! The command policy hook: [`PolicyHook::check`] is asked about every command as it is
//! named, or — when [`PolicyHook::needs`] says the decision needs arguments — the guard holds
//! the command back ([`Look::Hold`]) until they have arrived and [`PolicyHook::check_args`]
//! decides (a command too large to hold is refused). A denial is refused by the guard
//! in place — the upstream never sees the command; it answers the guard's refusal, an
//! unknown-command error (so inside MULTI the transaction aborts, as for Redis' own ACL
//! denials) — and the replies watch replaces that answer with `-NOPERM bastion: <reason>`.
//! The bastion's own re-AUTH is the other reply the watch owns: it is cut out.
//! Both are one-line replies (`+`/`-`): a cut starts only at such a line once every request
//! before the owned one is answered, so a RESP3 push or a RESP2 subscriber's message that
//! arrives first passes whole; a line that then answers something else is out of step.
//!
//! A RESP2 subscriber cannot run AUTH: at a due re-AUTH it is moved to a fresh connection
//! ([`super::seam`]). The tap follows its subscriptions, plans the new connection's, and at the
//! seam holds each reply to its end (the old connection's marker reply is cut out, the new
//! connection's messages that repeat the old one's are dropped) — the one time it holds bytes.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::keys::{Spec, AUDIT_ARGS};
use super::matcher::{sub_command, Matched, Matcher};
use super::policy::ArgsNeeded;
use super::reply::{ReplyConfig, ReplyFramer, ReplyKind, Word};
use super::seam::{Seam, SubRequest, Subscriptions};
use crate::audit::{self, CommandFacts, CommandSummary, SessionFacts};
use crate::proxy::guard::driver::{Checked, Look, Observer, Reauth, Resubscribe};
use crate::proxy::guard::{keyword_eq, Arg, Head, NAME_CAP};
use crate::proxy::relay::{Counters, Edit, Handover, Watch};

/// Where a command policy (ACL-style rules per role) plugs in: asked about every command of an
/// inspect-mode session as soon as its name is known, and about the arguments of those it
/// needs them for, which the guard holds back until they have arrived.
pub trait PolicyHook: Send + Sync {
    /// `Err(reason)`: refuse it; the client gets an error carrying `bastion: <reason>` in its
    /// place and the upstream never sees it. `name` is the client's bytes (at most
    /// [`NAME_CAP`]), `spec` Redis' entry for it, if it has one; `argc` counts the name.
    /// Asked only when [`PolicyHook::needs`] is [`ArgsNeeded::None`].
    fn check(&self, name: &[u8], spec: Option<&'static Spec>, argc: u64) -> Result<(), String>;

    /// How much of the command named `name` the decision needs.
    fn needs(&self, name: &[u8]) -> ArgsNeeded {
        let _ = name;
        ArgsNeeded::None
    }

    /// The decision on a command [`PolicyHook::needs`] arguments for: `args` are its first
    /// argument (none if it has none) or all of them, each whole.
    fn check_args(&self, name: &[u8], args: &[Vec<u8>]) -> Result<(), String> {
        let _ = (name, args);
        Ok(())
    }
}

/// A session's command policy (its roles' ACL-style rules, [`super::policy`]): decided by the
/// name alone when that suffices, otherwise once the guard has held the command to the
/// arguments the rules look at (a subcommand or first argument, or every argument when keys
/// are restricted) — the same decision Redis' ACL makes.
impl PolicyHook for super::policy::SessionPolicy {
    fn check(&self, name: &[u8], _: Option<&'static Spec>, _argc: u64) -> Result<(), String> {
        self.check::<&[u8]>(name, &[]).map_err(|d| reason(&d))
    }

    fn needs(&self, name: &[u8]) -> ArgsNeeded {
        self.args_needed(name)
    }

    fn check_args(&self, name: &[u8], args: &[Vec<u8>]) -> Result<(), String> {
        self.check(name, args).map_err(|d| reason(&d))
    }
}

/// A denial's text without the `NOPERM bastion: ` the reply puts back.
fn reason(denied: &super::policy::Denied) -> String {
    let text = denied.to_string();
    text.strip_prefix("NOPERM bastion: ")
        .unwrap_or(&text)
        .to_string()
}

/// No command policy: everything the guard lets through goes on.
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAll;

impl PolicyHook for AllowAll {
    fn check(&self, _: &[u8], _: Option<&'static Spec>, _: u64) -> Result<(), String> {
        Ok(())
    }
}

/// The daemon-wide bound on `db.command` events: `limits.command_audit_rate` per one-second
/// window. Two atomics, no lock: every session's sampled commands pass here.
#[derive(Debug)]
pub struct AuditBudget {
    epoch: Instant,
    /// The current window (seconds since `epoch`) and the events written in it.
    window: AtomicU64,
    used: AtomicU64,
}

impl Default for AuditBudget {
    fn default() -> AuditBudget {
        AuditBudget {
            epoch: Instant::now(),
            window: AtomicU64::new(0),
            used: AtomicU64::new(0),
        }
    }
}

impl AuditBudget {
    /// Whether one more event may be written at `now`, at `rate` per second.
    pub fn take(&self, rate: u32, now: Instant) -> bool {
        let window = now.saturating_duration_since(self.epoch).as_secs();
        let seen = self.window.load(Ordering::Relaxed);
        if window > seen
            && self
                .window
                .compare_exchange(seen, window, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.used.store(0, Ordering::Relaxed);
        }
        self.used.fetch_add(1, Ordering::Relaxed) < u64::from(rate)
    }
}

/// How a session audits its commands, and re-authenticates.
#[derive(Debug, Clone, Copy)]
pub struct AuditSettings {
    /// `limits.command_audit_sample`.
    pub sample: f64,
    /// `limits.command_audit_rate`.
    pub rate: u32,
    /// `limits.reauth_interval`, for a database that authenticates upstream (`None`: never).
    pub reauth: Option<std::time::Duration>,
    /// The client opened with `HELLO 3`.
    pub resp3: bool,
}

/// How soon a re-AUTH put off for want of a quiet point is tried again.
const REAUTH_RETRY: std::time::Duration = std::time::Duration::from_millis(100);

/// One inspect-mode session's pairing state and command counts.
pub struct Inspection<'a> {
    book: Mutex<Book>,
    facts: &'a SessionFacts,
    counters: &'a Counters,
    budget: &'a AuditBudget,
    settings: AuditSettings,
    /// Where a moved subscriber's new connection is handed to the relay.
    handover: Option<&'a Handover>,
}

/// A command's first key, as much as is kept of it.
#[derive(Clone, Copy)]
struct Key {
    bytes: [u8; NAME_CAP],
    kept: u8,
    len: u64,
}

impl Key {
    const NONE: Key = Key {
        bytes: [0; NAME_CAP],
        kept: 0,
        len: 0,
    };

    fn is_none(&self) -> bool {
        self.len == 0 && self.kept == 0
    }
}

/// What becomes of a reply the bastion owns.
enum Cut {
    /// The bastion's own re-AUTH: its reply is cut out.
    Reauth,
    /// A command the policy denied: the upstream's answer to the guard's refusal is replaced
    /// by this `-NOPERM bastion: …` line.
    Replace(Box<[u8]>),
    /// The marker ending a moved subscriber's old connection (`guard::driver::MARKER`): cut
    /// out, and nothing of that connection after it goes to the client.
    Marker,
}

/// A request waiting for its reply (parallel to the matcher's queue).
struct Pending {
    seq: u64,
    spec: Option<&'static Spec>,
    sub: Option<&'static Spec>,
    argc: u64,
    keys: u64,
    key: Key,
    /// Sampled: when it was named.
    started: Option<Instant>,
    protocol_error: bool,
    /// A reply that is the bastion's, not the upstream's to give the client.
    cut: Option<Cut>,
    bytes_request: u64,
    bytes_reply: u64,
    /// The first reply's kind and error code.
    kind: Option<ReplyKind>,
    code: Option<Word>,
    /// A subscribe-family command: the names its confirmations are about…
    subs: Option<SubRequest>,
    /// …and how many came back.
    confirmed: u64,
}

#[derive(Default)]
struct Book {
    matcher: Matcher,
    pending: VecDeque<Pending>,
    framer: Option<ReplyFramer>,
    commands: u64,
    errors: u64,
    by_kind: [u64; KINDS],
    pushes: u64,
    logged: u64,
    unlogged: u64,
    /// Pairing given up (see [`Inspection::summary`]).
    lost: bool,
    /// The connection speaks RESP3 (`HELLO 3`).
    resp3: bool,
    /// Stream offset where the last complete reply ended: the next one starts there.
    boundary: u64,
    /// Inside a reply that is being cut out (it began in an earlier read).
    cutting: bool,
    /// What the session is subscribed to (for a RESP2 subscriber's move).
    subscriptions: Subscriptions,
    /// A subscriber's move in progress.
    seam: Option<Seam>,
}

const KINDS: usize = 14;

fn kind_index(kind: ReplyKind) -> usize {
    kind as usize
}

fn kind_name(kind: ReplyKind) -> &'static str {
    match kind {
        ReplyKind::SimpleString => "simple",
        ReplyKind::Error => "error",
        ReplyKind::Integer => "integer",
        ReplyKind::Double => "double",
        ReplyKind::BigNumber => "bignum",
        ReplyKind::Boolean => "boolean",
        ReplyKind::Null => "null",
        ReplyKind::BulkString => "bulk",
        ReplyKind::BulkError => "bulk_error",
        ReplyKind::Verbatim => "verbatim",
        ReplyKind::Array => "array",
        ReplyKind::Map => "map",
        ReplyKind::Set => "set",
        ReplyKind::Push => "push",
    }
}

const ALL_KINDS: [ReplyKind; KINDS] = [
    ReplyKind::SimpleString,
    ReplyKind::Error,
    ReplyKind::Integer,
    ReplyKind::Double,
    ReplyKind::BigNumber,
    ReplyKind::Boolean,
    ReplyKind::Null,
    ReplyKind::BulkString,
    ReplyKind::BulkError,
    ReplyKind::Verbatim,
    ReplyKind::Array,
    ReplyKind::Map,
    ReplyKind::Set,
    ReplyKind::Push,
];

impl<'a> Inspection<'a> {
    pub fn new(
        facts: &'a SessionFacts,
        counters: &'a Counters,
        budget: &'a AuditBudget,
        settings: AuditSettings,
    ) -> Inspection<'a> {
        Inspection {
            book: Mutex::new(Book {
                framer: Some(ReplyFramer::new(ReplyConfig::default())),
                resp3: settings.resp3,
                ..Book::default()
            }),
            facts,
            counters,
            budget,
            settings,
            handover: None,
        }
    }

    /// A RESP2 subscriber may be moved to a fresh connection through `handover` (the relay's).
    pub fn with_handover(mut self, handover: &'a Handover) -> Inspection<'a> {
        self.handover = Some(handover);
        self
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        // Poisoned only by a panic in this module, between whole updates of counts.
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The requests direction's hook (for the guard).
    pub fn requests<'i, P: PolicyHook>(&'i self, policy: &'i P) -> RequestTap<'i, 'a, P> {
        let next_reauth = self.settings.reauth.map(|every| {
            self.counters.reauth_at(unix_now() + every.as_secs() as i64);
            tokio::time::Instant::now() + every
        });
        RequestTap {
            inspection: self,
            policy,
            current: None,
            fresh_read: false,
            sample_acc: 0.0,
            in_multi: false,
            next_reauth,
            seen: zeroize::Zeroizing::new(Vec::new()),
            seen_at: Vec::new(),
            unmovable_audited: false,
        }
    }

    /// The replies direction's hook (for the relay).
    pub fn replies(&self) -> ReplyTap<'_, 'a> {
        ReplyTap { inspection: self }
    }

    /// Write the session's `db.command.summary`.
    pub fn summary(&self) {
        let book = self.book();
        let mut by_reply = String::new();
        for kind in ALL_KINDS {
            let n = book.by_kind[kind_index(kind)];
            if n > 0 {
                let _ = write!(by_reply, "{}{}={n}", sep(&by_reply), kind_name(kind));
            }
        }
        audit::db_command_summary(
            self.facts,
            &CommandSummary {
                commands: book.commands,
                errors: book.errors,
                by_reply: if by_reply.is_empty() { "-" } else { &by_reply },
                pushes: book.pushes,
                logged: book.logged,
                unlogged: book.unlogged,
                paired: !book.lost,
            },
        );
    }

    /// A request is due upstream (in order).
    fn request(&self, current: &mut Current) {
        let mut book = self.book();
        let name = &current.name[..usize::from(current.name_len)];
        let seq = if current.refused {
            // The upstream gets the guard's refusal instead: one plain error reply.
            book.matcher.request(b"bastion", 1)
        } else {
            book.matcher.request(name, current.argc)
        };
        if current.lost {
            book.lost = true;
        }
        book.pending.push_back(Pending {
            seq,
            spec: current.spec,
            sub: current.sub,
            argc: current.argc,
            keys: current.keys,
            key: current.key,
            started: current.started,
            protocol_error: false,
            cut: current.replace.take().map(Cut::Replace),
            bytes_request: current.bytes,
            bytes_reply: 0,
            kind: None,
            code: None,
            subs: current.subs.take(),
            confirmed: 0,
        });
    }

    /// The bastion's own AUTH is due upstream: its one reply is not the client's.
    fn reauth_sent(&self) {
        self.own_request(b"AUTH", 3, Cut::Reauth);
    }

    /// A command of the bastion's own is due upstream: its one reply is `cut`.
    fn own_request(&self, name: &[u8], argc: u64, cut: Cut) {
        let mut book = self.book();
        let seq = book.matcher.request(name, argc);
        book.pending.push_back(Pending {
            seq,
            spec: None,
            sub: None,
            argc,
            keys: 0,
            key: Key::NONE,
            started: None,
            protocol_error: false,
            cut: Some(cut),
            bytes_request: 0,
            bytes_reply: 0,
            kind: None,
            code: None,
            subs: None,
            confirmed: 0,
        });
    }

    /// An AUTH of the bastion's may follow the requests sent so far: replies may be
    /// outstanding (its reply is cut by position, once every request before it is answered),
    /// but no blocking one — the AUTH would wait behind it, and goes after its reply instead —
    /// and AUTH allowed (RESP3, or neither subscribed nor subscribing). Never once pairing
    /// was given up: after MONITOR or CLIENT REPLY OFF the AUTH's reply could not be told
    /// from the client's; never during a subscriber's move.
    fn replies_quiet(&self) -> bool {
        let book = self.book();
        !book.lost
            && book.framer.is_some()
            && book.seam.is_none()
            && (book.resp3 || !book.matcher.subscribed())
            && !book
                .pending
                .iter()
                .any(|p| blocks(p) || (!book.resp3 && p.subs.is_some()))
    }

    /// At an otherwise quiet point, a RESP2 subscriber: how to subscribe its new connection
    /// (`Ok(None)`: not such a point; `Err`: its subscriptions are not known).
    fn resubscribe_plan(&self) -> Result<Option<Resubscribe>, &'static str> {
        let book = self.book();
        let quiet = !book.lost
            && book.pending.is_empty()
            // A seam still judging the last move's messages (none came since) is over by
            // now: the repeats it waits for arrive right after a move, not an interval later.
            && book.seam.as_ref().is_none_or(Seam::filtering)
            && book
                .framer
                .as_ref()
                .is_some_and(|f| f.offset() == book.boundary);
        if !quiet || book.resp3 || !book.matcher.subscribed() || self.handover.is_none() {
            return Ok(None);
        }
        match book.subscriptions.plan(book.matcher.counts()) {
            Some(plan) => Ok(Some(plan)),
            None => Err(
                "a RESP2 subscriber cannot run AUTH and its subscriptions are not known (a \
                 name longer than 4 KiB, more than 1 MiB of names, or a subscription the \
                 server ended): it is not moved to a fresh connection",
            ),
        }
    }

    fn protocol_error(&self) {
        let mut book = self.book();
        let seq = book.matcher.protocol_error();
        book.pending.push_back(Pending {
            seq,
            spec: None,
            sub: None,
            argc: 0,
            keys: 0,
            key: Key::NONE,
            started: None,
            protocol_error: true,
            cut: None,
            bytes_request: 0,
            bytes_reply: 0,
            kind: None,
            code: None,
            subs: None,
            confirmed: 0,
        });
    }

    /// Frame a read of replies and pair each with its request; the replies the bastion owns
    /// (a re-AUTH's, a refusal's, a move's marker) go into `edits`. During a subscriber's move
    /// ([`Seam::holding`]) the read's bytes are replaced by what the seam lets through.
    fn replies_read(&self, bytes: &[u8], edits: &mut Vec<Edit>) -> io::Result<()> {
        let mut book = self.book();
        let book = &mut *book;
        let Some(framer) = book.framer.as_mut() else {
            return Ok(());
        };
        let mut pos = 0;
        let mut answered = 0;
        // Where the reply being cut out starts in this read; `carried`: it began in an
        // earlier read, whose bytes are already withheld.
        let mut cut_start = book.cutting.then_some(0);
        let mut carried = book.cutting;
        let mut holding = book.seam.as_ref().is_some_and(Seam::holding);
        // The marker's reply ended the old connection.
        let mut flipped = false;
        loop {
            // A reply the bastion owns starts here: once every request before it is answered,
            // the next one-line reply (`+`/`-`). Its reply is always one: the re-AUTH's `+OK`
            // or error, the upstream's error for a refusal. What may come first is never one:
            // a RESP3 push (`>`), a RESP2 subscriber's message or unasked unsubscribe (`*`).
            if !holding
                && cut_start.is_none()
                && book
                    .pending
                    .front()
                    .is_some_and(|p| matches!(p.cut, Some(Cut::Reauth | Cut::Replace(_))))
                && framer.offset() == book.boundary
                && bytes.get(pos).is_some_and(|&b| b == b'+' || b == b'-')
            {
                book.cutting = true;
                cut_start = Some(pos);
            }
            let from = pos;
            let opaque = framer.opaque_len().min((bytes.len() - pos) as u64);
            if opaque > 0 {
                framer.skip(opaque);
                pos += opaque as usize;
            }
            let step = match framer.advance(&bytes[pos..]) {
                Ok(step) => step,
                Err(e) => {
                    book.framer = None;
                    book.lost = true;
                    return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                }
            };
            pos += step.consumed;
            if let Some(seam) = book.seam.as_mut() {
                seam.feed(&bytes[from..pos]);
            }
            let Some(reply) = step.reply else {
                if step.consumed == 0 {
                    break;
                }
                continue;
            };
            book.boundary = reply.end;
            let hash = book.seam.as_mut().map(Seam::reply_done);
            let matched = book.matcher.reply(&reply);
            if let Matched::Reply { seq, .. } = matched {
                let marker = |p: &Pending| p.seq == seq && matches!(p.cut, Some(Cut::Marker));
                if book.pending.front().is_some_and(marker) {
                    book.pending.pop_front();
                    flipped = true;
                    break;
                }
            }
            let owned = match matched {
                Matched::Reply { seq, .. } if book.cutting || holding => book
                    .pending
                    .front()
                    .is_some_and(|p| p.cut.is_some() && p.seq == seq),
                _ => false,
            };
            if book.cutting && !owned {
                // A line that answers another request: the upstream is out of step. Withheld
                // within this read, it passes; withheld since an earlier read, it is lost.
                if carried {
                    book.framer = None;
                    book.lost = true;
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "upstream reply out of step: the line held back as the bastion's own \
                         reply answers a client command",
                    ));
                }
                book.cutting = false;
                cut_start = None;
            }
            if owned {
                book.cutting = false;
                carried = false;
                let start = cut_start.take().unwrap_or(0);
                let Some(done) = book.pending.pop_front() else {
                    continue;
                };
                let seam = book.seam.as_mut().filter(|_| holding);
                if let Some(Cut::Replace(line)) = done.cut {
                    // The client's command, refused: counted like Redis' own NOPERM.
                    match seam {
                        Some(seam) => {
                            seam.discard();
                            seam.out.extend_from_slice(&line);
                        }
                        None => edits.push(Edit {
                            range: start..pos,
                            with: line.into_vec(),
                        }),
                    }
                    answered += 1;
                    book.commands += 1;
                    book.errors += 1;
                    book.by_kind[kind_index(ReplyKind::Error)] += 1;
                    continue;
                }
                match seam {
                    Some(seam) => seam.discard(),
                    None => edits.push(Edit {
                        range: start..pos,
                        with: Vec::new(),
                    }),
                }
                if matches!(reply.kind, ReplyKind::Error | ReplyKind::BulkError) {
                    let code = reply.code.map(|w| w.as_bytes().escape_ascii().to_string());
                    let reason = format!(
                        "the upstream refused the re-AUTH ({})",
                        code.as_deref().unwrap_or("error")
                    );
                    audit::session_reauth(self.facts, "failed", &reason);
                    return Err(io::Error::other(reason));
                }
                audit::session_reauth(self.facts, "ok", "-");
                continue;
            }
            if let (Some(seam), Some(hash)) = (book.seam.as_mut(), hash) {
                let message = matched == Matched::Message;
                if seam.filtering() {
                    // The new connection: a message the old one delivered is dropped.
                    let (repeat, settled) = if message {
                        seam.judge(hash)
                    } else {
                        (false, false)
                    };
                    if repeat {
                        seam.discard();
                    } else {
                        seam.release();
                    }
                    if settled || !book.matcher.subscribed() {
                        // Nothing later can be a repeat: the seam is over.
                        edits.push(Edit {
                            range: 0..pos,
                            with: std::mem::take(&mut seam.out),
                        });
                        book.seam = None;
                        holding = false;
                    }
                } else {
                    if message {
                        seam.record(hash);
                    }
                    seam.release();
                }
            }
            match matched {
                Matched::Reply { seq, last } => {
                    while book.pending.front().is_some_and(|p| p.seq < seq) {
                        book.pending.pop_front();
                    }
                    let Some(front) = book.pending.front_mut() else {
                        continue;
                    };
                    front.bytes_reply += reply.len();
                    if front.kind.is_none() {
                        front.kind = Some(reply.kind);
                        front.code = reply.code;
                    }
                    if let Some(request) = front.subs.as_ref() {
                        if matches!(reply.kind, ReplyKind::Array | ReplyKind::Push) {
                            book.subscriptions.confirmed(request, front.confirmed);
                            front.confirmed += 1;
                            if !book.matcher.subscribed() {
                                // Nothing subscribed: nothing unknown either.
                                book.subscriptions = Subscriptions::default();
                            }
                        }
                    }
                    if last {
                        if let Some(done) = book.pending.pop_front() {
                            answered += 1;
                            book.commands += 1;
                            let kind = done.kind.unwrap_or(reply.kind);
                            book.by_kind[kind_index(kind)] += 1;
                            if matches!(kind, ReplyKind::Error | ReplyKind::BulkError) {
                                book.errors += 1;
                            }
                            if done.spec.is_some_and(|s| s.name == "hello") {
                                match kind {
                                    ReplyKind::Map => book.resp3 = true,
                                    ReplyKind::Array => book.resp3 = false,
                                    _ => {}
                                }
                            }
                            if let Some(started) = done.started.filter(|_| !book.lost) {
                                if self.budget.take(self.settings.rate, started) {
                                    book.logged += 1;
                                    self.audit(&done, kind);
                                } else {
                                    book.unlogged += 1;
                                }
                            }
                        }
                    }
                }
                Matched::Push | Matched::Message => book.pushes += 1,
                Matched::Unexpected => book.lost = true,
            }
        }
        if flipped {
            self.old_connection_done(book, bytes.len(), edits);
        } else if holding {
            if let Some(seam) = book.seam.as_mut() {
                edits.push(Edit {
                    range: 0..bytes.len(),
                    with: std::mem::take(&mut seam.out),
                });
            }
        } else if let Some(start) = cut_start {
            edits.push(Edit {
                range: start..bytes.len(),
                with: Vec::new(),
            });
        }
        if answered > 0 {
            self.counters.commands_answered(answered);
        }
        Ok(())
    }

    /// A moved subscriber's marker reply came: the old connection's replies are over (what it
    /// sent after the marker, in this read of `len` bytes, is not the client's); the new
    /// connection's follow, framed afresh.
    fn old_connection_done(&self, book: &mut Book, len: usize, edits: &mut Vec<Edit>) {
        let Some(seam) = book.seam.as_mut() else {
            return;
        };
        edits.push(Edit {
            range: 0..len,
            with: std::mem::take(&mut seam.out),
        });
        if !seam.old_done() {
            book.seam = None;
        }
        book.framer = Some(ReplyFramer::new(ReplyConfig::default()));
        book.boundary = 0;
        book.cutting = false;
        if let Some(handover) = self.handover {
            handover.old_done();
        }
        audit::session_reauth(self.facts, "ok", "moved to a new connection");
    }

    fn audit(&self, done: &Pending, kind: ReplyKind) {
        let mut name = String::new();
        match (done.spec, done.sub) {
            _ if done.protocol_error => name.push('-'),
            // The table names a subcommand `container|sub`.
            (Some(_), Some(sub)) => name.push_str(sub.name),
            (Some(spec), None) => name.push_str(spec.name),
            (None, _) => name.push('?'),
        }
        let mut first_key = String::new();
        if done.key.is_none() {
            first_key.push('-');
        } else {
            let kept = &done.key.bytes[..usize::from(done.key.kept)];
            let _ = write!(first_key, "{}", kept.escape_ascii());
            if done.key.len > u64::from(done.key.kept) {
                first_key.push_str("...");
            }
        }
        let code = done.code.map(|w| w.as_bytes().escape_ascii().to_string());
        let latency = done.started.map_or(0, |t| t.elapsed().as_micros() as u64);
        audit::db_command(
            self.facts,
            &CommandFacts {
                seq: done.seq,
                command: &name,
                args: done.argc,
                keys: done.keys,
                first_key: &first_key,
                reply: kind_name(kind),
                error: code.as_deref().unwrap_or("-"),
                bytes_request: done.bytes_request,
                bytes_reply: done.bytes_reply,
                latency_us: latency,
            },
        );
    }
}

fn sep(s: &str) -> &'static str {
    if s.is_empty() {
        ""
    } else {
        " "
    }
}

/// The command being framed on the requests side.
struct Current {
    name: [u8; NAME_CAP],
    name_len: u8,
    argc: u64,
    start: u64,
    bytes: u64,
    refused: bool,
    spec: Option<&'static Spec>,
    sub: Option<&'static Spec>,
    /// Arguments wanted: those with index below this.
    want: u64,
    /// Sampled: its keys, as `COMMAND GETKEYS` counts them (at its end).
    keys: u64,
    key: Key,
    started: Option<Instant>,
    /// Its replies cannot be paired (MONITOR, CLIENT REPLY).
    lost: bool,
    /// Sampled: arguments to look at (subcommand, key count, first key).
    sampled: bool,
    /// Denied by the command policy: the reply the client gets instead.
    replace: Option<Box<[u8]>>,
    /// A subscribe-family command: the names it carries.
    subs: Option<SubRequest>,
}

impl Current {
    /// Denied by the command policy: refused in place, the client gets `-NOPERM` instead.
    fn deny(&mut self, reason: &str) {
        self.refused = true;
        self.spec = None;
        self.sub = None;
        // Refused, it changes nothing: not MONITOR, not CLIENT REPLY.
        self.lost = false;
        self.sampled = false;
        self.want = 0;
        self.started = None;
        self.replace = Some(noperm(reason));
    }

    /// Which arguments to look at (`subbed`: a container's subcommand was looked at): a
    /// container's subcommand always (CLIENT REPLY ends the pairing); of a sampled command,
    /// those its keys are found by — up to the first key when `argc` alone places them, else
    /// up to [`AUDIT_ARGS`].
    fn set_want(&mut self, subbed: bool) {
        self.want = match self.spec {
            None => 0,
            Some(spec) if spec.is_container() && !subbed => 2,
            Some(_) if !self.sampled => 0,
            Some(spec) => match self.sub.or((!spec.is_container()).then_some(spec)) {
                None => 0,
                Some(cmd) if cmd.keys_read_args() => {
                    self.argc.saturating_sub(1).min(AUDIT_ARGS) + 1
                }
                Some(cmd) => cmd
                    .key_count(self.argc, |_| None)
                    .and_then(|k| k.first)
                    .map_or(0, |at| at as u64 + 1),
            },
        };
    }

    /// Whether an argument after index `i` is still wanted.
    fn wants_after(&self, i: u64) -> bool {
        i + 1 < self.want
    }
}

/// The requests direction's hook: an [`Observer`] for the guard.
pub struct RequestTap<'i, 'a, P> {
    inspection: &'i Inspection<'a>,
    policy: &'i P,
    current: Option<Current>,
    fresh_read: bool,
    /// Fractional sampling accumulator.
    sample_acc: f64,
    /// MULTI sent, EXEC / DISCARD not yet.
    in_multi: bool,
    /// When the upstream is to be authenticated again.
    next_reauth: Option<tokio::time::Instant>,
    /// The current sampled command's arguments looked at, their first bytes (`seen_at`:
    /// range in `seen`, full length), to find its keys at its end. Reused; zeroed after each
    /// command (a secret-bearing command's are looked at too, never logged).
    seen: zeroize::Zeroizing<Vec<u8>>,
    seen_at: Vec<(usize, usize, u64)>,
    /// A RESP2 subscriber that could not be moved (its subscriptions not known) was audited.
    unmovable_audited: bool,
}

impl<P> RequestTap<'_, '_, P> {
    /// Whether the next command is audited one by one (a steady share, no randomness).
    fn sampled(&mut self) -> bool {
        let sample = self.inspection.settings.sample;
        if sample >= 1.0 {
            return true;
        }
        if sample <= 0.0 {
            return false;
        }
        self.sample_acc += sample;
        if self.sample_acc >= 1.0 {
            self.sample_acc -= 1.0;
            true
        } else {
            false
        }
    }
}

impl<P> RequestTap<'_, '_, P> {
    /// A sampled command's keys, from the arguments looked at: its count, and its first key
    /// unless it carries secrets.
    fn find_keys(&self, current: &mut Current) {
        let Some(cmd) = current.sub.or(current.spec.filter(|s| !s.is_container())) else {
            return;
        };
        let seen = |i: usize| {
            let &(from, to, _) = self.seen_at.get(i.checked_sub(1)?)?;
            self.seen.get(from..to)
        };
        let found = cmd.key_count(current.argc, seen).unwrap_or_default();
        current.keys = found.count;
        if cmd.secret_bearing() {
            return;
        }
        let Some(&(from, to, len)) = found
            .first
            .and_then(|at| self.seen_at.get(at.checked_sub(1)?))
        else {
            return;
        };
        let kept = to - from;
        current.key.bytes[..kept].copy_from_slice(&self.seen[from..to]);
        current.key.kept = kept as u8;
        current.key.len = len;
    }

    fn forget_seen(&mut self) {
        zeroize::Zeroize::zeroize(&mut *self.seen);
        self.seen_at.clear();
    }
}

impl<P: PolicyHook> Observer for RequestTap<'_, '_, P> {
    fn chunk(&mut self) {
        self.fresh_read = true;
    }

    fn command(&mut self, head: &Head<'_>, refused: bool) -> Look {
        let name = head.name();
        let spec = if refused { None } else { Spec::lookup(name) };
        let mut current = Current {
            name: [0; NAME_CAP],
            name_len: name.len().min(NAME_CAP) as u8,
            argc: head.argc,
            start: head.start,
            bytes: 0,
            refused,
            spec,
            sub: None,
            want: 0,
            keys: 0,
            key: Key::NONE,
            started: None,
            lost: spec.is_some_and(|s| s.name == "monitor"),
            sampled: false,
            replace: None,
            subs: None,
        };
        current.name[..usize::from(current.name_len)]
            .copy_from_slice(&name[..usize::from(current.name_len)]);
        let mut hold = None;
        if !refused {
            match self.policy.needs(name) {
                ArgsNeeded::None => {
                    if let Err(reason) = self.policy.check(name, spec, head.argc) {
                        current.deny(&reason);
                        self.current = Some(current);
                        return Look::Refuse { reason };
                    }
                }
                ArgsNeeded::First => hold = Some(false),
                ArgsNeeded::All => hold = Some(true),
            }
            if self.sampled() {
                current.sampled = true;
                current.started = Some(Instant::now());
            }
        }
        self.forget_seen();
        current.set_want(false);
        // The subscribe family's names are followed (a RESP2 subscriber's move needs them).
        if !refused {
            current.subs = sub_command(|w| keyword_eq(name, w))
                .map(|(channels, on)| SubRequest::new(channels, on));
        }
        let look = if let Some(all) = hold {
            Look::Hold { all }
        } else if current.wants_after(0) || current.subs.is_some() {
            Look::Args
        } else {
            Look::Pass
        };
        self.current = Some(current);
        look
    }

    fn arg(&mut self, arg: &Arg<'_>) -> bool {
        let Some(current) = self.current.as_mut() else {
            return false;
        };
        let i = arg.index;
        if i == 1 {
            if let Some(spec) = current.spec.filter(|s| s.is_container()) {
                current.sub = spec.subcommand_named(arg.prefix());
                if current.sub.is_some_and(|s| s.name == "client|reply") {
                    current.lost = true;
                }
                current.set_want(true);
            }
        }
        if let Some(subs) = current.subs.as_mut().filter(|_| i >= 1) {
            subs.arg(arg.value());
        }
        if current.sampled && i == self.seen_at.len() as u64 + 1 && i <= AUDIT_ARGS {
            let prefix = arg.prefix();
            let prefix = &prefix[..prefix.len().min(NAME_CAP)];
            let from = self.seen.len();
            self.seen.extend_from_slice(prefix);
            self.seen_at.push((from, self.seen.len(), arg.len));
        }
        current.wants_after(i) || current.subs.is_some()
    }

    fn check(&mut self, held: Checked<'_>) -> Result<(), String> {
        let Some(current) = self.current.as_mut() else {
            return Ok(());
        };
        // The table's name, never the client's bytes (a name Redis does not know needs no
        // arguments, so it is never held).
        let command = current.spec.map_or("this command", |s| s.name);
        let verdict = match held {
            Checked::Args(args) => self
                .policy
                .check_args(&current.name[..usize::from(current.name_len)], args),
            Checked::TooLarge { cap } => Err(format!(
                "the role's command policy decides '{command}' by its arguments, and this one \
                 is longer than the {cap} bytes inspect mode holds back to check them"
            )),
            Checked::TooManyInline { max } => Err(format!(
                "the role's command policy decides '{command}' by its arguments, and this \
                 inline one has more than {max}: send it as a RESP array"
            )),
        };
        if let Err(reason) = &verdict {
            current.deny(reason);
        }
        verdict
    }

    fn end(&mut self, end: u64) {
        let Some(mut current) = self.current.take() else {
            return;
        };
        current.bytes = end.saturating_sub(current.start);
        if current.sampled {
            self.find_keys(&mut current);
        }
        self.forget_seen();
        if let Some(spec) = current.spec {
            match spec.name {
                "multi" => self.in_multi = true,
                "exec" | "discard" => self.in_multi = false,
                _ => {}
            }
        }
        if self.fresh_read {
            self.fresh_read = false;
            self.inspection.counters.requests_at(unix_now());
        }
        self.inspection.request(&mut current);
    }

    fn protocol_error(&mut self) {
        // The command in progress never runs: Redis answers the protocol error alone.
        self.current = None;
        self.inspection.protocol_error();
    }

    fn reauth_due(&self) -> Option<tokio::time::Instant> {
        self.next_reauth
    }

    fn quiet(&self) -> bool {
        self.current.is_none() && !self.in_multi && self.inspection.replies_quiet()
    }

    fn reauth(&mut self, outcome: Reauth<'_>) {
        let Some(every) = self.inspection.settings.reauth else {
            return;
        };
        let now = tokio::time::Instant::now();
        self.next_reauth = Some(match outcome {
            Reauth::Sent => {
                self.inspection.reauth_sent();
                self.inspection
                    .counters
                    .reauth_at(unix_now() + every.as_secs() as i64);
                now + every
            }
            Reauth::NotQuiet => now + REAUTH_RETRY.min(every),
            Reauth::Failed(reason) => {
                self.inspection.book().seam = None;
                audit::session_reauth(self.inspection.facts, "not_sent", reason);
                now + every.min(std::time::Duration::from_secs(60))
            }
            Reauth::Moving => {
                self.inspection.book().seam = Some(Seam::new());
                return;
            }
            Reauth::Moved => {
                let mut book = self.inspection.book();
                if let Some(seam) = book.seam.as_mut() {
                    seam.marker_sent();
                }
                drop(book);
                self.inspection.own_request(b"PING", 1, Cut::Marker);
                self.inspection
                    .counters
                    .reauth_at(unix_now() + every.as_secs() as i64);
                now + every
            }
            Reauth::MoveFailed(reason) => {
                self.inspection.book().seam = None;
                audit::session_reauth(self.inspection.facts, "failed", reason);
                return;
            }
        });
    }

    fn resubscribe(&mut self) -> Option<Resubscribe> {
        if self.current.is_some() || self.in_multi {
            return None;
        }
        match self.inspection.resubscribe_plan() {
            Ok(plan) => plan,
            Err(reason) => {
                // Tried again at every retry (the subscriptions may become known, e.g. by
                // an UNSUBSCRIBE of everything); said once.
                if !std::mem::replace(&mut self.unmovable_audited, true) {
                    audit::session_reauth(self.inspection.facts, "not_sent", reason);
                }
                None
            }
        }
    }
}

/// Whether a request may keep its reply waiting: the command table's `@blocking` commands
/// (BLPOP, BLMOVE, BZPOPMIN, XREAD(GROUP), …: with or without BLOCK, to be safe), WAIT, and
/// a client command the table does not know (WAITAOF of a newer server, a module's).
fn blocks(p: &Pending) -> bool {
    match p.spec {
        Some(s) => s.blocking() || s.name == "wait" || p.sub.is_some_and(Spec::blocking),
        None => p.cut.is_none() && !p.protocol_error,
    }
}

/// `-NOPERM bastion: <reason>` as one RESP error line (CR and LF can't be in it).
fn noperm(reason: &str) -> Box<[u8]> {
    let mut line = b"-NOPERM bastion: ".to_vec();
    line.extend(
        reason
            .bytes()
            .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
    line.extend_from_slice(b"\r\n");
    line.into_boxed_slice()
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The replies direction's hook: a [`Watch`] for the relay.
pub struct ReplyTap<'i, 'a> {
    inspection: &'i Inspection<'a>,
}

impl Watch for ReplyTap<'_, '_> {
    fn chunk(&mut self, bytes: &[u8], edits: &mut Vec<Edit>) -> io::Result<()> {
        self.inspection.replies_read(bytes, edits)
    }
}

/// Counted replies, for tests.
#[cfg(test)]
impl Inspection<'_> {
    pub(super) fn counts(&self) -> (u64, u64, u64, bool) {
        let b = self.book();
        (b.commands, b.errors, b.pushes, b.lost)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::guard::{Event, Framer, FramerConfig};

    /// Frame `requests` as the guard does and tell `tap` of each command, as the guard would.
    pub(super) fn feed<P: PolicyHook>(tap: &mut RequestTap<'_, '_, P>, requests: &[u8]) {
        let mut framer = Framer::new(FramerConfig::default());
        let mut rest = requests;
        tap.chunk();
        loop {
            let step = framer.advance(rest);
            rest = &rest[step.consumed..];
            let (inspect, uninspect) = match step.event {
                None if step.consumed == 0 => break,
                None => (false, false),
                Some(Event::Command(head)) => (tap.command(&head, false) == Look::Args, false),
                Some(Event::Arg(arg)) => (false, !tap.arg(&arg)),
                Some(Event::End { end }) => {
                    tap.end(end);
                    (false, false)
                }
                Some(Event::Dead { .. }) => {
                    tap.protocol_error();
                    break;
                }
            };
            if inspect {
                framer.inspect();
            }
            if uninspect {
                framer.uninspect();
            }
        }
    }

    /// What the relay writes of `part` after `watch` saw it.
    pub(super) fn through(watch: &mut ReplyTap<'_, '_>, part: &[u8]) -> Vec<u8> {
        let mut edits = Vec::new();
        watch.chunk(part, &mut edits).unwrap();
        let mut out = Vec::new();
        let mut from = 0;
        for e in &edits {
            out.extend_from_slice(&part[from..e.range.start]);
            out.extend_from_slice(&e.with);
            from = e.range.end;
        }
        out.extend_from_slice(&part[from..]);
        out
    }

    pub(super) fn settings(sample: f64) -> AuditSettings {
        AuditSettings {
            sample,
            rate: 1000,
            reauth: None,
            resp3: false,
        }
    }

    #[test]
    fn pipelined_replies_pair_in_order_across_any_split() {
        let facts = SessionFacts::default();
        let counters = Counters::default();
        let budget = AuditBudget::default();
        let requests = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\nGET k\r\n*1\r\n$4\r\nNOPE\r\n";
        let replies = b"+OK\r\n$1\r\nv\r\n-ERR unknown command 'NOPE'\r\n";
        for cut in 0..=replies.len() {
            let inspection = Inspection::new(&facts, &counters, &budget, settings(1.0));
            let mut tap = inspection.requests(&AllowAll);
            feed(&mut tap, requests);
            let mut watch = inspection.replies();
            let out = [
                through(&mut watch, &replies[..cut]),
                through(&mut watch, &replies[cut..]),
            ]
            .concat();
            assert_eq!(out, replies, "replies pass as they are");
            assert_eq!(inspection.counts(), (3, 1, 0, false), "cut at {cut}");
        }
        assert_eq!(counters.commands().0, 3 * (replies.len() as u64 + 1));
    }

    #[tokio::test]
    async fn a_reauth_reply_is_cut_out_whatever_the_reads() {
        let facts = SessionFacts::default();
        let counters = Counters::default();
        let budget = AuditBudget::default();
        let push = b">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n".as_slice();
        let get = b"$1\r\nv\r\n".as_slice();
        // A push before the AUTH's reply, the reply, then the client's GET's.
        let stream = [push, b"+OK\r\n", get].concat();
        let want = [push, get].concat();
        for a in 0..=stream.len() {
            for b in a..=stream.len() {
                let settings = AuditSettings {
                    reauth: Some(std::time::Duration::from_secs(1)),
                    resp3: true,
                    ..settings(1.0)
                };
                let inspection = Inspection::new(&facts, &counters, &budget, settings);
                let mut tap = inspection.requests(&AllowAll);
                assert!(tap.quiet());
                tap.reauth(Reauth::Sent);
                feed(&mut tap, b"GET k\r\n");
                let mut watch = inspection.replies();
                let mut out = Vec::new();
                for part in [&stream[..a], &stream[a..b], &stream[b..]] {
                    out.extend(through(&mut watch, part));
                }
                assert_eq!(out, want, "reads cut at {a} and {b}");
                assert_eq!(inspection.counts(), (1, 0, 1, false));
            }
        }
    }

    /// A re-AUTH between pipelined GETs whose replies are outstanding: its `+OK` comes in its
    /// place among theirs and is cut by position, whatever the reads — never a neighbour's
    /// reply, even one that is itself `+OK`-like (a status reply before it).
    #[tokio::test]
    async fn a_reauth_between_pipelined_commands_is_cut_by_position() {
        let facts = SessionFacts::default();
        let counters = Counters::default();
        let budget = AuditBudget::default();
        let before = b"+OK\r\n$1\r\na\r\n".as_slice();
        let after = b"$1\r\nb\r\n+OK\r\n".as_slice();
        let stream = [before, b"+OK\r\n", after].concat();
        let want = [before, after].concat();
        for a in 0..=stream.len() {
            for b in a..=stream.len() {
                let settings = AuditSettings {
                    reauth: Some(std::time::Duration::from_secs(1)),
                    ..settings(1.0)
                };
                let inspection = Inspection::new(&facts, &counters, &budget, settings);
                let mut tap = inspection.requests(&AllowAll);
                feed(&mut tap, b"SET a a\r\nGET a\r\n");
                assert!(tap.quiet(), "replies outstanding, none blocking");
                tap.reauth(Reauth::Sent);
                feed(&mut tap, b"GET b\r\nSET c c\r\n");
                let mut watch = inspection.replies();
                let mut out = Vec::new();
                for part in [&stream[..a], &stream[a..b], &stream[b..]] {
                    out.extend(through(&mut watch, part));
                }
                assert_eq!(out, want, "reads cut at {a} and {b}");
                assert_eq!(inspection.counts(), (4, 0, 0, false));
            }
        }
    }

    /// No re-AUTH behind a blocking command until its reply (the AUTH would wait with it),
    /// inside MULTI, or on a RESP2 connection subscribing; after them, one may go again.
    #[tokio::test]
    async fn no_reauth_behind_a_blocking_command_inside_multi_or_subscribing() {
        let facts = SessionFacts::default();
        let counters = Counters::default();
        let budget = AuditBudget::default();
        let settings = AuditSettings {
            reauth: Some(std::time::Duration::from_secs(1)),
            ..settings(0.0)
        };
        for blocking in [
            "BLPOP q 0\r\n",
            "BZPOPMIN z 0\r\n",
            "BLMOVE a b LEFT RIGHT 0\r\n",
            "XREAD BLOCK 0 STREAMS s $\r\n",
            "WAIT 1 0\r\n",
            "WAITAOF 1 0 0\r\n",
        ] {
            let inspection = Inspection::new(&facts, &counters, &budget, settings);
            let mut tap = inspection.requests(&AllowAll);
            feed(&mut tap, blocking.as_bytes());
            feed(&mut tap, b"GET k\r\n");
            assert!(!tap.quiet(), "{blocking} outstanding");
            through(&mut inspection.replies(), b"*-1\r\n");
            assert!(tap.quiet(), "{blocking} answered");
        }
        let inspection = Inspection::new(&facts, &counters, &budget, settings);
        let mut tap = inspection.requests(&AllowAll);
        feed(&mut tap, b"MULTI\r\nSET k v\r\n");
        assert!(!tap.quiet(), "inside MULTI");
        feed(&mut tap, b"EXEC\r\n");
        assert!(tap.quiet(), "after EXEC, its replies outstanding");
        feed(&mut tap, b"SUBSCRIBE ch\r\n");
        assert!(!tap.quiet(), "a RESP2 SUBSCRIBE outstanding");
    }

    #[test]
    fn client_reply_off_and_stray_replies_give_up_pairing() {
        let facts = SessionFacts::default();
        let counters = Counters::default();
        let budget = AuditBudget::default();
        // Sampled or not, CLIENT's subcommand is looked at.
        let inspection = Inspection::new(&facts, &counters, &budget, settings(0.0));
        let mut tap = inspection.requests(&AllowAll);
        feed(&mut tap, b"CLIENT REPLY OFF\r\nPING\r\n");
        through(&mut inspection.replies(), b"+PONG\r\n");
        assert!(
            inspection.counts().3,
            "CLIENT REPLY marks the session unpaired"
        );
        assert!(!tap.quiet(), "no re-AUTH once replies cannot be told apart");

        let inspection = Inspection::new(&facts, &counters, &budget, settings(1.0));
        through(&mut inspection.replies(), b"+OK\r\n");
        assert!(inspection.counts().3, "a reply nobody asked for");
        let err = inspection
            .replies()
            .chunk(b"?x\r\n", &mut Vec::new())
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn sampling_is_a_steady_share_and_the_budget_refills_per_second() {
        let facts = SessionFacts::default();
        let counters = Counters::default();
        let budget = AuditBudget::default();
        let inspection = Inspection::new(&facts, &counters, &budget, settings(0.25));
        let mut tap = inspection.requests(&AllowAll);
        let sampled = (0..100).filter(|_| tap.sampled()).count();
        assert_eq!(sampled, 25);

        let start = budget.epoch;
        let taken = (0..20).filter(|_| budget.take(10, start)).count();
        assert_eq!(taken, 10);
        let later = start + std::time::Duration::from_millis(500);
        assert!(!budget.take(10, later), "the same window");
        // A new window: a new second's worth, however long the quiet time was.
        let much_later = later + std::time::Duration::from_secs(60);
        let taken = (0..50).filter(|_| budget.take(10, much_later)).count();
        assert_eq!(taken, 10);
    }

    #[test]
    fn a_policy_denial_is_answered_noperm_in_place_whatever_the_reads() {
        let facts = SessionFacts::default();
        let counters = Counters::default();
        let budget = AuditBudget::default();
        let get = b"$1\r\nv\r\n".as_slice();
        // What the upstream answers the guard's refusal in the denied command's place.
        let refusal = b"-ERR unknown command 'bastion: flushall is not allowed', with args beginning with: \r\n";
        let stream = [get, refusal, get].concat();
        let want = [get, b"-NOPERM bastion: flushall is not allowed\r\n", get].concat();
        for a in 0..=stream.len() {
            for b in (a..=stream.len()).step_by(7) {
                let inspection = Inspection::new(&facts, &counters, &budget, settings(1.0));
                let mut tap = inspection.requests(&Deny("flushall"));
                feed(&mut tap, b"GET k\r\nFLUSHALL\r\nGET k\r\n");
                let mut watch = inspection.replies();
                let mut out = Vec::new();
                for part in [&stream[..a], &stream[a..b], &stream[b..]] {
                    out.extend(through(&mut watch, part));
                }
                assert_eq!(out, want, "reads cut at {a} and {b}");
                assert_eq!(inspection.counts(), (3, 1, 0, false));
            }
        }
    }

    /// A RESP2 subscriber's denied PING: the messages around the refusal's answer, in any
    /// reads, reach the client whole and in order; only the refusal's answer is replaced. And
    /// the same in RESP3, where the messages are pushes.
    #[test]
    fn a_denial_never_cuts_a_pubsub_message_or_push() {
        let facts = SessionFacts::default();
        let counters = Counters::default();
        let budget = AuditBudget::default();
        let confirm = b"*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n".as_slice();
        let m1 = b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nm1\r\n".as_slice();
        let m2 = b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nm2\r\n".as_slice();
        let p1 = b">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nm1\r\n".as_slice();
        let p2 = b">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nm2\r\n".as_slice();
        let pconfirm = b">3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n".as_slice();
        let refusal =
            b"-ERR unknown command 'bastion: ping is not allowed', with args beginning with: \r\n";
        let noperm = b"-NOPERM bastion: ping is not allowed\r\n".as_slice();
        let cases = [(false, confirm, m1, m2), (true, pconfirm, p1, p2)];
        for (resp3, confirm, m1, m2) in cases {
            // Two denied PINGs: messages before, between and after their answers.
            let stream = [confirm, m1, m1, refusal, m2, refusal, m2].concat();
            let want = [confirm, m1, m1, noperm, m2, noperm, m2].concat();
            for a in 0..=stream.len() {
                for b in (a..=stream.len()).step_by(5) {
                    let settings = AuditSettings {
                        resp3,
                        ..settings(1.0)
                    };
                    let inspection = Inspection::new(&facts, &counters, &budget, settings);
                    let mut tap = inspection.requests(&Deny("ping"));
                    feed(&mut tap, b"SUBSCRIBE ch\r\nPING\r\nPING\r\n");
                    let mut watch = inspection.replies();
                    let mut out = Vec::new();
                    for part in [&stream[..a], &stream[a..b], &stream[b..]] {
                        out.extend(through(&mut watch, part));
                    }
                    assert_eq!(
                        String::from_utf8_lossy(&out),
                        String::from_utf8_lossy(&want),
                        "resp3={resp3}, reads cut at {a} and {b}"
                    );
                    assert_eq!(inspection.counts(), (3, 2, 4, false), "resp3={resp3}");
                }
            }
        }
    }

    /// Denies the one command it names.
    struct Deny(&'static str);
    impl PolicyHook for Deny {
        fn check(&self, _: &[u8], spec: Option<&'static Spec>, _: u64) -> Result<(), String> {
            match spec {
                Some(s) if s.name == self.0 => Err(format!("{} is not allowed", self.0)),
                _ => Ok(()),
            }
        }
    }

    #[test]
    fn a_policy_denial_is_a_refusal_in_place() {
        let facts = SessionFacts::default();
        let counters = Counters::default();
        let budget = AuditBudget::default();
        let inspection = Inspection::new(&facts, &counters, &budget, settings(1.0));
        let mut tap = inspection.requests(&Deny("flushall"));
        let mut framer = Framer::new(FramerConfig::default());
        let step = framer.advance(b"FLUSHALL\r\n");
        let Some(Event::Command(head)) = step.event else {
            panic!("no command: {step:?}");
        };
        assert_eq!(
            tap.command(&head, false),
            Look::Refuse {
                reason: "flushall is not allowed".into()
            }
        );
    }
}

#[cfg(test)]
mod move_tests {
    use super::tests::{feed, settings, through};
    use super::*;

    /// What a moving session's inspection borrows.
    #[derive(Default)]
    struct Parts {
        facts: SessionFacts,
        counters: Counters,
        budget: AuditBudget,
        handover: Handover,
    }

    impl Parts {
        fn inspection(&self) -> Inspection<'_> {
            Inspection::new(&self.facts, &self.counters, &self.budget, reauthing())
                .with_handover(&self.handover)
        }
    }

    fn reauthing() -> AuditSettings {
        AuditSettings {
            reauth: Some(std::time::Duration::from_secs(1)),
            ..settings(0.0)
        }
    }

    /// The session's hooks, subscribed to `ch`.
    fn subscribed<'i, 'a>(
        inspection: &'i Inspection<'a>,
    ) -> (RequestTap<'i, 'a, AllowAll>, ReplyTap<'i, 'a>) {
        let mut tap = inspection.requests(&AllowAll);
        let mut watch = inspection.replies();
        feed(&mut tap, b"SUBSCRIBE ch\r\n");
        through(&mut watch, b"*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n");
        (tap, watch)
    }

    fn message(ch: &str, payload: &str) -> Vec<u8> {
        format!(
            "*3\r\n$7\r\nmessage\r\n${}\r\n{ch}\r\n${}\r\n{payload}\r\n",
            ch.len(),
            payload.len()
        )
        .into_bytes()
    }

    /// A RESP2 subscriber's move, whatever the reads: the old connection's messages pass until
    /// the marker's reply (cut out, with what follows it), the new connection's repeats of them
    /// are dropped, and after the seam the session can move again.
    #[tokio::test]
    async fn a_moved_subscribers_seam_drops_the_marker_and_the_repeats() {
        let m: Vec<Vec<u8>> = (0..7).map(|i| message("ch", &format!("m{i}"))).collect();
        let old_tail = [&m[2][..], &m[3], b"*2\r\n$4\r\npong\r\n$0\r\n\r\n", &m[4]].concat();
        let unsubscribed = b"*3\r\n$11\r\nunsubscribe\r\n$2\r\nch\r\n:0\r\n";
        let new = [&m[3][..], &m[4], &m[5], &m[6], unsubscribed].concat();
        for cut in 0..=new.len() {
            let parts = Parts::default();
            let inspection = parts.inspection();
            let (mut tap, mut watch) = subscribed(&inspection);
            let plan = tap.resubscribe().expect("a plan");
            assert_eq!(plan.commands, b"*2\r\n$9\r\nSUBSCRIBE\r\n$2\r\nch\r\n");
            assert_eq!(plan.confirmations, 1);
            tap.reauth(Reauth::Moving);
            let before = [&m[0][..], &m[1]].concat();
            assert_eq!(through(&mut watch, &before), before);
            tap.reauth(Reauth::Moved);
            assert!(tap.resubscribe().is_none(), "moving");
            // m2 and m3 arrive after the marker was sent; m4 after its reply is the new one's.
            let mut out = through(&mut watch, &old_tail[..m[2].len() + 5]);
            out.extend(through(&mut watch, &old_tail[m[2].len() + 5..]));
            assert_eq!(out, [&m[2][..], &m[3]].concat());
            // The client unsubscribes on the new connection meanwhile.
            feed(&mut tap, b"UNSUBSCRIBE ch\r\n");
            let mut out = through(&mut watch, &new[..cut]);
            out.extend(through(&mut watch, &new[cut..]));
            // m3 was the old connection's; m4 came after its marker there, so it is new.
            let want = &new[m[3].len()..];
            assert_eq!(out, want, "new connection read cut at {cut}");
            assert!(!inspection.counts().3, "paired");
            // Unsubscribed from everything: the seam is over, AUTH works in place again.
            assert!(inspection.book().seam.is_none(), "cut at {cut}");
            assert!(tap.quiet());
        }
    }

    #[test]
    fn a_subscriber_with_a_name_not_kept_whole_is_not_moved() {
        let parts = Parts::default();
        let inspection = parts.inspection();
        let mut tap = inspection.requests(&AllowAll);
        let mut watch = inspection.replies();
        let long = "c".repeat(5000);
        feed(&mut tap, format!("SUBSCRIBE {long}\r\n").as_bytes());
        let confirmed = format!("*3\r\n$9\r\nsubscribe\r\n$5000\r\n{long}\r\n:1\r\n");
        through(&mut watch, confirmed.as_bytes());
        assert!(tap.resubscribe().is_none());
        assert!(tap.unmovable_audited);
        // Unsubscribed from it: AUTH works in place again.
        feed(&mut tap, b"UNSUBSCRIBE\r\n");
        let gone = format!("*3\r\n$11\r\nunsubscribe\r\n$5000\r\n{long}\r\n:0\r\n");
        through(&mut watch, gone.as_bytes());
        assert!(tap.quiet());
        // Subscribed again to names it keeps: it can move.
        feed(&mut tap, b"SUBSCRIBE ch\r\n");
        through(&mut watch, b"*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n");
        assert!(tap.resubscribe().is_some());
    }

    #[tokio::test]
    async fn after_the_seam_the_session_can_move_again() {
        let parts = Parts::default();
        let inspection = parts.inspection();
        let (mut tap, mut watch) = subscribed(&inspection);
        for round in 0..3 {
            let m: Vec<Vec<u8>> = (0..3)
                .map(|i| message("ch", &format!("r{round}m{i}")))
                .collect();
            tap.resubscribe().expect("a plan");
            tap.reauth(Reauth::Moving);
            through(&mut watch, &m[0]);
            tap.reauth(Reauth::Moved);
            let old = [&m[1][..], b"*2\r\n$4\r\npong\r\n$0\r\n\r\n"].concat();
            assert_eq!(through(&mut watch, &old), m[1]);
            if round == 1 {
                // No message on the new connection before the next move: that one still
                // happens, and ends this seam.
                continue;
            }
            let new = [&m[1][..], &m[2]].concat();
            assert_eq!(through(&mut watch, &new), m[2], "round {round}");
        }
        assert!(tap.resubscribe().is_some());
    }
}
