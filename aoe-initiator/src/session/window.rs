//! The window: how many frames may be outstanding (see the [session docs](super#window)).

/// Additive increase, multiplicative decrease once per flight, capped by the target's
/// buffer count.
#[derive(Debug)]
pub(super) struct Window {
    size: usize,
    cap: usize,
    /// Answers counted towards the next increase.
    credit: usize,
    /// Transmission sequence number of the latest frame sent.
    send_seq: u64,
    /// Timeouts of frames sent at or before this sequence number do not shrink the window
    /// again: it was already halved for their flight.
    recover_seq: u64,
}

impl Window {
    /// A window open to `cap` frames (at least 1).
    pub(super) fn new(cap: usize) -> Self {
        let cap = cap.max(1);
        Window { size: cap, cap, credit: 0, send_seq: 0, recover_seq: 0 }
    }

    pub(super) fn size(&self) -> usize {
        self.size
    }

    /// Numbers a transmission: the sequence number [`lost`](Self::lost) is given later.
    pub(super) fn sent(&mut self) -> u64 {
        self.send_seq += 1;
        self.send_seq
    }

    /// A frame was answered: every full window of answers opens it by one.
    pub(super) fn answered(&mut self) {
        self.credit += 1;
        if self.credit >= self.size {
            self.credit = 0;
            self.size = (self.size + 1).min(self.cap);
        }
    }

    /// The transmission numbered `seq` timed out. Halves the window unless it was already
    /// halved for that flight; returns whether it did.
    pub(super) fn lost(&mut self, seq: u64) -> bool {
        if seq <= self.recover_seq {
            return false;
        }
        self.size = (self.size / 2).max(1);
        self.credit = 0;
        self.recover_seq = self.send_seq;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_once_per_flight_and_grows_back() {
        let mut w = Window::new(8);
        let flight: Vec<u64> = (0..8).map(|_| w.sent()).collect();
        assert!(w.lost(flight[0]));
        assert_eq!(w.size(), 4);
        assert!(!w.lost(flight[5]), "the same flight");
        let later = w.sent();
        assert!(w.lost(later));
        assert_eq!(w.size(), 2);
        for _ in 0..2 {
            w.answered();
        }
        assert_eq!(w.size(), 3);
        for _ in 0..100 {
            w.answered();
        }
        assert_eq!(w.size(), 8, "never past the cap");
    }
}
