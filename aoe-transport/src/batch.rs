//! [`FrameBatch`]: a fixed set of frame buffers that transports fill and drain in one call.

/// A fixed-capacity batch of Ethernet frames in one contiguous allocation.
///
/// Slot `i` occupies bytes `i * frame_capacity .. (i + 1) * frame_capacity` of the buffer; the
/// first [`len`](Self::len) slots hold frames. Nothing is allocated after [`new`](Self::new), so a
/// batch can be reused for every receive or send on a fast path.
///
/// Frames are whole Ethernet frames (destination, source, EtherType, payload) without the frame
/// check sequence. A `frame_capacity` of `14 + mtu` holds any frame the link can carry.
#[derive(Clone)]
pub struct FrameBatch {
    buf: Box<[u8]>,
    lens: Box<[usize]>,
    len: usize,
    frame_capacity: usize,
}

impl FrameBatch {
    /// A batch of `frames` slots of `frame_capacity` bytes each.
    ///
    /// # Panics
    ///
    /// If `frames * frame_capacity` overflows `usize`.
    pub fn new(frames: usize, frame_capacity: usize) -> Self {
        let bytes = frames.checked_mul(frame_capacity).expect("FrameBatch size overflows usize");
        FrameBatch {
            buf: vec![0; bytes].into_boxed_slice(),
            lens: vec![0; frames].into_boxed_slice(),
            len: 0,
            frame_capacity,
        }
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
        self.len = 0;
    }

    /// Frame `i`, or `None` when `i >= len()`.
    pub fn get(&self, i: usize) -> Option<&[u8]> {
        if i >= self.len {
            return None;
        }
        let start = i * self.frame_capacity;
        Some(&self.buf[start..start + self.lens[i]])
    }

    /// Frame `i`, mutable, or `None` when `i >= len()`. Its length cannot change.
    pub fn get_mut(&mut self, i: usize) -> Option<&mut [u8]> {
        if i >= self.len {
            return None;
        }
        let start = i * self.frame_capacity;
        Some(&mut self.buf[start..start + self.lens[i]])
    }

    /// The frames, in order.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        (0..self.len).map(move |i| {
            let start = i * self.frame_capacity;
            &self.buf[start..start + self.lens[i]]
        })
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
        let start = self.len * self.frame_capacity;
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

    /// The address of slot 0; slot `i` starts `i * frame_capacity` bytes after it. A receiver
    /// has the kernel write frames into the free slots (from `len()` on) and then calls
    /// [`accept`](Self::accept). The address stays the same for the batch's life.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(crate) fn slots_mut_ptr(&mut self) -> *mut u8 {
        self.buf.as_mut_ptr()
    }

    /// Makes the first `len` bytes of slot `slot` (an index into the whole batch, at least
    /// `len()`) the next frame, moving them down if slots were skipped. A receiver that wrote
    /// into the free slots ([`slots_mut_ptr`](Self::slots_mut_ptr)) accepts the slots it keeps
    /// in increasing order, which compacts the batch.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(crate) fn accept(&mut self, slot: usize, len: usize) {
        assert!(self.len <= slot && slot < self.capacity() && len <= self.frame_capacity);
        if slot != self.len {
            let from = slot * self.frame_capacity;
            let to = self.len * self.frame_capacity;
            self.buf.copy_within(from..from + len, to);
        }
        self.lens[self.len] = len;
        self.len += 1;
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

    #[test]
    fn zero_sized_batches_are_harmless() {
        let mut b = FrameBatch::new(0, 64);
        assert!(b.is_full() && b.is_empty());
        assert!(!b.push(b"x"));
        let mut b = FrameBatch::new(2, 0);
        assert!(!b.push(b"x"));
    }
}
