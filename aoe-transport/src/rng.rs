//! [`SplitMix64`]: the one small deterministic generator of the workspace.
//!
//! Fault plans ([`fault`](crate::fault)), the in-memory link's impairments, test payloads and
//! benchmark workloads all draw from it, so that a seed means the same thing everywhere. It is
//! not for cryptography.

/// The splitmix64 generator (Steele, Lea and Flood, "Fast splittable pseudorandom number
/// generators", 2014): 64 bits of state, a full period of 2^64, and output good enough to
/// decide which frames to mangle or to fill a test disk.
///
/// The state is public so that a seed can be written `SplitMix64(seed)`; the same seed always
/// gives the same sequence, on every platform.
///
/// ```
/// use aoe_transport::rng::SplitMix64;
///
/// let mut a = SplitMix64(7);
/// let mut b = SplitMix64::new(7);
/// assert_eq!(a.next_u64(), b.next_u64());
/// let mut buf = [0u8; 12];
/// a.fill(&mut buf);
/// assert!(a.below(10) < 10);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// A generator started from `seed`.
    pub const fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A float in `[0, 1)` made of 53 random bits; draws one value.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// True with probability `p` (never for `p <= 0` or NaN, always for `p >= 1`). Draws
    /// exactly one value whatever `p` is, so that how many values a sequence of calls uses
    /// does not depend on the probabilities; callers that want a perfect link to draw
    /// nothing test `p > 0.0` first.
    pub fn chance(&mut self, p: f64) -> bool {
        self.next_f64() < p
    }

    /// A value in `0..n`, by multiply-and-shift (bias below 2^-32 for any `n` under 2^32);
    /// `n` of 0 gives 0. Draws one value.
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Fills `buf` with successive outputs, each written little-endian; the last one is cut
    /// short when `buf.len()` is not a multiple of 8. So the bytes of one `fill` of `n` bytes
    /// are a prefix of those of one `fill` of `m >= n` bytes from the same state.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let word = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_outputs() {
        // splitmix64 seeded with 0 (reference values of the published algorithm).
        let mut r = SplitMix64(0);
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(r.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        assert_eq!(r.next_u64(), 0x06C4_5D18_8009_454F);
    }

    #[test]
    fn fill_is_prefix_stable() {
        let (mut a, mut b) = (SplitMix64(3), SplitMix64(3));
        let mut short = [0u8; 13];
        let mut long = [0u8; 24];
        a.fill(&mut short);
        b.fill(&mut long);
        assert_eq!(short, long[..13]);
    }

    #[test]
    fn chance_and_below_stay_in_range() {
        let mut r = SplitMix64(9);
        assert!(!(0..1000).any(|_| r.chance(0.0)));
        assert!((0..1000).all(|_| r.chance(1.0)));
        assert!(!r.chance(f64::NAN));
        let hits = (0..10_000).filter(|_| r.chance(0.25)).count();
        assert!((2_300..=2_700).contains(&hits), "{hits}");
        assert!((0..1000).all(|_| r.below(7) < 7));
        assert_eq!(r.below(0), 0);
    }
}
