//! A writable, in-place view of a whole ATA frame (command 0): the Ethernet, common and ATA
//! headers at the start of a caller's buffer, then the sector area at
//! [`crate::sizing::ATA_DATA_OFFSET`].
//!
//! Both sides build ATA frames the same way: headers first, then the sectors written in place
//! (a target reads from its disk straight into an answer; an initiator copies a write's data
//! into its request), then padding to the Ethernet minimum. [`AtaFrame`] is that sequence:
//! [`AtaFrame::emit`] writes the headers, [`AtaFrame::data_mut`] (or
//! [`AtaFrame::payload_mut`]) hands out the sector area, setters change registers later (a
//! target sets the status once its I/O is done), and [`AtaFrame::finish`] pads and returns
//! the frame's length. Nothing is copied, nothing allocates, and every length is checked
//! once, when the view is made.
//!
//! ```
//! use aoe_proto::{AtaFrame, AtaRepr, Body, Frame, HeaderRepr, MacAddr};
//!
//! // An initiator writes 2 sectors at LBA 100 to e1.0.
//! let (target, host) = (MacAddr([2, 0, 0, 0, 0, 0x10]), MacAddr([2, 0, 0, 0, 0, 0x20]));
//! let mut buf = [0u8; 1514];
//! let mut request =
//!     AtaFrame::emit(&mut buf, target, host, &HeaderRepr::request(1, 0, 7), &AtaRepr::write(100, 2, true))?;
//! request.data_mut(1024)?.fill(0xAB);
//! let len = request.finish(1024)?;
//!
//! let frame = Frame::parse(&buf[..len])?;
//! let Body::Ata { header, data } = frame.body else { panic!("not ATA") };
//! assert_eq!((header.lba(), data.len()), (100, 1024));
//! # Ok::<(), Box<dyn core::error::Error>>(())
//! ```

use zerocopy::little_endian::U64 as LeU64;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::ata::{AtaError, AtaHeader, AtaRepr, AtaStatus};
use crate::ethernet::{EthernetHeader, MacAddr};
use crate::frame::common_words;
use crate::header::{AoeHeader, Command, Flags, HeaderRepr};
use crate::sizing::{padded_len, ATA_DATA_OFFSET};
use crate::EmitError;

/// The Ethernet and common headers.
#[derive(Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct CommonHeaders {
    ethernet: EthernetHeader,
    aoe: AoeHeader,
}

/// Every header of an ATA frame, as it sits at the start of the frame (36 bytes).
#[derive(Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct AtaHeaders {
    common: CommonHeaders,
    ata: AtaHeader,
}

/// A mutable view of an ATA frame in a caller's buffer: its headers, then its sector area
/// (everything after them, up to the end of the buffer).
///
/// The buffer is checked to hold the headers when the view is made; every accessor after
/// that is infallible. The frame's length is not part of the view: [`finish`](Self::finish)
/// is told how many data bytes follow the headers.
#[derive(Debug)]
pub struct AtaFrame<'a> {
    headers: &'a mut AtaHeaders,
    payload: &'a mut [u8],
}

impl core::fmt::Debug for AtaHeaders {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("AtaHeaders")
            .field("ethernet", &self.common.ethernet)
            .field("aoe", &self.common.aoe)
            .field("ata", &self.ata)
            .finish()
    }
}

impl<'a> AtaFrame<'a> {
    /// Length of the headers: the offset of the sector area (14 + 10 + 12).
    pub const HEADER_LEN: usize = ATA_DATA_OFFSET;

    /// A view of the ATA frame whose headers `buffer` already holds (a request received, or
    /// an answer whose headers were emitted earlier). Only the length is checked: fails when
    /// `buffer` is shorter than [`HEADER_LEN`](Self::HEADER_LEN).
    #[inline]
    pub fn new_checked(buffer: &'a mut [u8]) -> Result<Self, EmitError> {
        let got = buffer.len();
        match AtaHeaders::mut_from_prefix(buffer) {
            Ok((headers, payload)) => Ok(AtaFrame { headers, payload }),
            Err(_) => Err(EmitError::BufferTooSmall { need: Self::HEADER_LEN, got }),
        }
    }

    /// Writes the Ethernet, common and ATA headers (`dst`, `src`, `header` with command 0,
    /// `ata`) to the start of `buffer` and returns the view, its sector area still to fill.
    /// Fails when `buffer` is shorter than [`HEADER_LEN`](Self::HEADER_LEN).
    #[inline]
    pub fn emit(
        buffer: &'a mut [u8],
        dst: MacAddr,
        src: MacAddr,
        header: &HeaderRepr,
        ata: &AtaRepr,
    ) -> Result<Self, EmitError> {
        let frame = Self::new_checked(buffer)?;
        // Written as three words and the ATA header's two: a handful of stores, not 36.
        let common: &mut [LeU64; 3] = zerocopy::transmute_mut!(&mut frame.headers.common);
        *common = common_words(dst, src, header, Command::Ata);
        frame.headers.ata = ata.to_wire();
        Ok(frame)
    }

    /// The Ethernet header.
    pub fn ethernet(&self) -> &EthernetHeader {
        &self.headers.common.ethernet
    }
    /// The common header.
    pub fn header(&self) -> &AoeHeader {
        &self.headers.common.aoe
    }
    /// The ATA header.
    pub fn ata(&self) -> &AtaHeader {
        &self.headers.ata
    }
    /// The Ethernet header, to change in place.
    pub fn ethernet_mut(&mut self) -> &mut EthernetHeader {
        &mut self.headers.common.ethernet
    }
    /// The common header, to change in place.
    pub fn header_mut(&mut self) -> &mut AoeHeader {
        &mut self.headers.common.aoe
    }
    /// The ATA header, to change in place.
    pub fn ata_mut(&mut self) -> &mut AtaHeader {
        &mut self.headers.ata
    }

    /// Sets version 1 and the common header's flags.
    pub fn set_flags(&mut self, flags: Flags) {
        self.headers.common.aoe.set_flags(flags);
    }
    /// Sets the tag.
    pub fn set_tag(&mut self, tag: u32) {
        self.headers.common.aoe.tag.set(tag);
    }
    /// Sets the ATA status register (the command/status byte of an answer).
    pub fn set_status(&mut self, status: AtaStatus) {
        self.headers.ata.cmd_status = status.bits();
    }
    /// Sets the ATA error register (the error/feature byte of an answer).
    pub fn set_error(&mut self, error: AtaError) {
        self.headers.ata.err_feature = error.bits();
    }
    /// Sets the sector count register.
    pub fn set_sector_count(&mut self, count: u8) {
        self.headers.ata.sector_count = count;
    }
    /// Sets all six LBA bytes (higher bits are dropped).
    pub fn set_lba48(&mut self, lba: u64) {
        self.headers.ata.set_lba48(lba);
    }

    /// The sector area: every byte of the buffer after the headers.
    pub fn payload(&self) -> &[u8] {
        self.payload
    }
    /// The sector area, to write sectors into in place.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        self.payload
    }
    /// The first `len` bytes of the sector area; fails when the buffer ends before them.
    #[inline]
    pub fn data_mut(&mut self, len: usize) -> Result<&mut [u8], EmitError> {
        let got = Self::HEADER_LEN + self.payload.len();
        self.payload
            .get_mut(..len)
            .ok_or(EmitError::BufferTooSmall { need: Self::HEADER_LEN.saturating_add(len), got })
    }

    /// Copies every header of `other` (addresses, tag, registers) over this frame's.
    pub fn copy_headers_from(&mut self, other: &AtaFrame<'_>) {
        *self.headers = *other.headers;
    }

    /// Ends the frame after `data_len` bytes of the sector area: zero-fills it up to the
    /// 60-byte Ethernet minimum when it is shorter and returns its length. Fails when the
    /// buffer is shorter than that length.
    #[inline]
    pub fn finish(self, data_len: usize) -> Result<usize, EmitError> {
        let len = Self::HEADER_LEN.saturating_add(data_len);
        let padded = padded_len(len);
        let got = Self::HEADER_LEN + self.payload.len();
        let too_small = EmitError::BufferTooSmall { need: padded, got };
        self.payload.get_mut(data_len..padded - Self::HEADER_LEN).ok_or(too_small)?.fill(0);
        Ok(padded)
    }
}
