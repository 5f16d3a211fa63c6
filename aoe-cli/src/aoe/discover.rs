//! `aoe discover`: every disk on the chosen interfaces, as a table or JSON.

use aoe_initiator::{DiscoverOptions, TargetInfo};
use aoe_transport::Transport;
use serde::Serialize;

use super::format::{self, Table};
use super::{iface, Cli, DiscoverArgs, Failure};

pub(crate) fn run(cli: &Cli, args: &DiscoverArgs) -> Result<(), Failure> {
    let named: Vec<String> = cli.ifaces.iter().chain(&args.ifaces).cloned().collect();
    let names = iface::choose(&named)?;
    let mut links = iface::open(&names)?;
    let targets = find(cli, &mut links)?;
    if args.json {
        let text = serde_json::to_string_pretty(&json(&targets))
            .map_err(|e| Failure::new(format!("cannot write JSON: {e}")))?;
        println!("{text}");
    } else if !targets.is_empty() {
        print!("{}", table(&targets));
        print!("{}", conflicts(&targets));
    }
    if targets.is_empty() {
        return Err(Failure::new(format!(
            "no AoE disk answered on {} within {}",
            names.join(", "),
            format::secs(cli.timeout)
        )));
    }
    Ok(())
}

/// Queries for `--timeout`, then IDENTIFYs every disk that answered.
pub(crate) fn find(cli: &Cli, links: &mut [Box<dyn Transport>]) -> Result<Vec<TargetInfo>, Failure> {
    let opts = DiscoverOptions {
        timeout: cli.timeout,
        identify_timeout: cli.dead_timeout,
        ..DiscoverOptions::default()
    };
    aoe_initiator::discover(links, &opts).map_err(|e| Failure::new(format!("discovery failed: {e}")))
}

/// Every path to `t`, `iface→MAC`, comma-separated.
pub(crate) fn paths(t: &TargetInfo) -> String {
    t.paths.iter().map(|p| format!("{}→{}", p.iface, p.mac)).collect::<Vec<_>>().join(", ")
}

/// The discovery table, one line per disk.
pub(crate) fn table(targets: &[TargetInfo]) -> String {
    let mut t = Table::new(&[
        "DISK",
        "PATHS (IFACE→MAC)",
        "CAPACITY",
        "SECTORS",
        "SECT/FRAME",
        "BUFCNT",
        "FIRMWARE",
        "LBA48",
        "MODEL",
        "SERIAL",
        "CONFIG",
    ])
    .right(2)
    .right(3)
    .right(4)
    .right(5);
    for d in targets {
        t.row(vec![
            d.name(),
            paths(d),
            format::bytes(d.size_bytes()),
            d.sectors.to_string(),
            d.sector_count.to_string(),
            d.buffer_count.to_string(),
            format!("0x{:04x}", d.firmware),
            if d.lba48 { "yes" } else { "no" }.to_owned(),
            d.model.clone(),
            d.serial.clone(),
            format::printable(&d.config_string),
        ]);
    }
    t.render()
}

/// One line per disk that another disk answers for too: both identities, and that the disk
/// is refused.
pub(crate) fn conflicts(targets: &[TargetInfo]) -> String {
    let mut out = String::new();
    for t in targets.iter().filter(|t| !t.conflicts.is_empty()) {
        let others: Vec<String> = t
            .conflicts
            .iter()
            .map(|c| {
                let size = format::bytes(c.sectors * aoe_proto::SECTOR_SIZE as u64);
                format!("{}→{} ({size}, serial {:?})", c.path.iface, c.path.mac, c.serial)
            })
            .collect();
        out.push_str(&format!(
            "conflict: {} is answered by different disks: {} ({}, serial {:?}) and {}; reads and writes refuse it\n",
            t.name(),
            paths(t),
            format::bytes(t.size_bytes()),
            t.serial,
            others.join(", "),
        ));
    }
    out
}

/// One disk in `aoe discover --json`.
#[derive(Debug, Serialize)]
struct DiskJson {
    name: String,
    shelf: u16,
    slot: u8,
    paths: Vec<PathJson>,
    bytes: u64,
    sectors: u64,
    sectors_per_frame: u8,
    buffer_count: u16,
    firmware: u16,
    lba48: bool,
    model: String,
    serial: String,
    config: String,
    /// Paths that answer as this disk but IDENTIFY as another one.
    conflicts: Vec<ConflictJson>,
}

#[derive(Debug, Serialize)]
struct PathJson {
    iface: String,
    mac: String,
}

#[derive(Debug, Serialize)]
struct ConflictJson {
    iface: String,
    mac: String,
    bytes: u64,
    sectors: u64,
    serial: String,
}

fn json(targets: &[TargetInfo]) -> Vec<DiskJson> {
    targets
        .iter()
        .map(|t| DiskJson {
            name: t.name(),
            shelf: t.shelf,
            slot: t.slot,
            paths: t
                .paths
                .iter()
                .map(|p| PathJson { iface: p.iface.clone(), mac: p.mac.to_string() })
                .collect(),
            bytes: t.size_bytes(),
            sectors: t.sectors,
            sectors_per_frame: t.sector_count,
            buffer_count: t.buffer_count,
            firmware: t.firmware,
            lba48: t.lba48,
            model: t.model.clone(),
            serial: t.serial.clone(),
            config: String::from_utf8_lossy(&t.config_string).into_owned(),
            conflicts: t
                .conflicts
                .iter()
                .map(|c| ConflictJson {
                    iface: c.path.iface.clone(),
                    mac: c.path.mac.to_string(),
                    bytes: c.sectors * aoe_proto::SECTOR_SIZE as u64,
                    sectors: c.sectors,
                    serial: c.serial.clone(),
                })
                .collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use aoe_initiator::discover::TargetPath;
    use aoe_proto::MacAddr;

    fn disk() -> TargetInfo {
        TargetInfo {
            shelf: 1,
            slot: 0,
            paths: vec![
                TargetPath { link: 0, iface: "eth1".into(), mac: MacAddr([2, 0, 0, 0, 0, 1]) },
                TargetPath { link: 1, iface: "eth2".into(), mac: MacAddr([2, 0, 0, 0, 0, 2]) },
            ],
            buffer_count: 16,
            sector_count: 17,
            firmware: 0x4100,
            config_string: b"host=a".to_vec(),
            sectors: 524288,
            lba48: true,
            flush_command: Some(aoe_proto::AtaCommand::FlushCacheExt),
            model: "Rust AoE target".into(),
            serial: "e1.0".into(),
            conflicts: Vec::new(),
        }
    }

    #[test]
    fn table_and_json() {
        let text = table(&[disk()]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("DISK  PATHS (IFACE→MAC)"), "{text}");
        for cell in ["e1.0", "eth1→02:00:00:00:00:01, eth2→02:00:00:00:00:02", "256 MiB", "524288", "0x4100"]
        {
            assert!(lines[1].contains(cell), "{cell} missing in {text}");
        }
        assert!(lines[1].ends_with("Rust AoE target  e1.0    host=a"), "{text}");
        let v: serde_json::Value = serde_json::to_value(json(&[disk()])).unwrap();
        assert_eq!(v[0]["name"], "e1.0");
        assert_eq!(v[0]["bytes"], 256u64 << 20);
        assert_eq!(v[0]["paths"][1]["mac"], "02:00:00:00:00:02");
        assert_eq!(v[0]["sectors_per_frame"], 17);
        assert_eq!(v[0]["config"], "host=a");
        assert_eq!(v[0]["conflicts"], serde_json::json!([]));
        assert_eq!(conflicts(&[disk()]), "");
    }

    #[test]
    fn a_conflict_is_shown_with_both_identities() {
        let mut d = disk();
        let other = d.paths.pop().unwrap();
        d.conflicts.push(aoe_initiator::discover::PathConflict {
            path: other,
            sectors: 8192,
            serial: "other".into(),
        });
        assert_eq!(
            conflicts(&[d.clone()]),
            "conflict: e1.0 is answered by different disks: eth1→02:00:00:00:00:01 (256 MiB, serial \"e1.0\") \
             and eth2→02:00:00:00:00:02 (4 MiB, serial \"other\"); reads and writes refuse it\n"
        );
        let v: serde_json::Value = serde_json::to_value(json(&[d.clone()])).unwrap();
        assert_eq!(v[0]["conflicts"][0]["mac"], "02:00:00:00:00:02");
        assert_eq!(v[0]["conflicts"][0]["bytes"], 4u64 << 20);
        let e = d.check_conflicts().unwrap_err().to_string();
        assert!(e.contains("02:00:00:00:00:01") && e.contains("02:00:00:00:00:02"), "{e}");
    }
}
