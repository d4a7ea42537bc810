//! Inspect mode (issue 12): both directions of a session framed, so every reply is paired with
//! the request it answers — the ground for per-command audit, command policy and re-AUTH.
//!
//! - [`reply`]: a streaming, sans-IO RESP2/RESP3 reply framer (the upstream → client
//!   direction), reporting each complete top-level reply's kind, error code and length, bulk
//!   payloads counted through and never buffered. Requests are framed by
//!   [`guard::framer`](crate::proxy::guard::framer).
//! - [`matcher`]: pairs the two event streams in order (pipelining, RESP3 pushes, subscribe
//!   confirmations, RESP2 pub/sub messages).
//!
//! Not yet wired into the relay: nothing here moves bytes. What this module must never do:
//! disagree with Redis about where a reply ends, hold or reorder bytes (it only observes them),
//! buffer a payload, or panic on input from the upstream.

mod fuzz;
pub mod matcher;
pub mod reply;

#[cfg(test)]
mod tests;

pub use fuzz::fuzz_replies;
pub use matcher::{Matched, Matcher};
pub use reply::{Reply, ReplyConfig, ReplyError, ReplyFramer, ReplyKind, ReplyStep, Word};
