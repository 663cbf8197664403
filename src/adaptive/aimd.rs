//! AIMD: additive increase, multiplicative decrease, driven by loss.
//!
//! The formula, the parameters and their defaults are documented on
//! [`Aimd`] (this module is private, so its docs would never render).

use std::time::Duration;

use super::{LimitAlgorithm, Sample};

/// A loss-based limit: additive increase, multiplicative decrease, after
/// Netflix concurrency-limits' `AIMDLimit`.
///
/// It ignores latency except against a timeout: every overload, and every
/// round trip longer than [`timeout`](Self::timeout), counts as a drop and
/// shrinks the limit by a ratio; every other sample from a well-used limit
/// grows it by one.
///
/// # Formula
///
/// With `L` the current limit, for each sample:
///
/// ```text
/// if overload or rtt > timeout:  L = max(min, floor(L * backoff))
/// else if in_flight * 2 >= L:    L = min(max, L + 1)
/// else:                          L unchanged   (under-used: no evidence)
/// ```
///
/// The answer is always clamped to `[min, max]` (and never below 1).
///
/// # Parameters
///
/// | Parameter | Builder | Default | Meaning |
/// |---|---|---|---|
/// | initial | [`initial`](Self::initial) | 20 | Limit to start with (clamped to `[min, max]`). |
/// | min | [`min`](Self::min) | 20 | Lowest limit; at least 1. |
/// | max | [`max`](Self::max) | 200 | Highest limit; if below `min`, `max` wins. |
/// | backoff | [`backoff`](Self::backoff) | 0.9 | Ratio the limit is multiplied by on a drop, in `(0, 1)`. |
/// | timeout | [`timeout`](Self::timeout) | 5 s | A round trip longer than this counts as a drop. |
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use tower_concurrency::adaptive::{Aimd, LimitAlgorithm};
///
/// let aimd = Aimd::new().initial(50).min(10).max(500).backoff(0.8).timeout(Duration::from_secs(2));
/// assert_eq!(aimd.initial_limit(), 50);
/// ```
#[derive(Debug, Clone)]
pub struct Aimd {
    initial: usize,
    min: usize,
    max: usize,
    backoff: f64,
    timeout: Duration,
    /// The current limit; `None` until the first update.
    limit: Option<usize>,
}

impl Default for Aimd {
    fn default() -> Self {
        Self {
            initial: 20,
            min: 20,
            max: 200,
            backoff: 0.9,
            timeout: Duration::from_secs(5),
            limit: None,
        }
    }
}

impl Aimd {
    /// The defaults: initial 20, min 20, max 200, backoff 0.9, timeout 5 s.
    pub fn new() -> Self {
        Self::default()
    }

    /// The limit to start with (default 20), clamped to `[min, max]`.
    pub fn initial(mut self, initial: usize) -> Self {
        self.initial = initial;
        self
    }

    /// The lowest limit (default 20); 0 is taken as 1.
    pub fn min(mut self, min: usize) -> Self {
        self.min = min;
        self
    }

    /// The highest limit (default 200); if it is below `min`, it wins.
    pub fn max(mut self, max: usize) -> Self {
        self.max = max;
        self
    }

    /// The ratio the limit is multiplied by on a drop (default 0.9).
    ///
    /// # Panics
    ///
    /// If `backoff` is not strictly between 0 and 1.
    pub fn backoff(mut self, backoff: f64) -> Self {
        assert!(
            backoff > 0.0 && backoff < 1.0,
            "Aimd backoff must be in (0, 1), got {backoff}"
        );
        self.backoff = backoff;
        self
    }

    /// A round trip longer than this counts as a drop (default 5 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    fn clamp(&self, limit: usize) -> usize {
        let hi = self.max.max(1);
        let lo = self.min.clamp(1, hi);
        limit.clamp(lo, hi)
    }
}

impl LimitAlgorithm for Aimd {
    fn initial_limit(&self) -> usize {
        self.clamp(self.initial)
    }

    fn update(&mut self, sample: &Sample) -> usize {
        let limit = self.limit.unwrap_or_else(|| self.initial_limit());
        let next = if sample.overload || sample.rtt > self.timeout {
            // Float product then floor, as Netflix does; a limit is far
            // below 2^53, so the conversion is exact.
            (limit as f64 * self.backoff).floor() as usize
        } else if sample.in_flight.saturating_mul(2) >= limit {
            limit.saturating_add(1)
        } else {
            limit
        };
        let next = self.clamp(next);
        self.limit = Some(next);
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tokio::time::Instant;

    const MS: Duration = Duration::from_millis(1);

    fn ok(in_flight: usize) -> Sample {
        Sample {
            rtt: 10 * MS,
            in_flight,
            overload: false,
            now: Instant::now(),
        }
    }

    fn overload(in_flight: usize) -> Sample {
        Sample {
            overload: true,
            ..ok(in_flight)
        }
    }

    #[test]
    fn defaults() {
        let a = Aimd::default();
        assert_eq!(a.initial_limit(), 20);
        assert_eq!(
            (a.min, a.max, a.backoff, a.timeout),
            (20, 200, 0.9, Duration::from_secs(5))
        );
    }

    #[test]
    fn grows_by_one_only_when_half_used() {
        let mut a = Aimd::new().initial(40).min(1);
        // 40 needs in_flight * 2 >= 40: 19 is not enough, 20 is.
        assert_eq!(a.update(&ok(19)), 40);
        assert_eq!(a.update(&ok(0)), 40);
        assert_eq!(a.update(&ok(20)), 41);
        // 41 needs 21 (20 * 2 = 40 < 41).
        assert_eq!(a.update(&ok(20)), 41);
        assert_eq!(a.update(&ok(21)), 42);
        assert_eq!(a.update(&ok(100)), 43);
    }

    #[test]
    fn backs_off_on_overload() {
        let mut a = Aimd::new().initial(100).min(1);
        assert_eq!(a.update(&overload(100)), 90);
        assert_eq!(a.update(&overload(0)), 81);
        assert_eq!(a.update(&overload(0)), 72); // floor(72.9)
        assert_eq!(a.update(&overload(0)), 64); // floor(64.8)
    }

    #[test]
    fn backs_off_when_rtt_exceeds_timeout() {
        let mut a = Aimd::new()
            .initial(100)
            .min(1)
            .timeout(Duration::from_millis(500));
        let at = |rtt| Sample { rtt, ..ok(100) };
        // Exactly the timeout is not a drop; above it is.
        assert_eq!(a.update(&at(500 * MS)), 101);
        assert_eq!(a.update(&at(501 * MS)), 90); // floor(90.9)
    }

    #[test]
    fn custom_backoff() {
        let mut a = Aimd::new().initial(100).min(1).backoff(0.5);
        assert_eq!(a.update(&overload(1)), 50);
        assert_eq!(a.update(&overload(1)), 25);
        assert_eq!(a.update(&overload(1)), 12);
    }

    #[test]
    fn respects_min_and_max() {
        let mut a = Aimd::new().initial(22).min(20).max(23);
        assert_eq!(a.update(&ok(100)), 23);
        assert_eq!(a.update(&ok(100)), 23);
        assert_eq!(a.update(&overload(100)), 20); // floor(20.7)
        assert_eq!(a.update(&overload(100)), 20); // floor(18) -> min
    }

    #[test]
    fn initial_is_clamped_and_bounds_are_sane() {
        assert_eq!(Aimd::new().initial(5).initial_limit(), 20);
        assert_eq!(Aimd::new().initial(500).initial_limit(), 200);
        // min 0 is taken as 1; max below min wins.
        let mut a = Aimd::new().initial(1).min(0).max(3);
        assert_eq!(a.initial_limit(), 1);
        assert_eq!(a.update(&overload(1)), 1);
        let b = Aimd::new().min(50).max(10);
        assert_eq!(b.initial_limit(), 10);
        let mut c = Aimd::new().min(0).max(0);
        assert_eq!(c.initial_limit(), 1);
        assert_eq!(c.update(&ok(5)), 1);
    }

    #[test]
    #[should_panic(expected = "backoff")]
    fn backoff_of_one_panics() {
        let _ = Aimd::new().backoff(1.0);
    }

    proptest! {
        #[test]
        fn limit_stays_within_bounds(
            min in 0usize..100,
            span in 0usize..300,
            initial in 0usize..500,
            backoff in 0.01f64..0.99,
            samples in prop::collection::vec(
                (0u64..10_000, 0usize..1_000, any::<bool>()), 0..300),
        ) {
            let max = min + span;
            let mut a = Aimd::new().initial(initial).min(min).max(max).backoff(backoff);
            let lo = min.max(1);
            let hi = max.max(lo);
            let l = a.initial_limit();
            prop_assert!(l >= lo && l <= hi);
            let start = Instant::now();
            for (i, (rtt_ms, in_flight, overload)) in samples.into_iter().enumerate() {
                let l = a.update(&Sample {
                    rtt: Duration::from_millis(rtt_ms),
                    in_flight,
                    overload,
                    now: start + i as u32 * MS,
                });
                prop_assert!(l >= lo && l <= hi, "{} not in [{}, {}]", l, lo, hi);
            }
        }
    }
}
