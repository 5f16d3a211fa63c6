//! The `recvmmsg` and `sendmmsg` vectors: message headers and iovecs that point at the slots
//! of a batch, and the `virtio_net_hdr` a socket with `PACKET_VNET_HDR` puts before each frame.

// Builds the C structs the kernel reads and writes; every block says why it is sound.
#![allow(unsafe_code)]

use std::mem;
use std::ptr;

use aoe_proto::sizing::ATA_DATA_OFFSET;

use crate::FrameBatch;

/// Bytes of the `virtio_net_hdr` that `PACKET_VNET_HDR` puts before every frame the socket
/// sends or receives.
pub(super) const VNET_HEADER_LEN: usize = 10;

/// `recvmmsg` headers and iovecs pointing at the slots of one receive batch, after a scratch
/// buffer for the `virtio_net_hdr` of a socket that has them.
///
/// They are set up once per batch (slot address and sizes) rather than on every call: the
/// kernel writes only `msg_len` and `msg_flags`, which are read back for the frames it
/// received and never otherwise, so nothing needs resetting between calls.
pub(super) struct RxVectors {
    msgs: Vec<libc::mmsghdr>,
    iovs: Vec<[libc::iovec; 2]>,
    /// Where the kernel puts each frame's virtio_net_hdr, which is not read: an allocation
    /// of VNET_HEADER_LEN bytes owned here (a raw pointer, so that moving `RxVectors` keeps
    /// the iovecs' copies of it valid) and freed on drop; `None` when the socket has none.
    scratch: Option<ptr::NonNull<[u8; VNET_HEADER_LEN]>>,
    /// Slot memory the vectors point at: address, slot count, bytes per slot.
    points_at: (usize, usize, usize),
}

impl RxVectors {
    pub(super) fn new(vnet: bool) -> Self {
        RxVectors {
            msgs: Vec::new(),
            iovs: Vec::new(),
            scratch: vnet.then(|| ptr::NonNull::from(Box::leak(Box::new([0; VNET_HEADER_LEN])))),
            points_at: (0, 0, 0),
        }
    }

    /// Bytes each received message has before its frame.
    pub(super) fn prefix(&self) -> usize {
        if self.scratch.is_some() {
            VNET_HEADER_LEN
        } else {
            0
        }
    }

    /// The headers, one per slot of `batch`, pointed at its slots.
    pub(super) fn point_at(&mut self, batch: &mut FrameBatch) -> &mut [libc::mmsghdr] {
        let (slots, size) = (batch.capacity(), batch.frame_capacity());
        let (base, stride) = batch.slots_mut_ptr();
        if self.points_at != (base as usize, slots, size) {
            // SAFETY: mmsghdr and iovec are plain C structs (integers and raw pointers) for
            // which all zeros is a valid value.
            let (msg, iov) = unsafe { (mem::zeroed(), mem::zeroed()) };
            self.msgs.clear();
            self.iovs.clear();
            self.msgs.resize(slots, msg);
            self.iovs.resize(slots, [iov, iov]);
            let scratch = self.scratch.map(|s| s.as_ptr().cast::<u8>());
            for (i, (m, iov)) in self.msgs.iter_mut().zip(self.iovs.iter_mut()).enumerate() {
                // Slot `i` (`size` bytes from `base + i * stride`) lies within the batch's buffer.
                let slot = libc::iovec { iov_base: base.wrapping_add(i * stride).cast(), iov_len: size };
                m.msg_hdr.msg_iov = iov.as_mut_ptr();
                m.msg_hdr.msg_iovlen = match scratch {
                    Some(s) => {
                        *iov = [libc::iovec { iov_base: s.cast(), iov_len: VNET_HEADER_LEN }, slot];
                        2
                    }
                    None => {
                        iov[0] = slot;
                        1
                    }
                };
            }
            self.points_at = (base as usize, slots, size);
        }
        &mut self.msgs
    }
}

impl Drop for RxVectors {
    fn drop(&mut self) {
        if let Some(scratch) = self.scratch.take() {
            // SAFETY: the pointer came from `Box::leak` in `new` and is freed once, here.
            drop(unsafe { Box::from_raw(scratch.as_ptr()) });
        }
    }
}

/// `sendmmsg` headers, each with up to three iovecs (the virtio_net_hdr when the socket has
/// them, the frame, then its tail if it has one), grown to the largest batch sent.
pub(super) struct TxVectors {
    msgs: Vec<libc::mmsghdr>,
    iovs: Vec<[libc::iovec; 3]>,
    /// One virtio_net_hdr per frame.
    heads: Vec<[u8; VNET_HEADER_LEN]>,
    /// Whether the socket sends a virtio_net_hdr before each frame.
    pub(super) vnet: bool,
}

impl TxVectors {
    pub(super) fn new(vnet: bool) -> Self {
        TxVectors { msgs: Vec::new(), iovs: Vec::new(), heads: Vec::new(), vnet }
    }

    /// The headers for the frames of `batch` and their `tails`, pointed at them.
    pub(super) fn point_at(&mut self, batch: &FrameBatch, tails: &[&[u8]]) -> &mut [libc::mmsghdr] {
        let n = batch.len();
        if self.msgs.len() < n {
            // SAFETY: as in `RxVectors::point_at`.
            let (msg, iov) = unsafe { (mem::zeroed(), mem::zeroed()) };
            // Growing moves the iovecs: point every header again.
            self.msgs.resize(n, msg);
            self.iovs.resize(n, [iov; 3]);
            self.heads.resize(n, [0; VNET_HEADER_LEN]);
            for (m, iov) in self.msgs.iter_mut().zip(self.iovs.iter_mut()) {
                m.msg_hdr.msg_iov = iov.as_mut_ptr();
            }
        }
        let vnet = usize::from(self.vnet);
        let vectors = self.msgs.iter_mut().zip(self.iovs.iter_mut().zip(self.heads.iter_mut()));
        for (i, ((m, (iov, head)), frame)) in vectors.zip(batch.iter()).enumerate() {
            let tail = tails.get(i).copied().unwrap_or_default();
            if self.vnet {
                let whole = frame.len() + tail.len();
                *head = vnet_header(whole.min(ATA_DATA_OFFSET));
                iov[0] = libc::iovec { iov_base: head.as_mut_ptr().cast(), iov_len: VNET_HEADER_LEN };
            }
            // The kernel only reads from a send buffer, whatever the pointer's type says.
            iov[vnet] = libc::iovec { iov_base: frame.as_ptr().cast_mut().cast(), iov_len: frame.len() };
            m.msg_hdr.msg_iovlen = vnet + 1;
            if !tail.is_empty() {
                iov[vnet + 1] =
                    libc::iovec { iov_base: tail.as_ptr().cast_mut().cast(), iov_len: tail.len() };
                m.msg_hdr.msg_iovlen = vnet + 2;
            }
        }
        &mut self.msgs[..n]
    }
}

/// A `virtio_net_hdr` (no offloads, no segmentation) asking for the frame's first `linear`
/// bytes in the packet's own buffer. A packet socket reads its fields in the machine's byte
/// order (legacy virtio).
fn vnet_header(linear: usize) -> [u8; VNET_HEADER_LEN] {
    let mut h = [0; VNET_HEADER_LEN];
    h[2..4].copy_from_slice(&u16::try_from(linear).unwrap_or(u16::MAX).to_ne_bytes());
    h
}

// SAFETY: the raw pointers inside point at our own iovecs and at the slots of a batch; they
// are dereferenced (by the kernel) only within a call that holds `&mut AfPacket` and borrows
// that batch, after checking they still match it.
unsafe impl Send for RxVectors {}
// SAFETY: as for `RxVectors`; each send points the iovecs at the batch it sends.
unsafe impl Send for TxVectors {}

impl core::fmt::Debug for RxVectors {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RxVectors").field("slots", &self.msgs.len()).finish()
    }
}

impl core::fmt::Debug for TxVectors {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TxVectors").field("slots", &self.msgs.len()).finish()
    }
}
