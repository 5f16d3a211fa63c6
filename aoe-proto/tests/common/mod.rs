//! Helpers shared by the integration tests.

#![allow(dead_code)]

/// Bytes from a hex dump such as `"ff ff 88 a2"`; whitespace is ignored.
pub fn hex(dump: &str) -> Vec<u8> {
    let digits: Vec<u8> = dump.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    assert!(digits.len() % 2 == 0, "odd number of hex digits in {dump:?}");
    digits
        .chunks_exact(2)
        .map(|pair| {
            let pair = std::str::from_utf8(pair).expect("hex dump is ASCII");
            u8::from_str_radix(pair, 16).expect("hex digit")
        })
        .collect()
}

/// An Ethernet + AoE common header (24 bytes) for hand-built frames.
pub fn aoe_header(ver_flags: u8, error: u8, shelf: u16, slot: u8, command: u8, tag: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(24);
    out.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
    out.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02]);
    out.extend_from_slice(&[0x88, 0xa2, ver_flags, error]);
    out.extend_from_slice(&shelf.to_be_bytes());
    out.extend_from_slice(&[slot, command]);
    out.extend_from_slice(&tag.to_be_bytes());
    out
}

/// `aoe_header` followed by `body`.
pub fn frame(ver_flags: u8, error: u8, command: u8, body: &[u8]) -> Vec<u8> {
    let mut out = aoe_header(ver_flags, error, 1, 0, command, 0x0102_0304);
    out.extend_from_slice(body);
    out
}
