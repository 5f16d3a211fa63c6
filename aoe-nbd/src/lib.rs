//! The Network Block Device (NBD) protocol, sans-IO.
//!
//! - [`wire`]: every constant of the protocol and zero-copy views of its headers (the
//!   greeting, options and option replies, requests, simple and structured replies).
//! - [`server`]: the server side as a state machine: bytes from the client go in, events
//!   (read this, write that, flush) come out, and the replies the caller asks for are
//!   encoded into a buffer. It never touches a socket or a disk.
//!
//! - [`client`]: the client side as a state machine: the handshake for one export, then
//!   requests encoded with cookies and simple replies matched to them.
//!
//! The fixed newstyle handshake is spoken; oldstyle and TLS are not.
#![no_std]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)
)]

extern crate alloc;
#[cfg(any(test, feature = "std"))]
extern crate std;

pub mod client;
pub mod server;
pub mod wire;
