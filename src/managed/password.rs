//! Managed passwords: crypto-random (`crate::random`: the OS CSPRNG through ring), as long as
//! the engine accepts, from an alphabet every engine and client takes without quoting.

use crate::secret::Secret;

/// The longest password ElastiCache and MemoryDB accept for a user (16..=128 printable
/// characters); self-hosted Redis/Valkey take any length, and get the same.
pub const MAX_LEN: usize = 128;

/// Letters and digits: no character that ElastiCache refuses (`@`, `"`, `/`, space) or that
/// a shell or a URL would need quoted. 128 of 62 symbols is ~762 bits.
const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// A new password of `len` characters.
pub fn generate(len: usize) -> Result<Secret, crate::random::Unavailable> {
    // Rejection sampling: only bytes below the largest multiple of the alphabet's size, so
    // every character is equally likely.
    let limit = (256 / ALPHABET.len() * ALPHABET.len()) as u8;
    let mut out = zeroize::Zeroizing::new(String::with_capacity(len));
    let mut buf = zeroize::Zeroizing::new([0u8; 64]);
    while out.len() < len {
        crate::random::fill(&mut buf[..])?;
        for &b in buf.iter().filter(|&&b| b < limit) {
            if out.len() == len {
                break;
            }
            out.push(ALPHABET[b as usize % ALPHABET.len()] as char);
        }
    }
    Ok(Secret::new(out.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_full_length_distinct_and_plain() {
        let a = generate(MAX_LEN).unwrap();
        let b = generate(MAX_LEN).unwrap();
        assert_eq!(a.expose().len(), MAX_LEN);
        assert_ne!(a.expose(), b.expose());
        assert!(a.expose().bytes().all(|c| c.is_ascii_alphanumeric()));
        // Every symbol shows up over enough draws (a biased or truncated alphabet would not).
        let many: String = (0..40)
            .map(|_| generate(MAX_LEN).unwrap().expose().to_string())
            .collect();
        assert!(ALPHABET.iter().all(|c| many.as_bytes().contains(c)));
    }
}
