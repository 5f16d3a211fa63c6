//! The server side of NBD as a state machine.
//!
//! [`Server`] speaks the fixed newstyle handshake and the transmission phase for one export.
//! Bytes read from the client go in with [`Server::receive`]; what the client asked for comes
//! out of [`Server::poll_event`]; bytes to send to the client collect in an output buffer
//! ([`Server::take_output`]). The caller does the I/O and answers each request with one of the
//! reply calls ([`Server::reply_read`], [`Server::reply_ok`], [`Server::reply_error`], ...),
//! or, from another thread, with the [`Replies`] encoder the server hands out once the
//! handshake is done.
//!
//! Everything a client sends is validated here: magic numbers, flags, lengths, bounds, the
//! export's read-only flag. Requests that cannot be served get their error reply at once and
//! never become events, so the caller only sees operations that fit the export. Memory is
//! bounded: option data beyond [`MAX_OPTION_LEN`] and write payloads of refused requests are
//! skipped, never buffered; an accepted write buffers at most [`Config::max_payload`] bytes.
//!
//! ```
//! use aoe_nbd::server::{Config, Event, Export, Server};
//! use aoe_nbd::wire::{self, ClientFlags, Command, CommandFlags, OptionType};
//! use zerocopy::IntoBytes;
//!
//! let mut server = Server::new(Config::new(Export::new("e1.0", 1 << 20)));
//! let greeting = server.take_output();
//! assert_eq!(&greeting[..16], b"NBDMAGICIHAVEOPT");
//!
//! // The client: flags, then NBD_OPT_EXPORT_NAME "e1.0".
//! let mut c = Vec::new();
//! c.extend_from_slice(wire::ClientFlagsField::new(ClientFlags::all()).as_bytes());
//! c.extend_from_slice(wire::OptionHeader::new(OptionType::ExportName, 4).as_bytes());
//! c.extend_from_slice(b"e1.0");
//! c.extend_from_slice(wire::RequestHeader::new(Command::Read, CommandFlags::empty(), 7, 512, 4096).as_bytes());
//! server.receive(&c)?;
//!
//! assert!(matches!(server.poll_event(), Some(Event::Ready { structured: false })));
//! assert_eq!(server.poll_event(), Some(Event::Read { handle: 7, offset: 512, len: 4096 }));
//! server.reply_read(7, 512, &[0u8; 4096]);
//! # Ok::<(), aoe_nbd::server::ServerError>(())
//! ```

use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec::Vec;

use zerocopy::IntoBytes;

use crate::wire::{
    self, ChunkType, ClientFlags, ClientFlagsField, Command, CommandFlags, ErrorChunk, ExportNameReply,
    Greeting, HandshakeFlags, InfoBlockSize, InfoExport, InfoRequest, InfoType, OptionHeader,
    OptionReplyHeader, OptionType, ReplyFlags, ReplyType, RequestHeader, SimpleReplyHeader,
    StructuredReplyHeader, TransmissionFlags,
};

/// Option data longer than this is skipped and answered with `NBD_REP_ERR_TOO_BIG`.
pub const MAX_OPTION_LEN: u32 = 16 * 1024;
/// The largest payload the protocol's conventions allow (and the default maximum).
pub const MAX_PAYLOAD: u32 = 32 * 1024 * 1024;

/// The one export a [`Server`] offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Export {
    /// Its name; a client asking for the empty name gets it too.
    pub name: String,
    /// A human-readable description (sent when asked for, if not empty).
    pub description: String,
    /// Size in bytes.
    pub size: u64,
    /// Refuse writes ([`wire::EPERM`]) and say so in the transmission flags.
    pub read_only: bool,
    /// Advertise `NBD_FLAG_CAN_MULTI_CONN`: true when every connection reaches the same
    /// storage and a flush on one covers writes completed on all.
    pub multi_conn: bool,
}

impl Export {
    /// A writable export, no description, no multi-connection promise.
    pub fn new(name: impl Into<String>, size: u64) -> Self {
        Export { name: name.into(), description: String::new(), size, read_only: false, multi_conn: false }
    }

    /// The transmission flags sent for this export.
    pub fn transmission_flags(&self) -> TransmissionFlags {
        let mut f =
            TransmissionFlags::HAS_FLAGS | TransmissionFlags::SEND_FLUSH | TransmissionFlags::SEND_FUA;
        if self.read_only {
            f |= TransmissionFlags::READ_ONLY;
        } else {
            f |= TransmissionFlags::SEND_WRITE_ZEROES | TransmissionFlags::SEND_FAST_ZERO;
        }
        if self.multi_conn {
            f |= TransmissionFlags::CAN_MULTI_CONN;
        }
        f
    }

    fn matches(&self, name: &[u8]) -> bool {
        name.is_empty() || name == self.name.as_bytes()
    }
}

/// What a [`Server`] offers and accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The export.
    pub export: Export,
    /// Minimum block size advertised (`NBD_INFO_BLOCK_SIZE`); 1: any alignment.
    pub min_block: u32,
    /// Preferred block size advertised.
    pub preferred_block: u32,
    /// Largest READ or WRITE accepted (and advertised); longer ones get [`wire::EINVAL`].
    /// Clamped to [`MAX_PAYLOAD`].
    pub max_payload: u32,
}

impl Config {
    /// Byte granularity, 4 KiB preferred, 32 MiB maximum.
    pub fn new(export: Export) -> Self {
        Config { export, min_block: 1, preferred_block: 4096, max_payload: MAX_PAYLOAD }
    }
}

/// What the client asked for. Every request event must be answered with exactly one reply
/// call carrying its handle (except [`Event::Disconnect`], which takes none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The handshake is over and transmission begins; `structured` says whether READ
    /// replies are structured (the [`Replies`] encoder knows).
    Ready {
        /// Structured replies were negotiated.
        structured: bool,
    },
    /// Read `len` bytes at `offset` (in bounds, 1..=`max_payload` bytes); answer with
    /// [`Server::reply_read`] or [`Server::reply_read_error`].
    Read {
        /// Handle to answer.
        handle: u64,
        /// Byte offset.
        offset: u64,
        /// Byte length.
        len: u32,
    },
    /// Write `data` at `offset` (in bounds, export writable); with `fua`, the data must be
    /// on stable storage before the reply.
    Write {
        /// Handle to answer.
        handle: u64,
        /// Byte offset.
        offset: u64,
        /// The bytes (1..=`max_payload`).
        data: Vec<u8>,
        /// Force unit access: flush before replying.
        fua: bool,
    },
    /// Write `len` zero bytes at `offset` (in bounds, export writable). The server may
    /// emulate it with writes: it never promised holes, and fast-zero requests were refused.
    WriteZeroes {
        /// Handle to answer.
        handle: u64,
        /// Byte offset.
        offset: u64,
        /// Byte length (not bounded by `max_payload`).
        len: u32,
        /// Force unit access.
        fua: bool,
    },
    /// Make every write already answered durable before replying.
    Flush {
        /// Handle to answer.
        handle: u64,
    },
    /// The client ended the session (`NBD_CMD_DISC` or `NBD_OPT_ABORT`): finish the
    /// requests in flight, send their replies and the output, then close.
    Disconnect,
}

/// A violation after which the connection must be dropped (the protocol's hard disconnect).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ServerError {
    /// A magic number was wrong: the peer does not speak NBD or lost framing.
    #[error(transparent)]
    Wire(#[from] wire::WireError),
    /// The client set flags this server does not know.
    #[error("unknown client flags 0x{0:08x}")]
    ClientFlags(u32),
    /// `NBD_OPT_EXPORT_NAME` named an export that does not exist; it has no error reply.
    #[error("the client asked for an export that does not exist")]
    UnknownExport,
    /// An earlier error already ended the session.
    #[error("the session already failed")]
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    ClientFlags,
    OptionHeader,
    OptionData { option: u32, len: usize },
    SkipOption { option: u32, remaining: u32 },
    Request,
    WriteData { handle: u64, offset: u64, len: usize, fua: bool },
    SkipPayload { handle: u64, remaining: u32, errno: u32 },
    Done,
    Failed,
}

/// The server side of one NBD connection. See the [module documentation](self).
#[derive(Debug)]
pub struct Server {
    config: Config,
    phase: Phase,
    /// The fixed-size piece being assembled (at most [`MAX_OPTION_LEN`] bytes).
    partial: Vec<u8>,
    /// The payload of the write being received.
    write: Vec<u8>,
    events: VecDeque<Event>,
    out: Vec<u8>,
    no_zeroes: bool,
    structured: bool,
}

impl Server {
    /// A server for `config`; the greeting is already in the output.
    pub fn new(mut config: Config) -> Self {
        config.max_payload = config.max_payload.clamp(1, MAX_PAYLOAD);
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(
            Greeting::new(HandshakeFlags::FIXED_NEWSTYLE | HandshakeFlags::NO_ZEROES).as_bytes(),
        );
        Server {
            config,
            phase: Phase::ClientFlags,
            partial: Vec::new(),
            write: Vec::new(),
            events: VecDeque::new(),
            out,
            no_zeroes: false,
            structured: false,
        }
    }

    /// The configuration (with `max_payload` clamped).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// True once the handshake is over (until the session ends).
    pub fn in_transmission(&self) -> bool {
        matches!(self.phase, Phase::Request | Phase::WriteData { .. } | Phase::SkipPayload { .. })
    }

    /// True after [`Event::Disconnect`] or an error: no more input is looked at.
    pub fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Done | Phase::Failed)
    }

    /// The reply encoder for the transmission phase, once the handshake is over.
    pub fn replies(&self) -> Option<Replies> {
        match self.phase {
            Phase::ClientFlags
            | Phase::OptionHeader
            | Phase::OptionData { .. }
            | Phase::SkipOption { .. } => None,
            _ => Some(Replies { structured: self.structured }),
        }
    }

    /// Takes the next event, oldest first.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Bytes waiting to be sent to the client.
    pub fn output(&self) -> &[u8] {
        &self.out
    }

    /// Takes the bytes waiting to be sent to the client.
    pub fn take_output(&mut self) -> Vec<u8> {
        core::mem::take(&mut self.out)
    }

    /// Feeds bytes received from the client. Complete messages become events and replies;
    /// a partial one is kept for the next call. Input after the session ended is ignored.
    /// An error means the connection must be dropped (after sending the output).
    pub fn receive(&mut self, mut input: &[u8]) -> Result<(), ServerError> {
        while !input.is_empty() {
            match self.phase {
                Phase::Done => return Ok(()),
                Phase::Failed => return Err(ServerError::Failed),
                _ => {}
            }
            if let Err(e) = self.step(&mut input) {
                self.phase = Phase::Failed;
                return Err(e);
            }
        }
        Ok(())
    }

    /// Consumes some of `input` in the current phase.
    fn step(&mut self, input: &mut &[u8]) -> Result<(), ServerError> {
        match self.phase {
            Phase::ClientFlags => {
                if let Some(piece) = self.fill(input, ClientFlagsField::LEN) {
                    let (f, _) = ClientFlagsField::parse(&piece)?;
                    let flags = f.flags();
                    if !ClientFlags::all().contains(flags) {
                        return Err(ServerError::ClientFlags(flags.bits()));
                    }
                    self.no_zeroes = flags.contains(ClientFlags::NO_ZEROES);
                    self.phase = Phase::OptionHeader;
                }
            }
            Phase::OptionHeader => {
                if let Some(piece) = self.fill(input, OptionHeader::LEN) {
                    let (h, _) = OptionHeader::parse(&piece)?;
                    let (option, len) = (u32::from(h.option()), h.length());
                    if len > MAX_OPTION_LEN {
                        if h.option() == OptionType::ExportName {
                            // No error reply exists for EXPORT_NAME, and no export has such a name.
                            return Err(ServerError::UnknownExport);
                        }
                        self.phase = Phase::SkipOption { option, remaining: len };
                    } else {
                        self.phase = Phase::OptionData { option, len: len as usize };
                        if len == 0 {
                            self.option(option, &[])?;
                        }
                    }
                }
            }
            Phase::OptionData { option, len } => {
                if let Some(piece) = self.fill(input, len) {
                    self.option(option, &piece)?;
                }
            }
            Phase::SkipOption { option, remaining } => {
                let remaining = skip(input, remaining);
                if remaining == 0 {
                    self.option_reply(option, ReplyType::ErrTooBig, b"option data too long");
                    self.phase = Phase::OptionHeader;
                } else {
                    self.phase = Phase::SkipOption { option, remaining };
                }
            }
            Phase::Request => {
                if self.partial.is_empty() && input.len() >= RequestHeader::LEN {
                    // The common case: a whole header in the input, read in place.
                    let (h, rest) = RequestHeader::parse(input)?;
                    let h = *h;
                    *input = rest;
                    self.request(&h);
                } else if let Some(piece) = self.fill(input, RequestHeader::LEN) {
                    let (h, _) = RequestHeader::parse(&piece)?;
                    self.request(h);
                }
            }
            Phase::WriteData { handle, offset, len, fua } => {
                let want = len - self.write.len();
                let (now, rest) = input.split_at(want.min(input.len()));
                self.write.extend_from_slice(now);
                *input = rest;
                if self.write.len() == len {
                    let data = core::mem::take(&mut self.write);
                    self.events.push_back(Event::Write { handle, offset, data, fua });
                    self.phase = Phase::Request;
                }
            }
            Phase::SkipPayload { handle, remaining, errno } => {
                let remaining = skip(input, remaining);
                if remaining == 0 {
                    self.reply_error(handle, errno);
                    self.phase = Phase::Request;
                } else {
                    self.phase = Phase::SkipPayload { handle, remaining, errno };
                }
            }
            Phase::Done | Phase::Failed => *input = &[],
        }
        Ok(())
    }

    /// Moves bytes from `input` into the partial buffer until it holds `need`; then returns
    /// the complete piece.
    fn fill(&mut self, input: &mut &[u8], need: usize) -> Option<Vec<u8>> {
        let want = need.saturating_sub(self.partial.len());
        let (now, rest) = input.split_at(want.min(input.len()));
        self.partial.extend_from_slice(now);
        *input = rest;
        (self.partial.len() >= need).then(|| core::mem::take(&mut self.partial))
    }

    // ----------------------------------------------------------------------------------
    // Handshake
    // ----------------------------------------------------------------------------------

    fn option(&mut self, option: u32, data: &[u8]) -> Result<(), ServerError> {
        self.phase = Phase::OptionHeader;
        match OptionType::from(option) {
            OptionType::ExportName => {
                if !self.config.export.matches(data) {
                    return Err(ServerError::UnknownExport);
                }
                let e = &self.config.export;
                self.out.extend_from_slice(ExportNameReply::new(e.size, e.transmission_flags()).as_bytes());
                if !self.no_zeroes {
                    self.out.extend_from_slice(&[0u8; wire::EXPORT_NAME_ZEROES]);
                }
                self.start_transmission();
            }
            OptionType::Abort => {
                self.option_reply(option, ReplyType::Ack, &[]);
                self.phase = Phase::Done;
                self.events.push_back(Event::Disconnect);
            }
            OptionType::List => {
                if !data.is_empty() {
                    self.option_reply(option, ReplyType::ErrInvalid, b"NBD_OPT_LIST takes no data");
                } else {
                    let name = self.config.export.name.clone();
                    let mut payload = Vec::with_capacity(4 + name.len());
                    payload.extend_from_slice(&(name.len() as u32).to_be_bytes());
                    payload.extend_from_slice(name.as_bytes());
                    self.option_reply(option, ReplyType::Server, &payload);
                    self.option_reply(option, ReplyType::Ack, &[]);
                }
            }
            OptionType::StructuredReply => {
                if !data.is_empty() {
                    self.option_reply(
                        option,
                        ReplyType::ErrInvalid,
                        b"NBD_OPT_STRUCTURED_REPLY takes no data",
                    );
                } else {
                    self.structured = true;
                    self.option_reply(option, ReplyType::Ack, &[]);
                }
            }
            OptionType::Info | OptionType::Go => self.info(option, data),
            _ => self.option_reply(option, ReplyType::ErrUnsup, b"option not supported"),
        }
        Ok(())
    }

    fn info(&mut self, option: u32, data: &[u8]) {
        let Some(req) = InfoRequest::parse(data) else {
            self.option_reply(option, ReplyType::ErrInvalid, b"malformed NBD_OPT_INFO/GO data");
            return;
        };
        if !self.config.export.matches(req.name) {
            self.option_reply(option, ReplyType::ErrUnknown, b"no such export");
            return;
        }
        let e = self.config.export.clone();
        self.option_reply(
            option,
            ReplyType::Info,
            InfoExport::new(e.size, e.transmission_flags()).as_bytes(),
        );
        let (mut name, mut description, mut block) = (false, false, false);
        for info in req.infos() {
            match info {
                InfoType::Name => name = true,
                InfoType::Description => description = true,
                InfoType::BlockSize => block = true,
                InfoType::Export | InfoType::Unknown(_) => {}
            }
        }
        if name {
            self.info_string(option, wire::INFO_NAME, e.name.as_bytes());
        }
        if description && !e.description.is_empty() {
            self.info_string(option, wire::INFO_DESCRIPTION, e.description.as_bytes());
        }
        if block {
            let c = &self.config;
            let sizes = InfoBlockSize::new(c.min_block, c.preferred_block, c.max_payload);
            self.option_reply(option, ReplyType::Info, sizes.as_bytes());
        }
        self.option_reply(option, ReplyType::Ack, &[]);
        if OptionType::from(option) == OptionType::Go {
            self.start_transmission();
        }
    }

    fn info_string(&mut self, option: u32, info: u16, s: &[u8]) {
        let s = s.get(..s.len().min(wire::MAX_STRING_LEN)).unwrap_or_default();
        let mut payload = Vec::with_capacity(2 + s.len());
        payload.extend_from_slice(&info.to_be_bytes());
        payload.extend_from_slice(s);
        self.option_reply(option, ReplyType::Info, &payload);
    }

    fn option_reply(&mut self, option: u32, reply: ReplyType, data: &[u8]) {
        self.out.extend_from_slice(OptionReplyHeader::new(option, reply, data.len() as u32).as_bytes());
        self.out.extend_from_slice(data);
    }

    fn start_transmission(&mut self) {
        self.phase = Phase::Request;
        self.events.push_back(Event::Ready { structured: self.structured });
    }

    // ----------------------------------------------------------------------------------
    // Transmission
    // ----------------------------------------------------------------------------------

    fn request(&mut self, h: &RequestHeader) {
        let (handle, offset, len, flags) = (h.handle(), h.offset(), h.length(), h.flags());
        let e = &self.config.export;
        let in_bounds = offset.checked_add(u64::from(len)).is_some_and(|end| end <= e.size);
        let fua = flags.contains(CommandFlags::FUA);
        let max = self.config.max_payload;
        match h.command() {
            Command::Read => {
                let errno = if !(CommandFlags::FUA | CommandFlags::DF).contains(flags)
                    || len == 0
                    || len > max
                    || !in_bounds
                {
                    wire::EINVAL
                } else {
                    0
                };
                if errno == 0 {
                    self.events.push_back(Event::Read { handle, offset, len });
                } else {
                    self.reply_read_error(handle, errno);
                }
            }
            Command::Write => {
                let errno = if !CommandFlags::FUA.contains(flags) || len == 0 || len > max {
                    wire::EINVAL
                } else if e.read_only {
                    wire::EPERM
                } else if !in_bounds {
                    wire::ENOSPC
                } else {
                    0
                };
                if errno != 0 {
                    self.phase = Phase::SkipPayload { handle, remaining: len, errno };
                } else {
                    self.write = Vec::with_capacity(len as usize);
                    self.phase = Phase::WriteData { handle, offset, len: len as usize, fua };
                }
            }
            Command::WriteZeroes => {
                let allowed = CommandFlags::FUA | CommandFlags::NO_HOLE | CommandFlags::FAST_ZERO;
                let errno = if !allowed.contains(flags) || len == 0 {
                    wire::EINVAL
                } else if e.read_only {
                    wire::EPERM
                } else if flags.contains(CommandFlags::FAST_ZERO) {
                    // Zeroes are written as data: never faster than writing.
                    wire::ENOTSUP
                } else if !in_bounds {
                    wire::ENOSPC
                } else {
                    0
                };
                if errno == 0 {
                    self.events.push_back(Event::WriteZeroes { handle, offset, len, fua });
                } else {
                    self.reply_error(handle, errno);
                }
            }
            Command::Flush => {
                if !CommandFlags::FUA.contains(flags) || offset != 0 || len != 0 {
                    self.reply_error(handle, wire::EINVAL);
                } else {
                    self.events.push_back(Event::Flush { handle });
                }
            }
            Command::Disc => {
                self.phase = Phase::Done;
                self.events.push_back(Event::Disconnect);
            }
            // TRIM is not advertised; nor are CACHE, BLOCK_STATUS, RESIZE.
            Command::Trim | Command::Cache | Command::BlockStatus | Command::Resize | Command::Unknown(_) => {
                self.reply_error(handle, wire::EINVAL)
            }
        }
    }

    /// Answers a READ with its data (exactly the `len` bytes asked for).
    pub fn reply_read(&mut self, handle: u64, offset: u64, data: &[u8]) {
        self.encoder().read(&mut self.out, handle, offset, data);
    }

    /// Answers a READ that failed.
    pub fn reply_read_error(&mut self, handle: u64, errno: u32) {
        self.encoder().read_error(&mut self.out, handle, errno);
    }

    /// Answers a WRITE, WRITE_ZEROES or FLUSH that succeeded.
    pub fn reply_ok(&mut self, handle: u64) {
        self.encoder().ok(&mut self.out, handle);
    }

    /// Answers a WRITE, WRITE_ZEROES or FLUSH that failed.
    pub fn reply_error(&mut self, handle: u64, errno: u32) {
        self.encoder().error(&mut self.out, handle, errno);
    }

    fn encoder(&self) -> Replies {
        Replies { structured: self.structured }
    }
}

/// Skips up to `remaining` bytes of `input`; returns how many are still to skip.
fn skip(input: &mut &[u8], remaining: u32) -> u32 {
    let n = (remaining as usize).min(input.len());
    *input = input.get(n..).unwrap_or_default();
    remaining - n as u32
}

/// The bytes that precede a READ reply's data: up to 28 of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadHeader {
    bytes: [u8; StructuredReplyHeader::LEN + wire::OFFSET_DATA_PREFIX],
    len: usize,
}

impl ReadHeader {
    /// The header bytes, to send just before the data.
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or_default()
    }
}

/// Encodes transmission replies, simple or structured as negotiated. It is `Copy` and
/// holds no state, so the thread that completes requests can encode their replies while
/// another feeds the [`Server`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replies {
    structured: bool,
}

impl Replies {
    /// An encoder; `structured` as negotiated ([`Event::Ready`]).
    pub fn new(structured: bool) -> Self {
        Replies { structured }
    }

    /// True if READ replies are structured.
    pub fn structured(&self) -> bool {
        self.structured
    }

    /// The header of a successful READ of `len` bytes at `offset`; send the data after it.
    /// Structured: one `OFFSET_DATA` chunk with the DONE flag.
    pub fn read_header(&self, handle: u64, offset: u64, len: u32) -> ReadHeader {
        let mut bytes = [0u8; 28];
        let len = if self.structured {
            let h = StructuredReplyHeader::new(
                ReplyFlags::DONE,
                ChunkType::OffsetData,
                handle,
                len.saturating_add(wire::OFFSET_DATA_PREFIX as u32),
            );
            let (head, tail) = bytes.split_at_mut(StructuredReplyHeader::LEN);
            head.copy_from_slice(h.as_bytes());
            tail.copy_from_slice(&offset.to_be_bytes());
            28
        } else {
            let (head, _) = bytes.split_at_mut(SimpleReplyHeader::LEN);
            head.copy_from_slice(SimpleReplyHeader::new(handle, 0).as_bytes());
            SimpleReplyHeader::LEN
        };
        ReadHeader { bytes, len }
    }

    /// Appends a successful READ reply with its data.
    pub fn read(&self, out: &mut Vec<u8>, handle: u64, offset: u64, data: &[u8]) {
        let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(self.read_header(handle, offset, len).as_bytes());
        out.extend_from_slice(data);
    }

    /// Appends a failed READ reply (an `ERROR` chunk when structured). `errno` 0 becomes
    /// [`wire::EIO`]: an error reply never says success.
    pub fn read_error(&self, out: &mut Vec<u8>, handle: u64, errno: u32) {
        let errno = if errno == 0 { wire::EIO } else { errno };
        if self.structured {
            let h = StructuredReplyHeader::new(
                ReplyFlags::DONE,
                ChunkType::Error,
                handle,
                ErrorChunk::LEN as u32,
            );
            out.extend_from_slice(h.as_bytes());
            out.extend_from_slice(ErrorChunk::new(errno, 0).as_bytes());
        } else {
            out.extend_from_slice(SimpleReplyHeader::new(handle, errno).as_bytes());
        }
    }

    /// Appends a success reply without data (WRITE, WRITE_ZEROES, FLUSH).
    pub fn ok(&self, out: &mut Vec<u8>, handle: u64) {
        out.extend_from_slice(SimpleReplyHeader::new(handle, 0).as_bytes());
    }

    /// Appends an error reply without data (WRITE, WRITE_ZEROES, FLUSH); `errno` 0 becomes
    /// [`wire::EIO`].
    pub fn error(&self, out: &mut Vec<u8>, handle: u64, errno: u32) {
        let errno = if errno == 0 { wire::EIO } else { errno };
        out.extend_from_slice(SimpleReplyHeader::new(handle, errno).as_bytes());
    }
}

#[cfg(test)]
mod tests;
