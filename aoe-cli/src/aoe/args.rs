//! Values on the command line: disk names, byte counts, durations (MAC addresses: the
//! parser both tools share). Each parser returns a message that says what was wrong and what
//! is accepted; clap prints it as the one line of a usage error.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use aoe_proto::{SHELF_BROADCAST, SLOT_BROADCAST};

/// A disk's name as Linux spells it: `e<shelf>.<slot>`, e.g. `e1.0` for shelf 1, slot 0.
///
/// Shelf is 0 to 65534 and slot 0 to 254 (65535 and 255 are the broadcast addresses).
/// The `/dev/etherd/` prefix of the Linux driver's device nodes is accepted and ignored.
///
/// ```
/// use aoe_cli::aoe::DiskName;
///
/// let disk: DiskName = "e7.12".parse()?;
/// assert_eq!((disk.shelf, disk.slot), (7, 12));
/// assert_eq!(disk.to_string(), "e7.12");
/// assert_eq!("/dev/etherd/e1.0".parse::<DiskName>()?, DiskName { shelf: 1, slot: 0 });
/// assert!("e1.255".parse::<DiskName>().is_err());
/// # Ok::<(), String>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DiskName {
    /// Shelf (AoE major address), 0 to 65534.
    pub shelf: u16,
    /// Slot (AoE minor address), 0 to 254.
    pub slot: u8,
}

impl fmt::Display for DiskName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "e{}.{}", self.shelf, self.slot)
    }
}

impl FromStr for DiskName {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?} is not a disk name: use e<shelf>.<slot>, e.g. e1.0");
        let name = text.strip_prefix("/dev/etherd/").unwrap_or(text);
        let (shelf, slot) = name.strip_prefix('e').and_then(|n| n.split_once('.')).ok_or_else(bad)?;
        let digits = |s: &str| !s.is_empty() && s.len() <= 10 && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(shelf) || !digits(slot) {
            return Err(bad());
        }
        let (shelf, slot): (u64, u64) = (shelf.parse().map_err(|_| bad())?, slot.parse().map_err(|_| bad())?);
        let max_shelf = u64::from(SHELF_BROADCAST) - 1;
        let max_slot = u64::from(SLOT_BROADCAST) - 1;
        if shelf > max_shelf {
            let why = if shelf == max_shelf + 1 { "is the broadcast shelf" } else { "is too large" };
            return Err(format!("{text}: shelf {shelf} {why}; use 0 to {max_shelf}"));
        }
        if slot > max_slot {
            let why = if slot == max_slot + 1 { "is the broadcast slot" } else { "is too large" };
            return Err(format!("{text}: slot {slot} {why}; use 0 to {max_slot}"));
        }
        Ok(DiskName { shelf: shelf as u16, slot: slot as u8 })
    }
}

/// A byte count: digits with an optional suffix K, M, G or T (powers of 1024, any case,
/// optionally followed by `iB` or `B`), e.g. `4096`, `64K`, `256MiB`, `1G`.
pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    let bad = |why: &str| {
        format!("{text:?} is not a size: {why}; use bytes with an optional K, M, G or T suffix (powers of 1024), e.g. 64M")
    };
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, suffix) = t.split_at(split);
    if number.is_empty() {
        return Err(bad("no number"));
    }
    let number: u64 = number.parse().map_err(|_| bad("the number is too large"))?;
    let shift = match suffix.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(bad(&format!("unknown suffix {suffix:?}"))),
    };
    number.checked_mul(1 << shift).ok_or_else(|| bad("too large"))
}

/// A duration: seconds (`2`, `0.5`, `2s`) or milliseconds (`500ms`).
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration: use seconds (2, 0.5, 2s) or milliseconds (500ms)");
    let t = text.trim();
    let (number, scale) = if let Some(ms) = t.strip_suffix("ms") {
        (ms, 1e-3)
    } else {
        (t.strip_suffix('s').unwrap_or(t), 1.0)
    };
    let value: f64 = number.trim().parse().map_err(|_| bad())?;
    let secs = value * scale;
    if !secs.is_finite() || secs <= 0.0 || secs > 86_400.0 {
        return Err(format!("{text:?} is out of range: use more than 0 and at most a day"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_names() {
        assert_eq!("e1.0".parse(), Ok(DiskName { shelf: 1, slot: 0 }));
        assert_eq!("e65534.254".parse(), Ok(DiskName { shelf: 65534, slot: 254 }));
        assert_eq!("/dev/etherd/e0.9".parse(), Ok(DiskName { shelf: 0, slot: 9 }));
        for bad in ["", "e", "e1", "e1.", "e.1", "1.0", "E1.0", "e1.0.0", "e-1.0", "e1.+0", "e1 .0", "x1.0"] {
            let err = bad.parse::<DiskName>().unwrap_err();
            assert!(err.contains("is not a disk name"), "{bad:?}: {err}");
        }
        assert_eq!(
            "e65535.0".parse::<DiskName>().unwrap_err(),
            "e65535.0: shelf 65535 is the broadcast shelf; use 0 to 65534"
        );
        assert_eq!(
            "e1.255".parse::<DiskName>().unwrap_err(),
            "e1.255: slot 255 is the broadcast slot; use 0 to 254"
        );
        assert_eq!("e1.300".parse::<DiskName>().unwrap_err(), "e1.300: slot 300 is too large; use 0 to 254");
        assert!("e99999999999.0".parse::<DiskName>().unwrap_err().contains("not a disk name"));
        assert_eq!(DiskName { shelf: 3, slot: 4 }.to_string(), "e3.4");
    }

    #[test]
    fn sizes() {
        for (text, want) in [
            ("0", 0),
            ("4096", 4096),
            ("512b", 512),
            ("4K", 4096),
            ("4k", 4096),
            ("64KiB", 64 << 10),
            ("256M", 256 << 20),
            ("256mib", 256 << 20),
            ("1G", 1 << 30),
            ("2T", 2 << 40),
        ] {
            assert_eq!(parse_size(text), Ok(want), "{text}");
        }
        for (text, why) in [
            ("", "no number"),
            ("K", "no number"),
            ("12X", "unknown suffix \"X\""),
            ("1.5G", "unknown suffix \".5G\""),
            ("-1", "no number"),
            ("99999999999999999999", "too large"),
            ("99999999T", "too large"),
        ] {
            let err = parse_size(text).unwrap_err();
            assert!(err.contains(why) && err.contains("e.g. 64M"), "{text}: {err}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("soon").unwrap_err().contains("not a duration"));
        assert!(parse_duration("inf").is_err());
    }
}
