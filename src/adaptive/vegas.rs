//! Vegas: a delay-based limit that estimates the queue from the no-load
//! round trip, after TCP Vegas; and the round-trip filter that Vegas and
//! Gradient2 share.
//!
//! The formula, the parameters and their defaults are documented on
//! [`Vegas`] (this module is private, so its docs would never render).

use tokio::time::Instant;

use super::aimd::{reached, rounds_since, slow_start, Overloads};
use super::baseline::{probe_level, RttFilter, QUIET};
use super::calm::{Falls, NO_QUEUE_MARGIN};
use super::rng::XorShift;
use super::{check, LimitAlgorithm, Sample};

/// The ratio an overload multiplies the limit by.
const BACKOFF: f64 = 0.9;
/// A decrease on delay keeps at least this share of the in-flight count
/// it was measured at.
const MIN_KEPT: f64 = 0.25;

/// A delay-based limit after TCP Vegas and Netflix concurrency-limits'
/// `VegasLimit`.
///
/// It keeps a baseline, `rtt_noload`, as the latency of an empty queue,
/// estimates from the round trip how many of the requests in flight are
/// queueing rather than being served, and steers that estimate into a
/// band: grow while there is (almost) no queue, shrink when it is long.
///
/// # Formula
///
/// With `L` the current limit, `rtt` the smoothed round trip and `own` the
/// sample's own (see "Round trips"), and
///
/// ```text
/// queue(n, r) = n * (1 - rtt_noload / r)      of n in flight, how many queue
/// alpha(n)    = max(1, n / 8)
/// beta(n)     = max(2, n / 4)
/// ```
///
/// each sample does the first of these that applies:
///
/// ```text
/// overload:                      see "Overload" on Aimd (L * 0.9, a ceiling)
/// f * 2 < L, with f the sample's in-flight count:
///                                hold        (under-used: no evidence)
/// q = queue(f, min(rtt, own)) > beta(f):
///                                new = min(L, max(f - q + mid(f), f / 4))
///                                with mid(f) = (alpha(f) + beta(f)) / 2
/// in_flight < floor(L):          hold        (the limit was not reached)
/// q = queue(L, max(rtt, own)) >= alpha(L):
///                                hold        (alpha <= queue: enough queued)
/// otherwise, if q <= L / 16 and no decrease for 20 round trips (8 after
/// a collapse, up to where it was), or q <= L / 16 in every sample at
/// the limit for 5 (room: `5 * max(1, 16 * spread)` with the spread of
/// the round trips; after a collapse, up to where it was):
///                                new = L * slow_start ^ min(1, dt / rtt)
/// otherwise:                     new = L + min(1, dt / rtt)
///
/// L = (1 - smoothing) * L + smoothing * clamp(new, min, max)
/// ```
///
/// The answer is `floor(L)`, within `[min, max]` and never below 1. `dt`
/// is the time since the limit last grew, so growth is one step per round
/// trip however many samples a round trip brings.
///
/// **A decrease** is judged at the concurrency the sample was measured at
/// (its in-flight count, for a window the largest): `f - q` is how many of
/// those were being served, and the limit moves to that plus the middle of
/// the band (so the queue it leaves is neither at the band's edge, where
/// the next noisy measurement would push it out, nor empty), keeping at
/// least a quarter of `f`. It can only lower the limit. So a queue is
/// never counted twice: the requests admitted before a decrease measured
/// the queue it cut, at the in-flight count it cut, and lead to the same
/// target again; a longer round trip among them (the queue was worse than
/// the first answers showed) lowers it further; requests admitted after it
/// measure the new limit. The smoothed round trip and the sample's own
/// must both show the queue (`min`), and both must show it empty for
/// growth (`max`): one slow or fast answer decides nothing.
///
/// # Round trips
///
/// Vegas keeps two moving averages of the successful round trips, both
/// weighted by time (samples of one instant are averaged first), so that
/// they span the same time whether they are fed every request or, behind
/// [`Windowed`](super::Windowed), one sample per window:
///
/// - `rtt`, over about two round trips: the latency now;
/// - a slow one over about eight, whose lowest value is the baseline:
///   `rtt_noload` is the lowest slow average of the current and the
///   previous probe interval (see `probe_multiplier`). Both averages start
///   as plain means of their first samples, until the moving average
///   would weigh a new one more (so the first value is not one lucky
///   sample's); the slow one counts once it has run for eight round trips.
/// - **no-load round trips**: a success admitted with at most two in
///   flight (itself included) cannot have queued behind the others, so its
///   round trip is the no-load latency itself. Two of them within about a
///   quarter of each other are `rtt_noload` at once, while the smoothed
///   round trip agrees with them (is within an eighth above): no queue
///   either way, and the limit may grow after one round trip instead of
///   holding for eight. When they disagree (a start above a small
///   backend: the other answers of the first round trip queued), two
///   answers are a small sample against many, and the baseline is
///   **probed**: the limit is held at 2 until six no-load answers came back
///   (or four of their round trips passed, and two since the first answer
///   admitted under the probe, so that a long queue drains first); their
///   mean, if its standard
///   error is within 5% of it, is `rtt_noload` (with the slow average's, the
///   lower), and if not the slow average alone decides. So a start far
///   above the backend's capacity is corrected within a few round trips
///   instead of being learnt as the no-load latency. One probe per
///   interval; six precise no-load answers (light load) need none, and
///   neither do two that agreed with the smoothed round trip for eight of
///   their round trips before it rose above them, if their standard error
///   is within 5%: that rise is a queue built since (the slow start's
///   overshoot, more load), and their mean is `rtt_noload` (or the lowest
///   smoothed round trip while they agreed, if higher: two answers can
///   both come out low).
///
/// `rtt_noload` is the lowest of these; with none yet the limit holds.
///
/// # Parameters
///
/// | Parameter | Builder | Default | Meaning |
/// |---|---|---|---|
/// | initial | [`initial`](Self::initial) | 10 | Limit to start with (clamped to `[min, max]`). |
/// | min | [`min`](Self::min) | 1 | Lowest limit; at least 1. |
/// | max | [`max`](Self::max) | 1000 | Highest limit; if below `min`, `max` wins. |
/// | smoothing | [`smoothing`](Self::smoothing) | 1.0 | Weight of the new value, in `(0, 1]`; 1 applies it at once. |
/// | slow_start | [`slow_start`](Self::slow_start) | 1.125 | Growth per round trip while nothing queues; above 1. |
/// | probe_multiplier | [`probe_multiplier`](Self::probe_multiplier) | 1000 | A probe interval lasts `jitter * probe_multiplier` round trips of `rtt_noload`; 0 keeps the lowest ever. |
/// | seed | [`seed`](Self::seed) | `0x9E37_79B9_7F4A_7C15` | Seed of the probe jitter generator (`jitter` in `[0.5, 1)`, drawn afresh for each interval). |
///
/// # Overload
///
/// An overload decreases the limit by 10% and sets a ceiling, as on
/// [`Aimd`](super::Aimd) (see "Overload" there); its round trip is not
/// averaged in: a fast refusal is not the latency of an empty queue, and a
/// timeout's round trip is not a latency at all.
///
/// # Deviations from Netflix
///
/// - **The queue band is proportional** (`alpha = L/8`, `beta = L/4`, at
///   least 1 and 2) instead of `3·log10 L` and `6·log10 L`. The limit a
///   backend needs is its capacity times its latency plus a queue that
///   grows with it (a pool of `C` workers wants about `C/8` queued); a band
///   of 3 to 6 queued requests is most of the work of 4 workers, so a small
///   backend was driven to twice its ideal limit, while for 16 workers the
///   band sat at the edge of what they need.
/// - **Growth is per round trip**, not `6·log10 L` per sample, and
///   only when the limit was reached: a sample per request grows the limit
///   once per request in flight each round trip, and Netflix's Vegas ran
///   well past its ideal limit before the queue it built was measured.
///   While the queue is nearly empty and nothing decreased for 20 round
///   trips it is a slow start, multiplying the limit by `slow_start` per
///   round trip (compounded per sample, so that per-sample updates and one
///   update per [`Windowed`](super::Windowed) window of about a round trip
///   grow alike); else one per round trip (as TCP Vegas). After a collapse
///   (a fall below half of where the limit was at most 8 round trips
///   before: a stall, capacity lost) the slow start waits 8 round trips
///   instead of 20, and goes only back to that level until the 20 have
///   passed: the limit is then far below what the backend took a moment
///   ago, and round trips back at the baseline say that it takes it again;
///   a step per round trip would take tens of round trips to get there.
///   Five round trips in a row of samples at the limit with (almost) no
///   queue (room; more when the round trips stray from their average by
///   more than a sixteenth, which passes that test by chance) end the
///   wait too, and lift a ceiling that deadline
///   misses set in a queue (see "Overload" on [`Aimd`](super::Aimd)):
///   after a long stay at a smaller backend's knee, whose small decreases
///   keep the 20 round trips from passing, capacity that comes back is
///   found in a few round trips.
/// - **Decreases are proportional** (to the estimated served count plus
///   the middle of the band, measured at the sample's own in-flight count)
///   rather than `-log10 L` per sample: when the backend loses three quarters of its
///   workers, one step per sample takes seconds to come down while every
///   request admitted meanwhile waits in its queue.
/// - **Overload** is a multiplicative decrease with a ceiling, shared with
///   the other algorithms (see "Overload" on [`Aimd`](super::Aimd));
///   Netflix takes `log10 L` per overload.
/// - **The baseline is measured on no-load answers** (above), and
///   otherwise the lowest slow average, not the lowest single
///   round trip: under heavy jitter the shortest single round trip is a
///   fraction of the typical one, and the queue it implies never empties
///   (Netflix's Vegas sat at half the ideal limit). The probe no longer
///   replaces the baseline with the next single sample, which jitter makes
///   a lottery (and a loaded sample makes a queue look like none): it
///   starts a new interval of the minimum, and intervals count round trips,
///   not samples, so they last as long behind
///   [`Windowed`](super::Windowed); 1000 round trips rather than 30 × L
///   samples.
/// - **`initial` is 10, not 20**: a limit above what the backend takes
///   queues requests before the first answer comes back, and those answers
///   teach a "no-load" round trip that includes a queue. Starting at 10 and
///   growing (by an eighth per round trip while nothing queues) finds a
///   larger limit within a few round trips.
///
/// # Example
///
/// ```
/// use tower_concurrency::adaptive::{LimitAlgorithm, Vegas};
///
/// let vegas = Vegas::new().initial(20).max(500).probe_multiplier(500).seed(7);
/// assert_eq!(vegas.initial_limit(), 20);
/// ```
#[derive(Debug, Clone)]
pub struct Vegas {
    initial: usize,
    min: usize,
    max: usize,
    smoothing: f64,
    slow_start: f64,
    probe_multiplier: usize,
    /// The current estimate; `None` until the first update.
    limit: Option<f64>,
    rtts: RttFilter,
    /// In `[0.5, 1)`; drawn afresh for each probe interval.
    probe_jitter: f64,
    rng: XorShift,
    /// When the limit last grew.
    grew: Option<Instant>,
    /// When the limit last fell, on delay or overload.
    falls: Falls,
    overloads: Overloads,
}

impl Default for Vegas {
    fn default() -> Self {
        let mut rng = XorShift::new(0);
        let probe_jitter = rng.jitter();
        Self {
            initial: 10,
            min: 1,
            max: 1000,
            smoothing: 1.0,
            slow_start: 1.125,
            probe_multiplier: 1000,
            limit: None,
            rtts: RttFilter::default(),
            probe_jitter,
            rng,
            grew: None,
            falls: Falls::default(),
            overloads: Overloads::default(),
        }
    }
}

impl Vegas {
    /// The defaults: initial 10, min 1, max 1000, smoothing 1.0,
    /// probe_multiplier 1000, the default seed.
    pub fn new() -> Self {
        Self::default()
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

    /// The highest limit (default 1000); if it is below `min`, it wins.
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
        self.slow_start = check::above_one("Vegas", "slow_start", slow_start);
        self
    }

    /// The weight of each new value against the current limit (default
    /// 1.0: move at once).
    ///
    /// # Panics
    ///
    /// If `smoothing` is not in `(0, 1]`.
    #[must_use]
    pub fn smoothing(mut self, smoothing: f64) -> Self {
        self.smoothing = check::share("Vegas", "smoothing", smoothing);
        self
    }

    /// A probe interval lasts `jitter * probe_multiplier` round trips of
    /// the baseline (default 1000); the baseline is the lowest slow average
    /// of the current and the previous interval. 0 keeps the lowest ever.
    #[must_use]
    pub fn probe_multiplier(mut self, probe_multiplier: usize) -> Self {
        self.probe_multiplier = probe_multiplier;
        self
    }

    /// Seeds the generator of the probe jitter (and draws the first
    /// jitter from it).
    #[must_use]
    pub fn seed(mut self, seed: u64) -> Self {
        self.rng = XorShift::new(seed);
        self.probe_jitter = self.rng.jitter();
        self
    }

    /// The limit a probe of the no-load round trip holds.
    fn bounds(&self) -> (f64, f64) {
        let hi = self.max.max(1);
        (self.min.clamp(1, hi) as f64, hi as f64)
    }

    /// Applies `new` (clamped, smoothed) and answers the new limit.
    fn apply(&mut self, limit: f64, new: f64) -> usize {
        let (lo, hi) = self.bounds();
        let new = new.clamp(lo, hi);
        let next = ((1.0 - self.smoothing) * limit + self.smoothing * new).clamp(lo, hi);
        self.limit = Some(next);
        next as usize
    }

    /// The probe interval in round trips.
    fn interval(&self) -> f64 {
        if self.probe_multiplier == 0 {
            f64::INFINITY
        } else {
            self.probe_jitter * self.probe_multiplier as f64
        }
    }
}

fn alpha(n: f64) -> f64 {
    (n / 8.0).max(1.0)
}

fn beta(n: f64) -> f64 {
    (n / 4.0).max(2.0)
}

impl LimitAlgorithm for Vegas {
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
            let tail = self.rtts.queue_tail(sample, |rtt, noload| {
                limit * (1.0 - noload / rtt) > beta(limit)
            });
            let next = self.overloads.overload(limit, BACKOFF, sample, tail);
            let round = self.rtts.baseline();
            self.falls.fell(limit, next, sample.now, round);
            return self.apply(limit, next);
        }

        if sample.in_flight <= QUIET {
            self.rtts.no_load(sample.rtt);
        }
        if self.rtts.add(sample.rtt, sample.now, self.interval()) {
            self.probe_jitter = self.rng.jitter();
        }
        let held = probe_level(self.bounds());
        if self.rtts.probe(sample, held) {
            return held;
        }
        let (Some(rtt), Some(noload)) = (self.rtts.short(), self.rtts.baseline()) else {
            return self.apply(limit, limit);
        };
        let own = sample.rtt.as_secs_f64();
        let queue = |n: f64, rtt: f64| {
            if rtt <= 0.0 {
                0.0
            } else {
                (n * (1.0 - noload / rtt)).max(0.0)
            }
        };

        if (sample.in_flight as f64) * 2.0 < limit {
            // Under-used: no evidence either way.
            return self.apply(limit, limit);
        }
        let measured = (sample.in_flight as f64).max(1.0);
        let provisional = self.rtts.is_provisional();
        let queued = queue(measured, rtt.min(own));
        if queued > beta(measured) && !provisional {
            let band = (alpha(measured) + beta(measured)) / 2.0;
            let target = (measured - queued + band).max(measured * MIN_KEPT);
            if target < limit {
                self.falls.fell(limit, target, sample.now, Some(noload));
                return self.apply(limit, target);
            }
            return self.apply(limit, limit);
        }

        if !reached(limit, sample) {
            return self.apply(limit, limit);
        }
        let queued = queue(limit, rtt.max(own));
        let no_queue = queued <= limit * NO_QUEUE_MARGIN;
        self.falls.reached(sample.now, !no_queue);
        if queued >= alpha(limit) {
            return self.apply(limit, limit);
        }
        let spread = self.rtts.spread();
        let ceiling = self
            .falls
            .slow_start_ceiling(sample.now, noload, spread, limit);
        let grown = if let Some(ceiling) = ceiling.filter(|_| no_queue) {
            slow_start(limit, self.slow_start, self.grew, sample).min(ceiling)
        } else {
            limit + rounds_since(self.grew, sample)
        };
        let room = self.falls.room(sample.now, noload, spread);
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
    fn warm(v: &mut Vegas, c: &Clock, rtt: u64) -> u64 {
        let l = v.initial_limit();
        for at in (0..).step_by(10) {
            assert_eq!(v.update(&c.ok(at, rtt, 3)), l);
            if v.rtts.baseline().is_some() {
                return at;
            }
        }
        unreachable!()
    }

    fn limit(v: &Vegas) -> f64 {
        v.limit.expect("updated")
    }

    #[test]
    fn defaults() {
        let v = Vegas::default();
        assert_eq!(v.initial_limit(), 10);
        assert_eq!(
            (v.min, v.max, v.smoothing, v.probe_multiplier),
            (1, 1000, 1.0, 1000)
        );
        assert!((0.5..1.0).contains(&v.probe_jitter));
    }

    #[test]
    fn holds_until_there_is_a_baseline() {
        let c = Clock::new();
        let mut v = Vegas::new();
        // The limit is reached, but there is no baseline yet.
        for at in (0..500).step_by(10) {
            assert_eq!(v.update(&c.ok(at, 100, 10)), 10);
        }
        assert_eq!(v.rtts.baseline(), None);
    }

    #[test]
    fn a_start_above_a_small_backend_is_probed_and_cut() {
        let c = Clock::new();
        let mut v = Vegas::new();
        // The first two requests found nothing ahead of them: 50 ms.
        assert_eq!(v.update(&c.ok(50, 50, 1)), 10);
        assert_eq!(v.update(&c.ok(55, 50, 2)), 10);
        assert!(v.rtts.is_provisional());
        // The rest of the first ten queued behind three workers: the
        // round trips disagree with the first two, and a probe holds the
        // limit at 2...
        assert_eq!(v.update(&c.ok(100, 150, 10)), 2);
        assert_eq!(v.update(&c.ok(110, 160, 10)), 2);
        // ...until six no-load answers came back.
        for (at, rtt, n) in [(150, 50, 1), (160, 52, 2), (200, 48, 1)] {
            assert_eq!(v.update(&c.ok(at, rtt, n)), 2);
        }
        assert_eq!(v.update(&c.ok(210, 50, 2)), 10);
        assert!((v.rtts.baseline().unwrap() - 0.05).abs() < EPS);
        // Now the queue is measured against 50 ms: at 10 in flight, 160 ms
        // means about 7 queued, and the limit falls near the 3 served plus
        // the band.
        let cut = v.update(&c.ok(300, 160, 10));
        assert!((3..=6).contains(&cut), "{cut}");
    }

    #[test]
    fn grows_by_an_eighth_per_round_trip_while_nothing_queues() {
        let c = Clock::new();
        let mut v = Vegas::new();
        let t = warm(&mut v, &c, 100);
        // No queue: times 1.125 per round trip (a slow start).
        assert_eq!(v.update(&c.ok(t + 10, 100, 10)), 11); // 10 * 1.125
        assert!((limit(&v) - 11.25).abs() < EPS);
        // Half a round trip later: half a step, compounded (two halves
        // make a whole one).
        v.update(&c.ok(t + 60, 100, 11));
        assert!((limit(&v) - 11.25 * 1.125f64.sqrt()).abs() < EPS);
        // Not when the limit was not reached.
        let l = limit(&v);
        assert_eq!(v.update(&c.ok(t + 200, 100, 10)), 11);
        assert_eq!(limit(&v), l);
    }

    #[test]
    fn grows_by_one_with_a_short_queue_and_holds_in_the_band() {
        let c = Clock::new();
        let mut v = Vegas::new().initial(16);
        let t = warm(&mut v, &c, 100);
        // Round trips of 105 ms: queue(16) = 16 * (1 - 100/105) = 0.76,
        // at most L/16 = 1: still alpha (2).
        v.update(&c.ok(t + 10, 105, 16));
        let queued = 16.0 * (1.0 - 0.1 / v.rtts.short().unwrap().max(0.105));
        assert!(queued <= 1.0, "{queued}");
        assert!((limit(&v) - 18.0).abs() < EPS);
        // Round trips of 110 ms (queue 1.8 at 19 > 19/16): one per round trip.
        let mut v = Vegas::new().initial(19);
        let t = warm(&mut v, &c, 100);
        for i in 1..=20 {
            v.update(&c.ok(t + i * 10, 110, 19));
        }
        let queued = 19.0 * (1.0 - 0.1 / 0.110);
        assert!(queued > 19.0 / 16.0 && queued < alpha(19.0));
        assert!((limit(&v) - 20.0).abs() < 0.05, "{}", limit(&v));
        // Round trips of 120 ms at 20: queue 3.3, in [alpha, beta] =
        // [2.5, 5]: hold.
        let mut v = Vegas::new().initial(20);
        let t = warm(&mut v, &c, 100);
        for i in 1..=50 {
            assert_eq!(v.update(&c.ok(t + i * 10, 120, 20)), 20);
        }
    }

    #[test]
    fn decreases_to_the_served_count_plus_the_middle_of_the_band() {
        let c = Clock::new();
        let mut v = Vegas::new().initial(20);
        let t = warm(&mut v, &c, 100);
        // A 200 ms answer at 20 in flight, 300 ms after the last: the
        // smoothed round trip moves most of the way (weight
        // 1 - exp(-300 / 200)), and the shorter of the two decides.
        v.update(&c.ok(t + 300, 200, 20));
        let rtt = v.rtts.short().unwrap();
        assert!(rtt > 0.15 && rtt < 0.2, "{rtt}");
        let queued = 20.0 * (1.0 - 0.1 / rtt);
        assert!(queued > beta(20.0));
        let mid = (alpha(20.0) + beta(20.0)) / 2.0;
        assert!((limit(&v) - (20.0 - queued + mid)).abs() < EPS);
        // The same answer again, at the same 20 in flight: the same
        // target, no second decrease.
        let l = limit(&v);
        v.update(&c.ok(t + 300, 200, 20));
        assert_eq!(limit(&v), l);
        // Much worse ones lower it further, keeping a quarter of their
        // in-flight count at least.
        for i in 1..=50 {
            v.update(&c.ok(t + 300 + i * 10, 5000, 20));
        }
        assert!((limit(&v) - 5.0).abs() < EPS);
        // One at a lower in-flight count (but at least half the limit):
        // its own target, 8 - 8 * (1 - 0.1 / rtt) + 1.5.
        v.update(&c.ok(t + 900, 5000, 8));
        let rtt = v.rtts.short().unwrap().min(5.0);
        let expected = (8.0 * 0.1 / rtt + (alpha(8.0) + beta(8.0)) / 2.0).max(2.0);
        assert!((limit(&v) - expected).abs() < EPS, "{}", limit(&v));
        assert!(limit(&v) < 5.0);
    }

    #[test]
    fn under_used_answers_decide_nothing() {
        let c = Clock::new();
        let mut v = Vegas::new().initial(20);
        let t = warm(&mut v, &c, 100);
        // Slow, but with 9 in flight of a limit of 20: the latency is not
        // this limit's queue.
        for i in 1..=50 {
            assert_eq!(v.update(&c.ok(t + i * 10, 1000, 9)), 20);
        }
        // With 10 in flight it is evidence.
        assert!(v.update(&c.ok(t + 600, 1000, 10)) < 20);
    }

    #[test]
    fn one_answer_alone_decides_nothing() {
        let c = Clock::new();
        // A single slow answer among frequent fast ones moves the smoothed
        // round trip little: no decrease, and no growth either.
        let mut v = Vegas::new().initial(20);
        let t = warm(&mut v, &c, 100);
        assert_eq!(v.update(&c.ok(t + 10, 300, 20)), 20);
        assert_eq!(limit(&v), 20.0);
        // A fast answer while the smoothed round trip is slow: neither.
        let mut v = Vegas::new().initial(20);
        let t = warm(&mut v, &c, 100);
        v.update(&c.ok(t + 300, 400, 0)); // not reached: no growth
        assert!(v.rtts.short().unwrap() > 0.3);
        assert_eq!(limit(&v), 20.0);
        assert_eq!(v.update(&c.ok(t + 301, 100, 20)), 20);
        assert_eq!(limit(&v), 20.0);
    }

    #[test]
    fn a_decrease_slows_growth_for_twenty_round_trips() {
        let c = Clock::new();
        let mut v = Vegas::new().initial(20);
        let t = warm(&mut v, &c, 100);
        v.update(&c.ok(t + 300, 300, 20));
        let l = limit(&v);
        assert!(l < 15.0, "{l}");
        // No queue again: steps of one, not alpha, until 20 round trips
        // (2 s) after the decrease.
        let mut at = t + 2_050;
        for _ in 0..3 {
            v.update(&c.ok(at, 100, 40));
            at += 100;
        }
        assert!(
            (limit(&v) - (l + 3.0)).abs() < EPS,
            "{} from {l}",
            limit(&v)
        );
        let before = limit(&v);
        v.update(&c.ok(at, 100, 40));
        assert!((limit(&v) - before - alpha(before)).abs() < EPS);
    }

    #[test]
    fn overload_sets_a_ceiling_and_its_rtt_is_not_averaged() {
        let c = Clock::new();
        // (a ceiling needs the refusal at half the limit in flight at least)
        let mut v = Vegas::new().initial(10);
        let t = warm(&mut v, &c, 100);
        let short = v.rtts.short();
        // Refused with 6 in flight, 1 ms round trip: limit 5.
        assert_eq!(v.update(&c.over(t + 10, 1, 6)), 5);
        assert_eq!(v.rtts.short(), short);
        assert_eq!(v.rtts.baseline(), Some(0.1));
        // No growth above 5 during the hold.
        assert_eq!(v.update(&c.ok(t + 11, 100, 5)), 5);
        // Before any sample, an overload still decreases.
        let mut v = Vegas::new().initial(20);
        assert_eq!(v.update(&c.over(0, 10, 40)), 18);
        assert_eq!(v.rtts.baseline(), None);
    }

    #[test]
    fn smoothing_moves_part_way() {
        let c = Clock::new();
        let mut v = Vegas::new().initial(20).smoothing(0.5);
        let t = warm(&mut v, &c, 100);
        // new = 20 + alpha(20) = 22.5: L = 0.5 * 20 + 0.5 * 22.5.
        v.update(&c.ok(t + 10, 100, 20));
        assert!((limit(&v) - 21.25).abs() < EPS);
    }

    #[test]
    fn respects_min_and_max() {
        let c = Clock::new();
        let mut v = Vegas::new().initial(20).max(21);
        let t = warm(&mut v, &c, 100);
        assert_eq!(v.update(&c.ok(t + 10, 100, 20)), 21);
        assert_eq!(v.update(&c.ok(t + 200, 100, 21)), 21);
        let mut v = Vegas::new().initial(20).min(19);
        let t = warm(&mut v, &c, 100);
        assert_eq!(v.update(&c.ok(t + 10, 900, 20)), 19);
        let mut v = Vegas::new().initial(1);
        assert_eq!(v.update(&c.over(0, 1, 1)), 1);
        assert_eq!(Vegas::new().initial(5000).initial_limit(), 1000);
        assert_eq!(Vegas::new().min(0).max(0).initial_limit(), 1);
    }

    /// Feeds round trips of 100 ms with nothing in flight every 10 ms and
    /// answers after how many the probe interval began anew.
    fn samples_until_probe(seed: u64) -> Vec<usize> {
        let c = Clock::new();
        let mut v = Vegas::new().seed(seed).probe_multiplier(20);
        let mut probes = Vec::new();
        let mut last = 0;
        for i in 1..=2_000usize {
            let before = v.probe_jitter;
            v.update(&c.ok(i as u64 * 10, 100, 0));
            if v.probe_jitter != before {
                probes.push(i - last);
                last = i;
            }
        }
        probes
    }

    #[test]
    fn probe_intervals_are_jittered_deterministically() {
        let probes = samples_until_probe(42);
        // 20 round trips of 100 ms, times jitter in [0.5, 1): 100 to 200
        // samples 10 ms apart.
        assert!(probes.len() > 5, "{probes:?}");
        assert!(
            probes[1..].iter().all(|&n| (100..=201).contains(&n)),
            "{probes:?}"
        );
        assert_eq!(samples_until_probe(42), probes);
        assert_ne!(samples_until_probe(7), probes);
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
                (0u64..50, 0u64..10_000_000, 0usize..3_000, any::<bool>()), 0..300),
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
            let mut now = Instant::now();
            for (gap_ms, rtt_us, in_flight, overload) in samples {
                now += Duration::from_millis(gap_ms);
                let l = v.update(&Sample {
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
