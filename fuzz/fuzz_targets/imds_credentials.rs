//! An IMDS credentials document: credentials or an error that never quotes the secret key.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    bastion::aws::imds::fuzz_credentials(data);
});
