//! A RESP2 subscriber's move to a fresh upstream connection (issue 12, item 4), the inspect
//! side. A RESP2 connection in subscribe mode cannot run AUTH, so at a due re-AUTH the session
//! is moved to a new authenticated connection holding the same subscriptions:
//!
//! 1. [`Subscriptions`] follows what the session is subscribed to: the channel names come from
//!    its subscribe-family commands, and count only once Redis confirmed them (confirmation `i`
//!    of a command is about its argument `i`; an argument-less unsubscribe empties its kind).
//!    [`Subscriptions::plan`] is the new connection's SUBSCRIBE / PSUBSCRIBE / SSUBSCRIBE.
//! 2. The new connection is dialed and authenticated by the session's one dial (`proxy/session/
//!    resubscribe.rs`), sent the plan, and [`await_confirmations`] reads its replies up to the
//!    last confirmation. Messages it delivered before that were published before the last
//!    confirmation, so before the marker below reaches the old connection, which delivers them
//!    too: they are dropped. The bytes after the last confirmation go to the client later.
//! 3. Meanwhile the old connection's messages go on to the client, each remembered by a keyed
//!    hash of its frame ([`Seam`], `Recording`). Then a marker `PING` is written on the old
//!    connection (`guard::driver::MARKER`): its reply `*2 pong ""` follows every message
//!    published before it, and everything published after it reaches the new connection. The
//!    marker's reply is cut out; the old connection ends there.
//! 4. The new connection's first messages (published after its last confirmation) may be ones
//!    the old connection delivered before the marker. The overlap is a suffix of the old
//!    connection's remembered messages equal to a prefix of the new connection's: each new
//!    message is compared with the candidates still consistent, the longest overlap wins, and
//!    a message it covers is dropped ([`Seam::judge`]). Redis delivers one connection's
//!    messages in publish order, so with distinct messages the overlap is found exactly: none
//!    lost, none repeated, in order.
//!
//! Limits, stated plainly: Redis pub/sub has no message ids. A message whose frame (channel,
//! pattern and payload) is identical to one the old connection delivered just before the
//! marker, published again right after it, is taken for a repeat and dropped when the new
//! connection's messages line up with the old one's tail (e.g. the same heartbeat payload on
//! the same channel twice within the switch). A channel the client subscribes to during the
//! switch can break the line-up and let a repeat through. Subscriptions are not known (no move;
//! the connection is cut at the service's limit) when a name was longer than the guard keeps
//! whole, or they grew past [`NAMES_CAP`] bytes, or the server unsubscribed a shard channel
//! on its own (a slot migration). The new connection is `AUTH`ed as RESP2; a `CLIENT SETNAME`
//! or `CLIENT TRACKING` of the old connection is not carried over. A shard channel is
//! re-subscribed on the node the database's address reaches: if that is not the node owning
//! its slot (a cluster's configuration endpoint resolving elsewhere), the `SSUBSCRIBE` is
//! refused with `MOVED` and the move fails, ending the session. A seam still waiting for the
//! new connection's first message when the next move starts is simply ended by it.
//!
//! What it must never do: hold a message longer than it takes to judge it, or more than
//! [`HOLD_CAP`] bytes of one (a longer one goes on as it comes, and is delivered even if it
//! repeats one), or remember a payload (only 64-bit keyed hashes of the frames, keys random
//! per session).

use std::collections::hash_map::{DefaultHasher, RandomState};
use std::collections::{BTreeSet, VecDeque};
use std::hash::{BuildHasher, Hasher};

use tokio::io::{AsyncRead, AsyncReadExt};

use super::matcher::Channels;
use super::reply::{ReplyConfig, ReplyFramer, ReplyKind};
use crate::proxy::guard::driver::Resubscribe;
use crate::proxy::handshake::upstream::encode_command;

/// Bytes of channel and pattern names followed at most; past that the subscriptions are not
/// known (the session cannot move).
pub const NAMES_CAP: usize = 1 << 20;
/// Messages of the old connection remembered for the seam (the newest).
const TAIL_CAP: usize = 1 << 16;
/// Bytes of one reply held at the seam; a longer one goes on to the client as it comes (it
/// cannot be the marker; on the new connection it is delivered even if it repeats one).
const HOLD_CAP: usize = 1 << 20;

/// A subscribe-family command on its way: its kind and the names it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SubRequest {
    pub channels: Channels,
    pub on: bool,
    pub names: Vec<Box<[u8]>>,
    /// Every name was seen whole.
    pub whole: bool,
}

impl SubRequest {
    pub fn new(channels: Channels, on: bool) -> SubRequest {
        SubRequest {
            channels,
            on,
            names: Vec::new(),
            whole: true,
        }
    }

    /// The command's next argument: `Some` if whole.
    pub fn arg(&mut self, value: Option<&[u8]>) {
        match value {
            Some(v) => self.names.push(v.into()),
            None => self.whole = false,
        }
    }
}

/// What a session is subscribed to, as Redis confirmed it.
#[derive(Debug, Default)]
pub(super) struct Subscriptions {
    plain: BTreeSet<Box<[u8]>>,
    pattern: BTreeSet<Box<[u8]>>,
    shard: BTreeSet<Box<[u8]>>,
    bytes: usize,
    /// A name was not seen whole, or the names outgrew [`NAMES_CAP`].
    unknown: bool,
}

impl Subscriptions {
    /// Confirmation `index` of `request` came back.
    pub fn confirmed(&mut self, request: &SubRequest, index: u64) {
        if !request.whole {
            self.unknown = true;
            return;
        }
        let set = match request.channels {
            Channels::Plain => &mut self.plain,
            Channels::Pattern => &mut self.pattern,
            Channels::Shard => &mut self.shard,
        };
        let name = usize::try_from(index)
            .ok()
            .and_then(|i| request.names.get(i));
        match (request.on, name) {
            (true, Some(name)) => {
                if set.insert(name.clone()) {
                    self.bytes += name.len();
                }
            }
            (false, Some(name)) => {
                if set.remove(name) {
                    self.bytes -= name.len();
                }
            }
            // An argument-less unsubscribe: every one of its kind goes.
            (false, None) => {
                self.bytes -= set.iter().map(|n| n.len()).sum::<usize>();
                set.clear();
            }
            (true, None) => self.unknown = true,
        }
        if self.bytes > NAMES_CAP {
            self.unknown = true;
        }
    }

    /// The commands that subscribe a new connection the same, if the subscriptions are known
    /// and agree with the counts Redis confirmed (`plain`, `pattern`, `shard`).
    pub fn plan(&self, (plain, pattern, shard): (u64, u64, u64)) -> Option<Resubscribe> {
        let len = |set: &BTreeSet<Box<[u8]>>| set.len() as u64;
        if self.unknown
            || (len(&self.plain), len(&self.pattern), len(&self.shard)) != (plain, pattern, shard)
        {
            return None;
        }
        let mut commands = Vec::new();
        for (command, set) in [
            (&b"SUBSCRIBE"[..], &self.plain),
            (b"PSUBSCRIBE", &self.pattern),
        ] {
            if !set.is_empty() {
                let mut args: Vec<&[u8]> = vec![command];
                args.extend(set.iter().map(|n| &n[..]));
                commands.extend_from_slice(&encode_command(&args));
            }
        }
        // One per shard channel: channels of different slots cannot share an SSUBSCRIBE.
        for name in &self.shard {
            commands.extend_from_slice(&encode_command(&[b"SSUBSCRIBE", name]));
        }
        Some(Resubscribe {
            commands,
            confirmations: plain + pattern + shard,
        })
    }
}

/// Read a new connection's replies to its subscribe plan until `expected` confirmations came
/// back (messages before the last one are dropped: the old connection delivers them, see the
/// module docs); `early` holds bytes read already. Returns the bytes after the last
/// confirmation. An error reply, another reply, or the end of the connection fail the move.
pub async fn await_confirmations<S: AsyncRead + Unpin>(
    stream: &mut S,
    mut buf: Vec<u8>,
    expected: u64,
) -> Result<Vec<u8>, String> {
    let mut framer = ReplyFramer::new(ReplyConfig::default());
    let mut confirmed = 0;
    let mut pos = 0;
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        while confirmed < expected {
            let opaque = framer.opaque_len().min((buf.len() - pos) as u64);
            if opaque > 0 {
                framer.skip(opaque);
                pos += opaque as usize;
            }
            let step = framer.advance(&buf[pos..]).map_err(|e| e.to_string())?;
            pos += step.consumed;
            let Some(reply) = step.reply else {
                if step.consumed == 0 {
                    break;
                }
                continue;
            };
            let head = reply.head.filter(|_| reply.kind == ReplyKind::Array);
            match head {
                Some(h) if h.is("subscribe") || h.is("psubscribe") || h.is("ssubscribe") => {
                    confirmed += 1
                }
                Some(h) if h.is("message") || h.is("pmessage") || h.is("smessage") => {}
                _ => {
                    let code = reply.code.map_or_else(
                        || format!("a {:?} reply", reply.kind),
                        |c| c.as_bytes().escape_ascii().to_string(),
                    );
                    return Err(format!(
                        "the new connection answered its subscriptions with {code}"
                    ));
                }
            }
        }
        if confirmed == expected {
            return Ok(buf.split_off(pos));
        }
        buf.drain(..pos);
        pos = 0;
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| format!("reading the new connection: {e}"))?;
        if n == 0 {
            return Err("the new connection closed before confirming its subscriptions".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The seam between the old connection's messages and the new one's (see the module docs).
pub(super) struct Seam {
    keys: RandomState,
    /// The hash of the reply in progress.
    hashing: DefaultHasher,
    phase: Phase,
    /// The old connection's messages since the move began (the newest [`TAIL_CAP`]).
    tail: VecDeque<u64>,
    /// While holding: the bytes of the reply in progress, kept until it is judged…
    held: Vec<u8>,
    /// …and what the client gets of the current read so far.
    pub out: Vec<u8>,
    /// The reply in progress outgrew [`HOLD_CAP`]: its bytes went on unheld.
    spilled: bool,
}

enum Phase {
    /// The new connection is being made: the old connection's messages pass and are
    /// remembered.
    Recording,
    /// The marker was sent: replies are held to their end (the marker's is cut out).
    Draining,
    /// The new connection's replies: messages the old one delivered are dropped.
    Filtering {
        /// Start positions in `tail` of overlaps still consistent, ascending.
        candidates: Vec<usize>,
        /// New-connection messages judged so far.
        seen: usize,
    },
}

impl Seam {
    pub fn new() -> Seam {
        let keys = RandomState::new();
        Seam {
            hashing: keys.build_hasher(),
            keys,
            phase: Phase::Recording,
            held: Vec::new(),
            out: Vec::new(),
            spilled: false,
            tail: VecDeque::new(),
        }
    }

    /// Replies are held to their end (after the marker was sent, and on the new connection).
    pub fn holding(&self) -> bool {
        !matches!(self.phase, Phase::Recording)
    }

    /// The new connection's replies are being judged.
    pub fn filtering(&self) -> bool {
        matches!(self.phase, Phase::Filtering { .. })
    }

    /// Bytes of the reply in progress.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.hashing.write(bytes);
        if !self.holding() {
            return;
        }
        if self.spilled || self.held.len() + bytes.len() > HOLD_CAP {
            self.spilled = true;
            self.out.append(&mut self.held);
            self.out.extend_from_slice(bytes);
        } else {
            self.held.extend_from_slice(bytes);
        }
    }

    /// The reply in progress is complete: its hash.
    pub fn reply_done(&mut self) -> u64 {
        std::mem::replace(&mut self.hashing, self.keys.build_hasher()).finish()
    }

    /// The marker is on its way: hold replies from now on.
    pub fn marker_sent(&mut self) {
        self.phase = Phase::Draining;
    }

    /// An old-connection message passed (its hash).
    pub fn record(&mut self, hash: u64) {
        if self.tail.len() == TAIL_CAP {
            self.tail.pop_front();
        }
        self.tail.push_back(hash);
    }

    /// The held reply goes to the client.
    pub fn release(&mut self) {
        self.out.append(&mut self.held);
        self.spilled = false;
    }

    /// The held reply is dropped — unless it outgrew the hold and went on already (then the
    /// rest goes on too: a repeat gets through rather than half a message).
    pub fn discard(&mut self) {
        if self.spilled {
            self.release();
        } else {
            self.held.clear();
        }
    }

    /// The marker's reply came: the old connection is over (nothing after it goes to the
    /// client), the new one's replies follow. `false`: none of them can be a repeat.
    pub fn old_done(&mut self) -> bool {
        self.held.clear();
        self.spilled = false;
        self.hashing = self.keys.build_hasher();
        self.phase = Phase::Filtering {
            candidates: Vec::new(),
            seen: 0,
        };
        !self.tail.is_empty()
    }

    /// A new-connection message (its hash): `(repeat, settled)` — whether the old connection
    /// delivered it (drop it), and whether no later message can be a repeat any more.
    pub fn judge(&mut self, hash: u64) -> (bool, bool) {
        let Phase::Filtering { candidates, seen } = &mut self.phase else {
            return (false, false);
        };
        let (tail, i) = (&self.tail, *seen);
        let len = tail.len();
        if i == 0 {
            candidates.extend((0..len).filter(|&p| tail[p] == hash));
        } else {
            candidates.retain(|&p| p + i >= len || tail[p + i] == hash);
        }
        *seen += 1;
        // The earliest start is the longest overlap.
        let first = candidates.first().copied();
        let repeat = first.is_some_and(|p| p + i < len);
        let settled = first.is_none_or(|p| p + i + 1 >= len);
        (repeat, settled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seam_with_tail(tail: &[u64]) -> Seam {
        let mut seam = Seam::new();
        for &h in tail {
            seam.record(h);
        }
        seam.marker_sent();
        seam.old_done();
        seam
    }

    /// (delivered, settled after each) for the new connection's `messages`.
    fn judge_all(tail: &[u64], messages: &[u64]) -> (Vec<u64>, Vec<bool>) {
        let mut seam = seam_with_tail(tail);
        let mut delivered = Vec::new();
        let mut settled = Vec::new();
        for &m in messages {
            let (repeat, done) = seam.judge(m);
            if !repeat {
                delivered.push(m);
            }
            settled.push(done);
        }
        (delivered, settled)
    }

    #[test]
    fn the_overlap_is_dropped_whatever_its_length() {
        // Old delivered 1..=5; the new connection starts at 3, 6, or past the end.
        assert_eq!(judge_all(&[1, 2, 3, 4, 5], &[3, 4, 5, 6, 7]).0, [6, 7]);
        assert_eq!(judge_all(&[1, 2, 3, 4, 5], &[5, 6]).0, [6]);
        assert_eq!(judge_all(&[1, 2, 3, 4, 5], &[6, 7]).0, [6, 7]);
        assert_eq!(judge_all(&[], &[1, 2]).0, [1, 2]);
        // Settled as soon as no later message can be a repeat.
        assert_eq!(judge_all(&[1, 2, 3], &[2, 3, 4]).1, [false, true, true]);
        assert_eq!(judge_all(&[1, 2, 3], &[9]).1, [true]);
    }

    #[test]
    fn repeated_payloads_take_the_longest_consistent_overlap() {
        // a b a | a b a c: the overlap "a b a" (start 0), not "a" (start 2).
        assert_eq!(judge_all(&[1, 2, 1], &[1, 2, 1, 3]).0, [3]);
        // a b a | a c: start 0 fails at c; start 2 ("a") holds.
        assert_eq!(judge_all(&[1, 2, 1], &[1, 3]).0, [3]);
        // The documented limit: a genuine "b" published again right after is taken for the
        // old connection's.
        assert_eq!(judge_all(&[1, 2], &[2, 3]).0, [3]);
    }

    #[test]
    fn subscriptions_follow_confirmations_and_plan_the_same_set() {
        let mut subs = Subscriptions::default();
        let mut sub = SubRequest::new(Channels::Plain, true);
        for name in [&b"a"[..], b"b", b"a"] {
            sub.arg(Some(name));
        }
        for i in 0..3 {
            subs.confirmed(&sub, i);
        }
        let mut psub = SubRequest::new(Channels::Pattern, true);
        psub.arg(Some(b"n.*"));
        subs.confirmed(&psub, 0);
        let mut unsub = SubRequest::new(Channels::Plain, false);
        unsub.arg(Some(b"b"));
        subs.confirmed(&unsub, 0);
        let plan = subs.plan((1, 1, 0)).expect("known");
        assert_eq!(plan.confirmations, 2);
        assert_eq!(
            plan.commands,
            b"*2\r\n$9\r\nSUBSCRIBE\r\n$1\r\na\r\n*2\r\n$10\r\nPSUBSCRIBE\r\n$3\r\nn.*\r\n"
        );
        assert!(subs.plan((2, 1, 0)).is_none(), "counts disagree");
        subs.confirmed(&SubRequest::new(Channels::Pattern, false), 0);
        assert_eq!(subs.plan((1, 0, 0)).unwrap().confirmations, 1);
        let mut long = SubRequest::new(Channels::Plain, true);
        long.arg(None);
        subs.confirmed(&long, 0);
        assert!(subs.plan((2, 0, 0)).is_none(), "a name not seen whole");
    }

    #[test]
    fn a_reply_longer_than_the_hold_goes_on_and_is_never_cut_in_half() {
        let mut seam = seam_with_tail(&[]);
        let big = vec![b'x'; HOLD_CAP / 2 + 1];
        seam.feed(&big);
        assert!(seam.out.is_empty(), "held");
        seam.feed(&big);
        assert_eq!(seam.out.len(), 2 * big.len(), "spilled: passed on");
        seam.feed(b"end");
        seam.discard();
        assert_eq!(seam.out.len(), 2 * big.len() + 3, "the rest follows");
        seam.out.clear();
        seam.feed(b"small");
        seam.discard();
        assert!(seam.out.is_empty(), "a small repeat is dropped whole");
    }

    #[tokio::test]
    async fn confirmations_are_read_and_what_follows_is_kept() {
        let stream = [
            &b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n"[..],
            b"*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$2\r\nm0\r\n",
            b"*3\r\n$10\r\npsubscribe\r\n$3\r\nn.*\r\n:2\r\n",
            b"*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$2\r\nm1\r\n",
        ]
        .concat();
        for cut in 0..stream.len() {
            let mut rest = &stream[cut..];
            let after = await_confirmations(&mut rest, stream[..cut].to_vec(), 2)
                .await
                .unwrap();
            let mut whole = after;
            whole.extend_from_slice(rest);
            assert_eq!(whole, b"*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$2\r\nm1\r\n");
        }
        let mut refused = &b"-NOPERM no\r\n"[..];
        let err = await_confirmations(&mut refused, Vec::new(), 1)
            .await
            .unwrap_err();
        assert!(err.contains("NOPERM"), "{err}");
        let mut short = &b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n"[..];
        assert!(await_confirmations(&mut short, Vec::new(), 2)
            .await
            .is_err());
    }
}
