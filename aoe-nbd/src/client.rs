//! A sans-IO NBD client: the fixed newstyle handshake ([`Handshake`]), then transmission
//! ([`Transmission`]): requests encoded with a cookie each, simple replies decoded and
//! matched to them.
//!
//! Nothing here reads a socket or a clock. The caller sends what [`Handshake::take_output`]
//! gives, feeds what the server sends to [`Handshake::receive`] until it returns the
//! connected [`Transmission`], then sends each request's header (and a write's data) and
//! feeds replies to [`Transmission::receive`], taking each answered request from
//! [`Transmission::poll_reply`]. Any byte the protocol does not allow (a bad magic, a cookie
//! no request has, a reply of the wrong kind) is a [`ProtocolError`]: the connection cannot
//! be trusted any more and must be dropped.
//!
//! ```
//! use aoe_nbd::client::{Handshake, Request};
//!
//! let mut hs = Handshake::new("disk")?;
//! assert!(hs.take_output().is_empty(), "the server speaks first");
//! // The server's greeting: NBDMAGIC, IHAVEOPT, FIXED_NEWSTYLE | NO_ZEROES.
//! let mut greeting = b"NBDMAGICIHAVEOPT".to_vec();
//! greeting.extend_from_slice(&3u16.to_be_bytes());
//! assert!(hs.receive(&greeting)?.is_none());
//! let sent = hs.take_output(); // client flags, then NBD_OPT_GO "disk"
//! assert_eq!(&sent[4..12], b"IHAVEOPT");
//!
//! // NBD_REP_INFO (NBD_INFO_EXPORT: 1 MiB, HAS_FLAGS | SEND_FLUSH), then NBD_REP_ACK.
//! let reply = |kind: u32, data: &[u8]| {
//!     let mut r = 0x0003_e889_0455_65a9u64.to_be_bytes().to_vec();
//!     r.extend_from_slice(&7u32.to_be_bytes());
//!     r.extend_from_slice(&kind.to_be_bytes());
//!     r.extend_from_slice(&(data.len() as u32).to_be_bytes());
//!     r.extend_from_slice(data);
//!     r
//! };
//! let mut info = 0u16.to_be_bytes().to_vec();
//! info.extend_from_slice(&(1u64 << 20).to_be_bytes());
//! info.extend_from_slice(&5u16.to_be_bytes());
//! let mut answers = reply(3, &info);
//! answers.extend(reply(1, &[]));
//! let mut nbd = hs.receive(&answers)?.expect("connected");
//! assert_eq!(nbd.info().size, 1 << 20);
//! assert!(nbd.info().can_flush() && !nbd.info().read_only());
//!
//! let (cookie, header) = nbd.request(Request::read(4096, 512))?;
//! assert_eq!(header.len(), 28);
//! // The simple reply, then the 512 bytes read.
//! let mut answer = 0x6744_6698u32.to_be_bytes().to_vec();
//! answer.extend_from_slice(&0u32.to_be_bytes());
//! answer.extend_from_slice(&cookie.to_be_bytes());
//! answer.extend_from_slice(&[7; 512]);
//! nbd.receive(&answer)?;
//! let done = nbd.poll_reply().expect("answered");
//! assert_eq!(done.cookie, cookie);
//! assert_eq!(done.result.unwrap(), vec![7; 512]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

// Every index and slice below is within a length checked just before it (proptests feed
// random bytes to both phases).
#![allow(clippy::indexing_slicing, clippy::expect_used)]

use alloc::collections::{BTreeMap, VecDeque};
use alloc::string::String;
use alloc::vec::Vec;

/// The protocol's numbers this client uses, from [`crate::wire`], as plain integers.
mod c {
    use crate::wire::{ClientFlags, CommandFlags, HandshakeFlags, TransmissionFlags};
    pub use crate::wire::{
        CLISERV_MAGIC as OLDSTYLE_MAGIC, CMD_DISC, CMD_FLUSH, CMD_READ, CMD_WRITE, IHAVEOPT, INFO_BLOCK_SIZE,
        INFO_EXPORT, MAX_STRING_LEN as MAX_NAME, NBDMAGIC, OPTION_REPLY_MAGIC as REPLY_MAGIC,
        OPT_EXPORT_NAME, OPT_GO, REP_ACK, REP_ERR_BLOCK_SIZE_REQD, REP_ERR_INVALID, REP_ERR_PLATFORM,
        REP_ERR_POLICY, REP_ERR_SHUTDOWN, REP_ERR_TLS_REQD, REP_ERR_TOO_BIG, REP_ERR_UNKNOWN, REP_ERR_UNSUP,
        REP_FLAG_ERROR, REP_INFO, REQUEST_MAGIC, SIMPLE_REPLY_MAGIC, STRUCTURED_REPLY_MAGIC,
    };

    pub const FLAG_FIXED_NEWSTYLE: u16 = HandshakeFlags::FIXED_NEWSTYLE.bits();
    pub const FLAG_NO_ZEROES: u16 = HandshakeFlags::NO_ZEROES.bits();
    pub const FLAG_C_FIXED_NEWSTYLE: u32 = ClientFlags::FIXED_NEWSTYLE.bits();
    pub const FLAG_C_NO_ZEROES: u32 = ClientFlags::NO_ZEROES.bits();
    pub const FLAG_HAS_FLAGS: u16 = TransmissionFlags::HAS_FLAGS.bits();
    pub const FLAG_READ_ONLY: u16 = TransmissionFlags::READ_ONLY.bits();
    pub const FLAG_SEND_FLUSH: u16 = TransmissionFlags::SEND_FLUSH.bits();
    pub const FLAG_SEND_FUA: u16 = TransmissionFlags::SEND_FUA.bits();
    pub const CMD_FLAG_FUA: u16 = CommandFlags::FUA.bits();

    /// Largest payload to send or ask for when the server names no maximum.
    pub const DEFAULT_MAX_PAYLOAD: u32 = 32 << 20;
}

/// Size of a request header on the wire.
pub const REQUEST_HEADER_LEN: usize = 28;
/// Size of a simple reply header on the wire.
const SIMPLE_REPLY_LEN: usize = 16;
/// Largest option reply payload accepted during the handshake; longer ones are an error.
const MAX_OPTION_REPLY: u32 = 64 * 1024;

/// What went wrong with what the server sent: the connection must be dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// The greeting does not start with NBDMAGIC.
    #[error("not an NBD server: the greeting starts with {0:#018x}, not NBDMAGIC")]
    NotNbd(u64),
    /// An oldstyle server (no options, no export names).
    #[error("the server speaks the oldstyle handshake, which this client does not")]
    Oldstyle,
    /// A magic number is not the one the protocol puts there.
    #[error("bad {what} magic {got:#x}")]
    BadMagic {
        /// Which one.
        what: &'static str,
        /// What came.
        got: u64,
    },
    /// An option reply answers another option than the one asked.
    #[error("an option reply for option {got}, expected {expected}")]
    WrongOption {
        /// The option asked.
        expected: u32,
        /// The option answered.
        got: u32,
    },
    /// An option reply, or an info in it, has a length the protocol does not allow.
    #[error("option reply type {reply} with {len} bytes of data is malformed")]
    BadOptionReply {
        /// Its type.
        reply: u32,
        /// Its length.
        len: u32,
    },
    /// An option reply of a type the client did not expect.
    #[error("unexpected option reply type {0:#x}")]
    UnexpectedReply(u32),
    /// The server ended the option phase without saying what the export is.
    #[error("the server accepted NBD_OPT_GO without sending NBD_INFO_EXPORT")]
    NoExportInfo,
    /// The server refused the export.
    #[error("the server refused export {name:?}: {reason}{}", if message.is_empty() { String::new() } else { alloc::format!(" ({message})") })]
    Refused {
        /// The export asked for.
        name: String,
        /// What the server's error code means.
        reason: &'static str,
        /// The server's own message, if any.
        message: String,
    },
    /// The server's block size constraints cannot serve 512-byte sectors.
    #[error("the server's block sizes (minimum {minimum}, preferred {preferred}, maximum {maximum}) cannot serve 512-byte sectors")]
    BlockSize {
        /// Smallest request the server takes.
        minimum: u32,
        /// The size it prefers.
        preferred: u32,
        /// Largest.
        maximum: u32,
    },
    /// A structured reply, which this client never asks for.
    #[error("a structured reply, which was not negotiated")]
    StructuredReply,
    /// A reply whose cookie no request in flight has.
    #[error("a reply for cookie {0:#x}, which no request in flight has")]
    UnknownCookie(u64),
    /// Bytes came where the protocol has the server say nothing.
    #[error("{0} unexpected bytes from the server")]
    Unexpected(usize),
    /// An earlier error broke the connection.
    #[error("the connection is broken by an earlier protocol error")]
    Broken,
}

/// Why a request cannot be sent; nothing was registered and the connection is fine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// Past the end of the export.
    #[error("{len} bytes at offset {offset} run past the end of the {size}-byte export")]
    OutOfRange {
        /// Where.
        offset: u64,
        /// How much.
        len: u64,
        /// The export's size.
        size: u64,
    },
    /// Zero bytes, or more than the server takes in one request.
    #[error("a request of {len} bytes: the server takes 1 to {max}")]
    Length {
        /// Asked.
        len: u64,
        /// The server's maximum payload.
        max: u32,
    },
    /// Not a multiple of the server's minimum block size.
    #[error("{len} bytes at offset {offset} are not aligned to the server's {minimum}-byte blocks")]
    Misaligned {
        /// Where.
        offset: u64,
        /// How much.
        len: u64,
        /// The server's minimum block size.
        minimum: u32,
    },
    /// A write to a read-only export.
    #[error("the export is read-only")]
    ReadOnly,
    /// A flush (or FUA) the server does not take.
    #[error("the server does not support {0}")]
    Unsupported(&'static str),
    /// After NBD_CMD_DISC.
    #[error("the connection is being closed")]
    Closing,
    /// After a protocol error.
    #[error("the connection is broken by a protocol error")]
    Broken,
    /// The export name is longer than the protocol allows.
    #[error("an export name of {0} bytes is longer than 4096")]
    NameTooLong(usize),
}

/// The server's block size constraints (NBD_INFO_BLOCK_SIZE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockSize {
    /// Smallest request size and alignment, a power of two.
    pub minimum: u32,
    /// The size the server prefers.
    pub preferred: u32,
    /// Largest payload of one request.
    pub maximum: u32,
}

/// What the handshake learned about the export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportInfo {
    /// Size in bytes.
    pub size: u64,
    /// Transmission flags (NBD_FLAG_*).
    pub flags: u16,
    /// Block size constraints, when the server said.
    pub block_size: Option<BlockSize>,
}

impl ExportInfo {
    /// The server refuses writes (NBD_FLAG_READ_ONLY).
    pub fn read_only(&self) -> bool {
        self.flags & c::FLAG_READ_ONLY != 0
    }
    /// The server takes NBD_CMD_FLUSH (NBD_FLAG_SEND_FLUSH).
    pub fn can_flush(&self) -> bool {
        self.flags & c::FLAG_SEND_FLUSH != 0
    }
    /// The server takes NBD_CMD_FLAG_FUA on writes (NBD_FLAG_SEND_FUA).
    pub fn can_fua(&self) -> bool {
        self.flags & c::FLAG_SEND_FUA != 0
    }
    /// Requests' offsets and lengths must be multiples of this.
    pub fn minimum_block(&self) -> u32 {
        self.block_size.map_or(1, |b| b.minimum)
    }
    /// The largest payload of one request.
    pub fn max_payload(&self) -> u32 {
        self.block_size.map_or(c::DEFAULT_MAX_PAYLOAD, |b| b.maximum.min(c::DEFAULT_MAX_PAYLOAD))
    }
}

/// Where the handshake is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for NBDMAGIC, IHAVEOPT and the handshake flags (18 bytes).
    Greeting,
    /// NBD_OPT_GO sent: option replies until NBD_REP_ACK or an error.
    Go,
    /// NBD_OPT_EXPORT_NAME sent: size, flags and perhaps 124 zeroes.
    ExportName { zeroes: bool },
    /// Done or failed: nothing more to read.
    Over,
}

/// The client side of the fixed newstyle handshake, asking for one export by name.
///
/// It asks with NBD_OPT_GO (and NBD_INFO_BLOCK_SIZE), and falls back to
/// NBD_OPT_EXPORT_NAME when the server does not support NBD_OPT_GO or is not fixed newstyle.
/// Structured replies are not asked for: every reply is simple.
#[derive(Debug)]
pub struct Handshake {
    name: Vec<u8>,
    input: Vec<u8>,
    output: Vec<u8>,
    phase: Phase,
    size_flags: Option<(u64, u16)>,
    block_size: Option<BlockSize>,
    /// NBD_FLAG_NO_ZEROES was offered and taken.
    no_zeroes: bool,
}

impl Handshake {
    /// A handshake for export `name` (the empty name is the server's default export).
    pub fn new(name: &str) -> Result<Self, RequestError> {
        if name.len() > c::MAX_NAME {
            return Err(RequestError::NameTooLong(name.len()));
        }
        Ok(Handshake {
            name: name.as_bytes().to_vec(),
            input: Vec::new(),
            output: Vec::new(),
            phase: Phase::Greeting,
            size_flags: None,
            block_size: None,
            no_zeroes: false,
        })
    }

    /// Bytes to send to the server now (empty when there are none).
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.output)
    }

    /// How many more bytes the handshake needs before it can go on, at least 1 (a hint for
    /// reading exactly; feeding more is fine).
    pub fn wants(&self) -> usize {
        let need = match self.phase {
            Phase::Greeting => 18,
            Phase::Go => match self.input.get(16..20) {
                Some(len) => 20 + u32::from_be_bytes(len.try_into().expect("4 bytes")) as usize,
                None => 20,
            },
            Phase::ExportName { zeroes } => 10 + if zeroes { 124 } else { 0 },
            Phase::Over => return 1,
        };
        need.saturating_sub(self.input.len()).max(1)
    }

    /// Takes bytes from the server. Returns the connected [`Transmission`] once the server
    /// has accepted the export (send [`take_output`](Self::take_output) first: it may hold
    /// the last option), `None` while the handshake goes on. Any error ends it.
    pub fn receive(&mut self, bytes: &[u8]) -> Result<Option<Transmission>, ProtocolError> {
        if self.phase == Phase::Over {
            return Err(ProtocolError::Broken);
        }
        self.input.extend_from_slice(bytes);
        let result = self.advance();
        if result.is_err() {
            self.phase = Phase::Over;
        }
        result
    }

    fn advance(&mut self) -> Result<Option<Transmission>, ProtocolError> {
        loop {
            match self.phase {
                Phase::Greeting => {
                    if self.input.len() >= 8 && be64(&self.input[..8]) != c::NBDMAGIC {
                        return Err(ProtocolError::NotNbd(be64(&self.input[..8])));
                    }
                    if self.input.len() >= 16 && be64(&self.input[8..16]) == c::OLDSTYLE_MAGIC {
                        return Err(ProtocolError::Oldstyle);
                    }
                    if self.input.len() >= 16 && be64(&self.input[8..16]) != c::IHAVEOPT {
                        return Err(ProtocolError::BadMagic {
                            what: "IHAVEOPT",
                            got: be64(&self.input[8..16]),
                        });
                    }
                    if self.input.len() < 18 {
                        return Ok(None);
                    }
                    let flags = be16(&self.input[16..18]);
                    self.input.drain(..18);
                    let no_zeroes = flags & c::FLAG_NO_ZEROES != 0;
                    self.no_zeroes = no_zeroes;
                    let mut client = 0;
                    if flags & c::FLAG_FIXED_NEWSTYLE != 0 {
                        client |= c::FLAG_C_FIXED_NEWSTYLE;
                    }
                    if no_zeroes {
                        client |= c::FLAG_C_NO_ZEROES;
                    }
                    self.output.extend_from_slice(&client.to_be_bytes());
                    if flags & c::FLAG_FIXED_NEWSTYLE != 0 {
                        let mut data = Vec::with_capacity(8 + self.name.len());
                        data.extend_from_slice(&(self.name.len() as u32).to_be_bytes());
                        data.extend_from_slice(&self.name);
                        data.extend_from_slice(&1u16.to_be_bytes());
                        data.extend_from_slice(&c::INFO_BLOCK_SIZE.to_be_bytes());
                        self.option(c::OPT_GO, &data);
                        self.phase = Phase::Go;
                    } else {
                        self.export_name(no_zeroes);
                    }
                }
                Phase::Go => {
                    if self.input.len() < 20 {
                        return Ok(None);
                    }
                    let magic = be64(&self.input[..8]);
                    if magic != c::REPLY_MAGIC {
                        return Err(ProtocolError::BadMagic { what: "option reply", got: magic });
                    }
                    let option = be32(&self.input[8..12]);
                    let reply = be32(&self.input[12..16]);
                    let len = be32(&self.input[16..20]);
                    if option != c::OPT_GO {
                        return Err(ProtocolError::WrongOption { expected: c::OPT_GO, got: option });
                    }
                    if len > MAX_OPTION_REPLY {
                        return Err(ProtocolError::BadOptionReply { reply, len });
                    }
                    if self.input.len() < 20 + len as usize {
                        return Ok(None);
                    }
                    let data: Vec<u8> = self.input.drain(..20 + len as usize).skip(20).collect();
                    match reply {
                        c::REP_INFO => self.info(&data, reply, len)?,
                        c::REP_ACK if len != 0 => return Err(ProtocolError::BadOptionReply { reply, len }),
                        c::REP_ACK => {
                            let (size, flags) = self.size_flags.ok_or(ProtocolError::NoExportInfo)?;
                            return self.connected(size, flags).map(Some);
                        }
                        // No NBD_OPT_GO (a server older than 3.10 or so): ask the old way.
                        c::REP_ERR_UNSUP => {
                            self.size_flags = None;
                            self.block_size = None;
                            self.export_name(self.no_zeroes);
                        }
                        error if error & c::REP_FLAG_ERROR != 0 => {
                            return Err(ProtocolError::Refused {
                                name: String::from_utf8_lossy(&self.name).into_owned(),
                                reason: refusal(error),
                                message: String::from_utf8_lossy(&data).chars().take(200).collect(),
                            });
                        }
                        other => return Err(ProtocolError::UnexpectedReply(other)),
                    }
                }
                Phase::ExportName { zeroes } => {
                    let need = 10 + if zeroes { 124 } else { 0 };
                    if self.input.len() < need {
                        return Ok(None);
                    }
                    let size = be64(&self.input[..8]);
                    let flags = be16(&self.input[8..10]);
                    self.input.drain(..need);
                    return self.connected(size, flags).map(Some);
                }
                Phase::Over => return Err(ProtocolError::Broken),
            }
        }
    }

    /// Sends NBD_OPT_EXPORT_NAME; `no_zeroes` when the server offered NBD_FLAG_NO_ZEROES (and
    /// so the client took it).
    fn export_name(&mut self, no_zeroes: bool) {
        let name = self.name.clone();
        self.option(c::OPT_EXPORT_NAME, &name);
        self.phase = Phase::ExportName { zeroes: !no_zeroes };
    }

    fn option(&mut self, option: u32, data: &[u8]) {
        self.output.extend_from_slice(&c::IHAVEOPT.to_be_bytes());
        self.output.extend_from_slice(&option.to_be_bytes());
        self.output.extend_from_slice(&(data.len() as u32).to_be_bytes());
        self.output.extend_from_slice(data);
    }

    /// One NBD_REP_INFO.
    fn info(&mut self, data: &[u8], reply: u32, len: u32) -> Result<(), ProtocolError> {
        let bad = ProtocolError::BadOptionReply { reply, len };
        if data.len() < 2 {
            return Err(bad);
        }
        match be16(&data[..2]) {
            c::INFO_EXPORT if data.len() == 12 => {
                self.size_flags = Some((be64(&data[2..10]), be16(&data[10..12])))
            }
            c::INFO_BLOCK_SIZE if data.len() == 14 => {
                let (minimum, preferred, maximum) =
                    (be32(&data[2..6]), be32(&data[6..10]), be32(&data[10..14]));
                self.block_size = Some(BlockSize { minimum, preferred, maximum });
            }
            c::INFO_EXPORT | c::INFO_BLOCK_SIZE => return Err(bad),
            // Name, description and infos this client does not know: of no use to it.
            _ => {}
        }
        Ok(())
    }

    fn connected(&mut self, size: u64, flags: u16) -> Result<Transmission, ProtocolError> {
        self.phase = Phase::Over;
        if let Some(b) = self.block_size {
            // The protocol: a power of two, at most 64 KiB; preferred and maximum multiples.
            let sane = b.minimum.is_power_of_two()
                && b.minimum <= 64 * 1024
                && b.maximum >= b.minimum
                && b.maximum % b.minimum == 0;
            if !sane || b.minimum > 512 {
                let BlockSize { minimum, preferred, maximum } = b;
                return Err(ProtocolError::BlockSize { minimum, preferred, maximum });
            }
        }
        if !self.input.is_empty() {
            return Err(ProtocolError::Unexpected(self.input.len()));
        }
        let flags = if flags & c::FLAG_HAS_FLAGS != 0 { flags } else { 0 };
        Ok(Transmission::new(ExportInfo { size, flags, block_size: self.block_size }))
    }
}

/// What an NBD_REP_ERR_* code means.
fn refusal(code: u32) -> &'static str {
    match code {
        c::REP_ERR_POLICY => "forbidden by policy",
        c::REP_ERR_INVALID => "invalid request",
        c::REP_ERR_PLATFORM => "not supported on this platform",
        c::REP_ERR_TLS_REQD => "TLS required",
        c::REP_ERR_UNKNOWN => "no such export",
        c::REP_ERR_SHUTDOWN => "the server is shutting down",
        c::REP_ERR_BLOCK_SIZE_REQD => "block size negotiation required",
        c::REP_ERR_TOO_BIG => "request too big",
        _ => "error",
    }
}

/// A request to send: what, where and how much.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// What.
    pub kind: RequestKind,
    /// Byte offset in the export.
    pub offset: u64,
    /// Bytes to read or write (0 for a flush or disconnect).
    pub len: u32,
    /// NBD_CMD_FLAG_FUA: the write is durable when answered.
    pub fua: bool,
}

/// The commands this client sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestKind {
    /// NBD_CMD_READ: the reply carries the data.
    Read,
    /// NBD_CMD_WRITE: the header is followed by the data.
    Write,
    /// NBD_CMD_FLUSH.
    Flush,
    /// NBD_CMD_DISC: no reply; the server closes the connection.
    Disconnect,
}

impl Request {
    /// Read `len` bytes at `offset`.
    pub fn read(offset: u64, len: u32) -> Self {
        Request { kind: RequestKind::Read, offset, len, fua: false }
    }
    /// Write `len` bytes at `offset` (the caller sends them after the header).
    pub fn write(offset: u64, len: u32) -> Self {
        Request { kind: RequestKind::Write, offset, len, fua: false }
    }
    /// Flush everything written.
    pub fn flush() -> Self {
        Request { kind: RequestKind::Flush, offset: 0, len: 0, fua: false }
    }
    /// End the connection.
    pub fn disconnect() -> Self {
        Request { kind: RequestKind::Disconnect, offset: 0, len: 0, fua: false }
    }
}

/// A request the server has answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The cookie [`Transmission::request`] gave it.
    pub cookie: u64,
    /// What it was.
    pub kind: RequestKind,
    /// The data read (empty for other requests), or the server's error (an errno value:
    /// EPERM, EIO, ENOMEM, EINVAL, ENOSPC, EOVERFLOW, ENOTSUP, ESHUTDOWN).
    pub result: Result<Vec<u8>, u32>,
}

/// A connected client in the transmission phase: requests out, replies in.
#[derive(Debug)]
pub struct Transmission {
    info: ExportInfo,
    next_cookie: u64,
    in_flight: BTreeMap<u64, (RequestKind, u32)>,
    input: Vec<u8>,
    /// A read's reply header was decoded: the cookie whose data comes next.
    reading: Option<u64>,
    replies: VecDeque<Reply>,
    closing: bool,
    broken: bool,
}

impl Transmission {
    fn new(info: ExportInfo) -> Self {
        Transmission {
            info,
            next_cookie: 1,
            in_flight: BTreeMap::new(),
            input: Vec::new(),
            reading: None,
            replies: VecDeque::new(),
            closing: false,
            broken: false,
        }
    }

    /// What the server said of the export.
    pub fn info(&self) -> &ExportInfo {
        &self.info
    }

    /// Requests sent and not answered yet.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Checks `request` against the export and registers it: returns its cookie and the
    /// header to send, which a write's `len` bytes of data must follow. A disconnect gets no
    /// reply and allows no further request.
    pub fn request(&mut self, request: Request) -> Result<(u64, [u8; REQUEST_HEADER_LEN]), RequestError> {
        if self.broken {
            return Err(RequestError::Broken);
        }
        if self.closing {
            return Err(RequestError::Closing);
        }
        let Request { kind, offset, len, fua } = request;
        let info = self.info;
        let command = match kind {
            RequestKind::Read | RequestKind::Write => {
                if kind == RequestKind::Write && info.read_only() {
                    return Err(RequestError::ReadOnly);
                }
                let max = info.max_payload();
                if len == 0 || len > max {
                    return Err(RequestError::Length { len: len.into(), max });
                }
                if offset.checked_add(len.into()).is_none_or(|end| end > info.size) {
                    return Err(RequestError::OutOfRange { offset, len: len.into(), size: info.size });
                }
                let minimum = info.minimum_block();
                if offset % u64::from(minimum) != 0 || len % minimum != 0 {
                    return Err(RequestError::Misaligned { offset, len: len.into(), minimum });
                }
                if kind == RequestKind::Read {
                    c::CMD_READ
                } else {
                    c::CMD_WRITE
                }
            }
            RequestKind::Flush if !info.can_flush() => {
                return Err(RequestError::Unsupported("NBD_CMD_FLUSH"))
            }
            RequestKind::Flush => c::CMD_FLUSH,
            RequestKind::Disconnect => c::CMD_DISC,
        };
        if fua && (kind != RequestKind::Write || !info.can_fua()) {
            return Err(RequestError::Unsupported("NBD_CMD_FLAG_FUA"));
        }
        let (offset, len) = match kind {
            RequestKind::Read | RequestKind::Write => (offset, len),
            _ => (0, 0),
        };
        let cookie = self.next_cookie;
        self.next_cookie = self.next_cookie.wrapping_add(1).max(1);
        let mut header = [0u8; REQUEST_HEADER_LEN];
        header[0..4].copy_from_slice(&c::REQUEST_MAGIC.to_be_bytes());
        header[4..6].copy_from_slice(&(if fua { c::CMD_FLAG_FUA } else { 0 }).to_be_bytes());
        header[6..8].copy_from_slice(&command.to_be_bytes());
        header[8..16].copy_from_slice(&cookie.to_be_bytes());
        header[16..24].copy_from_slice(&offset.to_be_bytes());
        header[24..28].copy_from_slice(&len.to_be_bytes());
        if kind == RequestKind::Disconnect {
            self.closing = true;
        } else {
            self.in_flight.insert(cookie, (kind, len));
        }
        Ok((cookie, header))
    }

    /// Takes bytes from the server and decodes every reply they complete.
    pub fn receive(&mut self, mut bytes: &[u8]) -> Result<(), ProtocolError> {
        if self.broken {
            return Err(ProtocolError::Broken);
        }
        while !bytes.is_empty() {
            match self.step(&mut bytes) {
                Ok(()) => {}
                Err(e) => {
                    self.broken = true;
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Consumes what it can of `bytes`.
    fn step(&mut self, bytes: &mut &[u8]) -> Result<(), ProtocolError> {
        if let Some(cookie) = self.reading {
            let len = self.in_flight.get(&cookie).map_or(0, |&(_, len)| len) as usize;
            let take = (len - self.input.len()).min(bytes.len());
            if self.input.capacity() < len {
                self.input.reserve_exact(len - self.input.len());
            }
            self.input.extend_from_slice(&bytes[..take]);
            *bytes = &bytes[take..];
            if self.input.len() == len {
                self.reading = None;
                self.in_flight.remove(&cookie);
                let data = std::mem::take(&mut self.input);
                self.replies.push_back(Reply { cookie, kind: RequestKind::Read, result: Ok(data) });
            }
            return Ok(());
        }
        let take = (SIMPLE_REPLY_LEN - self.input.len()).min(bytes.len());
        self.input.extend_from_slice(&bytes[..take]);
        *bytes = &bytes[take..];
        if self.input.len() >= 4 {
            match be32(&self.input[..4]) {
                c::SIMPLE_REPLY_MAGIC => {}
                c::STRUCTURED_REPLY_MAGIC => return Err(ProtocolError::StructuredReply),
                magic => return Err(ProtocolError::BadMagic { what: "reply", got: magic.into() }),
            }
        }
        if self.input.len() < SIMPLE_REPLY_LEN {
            return Ok(());
        }
        let error = be32(&self.input[4..8]);
        let cookie = be64(&self.input[8..16]);
        self.input.clear();
        let Some(&(kind, _)) = self.in_flight.get(&cookie) else {
            return Err(ProtocolError::UnknownCookie(cookie));
        };
        if kind == RequestKind::Read && error == 0 {
            self.reading = Some(cookie);
            return Ok(());
        }
        self.in_flight.remove(&cookie);
        let result = if error == 0 { Ok(Vec::new()) } else { Err(error) };
        self.replies.push_back(Reply { cookie, kind, result });
        Ok(())
    }

    /// The next answered request, in the order the replies came.
    pub fn poll_reply(&mut self) -> Option<Reply> {
        self.replies.pop_front()
    }
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes(b[..2].try_into().expect("2 bytes"))
}
fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes(b[..4].try_into().expect("4 bytes"))
}
fn be64(b: &[u8]) -> u64 {
    u64::from_be_bytes(b[..8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;
    use proptest::prelude::*;

    /// The server's side, written out byte by byte from the protocol document.
    fn greeting(flags: u16) -> Vec<u8> {
        let mut g = b"NBDMAGICIHAVEOPT".to_vec();
        g.extend_from_slice(&flags.to_be_bytes());
        g
    }

    fn option_reply(option: u32, kind: u32, data: &[u8]) -> Vec<u8> {
        let mut r = c::REPLY_MAGIC.to_be_bytes().to_vec();
        r.extend_from_slice(&option.to_be_bytes());
        r.extend_from_slice(&kind.to_be_bytes());
        r.extend_from_slice(&(data.len() as u32).to_be_bytes());
        r.extend_from_slice(data);
        r
    }

    fn info_export(size: u64, flags: u16) -> Vec<u8> {
        let mut d = c::INFO_EXPORT.to_be_bytes().to_vec();
        d.extend_from_slice(&size.to_be_bytes());
        d.extend_from_slice(&flags.to_be_bytes());
        option_reply(c::OPT_GO, c::REP_INFO, &d)
    }

    fn info_block(minimum: u32, preferred: u32, maximum: u32) -> Vec<u8> {
        let mut d = c::INFO_BLOCK_SIZE.to_be_bytes().to_vec();
        for v in [minimum, preferred, maximum] {
            d.extend_from_slice(&v.to_be_bytes());
        }
        option_reply(c::OPT_GO, c::REP_INFO, &d)
    }

    fn simple_reply(error: u32, cookie: u64) -> Vec<u8> {
        let mut r = c::SIMPLE_REPLY_MAGIC.to_be_bytes().to_vec();
        r.extend_from_slice(&error.to_be_bytes());
        r.extend_from_slice(&cookie.to_be_bytes());
        r
    }

    const RW: u16 = c::FLAG_HAS_FLAGS | c::FLAG_SEND_FLUSH | c::FLAG_SEND_FUA;

    /// A connection to a 1 MiB export with flush and FUA, by NBD_OPT_GO.
    fn connected() -> Transmission {
        let mut hs = Handshake::new("disk").unwrap();
        assert!(hs.receive(&greeting(3)).unwrap().is_none());
        let mut answers = info_export(1 << 20, RW);
        answers.extend(info_block(1, 4096, 1 << 20));
        answers.extend(option_reply(c::OPT_GO, c::REP_ACK, &[]));
        hs.receive(&answers).unwrap().expect("connected")
    }

    #[test]
    fn go_sends_the_name_and_asks_for_block_sizes() {
        let mut hs = Handshake::new("disk").unwrap();
        assert_eq!(hs.wants(), 18);
        assert!(hs.receive(&greeting(3)).unwrap().is_none());
        let out = hs.take_output();
        let mut want = (c::FLAG_C_FIXED_NEWSTYLE | c::FLAG_C_NO_ZEROES).to_be_bytes().to_vec();
        want.extend_from_slice(b"IHAVEOPT");
        want.extend_from_slice(&7u32.to_be_bytes());
        want.extend_from_slice(&12u32.to_be_bytes());
        want.extend_from_slice(&4u32.to_be_bytes());
        want.extend_from_slice(b"disk");
        want.extend_from_slice(&[0, 1, 0, 3]);
        assert_eq!(out, want);
        // Fed one byte at a time, the replies give the same export.
        let mut answers = info_export(1 << 20, RW | c::FLAG_READ_ONLY);
        answers.extend(option_reply(c::OPT_GO, c::REP_INFO, &[0, 2, b'h', b'i'])); // a description
        answers.extend(info_block(512, 4096, 65536));
        answers.extend(option_reply(c::OPT_GO, c::REP_ACK, &[]));
        let mut done = None;
        for (i, b) in answers.iter().enumerate() {
            let r = hs.receive(std::slice::from_ref(b)).unwrap();
            assert_eq!(r.is_some(), i == answers.len() - 1);
            done = done.or(r);
        }
        let t = done.unwrap();
        let info = *t.info();
        assert_eq!(info.size, 1 << 20);
        assert!(info.read_only() && info.can_flush() && info.can_fua());
        assert_eq!(info.block_size, Some(BlockSize { minimum: 512, preferred: 4096, maximum: 65536 }));
        assert_eq!((info.minimum_block(), info.max_payload()), (512, 65536));
    }

    #[test]
    fn a_server_without_go_is_asked_with_export_name() {
        let mut hs = Handshake::new("x").unwrap();
        hs.receive(&greeting(1)).unwrap();
        hs.take_output();
        assert!(hs.receive(&option_reply(c::OPT_GO, c::REP_ERR_UNSUP, &[])).unwrap().is_none());
        let out = hs.take_output();
        let mut want = b"IHAVEOPT".to_vec();
        want.extend_from_slice(&1u32.to_be_bytes());
        want.extend_from_slice(&1u32.to_be_bytes());
        want.push(b'x');
        assert_eq!(out, want);
        // Without NO_ZEROES the server pads with 124 zero bytes.
        let mut answer = 4096u64.to_be_bytes().to_vec();
        answer.extend_from_slice(&(c::FLAG_HAS_FLAGS).to_be_bytes());
        assert!(hs.receive(&answer).unwrap().is_none());
        assert_eq!(hs.wants(), 124);
        let t = hs.receive(&[0; 124]).unwrap().unwrap();
        assert_eq!(t.info().size, 4096);
        assert!(!t.info().can_flush());
    }

    #[test]
    fn an_unfixed_newstyle_server_gets_export_name_at_once() {
        let mut hs = Handshake::new("y").unwrap();
        hs.receive(&greeting(c::FLAG_NO_ZEROES)).unwrap();
        let out = hs.take_output();
        assert_eq!(&out[..4], &c::FLAG_C_NO_ZEROES.to_be_bytes());
        assert_eq!(&out[4..16], b"IHAVEOPT\0\0\0\x01");
        let mut answer = 8192u64.to_be_bytes().to_vec();
        answer.extend_from_slice(&(c::FLAG_HAS_FLAGS | c::FLAG_READ_ONLY).to_be_bytes());
        let t = hs.receive(&answer).unwrap().unwrap();
        assert!(t.info().read_only());
    }

    #[test]
    fn refusals_and_bad_handshakes_are_errors() {
        let mut hs = Handshake::new("nope").unwrap();
        hs.receive(&greeting(3)).unwrap();
        let err = hs.receive(&option_reply(c::OPT_GO, c::REP_ERR_UNKNOWN, b"no export")).unwrap_err();
        assert_eq!(err.to_string(), "the server refused export \"nope\": no such export (no export)");
        assert_eq!(hs.receive(&[]).unwrap_err(), ProtocolError::Broken);

        let mut hs = Handshake::new("").unwrap();
        assert_eq!(hs.receive(b"HTTP/1.1").unwrap_err(), ProtocolError::NotNbd(0x4854_5450_2f31_2e31));
        let mut hs = Handshake::new("").unwrap();
        let mut old = b"NBDMAGIC".to_vec();
        old.extend_from_slice(&c::OLDSTYLE_MAGIC.to_be_bytes());
        assert_eq!(hs.receive(&old).unwrap_err(), ProtocolError::Oldstyle);

        let go = |answers: Vec<u8>| {
            let mut hs = Handshake::new("d").unwrap();
            hs.receive(&greeting(3)).unwrap();
            hs.receive(&answers).map(|t| t.is_some())
        };
        assert_eq!(go(option_reply(c::OPT_GO, c::REP_ACK, &[])), Err(ProtocolError::NoExportInfo));
        assert_eq!(
            go(option_reply(c::OPT_EXPORT_NAME, c::REP_ACK, &[])),
            Err(ProtocolError::WrongOption { expected: 7, got: 1 })
        );
        assert!(matches!(go(option_reply(c::OPT_GO, 99, &[])), Err(ProtocolError::UnexpectedReply(99))));
        assert!(matches!(
            go(option_reply(c::OPT_GO, c::REP_INFO, &[0, 0, 1])),
            Err(ProtocolError::BadOptionReply { .. })
        ));
        let mut huge = c::REPLY_MAGIC.to_be_bytes().to_vec();
        huge.extend_from_slice(&[0, 0, 0, 7, 0, 0, 0, 3, 0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(go(huge), Err(ProtocolError::BadOptionReply { .. })));
        // 4 KiB blocks cannot hold a 512-byte sector write.
        let mut answers = info_export(1 << 20, RW);
        answers.extend(info_block(4096, 4096, 1 << 20));
        answers.extend(option_reply(c::OPT_GO, c::REP_ACK, &[]));
        assert!(matches!(go(answers), Err(ProtocolError::BlockSize { minimum: 4096, .. })));
        // Bytes after the ACK, before any request.
        let mut answers = info_export(1 << 20, RW);
        answers.extend(option_reply(c::OPT_GO, c::REP_ACK, &[]));
        answers.push(0);
        assert_eq!(go(answers), Err(ProtocolError::Unexpected(1)));
        assert!(matches!(Handshake::new(&"n".repeat(4097)), Err(RequestError::NameTooLong(4097))));
    }

    #[test]
    fn requests_are_encoded_and_replies_matched_by_cookie() {
        let mut t = connected();
        let (read, header) = t.request(Request::read(4096, 1024)).unwrap();
        let mut want = c::REQUEST_MAGIC.to_be_bytes().to_vec();
        want.extend_from_slice(&[0, 0, 0, 0]);
        want.extend_from_slice(&read.to_be_bytes());
        want.extend_from_slice(&4096u64.to_be_bytes());
        want.extend_from_slice(&1024u32.to_be_bytes());
        assert_eq!(header.to_vec(), want);
        let (write, header) = t.request(Request { fua: true, ..Request::write(0, 512) }).unwrap();
        assert_eq!(&header[4..8], &[0, 1, 0, 1], "FUA, NBD_CMD_WRITE");
        let (flush, header) = t.request(Request::flush()).unwrap();
        assert_eq!(&header[6..8], &[0, 3]);
        assert_eq!(t.in_flight(), 3);
        assert!(read != write && write != flush);

        // Answered out of order; the read's data split across calls.
        let mut bytes = simple_reply(0, flush);
        bytes.extend(simple_reply(5, write));
        bytes.extend(simple_reply(0, read));
        bytes.extend(vec![9; 1000]);
        t.receive(&bytes).unwrap();
        assert_eq!(
            t.poll_reply(),
            Some(Reply { cookie: flush, kind: RequestKind::Flush, result: Ok(vec![]) })
        );
        assert_eq!(t.poll_reply(), Some(Reply { cookie: write, kind: RequestKind::Write, result: Err(5) }));
        assert_eq!(t.poll_reply(), None);
        t.receive(&[9; 24]).unwrap();
        assert_eq!(t.poll_reply().unwrap().result, Ok(vec![9; 1024]));
        assert_eq!(t.in_flight(), 0);

        // A read that fails has no data after its reply.
        let (read, _) = t.request(Request::read(0, 512)).unwrap();
        let (flush, _) = t.request(Request::flush()).unwrap();
        let mut bytes = simple_reply(5, read);
        bytes.extend(simple_reply(0, flush));
        t.receive(&bytes).unwrap();
        assert_eq!(t.poll_reply().unwrap().result, Err(5));
        assert_eq!(t.poll_reply().unwrap().cookie, flush);

        let (_, header) = t.request(Request::disconnect()).unwrap();
        assert_eq!(&header[6..8], &[0, 2]);
        assert_eq!(t.request(Request::flush()), Err(RequestError::Closing));
    }

    #[test]
    fn requests_are_checked_against_the_export() {
        let mut t = connected();
        assert!(matches!(
            t.request(Request::read((1 << 20) - 512, 1024)),
            Err(RequestError::OutOfRange { .. })
        ));
        assert!(matches!(t.request(Request::read(u64::MAX, 512)), Err(RequestError::OutOfRange { .. })));
        assert!(matches!(t.request(Request::read(0, 0)), Err(RequestError::Length { .. })));
        assert!(matches!(t.request(Request::write(0, (1 << 20) + 512)), Err(RequestError::Length { .. })));
        assert_eq!(
            t.request(Request { fua: true, ..Request::read(0, 512) }),
            Err(RequestError::Unsupported("NBD_CMD_FLAG_FUA"))
        );
        assert_eq!(t.in_flight(), 0, "nothing was registered");

        let mut hs = Handshake::new("").unwrap();
        hs.receive(&greeting(3)).unwrap();
        let mut answers = info_export(1 << 20, c::FLAG_HAS_FLAGS | c::FLAG_READ_ONLY);
        answers.extend(info_block(512, 512, 4096));
        answers.extend(option_reply(c::OPT_GO, c::REP_ACK, &[]));
        let mut ro = hs.receive(&answers).unwrap().unwrap();
        assert_eq!(ro.request(Request::write(0, 512)), Err(RequestError::ReadOnly));
        assert_eq!(ro.request(Request::flush()), Err(RequestError::Unsupported("NBD_CMD_FLUSH")));
        assert!(matches!(ro.request(Request::read(256, 512)), Err(RequestError::Misaligned { .. })));
        assert!(matches!(ro.request(Request::read(0, 8192)), Err(RequestError::Length { max: 4096, .. })));
        assert!(ro.request(Request::read(512, 4096)).is_ok());
    }

    #[test]
    fn bad_replies_break_the_connection() {
        for (bytes, want) in [
            (simple_reply(0, 999), ProtocolError::UnknownCookie(999)),
            (c::STRUCTURED_REPLY_MAGIC.to_be_bytes().to_vec(), ProtocolError::StructuredReply),
            (vec![1, 2, 3, 4], ProtocolError::BadMagic { what: "reply", got: 0x0102_0304 }),
        ] {
            let mut t = connected();
            let (cookie, _) = t.request(Request::read(0, 512)).unwrap();
            assert_eq!(t.receive(&bytes), Err(want));
            assert_eq!(t.receive(&simple_reply(0, cookie)), Err(ProtocolError::Broken));
            assert_eq!(t.request(Request::flush()), Err(RequestError::Broken));
        }
        // A reply comes only once: the second for the same cookie is unknown.
        let mut t = connected();
        let (cookie, _) = t.request(Request::flush()).unwrap();
        t.receive(&simple_reply(0, cookie)).unwrap();
        assert_eq!(t.receive(&simple_reply(0, cookie)), Err(ProtocolError::UnknownCookie(cookie)));
    }

    fn hex(text: &str) -> Vec<u8> {
        let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
        digits.chunks(2).map(|p| u8::from_str_radix(core::str::from_utf8(p).unwrap(), 16).unwrap()).collect()
    }

    /// What nbdkit 1.32 (`nbdkit -U SOCK --filter=blocksize memory 1M`) sent a client that
    /// asked for export "disk" with NBD_OPT_GO and NBD_INFO_BLOCK_SIZE: the greeting, then
    /// INFO_EXPORT (1 MiB; flush, FUA, trim, write zeroes, multi-conn, cache, fast zero),
    /// INFO_BLOCK_SIZE (1, 4096, no maximum) and ACK.
    const NBDKIT_HANDSHAKE: &str = "
        4e42444d41474943 49484156454f5054 0003
        0003e889045565a9 00000007 00000003 0000000c 0000 0000000000100000 0d6d
        0003e889045565a9 00000007 00000003 0000000e 0003 00000001 00001000 ffffffff
        0003e889045565a9 00000007 00000001 00000000";

    #[test]
    fn golden_nbdkit_session() {
        let mut hs = Handshake::new("disk").unwrap();
        let bytes = hex(NBDKIT_HANDSHAKE);
        assert!(hs.receive(&bytes[..18]).unwrap().is_none());
        // The client's answer, as sent to nbdkit when these bytes were taken.
        assert_eq!(
            hs.take_output(),
            hex("00000003 49484156454f5054 00000007 0000000c 00000004 6469736b 0001 0003")
        );
        let mut t = hs.receive(&bytes[18..]).unwrap().expect("connected");
        let info = *t.info();
        assert_eq!((info.size, info.flags), (1 << 20, 0x0d6d));
        assert_eq!(info.block_size, Some(BlockSize { minimum: 1, preferred: 4096, maximum: u32::MAX }));
        assert_eq!(info.max_payload(), 32 << 20, "no maximum: 32 MiB, as the protocol suggests");
        assert!(info.can_flush() && info.can_fua() && !info.read_only());
        // Cookies 1 to 4 as sent then; nbdkit answered the write first.
        let cookies: Vec<u64> =
            [Request::read(0, 512), Request::read(4096, 1024), Request::write(512, 512), Request::flush()]
                .into_iter()
                .map(|r| t.request(r).unwrap().0)
                .collect();
        assert_eq!(cookies, [1, 2, 3, 4]);
        let mut replies = hex("67446698 00000000 0000000000000003 67446698 00000000 0000000000000001");
        replies.extend([0; 512]);
        replies.extend(hex("67446698 00000000 0000000000000002"));
        replies.extend([0; 1024]);
        replies.extend(hex("67446698 00000000 0000000000000004"));
        t.receive(&replies).unwrap();
        let order: Vec<(u64, usize)> =
            core::iter::from_fn(|| t.poll_reply()).map(|r| (r.cookie, r.result.unwrap().len())).collect();
        assert_eq!(order, [(3, 0), (1, 512), (2, 1024), (4, 0)]);
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic_the_handshake(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..8), fixed in any::<bool>()) {
            let mut hs = Handshake::new("disk").unwrap();
            let mut first = true;
            for chunk in chunks {
                let mut bytes = chunk;
                if first && fixed {
                    let mut g = greeting(3);
                    g.extend(bytes);
                    bytes = g;
                }
                first = false;
                let _ = hs.wants();
                match hs.receive(&bytes) {
                    Ok(Some(mut t)) => {
                        let _ = t.request(Request::read(0, 512));
                        break;
                    }
                    Ok(None) => {}
                    Err(_) => break,
                }
                let _ = hs.take_output();
            }
        }

        #[test]
        fn random_replies_never_panic_and_never_match_a_wrong_cookie(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..600), 0..8), lens in proptest::collection::vec(1u32..4, 0..6)) {
            let mut t = connected();
            let mut cookies = Vec::new();
            for (i, n) in lens.iter().enumerate() {
                let request = if i % 3 == 2 { Request::flush() } else { Request::read(0, n * 512) };
                cookies.push(t.request(request).unwrap().0);
            }
            for chunk in chunks {
                // Half the time, a well-formed header for a cookie in flight, to get further.
                let mut bytes = chunk;
                if bytes.first().is_some_and(|b| b % 2 == 0) && !cookies.is_empty() {
                    let mut r = simple_reply(0, cookies[bytes[0] as usize % cookies.len()]);
                    r.extend(bytes);
                    bytes = r;
                }
                if t.receive(&bytes).is_err() {
                    break;
                }
                while let Some(reply) = t.poll_reply() {
                    prop_assert!(cookies.contains(&reply.cookie));
                }
            }
        }
    }
}
