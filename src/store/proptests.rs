//! Crash safety of recovery, as properties over random histories:
//! - a log cut at any byte offset recovers exactly the records wholly before the cut;
//! - flipped bytes recover an acknowledged prefix only when nothing valid follows the damage
//!   (a torn tail), and are otherwise refused with the offset and seq of the damaged record.

use proptest::prelude::*;

use super::codec::HEADER_LEN;
use super::error::RecoveryError;
use super::recovery::{recover, LogAction};
use super::test_support::{arb_mutation, History};

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn every_cut_recovers_exactly_the_records_before_it(
        mutations in prop::collection::vec(arb_mutation(), 2..40),
        snapshot_half in any::<bool>(),
    ) {
        let h = History::build(&mutations, snapshot_half);
        for cut in 0..=h.log.len() {
            let r = recover(h.snapshot.as_deref(), Some(&h.log[..cut]))
                .unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
            let whole = h.frames.iter().filter(|&&(_, end)| end <= cut).count();
            let seq = h.base + whole;
            prop_assert_eq!(&r.state, &h.states[seq], "cut at {}", cut);
            prop_assert_eq!(r.last_seq, seq as u64);
            if cut < HEADER_LEN {
                prop_assert_eq!(r.log, LogAction::Recreate);
            } else {
                let valid_len = h.frames[..whole].last().map_or(HEADER_LEN, |f| f.1);
                prop_assert_eq!(r.log, LogAction::Keep {
                    valid_len: valid_len as u64,
                    torn: (cut - valid_len) as u64,
                });
            }
        }
    }

    #[test]
    fn flipped_bytes_give_a_torn_tail_prefix_or_a_precise_refusal(
        mutations in prop::collection::vec(arb_mutation(), 2..40),
        snapshot_half in any::<bool>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4),
    ) {
        let h = History::build(&mutations, snapshot_half);
        let mut log = h.log.clone();
        let mut at: Vec<usize> = flips.iter().map(|(i, _)| i.index(log.len())).collect();
        for ((_, x), &a) in flips.iter().zip(&at) {
            log[a] ^= x;
        }
        // Flips at the same offset may cancel out; only bytes that differ count.
        at.retain(|&a| log[a] != h.log[a]);
        let Some(&first) = at.iter().min() else { return Ok(()) };
        let result = recover(h.snapshot.as_deref(), Some(&log));

        let Some(bad) = h.frame_of(first) else {
            // The header is written whole before the log is renamed into place: damage there is
            // refused.
            prop_assert!(matches!(result, Err(RecoveryError::Header { .. })), "{:?}", result);
            return Ok(());
        };
        let intact_after = (bad + 1..h.frames.len())
            .any(|j| !at.iter().any(|&a| h.frame_of(a) == Some(j)));
        let (start, _) = h.frames[bad];
        if intact_after {
            match result {
                Err(RecoveryError::Corrupt { offset, seq, next_valid: Some(next), .. }) => {
                    prop_assert_eq!(offset, start as u64);
                    prop_assert_eq!(seq, (h.base + bad + 1) as u64);
                    prop_assert!(next > offset);
                }
                other => prop_assert!(false, "damage at {} followed by a valid record: {:?}", first, other),
            }
        } else {
            let r = result.unwrap_or_else(|e| panic!("torn tail at {first}: {e}"));
            prop_assert_eq!(&r.state, &h.states[h.base + bad]);
            prop_assert_eq!(r.log, LogAction::Keep {
                valid_len: start as u64,
                torn: (log.len() - start) as u64,
            });
        }
    }

    #[test]
    fn fuzz_entry_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        super::fuzz_recover(&bytes);
    }
}

#[test]
fn fuzz_entry_on_a_corpus_of_real_logs() {
    let h = History::build(&super::test_support::one_of_each(), false);
    for cut in 0..=h.log.len() {
        super::fuzz_recover(&h.log[..cut]);
        super::fuzz_recover(&h.log[HEADER_LEN.min(cut)..cut]);
    }
    let h = History::build(&super::test_support::one_of_each(), true);
    super::fuzz_recover(h.snapshot.as_deref().unwrap());
}
