//! IDENTIFY DEVICE data: the 512-byte answer that tells an initiator a disk's size,
//! addressing mode and names.
//!
//! The data is 256 little-endian 16-bit words. ASCII strings are stored with the two bytes
//! of each word swapped, so "AoE disk" reads back as "oA Eidks" byte by byte.

use crate::ParseError;

/// Length of IDENTIFY DEVICE data.
pub const IDENTIFY_LEN: usize = 512;

const W_GENERAL: usize = 0;
const W_CYLINDERS: usize = 1;
const W_HEADS: usize = 3;
const W_SECTORS_PER_TRACK: usize = 6;
const W_SERIAL: usize = 10;
const W_FIRMWARE: usize = 23;
const W_MODEL: usize = 27;
const W_MAX_MULTIPLE: usize = 47;
const W_CAPABILITIES: usize = 49;
const W_VALIDITY: usize = 53;
const W_LBA28: usize = 60;
const W_MAJOR_VERSION: usize = 80;
const W_SUPPORTED_82: usize = 82;
const W_SUPPORTED_83: usize = 83;
const W_SUPPORTED_84: usize = 84;
const W_ENABLED_85: usize = 85;
const W_ENABLED_86: usize = 86;
const W_DEFAULT_87: usize = 87;
const W_LBA48: usize = 100;
const W_INTEGRITY: usize = 255;

/// Word 49: LBA supported.
pub const CAP_LBA: u16 = 0x0200;
/// Word 83/86: 48-bit address feature set.
pub const CMDSET_LBA48: u16 = 0x0400;
/// Word 83/86: FLUSH CACHE.
pub const CMDSET_FLUSH: u16 = 0x1000;
/// Word 83/86: FLUSH CACHE EXT.
pub const CMDSET_FLUSH_EXT: u16 = 0x2000;
/// Words 83, 84, 87: bit 14 shall be one (bit 15 zero) for the word to be valid.
pub const WORD_VALID: u16 = 0x4000;
/// Word 82/85: write cache.
const CMDSET_WRITE_CACHE: u16 = 0x0020;
/// Word 82/85: SMART feature set.
pub const CMDSET_SMART: u16 = 0x0001;
/// LBA28 capacity field limit (words 60-61).
const LBA28_MAX: u64 = 0x0FFF_FFFF;
const SIGNATURE: u8 = 0xA5;

/// IDENTIFY DEVICE contents as plain values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Identify {
    /// Serial number, space-padded (words 10-19).
    pub serial: [u8; 20],
    /// Firmware revision, space-padded (words 23-26).
    pub firmware: [u8; 8],
    /// Model number, space-padded (words 27-46).
    pub model: [u8; 40],
    /// Capacity in 512-byte sectors.
    pub sectors: u64,
    /// 48-bit addressing supported (word 83 bit 10).
    pub lba48: bool,
    /// Most sectors per READ/WRITE MULTIPLE (word 47 low byte).
    pub max_multiple: u8,
    /// SMART supported and enabled (words 82 and 85 bit 0); aoeping -S asks for it.
    pub smart: bool,
    /// FLUSH CACHE (0xE7) supported (word 83 bit 12).
    pub flush_cache: bool,
    /// FLUSH CACHE EXT (0xEA) supported (word 83 bit 13). vblade offers only FLUSH CACHE.
    pub flush_cache_ext: bool,
}

impl Identify {
    /// IDENTIFY data for a disk of `sectors` sectors, with LBA48, both FLUSH CACHE
    /// commands and SMART. Strings longer than their fields are cut; shorter ones space-padded.
    pub fn new(model: &str, serial: &str, firmware: &str, sectors: u64) -> Self {
        Identify {
            serial: padded(serial),
            firmware: padded(firmware),
            model: padded(model),
            sectors,
            lba48: true,
            max_multiple: 1,
            smart: true,
            flush_cache: true,
            flush_cache_ext: true,
        }
    }

    /// The model without trailing spaces (lossy for non-UTF-8).
    pub fn model(&self) -> &str {
        trimmed(&self.model)
    }
    /// The serial number without padding.
    pub fn serial(&self) -> &str {
        trimmed(&self.serial)
    }
    /// The firmware revision without padding.
    pub fn firmware(&self) -> &str {
        trimmed(&self.firmware)
    }

    /// Writes the 512 bytes of IDENTIFY data, with the integrity word (255) set.
    ///
    /// ```
    /// use aoe_proto::identify::{Identify, IDENTIFY_LEN};
    /// let id = Identify::new("Rust AoE", "e1.0", "0.1", 1 << 30);
    /// let mut buf = [0u8; IDENTIFY_LEN];
    /// id.emit(&mut buf);
    /// assert_eq!(Identify::parse(&buf).unwrap(), id);
    /// ```
    pub fn emit(&self, buf: &mut [u8; IDENTIFY_LEN]) {
        buf.fill(0);
        let lba28 = self.sectors.min(LBA28_MAX);
        let lba48_bit = if self.lba48 { CMDSET_LBA48 } else { 0 };
        let flush_bits = if self.flush_cache { CMDSET_FLUSH } else { 0 }
            | if self.flush_cache_ext { CMDSET_FLUSH_EXT } else { 0 };
        let cmdset = WORD_VALID | lba48_bit | flush_bits;
        let features = CMDSET_WRITE_CACHE | if self.smart { CMDSET_SMART } else { 0 };
        let mut w = |i: usize, v: u16| put_word(buf, i, v);
        w(W_GENERAL, 0x0040);
        w(W_CYLINDERS, 16383);
        w(W_HEADS, 16);
        w(W_SECTORS_PER_TRACK, 63);
        w(W_MAX_MULTIPLE, 0x8000 | u16::from(self.max_multiple));
        w(W_CAPABILITIES, CAP_LBA);
        w(W_VALIDITY, 0x0006);
        w(W_LBA28, lba28 as u16);
        w(W_LBA28 + 1, (lba28 >> 16) as u16);
        w(W_MAJOR_VERSION, 0x00F0);
        w(W_SUPPORTED_82, features);
        w(W_SUPPORTED_83, cmdset);
        w(W_SUPPORTED_84, WORD_VALID);
        w(W_ENABLED_85, features);
        w(W_ENABLED_86, cmdset);
        w(W_DEFAULT_87, WORD_VALID);
        if self.lba48 {
            for k in 0..4 {
                w(W_LBA48 + k, (self.sectors >> (16 * k)) as u16);
            }
        }
        put_string(buf, W_SERIAL, &self.serial);
        put_string(buf, W_FIRMWARE, &self.firmware);
        put_string(buf, W_MODEL, &self.model);
        let sum = buf.iter().take(IDENTIFY_LEN - 1).fold(SIGNATURE, |a, &b| a.wrapping_add(b));
        put_word(buf, W_INTEGRITY, u16::from_le_bytes([SIGNATURE, sum.wrapping_neg()]));
    }

    /// Reads IDENTIFY data back. The capacity comes from words 100-103 when word 83 says
    /// LBA48 (as the Linux driver does), otherwise from words 60-61.
    pub fn parse(buf: &[u8]) -> Result<Self, ParseError> {
        let buf: &[u8; IDENTIFY_LEN] = buf
            .get(..IDENTIFY_LEN)
            .and_then(|b| b.try_into().ok())
            .ok_or(ParseError::Truncated { what: "IDENTIFY data", need: IDENTIFY_LEN, got: buf.len() })?;
        if buf[IDENTIFY_LEN - 2] == SIGNATURE && buf.iter().fold(0u8, |a, &b| a.wrapping_add(b)) != 0 {
            return Err(ParseError::IdentifyChecksum);
        }
        let w = |i: usize| get_word(buf, i);
        let valid_83 = w(W_SUPPORTED_83) & 0xC000 == WORD_VALID;
        let supports = |bit: u16| valid_83 && w(W_SUPPORTED_83) & bit != 0;
        let lba48 = supports(CMDSET_LBA48);
        let sectors = if lba48 {
            (0..4).fold(0u64, |acc, k| acc | u64::from(w(W_LBA48 + k)) << (16 * k))
        } else {
            u64::from(w(W_LBA28)) | u64::from(w(W_LBA28 + 1)) << 16
        };
        Ok(Identify {
            serial: get_string(buf, W_SERIAL),
            firmware: get_string(buf, W_FIRMWARE),
            model: get_string(buf, W_MODEL),
            sectors,
            lba48,
            max_multiple: w(W_MAX_MULTIPLE) as u8,
            smart: w(W_SUPPORTED_82) & CMDSET_SMART != 0,
            flush_cache: supports(CMDSET_FLUSH),
            flush_cache_ext: supports(CMDSET_FLUSH_EXT),
        })
    }
}

fn padded<const N: usize>(s: &str) -> [u8; N] {
    let mut out = [b' '; N];
    out.iter_mut().zip(s.bytes()).for_each(|(o, b)| *o = b);
    out
}

fn trimmed(b: &[u8]) -> &str {
    let end = b.iter().rposition(|&c| c != b' ' && c != 0).map_or(0, |p| p + 1);
    let b = b.get(..end).unwrap_or_default();
    core::str::from_utf8(b).unwrap_or("")
}

fn put_word(buf: &mut [u8; IDENTIFY_LEN], index: usize, value: u16) {
    if let Some(slot) = buf.get_mut(2 * index..2 * index + 2) {
        slot.copy_from_slice(&value.to_le_bytes());
    }
}

fn get_word(buf: &[u8; IDENTIFY_LEN], index: usize) -> u16 {
    match buf.get(2 * index..2 * index + 2) {
        Some(&[lo, hi]) => u16::from_le_bytes([lo, hi]),
        _ => 0,
    }
}

/// ATA strings: two characters per word, the first in the high byte.
fn put_string<const N: usize>(buf: &mut [u8; IDENTIFY_LEN], word: usize, s: &[u8; N]) {
    for (k, pair) in s.chunks_exact(2).enumerate() {
        if let [a, b] = *pair {
            put_word(buf, word + k, u16::from_be_bytes([a, b]));
        }
    }
}

fn get_string<const N: usize>(buf: &[u8; IDENTIFY_LEN], word: usize) -> [u8; N] {
    let mut out = [0u8; N];
    for (k, pair) in out.chunks_exact_mut(2).enumerate() {
        pair.copy_from_slice(&get_word(buf, word + k).to_be_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_the_linux_driver_reads() {
        let id = Identify::new("Rust AoE target", "SN123", "0.1.0", 0x1_2345_6789);
        let mut buf = [0u8; IDENTIFY_LEN];
        id.emit(&mut buf);
        let w = |i: usize| u16::from_le_bytes([buf[2 * i], buf[2 * i + 1]]);
        assert_eq!(w(49) & CAP_LBA, CAP_LBA);
        assert_eq!(w(83) & 0xC000, 0x4000);
        assert_ne!(w(83) & CMDSET_LBA48, 0);
        assert_ne!(w(86) & CMDSET_FLUSH_EXT, 0);
        assert_eq!((w(82) & CMDSET_SMART, w(85) & CMDSET_SMART), (CMDSET_SMART, CMDSET_SMART));
        assert_eq!(w(82) & 0x4000, 0, "word 82 bit 14 is NOP supported, not a validity bit");
        assert_eq!((w(60), w(61)), (0xFFFF, 0x0FFF), "LBA28 capacity is capped");
        assert_eq!([w(100), w(101), w(102), w(103)], [0x6789, 0x2345, 0x0001, 0]);
        // "Ru" stored as one word with 'R' in the high byte
        assert_eq!(&buf[54..56], b"uR");
        assert_eq!(buf.iter().fold(0u8, |a, &b| a.wrapping_add(b)), 0);
        assert_eq!(buf[510], 0xA5);
    }

    #[test]
    fn round_trip_and_trimmed_strings() {
        let id = Identify::new("model", "serial", "fw", 1000);
        let mut buf = [0u8; IDENTIFY_LEN];
        id.emit(&mut buf);
        let back = Identify::parse(&buf).unwrap();
        assert_eq!(back, id);
        assert_eq!((back.model(), back.serial(), back.firmware()), ("model", "serial", "fw"));
    }

    #[test]
    fn lba28_only_disk_reads_words_60_61() {
        let mut id = Identify::new("m", "s", "f", 5000);
        id.lba48 = false;
        let mut buf = [0u8; IDENTIFY_LEN];
        id.emit(&mut buf);
        assert_eq!(Identify::parse(&buf).unwrap().sectors, 5000);
    }

    #[test]
    fn rejects_short_and_corrupt_data() {
        assert!(matches!(Identify::parse(&[0u8; 100]), Err(ParseError::Truncated { got: 100, .. })));
        let mut buf = [0u8; IDENTIFY_LEN];
        Identify::new("m", "s", "f", 1).emit(&mut buf);
        buf[100] ^= 1;
        assert_eq!(Identify::parse(&buf), Err(ParseError::IdentifyChecksum));
        // without the signature, no checksum is expected (vblade sends none)
        buf[510] = 0;
        assert!(Identify::parse(&buf).is_ok());
    }

    /// Words 83 and 86 as vblade 25 sends them: LBA48 and FLUSH CACHE, no FLUSH CACHE EXT
    /// (it aborts 0xEA), no integrity word.
    #[test]
    fn vblade_offers_flush_cache_but_not_the_ext_form() {
        let mut buf = [0u8; IDENTIFY_LEN];
        for (word, value) in [(49, 0x0200u16), (83, 0x5400), (86, 0x1400), (100, 0x0000), (101, 0x0002)] {
            buf[2 * word..2 * word + 2].copy_from_slice(&value.to_le_bytes());
        }
        let id = Identify::parse(&buf).unwrap();
        assert!(id.lba48 && id.flush_cache && !id.flush_cache_ext);
        assert_eq!(id.sectors, 0x2_0000);
    }
}
