//! Command 2, MAC mask list: read or edit the set of initiator MACs a target answers.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::code::code_enum;
use crate::ethernet::MacAddr;
use crate::ParseError;

/// Length of the MAC mask header that follows the common header.
pub const HEADER_LEN: usize = 4;
/// Length of one directive.
pub const DIRECTIVE_LEN: usize = 8;

code_enum! {
    /// MCmd: read or edit the list.
    pub enum MaskCommand {
        /// 0: read the list.
        Read = 0,
        /// 1: apply the directives, then answer with the list.
        Edit = 1,
    }
}

code_enum! {
    /// MError: why an edit failed.
    pub enum MaskError {
        /// 0: no error.
        None = 0,
        /// 1: unspecified error.
        Unspecified = 1,
        /// 2: bad directive.
        BadDirective = 2,
        /// 3: the list is full.
        Full = 3,
    }
}

code_enum! {
    /// DCmd: what one directive does.
    pub enum DirectiveCommand {
        /// 0: nothing.
        None = 0,
        /// 1: add the MAC.
        Add = 1,
        /// 2: delete the MAC.
        Delete = 2,
    }
}

/// The MAC mask header as it sits on the wire, at offset 24 of the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct MaskHeader {
    /// Reserved, zero.
    pub reserved: u8,
    /// MCmd.
    pub command: u8,
    /// MError.
    pub error: u8,
    /// Number of directives that follow.
    pub count: u8,
}

impl MaskHeader {
    /// The MCmd.
    pub fn command(&self) -> MaskCommand {
        MaskCommand::from(self.command)
    }
    /// The MError.
    pub fn error(&self) -> MaskError {
        MaskError::from(self.error)
    }
}

/// One 8-byte directive: reserved, DCmd, MAC.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct Directive {
    /// Reserved, zero.
    pub reserved: u8,
    /// DCmd.
    pub command: u8,
    /// The initiator MAC.
    pub mac: MacAddr,
}

impl Directive {
    /// A directive with the given command and MAC.
    pub const fn new(command: DirectiveCommand, mac: MacAddr) -> Self {
        let command = match command {
            DirectiveCommand::None => 0,
            DirectiveCommand::Add => 1,
            DirectiveCommand::Delete => 2,
            DirectiveCommand::Other(v) => v,
        };
        Directive { reserved: 0, command, mac }
    }
    /// The DCmd.
    pub fn command(&self) -> DirectiveCommand {
        DirectiveCommand::from(self.command)
    }
}

/// A MAC mask message as plain values, borrowing its directives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MaskRepr<'a> {
    /// MCmd.
    pub command: MaskCommand,
    /// MError.
    pub error: MaskError,
    /// The directives (at most 255).
    pub directives: &'a [Directive],
}

impl MaskRepr<'_> {
    /// The wire header for these values (the count saturates at 255; emitting rejects more).
    pub fn to_wire(&self) -> MaskHeader {
        MaskHeader {
            reserved: 0,
            command: self.command.into(),
            error: self.error.into(),
            count: u8::try_from(self.directives.len()).unwrap_or(u8::MAX),
        }
    }
}

/// Splits a MAC mask payload into header and directives.
pub(crate) fn split(payload: &[u8]) -> Result<(&MaskHeader, &[Directive]), ParseError> {
    let (header, rest) = crate::split_header::<MaskHeader>(payload, "MAC mask header")?;
    let count = usize::from(header.count);
    let need = count * DIRECTIVE_LEN;
    match <[Directive]>::ref_from_prefix_with_elems(rest, count) {
        Ok((directives, _)) => Ok((header, directives)),
        Err(_) => Err(ParseError::DirectivesTruncated { count, need, got: rest.len() }),
    }
}
