//! Which interfaces the tool talks on: the ones named with `-i`, or by default every
//! interface that is up, carries Ethernet and is not a loopback.
//!
//! The list comes from `/proc/thread-self/net/dev`, which shows the network namespace of the
//! calling thread (sysfs shows the namespace of whoever mounted it, and `/proc/self/net` the
//! one of the process's main thread), so a thread that moved into another namespace (as
//! `aoe demo` does) sees its own interfaces.

use aoe_transport::afpacket::{interface_info, AfPacket, AfPacketOptions, OpenError};
use aoe_transport::{MacAddr, Transport};

use super::Failure;

/// The interfaces to use: `named` (in order, without repeats) or, if empty, the defaults.
pub(crate) fn choose(named: &[String]) -> Result<Vec<String>, Failure> {
    if named.is_empty() {
        let found = default_interfaces()?;
        if found.is_empty() {
            return Err(Failure::new(
                "no usable interface: none is up, Ethernet and not loopback (name one with -i IFACE)",
            ));
        }
        return Ok(found);
    }
    let mut out: Vec<String> = Vec::new();
    for name in named {
        if !out.contains(name) {
            out.push(name.clone());
        }
    }
    Ok(out)
}

/// Every interface of the calling thread's namespace that is up, Ethernet and not loopback,
/// sorted by name.
pub(crate) fn default_interfaces() -> Result<Vec<String>, Failure> {
    let table = std::fs::read_to_string("/proc/thread-self/net/dev")
        .or_else(|_| std::fs::read_to_string("/proc/self/net/dev"))
        .map_err(|e| Failure::new(format!("cannot list the network interfaces (/proc/net/dev): {e}")))?;
    let mut names: Vec<String> = proc_net_dev_names(&table)
        .into_iter()
        .filter(|name| match interface_info(name) {
            Ok(info) => info.up && info.mac != MacAddr([0; 6]) && name != "lo",
            Err(e) => {
                tracing::debug!(interface = %name, error = %e, "not used by default");
                false
            }
        })
        .collect();
    names.sort();
    Ok(names)
}

/// The interface names in the text of `/proc/net/dev` (two header lines, then
/// `name: counters...` per interface).
fn proc_net_dev_names(table: &str) -> Vec<String> {
    table
        .lines()
        .skip(2)
        .filter_map(|line| line.split_once(':'))
        .map(|(name, _)| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .collect()
}

/// Opens a raw AoE socket on each interface, receiving through a ring shared with the kernel.
/// The ring's memory is the kernel's from the start: 1 MiB per interface holds the 64 frames
/// of a full window at MTU 9000 and more.
pub(crate) fn open(names: &[String]) -> Result<Vec<Box<dyn Transport>>, Failure> {
    let opts = AfPacketOptions { rx_ring: true, recv_buffer: 1 << 20, ..AfPacketOptions::default() };
    names
        .iter()
        .map(|name| {
            AfPacket::open(name, opts.clone())
                .map(|link| Box::new(link) as Box<dyn Transport>)
                .map_err(open_failure)
        })
        .collect()
}

fn open_failure(e: OpenError) -> Failure {
    Failure::new(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_net_dev() {
        let table = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:    1234      10    0    0    0     0          0         0     1234      10    0    0    0     0       0          0
veth-init: 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0
  eth0:  5 1 0 0 0 0 0 0 5 1 0 0 0 0 0 0
";
        assert_eq!(proc_net_dev_names(table), ["lo", "veth-init", "eth0"]);
    }

    #[test]
    fn named_interfaces_keep_order_without_repeats() {
        let named: Vec<String> = ["b", "a", "b"].iter().map(|s| s.to_string()).collect();
        assert_eq!(choose(&named).unwrap(), ["b", "a"]);
    }
}
