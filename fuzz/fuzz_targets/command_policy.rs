//! Command policy rules and checks over arbitrary input: never panic, case-blind.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    bastion::proxy::inspect::fuzz_policy(data);
});
