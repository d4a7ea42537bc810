//! Pairs each reply with the request it answers, in order, as pipelined requests and their
//! replies stream past. Pure: fed the guard framer's commands ([`Matcher::request`], at
//! [`Event::Command`](crate::proxy::guard::Event::Command)) and protocol errors
//! ([`Matcher::protocol_error`], at `Event::Dead`), and the reply framer's [`Reply`]s
//! ([`Matcher::reply`]); it never sees bytes.
//!
//! Redis answers requests in the order it reads them, one reply each, except:
//! - a RESP3 push (`>`) answers nothing ([`Matched::Push`]) — unless it is a subscribe-family
//!   confirmation for the request at the head, which in RESP3 is sent as a push;
//! - `SUBSCRIBE`/`PSUBSCRIBE`/`SSUBSCRIBE` and the `UNSUBSCRIBE` family with `k` channels get
//!   `k` confirmations (arrays in RESP2, pushes in RESP3); the `UNSUBSCRIBE` family without
//!   channels gets one per channel of that kind subscribed at the time, or one if there are
//!   none. The counts are followed from the confirmations' counts, in order, so they are those
//!   Redis has when it runs the command;
//! - while a RESP2 connection is subscribed, `message`/`pmessage`/`smessage` arrays are
//!   messages, not replies ([`Matched::Message`]);
//! - `RESET` ends every subscription.
//!
//! Not handled (a caller must not rely on the pairing after these; see issue 12): `CLIENT REPLY
//! OFF|SKIP` (requests without replies), `MONITOR` (a stream of `+` lines), a command the guard
//! drops or answers itself (the caller must not report it here), and a confirmation count that
//! disagrees with the server because subscriptions were changed by something other than this
//! connection's commands (a shard channel unsubscribed by a slot migration is counted, as it is
//! announced by a `sunsubscribe` push).

use std::collections::VecDeque;

use super::reply::{Reply, ReplyKind};
use crate::proxy::guard::keyword_eq;

/// What one reply is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Matched {
    /// (Part of) the answer to request number `seq` (0 for the first request); `last` when it
    /// has all its replies.
    Reply { seq: u64, last: bool },
    /// A RESP3 push answering no request (invalidation, pub/sub message, unsolicited
    /// unsubscribe).
    Push,
    /// A RESP2 pub/sub message on a subscribed connection (or an unsubscribe confirmation the
    /// server sent unasked).
    Message,
    /// A reply with no request waiting for it (the upstream is out of step).
    Unexpected,
}

/// Which subscriptions a subscribe-family command is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channels {
    Plain,
    Pattern,
    Shard,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Plain,
    Reset,
    /// `on` for the subscribe commands, off for the unsubscribe ones.
    Sub {
        channels: Channels,
        on: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Waiting {
    seq: u64,
    class: Class,
    /// Replies still expected; `None` until an argument-less unsubscribe reaches the head.
    left: Option<u64>,
}

/// The pairing state of one connection.
#[derive(Debug, Clone, Default)]
pub struct Matcher {
    waiting: VecDeque<Waiting>,
    next_seq: u64,
    /// Subscriptions per kind, as the confirmations announced them.
    plain: u64,
    pattern: u64,
    shard: u64,
}

impl Matcher {
    pub fn new() -> Matcher {
        Matcher::default()
    }

    /// A request was sent (or will be, in this order); returns its sequence number. `name` is
    /// [`Head::name`](crate::proxy::guard::Head::name), `argc` counts the name.
    pub fn request(&mut self, name: &[u8], argc: u64) -> u64 {
        let class = if keyword_eq(name, "RESET") {
            Class::Reset
        } else if let Some((channels, on)) = sub_command(|w| keyword_eq(name, w)) {
            Class::Sub { channels, on }
        } else {
            Class::Plain
        };
        let args = argc.saturating_sub(1);
        let left = match class {
            Class::Sub { on: false, .. } if args == 0 => None,
            // SUBSCRIBE without channels is an arity error: one reply.
            Class::Sub { .. } => Some(args.max(1)),
            _ => Some(1),
        };
        self.push(class, left)
    }

    /// The guard framer reported a protocol error: Redis answers it with one error reply.
    pub fn protocol_error(&mut self) -> u64 {
        self.push(Class::Plain, Some(1))
    }

    /// Requests still waiting for (some of) their replies.
    pub fn outstanding(&self) -> usize {
        self.waiting.len()
    }

    /// Subscriptions Redis confirmed: (channels, patterns, shard channels).
    pub fn counts(&self) -> (u64, u64, u64) {
        (self.plain, self.pattern, self.shard)
    }

    /// Whether the connection has subscriptions (RESP2: only subscribe commands and PING).
    pub fn subscribed(&self) -> bool {
        self.plain + self.pattern + self.shard > 0
    }

    fn push(&mut self, class: Class, left: Option<u64>) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.waiting.push_back(Waiting { seq, class, left });
        seq
    }

    /// Classify the next reply in the stream.
    pub fn reply(&mut self, reply: &Reply) -> Matched {
        let aggregate = matches!(reply.kind, ReplyKind::Array | ReplyKind::Push);
        let confirmation = reply
            .head
            .filter(|_| aggregate)
            .and_then(|head| sub_command(|w| head.is(w)));
        if let Some((channels, on)) = confirmation {
            // Only a real confirmation moves the counts: an array that merely starts with
            // "subscribe" (LRANGE) is a plain reply.
            let expected =
                self.waiting.front().map(|w| w.class) == Some(Class::Sub { channels, on });
            let unasked = !reply.is_push() && !expected && !on && self.subscribed();
            if expected || reply.is_push() || unasked {
                self.count(channels, reply.last_int);
            }
            if expected {
                return self.confirm();
            }
            if unasked {
                // RESP2: an unsubscribe nobody asked for (a shard channel whose slot moved).
                return Matched::Message;
            }
        }
        if reply.is_push() {
            return Matched::Push;
        }
        let message = reply
            .head
            .is_some_and(|h| h.is("message") || h.is("pmessage") || h.is("smessage"));
        if reply.kind == ReplyKind::Array && message && self.subscribed() {
            return Matched::Message;
        }
        // A plain reply answers the head request whole (for a subscribe command: its error).
        let Some(head) = self.waiting.pop_front() else {
            return Matched::Unexpected;
        };
        if head.class == Class::Reset && reply.kind == ReplyKind::SimpleString {
            (self.plain, self.pattern, self.shard) = (0, 0, 0);
        }
        Matched::Reply {
            seq: head.seq,
            last: true,
        }
    }

    /// A confirmation for the head request (a subscribe-family command of its kind): one of
    /// its replies. Called after the confirmation's count was followed.
    fn confirm(&mut self) -> Matched {
        let Some(head) = self.waiting.front().copied() else {
            return Matched::Unexpected;
        };
        let Class::Sub { channels, .. } = head.class else {
            return Matched::Unexpected;
        };
        // An argument-less unsubscribe: as many replies as subscriptions before this one
        // (already counted down by one), or one.
        let left = head
            .left
            .unwrap_or(self.subscriptions(channels) + 1)
            .saturating_sub(1);
        if left == 0 {
            self.waiting.pop_front();
        } else if let Some(front) = self.waiting.front_mut() {
            front.left = Some(left);
        }
        Matched::Reply {
            seq: head.seq,
            last: left == 0,
        }
    }

    fn subscriptions(&self, channels: Channels) -> u64 {
        match channels {
            Channels::Plain => self.plain,
            Channels::Pattern => self.pattern,
            Channels::Shard => self.shard,
        }
    }

    /// Follow the count a confirmation carries: channels + patterns for those two kinds (Redis'
    /// `clientSubscriptionsCount`), shard channels alone for the shard kind.
    fn count(&mut self, channels: Channels, count: Option<i64>) {
        let Some(count) = count.and_then(|c| u64::try_from(c).ok()) else {
            return;
        };
        match channels {
            Channels::Plain => self.plain = count.saturating_sub(self.pattern),
            Channels::Pattern => self.pattern = count.saturating_sub(self.plain),
            Channels::Shard => self.shard = count,
        }
    }
}

/// The subscribe-family command (or confirmation, which carries the command's name) that `is`
/// matches.
pub(super) fn sub_command(is: impl Fn(&str) -> bool) -> Option<(Channels, bool)> {
    SUB_NAMES
        .iter()
        .find(|(name, _)| is(name))
        .map(|(_, class)| *class)
}

const SUB_NAMES: [(&str, (Channels, bool)); 6] = [
    ("subscribe", (Channels::Plain, true)),
    ("psubscribe", (Channels::Pattern, true)),
    ("ssubscribe", (Channels::Shard, true)),
    ("unsubscribe", (Channels::Plain, false)),
    ("punsubscribe", (Channels::Pattern, false)),
    ("sunsubscribe", (Channels::Shard, false)),
];
