//! Any bytes: `Frame::parse` never panics, and what parses round-trips through emit.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    aoe_proto_fuzz::check_frame(data);
});
