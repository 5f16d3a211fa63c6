//! Waiting with `poll`: for one socket, or for the first of several ([`wait_readable`]).

// Calls poll; every block says why it is sound.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::Duration;

/// Waits until `fd` is ready for `events` or `timeout` passes (`None`: no limit). Returns
/// false on timeout or when a signal interrupted the wait.
pub(crate) fn wait_for(
    fd: BorrowedFd<'_>,
    events: libc::c_short,
    timeout: Option<Duration>,
) -> io::Result<bool> {
    Ok(poll_one(fd, events, timeout)?.is_some())
}

/// Waits until `fd` is ready for `events` (or has an error or hang-up) or `timeout` passes
/// (`None`: no limit). Returns the events seen, `None` on timeout or when a signal
/// interrupted the wait.
pub(crate) fn poll_one(
    fd: BorrowedFd<'_>,
    events: libc::c_short,
    timeout: Option<Duration>,
) -> io::Result<Option<libc::c_short>> {
    let ms = timeout.map_or(-1, poll_millis);
    let mut pfd = libc::pollfd { fd: fd.as_raw_fd(), events, revents: 0 };
    // SAFETY: one live pollfd, count 1.
    let r = unsafe { libc::poll(&mut pfd, 1, ms) };
    if r < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted { Ok(None) } else { Err(e) };
    }
    Ok((r > 0).then_some(pfd.revents))
}

/// `timeout` as `poll` takes it: milliseconds, rounded up, or a wait of less than a
/// millisecond would spin.
fn poll_millis(timeout: Duration) -> libc::c_int {
    timeout.as_nanos().div_ceil(1_000_000).min(libc::c_int::MAX as u128) as libc::c_int
}

/// Most descriptors [`wait_readable`] waits on at once.
pub const MAX_WAIT_FDS: usize = 16;

/// Waits until one of `fds` is readable (or reports an error, such as its interface going
/// down) or `timeout` passes, and marks each readable one in `ready` (as many flags as
/// descriptors). Returns how many are ready: 0 on timeout or on an interrupting signal. At
/// most [`MAX_WAIT_FDS`] descriptors are watched; the rest are reported ready, so that a caller
/// polls them rather than misses them.
pub fn wait_readable<'a>(
    fds: impl IntoIterator<Item = BorrowedFd<'a>>,
    ready: &mut [bool],
    timeout: Duration,
) -> io::Result<usize> {
    let mut pfds = [libc::pollfd { fd: -1, events: 0, revents: 0 }; MAX_WAIT_FDS];
    let mut watched = 0;
    for (p, fd) in pfds.iter_mut().zip(fds) {
        *p = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        watched += 1;
    }
    let ms = poll_millis(timeout);
    // SAFETY: `pfds[..watched]` are live pollfd structs; `watched` ≤ the array's length.
    let r = unsafe { libc::poll(pfds.as_mut_ptr(), watched as libc::nfds_t, ms) };
    if r < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted { Ok(0) } else { Err(e) };
    }
    let mut count = 0;
    for (i, flag) in ready.iter_mut().enumerate() {
        *flag = pfds.get(i).filter(|_| i < watched).is_none_or(|p| p.revents != 0);
        count += usize::from(*flag);
    }
    Ok(count)
}
