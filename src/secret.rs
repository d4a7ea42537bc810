//! Secrets (IAM tokens, passwords, private keys) in a type that cannot leak by accident.
//!
//! `Debug` and `Display` print `****`; the bytes are zeroized on drop. The only way to the
//! value is [`Secret::expose`], so every place that sends a secret over the wire is greppable.

use std::fmt;
use zeroize::Zeroizing;

/// A secret string. Never logged, never part of an error message.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(Zeroizing::new(value.into()))
    }

    /// The secret value. Call only where it is written to a peer or a 0600 file.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(****)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("****")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatting_hides_the_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s}"), "****");
        assert!(!format!("{s:?}").contains("hunter2"));
        assert_eq!(s.expose(), "hunter2");
    }
}
