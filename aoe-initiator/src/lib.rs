//! An ATA over Ethernet (AoE) initiator.
//!
//! - [`session`]: the sans-IO protocol engine for one target (tags, window, round-trip
//!   estimate, retransmission, multipath), driven frame by frame with time as an argument.
//! - [`error`]: what can go wrong, one line each.

pub mod error;
pub mod session;

#[cfg(test)]
pub(crate) mod testing;

pub use error::Error;
pub use session::{Event, OpId, Reply, Request, Session, SessionConfig};
