//! `aoe identify`: the IDENTIFY DEVICE data of a disk.

use aoe_initiator::session::AtaRequest;
use aoe_proto::{AtaCommand, AtaFlags, Identify, SECTOR_SIZE};
use serde::Serialize;

use super::format::{self, Table};
use super::{discover, Cli, Failure, IdentifyArgs};

/// Word 83 (command sets supported) bits worth showing.
const W83_FLUSH: u16 = 0x1000;
const W83_FLUSH_EXT: u16 = 0x2000;

pub(crate) fn run(cli: &Cli, args: &IdentifyArgs) -> Result<(), Failure> {
    let disk = args.disk;
    let mut dev = cli.open_device(disk)?;
    // The raw answer rather than Device::identify: the words the parsed form drops are
    // shown too.
    let request = AtaRequest {
        flags: AtaFlags::empty(),
        feature: 0,
        sector_count: 1,
        command: AtaCommand::IdentifyDevice.into(),
        lba: 0,
        data: Vec::new(),
    };
    let reply = dev.ata(request).map_err(|e| Failure::disk(disk, e))?;
    if !reply.error.is_empty() || reply.status.contains(aoe_proto::AtaStatus::ERR) {
        return Err(Failure::new(format!(
            "{disk}: IDENTIFY DEVICE refused: status 0x{:02x}, error 0x{:02x}",
            reply.status.bits(),
            reply.error.bits()
        )));
    }
    let raw = &reply.data;
    let id = Identify::parse(raw)
        .map_err(|e| Failure::new(format!("{disk}: IDENTIFY data does not parse: {e}")))?;
    if args.raw {
        print!("{}", hex_words(raw));
        return Ok(());
    }
    let word = |i: usize| raw.get(2 * i..2 * i + 2).map_or(0, |w| u16::from_le_bytes([w[0], w[1]]));
    let fields = Fields {
        disk: disk.to_string(),
        paths: discover::paths(dev.info()),
        model: id.model().to_owned(),
        serial: id.serial().to_owned(),
        firmware: id.firmware().to_owned(),
        sectors: id.sectors,
        bytes: id.sectors * SECTOR_SIZE as u64,
        lba48: id.lba48,
        max_multiple: id.max_multiple,
        smart: id.smart,
        flush_cache: word(83) & W83_FLUSH != 0,
        flush_cache_ext: word(83) & W83_FLUSH_EXT != 0,
    };
    if args.json {
        let text = serde_json::to_string_pretty(&fields)
            .map_err(|e| Failure::new(format!("cannot write JSON: {e}")))?;
        println!("{text}");
    } else {
        print!("{}", fields.table());
    }
    Ok(())
}

/// What `aoe identify` shows.
#[derive(Debug, Serialize)]
struct Fields {
    disk: String,
    paths: String,
    model: String,
    serial: String,
    firmware: String,
    sectors: u64,
    bytes: u64,
    lba48: bool,
    max_multiple: u8,
    smart: bool,
    flush_cache: bool,
    flush_cache_ext: bool,
}

impl Fields {
    fn table(&self) -> String {
        let yes = |b: bool| if b { "yes" } else { "no" }.to_owned();
        let mut t = Table::new(&["disk", &self.disk]);
        for (name, value) in [
            ("paths", self.paths.clone()),
            ("model", self.model.clone()),
            ("serial", self.serial.clone()),
            ("firmware", self.firmware.clone()),
            (
                "capacity",
                format!(
                    "{} ({} bytes, {} sectors of 512 bytes)",
                    format::bytes(self.bytes),
                    self.bytes,
                    self.sectors
                ),
            ),
            ("LBA48", yes(self.lba48)),
            (
                "max multiple",
                format!("{} sector{}", self.max_multiple, if self.max_multiple == 1 { "" } else { "s" }),
            ),
            ("SMART", yes(self.smart)),
            ("FLUSH CACHE", yes(self.flush_cache)),
            ("FLUSH CACHE EXT", yes(self.flush_cache_ext)),
        ] {
            t.row(vec![name.to_owned(), value]);
        }
        t.render()
    }
}

/// 512 bytes as 256 little-endian words, eight per line, each line led by its first word's
/// number.
fn hex_words(raw: &[u8]) -> String {
    let mut out = String::new();
    for (line, chunk) in raw.chunks(16).enumerate() {
        out.push_str(&format!("{:3}:", line * 8));
        for w in chunk.chunks(2) {
            let value = u16::from_le_bytes([w[0], *w.get(1).unwrap_or(&0)]);
            out.push_str(&format!(" {value:04x}"));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_words_are_little_endian() {
        let mut raw = [0u8; 32];
        raw[0] = 0x40;
        raw[17] = 0xAB;
        assert_eq!(
            hex_words(&raw),
            "  0: 0040 0000 0000 0000 0000 0000 0000 0000\n  8: ab00 0000 0000 0000 0000 0000 0000 0000\n"
        );
    }
}
