//! Any bytes: `Identify::parse` never panics, and what parses round-trips through emit.
#![no_main]

use aoe_proto::identify::{Identify, IDENTIFY_LEN};
use libfuzzer_sys::fuzz_target;

/// Largest capacity words 60-61 can announce; emit caps an LBA28-only capacity there.
const LBA28_MAX: u64 = 0x0FFF_FFFF;

fuzz_target!(|data: &[u8]| {
    let Ok(id) = Identify::parse(data) else { return };
    let mut buf = [0u8; IDENTIFY_LEN];
    id.emit(&mut buf);
    assert_eq!(buf.iter().fold(0u8, |a, &b| a.wrapping_add(b)), 0, "integrity word");
    let back = Identify::parse(&buf).expect("emitted IDENTIFY data parses");
    let expected = if id.lba48 { id } else { Identify { sectors: id.sectors.min(LBA28_MAX), ..id } };
    assert_eq!(back, expected);
    let mut again = [0u8; IDENTIFY_LEN];
    back.emit(&mut again);
    assert_eq!(again, buf, "emit is not stable");
});
