//! Benchmarks for the aoe-rs crates, and the tools behind them.
//!
//! - [`client`]: a minimal raw AoE initiator that keeps a fixed number of requests in flight
//!   and counts bytes; the same client drives every target compared.
//! - [`initiator`]: aoe-initiator's `Device` under the same sequential load, to set our
//!   initiator library against the raw client.
//! - [`ceiling`]: how many full-size AoE frames per second a link carries to a receiver that
//!   only counts them.
//! - [`cpu`]: CPU time of a process or thread from `/proc`.
//! - [`stats`]: median and spread of repeated measurements.
//! - [`engine`]: the target engine alone, request frames in memory (the `target` bench).
//! - [`alloc_count`]: a counting global allocator, to show a path allocates nothing.
//! - [`compare`]: the `compare` tool: vblade and aoe-target side by side over veth pairs in
//!   private network namespaces, and aoe-initiator's `Device` beside the raw client.
//! - [`attach`]: the `attach` tool: a disk through `aoe attach --loop` (FUSE, loop device,
//!   O_DIRECT) beside `aoe bench` on the same aoe-target.
//! - [`disk`]: the `disk` tool: vblade and aoe-target exporting a file on a real disk with
//!   `O_DIRECT`, aoe-target with and without I/O threads.

pub mod alloc_count;
pub mod attach;
pub mod ceiling;
pub mod client;
pub mod compare;
pub mod cpu;
pub mod disk;
pub mod engine;
pub mod initiator;
pub mod report;
pub mod stats;

#[cfg(test)]
#[global_allocator]
static ALLOCATOR: alloc_count::CountingAlloc = alloc_count::CountingAlloc;
