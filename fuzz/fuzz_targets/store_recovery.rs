//! Store recovery over arbitrary snapshot / log bytes: a value or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    bastion::store::fuzz_recover(data);
});
