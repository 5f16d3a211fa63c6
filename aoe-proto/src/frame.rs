//! A whole AoE Ethernet frame: parse once, dispatch to the typed views; emit from plain values.

use zerocopy::little_endian::U64 as LeU64;
#[cfg(test)]
use zerocopy::network_endian::U16;
use zerocopy::{FromBytes, IntoBytes, KnownLayout, Unaligned};

use crate::ata::{self, AtaHeader, AtaRepr};
use crate::config::{self, ConfigHeader, ConfigRepr, MAX_STRING_LEN};
use crate::ethernet::{EthernetHeader, MacAddr, ETHERTYPE_AOE};
use crate::header::{AoeHeader, Command, Flags, HeaderRepr, VERSION};
use crate::mask::{self, Directive, MaskHeader, MaskRepr};
use crate::reserve::{self, ReserveHeader, ReserveRepr};
use crate::sizing::{padded_len, PAYLOAD_OFFSET};
use crate::{EmitError, ParseError};

/// A parsed AoE frame: zero-copy views into the buffer it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The Ethernet header.
    pub ethernet: &'a EthernetHeader,
    /// The AoE common header.
    pub header: &'a AoeHeader,
    /// The command-specific part.
    pub body: Body<'a>,
}

/// The command-specific part of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body<'a> {
    /// Command 0: ATA header and data (see [`crate::ata`] for how much data is taken).
    Ata {
        /// The ATA header.
        header: &'a AtaHeader,
        /// Sector data.
        data: &'a [u8],
    },
    /// Command 1: query config.
    Config {
        /// The config header.
        header: &'a ConfigHeader,
        /// The config string (empty for a read request, whatever it carried).
        string: &'a [u8],
    },
    /// Command 2: MAC mask list.
    Mask {
        /// The mask header.
        header: &'a MaskHeader,
        /// The directives.
        directives: &'a [Directive],
    },
    /// Command 3: reserve/release.
    Reserve {
        /// The reserve header.
        header: &'a ReserveHeader,
        /// The MAC list.
        macs: &'a [MacAddr],
    },
    /// A vendor-specific or unknown command, or an error response whose body does not
    /// parse: the bytes after the common header (Ethernet padding included).
    Other {
        /// The command code.
        command: u8,
        /// Everything after the common header.
        payload: &'a [u8],
    },
}

/// Checks the Ethernet and common headers only: length and EtherType, not the version.
///
/// This is the first step a target takes, so that it can answer a frame of another
/// version with error 5 instead of dropping it.
#[inline]
pub fn parse_headers(buf: &[u8]) -> Result<(&EthernetHeader, &AoeHeader, &[u8]), ParseError> {
    let (ethernet, rest) = crate::split_header::<EthernetHeader>(buf, "Ethernet header")?;
    if ethernet.ethertype.get() != ETHERTYPE_AOE {
        return Err(ParseError::EtherType { got: ethernet.ethertype.get() });
    }
    let (header, payload) = crate::split_header::<AoeHeader>(rest, "AoE header")?;
    Ok((ethernet, header, payload))
}

impl<'a> Frame<'a> {
    /// Parses and validates a whole Ethernet frame.
    ///
    /// ```
    /// use aoe_proto::{Body, Frame};
    /// // aoeping's broadcast query config (CCmd read) to shelf 1, slot 0
    /// let mut buf = [0u8; 32];
    /// buf[..6].fill(0xff);
    /// buf[12..16].copy_from_slice(&[0x88, 0xa2, 0x10, 0x00]);
    /// buf[16..20].copy_from_slice(&[0x00, 0x01, 0x00, 0x01]);
    /// let frame = Frame::parse(&buf).unwrap();
    /// assert_eq!((frame.header.shelf(), frame.header.slot()), (1, 0));
    /// assert!(matches!(frame.body, Body::Config { .. }));
    /// ```
    #[inline]
    pub fn parse(buf: &'a [u8]) -> Result<Self, ParseError> {
        let (ethernet, header, payload) = parse_headers(buf)?;
        if header.version() != VERSION {
            return Err(ParseError::Version { got: header.version() });
        }
        let body = Body::parse(header, payload)?;
        Ok(Frame { ethernet, header, body })
    }

    /// The same frame as plain values.
    pub fn repr(&self) -> FrameRepr<'a> {
        FrameRepr {
            dst: self.ethernet.dst,
            src: self.ethernet.src,
            header: HeaderRepr::parse(self.header),
            body: self.body.repr(),
        }
    }
}

impl<'a> Body<'a> {
    /// Parses the payload after a common header.
    #[inline]
    pub fn parse(header: &AoeHeader, payload: &'a [u8]) -> Result<Self, ParseError> {
        let is_response = header.is_response();
        let parsed = match header.command() {
            Command::Ata => ata::split(payload, is_response).map(|(header, data)| Body::Ata { header, data }),
            Command::QueryConfig => {
                config::split(payload, is_response).map(|(header, string)| Body::Config { header, string })
            }
            Command::MacMask => {
                mask::split(payload).map(|(header, directives)| Body::Mask { header, directives })
            }
            Command::Reserve => reserve::split(payload).map(|(header, macs)| Body::Reserve { header, macs }),
            Command::Vendor(command) | Command::Unknown(command) => Ok(Body::Other { command, payload }),
        };
        match parsed {
            // An error answer need not carry a well-formed body.
            Err(_) if header.flags().contains(Flags::ERROR | Flags::RESPONSE) => {
                Ok(Body::Other { command: header.command, payload })
            }
            other => other,
        }
    }

    /// The same body as plain values.
    pub fn repr(&self) -> BodyRepr<'a> {
        match *self {
            Body::Ata { header, data } => BodyRepr::Ata { header: AtaRepr::parse(header), data },
            Body::Config { header, string } => BodyRepr::Config(ConfigRepr {
                buffer_count: header.buffer_count.get(),
                firmware: header.firmware.get(),
                sector_count: header.sector_count,
                aoe_version: header.aoe_version(),
                command: header.command(),
                string,
            }),
            Body::Mask { header, directives } => {
                BodyRepr::Mask(MaskRepr { command: header.command(), error: header.error(), directives })
            }
            Body::Reserve { header, macs } => {
                BodyRepr::Reserve(ReserveRepr { command: header.command(), macs })
            }
            Body::Other { command, payload } => BodyRepr::Raw { command, payload },
        }
    }
}

/// A whole frame as plain values, ready to emit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameRepr<'a> {
    /// Destination MAC.
    pub dst: MacAddr,
    /// Source MAC.
    pub src: MacAddr,
    /// The common header.
    pub header: HeaderRepr,
    /// The command-specific part; it determines the command code.
    pub body: BodyRepr<'a>,
}

/// The command-specific part as plain values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyRepr<'a> {
    /// Command 0.
    Ata {
        /// The ATA header.
        header: AtaRepr,
        /// Sector data written after it (empty for requests without data and for answers
        /// whose data the caller writes in place after [`FrameRepr::emit`]).
        data: &'a [u8],
    },
    /// Command 1.
    Config(ConfigRepr<'a>),
    /// Command 2.
    Mask(MaskRepr<'a>),
    /// Command 3.
    Reserve(ReserveRepr<'a>),
    /// Any command with an opaque payload.
    Raw {
        /// The command code.
        command: u8,
        /// The bytes after the common header.
        payload: &'a [u8],
    },
}

impl BodyRepr<'_> {
    /// The command code this body is sent with.
    pub fn command(&self) -> Command {
        match self {
            BodyRepr::Ata { .. } => Command::Ata,
            BodyRepr::Config(_) => Command::QueryConfig,
            BodyRepr::Mask(_) => Command::MacMask,
            BodyRepr::Reserve(_) => Command::Reserve,
            BodyRepr::Raw { command, .. } => Command::from(*command),
        }
    }

    /// Bytes the body takes after the common header.
    pub fn len(&self) -> usize {
        match self {
            BodyRepr::Ata { data, .. } => ata::HEADER_LEN + data.len(),
            BodyRepr::Config(c) => config::HEADER_LEN + c.string.len(),
            BodyRepr::Mask(m) => mask::HEADER_LEN + m.directives.len() * mask::DIRECTIVE_LEN,
            BodyRepr::Reserve(r) => reserve::HEADER_LEN + r.macs.len() * 6,
            BodyRepr::Raw { payload, .. } => payload.len(),
        }
    }

    /// True for a raw body without bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<'a> FrameRepr<'a> {
    /// Parses a frame into plain values (see [`Frame::parse`]).
    pub fn parse(buf: &'a [u8]) -> Result<Self, ParseError> {
        Frame::parse(buf).map(|f| f.repr())
    }

    /// The answer to a request: MACs swapped, R set, tag kept, the target's own address in.
    pub fn response(request: &Frame<'_>, own_mac: MacAddr, shelf: u16, slot: u8, body: BodyRepr<'a>) -> Self {
        FrameRepr {
            dst: request.ethernet.src,
            src: own_mac,
            header: HeaderRepr { flags: Flags::RESPONSE, error: 0, shelf, slot, tag: request.header.tag() },
            body,
        }
    }

    /// Bytes [`emit`](Self::emit) writes (before padding).
    pub fn buffer_len(&self) -> usize {
        PAYLOAD_OFFSET + self.body.len()
    }

    /// Writes the frame to the start of `buf` and returns its length (unpadded).
    ///
    /// ```
    /// use aoe_proto::{BodyRepr, ConfigCommand, ConfigRepr, FrameRepr, HeaderRepr, MacAddr};
    /// let request = FrameRepr {
    ///     dst: MacAddr::BROADCAST,
    ///     src: MacAddr([2, 0, 0, 0, 0, 1]),
    ///     header: HeaderRepr::request(0xFFFF, 0xFF, 7),
    ///     body: BodyRepr::Config(ConfigRepr::request(ConfigCommand::Read, b"")),
    /// };
    /// let mut buf = [0u8; 64];
    /// let len = request.emit_padded(&mut buf).unwrap();
    /// assert_eq!(len, 60);
    /// assert_eq!(FrameRepr::parse(&buf[..len]).unwrap(), request);
    /// ```
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, EmitError> {
        // One match, then a writer specialised for each header type, so that the hot ATA
        // path writes fixed-size headers with plain stores.
        match &self.body {
            BodyRepr::Ata { header, data } => self.emit_parts(buf, Command::Ata, header.to_wire(), data),
            BodyRepr::Config(c) => {
                if c.string.len() > MAX_STRING_LEN {
                    return Err(EmitError::ConfigStringTooLong { len: c.string.len() });
                }
                self.emit_parts(buf, Command::QueryConfig, c.to_wire(), c.string)
            }
            BodyRepr::Mask(m) => {
                if m.directives.len() > 255 {
                    return Err(EmitError::TooManyEntries { count: m.directives.len() });
                }
                self.emit_parts(buf, Command::MacMask, m.to_wire(), m.directives.as_bytes())
            }
            BodyRepr::Reserve(r) => {
                if r.macs.len() > 255 {
                    return Err(EmitError::TooManyEntries { count: r.macs.len() });
                }
                self.emit_parts(buf, Command::Reserve, r.to_wire(), r.macs.as_bytes())
            }
            BodyRepr::Raw { command, payload } => {
                self.emit_parts(buf, Command::from(*command), [0u8; 0], payload)
            }
        }
    }

    #[inline]
    fn common_words(&self, command: Command) -> [LeU64; 3] {
        common_words(self.dst, self.src, &self.header, command)
    }

    /// Writes the Ethernet and common headers, `head` and `tail`.
    ///
    /// Each header is written in place, with as few stores as its layout allows: building it
    /// elsewhere and copying its bytes cost a store-forwarding stall, and byte-wide stores
    /// bounded the time of an ATA answer header emit.
    fn emit_parts<H>(
        &self,
        buf: &mut [u8],
        command: Command,
        head: H,
        tail: &[u8],
    ) -> Result<usize, EmitError>
    where
        H: FromBytes + IntoBytes + KnownLayout + Unaligned,
    {
        let len = PAYLOAD_OFFSET + core::mem::size_of::<H>() + tail.len();
        let too_small = EmitError::BufferTooSmall { need: len, got: buf.len() };
        let out = buf.get_mut(..len).ok_or(too_small)?;
        let (common, rest) = place::<[LeU64; 3]>(out).ok_or(too_small)?;
        *common = self.common_words(command);
        let (wire, rest) = place::<H>(rest).ok_or(too_small)?;
        *wire = head;
        // An ATA answer's data is written in place by the caller: skip the empty copy.
        if !tail.is_empty() {
            rest.get_mut(..tail.len()).ok_or(too_small)?.copy_from_slice(tail);
        }
        Ok(len)
    }

    /// Like [`emit`](Self::emit), then zero-pads to the 60-byte Ethernet minimum, as every
    /// response must be (veth and tap do not pad, and aoeping drops shorter frames).
    pub fn emit_padded(&self, buf: &mut [u8]) -> Result<usize, EmitError> {
        let need = padded_len(self.buffer_len());
        if buf.len() < need {
            return Err(EmitError::BufferTooSmall { need, got: buf.len() });
        }
        let len = self.emit(buf)?;
        crate::sizing::pad_to_minimum(buf, len).ok_or(EmitError::BufferTooSmall { need, got: buf.len() })
    }
}

/// The Ethernet and common headers (24 bytes) as three little-endian words, so that they are
/// assembled in registers and written with three stores.
#[inline]
pub(crate) fn common_words(dst: MacAddr, src: MacAddr, h: &HeaderRepr, command: Command) -> [LeU64; 3] {
    let [d0, d1, d2, d3, d4, d5] = dst.0;
    let [s0, s1, s2, s3, s4, s5] = src.0;
    let [e0, e1] = ETHERTYPE_AOE.to_be_bytes();
    let ver_flags = (VERSION << 4) | (h.flags.bits() & 0x0F);
    let [m0, m1] = h.shelf.to_be_bytes();
    let [t0, t1, t2, t3] = h.tag.to_be_bytes();
    [
        LeU64::new(u64::from_le_bytes([d0, d1, d2, d3, d4, d5, s0, s1])),
        LeU64::new(u64::from_le_bytes([s2, s3, s4, s5, e0, e1, ver_flags, h.error])),
        LeU64::new(u64::from_le_bytes([m0, m1, h.slot, command.into(), t0, t1, t2, t3])),
    ]
}

/// Views the start of `buf` as a mutable `T`, with the bytes after it.
fn place<T>(buf: &mut [u8]) -> Option<(&mut T, &mut [u8])>
where
    T: FromBytes + IntoBytes + KnownLayout + Unaligned,
{
    T::mut_from_prefix(buf).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The word-wise common header is the Ethernet header then the AoE header.
        #[test]
        fn common_words_match_the_wire_structs(
            dst in any::<[u8; 6]>(),
            src in any::<[u8; 6]>(),
            flags in any::<u8>(),
            error in any::<u8>(),
            shelf in any::<u16>(),
            slot in any::<u8>(),
            tag in any::<u32>(),
            command in any::<u8>(),
        ) {
            let header = HeaderRepr { flags: Flags::from_bits_retain(flags), error, shelf, slot, tag };
            let repr = FrameRepr {
                dst: MacAddr(dst),
                src: MacAddr(src),
                header,
                body: BodyRepr::Raw { command, payload: &[] },
            };
            let words = repr.common_words(Command::from(command));
            let ethernet = EthernetHeader { dst: MacAddr(dst), src: MacAddr(src), ethertype: U16::new(ETHERTYPE_AOE) };
            let expected = [ethernet.as_bytes(), header.to_wire(Command::from(command)).as_bytes()].concat();
            prop_assert_eq!(words.as_bytes(), &expected[..]);
        }
    }
}
