//! The Network Block Device (NBD) protocol, sans-IO.
//!
//! - [`client`]: the client's fixed newstyle handshake and transmission phase.

pub mod client;
