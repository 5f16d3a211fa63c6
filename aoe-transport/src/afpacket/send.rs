//! How an [`AfPacket`] sends: through its transmit ring when it has one, else with one
//! `sendmmsg` per batch, retried while the send queue is full.

// Calls sendmmsg; the block says why it is sound.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use aoe_proto::ethernet::HEADER_LEN;

use super::wait::wait_for;
use super::AfPacket;
use crate::FrameBatch;

/// How long `send_batch` keeps retrying a full send queue before it gives up.
const SEND_STALL_LIMIT: Duration = Duration::from_secs(1);
/// How long a send retries frames the device drops (`ENOBUFS`) before it counts them lost.
const DEVICE_DROP_PATIENCE: Duration = Duration::from_millis(2);

impl AfPacket {
    /// Sends `batch`, frame `i` followed by `tails[i]`, as
    /// [`send_with_tails`](crate::Transport::send_with_tails) on [`AfPacket`] says.
    pub(super) fn send_frames(&mut self, batch: &FrameBatch, tails: &[&[u8]]) -> io::Result<usize> {
        if let Some(ring) = self.tx_ring.as_mut() {
            return ring.send(batch, tails, HEADER_LEN + self.info.mtu);
        }
        let total = batch.len();
        let msgs = self.tx.point_at(batch, tails);
        let mut sent = 0;
        let mut stalled: Option<Instant> = None;
        while sent < total {
            // SAFETY: entries `sent..total` of `msgs` point at live iovecs covering frames of
            // `batch` and the slices of `tails`, both borrowed for the whole call; the kernel
            // only reads them.
            let r = unsafe {
                libc::sendmmsg(
                    self.fd.as_raw_fd(),
                    msgs.as_mut_ptr().add(sent),
                    (total - sent) as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if r > 0 {
                sent += r as usize;
                stalled = None;
                continue;
            }
            let e = io::Error::last_os_error();
            let give_up = |e| if sent > 0 { Ok(sent) } else { Err(e) };
            let full_since = *stalled.get_or_insert_with(Instant::now);
            match e.raw_os_error() {
                Some(libc::EINTR) => {}
                // The device dropped the frame: its queue is full, or it cannot send at all
                // (a veth whose peer is down). Give a full queue a moment to drain; past
                // that the frame is lost as on the wire and the rest of the batch goes on,
                // without waiting again in this call.
                Some(libc::ENOBUFS) if full_since.elapsed() < DEVICE_DROP_PATIENCE => {
                    wait_for(self.fd.as_fd(), 0, Some(Duration::from_micros(100)))?;
                }
                Some(libc::ENOBUFS) => sent += 1,
                Some(libc::EFAULT) => sent += 1,
                Some(libc::EAGAIN) => {
                    let Some(left) = SEND_STALL_LIMIT.checked_sub(full_since.elapsed()) else {
                        return give_up(e);
                    };
                    wait_for(self.fd.as_fd(), libc::POLLOUT, Some(left))?;
                }
                _ => return give_up(e),
            }
        }
        Ok(sent)
    }
}
