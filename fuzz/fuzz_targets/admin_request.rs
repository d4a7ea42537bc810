//! An admin-socket request frame (length-prefixed postcard): a value or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    bastion::admin::wire::fuzz_request(data);
});
