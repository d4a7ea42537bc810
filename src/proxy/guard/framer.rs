//! The requests-direction framer: tells the guard which commands Redis will run, as the bytes
//! stream past, exactly as Redis 7 frames them (`processInputBuffer`, `processInlineBuffer`,
//! `processMultibulkBuffer` in networking.c).
//!
//! Sans-IO and pull-driven: [`Framer::advance`] takes the unread part of a chunk, consumes some
//! of it and returns at most one [`Event`]. The caller forwards (or holds back) the consumed
//! bytes and calls again. Events borrow the framer's fixed scratch; nothing is allocated per
//! command. A bulk payload the caller did not ask to see is opaque: [`Framer::opaque_len`] says
//! how many bytes can be moved without looking at them (spliced), [`Framer::skip`] accounts them.
//!
//! The rules mirrored (each has a unit test, and `tests/guard_framer.rs` checks them against a
//! real `redis-server`):
//! - a request starting with `*` is a multibulk, anything else an inline line;
//! - an inline line ends at the first `\n`; it is split like `sdssplitargs` (see `splitargs.rs`);
//!   an empty line is skipped; more than 64 KiB without `\n` is "too big inline request";
//! - header lines (`*N`, `$N`) end at the first `\r`, and the byte after it is skipped without
//!   looking at it; the number is read like `string2ll` (no sign `+`, no leading zeros, no `-0`,
//!   at most 20 characters); `*N` with `N <= 0` is skipped, `N > INT_MAX` is invalid, `N > 10`
//!   before authentication is refused; `$N` with `N < 0` or over `proto-max-bulk-len` is
//!   invalid, `N > 16384` before authentication is refused; a header line not starting with `$`
//!   is "expected '$', got 'c'";
//! - the two bytes after a bulk payload are skipped without checking they are `\r\n`;
//! - Redis searches lines with `strchr`, which stops at a NUL byte: a NUL before the line's end
//!   means the line never ends (Redis waits, then refuses it past 64 KiB);
//! - command names and keywords are compared with `strcasecmp`, which also stops at a NUL:
//!   `AUTH\0x` can run as `AUTH` (see [`Head::is`] and [`keyword_eq`]).
//!
//! How the relay uses it (per read chunk):
//! ```text
//! let mut rest = chunk;
//! loop {
//!     // splice / copy framer.opaque_len() bytes without looking, then framer.skip(n)
//!     let step = framer.advance(rest);
//!     // step.consumed bytes of `rest` belong to the command being framed: hold them until
//!     // it is named, then forward them or keep holding them until its End
//!     rest = &rest[step.consumed..];
//!     match step.event {
//!         None if step.consumed == 0 => break,            // need more bytes
//!         None => {}
//!         Some(Event::Command(head)) => { /* decide by head.is(..); maybe framer.inspect() */ }
//!         Some(Event::Arg(arg)) => { /* AUTH's user name, HELLO's AUTH keyword, … */ }
//!         Some(Event::End { .. }) => { /* forward, drop or replace the held command */ }
//!         Some(Event::Dead { .. }) => { /* nothing past it runs: reply the error, close */ }
//!     }
//! }
//! ```
//! A command's bytes are forwarded only once it is named ([`Event::Command`]): at most its
//! header lines and [`NAME_CAP`] bytes of name for a multibulk, its line (at most 64 KiB) for an
//! inline command. So a line Redis never finishes (a NUL before its end) never reaches Redis,
//! and a server that framed it differently could not run something the guard did not name. A
//! command the policy wants to see whole (AUTH, HELLO, RESET) is held on to its `End`; every
//! other one is forwarded from its naming on, so pipelined commands are never held back. What Redis does after running a command (QUIT closes the
//! connection, a blocking command delays the rest) is not framing and is the policy's concern.
//!
//! What it must never do: disagree with Redis about where a command starts or ends or what its
//! name is; hold or reorder bytes (the caller decides what to hold); buffer a bulk payload it was
//! not asked for; allocate per command; panic on any input. Once it reports [`Event::Dead`] the
//! stream is over: Redis replies that error (after the replies to the commands before it) and
//! closes, and never runs a byte past it.

use std::ops::Range;

use zeroize::{Zeroize, Zeroizing};

use super::splitargs::{Sink, Tokenizer};
use super::ProtocolError;

/// Redis' `PROTO_INLINE_MAX_SIZE`: the longest line it waits for.
pub const PROTO_INLINE_MAX_SIZE: u64 = 64 * 1024;
/// Redis' default `proto-max-bulk-len` (512 MiB).
pub const PROTO_MAX_BULK_LEN: u64 = 512 * 1024 * 1024;
/// Bytes of a command name (and of any argument's prefix) always kept: longer than any command
/// name, so a longer one is known not to be a command.
pub const NAME_CAP: usize = 64;
/// Arguments of an inline command that can be inspected (an inline line is split before it is
/// reported, so its arguments must be kept; a multibulk reports every argument as it passes).
pub const INLINE_ARG_SLOTS: usize = 32;

/// `INT_MAX`: the largest multibulk count Redis 7 accepts.
const MAX_MULTIBULK: i64 = i32::MAX as i64;
/// Before authentication Redis refuses counts above this…
const UNAUTH_MAX_MULTIBULK: i64 = 10;
/// …and bulk lengths above this.
const UNAUTH_MAX_BULK: i64 = 16 * 1024;
/// `string2ll` refuses strings of `LONG_STR_SIZE` (21) characters or more.
const LONG_STR_SIZE: usize = 21;

/// What the framer must know about the upstream connection.
///
/// If `proto_max_bulk_len` or `authenticated` differ from the server's, the two disagree only
/// on whether a header is a protocol error — never on how a command is framed — and a protocol
/// error ends the stream either way (the side that sees it closes), so a mismatch can close a
/// connection but never let a command past the guard. Only `RESET` makes an authenticated
/// connection unauthenticated again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FramerConfig {
    /// The upstream's `proto-max-bulk-len`.
    pub proto_max_bulk_len: u64,
    /// Whether Redis considers the connection authenticated (`authRequired` false): the bastion
    /// authenticates before the relay, or the `default` user has no password.
    pub authenticated: bool,
    /// Per command, how many bytes of arguments longer than [`NAME_CAP`] are kept whole for
    /// [`Framer::inspect`]; beyond it such arguments show only their first `NAME_CAP` bytes.
    pub inspect_bytes: usize,
    /// Per command the caller holds back for its arguments ([`Framer::hold`]), how many bytes
    /// of arguments are kept whole instead (at least `inspect_bytes`). Inline lines are split
    /// before the caller can ask, so their arguments are kept whole up to this many bytes
    /// always. 0: no command is held (guard mode).
    pub hold_bytes: usize,
}

impl Default for FramerConfig {
    fn default() -> FramerConfig {
        FramerConfig {
            proto_max_bulk_len: PROTO_MAX_BULK_LEN,
            authenticated: true,
            inspect_bytes: 1024,
            hold_bytes: 0,
        }
    }
}

/// The two request syntaxes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Inline,
    Multibulk,
}

/// What [`Framer::advance`] did: `consumed` bytes of its input, and maybe one event.
#[derive(Debug, PartialEq, Eq)]
pub struct Step<'a> {
    pub consumed: usize,
    pub event: Option<Event<'a>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// A command's name is known (its bytes so far are consumed). Call [`Framer::inspect`] now
    /// to get its arguments as [`Event::Arg`]s.
    Command(Head<'a>),
    /// An argument (index 1 = the first after the name), after [`Framer::inspect`].
    Arg(Arg<'a>),
    /// The command is complete: Redis runs it once it has the stream up to `end` (exclusive).
    End { end: u64 },
    /// A protocol error: Redis answers [`ProtocolError::reply`] once it has the stream up to `at`
    /// and closes. The command in progress (from its `start`) never runs.
    Dead { error: ProtocolError, at: u64 },
}

/// A command's header: enough to decide on it by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head<'a> {
    pub kind: Kind,
    /// Stream offset of the command's first byte.
    pub start: u64,
    /// Arguments, the name included.
    pub argc: u64,
    /// The name's full length.
    pub name_len: u64,
    name: &'a [u8],
}

impl<'a> Head<'a> {
    /// The name's first [`NAME_CAP`] bytes (all of it when `name_len <= NAME_CAP`).
    pub fn name(&self) -> &'a [u8] {
        self.name
    }

    /// Whether Redis may run this command as `command` (ASCII case-insensitive, and — like
    /// Redis' `strcasecmp` — only up to a NUL byte in the name: `AUTH\0x` may run as `AUTH`).
    pub fn is(&self, command: &str) -> bool {
        keyword_eq(self.name, command)
    }

    /// A NUL byte in the name: Redis runs such a command as the name before the NUL or answers
    /// "unknown command", depending on its hash table. No real command has one.
    pub fn name_has_nul(&self) -> bool {
        self.name.contains(&0)
    }
}

/// One argument of an inspected command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arg<'a> {
    /// 1 for the first argument after the name.
    pub index: u64,
    /// The argument's full length.
    pub len: u64,
    value: &'a [u8],
}

impl<'a> Arg<'a> {
    /// The whole argument, if it was kept whole (see [`FramerConfig::inspect_bytes`]).
    pub fn value(&self) -> Option<&'a [u8]> {
        (self.value.len() as u64 == self.len).then_some(self.value)
    }

    /// The argument's first bytes: all of it, or at least its first [`NAME_CAP`] bytes.
    pub fn prefix(&self) -> &'a [u8] {
        self.value
    }

    /// Whether Redis would take this argument as the keyword `keyword` (as [`Head::is`]).
    pub fn is(&self, keyword: &str) -> bool {
        keyword_eq(self.value, keyword)
    }
}

/// Compare a name or argument (its first bytes, at least [`NAME_CAP`] of them when longer) with
/// `keyword` the way Redis' `strcasecmp` does: ASCII case-insensitive, ending at a NUL.
pub fn keyword_eq(bytes: &[u8], keyword: &str) -> bool {
    debug_assert!(keyword.len() < NAME_CAP, "keywords are short");
    let c_str = match bytes.iter().position(|&b| b == 0) {
        Some(nul) => &bytes[..nul],
        None => bytes,
    };
    c_str.eq_ignore_ascii_case(keyword.as_bytes())
}

/// A whole command [`Framer::skim`] may consume: its stream offsets, argument count (name
/// included) and name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Skimmed<'a> {
    pub start: u64,
    pub end: u64,
    pub argc: u64,
    pub name: &'a [u8],
}

/// A whole multibulk command in canonical form at the start of `buf` (see [`Framer::skim`]):
/// its argument count, the range of its name and its length. `None` for anything else.
fn canonical_command(buf: &[u8], max_bulk: u64) -> Option<(u64, Range<usize>, usize)> {
    let (argc, mut pos) = canonical_line(buf, b'*', MAX_MULTIBULK as u64)?;
    if argc == 0 {
        return None;
    }
    let mut name = 0..0;
    for i in 0..argc {
        let (len, header) = canonical_line(&buf[pos..], b'$', max_bulk)?;
        let start = pos + header;
        let end = start.checked_add(usize::try_from(len).ok()?)?;
        // The two bytes after a payload are skipped unread, by Redis as by `advance`.
        let next = end.checked_add(2)?;
        if next > buf.len() {
            return None;
        }
        if i == 0 {
            if len == 0 || len as usize > NAME_CAP {
                return None;
            }
            name = start..end;
        }
        pos = next;
    }
    Some((argc, name, pos))
}

/// `<marker><digits>\r\n` at the start of `buf`, the digits a number `string2ll` reads back the
/// same (no sign, no leading zero) of at most `max`: the number and the line's length.
fn canonical_line(buf: &[u8], marker: u8, max: u64) -> Option<(u64, usize)> {
    if buf.first() != Some(&marker) {
        return None;
    }
    let digits = buf[1..]
        .iter()
        .take(LONG_STR_SIZE)
        .take_while(|b| b.is_ascii_digit())
        .count();
    if digits == 0 || digits > 19 || (digits > 1 && buf[1] == b'0') {
        return None;
    }
    let n = buf[1..=digits]
        .iter()
        .fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
    if n > max || buf.get(1 + digits..3 + digits)? != b"\r\n" {
        return None;
    }
    Some((n, digits + 3))
}

/// The streaming framer for one connection's requests. See the module docs.
#[derive(Debug, Clone)]
pub struct Framer {
    config: FramerConfig,
    /// Stream offset of the next byte to consume.
    offset: u64,
    state: State,
    cmd: Current,
    name: [u8; NAME_CAP],
    /// Kept argument bytes: the current multibulk argument, or an inline line's arguments —
    /// an AUTH's password among them. Reserved once at its bound (so never reallocated, which
    /// would leave a copy behind), wiped when a command's arguments are done with, zeroized
    /// when the session ends.
    args: Zeroizing<Vec<u8>>,
    slots: [Slot; INLINE_ARG_SLOTS],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between commands.
    Idle,
    /// Inside an inline line: `len` bytes since its start, `stalled` after a NUL.
    Inline {
        len: u64,
        stalled: bool,
        tok: Tokenizer,
    },
    /// An inline command is complete; its events are being reported (next arg slot).
    InlineReport { next: usize },
    /// A `*N` or `$N` line.
    Header { count: bool, line: Line },
    /// A bulk payload: `left` payload bytes, then `trailer` unchecked bytes.
    Payload {
        left: u64,
        trailer: u8,
        capture: Capture,
    },
    /// After [`Event::Dead`].
    Dead,
}

/// What the payload's bytes are kept for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Capture {
    /// The name: kept in `name` up to `until` bytes, then [`Event::Command`].
    Name { until: usize },
    /// An inspected argument: kept in `args` up to `until` bytes, then [`Event::Arg`].
    Arg { until: usize },
    /// Nothing to keep.
    Opaque,
}

/// A header line being read: its first byte, the number's characters, a `\r` seen, or a NUL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Line {
    len: u64,
    first: Option<u8>,
    digits: [u8; LONG_STR_SIZE],
    ndigits: usize,
    cr: bool,
    stalled: bool,
}

/// The command being framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Current {
    kind: Kind,
    start: u64,
    argc: u64,
    name_len: u64,
    /// Arguments fully read so far (the name is argument 0).
    done: u64,
    inspect: bool,
    /// Bytes of `budget` spent on arguments longer than `NAME_CAP`…
    spent: usize,
    /// …of `inspect_bytes`, or `hold_bytes` once held.
    budget: usize,
}

/// An inline argument kept for inspection: its bytes in `args[off..off + kept]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Slot {
    off: usize,
    kept: usize,
    len: u64,
}

impl Framer {
    /// Room in `args` for `more` bytes. Its first capacity is the default budget for whole
    /// arguments plus every inline slot's prefix; a held command's larger budget grows it into
    /// a new buffer, the old one zeroed as it is dropped (a plain `reserve` would leave a copy
    /// behind), and `begin` gives that back once the command is done.
    fn reserve_args(&mut self, more: usize) {
        let base = self.config.inspect_bytes + INLINE_ARG_SLOTS * NAME_CAP;
        if self.args.capacity() == 0 {
            self.args.reserve_exact(base);
        }
        let needed = self.args.len() + more;
        if needed > self.args.capacity() {
            let bound = self.cmd.budget + INLINE_ARG_SLOTS * NAME_CAP;
            let capacity = needed.max((2 * self.args.capacity()).min(bound));
            let mut grown = Zeroizing::new(Vec::with_capacity(capacity));
            grown.extend_from_slice(&self.args);
            // The old buffer is zeroized (whole capacity) as it drops.
            self.args = grown;
        }
    }

    /// Forget the kept arguments, zeroing the bytes they were in.
    fn wipe_args(&mut self) {
        self.args.as_mut_slice().zeroize();
        self.args.clear();
    }

    pub fn new(config: FramerConfig) -> Framer {
        Framer {
            config,
            offset: 0,
            state: State::Idle,
            cmd: Current {
                kind: Kind::Inline,
                start: 0,
                argc: 0,
                name_len: 0,
                done: 0,
                inspect: false,
                spent: 0,
                budget: config.inspect_bytes,
            },
            name: [0; NAME_CAP],
            // Reserved on the first kept argument, at the budget plus inline prefixes.
            args: Zeroizing::new(Vec::new()),
            slots: [Slot::default(); INLINE_ARG_SLOTS],
        }
    }

    /// Whether Redis now considers the connection authenticated (the limits before
    /// authentication apply while it does not).
    pub fn set_authenticated(&mut self, authenticated: bool) {
        self.config.authenticated = authenticated;
    }

    /// Stream offset of the next byte to consume (= bytes consumed so far).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// After [`Event::Dead`]: nothing more is framed.
    pub fn is_dead(&self) -> bool {
        self.state == State::Dead
    }

    /// Ask for the current command's arguments as [`Event::Arg`]s (call on
    /// [`Event::Command`]; later calls report only the arguments not yet passed).
    pub fn inspect(&mut self) {
        self.cmd.inspect = true;
    }

    /// Ask for the current command's arguments as [`Event::Arg`]s, like [`Framer::inspect`],
    /// kept whole up to [`FramerConfig::hold_bytes`]: the caller holds the command back until
    /// it has the arguments it needs to decide on it.
    pub fn hold(&mut self) {
        self.cmd.inspect = true;
        self.cmd.budget = self.cmd.budget.max(self.config.hold_bytes);
    }

    /// Stop reporting the current command's arguments: those not yet begun are opaque again
    /// (inspect mode's audit wants only the first key, not the values after it).
    pub fn uninspect(&mut self) {
        self.cmd.inspect = false;
    }

    /// Bytes from here the framer does not need to see (the rest of an uninspected bulk payload
    /// and its two trailing bytes): the caller may move them without copying, then [`skip`].
    ///
    /// [`skip`]: Framer::skip
    pub fn opaque_len(&self) -> u64 {
        match self.state {
            // The last byte is left to `advance`, which then moves on to what follows.
            State::Payload {
                left,
                trailer,
                capture: Capture::Opaque,
            } => (left + u64::from(trailer)).saturating_sub(1),
            _ => 0,
        }
    }

    /// Account `n` bytes (at most [`opaque_len`]) moved without being shown to the framer.
    ///
    /// [`opaque_len`]: Framer::opaque_len
    pub fn skip(&mut self, n: u64) {
        let n = n.min(self.opaque_len());
        if let State::Payload { left, trailer, .. } = &mut self.state {
            let from_left = n.min(*left);
            *left -= from_left;
            // `n - from_left` is at most `trailer - 1` (see `opaque_len`).
            *trailer -= (n - from_left) as u8;
            self.offset += n;
        }
    }

    /// The fast path for a caller that needs no event for most commands (guard mode): from
    /// between commands, consume whole multibulk commands written the way every client library
    /// writes them — `*N\r\n`, then `$L\r\n`, `L` bytes and two more per argument, numbers
    /// without sign or leading zero — for as long as `accept` takes each one (shown its name,
    /// whole, and where it starts and ends). Stops at the first byte of anything else: a command
    /// not complete in `input`, an inline command, filler, any header written another way, a
    /// name longer than [`NAME_CAP`], a command `accept` refuses. Returns the bytes consumed;
    /// `advance` then goes on from there.
    ///
    /// What it consumes is exactly what `advance` would frame as those commands (`Command`
    /// with that name, then `End` at that end, no `Dead`), without the events: every header it
    /// takes is one Redis reads as the same number, within the same limits. Only on an
    /// authenticated connection (before authentication Redis applies smaller limits).
    pub fn skim(&mut self, input: &[u8], mut accept: impl FnMut(&Skimmed<'_>) -> bool) -> usize {
        if self.state != State::Idle || !self.config.authenticated {
            return 0;
        }
        let mut pos = 0;
        while let Some((argc, name, len)) =
            canonical_command(&input[pos..], self.config.proto_max_bulk_len)
        {
            let skimmed = Skimmed {
                start: self.offset + pos as u64,
                end: self.offset + (pos + len) as u64,
                argc,
                name: &input[pos + name.start..pos + name.end],
            };
            if !accept(&skimmed) {
                break;
            }
            pos += len;
        }
        self.offset += pos as u64;
        pos
    }

    /// Consume `input` up to the next event (or all of it) and report that event. Returns
    /// `consumed == 0` with no event only when `input` is empty and nothing is pending, or after
    /// [`Event::Dead`]; call again with the rest (also with an empty rest: events can be
    /// pending).
    pub fn advance(&mut self, input: &[u8]) -> Step<'_> {
        let mut consumed = 0;
        let event = loop {
            let (n, event) = self.step(&input[consumed..]);
            consumed += n;
            self.offset += n as u64;
            if event.is_some() || n == 0 {
                break event;
            }
        };
        let event = event.map(|e| self.render(e));
        Step { consumed, event }
    }

    /// The state machine; events are returned as [`Pending`] and rendered (borrowing the
    /// scratch) by `advance`.
    fn step(&mut self, input: &[u8]) -> (usize, Option<Pending>) {
        match self.state {
            State::Dead => (0, None),
            State::InlineReport { next } => (0, Some(self.inline_report(next))),
            _ if input.is_empty() => (0, None),
            State::Idle => {
                self.begin(input[0]);
                self.step(input)
            }
            State::Inline { .. } => self.inline(input),
            State::Header { .. } => self.header(input),
            State::Payload { .. } => self.payload(input),
        }
    }

    /// Start a request at `first`, Redis' choice of syntax.
    fn begin(&mut self, first: u8) {
        let kind = if first == b'*' {
            Kind::Multibulk
        } else {
            Kind::Inline
        };
        self.cmd = Current {
            kind,
            start: self.offset,
            argc: 0,
            name_len: 0,
            done: 0,
            inspect: false,
            spent: 0,
            budget: match kind {
                Kind::Multibulk => self.config.inspect_bytes,
                Kind::Inline => self.config.inspect_bytes.max(self.config.hold_bytes),
            },
        };
        self.wipe_args();
        if self.args.capacity() > self.config.inspect_bytes + INLINE_ARG_SLOTS * NAME_CAP {
            // A held command's larger buffer (wiped above) is not kept for the session.
            self.args = Zeroizing::new(Vec::new());
        }
        self.state = match self.cmd.kind {
            Kind::Multibulk => State::Header {
                count: true,
                line: Line::new(),
            },
            Kind::Inline => State::Inline {
                len: 0,
                stalled: false,
                tok: Tokenizer::new(),
            },
        };
    }

    fn dead(&mut self, error: ProtocolError, consumed: usize) -> (usize, Option<Pending>) {
        self.state = State::Dead;
        let at = self.offset + consumed as u64;
        (consumed, Some(Pending::Dead(error, at)))
    }

    // ---- inline ------------------------------------------------------------------------

    fn inline(&mut self, input: &[u8]) -> (usize, Option<Pending>) {
        let State::Inline {
            mut len,
            mut stalled,
            mut tok,
        } = self.state
        else {
            return (0, None);
        };
        for (i, &b) in input.iter().enumerate() {
            if !stalled && b == b'\n' {
                return self.inline_end(tok, i + 1);
            }
            len += 1;
            if len > PROTO_INLINE_MAX_SIZE {
                return self.dead(ProtocolError::TooBigInline, i + 1);
            }
            if b == 0 {
                // `strchr` stops here: the line can never end.
                stalled = true;
            }
            if !stalled {
                tok.feed(b, &mut InlineSink { framer: self });
            }
        }
        self.state = State::Inline { len, stalled, tok };
        (input.len(), None)
    }

    fn inline_end(&mut self, tok: Tokenizer, consumed: usize) -> (usize, Option<Pending>) {
        if !tok.finish() {
            return self.dead(ProtocolError::UnbalancedQuotes, consumed);
        }
        if self.cmd.argc == 0 {
            // An empty line: Redis skips it.
            self.state = State::Idle;
            return (consumed, None);
        }
        self.state = State::InlineReport { next: 0 };
        (consumed, Some(Pending::Command))
    }

    /// Report the arguments kept for an inspected inline command, then its end.
    fn inline_report(&mut self, next: usize) -> Pending {
        let kept = usize::try_from(self.cmd.argc - 1)
            .unwrap_or(usize::MAX)
            .min(INLINE_ARG_SLOTS);
        if self.cmd.inspect && next < kept {
            self.state = State::InlineReport { next: next + 1 };
            let slot = self.slots[next];
            return Pending::Arg {
                index: next as u64 + 1,
                len: slot.len,
                range: (slot.off, slot.off + slot.kept),
            };
        }
        self.state = State::Idle;
        Pending::End
    }

    // ---- multibulk ---------------------------------------------------------------------

    fn header(&mut self, input: &[u8]) -> (usize, Option<Pending>) {
        let State::Header { count, mut line } = self.state else {
            return (0, None);
        };
        for (i, &b) in input.iter().enumerate() {
            if line.cr {
                // The byte after `\r` is skipped unread ("buffer should also contain \n").
                return self.header_end(count, &line, i + 1);
            }
            if !line.stalled && b == b'\r' {
                line.cr = true;
                continue;
            }
            line.len += 1;
            if line.len > PROTO_INLINE_MAX_SIZE {
                let error = if count {
                    ProtocolError::TooBigMultibulkCount
                } else {
                    ProtocolError::TooBigBulkCount
                };
                return self.dead(error, i + 1);
            }
            if b == 0 {
                line.stalled = true;
            }
            if !line.stalled {
                line.push(b);
            }
        }
        self.state = State::Header { count, line };
        (input.len(), None)
    }

    fn header_end(
        &mut self,
        count: bool,
        line: &Line,
        consumed: usize,
    ) -> (usize, Option<Pending>) {
        if count {
            let n = match line.number() {
                Some(n) if n <= MAX_MULTIBULK => n,
                _ => return self.dead(ProtocolError::InvalidMultibulkLength, consumed),
            };
            if n > UNAUTH_MAX_MULTIBULK && !self.config.authenticated {
                return self.dead(ProtocolError::UnauthenticatedMultibulkLength, consumed);
            }
            if n <= 0 {
                // `*0`, `*-1`: Redis skips them.
                self.state = State::Idle;
                return (consumed, None);
            }
            self.cmd.argc = n as u64;
            self.state = State::Header {
                count: false,
                line: Line::new(),
            };
            return (consumed, None);
        }
        if line.first != Some(b'$') {
            // An empty line's first byte is its `\r`.
            let got = line.first.unwrap_or(b'\r');
            return self.dead(ProtocolError::ExpectedDollar { got }, consumed);
        }
        let len = match line.number() {
            Some(n) if n >= 0 && (n as u64) <= self.config.proto_max_bulk_len => n,
            _ => return self.dead(ProtocolError::InvalidBulkLength, consumed),
        };
        if len > UNAUTH_MAX_BULK && !self.config.authenticated {
            return self.dead(ProtocolError::UnauthenticatedBulkLength, consumed);
        }
        self.bulk(len as u64, consumed)
    }

    /// A bulk header of `len` was read: set up its payload, reporting what is known already.
    fn bulk(&mut self, len: u64, consumed: usize) -> (usize, Option<Pending>) {
        let short = usize::try_from(len).unwrap_or(usize::MAX);
        let capture = if self.cmd.done == 0 {
            self.cmd.name_len = len;
            Capture::Name {
                until: short.min(NAME_CAP),
            }
        } else if self.cmd.inspect {
            self.wipe_args();
            let budget = self.cmd.budget.saturating_sub(self.cmd.spent);
            if short <= NAME_CAP {
                Capture::Arg { until: short }
            } else if short <= budget {
                self.cmd.spent += short;
                Capture::Arg { until: short }
            } else {
                Capture::Arg { until: NAME_CAP }
            }
        } else {
            Capture::Opaque
        };
        self.state = State::Payload {
            left: len,
            trailer: 2,
            capture,
        };
        (consumed, self.captured())
    }

    fn payload(&mut self, input: &[u8]) -> (usize, Option<Pending>) {
        let State::Payload {
            mut left,
            mut trailer,
            capture,
        } = self.state
        else {
            return (0, None);
        };
        let mut used = 0;
        match capture {
            Capture::Name { until } | Capture::Arg { until } if left > 0 => {
                let kept = match capture {
                    Capture::Name { .. } => self.name_kept(),
                    _ => self.args.len(),
                };
                let take = (until - kept).min(input.len());
                match capture {
                    Capture::Name { .. } => {
                        self.name[kept..kept + take].copy_from_slice(&input[..take]);
                    }
                    _ => {
                        self.reserve_args(take);
                        self.args.extend_from_slice(&input[..take]);
                    }
                }
                used = take;
                left -= take as u64;
                self.state = State::Payload {
                    left,
                    trailer,
                    capture,
                };
                return (used, self.captured());
            }
            _ => {}
        }
        // Opaque payload, then the trailer (never checked: Redis skips two bytes).
        let take = left.min(input.len() as u64) as usize;
        left -= take as u64;
        used += take;
        while left == 0 && trailer > 0 && used < input.len() {
            trailer -= 1;
            used += 1;
        }
        if left == 0 && trailer == 0 {
            self.cmd.done += 1;
            if self.cmd.done == self.cmd.argc {
                self.state = State::Idle;
                return (used, Some(Pending::End));
            }
            self.state = State::Header {
                count: false,
                line: Line::new(),
            };
            return (used, None);
        }
        self.state = State::Payload {
            left,
            trailer,
            capture,
        };
        (used, None)
    }

    /// If the current capture is complete, switch to opaque and say what to report.
    fn captured(&mut self) -> Option<Pending> {
        let State::Payload {
            left,
            trailer,
            capture,
        } = self.state
        else {
            return None;
        };
        let pending = match capture {
            Capture::Name { until } if self.name_kept() == until => Pending::Command,
            Capture::Arg { until } if self.args.len() == until => Pending::Arg {
                index: self.cmd.done,
                len: self.arg_len(left),
                range: (0, until),
            },
            _ => return None,
        };
        self.state = State::Payload {
            left,
            trailer,
            capture: Capture::Opaque,
        };
        Some(pending)
    }

    /// Bytes of the name kept so far (the name is read before anything else of its payload).
    fn name_kept(&self) -> usize {
        match self.state {
            State::Payload { left, .. } => {
                usize::try_from(self.cmd.name_len - left).map_or(NAME_CAP, |n| n.min(NAME_CAP))
            }
            _ => 0,
        }
    }

    /// The current argument's full length, from what is left of it and what was kept.
    fn arg_len(&self, left: u64) -> u64 {
        left + self.args.len() as u64
    }

    fn render(&self, pending: Pending) -> Event<'_> {
        match pending {
            Pending::Command => {
                let kept = usize::try_from(self.cmd.name_len).map_or(NAME_CAP, |n| n.min(NAME_CAP));
                Event::Command(Head {
                    kind: self.cmd.kind,
                    start: self.cmd.start,
                    argc: self.cmd.argc,
                    name_len: self.cmd.name_len,
                    name: &self.name[..kept],
                })
            }
            Pending::Arg { index, len, range } => Event::Arg(Arg {
                index,
                len,
                value: &self.args[range.0..range.1],
            }),
            Pending::End => Event::End { end: self.offset },
            Pending::Dead(error, at) => Event::Dead { error, at },
        }
    }
}

/// An event before it borrows the scratch.
#[derive(Debug, Clone, Copy)]
enum Pending {
    Command,
    Arg {
        index: u64,
        len: u64,
        range: (usize, usize),
    },
    End,
    Dead(ProtocolError, u64),
}

impl Line {
    fn new() -> Line {
        Line {
            len: 0,
            first: None,
            digits: [0; LONG_STR_SIZE],
            ndigits: 0,
            cr: false,
            stalled: false,
        }
    }

    /// Keep the first byte and, after it, up to `LONG_STR_SIZE` characters of the number.
    fn push(&mut self, b: u8) {
        if self.first.is_none() {
            self.first = Some(b);
        } else if self.ndigits < LONG_STR_SIZE {
            self.digits[self.ndigits] = b;
            self.ndigits += 1;
        } else {
            // Longer than `string2ll` accepts; `number` refuses a full buffer.
        }
    }

    /// The characters after the first byte, read like Redis' `string2ll`.
    fn number(&self) -> Option<i64> {
        string2ll(&self.digits[..self.ndigits])
    }
}

/// Redis' `string2ll` (util.c): an optional `-`, then `0` alone or digits without a leading
/// zero; fewer than 21 characters; within `i64`.
pub(crate) fn string2ll(s: &[u8]) -> Option<i64> {
    if s.is_empty() || s.len() >= LONG_STR_SIZE {
        return None;
    }
    if s == b"0" {
        return Some(0);
    }
    let (negative, digits) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    match digits.first() {
        Some(b'1'..=b'9') => {}
        _ => return None,
    }
    let mut v: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    if negative {
        // Down to i64::MIN, whose magnitude is one more than i64::MAX.
        0i64.checked_sub_unsigned(v)
    } else {
        i64::try_from(v).ok()
    }
}

/// Receives an inline line's arguments: the name, then up to [`INLINE_ARG_SLOTS`] arguments
/// kept for inspection within the byte budget.
struct InlineSink<'f> {
    framer: &'f mut Framer,
}

impl Sink for InlineSink<'_> {
    fn start(&mut self) {
        let f = &mut *self.framer;
        // The argument before this one is complete: a whole one longer than NAME_CAP is paid
        // from the budget.
        if let Some(prev) = f.slot_mut(f.cmd.argc) {
            let prev = *prev;
            if prev.kept as u64 == prev.len && prev.kept > NAME_CAP {
                f.cmd.spent += prev.kept;
            }
        }
        f.cmd.argc += 1;
        let off = f.args.len();
        if let Some(slot) = f.slot_mut(f.cmd.argc) {
            *slot = Slot {
                off,
                kept: 0,
                len: 0,
            };
        }
    }

    fn byte(&mut self, b: u8) {
        let f = &mut *self.framer;
        if f.cmd.argc == 1 {
            if let Some(slot) = usize::try_from(f.cmd.name_len)
                .ok()
                .and_then(|i| f.name.get_mut(i))
            {
                *slot = b;
            }
            f.cmd.name_len += 1;
            return;
        }
        let budget = f.cmd.budget.saturating_sub(f.cmd.spent) as u64;
        let Some(slot) = f.slot_mut(f.cmd.argc) else {
            return;
        };
        slot.len += 1;
        let whole = slot.kept as u64 + 1 == slot.len;
        if slot.len <= NAME_CAP as u64 || (whole && slot.len <= budget) {
            slot.kept += 1;
            f.reserve_args(1);
            f.args.push(b);
        } else if slot.kept > NAME_CAP {
            // Outgrew the budget: keep only its prefix.
            slot.kept = NAME_CAP;
            let end = slot.off + NAME_CAP;
            if let Some(tail) = f.args.get_mut(end..) {
                tail.zeroize();
            }
            f.args.truncate(end);
        }
    }
}

impl Framer {
    /// The inline slot of argument number `argc` (counting the name as 1), if it has one.
    fn slot_mut(&mut self, argc: u64) -> Option<&mut Slot> {
        let index = usize::try_from(argc.checked_sub(2)?).ok()?;
        self.slots.get_mut(index)
    }
}

#[cfg(test)]
mod tests {
    use super::super::fuzz::{record, Rec};
    use super::*;

    fn config() -> FramerConfig {
        FramerConfig::default()
    }

    /// Events with the offsets they came at, everything fed at once.
    fn events(data: &[u8]) -> Vec<(u64, Rec)> {
        record(config(), false, false, &[data])
    }

    fn events_with(config: FramerConfig, inspect: bool, data: &[u8]) -> Vec<(u64, Rec)> {
        record(config, inspect, false, &[data])
    }

    /// The names of the commands Redis would run, in order.
    fn names(data: &[u8]) -> Vec<Vec<u8>> {
        let evs = events(data);
        let mut out = Vec::new();
        let mut pending = None;
        for (_, rec) in evs {
            match rec {
                Rec::Command { name, .. } => pending = Some(name),
                Rec::End { .. } => out.push(pending.take().expect("end after command")),
                _ => {}
            }
        }
        out
    }

    fn dead(data: &[u8]) -> Option<(ProtocolError, u64)> {
        events(data).into_iter().find_map(|(_, r)| match r {
            Rec::Dead { error, at } => Some((error, at)),
            _ => None,
        })
    }

    fn cmd(kind: Kind, start: u64, argc: u64, name: &[u8]) -> Rec {
        Rec::Command {
            kind,
            start,
            argc,
            name_len: name.len() as u64,
            name: name.to_vec(),
        }
    }

    #[test]
    fn a_multibulk_command_is_named_as_soon_as_its_name_arrived() {
        let data = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nvalue\r\n";
        assert_eq!(
            events(data),
            vec![
                (11, cmd(Kind::Multibulk, 0, 3, b"SET")),
                (
                    data.len() as u64,
                    Rec::End {
                        end: data.len() as u64
                    }
                ),
            ]
        );
        // A 100 MB value: the name is reported without waiting for it.
        let head = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$100000000\r\nvvvv";
        assert_eq!(events(head), vec![(11, cmd(Kind::Multibulk, 0, 3, b"SET"))]);
    }

    #[test]
    fn pipelined_commands_come_in_order_in_one_chunk() {
        let data = b"*1\r\n$4\r\nPING\r\nECHO x\r\n*2\r\n$4\r\nECHO\r\n$1\r\ny\r\n";
        assert_eq!(names(data), [&b"PING"[..], b"ECHO", b"ECHO"]);
        let evs = events(data);
        assert_eq!(evs[2].1, cmd(Kind::Inline, 14, 2, b"ECHO"));
        assert_eq!(evs[4].1, cmd(Kind::Multibulk, 22, 2, b"ECHO"));
    }

    #[test]
    fn the_two_bytes_after_a_payload_are_skipped_unchecked() {
        // Redis runs PING twice: "xx" is taken as the payload's CRLF.
        assert_eq!(
            names(b"*1\r\n$4\r\nPINGxx*1\r\n$4\r\nPING\r\n"),
            [&b"PING"[..], b"PING"]
        );
        // A payload followed by "\r" and the next command's '*': that '*' is eaten, and the
        // rest is read as inline lines.
        assert_eq!(
            names(b"*1\r\n$4\r\nPING\r*1\r\n$4\r\nPING\r\n"),
            [&b"PING"[..], b"1", b"$4", b"PING"]
        );
    }

    #[test]
    fn the_byte_after_a_header_cr_is_skipped_unchecked() {
        assert_eq!(names(b"*1\rX$4\rYPING\r\n"), [&b"PING"[..]]);
    }

    #[test]
    fn empty_and_negative_multibulks_are_skipped() {
        assert_eq!(events(b"*0\r\n*-1\r\n"), vec![]);
        assert_eq!(names(b"*-5\r\nPING\r\n*0\r\n"), [&b"PING"[..]]);
    }

    #[test]
    fn multibulk_counts_are_read_like_string2ll() {
        for bad in [
            &b"*01\r\n"[..],
            b"*-0\r\n",
            b"*+1\r\n",
            b"*\r\n",
            b"*1a\r\n",
            b"* 1\r\n",
            b"*2147483648\r\n",
            b"*99999999999999999999\r\n",
            b"*1\n\r\n",
        ] {
            assert_eq!(
                dead(bad),
                Some((ProtocolError::InvalidMultibulkLength, bad.len() as u64)),
                "{bad:?}"
            );
        }
        assert_eq!(events(b"*2147483647\r\n"), vec![]);
        assert_eq!(events(b"*-9223372036854775808\r\n"), vec![]);
        assert_eq!(
            dead(b"*-9223372036854775809\r\n").map(|d| d.0),
            Some(ProtocolError::InvalidMultibulkLength)
        );
    }

    #[test]
    fn before_authentication_counts_and_lengths_are_limited() {
        let unauth = FramerConfig {
            authenticated: false,
            ..config()
        };
        let dead_unauth = |data: &[u8]| {
            events_with(unauth, false, data)
                .into_iter()
                .find_map(|(_, r)| match r {
                    Rec::Dead { error, .. } => Some(error),
                    _ => None,
                })
        };
        assert_eq!(
            dead_unauth(b"*11\r\n"),
            Some(ProtocolError::UnauthenticatedMultibulkLength)
        );
        assert_eq!(dead_unauth(b"*10\r\n"), None);
        assert_eq!(
            dead_unauth(b"*1\r\n$16385\r\n"),
            Some(ProtocolError::UnauthenticatedBulkLength)
        );
        assert_eq!(dead_unauth(b"*1\r\n$16384\r\n"), None);
        // Invalid comes before unauthenticated.
        assert_eq!(
            dead_unauth(b"*3000000000\r\n"),
            Some(ProtocolError::InvalidMultibulkLength)
        );
        let mut framer = Framer::new(unauth);
        framer.set_authenticated(true);
        let step = framer.advance(b"*11\r\n");
        assert_eq!(
            step,
            Step {
                consumed: 5,
                event: None
            }
        );
    }

    #[test]
    fn an_argument_header_must_start_with_a_dollar() {
        assert_eq!(
            dead(b"*3\r\n$3\r\nSET\r\n$1\r\nx\r\nfooz\r\n"),
            Some((ProtocolError::ExpectedDollar { got: b'f' }, 26))
        );
        assert_eq!(
            dead(b"*1\r\n\r\n"),
            Some((ProtocolError::ExpectedDollar { got: b'\r' }, 6))
        );
        assert_eq!(
            dead(b"*1\r\n\n$4\r\n").map(|d| d.0),
            Some(ProtocolError::ExpectedDollar { got: b'\n' })
        );
    }

    #[test]
    fn bulk_lengths_are_checked() {
        for bad in [
            &b"*1\r\n$-1\r\n"[..],
            b"*1\r\n$04\r\n",
            b"*1\r\n$\r\n",
            b"*1\r\n$536870913\r\n",
            b"*1\r\n$4 \r\n",
        ] {
            assert_eq!(
                dead(bad),
                Some((ProtocolError::InvalidBulkLength, bad.len() as u64)),
                "{bad:?}"
            );
        }
        assert_eq!(dead(b"*1\r\n$536870912\r\n"), None);
        let small = FramerConfig {
            proto_max_bulk_len: 10,
            ..config()
        };
        assert!(events_with(small, false, b"*1\r\n$11\r\n")
            .iter()
            .any(|(_, r)| matches!(
                r,
                Rec::Dead {
                    error: ProtocolError::InvalidBulkLength,
                    ..
                }
            )));
    }

    #[test]
    fn lines_longer_than_64k_are_refused_at_the_byte_that_crosses() {
        let max = PROTO_INLINE_MAX_SIZE as usize;
        let long = vec![b'a'; max + 1];
        assert_eq!(
            dead(&long),
            Some((ProtocolError::TooBigInline, max as u64 + 1))
        );
        assert_eq!(dead(&long[..max]), None);
        let mut exact = vec![b'a'; max];
        exact.push(b'\n');
        assert_eq!(names(&exact).len(), 1);

        let mut count = b"*1".to_vec();
        count.resize(max + 1, b'1');
        assert_eq!(
            dead(&count),
            Some((ProtocolError::TooBigMultibulkCount, max as u64 + 1))
        );
        let mut bulk = b"*1\r\n$".to_vec();
        bulk.resize(4 + max + 1, b'1');
        assert_eq!(
            dead(&bulk),
            Some((ProtocolError::TooBigBulkCount, 4 + max as u64 + 1))
        );
    }

    #[test]
    fn a_nul_before_the_line_end_stalls_the_line_like_strchr() {
        let data = b"PING\0\r\nPING\r\n*1\r\n$4\r\nPING\r\n";
        assert_eq!(events(data), vec![]);
        let mut stalled = data.to_vec();
        stalled.resize(PROTO_INLINE_MAX_SIZE as usize + 1, b'\n');
        assert_eq!(
            dead(&stalled),
            Some((ProtocolError::TooBigInline, stalled.len() as u64))
        );
        assert_eq!(events(b"*1\r\n$4\0\r\nPING\r\n"), vec![]);
        assert_eq!(events(b"*1\0\r\n$4\r\nPING\r\n"), vec![]);
        // A NUL inside a payload is just data.
        assert_eq!(names(b"*2\r\n$4\r\nECHO\r\n$1\r\n\0\r\n").len(), 1);
    }

    #[test]
    fn inline_lines_are_split_like_sdssplitargs() {
        assert_eq!(
            events(b"ECHO \"a b\"\r\n"),
            vec![
                (12, cmd(Kind::Inline, 0, 2, b"ECHO")),
                (12, Rec::End { end: 12 }),
            ]
        );
        assert_eq!(
            dead(b"\"PI\"NG\r\n"),
            Some((ProtocolError::UnbalancedQuotes, 8))
        );
        assert_eq!(names(b"\"AU\\x54H\" x\n"), [&b"AUTH"[..]]);
        assert_eq!(names(b"p'I' ng\n"), [&b"pI"[..]]);
        assert_eq!(
            dead(b"p'I'ng\n"),
            Some((ProtocolError::UnbalancedQuotes, 7))
        );
        assert_eq!(
            dead(b"ECHO 'a\r\nPING\r\n"),
            Some((ProtocolError::UnbalancedQuotes, 9))
        );
        // An empty token is still an argument.
        assert_eq!(
            events(b"ECHO \"\"\n")[0].1,
            cmd(Kind::Inline, 0, 2, b"ECHO")
        );
    }

    #[test]
    fn empty_inline_lines_are_skipped() {
        assert_eq!(events(b"\r\n\n   \r\n\t\n"), vec![]);
        assert_eq!(names(b"\n\nPING\n\r\n"), [&b"PING"[..]]);
    }

    #[test]
    fn names_compare_like_strcasecmp() {
        let evs = events(b"*1\r\n$6\r\nAUTH\0x\r\n");
        let Rec::Command { name, .. } = &evs[0].1 else {
            panic!("{evs:?}")
        };
        assert!(keyword_eq(name, "auth"));
        assert!(!keyword_eq(name, "AUTHx"));
        assert!(!keyword_eq(b"AUTHX", "AUTH"));
        assert!(keyword_eq(b"aUtH", "AUTH"));
        assert!(!keyword_eq(b"\0AUTH", "AUTH"));
        let head = Head {
            kind: Kind::Multibulk,
            start: 0,
            argc: 1,
            name_len: 6,
            name,
        };
        assert!(head.is("AUTH") && head.name_has_nul());
    }

    #[test]
    fn a_long_name_is_reported_after_its_first_bytes() {
        let mut data = b"*1\r\n$100\r\n".to_vec();
        data.extend_from_slice(&[b'A'; NAME_CAP]);
        let evs = events(&data);
        assert_eq!(evs.len(), 1);
        let Rec::Command { name_len, name, .. } = &evs[0].1 else {
            panic!("{evs:?}")
        };
        assert_eq!((*name_len, name.len()), (100, NAME_CAP));
    }

    /// (index, len, bytes kept, whole) of each reported argument.
    fn arg_summary(events: Vec<(u64, Rec)>) -> Vec<(u64, u64, usize, bool)> {
        events
            .into_iter()
            .filter_map(|(_, r)| match r {
                Rec::Arg {
                    index,
                    len,
                    prefix,
                    whole,
                } => Some((index, len, prefix.len(), whole)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn inspect_reports_each_argument_whole_or_its_prefix() {
        let cfg = FramerConfig {
            inspect_bytes: 80,
            ..config()
        };
        let big = [b'v'; 100];
        let mid = [b'm'; 70];
        let mut data = b"*5\r\n$5\r\nHELLO\r\n$1\r\n3\r\n$100\r\n".to_vec();
        data.extend_from_slice(&big);
        data.extend_from_slice(b"\r\n$70\r\n");
        data.extend_from_slice(&mid);
        data.extend_from_slice(b"\r\n$70\r\n");
        data.extend_from_slice(&mid);
        data.extend_from_slice(b"\r\n");
        let args = arg_summary(events_with(cfg, true, &data));
        // 100 > budget: prefix; the first 70 fits; the second 70 no longer does.
        assert_eq!(
            args,
            [
                (1, 1, 1, true),
                (2, 100, NAME_CAP, false),
                (3, 70, 70, true),
                (4, 70, NAME_CAP, false)
            ]
        );

        let mut line = b"HELLO 3 ".to_vec();
        line.extend_from_slice(&big);
        line.push(b' ');
        line.extend_from_slice(&mid);
        line.push(b' ');
        line.extend_from_slice(&mid);
        line.push(b'\n');
        let inline_args = arg_summary(events_with(cfg, true, &line));
        assert_eq!(inline_args, args);
    }

    #[test]
    fn inspected_arguments_carry_their_bytes() {
        let mut framer = Framer::new(config());
        let data = b"HELLO 3 AUTH \"us\\x65r\" 'p w'\r\n";
        let Step { consumed, event } = framer.advance(data);
        assert_eq!(consumed, data.len());
        assert!(matches!(event, Some(Event::Command(h)) if h.is("hello") && h.argc == 5));
        framer.inspect();
        let mut values = Vec::new();
        loop {
            match framer.advance(&[]).event {
                Some(Event::Arg(a)) => {
                    assert_eq!(a.is("auth"), a.index == 2);
                    values.push(a.value().expect("small").to_vec());
                }
                Some(Event::End { end }) => {
                    assert_eq!(end, data.len() as u64);
                    break;
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(values, [&b"3"[..], b"AUTH", b"user", b"p w"]);
    }

    #[test]
    fn uninspected_payloads_are_opaque_and_can_be_skipped() {
        let mut framer = Framer::new(config());
        let data = b"*2\r\n$4\r\nECHO\r\n$10\r\n0123456789\r\n";
        let step = framer.advance(data);
        assert_eq!(step.consumed, 12);
        assert!(matches!(step.event, Some(Event::Command(_))));
        assert_eq!(framer.opaque_len(), 1); // "\r\n" left, the last byte kept back
        let step = framer.advance(&data[12..19]);
        assert_eq!((step.consumed, step.event), (7, None));
        assert_eq!(framer.opaque_len(), 11);
        framer.skip(100);
        assert_eq!(framer.offset(), 30);
        assert_eq!(framer.opaque_len(), 0);
        let step = framer.advance(&data[30..]);
        assert_eq!(
            (step.consumed, step.event),
            (1, Some(Event::End { end: 31 }))
        );
    }

    #[test]
    fn uninspect_makes_the_remaining_arguments_opaque() {
        let mut framer = Framer::new(config());
        let data = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nvalue\r\n";
        let step = framer.advance(data);
        assert!(matches!(step.event, Some(Event::Command(_))));
        let mut at = step.consumed;
        framer.inspect();
        let step = framer.advance(&data[at..]);
        let Some(Event::Arg(arg)) = step.event else {
            panic!("{step:?}");
        };
        assert_eq!((arg.index, arg.value()), (1, Some(&b"k"[..])));
        at += step.consumed;
        framer.uninspect();
        // The value is not shown: the rest frames straight to the command's end.
        let step = framer.advance(&data[at..]);
        assert_eq!(
            (step.consumed, step.event),
            (
                data.len() - at,
                Some(Event::End {
                    end: data.len() as u64
                })
            )
        );
    }

    #[test]
    fn nothing_is_framed_after_dead() {
        let mut framer = Framer::new(config());
        let step = framer.advance(b"*x\r\nPING\r\n");
        assert_eq!(
            step,
            Step {
                consumed: 4,
                event: Some(Event::Dead {
                    error: ProtocolError::InvalidMultibulkLength,
                    at: 4
                })
            }
        );
        assert!(framer.is_dead());
        assert_eq!(
            framer.advance(b"PING\r\n"),
            Step {
                consumed: 0,
                event: None
            }
        );
    }
}
