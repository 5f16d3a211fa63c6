//! A received frame, parsed once for everyone who looks at it ([`Received`]): a target's
//! exports, an initiator's sessions.

use crate::ata::{AtaCommand, HEADER_LEN as ATA_HEADER_LEN};
use crate::frame::{parse_headers, Body, Frame};
use crate::header::{AoeHeader, VERSION};
use crate::{EthernetHeader, ParseError};

/// A received AoE frame, parsed once: its Ethernet and common headers, the bytes after them
/// (echoed in error answers) and its body, or why the body does not parse.
///
/// The frames a target answers with an error are kept (another version, a malformed body):
/// only frames that are not AoE at all fail [`parse`](Self::parse).
///
/// ```
/// use aoe_proto::{AtaRepr, BodyRepr, FrameRepr, HeaderRepr, MacAddr};
/// use aoe_proto::Received;
///
/// let mut buf = [0u8; 64];
/// let len = FrameRepr {
///     dst: MacAddr([2, 0, 0, 0, 0, 1]),
///     src: MacAddr([2, 0, 0, 0, 0, 2]),
///     header: HeaderRepr::request(1, 0, 7),
///     body: BodyRepr::Ata { header: AtaRepr::write(0, 0, true), data: &[] },
/// }
/// .emit_padded(&mut buf)?;
/// let received = Received::parse(&buf[..len])?;
/// assert_eq!(received.header().tag(), 7);
/// assert!(received.writes_sectors());
/// assert!(Received::parse(&buf[..20]).is_err(), "not even a common header");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received<'a> {
    ethernet: &'a EthernetHeader,
    header: &'a AoeHeader,
    payload: &'a [u8],
    body: Result<Body<'a>, ParseError>,
}

impl<'a> Received<'a> {
    /// Parses a received Ethernet frame. Fails only when it is not AoE (another EtherType)
    /// or too short for the common header; a body of another version or a malformed one is
    /// kept as [`body`](Self::body)'s error, for the export to answer.
    #[inline]
    pub fn parse(frame: &'a [u8]) -> Result<Self, ParseError> {
        let (ethernet, header, payload) = parse_headers(frame)?;
        let body = if header.version() != VERSION {
            Err(ParseError::Version { got: header.version() })
        } else {
            Body::parse(header, payload)
        };
        Ok(Received { ethernet, header, payload, body })
    }

    /// The Ethernet header.
    pub fn ethernet(&self) -> &'a EthernetHeader {
        self.ethernet
    }
    /// The common header.
    pub fn header(&self) -> &'a AoeHeader {
        self.header
    }
    /// Everything after the common header, Ethernet padding included.
    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }
    /// The body, or why it does not parse (a version other than 1 included).
    pub fn body(&self) -> Result<Body<'a>, ParseError> {
        self.body
    }
    /// What follows the ATA header, when the frame is long enough to have one: an answer's
    /// sector data, Ethernet padding included. Read answers are taken from here for as many
    /// sectors as their request asked, whatever their sector count register says (vblade
    /// answers a complete read with 0 there).
    pub fn after_ata_header(&self) -> &'a [u8] {
        self.payload.get(ATA_HEADER_LEN..).unwrap_or_default()
    }

    /// The whole frame, when its body parses.
    pub fn frame(&self) -> Option<Frame<'a>> {
        let body = self.body.ok()?;
        Some(Frame { ethernet: self.ethernet, header: self.header, body })
    }

    /// True when the frame is a request to write sectors (an ATA WRITE SECTORS of either
    /// size): a sender holding read answers whose sectors are read when sent
    /// (a target's mapped reads) sends them before handling it, so that
    /// every answer shows the data as it was when its request was handled.
    pub fn writes_sectors(&self) -> bool {
        match self.body {
            Ok(Body::Ata { header, .. }) if !self.header.is_response() => {
                matches!(header.command(), AtaCommand::WriteSectors | AtaCommand::WriteSectorsExt)
            }
            _ => false,
        }
    }
}
