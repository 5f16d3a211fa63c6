//! Our initiator library under the raw client's load: an aoe-initiator [`Device`] reading
//! or writing the disk sequentially in large calls for a fixed time.
//!
//! The raw [`crate::client::Client`] is the yardstick: about the least a program must do to
//! keep a number of frames in flight. [`sequential`] measures what a user of
//! [`Device::read_at`] / [`Device::write_at`] gets from the same target, with everything the
//! library does per call counted: splitting the call into frames as the window opens, tags,
//! round-trip estimate and retransmit timers, copying between the caller's buffer and the
//! frames, and the pipeline running dry at the end of each call.
//!
//! ```
//! use std::sync::atomic::{AtomicBool, Ordering};
//! use std::sync::{Arc, Mutex};
//! use std::time::Duration;
//! use aoe_benches::client::Op;
//! use aoe_benches::initiator;
//! use aoe_initiator::{Device, DeviceOptions};
//! use aoe_target::backend::MemoryBackend;
//! use aoe_target::export::{Export, ExportConfig};
//! use aoe_target::server::Server;
//! use aoe_transport::{memory, MacAddr};
//!
//! let (target_port, client_port) = memory::pair(9000, MacAddr([2, 0, 0, 0, 0, 1]), MacAddr([2, 0, 0, 0, 0, 2]));
//! let export = Arc::new(Mutex::new(Export::new(ExportConfig::new(1, 0), MemoryBackend::new(1 << 20))));
//! let stop = Arc::new(AtomicBool::new(false));
//! let server = std::thread::spawn({
//!     let stop = stop.clone();
//!     move || Server::new(target_port, vec![export]).run(&stop)
//! });
//!
//! let options = DeviceOptions { max_window: Some(16), ..DeviceOptions::default() };
//! let mut disk = Device::open(vec![Box::new(client_port)], 1, 0, &options)?;
//! let mut buf = vec![0u8; 256 << 10];
//! let run = initiator::sequential(&mut disk, Op::Read, &mut buf, Duration::from_millis(50))?;
//! assert!(run.calls >= 1 && run.bytes == run.calls * (256 << 10));
//!
//! stop.store(true, Ordering::Relaxed);
//! server.join().unwrap()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::io;
use std::time::{Duration, Instant};

use aoe_initiator::Device;
use aoe_proto::SECTOR_SIZE;

use crate::client::Op;

/// What a [`sequential`] run achieved.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub struct SeqRun {
    /// Bytes read or written.
    pub bytes: u64,
    /// `read_at` / `write_at` calls made (all of the buffer's length).
    pub calls: u64,
    /// From the start of the first call to the return of the last.
    pub elapsed: Duration,
}

impl SeqRun {
    /// Decimal megabytes (10^6 bytes) per second.
    pub fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Calls `read_at` (into `buf`) or `write_at` (from `buf`) with the whole of `buf` at offsets
/// 0, `buf.len()`, 2 × `buf.len()`, ... wrapping to 0 before the end of the disk, until
/// `duration` has passed; the call under way then completes and is counted.
///
/// `buf` must be a whole number of sectors, at least one and at most the disk's size
/// (`InvalidInput` otherwise); a failed call is returned as an error with its offset.
pub fn sequential(dev: &mut Device, op: Op, buf: &mut [u8], duration: Duration) -> io::Result<SeqRun> {
    let chunk = buf.len() as u64;
    let size = dev.size_bytes();
    if chunk == 0 || chunk % SECTOR_SIZE as u64 != 0 || chunk > size {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{chunk}-byte calls: not a whole number of sectors within the {size}-byte disk"),
        ));
    }
    // Only whole calls, so that every call moves the same amount.
    let end = size - size % chunk;
    let mut run = SeqRun::default();
    let mut offset = 0;
    let start = Instant::now();
    while run.calls == 0 || start.elapsed() < duration {
        let result = match op {
            Op::Read => dev.read_at(buf, offset),
            Op::Write => dev.write_at(buf, offset),
        };
        result.map_err(|e| io::Error::other(format!("{op:?} of {chunk} bytes at offset {offset}: {e}")))?;
        run.calls += 1;
        run.bytes += chunk;
        offset = (offset + chunk) % end;
    }
    run.elapsed = start.elapsed();
    Ok(run)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    use aoe_initiator::DeviceOptions;
    use aoe_target::backend::MemoryBackend;
    use aoe_target::export::{Export, ExportConfig};
    use aoe_target::server::Server;
    use aoe_transport::{memory, MacAddr};

    use super::*;

    const DISK: usize = 1 << 20;

    #[test]
    fn writes_wrap_around_and_land_in_order() {
        let (target_port, client_port) =
            memory::pair(1500, MacAddr([2, 0, 0, 0, 0, 1]), MacAddr([2, 0, 0, 0, 0, 2]));
        let export = Arc::new(Mutex::new(Export::new(ExportConfig::new(1, 0), MemoryBackend::new(DISK))));
        let stop = Arc::new(AtomicBool::new(false));
        let server = std::thread::spawn({
            let (stop, export) = (stop.clone(), export.clone());
            move || Server::new(target_port, vec![export]).run(&stop)
        });
        let options = DeviceOptions { max_window: Some(16), ..DeviceOptions::default() };
        let mut dev = Device::open(vec![Box::new(client_port)], 1, 0, &options).unwrap();

        // Calls of 384 KiB fit the 1 MiB disk twice: the last 256 KiB are never touched.
        let mut buf = vec![0xA5u8; 384 << 10];
        let write = sequential(&mut dev, Op::Write, &mut buf, Duration::from_millis(200)).unwrap();
        assert_eq!(write.bytes, write.calls * (384 << 10));
        assert!(write.elapsed >= Duration::from_millis(200), "{write:?}");
        let run = sequential(&mut dev, Op::Read, &mut buf, Duration::ZERO).unwrap();
        assert_eq!(run.calls, 1, "at least one call, even with no time");
        assert!(run.mb_per_s() > 0.0);

        let mut odd = vec![0u8; 1000];
        assert_eq!(
            sequential(&mut dev, Op::Read, &mut odd, Duration::ZERO).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        let mut big = vec![0u8; DISK + 512];
        assert!(sequential(&mut dev, Op::Read, &mut big, Duration::ZERO).is_err());

        stop.store(true, Ordering::Relaxed);
        server.join().unwrap().unwrap();
        let disk = export.lock().unwrap().backend().snapshot();
        let written = 2 * (384 << 10);
        let first = (write.calls.min(2) * (384 << 10)) as usize;
        assert!(disk[..first].iter().all(|&b| b == 0xA5));
        assert!(disk[written..].iter().all(|&b| b == 0), "nothing past the last whole call");
    }
}
