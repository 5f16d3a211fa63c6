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
