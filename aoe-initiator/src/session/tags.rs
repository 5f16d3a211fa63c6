//! Frame slots and the tags that name them on the wire (see the [session docs](super#tags)).

use super::InFlight;

const SLOT_BITS: u32 = 16;
/// Most slots a session has: one per target buffer, below 2¹⁶ so that a slot index fits the
/// tag's low half.
pub(super) const MAX_SLOTS: usize = (1 << SLOT_BITS) - 1;

/// What a slot holds: the generation of its latest frame, and that frame while it is
/// outstanding.
#[derive(Debug, Default)]
pub(super) struct Slot {
    pub(super) generation: u16,
    pub(super) frame: Option<InFlight>,
}

/// Where an answer's tag points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lookup {
    /// The slot's current frame, still outstanding.
    Current(usize, InFlight),
    /// The slot's current frame, already answered.
    Answered,
    /// An earlier frame of the slot, or no slot at all.
    Stale,
}

/// The slots of a session, which of them are free, and the salt of its tags.
#[derive(Debug)]
pub(super) struct Tags {
    pub(super) slots: Vec<Slot>,
    free: Vec<u16>,
    salt: u32,
}

impl Tags {
    /// `count` slots (at most [`MAX_SLOTS`]), none in use.
    pub(super) fn new(count: usize, salt: u32) -> Self {
        let count = count.min(MAX_SLOTS);
        let mut tags = Tags { slots: (0..count).map(|_| Slot::default()).collect(), free: Vec::new(), salt };
        tags.free_all();
        tags
    }

    pub(super) fn len(&self) -> usize {
        self.slots.len()
    }

    pub(super) fn has_free(&self) -> bool {
        !self.free.is_empty()
    }

    /// A free slot for `frame`, under its next generation: answers to the slot's earlier
    /// frames become stale.
    pub(super) fn claim(&mut self, frame: InFlight) -> Option<u16> {
        let slot = self.free.pop()?;
        let s = &mut self.slots[usize::from(slot)];
        s.generation = s.generation.wrapping_add(1);
        s.frame = Some(frame);
        Some(slot)
    }

    /// Empties `slot` and makes it free again.
    pub(super) fn release(&mut self, slot: u16) {
        self.slots[usize::from(slot)].frame = None;
        self.free.push(slot);
    }

    /// Empties every slot.
    pub(super) fn free_all(&mut self) {
        for slot in &mut self.slots {
            slot.frame = None;
        }
        self.free.clear();
        // Popped from the end: slot 0 first.
        self.free.extend((0..self.slots.len() as u16).rev());
    }

    /// The tag on the wire of `slot`'s current frame.
    pub(super) fn tag(&self, slot: u16) -> u32 {
        let generation = self.slots[usize::from(slot)].generation;
        (u32::from(generation) << SLOT_BITS | u32::from(slot)) ^ self.salt
    }

    /// The frame an answer tagged `tag` would answer.
    pub(super) fn lookup(&self, tag: u32) -> Lookup {
        let tag = tag ^ self.salt;
        let (index, generation) = ((tag & 0xFFFF) as usize, (tag >> SLOT_BITS) as u16);
        match self.slots.get(index) {
            Some(s) if s.generation == generation => match s.frame {
                Some(frame) => Lookup::Current(index, frame),
                None => Lookup::Answered,
            },
            _ => Lookup::Stale,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn frame(op: u32) -> InFlight {
        InFlight {
            op,
            offset: 0,
            sectors: 1,
            path: 0,
            sent: Instant::now(),
            deadline: None,
            retries: 0,
            doublings: 0,
            seq: 0,
            answers_before: 0,
            extended: true,
        }
    }

    #[test]
    fn a_tag_names_one_frame_of_one_slot() {
        let mut tags = Tags::new(2, 0xDEAD_BEEF);
        let a = tags.claim(frame(1)).unwrap();
        let b = tags.claim(frame(2)).unwrap();
        assert_eq!((a, b), (0, 1));
        assert!(tags.claim(frame(3)).is_none(), "two slots only");
        let (ta, tb) = (tags.tag(a), tags.tag(b));
        assert_ne!(ta, tb);
        assert!(matches!(tags.lookup(ta), Lookup::Current(0, f) if f.op == 1));
        assert_eq!(tags.lookup(ta ^ 0xDEAD_BEEF), Lookup::Stale, "the salt is part of the tag");
        tags.release(a);
        assert_eq!(tags.lookup(ta), Lookup::Answered);
        let again = tags.claim(frame(4)).unwrap();
        assert_eq!(again, a, "the slot is reused");
        assert_eq!(tags.lookup(ta), Lookup::Stale, "its earlier frame's tag is stale");
        assert!(matches!(tags.lookup(tags.tag(again)), Lookup::Current(0, f) if f.op == 4));
    }

    #[test]
    fn two_salts_give_two_tags_for_the_same_slot() {
        let (mut one, mut two) = (Tags::new(4, 1), Tags::new(4, 2));
        let (a, b) = (one.claim(frame(1)).unwrap(), two.claim(frame(1)).unwrap());
        assert_ne!(one.tag(a), two.tag(b));
        assert_eq!(two.lookup(one.tag(a)), Lookup::Stale);
    }
}
