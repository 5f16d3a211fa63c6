//! The retransmission timer: RFC 6298's estimate with Karn's rule and back-off.

use std::time::Duration;

#[derive(Debug)]
pub(super) struct RttEstimator {
    /// Smoothed round-trip time and mean deviation in nanoseconds: integers, because a
    /// sample is taken per answer and `Duration` arithmetic normalises at every step.
    pub(super) srtt: Option<u64>,
    pub(super) rttvar: u64,
    pub(super) rto: Duration,
    pub(super) min: Duration,
    pub(super) max: Duration,
    /// Karn's back-off kept for new frames: doublings since the last clean sample.
    pub(super) shift: u32,
    /// The smallest sample so far, in nanoseconds.
    pub(super) min_rtt: Option<u64>,
}

/// Least time a frame is given to be overtaken by later ones before it counts as lost: a
/// target's I/O threads answer in any order, and a switch or a relay may hold a frame back
/// behind a few others.
const MIN_REORDER_WINDOW: Duration = Duration::from_millis(1);

/// Most doublings kept for new frames after losses (`rto_max` caps the wait anyway).
const MAX_KEPT_BACKOFF: u32 = 6;

impl RttEstimator {
    pub(super) fn new(initial: Duration, min: Duration, max: Duration) -> Self {
        RttEstimator {
            srtt: None,
            rttvar: 0,
            rto: initial.clamp(min, max),
            min,
            max,
            shift: 0,
            min_rtt: None,
        }
    }

    /// A flight lost frames: until a frame is answered without having been sent again, new
    /// frames wait twice as long (Karn's algorithm, second half). Without this, a target that
    /// slows down past the RTO would have every frame sent twice and, the samples of
    /// retransmitted frames being ambiguous, the estimate would never learn its new pace.
    pub(super) fn timed_out(&mut self) {
        self.shift = (self.shift + 1).min(MAX_KEPT_BACKOFF);
    }

    /// RFC 6298 section 2, with K = 4 and the clock granularity left to `min`.
    pub(super) fn sample(&mut self, r: Duration) {
        let r = u64::try_from(r.as_nanos()).unwrap_or(u64::MAX);
        self.min_rtt = Some(self.min_rtt.map_or(r, |m| m.min(r)));
        let srtt = match self.srtt {
            None => {
                self.rttvar = r / 2;
                r
            }
            Some(s) => {
                self.rttvar = self.rttvar.saturating_mul(3).saturating_add(s.abs_diff(r)) / 4;
                s.saturating_mul(7).saturating_add(r) / 8
            }
        };
        self.srtt = Some(srtt);
        let rto = srtt.saturating_add(self.rttvar.saturating_mul(4));
        self.rto = Duration::from_nanos(rto).clamp(self.min, self.max);
        self.shift = 0;
    }

    pub(super) fn srtt(&self) -> Option<Duration> {
        self.srtt.map(Duration::from_nanos)
    }

    /// The wait before a frame whose timer was doubled `doublings` times is declared lost:
    /// the frame's own back-off, or the back-off kept from silent timeouts if that is
    /// longer.
    pub(super) fn backoff(&self, doublings: u32) -> Duration {
        self.rto.saturating_mul(1u32 << doublings.max(self.shift).min(20)).min(self.max)
    }

    /// The smallest round trip seen, once a frame was answered.
    pub(super) fn min_rtt(&self) -> Option<Duration> {
        self.min_rtt.map(Duration::from_nanos)
    }

    /// How long after a later frame's answer an earlier frame may still be answered before
    /// it counts as lost: a quarter of the smoothed round trip (RACK, RFC 8985, takes a
    /// quarter of the smallest; under a full window the smoothed one also covers the
    /// queueing the frames of one flight meet), at least [`MIN_REORDER_WINDOW`], at most
    /// half the RTO.
    pub(super) fn reorder_window(&self) -> Duration {
        let quarter = self.srtt().map_or(Duration::ZERO, |s| s / 4);
        quarter.max(MIN_REORDER_WINDOW).min(self.rto / 2)
    }
}
