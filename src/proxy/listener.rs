//! Accept loops.
