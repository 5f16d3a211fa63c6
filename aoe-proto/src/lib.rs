//! A zero-copy, `no_std` codec for ATA over Ethernet (AoE, protocol revision 11).
//!
//! AoE puts ATA commands straight into Ethernet frames (EtherType 0x88A2): an initiator
//! sends requests to a target addressed as shelf.slot, and the target answers.
//!
//! - Parsing: [`Frame::parse`] validates a whole Ethernet frame once and hands out typed
//!   views ([`AoeHeader`], [`AtaHeader`], [`ConfigHeader`], ...) that point into the buffer.
//!   It never panics and never allocates; malformed input is a [`ParseError`] that says what
//!   was wrong and where.
//! - Emitting: [`FrameRepr`] holds plain values and writes them into a caller's `&mut [u8]`
//!   ([`FrameRepr::emit`], [`FrameRepr::emit_padded`]).
//! - Building ATA frames in place: [`AtaFrame`] writes the headers of a request or an answer
//!   into a caller's buffer, hands out the sector area after them for data to be read or
//!   copied into, lets registers be set afterwards (status, error, sector count, LBA) and
//!   pads the frame to the Ethernet minimum ([`AtaFrame::finish`]).
//! - [`identify`] builds and reads IDENTIFY DEVICE data; [`sizing`] says how many sectors
//!   fit an MTU.
//!
//! ```
//! use aoe_proto::{AtaRepr, Body, BodyRepr, FrameRepr, HeaderRepr, MacAddr, Frame};
//!
//! // An initiator asks e1.0 for 2 sectors at LBA 100.
//! let request = FrameRepr {
//!     dst: MacAddr([0x02, 0, 0, 0, 0, 0x10]),
//!     src: MacAddr([0x02, 0, 0, 0, 0, 0x20]),
//!     header: HeaderRepr::request(1, 0, 0x1234),
//!     body: BodyRepr::Ata { header: AtaRepr::read(100, 2, true), data: &[] },
//! };
//! let mut buf = [0u8; 64];
//! let len = request.emit_padded(&mut buf)?;
//!
//! // The target parses it without copying.
//! let frame = Frame::parse(&buf[..len])?;
//! let Body::Ata { header, .. } = frame.body else { panic!("not ATA") };
//! assert_eq!((header.lba(), header.sector_count), (100, 2));
//! # Ok::<(), Box<dyn core::error::Error>>(())
//! ```
#![no_std]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)
)]

mod code;
mod error;

pub mod ata;
pub mod ata_frame;
pub mod config;
pub mod ethernet;
pub mod frame;
pub mod header;
pub mod identify;
pub mod mask;
pub mod received;
pub mod reserve;
pub mod sizing;

pub use ata::{AtaCommand, AtaError, AtaFlags, AtaHeader, AtaRepr, AtaStatus};
pub use ata_frame::AtaFrame;
pub use config::{ConfigCommand, ConfigHeader, ConfigRepr};
pub use error::{EmitError, ParseError};
pub use ethernet::{EthernetHeader, MacAddr, ETHERTYPE_AOE};
pub use frame::{parse_headers, Body, BodyRepr, Frame, FrameRepr};
pub use header::{AoeHeader, Command, ErrorCode, Flags, HeaderRepr, SHELF_BROADCAST, SLOT_BROADCAST};
pub use identify::Identify;
pub use mask::{Directive, DirectiveCommand, MaskCommand, MaskError, MaskHeader, MaskRepr};
pub use received::Received;
pub use reserve::{ReserveCommand, ReserveHeader, ReserveRepr};
pub use sizing::{max_sectors, SECTOR_SIZE};

use zerocopy::{FromBytes, Immutable, KnownLayout, Unaligned};

/// Views the start of `buf` as a `T` and returns it with the bytes after it.
fn split_header<'a, T>(buf: &'a [u8], what: &'static str) -> Result<(&'a T, &'a [u8]), ParseError>
where
    T: FromBytes + KnownLayout + Immutable + Unaligned,
{
    T::ref_from_prefix(buf).map_err(|_| ParseError::Truncated {
        what,
        need: core::mem::size_of::<T>(),
        got: buf.len(),
    })
}
