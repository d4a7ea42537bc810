//! Inspect mode's reply framer and matcher over arbitrary streams: never panic, split-invariant.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    bastion::proxy::inspect::fuzz_replies(data);
});
