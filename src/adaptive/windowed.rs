//! Windowed: feeds any algorithm one aggregated sample per window of
//! successes.
//!
//! The rules, the parameters and their defaults are documented on
//! [`Windowed`] (this module is private, so its docs would never render).

use std::time::Duration;

use tokio::time::Instant;

use super::baseline::QUIET;
use super::rng::XorShift;
use super::{LimitAlgorithm, Sample};

/// How a window's round trips are summed up into one.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub enum Aggregate {
    /// The mean round trip.
    #[default]
    Average,
    /// The round trip at this percentile, as a fraction in `[0, 1]`
    /// (`0.99` for p99), by nearest rank: the `ceil(p * n)`-th shortest
    /// of `n` (the shortest for 0, the longest for 1). A window keeps at
    /// most 512 round trips for it: beyond that, the percentile of a
    /// uniform random sample of 512 of them.
    Percentile(f64),
}

/// The most round trips a window keeps for a percentile: beyond it, a
/// uniform sample of this many (so memory and the selection under the
/// limiter's lock stay bounded however busy a window is).
const RESERVOIR: usize = 512;

/// A window closes (with `min_samples`) once it spans this many round
/// trips (the last window's mean), if that is shorter than `min_window`.
const WINDOW_RTTS: f64 = 1.25;

/// The first window (with no last window to size it by) closes, with
/// `min_samples`, once it spans this many of its own round trips (its
/// mean), if that is shorter than `min_window`.
const FIRST_WINDOW_RTTS: f64 = 3.0;

/// A silence is longer than this many usual gaps between answers (and
/// than a round trip).
const SILENCE_GAPS: u32 = 4;

/// Wraps a [`LimitAlgorithm`] and feeds it one aggregated [`Sample`] per
/// window of successes instead of every one, after Netflix
/// concurrency-limits' `WindowedLimit`.
///
/// Single round trips are noisy; a window averages the noise out, and
/// makes the inner algorithm move once per window rather than once per
/// request. It is the recommended way to run [`Vegas`](super::Vegas) and
/// [`Gradient2`](super::Gradient2).
///
/// # Rules
///
/// - **Successes** go into the open window. A window opens with its first
///   sample (at that sample's `now`: an idle spell between windows does not
///   count) and closes, after taking in the sample that closes it, when it
///   holds at least `min_samples` samples and spans at least `min_window`
///   or 1.25 round trips (the last window's mean), whichever is shorter
///   (from its first sample's `now` to this one's), or when it spans at
///   least `max_window`, whatever its number of samples. The first window,
///   with no last one to size it by, spans `min_window` or three of its
///   own round trips (its mean so far), whichever is shorter: behind a
///   backend of 20 ms round trips, the limit starts growing after 60 ms,
///   not 100. Three, not 1.25: the first answers of a burst admitted at
///   once are the fastest of it, so the first window's mean comes out
///   short until its slow answers are in. A window of about a round trip is
///   what lets the inner algorithm grow as fast per round trip as when it
///   is fed every sample: its growth counts at most one round trip per
///   update.
/// - **A silence is news.** A success that comes after a silence longer
///   than the round trip (the mean of the open window, or of the last one)
///   and than four times the usual gap between answers (in that window)
///   closes the open window without it, and then goes to the inner
///   algorithm alone. When a backend stalls (loses most of its workers,
///   say) the answers of requests it had already started arrive as usual,
///   then none for a while, then slow ones: averaged together, the slow
///   ones would be diluted by answers from before the stall, and the limit
///   would come down a window late while every request admitted meanwhile
///   queued.
/// - **No-load round trips are passed on at once** (to
///   [`no_load`](LimitAlgorithm::no_load)), besides going into the window:
///   a success admitted with at most two in flight cannot have queued
///   behind others, and its round trip is the latency of an empty queue,
///   which an average over the window would lose.
/// - **Overloads are passed on at once**, one by one, and not averaged: an
///   overload (a refusal, a timeout) is an event, not a noisy
///   measurement, and the algorithms count them and read the in-flight
///   count they were refused at (see "Overload" on
///   [`Aimd`](super::Aimd)). They leave the open window as it is.
///
/// On closing, the inner algorithm gets one sample:
///
/// | Field | Value |
/// |---|---|
/// | `rtt` | The [`Aggregate`] (average, or a percentile) of the window's round trips. |
/// | `in_flight` | The largest in the window. |
/// | `overload` | `false`. |
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
/// | min_samples | [`min_samples`](Self::min_samples) | 5 | Samples a window needs to close before `max_window`. |
/// | min_window | [`min_window`](Self::min_window) | 100 ms | Shortest window. |
/// | max_window | [`max_window`](Self::max_window) | 1 s | Longest window; it wins over `min_window` if shorter. |
/// | aggregate | [`aggregate`](Self::aggregate) | [`Aggregate::Average`] | How the round trips are summed up. |
///
/// # Deviations from Netflix
///
/// - **Windows**: Netflix's defaults are a window of 1 s (`min_window` =
///   `max_window`) and 10 samples, made for production round trips; the
///   100 ms `min_window` here (or 1.25 round trips, three for the first
///   window, if shorter) lets round trips of 1 to 100 ms move the limit
///   about once per round trip under load, while `max_window` still bounds
///   how long a lightly loaded limiter waits. Unlike Netflix (which
///   discards a window with too few samples), a window at `max_window` is
///   used however few samples it holds.
/// - **`min_samples` is 5, not 10**: when a backend loses most of its
///   workers its answers slow to a trickle just when the limit must come
///   down, and ten of them can take several round trips to arrive.
/// - **Silences** close a window early (above); Netflix has no such rule.
/// - **Overloads are not aggregated**: Netflix marks the window as dropped
///   and feeds one sample per window, so a burst of refusals counted once
///   and the algorithm could not tell at how many in flight they came.
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
/// assert_eq!(algorithm.initial_limit(), 10);
/// ```
#[derive(Debug, Clone)]
pub struct Windowed<A> {
    inner: A,
    min_samples: usize,
    min_window: Duration,
    max_window: Duration,
    aggregate: Aggregate,
    /// The inner algorithm's last answer.
    limit: usize,
    /// When the latest success came.
    seen: Option<Instant>,
    /// The mean round trip and the mean gap between answers of the last
    /// window closed.
    last: Option<(Duration, Duration)>,
    window: Window,
}

impl<A: LimitAlgorithm + Default> Default for Windowed<A> {
    fn default() -> Self {
        Self::new(A::default())
    }
}

impl<A: LimitAlgorithm> Windowed<A> {
    /// Wraps `inner`, with the defaults: min_samples 5, min_window
    /// 100 ms, max_window 1 s, the average.
    pub fn new(inner: A) -> Self {
        Self {
            limit: inner.initial_limit(),
            inner,
            min_samples: 5,
            min_window: Duration::from_millis(100),
            max_window: Duration::from_secs(1),
            aggregate: Aggregate::Average,
            seen: None,
            last: None,
            window: Window::default(),
        }
    }
}

impl<A> Windowed<A> {
    /// How many samples a window needs to close before `max_window`
    /// (default 5).
    #[must_use]
    pub fn min_samples(mut self, min_samples: usize) -> Self {
        self.min_samples = min_samples;
        self
    }

    /// The shortest window (default 100 ms).
    #[must_use]
    pub fn min_window(mut self, min_window: Duration) -> Self {
        self.min_window = min_window;
        self
    }

    /// The longest window (default 1 s).
    #[must_use]
    pub fn max_window(mut self, max_window: Duration) -> Self {
        self.max_window = max_window;
        self
    }

    /// How the window's round trips are summed up (default the average).
    ///
    /// # Panics
    ///
    /// If a percentile is not within `[0, 1]`.
    #[must_use]
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

    /// The wrapped algorithm.
    pub fn inner(&self) -> &A {
        &self.inner
    }

    fn should_close(&self, start: Instant, sample: &Sample) -> bool {
        let span = sample.now.saturating_duration_since(start);
        let rtts = match self.last {
            Some((rtt, _)) => Some(rtt.mul_f64(WINDOW_RTTS)),
            None => self
                .window
                .stats()
                .map(|(rtt, _)| rtt.mul_f64(FIRST_WINDOW_RTTS)),
        };
        let min_window = rtts.map_or(self.min_window, |rtts| rtts.min(self.min_window));
        (self.window.rtts.count >= self.min_samples && span >= min_window)
            || span >= self.max_window
    }

    /// Whether `sample` comes after a silence, `seen` being the previous
    /// success.
    fn after_silence(&self, seen: Option<Instant>, sample: &Sample) -> bool {
        let (Some(seen), Some((rtt, gap))) = (seen, self.window.stats().or(self.last)) else {
            return false;
        };
        let silence = sample.now.saturating_duration_since(seen);
        silence > rtt && silence > gap * SILENCE_GAPS
    }
}

impl<A: LimitAlgorithm> LimitAlgorithm for Windowed<A> {
    fn initial_limit(&self) -> usize {
        self.inner.initial_limit()
    }

    fn no_load(&mut self, sample: &Sample) -> Option<usize> {
        let limit = self.inner.no_load(sample)?;
        self.limit = limit;
        Some(limit)
    }

    fn served(&mut self, sample: &Sample) {
        self.inner.served(sample);
    }

    fn update(&mut self, sample: &Sample) -> usize {
        if sample.overload {
            self.limit = self.inner.update(sample);
            return self.limit;
        }
        if sample.in_flight <= QUIET {
            if let Some(limit) = self.inner.no_load(sample) {
                self.limit = limit;
            }
        }
        let seen = self.seen.replace(sample.now);
        let keep = matches!(self.aggregate, Aggregate::Percentile(_));
        if self.after_silence(seen, sample) {
            if let Some(last) = self.window.last {
                self.close(last);
            }
            self.window.start = Some(sample.now);
            self.window.add(sample, keep);
            self.close(sample.now);
            return self.limit;
        }
        let start = *self.window.start.get_or_insert(sample.now);
        self.window.add(sample, keep);
        if self.should_close(start, sample) {
            self.close(sample.now);
        }
        self.limit
    }
}

impl<A: LimitAlgorithm> Windowed<A> {
    /// Closes the open window at `now` and feeds the inner algorithm.
    fn close(&mut self, now: Instant) {
        if let Some(stats) = self.window.stats() {
            self.last = Some(stats);
        }
        let aggregated = self.window.close(self.aggregate, now);
        self.limit = self.inner.update(&aggregated);
    }
}

/// The samples of the open window.
#[derive(Debug, Clone, Default)]
struct Window {
    /// The first sample's `now`; `None` while empty.
    start: Option<Instant>,
    /// The latest sample's `now`.
    last: Option<Instant>,
    rtts: Rtts,
    max_in_flight: usize,
}

impl Window {
    fn add(&mut self, sample: &Sample, keep: bool) {
        self.last = Some(sample.now);
        self.rtts.add(sample.rtt, keep);
        self.max_in_flight = self.max_in_flight.max(sample.in_flight);
    }

    /// The mean round trip and the mean gap between answers, once the
    /// window has two samples.
    fn stats(&self) -> Option<(Duration, Duration)> {
        let (start, last) = (self.start?, self.last?);
        let n = self.rtts.count;
        if n < 2 {
            return None;
        }
        let mean = self.rtts.sum_nanos / n as u128;
        let gap = last.saturating_duration_since(start) / (n as u32 - 1);
        Some((Duration::from_nanos(mean as u64), gap))
    }

    /// The aggregated sample; empties the window (keeping its buffers).
    fn close(&mut self, aggregate: Aggregate, now: Instant) -> Sample {
        let sample = Sample {
            rtt: self.rtts.aggregate(aggregate),
            in_flight: self.max_in_flight,
            overload: false,
            now,
        };
        self.start = None;
        self.last = None;
        self.rtts.clear();
        self.max_in_flight = 0;
        sample
    }
}

/// Round trips: their count and sum, and, when a percentile needs them,
/// a uniform sample of at most [`RESERVOIR`] of them.
#[derive(Debug, Clone)]
struct Rtts {
    count: usize,
    sum_nanos: u128,
    /// Every round trip while there are at most [`RESERVOIR`]; then a
    /// uniform random sample of that many (Vitter's algorithm R).
    kept: Vec<Duration>,
    rng: XorShift,
}

impl Default for Rtts {
    fn default() -> Self {
        Self {
            count: 0,
            sum_nanos: 0,
            kept: Vec::new(),
            rng: XorShift::new(0),
        }
    }
}

impl Rtts {
    fn add(&mut self, rtt: Duration, keep: bool) {
        self.count += 1;
        self.sum_nanos += rtt.as_nanos();
        if !keep {
            return;
        }
        if self.kept.len() < RESERVOIR {
            self.kept.push(rtt);
        } else {
            // The n-th round trip replaces a kept one with probability
            // RESERVOIR / n: every one seen is kept with that probability.
            let slot = self.rng.below(self.count as u64) as usize;
            if let Some(kept) = self.kept.get_mut(slot) {
                *kept = rtt;
            }
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

    /// Records what it is fed (updates, and successes served apart);
    /// answers 100 + the number of updates.
    #[derive(Debug, Default)]
    struct Recorder {
        seen: Vec<Sample>,
        served: Vec<Sample>,
    }

    impl LimitAlgorithm for Recorder {
        fn initial_limit(&self) -> usize {
            100
        }

        fn update(&mut self, sample: &Sample) -> usize {
            self.seen.push(*sample);
            100 + self.seen.len()
        }

        fn served(&mut self, sample: &Sample) {
            self.served.push(*sample);
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
        assert_eq!(w.initial_limit(), 10);
        assert_eq!(w.min_samples, 5);
        assert_eq!(w.min_window, 100 * MS);
        assert_eq!(w.max_window, Duration::from_secs(1));
        assert_eq!(w.aggregate, Aggregate::Average);
        assert_eq!(Aggregate::default(), Aggregate::Average);
    }

    #[test]
    fn one_update_per_window_with_the_average() {
        let start = Instant::now();
        let mut w = Windowed::new(Recorder::default());
        // Samples every 10 ms, rtt 35..=45 ms: three of the window's own
        // round trips (120 ms) are longer than min_window, so min_window
        // decides: the 10th (at 90 ms) is not yet min_window; the 11th (at
        // 100 ms) closes the window.
        for i in 0..10u32 {
            let s = at(start, i * 10 * MS, (35 + i) * MS, i as usize);
            assert_eq!(w.update(&s), 100, "sample {i}");
        }
        assert!(w.inner().seen.is_empty());
        assert_eq!(w.update(&at(start, 100 * MS, 45 * MS, 3)), 101);
        assert_eq!(
            w.inner().seen,
            [Sample {
                rtt: 40 * MS, // (35 + ... + 45) / 11
                in_flight: 9,
                overload: false,
                now: start + 100 * MS,
            }]
        );
        // The next window starts at its first sample, and needs to span
        // only 1.25 round trips of the last one (50 ms): its fifth sample
        // closes it.
        for i in 1..=4u32 {
            assert_eq!(w.update(&at(start, (100 + i * 10) * MS, 20 * MS, 1)), 101);
        }
        assert_eq!(w.update(&at(start, 160 * MS, 40 * MS, 1)), 102);
        assert_eq!(w.inner().seen.len(), 2);
        // (80 + 40) / 5
        assert_eq!(w.inner().seen[1].rtt, 24 * MS);
        // With round trips as long as min_window, min_window decides.
        for i in 1..=4u32 {
            assert_eq!(w.update(&at(start, (160 + i * 10) * MS, 200 * MS, 1)), 102);
        }
        assert_eq!(w.update(&at(start, 210 * MS, 200 * MS, 1)), 103);
        for i in 1..=10u32 {
            assert_eq!(w.update(&at(start, (210 + i * 10) * MS, 200 * MS, 1)), 103);
        }
        assert_eq!(w.update(&at(start, 320 * MS, 200 * MS, 1)), 104);
    }

    #[test]
    fn the_first_window_spans_three_of_its_own_round_trips() {
        let start = Instant::now();
        let mut w = Windowed::new(Recorder::default());
        // 10 ms round trips every 5 ms: no last window to size it by, so
        // the first closes once it spans three of its own (30 ms), not
        // min_window (100 ms).
        for i in 0..6u32 {
            assert_eq!(
                w.update(&at(start, i * 5 * MS, 10 * MS, 4)),
                100,
                "sample {i}"
            );
        }
        assert_eq!(w.update(&at(start, 30 * MS, 10 * MS, 4)), 101);
        assert_eq!(w.inner().seen.len(), 1);
        assert_eq!(w.inner().seen[0].rtt, 10 * MS);
        // min_samples still counts: two answers 40 ms apart are no window.
        let mut w = Windowed::new(Recorder::default());
        assert_eq!(w.update(&at(start, Duration::ZERO, 10 * MS, 4)), 100);
        assert_eq!(w.update(&at(start, 40 * MS, 10 * MS, 4)), 100);
        assert!(w.inner().seen.is_empty());
    }

    #[test]
    fn needs_min_samples_before_max_window() {
        let start = Instant::now();
        let mut w = Windowed::new(Recorder::default());
        // Four samples over 999 ms: too few, and not yet max_window (and
        // evenly spread: no silence).
        for i in 0..4u32 {
            assert_eq!(w.update(&at(start, i * 333 * MS, 10 * MS, 1)), 100);
        }
        // At max_window (1 s) it closes with whatever it has.
        assert_eq!(w.update(&at(start, 1000 * MS, 10 * MS, 1)), 101);
        assert_eq!(w.inner().seen[0].rtt, 10 * MS);
        assert_eq!(w.inner().seen.len(), 1);
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
            w.update(&at(start, i * 10 * MS, 100 * MS, 1));
        }
        assert_eq!(w.update(&at(start, 200 * MS, 100 * MS, 1)), 101);
        assert_eq!(w.inner().seen.len(), 1);
    }

    #[test]
    fn percentile_by_nearest_rank() {
        let start = Instant::now();
        let p = |p: f64| {
            let mut w = Windowed::new(Recorder::default())
                .aggregate(Aggregate::Percentile(p))
                .min_samples(10)
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
    fn a_busy_window_keeps_a_bounded_sample_for_its_percentile() {
        let start = Instant::now();
        // One window of 100 000 answers (all within min_window), with
        // round trips 1..=100 000 µs in a scrambled order.
        let mut w = Windowed::new(Recorder::default())
            .aggregate(Aggregate::Percentile(0.9))
            .min_samples(100_001)
            .min_window(Duration::from_secs(10))
            .max_window(Duration::from_secs(10));
        let n = 100_000u64;
        for i in 0..n {
            let us = (i * 7_919) % n + 1;
            w.update(&at(start, Duration::ZERO, Duration::from_micros(us), 1));
            assert!(w.window.rtts.kept.len() <= RESERVOIR);
        }
        assert_eq!(w.window.rtts.count, n as usize);
        assert!(w.window.rtts.kept.capacity() <= 2 * RESERVOIR);
        // The closing answer: p90 of the sample, near 90 000 µs.
        w.update(&at(
            start,
            Duration::from_secs(10),
            Duration::from_micros(1),
            1,
        ));
        let p90 = w.inner().seen[0].rtt.as_micros() as f64;
        assert!((p90 / 90_000.0 - 1.0).abs() < 0.05, "{p90}");
        // The mean still counts every one.
        let mut w = Windowed::new(Recorder::default())
            .min_samples(100_001)
            .min_window(Duration::from_secs(10))
            .max_window(Duration::from_secs(10));
        for i in 0..n {
            w.update(&at(
                start,
                Duration::ZERO,
                Duration::from_micros(i % 100 + 1),
                1,
            ));
        }
        assert!(w.window.rtts.kept.is_empty());
        w.update(&at(
            start,
            Duration::from_secs(10),
            Duration::from_micros(50),
            1,
        ));
        assert_eq!(w.inner().seen[0].rtt, Duration::from_nanos(50_500));
    }

    #[test]
    #[should_panic(expected = "percentile")]
    fn percentile_out_of_range_panics() {
        let _ = Windowed::new(Aimd::new()).aggregate(Aggregate::Percentile(99.0));
    }

    #[test]
    fn overloads_go_to_the_algorithm_at_once_one_by_one() {
        let start = Instant::now();
        let mut w = Windowed::new(Recorder::default());
        for i in 0..4u32 {
            w.update(&at(start, i * 20 * MS, 10 * MS, 5));
        }
        let mut over = at(start, 70 * MS, Duration::from_secs(5), 7);
        over.overload = true;
        assert_eq!(w.update(&over), 101);
        assert_eq!(w.update(&over), 102);
        assert_eq!(w.inner().seen, [over, over]);
        // The open window is untouched: its fifth success at 100 ms closes
        // it, with its own round trips and in-flight counts only.
        assert_eq!(w.update(&at(start, 100 * MS, 10 * MS, 5)), 103);
        assert_eq!(
            w.inner().seen[2],
            Sample {
                rtt: 10 * MS,
                in_flight: 5,
                overload: false,
                now: start + 100 * MS,
            }
        );
    }

    #[test]
    fn every_success_is_served_to_the_algorithm_as_it_came() {
        let start = Instant::now();
        let mut w = Windowed::new(Recorder::default());
        let successes: Vec<Sample> = (0..3u32)
            .map(|i| at(start, i * 20 * MS, (10 + i) * MS, 5 + i as usize))
            .collect();
        for s in &successes {
            w.served(s);
            w.update(s);
        }
        // Served one by one, with their own round trips and in-flight
        // counts, while the window that averages them is still open.
        assert_eq!(w.inner().served, successes);
        assert!(w.inner().seen.is_empty());
    }

    #[test]
    fn an_answer_after_a_silence_goes_alone() {
        let start = Instant::now();
        let mut w = Windowed::new(Recorder::default());
        // Answers every 2 ms with 50 ms round trips...
        for i in 0..20u32 {
            w.update(&at(start, i * 2 * MS, 50 * MS, 16));
        }
        assert!(w.inner().seen.is_empty());
        // ...then none for 60 ms (more than the round trip and four gaps),
        // then a slow one: the window closes without it, then it alone.
        assert_eq!(w.update(&at(start, 98 * MS, 400 * MS, 16)), 102);
        let seen = &w.inner().seen;
        assert_eq!(seen[0].rtt, 50 * MS);
        assert_eq!(seen[0].now, start + 38 * MS);
        assert_eq!(seen[1].rtt, 400 * MS);
        assert_eq!(seen[1].now, start + 98 * MS);
        // Also when the window has just closed: the last window's pace
        // counts.
        let mut w = Windowed::new(Recorder::default()).min_samples(10);
        for i in 0..=50u32 {
            w.update(&at(start, i * 2 * MS, 50 * MS, 16));
        }
        assert_eq!(w.inner().seen.len(), 1);
        assert_eq!(w.update(&at(start, 200 * MS, 400 * MS, 16)), 102);
        assert_eq!(w.inner().seen[1].rtt, 400 * MS);
    }

    #[test]
    fn light_load_is_no_silence() {
        let start = Instant::now();
        let mut w = Windowed::new(Recorder::default());
        // One answer every 150 ms, each 50 ms long: gaps longer than the
        // round trip, but that is this load's pace. Windows of five.
        for i in 0..10u32 {
            w.update(&at(start, i * 150 * MS, 50 * MS, 1));
        }
        let closed: Vec<Instant> = w.inner().seen.iter().map(|s| s.now).collect();
        assert_eq!(closed, [start + 600 * MS, start + 1350 * MS]);
    }

    #[test]
    fn aimd_moves_once_per_window() {
        let start = Instant::now();
        let mut w = Windowed::new(Aimd::new().initial(10)).min_samples(11);
        let mut limits = Vec::new();
        for i in 0..100u32 {
            limits.push(w.update(&at(start, i * 10 * MS, 10 * MS, 20)));
        }
        // Windows close at samples 10, 21, 32, ... (each opens with its
        // first sample; the first spans 100 ms, the others 11 samples):
        // AIMD grew by one each time.
        assert_eq!(limits[9], 10);
        assert_eq!(limits[10], 11);
        assert_eq!(limits[20], 11);
        assert_eq!(limits[21], 12);
        assert_eq!(limits[99], 19);
        // A burst of overloads: each one counts, as far as the episode's
        // floor.
        let mut over = at(start, 1000 * MS, 10 * MS, 30);
        over.overload = true;
        assert_eq!(w.update(&over), 17); // floor(19 * 0.9)
        assert_eq!(w.update(&over), 15); // floor(17.1 * 0.9)
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
                .aggregate(percentile.map_or(Aggregate::Average, Aggregate::Percentile));
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
