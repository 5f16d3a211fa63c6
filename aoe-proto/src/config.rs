//! Command 1, query config: buffer count, firmware, sector count, config command and string.

use zerocopy::network_endian::U16;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::code::code_enum;
use crate::ParseError;

/// Length of the query-config header that follows the common header.
pub const HEADER_LEN: usize = 8;
/// Longest config string the protocol allows.
pub const MAX_STRING_LEN: usize = 1024;

code_enum! {
    /// CCmd: what a query-config request asks.
    pub enum ConfigCommand {
        /// 0: read the config string.
        Read = 0,
        /// 1: answer only if the strings are equal.
        TestExact = 1,
        /// 2: answer only if the request's string is a prefix of the target's.
        TestPrefix = 2,
        /// 3: set the string if the target's is empty.
        Set = 3,
        /// 4: set the string unconditionally.
        ForceSet = 4,
    }
}

/// The query-config header as it sits on the wire, at offset 24 of the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct ConfigHeader {
    /// Requests the target can queue.
    pub buffer_count: U16,
    /// Target firmware version.
    pub firmware: U16,
    /// Most sectors one ATA request may carry.
    pub sector_count: u8,
    /// AoE version (high nibble) and CCmd (low nibble).
    pub ver_ccmd: u8,
    /// Config string length.
    pub string_len: U16,
}

impl ConfigHeader {
    /// The CCmd nibble.
    pub fn command(&self) -> ConfigCommand {
        ConfigCommand::from(self.ver_ccmd & 0x0F)
    }
    /// The AoE version nibble.
    pub fn aoe_version(&self) -> u8 {
        self.ver_ccmd >> 4
    }
}

/// A query-config message as plain values, borrowing its string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConfigRepr<'a> {
    /// Requests the target can queue.
    pub buffer_count: u16,
    /// Target firmware version.
    pub firmware: u16,
    /// Most sectors one ATA request may carry.
    pub sector_count: u8,
    /// AoE version nibble (1 in answers; initiators often send 0).
    pub aoe_version: u8,
    /// CCmd (only the low nibble goes on the wire).
    pub command: ConfigCommand,
    /// The config string, at most 1024 bytes.
    pub string: &'a [u8],
}

impl<'a> ConfigRepr<'a> {
    /// A request with the given CCmd and string (zero buffer count, firmware and sector count).
    pub fn request(command: ConfigCommand, string: &'a [u8]) -> Self {
        ConfigRepr { buffer_count: 0, firmware: 0, sector_count: 0, aoe_version: 0, command, string }
    }

    /// The wire header for these values.
    pub fn to_wire(&self) -> ConfigHeader {
        ConfigHeader {
            buffer_count: U16::new(self.buffer_count),
            firmware: U16::new(self.firmware),
            sector_count: self.sector_count,
            ver_ccmd: (self.aoe_version << 4) | (u8::from(self.command) & 0x0F),
            string_len: U16::new(u16::try_from(self.string.len()).unwrap_or(u16::MAX)),
        }
    }
}

/// Splits a query-config payload into header and string.
///
/// A read request's string is ignored, whatever its length field says: aoeping sends a read
/// with length 1024 and 1024 filler bytes, and other initiators send garbage there too.
pub(crate) fn split(payload: &[u8], is_response: bool) -> Result<(&ConfigHeader, &[u8]), ParseError> {
    let (header, rest) = crate::split_header::<ConfigHeader>(payload, "query-config header")?;
    if !is_response && header.command() == ConfigCommand::Read {
        return Ok((header, &[]));
    }
    let len = usize::from(header.string_len.get());
    if len > MAX_STRING_LEN {
        return Err(ParseError::ConfigStringTooLong { len });
    }
    match rest.get(..len) {
        Some(string) => Ok((header, string)),
        None => Err(ParseError::ConfigStringTruncated { len, available: rest.len() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(ver_ccmd: u8, len: u16, string: &[u8]) -> [u8; 24] {
        let mut p = [0u8; 24];
        p[5] = ver_ccmd;
        p[6..8].copy_from_slice(&len.to_be_bytes());
        p[8..8 + string.len()].copy_from_slice(string);
        p
    }

    #[test]
    fn read_request_ignores_a_string_that_fits() {
        // Regression: a read request whose string fitted the frame used to return it.
        let p = payload(0x00, 4, b"junk");
        assert_eq!(split(&p, false).unwrap().1, b"");
        // A read answer carries the target's string.
        assert_eq!(split(&p, true).unwrap().1, b"junk");
        // Other requests carry theirs.
        assert_eq!(split(&payload(0x03, 4, b"junk"), false).unwrap().1, b"junk");
    }
}
