//! A custom backend: a read-only disk of any size (here 1 TiB) that stores nothing. Every
//! sector holds its own LBA, repeated. The disk is served over the in-memory link and an
//! initiator reads its last sector, which needs LBA48.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use aoe_initiator::{Device, DeviceOptions};
use aoe_proto::{MacAddr, SECTOR_SIZE};
use aoe_target::backend::Backend;
use aoe_target::export::{Export, ExportConfig};
use aoe_target::server::Server;
use aoe_transport::memory::pair;

/// `len` bytes in which every 512-byte sector is its LBA as 64 little-endian u64s.
struct LbaPattern {
    len: u64,
}

impl Backend for LbaPattern {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if offset.checked_add(buf.len() as u64).is_none_or(|end| end > self.len) {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end"));
        }
        for (i, byte) in buf.iter_mut().enumerate() {
            let at = offset + i as u64;
            let lba = at / SECTOR_SIZE as u64;
            *byte = lba.to_le_bytes()[(at % 8) as usize];
        }
        Ok(())
    }

    fn write_at(&self, _buf: &[u8], _offset: u64) -> io::Result<()> {
        Err(io::Error::new(io::ErrorKind::PermissionDenied, "the pattern disk is read-only"))
    }

    fn flush(&self) -> io::Result<()> {
        Ok(())
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (target_port, initiator_port) = pair(9000, MacAddr([2, 0, 0, 0, 0, 1]), MacAddr([2, 0, 0, 0, 0, 2]));
    let config = ExportConfig { read_only: true, ..ExportConfig::new(7, 3) };
    let export = Arc::new(Mutex::new(Export::new(config, LbaPattern { len: 1 << 40 })));
    let stop = Arc::new(AtomicBool::new(false));
    let mut server = Server::new(target_port, vec![export]);
    let serving = std::thread::spawn({
        let stop = stop.clone();
        move || server.run(&stop)
    });

    let mut device = Device::open(vec![Box::new(initiator_port)], 7, 3, &DeviceOptions::default())?;
    let size = device.size_bytes();
    let mut last = [0u8; SECTOR_SIZE];
    device.read_at(&mut last, size - SECTOR_SIZE as u64)?;
    let lba = u64::from_le_bytes(last[..8].try_into()?);
    println!("e7.3: {size} bytes; its last sector says LBA {lba}");
    assert_eq!(lba, size / SECTOR_SIZE as u64 - 1);

    // Writes are refused with an ATA error, not lost silently.
    let refused = device.write_at(&[1; SECTOR_SIZE], 0).expect_err("a read-only disk");
    println!("writing to it: {refused}");

    stop.store(true, Ordering::Relaxed);
    serving.join().expect("server thread")?;
    Ok(())
}
