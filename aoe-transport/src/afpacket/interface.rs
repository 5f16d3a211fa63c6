//! What the kernel says about a network interface: index, MAC, MTU and state.

// Calls ioctl; every block says why it is sound.
#![allow(unsafe_code)]

use std::io;
use std::mem;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use aoe_proto::ethernet::MacAddr;

use super::socket::socket;
use super::OpenError;

/// What the kernel says about a network interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceInfo {
    /// Interface name, e.g. `eth0`.
    pub name: String,
    /// Interface index.
    pub index: u32,
    /// Hardware address.
    pub mac: MacAddr,
    /// MTU: payload bytes after the 14-byte Ethernet header.
    pub mtu: usize,
    /// True when the interface is administratively up (`IFF_UP`).
    pub up: bool,
    /// True for a loopback interface (`IFF_LOOPBACK`), which reaches no other host.
    pub loopback: bool,
}

/// Index, MAC, MTU and state of interface `ifname`. Needs no privilege.
pub fn interface_info(ifname: &str) -> Result<InterfaceInfo, OpenError> {
    let sock = socket(libc::AF_INET, libc::SOCK_DGRAM, 0).map_err(|error| OpenError::Io {
        op: "opening a socket to query the interface",
        ifname: ifname.to_owned(),
        error,
    })?;
    let fd = sock.as_fd();
    let index = ifreq_ioctl(fd, ifname, libc::SIOCGIFINDEX, "reading the interface index")?;
    let flags = ifreq_ioctl(fd, ifname, libc::SIOCGIFFLAGS, "reading the interface flags")?;
    let hw = ifreq_ioctl(fd, ifname, libc::SIOCGIFHWADDR, "reading the MAC address")?;
    let mtu = ifreq_ioctl(fd, ifname, libc::SIOCGIFMTU, "reading the MTU")?;
    // SAFETY: each ioctl above filled the union member that is read from its answer.
    let (index, flags, hw, mtu) = unsafe {
        (
            index.ifr_ifru.ifru_ifindex,
            flags.ifr_ifru.ifru_flags,
            hw.ifr_ifru.ifru_hwaddr,
            mtu.ifr_ifru.ifru_mtu,
        )
    };
    if !matches!(hw.sa_family, libc::ARPHRD_ETHER | libc::ARPHRD_LOOPBACK) {
        return Err(OpenError::NotEthernet(ifname.to_owned()));
    }
    let mut mac = [0u8; 6];
    for (m, b) in mac.iter_mut().zip(hw.sa_data) {
        *m = b as u8;
    }
    Ok(InterfaceInfo {
        name: ifname.to_owned(),
        index: index as u32,
        mac: MacAddr(mac),
        mtu: mtu.max(0) as usize,
        up: flags & libc::IFF_UP as libc::c_short != 0,
        loopback: flags & libc::IFF_LOOPBACK as libc::c_short != 0,
    })
}

/// Runs a `SIOCGIF*` ioctl for `ifname` and returns the filled request.
fn ifreq_ioctl(
    fd: BorrowedFd<'_>,
    ifname: &str,
    request: libc::c_ulong,
    op: &'static str,
) -> Result<libc::ifreq, OpenError> {
    let no_such = || OpenError::NoSuchInterface(ifname.to_owned());
    // Names are at most IFNAMSIZ - 1 bytes plus the terminating NUL.
    if ifname.is_empty() || ifname.len() >= libc::IFNAMSIZ || ifname.contains('\0') {
        return Err(no_such());
    }
    // SAFETY: ifreq is a plain C struct (with a union) for which all zeros is a valid value.
    let mut req: libc::ifreq = unsafe { mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(ifname.bytes()) {
        *d = s as libc::c_char;
    }
    // SAFETY: `req` is a valid, NUL-terminated ifreq that outlives the call; SIOCGIF* requests
    // write only within it.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), request as _, &mut req) };
    if r < 0 {
        let error = io::Error::last_os_error();
        return Err(match error.raw_os_error() {
            Some(libc::ENODEV | libc::ENXIO) => no_such(),
            _ => OpenError::Io { op, ifname: ifname.to_owned(), error },
        });
    }
    Ok(req)
}
