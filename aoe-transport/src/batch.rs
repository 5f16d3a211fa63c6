//! [`FrameBatch`]: a fixed set of frame buffers that transports fill and drain in one call.

// Frames lent by a receive ring are read where the kernel put them; each block says why that
// is sound.
#![allow(unsafe_code)]

use std::ptr::NonNull;
use std::sync::Arc;

use aoe_proto::sizing::ATA_DATA_OFFSET;

/// Slots start a multiple of this many bytes apart.
const SLOT_ALIGN: usize = 1024;
/// Where, within [`SLOT_ALIGN`] bytes, the sector data of an ATA frame in a slot starts.
///
/// The kernel copies frames in and out of slots, and sectors between slots and the page cache,
/// with `rep movsb`, which runs several times slower when the destination lies less than 64
/// bytes after the source modulo 4 KiB (a store then seems to alias the loads just ahead of
/// it). Page-cache sectors start at multiples of 512 bytes within a page, and the kernel keeps
/// the payload of a large frame (after its 14-byte header) in pages from offset 0, received
/// or sent (sent with a virtio_net_hdr: the sectors, after the 36 bytes of headers). With every
/// slot's sector data 512 bytes past a multiple of 1024, sector copies are 0 modulo 512 apart,
/// received payload 490 + 1024k, sent payload 22 + 512k with k odd (with a virtio_net_hdr,
/// 512 + 1024k): none of them in the slow range. (Measured at MTU 9000: the receive copy of a write request was
/// a quarter of the target's CPU time with the data 30 bytes past a page boundary, 3% here.)
const DATA_PHASE: usize = 512;

/// A fixed-capacity batch of Ethernet frames in one contiguous allocation.
///
/// Each of the [`capacity`](Self::capacity) slots holds one frame of up to
/// [`frame_capacity`](Self::frame_capacity) bytes; the first [`len`](Self::len) slots hold
/// frames. Nothing is allocated after [`new`](Self::new), so a batch can be reused for every
/// receive or send on a fast path. Slots are laid out for the kernel's copies: the sector data
/// of an ATA frame (byte 36 on) starts at the same offset modulo 1024 in every slot.
///
/// Frames are whole Ethernet frames (destination, source, EtherType, payload) without the frame
/// check sequence. A `frame_capacity` of `14 + mtu` holds any frame the link can carry.
///
/// A transport with a receive ring may leave a frame where the kernel put it rather than copy
/// it into its slot; the batch then holds that ring slot until it is cleared or dropped, and
/// reads and writes the frame there. Either way the frame is the batch's alone. Held slots are
/// slots the kernel cannot fill, and it stops at the first it meets: clear a received batch
/// once its frames are read, and keep none aside ([`Clone`] copies the frames into slots of
/// its own).
pub struct FrameBatch {
    buf: Box<[u8]>,
    lens: Box<[usize]>,
    /// For each frame, where it lies when it was lent rather than copied into its slot;
    /// `None` from `len` on.
    loans: Box<[Option<Loan>]>,
    /// Who lent the frames in `loans`, while any is held.
    lender: Option<Arc<dyn Lender>>,
    len: usize,
    frame_capacity: usize,
    /// Bytes from one slot's start to the next: `frame_capacity` rounded up to [`SLOT_ALIGN`].
    stride: usize,
    /// Where slot 0 starts in `buf`.
    first: usize,
}

impl FrameBatch {
    /// A batch of `frames` slots of `frame_capacity` bytes each.
    ///
    /// # Panics
    ///
    /// If the batch's size in bytes overflows `usize`.
    pub fn new(frames: usize, frame_capacity: usize) -> Self {
        let overflow = "FrameBatch size overflows usize";
        let stride = frame_capacity.checked_next_multiple_of(SLOT_ALIGN).expect(overflow);
        let slots = frames.checked_mul(stride).expect(overflow);
        // Room to move slot 0 to its place within the first SLOT_ALIGN bytes.
        let bytes = if slots == 0 { 0 } else { slots.checked_add(SLOT_ALIGN).expect(overflow) };
        let buf = vec![0; bytes].into_boxed_slice();
        let data = (buf.as_ptr() as usize).wrapping_add(ATA_DATA_OFFSET) % SLOT_ALIGN;
        let first = if slots == 0 { 0 } else { (DATA_PHASE + SLOT_ALIGN - data) % SLOT_ALIGN };
        let loans = (0..frames).map(|_| None).collect();
        FrameBatch {
            buf,
            lens: vec![0; frames].into_boxed_slice(),
            loans,
            lender: None,
            len: 0,
            frame_capacity,
            stride,
            first,
        }
    }

    /// Frame `i` (`i < len()`).
    fn frame(&self, i: usize) -> &[u8] {
        match &self.loans[i] {
            // SAFETY: a lent frame's `lens[i]` bytes at `at` are valid and the batch's alone
            // until the loan is returned (the contract of `lend`), which takes `&mut self`.
            Some(loan) => unsafe { std::slice::from_raw_parts(loan.at.as_ptr(), self.lens[i]) },
            None => {
                let start = self.start(i);
                &self.buf[start..start + self.lens[i]]
            }
        }
    }

    /// Frame `i` (`i < len()`), mutable.
    fn frame_mut(&mut self, i: usize) -> &mut [u8] {
        match &self.loans[i] {
            // SAFETY: as in `frame`; `&mut self` makes this the only reference to it.
            Some(loan) => unsafe { std::slice::from_raw_parts_mut(loan.at.as_ptr(), self.lens[i]) },
            None => {
                let start = self.start(i);
                &mut self.buf[start..start + self.lens[i]]
            }
        }
    }

    /// Adds the `len` bytes at `at` as the next frame, left where they are, lent by `lender`
    /// under `slot`, which gets it back (`Lender::release`) when the batch is cleared or
    /// dropped. Returns false, lending nothing, when the batch is full, `len` is 0 or more
    /// than `frame_capacity`, or the batch holds frames of another lender.
    ///
    /// # Safety
    ///
    /// Until `lender.release(slot)` is called, `len` bytes from `at` must be valid for reads
    /// and writes and touched by nothing but this batch; the memory must stay valid for as
    /// long as `lender` lives.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(crate) unsafe fn lend(
        &mut self,
        lender: &Arc<dyn Lender>,
        at: NonNull<u8>,
        len: usize,
        slot: usize,
    ) -> bool {
        if self.is_full() || len == 0 || len > self.frame_capacity {
            return false;
        }
        match &self.lender {
            Some(held) if !Arc::ptr_eq(held, lender) => return false,
            Some(_) => {}
            None => self.lender = Some(Arc::clone(lender)),
        }
        self.lens[self.len] = len;
        self.loans[self.len] = Some(Loan { at, slot });
        self.len += 1;
        true
    }

    /// Hands every lent frame back to its lender.
    fn return_loans(&mut self) {
        let Some(lender) = self.lender.take() else { return };
        for loan in self.loans[..self.len].iter_mut().filter_map(Option::take) {
            lender.release(loan.slot);
        }
    }

    /// Where slot `i` starts in `buf`.
    fn start(&self, i: usize) -> usize {
        self.first + i * self.stride
    }

    /// The most frames the batch holds.
    pub fn capacity(&self) -> usize {
        self.lens.len()
    }

    /// Bytes per slot: the longest frame the batch holds.
    pub fn frame_capacity(&self) -> usize {
        self.frame_capacity
    }

    /// Number of frames in the batch.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the batch holds no frame.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True when every slot holds a frame.
    pub fn is_full(&self) -> bool {
        self.len == self.capacity()
    }

    /// Forgets every frame; the slots are kept.
    pub fn clear(&mut self) {
        self.return_loans();
        self.len = 0;
    }

    /// Frame `i`, or `None` when `i >= len()`.
    pub fn get(&self, i: usize) -> Option<&[u8]> {
        if i >= self.len {
            return None;
        }
        Some(self.frame(i))
    }

    /// Frame `i`, mutable, or `None` when `i >= len()`. Its length cannot change.
    pub fn get_mut(&mut self, i: usize) -> Option<&mut [u8]> {
        if i >= self.len {
            return None;
        }
        Some(self.frame_mut(i))
    }

    /// The frames, in order.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        (0..self.len).map(move |i| self.frame(i))
    }

    /// Fills the next free slot in place.
    ///
    /// `f` receives the whole slot (`frame_capacity` bytes, contents unspecified: whatever a
    /// previous frame left) and returns the length of the frame it wrote. A length of 0 means
    /// nothing was pushed. Returns false, without calling `f`, when the batch is full.
    ///
    /// # Panics
    ///
    /// If `f` returns a length greater than `frame_capacity`.
    pub fn push_with(&mut self, f: impl FnOnce(&mut [u8]) -> usize) -> bool {
        if self.is_full() {
            return false;
        }
        let start = self.start(self.len);
        let n = f(&mut self.buf[start..start + self.frame_capacity]);
        assert!(n <= self.frame_capacity, "frame length {n} exceeds the slot size {}", self.frame_capacity);
        if n > 0 {
            self.lens[self.len] = n;
            self.len += 1;
        }
        true
    }

    /// Copies `frame` into the next free slot. Returns false when the batch is full or the
    /// frame is empty or longer than `frame_capacity`.
    pub fn push(&mut self, frame: &[u8]) -> bool {
        if frame.is_empty() || frame.len() > self.frame_capacity {
            return false;
        }
        self.push_with(|slot| {
            slot[..frame.len()].copy_from_slice(frame);
            frame.len()
        })
    }

    /// The address of slot 0 and the distance in bytes from one slot to the next: slot `i`
    /// starts `i * stride` bytes after slot 0 and holds `frame_capacity` bytes. A receiver has
    /// the kernel write frames into the free slots (from `len()` on) and then calls
    /// [`accept`](Self::accept). Both stay the same for the batch's life.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(crate) fn slots_mut_ptr(&mut self) -> (*mut u8, usize) {
        let first = self.first;
        (self.buf.as_mut_ptr().wrapping_add(first), self.stride)
    }

    /// Makes the first `len` bytes of slot `slot` (an index into the whole batch, at least
    /// `len()`) the next frame, moving them down if slots were skipped. A receiver that wrote
    /// into the free slots ([`slots_mut_ptr`](Self::slots_mut_ptr)) accepts the slots it keeps
    /// in increasing order, which compacts the batch.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(crate) fn accept(&mut self, slot: usize, len: usize) {
        assert!(self.len <= slot && slot < self.capacity() && len <= self.frame_capacity);
        if slot != self.len {
            let (from, to) = (self.start(slot), self.start(self.len));
            self.buf.copy_within(from..from + len, to);
        }
        self.lens[self.len] = len;
        self.len += 1;
    }
}

/// Where a lent frame lies, and the lender's name for its slot.
struct Loan {
    at: NonNull<u8>,
    slot: usize,
}

// SAFETY: a lent frame is the batch's alone until returned (the contract of `lend`), so the
// batch may move to, and be read from, any thread like the bytes it owns.
unsafe impl Send for Loan {}
// SAFETY: as for Send; shared access only reads.
unsafe impl Sync for Loan {}

/// Memory that frames are lent from ([`FrameBatch::lend`]): a receive ring, which takes slot
/// `slot` back when the batch lets go of its frame.
pub(crate) trait Lender: Send + Sync {
    /// Takes slot `slot` back; the batch no longer touches its memory.
    fn release(&self, slot: usize);
}

impl Drop for FrameBatch {
    fn drop(&mut self) {
        self.return_loans();
    }
}

impl Clone for FrameBatch {
    /// A batch of the same size holding the same frames (laid out for its own address).
    fn clone(&self) -> Self {
        let mut copy = FrameBatch::new(self.capacity(), self.frame_capacity);
        for frame in self.iter() {
            copy.push(frame);
        }
        copy
    }
}

impl core::fmt::Debug for FrameBatch {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("FrameBatch")
            .field("len", &self.len)
            .field("capacity", &self.capacity())
            .field("frame_capacity", &self.frame_capacity)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_get_iter_clear() {
        let mut b = FrameBatch::new(3, 16);
        assert_eq!((b.capacity(), b.frame_capacity()), (3, 16));
        assert!(b.is_empty() && !b.is_full());
        assert!(b.push(&[1, 2, 3]));
        assert!(b.push(&[4; 16]));
        assert!(!b.push(&[5; 17]), "longer than a slot");
        assert!(!b.push(&[]), "empty");
        assert!(b.push(&[6]));
        assert!(b.is_full());
        assert!(!b.push(&[7]));
        assert_eq!(b.len(), 3);
        assert_eq!(b.get(0), Some(&[1, 2, 3][..]));
        assert_eq!(b.get(1), Some(&[4; 16][..]));
        assert_eq!(b.get(3), None);
        let all: Vec<&[u8]> = b.iter().collect();
        assert_eq!(all, vec![&[1, 2, 3][..], &[4; 16][..], &[6][..]]);
        b.get_mut(2).unwrap()[0] = 9;
        assert_eq!(b.get(2), Some(&[9][..]));
        b.clear();
        assert!(b.is_empty());
        assert_eq!(b.get(0), None);
        assert_eq!(b.iter().count(), 0);
    }

    #[test]
    fn push_with_sees_whole_slot_and_zero_means_nothing() {
        let mut b = FrameBatch::new(2, 8);
        assert!(b.push_with(|slot| {
            assert_eq!(slot.len(), 8);
            0
        }));
        assert!(b.is_empty());
        assert!(b.push_with(|slot| {
            slot[..2].copy_from_slice(b"hi");
            2
        }));
        assert_eq!(b.get(0), Some(&b"hi"[..]));
        assert!(b.push(b"x"));
        let mut called = false;
        assert!(!b.push_with(|_| {
            called = true;
            1
        }));
        assert!(!called);
    }

    #[test]
    #[should_panic(expected = "exceeds the slot size")]
    fn push_with_rejects_overlong_length() {
        FrameBatch::new(1, 4).push_with(|_| 5);
    }

    #[test]
    fn accept_compacts_skipped_slots() {
        let mut b = FrameBatch::new(4, 4);
        for i in 0..4u8 {
            assert!(b.push(&[b'0' + i; 4]));
        }
        // Slots keep their bytes when the batch forgets them, as after a receive into them.
        b.clear();
        assert!(b.push(b"a"));
        // Keep slots 1 and 3, skip 2 (a runt, say).
        b.accept(1, 2);
        b.accept(3, 3);
        let all: Vec<&[u8]> = b.iter().collect();
        assert_eq!(all, vec![&b"a"[..], &b"11"[..], &b"333"[..]]);
    }

    /// The layout the kernel's copies want (see [`DATA_PHASE`]), in every slot, at every
    /// size, and in a clone too.
    #[test]
    fn sector_data_starts_512_past_a_multiple_of_1024_in_every_slot() {
        for (frames, size) in [(1, 60), (64, 1514), (64, 9014), (3, 1024), (5, 1025), (2, 4096)] {
            let mut b = FrameBatch::new(frames, size);
            for i in 0..frames {
                assert!(b.push(&vec![i as u8; size]));
            }
            let copy = b.clone();
            for batch in [&b, &copy] {
                for (i, frame) in batch.iter().enumerate() {
                    assert_eq!(frame, &vec![i as u8; size][..]);
                    let data = frame.as_ptr() as usize + ATA_DATA_OFFSET;
                    assert_eq!(data % SLOT_ALIGN, DATA_PHASE, "{frames} x {size}: slot {i}");
                }
            }
        }
    }

    /// Records the slots handed back.
    #[derive(Default)]
    struct Recorder(std::sync::Mutex<Vec<usize>>);

    impl Lender for Recorder {
        fn release(&self, slot: usize) {
            self.0.lock().unwrap().push(slot);
        }
    }

    #[test]
    fn lent_frames_are_read_in_place_and_handed_back_on_clear_and_drop() {
        let mut ring = vec![0u8; 64];
        ring[..4].copy_from_slice(b"abcd");
        ring[32..35].copy_from_slice(b"xyz");
        let recorder = Arc::new(Recorder::default());
        let lender: Arc<dyn Lender> = recorder.clone();
        let base = ring.as_mut_ptr();
        let at = |i: usize| NonNull::new(base.wrapping_add(i)).unwrap();
        let mut b = FrameBatch::new(3, 8);
        // SAFETY: `ring` outlives the batch and nothing else touches it meanwhile.
        unsafe {
            assert!(b.lend(&lender, at(0), 4, 7));
            assert!(b.push(b"own"));
            assert!(!b.lend(&lender, at(32), 9, 8), "longer than a slot");
            assert!(b.lend(&lender, at(32), 3, 9));
            assert!(!b.lend(&lender, at(40), 1, 10), "full");
        }
        let all: Vec<&[u8]> = b.iter().collect();
        assert_eq!(all, vec![&b"abcd"[..], &b"own"[..], &b"xyz"[..]]);
        b.get_mut(0).unwrap()[0] = b'A';
        assert_eq!(b.clone().iter().collect::<Vec<_>>(), vec![&b"Abcd"[..], &b"own"[..], &b"xyz"[..]]);
        assert!(recorder.0.lock().unwrap().is_empty(), "nothing handed back while held");
        b.clear();
        assert_eq!(*recorder.0.lock().unwrap(), [7, 9]);
        // SAFETY: as above.
        unsafe { assert!(b.lend(&lender, at(1), 2, 11)) };
        drop(b);
        assert_eq!(*recorder.0.lock().unwrap(), [7, 9, 11]);
        assert_eq!(&ring[..4], b"Abcd", "written in place");
    }

    #[test]
    fn zero_sized_batches_are_harmless() {
        let mut b = FrameBatch::new(0, 64);
        assert!(b.is_full() && b.is_empty());
        assert!(!b.push(b"x"));
        let mut b = FrameBatch::new(2, 0);
        assert!(!b.push(b"x"));
    }
}
