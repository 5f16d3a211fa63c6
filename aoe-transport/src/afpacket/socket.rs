//! System calls on a socket: making, binding, and setting and reading options.

// Calls the kernel with pointers; every block says why it is sound.
#![allow(unsafe_code)]

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr;
use std::time::Duration;

pub(crate) fn socket(domain: libc::c_int, ty: libc::c_int, protocol: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: plain system call with integer arguments.
    let fd = unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, protocol) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a freshly opened descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Binds packet socket `fd` to interface `index` and EtherType `ethertype` (0: none, so that
/// the socket only sends).
pub(crate) fn bind(fd: BorrowedFd<'_>, index: u32, ethertype: u16) -> io::Result<()> {
    // SAFETY: sockaddr_ll is a plain C struct for which all zeros is a valid value.
    let mut addr: libc::sockaddr_ll = unsafe { mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as libc::c_ushort;
    addr.sll_protocol = ethertype.to_be();
    addr.sll_ifindex = index as libc::c_int;
    // SAFETY: `addr` is a valid sockaddr_ll and the length passed is its size.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            ptr::addr_of!(addr).cast(),
            mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

pub(crate) fn setsockopt_int(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    setsockopt(fd, level, name, &value)
}

/// Sets socket option `name` at `level` to `value`, a plain C value of the type the option
/// takes (an int, a timeval, a tpacket_req).
pub(crate) fn setsockopt<T: Copy>(
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

/// Sets the socket's receive timeout (`SO_RCVTIMEO`): how long a blocking receive waits;
/// `None` waits forever, and so does a wait shorter than a microsecond (callers pass none).
pub(crate) fn set_receive_timeout(fd: BorrowedFd<'_>, timeout: Option<Duration>) -> io::Result<()> {
    // The kernel reads a zero timeval as no limit.
    let t = timeout.unwrap_or(Duration::ZERO);
    let tv = libc::timeval {
        tv_sec: t.as_secs().min(libc::time_t::MAX as u64) as libc::time_t,
        tv_usec: t.subsec_micros() as libc::suseconds_t,
    };
    setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv)
}

/// Sets a socket buffer size, past the sysctl cap when privileged (`force`), else within it.
pub(crate) fn set_buffer(
    fd: BorrowedFd<'_>,
    force: libc::c_int,
    normal: libc::c_int,
    bytes: usize,
) -> io::Result<()> {
    // The kernel doubles the value it is given (for bookkeeping), so ask for half.
    let value = (bytes / 2).min(libc::c_int::MAX as usize) as libc::c_int;
    setsockopt_int(fd, libc::SOL_SOCKET, force, value)
        .or_else(|_| setsockopt_int(fd, libc::SOL_SOCKET, normal, value))
}

/// Takes the error pending on socket `fd` (`SO_ERROR`, which reading clears) and returns it;
/// Ok when there is none.
pub(crate) fn take_socket_error(fd: BorrowedFd<'_>) -> io::Result<()> {
    let mut error: libc::c_int = 0;
    let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: the value and length pointers point at live locals of the sizes passed.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            ptr::addr_of_mut!(error).cast(),
            &mut len,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    match error {
        0 => Ok(()),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

/// Attaches classic BPF `program` to socket `fd` (`SO_ATTACH_FILTER`), replacing any filter
/// it had: from then on the kernel queues only the frames the program keeps.
pub(crate) fn attach_filter(fd: BorrowedFd<'_>, program: &[crate::filter::BpfInsn]) -> io::Result<()> {
    let len = u16::try_from(program.len()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // `BpfInsn` is laid out as `struct sock_filter` (repr(C): u16, u8, u8, u32).
    let fprog = libc::sock_fprog { len, filter: program.as_ptr().cast_mut().cast() };
    setsockopt(fd, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &fprog)
}

/// Lets frames sent on packet socket `fd` go straight to the device's driver, past the
/// queueing discipline (`PACKET_QDISC_BYPASS`, Linux 3.14).
pub(crate) fn set_qdisc_bypass(fd: BorrowedFd<'_>) -> io::Result<()> {
    setsockopt_int(fd, libc::SOL_PACKET, libc::PACKET_QDISC_BYPASS, 1)
}

/// Frames the kernel may take per busy-poll round with [`set_busy_poll`] (its own default is
/// 8): about one batch of the serving loop.
const BUSY_POLL_BUDGET: libc::c_int = 64;

/// Has blocking receives and `poll` on socket `fd` busy-poll the device's receive queue for
/// up to `time` (`SO_BUSY_POLL`, in microseconds), and, where the kernel has them (Linux 5.11),
/// prefer busy-polling to interrupts (`SO_PREFER_BUSY_POLL`) and take up to
/// [`BUSY_POLL_BUDGET`] frames a round (`SO_BUSY_POLL_BUDGET`, which needs `CAP_NET_ADMIN`).
/// Fails only when `SO_BUSY_POLL` itself is refused (a time above the current one needs
/// `CAP_NET_ADMIN`).
pub(crate) fn set_busy_poll(fd: BorrowedFd<'_>, time: Duration) -> io::Result<()> {
    let us = time.as_micros().min(libc::c_int::MAX as u128) as libc::c_int;
    setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_BUSY_POLL, us)?;
    for (name, value) in [(libc::SO_PREFER_BUSY_POLL, 1), (libc::SO_BUSY_POLL_BUDGET, BUSY_POLL_BUDGET)] {
        match setsockopt_int(fd, libc::SOL_SOCKET, name, value) {
            Err(e) if !matches!(e.raw_os_error(), Some(libc::ENOPROTOOPT | libc::EINVAL | libc::EPERM)) => {
                return Err(e);
            }
            _ => {}
        }
    }
    Ok(())
}
