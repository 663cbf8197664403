//! AIMD: additive increase, multiplicative decrease, driven by loss; and
//! the reaction to overload that all three algorithms share.
//!
//! The formula, the parameters and their defaults are documented on
//! [`Aimd`] (this module is private, so its docs would never render).

use std::time::Duration;

use tokio::time::Instant;

use super::baseline::{RttFilter, QUIET};
use super::{check, LimitAlgorithm, Sample};

/// Round trips of one interval of the no-load baseline's minimum (as
/// [`Vegas`](super::Vegas)'s default).
const BASELINE_ROUNDS: u32 = 1000;

/// A loss-based limit: additive increase, multiplicative decrease, after
/// Netflix concurrency-limits' `AIMDLimit`.
///
/// It reads latency only against a budget: every overload, and every
/// round trip over budget, counts as a drop and shrinks the limit by a
/// ratio; while there is no drop and the limit is reached, it grows by one
/// per round trip. The budget is [`timeout`](Self::timeout) if one is set;
/// by default it is [`tolerance`](Self::tolerance) (2) times the no-load
/// round trip, measured as [`Vegas`](super::Vegas) measures it (with no
/// probe), so that against a backend that slows down but never refuses the
/// limit stops where its queue doubles the latency instead of climbing to
/// `max`.
///
/// # Formula
///
/// With `L` the current limit, for each sample:
///
/// ```text
/// if overload:                  see "Overload" below (L * backoff, a ceiling)
/// else if rtt > budget:         L = max(L * backoff, L0 / 2), once per episode
///     budget = timeout if set, else tolerance * rtt_noload (none before there is one)
/// else if in_flight < floor(L): L unchanged   (the limit was not reached)
/// else:                         L = L + min(1, dt / rtt)   (+1 per round trip)
/// ```
///
/// `dt` is the time since the limit last grew, so that the growth is one
/// per round trip however many samples a round trip brings: about `1 / L`
/// per sample when every request answers, one per window behind
/// [`Windowed`](super::Windowed). The answer is `floor(L)`, clamped to
/// `[min, max]` (and never below 1).
///
/// # Overload
///
/// An overload (a refusal, a timeout) is an event, not a noisy
/// measurement, and all three algorithms ([`Aimd`], [`Vegas`](super::Vegas),
/// [`Gradient2`](super::Gradient2)) react to it in the same way:
///
/// - **A decrease per overload**: `L = L * backoff` for each one (0.9 for
///   Vegas and Gradient2), so a burst of ten refusals cuts deeper than one.
///   Overloads that arrive within one *feedback time* of the first (the
///   longest round trip of an overload in the episode: how long an overload
///   takes to be seen) are one *episode*, and an episode never takes the
///   limit below half of what it was when the episode began.
/// - **A ceiling**: a request refused with `n` in flight (itself included)
///   says that `n` is too many, if `n` is at least half the limit (a
///   request admitted with fewer in flight, say just after a stall, says
///   nothing of where the backend's limit lies: a decrease, no ceiling). The limit is capped at `n - 1` (the
///   smallest such cap in the episode), and may not grow above it for a
///   *hold*: two feedback times at first, twice as long for each new
///   episode that starts within two holds of the previous one (overload
///   persists), up to 32 feedback times.
/// - **What was served outweighs it**: if, since the overload before, the
///   backend had served as many in flight as the episode's first overload
///   was admitted with, in an answer that came back at least that
///   overload's round trip before it (so before its request could have
///   been lost), the episode is a stall or a burst of timeouts, not a
///   limit: one decrease for the episode, and no ceiling. A black hole's
///   losses are not outweighed: an answer with more in flight than the
///   hole takes was served only because a lost request held a place, and
///   that request's timeout comes back within its deadline. The algorithm
///   learns each success through [`served`](LimitAlgorithm::served), which
///   [`Windowed`](super::Windowed) passes on before averaging.
/// - **Probing**: once the hold has passed, the cap rises by one, and then
///   by one every two feedback times (one for a request to be admitted at
///   the new limit, one for its answer), so that the next probe above the
///   refused count waits until the previous one could have been refused.
///   Behind a backend that answers 429 within a millisecond this is no
///   brake at all; behind one that never answers, whose overloads are only
///   seen at the client's deadline, it keeps the limit from running past
///   the refused count faster than the deadline can report it. The cap is
///   dropped once it has risen to twice the refused count.
/// - **A queue's tail** (Vegas and Gradient2): a deadline miss while the
///   successes' smoothed round trip shows a queue, and within one to two
///   of it, is the tail of that queue (requests admitted behind the rest
///   when the backend lost capacity), and its in-flight count is weak
///   evidence of where the backend's limit lies. A ceiling set by such
///   overloads alone is lifted once the round trips show room to grow
///   (five round trips in a row of samples at the limit without a queue,
///   more when they are noisy):
///   after a capacity drop it would otherwise hold the limit near the
///   smaller backend's level for seconds after the capacity came back,
///   rising one step per two deadlines. A quick refusal, or a request lost
///   while the answers come back at their usual latency (a black hole),
///   is no queue's tail, and its ceiling stays as above.
///
/// # Parameters
///
/// | Parameter | Builder | Default | Meaning |
/// |---|---|---|---|
/// | initial | [`initial`](Self::initial) | 10 | Limit to start with (clamped to `[min, max]`). |
/// | min | [`min`](Self::min) | 1 | Lowest limit; at least 1. |
/// | max | [`max`](Self::max) | 200 | Highest limit; if below `min`, `max` wins. |
/// | backoff | [`backoff`](Self::backoff) | 0.9 | Ratio the limit is multiplied by on a drop, in `(0, 1)`. |
/// | timeout | [`timeout`](Self::timeout) | none | A round trip longer than this counts as a drop. |
/// | tolerance | [`tolerance`](Self::tolerance) | 2.0 | Without a timeout, a round trip longer than this many no-load round trips counts as a drop; at least 1. |
///
/// AIMD only sees latency beyond its budget: a timeout you know (somewhat
/// above the latency you expect unloaded) is the most direct one. Its fixed `backoff` is also
/// its limit: a ratio gentle enough to hold a steady limit near capacity
/// takes many round trips to follow a backend that loses most of its
/// capacity at once; the delay-based [`Vegas`](super::Vegas) and
/// [`Gradient2`](super::Gradient2) cut in proportion to the queue.
///
/// # Deviations from Netflix
///
/// - **`min` is 1, not 20, and `initial` 10, not 20.** A library default
///   has to be able to find a small limit: behind a backend that takes 5 at
///   once, a floor of 20 keeps 15 too many in flight however many refusals
///   come back. Starting at 10 (as TCP starts at ten segments) and growing
///   finds larger limits within a few round trips, and sends fewer requests
///   into a backend that cannot take them before the first answer.
/// - **Growth is one per round trip, not per sample, and only when the
///   limit was reached** (`in_flight >= floor(L)`, not Netflix's
///   `in_flight * 2 >= L`). One per sample is one per request in flight
///   every round trip: the limit doubled each round trip and ran far past
///   the backend between two drops. TCP's congestion avoidance grows by one
///   per round trip, and only when the window was used.
/// - **Overload** sets a ceiling and is grouped into episodes, as above;
///   Netflix only multiplies by `backoff` per drop, so behind a backend
///   that refuses above a threshold the limit climbed straight back over
///   it, one refusal (or, behind a black hole, one timed-out request) per
///   step.
/// - **A latency budget by default**: twice the no-load round trip, where
///   Netflix has none (its timeout defaults to 5 s): behind a backend that
///   slows down but never refuses, a loss-based limit climbs to its
///   maximum, and every request waits in the queue that builds.
/// - **A slow success** (`rtt > budget`) is one decrease per episode, not
///   one per sample: the requests of one queue all come back slow, and
///   counting each of them took the limit far below it.
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
    timeout: Option<Duration>,
    tolerance: f64,
    /// The no-load round trip, for the budget without a timeout.
    rtts: RttFilter,
    /// The current limit; `None` until the first update.
    limit: Option<f64>,
    /// When the limit last grew.
    grew: Option<Instant>,
    overloads: Overloads,
}

impl Default for Aimd {
    fn default() -> Self {
        Self {
            initial: 10,
            min: 1,
            max: 200,
            backoff: 0.9,
            timeout: None,
            tolerance: 2.0,
            rtts: RttFilter::default(),
            limit: None,
            grew: None,
            overloads: Overloads::default(),
        }
    }
}

impl Aimd {
    /// The defaults: initial 10, min 1, max 200, backoff 0.9, no timeout,
    /// tolerance 2.
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

    /// The highest limit (default 200); if it is below `min`, it wins.
    #[must_use]
    pub fn max(mut self, max: usize) -> Self {
        self.max = max;
        self
    }

    /// The ratio the limit is multiplied by on a drop (default 0.9).
    ///
    /// # Panics
    ///
    /// If `backoff` is not strictly between 0 and 1.
    #[must_use]
    pub fn backoff(mut self, backoff: f64) -> Self {
        assert!(
            backoff > 0.0 && backoff < 1.0,
            "Aimd backoff must be in (0, 1), got {backoff}"
        );
        self.backoff = backoff;
        self
    }

    /// A round trip longer than this counts as a drop (default 5 s).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Without a timeout, a round trip longer than `tolerance` times the
    /// no-load round trip counts as a drop (default 2).
    ///
    /// # Panics
    ///
    /// If `tolerance` is below 1 or not finite.
    #[must_use]
    pub fn tolerance(mut self, tolerance: f64) -> Self {
        self.tolerance = check::at_least_one("Aimd", "tolerance", tolerance);
        self
    }

    /// Whether `sample`, answered under `limit`, is over the latency
    /// budget; learns the no-load round trip from it when there is no
    /// timeout.
    fn over_budget(&mut self, sample: &Sample, limit: f64) -> bool {
        if let Some(timeout) = self.timeout {
            return sample.rtt > timeout;
        }
        if sample.in_flight <= QUIET {
            self.rtts.no_load(sample.rtt);
        }
        self.rtts
            .add(sample.rtt, sample.now, f64::from(BASELINE_ROUNDS));
        // The probe's hold is not taken: a loss-based limit has no use for
        // it beyond the baseline, which it still decides.
        let _ = self.rtts.probe(sample, limit as usize);
        let Some(baseline) = self.rtts.baseline() else {
            return false;
        };
        sample.rtt.as_secs_f64() > self.tolerance * baseline
    }

    fn bounds(&self) -> (f64, f64) {
        let hi = self.max.max(1);
        (self.min.clamp(1, hi) as f64, hi as f64)
    }

    fn set(&mut self, limit: f64) -> usize {
        let (lo, hi) = self.bounds();
        let limit = limit.clamp(lo, hi);
        self.limit = Some(limit);
        limit as usize
    }
}

impl LimitAlgorithm for Aimd {
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
            let next = self.overloads.overload(limit, self.backoff, sample, false);
            return self.set(next);
        }
        if self.over_budget(sample, limit) {
            let next = self.overloads.slow(limit, self.backoff, sample);
            return self.set(next);
        }
        if !reached(limit, sample) {
            return self.set(limit);
        }
        let grown = limit + rounds_since(self.grew, sample);
        let grown = self.overloads.cap(limit, grown, sample.now, false);
        if grown > limit {
            self.grew = Some(sample.now);
        }
        self.set(grown)
    }

    fn no_load(&mut self, sample: &Sample) -> Option<usize> {
        if self.timeout.is_none() && !sample.overload && sample.in_flight <= QUIET {
            self.rtts.no_load(sample.rtt);
        }
        None
    }
}

/// Whether the sample's request found the limit reached: it was admitted
/// with `floor(limit)` or more in flight, itself included. Growth without
/// that is growth nobody asked for.
pub(super) fn reached(limit: f64, sample: &Sample) -> bool {
    sample.in_flight as f64 >= limit.floor()
}

/// The round trips since the limit last grew (`last`), at most one,
/// measured in the sample's own round trip; one if it never grew.
pub(super) fn rounds_since(last: Option<Instant>, sample: &Sample) -> f64 {
    let Some(last) = last else {
        return 1.0;
    };
    let rtt = sample.rtt.as_secs_f64();
    if rtt <= 0.0 {
        return 1.0;
    }
    let dt = sample.now.saturating_duration_since(last).as_secs_f64();
    (dt / rtt).min(1.0)
}

/// Slow start: `limit` multiplied by `factor` per round trip since it last
/// grew (`last`), at most one round trip per sample (see
/// [`rounds_since`]), so that per-sample updates compound to the same
/// growth per round trip as one update per window.
pub(super) fn slow_start(limit: f64, factor: f64, last: Option<Instant>, sample: &Sample) -> f64 {
    limit * factor.powf(rounds_since(last, sample))
}

/// An episode never takes the limit below this share of where it began.
const EPISODE_FLOOR: f64 = 0.5;
/// The first hold after an overload, in feedback times.
const HOLD: u32 = 2;
/// The longest hold, in feedback times.
const MAX_HOLD: u32 = 32;
/// Feedback times between two probe steps above the ceiling.
const PROBE_WAIT: u32 = 2;

/// The reaction to overload that [`Aimd`], [`Vegas`](super::Vegas) and
/// [`Gradient2`](super::Gradient2) share; see "Overload" on [`Aimd`].
#[derive(Debug, Clone, Default)]
pub(super) struct Overloads {
    /// The first overload of the current episode, and the limit then.
    episode: Option<(Instant, f64)>,
    /// The longest round trip of an overload in the current episode.
    feedback: Duration,
    /// The current hold.
    hold: Duration,
    /// The cap on growth, if any.
    ceiling: Option<Ceiling>,
    /// Until when the cap may not rise.
    hold_until: Option<Instant>,
    /// What the backend served since the last overload (see [`Served`]).
    served: Served,
    /// The most in flight the backend had served, for longer than the
    /// first overload of the current episode took, when it came: this
    /// episode's overloads at that many or fewer set no ceiling.
    proven: usize,
}

/// The successes since the last overload, as `(finished, in flight)`, in
/// the order they finished, each with more in flight than every one
/// before it (a later success with as many or fewer adds nothing: the
/// earlier one already shows that many served, and sooner). At most as
/// many entries as the highest limit.
#[derive(Debug, Clone, Default)]
struct Served {
    /// When the last overload came: a success admitted before it is left
    /// out (it may have been served only because of what that overload's
    /// request left free).
    since: Option<Instant>,
    rising: Vec<(Instant, usize)>,
}

impl Served {
    /// A success.
    fn success(&mut self, sample: &Sample) {
        let admitted = sample.now.checked_sub(sample.rtt).unwrap_or(sample.now);
        if self.since.is_some_and(|since| admitted < since) {
            return;
        }
        if self
            .rising
            .last()
            .is_none_or(|&(_, most)| sample.in_flight > most)
        {
            self.rising.push((sample.now, sample.in_flight));
        }
    }

    /// An overload at `now`: the most in flight of a success that had
    /// finished `rtt` (the overload's round trip) before it, then a fresh
    /// start.
    fn overload(&mut self, now: Instant, rtt: Duration) -> usize {
        let by = now.checked_sub(rtt).unwrap_or(now);
        let finished = self.rising.partition_point(|&(at, _)| at <= by);
        let most = finished
            .checked_sub(1)
            .map_or(0, |last| self.rising[last].1);
        self.rising.clear();
        self.since = Some(now);
        most
    }
}

/// A cap on growth after overload.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Ceiling {
    /// The highest limit allowed now.
    at: f64,
    /// The in-flight count the backend refused, less one.
    refused: f64,
    /// Whether every overload behind it was the tail of a queue the
    /// successes showed: then room to grow lifts it.
    weak: bool,
}

impl Overloads {
    /// Continues the current episode or starts a new one; answers whether
    /// it is new, and the floor of the episode.
    fn episode(&mut self, limit: f64, sample: &Sample) -> (bool, f64) {
        let now = sample.now;
        if let Some((start, limit_then)) = self.episode {
            if now < start + self.feedback {
                self.feedback = self.feedback.max(sample.rtt);
                return (false, limit_then * EPISODE_FLOOR);
            }
        }
        let persisting = self
            .episode
            .is_some_and(|(start, _)| now < start + self.hold * 2 + self.feedback);
        self.feedback = sample.rtt;
        let first = self.feedback * HOLD;
        self.hold = if persisting {
            (self.hold * 2).clamp(first, self.feedback * MAX_HOLD)
        } else {
            first
        };
        self.episode = Some((now, limit));
        (true, limit * EPISODE_FLOOR)
    }

    /// An overload at `limit`: the new limit. `queue_tail`: whether it was
    /// the tail of a queue the successes showed (see
    /// [`RttFilter::queue_tail`](super::baseline::RttFilter::queue_tail)).
    pub(super) fn overload(
        &mut self,
        limit: f64,
        backoff: f64,
        sample: &Sample,
        queue_tail: bool,
    ) -> f64 {
        let (new, floor) = self.episode(limit, sample);
        let served = self.served.overload(sample.now, sample.rtt);
        if new {
            self.proven = served;
        }
        let decreased = (limit * backoff).max(floor);
        if sample.in_flight <= self.proven {
            // The backend had served this many, for longer than the
            // episode's first overload took, since the overload before: a
            // stall, a burst of timeouts. One decrease for the episode, no
            // ceiling.
            return if new { decreased } else { limit };
        }
        if (sample.in_flight as f64) * 2.0 < limit {
            // Admitted with less than half the limit in flight (after a
            // stall, say): a decrease, but no evidence of where the
            // backend's limit lies.
            return decreased;
        }
        let refused = sample.in_flight.saturating_sub(1).max(1) as f64;
        let ceiling = match self.ceiling {
            Some(c) if !new => Ceiling {
                at: c.at.min(refused),
                refused: c.refused.min(refused),
                weak: c.weak && queue_tail,
            },
            _ => Ceiling {
                at: refused,
                refused,
                weak: queue_tail,
            },
        };
        self.ceiling = Some(ceiling);
        self.hold_until = Some(sample.now + self.hold);
        decreased.min(ceiling.at)
    }

    /// A success: what the backend served, for the next overload to be
    /// weighed against.
    pub(super) fn served(&mut self, sample: &Sample) {
        self.served.success(sample);
    }

    /// A success too slow to count as one (AIMD's timeout): one decrease
    /// per episode, and no ceiling.
    pub(super) fn slow(&mut self, limit: f64, backoff: f64, sample: &Sample) -> f64 {
        match self.episode(limit, sample) {
            (true, floor) => (limit * backoff).max(floor),
            (false, _) => limit,
        }
    }

    /// Growth from `limit` to `grown`, as far as the ceiling allows;
    /// `room`: the round trips have shown room to grow (see
    /// [`Falls::room`](super::calm::Falls::room)), which lifts a weak
    /// ceiling.
    pub(super) fn cap(&mut self, limit: f64, grown: f64, now: Instant, room: bool) -> f64 {
        let Some(c) = self.ceiling else {
            return grown;
        };
        if room && c.weak {
            self.ceiling = None;
            return grown;
        }
        if grown <= c.at {
            return grown;
        }
        if self.hold_until.is_some_and(|until| now < until) {
            return grown.min(limit.max(c.at));
        }
        let raised = c.at.floor() + 1.0;
        if raised >= 2.0 * c.refused {
            self.ceiling = None;
            return grown;
        }
        self.ceiling = Some(Ceiling { at: raised, ..c });
        self.hold_until = Some(now + self.feedback * PROBE_WAIT);
        grown.min(limit.max(raised))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adaptive::clock::Clock;
    use proptest::prelude::*;

    const MS: Duration = Duration::from_millis(1);

    fn limit(a: &Aimd) -> f64 {
        a.limit.expect("updated")
    }

    #[test]
    fn defaults() {
        let a = Aimd::default();
        assert_eq!(a.initial_limit(), 10);
        assert_eq!(
            (a.min, a.max, a.backoff, a.timeout, a.tolerance),
            (1, 200, 0.9, None, 2.0)
        );
    }

    #[test]
    fn without_a_timeout_twice_the_no_load_round_trip_is_a_drop() {
        let c = Clock::new();
        // Answers of 50 ms every 10 ms, under the limit, until the slow
        // average has a baseline (eight round trips).
        let warm = |a: &mut Aimd| {
            for at in (0..1000).step_by(10) {
                assert_eq!(a.update(&c.ok(at, 50, 3)), 10);
            }
            assert!((a.rtts.baseline().unwrap() - 0.05).abs() < 1e-9);
        };
        let mut a = Aimd::new().initial(10);
        warm(&mut a);
        // At the limit, 90 ms (under twice 50): growth.
        assert_eq!(a.update(&c.ok(1000, 90, 10)), 11);
        // 101 ms: a drop, once per episode (its feedback time: the longest
        // round trip in it, here 150 ms).
        assert_eq!(a.update(&c.ok(1010, 101, 11)), 9); // floor(11 * 0.9)
        assert_eq!(a.update(&c.ok(1020, 150, 11)), 9);
        assert_eq!(a.update(&c.ok(1150, 150, 11)), 9);
        assert_eq!(a.update(&c.ok(1160, 150, 11)), 8); // floor(9.9 * 0.9)
                                                       // A wider tolerance: 140 ms is within three times 50.
        let mut a = Aimd::new().initial(10).tolerance(3.0);
        warm(&mut a);
        assert_eq!(a.update(&c.ok(1000, 140, 10)), 11);
        // A timeout replaces the budget: 150 ms is within 200.
        let mut a = Aimd::new().initial(10).timeout(200 * MS);
        for at in (0..1000).step_by(10) {
            a.update(&c.ok(at, 50, 3));
        }
        assert_eq!(a.rtts.baseline(), None);
        assert_eq!(a.update(&c.ok(1000, 150, 10)), 11);
    }

    #[test]
    #[should_panic(expected = "tolerance")]
    fn tolerance_below_one_panics() {
        let _ = Aimd::new().tolerance(0.5);
    }

    #[test]
    fn grows_by_one_per_round_trip() {
        let c = Clock::new();
        let mut a = Aimd::new().initial(10);
        // The first growth is a whole step.
        assert_eq!(a.update(&c.ok(0, 100, 10)), 11);
        // A sample every 10 ms with a 100 ms round trip: a tenth each.
        for i in 1..=10 {
            a.update(&c.ok(i * 10, 100, 11));
        }
        assert!((limit(&a) - 12.0).abs() < 1e-9, "{}", limit(&a));
        // One sample after a long pause: still one step, not more.
        a.update(&c.ok(10_000, 100, 12));
        assert!((limit(&a) - 13.0).abs() < 1e-9);
        // Behind a window (one sample per 100 ms window): one per window.
        a.update(&c.ok(10_100, 100, 13));
        assert!((limit(&a) - 14.0).abs() < 1e-9);
    }

    #[test]
    fn grows_only_when_the_limit_was_reached() {
        let c = Clock::new();
        let mut a = Aimd::new().initial(10);
        assert_eq!(a.update(&c.ok(0, 50, 9)), 10);
        assert_eq!(a.update(&c.ok(100, 50, 0)), 10);
        assert_eq!(a.update(&c.ok(200, 50, 10)), 11);
        // A fifth of a round trip later: a fifth of a step.
        a.update(&c.ok(220, 100, 11));
        assert!((limit(&a) - 11.2).abs() < 1e-9);
        // 10 in flight does not reach floor(11.2) = 11.
        assert_eq!(a.update(&c.ok(300, 100, 10)), 11);
        assert!((limit(&a) - 11.2).abs() < 1e-9);
    }

    #[test]
    fn backs_off_per_overload_down_to_half_in_an_episode() {
        let c = Clock::new();
        let mut a = Aimd::new().initial(100);
        // Refusals with more in flight than the limit: no ceiling below it.
        assert_eq!(a.update(&c.over(0, 10, 150)), 90);
        assert_eq!(a.update(&c.over(1, 10, 150)), 81);
        assert_eq!(a.update(&c.over(2, 10, 150)), 72); // floor(72.9)
        for i in 3..10 {
            a.update(&c.over(i, 10, 150));
        }
        // One episode (all within 10 ms of the first): no lower than 50.
        assert_eq!(limit(&a), 50.0);
        // A later overload starts another episode, from 50.
        assert_eq!(a.update(&c.over(50, 10, 150)), 45);
    }

    #[test]
    fn custom_backoff() {
        let c = Clock::new();
        let mut a = Aimd::new().initial(100).backoff(0.5);
        assert_eq!(a.update(&c.over(0, 1, 200)), 50);
        assert_eq!(a.update(&c.over(10, 1, 200)), 25);
        assert_eq!(a.update(&c.over(20, 1, 200)), 12);
    }

    #[test]
    fn a_refusal_sets_a_ceiling_held_then_probed_one_step_at_a_time() {
        let c = Clock::new();
        let mut a = Aimd::new().initial(10);
        // Refused with 6 in flight: the limit falls to 5 at once.
        assert_eq!(a.update(&c.over(0, 100, 6)), 5);
        // Held for two feedback times (200 ms): no growth above 5.
        assert_eq!(a.update(&c.ok(100, 50, 5)), 5);
        assert_eq!(a.update(&c.ok(199, 50, 5)), 5);
        // Then one step...
        assert_eq!(a.update(&c.ok(200, 50, 5)), 6);
        // ...and the next only two feedback times later.
        assert_eq!(a.update(&c.ok(300, 50, 6)), 6);
        assert_eq!(a.update(&c.ok(399, 50, 6)), 6);
        assert_eq!(a.update(&c.ok(400, 50, 6)), 7);
        // Probing up to twice the refused count drops the ceiling.
        let mut at = 400;
        while limit(&a) < 9.0 {
            at += 200;
            a.update(&c.ok(at, 50, 9));
        }
        assert_eq!(a.update(&c.ok(at + 200, 50, 9)), 10);
        assert!(a.overloads.ceiling.is_none());
        assert_eq!(a.update(&c.ok(at + 300, 50, 10)), 11);
    }

    #[test]
    fn the_hold_doubles_while_overloads_persist() {
        let c = Clock::new();
        let mut a = Aimd::new().initial(20);
        a.update(&c.over(0, 100, 6));
        assert_eq!(a.overloads.hold, 200 * MS);
        // A new episode within two holds: twice the hold.
        a.update(&c.over(300, 100, 6));
        assert_eq!(a.overloads.hold, 400 * MS);
        a.update(&c.over(800, 100, 6));
        assert_eq!(a.overloads.hold, 800 * MS);
        // Up to 32 feedback times.
        for i in 0..10 {
            a.update(&c.over(1_000 + i * 1_000, 100, 6));
        }
        assert_eq!(a.overloads.hold, 3_200 * MS);
        // After a long quiet spell, back to two.
        a.update(&c.over(600_000, 100, 6));
        assert_eq!(a.overloads.hold, 200 * MS);
    }

    #[test]
    fn timeouts_admitted_at_a_low_count_set_no_ceiling() {
        let c = Clock::new();
        let mut a = Aimd::new().initial(36);
        // Three deadline misses (100 ms) of requests admitted with 2 in
        // flight, after a stall: a decrease, within the episode's floor,
        // but no evidence that 2 is too many.
        a.update(&c.over(0, 100, 2));
        a.update(&c.over(1, 100, 2));
        assert_eq!(a.update(&c.over(2, 100, 2)), 26); // floor(36 * 0.9^3)
        assert!(a.overloads.ceiling.is_none());
        // Growth resumes at once.
        assert_eq!(a.update(&c.ok(10, 50, 26)), 27);
        // Refused with at least half the limit in flight: a ceiling.
        a.update(&c.over(300, 100, 20));
        assert_eq!(a.overloads.ceiling.unwrap().refused, 19.0);
    }

    #[test]
    fn the_ceiling_is_the_lowest_refused_count_of_the_episode() {
        let c = Clock::new();
        let mut a = Aimd::new().initial(20);
        // Refused with 12, then 8, in flight, within one feedback time.
        assert_eq!(a.update(&c.over(0, 100, 12)), 11);
        assert_eq!(a.update(&c.over(50, 100, 8)), 7);
        // A higher count does not raise it (and the cap wins over the
        // episode's floor of 15).
        assert_eq!(a.update(&c.over(60, 100, 20)), 7);
        assert_eq!(a.overloads.ceiling.unwrap().refused, 7.0);
    }

    #[test]
    fn a_ceiling_from_the_tail_of_a_queue_is_lifted_by_room_to_grow() {
        let c = Clock::new();
        let at = |ms: u64| c.0 + Duration::from_millis(ms);
        // Deadline misses with 30 in flight, the tail of a queue the
        // successes show: a ceiling at 29 all the same...
        let mut o = Overloads::default();
        assert_eq!(o.overload(40.0, 0.9, &c.over(0, 100, 30), true), 29.0);
        assert_eq!(o.cap(29.0, 40.0, at(100), false), 29.0);
        // ...but a weak one: room to grow lifts it, hold or not.
        assert_eq!(o.cap(29.0, 40.0, at(100), true), 40.0);
        assert!(o.ceiling.is_none());
        // One overload of the episode that was no queue's tail (a quick
        // refusal) makes it strong: room does not lift it.
        let mut o = Overloads::default();
        o.overload(40.0, 0.9, &c.over(0, 100, 30), true);
        assert_eq!(o.overload(36.0, 0.9, &c.over(10, 5, 31), false), 29.0);
        assert_eq!(o.cap(29.0, 40.0, at(100), true), 29.0);
        assert_eq!(o.cap(29.0, 40.0, at(1_000), true), 30.0);
        // Aimd, which has no latency to show a queue, never lifts one.
        let mut a = Aimd::new().initial(40);
        a.update(&c.over(0, 100, 30));
        assert!(!a.overloads.ceiling.unwrap().weak);
    }

    /// Feeds `sample` as the limiter does: a success is `served` first.
    fn learn(a: &mut Aimd, sample: &Sample) -> usize {
        if !sample.overload {
            a.served(sample);
        }
        a.update(sample)
    }

    #[test]
    fn timeouts_below_what_the_backend_served_are_one_decrease_and_no_ceiling() {
        let c = Clock::new();
        let mut a = Aimd::new().initial(18);
        // A second of answers of 50 ms with all 18 in flight...
        for at in (0..1_000).step_by(10) {
            learn(&mut a, &c.ok(at, 50, 18));
        }
        let limit = a.limit.unwrap();
        // ...then the backend stalls: four deadline misses (150 ms) of
        // requests admitted with 14-18 in flight. The backend served 18
        // for longer than a deadline: one decrease, and no ceiling.
        for (i, in_flight) in [14, 15, 18, 16].into_iter().enumerate() {
            learn(&mut a, &c.over(1_100 + i as u64, 150, in_flight));
        }
        assert!((a.limit.unwrap() - limit * 0.9).abs() < 1e-9);
        assert!(a.overloads.ceiling.is_none());
        // Growth resumes at once.
        let grown = learn(&mut a, &c.ok(1_200, 50, 30));
        assert_eq!(grown, (limit * 0.9 + 1.0) as usize);
        // Overloads right after, with nothing served since for as long as
        // they took (that answer came back 100 ms before, not 150): a
        // ceiling.
        learn(&mut a, &c.over(1_300, 150, 20));
        assert_eq!(a.overloads.ceiling.unwrap().refused, 19.0);
    }

    #[test]
    fn only_what_was_served_before_an_overload_and_since_the_last_weighs_against_it() {
        let c = Clock::new();
        // Answers with 8 in flight that came back within the deadline (500
        // ms) of a timeout with 8 in flight: they may have been served
        // only because that request was lost (a black hole), a ceiling.
        let mut a = Aimd::new().initial(10);
        for at in (0..1_000).step_by(10) {
            learn(&mut a, &c.ok(at, 50, 5));
        }
        for at in (1_010..1_400).step_by(10) {
            learn(&mut a, &c.ok(at, 50, 8));
        }
        learn(&mut a, &c.over(1_500, 500, 8));
        assert_eq!(a.overloads.ceiling.unwrap().refused, 7.0);
        // An answer admitted before an overload came back does not count
        // against the next one, however long ago it came back: a ceiling.
        let mut a = Aimd::new().initial(10);
        learn(&mut a, &c.over(0, 5, 6));
        learn(&mut a, &c.ok(40, 50, 9));
        learn(&mut a, &c.over(2_000, 5, 9));
        assert_eq!(a.overloads.ceiling.unwrap().refused, 8.0);
        // Admitted after it, it does: one decrease, the ceiling as it was.
        learn(&mut a, &c.ok(2_100, 50, 9));
        let before = a.limit.unwrap();
        learn(&mut a, &c.over(3_000, 5, 9));
        learn(&mut a, &c.over(3_001, 5, 9));
        assert!((a.limit.unwrap() - before * 0.9).abs() < 1e-9);
        assert_eq!(a.overloads.ceiling.unwrap().refused, 8.0);
    }

    #[test]
    fn slow_successes_back_off_once_per_episode_without_a_ceiling() {
        let c = Clock::new();
        let mut a = Aimd::new().initial(100).timeout(500 * MS);
        // Exactly the timeout is not a drop; above it is.
        assert_eq!(a.update(&c.ok(0, 500, 100)), 101);
        assert_eq!(a.update(&c.ok(10, 501, 100)), 90); // floor(90.9)
                                                       // The rest of the same queue, within one slow round trip: no more.
        assert_eq!(a.update(&c.ok(20, 600, 100)), 90);
        assert_eq!(a.update(&c.ok(400, 600, 100)), 90);
        // A later one: another decrease.
        assert_eq!(a.update(&c.ok(700, 600, 100)), 81);
        assert!(a.overloads.ceiling.is_none());
    }

    #[test]
    fn respects_min_and_max() {
        let c = Clock::new();
        let mut a = Aimd::new().initial(22).min(20).max(23);
        assert_eq!(a.update(&c.ok(0, 10, 100)), 23);
        assert_eq!(a.update(&c.ok(100, 10, 100)), 23);
        assert_eq!(a.update(&c.over(200, 10, 100)), 20); // floor(20.7)
        assert_eq!(a.update(&c.over(300, 10, 100)), 20); // floor(18) -> min
    }

    #[test]
    fn initial_is_clamped_and_bounds_are_sane() {
        let c = Clock::new();
        assert_eq!(Aimd::new().initial(5).min(20).initial_limit(), 20);
        assert_eq!(Aimd::new().initial(500).initial_limit(), 200);
        // min 0 is taken as 1; max below min wins.
        let mut a = Aimd::new().initial(1).min(0).max(3);
        assert_eq!(a.initial_limit(), 1);
        assert_eq!(a.update(&c.over(0, 1, 1)), 1);
        let b = Aimd::new().min(50).max(10);
        assert_eq!(b.initial_limit(), 10);
        let mut d = Aimd::new().min(0).max(0);
        assert_eq!(d.initial_limit(), 1);
        assert_eq!(d.update(&c.ok(0, 1, 5)), 1);
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
                (0u64..50, 0u64..10_000, 0usize..1_000, any::<bool>()), 0..300),
        ) {
            let max = min + span;
            let mut a = Aimd::new()
                .initial(initial)
                .min(min)
                .max(max)
                .backoff(backoff)
                .timeout(500 * MS);
            let lo = min.max(1);
            let hi = max.max(lo);
            let l = a.initial_limit();
            prop_assert!(l >= lo && l <= hi);
            let mut now = Instant::now();
            for (gap_ms, rtt_ms, in_flight, overload) in samples {
                now += Duration::from_millis(gap_ms);
                let l = a.update(&Sample {
                    rtt: Duration::from_millis(rtt_ms),
                    in_flight,
                    overload,
                    now,
                });
                prop_assert!(l >= lo && l <= hi, "{} not in [{}, {}]", l, lo, hi);
            }
        }
    }
}
