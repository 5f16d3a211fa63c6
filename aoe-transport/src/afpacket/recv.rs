//! How an [`AfPacket`] receives: from its ring when it has one, else with `recvmmsg`, which
//! sleeps under the socket's receive timeout when the caller waits the same way each time and
//! is otherwise woken by `poll`.

// Calls recvmmsg; the block says why it is sound.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::ptr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aoe_proto::ethernet::HEADER_LEN;

use super::socket::{set_receive_timeout, take_socket_error};
use super::wait::{poll_one, wait_for};
use super::AfPacket;
use crate::FrameBatch;

/// How often a receive from the ring that finds nothing and may not wait (a busy-polling
/// loop) asks the socket for a pending error, each time a system call.
const RING_ERROR_CHECK: Duration = Duration::from_millis(1);
/// Shortest wait that may become the socket's receive timeout. The kernel keeps that timeout in
/// scheduler ticks (1 to 10 ms), rounded up, so a wait this long or longer ends at most a tick
/// late; shorter waits are deadlines (retransmissions) and `poll`, which keeps milliseconds.
const MIN_SOCKET_TIMEOUT: Duration = Duration::from_millis(20);
/// Longest wait that may become the socket's receive timeout; longer ones `poll`.
const MAX_SOCKET_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// What `recv_batch` knows about how to wait.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct WaitState {
    /// The socket's `SO_RCVTIMEO`, `None` for none (the kernel's default: wait forever).
    pub(super) socket_timeout: Option<Duration>,
    /// The timeout the previous `recv_batch` asked for, once there was one.
    pub(super) last_asked: Option<Option<Duration>>,
    /// The previous polled receive waited and then found a single frame, as a request and
    /// answer at queue depth 1 do: the next one polls before it tries.
    pub(super) poll_first: bool,
}

impl AfPacket {
    /// Receives into `batch` as [`recv_batch`](crate::Transport::recv_batch) says: from the
    /// ring when the socket has one; else takes what is queued when asked not to wait, sleeps
    /// in `recvmmsg` when [`may_block`](Self::may_block) allows it, and waits with `poll`
    /// otherwise.
    pub(super) fn receive(&mut self, batch: &mut FrameBatch, timeout: Option<Duration>) -> io::Result<usize> {
        batch.clear();
        if batch.capacity() == 0 {
            return Ok(0);
        }
        if self.ring.is_some() {
            return self.recv_ring(batch, timeout);
        }
        if timeout == Some(Duration::ZERO) {
            return Ok(self.recv_now(batch, libc::MSG_DONTWAIT)?.unwrap_or(0));
        }
        let start = Instant::now();
        if self.may_block(timeout) {
            match self.recv_now(batch, libc::MSG_WAITFORONE)? {
                // Only frames it skipped: wait out the rest of the time below.
                Some(0) => {}
                Some(n) => return Ok(n),
                None => return Ok(0),
            }
        }
        self.recv_polling(batch, start, timeout)
    }

    /// One `recvmmsg` into the free slots of `batch`: with `MSG_DONTWAIT` it takes what is
    /// queued now; with `MSG_WAITFORONE` on a blocking socket it first waits (at most the
    /// socket's receive timeout) for one frame. Ok(None) when nothing came, or a signal
    /// interrupted the wait; else the frames the batch now holds (0 when every frame that came
    /// was skipped).
    fn recv_now(&mut self, batch: &mut FrameBatch, flags: libc::c_int) -> io::Result<Option<usize>> {
        let base = batch.len();
        let prefix = self.rx.prefix();
        let msgs = self.rx.point_at(batch);
        let vlen = msgs.len() - base;
        // SAFETY: every entry of `msgs` points at the iovecs of `self.rx`: one that covers one
        // whole slot of `batch` (`point_at` just checked the slots' address and sizes), after
        // one for the scratch buffer `self.rx` owns when the socket has virtio_net_hdrs; entries
        // `base..` are its free slots. `batch` is borrowed mutably for the whole call, so the
        // kernel's writes overlap nothing else; the vectors are not touched meanwhile.
        let n = unsafe {
            libc::recvmmsg(
                self.fd.as_raw_fd(),
                msgs.as_mut_ptr().add(base),
                vlen as libc::c_uint,
                flags,
                ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(None),
                _ => Err(e),
            };
        }
        for (i, m) in msgs[base..base + n as usize].iter().enumerate() {
            // A virtio_net_hdr, when the socket has them, went to the scratch buffer first.
            let len = (m.msg_len as usize).saturating_sub(prefix);
            let truncated = m.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            // Runts cannot be AoE; a frame bigger than the slot would arrive cut short.
            if len >= HEADER_LEN && !truncated {
                batch.accept(base + i, len);
            }
        }
        Ok(Some(batch.len()))
    }

    /// Whether this receive may sleep in `recvmmsg` under the socket's receive timeout:
    /// the handle is alone on the socket and the timeout is what the socket has, or what the
    /// previous receive asked for too (a loop that waits the same way each time), which is
    /// then set.
    fn may_block(&mut self, timeout: Option<Duration>) -> bool {
        let repeated = self.wait.last_asked == Some(timeout);
        self.wait.last_asked = Some(timeout);
        let long = timeout.is_none_or(|t| (MIN_SOCKET_TIMEOUT..=MAX_SOCKET_TIMEOUT).contains(&t));
        if !long || Arc::strong_count(&self.handles) > 1 {
            return false;
        }
        if self.wait.socket_timeout == timeout {
            return true;
        }
        if !repeated {
            return false;
        }
        match set_receive_timeout(self.fd.as_fd(), timeout) {
            Ok(()) => {
                self.wait.socket_timeout = timeout;
                true
            }
            Err(_) => false,
        }
    }

    /// Receives from the ring: takes what waits there, else sleeps in `poll` until a frame
    /// comes or `timeout` passes. The interface going down shows as an error on the socket
    /// (`POLLERR`), which is taken and returned, as `recvmmsg` would return it. A receive that
    /// may not wait asks for that error at most every [`RING_ERROR_CHECK`], so that a
    /// busy-polling loop makes no system call while nothing comes.
    ///
    /// `poll` reports frames while the slot the kernel filled last is not back in its hands,
    /// which is also the case while another batch holds it: after a wake-up that found
    /// nothing because a batch holds a slot in the way, it sleeps [`RING_ERROR_CHECK`] before
    /// it looks again, rather than spin.
    fn recv_ring(&mut self, batch: &mut FrameBatch, timeout: Option<Duration>) -> io::Result<usize> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let Some(ring) = self.ring.as_mut() else { return Ok(0) };
        // The last wake-up found the ring empty: `poll` may be reporting a slot another batch
        // holds, and would report it again at once.
        let mut woken_for_nothing = false;
        loop {
            let taken = ring.drain_into(batch);
            if !batch.is_empty() {
                return Ok(batch.len());
            }
            let wait = match deadline {
                None => None,
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => Some(left),
                    // Time is up: report the interface going down, else that nothing came.
                    _ => {
                        let now = Instant::now();
                        if self.ring_error_checked.is_some_and(|t| now.duration_since(t) < RING_ERROR_CHECK) {
                            return Ok(0);
                        }
                        self.ring_error_checked = Some(now);
                        return take_socket_error(self.fd.as_fd()).map(|()| 0);
                    }
                },
            };
            if woken_for_nothing && taken == 0 {
                woken_for_nothing = false;
                if ring.held_in_the_way() {
                    std::thread::sleep(wait.map_or(RING_ERROR_CHECK, |w| w.min(RING_ERROR_CHECK)));
                } else {
                    // The kernel marks a slot it filled out of order (two CPUs filling the
                    // next two) before the one the reader waits at: that one comes soon.
                    std::thread::yield_now();
                }
                continue;
            }
            match poll_one(self.fd.as_fd(), libc::POLLIN, wait)? {
                Some(revents) if revents & libc::POLLERR != 0 => {
                    take_socket_error(self.fd.as_fd())?;
                    // An error-queue entry, not an error: nothing to take here, and waiting
                    // again would wake at once.
                    if revents & libc::POLLIN == 0 {
                        return Ok(0);
                    }
                }
                Some(_) => {}
                None => return Ok(0),
            }
            woken_for_nothing = true;
        }
    }

    /// Receives with `poll`: tries first when frames are likely queued, else waits first.
    fn recv_polling(
        &mut self,
        batch: &mut FrameBatch,
        start: Instant,
        timeout: Option<Duration>,
    ) -> io::Result<usize> {
        let deadline = timeout.and_then(|t| start.checked_add(t));
        let mut waited = false;
        let mut try_now = !self.wait.poll_first;
        loop {
            if try_now {
                if let Some(n @ 1..) = self.recv_now(batch, libc::MSG_DONTWAIT)? {
                    self.wait.poll_first = waited && n == 1;
                    return Ok(n);
                }
            }
            try_now = true;
            let wait = match deadline {
                None => None,
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => break,
                },
            };
            waited = true;
            if !wait_for(self.fd.as_fd(), libc::POLLIN, wait)? {
                break;
            }
        }
        self.wait.poll_first = true;
        Ok(0)
    }
}
