//! An ATA over Ethernet target: export files, block devices or memory as AoE disks.
//!
//! - [`export`]: the sans-IO engine: a received frame in ([`export::Received`], parsed
//!   once), an [`export::Outcome`] out: ignored (and why), answered, or waiting for sector
//!   I/O ([`export::SectorIo`]) that the caller completes inline, from a mapping of the
//!   backend, or on another thread.
//! - [`backend`]: where the sectors live (files, block devices, memory, windows of them),
//!   and the file mappings read answers are sent from without a copy.
//! - [`server`]: the loop that joins a transport, the engine and the backends.
//! - [`workers`]: threads that do sector I/O for a server, for backends slow enough to wait on.
//! - [`ordering`]: the order in which an export's I/O on those threads may run.
//!
//! ```
//! use aoe_proto::{AtaRepr, BodyRepr, Frame, FrameRepr, HeaderRepr, MacAddr, Body};
//! use aoe_target::backend::MemoryBackend;
//! use aoe_target::export::{Export, ExportConfig, Port, Received};
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
//! // Parse once, handle, and do the sector I/O inline.
//! let received = Received::parse(&request[..len])?;
//! let mut answer = [0u8; 9014];
//! let outcome = export.handle(&port, &received, &mut answer)?;
//! let n = outcome.complete(export.backend(), &mut answer)?.expect("an answer");
//! let frame = Frame::parse(&answer[..n])?;
//! assert_eq!(frame.header.tag(), 42);
//! let Body::Ata { data, .. } = frame.body else { unreachable!() };
//! assert_eq!(data.len(), 1024);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod backend;
pub mod export;
pub mod ordering;
pub mod server;
pub mod workers;
