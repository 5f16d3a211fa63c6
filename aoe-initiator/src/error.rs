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
    /// The target answered an ATA command with the ERR (or DF) status bit. The message
    /// names the command, the bytes it covered and the cause, e.g. `write at byte 8388608
    /// (16 sectors) failed: disk full (ATA DF UNC)`.
    #[error("{} failed: {} (ATA {}{})", what_failed(*command, *lba, *sectors), ata_cause(*command, *status, *error),
        if *status & AtaStatus::DF.bits() != 0 { "DF " } else { "" }, ata_error_bits(*error))]
    Ata {
        /// The ATA command sent.
        command: u8,
        /// The status register answered.
        status: u8,
        /// The error register answered.
        error: u8,
        /// The first sector of the frame that failed (0 for commands without sectors).
        lba: u64,
        /// Its sectors (0 for commands without sectors).
        sectors: u64,
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
            Error::Ata { command, status: status.bits(), error: error.bits(), lba, sectors }
        }
    }
}

/// READ SECTORS (EXT), WRITE SECTORS (EXT), FLUSH CACHE (EXT).
const READS: [u8; 2] = [0x20, 0x24];
const WRITES: [u8; 2] = [0x30, 0x34];
const FLUSHES: [u8; 2] = [0xE7, 0xEA];

/// "write at byte 8388608 (16 sectors)", "flush", "command 0xec".
fn what_failed(command: u8, lba: u64, sectors: u64) -> String {
    let plural = if sectors == 1 { "" } else { "s" };
    let at = |op: &str| format!("{op} at byte {} ({sectors} sector{plural})", lba.saturating_mul(512));
    if READS.contains(&command) {
        at("read")
    } else if WRITES.contains(&command) {
        at("write")
    } else if FLUSHES.contains(&command) {
        "flush".to_string()
    } else {
        format!("command 0x{command:02x}")
    }
}

/// What the registers say went wrong, as aoe-target encodes its store's errors (see
/// `aoe_target::export::ata_error_for`) and as a disk would.
fn ata_cause(command: u8, status: u8, error: u8) -> &'static str {
    let fault = status & AtaStatus::DF.bits() != 0;
    let e = AtaError::from_bits_retain(error);
    let write = WRITES.contains(&command);
    if e.contains(AtaError::IDNF) {
        "no such sector"
    } else if fault && e.contains(AtaError::UNC) && write {
        "disk full"
    } else if fault && e.contains(AtaError::ABRT) && write {
        "the target's store refuses writes"
    } else if fault && FLUSHES.contains(&command) {
        "the target could not make the data durable"
    } else if e.contains(AtaError::UNC) {
        if write {
            "the target could not write the sectors (I/O error)"
        } else {
            "the target could not read the sectors (I/O error)"
        }
    } else if e.contains(AtaError::ABRT) && write {
        "refused: the disk is read-only, to everyone or to this initiator"
    } else if e.contains(AtaError::ABRT) {
        "command aborted"
    } else if fault {
        "device fault"
    } else if status & AtaStatus::BSY.bits() != 0 {
        "the disk is busy"
    } else {
        "error"
    }
}

/// The error register's bits by name: "UNC", "IDNF ABRT", or the value in hex.
fn ata_error_bits(error: u8) -> String {
    let names: Vec<&str> = AtaError::from_bits_retain(error).iter_names().map(|(name, _)| name).collect();
    if names.is_empty() || AtaError::from_bits(error).is_none() {
        format!("error 0x{error:02x}")
    } else {
        names.join(" ")
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
                Error::Ata { command: 0x24, status: 0x41, error: 0x04, lba: 8, sectors: 2 },
                "read at byte 4096 (2 sectors) failed: command aborted (ATA ABRT)",
            ),
            (
                Error::Ata { command: 0x34, status: 0x61, error: 0x40, lba: 16384, sectors: 16 },
                "write at byte 8388608 (16 sectors) failed: disk full (ATA DF UNC)",
            ),
            (
                Error::Ata { command: 0x34, status: 0x61, error: 0x04, lba: 0, sectors: 1 },
                "write at byte 0 (1 sector) failed: the target's store refuses writes (ATA DF ABRT)",
            ),
            (
                Error::Ata { command: 0x30, status: 0x41, error: 0x04, lba: 1, sectors: 1 },
                "write at byte 512 (1 sector) failed: refused: the disk is read-only, to everyone or to this initiator (ATA ABRT)",
            ),
            (
                Error::Ata { command: 0x20, status: 0x41, error: 0x40, lba: 3, sectors: 1 },
                "read at byte 1536 (1 sector) failed: the target could not read the sectors (I/O error) (ATA UNC)",
            ),
            (
                Error::Ata { command: 0xEA, status: 0x61, error: 0x04, lba: 0, sectors: 0 },
                "flush failed: the target could not make the data durable (ATA DF ABRT)",
            ),
            (
                Error::Ata { command: 0xEC, status: 0x41, error: 0x02, lba: 0, sectors: 0 },
                "command 0xec failed: error (ATA error 0x02)",
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
        assert!(matches!(e, Error::Ata { command: 0x24, status: 0x41, error: 0x04, lba: 9, sectors: 2 }));
    }
}
