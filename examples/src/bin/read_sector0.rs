//! Finds every AoE disk reachable through the interfaces named on the command line, lists
//! them, and prints the first 64 bytes of sector 0 of the first one.
//!
//! ```sh
//! sudo target/debug/read_sector0 eth1
//! ```
//!
//! Needs root or CAP_NET_RAW (raw Ethernet).

use aoe_initiator::discover::{discover, DiscoverOptions};
use aoe_initiator::{Device, DeviceOptions};
use aoe_transport::afpacket::{AfPacket, AfPacketOptions};
use aoe_transport::Transport;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ifaces: Vec<String> = std::env::args().skip(1).collect();
    if ifaces.is_empty() {
        return Err("usage: read_sector0 IFACE...".into());
    }
    let mut links = Vec::new();
    for name in &ifaces {
        let link: Box<dyn Transport> = Box::new(AfPacket::open(name, AfPacketOptions::default())?);
        links.push(link);
    }

    let disks = discover(&mut links, &DiscoverOptions::default())?;
    for disk in &disks {
        println!(
            "e{}.{}: {} sectors, model {:?}, {} path(s)",
            disk.shelf,
            disk.slot,
            disk.sectors,
            disk.model,
            disk.paths.len()
        );
    }
    let Some(first) = disks.into_iter().next() else {
        return Err(format!("no AoE disk answered on {}", ifaces.join(", ")).into());
    };

    let name = format!("e{}.{}", first.shelf, first.slot);
    let mut device = Device::with_target(links, first, &DeviceOptions::default())?;
    let mut sector = [0u8; 512];
    device.read_at(&mut sector, 0)?;
    println!("{name} sector 0:");
    for row in sector[..64].chunks(16) {
        let hex: Vec<String> = row.iter().map(|b| format!("{b:02x}")).collect();
        println!("  {}", hex.join(" "));
    }
    Ok(())
}
