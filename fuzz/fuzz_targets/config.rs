//! The boot config's TOML: a validated config or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    bastion::config::fuzz_config(data);
});
