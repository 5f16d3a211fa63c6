//! The AoE common header: version, flags, error, shelf (major), slot (minor), command and tag.

use bitflags::bitflags;
use zerocopy::network_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::code::code_enum;

/// Length of the common header that follows the Ethernet header.
pub const HEADER_LEN: usize = 10;
/// The only protocol version this crate speaks.
pub const VERSION: u8 = 1;
/// Shelf (major) value that addresses every shelf.
pub const SHELF_BROADCAST: u16 = 0xFFFF;
/// Slot (minor) value that addresses every slot.
pub const SLOT_BROADCAST: u8 = 0xFF;

bitflags! {
    /// The flag nibble of the first header byte.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct Flags: u8 {
        /// R: the frame is a response.
        const RESPONSE = 0x08;
        /// E: the response reports an error in the error field.
        const ERROR = 0x04;
        /// Reserved, sent as zero.
        const RESERVED_2 = 0x02;
        /// Reserved, sent as zero.
        const RESERVED_1 = 0x01;
    }
}

code_enum! {
    /// The AoE error codes, meaningful when [`Flags::ERROR`] is set.
    pub enum ErrorCode {
        /// 1: unrecognised command.
        UnrecognizedCommand = 1,
        /// 2: bad argument.
        BadArgument = 2,
        /// 3: device unavailable.
        DeviceUnavailable = 3,
        /// 4: config string present (a set on a target that already has one).
        ConfigStringPresent = 4,
        /// 5: unsupported protocol version.
        UnsupportedVersion = 5,
        /// 6: the target is reserved by other initiators.
        TargetReserved = 6,
    }
}

/// The AoE command field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    /// 0: issue an ATA command.
    Ata,
    /// 1: query or set the config string.
    QueryConfig,
    /// 2: read or edit the MAC mask list.
    MacMask,
    /// 3: reserve/release.
    Reserve,
    /// 0xF0..=0xFF: vendor-specific.
    Vendor(u8),
    /// Any other value: not defined by the protocol.
    Unknown(u8),
}

impl From<u8> for Command {
    fn from(v: u8) -> Self {
        match v {
            0 => Command::Ata,
            1 => Command::QueryConfig,
            2 => Command::MacMask,
            3 => Command::Reserve,
            0xF0..=0xFF => Command::Vendor(v),
            other => Command::Unknown(other),
        }
    }
}

impl From<Command> for u8 {
    fn from(c: Command) -> u8 {
        match c {
            Command::Ata => 0,
            Command::QueryConfig => 1,
            Command::MacMask => 2,
            Command::Reserve => 3,
            Command::Vendor(v) | Command::Unknown(v) => v,
        }
    }
}

/// The common header as it sits on the wire, at offset 14 of the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct AoeHeader {
    /// Version (high nibble) and flags (low nibble).
    pub ver_flags: u8,
    /// Error code, meaningful with the E flag.
    pub error: u8,
    /// Shelf address (major): read it with [`shelf`](Self::shelf).
    pub(crate) major: U16,
    /// Slot address (minor): read it with [`slot`](Self::slot).
    pub(crate) minor: u8,
    /// Command code.
    pub command: u8,
    /// Initiator-chosen tag, echoed by the target.
    pub tag: U32,
}

impl AoeHeader {
    /// Protocol version (high nibble of byte 0).
    pub fn version(&self) -> u8 {
        self.ver_flags >> 4
    }
    /// The flag nibble; reserved bits are kept.
    pub fn flags(&self) -> Flags {
        Flags::from_bits_retain(self.ver_flags & 0x0F)
    }
    /// True when the R flag is set.
    pub fn is_response(&self) -> bool {
        self.flags().contains(Flags::RESPONSE)
    }
    /// The shelf (major) address.
    pub fn shelf(&self) -> u16 {
        self.major.get()
    }
    /// The slot (minor) address.
    pub fn slot(&self) -> u8 {
        self.minor
    }
    /// The command.
    pub fn command(&self) -> Command {
        Command::from(self.command)
    }
    /// The tag.
    pub fn tag(&self) -> u32 {
        self.tag.get()
    }
    /// The error code when the E flag is set.
    pub fn error_code(&self) -> Option<ErrorCode> {
        self.flags().contains(Flags::ERROR).then(|| ErrorCode::from(self.error))
    }
    /// True when this header addresses `shelf.slot`, directly or by a broadcast value.
    pub fn addresses(&self, shelf: u16, slot: u8) -> bool {
        let major = self.shelf();
        (major == shelf || major == SHELF_BROADCAST) && (self.minor == slot || self.minor == SLOT_BROADCAST)
    }
    /// Sets version 1 and the given flags.
    pub fn set_flags(&mut self, flags: Flags) {
        self.ver_flags = (VERSION << 4) | (flags.bits() & 0x0F);
    }
}

/// The common header as plain values. The command is carried by the body
/// ([`crate::frame::BodyRepr`]), so it is not repeated here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HeaderRepr {
    /// Flags; version is always 1 when emitted.
    pub flags: Flags,
    /// Raw error field (0 unless [`Flags::ERROR`] is set).
    pub error: u8,
    /// Shelf (major).
    pub shelf: u16,
    /// Slot (minor).
    pub slot: u8,
    /// Tag.
    pub tag: u32,
}

impl HeaderRepr {
    /// A request header to `shelf.slot` with the given tag.
    pub fn request(shelf: u16, slot: u8, tag: u32) -> Self {
        HeaderRepr { flags: Flags::empty(), error: 0, shelf, slot, tag }
    }

    /// Reads the values of a wire header.
    pub fn parse(h: &AoeHeader) -> Self {
        HeaderRepr { flags: h.flags(), error: h.error, shelf: h.shelf(), slot: h.slot(), tag: h.tag() }
    }

    /// The wire header for this repr with the given command.
    pub fn to_wire(&self, command: Command) -> AoeHeader {
        AoeHeader {
            ver_flags: (VERSION << 4) | (self.flags.bits() & 0x0F),
            error: self.error,
            major: U16::new(self.shelf),
            minor: self.slot,
            command: command.into(),
            tag: U32::new(self.tag),
        }
    }
}
