//! The EC2 user-data settings document: records or an error that never shows its lines.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    bastion::cli::import::fuzz_settings(data);
});
