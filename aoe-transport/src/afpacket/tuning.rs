//! The kernel socket variants an [`AfPacket`] may be opened with
//! ([`AfPacketOptions::qdisc_bypass`], [`AfPacketOptions::kernel_busy_poll`]): each is asked
//! of the kernel once, and a socket it is refused to works as it would without it.

use std::io;
use std::os::fd::BorrowedFd;
use std::time::Duration;

use super::socket::{set_busy_poll, set_qdisc_bypass};
use super::AfPacket;
#[cfg(doc)]
use super::AfPacketOptions;

/// What was asked for, and why the kernel refused what it refused.
#[derive(Debug, Default)]
pub(super) struct Tuning {
    qdisc_bypass: bool,
    qdisc_bypass_refused: Option<io::Error>,
    busy_poll_refused: Option<io::Error>,
}

impl Tuning {
    /// Sets what is asked for on socket `fd`, which receives and sends.
    pub(super) fn apply(fd: BorrowedFd<'_>, qdisc_bypass: bool, busy_poll: Option<Duration>) -> Tuning {
        Tuning {
            qdisc_bypass,
            qdisc_bypass_refused: if qdisc_bypass { set_qdisc_bypass(fd).err() } else { None },
            busy_poll_refused: busy_poll.and_then(|time| set_busy_poll(fd, time).err()),
        }
    }

    /// Whether frames were asked to bypass the qdisc.
    pub(super) fn qdisc_bypass(&self) -> bool {
        self.qdisc_bypass
    }

    /// Sets on socket `fd`, which only sends, what this socket's sends were asked for.
    pub(super) fn for_sender(&self, fd: BorrowedFd<'_>) -> Tuning {
        Tuning::apply(fd, self.qdisc_bypass, None)
    }
}

/// A handle on the same socket ([`AfPacket::try_clone`]) has what the socket has.
impl Clone for Tuning {
    fn clone(&self) -> Self {
        // The errors are the kernel's answers to setsockopt, so each is an OS error.
        let copy = |e: &Option<io::Error>| {
            e.as_ref().and_then(io::Error::raw_os_error).map(io::Error::from_raw_os_error)
        };
        Tuning {
            qdisc_bypass: self.qdisc_bypass,
            qdisc_bypass_refused: copy(&self.qdisc_bypass_refused),
            busy_poll_refused: copy(&self.busy_poll_refused),
        }
    }
}

impl AfPacket {
    /// Why the kernel refused to let this socket's frames bypass the qdisc
    /// ([`AfPacketOptions::qdisc_bypass`]), if it was asked and did; they go through it then.
    pub fn qdisc_bypass_refused(&self) -> Option<&io::Error> {
        self.tuning.qdisc_bypass_refused.as_ref()
    }

    /// Why the kernel refused to busy-poll for this socket
    /// ([`AfPacketOptions::kernel_busy_poll`]), if it was asked and did. The two newer options
    /// that go with it (`SO_PREFER_BUSY_POLL`, `SO_BUSY_POLL_BUDGET`) are not reported when a
    /// kernel lacks them or refuses them for want of privilege.
    pub fn kernel_busy_poll_refused(&self) -> Option<&io::Error> {
        self.tuning.busy_poll_refused.as_ref()
    }
}
