//! Gradient2: a delay-based limit that compares each round trip with a
//! long-term average.
//!
//! The formula, the parameters and their defaults are documented on
//! [`Gradient2`] (this module is private, so its docs would never render).

use super::{LimitAlgorithm, Sample};

/// Samples averaged plainly before the moving average takes over.
const WARMUP: usize = 10;
/// A long average above this many times the sample is decayed...
const DRIFT_RATIO: f64 = 2.0;
/// ...by this factor.
const DRIFT_DECAY: f64 = 0.95;
/// The gradient an overload counts as.
const OVERLOAD_GRADIENT: f64 = 0.5;

/// A delay-based limit after Netflix concurrency-limits' `Gradient2Limit`.
///
/// It keeps a long-term average of the round trip as the latency the
/// backend can sustain, and compares each sample with it: a round trip
/// within `tolerance` times the average means no harmful queue, and the
/// limit grows by `queue_size`; a longer one shrinks the limit in
/// proportion (at most by half per sample).
///
/// # Formula
///
/// With `L` the current limit and `rtt` the sample's round trip:
///
/// ```text
/// long_rtt  = plain average of the first 10 samples, then
///             long_rtt * (1 - f) + rtt * f   with f = 2 / (long_window + 1)
/// short_rtt = rtt
/// if long_rtt / short_rtt > 2:  long_rtt = long_rtt * 0.95   (drift down)
///
/// if in_flight < L / 2:  hold   (under-used: no evidence)
/// gradient = clamp(tolerance * long_rtt / short_rtt, 0.5, 1.0)
/// new      = L * gradient + queue_size
/// L        = clamp(L * (1 - smoothing) + new * smoothing, min, max)
/// ```
///
/// The gradient uses `long_rtt` from before the drift. The drift lets the
/// average come back down quickly after a long spell of high latency
/// ends; during the warm-up it has no lasting effect, since the next
/// sample recomputes the plain average. The answer is `floor(L)`.
///
/// At a steady round trip the gradient is 1 and `L` grows by
/// `smoothing * queue_size` per sample (0.8 with the defaults), until
/// queueing raises the round trip above `tolerance * long_rtt`.
///
/// # Overload
///
/// Netflix's `Gradient2Limit` ignores drops. Here an overload counts as
/// the smallest gradient, 0.5, whatever the in-flight count:
/// `new = L * 0.5 + queue_size`, smoothed and clamped as above (with the
/// defaults, `L = 0.9 L + 0.8`). Its round trip is not added to `long_rtt`:
/// a fast refusal or a timeout says nothing about the latency of served
/// requests.
///
/// # Parameters
///
/// | Parameter | Builder | Default | Meaning |
/// |---|---|---|---|
/// | initial | [`initial`](Self::initial) | 20 | Limit to start with (clamped to `[min, max]`). |
/// | min | [`min`](Self::min) | 20 | Lowest limit; at least 1. |
/// | max | [`max`](Self::max) | 200 | Highest limit; if below `min`, `max` wins. |
/// | smoothing | [`smoothing`](Self::smoothing) | 0.2 | Weight of the new value, in `(0, 1]`. |
/// | tolerance | [`tolerance`](Self::tolerance) | 1.5 | How many times `long_rtt` a round trip may take before the limit shrinks; at least 1. |
/// | long_window | [`long_window`](Self::long_window) | 600 | Samples the `long_rtt` moving average spans; at least 1. |
/// | queue_size | [`queue_size`](Self::queue_size) | 4 | Added to `L * gradient`: the queue allowed, and the growth per sample at gradient 1 before smoothing. |
/// | warm-up | — | 10 | Samples averaged plainly before the moving average. |
/// | drift | — | ratio 2, factor 0.95 | See the formula. |
///
/// # Example
///
/// ```
/// use tower_concurrency::adaptive::{Gradient2, LimitAlgorithm};
///
/// let g = Gradient2::new().initial(50).min(5).max(1000).tolerance(2.0).queue_size(8);
/// assert_eq!(g.initial_limit(), 50);
/// ```
#[derive(Debug, Clone)]
pub struct Gradient2 {
    initial: usize,
    min: usize,
    max: usize,
    smoothing: f64,
    tolerance: f64,
    long_window: usize,
    queue_size: usize,
    /// The current estimate; `None` until the first update.
    limit: Option<f64>,
    long_rtt: LongRtt,
}

impl Default for Gradient2 {
    fn default() -> Self {
        Self {
            initial: 20,
            min: 20,
            max: 200,
            smoothing: 0.2,
            tolerance: 1.5,
            long_window: 600,
            queue_size: 4,
            limit: None,
            long_rtt: LongRtt::default(),
        }
    }
}

impl Gradient2 {
    /// The defaults: initial 20, min 20, max 200, smoothing 0.2, tolerance
    /// 1.5, long_window 600, queue_size 4.
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

    /// The weight of each new value against the current limit (default
    /// 0.2).
    ///
    /// # Panics
    ///
    /// If `smoothing` is not in `(0, 1]`.
    pub fn smoothing(mut self, smoothing: f64) -> Self {
        assert!(
            smoothing > 0.0 && smoothing <= 1.0,
            "Gradient2 smoothing must be in (0, 1], got {smoothing}"
        );
        self.smoothing = smoothing;
        self
    }

    /// How many times the long-term average a round trip may take before
    /// the limit shrinks (default 1.5).
    ///
    /// # Panics
    ///
    /// If `tolerance` is below 1 or not finite.
    pub fn tolerance(mut self, tolerance: f64) -> Self {
        assert!(
            tolerance >= 1.0 && tolerance.is_finite(),
            "Gradient2 tolerance must be at least 1, got {tolerance}"
        );
        self.tolerance = tolerance;
        self
    }

    /// How many samples the long-term average spans (default 600).
    ///
    /// # Panics
    ///
    /// If `long_window` is 0.
    pub fn long_window(mut self, long_window: usize) -> Self {
        assert!(long_window > 0, "Gradient2 long_window must be at least 1");
        self.long_window = long_window;
        self
    }

    /// The queue allowed on top of `L * gradient` (default 4).
    pub fn queue_size(mut self, queue_size: usize) -> Self {
        self.queue_size = queue_size;
        self
    }

    fn bounds(&self) -> (f64, f64) {
        let hi = self.max.max(1);
        (self.min.clamp(1, hi) as f64, hi as f64)
    }

    /// Moves toward `L * gradient + queue_size` and answers the new limit.
    fn apply(&mut self, limit: f64, gradient: f64) -> usize {
        let new = limit * gradient + self.queue_size as f64;
        let (lo, hi) = self.bounds();
        let next = (limit * (1.0 - self.smoothing) + new * self.smoothing).clamp(lo, hi);
        self.limit = Some(next);
        next as usize
    }
}

impl LimitAlgorithm for Gradient2 {
    fn initial_limit(&self) -> usize {
        let (lo, hi) = self.bounds();
        (self.initial as f64).clamp(lo, hi) as usize
    }

    fn update(&mut self, sample: &Sample) -> usize {
        let limit = self.limit.unwrap_or_else(|| self.initial_limit() as f64);

        if sample.overload {
            return self.apply(limit, OVERLOAD_GRADIENT);
        }

        // Nanoseconds: exact in f64 up to 104 days.
        let short = sample.rtt.as_nanos() as f64;
        let long = self.long_rtt.add(short, self.long_window);
        if long / short > DRIFT_RATIO {
            self.long_rtt.value *= DRIFT_DECAY;
        }

        if (sample.in_flight as f64) < limit / 2.0 {
            return limit as usize;
        }

        let gradient = if short == 0.0 {
            // No latency at all: no queue.
            1.0
        } else {
            (self.tolerance * long / short).clamp(OVERLOAD_GRADIENT, 1.0)
        };
        self.apply(limit, gradient)
    }
}

/// The long-term round trip, in nanoseconds: a plain average over the
/// warm-up, then an exponential moving average.
#[derive(Debug, Clone, Default)]
struct LongRtt {
    count: usize,
    sum: f64,
    value: f64,
}

impl LongRtt {
    fn add(&mut self, sample: f64, window: usize) -> f64 {
        if self.count < WARMUP {
            self.count += 1;
            self.sum += sample;
            self.value = self.sum / self.count as f64;
        } else {
            let factor = 2.0 / (window as f64 + 1.0);
            self.value = self.value * (1.0 - factor) + sample * factor;
        }
        self.value
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;
    use tokio::time::Instant;

    const MS: Duration = Duration::from_millis(1);
    const EPS: f64 = 1e-9;

    fn ok(rtt: Duration, in_flight: usize) -> Sample {
        Sample {
            rtt,
            in_flight,
            overload: false,
            now: Instant::now(),
        }
    }

    /// After the warm-up at `rtt`, with the limit held (nothing in flight).
    fn warmed(g: Gradient2, rtt: Duration) -> Gradient2 {
        let mut g = g;
        let l = g.initial_limit();
        for _ in 0..WARMUP {
            assert_eq!(g.update(&ok(rtt, 0)), l);
        }
        assert_eq!(g.long_rtt.value, rtt.as_nanos() as f64);
        g
    }

    fn limit(g: &Gradient2) -> f64 {
        g.limit.expect("updated")
    }

    #[test]
    fn defaults() {
        let g = Gradient2::default();
        assert_eq!(g.initial_limit(), 20);
        assert_eq!(
            (g.min, g.max, g.long_window, g.queue_size),
            (20, 200, 600, 4)
        );
        assert_eq!((g.smoothing, g.tolerance), (0.2, 1.5));
    }

    #[test]
    fn long_rtt_warms_up_then_moves_exponentially() {
        let mut g = Gradient2::new();
        for (i, ms) in [10u64, 20, 30].into_iter().enumerate() {
            g.update(&ok(Duration::from_millis(ms), 0));
            assert_eq!(g.long_rtt.count, i + 1);
        }
        assert_eq!(g.long_rtt.value, 20e6);
        let mut g = warmed(Gradient2::new(), 10 * MS);
        g.update(&ok(16 * MS, 0));
        let f = 2.0 / 601.0;
        assert!((g.long_rtt.value - (10e6 * (1.0 - f) + 16e6 * f)).abs() < EPS);
    }

    #[test]
    fn grows_by_queue_size_at_gradient_one() {
        // smoothing 1: exactly L + queue_size per sample.
        let mut g = warmed(Gradient2::new().smoothing(1.0), 10 * MS);
        assert_eq!(g.update(&ok(10 * MS, 20)), 24);
        assert_eq!(g.update(&ok(10 * MS, 20)), 28);
        // Up to tolerance * long_rtt the gradient is still 1.
        assert_eq!(g.update(&ok(15 * MS, 20)), 32);
        let mut g = warmed(Gradient2::new().smoothing(1.0).queue_size(10), 10 * MS);
        assert_eq!(g.update(&ok(10 * MS, 20)), 30);
        // Default smoothing 0.2: smoothing * queue_size = 0.8 per sample.
        let mut g = warmed(Gradient2::new(), 10 * MS);
        for i in 1..=20 {
            g.update(&ok(10 * MS, 200));
            assert!((limit(&g) - (20.0 + 0.8 * i as f64)).abs() < 1e-6);
        }
        assert_eq!(g.update(&ok(10 * MS, 200)), 36);
    }

    #[test]
    fn shrinks_by_the_gradient_when_rtt_rises() {
        let mut g = warmed(Gradient2::new().initial(100).smoothing(1.0), 10 * MS);
        // long = 10 ms moved a little toward 20 ms; gradient = 1.5 * long / 20.
        g.update(&ok(20 * MS, 100));
        let f = 2.0 / 601.0;
        let long = 10e6 * (1.0 - f) + 20e6 * f;
        let gradient = 1.5 * long / 20e6;
        assert!(gradient > 0.75 && gradient < 0.76);
        assert!((limit(&g) - (100.0 * gradient + 4.0)).abs() < EPS);
        // The gradient never goes below 0.5: 100 ms gives 0.5 exactly.
        let mut g = warmed(Gradient2::new().initial(100).smoothing(1.0), 10 * MS);
        assert_eq!(g.update(&ok(100 * MS, 100)), 54);
    }

    #[test]
    fn converges_down_to_min_when_rtt_rises() {
        let mut g = warmed(Gradient2::new().initial(200), 10 * MS);
        // Gradient 0.5, smoothing 0.2: L = 0.9 L + 0.8.
        g.update(&ok(100 * MS, 200));
        assert!((limit(&g) - 180.8).abs() < EPS);
        let mut last = 180;
        let mut steps = 1;
        while last > 20 {
            let l = g.update(&ok(100 * MS, 200));
            assert!(l < last, "{l} !< {last}");
            last = l;
            steps += 1;
        }
        assert!(steps < 40, "{steps}");
        assert_eq!(g.update(&ok(100 * MS, 200)), 20);
    }

    #[test]
    fn long_rtt_drifts_down_after_a_latency_drop() {
        let f = 2.0 / 601.0;
        let mut g = warmed(Gradient2::new().initial(100).smoothing(1.0), 100 * MS);
        // long / short = 99.7 / 10 > 2: decay by 0.95 after use.
        g.update(&ok(10 * MS, 100));
        let long = 100e6 * (1.0 - f) + 10e6 * f;
        assert!((g.long_rtt.value - long * 0.95).abs() < EPS);
        // The gradient used the long rtt before the decay (capped at 1).
        assert_eq!(limit(&g), 104.0);
        // It keeps decaying while the ratio stays above 2, then stops.
        let mut previous = g.long_rtt.value;
        let mut decays = 0;
        for _ in 0..40 {
            g.update(&ok(10 * MS, 0));
            let mut expected = previous * (1.0 - f) + 10e6 * f;
            if expected / 10e6 > 2.0 {
                expected *= 0.95;
                decays += 1;
            }
            assert!((g.long_rtt.value - expected).abs() < 1e-3);
            previous = g.long_rtt.value;
        }
        // 94.7 ms * 0.95^n reaches 20 ms after about 30 decays.
        assert!((25..35).contains(&decays), "{decays}");
        assert!(previous <= 20e6 && previous > 18e6, "{previous}");
        // Not when the ratio is at most 2.
        let mut g = warmed(Gradient2::new(), 100 * MS);
        g.update(&ok(60 * MS, 0));
        assert!((g.long_rtt.value - (100e6 * (1.0 - f) + 60e6 * f)).abs() < EPS);
    }

    #[test]
    fn holds_when_under_used() {
        let mut g = warmed(Gradient2::new().initial(40).min(1), 10 * MS);
        // 19 < 40 / 2: hold, at any rtt...
        assert_eq!(g.update(&ok(10 * MS, 19)), 40);
        assert_eq!(g.update(&ok(500 * MS, 19)), 40);
        assert_eq!(g.limit, None);
        // ...but the long rtt still learns.
        assert!(g.long_rtt.value > 10e6);
        // 20 is enough.
        assert_eq!(g.update(&ok(10 * MS, 20)), 40);
        assert!(limit(&g) > 40.0);
    }

    #[test]
    fn overload_counts_as_gradient_one_half() {
        let mut g = warmed(Gradient2::new().initial(100).min(1), 10 * MS);
        // Even under-used: 0.8 * 100 + 0.2 * (50 + 4) = 90.8.
        let over = Sample {
            overload: true,
            ..ok(MS, 0)
        };
        assert_eq!(g.update(&over), 90);
        assert!((limit(&g) - 90.8).abs() < EPS);
        // Its rtt is not averaged in.
        assert_eq!(g.long_rtt.value, 10e6);
        assert_eq!(g.long_rtt.count, WARMUP);
        let mut g = Gradient2::new().initial(100).smoothing(1.0);
        assert_eq!(g.update(&over), 54);
        assert_eq!(g.long_rtt.count, 0);
    }

    #[test]
    fn respects_min_and_max() {
        let mut g = warmed(Gradient2::new().initial(199).smoothing(1.0), 10 * MS);
        assert_eq!(g.update(&ok(10 * MS, 200)), 200);
        assert_eq!(g.update(&ok(10 * MS, 200)), 200);
        let mut g = warmed(Gradient2::new().initial(21).smoothing(1.0), 10 * MS);
        assert_eq!(g.update(&ok(100 * MS, 20)), 20);
        assert_eq!(Gradient2::new().initial(1).initial_limit(), 20);
        assert_eq!(Gradient2::new().initial(1000).initial_limit(), 200);
        assert_eq!(Gradient2::new().min(0).max(0).initial_limit(), 1);
    }

    #[test]
    fn zero_rtt_is_no_queue() {
        let mut g = Gradient2::new().smoothing(1.0);
        assert_eq!(g.update(&ok(Duration::ZERO, 20)), 24);
        assert_eq!(g.update(&ok(Duration::ZERO, 20)), 28);
    }

    #[test]
    #[should_panic(expected = "tolerance")]
    fn tolerance_below_one_panics() {
        let _ = Gradient2::new().tolerance(0.9);
    }

    proptest! {
        #[test]
        fn limit_stays_within_bounds(
            min in 0usize..100,
            span in 0usize..500,
            initial in 0usize..700,
            smoothing in 0.01f64..=1.0,
            tolerance in 1.0f64..4.0,
            long_window in 1usize..1_000,
            queue_size in 0usize..50,
            samples in prop::collection::vec(
                (0u64..10_000_000, 0usize..1_000, any::<bool>()), 0..300),
        ) {
            let max = min + span;
            let mut g = Gradient2::new()
                .initial(initial)
                .min(min)
                .max(max)
                .smoothing(smoothing)
                .tolerance(tolerance)
                .long_window(long_window)
                .queue_size(queue_size);
            let lo = min.max(1);
            let hi = max.max(lo);
            let l = g.initial_limit();
            prop_assert!(l >= lo && l <= hi);
            let start = Instant::now();
            for (i, (rtt_us, in_flight, overload)) in samples.into_iter().enumerate() {
                let l = g.update(&Sample {
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
