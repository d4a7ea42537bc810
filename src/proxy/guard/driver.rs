//! The guard on the wire: runs a session's requests direction (client → upstream) through the
//! [`Framer`], applying [`rules`](super::rules), as a [`Requests`] filter of the relay.
//!
//! Per read chunk: opaque payload bytes are passed on without being looked at; every other byte
//! belongs to the command being framed and is held until that command is named. Then it is
//! either forwarded (with everything after it, as it arrives — a 10 MB value is never buffered
//! whole; on plain legs the rest of a large argument is not even read: the relay's [`Bypass`]
//! splices exactly its bytes, and framing resumes after them) or, for AUTH / HELLO / RESET and
//! names with a NUL, dropped to its end and replaced by what the rules say. Everything due
//! upstream is written, in stream order, before the next read, so pipelined commands are never
//! reordered and never held back longer than the rule for the command before them needs (its
//! end, or a fresh IAM token for a re-AUTH).
//!
//! Inspect mode adds one more hold: a command the session's command policy decides by its
//! arguments (a subcommand, a first argument, keys under a key-restricted role: the observer's
//! [`Look::Hold`]) is held from its first byte until the arguments the policy needs have
//! arrived — the first one, or all of them — and then either goes on (its held bytes first, in
//! order, the rest streamed) or is refused in place. Only that command waits: the ones before
//! it went on already, the ones after it are framed behind it in stream order. At most
//! [`HOLD_CAP`] bytes are held; a command that needs more is refused.
//!
//! A due re-AUTH (inspect mode) goes at a command end the observer calls quiet — within a read
//! too, after the read's bytes before it — or, when the client's read would wait, between reads;
//! a client whose bytes are always ready is not passed over.
//!
//! In inspect mode a due re-AUTH of a RESP2 subscriber (which cannot run AUTH) is a move
//! instead ([`Policy::resubscribe`]): the client's requests wait while a new connection is made,
//! a [`MARKER`] ends the old one's replies, and the new one takes the requests.
//!
//! What it must never do: forward a byte of a command before it is named (or, held for its
//! arguments, before it is allowed), forward any byte of a held command (the client's
//! password), write to the client (replies are the relay's, in order), or log what it moves.

use std::future::Future;
use std::io;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use zeroize::Zeroizing;

use super::framer::{Arg, Event, Framer, FramerConfig, Head, NAME_CAP, PROTO_INLINE_MAX_SIZE};
use super::rules::{self, Guarded, Held, HeldArg, Naming, Verdict};
use super::ProtocolError;
use crate::proxy::relay::{read_pooled, Bypass, Passed, RelayError, Requests, Side};

/// Per held command, bytes of long arguments kept whole (an IAM token is ~1.5 KB).
const INSPECT_BYTES: usize = 4096;
/// The most bytes a command can have before it is named (count line, name header line, name
/// prefix — or one inline line); older held bytes are skipped filler (`*0`, empty lines).
const PRE_NAME_MAX: usize = 2 * (PROTO_INLINE_MAX_SIZE as usize + 2) + NAME_CAP;
/// The most bytes of one command inspect mode holds back while the command policy waits for
/// its arguments (its header, name and arguments up to the last one the policy needs — for a
/// key-restricted role that is every argument, values included). A command still undecided
/// past it is refused (`Checked::TooLarge`) rather than buffered without bound: a 1 GB key
/// sent to a key-restricted role costs the bastion 64 KiB, not 1 GB. Redis' own inline limit
/// is the same size, and keys and subcommands are far shorter.
pub const HOLD_CAP: usize = 64 * 1024;
/// The least of a large argument's remaining bytes worth a [`Bypass`] instead of reads and
/// writes through the pooled read buffer (256 KiB; it was 64 KiB when this was measured).
/// Measured on a Unix client → TCP upstream (kernel 6.1, SET through the guard, 5 rounds each):
/// splicing the rest of a 100 kB value (≈ 36 kB after the first read) cost 10 % more system CPU
/// than copying it; for 1 MB values splicing cost 6–10 % less. Below this, copy.
const BYPASS_MIN: u64 = 256 * 1024;
/// After a protocol error, how long the client's leftovers are discarded while Redis answers
/// and closes, before the upstream is half-closed regardless.
const DEAD_GRACE: Duration = Duration::from_secs(5);

/// What the guard needs from the session: who it is upstream, how to say so again, and where
/// to report what it did.
pub trait Policy: Send + Sync {
    /// The session's db-user upstream (`None`: the upstream's `default` user).
    fn db_user(&self) -> Option<&str>;

    /// The command that authenticates the upstream connection again as the session's own
    /// db-user (bastion's secret; a fresh IAM token). `Err` is a reason for the audit.
    fn reauth(&self) -> impl Future<Output = Result<Zeroizing<Vec<u8>>, String>> + Send;

    /// Audit what the guard did to one command.
    fn audit(&self, event: GuardEvent<'_>);

    /// Inspect mode, a RESP2 subscriber (which cannot run AUTH): a fresh upstream connection,
    /// authenticated as the session's db-user and subscribed by `plan` (its confirmations
    /// swallowed), staged to take the current connection's place — not used before
    /// [`Policy::switch_over`].
    fn resubscribe(
        &self,
        plan: &Resubscribe,
    ) -> impl Future<Output = Result<(), MoveError>> + Send {
        let _ = plan;
        async {
            Err(MoveError::NotSent(
                "this session cannot move upstream".into(),
            ))
        }
    }

    /// The staged connection takes the requests from the next write on (the old connection's
    /// replies still come first: the replies watch says when they are over).
    fn switch_over(&self) {}
}

/// How a RESP2 subscriber's new upstream connection is subscribed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resubscribe {
    /// `SUBSCRIBE` / `PSUBSCRIBE` / `SSUBSCRIBE` commands, encoded.
    pub commands: Vec<u8>,
    /// The confirmations they get (one per channel or pattern).
    pub confirmations: u64,
}

/// Why no connection could be staged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MoveError {
    /// Nothing was tried (no secret to authenticate with): try again later, as for an AUTH
    /// that could not be made.
    NotSent(String),
    /// The dial, the AUTH or the subscriptions failed: the session ends, as when the upstream
    /// refuses a re-AUTH.
    Failed(String),
}

/// What the guard did, for the audit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuardEvent<'a> {
    /// Refused; the upstream answers an unknown-command error carrying `reason`.
    Refused { command: &'a str, reason: &'a str },
    /// Answered for the client: `action` says how (re-authenticated, AUTH part removed).
    Rewritten { command: &'a str, action: &'a str },
}

/// What inspect mode sees of the requests the guard frames: each command as it is named (and
/// its arguments, when asked for), its end, protocol errors. Called in stream order, before
/// the command's bytes (or what replaces them) are written upstream, so a reply can never
/// arrive for a request the observer has not been told of. Guard mode observes nothing.
pub trait Observer: Send {
    /// `false` only for an observer that is told nothing ([`Unobserved`]): the guard may then
    /// forward whole commands its rules pass without framing them event by event.
    const WATCHES: bool = true;

    /// The commands of a new read follow.
    fn chunk(&mut self) {}

    /// `head` was named. `refused`: the guard replaces it by a refusal the upstream answers.
    fn command(&mut self, head: &Head<'_>, refused: bool) -> Look {
        let _ = (head, refused);
        Look::Pass
    }

    /// An argument asked for by [`Look::Args`]; `true` to see the next one too.
    fn arg(&mut self, arg: &Arg<'_>) -> bool {
        let _ = arg;
        false
    }

    /// The command named last is complete (Redis runs it once it has the stream up to `end`).
    fn end(&mut self, end: u64) {
        let _ = end;
    }

    /// A protocol error instead of the rest of the stream (Redis answers one error).
    fn protocol_error(&mut self) {}

    /// When the upstream connection should be authenticated again (`None`: never). From that
    /// time, at each command end (and when the client's read would wait), the guard asks
    /// [`Observer::quiet`] and, if so, sends [`Policy::reauth`] upstream.
    fn reauth_due(&self) -> Option<tokio::time::Instant> {
        None
    }

    /// Whether a command of the bastion's own may go upstream now, between two commands,
    /// without the client seeing its reply or its effect: replies may be outstanding (its own
    /// is cut by position), but not a blocking command's; not inside MULTI, not a RESP2
    /// subscribed connection (which cannot run AUTH), not once replies cannot be paired.
    fn quiet(&self) -> bool {
        false
    }

    /// A command held by [`Look::Hold`] has the arguments the decision needs (or cannot be
    /// held). `Err(reason)` refuses it in place, as [`Look::Refuse`] does; a [`Checked`] other
    /// than `Args` is always refused (its `Err` gives the reason).
    fn check(&mut self, held: Checked<'_>) -> Result<(), String> {
        let _ = held;
        Ok(())
    }

    /// What became of a due re-AUTH. Called before [`Reauth::Sent`]'s bytes are written, so
    /// the reply side knows to swallow its reply.
    fn reauth(&mut self, outcome: Reauth<'_>) {
        let _ = outcome;
    }

    /// At a due re-AUTH, between commands: `Some` when the connection is a RESP2 subscriber
    /// (which cannot run AUTH) at an otherwise quiet point and its subscriptions are known —
    /// it is to move to a fresh connection subscribed by the plan.
    fn resubscribe(&mut self) -> Option<Resubscribe> {
        None
    }
}

/// What became of a due re-AUTH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reauth<'a> {
    /// Written upstream (its reply is the bastion's).
    Sent,
    /// Not a quiet point: try again soon.
    NotQuiet,
    /// No command could be made (no token): the reason, for the audit.
    Failed(&'a str),
    /// A RESP2 subscriber's move begins: a new connection is being made and subscribed (the
    /// old one's messages go on meanwhile).
    Moving,
    /// The new connection confirmed every subscription: [`MARKER`] is written on the old one
    /// next (its reply is the bastion's and ends that connection's replies), then the new one
    /// takes the requests.
    Moved,
    /// The move failed: the reason, for the audit; the session ends.
    MoveFailed(&'a str),
}

/// What ends the old connection's replies when a subscriber moves: a `PING`, which a
/// subscribed RESP2 connection answers in order with `*2 pong ""` after every message
/// published before it; later ones reach the new connection.
pub const MARKER: &[u8] = b"*1\r\n$4\r\nPING\r\n";

/// What a command held by [`Look::Hold`] brings to [`Observer::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checked<'a> {
    /// Its arguments, each whole: the first one (or none, if it has none), or all of them.
    Args(&'a [Vec<u8>]),
    /// The command outgrew `cap` bytes before the decision could be made.
    TooLarge { cap: usize },
    /// An inline command with more arguments than the framer keeps (`max`).
    TooManyInline { max: usize },
}

/// What an [`Observer`] wants of a command just named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Look {
    /// Nothing more: its bytes go on unseen.
    Pass,
    /// Its arguments, one [`Observer::arg`] each, until that returns `false`.
    Args,
    /// Refuse it (a command policy's denial): dropped to its end, the upstream never sees it
    /// and answers a refusal carrying `reason` in its place.
    Refuse { reason: String },
    /// Hold its bytes back until its first argument (`all`: every argument) has arrived, then
    /// ask [`Observer::check`]. Its arguments are also shown to [`Observer::arg`], as for
    /// `Args`, until that returns `false`.
    Hold { all: bool },
}

/// Guard mode: nothing observed.
#[derive(Debug, Clone, Copy, Default)]
pub struct Unobserved;

impl Observer for Unobserved {
    const WATCHES: bool = false;
}

/// The command guard for one session: a [`Requests`] filter.
pub struct Guard<P, O = Unobserved> {
    policy: P,
    /// Bytes a command may be held for its arguments ([`Look::Hold`]): 0 in guard mode.
    hold_bytes: usize,
    /// Client bytes read before the relay (behind the opening frame), framed first.
    initial: Vec<u8>,
    observer: O,
}

impl<P: Policy> Guard<P> {
    pub fn new(policy: P, initial: Vec<u8>) -> Guard<P> {
        Guard {
            policy,
            hold_bytes: 0,
            initial,
            observer: Unobserved,
        }
    }
}

impl<P: Policy, O: Observer> Guard<P, O> {
    /// The guard with `observer` told of every command (inspect mode).
    pub fn observed(policy: P, initial: Vec<u8>, observer: O) -> Guard<P, O> {
        Guard {
            policy,
            hold_bytes: HOLD_CAP,
            initial,
            observer,
        }
    }
}

impl<P: Policy, O: Observer> Requests for Guard<P, O> {
    async fn run<R, W, B>(
        self,
        mut client: R,
        mut upstream: W,
        bypass: &B,
        moved: &AtomicU64,
    ) -> Result<(), RelayError>
    where
        R: AsyncRead + Unpin + Send,
        W: AsyncWrite + Unpin + Send,
        B: Bypass,
    {
        let Guard {
            policy,
            hold_bytes,
            initial,
            observer,
        } = self;
        let mut state = State::new(&policy, observer, hold_bytes);
        let mut sink = Upstream {
            writer: &mut upstream,
            moved,
        };
        state.observer.chunk();
        let mut flow = state.feed(&initial, &mut sink).await?;
        drop(initial);
        while flow == Flow::Open {
            // The rest of a large argument of a forwarded command: nothing in it is looked at,
            // so on plain legs it goes by splice, never more than the argument's own bytes
            // (what follows it is framed as usual). Everything before it was written by `feed`.
            let unseen = state.unseen();
            if unseen >= BYPASS_MIN {
                match bypass.pass(unseen).await? {
                    Passed::Moved(n) => {
                        state.framer.skip(n);
                        continue;
                    }
                    Passed::Eof => return sink.shutdown().await,
                    Passed::Unavailable => {}
                }
            }
            // A pooled buffer, held only while a read's bytes are framed and written: an idle
            // session holds none. (A read that loses the race with a due re-AUTH has read
            // nothing: `read_pooled` takes its bytes in one poll.)
            let read = match state.observer.reauth_due() {
                None => read_pooled(&mut client).await,
                Some(due) => tokio::select! {
                    biased;
                    read = read_pooled(&mut client) => read,
                    () = tokio::time::sleep_until(due) => {
                        state.reauth_now(&mut sink).await?;
                        continue;
                    }
                },
            };
            let chunk = match read {
                // The client's EOF. Between two commands, with the client gone for good, the
                // relay may keep the upstream connection for another session (the warm pool
                // cleans it first); else the EOF goes upstream, as a direct client's would.
                Ok(chunk) if chunk.is_empty() => {
                    if state.between() && state.out.is_empty() && bypass.keep_upstream() {
                        return Ok(());
                    }
                    return sink.shutdown().await;
                }
                Ok(chunk) => chunk,
                // A TLS peer closing without close_notify is a close (see relay/copy.rs).
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return sink.shutdown().await,
                Err(source) => {
                    return Err(RelayError::Read {
                        side: Side::Client,
                        source,
                    })
                }
            };
            state.observer.chunk();
            flow = state.feed(&chunk, &mut sink).await?;
        }
        // A protocol error: Redis answers it (after the replies before it) and closes, which
        // ends the replies direction. Nothing more of the client's goes up; wait for its EOF
        // (or the grace) before half-closing, so no reply before the error is cut short.
        let discard = async {
            while let Ok(chunk) = read_pooled(&mut client).await {
                if chunk.is_empty() {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(DEAD_GRACE, discard).await;
        // The upstream may be gone already; that is the expected end here.
        let _ = sink.writer.shutdown().await;
        Ok(())
    }
}

/// Whether more of the client's stream may go upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Open,
    /// A protocol error was passed on: nothing after it runs.
    Dead,
}

/// Where the bytes of the current command go.
#[derive(Debug)]
enum Mode {
    /// Not named yet: held in `held`.
    Pending,
    /// Named and allowed: forwarded.
    Forward,
    /// Held to its end (dropped), then decided.
    Hold(Held),
    /// Dropped to its end, then refused: its name (escaped), why.
    Refuse { command: String, reason: String },
    /// Held (bytes kept) until the policy has the arguments it needs (inspect mode).
    Check(Box<Check>),
}

/// A command held for its arguments ([`Look::Hold`]).
#[derive(Debug)]
struct Check {
    /// Its name, escaped (for the audit of a refusal).
    command: String,
    /// Every argument needed, not only the first.
    all: bool,
    argc: u64,
    /// Its bytes so far, from its first: at most [`HOLD_CAP`].
    bytes: Vec<u8>,
    args: Vec<Vec<u8>>,
    /// No argument came cut short (past the framer's hold budget).
    whole: bool,
    /// The observer still wants to see its arguments.
    observing: bool,
}

/// The framing state of one session's requests.
struct State<'p, P, O> {
    policy: &'p P,
    observer: O,
    framer: Framer,
    mode: Mode,
    /// Bytes of the command not yet named that came in earlier reads, from stream offset
    /// `held_start`…
    held: Vec<u8>,
    held_start: u64,
    /// …and those of the current read: a range of it, from stream offset `pending_start`
    /// (copied into `held` only if the read ends before the command is named).
    pending: Option<Range<usize>>,
    pending_start: u64,
    /// Bytes due upstream from the current chunk, in order…
    out: Vec<u8>,
    /// …or, while `out` is empty, the range of the chunk that is due (written without a copy).
    direct: Option<Range<usize>>,
}

/// An event, owned, so the framer can be told to inspect while it is handled.
enum Owned {
    Command {
        start: u64,
        naming: Naming,
        args: bool,
        check: Option<Box<Check>>,
    },
    Arg(HeldArg),
    /// An argument of a command held for the policy; `more`: the observer wants the next.
    CheckArg {
        index: u64,
        value: Option<Vec<u8>>,
        more: bool,
    },
    /// An argument the observer saw; `more`: it wants the next one.
    Seen {
        more: bool,
    },
    /// The command's end; `told`: the observer was told already (not for a command held for
    /// the policy, which is decided first).
    End {
        end: u64,
        told: bool,
    },
    Dead(ProtocolError),
}

impl<'p, P: Policy, O: Observer> State<'p, P, O> {
    fn new(policy: &'p P, observer: O, hold_bytes: usize) -> Self {
        State {
            policy,
            observer,
            framer: Framer::new(FramerConfig {
                // The bastion authenticated the connection (or its `default` user needs no
                // password): Redis applies no pre-authentication limits.
                authenticated: true,
                inspect_bytes: INSPECT_BYTES,
                hold_bytes,
                ..FramerConfig::default()
            }),
            mode: Mode::Pending,
            held: Vec::new(),
            held_start: 0,
            pending: None,
            pending_start: 0,
            // Grows only if a command needs it (most reads are written straight from the chunk).
            out: Vec::new(),
            direct: None,
        }
    }

    /// Frame `chunk`, writing upstream everything of it that is due, in order.
    async fn feed<W: AsyncWrite + Unpin>(
        &mut self,
        chunk: &[u8],
        sink: &mut Upstream<'_, W>,
    ) -> Result<Flow, RelayError> {
        self.direct = None;
        let mut pos = 0;
        // A due re-AUTH goes at the first command end of this read where the upstream allows
        // one: a client that never pauses still gets it (the timer in `run` is reached only
        // when a read would wait). One clock read per read, and only once it is due.
        let mut reauth_due = self
            .observer
            .reauth_due()
            .is_some_and(|due| due <= tokio::time::Instant::now());
        loop {
            if !O::WATCHES
                && matches!(self.mode, Mode::Pending)
                && self.pending.is_none()
                && self.held.is_empty()
            {
                // Between commands, with no observer: whole commands the rules forward go on
                // as one range, without an event each.
                let skimmed = self
                    .framer
                    .skim(&chunk[pos..], |command| rules::forwards(command.name));
                if skimmed > 0 {
                    self.forward(chunk, pos..pos + skimmed);
                    pos += skimmed;
                }
            }
            let opaque = self.framer.opaque_len().min((chunk.len() - pos) as u64) as usize;
            if opaque > 0 {
                self.framer.skip(opaque as u64);
                self.take(chunk, pos..pos + opaque);
                pos += opaque;
            }
            let step = self.framer.advance(&chunk[pos..]);
            let consumed = step.consumed;
            let observer = &mut self.observer;
            let held = matches!(self.mode, Mode::Hold(_));
            let checking = match &self.mode {
                Mode::Check(check) => Some(check.observing),
                _ => None,
            };
            let event = step.event.map(|event| match event {
                Event::Command(head) => {
                    let naming = rules::on_name(&head);
                    let refused = matches!(naming, Naming::Refuse { .. });
                    match (observer.command(&head, refused), naming) {
                        (Look::Refuse { reason }, Naming::Forward) => Owned::Command {
                            start: head.start,
                            naming: Naming::Refuse {
                                command: head.name().escape_ascii().to_string(),
                                reason,
                            },
                            args: false,
                            check: None,
                        },
                        (Look::Hold { all }, Naming::Forward) => Owned::Command {
                            start: head.start,
                            naming: Naming::Forward,
                            args: false,
                            check: Some(Box::new(Check {
                                command: head.name().escape_ascii().to_string(),
                                all,
                                argc: head.argc,
                                bytes: Vec::new(),
                                args: Vec::new(),
                                whole: true,
                                observing: true,
                            })),
                        },
                        (look, naming) => Owned::Command {
                            start: head.start,
                            args: look == Look::Args && matches!(naming, Naming::Forward),
                            naming,
                            check: None,
                        },
                    }
                }
                Event::Arg(arg) if checking.is_some() => Owned::CheckArg {
                    index: arg.index,
                    value: arg.value().map(<[u8]>::to_vec),
                    more: checking == Some(true) && observer.arg(&arg),
                },
                Event::Arg(arg) if !held => Owned::Seen {
                    more: observer.arg(&arg),
                },
                Event::Arg(arg) => Owned::Arg(HeldArg {
                    bytes: zeroize::Zeroizing::new(arg.prefix().to_vec()),
                    whole: arg.value().is_some(),
                }),
                Event::End { end } => {
                    let told = checking.is_none();
                    if told {
                        observer.end(end);
                    }
                    Owned::End { end, told }
                }
                Event::Dead { error, .. } => {
                    observer.protocol_error();
                    Owned::Dead(error)
                }
            });
            // The consumed bytes belong to the command being framed, as it stood before the
            // event (its header and name before `Command`, its last bytes before `End`).
            self.take(chunk, pos..pos + consumed);
            pos += consumed;
            if matches!(
                (&event, &self.mode),
                (Some(Owned::Dead(_)), _)
                    | (
                        Some(Owned::End { .. }),
                        Mode::Hold(_) | Mode::Refuse { .. } | Mode::Check(_)
                    )
            ) {
                // The event adds bytes of its own: they go after what is due already.
                self.materialize(chunk);
            }
            match event {
                None if consumed == 0 => break,
                None => {}
                Some(Owned::Command {
                    start,
                    naming,
                    args,
                    check,
                }) => {
                    self.named(chunk, start, naming, check);
                    if args {
                        self.framer.inspect();
                    }
                }
                Some(Owned::CheckArg { index, value, more }) => {
                    if let Mode::Check(check) = &mut self.mode {
                        check.observing = more;
                        match value {
                            Some(value) => check.args.push(value),
                            None => check.whole = false,
                        }
                        if !check.all && index == 1 {
                            // The rest of the command streams behind its held bytes.
                            self.materialize(chunk);
                            self.decide_held();
                        }
                    }
                }
                Some(Owned::Seen { more: false }) => self.framer.uninspect(),
                Some(Owned::Seen { more: true }) => {}
                Some(Owned::Arg(arg)) => {
                    if let Mode::Hold(held) = &mut self.mode {
                        held.args.push(arg);
                    }
                }
                Some(Owned::End { end, told }) => {
                    if !told {
                        self.decide_held();
                        self.observer.end(end);
                    }
                    self.end(sink).await?;
                    if reauth_due && self.between() && self.observer.quiet() {
                        reauth_due = false;
                        self.materialize(chunk);
                        self.reauth_inline(sink).await?;
                    }
                }
                Some(Owned::Dead(error)) => {
                    self.dead(error);
                    self.flush(chunk, sink).await?;
                    return Ok(Flow::Dead);
                }
            }
        }
        // A command not named by the end of this read: keep its bytes for the next.
        if let Some(range) = self.pending.take() {
            if self.held.is_empty() {
                self.held_start = self.pending_start;
            }
            self.held.extend_from_slice(&chunk[range]);
            self.trim_held();
        }
        self.flush(chunk, sink).await?;
        Ok(Flow::Open)
    }

    /// How many of the client's next bytes may go upstream unread (a [`Bypass`]): the rest of
    /// an argument of a forwarded command, once everything before it is written. Guard mode
    /// only: an observer may want to see arguments.
    fn unseen(&self) -> u64 {
        let forwarding = matches!(self.mode, Mode::Forward)
            && self.pending.is_none()
            && self.held.is_empty()
            && self.out.is_empty()
            && self.direct.is_none();
        if O::WATCHES || !forwarding {
            return 0;
        }
        self.framer.opaque_len()
    }

    /// Write what is due: the chunk's forwarded range as it is (no copy), or `out`.
    async fn flush<W: AsyncWrite + Unpin>(
        &mut self,
        chunk: &[u8],
        sink: &mut Upstream<'_, W>,
    ) -> Result<(), RelayError> {
        match self.direct.take() {
            Some(range) => sink.write(&chunk[range]).await,
            None => {
                sink.write(&self.out).await?;
                self.out.clear();
                Ok(())
            }
        }
    }

    /// Move the forwarded range of `chunk` into `out`, so more can follow it there.
    fn materialize(&mut self, chunk: &[u8]) {
        if let Some(range) = self.direct.take() {
            self.out.extend_from_slice(&chunk[range]);
        }
    }

    /// Route bytes of the current command by its mode.
    fn take(&mut self, chunk: &[u8], range: Range<usize>) {
        match self.mode {
            Mode::Pending if range.is_empty() => {}
            // Continuing a command from an earlier read: all of it is in `held`.
            Mode::Pending if !self.held.is_empty() => {
                self.held.extend_from_slice(&chunk[range]);
                self.trim_held();
            }
            Mode::Pending => match &mut self.pending {
                Some(pending) => pending.end = range.end,
                None => {
                    self.pending_start = self.framer.offset() - range.len() as u64;
                    self.pending = Some(range);
                }
            },
            Mode::Forward => self.forward(chunk, range),
            Mode::Check(ref mut check) => {
                check.bytes.extend_from_slice(&chunk[range]);
                self.check_cap();
            }
            Mode::Hold(_) | Mode::Refuse { .. } => {}
        }
    }

    /// A held command past [`HOLD_CAP`] is refused before it holds more.
    fn check_cap(&mut self) {
        if matches!(&self.mode, Mode::Check(check) if check.bytes.len() > HOLD_CAP) {
            if let Mode::Check(check) = &mut self.mode {
                // Not the policy's: the decision comes without them.
                check.bytes = Vec::new();
                check.whole = false;
            }
            self.decide_held();
        }
    }

    /// Decide a command held for its arguments ([`Mode::Check`]): allowed, its held bytes are
    /// due (after whatever is due already: the caller materialized the chunk's forwarded
    /// range) and the rest of it is forwarded; refused, it is dropped to its end.
    fn decide_held(&mut self) {
        let Mode::Check(check) = std::mem::replace(&mut self.mode, Mode::Pending) else {
            return;
        };
        let wanted = if check.all {
            check.argc.saturating_sub(1)
        } else {
            check.argc.saturating_sub(1).min(1)
        };
        let held = if !check.whole {
            Checked::TooLarge { cap: HOLD_CAP }
        } else if (check.args.len() as u64) < wanted {
            Checked::TooManyInline {
                max: super::framer::INLINE_ARG_SLOTS,
            }
        } else {
            Checked::Args(&check.args)
        };
        let verdict = self.observer.check(held);
        let verdict = match (held, verdict) {
            (Checked::Args(_), verdict) => verdict,
            (_, Err(reason)) => Err(reason),
            (_, Ok(())) => Err("the command is too large to check against the policy".into()),
        };
        match verdict {
            Ok(()) => {
                self.out.extend_from_slice(&check.bytes);
                if !check.observing {
                    self.framer.uninspect();
                }
                self.mode = Mode::Forward;
            }
            Err(reason) => {
                self.framer.uninspect();
                self.mode = Mode::Refuse {
                    command: check.command,
                    reason,
                };
            }
        }
    }

    /// Forward `range` of `chunk`: while `out` is empty, contiguous forwarded bytes stay a
    /// range of the chunk (written without a copy).
    fn forward(&mut self, chunk: &[u8], range: Range<usize>) {
        match &mut self.direct {
            Some(direct) if direct.end == range.start => direct.end = range.end,
            None if self.out.is_empty() => self.direct = Some(range),
            _ => {
                self.materialize(chunk);
                self.out.extend_from_slice(&chunk[range]);
            }
        }
    }

    /// Only filler can be this far back: a command's own bytes before its name are newer.
    fn trim_held(&mut self) {
        if self.held.len() > 2 * PRE_NAME_MAX {
            let drop = self.held.len() - PRE_NAME_MAX;
            self.held.drain(..drop);
            self.held_start += drop as u64;
        }
    }

    fn named(&mut self, chunk: &[u8], start: u64, naming: Naming, check: Option<Box<Check>>) {
        // Bytes before `start` are filler Redis skips (`*0`, empty lines).
        let pending = self.pending.take();
        if let (Naming::Forward, Some(mut check)) = (&naming, check) {
            // Held for the policy: its own bytes so far are kept, not forwarded.
            if self.held.is_empty() {
                if let Some(range) = pending {
                    let skip = usize::try_from(start.saturating_sub(self.pending_start))
                        .unwrap_or(usize::MAX)
                        .min(range.len());
                    check
                        .bytes
                        .extend_from_slice(&chunk[range.start + skip..range.end]);
                }
            } else {
                let from =
                    usize::try_from(start.saturating_sub(self.held_start)).unwrap_or(usize::MAX);
                check
                    .bytes
                    .extend_from_slice(self.held.get(from..).unwrap_or_default());
            }
            self.held.clear();
            self.framer.hold();
            self.mode = Mode::Check(check);
            self.check_cap();
            return;
        }
        if matches!(naming, Naming::Forward) {
            if self.held.is_empty() {
                if let Some(range) = pending {
                    let skip = usize::try_from(start.saturating_sub(self.pending_start))
                        .unwrap_or(usize::MAX)
                        .min(range.len());
                    self.forward(chunk, range.start + skip..range.end);
                }
            } else {
                let from =
                    usize::try_from(start.saturating_sub(self.held_start)).unwrap_or(usize::MAX);
                self.materialize(chunk);
                let own = self.held.get(from..).unwrap_or_default();
                self.out.extend_from_slice(own);
            }
        }
        self.held.clear();
        self.mode = match naming {
            Naming::Forward => Mode::Forward,
            Naming::Hold(command) => {
                self.framer.inspect();
                Mode::Hold(Held {
                    command,
                    args: Vec::new(),
                })
            }
            Naming::Refuse { command, reason } => Mode::Refuse { command, reason },
        };
    }

    /// The current command is complete: forwarded already, or decided now.
    async fn end<W: AsyncWrite + Unpin>(
        &mut self,
        sink: &mut Upstream<'_, W>,
    ) -> Result<(), RelayError> {
        match std::mem::replace(&mut self.mode, Mode::Pending) {
            Mode::Pending | Mode::Forward => Ok(()),
            // Decided before the observer was told of its end.
            Mode::Check(_) => Ok(()),
            Mode::Refuse { command, reason } => {
                self.refuse(&command, &reason);
                Ok(())
            }
            Mode::Hold(held) => {
                let command = held.command.name();
                match rules::decide(&held, self.policy.db_user()) {
                    Verdict::Refuse(reason) => self.refuse(command, &reason),
                    Verdict::Replace(bytes) => {
                        self.out.extend_from_slice(&bytes);
                        self.policy.audit(GuardEvent::Rewritten {
                            command,
                            action: "sent without its AUTH part",
                        });
                    }
                    Verdict::Reauth => return self.reauth(held.command, sink).await,
                }
                Ok(())
            }
        }
    }

    /// Between two commands: nothing of the next one read yet.
    fn between(&self) -> bool {
        matches!(self.mode, Mode::Pending) && self.held.is_empty() && self.pending.is_none()
    }

    /// A due re-AUTH at a command end inside a read (the observer said the point allows
    /// one): what is due of the read so far goes first, then the AUTH, so its reply comes in
    /// its place among the pipeline's. Not sent (no token): put off, as at the timer.
    async fn reauth_inline<W: AsyncWrite + Unpin>(
        &mut self,
        sink: &mut Upstream<'_, W>,
    ) -> Result<(), RelayError> {
        match Box::pin(self.policy.reauth()).await {
            Ok(auth) => {
                self.observer.reauth(Reauth::Sent);
                sink.write(&self.out).await?;
                self.out.clear();
                sink.write(&auth).await
            }
            Err(reason) => {
                self.observer.reauth(Reauth::Failed(&reason));
                Ok(())
            }
        }
    }

    /// A re-AUTH is due: sent if the guard is between commands and the observer says the
    /// upstream is at a quiet point, else put off. The secret goes straight from its zeroized
    /// buffer to the upstream.
    async fn reauth_now<W: AsyncWrite + Unpin>(
        &mut self,
        sink: &mut Upstream<'_, W>,
    ) -> Result<(), RelayError> {
        let between = self.between();
        if between {
            if let Some(plan) = self.observer.resubscribe() {
                return self.move_upstream(plan, sink).await;
            }
        }
        if !(between && self.observer.quiet()) {
            self.observer.reauth(Reauth::NotQuiet);
            return Ok(());
        }
        match Box::pin(self.policy.reauth()).await {
            Ok(auth) => {
                self.observer.reauth(Reauth::Sent);
                sink.write(&auth).await
            }
            Err(reason) => {
                self.observer.reauth(Reauth::Failed(&reason));
                Ok(())
            }
        }
    }

    /// Move a RESP2 subscriber to a fresh connection holding its subscriptions. The client's
    /// requests wait meanwhile (nothing of theirs is read), the old connection's messages go on.
    async fn move_upstream<W: AsyncWrite + Unpin>(
        &mut self,
        plan: Resubscribe,
        sink: &mut Upstream<'_, W>,
    ) -> Result<(), RelayError> {
        self.observer.reauth(Reauth::Moving);
        match Box::pin(self.policy.resubscribe(&plan)).await {
            Ok(()) => {
                self.observer.reauth(Reauth::Moved);
                sink.write(MARKER).await?;
                self.policy.switch_over();
                Ok(())
            }
            Err(MoveError::NotSent(reason)) => {
                self.observer.reauth(Reauth::Failed(&reason));
                Ok(())
            }
            Err(MoveError::Failed(reason)) => {
                self.observer.reauth(Reauth::MoveFailed(&reason));
                Err(RelayError::Write {
                    side: Side::Upstream,
                    source: io::Error::other(format!(
                        "could not move the subscriber to a new connection: {reason}"
                    )),
                })
            }
        }
    }

    /// Answer an AUTH for the own db-user by authenticating as it again. The secret goes
    /// straight from its zeroized buffer to the upstream, never through `out`.
    async fn reauth<W: AsyncWrite + Unpin>(
        &mut self,
        command: Guarded,
        sink: &mut Upstream<'_, W>,
    ) -> Result<(), RelayError> {
        // Boxed: signing an IAM token takes a large future; inline it would sit in every
        // session's task for the whole relay.
        match Box::pin(self.policy.reauth()).await {
            Ok(auth) => {
                sink.write(&self.out).await?;
                self.out.clear();
                sink.write(&auth).await?;
                self.policy.audit(GuardEvent::Rewritten {
                    command: command.name(),
                    action: "answered by re-authenticating as the session's db-user",
                });
            }
            Err(reason) => {
                self.out
                    .extend_from_slice(&rules::refusal("could not re-authenticate; try again"));
                self.policy.audit(GuardEvent::Refused {
                    command: command.name(),
                    reason: &format!("could not re-authenticate: {reason}"),
                });
            }
        }
        Ok(())
    }

    fn refuse(&mut self, command: &str, reason: &str) {
        self.out.extend_from_slice(&rules::refusal(reason));
        self.policy.audit(GuardEvent::Refused { command, reason });
    }

    /// A protocol error: a forwarded command's bytes up to it went on already (Redis sees the
    /// same error); otherwise Redis gets a request of ours with that error.
    fn dead(&mut self, error: ProtocolError) {
        if !matches!(self.mode, Mode::Forward) {
            self.out.extend_from_slice(&rules::trigger(error));
        }
        self.held.clear();
        self.pending = None;
        self.policy.audit(GuardEvent::Refused {
            command: "-",
            reason: &format!("protocol error: {error}"),
        });
    }
}

/// The upstream writer and its byte count.
struct Upstream<'a, W> {
    writer: &'a mut W,
    moved: &'a AtomicU64,
}

impl<W: AsyncWrite + Unpin> Upstream<'_, W> {
    async fn write(&mut self, bytes: &[u8]) -> Result<(), RelayError> {
        if bytes.is_empty() {
            return Ok(());
        }
        let write = |source| RelayError::Write {
            side: Side::Upstream,
            source,
        };
        self.writer.write_all(bytes).await.map_err(write)?;
        // A TLS writer may hold the record until flushed (see relay/copy.rs).
        self.writer.flush().await.map_err(write)?;
        self.moved.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    async fn shutdown(&mut self) -> Result<(), RelayError> {
        self.writer
            .shutdown()
            .await
            .map_err(|source| RelayError::Shutdown {
                side: Side::Upstream,
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tokio::io::{duplex, AsyncReadExt};

    use super::*;
    use crate::proxy::handshake::upstream::encode_command;
    use crate::proxy::relay::NoBypass;

    const REAUTH: &[u8] = b"*3\r\n$4\r\nAUTH\r\n$3\r\napp\r\n$6\r\nSECRET\r\n";

    struct TestPolicy {
        db_user: Option<&'static str>,
        audit: Mutex<Vec<String>>,
    }

    impl Policy for TestPolicy {
        fn db_user(&self) -> Option<&str> {
            self.db_user
        }

        async fn reauth(&self) -> Result<Zeroizing<Vec<u8>>, String> {
            Ok(Zeroizing::new(REAUTH.to_vec()))
        }

        fn audit(&self, event: GuardEvent<'_>) {
            self.audit.lock().unwrap().push(format!("{event:?}"));
        }
    }

    fn policy() -> TestPolicy {
        TestPolicy {
            db_user: Some("app"),
            audit: Mutex::default(),
        }
    }

    /// Run the guard over `chunks` (sent one by one, then EOF); what reached the upstream.
    async fn upstream_bytes(initial: &[u8], chunks: &[&[u8]]) -> (Vec<u8>, Vec<String>) {
        through(|policy| Guard::new(policy, initial.to_vec()), chunks).await
    }

    /// Run the guard `make` builds over `chunks` (then EOF): what reached the upstream, and
    /// what was audited.
    async fn through<O: Observer>(
        make: impl FnOnce(&TestPolicy) -> Guard<&TestPolicy, O>,
        chunks: &[&[u8]],
    ) -> (Vec<u8>, Vec<String>) {
        let policy = policy();
        let (mut client, client_end) = duplex(1 << 20);
        let (upstream_end, mut upstream) = duplex(1 << 20);
        let moved = AtomicU64::new(0);
        let run = make(&policy).run(client_end, upstream_end, &NoBypass, &moved);
        let feed = async {
            for chunk in chunks {
                client.write_all(chunk).await.unwrap();
                tokio::task::yield_now().await;
            }
            client.shutdown().await.unwrap();
            let mut got = Vec::new();
            upstream.read_to_end(&mut got).await.unwrap();
            got
        };
        let (ran, got) = tokio::join!(run, feed);
        ran.expect("guard run");
        assert_eq!(moved.load(Ordering::Relaxed), got.len() as u64);
        let audit = policy.audit.lock().unwrap().clone();
        (got, audit)
    }

    impl Policy for &TestPolicy {
        fn db_user(&self) -> Option<&str> {
            (**self).db_user()
        }

        async fn reauth(&self) -> Result<Zeroizing<Vec<u8>>, String> {
            (**self).reauth().await
        }

        fn audit(&self, event: GuardEvent<'_>) {
            (**self).audit(event)
        }
    }

    fn cmd(args: &[&[u8]]) -> Vec<u8> {
        encode_command(args).to_vec()
    }

    fn refused(reason_part: &str, got: &[u8]) -> bool {
        let text = String::from_utf8_lossy(got);
        text.contains("bastion: ") && text.contains(reason_part)
    }

    /// The same stream whole, byte by byte and as the initial bytes gives the same upstream
    /// bytes.
    async fn check_splits(stream: &[u8]) -> Vec<u8> {
        let (whole, _) = upstream_bytes(&[], &[stream]).await;
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(upstream_bytes(&[], &bytes).await.0, whole, "byte by byte");
        assert_eq!(
            upstream_bytes(stream, &[]).await.0,
            whole,
            "as initial bytes"
        );
        whole
    }

    /// A due re-AUTH goes at the first command end inside a read where the observer allows
    /// one — the client's bytes always ready, its pipeline never empty — after the commands
    /// before it and before the rest, whatever the reads; once, until due again.
    #[tokio::test]
    async fn a_due_reauth_goes_between_pipelined_commands_of_a_read() {
        struct Busy {
            due: Option<tokio::time::Instant>,
            ends: u32,
        }
        impl Observer for Busy {
            fn end(&mut self, _: u64) {
                self.ends += 1;
            }
            fn reauth_due(&self) -> Option<tokio::time::Instant> {
                self.due
            }
            // Quiet from the second command on (the first, say, a blocking one answered).
            fn quiet(&self) -> bool {
                self.ends >= 2
            }
            fn reauth(&mut self, outcome: Reauth<'_>) {
                // Put off (at the timer, between reads): still due.
                if outcome == Reauth::Sent {
                    self.due = None;
                }
            }
        }
        let (a, b, c) = (b"GET a\r\n", b"GET b\r\n", b"GET c\r\n");
        let stream = [&a[..], b, c].concat();
        let want = [&a[..], b, REAUTH, c].concat();
        for cut in 0..=stream.len() {
            let observer = Busy {
                due: Some(tokio::time::Instant::now()),
                ends: 0,
            };
            let (got, _) = through(
                |policy| Guard::observed(policy, Vec::new(), observer),
                &[&stream[..cut], &stream[cut..]],
            )
            .await;
            assert_eq!(got, want, "read cut at {cut}");
        }
    }

    #[tokio::test]
    async fn own_auth_is_answered_by_reauth_in_pipeline_order_without_the_password() {
        let ping = cmd(&[b"PING"]);
        let get = cmd(&[b"GET", b"k"]);
        let stream = [
            ping.clone(),
            cmd(&[b"AUTH", b"app", b"CLIENTPW"]),
            b"auth CLIENTPW\r\n".to_vec(),
            get.clone(),
        ]
        .concat();
        let got = check_splits(&stream).await;
        assert_eq!(got, [&ping[..], REAUTH, REAUTH, &get].concat());
        let (_, audit) = upstream_bytes(&stream, &[]).await;
        assert_eq!(audit.len(), 2, "{audit:?}");
        assert!(audit[0].contains("Rewritten") && audit[0].contains("AUTH"));
    }

    #[tokio::test]
    async fn another_users_auth_reset_and_nul_names_are_refused_in_place() {
        let get = cmd(&[b"GET", b"k"]);
        for bad in [
            cmd(&[b"AUTH", b"default", b"CLIENTPW"]),
            b"AUTH default CLIENTPW\r\n".to_vec(),
            cmd(&[b"AUTH\0x", b"default", b"CLIENTPW"]),
            b"\"AUTH\\x00\" default CLIENTPW\r\n".to_vec(),
            cmd(&[b"HELLO", b"3", b"AUTH", b"default", b"CLIENTPW"]),
            b"hello 3 auth default CLIENTPW\n".to_vec(),
            cmd(&[b"RESET"]),
            b"reset\r\n".to_vec(),
            cmd(&[b"GET\0", b"k"]),
        ] {
            let got = check_splits(&[get.clone(), bad.clone(), get.clone()].concat()).await;
            assert!(got.starts_with(&get) && got.ends_with(&get), "{bad:?}");
            let middle = &got[get.len()..got.len() - get.len()];
            assert!(middle.starts_with(b"*1\r\n$"), "{bad:?} became {middle:?}");
            assert!(refused("", middle), "{middle:?}");
            assert!(!got.windows(8).any(|w| w == b"CLIENTPW"), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn hello_goes_on_without_its_auth_part() {
        let stream = cmd(&[
            b"HELLO",
            b"3",
            b"AUTH",
            b"app",
            b"CLIENTPW",
            b"SETNAME",
            b"n",
        ]);
        let got = check_splits(&stream).await;
        assert_eq!(got, cmd(&[b"HELLO", b"3", b"SETNAME", b"n"]));
    }

    #[tokio::test]
    async fn other_commands_pass_byte_for_byte_and_large_values_stream() {
        let mut value = vec![b'v'; 300_000];
        value[1000] = b'\n';
        let set = cmd(&[b"SET", b"k", &value]);
        let stream = [
            b"*0\r\n\r\n".to_vec(),
            set.clone(),
            b"PING x\r\n".to_vec(),
            b"*-1\r\n".to_vec(),
            cmd(&[b"auth"]),
        ]
        .concat();
        let got = check_splits(&stream).await;
        // Filler Redis skips is dropped; a wrong-arity AUTH is refused, not forwarded.
        assert!(got.starts_with(&[&set[..], b"PING x\r\n"].concat()));
        assert!(refused("AUTH takes", &got[set.len() + 8..]));

        // The value's first bytes reach the upstream before the client sent the rest.
        let policy = policy();
        let (mut client, client_end) = duplex(1 << 20);
        let (upstream_end, mut upstream) = duplex(1 << 20);
        let moved = AtomicU64::new(0);
        let run = Guard::new(&policy, Vec::new()).run(client_end, upstream_end, &NoBypass, &moved);
        let check = async {
            client.write_all(&set[..100_000]).await.unwrap();
            let mut got = vec![0u8; 100_000];
            upstream.read_exact(&mut got).await.unwrap();
            assert_eq!(got, &set[..100_000]);
            drop(client);
        };
        let (ran, ()) = tokio::join!(run, check);
        ran.unwrap();
    }

    #[tokio::test]
    async fn a_protocol_error_reaches_redis_as_an_error_of_the_same_kind() {
        let get = cmd(&[b"GET", b"k"]);
        // Unnamed: a request of the bastion's own with the same error replaces it.
        let got = check_splits(&[&get[..], b"*1\r\n$-1\r\nPING\r\n"].concat()).await;
        assert_eq!(
            got,
            [&get[..], &rules::trigger(ProtocolError::InvalidBulkLength)].concat()
        );
        // Named and forwarded: its bytes up to the error go on, nothing after.
        let broken = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\nfooz\r\nPING\r\n";
        let got = check_splits(broken).await;
        assert_eq!(got, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\nfooz\r\n");
        // Inside a held AUTH: nothing of it (the password) goes on.
        let got = check_splits(b"*4\r\n$4\r\nAUTH\r\n$3\r\napp\r\n$8\r\nCLIENTPW\r\nx\r\n").await;
        assert_eq!(
            got,
            rules::trigger(ProtocolError::ExpectedDollar { got: b'x' })
        );
        // An AUTH cut short by EOF: nothing of it goes on.
        let got = check_splits(b"*3\r\n$4\r\nAUTH\r\n$3\r\napp\r\n$8\r\nCLIENTPW").await;
        assert!(got.is_empty());
    }

    /// A subscriber's move, in the guard: the new connection is asked for and staged, the
    /// marker goes on the old connection, then the switch — and only then the client's next
    /// command; a failed move ends the requests direction with an error naming it.
    #[tokio::test]
    async fn a_move_sends_the_marker_before_the_switch_and_a_failed_one_ends_the_session() {
        #[derive(Clone, Default)]
        struct Log(std::sync::Arc<Mutex<Vec<String>>>);
        impl Log {
            fn push(&self, event: impl Into<String>) {
                self.0.lock().unwrap().push(event.into());
            }
        }
        struct Mover {
            log: Log,
            fail: bool,
        }
        impl Policy for Mover {
            fn db_user(&self) -> Option<&str> {
                Some("app")
            }
            async fn reauth(&self) -> Result<Zeroizing<Vec<u8>>, String> {
                Ok(Zeroizing::new(REAUTH.to_vec()))
            }
            fn audit(&self, _: GuardEvent<'_>) {}
            async fn resubscribe(&self, plan: &Resubscribe) -> Result<(), MoveError> {
                self.log.push(format!("resubscribe {}", plan.confirmations));
                if self.fail {
                    return Err(MoveError::Failed("refused".into()));
                }
                Ok(())
            }
            fn switch_over(&self) {
                self.log.push("switch");
            }
        }
        struct Subscriber {
            log: Log,
            due: Option<tokio::time::Instant>,
        }
        impl Observer for Subscriber {
            fn reauth_due(&self) -> Option<tokio::time::Instant> {
                self.due
            }
            fn resubscribe(&mut self) -> Option<Resubscribe> {
                Some(Resubscribe {
                    commands: Vec::new(),
                    confirmations: 2,
                })
            }
            fn reauth(&mut self, outcome: Reauth<'_>) {
                self.log.push(format!("{outcome:?}"));
                self.due = None;
            }
        }
        for fail in [false, true] {
            let log = Log::default();
            let policy = Mover {
                log: log.clone(),
                fail,
            };
            let observer = Subscriber {
                log: log.clone(),
                due: Some(tokio::time::Instant::now()),
            };
            let (mut client, client_end) = duplex(1 << 16);
            let (upstream_end, mut upstream) = duplex(1 << 16);
            let moved = AtomicU64::new(0);
            let run = Guard::observed(policy, Vec::new(), observer).run(
                client_end,
                upstream_end,
                &NoBypass,
                &moved,
            );
            let feed = async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let _ = client.write_all(b"PING\r\n").await;
                drop(client);
                let mut got = Vec::new();
                let _ = upstream.read_to_end(&mut got).await;
                got
            };
            let (ran, got) = tokio::join!(run, feed);
            let log = log.0.lock().unwrap().clone();
            if fail {
                let err = ran.unwrap_err().to_string();
                assert!(
                    err.contains("could not move") && err.contains("refused"),
                    "{err}"
                );
                assert_eq!(log, ["Moving", "resubscribe 2", "MoveFailed(\"refused\")"]);
                assert!(got.is_empty(), "{got:?}");
            } else {
                ran.unwrap();
                assert_eq!(log, ["Moving", "resubscribe 2", "Moved", "switch"]);
                assert_eq!(got, [MARKER, b"PING\r\n"].concat());
            }
        }
    }

    /// Inspect mode's policy hold, as a session policy would ask for it: `CONFIG` decided by
    /// its subcommand (only `GET`), `SET` by its key (`app:*`), everything else by name.
    #[derive(Default)]
    struct HoldingObserver {
        name: Vec<u8>,
    }

    impl Observer for HoldingObserver {
        fn command(&mut self, head: &Head<'_>, _refused: bool) -> Look {
            self.name = head.name().to_ascii_lowercase();
            match &self.name[..] {
                b"config" => Look::Hold { all: false },
                b"set" => Look::Hold { all: true },
                _ => Look::Pass,
            }
        }

        /// Like the audit: the first arguments only.
        fn arg(&mut self, arg: &Arg<'_>) -> bool {
            arg.index < 2
        }

        fn check(&mut self, held: Checked<'_>) -> Result<(), String> {
            match (held, &self.name[..]) {
                (Checked::Args([sub, ..]), b"config") if sub.eq_ignore_ascii_case(b"get") => Ok(()),
                (Checked::Args([key, ..]), b"set") if key.starts_with(b"app:") => Ok(()),
                (Checked::Args(_), _) => Err("denied by the test policy".into()),
                (other, _) => Err(format!("unheld: {other:?}")),
            }
        }
    }

    /// [`upstream_bytes`] with a [`HoldingObserver`].
    async fn held_upstream_bytes(chunks: &[&[u8]]) -> (Vec<u8>, Vec<String>) {
        through(
            |policy| Guard::observed(policy, Vec::new(), HoldingObserver::default()),
            chunks,
        )
        .await
    }

    #[tokio::test]
    async fn a_command_held_for_its_arguments_goes_on_whole_or_is_refused_in_place() {
        let get = cmd(&[b"GET", b"k"]);
        let config_get = cmd(&[b"CONFIG", b"GET", b"maxmemory"]);
        let set_ok = cmd(&[b"SET", b"app:1", &vec![b'v'; 5000]]);
        let stream = [
            get.clone(),
            cmd(&[b"CONFIG", b"SET", b"maxmemory", b"1"]),
            config_get.clone(),
            b"config get maxmemory\r\n".to_vec(),
            set_ok.clone(),
            cmd(&[b"SET", b"other", b"v"]),
            b"SET other v\r\n".to_vec(),
            b"set app:2 v\r\n".to_vec(),
            cmd(&[b"CONFIG"]),
            get.clone(),
        ]
        .concat();
        let (whole, audit) = held_upstream_bytes(&[&stream]).await;
        let refusal = rules::refusal("denied by the test policy");
        let want = [
            &get[..],
            &refusal,
            &config_get,
            b"config get maxmemory\r\n",
            &set_ok,
            &refusal,
            &refusal,
            b"set app:2 v\r\n",
            &refusal,
            &get,
        ]
        .concat();
        assert_eq!(whole, want);
        assert_eq!(audit.len(), 4, "{audit:?}");
        assert!(audit.iter().all(|a| a.contains("Refused")), "{audit:?}");
        // Byte by byte, and cut inside the key, it is the same.
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(held_upstream_bytes(&bytes).await.0, want, "byte by byte");
        for cut in [
            get.len() + 20,
            stream.len() / 2,
            stream.len() - get.len() - 3,
        ] {
            let (a, b) = stream.split_at(cut);
            assert_eq!(held_upstream_bytes(&[a, b]).await.0, want, "cut at {cut}");
        }
    }

    #[tokio::test]
    async fn a_held_command_goes_upstream_only_once_decided_and_its_rest_streams() {
        let policy = policy();
        let (mut client, client_end) = duplex(1 << 20);
        let (upstream_end, mut upstream) = duplex(1 << 20);
        let moved = AtomicU64::new(0);
        let run = Guard::observed(&policy, Vec::new(), HoldingObserver::default()).run(
            client_end,
            upstream_end,
            &NoBypass,
            &moved,
        );
        let get = cmd(&[b"GET", b"k"]);
        let config = cmd(&[b"CONFIG", b"GET", &vec![b'p'; 200_000]]);
        let check = async {
            // The name and half the subcommand: nothing of it goes on yet.
            client
                .write_all(&[&get[..], &config[..20]].concat())
                .await
                .unwrap();
            let mut got = vec![0u8; get.len()];
            upstream.read_exact(&mut got).await.unwrap();
            assert_eq!(got, get);
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert_eq!(moved.load(Ordering::Relaxed), get.len() as u64, "held");
            // The subcommand completes it: the held bytes and what follows stream on before
            // the client sent the rest.
            client.write_all(&config[20..100_000]).await.unwrap();
            let mut got = vec![0u8; 100_000 - 20];
            upstream.read_exact(&mut got).await.unwrap();
            assert_eq!(got, &config[..100_000 - 20]);
            drop(client);
        };
        let (ran, ()) = tokio::join!(run, check);
        ran.unwrap();
    }

    #[tokio::test]
    async fn a_command_too_large_to_hold_is_refused_not_buffered() {
        let get = cmd(&[b"GET", b"k"]);
        let huge_key = vec![b'k'; 3 * HOLD_CAP];
        let stream = [
            get.clone(),
            cmd(&[b"SET", &huge_key, b"v"]),
            cmd(&[b"SET", b"app:1", &vec![b'v'; HOLD_CAP]]),
            get.clone(),
        ]
        .concat();
        let (got, audit) = held_upstream_bytes(&[&stream]).await;
        let refusal = |got: &[u8]| refused(&format!("TooLarge {{ cap: {HOLD_CAP} }}"), got);
        assert!(
            got.starts_with(&get) && got.ends_with(&get),
            "{}",
            got.len()
        );
        let middle = &got[get.len()..got.len() - get.len()];
        assert!(
            middle.len() < 1000,
            "nothing of them went on: {}",
            middle.len()
        );
        assert!(refusal(middle), "{}", String::from_utf8_lossy(middle));
        assert_eq!(audit.len(), 2, "{audit:?}");
        // Split in any reads, the same.
        let bytes: Vec<&[u8]> = stream.chunks(1000).collect();
        assert_eq!(held_upstream_bytes(&bytes).await.0, got);
    }

    /// Any split of a stream into reads sends the upstream the same bytes as the whole stream:
    /// the hold / forward / copy-free bookkeeping never depends on where reads end.
    mod splits {
        use proptest::prelude::*;

        use super::*;

        fn fragment() -> impl Strategy<Value = Vec<u8>> {
            let value = (0usize..3000, any::<u8>()).prop_map(|(n, b)| vec![b; n]);
            prop_oneof![
                3 => value.prop_map(|v| cmd(&[b"SET", b"k", &v])),
                2 => Just(cmd(&[b"GET", b"k"])),
                2 => Just(cmd(&[b"AUTH", b"app", b"CLIENTPW"])),
                1 => Just(cmd(&[b"AUTH", b"default", b"CLIENTPW"])),
                1 => Just(cmd(&[b"HELLO", b"3", b"AUTH", b"app", b"CLIENTPW", b"SETNAME", b"n"])),
                1 => Just(cmd(&[b"RESET"])),
                2 => "[a-zA-Z\"' ]{0,20}\n".prop_map(String::into_bytes),
                1 => Just(b"*0\r\n\r\n".to_vec()),
                1 => proptest::collection::vec(any::<u8>(), 0..6),
                // Held for the policy (with a `HoldingObserver`): allowed, denied, too large.
                1 => Just(cmd(&[b"CONFIG", b"GET", b"x"])),
                1 => Just(cmd(&[b"CONFIG", b"SET", b"x", b"y"])),
                1 => Just(b"set app:1 v\n".to_vec()),
                1 => Just(cmd(&[b"SET", b"other", b"v"])),
                1 => Just(cmd(&[b"SET", b"app:2", &vec![b'v'; HOLD_CAP]])),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(64))]
            #[test]
            fn upstream_bytes_do_not_depend_on_reads(
                parts in proptest::collection::vec(fragment(), 0..10),
                cuts in proptest::collection::vec(any::<usize>(), 0..8),
            ) {
                let stream = parts.concat();
                let mut points: Vec<usize> =
                    cuts.iter().map(|c| c % (stream.len() + 1)).collect();
                points.sort_unstable();
                let mut chunks = Vec::new();
                let mut from = 0;
                for p in points.into_iter().chain([stream.len()]) {
                    chunks.push(&stream[from..p]);
                    from = p;
                }
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                let (whole, split) = rt.block_on(async {
                    (upstream_bytes(&[], &[&stream]).await.0, upstream_bytes(&[], &chunks).await.0)
                });
                prop_assert_eq!(whole, split);
                let (whole, split) = rt.block_on(async {
                    (held_upstream_bytes(&[&stream]).await.0, held_upstream_bytes(&chunks).await.0)
                });
                prop_assert_eq!(whole, split);
            }
        }
    }
}
