//! NBD on the wire: every constant of the protocol, and typed zero-copy views of its
//! fixed-size headers.
//!
//! All numbers are big-endian. Each header is a `#[repr(C)]` struct of network-endian
//! fields that can be read in place from a buffer ([`RequestHeader::parse`], ...) or built
//! ([`RequestHeader::new`], ...) and written with [`IntoBytes::as_bytes`] or `emit` into a
//! caller's buffer. `parse` checks the length and the magic number and nothing else: what a
//! command or option *means* is for the state machines ([`crate::server`]).
//!
//! The layouts follow the protocol document of the reference implementation
//! (`doc/proto.md` of NetworkBlockDevice/nbd).

use bitflags::bitflags;
use zerocopy::network_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

// ---------------------------------------------------------------------------------------
// Magic numbers
// ---------------------------------------------------------------------------------------

/// `NBDMAGIC`: the first 8 bytes a server sends.
pub const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
/// `IHAVEOPT`: follows `NBDMAGIC` in the newstyle greeting, and starts every client option.
pub const IHAVEOPT: u64 = 0x4948_4156_454F_5054;
/// Oldstyle greeting magic (`cliserv_magic`); not spoken here, known so it can be recognised.
pub const CLISERV_MAGIC: u64 = 0x0000_4202_8186_1253;
/// Magic of every option reply (fixed newstyle).
pub const OPTION_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
/// Magic of a transmission request (`NBD_REQUEST_MAGIC`).
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
/// Magic of an extended-header request (`NBD_EXTENDED_REQUEST_MAGIC`); not negotiated here.
pub const EXTENDED_REQUEST_MAGIC: u32 = 0x21e4_1c71;
/// Magic of a simple reply (`NBD_SIMPLE_REPLY_MAGIC`).
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
/// Magic of a structured reply chunk (`NBD_STRUCTURED_REPLY_MAGIC`).
pub const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;
/// Magic of an extended reply chunk (`NBD_EXTENDED_REPLY_MAGIC`); not negotiated here.
pub const EXTENDED_REPLY_MAGIC: u32 = 0x6e8a_278c;

/// The IANA port for NBD.
pub const DEFAULT_PORT: u16 = 10809;
/// Zero bytes after the [`ExportNameReply`] unless [`ClientFlags::NO_ZEROES`] was sent.
pub const EXPORT_NAME_ZEROES: usize = 124;
/// The longest string (export name, error message) the protocol allows.
pub const MAX_STRING_LEN: usize = 4096;

// ---------------------------------------------------------------------------------------
// Flags
// ---------------------------------------------------------------------------------------

bitflags! {
    /// Handshake flags, sent by the server in the greeting (16 bits).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct HandshakeFlags: u16 {
        /// `NBD_FLAG_FIXED_NEWSTYLE`: the server speaks fixed newstyle negotiation.
        const FIXED_NEWSTYLE = 1 << 0;
        /// `NBD_FLAG_NO_ZEROES`: the server can omit the 124 zero bytes after EXPORT_NAME.
        const NO_ZEROES = 1 << 1;
    }
}

bitflags! {
    /// Client flags, sent by the client after the greeting (32 bits).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct ClientFlags: u32 {
        /// `NBD_FLAG_C_FIXED_NEWSTYLE`.
        const FIXED_NEWSTYLE = 1 << 0;
        /// `NBD_FLAG_C_NO_ZEROES`.
        const NO_ZEROES = 1 << 1;
    }
}

bitflags! {
    /// Transmission flags of an export (16 bits), sent at the end of the handshake.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct TransmissionFlags: u16 {
        /// `NBD_FLAG_HAS_FLAGS`: always set.
        const HAS_FLAGS = 1 << 0;
        /// `NBD_FLAG_READ_ONLY`.
        const READ_ONLY = 1 << 1;
        /// `NBD_FLAG_SEND_FLUSH`: the server supports `NBD_CMD_FLUSH`.
        const SEND_FLUSH = 1 << 2;
        /// `NBD_FLAG_SEND_FUA`: the server supports `NBD_CMD_FLAG_FUA`.
        const SEND_FUA = 1 << 3;
        /// `NBD_FLAG_ROTATIONAL`: seeks are expensive.
        const ROTATIONAL = 1 << 4;
        /// `NBD_FLAG_SEND_TRIM`.
        const SEND_TRIM = 1 << 5;
        /// `NBD_FLAG_SEND_WRITE_ZEROES`.
        const SEND_WRITE_ZEROES = 1 << 6;
        /// `NBD_FLAG_SEND_DF`: the server honours `NBD_CMD_FLAG_DF`.
        const SEND_DF = 1 << 7;
        /// `NBD_FLAG_CAN_MULTI_CONN`: flushes on one connection cover all of them.
        const CAN_MULTI_CONN = 1 << 8;
        /// `NBD_FLAG_SEND_RESIZE`.
        const SEND_RESIZE = 1 << 9;
        /// `NBD_FLAG_SEND_CACHE`.
        const SEND_CACHE = 1 << 10;
        /// `NBD_FLAG_SEND_FAST_ZERO`.
        const SEND_FAST_ZERO = 1 << 11;
        /// `NBD_FLAG_BLOCK_STAT_PAYLOAD`.
        const BLOCK_STAT_PAYLOAD = 1 << 12;
    }
}

bitflags! {
    /// Command flags of a request (16 bits).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct CommandFlags: u16 {
        /// `NBD_CMD_FLAG_FUA`: the data is on stable storage before the reply.
        const FUA = 1 << 0;
        /// `NBD_CMD_FLAG_NO_HOLE`: WRITE_ZEROES must allocate.
        const NO_HOLE = 1 << 1;
        /// `NBD_CMD_FLAG_DF`: READ must not be fragmented into several chunks.
        const DF = 1 << 2;
        /// `NBD_CMD_FLAG_REQ_ONE`: BLOCK_STATUS returns one extent.
        const REQ_ONE = 1 << 3;
        /// `NBD_CMD_FLAG_FAST_ZERO`: WRITE_ZEROES fails with ENOTSUP unless it is fast.
        const FAST_ZERO = 1 << 4;
        /// `NBD_CMD_FLAG_PAYLOAD_LEN` (extended headers).
        const PAYLOAD_LEN = 1 << 5;
    }
}

bitflags! {
    /// Flags of a structured reply chunk (16 bits).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct ReplyFlags: u16 {
        /// `NBD_REPLY_FLAG_DONE`: the last chunk of this reply.
        const DONE = 1 << 0;
    }
}

// ---------------------------------------------------------------------------------------
// Codes
// ---------------------------------------------------------------------------------------

/// Defines an open enum over an unsigned code: known values by name, anything else kept as
/// `Unknown(raw)`, with lossless `From` both ways.
macro_rules! code {
    (
        $(#[$meta:meta])*
        pub enum $name:ident: $repr:ty {
            $( $(#[$vmeta:meta])* $variant:ident = $value:expr, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )*
            /// A value this crate does not name.
            Unknown($repr),
        }

        impl From<$repr> for $name {
            fn from(v: $repr) -> Self {
                match v {
                    $( x if x == $value => $name::$variant, )*
                    other => $name::Unknown(other),
                }
            }
        }

        impl From<$name> for $repr {
            fn from(c: $name) -> $repr {
                match c {
                    $( $name::$variant => $value, )*
                    $name::Unknown(v) => v,
                }
            }
        }
    };
}

/// `NBD_OPT_EXPORT_NAME`.
pub const OPT_EXPORT_NAME: u32 = 1;
/// `NBD_OPT_ABORT`.
pub const OPT_ABORT: u32 = 2;
/// `NBD_OPT_LIST`.
pub const OPT_LIST: u32 = 3;
/// `NBD_OPT_PEEK_EXPORT` (withdrawn).
pub const OPT_PEEK_EXPORT: u32 = 4;
/// `NBD_OPT_STARTTLS`.
pub const OPT_STARTTLS: u32 = 5;
/// `NBD_OPT_INFO`.
pub const OPT_INFO: u32 = 6;
/// `NBD_OPT_GO`.
pub const OPT_GO: u32 = 7;
/// `NBD_OPT_STRUCTURED_REPLY`.
pub const OPT_STRUCTURED_REPLY: u32 = 8;
/// `NBD_OPT_LIST_META_CONTEXT`.
pub const OPT_LIST_META_CONTEXT: u32 = 9;
/// `NBD_OPT_SET_META_CONTEXT`.
pub const OPT_SET_META_CONTEXT: u32 = 10;
/// `NBD_OPT_EXTENDED_HEADERS`.
pub const OPT_EXTENDED_HEADERS: u32 = 11;

code! {
    /// An option a client sends during the handshake.
    pub enum OptionType: u32 {
        /// `NBD_OPT_EXPORT_NAME` (1): choose an export and end the handshake, no reply header.
        ExportName = OPT_EXPORT_NAME,
        /// `NBD_OPT_ABORT` (2): the client ends the session.
        Abort = OPT_ABORT,
        /// `NBD_OPT_LIST` (3): list the exports.
        List = OPT_LIST,
        /// `NBD_OPT_PEEK_EXPORT` (4, withdrawn).
        PeekExport = OPT_PEEK_EXPORT,
        /// `NBD_OPT_STARTTLS` (5).
        StartTls = OPT_STARTTLS,
        /// `NBD_OPT_INFO` (6): describe an export.
        Info = OPT_INFO,
        /// `NBD_OPT_GO` (7): describe an export and end the handshake.
        Go = OPT_GO,
        /// `NBD_OPT_STRUCTURED_REPLY` (8).
        StructuredReply = OPT_STRUCTURED_REPLY,
        /// `NBD_OPT_LIST_META_CONTEXT` (9).
        ListMetaContext = OPT_LIST_META_CONTEXT,
        /// `NBD_OPT_SET_META_CONTEXT` (10).
        SetMetaContext = OPT_SET_META_CONTEXT,
        /// `NBD_OPT_EXTENDED_HEADERS` (11).
        ExtendedHeaders = OPT_EXTENDED_HEADERS,
    }
}

/// Bit 31 marks an option reply type as an error.
pub const REP_FLAG_ERROR: u32 = 1 << 31;
/// `NBD_REP_ACK`.
pub const REP_ACK: u32 = 1;
/// `NBD_REP_SERVER`.
pub const REP_SERVER: u32 = 2;
/// `NBD_REP_INFO`.
pub const REP_INFO: u32 = 3;
/// `NBD_REP_META_CONTEXT`.
pub const REP_META_CONTEXT: u32 = 4;
/// `NBD_REP_ERR_UNSUP`.
pub const REP_ERR_UNSUP: u32 = REP_FLAG_ERROR | 1;
/// `NBD_REP_ERR_POLICY`.
pub const REP_ERR_POLICY: u32 = REP_FLAG_ERROR | 2;
/// `NBD_REP_ERR_INVALID`.
pub const REP_ERR_INVALID: u32 = REP_FLAG_ERROR | 3;
/// `NBD_REP_ERR_PLATFORM`.
pub const REP_ERR_PLATFORM: u32 = REP_FLAG_ERROR | 4;
/// `NBD_REP_ERR_TLS_REQD`.
pub const REP_ERR_TLS_REQD: u32 = REP_FLAG_ERROR | 5;
/// `NBD_REP_ERR_UNKNOWN`.
pub const REP_ERR_UNKNOWN: u32 = REP_FLAG_ERROR | 6;
/// `NBD_REP_ERR_SHUTDOWN`.
pub const REP_ERR_SHUTDOWN: u32 = REP_FLAG_ERROR | 7;
/// `NBD_REP_ERR_BLOCK_SIZE_REQD`.
pub const REP_ERR_BLOCK_SIZE_REQD: u32 = REP_FLAG_ERROR | 8;
/// `NBD_REP_ERR_TOO_BIG`.
pub const REP_ERR_TOO_BIG: u32 = REP_FLAG_ERROR | 9;
/// `NBD_REP_ERR_EXT_HEADER_REQD`.
pub const REP_ERR_EXT_HEADER_REQD: u32 = REP_FLAG_ERROR | 10;

code! {
    /// The type of an option reply.
    pub enum ReplyType: u32 {
        /// `NBD_REP_ACK`: the option succeeded; the final reply.
        Ack = REP_ACK,
        /// `NBD_REP_SERVER`: one export, in answer to LIST.
        Server = REP_SERVER,
        /// `NBD_REP_INFO`: one piece of information, in answer to INFO or GO.
        Info = REP_INFO,
        /// `NBD_REP_META_CONTEXT`.
        MetaContext = REP_META_CONTEXT,
        /// `NBD_REP_ERR_UNSUP`: the option is not known.
        ErrUnsup = REP_ERR_UNSUP,
        /// `NBD_REP_ERR_POLICY`: forbidden by policy.
        ErrPolicy = REP_ERR_POLICY,
        /// `NBD_REP_ERR_INVALID`: syntactically or semantically invalid.
        ErrInvalid = REP_ERR_INVALID,
        /// `NBD_REP_ERR_PLATFORM`: not supported on this platform.
        ErrPlatform = REP_ERR_PLATFORM,
        /// `NBD_REP_ERR_TLS_REQD`: TLS first.
        ErrTlsReqd = REP_ERR_TLS_REQD,
        /// `NBD_REP_ERR_UNKNOWN`: no such export.
        ErrUnknown = REP_ERR_UNKNOWN,
        /// `NBD_REP_ERR_SHUTDOWN`: the server is shutting down.
        ErrShutdown = REP_ERR_SHUTDOWN,
        /// `NBD_REP_ERR_BLOCK_SIZE_REQD`: the client must ask for block sizes.
        ErrBlockSizeReqd = REP_ERR_BLOCK_SIZE_REQD,
        /// `NBD_REP_ERR_TOO_BIG`: the request or its reply is too large.
        ErrTooBig = REP_ERR_TOO_BIG,
        /// `NBD_REP_ERR_EXT_HEADER_REQD`.
        ErrExtHeaderReqd = REP_ERR_EXT_HEADER_REQD,
    }
}

impl ReplyType {
    /// True for the error replies (bit 31 set), known or not.
    pub fn is_error(self) -> bool {
        u32::from(self) & REP_FLAG_ERROR != 0
    }
}

/// `NBD_INFO_EXPORT`.
pub const INFO_EXPORT: u16 = 0;
/// `NBD_INFO_NAME`.
pub const INFO_NAME: u16 = 1;
/// `NBD_INFO_DESCRIPTION`.
pub const INFO_DESCRIPTION: u16 = 2;
/// `NBD_INFO_BLOCK_SIZE`.
pub const INFO_BLOCK_SIZE: u16 = 3;

code! {
    /// An information type in INFO/GO requests and `NBD_REP_INFO` replies.
    pub enum InfoType: u16 {
        /// `NBD_INFO_EXPORT` (0): size and transmission flags; always sent.
        Export = INFO_EXPORT,
        /// `NBD_INFO_NAME` (1): the canonical export name.
        Name = INFO_NAME,
        /// `NBD_INFO_DESCRIPTION` (2): a human-readable description.
        Description = INFO_DESCRIPTION,
        /// `NBD_INFO_BLOCK_SIZE` (3): minimum, preferred and maximum block sizes.
        BlockSize = INFO_BLOCK_SIZE,
    }
}

/// `NBD_CMD_READ`.
pub const CMD_READ: u16 = 0;
/// `NBD_CMD_WRITE`.
pub const CMD_WRITE: u16 = 1;
/// `NBD_CMD_DISC`.
pub const CMD_DISC: u16 = 2;
/// `NBD_CMD_FLUSH`.
pub const CMD_FLUSH: u16 = 3;
/// `NBD_CMD_TRIM`.
pub const CMD_TRIM: u16 = 4;
/// `NBD_CMD_CACHE`.
pub const CMD_CACHE: u16 = 5;
/// `NBD_CMD_WRITE_ZEROES`.
pub const CMD_WRITE_ZEROES: u16 = 6;
/// `NBD_CMD_BLOCK_STATUS`.
pub const CMD_BLOCK_STATUS: u16 = 7;
/// `NBD_CMD_RESIZE`.
pub const CMD_RESIZE: u16 = 8;

code! {
    /// The command of a transmission request.
    pub enum Command: u16 {
        /// `NBD_CMD_READ` (0).
        Read = CMD_READ,
        /// `NBD_CMD_WRITE` (1): `length` bytes of data follow the header.
        Write = CMD_WRITE,
        /// `NBD_CMD_DISC` (2): the client disconnects; no reply.
        Disc = CMD_DISC,
        /// `NBD_CMD_FLUSH` (3).
        Flush = CMD_FLUSH,
        /// `NBD_CMD_TRIM` (4).
        Trim = CMD_TRIM,
        /// `NBD_CMD_CACHE` (5).
        Cache = CMD_CACHE,
        /// `NBD_CMD_WRITE_ZEROES` (6).
        WriteZeroes = CMD_WRITE_ZEROES,
        /// `NBD_CMD_BLOCK_STATUS` (7).
        BlockStatus = CMD_BLOCK_STATUS,
        /// `NBD_CMD_RESIZE` (8).
        Resize = CMD_RESIZE,
    }
}

/// `NBD_EPERM`: operation not permitted (e.g. a write to a read-only export).
pub const EPERM: u32 = 1;
/// `NBD_EIO`: input/output error.
pub const EIO: u32 = 5;
/// `NBD_ENOMEM`: cannot allocate memory.
pub const ENOMEM: u32 = 12;
/// `NBD_EINVAL`: invalid argument (bad flags, out of bounds, too long).
pub const EINVAL: u32 = 22;
/// `NBD_ENOSPC`: no space left (a write past the end).
pub const ENOSPC: u32 = 28;
/// `NBD_EOVERFLOW`: value too large (a DF read that does not fit one chunk).
pub const EOVERFLOW: u32 = 75;
/// `NBD_ENOTSUP`: not supported (a FAST_ZERO that would not be fast).
pub const ENOTSUP: u32 = 95;
/// `NBD_ESHUTDOWN`: the server is shutting down.
pub const ESHUTDOWN: u32 = 108;

/// `NBD_REPLY_TYPE_NONE`.
pub const REPLY_TYPE_NONE: u16 = 0;
/// `NBD_REPLY_TYPE_OFFSET_DATA`.
pub const REPLY_TYPE_OFFSET_DATA: u16 = 1;
/// `NBD_REPLY_TYPE_OFFSET_HOLE`.
pub const REPLY_TYPE_OFFSET_HOLE: u16 = 2;
/// `NBD_REPLY_TYPE_BLOCK_STATUS`.
pub const REPLY_TYPE_BLOCK_STATUS: u16 = 5;
/// `NBD_REPLY_TYPE_BLOCK_STATUS_EXT`.
pub const REPLY_TYPE_BLOCK_STATUS_EXT: u16 = 6;
/// Bit 15 marks a structured reply type as an error.
pub const REPLY_TYPE_FLAG_ERROR: u16 = 1 << 15;
/// `NBD_REPLY_TYPE_ERROR`.
pub const REPLY_TYPE_ERROR: u16 = REPLY_TYPE_FLAG_ERROR | 1;
/// `NBD_REPLY_TYPE_ERROR_OFFSET`.
pub const REPLY_TYPE_ERROR_OFFSET: u16 = REPLY_TYPE_FLAG_ERROR | 2;

code! {
    /// The type of a structured reply chunk.
    pub enum ChunkType: u16 {
        /// `NBD_REPLY_TYPE_NONE` (0): no payload; only with [`ReplyFlags::DONE`].
        None = REPLY_TYPE_NONE,
        /// `NBD_REPLY_TYPE_OFFSET_DATA` (1): 64-bit offset, then data.
        OffsetData = REPLY_TYPE_OFFSET_DATA,
        /// `NBD_REPLY_TYPE_OFFSET_HOLE` (2): 64-bit offset, 32-bit hole length.
        OffsetHole = REPLY_TYPE_OFFSET_HOLE,
        /// `NBD_REPLY_TYPE_BLOCK_STATUS` (5).
        BlockStatus = REPLY_TYPE_BLOCK_STATUS,
        /// `NBD_REPLY_TYPE_BLOCK_STATUS_EXT` (6).
        BlockStatusExt = REPLY_TYPE_BLOCK_STATUS_EXT,
        /// `NBD_REPLY_TYPE_ERROR` (2^15 + 1): 32-bit error, 16-bit message length, message.
        Error = REPLY_TYPE_ERROR,
        /// `NBD_REPLY_TYPE_ERROR_OFFSET` (2^15 + 2): as `Error`, then a 64-bit offset.
        ErrorOffset = REPLY_TYPE_ERROR_OFFSET,
    }
}

impl ChunkType {
    /// True for the error chunk types (bit 15 set), known or not.
    pub fn is_error(self) -> bool {
        u16::from(self) & REPLY_TYPE_FLAG_ERROR != 0
    }
}

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

/// Why a buffer does not hold the header asked for, or does not fit one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The buffer is shorter than the structure.
    #[error("{what} truncated: need {need} bytes, got {got}")]
    Truncated {
        /// The structure that did not fit.
        what: &'static str,
        /// Bytes it needs.
        need: usize,
        /// Bytes available.
        got: usize,
    },
    /// The magic number is wrong.
    #[error("{what}: bad magic 0x{got:x}, expected 0x{expected:x}")]
    BadMagic {
        /// The structure.
        what: &'static str,
        /// The magic expected.
        expected: u64,
        /// The magic found.
        got: u64,
    },
}

fn truncated(what: &'static str, need: usize, got: usize) -> WireError {
    WireError::Truncated { what, need, got }
}

/// Reads a `T` from the front of `buf`, returning it and the bytes after it.
fn view<'a, T: FromBytes + KnownLayout + Immutable + Unaligned>(
    what: &'static str,
    buf: &'a [u8],
) -> Result<(&'a T, &'a [u8]), WireError> {
    zerocopy::Ref::<&[u8], T>::from_prefix(buf)
        .map(|(r, rest)| (zerocopy::Ref::into_ref(r), rest))
        .map_err(|_| truncated(what, core::mem::size_of::<T>(), buf.len()))
}

/// Writes `value` at the front of `buf`, returning the length written.
fn emit_into<T: IntoBytes + Immutable>(
    what: &'static str,
    value: &T,
    buf: &mut [u8],
) -> Result<usize, WireError> {
    let bytes = value.as_bytes();
    let dst = buf.get_mut(..bytes.len()).ok_or_else(|| truncated(what, bytes.len(), 0))?;
    dst.copy_from_slice(bytes);
    Ok(bytes.len())
}

macro_rules! header_io {
    ($ty:ident, $what:literal) => {
        impl $ty {
            /// Length on the wire, in bytes.
            pub const LEN: usize = core::mem::size_of::<$ty>();

            /// Writes this header at the front of `buf`; returns [`Self::LEN`].
            pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
                emit_into($what, self, buf).map_err(|_| truncated($what, Self::LEN, buf.len()))
            }
        }
    };
}

// ---------------------------------------------------------------------------------------
// Handshake
// ---------------------------------------------------------------------------------------

/// The server's greeting (18 bytes): `NBDMAGIC`, `IHAVEOPT`, handshake flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct Greeting {
    /// [`NBDMAGIC`].
    pub nbd_magic: U64,
    /// [`IHAVEOPT`] (newstyle).
    pub opt_magic: U64,
    /// [`HandshakeFlags`].
    pub flags: U16,
}
header_io!(Greeting, "greeting");

impl Greeting {
    /// A newstyle greeting with these flags.
    pub fn new(flags: HandshakeFlags) -> Self {
        Greeting {
            nbd_magic: U64::new(NBDMAGIC),
            opt_magic: U64::new(IHAVEOPT),
            flags: U16::new(flags.bits()),
        }
    }
    /// Reads a newstyle greeting; an oldstyle one is [`WireError::BadMagic`].
    pub fn parse(buf: &[u8]) -> Result<(&Self, &[u8]), WireError> {
        let (g, rest) = view::<Self>("greeting", buf)?;
        check64("greeting", NBDMAGIC, g.nbd_magic.get())?;
        check64("greeting", IHAVEOPT, g.opt_magic.get())?;
        Ok((g, rest))
    }
    /// The handshake flags; unknown bits are kept.
    pub fn flags(&self) -> HandshakeFlags {
        HandshakeFlags::from_bits_retain(self.flags.get())
    }
}

/// The client's flags after the greeting (4 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct ClientFlagsField {
    /// [`ClientFlags`].
    pub flags: U32,
}
header_io!(ClientFlagsField, "client flags");

impl ClientFlagsField {
    /// The field for these flags.
    pub fn new(flags: ClientFlags) -> Self {
        ClientFlagsField { flags: U32::new(flags.bits()) }
    }
    /// Reads the field.
    pub fn parse(buf: &[u8]) -> Result<(&Self, &[u8]), WireError> {
        view::<Self>("client flags", buf)
    }
    /// The flags; unknown bits are kept (a server must refuse them).
    pub fn flags(&self) -> ClientFlags {
        ClientFlags::from_bits_retain(self.flags.get())
    }
}

/// An option from the client (16 bytes, then `length` bytes of data).
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct OptionHeader {
    /// [`IHAVEOPT`].
    pub magic: U64,
    /// [`OptionType`].
    pub option: U32,
    /// Bytes of option data that follow.
    pub length: U32,
}
header_io!(OptionHeader, "option header");

impl OptionHeader {
    /// The header of `option` with `length` bytes of data.
    pub fn new(option: OptionType, length: u32) -> Self {
        OptionHeader { magic: U64::new(IHAVEOPT), option: U32::new(option.into()), length: U32::new(length) }
    }
    /// Reads a header and checks its magic.
    pub fn parse(buf: &[u8]) -> Result<(&Self, &[u8]), WireError> {
        let (h, rest) = view::<Self>("option header", buf)?;
        check64("option header", IHAVEOPT, h.magic.get())?;
        Ok((h, rest))
    }
    /// The option.
    pub fn option(&self) -> OptionType {
        OptionType::from(self.option.get())
    }
    /// Bytes of data that follow.
    pub fn length(&self) -> u32 {
        self.length.get()
    }
}

/// A server's reply to an option (20 bytes, then `length` bytes of data).
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct OptionReplyHeader {
    /// [`OPTION_REPLY_MAGIC`].
    pub magic: U64,
    /// The option this answers, as the client sent it.
    pub option: U32,
    /// [`ReplyType`].
    pub reply_type: U32,
    /// Bytes of reply data that follow.
    pub length: U32,
}
header_io!(OptionReplyHeader, "option reply header");

impl OptionReplyHeader {
    /// A reply to the raw option code `option`.
    pub fn new(option: u32, reply_type: ReplyType, length: u32) -> Self {
        OptionReplyHeader {
            magic: U64::new(OPTION_REPLY_MAGIC),
            option: U32::new(option),
            reply_type: U32::new(reply_type.into()),
            length: U32::new(length),
        }
    }
    /// Reads a header and checks its magic.
    pub fn parse(buf: &[u8]) -> Result<(&Self, &[u8]), WireError> {
        let (h, rest) = view::<Self>("option reply header", buf)?;
        check64("option reply header", OPTION_REPLY_MAGIC, h.magic.get())?;
        Ok((h, rest))
    }
    /// The option answered.
    pub fn option(&self) -> OptionType {
        OptionType::from(self.option.get())
    }
    /// The reply type.
    pub fn reply_type(&self) -> ReplyType {
        ReplyType::from(self.reply_type.get())
    }
    /// Bytes of data that follow.
    pub fn length(&self) -> u32 {
        self.length.get()
    }
}

/// The server's answer to `NBD_OPT_EXPORT_NAME` (10 bytes, then 124 zeroes unless
/// [`ClientFlags::NO_ZEROES`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct ExportNameReply {
    /// Export size in bytes.
    pub size: U64,
    /// [`TransmissionFlags`].
    pub flags: U16,
}
header_io!(ExportNameReply, "export name reply");

impl ExportNameReply {
    /// The reply for an export of `size` bytes.
    pub fn new(size: u64, flags: TransmissionFlags) -> Self {
        ExportNameReply { size: U64::new(size), flags: U16::new(flags.bits()) }
    }
    /// Reads the 10 bytes (not the zeroes).
    pub fn parse(buf: &[u8]) -> Result<(&Self, &[u8]), WireError> {
        view::<Self>("export name reply", buf)
    }
    /// Export size in bytes.
    pub fn size(&self) -> u64 {
        self.size.get()
    }
    /// Transmission flags; unknown bits are kept.
    pub fn flags(&self) -> TransmissionFlags {
        TransmissionFlags::from_bits_retain(self.flags.get())
    }
}

/// `NBD_INFO_EXPORT` payload of an `NBD_REP_INFO` (12 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct InfoExport {
    /// [`INFO_EXPORT`].
    pub info_type: U16,
    /// Export size in bytes.
    pub size: U64,
    /// [`TransmissionFlags`].
    pub flags: U16,
}
header_io!(InfoExport, "NBD_INFO_EXPORT");

impl InfoExport {
    /// The payload for an export of `size` bytes.
    pub fn new(size: u64, flags: TransmissionFlags) -> Self {
        InfoExport { info_type: U16::new(INFO_EXPORT), size: U64::new(size), flags: U16::new(flags.bits()) }
    }
    /// Reads the payload (checks its length, not its type: see [`info_type_of`]).
    pub fn parse(buf: &[u8]) -> Result<(&Self, &[u8]), WireError> {
        view::<Self>("NBD_INFO_EXPORT", buf)
    }
    /// Export size in bytes.
    pub fn size(&self) -> u64 {
        self.size.get()
    }
    /// Transmission flags; unknown bits are kept.
    pub fn flags(&self) -> TransmissionFlags {
        TransmissionFlags::from_bits_retain(self.flags.get())
    }
}

/// `NBD_INFO_BLOCK_SIZE` payload of an `NBD_REP_INFO` (14 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct InfoBlockSize {
    /// [`INFO_BLOCK_SIZE`].
    pub info_type: U16,
    /// Minimum block size (a power of two, 1 for byte granularity).
    pub minimum: U32,
    /// Preferred block size.
    pub preferred: U32,
    /// Maximum payload of one request.
    pub maximum: U32,
}
header_io!(InfoBlockSize, "NBD_INFO_BLOCK_SIZE");

impl InfoBlockSize {
    /// The payload for these sizes.
    pub fn new(minimum: u32, preferred: u32, maximum: u32) -> Self {
        InfoBlockSize {
            info_type: U16::new(INFO_BLOCK_SIZE),
            minimum: U32::new(minimum),
            preferred: U32::new(preferred),
            maximum: U32::new(maximum),
        }
    }
    /// Reads the payload (checks its length, not its type).
    pub fn parse(buf: &[u8]) -> Result<(&Self, &[u8]), WireError> {
        view::<Self>("NBD_INFO_BLOCK_SIZE", buf)
    }
}

/// The info type at the front of an `NBD_REP_INFO` payload.
pub fn info_type_of(payload: &[u8]) -> Result<InfoType, WireError> {
    match payload {
        [a, b, ..] => Ok(InfoType::from(u16::from_be_bytes([*a, *b]))),
        _ => Err(truncated("NBD_REP_INFO", 2, payload.len())),
    }
}

/// Writes the data of `NBD_OPT_INFO`/`NBD_OPT_GO` (name length, name, count, info types)
/// into `buf`; returns the length written. Fails if `buf` is too short or the name longer
/// than [`MAX_STRING_LEN`].
pub fn emit_info_request(name: &[u8], infos: &[InfoType], buf: &mut [u8]) -> Result<usize, WireError> {
    let need = 4 + name.len() + 2 + 2 * infos.len();
    if name.len() > MAX_STRING_LEN || infos.len() > usize::from(u16::MAX) {
        return Err(truncated("NBD_OPT_GO data", need, buf.len()));
    }
    let out = buf.get_mut(..need).ok_or_else(|| truncated("NBD_OPT_GO data", need, 0))?;
    let (len, rest) = out.split_at_mut(4);
    len.copy_from_slice(&(name.len() as u32).to_be_bytes());
    let (n, rest) = rest.split_at_mut(name.len());
    n.copy_from_slice(name);
    let (count, rest) = rest.split_at_mut(2);
    count.copy_from_slice(&(infos.len() as u16).to_be_bytes());
    for (slot, info) in rest.chunks_exact_mut(2).zip(infos) {
        slot.copy_from_slice(&u16::from(*info).to_be_bytes());
    }
    Ok(need)
}

/// The data of `NBD_OPT_INFO`/`NBD_OPT_GO`, read in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InfoRequest<'a> {
    /// Export name (empty: the default export).
    pub name: &'a [u8],
    /// The requested info types, 2 bytes each.
    infos: &'a [u8],
}

impl<'a> InfoRequest<'a> {
    /// Reads the data; the lengths must add up to exactly `data.len()`.
    pub fn parse(data: &'a [u8]) -> Option<Self> {
        let (len, rest) = data.split_first_chunk::<4>()?;
        let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
        if len > rest.len() {
            return None;
        }
        let (name, rest) = rest.split_at(len);
        let (count, infos) = rest.split_first_chunk::<2>()?;
        let count = usize::from(u16::from_be_bytes(*count));
        if infos.len() != count * 2 {
            return None;
        }
        Some(InfoRequest { name, infos })
    }
    /// The requested info types.
    pub fn infos(&self) -> impl Iterator<Item = InfoType> + 'a {
        self.infos
            .chunks_exact(2)
            .filter_map(|c| c.first_chunk::<2>())
            .map(|c| InfoType::from(u16::from_be_bytes(*c)))
    }
}

// ---------------------------------------------------------------------------------------
// Transmission
// ---------------------------------------------------------------------------------------

/// A transmission request (28 bytes; `length` bytes of data follow a WRITE).
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RequestHeader {
    /// [`REQUEST_MAGIC`].
    pub magic: U32,
    /// [`CommandFlags`].
    pub flags: U16,
    /// [`Command`].
    pub command: U16,
    /// Client-chosen handle (cookie), echoed in the reply.
    pub handle: U64,
    /// Byte offset into the export.
    pub offset: U64,
    /// Byte length of the operation.
    pub length: U32,
}
header_io!(RequestHeader, "request header");

impl RequestHeader {
    /// A request header.
    pub fn new(command: Command, flags: CommandFlags, handle: u64, offset: u64, length: u32) -> Self {
        RequestHeader {
            magic: U32::new(REQUEST_MAGIC),
            flags: U16::new(flags.bits()),
            command: U16::new(command.into()),
            handle: U64::new(handle),
            offset: U64::new(offset),
            length: U32::new(length),
        }
    }
    /// Reads a header and checks its magic.
    pub fn parse(buf: &[u8]) -> Result<(&Self, &[u8]), WireError> {
        let (h, rest) = view::<Self>("request header", buf)?;
        check64("request header", REQUEST_MAGIC.into(), h.magic.get().into())?;
        Ok((h, rest))
    }
    /// The command.
    pub fn command(&self) -> Command {
        Command::from(self.command.get())
    }
    /// The command flags; unknown bits are kept.
    pub fn flags(&self) -> CommandFlags {
        CommandFlags::from_bits_retain(self.flags.get())
    }
    /// The handle.
    pub fn handle(&self) -> u64 {
        self.handle.get()
    }
    /// The offset.
    pub fn offset(&self) -> u64 {
        self.offset.get()
    }
    /// The length.
    pub fn length(&self) -> u32 {
        self.length.get()
    }
}

/// A simple reply (16 bytes; the data of a successful READ follows).
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct SimpleReplyHeader {
    /// [`SIMPLE_REPLY_MAGIC`].
    pub magic: U32,
    /// 0 or an error value ([`EIO`], ...).
    pub error: U32,
    /// The request's handle.
    pub handle: U64,
}
header_io!(SimpleReplyHeader, "simple reply header");

impl SimpleReplyHeader {
    /// A reply to `handle` with `error` (0 for success).
    pub fn new(handle: u64, error: u32) -> Self {
        SimpleReplyHeader {
            magic: U32::new(SIMPLE_REPLY_MAGIC),
            error: U32::new(error),
            handle: U64::new(handle),
        }
    }
    /// Reads a header and checks its magic.
    pub fn parse(buf: &[u8]) -> Result<(&Self, &[u8]), WireError> {
        let (h, rest) = view::<Self>("simple reply header", buf)?;
        check64("simple reply header", SIMPLE_REPLY_MAGIC.into(), h.magic.get().into())?;
        Ok((h, rest))
    }
    /// The error value (0: success).
    pub fn error(&self) -> u32 {
        self.error.get()
    }
    /// The handle.
    pub fn handle(&self) -> u64 {
        self.handle.get()
    }
}

/// A structured reply chunk header (20 bytes, then `length` bytes of payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct StructuredReplyHeader {
    /// [`STRUCTURED_REPLY_MAGIC`].
    pub magic: U32,
    /// [`ReplyFlags`].
    pub flags: U16,
    /// [`ChunkType`].
    pub chunk_type: U16,
    /// The request's handle.
    pub handle: U64,
    /// Bytes of payload that follow.
    pub length: U32,
}
header_io!(StructuredReplyHeader, "structured reply header");

impl StructuredReplyHeader {
    /// A chunk header.
    pub fn new(flags: ReplyFlags, chunk_type: ChunkType, handle: u64, length: u32) -> Self {
        StructuredReplyHeader {
            magic: U32::new(STRUCTURED_REPLY_MAGIC),
            flags: U16::new(flags.bits()),
            chunk_type: U16::new(chunk_type.into()),
            handle: U64::new(handle),
            length: U32::new(length),
        }
    }
    /// Reads a header and checks its magic.
    pub fn parse(buf: &[u8]) -> Result<(&Self, &[u8]), WireError> {
        let (h, rest) = view::<Self>("structured reply header", buf)?;
        check64("structured reply header", STRUCTURED_REPLY_MAGIC.into(), h.magic.get().into())?;
        Ok((h, rest))
    }
    /// The flags; unknown bits are kept.
    pub fn flags(&self) -> ReplyFlags {
        ReplyFlags::from_bits_retain(self.flags.get())
    }
    /// The chunk type.
    pub fn chunk_type(&self) -> ChunkType {
        ChunkType::from(self.chunk_type.get())
    }
    /// The handle.
    pub fn handle(&self) -> u64 {
        self.handle.get()
    }
    /// Bytes of payload.
    pub fn length(&self) -> u32 {
        self.length.get()
    }
}

/// The fixed part of an error chunk payload (6 bytes, then the message, then for
/// [`ChunkType::ErrorOffset`] a 64-bit offset).
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct ErrorChunk {
    /// The error value (never 0).
    pub error: U32,
    /// Bytes of message that follow.
    pub message_length: U16,
}
header_io!(ErrorChunk, "error chunk");

impl ErrorChunk {
    /// An error payload with a message of `message_length` bytes.
    pub fn new(error: u32, message_length: u16) -> Self {
        ErrorChunk { error: U32::new(error), message_length: U16::new(message_length) }
    }
    /// Reads the fixed part.
    pub fn parse(buf: &[u8]) -> Result<(&Self, &[u8]), WireError> {
        view::<Self>("error chunk", buf)
    }
    /// The error value.
    pub fn error(&self) -> u32 {
        self.error.get()
    }
    /// Bytes of message.
    pub fn message_length(&self) -> u16 {
        self.message_length.get()
    }
}

/// Bytes before the data in an `OFFSET_DATA` chunk payload (the 64-bit offset).
pub const OFFSET_DATA_PREFIX: usize = 8;

fn check64(what: &'static str, expected: u64, got: u64) -> Result<(), WireError> {
    if expected == got {
        Ok(())
    } else {
        Err(WireError::BadMagic { what, expected, got })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;
    use proptest::prelude::*;

    #[test]
    fn sizes_match_the_protocol() {
        assert_eq!(Greeting::LEN, 18);
        assert_eq!(ClientFlagsField::LEN, 4);
        assert_eq!(OptionHeader::LEN, 16);
        assert_eq!(OptionReplyHeader::LEN, 20);
        assert_eq!(ExportNameReply::LEN, 10);
        assert_eq!(InfoExport::LEN, 12);
        assert_eq!(InfoBlockSize::LEN, 14);
        assert_eq!(RequestHeader::LEN, 28);
        assert_eq!(SimpleReplyHeader::LEN, 16);
        assert_eq!(StructuredReplyHeader::LEN, 20);
        assert_eq!(ErrorChunk::LEN, 6);
    }

    #[test]
    fn greeting_bytes() {
        let g = Greeting::new(HandshakeFlags::FIXED_NEWSTYLE | HandshakeFlags::NO_ZEROES);
        assert_eq!(g.as_bytes(), b"NBDMAGICIHAVEOPT\x00\x03");
        assert_eq!(Greeting::parse(g.as_bytes()).map(|(g, _)| g.flags()), Ok(HandshakeFlags::all()));
    }

    #[test]
    fn option_reply_magic_bytes() {
        let h = OptionReplyHeader::new(OPT_GO, ReplyType::ErrUnsup, 0);
        assert_eq!(
            h.as_bytes(),
            [0, 3, 0xe8, 0x89, 0x04, 0x55, 0x65, 0xa9, 0, 0, 0, 7, 0x80, 0, 0, 1, 0, 0, 0, 0]
        );
        assert!(h.reply_type().is_error());
    }

    #[test]
    fn bad_magic_and_short_buffers() {
        let mut b = RequestHeader::new(Command::Read, CommandFlags::empty(), 1, 2, 3).as_bytes().to_vec();
        b[0] ^= 1;
        assert!(matches!(RequestHeader::parse(&b), Err(WireError::BadMagic { .. })));
        assert!(matches!(
            RequestHeader::parse(&b[..27]),
            Err(WireError::Truncated { need: 28, got: 27, .. })
        ));
        let mut small = [0u8; 10];
        assert!(SimpleReplyHeader::new(1, 0).emit(&mut small).is_err());
    }

    #[test]
    fn codes_round_trip() {
        assert_eq!(Command::from(CMD_WRITE_ZEROES), Command::WriteZeroes);
        assert_eq!(Command::from(99), Command::Unknown(99));
        assert_eq!(u16::from(Command::Unknown(99)), 99);
        assert_eq!(ReplyType::from(REP_ERR_UNKNOWN), ReplyType::ErrUnknown);
        assert_eq!(ChunkType::from(REPLY_TYPE_ERROR), ChunkType::Error);
        assert!(ChunkType::Unknown(0x8005).is_error());
    }

    #[test]
    fn info_request_round_trip() {
        let mut buf = [0u8; 64];
        let n = emit_info_request(b"e1.0", &[InfoType::BlockSize, InfoType::Name], &mut buf).unwrap();
        assert_eq!(&buf[..n], b"\0\0\0\x04e1.0\0\x02\0\x03\0\x01");
        let req = InfoRequest::parse(&buf[..n]).unwrap();
        assert_eq!(req.name, b"e1.0");
        assert_eq!(req.infos().collect::<Vec<_>>(), [InfoType::BlockSize, InfoType::Name]);
        assert!(InfoRequest::parse(&buf[..n - 1]).is_none());
        assert!(InfoRequest::parse(&[0, 0, 0, 9, 1]).is_none());
    }

    proptest! {
        #[test]
        fn request_round_trip(cmd: u16, flags: u16, handle: u64, offset: u64, length: u32) {
            let h = RequestHeader::new(Command::from(cmd), CommandFlags::from_bits_retain(flags), handle, offset, length);
            let mut buf = [0u8; 40];
            prop_assert_eq!(h.emit(&mut buf), Ok(28));
            let (p, rest) = RequestHeader::parse(&buf).unwrap();
            prop_assert_eq!(p, &h);
            prop_assert_eq!(rest.len(), 12);
            prop_assert_eq!((u16::from(p.command()), p.flags().bits(), p.handle(), p.offset(), p.length()),
                (cmd, flags, handle, offset, length));
        }

        #[test]
        fn replies_round_trip(flags: u16, kind: u16, handle: u64, length: u32, error: u32) {
            let s = StructuredReplyHeader::new(ReplyFlags::from_bits_retain(flags), ChunkType::from(kind), handle, length);
            let (p, _) = StructuredReplyHeader::parse(s.as_bytes()).unwrap();
            prop_assert_eq!((p.flags().bits(), u16::from(p.chunk_type()), p.handle(), p.length()), (flags, kind, handle, length));
            let r = SimpleReplyHeader::new(handle, error);
            let (p, _) = SimpleReplyHeader::parse(r.as_bytes()).unwrap();
            prop_assert_eq!((p.handle(), p.error()), (handle, error));
            let o = OptionReplyHeader::new(error, ReplyType::from(length), kind.into());
            let (p, _) = OptionReplyHeader::parse(o.as_bytes()).unwrap();
            prop_assert_eq!((u32::from(p.option()), u32::from(p.reply_type()), p.length()), (error, length, u32::from(kind)));
        }

        #[test]
        fn parsers_never_panic(bytes: Vec<u8>) {
            let _ = Greeting::parse(&bytes);
            let _ = OptionHeader::parse(&bytes);
            let _ = OptionReplyHeader::parse(&bytes);
            let _ = RequestHeader::parse(&bytes);
            let _ = SimpleReplyHeader::parse(&bytes);
            let _ = StructuredReplyHeader::parse(&bytes);
            let _ = InfoRequest::parse(&bytes);
            let _ = info_type_of(&bytes);
            let _ = ErrorChunk::parse(&bytes);
        }
    }
}
