//! Command 0, issue ATA: the 12-byte ATA header and the sector data that follows it.

use bitflags::bitflags;
use zerocopy::little_endian::{U32 as LeU32, U64 as LeU64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::code::code_enum;
use crate::sizing::SECTOR_SIZE;

/// Length of the ATA header that follows the common header.
pub const HEADER_LEN: usize = 12;
/// Largest LBA28 address plus one: the sector count limit of 28-bit commands.
pub const LBA28_LIMIT: u64 = 1 << 28;
/// Largest LBA48 address plus one.
pub const LBA48_LIMIT: u64 = 1 << 48;

bitflags! {
    /// AoE ATA flags (byte 0 of the ATA header). Unknown bits are kept.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct AtaFlags: u8 {
        /// E: LBA48 ("extended") command.
        const EXTENDED = 0x40;
        /// D: the ATA device/head register's device bit.
        const DEVICE = 0x10;
        /// A: asynchronous write (the target may answer before the data is stable).
        const ASYNC = 0x02;
        /// W: write; data follows in the request.
        const WRITE = 0x01;
        const _ = !0;
    }
}

bitflags! {
    /// ATA status register bits, as answered in the command/status byte.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct AtaStatus: u8 {
        /// Busy.
        const BSY = 0x80;
        /// Device ready.
        const DRDY = 0x40;
        /// Device fault.
        const DF = 0x20;
        /// Data request.
        const DRQ = 0x08;
        /// Error: the error register says which.
        const ERR = 0x01;
        const _ = !0;
    }
}

bitflags! {
    /// ATA error register bits, as answered in the error/feature byte.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct AtaError: u8 {
        /// Uncorrectable data error (I/O failed).
        const UNC = 0x40;
        /// ID not found: address out of range.
        const IDNF = 0x10;
        /// Command aborted.
        const ABRT = 0x04;
        const _ = !0;
    }
}

code_enum! {
    /// ATA command opcodes an AoE target meets.
    pub enum AtaCommand {
        /// 0x20 READ SECTORS (LBA28).
        ReadSectors = 0x20,
        /// 0x24 READ SECTORS EXT (LBA48).
        ReadSectorsExt = 0x24,
        /// 0x30 WRITE SECTORS (LBA28).
        WriteSectors = 0x30,
        /// 0x34 WRITE SECTORS EXT (LBA48).
        WriteSectorsExt = 0x34,
        /// 0xB0 SMART.
        Smart = 0xB0,
        /// 0xE5 CHECK POWER MODE.
        CheckPowerMode = 0xE5,
        /// 0xE7 FLUSH CACHE.
        FlushCache = 0xE7,
        /// 0xEA FLUSH CACHE EXT.
        FlushCacheExt = 0xEA,
        /// 0xEC IDENTIFY DEVICE.
        IdentifyDevice = 0xEC,
        /// 0xEF SET FEATURES.
        SetFeatures = 0xEF,
    }
}

/// The ATA header as it sits on the wire, at offset 24 of the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct AtaHeader {
    /// AoE ATA flags.
    pub aflags: u8,
    /// Request: feature register. Response: error register.
    pub err_feature: u8,
    /// Sectors of 512 bytes carried (or, for some commands, a command-specific value).
    pub sector_count: u8,
    /// Request: command register. Response: status register.
    pub cmd_status: u8,
    /// LBA, least significant byte first.
    pub lba: [u8; 6],
    /// Reserved, zero.
    pub reserved: [u8; 2],
}

impl AtaHeader {
    /// The AoE ATA flags.
    pub fn flags(&self) -> AtaFlags {
        AtaFlags::from_bits_retain(self.aflags)
    }
    /// The command register (in a request).
    pub fn command(&self) -> AtaCommand {
        AtaCommand::from(self.cmd_status)
    }
    /// The status register (in a response).
    pub fn status(&self) -> AtaStatus {
        AtaStatus::from_bits_retain(self.cmd_status)
    }
    /// The error register (in a response).
    pub fn error(&self) -> AtaError {
        AtaError::from_bits_retain(self.err_feature)
    }
    /// All six LBA bytes as a 48-bit number.
    pub fn lba48(&self) -> u64 {
        lba_from_bytes(self.lba)
    }
    /// The 28-bit LBA: bytes 0..3 and the low nibble of byte 3.
    pub fn lba28(&self) -> u32 {
        let [b0, b1, b2, b3, _, _] = self.lba;
        u32::from_le_bytes([b0, b1, b2, b3 & 0x0F])
    }
    /// The LBA the command addresses: 48-bit with [`AtaFlags::EXTENDED`], 28-bit without.
    pub fn lba(&self) -> u64 {
        if self.flags().contains(AtaFlags::EXTENDED) {
            self.lba48()
        } else {
            u64::from(self.lba28())
        }
    }
    /// Stores a 48-bit LBA (higher bits are dropped).
    pub fn set_lba48(&mut self, lba: u64) {
        self.lba = lba_to_bytes(lba);
    }
}

fn lba_from_bytes(b: [u8; 6]) -> u64 {
    let [b0, b1, b2, b3, b4, b5] = b;
    u64::from_le_bytes([b0, b1, b2, b3, b4, b5, 0, 0])
}

fn lba_to_bytes(lba: u64) -> [u8; 6] {
    let [b0, b1, b2, b3, b4, b5, _, _] = lba.to_le_bytes();
    [b0, b1, b2, b3, b4, b5]
}

/// An ATA header as plain values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AtaRepr {
    /// AoE ATA flags.
    pub flags: AtaFlags,
    /// Feature (request) or error (response) register.
    pub err_feature: u8,
    /// Sector count register.
    pub sector_count: u8,
    /// Command (request) or status (response) register.
    pub cmd_status: u8,
    /// The six LBA bytes as a 48-bit number (for LBA28 commands byte 3's high nibble
    /// holds device bits; see [`AtaHeader::lba`]).
    pub lba: u64,
}

impl AtaRepr {
    /// A read of `count` sectors at `lba`, LBA48 when `extended`.
    pub fn read(lba: u64, count: u8, extended: bool) -> Self {
        let (flags, cmd) = if extended {
            (AtaFlags::EXTENDED, AtaCommand::ReadSectorsExt)
        } else {
            (AtaFlags::empty(), AtaCommand::ReadSectors)
        };
        AtaRepr {
            flags,
            err_feature: 0,
            sector_count: count,
            cmd_status: cmd.into(),
            lba: lba28_device_bits(lba, extended),
        }
    }

    /// A write of `count` sectors at `lba`, LBA48 when `extended`.
    pub fn write(lba: u64, count: u8, extended: bool) -> Self {
        let (flags, cmd) = if extended {
            (AtaFlags::EXTENDED | AtaFlags::WRITE, AtaCommand::WriteSectorsExt)
        } else {
            (AtaFlags::WRITE, AtaCommand::WriteSectors)
        };
        AtaRepr {
            flags,
            err_feature: 0,
            sector_count: count,
            cmd_status: cmd.into(),
            lba: lba28_device_bits(lba, extended),
        }
    }

    /// A command without data (IDENTIFY, FLUSH CACHE, ...).
    pub fn command(cmd: AtaCommand, sector_count: u8) -> Self {
        AtaRepr { flags: AtaFlags::empty(), err_feature: 0, sector_count, cmd_status: cmd.into(), lba: 0 }
    }

    /// Reads the values of a wire header.
    pub fn parse(h: &AtaHeader) -> Self {
        AtaRepr {
            flags: h.flags(),
            err_feature: h.err_feature,
            sector_count: h.sector_count,
            cmd_status: h.cmd_status,
            lba: h.lba48(),
        }
    }

    /// The wire header for these values.
    #[inline]
    pub fn to_wire(&self) -> AtaHeader {
        // Built as two little-endian words (flags, registers and LBA bytes 0-3; LBA bytes 4-5
        // and the reserved zeros) so that it is assembled in registers and stored with two
        // writes instead of twelve: this is the header of every read answer.
        let registers =
            u32::from_le_bytes([self.flags.bits(), self.err_feature, self.sector_count, self.cmd_status]);
        let words = AtaWords {
            low: LeU64::new(u64::from(registers) | self.lba << 32),
            high: LeU32::new(u32::from((self.lba >> 32) as u16)),
        };
        zerocopy::transmute!(words)
    }

    /// Bytes of sector data `sector_count` stands for.
    pub fn data_len(&self) -> usize {
        usize::from(self.sector_count) * SECTOR_SIZE
    }
}

/// [`AtaHeader`]'s layout as two little-endian words.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct AtaWords {
    low: LeU64,
    high: LeU32,
}

/// LBA28 commands carry the LBA mode bit (0x40) and the obsolete 0xA0 bits in byte 3's
/// high nibble, as the Linux driver sends them.
fn lba28_device_bits(lba: u64, extended: bool) -> u64 {
    if extended {
        lba & (LBA48_LIMIT - 1)
    } else {
        (lba & (LBA28_LIMIT - 1)) | (0xE0 << 24)
    }
}

/// Splits an ATA payload (everything after the common header) into header and data.
///
/// A write request must carry `sector_count × 512` data bytes; the data returned is exactly
/// that long. Otherwise the data is everything after the header: in an answer the sector
/// count register is not a length (vblade answers reads and IDENTIFY with it at 0, as an ATA
/// device leaves it), so the reader takes as many bytes as its request asked for. Where a
/// frame carries no data, this may be Ethernet padding.
#[inline]
pub(crate) fn split(payload: &[u8], is_response: bool) -> Result<(&AtaHeader, &[u8]), crate::ParseError> {
    let (header, rest) = crate::split_header::<AtaHeader>(payload, "ATA header")?;
    let want = usize::from(header.sector_count) * SECTOR_SIZE;
    if !is_response && header.flags().contains(AtaFlags::WRITE) {
        let data = rest.get(..want).ok_or(crate::ParseError::WriteDataShort {
            sectors: header.sector_count,
            need: want,
            got: rest.len(),
        })?;
        return Ok((header, data));
    }
    Ok((header, rest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The word-wise `to_wire` puts every field where the wire struct has it.
        #[test]
        fn to_wire_fields(
            flags in any::<u8>(),
            err_feature in any::<u8>(),
            sector_count in any::<u8>(),
            cmd_status in any::<u8>(),
            lba in any::<u64>(),
        ) {
            let flags = AtaFlags::from_bits_retain(flags);
            let wire = AtaRepr { flags, err_feature, sector_count, cmd_status, lba }.to_wire();
            prop_assert_eq!(
                wire,
                AtaHeader { aflags: flags.bits(), err_feature, sector_count, cmd_status, lba: lba_to_bytes(lba), reserved: [0; 2] }
            );
        }
    }

    #[test]
    fn to_wire_bytes() {
        let repr = AtaRepr::read(0x1234_5678_9abc, 8, true);
        assert_eq!(repr.to_wire().as_bytes(), [0x40, 0, 8, 0x24, 0xbc, 0x9a, 0x78, 0x56, 0x34, 0x12, 0, 0]);
        let repr = AtaRepr::write(0x0123_4567, 1, false);
        assert_eq!(repr.to_wire().as_bytes(), [0x01, 0, 1, 0x30, 0x67, 0x45, 0x23, 0xe1, 0, 0, 0, 0]);
    }
}
