//! System calls on an AF_XDP socket: making and binding it, setting and reading its options,
//! kicking its TX ring, waiting on it; and reading memory that may fault (`process_vm_readv`).

// Calls the kernel with pointers; every block says why it is sound.
#![allow(unsafe_code)]

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr;
use std::time::Duration;

/// `AF_XDP` from `<linux/socket.h>` (libc has it for glibc targets only).
pub(super) const AF_XDP: libc::c_int = 44;
/// `XDP_MAX_TX_SKB_BUDGET` from `<linux/if_xdp.h>` (Linux 6.17): how many descriptors one
/// `sendto` sends at most in copy mode (32 without it).
pub(super) const XDP_MAX_TX_SKB_BUDGET: libc::c_int = 9;
/// Most iovecs `process_vm_readv` takes on each side (`UIO_MAXIOV`).
pub(crate) const MAX_IOVECS: usize = 1024;

pub(super) fn xdp_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain system call with integer arguments.
    let fd = unsafe { libc::socket(AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a freshly opened descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sets socket option `name` at `level` to `value`, a plain C value of the type the option
/// takes.
pub(super) fn setsockopt<T: Copy>(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> io::Result<()> {
    // SAFETY: `value` is live for the call and the length passed is its size; the kernel only
    // reads it.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            ptr::from_ref(value).cast(),
            mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
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

/// Waits until `fd` is ready for `events` or `timeout` passes; a signal ends the wait early.
pub(super) fn poll(fd: BorrowedFd<'_>, events: libc::c_short, timeout: Duration) -> io::Result<()> {
    let ms = timeout.as_millis().min(libc::c_int::MAX as u128) as libc::c_int;
    let mut pfd = libc::pollfd { fd: fd.as_raw_fd(), events, revents: 0 };
    // SAFETY: one live pollfd, count 1.
    let r = unsafe { libc::poll(&mut pfd, 1, ms) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    Ok(())
}

/// Copies, within this process, the bytes of `from` in order into those of `to` (as many in
/// all; the pieces need not match) with `process_vm_readv`, which answers `EFAULT` where a
/// plain copy would raise `SIGBUS` (a mapping whose file shrank). Returns the bytes copied:
/// fewer than asked when it stopped at memory it could not read, then or within a piece.
///
/// # Safety
///
/// Every `to[i]` must be valid for writes of its length and touched by nothing else during
/// the call; `from` may point anywhere (unreadable memory is reported, not touched).
pub(crate) unsafe fn read_own_memory(to: &[libc::iovec], from: &[libc::iovec]) -> io::Result<usize> {
    debug_assert!(to.len() <= MAX_IOVECS && from.len() <= MAX_IOVECS);
    let pid = std::process::id() as libc::pid_t;
    // SAFETY: both arrays are live for the call; the kernel writes only the local buffers,
    // which the caller vouches for, and reads the remote ones through the page tables,
    // failing with EFAULT rather than faulting.
    let r = unsafe {
        libc::process_vm_readv(
            pid,
            to.as_ptr(),
            to.len() as libc::c_ulong,
            from.as_ptr(),
            from.len() as libc::c_ulong,
            0,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r as usize)
}
