//! The upstream's reply to AUTH / HELLO: never panics, split-invariant.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    bastion::proxy::handshake::fuzz_reply(data);
});
