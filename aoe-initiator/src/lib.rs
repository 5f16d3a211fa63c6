//! An ATA over Ethernet (AoE) initiator.
//!
//! - [`session`]: the sans-IO protocol engine for one target (tags, window, round-trip
//!   estimate, retransmission, multipath), driven frame by frame with time as an argument.
//! - [`device`]: a blocking disk (`read_at`, `write_at`, `flush`, config, mask, reserve)
//!   over one or more [`aoe_transport::Transport`]s.
//! - [`driver`]: the blocking runtime that drives sessions over transports.
//! - [`endpoint`]: received frames parsed once and routed to the session of their target.
//! - [`shared`]: a device on a thread of its own, for many threads with requests in flight.
//! - [`mod@discover`]: find targets with a broadcast query config, then IDENTIFY them.
//! - [`error`]: what can go wrong, one line each.
//!
//! A disk on the in-memory link, served by `aoe-target` on a thread, written and read back
//! (on a real network, the transports are `aoe_transport::afpacket::AfPacket`s):
//!
//! ```
//! use std::sync::{atomic::AtomicBool, Arc, Mutex};
//! use aoe_initiator::{Device, DeviceOptions};
//! use aoe_proto::MacAddr;
//! use aoe_target::{backend::MemoryBackend, export::{Export, ExportConfig}, server::Server};
//!
//! let (target, initiator) =
//!     aoe_transport::memory::pair(9000, MacAddr([2, 0, 0, 0, 0, 1]), MacAddr([2, 0, 0, 0, 0, 2]));
//! let export = Export::new(ExportConfig::new(1, 0), MemoryBackend::new(1 << 20));
//! let mut server = Server::new(target, vec![Arc::new(Mutex::new(export))]);
//! let stop = Arc::new(AtomicBool::new(false));
//! let serving = std::thread::spawn({
//!     let stop = stop.clone();
//!     move || server.run(&stop)
//! });
//!
//! let mut disk = Device::open(vec![Box::new(initiator)], 1, 0, &DeviceOptions::default())?;
//! disk.write_at(b"hello", 1000)?;
//! let mut back = [0u8; 5];
//! disk.read_at(&mut back, 1000)?;
//! assert_eq!(&back, b"hello");
//!
//! stop.store(true, std::sync::atomic::Ordering::Relaxed);
//! serving.join().unwrap()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod device;
pub mod discover;
pub mod driver;
pub mod endpoint;
pub mod error;
pub mod session;
pub mod shared;

#[cfg(test)]
pub(crate) mod testing;

pub use device::{Device, DeviceOptions, Done, Io};
pub use discover::{discover, DiscoverOptions, TargetInfo};
pub use error::Error;
pub use session::{Event, OpId, Reply, Request, Session, SessionConfig};
