//! An ATA over Ethernet target: export files, block devices or memory as AoE disks.
//!
//! - [`export`]: the sans-IO engine: a request frame in, an answer frame out.
//! - [`backend`]: where the sectors live (files, block devices, memory, windows of them).
//! - [`server`]: the loop that joins a transport, the engine and the backends.
//! - [`workers`]: threads that do sector I/O for a server, for backends slow enough to wait on.
//! - [`ordering`]: the order in which an export's I/O on those threads may run.
//!
//! ```
//! use aoe_proto::{AtaRepr, BodyRepr, Frame, FrameRepr, HeaderRepr, MacAddr, Body};
//! use aoe_target::backend::MemoryBackend;
//! use aoe_target::export::{Export, ExportConfig, Port};
//!
//! let mut export = Export::new(ExportConfig::new(1, 0), MemoryBackend::new(1 << 20));
//! let port = Port::new(MacAddr([2, 0, 0, 0, 0, 1]), 9000);
//!
//! let mut request = [0u8; 64];
//! let len = FrameRepr {
//!     dst: port.mac,
//!     src: MacAddr([2, 0, 0, 0, 0, 2]),
//!     header: HeaderRepr::request(1, 0, 42),
//!     body: BodyRepr::Ata { header: AtaRepr::read(0, 2, true), data: &[] },
//! }
//! .emit_padded(&mut request)?;
//!
//! let mut answer = [0u8; 9014];
//! let n = export.handle(&port, &request[..len], &mut answer).expect("an answer");
//! let frame = Frame::parse(&answer[..n])?;
//! assert_eq!(frame.header.tag(), 42);
//! let Body::Ata { data, .. } = frame.body else { unreachable!() };
//! assert_eq!(data.len(), 1024);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs)]

pub mod backend;
pub mod cli;
pub mod export;
pub mod ordering;
pub mod server;
pub mod service;
pub mod settings;
pub mod workers;
