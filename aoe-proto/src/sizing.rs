//! Sizes: sectors, frame lengths and how many sectors an MTU carries.

use crate::{ata, ethernet, header};

/// Bytes in one ATA sector.
pub const SECTOR_SIZE: usize = 512;
/// Bytes of AoE and ATA headers before the sector data (10 + 12).
pub const ATA_OVERHEAD: usize = header::HEADER_LEN + ata::HEADER_LEN;
/// Offset of the sector data from the start of an Ethernet frame (14 + 10 + 12).
pub const ATA_DATA_OFFSET: usize = ethernet::HEADER_LEN + ATA_OVERHEAD;
/// Offset of the command-specific header from the start of an Ethernet frame (14 + 10).
pub const PAYLOAD_OFFSET: usize = ethernet::HEADER_LEN + header::HEADER_LEN;

/// Most sectors one ATA frame carries at this MTU: ⌊(mtu − 22) / 512⌋, at most 255.
///
/// ```
/// assert_eq!(aoe_proto::max_sectors(1500), 2);
/// assert_eq!(aoe_proto::max_sectors(9000), 17);
/// assert_eq!(aoe_proto::max_sectors(10), 0);
/// ```
pub const fn max_sectors(mtu: usize) -> u8 {
    let sectors = mtu.saturating_sub(ATA_OVERHEAD) / SECTOR_SIZE;
    if sectors > 255 {
        255
    } else {
        sectors as u8
    }
}

/// Smallest MTU that carries `sectors` sectors in one ATA frame.
pub const fn mtu_for_sectors(sectors: u8) -> usize {
    ATA_OVERHEAD + sectors as usize * SECTOR_SIZE
}

/// Length of an Ethernet frame carrying an ATA command with `sectors` sectors of data
/// (before padding to the 60-byte minimum).
pub const fn ata_frame_len(sectors: u8) -> usize {
    ATA_DATA_OFFSET + sectors as usize * SECTOR_SIZE
}

/// The Ethernet frame length after padding `len` bytes to the 60-byte minimum.
pub const fn padded_len(len: usize) -> usize {
    if len < ethernet::MIN_FRAME_LEN {
        ethernet::MIN_FRAME_LEN
    } else {
        len
    }
}

/// Zero-fills `buf[len..60]` when `len` is below the Ethernet minimum and returns the padded
/// length; `None` when `buf` is shorter than that.
pub fn pad_to_minimum(buf: &mut [u8], len: usize) -> Option<usize> {
    let padded = padded_len(len);
    buf.get_mut(len..padded)?.fill(0);
    Some(padded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sectors_per_mtu() {
        assert_eq!(max_sectors(1500), 2);
        assert_eq!(max_sectors(9000), 17);
        assert_eq!(max_sectors(1046), 2);
        assert_eq!(max_sectors(1045), 1);
        assert_eq!(max_sectors(0), 0);
        assert_eq!(max_sectors(usize::MAX), 255);
        assert_eq!(mtu_for_sectors(17), 8726);
        assert_eq!(max_sectors(mtu_for_sectors(17)), 17);
        assert_eq!(ata_frame_len(2), 1060);
    }

    #[test]
    fn padding() {
        let mut buf = [0xAAu8; 64];
        assert_eq!(pad_to_minimum(&mut buf, 32), Some(60));
        assert!(buf[32..60].iter().all(|&b| b == 0));
        assert_eq!(buf[60], 0xAA);
        assert_eq!(pad_to_minimum(&mut buf, 62), Some(62));
        assert_eq!(pad_to_minimum(&mut buf[..40], 32), None);
    }
}
