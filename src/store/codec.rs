//! Bytes on disk: the file header and the length + CRC32 frame around every record.
//!
//! ```text
//! header (32 bytes): magic[8] | version u32 | generation u64 | seq u64 | crc32 u32 (of the 28 before)
//! frame:             len u32  | crc32 u32 (of len and payload) | payload[len]      (little-endian)
//! ```
//! A log payload is a postcard [`LogEntry`]; the snapshot file holds one frame whose payload is a
//! postcard [`super::snapshot::SnapshotBody`]. This module only frames and checks bytes; what a
//! bad frame means (torn tail or damage) is decided in [`super::recovery`].

use serde::{Deserialize, Serialize};

use super::error::FrameProblem;
use super::records::Mutation;

/// The current on-disk format version, in both files' headers.
pub const FORMAT_VERSION: u32 = 4;
/// Bytes in a file header.
pub const HEADER_LEN: usize = 32;
/// Bytes in front of each frame's payload (length + CRC).
pub const FRAME_HEADER_LEN: usize = 8;
/// Largest log record payload. The largest record the bounds allow is a few KiB, so anything
/// bigger is damage.
pub const MAX_RECORD_LEN: usize = 64 * 1024;
/// Largest snapshot payload (every collection at its bound fits well within it).
pub const MAX_SNAPSHOT_LEN: usize = 512 * 1024 * 1024;

pub const LOG_MAGIC: [u8; 8] = *b"BSTNLOG\0";
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"BSTNSNP\0";

/// One log record: the mutation and the sequence number it was acknowledged with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    pub seq: u64,
    pub mutation: Mutation,
}

/// A file header. For the log, `seq` is the last seq before its first record; for a snapshot,
/// the last seq it includes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub version: u32,
    pub generation: u64,
    pub seq: u64,
}

pub fn encode_header(magic: [u8; 8], h: Header) -> [u8; HEADER_LEN] {
    let mut out = [0u8; HEADER_LEN];
    out[..8].copy_from_slice(&magic);
    out[8..12].copy_from_slice(&h.version.to_le_bytes());
    out[12..20].copy_from_slice(&h.generation.to_le_bytes());
    out[20..28].copy_from_slice(&h.seq.to_le_bytes());
    let crc = crc32fast::hash(&out[..28]);
    out[28..].copy_from_slice(&crc.to_le_bytes());
    out
}

#[derive(Debug, PartialEq, Eq)]
pub enum HeaderRead {
    Valid(Header),
    /// Shorter than a header but a prefix of one: the file's creation was cut short.
    Torn,
    Bad(String),
}

pub fn decode_header(magic: [u8; 8], bytes: &[u8]) -> HeaderRead {
    if bytes.len() < HEADER_LEN {
        let n = bytes.len().min(8);
        return if bytes[..n] == magic[..n] {
            HeaderRead::Torn
        } else {
            HeaderRead::Bad(format!("bad magic {:02x?}", &bytes[..n]))
        };
    }
    if bytes[..8] != magic {
        return HeaderRead::Bad(format!("bad magic {:02x?}", &bytes[..8]));
    }
    let stored = u32_at(bytes, 28);
    let computed = crc32fast::hash(&bytes[..28]);
    if stored != computed {
        return HeaderRead::Bad(format!(
            "CRC32 mismatch (stored {stored:#010x}, computed {computed:#010x})"
        ));
    }
    HeaderRead::Valid(Header {
        version: u32_at(bytes, 8),
        generation: u64_at(bytes, 12),
        seq: u64_at(bytes, 20),
    })
}

/// Frame `payload`: length, CRC32 of length and payload, payload.
pub fn encode_frame(payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u32).to_le_bytes();
    let mut crc = crc32fast::Hasher::new();
    crc.update(&len);
    crc.update(payload);
    let mut out = Vec::with_capacity(FRAME_HEADER_LEN + payload.len());
    out.extend_from_slice(&len);
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Read the frame starting at `at`; a payload longer than `limit` is refused without reading it.
pub fn read_frame(bytes: &[u8], at: usize, limit: usize) -> Result<(&[u8], usize), FrameProblem> {
    let available = bytes.len().saturating_sub(at);
    if available < FRAME_HEADER_LEN {
        return Err(FrameProblem::Incomplete {
            needed: FRAME_HEADER_LEN as u64,
            available: available as u64,
        });
    }
    let len = u32_at(bytes, at) as usize;
    if len > limit {
        return Err(FrameProblem::Length {
            len: len as u64,
            limit: limit as u64,
        });
    }
    let end = at + FRAME_HEADER_LEN + len;
    if end > bytes.len() {
        return Err(FrameProblem::Incomplete {
            needed: (FRAME_HEADER_LEN + len) as u64,
            available: available as u64,
        });
    }
    let stored = u32_at(bytes, at + 4);
    let payload = &bytes[at + FRAME_HEADER_LEN..end];
    let mut crc = crc32fast::Hasher::new();
    crc.update(&bytes[at..at + 4]);
    crc.update(payload);
    let computed = crc.finalize();
    if stored != computed {
        return Err(FrameProblem::Crc { stored, computed });
    }
    Ok((payload, end))
}

/// A log record's frame, ready to append.
pub fn encode_entry(entry: &LogEntry) -> Vec<u8> {
    // Serializing into a Vec cannot fail for these types (no maps with non-string keys, no
    // unsupported serde features).
    let payload = postcard::to_stdvec(entry).expect("postcard encodes a LogEntry");
    encode_frame(&payload)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_round_trip_and_damage() {
        let f = encode_frame(b"hello");
        assert_eq!(read_frame(&f, 0, 64), Ok((&b"hello"[..], f.len())));
        assert!(matches!(
            read_frame(&f[..f.len() - 1], 0, 64),
            Err(FrameProblem::Incomplete { .. })
        ));
        assert!(matches!(
            read_frame(&f, 0, 4),
            Err(FrameProblem::Length { len: 5, .. })
        ));
        let mut bad = f.clone();
        bad[9] ^= 1;
        assert!(matches!(
            read_frame(&bad, 0, 64),
            Err(FrameProblem::Crc { .. })
        ));
    }

    #[test]
    fn header_round_trip_torn_and_bad() {
        let h = Header {
            version: FORMAT_VERSION,
            generation: 3,
            seq: 42,
        };
        let b = encode_header(LOG_MAGIC, h);
        assert_eq!(decode_header(LOG_MAGIC, &b), HeaderRead::Valid(h));
        for cut in 0..HEADER_LEN {
            assert_eq!(decode_header(LOG_MAGIC, &b[..cut]), HeaderRead::Torn);
        }
        assert!(matches!(
            decode_header(SNAPSHOT_MAGIC, &b),
            HeaderRead::Bad(_)
        ));
        let mut bad = b;
        bad[15] ^= 0x80;
        assert!(matches!(decode_header(LOG_MAGIC, &bad), HeaderRead::Bad(_)));
    }
}
