//! The command-line tools of aoe-rs, thin users of the libraries:
//!
//! - [`target`]: the `aoe-target` program, which serves files and block devices as AoE
//!   disks (vblade's arguments, or a TOML file of exports), with its settings and the
//!   service that opens and runs them.
//! - [`aoe`]: the `aoe` program, an initiator that finds, reads, writes, manages and
//!   measures AoE disks, and `aoe demo`.
//!
//! What both share (usage errors as one line, logging to stderr, MAC address arguments) is
//! in one private module. The binaries only call each tool's `main`.

pub mod aoe;
mod common;
pub mod target;
