//! System calls on an AF_XDP socket: making and binding it, setting and reading its options,
//! kicking its TX ring, waiting on it.

// Calls the kernel with pointers; every block says why it is sound.
#![allow(unsafe_code)]

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

pub(super) use crate::afpacket::socket::setsockopt;
use crate::afpacket::socket::socket;
use std::ptr;

/// `AF_XDP` from `<linux/socket.h>` (libc has it for glibc targets only).
pub(super) const AF_XDP: libc::c_int = 44;
/// `XDP_MAX_TX_SKB_BUDGET` from `<linux/if_xdp.h>` (Linux 6.17): how many descriptors one
/// `sendto` sends at most in copy mode (32 without it).
pub(super) const XDP_MAX_TX_SKB_BUDGET: libc::c_int = 9;

/// A new AF_XDP socket.
pub(super) fn xdp_socket() -> io::Result<OwnedFd> {
    socket(AF_XDP, libc::SOCK_RAW, 0)
}

/// Where in each ring's mapping the kernel put the indexes, flags and entries
/// (`XDP_MMAP_OFFSETS`).
pub(super) fn mmap_offsets(fd: BorrowedFd<'_>) -> io::Result<libc::xdp_mmap_offsets> {
    // SAFETY: xdp_mmap_offsets is a plain C struct of integers; all zeros is a valid value.
    let mut off: libc::xdp_mmap_offsets = unsafe { mem::zeroed() };
    let mut len = mem::size_of::<libc::xdp_mmap_offsets>() as libc::socklen_t;
    // SAFETY: the value and length pointers point at live locals of the sizes passed.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_XDP,
            libc::XDP_MMAP_OFFSETS,
            ptr::addr_of_mut!(off).cast(),
            &mut len,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // Kernels before 5.4 answer without the flags words (xdp_mmap_offsets_v1), which this
    // code needs: their layout differs.
    if len as usize != mem::size_of::<libc::xdp_mmap_offsets>() {
        return Err(io::Error::new(io::ErrorKind::Unsupported, "kernel too old: no ring flags (Linux 5.4+)"));
    }
    Ok(off)
}

/// Binds XDP socket `fd` to queue `queue` of interface `index`, in copy mode.
pub(super) fn bind(fd: BorrowedFd<'_>, index: u32, queue: u32) -> io::Result<()> {
    let addr = libc::sockaddr_xdp {
        sxdp_family: AF_XDP as u16,
        sxdp_flags: libc::XDP_COPY | libc::XDP_USE_NEED_WAKEUP,
        sxdp_ifindex: index,
        sxdp_queue_id: queue,
        sxdp_shared_umem_fd: 0,
    };
    // SAFETY: `addr` is a valid sockaddr_xdp and the length passed is its size.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            ptr::addr_of!(addr).cast(),
            mem::size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Asks the kernel to send what the TX ring holds (`sendto` with no data): in copy mode it
/// sends up to its budget of descriptors (32 unless raised) and answers `EAGAIN` when more
/// remain or it ran out of room, `EBUSY` when the device dropped a frame.
pub(super) fn kick(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: no buffer and no address: the kernel reads nothing through the null pointers.
    let r = unsafe { libc::sendto(fd.as_raw_fd(), ptr::null(), 0, libc::MSG_DONTWAIT, ptr::null(), 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
