//! The command guard's request framer over arbitrary streams: never panics, split-invariant.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    bastion::proxy::guard::fuzz_framer(data);
});
