//! The snapshot file: a header (generation, last seq included) and one frame holding the whole
//! [`State`]. It is only ever written to a temporary file and renamed into place, so a snapshot
//! that fails its checks is damage, never a torn write, and is refused.

use super::codec::{self, Header, HeaderRead, FORMAT_VERSION, HEADER_LEN, MAX_SNAPSHOT_LEN};
use super::error::{FileKind, FrameProblem, RecoveryError};
use super::migrate::migrate;
use super::state::State;

/// The bytes of a snapshot of `state` as of `seq`, for compaction generation `generation`.
pub fn encode(generation: u64, seq: u64, state: &State) -> Vec<u8> {
    let header = codec::encode_header(
        codec::SNAPSHOT_MAGIC,
        Header {
            version: FORMAT_VERSION,
            generation,
            seq,
        },
    );
    // Serializing into a Vec cannot fail for State (plain structs, maps and heapless fields).
    let body = postcard::to_stdvec(state).expect("postcard encodes the state");
    let mut out = header.to_vec();
    out.extend_from_slice(&codec::encode_frame(&body));
    out
}

/// Decode a snapshot file: its header and the state it holds.
pub fn decode(bytes: &[u8]) -> Result<(Header, State), RecoveryError> {
    let header = match codec::decode_header(codec::SNAPSHOT_MAGIC, bytes) {
        HeaderRead::Valid(h) => h,
        HeaderRead::Torn => {
            return Err(RecoveryError::Header {
                file: FileKind::Snapshot,
                problem: format!("file is {} bytes, shorter than a header", bytes.len()),
            })
        }
        HeaderRead::Bad(problem) => {
            return Err(RecoveryError::Header {
                file: FileKind::Snapshot,
                problem,
            })
        }
    };
    if header.version > FORMAT_VERSION {
        return Err(RecoveryError::UnsupportedVersion {
            file: FileKind::Snapshot,
            found: header.version,
            supported: FORMAT_VERSION,
        });
    }
    let at = HEADER_LEN as u64;
    let problem = |problem| RecoveryError::Snapshot {
        offset: at,
        problem,
    };
    let (payload, end) = codec::read_frame(bytes, HEADER_LEN, MAX_SNAPSHOT_LEN).map_err(problem)?;
    if end != bytes.len() {
        return Err(problem(FrameProblem::Decode(format!(
            "{} bytes after the snapshot frame",
            bytes.len() - end
        ))));
    }
    let payload = migrate(header.version, FileKind::Snapshot, payload).map_err(|reason| {
        problem(FrameProblem::Migrate {
            found: header.version,
            reason,
        })
    })?;
    let (state, rest) = postcard::take_from_bytes::<State>(&payload)
        .map_err(|e| problem(FrameProblem::Decode(e.to_string())))?;
    if !rest.is_empty() {
        return Err(problem(FrameProblem::Decode(format!(
            "{} trailing bytes in the payload",
            rest.len()
        ))));
    }
    Ok((header, state))
}
