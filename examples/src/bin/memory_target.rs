//! A minimal AoE target: a `Vec<u8>` served as disk e1.0 over the in-memory link, and an
//! initiator on the same link that writes a sector and reads it back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use aoe_initiator::{Device, DeviceOptions};
use aoe_proto::MacAddr;
use aoe_target::backend::MemoryBackend;
use aoe_target::export::{Export, ExportConfig};
use aoe_target::server::Server;
use aoe_transport::memory::pair;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (target_port, initiator_port) = pair(9000, MacAddr([2, 0, 0, 0, 0, 1]), MacAddr([2, 0, 0, 0, 0, 2]));

    // The target: 1 MiB of memory as shelf 1, slot 0, served on its own thread.
    let disk = MemoryBackend::from_vec(vec![0u8; 1 << 20]);
    let export = Arc::new(Mutex::new(Export::new(ExportConfig::new(1, 0), disk)));
    let stop = Arc::new(AtomicBool::new(false));
    let mut server = Server::new(target_port, vec![export]);
    let serving = std::thread::spawn({
        let stop = stop.clone();
        move || server.run(&stop)
    });

    // The initiator: find e1.0, write a sector, read it back.
    let mut device = Device::open(vec![Box::new(initiator_port)], 1, 0, &DeviceOptions::default())?;
    println!("found e1.0: {} bytes", device.size_bytes());
    device.write_at(b"hello, AoE", 4096)?;
    let mut back = [0u8; 10];
    device.read_at(&mut back, 4096)?;
    println!("read back: {}", String::from_utf8_lossy(&back));
    assert_eq!(&back, b"hello, AoE");

    stop.store(true, Ordering::Relaxed);
    serving.join().expect("server thread")?;
    Ok(())
}
