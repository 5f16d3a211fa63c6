//! What can go wrong talking to an AoE target. One line each, saying what and where.

use std::io;
use std::time::Duration;

use aoe_proto::{AtaError, AtaStatus, ErrorCode, MaskError};

/// An initiator error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No target answered for this shelf.slot on any of the interfaces tried.
    #[error("no such disk: e{shelf}.{slot} not found on {ifaces}")]
    NoSuchDisk {
        /// The shelf (major) asked for.
        shelf: u16,
        /// The slot (minor) asked for.
        slot: u8,
        /// The interfaces searched, comma-separated.
        ifaces: String,
    },
    /// Two different disks (other capacity or serial) answer as one shelf.slot.
    #[error("e{shelf}.{slot} is two different disks: {first} and {other} both answer as e{shelf}.{slot} with another capacity or serial; give one of them another shelf.slot")]
    Conflict {
        /// The shelf (major).
        shelf: u16,
        /// The slot (minor).
        slot: u8,
        /// The MAC of one of them.
        first: aoe_proto::MacAddr,
        /// The MAC of the other.
        other: aoe_proto::MacAddr,
    },
    /// The target answered nothing at all for this long while work was outstanding.
    #[error("target went silent: no answer for {after:?}, declared dead")]
    TargetDead {
        /// The silence that was tolerated (`SessionConfig::dead_timeout`).
        after: Duration,
    },
    /// A read or write outside the disk: refused locally, or answered by the target with
    /// ATA ERR and IDNF (ID not found).
    #[error("out of range: {sectors} sectors at LBA {lba}")]
    OutOfRange {
        /// First sector asked for.
        lba: u64,
        /// Sectors asked for.
        sectors: u64,
    },
    /// The target answered with the E flag and this AoE error code.
    #[error("AoE error {code}: {}", aoe_error_name(*code))]
    Aoe {
        /// The raw error code (1 to 6 are defined).
        code: u8,
    },
    /// The target answered an ATA command with the ERR (or DF) status bit.
    #[error("ATA error on command 0x{command:02x}: status 0x{status:02x}, error 0x{error:02x}{}",
        ata_error_name(*error))]
    Ata {
        /// The ATA command sent.
        command: u8,
        /// The status register answered.
        status: u8,
        /// The error register answered.
        error: u8,
    },
    /// A read answer carried fewer data bytes than its sector count asks for.
    #[error("short read: expected {expected} data bytes, got {got}")]
    ShortRead {
        /// sector count × 512.
        expected: usize,
        /// Bytes the answer carried.
        got: usize,
    },
    /// A MAC mask edit was refused with this MError.
    #[error("MAC mask edit refused: {}", mask_error_name(*.0))]
    Mask(MaskError),
    /// An answer that matched a request but whose contents make no sense.
    #[error("malformed answer: {0}")]
    BadAnswer(&'static str),
    /// A request that cannot be sent as asked (too long for a frame, a field out of range).
    #[error("invalid request: {0}")]
    Invalid(&'static str),
    /// The transport failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, e.g. "sending on eth0".
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// Wraps a transport error with what was being done.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io { context: context.into(), source }
    }

    /// The error an ATA answer with the ERR bit stands for: [`Error::OutOfRange`] for IDNF,
    /// [`Error::Ata`] otherwise.
    pub(crate) fn from_ata(command: u8, status: AtaStatus, error: AtaError, lba: u64, sectors: u64) -> Self {
        if error.contains(AtaError::IDNF) {
            Error::OutOfRange { lba, sectors }
        } else {
            Error::Ata { command, status: status.bits(), error: error.bits() }
        }
    }
}

/// The protocol's name for an AoE error code.
pub fn aoe_error_name(code: u8) -> &'static str {
    match ErrorCode::from(code) {
        ErrorCode::UnrecognizedCommand => "unrecognised command",
        ErrorCode::BadArgument => "bad argument",
        ErrorCode::DeviceUnavailable => "device unavailable",
        ErrorCode::ConfigStringPresent => "config string present",
        ErrorCode::UnsupportedVersion => "unsupported version",
        ErrorCode::TargetReserved => "target is reserved",
        ErrorCode::Other(_) => "unknown error code",
    }
}

fn ata_error_name(error: u8) -> &'static str {
    let e = AtaError::from_bits_retain(error);
    if e.contains(AtaError::IDNF) {
        " (IDNF: address out of range)"
    } else if e.contains(AtaError::UNC) {
        " (UNC: uncorrectable data error)"
    } else if e.contains(AtaError::ABRT) {
        " (ABRT: command aborted)"
    } else {
        ""
    }
}

fn mask_error_name(e: MaskError) -> &'static str {
    match e {
        MaskError::None => "no error",
        MaskError::Unspecified => "unspecified error",
        MaskError::BadDirective => "bad directive",
        MaskError::Full => "mask list full",
        MaskError::Other(_) => "unknown MError",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_one_clear_line() {
        let cases: Vec<(Error, &str)> = vec![
            (
                Error::NoSuchDisk { shelf: 7, slot: 1, ifaces: "eth0, eth1".into() },
                "no such disk: e7.1 not found on eth0, eth1",
            ),
            (
                Error::TargetDead { after: Duration::from_secs(60) },
                "target went silent: no answer for 60s, declared dead",
            ),
            (Error::OutOfRange { lba: 100, sectors: 2 }, "out of range: 2 sectors at LBA 100"),
            (Error::Aoe { code: 6 }, "AoE error 6: target is reserved"),
            (
                Error::Ata { command: 0x24, status: 0x41, error: 0x04 },
                "ATA error on command 0x24: status 0x41, error 0x04 (ABRT: command aborted)",
            ),
            (Error::ShortRead { expected: 1024, got: 512 }, "short read: expected 1024 data bytes, got 512"),
            (Error::Mask(MaskError::Full), "MAC mask edit refused: mask list full"),
            (Error::io("sending on eth0", io::Error::other("link down")), "sending on eth0: link down"),
        ];
        for (err, want) in cases {
            let got = err.to_string();
            assert_eq!(got, want);
            assert!(!got.contains('\n'));
        }
    }

    #[test]
    fn idnf_means_out_of_range() {
        let e = Error::from_ata(0x24, AtaStatus::DRDY | AtaStatus::ERR, AtaError::IDNF, 9, 2);
        assert!(matches!(e, Error::OutOfRange { lba: 9, sectors: 2 }));
        let e = Error::from_ata(0x24, AtaStatus::DRDY | AtaStatus::ERR, AtaError::ABRT, 9, 2);
        assert!(matches!(e, Error::Ata { command: 0x24, status: 0x41, error: 0x04 }));
    }
}
