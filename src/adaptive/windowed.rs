//! Windowed: feeds any algorithm one aggregated sample per window of
//! samples.
//!
//! The rules, the parameters and their defaults are documented on
//! [`Windowed`] (this module is private, so its docs would never render).

use std::time::Duration;

use tokio::time::Instant;

use super::{LimitAlgorithm, Sample};

/// How a window's round trips are summed up into one.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub enum Aggregate {
    /// The mean round trip.
    #[default]
    Average,
    /// The round trip at this percentile, as a fraction in `[0, 1]`
    /// (`0.99` for p99), by nearest rank: the `ceil(p * n)`-th shortest
    /// of `n` (the shortest for 0, the longest for 1).
    Percentile(f64),
}

/// Wraps a [`LimitAlgorithm`] and feeds it one aggregated [`Sample`] per
/// window of samples instead of every one, after Netflix
/// concurrency-limits' `WindowedLimit`.
///
/// Single round trips are noisy; a window averages the noise out, and
/// makes the inner algorithm move once per window rather than once per
/// request (so AIMD grows by one per window, and backs off at most once
/// per window, like TCP's once per round trip).
///
/// # Rules
///
/// A window opens with its first sample (at that sample's `now`: an idle
/// spell between windows does not count) and closes, after taking in the
/// sample that closes it, when
///
/// - it holds at least `min_samples` samples and spans at least
///   `min_window` (from its first sample's `now` to this one's), or
/// - it spans at least `max_window`, whatever its number of samples, or
/// - `close_on_overload` is set and the sample is an overload.
///
/// On closing, the inner algorithm gets one sample:
///
/// | Field | Value |
/// |---|---|
/// | `rtt` | The [`Aggregate`] (average, or a percentile) of the window's successful round trips; of its overloads' if it has no success. |
/// | `in_flight` | The largest in the window. |
/// | `overload` | Whether any sample in the window was an overload. |
/// | `now` | The closing sample's. |
///
/// Between closings, [`update`](LimitAlgorithm::update) answers the inner
/// algorithm's last limit unchanged (its initial limit before the first
/// window closes).
///
/// # Parameters
///
/// | Parameter | Builder | Default | Meaning |
/// |---|---|---|---|
/// | min_samples | [`min_samples`](Self::min_samples) | 10 | Samples a window needs to close before `max_window`. |
/// | min_window | [`min_window`](Self::min_window) | 100 ms | Shortest window. |
/// | max_window | [`max_window`](Self::max_window) | 1 s | Longest window; it wins over `min_window` if shorter. |
/// | aggregate | [`aggregate`](Self::aggregate) | [`Aggregate::Average`] | How the round trips are summed up. |
/// | close_on_overload | [`close_on_overload`](Self::close_on_overload) | false | Whether an overload closes the window at once. |
///
/// Netflix's defaults are a window of 1 s (`min_window` = `max_window`)
/// and 10 samples, made for production round trips; the 100 ms
/// `min_window` here lets round trips of 10 to 100 ms move the limit
/// several times a second under load, while `max_window` still bounds how
/// long a lightly loaded limiter waits. Unlike Netflix (which discards a
/// window with too few samples), a window at `max_window` is used however
/// few samples it holds.
///
/// By default an overload does not close the window: the inner algorithm
/// then reacts at most once per window to a burst of overloads (one
/// multiplicative decrease rather than one per refused request), within
/// `max_window` at worst. [`close_on_overload`](Self::close_on_overload)
/// makes it react at once, to every overload.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use tower_concurrency::adaptive::{Aggregate, Gradient2, LimitAlgorithm, Windowed};
///
/// let algorithm = Windowed::new(Gradient2::new())
///     .min_samples(20)
///     .min_window(Duration::from_millis(250))
///     .aggregate(Aggregate::Percentile(0.9));
/// assert_eq!(algorithm.initial_limit(), 20);
/// ```
#[derive(Debug, Clone)]
pub struct Windowed<A> {
    inner: A,
    min_samples: usize,
    min_window: Duration,
    max_window: Duration,
    aggregate: Aggregate,
    close_on_overload: bool,
    /// The inner algorithm's last answer.
    limit: usize,
    window: Window,
}

impl<A: LimitAlgorithm + Default> Default for Windowed<A> {
    fn default() -> Self {
        Self::new(A::default())
    }
}

impl<A: LimitAlgorithm> Windowed<A> {
    /// Wraps `inner`, with the defaults: min_samples 10, min_window
    /// 100 ms, max_window 1 s, the average, close_on_overload false.
    pub fn new(inner: A) -> Self {
        Self {
            limit: inner.initial_limit(),
            inner,
            min_samples: 10,
            min_window: Duration::from_millis(100),
            max_window: Duration::from_secs(1),
            aggregate: Aggregate::Average,
            close_on_overload: false,
            window: Window::default(),
        }
    }
}

impl<A> Windowed<A> {
    /// How many samples a window needs to close before `max_window`
    /// (default 10).
    pub fn min_samples(mut self, min_samples: usize) -> Self {
        self.min_samples = min_samples;
        self
    }

    /// The shortest window (default 100 ms).
    pub fn min_window(mut self, min_window: Duration) -> Self {
        self.min_window = min_window;
        self
    }

    /// The longest window (default 1 s).
    pub fn max_window(mut self, max_window: Duration) -> Self {
        self.max_window = max_window;
        self
    }

    /// How the window's round trips are summed up (default the average).
    ///
    /// # Panics
    ///
    /// If a percentile is not within `[0, 1]`.
    pub fn aggregate(mut self, aggregate: Aggregate) -> Self {
        if let Aggregate::Percentile(p) = aggregate {
            assert!(
                (0.0..=1.0).contains(&p),
                "Windowed percentile must be a fraction in [0, 1], got {p}"
            );
        }
        self.aggregate = aggregate;
        self
    }

    /// Whether an overload closes the window at once (default false).
    pub fn close_on_overload(mut self, close_on_overload: bool) -> Self {
        self.close_on_overload = close_on_overload;
        self
    }

    /// The wrapped algorithm.
    pub fn inner(&self) -> &A {
        &self.inner
    }

    fn should_close(&self, start: Instant, sample: &Sample) -> bool {
        let span = sample.now.saturating_duration_since(start);
        (self.window.count() >= self.min_samples && span >= self.min_window)
            || span >= self.max_window
            || (self.close_on_overload && sample.overload)
    }
}

impl<A: LimitAlgorithm> LimitAlgorithm for Windowed<A> {
    fn initial_limit(&self) -> usize {
        self.inner.initial_limit()
    }

    fn update(&mut self, sample: &Sample) -> usize {
        let keep = matches!(self.aggregate, Aggregate::Percentile(_));
        let start = *self.window.start.get_or_insert(sample.now);
        self.window.add(sample, keep);
        if self.should_close(start, sample) {
            let aggregated = self.window.close(self.aggregate, sample.now);
            self.limit = self.inner.update(&aggregated);
        }
        self.limit
    }
}

/// The samples of the open window.
#[derive(Debug, Clone, Default)]
struct Window {
    /// The first sample's `now`; `None` while empty.
    start: Option<Instant>,
    successes: Rtts,
    overloads: Rtts,
    max_in_flight: usize,
}

impl Window {
    fn count(&self) -> usize {
        self.successes.count + self.overloads.count
    }

    fn add(&mut self, sample: &Sample, keep: bool) {
        let rtts = if sample.overload {
            &mut self.overloads
        } else {
            &mut self.successes
        };
        rtts.add(sample.rtt, keep);
        self.max_in_flight = self.max_in_flight.max(sample.in_flight);
    }

    /// The aggregated sample; empties the window (keeping its buffers).
    fn close(&mut self, aggregate: Aggregate, now: Instant) -> Sample {
        let overload = self.overloads.count > 0;
        let rtts = if self.successes.count > 0 {
            &mut self.successes
        } else {
            &mut self.overloads
        };
        let sample = Sample {
            rtt: rtts.aggregate(aggregate),
            in_flight: self.max_in_flight,
            overload,
            now,
        };
        self.start = None;
        self.successes.clear();
        self.overloads.clear();
        self.max_in_flight = 0;
        sample
    }
}

/// Round trips of one kind: their count and sum, and themselves when a
/// percentile needs them.
#[derive(Debug, Clone, Default)]
struct Rtts {
    count: usize,
    sum_nanos: u128,
    kept: Vec<Duration>,
}

impl Rtts {
    fn add(&mut self, rtt: Duration, keep: bool) {
        self.count += 1;
        self.sum_nanos += rtt.as_nanos();
        if keep {
            self.kept.push(rtt);
        }
    }

    fn clear(&mut self) {
        self.count = 0;
        self.sum_nanos = 0;
        self.kept.clear();
    }

    /// Never called on an empty set (a window closes on a sample).
    fn aggregate(&mut self, aggregate: Aggregate) -> Duration {
        match aggregate {
            Aggregate::Average => {
                let mean = self.sum_nanos / self.count.max(1) as u128;
                Duration::from_nanos(u64::try_from(mean).unwrap_or(u64::MAX))
            }
            Aggregate::Percentile(p) => {
                let n = self.kept.len();
                if n == 0 {
                    return Duration::ZERO;
                }
                let rank = ((p * n as f64).ceil() as usize).clamp(1, n);
                *self.kept.select_nth_unstable(rank - 1).1
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adaptive::{Aimd, Gradient2, Vegas};
    use proptest::prelude::*;

    const MS: Duration = Duration::from_millis(1);

    /// Records what it is fed; answers 100 + the number of updates.
    #[derive(Debug, Default)]
    struct Recorder {
        seen: Vec<Sample>,
    }

    impl LimitAlgorithm for Recorder {
        fn initial_limit(&self) -> usize {
            100
        }

        fn update(&mut self, sample: &Sample) -> usize {
            self.seen.push(*sample);
            100 + self.seen.len()
        }
    }

    fn at(start: Instant, offset: Duration, rtt: Duration, in_flight: usize) -> Sample {
        Sample {
            rtt,
            in_flight,
            overload: false,
            now: start + offset,
        }
    }

    #[test]
    fn defaults() {
        let w = Windowed::<Aimd>::default();
        assert_eq!(w.initial_limit(), 20);
        assert_eq!(w.min_samples, 10);
        assert_eq!(w.min_window, 100 * MS);
        assert_eq!(w.max_window, Duration::from_secs(1));
        assert_eq!(w.aggregate, Aggregate::Average);
        assert!(!w.close_on_overload);
        assert_eq!(Aggregate::default(), Aggregate::Average);
    }

    #[test]
    fn one_update_per_window_with_the_average() {
        let start = Instant::now();
        let mut w = Windowed::new(Recorder::default());
        // Samples every 10 ms, rtt 1..=11 ms: the 10th (at 90 ms) is
        // not yet min_window; the 11th (at 100 ms) closes the window.
        for i in 0..10u32 {
            let s = at(start, i * 10 * MS, (i + 1) * MS, i as usize);
            assert_eq!(w.update(&s), 100, "sample {i}");
        }
        assert!(w.inner().seen.is_empty());
        assert_eq!(w.update(&at(start, 100 * MS, 11 * MS, 3)), 101);
        assert_eq!(
            w.inner().seen,
            [Sample {
                rtt: 6 * MS, // (1 + ... + 11) / 11
                in_flight: 9,
                overload: false,
                now: start + 100 * MS,
            }]
        );
        // The next window starts at its first sample, however late.
        let later = start + Duration::from_secs(60);
        for i in 0..10u32 {
            assert_eq!(w.update(&at(later, i * 11 * MS, 20 * MS, 1)), 101);
        }
        // Ten samples over 99 ms: not yet; at 100 ms: closed.
        assert_eq!(w.update(&at(later, 100 * MS, 42 * MS, 1)), 102);
        assert_eq!(w.inner().seen.len(), 2);
        assert_eq!(w.inner().seen[1].rtt, 22 * MS); // (200 + 42) / 11
    }

    #[test]
    fn needs_min_samples_before_max_window() {
        let start = Instant::now();
        let mut w = Windowed::new(Recorder::default());
        // Six samples over 999 ms: too few, and not yet max_window.
        for i in 0..5u32 {
            assert_eq!(w.update(&at(start, i * 100 * MS, 10 * MS, 1)), 100);
        }
        assert_eq!(w.update(&at(start, 999 * MS, 10 * MS, 1)), 100);
        // At max_window (1 s) it closes with whatever it has.
        assert_eq!(w.update(&at(start, 1000 * MS, 10 * MS, 1)), 101);
        assert_eq!(w.inner().seen[0].rtt, 10 * MS);
        let mut w = Windowed::new(Recorder::default());
        w.update(&at(start, Duration::ZERO, 30 * MS, 1));
        assert_eq!(w.update(&at(start, 1000 * MS, 50 * MS, 2)), 101);
        assert_eq!(w.inner().seen[0].rtt, 40 * MS);
        // A lone sample much later opens a new window, which it does not
        // close on its own.
        assert_eq!(w.update(&at(start, 5000 * MS, 50 * MS, 2)), 101);
    }

    #[test]
    fn min_samples_and_min_window_are_configurable() {
        let start = Instant::now();
        let mut w = Windowed::new(Recorder::default())
            .min_samples(3)
            .min_window(Duration::ZERO);
        assert_eq!(w.update(&at(start, Duration::ZERO, MS, 1)), 100);
        assert_eq!(w.update(&at(start, Duration::ZERO, MS, 1)), 100);
        assert_eq!(w.update(&at(start, Duration::ZERO, MS, 1)), 101);
        assert_eq!(w.update(&at(start, Duration::ZERO, MS, 1)), 101);
        // max_window below min_window wins.
        let mut w = Windowed::new(Recorder::default())
            .min_window(Duration::from_secs(5))
            .max_window(200 * MS);
        for i in 0..20u32 {
            w.update(&at(start, i * 10 * MS, MS, 1));
        }
        assert_eq!(w.update(&at(start, 200 * MS, MS, 1)), 101);
        assert_eq!(w.inner().seen.len(), 1);
    }

    #[test]
    fn percentile_by_nearest_rank() {
        let start = Instant::now();
        let p = |p: f64| {
            let mut w = Windowed::new(Recorder::default())
                .aggregate(Aggregate::Percentile(p))
                .min_window(Duration::ZERO);
            // rtts 10, 20, ..., 100 ms, in a shuffled order.
            for (i, ms) in [70u32, 10, 100, 40, 30, 90, 20, 60, 80, 50]
                .into_iter()
                .enumerate()
            {
                w.update(&at(start, Duration::ZERO, ms * MS, i));
            }
            assert_eq!(w.inner().seen.len(), 1);
            w.inner().seen[0].rtt
        };
        assert_eq!(p(0.0), 10 * MS);
        assert_eq!(p(0.1), 10 * MS);
        assert_eq!(p(0.5), 50 * MS);
        assert_eq!(p(0.55), 60 * MS);
        assert_eq!(p(0.9), 90 * MS);
        assert_eq!(p(0.95), 100 * MS);
        assert_eq!(p(1.0), 100 * MS);
    }

    #[test]
    #[should_panic(expected = "percentile")]
    fn percentile_out_of_range_panics() {
        let _ = Windowed::new(Aimd::new()).aggregate(Aggregate::Percentile(99.0));
    }

    #[test]
    fn any_overload_marks_the_window_and_successes_give_the_rtt() {
        let start = Instant::now();
        let mut w = Windowed::new(Recorder::default());
        for i in 0..10u32 {
            let mut s = at(start, i * 20 * MS, 10 * MS, 5);
            if i == 3 {
                s.overload = true;
                s.rtt = Duration::from_secs(5);
                s.in_flight = 7;
            }
            w.update(&s);
        }
        // The overload did not close it; the 10th sample, at 180 ms, did.
        assert_eq!(
            w.inner().seen,
            [Sample {
                rtt: 10 * MS,
                in_flight: 7,
                overload: true,
                now: start + 180 * MS,
            }]
        );
        // Only overloads: their rtt.
        let mut w = Windowed::new(Recorder::default()).min_window(Duration::ZERO);
        for i in 0..10u32 {
            let mut s = at(start, Duration::ZERO, (i + 1) * MS, 1);
            s.overload = true;
            w.update(&s);
        }
        assert!(w.inner().seen[0].overload);
        assert_eq!(w.inner().seen[0].rtt, Duration::from_micros(5500));
    }

    #[test]
    fn close_on_overload_closes_at_once() {
        let start = Instant::now();
        let mut w = Windowed::new(Recorder::default()).close_on_overload(true);
        assert_eq!(w.update(&at(start, Duration::ZERO, 10 * MS, 1)), 100);
        let mut s = at(start, MS, 30 * MS, 2);
        s.overload = true;
        assert_eq!(w.update(&s), 101);
        assert_eq!(
            w.inner().seen,
            [Sample {
                rtt: 10 * MS,
                in_flight: 2,
                overload: true,
                now: start + MS,
            }]
        );
    }

    #[test]
    fn aimd_moves_once_per_window() {
        let start = Instant::now();
        let mut w = Windowed::new(Aimd::new().min(1).initial(10));
        let mut limits = Vec::new();
        for i in 0..100u32 {
            limits.push(w.update(&at(start, i * 10 * MS, 10 * MS, 10)));
        }
        // Windows close at samples 10, 21, 32, ... (every 11 samples,
        // each 100 ms): AIMD grew by one each time.
        assert_eq!(limits[9], 10);
        assert_eq!(limits[10], 11);
        assert_eq!(limits[20], 11);
        assert_eq!(limits[21], 12);
        assert_eq!(limits[99], 19);
        // A burst of overloads: one back-off per window.
        for i in 100..111u32 {
            let mut s = at(start, i * 10 * MS, 10 * MS, 10);
            s.overload = true;
            limits.push(w.update(&s));
        }
        // The window opened at sample 99 closes at 109, with 10 overloads.
        assert_eq!(limits[108], 19);
        assert_eq!(limits[109], 17); // floor(19 * 0.9)
        assert_eq!(limits[110], 17);
    }

    proptest! {
        #[test]
        fn limit_stays_within_bounds(
            min in 0usize..100,
            span in 0usize..300,
            min_samples in 0usize..20,
            min_window_ms in 0u64..300,
            max_window_ms in 0u64..1_000,
            percentile in prop::option::of(0.0f64..=1.0),
            close_on_overload in any::<bool>(),
            which in 0u8..3,
            samples in prop::collection::vec(
                (0u64..50, 0u64..1_000_000, 0usize..1_000, any::<bool>()), 0..300),
        ) {
            let max = min + span;
            let lo = min.max(1);
            let hi = max.max(lo);
            let inner: Box<dyn LimitAlgorithm> = match which {
                0 => Box::new(Aimd::new().min(min).max(max)),
                1 => Box::new(Vegas::new().min(min).max(max).probe_multiplier(1)),
                _ => Box::new(Gradient2::new().min(min).max(max)),
            };
            let mut w = Windowed::new(inner)
                .min_samples(min_samples)
                .min_window(Duration::from_millis(min_window_ms))
                .max_window(Duration::from_millis(max_window_ms))
                .aggregate(percentile.map_or(Aggregate::Average, Aggregate::Percentile))
                .close_on_overload(close_on_overload);
            let l = w.initial_limit();
            prop_assert!(l >= lo && l <= hi);
            let mut now = Instant::now();
            for (gap_ms, rtt_us, in_flight, overload) in samples {
                now += Duration::from_millis(gap_ms);
                let l = w.update(&Sample {
                    rtt: Duration::from_micros(rtt_us),
                    in_flight,
                    overload,
                    now,
                });
                prop_assert!(l >= lo && l <= hi, "{} not in [{}, {}]", l, lo, hi);
            }
        }
    }
}
