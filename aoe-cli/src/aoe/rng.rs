//! Random test data and offsets for `aoe demo` and `aoe bench`: the workspace's one
//! generator (splitmix64, [`aoe_transport::rng::SplitMix64`]), seeded from the clock. Not
//! for anything secret.

use std::time::{SystemTime, UNIX_EPOCH};

pub(crate) use aoe_transport::rng::SplitMix64 as Rng;

/// A generator seeded from the clock and the process id.
pub(crate) fn from_time() -> Rng {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    Rng(nanos ^ u64::from(std::process::id()) << 32)
}
