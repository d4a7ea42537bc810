//! One client session.
