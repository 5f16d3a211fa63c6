//! Command 3, reserve/release: the list of initiator MACs that may issue ATA commands.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::code::code_enum;
use crate::ethernet::MacAddr;
use crate::ParseError;

/// Length of the reserve/release header that follows the common header.
pub const HEADER_LEN: usize = 2;

code_enum! {
    /// RCmd: read, set or force-set the reserve list.
    pub enum ReserveCommand {
        /// 0: read the list.
        Read = 0,
        /// 1: set the list (refused with error 6 for MACs outside a non-empty list).
        Set = 1,
        /// 2: set the list unconditionally.
        ForceSet = 2,
    }
}

/// The reserve/release header as it sits on the wire, at offset 24 of the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct ReserveHeader {
    /// RCmd.
    pub command: u8,
    /// Number of MACs that follow.
    pub count: u8,
}

impl ReserveHeader {
    /// The RCmd.
    pub fn command(&self) -> ReserveCommand {
        ReserveCommand::from(self.command)
    }
}

/// A reserve/release message as plain values, borrowing its MAC list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReserveRepr<'a> {
    /// RCmd.
    pub command: ReserveCommand,
    /// The MACs (at most 255).
    pub macs: &'a [MacAddr],
}

impl ReserveRepr<'_> {
    /// The wire header for these values (the count saturates at 255; emitting rejects more).
    pub fn to_wire(&self) -> ReserveHeader {
        ReserveHeader {
            command: self.command.into(),
            count: u8::try_from(self.macs.len()).unwrap_or(u8::MAX),
        }
    }
}

/// Splits a reserve/release payload into header and MACs.
pub(crate) fn split(payload: &[u8]) -> Result<(&ReserveHeader, &[MacAddr]), ParseError> {
    let (header, rest) = crate::split_header::<ReserveHeader>(payload, "reserve header")?;
    let count = usize::from(header.count);
    match <[MacAddr]>::ref_from_prefix_with_elems(rest, count) {
        Ok((macs, _)) => Ok((header, macs)),
        Err(_) => Err(ParseError::MacsTruncated { count, need: count * 6, got: rest.len() }),
    }
}
