//! Audit events (target `audit`). Stub filled in by the session work.
