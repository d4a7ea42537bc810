//! Inspect mode (issue 12): both directions of a session framed, so every reply is paired with
//! the request it answers — the ground for per-command audit, command policy and re-AUTH.
//!
//! - [`reply`]: a streaming, sans-IO RESP2/RESP3 reply framer (the upstream → client
//!   direction), reporting each complete top-level reply's kind, error code and length, bulk
//!   payloads counted through and never buffered. Requests are framed by
//!   [`guard::framer`](crate::proxy::guard::framer).
//! - [`matcher`]: pairs the two event streams in order (pipelining, RESP3 pushes, subscribe
//!   confirmations, RESP2 pub/sub messages).
//! - [`policy`]: a role's command policy (ACL-style rules), deciding per command as Redis'
//!   own ACL would; its table of commands (the only one: the audit reads it too) is generated
//!   from a real redis-server.
//! - [`keys`]: what the audit reads of that table — names, secret-bearing commands, and keys
//!   counted as Redis' `COMMAND GETKEYS` finds them (key count and first key).
//! - [`tap`]: the session's [`Inspection`], fed by the guard's observer hook (requests) and
//!   the relay's watch hook (replies); counts, pairs and audits commands (`db.command`), and
//!   asks the [`PolicyHook`] about each (holding, through the guard, a command the policy
//!   decides by its arguments).
//! - [`seam`]: a RESP2 subscriber's move to a fresh connection at a due re-AUTH (it cannot run
//!   AUTH): its subscriptions, the new connection's confirmations, and the seam where the old
//!   connection's messages end and the new one's begin (repeats dropped).
//!
//! Wired by `relay = "inspect"` (`proxy/session.rs`); nothing here moves bytes. What this
//! module must never do:
//! disagree with Redis about where a reply ends, hold or reorder bytes (it only observes them;
//! the exception is a RESP2 subscriber's move, where each reply is held to its end at the seam,
//! up to `seam::HOLD_CAP` bytes), buffer a payload otherwise, or panic on input from the
//! upstream.

mod fuzz;
pub mod keys;
pub mod matcher;
pub mod policy;
pub mod reply;
pub mod seam;
pub mod tap;

#[cfg(test)]
mod tests;

pub use fuzz::fuzz_replies;
pub use matcher::{Matched, Matcher};
pub use policy::{fuzz_policy, ArgsNeeded, CommandPolicy, Denied, RuleError, SessionPolicy};
pub use reply::{Reply, ReplyConfig, ReplyError, ReplyFramer, ReplyKind, ReplyStep, Word};
pub use tap::{AllowAll, AuditBudget, AuditSettings, Inspection, PolicyHook};
