//! What can go wrong when parsing or emitting a frame.

/// Why a buffer is not a well-formed AoE frame. Each variant says what was wrong and where.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The buffer ends inside the named structure.
    #[error("{what} truncated: need {need} bytes, got {got}")]
    Truncated {
        /// The structure that did not fit.
        what: &'static str,
        /// Bytes it needs from its start.
        need: usize,
        /// Bytes available from its start.
        got: usize,
    },
    /// The Ethernet frame does not carry AoE.
    #[error("EtherType 0x{got:04x} is not AoE (0x88a2)")]
    EtherType {
        /// The EtherType found.
        got: u16,
    },
    /// The AoE version nibble is not 1.
    #[error("AoE version {got} is not supported (only version 1 is)")]
    Version {
        /// The version found.
        got: u8,
    },
    /// A query-config string length above the protocol's 1024-byte limit.
    #[error("config string length {len} exceeds the maximum of 1024")]
    ConfigStringTooLong {
        /// The length field.
        len: usize,
    },
    /// A query-config string length beyond the end of the frame.
    #[error("config string length {len} exceeds the {available} bytes left in the frame")]
    ConfigStringTruncated {
        /// The length field.
        len: usize,
        /// Bytes after the config header.
        available: usize,
    },
    /// A MAC mask directive count beyond the end of the frame.
    #[error("{count} MAC mask directives need {need} bytes, the frame has {got}")]
    DirectivesTruncated {
        /// The directive count field.
        count: usize,
        /// Bytes the directives need.
        need: usize,
        /// Bytes after the mask header.
        got: usize,
    },
    /// A reserve/release MAC count beyond the end of the frame.
    #[error("{count} reserve MAC addresses need {need} bytes, the frame has {got}")]
    MacsTruncated {
        /// The MAC count field.
        count: usize,
        /// Bytes the addresses need.
        need: usize,
        /// Bytes after the reserve header.
        got: usize,
    },
    /// An ATA write whose data is shorter than its sector count says.
    #[error("ATA write of {sectors} sectors needs {need} data bytes, the frame has {got}")]
    WriteDataShort {
        /// The sector count field.
        sectors: u8,
        /// sectors × 512.
        need: usize,
        /// Bytes after the ATA header.
        got: usize,
    },
    /// IDENTIFY data whose integrity word (255) carries the signature but a wrong checksum.
    #[error("IDENTIFY data checksum mismatch")]
    IdentifyChecksum,
}

/// Why a frame could not be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EmitError {
    /// The output buffer is too small.
    #[error("output buffer too small: need {need} bytes, got {got}")]
    BufferTooSmall {
        /// Bytes the frame needs.
        need: usize,
        /// Bytes the buffer has.
        got: usize,
    },
    /// A config string longer than 1024 bytes.
    #[error("config string of {len} bytes exceeds the maximum of 1024")]
    ConfigStringTooLong {
        /// Its length.
        len: usize,
    },
    /// More than 255 MAC mask directives or reserve addresses.
    #[error("{count} entries do not fit the 8-bit count field")]
    TooManyEntries {
        /// How many were given.
        count: usize,
    },
}
