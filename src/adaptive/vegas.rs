//! Vegas: a delay-based limit that estimates the queue from the minimum
//! round trip, after TCP Vegas.
//!
//! The formula, the parameters and their defaults are documented on
//! [`Vegas`] (this module is private, so its docs would never render).

use std::time::Duration;

use super::{LimitAlgorithm, Sample};

/// The seed of the default jitter generator (any non-zero value will do).
const DEFAULT_SEED: u64 = 0x9E37_79B9_7F4A_7C15;

/// A delay-based limit after TCP Vegas and Netflix concurrency-limits'
/// `VegasLimit`.
///
/// It remembers the smallest round trip seen, `rtt_noload`, as the latency
/// of an empty queue, estimates from each sample how many of the `L`
/// requests in flight are queueing rather than being served, and steers
/// that estimate into a small band: grow while there is (almost) no queue,
/// shrink when it is long.
///
/// # Formula
///
/// With `L` the current limit and `lg = max(1, floor(log10(floor(L))))`:
///
/// ```text
/// alpha = 3 * lg     beta = 6 * lg     threshold = lg
/// queue = ceil(L * (1 - rtt_noload / rtt))
///
/// if overload:                 new = L - lg
/// else if in_flight * 2 < L:   hold          (under-used: no evidence)
/// else if queue <= threshold:  new = L + beta   (no queue: grow fast)
/// else if queue < alpha:       new = L + lg     (short queue: grow)
/// else if queue > beta:        new = L - lg     (long queue: shrink)
/// else:                        hold          (alpha <= queue <= beta)
///
/// L = (1 - smoothing) * L + smoothing * clamp(new, min, max)
/// ```
///
/// The answer is `floor(L)`, within `[min, max]` and never below 1.
///
/// `rtt_noload` is set by the first successful sample and lowered by any
/// shorter one; such a sample only updates `rtt_noload` and holds the
/// limit. Because the true no-load latency can also *rise* (a slower
/// backend, a new network path), it is re-probed: after about
/// `probe_multiplier * L` successful samples (`jitter * probe_multiplier *
/// L`, with `jitter` drawn in `[0.5, 1)` afresh after each probe) the next
/// sample's round trip replaces `rtt_noload` outright, and the limit holds
/// for that sample. The jitter comes from a small xorshift generator seeded
/// by [`seed`](Self::seed), not from the clock, so a run is reproducible;
/// give each limiter its own seed if many should not probe in lock-step.
///
/// # Parameters
///
/// | Parameter | Builder | Default | Meaning |
/// |---|---|---|---|
/// | initial | [`initial`](Self::initial) | 20 | Limit to start with (clamped to `[min, max]`). |
/// | min | [`min`](Self::min) | 1 | Lowest limit; at least 1. |
/// | max | [`max`](Self::max) | 1000 | Highest limit; if below `min`, `max` wins. |
/// | smoothing | [`smoothing`](Self::smoothing) | 1.0 | Weight of the new value, in `(0, 1]`; 1 applies it at once. |
/// | probe_multiplier | [`probe_multiplier`](Self::probe_multiplier) | 30 | Re-probe `rtt_noload` every `jitter * probe_multiplier * L` samples; 0 never re-probes. |
/// | seed | [`seed`](Self::seed) | `0x9E37_79B9_7F4A_7C15` | Seed of the probe jitter generator. |
/// | alpha, beta, threshold | — | `3·lg`, `6·lg`, `lg` | Fixed functions of `L`, as Netflix's defaults. |
/// | increase, decrease | — | `L + lg`, `L - lg` | Fixed functions of `L`, as Netflix's defaults. |
///
/// # Overload
///
/// An overload shrinks the limit (`L - lg`) whatever the in-flight count,
/// and its round trip is not used for `rtt_noload` or the probe count: a
/// fast refusal (an upstream 503) is not the latency of an empty queue,
/// and a timeout's round trip is not a latency at all.
///
/// # Example
///
/// ```
/// use tower_concurrency::adaptive::{LimitAlgorithm, Vegas};
///
/// let vegas = Vegas::new().initial(10).max(500).probe_multiplier(50).seed(7);
/// assert_eq!(vegas.initial_limit(), 10);
/// ```
#[derive(Debug, Clone)]
pub struct Vegas {
    initial: usize,
    min: usize,
    max: usize,
    smoothing: f64,
    probe_multiplier: usize,
    /// The current estimate; `None` until the first update.
    limit: Option<f64>,
    rtt_noload: Option<Duration>,
    /// Successful samples since the last probe.
    probe_count: usize,
    /// In `[0.5, 1)`; drawn afresh after each probe.
    probe_jitter: f64,
    rng: XorShift,
}

impl Default for Vegas {
    fn default() -> Self {
        let mut rng = XorShift::new(DEFAULT_SEED);
        let probe_jitter = rng.jitter();
        Self {
            initial: 20,
            min: 1,
            max: 1000,
            smoothing: 1.0,
            probe_multiplier: 30,
            limit: None,
            rtt_noload: None,
            probe_count: 0,
            probe_jitter,
            rng,
        }
    }
}

impl Vegas {
    /// The defaults: initial 20, min 1, max 1000, smoothing 1.0,
    /// probe_multiplier 30, the default seed.
    pub fn new() -> Self {
        Self::default()
    }

    /// The limit to start with (default 20), clamped to `[min, max]`.
    pub fn initial(mut self, initial: usize) -> Self {
        self.initial = initial;
        self
    }

    /// The lowest limit (default 1); 0 is taken as 1.
    pub fn min(mut self, min: usize) -> Self {
        self.min = min;
        self
    }

    /// The highest limit (default 1000); if it is below `min`, it wins.
    pub fn max(mut self, max: usize) -> Self {
        self.max = max;
        self
    }

    /// The weight of each new value against the current limit (default
    /// 1.0: move at once).
    ///
    /// # Panics
    ///
    /// If `smoothing` is not in `(0, 1]`.
    pub fn smoothing(mut self, smoothing: f64) -> Self {
        assert!(
            smoothing > 0.0 && smoothing <= 1.0,
            "Vegas smoothing must be in (0, 1], got {smoothing}"
        );
        self.smoothing = smoothing;
        self
    }

    /// Re-probe `rtt_noload` after about `probe_multiplier * L` samples
    /// (default 30); 0 never re-probes.
    pub fn probe_multiplier(mut self, probe_multiplier: usize) -> Self {
        self.probe_multiplier = probe_multiplier;
        self
    }

    /// Seeds the generator of the probe jitter (and draws the first
    /// jitter from it).
    pub fn seed(mut self, seed: u64) -> Self {
        self.rng = XorShift::new(seed);
        self.probe_jitter = self.rng.jitter();
        self
    }

    fn bounds(&self) -> (usize, usize) {
        let hi = self.max.max(1);
        (self.min.clamp(1, hi), hi)
    }

    fn should_probe(&self, limit: f64) -> bool {
        self.probe_multiplier > 0
            && self.probe_jitter * self.probe_multiplier as f64 * limit <= self.probe_count as f64
    }

    /// Applies `new` (clamped, smoothed) and answers the new limit.
    fn apply(&mut self, limit: f64, new: f64) -> usize {
        let (lo, hi) = self.bounds();
        let new = new.clamp(lo as f64, hi as f64);
        let next =
            ((1.0 - self.smoothing) * limit + self.smoothing * new).clamp(lo as f64, hi as f64);
        self.limit = Some(next);
        next as usize
    }
}

/// `max(1, floor(log10(limit)))`, on the integer part of the limit.
fn lg(limit: f64) -> usize {
    let n = (limit as usize).max(1);
    (n.ilog10() as usize).max(1)
}

impl LimitAlgorithm for Vegas {
    fn initial_limit(&self) -> usize {
        let (lo, hi) = self.bounds();
        self.initial.clamp(lo, hi)
    }

    fn update(&mut self, sample: &Sample) -> usize {
        let limit = self.limit.unwrap_or_else(|| self.initial_limit() as f64);
        let lg = lg(limit);

        if sample.overload {
            return self.apply(limit, limit - lg as f64);
        }

        self.probe_count = self.probe_count.saturating_add(1);
        if self.should_probe(limit) {
            self.probe_jitter = self.rng.jitter();
            self.probe_count = 0;
            self.rtt_noload = Some(sample.rtt);
            return limit as usize;
        }
        let rtt_noload = match self.rtt_noload {
            Some(noload) if sample.rtt >= noload => noload,
            _ => {
                self.rtt_noload = Some(sample.rtt);
                return limit as usize;
            }
        };

        if (sample.in_flight as f64) * 2.0 < limit {
            return limit as usize;
        }

        // rtt >= rtt_noload here; a zero rtt means rtt_noload is zero too:
        // no queue.
        let queue = if sample.rtt.is_zero() {
            0.0
        } else {
            (limit * (1.0 - rtt_noload.as_secs_f64() / sample.rtt.as_secs_f64())).ceil()
        };
        let (alpha, beta, threshold) = ((3 * lg) as f64, (6 * lg) as f64, lg as f64);
        let new = if queue <= threshold {
            limit + beta
        } else if queue < alpha {
            limit + lg as f64
        } else if queue > beta {
            limit - lg as f64
        } else {
            return limit as usize;
        };
        self.apply(limit, new)
    }
}

/// xorshift64*: a tiny, deterministic generator for the probe jitter.
#[derive(Debug, Clone)]
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        // Zero is xorshift's fixed point.
        Self(if seed == 0 { DEFAULT_SEED } else { seed })
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `[0.5, 1)`.
    fn jitter(&mut self) -> f64 {
        let unit = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        0.5 + 0.5 * unit
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tokio::time::Instant;

    const MS: Duration = Duration::from_millis(1);

    fn ok(rtt: Duration, in_flight: usize) -> Sample {
        Sample {
            rtt,
            in_flight,
            overload: false,
            now: Instant::now(),
        }
    }

    /// A Vegas at `limit` with `rtt_noload` = 100 ms and no probing.
    fn primed(limit: usize) -> Vegas {
        let mut v = Vegas::new().initial(limit).probe_multiplier(0);
        assert_eq!(v.update(&ok(100 * MS, 0)), limit);
        assert_eq!(v.rtt_noload, Some(100 * MS));
        v
    }

    #[test]
    fn defaults() {
        let v = Vegas::default();
        assert_eq!(v.initial_limit(), 20);
        assert_eq!(
            (v.min, v.max, v.smoothing, v.probe_multiplier),
            (1, 1000, 1.0, 30)
        );
        assert!((0.5..1.0).contains(&v.probe_jitter));
    }

    #[test]
    fn lg_is_floor_log10_at_least_one() {
        assert_eq!(lg(1.0), 1);
        assert_eq!(lg(99.9), 1);
        assert_eq!(lg(100.0), 2);
        assert_eq!(lg(999.0), 2);
        assert_eq!(lg(1000.0), 3);
    }

    #[test]
    fn first_sample_and_shorter_rtts_set_rtt_noload_and_hold() {
        let mut v = Vegas::new().probe_multiplier(0);
        assert_eq!(v.rtt_noload, None);
        assert_eq!(v.update(&ok(100 * MS, 20)), 20);
        assert_eq!(v.rtt_noload, Some(100 * MS));
        assert_eq!(v.update(&ok(80 * MS, 20)), 20);
        assert_eq!(v.rtt_noload, Some(80 * MS));
        // A longer one does not raise it.
        v.update(&ok(90 * MS, 20));
        assert_eq!(v.rtt_noload, Some(80 * MS));
    }

    #[test]
    fn grows_by_beta_when_queue_is_within_threshold() {
        // L = 20: lg 1, threshold 1, beta 6.
        let mut v = primed(20);
        // queue = ceil(20 * 0) = 0.
        assert_eq!(v.update(&ok(100 * MS, 10)), 26);
        // L = 26: queue = ceil(26 * (1 - 100/101)) = ceil(0.257) = 1 = threshold.
        assert_eq!(v.update(&ok(101 * MS, 13)), 32);
        // L = 100: lg 2, threshold 2, beta 12.
        let mut v = primed(100);
        // queue = ceil(100 * (1 - 100/101.5)) = ceil(1.48) = 2.
        assert_eq!(v.update(&ok(Duration::from_micros(101_500), 50)), 112);
    }

    #[test]
    fn grows_by_lg_below_alpha() {
        // L = 20: queue = ceil(20 * 10/110) = ceil(1.82) = 2, in (1, 3).
        let mut v = primed(20);
        assert_eq!(v.update(&ok(110 * MS, 10)), 21);
        // L = 100: lg 2, alpha 6: queue = ceil(100 * 4/104) = ceil(3.85) = 4.
        let mut v = primed(100);
        assert_eq!(v.update(&ok(104 * MS, 50)), 102);
    }

    #[test]
    fn holds_between_alpha_and_beta() {
        let mut v = primed(20);
        // queue = ceil(20 * 15/115) = ceil(2.61) = 3 = alpha.
        assert_eq!(v.update(&ok(115 * MS, 10)), 20);
        // queue = ceil(20 * 40/140) = ceil(5.71) = 6 = beta.
        assert_eq!(v.update(&ok(140 * MS, 10)), 20);
    }

    #[test]
    fn shrinks_by_lg_above_beta() {
        let mut v = primed(20);
        // queue = ceil(20 * 0.5) = 10 > 6.
        assert_eq!(v.update(&ok(200 * MS, 10)), 19);
        // L = 100: beta 12: queue = ceil(100 * 0.5) = 50.
        let mut v = primed(100);
        assert_eq!(v.update(&ok(200 * MS, 50)), 98);
        // L = 98: lg is 1 again.
        assert_eq!(v.update(&ok(200 * MS, 50)), 97);
    }

    #[test]
    fn shrinks_by_lg_on_overload_even_when_under_used() {
        let mut v = primed(20);
        let over = Sample {
            overload: true,
            ..ok(MS, 0)
        };
        assert_eq!(v.update(&over), 19);
        // The overload's short rtt is not taken as rtt_noload.
        assert_eq!(v.rtt_noload, Some(100 * MS));
        let mut v = primed(150);
        assert_eq!(v.update(&over), 148);
        // Even before any rtt_noload.
        let mut v = Vegas::new();
        assert_eq!(v.update(&over), 19);
        assert_eq!(v.rtt_noload, None);
    }

    #[test]
    fn holds_when_under_used() {
        let mut v = primed(20);
        // 9 * 2 < 20: no evidence either way, whatever the queue.
        assert_eq!(v.update(&ok(100 * MS, 9)), 20);
        assert_eq!(v.update(&ok(500 * MS, 9)), 20);
        assert_eq!(v.update(&ok(500 * MS, 0)), 20);
    }

    #[test]
    fn smoothing_moves_part_way() {
        let mut v = Vegas::new().initial(20).smoothing(0.5).probe_multiplier(0);
        v.update(&ok(100 * MS, 0));
        // new = 26: L = 0.5 * 20 + 0.5 * 26 = 23.
        assert_eq!(v.update(&ok(100 * MS, 20)), 23);
        // new = 29: L = 26.
        assert_eq!(v.update(&ok(100 * MS, 20)), 26);
    }

    #[test]
    fn respects_min_and_max() {
        let mut v = Vegas::new().initial(20).max(23).probe_multiplier(0);
        v.update(&ok(100 * MS, 0));
        assert_eq!(v.update(&ok(100 * MS, 20)), 23);
        let mut v = Vegas::new().initial(20).min(19).probe_multiplier(0);
        v.update(&ok(100 * MS, 0));
        assert_eq!(v.update(&ok(300 * MS, 20)), 19);
        assert_eq!(v.update(&ok(300 * MS, 20)), 19);
        let mut v = Vegas::new().initial(1).probe_multiplier(0);
        let over = Sample {
            overload: true,
            ..ok(MS, 1)
        };
        assert_eq!(v.update(&over), 1);
        assert_eq!(Vegas::new().initial(5000).initial_limit(), 1000);
        assert_eq!(Vegas::new().min(0).max(0).initial_limit(), 1);
    }

    /// Feeds under-used samples (the limit holds) of `rtt` until the
    /// probe replaces rtt_noload with it; answers how many it took.
    fn samples_until_probe(v: &mut Vegas, rtt: Duration) -> usize {
        for i in 1..=100_000 {
            v.update(&ok(rtt, 0));
            if v.rtt_noload == Some(rtt) {
                return i;
            }
        }
        panic!("no probe");
    }

    #[test]
    fn reprobes_rtt_noload_deterministically() {
        let run = |seed| {
            let mut v = Vegas::new().seed(seed);
            // The first sample sets rtt_noload (and counts as one).
            v.update(&ok(10 * MS, 0));
            assert_eq!(v.rtt_noload, Some(10 * MS));
            // Longer samples leave it alone until the probe, due after
            // jitter * 30 * 20 in [300, 600) samples, takes one of them.
            let first = 1 + samples_until_probe(&mut v, 50 * MS);
            let second = samples_until_probe(&mut v, 70 * MS);
            assert_eq!(v.update(&ok(60 * MS, 0)), 20);
            assert_eq!(v.rtt_noload, Some(60 * MS));
            (first, second)
        };
        let (first, second) = run(42);
        assert!((300..=600).contains(&first), "{first}");
        assert!((300..=600).contains(&second), "{second}");
        assert_eq!(run(42), (first, second));
        // Other seeds probe at other times.
        let others: Vec<_> = (1..6).map(run).collect();
        assert!(others.iter().any(|&p| p != (first, second)), "{others:?}");
        // 0 never probes.
        let mut v = Vegas::new().probe_multiplier(0);
        v.update(&ok(10 * MS, 0));
        for _ in 0..100_000 {
            v.update(&ok(50 * MS, 0));
        }
        assert_eq!(v.rtt_noload, Some(10 * MS));
    }

    #[test]
    fn probe_interval_scales_with_limit() {
        let mut v = Vegas::new().initial(200).seed(9);
        v.update(&ok(10 * MS, 0));
        let n = 1 + samples_until_probe(&mut v, 50 * MS);
        assert!((3000..=6000).contains(&n), "{n}");
    }

    #[test]
    fn jitter_is_in_range() {
        let mut rng = XorShift::new(0);
        for _ in 0..10_000 {
            let j = rng.jitter();
            assert!((0.5..1.0).contains(&j), "{j}");
        }
    }

    #[test]
    #[should_panic(expected = "smoothing")]
    fn zero_smoothing_panics() {
        let _ = Vegas::new().smoothing(0.0);
    }

    proptest! {
        #[test]
        fn limit_stays_within_bounds(
            min in 0usize..100,
            span in 0usize..1_500,
            initial in 0usize..2_000,
            smoothing in 0.01f64..=1.0,
            probe_multiplier in 0usize..5,
            seed in any::<u64>(),
            samples in prop::collection::vec(
                (0u64..10_000_000, 0usize..3_000, any::<bool>()), 0..300),
        ) {
            let max = min + span;
            let mut v = Vegas::new()
                .initial(initial)
                .min(min)
                .max(max)
                .smoothing(smoothing)
                .probe_multiplier(probe_multiplier)
                .seed(seed);
            let lo = min.max(1);
            let hi = max.max(lo);
            let l = v.initial_limit();
            prop_assert!(l >= lo && l <= hi);
            let start = Instant::now();
            for (i, (rtt_us, in_flight, overload)) in samples.into_iter().enumerate() {
                let l = v.update(&Sample {
                    rtt: Duration::from_micros(rtt_us),
                    in_flight,
                    overload,
                    now: start + i as u32 * MS,
                });
                prop_assert!(l >= lo && l <= hi, "{} not in [{}, {}]", l, lo, hi);
            }
        }
    }
}
