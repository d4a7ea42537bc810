//! The one way the bastion draws random bytes: the kernel's generator through ring (the
//! provider rustls runs on). Certificate serials, the warm pool's RESET nonces, temporary file
//! names and managed passwords all come from here.

use ring::rand::{SecureRandom, SystemRandom};

/// The system's random source failed (`getrandom(2)` returned an error): nothing random can
/// be made, and nothing that needs it may go ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unavailable;

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the system random number generator failed")
    }
}

impl std::error::Error for Unavailable {}

/// Fill `buf` with random bytes.
pub fn fill(buf: &mut [u8]) -> Result<(), Unavailable> {
    SystemRandom::new().fill(buf).map_err(|_| Unavailable)
}

/// `BYTES` random bytes as `2 × BYTES` lower-case hex digits.
pub fn hex<const BYTES: usize>() -> Result<String, Unavailable> {
    let mut bytes = [0u8; BYTES];
    fill(&mut bytes)?;
    Ok(hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_twice_as_long_lower_case_and_never_repeats() {
        let a = hex::<16>().unwrap();
        let b = hex::<16>().unwrap();
        assert_eq!(a.len(), 32);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)),
            "{a}"
        );
        assert_ne!(a, b);
    }
}
