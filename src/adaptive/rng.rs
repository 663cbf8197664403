//! A tiny, deterministic generator for the algorithms' jitter and
//! sampling: a seed means the same numbers on every platform and release.

/// The seed used for 0 (xorshift's fixed point) and by default.
const DEFAULT_SEED: u64 = 0x9E37_79B9_7F4A_7C15;

/// xorshift64*.
#[derive(Debug, Clone)]
pub(super) struct XorShift(u64);

impl XorShift {
    /// A generator seeded with `seed` (0 takes the default seed).
    pub(super) fn new(seed: u64) -> Self {
        Self(if seed == 0 { DEFAULT_SEED } else { seed })
    }

    pub(super) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `[0, 1)`.
    pub(super) fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `[0.5, 1)`.
    pub(super) fn jitter(&mut self) -> f64 {
        0.5 + 0.5 * self.unit()
    }

    /// Uniform in `[0, n)`; `n` must not be 0.
    pub(super) fn below(&mut self, n: u64) -> u64 {
        // Multiply-shift: unbiased enough for sampling, and no division.
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_and_below_are_in_range() {
        let mut rng = XorShift::new(0);
        for _ in 0..10_000 {
            let j = rng.jitter();
            assert!((0.5..1.0).contains(&j), "{j}");
            assert!(rng.below(7) < 7);
        }
        assert_eq!(XorShift::new(0).next(), XorShift::new(DEFAULT_SEED).next());
    }
}
