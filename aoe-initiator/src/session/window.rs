//! The window: how many frames may be outstanding (see the [session docs](super#window)).

/// Additive increase; a cut in half per loss episode only when the losses look like overload,
/// capped by the target's buffer count.
#[derive(Debug)]
pub(super) struct Window {
    size: usize,
    cap: usize,
    /// Answers counted towards the next increase.
    credit: usize,
    /// Transmission sequence number of the latest frame sent.
    send_seq: u64,
    /// Losses of frames sent at or before this sequence number belong to the current loss
    /// episode: the frames that were outstanding when its first loss was found.
    recover_seq: u64,
    /// The window when the current episode began.
    episode_size: usize,
    /// Frames of the current episode found lost so far.
    episode_losses: usize,
    /// The window was already cut for the current episode.
    episode_cut: bool,
    /// A timeout with nothing answered was already seen in the current episode.
    episode_silent: bool,
}

/// The smallest window whose losses say anything beyond chance: at a fifth of the frames lost
/// each way, two frames of two are lost one time in eight.
const MIN_SAMPLE: usize = 8;

/// What a loss means for the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Verdict {
    /// The window was cut in half.
    pub(super) cut: bool,
    /// The first timeout with nothing answered of its episode: the timer backs off.
    pub(super) back_off: bool,
}

impl Window {
    /// A window open to `cap` frames (at least 1).
    pub(super) fn new(cap: usize) -> Self {
        let cap = cap.max(1);
        Window {
            size: cap,
            cap,
            credit: 0,
            send_seq: 0,
            recover_seq: 0,
            episode_size: cap,
            episode_losses: 0,
            episode_cut: false,
            episode_silent: false,
        }
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

    /// The transmission numbered `seq` is lost. `silent`: its timer ran out with nothing at
    /// all answered since it was sent (the target or the path is overwhelmed or gone), as
    /// opposed to a loss among answers that keep coming (found early, or a timer that ran out
    /// while other frames were answered).
    ///
    /// The window is cut in half at most once per episode (the frames outstanding at its
    /// first loss): at once for a silent timeout, else only once more than three quarters
    /// of the episode's window (of at least [`MIN_SAMPLE`] frames) is lost, as when a queue
    /// overflows. Random loss stays below
    /// that, even a fifth of the frames lost each way (36 % of round trips): a cut at half
    /// would come every few episodes there, and feed on itself as the window shrinks.
    pub(super) fn lost(&mut self, seq: u64, silent: bool) -> Verdict {
        if seq > self.recover_seq {
            self.recover_seq = self.send_seq;
            self.episode_size = self.size;
            self.episode_losses = 0;
            self.episode_cut = false;
            self.episode_silent = false;
        }
        self.episode_losses += 1;
        let mut verdict = Verdict::default();
        if silent && !self.episode_silent {
            self.episode_silent = true;
            verdict.back_off = true;
        }
        let overflow = self.episode_size >= MIN_SAMPLE && 4 * self.episode_losses > 3 * self.episode_size;
        if !self.episode_cut && (silent || overflow) {
            self.episode_cut = true;
            self.size = (self.size / 2).max(1);
            self.credit = 0;
            verdict.cut = true;
        }
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silent_timeouts_halve_once_per_episode_and_it_grows_back() {
        let mut w = Window::new(8);
        let flight: Vec<u64> = (0..8).map(|_| w.sent()).collect();
        assert_eq!(w.lost(flight[0], true), Verdict { cut: true, back_off: true });
        assert_eq!(w.size(), 4);
        assert_eq!(w.lost(flight[5], true), Verdict::default(), "the same episode");
        let later = w.sent();
        assert!(w.lost(later, true).cut);
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

    #[test]
    fn isolated_losses_keep_the_window_and_more_than_three_quarters_lost_cuts_it() {
        let mut w = Window::new(16);
        let flight: Vec<u64> = (0..16).map(|_| w.sent()).collect();
        for &seq in &flight[..12] {
            assert_eq!(w.lost(seq, false), Verdict::default());
        }
        assert_eq!(w.size(), 16, "three quarters of the episode lost: still random loss");
        assert_eq!(w.lost(flight[12], false), Verdict { cut: true, back_off: false });
        assert_eq!(w.size(), 8);
        assert!(!w.lost(flight[13], false).cut, "once per episode");
        // A new episode: one loss among the next flight keeps the window, and so does losing
        // a whole window too small to tell chance from overload.
        let next: Vec<u64> = (0..8).map(|_| w.sent()).collect();
        assert_eq!(w.lost(next[3], false), Verdict::default());
        assert_eq!(w.size(), 8);
        let mut small = Window::new(4);
        let flight: Vec<u64> = (0..4).map(|_| small.sent()).collect();
        for seq in flight {
            assert!(!small.lost(seq, false).cut);
        }
        assert_eq!(small.size(), 4);
    }
}
