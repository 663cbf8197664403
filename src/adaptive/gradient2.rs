//! Gradient2: a delay-based limit that compares the round trip with a
//! no-load baseline.
//!
//! The formula, the parameters and their defaults are documented on
//! [`Gradient2`] (this module is private, so its docs would never render).

use tokio::time::Instant;

use super::aimd::{reached, rounds_since, slow_start, Overloads};
use super::baseline::{probe_level, RttFilter, QUIET};
use super::calm::{Falls, NO_QUEUE_MARGIN};
use super::{check, LimitAlgorithm, Sample};

/// The smallest gradient: a decrease keeps at least this share.
const MIN_GRADIENT: f64 = 0.25;
/// The ratio an overload multiplies the limit by.
const BACKOFF: f64 = 0.9;
/// The slow start of [`Gradient2::recommended`].
const RECOMMENDED_SLOW_START: f64 = 1.5;
/// The tolerance floor of [`Gradient2::recommended`].
const RECOMMENDED_TOLERANCE_FLOOR: f64 = 1.08;
/// The damping of [`Gradient2::recommended`].
const RECOMMENDED_DAMPING: f64 = 0.3;
/// A decrease is small, and [`Gradient2::damping`] applies to it, when it
/// takes less than this many requests off the limit...
const SMALL_CUT: f64 = 1.5;
/// ...and less than this share of it.
const SMALL_CUT_SHARE: f64 = 0.2;

/// A delay-based limit after Netflix concurrency-limits' `Gradient2Limit`.
///
/// It compares the round trip with a baseline, the latency of an empty
/// queue: a round trip within `tolerance` times the baseline means no
/// harmful queue, and the limit grows by `queue_size` per round trip; a
/// longer one shrinks the limit in proportion.
///
/// # Formula
///
/// With `L` the current limit, `rtt` the smoothed round trip, `own` the
/// sample's own and `baseline` the no-load round trip (both kept as in
/// [`Vegas`](super::Vegas): time-weighted moving averages, the baseline
/// measured on no-load answers, probed when they disagree with the rest
/// soon after they came,
/// and otherwise the lowest slow average over one to two intervals of
/// `long_window` round trips; see "Round trips" there), and
///
/// ```text
/// gradient(r) = clamp(tolerance * baseline / r, 0.25, 1.0)
/// ```
///
/// each sample does the first of these that applies:
///
/// ```text
/// overload:                    see "Overload" on Aimd (L * 0.9, a ceiling)
/// f * 2 < L, with f the sample's in-flight count:
///                              hold        (under-used: no evidence)
/// g = gradient(min(rtt, own)) < 1 and f * g + queue_size < L:
///                              new = f * g + queue_size, or, if that takes
///                              less than 1.5 requests and less than a
///                              fifth off L, L - (L - new) * damping
/// in_flight < floor(L):        hold        (the limit was not reached)
/// g = gradient(max(rtt, own)), L * g + queue_size <= L:
///                              hold
/// otherwise, if max(rtt, own) <= baseline * 17/16 and no decrease for
/// 20 round trips (8 after a collapse, up to where it was), or every
/// sample at the limit within a sixteenth of the baseline for 5 (room:
/// `5 * max(1, 16 * spread)` with the noisy round trips' spread; after a
/// collapse, up to where it was):
///                              new = max(L * slow_start ^ min(1, dt / rtt), L + queue_size)
/// otherwise:                   new = L + min(L * g + queue_size - L, queue_size) * min(1, dt / rtt),
///                              the step times damping if g < 1
///
/// L = clamp(L * (1 - smoothing) + new * smoothing, min, max)
/// ```
///
/// With a [`tolerance_floor`](Self::tolerance_floor), `tolerance` in these
/// formulas is `clamp(1 + spread, floor, tolerance)`, with `spread` the
/// root mean square of the round trips' relative deviations from the
/// smoothed round trip over about two round trips.
///
/// At the equilibrium `L * gradient + queue_size = L`, the round trip is
/// `tolerance * L / (L - queue_size)` times the baseline: with the
/// defaults 1.15 times for a large limit and about 1.45 times for a limit
/// of 5. The answer is `floor(L)`. As in [`Vegas`](super::Vegas), a
/// decrease is judged at the sample's own in-flight count (for a window,
/// the largest) and can only lower the limit, so the answers of one queue
/// lead to one decrease however many there are; the smoothed and the own
/// round trip must both show a queue to decrease and both show none to
/// grow; and `dt` is the time since the limit last grew, so growth is one
/// step per round trip however many samples it brings.
///
/// # Parameters
///
/// | Parameter | Builder | Default | Meaning |
/// |---|---|---|---|
/// | initial | [`initial`](Self::initial) | 10 | Limit to start with (clamped to `[min, max]`). |
/// | min | [`min`](Self::min) | 1 | Lowest limit; at least 1. |
/// | max | [`max`](Self::max) | 200 | Highest limit; if below `min`, `max` wins. |
/// | smoothing | [`smoothing`](Self::smoothing) | 1.0 | Weight of the new value, in `(0, 1]`. |
/// | tolerance | [`tolerance`](Self::tolerance) | 1.15 | How many times the baseline a round trip may take before the limit shrinks; at least 1. |
/// | tolerance_floor | [`tolerance_floor`](Self::tolerance_floor) | none | If set, the tolerance follows the round trips' noise (`1 + spread`) between this floor and `tolerance`; at least 1. |
/// | long_window | [`long_window`](Self::long_window) | 1000 | Round trips of one interval of the baseline's minimum (it spans one to two); at least 1. |
/// | damping | [`damping`](Self::damping) | 1.0 | Share of each step made near the knee (a small decrease, or growth while a queue shows), in `(0, 1]`. |
/// | queue_size | [`queue_size`](Self::queue_size) | 1 | Added to `L * gradient`: the queue allowed, and the growth per round trip. |
/// | slow_start | [`slow_start`](Self::slow_start) | 1.125 | Growth per round trip while nothing queues; above 1. |
///
/// # Overload
///
/// An overload decreases the limit by 10% and sets a ceiling, as on
/// [`Aimd`](super::Aimd) (see "Overload" there); its round trip is not
/// averaged in: a fast refusal or a timeout says nothing about the latency
/// of served requests.
///
/// # Deviations from Netflix
///
/// - **`min` is 1, not 20, and `initial` 10, not 20**: a library default
///   has to be able to find a small limit (behind a backend that takes 5 at
///   once, a floor of 20 keeps 15 too many in flight), and a start above
///   what the backend takes queues requests before the first answer, whose
///   round trips then pass for the unloaded latency.
/// - **The baseline is a no-load round trip, not a long average.**
///   Netflix compares each round trip with an exponential average of the
///   round trips themselves, over 600 samples: under steady load that
///   average *is* the loaded latency, the gradient stays at 1, and the
///   limit climbs by `queue_size` per sample until the average lags behind
///   a growing queue. It settled at about twice the ideal limit. Here the
///   baseline is the lowest slow average (see [`Vegas`](super::Vegas)),
///   which only an empty queue reaches; `long_window` now counts the round
///   trips of its interval, not the samples of an average.
/// - **`tolerance` is 1.15, not 1.5, and `queue_size` 1, not 4**:
///   against a no-load baseline, 1.5 allowed half as many queued as
///   served, and a fixed allowance of 4 is a whole worker pool's worth for
///   a small backend (behind 4 workers it settled at 8).
/// - **The smallest gradient is 0.25, not 0.5**: when the backend loses
///   three quarters of its workers, halving per step leaves a queue that
///   every request admitted meanwhile waits in.
/// - **Growth is a step per round trip, not per sample, and only when the
///   limit was reached; decreases are judged at the sample's own in-flight
///   count; smoothing defaults to 1** (Netflix: 0.2 of the way, every
///   sample). Per-sample steps move the limit once per request in flight
///   each round trip, so growth ran ahead of the queue it built, and the
///   smoothing that tamed it made decreases slow. While the round trip is
///   within a sixteenth of the baseline and nothing decreased for 20 round
///   trips, the limit grows by `slow_start` per round trip (a slow start,
///   compounded per sample), so large limits are found in tens of round
///   trips, not hundreds (behind [`Windowed`](super::Windowed) with a slow
///   start of 1.5, as [`Limiter::adaptive_default`](crate::Limiter::adaptive_default)
///   runs it, in about ten). After a collapse (a fall below half of where
///   the limit was at most 8 round trips before: a stall, capacity lost)
///   the slow start waits 8 round trips, not 20, and goes only back to
///   that level until the 20 have passed: round trips back at the
///   baseline then say that capacity came back, and the limit regrows in a
///   few round trips instead of a step per round trip (as in
///   [`Vegas`](super::Vegas)). So does **room**: five round trips in a row
///   of samples that reached the limit within a sixteenth of the baseline
///   (near the knee a step or two shows the queue again and breaks the
///   run; round trips whose spread exceeds that sixteenth pass the test by
///   chance, and need a run as many times longer), after which a deadline miss's ceiling set in a queue is lifted
///   too: when capacity comes back after a long stay at a lower knee,
///   whose small decreases kept the 20 round trips from ever passing.
/// - **Overload** is a multiplicative decrease with a ceiling, shared with
///   the other algorithms (see "Overload" on [`Aimd`](super::Aimd)).
///   Netflix's `Gradient2Limit` ignores drops.
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
    slow_start: f64,
    tolerance: f64,
    tolerance_floor: Option<f64>,
    damping: f64,
    long_window: usize,
    queue_size: usize,
    /// The current estimate; `None` until the first update.
    limit: Option<f64>,
    rtts: RttFilter,
    /// When the limit last grew.
    grew: Option<Instant>,
    /// When the limit last fell, on delay or overload.
    falls: Falls,
    overloads: Overloads,
}

impl Default for Gradient2 {
    fn default() -> Self {
        Self {
            initial: 10,
            min: 1,
            max: 200,
            smoothing: 1.0,
            slow_start: 1.125,
            tolerance: 1.15,
            tolerance_floor: None,
            damping: 1.0,
            long_window: 1000,
            queue_size: 1,
            limit: None,
            rtts: RttFilter::default(),
            grew: None,
            falls: Falls::default(),
            overloads: Overloads::default(),
        }
    }
}

impl Gradient2 {
    /// The defaults: initial 10, min 1, max 200, smoothing 1.0, tolerance
    /// 1.15, no tolerance floor, damping 1.0, long_window 1000, queue_size 1.
    pub fn new() -> Self {
        Self::default()
    }

    /// The settings [`Limiter::adaptive_default`](crate::Limiter::adaptive_default)
    /// runs behind [`Windowed`](super::Windowed): a slow start of 1.5 per
    /// round trip ([`slow_start`](Self::slow_start)) and a tolerance that
    /// follows the noise of the round trips down to 1.08
    /// ([`tolerance_floor`](Self::tolerance_floor)), and steps near the
    /// knee made 0.3 of the way ([`damping`](Self::damping)), the other
    /// defaults as they are. To change one of them, say the highest limit:
    ///
    /// ```
    /// use tower_concurrency::adaptive::{Gradient2, Windowed};
    /// use tower_concurrency::Limiter;
    ///
    /// let limiter = Limiter::adaptive(Windowed::new(Gradient2::recommended().max(1000)));
    /// assert_eq!(limiter.limit(), 10);
    /// ```
    pub fn recommended() -> Self {
        Self::new()
            .slow_start(RECOMMENDED_SLOW_START)
            .tolerance_floor(RECOMMENDED_TOLERANCE_FLOOR)
            .damping(RECOMMENDED_DAMPING)
    }

    /// The limit to start with (default 10), clamped to `[min, max]`.
    #[must_use]
    pub fn initial(mut self, initial: usize) -> Self {
        self.initial = initial;
        self
    }

    /// The lowest limit (default 1); 0 is taken as 1.
    #[must_use]
    pub fn min(mut self, min: usize) -> Self {
        self.min = min;
        self
    }

    /// The highest limit (default 200); if it is below `min`, it wins.
    #[must_use]
    pub fn max(mut self, max: usize) -> Self {
        self.max = max;
        self
    }

    /// The factor the limit grows by per round trip while the round
    /// trips show no queue (default 1.125: an eighth). Behind
    /// [`Windowed`](super::Windowed), whose windows average the noise of
    /// single round trips out, 1.5 finds a large limit in a few round trips
    /// (what [`Limiter::adaptive_default`](crate::Limiter::adaptive_default)
    /// uses).
    ///
    /// # Panics
    ///
    /// If `slow_start` is not above 1 or not finite.
    #[must_use]
    pub fn slow_start(mut self, slow_start: f64) -> Self {
        self.slow_start = check::above_one("Gradient2", "slow_start", slow_start);
        self
    }

    /// The weight of each new value against the current limit (default
    /// 1.0).
    ///
    /// # Panics
    ///
    /// If `smoothing` is not in `(0, 1]`.
    #[must_use]
    pub fn smoothing(mut self, smoothing: f64) -> Self {
        self.smoothing = check::share("Gradient2", "smoothing", smoothing);
        self
    }

    /// How many times the baseline a round trip may take before the limit
    /// shrinks (default 1.15).
    ///
    /// # Panics
    ///
    /// If `tolerance` is below 1 or not finite.
    #[must_use]
    pub fn tolerance(mut self, tolerance: f64) -> Self {
        self.tolerance = check::at_least_one("Gradient2", "tolerance", tolerance);
        self
    }

    /// Lets the tolerance follow the noise of the round trips, down to
    /// `floor` (default: none, the tolerance is fixed). The tolerance is
    /// then one plus the round trips' spread (the root mean square of
    /// their relative deviations from the smoothed round trip, over about
    /// two round trips), between `floor` and
    /// [`tolerance`](Self::tolerance): round trips that agree with each
    /// other leave a small queue (the limit settles nearer to the capacity
    /// times the baseline), noisy ones the full tolerance, so that noise
    /// is not taken for a queue.
    /// [`Limiter::adaptive_default`](crate::Limiter::adaptive_default)
    /// uses a floor of 1.08. A floor above `tolerance` leaves the
    /// tolerance fixed.
    ///
    /// # Panics
    ///
    /// If `floor` is below 1 or not finite.
    #[must_use]
    pub fn tolerance_floor(mut self, floor: f64) -> Self {
        self.tolerance_floor = Some(check::at_least_one("Gradient2", "tolerance_floor", floor));
        self
    }

    /// The share of each step the limit makes near the knee (default 1.0:
    /// all of it): of a small decrease, one that takes less than 1.5
    /// requests and less than a fifth off the limit (the size of the noise
    /// in one window's mean round trip at a small limit), and of growth
    /// while the round trips show a queue within the allowance. There the
    /// round trips' noise, not the backend, moves the limit from one
    /// window to the next, and as the answer is `floor(L)`, a limit of 12
    /// cut by 0.2 serves at 11. Damped, the limit stays put through the
    /// noise while a run of windows that agree still moves it; larger
    /// decreases (a queue building, capacity lost) and growth with no
    /// queue in sight are made at once.
    /// [`recommended`](Self::recommended) uses 0.3.
    ///
    /// # Panics
    ///
    /// If `damping` is not in `(0, 1]`.
    #[must_use]
    pub fn damping(mut self, damping: f64) -> Self {
        self.damping = check::share("Gradient2", "damping", damping);
        self
    }

    /// How many round trips one interval of the baseline's minimum lasts
    /// (default 1000); the baseline spans one to two intervals.
    ///
    /// # Panics
    ///
    /// If `long_window` is 0.
    #[must_use]
    pub fn long_window(mut self, long_window: usize) -> Self {
        assert!(long_window > 0, "Gradient2 long_window must be at least 1");
        self.long_window = long_window;
        self
    }

    /// The queue allowed on top of `L * gradient`, and the growth per
    /// round trip (default 1).
    #[must_use]
    pub fn queue_size(mut self, queue_size: usize) -> Self {
        self.queue_size = queue_size;
        self
    }

    /// The tolerance now: fixed, or following the round trips' spread
    /// down to the floor (see [`tolerance_floor`](Self::tolerance_floor)).
    fn tolerance_now(&self) -> f64 {
        match (self.tolerance_floor, self.rtts.spread()) {
            (Some(floor), Some(spread)) => {
                (1.0 + spread).clamp(floor.min(self.tolerance), self.tolerance)
            }
            _ => self.tolerance,
        }
    }

    /// The lowest and the highest limit, `min` at least 1 and `max`
    /// winning over `min`.
    fn bounds(&self) -> (f64, f64) {
        let hi = self.max.max(1);
        (self.min.clamp(1, hi) as f64, hi as f64)
    }

    /// Moves toward `new` and answers the new limit.
    fn apply(&mut self, limit: f64, new: f64) -> usize {
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

    fn served(&mut self, sample: &Sample) {
        self.overloads.served(sample);
    }

    fn update(&mut self, sample: &Sample) -> usize {
        let limit = self.limit.unwrap_or_else(|| self.initial_limit() as f64);

        if sample.overload {
            let tolerance = self.tolerance_now();
            let tail = self
                .rtts
                .queue_tail(sample, |rtt, baseline| rtt > tolerance * baseline);
            let next = self.overloads.overload(limit, BACKOFF, sample, tail);
            let round = self.rtts.baseline();
            self.falls.fell(limit, next, sample.now, round);
            return self.apply(limit, next);
        }

        if sample.in_flight <= QUIET {
            self.rtts.no_load(sample.rtt);
        }
        self.rtts
            .add(sample.rtt, sample.now, self.long_window as f64);
        let held = probe_level(self.bounds());
        if self.rtts.probe(sample, held) {
            return held;
        }
        let (Some(rtt), Some(baseline)) = (self.rtts.short(), self.rtts.baseline()) else {
            return self.apply(limit, limit);
        };
        let own = sample.rtt.as_secs_f64();
        let tolerance = self.tolerance_now();
        let gradient = |r: f64| {
            if r <= 0.0 {
                1.0
            } else {
                (tolerance * baseline / r).clamp(MIN_GRADIENT, 1.0)
            }
        };
        let queue = self.queue_size as f64;

        if (sample.in_flight as f64) * 2.0 < limit {
            // Under-used: no evidence either way.
            return self.apply(limit, limit);
        }
        let measured = (sample.in_flight as f64).max(1.0);
        let provisional = self.rtts.is_provisional();
        let g = gradient(rtt.min(own));
        if g < 1.0 && !provisional {
            let target = measured * g + queue;
            if target < limit {
                let cut = limit - target;
                let cut = if cut < SMALL_CUT && cut < limit * SMALL_CUT_SHARE {
                    cut * self.damping
                } else {
                    cut
                };
                self.falls
                    .fell(limit, limit - cut, sample.now, Some(baseline));
                return self.apply(limit, limit - cut);
            }
        }

        if !reached(limit, sample) {
            return self.apply(limit, limit);
        }
        let slower = rtt.max(own);
        let no_queue = slower <= baseline * (1.0 + NO_QUEUE_MARGIN);
        self.falls.reached(sample.now, !no_queue);
        let slower_gradient = gradient(slower);
        let target = limit * slower_gradient + queue;
        if target <= limit {
            return self.apply(limit, limit);
        }
        let spread = self.rtts.spread();
        let ceiling = self
            .falls
            .slow_start_ceiling(sample.now, baseline, spread, limit);
        let grown = if let Some(ceiling) = ceiling.filter(|_| no_queue) {
            slow_start(limit, self.slow_start, self.grew, sample)
                .min(ceiling)
                .max(limit + queue)
        } else {
            let step = (target - limit).min(queue) * rounds_since(self.grew, sample);
            if slower_gradient < 1.0 {
                // Near the knee: a queue shows, within the allowance.
                limit + step * self.damping
            } else {
                limit + step
            }
        };
        let room = self.falls.room(sample.now, baseline, spread);
        let grown = self.overloads.cap(limit, grown, sample.now, room);
        if grown > limit {
            self.grew = Some(sample.now);
        }
        self.apply(limit, grown)
    }

    fn no_load(&mut self, sample: &Sample) -> Option<usize> {
        let limit = self.limit.unwrap_or_else(|| self.initial_limit() as f64);
        let bounds = self.bounds();
        self.rtts.answer_no_load(sample, limit as usize, bounds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adaptive::clock::Clock;
    use proptest::prelude::*;
    use std::time::Duration;

    const EPS: f64 = 1e-9;

    /// Feeds `rtt` every 10 ms with 3 in flight (so the limit holds, and
    /// no answer is a no-load one) until the baseline is set; answers the
    /// time of the last sample.
    fn warm(g: &mut Gradient2, c: &Clock, rtt: u64) -> u64 {
        let l = g.initial_limit();
        for at in (0..).step_by(10) {
            assert_eq!(g.update(&c.ok(at, rtt, 3)), l);
            if g.rtts.baseline().is_some() {
                return at;
            }
        }
        unreachable!()
    }

    fn limit(g: &Gradient2) -> f64 {
        g.limit.expect("updated")
    }

    #[test]
    fn defaults() {
        let g = Gradient2::default();
        assert_eq!(g.initial_limit(), 10);
        assert_eq!(
            (g.min, g.max, g.long_window, g.queue_size),
            (1, 200, 1000, 1)
        );
        assert_eq!((g.smoothing, g.tolerance), (1.0, 1.15));
    }

    #[test]
    fn holds_until_there_is_a_baseline() {
        let c = Clock::new();
        let mut g = Gradient2::new();
        for at in (0..500).step_by(10) {
            assert_eq!(g.update(&c.ok(at, 100, 10)), 10);
        }
    }

    #[test]
    fn grows_fast_while_nothing_queues_then_by_queue_size() {
        let c = Clock::new();
        let mut g = Gradient2::new().initial(16);
        let t = warm(&mut g, &c, 100);
        // At the baseline: L / 8 per round trip (a slow start).
        g.update(&c.ok(t + 10, 100, 16));
        assert!((limit(&g) - 18.0).abs() < EPS);
        // Within tolerance but above a sixteenth: queue_size per round trip.
        let mut g = Gradient2::new().initial(16);
        let t = warm(&mut g, &c, 100);
        for i in 1..=20 {
            g.update(&c.ok(t + i * 10, 110, 16));
        }
        assert!((limit(&g) - 17.0).abs() < 0.05, "{}", limit(&g));
        // queue_size 4: four per round trip.
        let mut g = Gradient2::new().initial(16).queue_size(4);
        let t = warm(&mut g, &c, 100);
        for i in 1..=10 {
            g.update(&c.ok(t + i * 10, 110, 16));
        }
        assert!((limit(&g) - 20.0).abs() < 0.05, "{}", limit(&g));
        // Not when the limit was not reached.
        let mut g = Gradient2::new().initial(16);
        let t = warm(&mut g, &c, 100);
        assert_eq!(g.update(&c.ok(t + 10, 100, 15)), 16);
        assert_eq!(limit(&g), 16.0);
    }

    #[test]
    fn shrinks_by_the_gradient_at_the_measured_in_flight() {
        let c = Clock::new();
        let mut g = Gradient2::new().initial(20);
        let t = warm(&mut g, &c, 100);
        // A 200 ms answer with 20 in flight, 300 ms after the last: the
        // smoothed round trip moves most of the way (weight
        // 1 - exp(-300 / 200)), and the shorter of it and the answer's own
        // gives the gradient.
        g.update(&c.ok(t + 300, 200, 20));
        let rtt = g.rtts.short().unwrap();
        assert!(rtt > 0.15 && rtt < 0.2, "{rtt}");
        let gradient = 1.15 * 0.1 / rtt;
        assert!((limit(&g) - (20.0 * gradient + 1.0)).abs() < EPS);
        // The same answer again, at the same 20 in flight: the same
        // target, no second decrease.
        let l = limit(&g);
        g.update(&c.ok(t + 300, 200, 20));
        assert_eq!(limit(&g), l);
        // Far slower ones: a quarter at most, plus the queue.
        for i in 1..=50 {
            g.update(&c.ok(t + 300 + i * 10, 5000, 20));
        }
        assert!((limit(&g) - 6.0).abs() < EPS);
        // One at a lower in-flight count: its own target.
        g.update(&c.ok(t + 900, 5000, 8));
        assert!((limit(&g) - 3.0).abs() < EPS);
        // A single slow answer among frequent fast ones moves nothing.
        let mut g = Gradient2::new().initial(20);
        let t = warm(&mut g, &c, 100);
        assert_eq!(g.update(&c.ok(t + 10, 300, 20)), 20);
    }

    #[test]
    fn under_used_answers_decide_nothing() {
        let c = Clock::new();
        let mut g = Gradient2::new().initial(20);
        let t = warm(&mut g, &c, 100);
        // Slow, but with 9 in flight of a limit of 20 (the first request
        // after an idle spell, say): not this limit's queue.
        for i in 1..=50 {
            assert_eq!(g.update(&c.ok(t + i * 10, 1000, 9)), 20);
        }
        assert!(g.update(&c.ok(t + 600, 1000, 10)) < 20);
    }

    #[test]
    fn holds_at_the_equilibrium() {
        let c = Clock::new();
        // L * 1.15 / r + 1 = L at L = 20: r = 1.15 * 20 / 19 = 1.2105.
        let mut g = Gradient2::new().initial(20);
        let t = warm(&mut g, &c, 100);
        for i in 1..=50 {
            g.update(&c.ok(t + i * 10, 121, 20));
        }
        assert!((limit(&g) - 20.0).abs() < 0.05, "{}", limit(&g));
    }

    #[test]
    fn a_decrease_slows_growth_for_twenty_round_trips() {
        let c = Clock::new();
        let mut g = Gradient2::new().initial(40);
        let t = warm(&mut g, &c, 100);
        g.update(&c.ok(t + 300, 200, 40));
        let l = limit(&g);
        // A decrease, but not below half: no collapse.
        assert!(l > 20.0 && l < 30.0, "{l}");
        // No queue again: queue_size per round trip, not L / 8, until 20
        // round trips (2 s) after the decrease.
        let mut at = t + 2_050;
        for _ in 0..3 {
            g.update(&c.ok(at, 100, 80));
            at += 100;
        }
        assert!(
            (limit(&g) - (l + 3.0)).abs() < EPS,
            "{} from {l}",
            limit(&g)
        );
        let before = limit(&g);
        g.update(&c.ok(at, 100, 80));
        assert!((limit(&g) - before - before / 8.0).abs() < EPS);
    }

    #[test]
    fn after_a_collapse_growth_is_fast_again_after_eight_round_trips() {
        let c = Clock::new();
        let mut g = Gradient2::new().initial(40);
        let t = warm(&mut g, &c, 100);
        // The answers of a stall take the limit below half of 40.
        g.update(&c.ok(t + 300, 300, 40));
        let l = limit(&g);
        assert!(l < 20.0, "{l}");
        // Round trips back at the baseline, every 10 ms, at the limit:
        // queue_size (1) per round trip (0.1 per answer) for 8 round trips
        // (800 ms) after the decrease, then a slow start (an eighth per
        // round trip: more than 0.2 per answer at 16 and above) once the
        // smoothed round trip, raised by the 300 ms answer, is back within
        // a sixteenth of the baseline too (not 20 round trips, 2 s).
        let mut fast = None;
        for at in (t + 310..t + 1_500).step_by(10) {
            let before = limit(&g);
            g.update(&c.ok(at, 100, 80));
            let step = limit(&g) - before;
            if at < t + 300 + 800 {
                assert!(step <= 0.1 + EPS, "{step} at {}", at - t - 300);
            } else if step > 0.2 {
                fast.get_or_insert(at - t - 300);
            }
        }
        let fast = fast.expect("a slow start within 1.2 s of the decrease");
        assert!((800..1_000).contains(&fast), "{fast}");
    }

    #[test]
    fn five_round_trips_of_room_end_the_wait_after_a_decrease() {
        let c = Clock::new();
        // After a decrease that is no collapse, round trips every 10 ms at
        // the limit, back at the baseline (100 ms) but for one of 110 ms
        // (a short queue: within the tolerance, not within a sixteenth)
        // every `queue_every` answers: when do two fast steps in a row come
        // (more than a queue_size step, 0.1 per answer; the first step
        // after a hold may be larger, up to queue_size)?
        let first_fast = |queue_every: u64| {
            let mut fast_before = false;
            let mut g = Gradient2::new().initial(40);
            let t = warm(&mut g, &c, 100);
            g.update(&c.ok(t + 300, 150, 40));
            let l = limit(&g);
            assert!((20.0..38.0).contains(&l), "{l}");
            for at in (t + 310..t + 3_000).step_by(10) {
                let before = limit(&g);
                let rtt = if (at / 10) % queue_every == 0 {
                    110
                } else {
                    100
                };
                g.update(&c.ok(at, rtt, 200));
                let fast = limit(&g) - before > 0.2;
                if fast && fast_before {
                    return Some(at - t - 300);
                }
                fast_before = fast;
            }
            None
        };
        // Room for five round trips once the smoothed round trip is back
        // within a sixteenth (about 370 ms): not the 20 round trips (2 s).
        let fast = first_fast(u64::MAX).expect("a slow start");
        assert!((800..1_000).contains(&fast), "{fast}");
        // A short queue every 400 ms breaks every run: the 20 round trips.
        let fast = first_fast(40).expect("a slow start");
        assert!((2_000..2_100).contains(&fast), "{fast}");
    }

    #[test]
    fn overload_sets_a_ceiling_and_its_rtt_is_not_averaged() {
        let c = Clock::new();
        // (a ceiling needs the refusal at half the limit in flight at least)
        let mut g = Gradient2::new().initial(10);
        let t = warm(&mut g, &c, 100);
        let short = g.rtts.short();
        assert_eq!(g.update(&c.over(t + 10, 1, 6)), 5);
        assert_eq!(g.rtts.short(), short);
        assert_eq!(g.update(&c.ok(t + 11, 100, 5)), 5);
        // Before any sample, an overload still decreases.
        let mut g = Gradient2::new().initial(100);
        assert_eq!(g.update(&c.over(0, 10, 200)), 90);
        assert_eq!(g.rtts.baseline(), None);
    }

    #[test]
    fn smoothing_moves_part_way() {
        let c = Clock::new();
        let mut g = Gradient2::new().initial(16).smoothing(0.5);
        let t = warm(&mut g, &c, 100);
        // new = 18: L = 0.5 * 16 + 0.5 * 18.
        g.update(&c.ok(t + 10, 100, 16));
        assert!((limit(&g) - 17.0).abs() < EPS);
    }

    #[test]
    fn respects_min_and_max() {
        let c = Clock::new();
        let mut g = Gradient2::new().initial(199);
        let t = warm(&mut g, &c, 100);
        assert_eq!(g.update(&c.ok(t + 10, 100, 199)), 200);
        assert_eq!(g.update(&c.ok(t + 200, 100, 200)), 200);
        let mut g = Gradient2::new().initial(21).min(20);
        let t = warm(&mut g, &c, 100);
        assert_eq!(g.update(&c.ok(t + 10, 1000, 21)), 20);
        assert_eq!(Gradient2::new().initial(1000).initial_limit(), 200);
        assert_eq!(Gradient2::new().min(0).max(0).initial_limit(), 1);
    }

    #[test]
    #[should_panic(expected = "tolerance")]
    fn tolerance_below_one_panics() {
        let _ = Gradient2::new().tolerance(0.9);
    }

    #[test]
    #[should_panic(expected = "Gradient2 tolerance_floor must be at least 1, got 0.9")]
    fn a_tolerance_floor_below_one_panics() {
        let _ = Gradient2::new().tolerance_floor(0.9);
    }

    #[test]
    fn recommended_is_the_defaults_with_a_slow_start_a_tolerance_floor_and_damping() {
        let g = Gradient2::recommended();
        assert_eq!((g.slow_start, g.tolerance_floor), (1.5, Some(1.08)));
        assert_eq!(g.damping, 0.3);
        let d = Gradient2::new();
        assert_eq!((g.initial, g.min, g.max), (d.initial, d.min, d.max));
        assert_eq!((g.smoothing, g.tolerance), (d.smoothing, d.tolerance));
        assert_eq!((g.long_window, g.queue_size), (d.long_window, d.queue_size));
    }

    /// The change of a limit of 12 (with `damping`) when, after round
    /// trips of `rtt` (against a baseline of 100) that left it under-used,
    /// one comes back at the limit.
    fn step_at_the_limit(damping: f64, rtt: u64) -> f64 {
        let c = Clock::new();
        let mut g = Gradient2::new().initial(12).damping(damping);
        let t = warm(&mut g, &c, 100);
        // Under-used (5 of 12 in flight): the smoothed round trip follows,
        // the limit holds.
        for i in 1..=30 {
            assert_eq!(g.update(&c.ok(t + i * 10, rtt, 5)), 12);
        }
        g.update(&c.ok(t + 310, rtt, 12));
        limit(&g) - 12.0
    }

    #[test]
    fn damping_makes_a_small_decrease_part_of_the_way_and_a_large_one_whole() {
        // Round trips 1.4 times the baseline, with the smoothed round trip
        // still catching up: a small decrease (under 1.5 requests), made
        // 0.3 of the way.
        let (whole, damped) = (step_at_the_limit(1.0, 140), step_at_the_limit(0.3, 140));
        assert!(whole < 0.0 && whole > -1.5, "{whole}");
        assert!(
            (damped - whole * 0.3).abs() < 1e-9,
            "{damped} against {whole}"
        );
        // Four times the baseline (capacity lost): made at once.
        let (whole, damped) = (step_at_the_limit(1.0, 400), step_at_the_limit(0.3, 400));
        assert!(whole < -2.4, "{whole}");
        assert_eq!(damped, whole);
    }

    #[test]
    fn damping_slows_growth_only_while_a_queue_shows() {
        // Round trips a fifth over the baseline, over the tolerance of 1.15:
        // a queue, smaller than the allowance, so the limit grows, 0.3 of
        // the way.
        let (whole, damped) = (step_at_the_limit(1.0, 120), step_at_the_limit(0.3, 120));
        assert!(whole > 0.0, "{whole}");
        assert!(
            (damped - whole * 0.3).abs() < 1e-9,
            "{damped} against {whole}"
        );
        // A tenth over, within the tolerance: no queue, growth at once.
        let (whole, damped) = (step_at_the_limit(1.0, 110), step_at_the_limit(0.3, 110));
        assert!(whole > 0.0, "{whole}");
        assert_eq!(damped, whole);
    }

    #[test]
    #[should_panic(expected = "Gradient2 damping")]
    fn damping_outside_zero_to_one_panics() {
        let _ = Gradient2::new().damping(0.0);
    }

    #[test]
    fn a_tolerance_floor_follows_the_spread_of_the_round_trips() {
        let c = Clock::new();
        // Without a floor the tolerance is fixed.
        let mut g = Gradient2::new();
        warm(&mut g, &c, 100);
        assert_eq!(g.tolerance_now(), 1.15);
        // With one: the full tolerance before any round trip, ...
        let mut g = Gradient2::new().tolerance_floor(1.05);
        assert_eq!(g.tolerance_now(), 1.15);
        // ... the floor when the round trips agree, ...
        let t = warm(&mut g, &c, 100);
        assert!(
            (g.tolerance_now() - 1.05).abs() < EPS,
            "{}",
            g.tolerance_now()
        );
        // ... one plus their spread when they stray a tenth either way, ...
        for i in 1..=300 {
            g.update(&c.ok(t + i * 10, if i % 2 == 0 { 90 } else { 110 }, 3));
        }
        let tolerance = g.tolerance_now();
        assert!((tolerance - 1.1).abs() < 0.01, "{tolerance}");
        // ... and at most the tolerance when they stray further.
        for i in 301..=600 {
            g.update(&c.ok(t + i * 10, if i % 2 == 0 { 50 } else { 150 }, 3));
        }
        assert_eq!(g.tolerance_now(), 1.15);
    }

    #[test]
    fn with_a_floor_steady_round_trips_leave_a_smaller_queue() {
        // Round trips a tenth above the baseline, steady, at the limit of 40:
        // within the fixed tolerance of 1.15 the limit grows; with a floor of
        // 1.05 (the round trips agree, so the tolerance sinks to it) the
        // same round trips are a queue and it shrinks.
        let c = Clock::new();
        for (floor, grows) in [(None, true), (Some(1.05), false)] {
            let mut g = Gradient2::new().initial(40);
            if let Some(floor) = floor {
                g = g.tolerance_floor(floor);
            }
            let t = warm(&mut g, &c, 100);
            for i in 1..=100 {
                g.update(&c.ok(t + i * 10, 110, 40));
            }
            assert_eq!(limit(&g) > 40.0, grows, "{floor:?}: {}", limit(&g));
        }
    }

    proptest! {
        #[test]
        fn limit_stays_within_bounds(
            min in 0usize..100,
            span in 0usize..500,
            initial in 0usize..700,
            smoothing in 0.01f64..=1.0,
            tolerance in 1.0f64..4.0,
            floor in prop::option::of(1.0f64..4.0),
            damping in 0.01f64..=1.0,
            long_window in 1usize..1_000,
            queue_size in 0usize..50,
            samples in prop::collection::vec(
                (0u64..50, 0u64..10_000_000, 0usize..1_000, any::<bool>()), 0..300),
        ) {
            let max = min + span;
            let mut g = Gradient2::new()
                .initial(initial)
                .min(min)
                .max(max)
                .smoothing(smoothing)
                .tolerance(tolerance)
                .damping(damping)
                .long_window(long_window)
                .queue_size(queue_size);
            if let Some(floor) = floor {
                g = g.tolerance_floor(floor);
            }
            let lo = min.max(1);
            let hi = max.max(lo);
            let l = g.initial_limit();
            prop_assert!(l >= lo && l <= hi);
            let mut now = Instant::now();
            for (gap_ms, rtt_us, in_flight, overload) in samples {
                now += Duration::from_millis(gap_ms);
                let l = g.update(&Sample {
                    rtt: Duration::from_micros(rtt_us),
                    in_flight,
                    overload,
                    now,
                });
                prop_assert!(l >= lo && l <= hi, "{} not in [{}, {}]", l, lo, hi);
                // The tolerance in force stays between the floor (or the
                // tolerance, if the floor is above it) and the tolerance.
                let in_force = g.tolerance_now();
                let least = floor.unwrap_or(tolerance).min(tolerance);
                prop_assert!(
                    in_force >= least && in_force <= tolerance,
                    "{} not in [{}, {}]", in_force, least, tolerance
                );
            }
        }
    }
}
