//! The no-load baseline that [`Vegas`](super::Vegas) and
//! [`Gradient2`](super::Gradient2) share: round trips smoothed over time,
//! the round trips that cannot have queued, and a probe that measures
//! them on purpose when a few of them disagree with the rest.

use std::time::Duration;

use tokio::time::Instant;

use super::Sample;

/// The smoothed round trip spans this many round trips.
const SHORT_ROUNDS: f64 = 2.0;
/// The slow average (the baseline's source) spans this many, and runs this
/// long before there is a baseline.
const SLOW_ROUNDS: f64 = 8.0;

/// A time-weighted moving average; samples of one instant are averaged
/// before they move it.
#[derive(Debug, Clone, Default)]
struct Ema {
    /// The value before the current instant, if any.
    before: Option<f64>,
    /// The weight of the current instant's mean.
    weight: f64,
    sum: f64,
    count: u32,
    /// Instants seen.
    instants: u64,
    value: Option<f64>,
}

impl Ema {
    /// Adds `x`; `dt` is the time since the previous instant, `None` if
    /// this is the same instant; `tau` the time the average spans. Until
    /// the moving average would weigh an instant less than a plain mean of
    /// the instants so far, it is that plain mean.
    fn add(&mut self, x: f64, dt: Option<f64>, tau: f64) {
        if let Some(dt) = dt {
            self.before = self.value;
            self.sum = 0.0;
            self.count = 0;
            self.instants += 1;
            let decay = if tau > 0.0 {
                1.0 - (-dt / tau).exp()
            } else {
                1.0
            };
            self.weight = decay.max(1.0 / self.instants as f64);
        }
        self.sum += x;
        self.count += 1;
        let mean = self.sum / self.count as f64;
        self.value = Some(match self.before {
            Some(before) => before + self.weight * (mean - before),
            None => mean,
        });
    }
}

/// Successful round trips, smoothed over time, and the no-load baseline
/// taken from them; shared by [`Vegas`](super::Vegas) and
/// [`Gradient2`](super::Gradient2). Values are in seconds; "a round trip"
/// as a time span is the smoothed round trip.
#[derive(Debug, Clone, Default)]
pub(super) struct RttFilter {
    first: Option<Instant>,
    at: Option<Instant>,
    short: Ema,
    slow: Ema,
    /// The squared relative deviation of each round trip from the smoothed
    /// one before it, averaged over as long as the smoothed round trip.
    spread: Ema,
    /// When the current interval began, its minimum, and the previous one's.
    mins: Option<(Instant, f64, f64)>,
    /// Round trips that could not have queued (see
    /// [`no_load`](Self::no_load)) in the current interval, and the
    /// previous interval's mean of them, if it was precise.
    quiet: Moments,
    quiet_previous: Option<f64>,
    /// The mean of this interval's no-load round trips, once trusted (see
    /// [`probe`](Self::probe)).
    quiet_trusted: Option<f64>,
    /// The mean of two no-load round trips that agreed with the smoothed
    /// round trip: the baseline until the slow average has one.
    pair: Option<f64>,
    /// Since the current interval's pair came (see
    /// [`settled`](Self::settled)).
    agreement: Option<Agreement>,
    probe: Probe,
}

/// What the smoothed round trip did since the interval's first two no-load
/// round trips that agreed with each other came back.
#[derive(Debug, Clone, Copy)]
struct Agreement {
    /// When they came back.
    since: Instant,
    /// The lowest smoothed round trip while it agreed with them.
    low: Option<f64>,
}

/// The probe of the current interval (see [`RttFilter::probe`]).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
enum Probe {
    /// Not run.
    #[default]
    Idle,
    /// Holding the limit at [`QUIET`] since `began`, when the smoothed
    /// round trip was `drain` (seconds: about how long the requests then in
    /// flight take to come back); `own` is when its first own answer (of a
    /// request admitted within the limit held) came.
    Holding {
        began: Instant,
        drain: f64,
        own: Option<Instant>,
    },
    /// Run.
    Done,
}

/// Requests admitted with at most this many in flight (themselves
/// included) cannot have queued behind this client's other requests at a
/// backend of two workers or more: their round trips are the no-load
/// latency itself.
pub(super) const QUIET: usize = 2;

/// The limit a probe holds: [`QUIET`] within an algorithm's `(min, max)`.
pub(super) fn probe_level((lo, hi): (f64, f64)) -> usize {
    (QUIET as f64).clamp(lo, hi) as usize
}
/// Two no-load round trips that agree with the smoothed round trip count
/// when their standard error is within this share of their mean (they are
/// within about a quarter of each other).
const PAIR_PRECISION: f64 = 0.1;
/// Otherwise a mean of no-load round trips counts once there are
/// [`PROBE_SAMPLES`] and their standard error is within this share of it.
const QUIET_PRECISION: f64 = 0.05;
/// A probe takes this many no-load round trips.
const PROBE_SAMPLES: u32 = 6;
/// A probe ends this many no-load round trips after it began, once
/// [`OWN_ROUNDS`] passed since its first own answer (one admitted within
/// the limit it holds), however few answers came; and in any case this many
/// times the smoothed round trip it began with plus one no-load round trip
/// after it began.
const PROBE_ROUNDS: f64 = 4.0;
/// A probe lasts at least this many no-load round trips after its first
/// own answer (see [`PROBE_ROUNDS`]).
const OWN_ROUNDS: f64 = 2.0;
/// Two no-load answers agree with the smoothed round trip when it is
/// within this share above their mean.
const AGREE: f64 = 1.0 / 8.0;
/// Two no-load answers that agreed with the smoothed round trip for this
/// many of their round trips are trusted when it rises above them later
/// (see [`RttFilter::settled`]).
const SETTLED_ROUNDS: f64 = SLOW_ROUNDS;

/// Count, sum and sum of squares of round trips, in seconds.
#[derive(Debug, Clone, Copy, Default)]
struct Moments {
    count: u32,
    sum: f64,
    squares: f64,
}

impl Moments {
    fn add(&mut self, x: f64) {
        self.count += 1;
        self.sum += x;
        self.squares += x * x;
    }

    /// The mean, once there are `n` (two at least) and their standard
    /// error is within `precision` times it.
    fn precise_mean(&self, n: u32, precision: f64) -> Option<f64> {
        if self.count < n.max(2) {
            return None;
        }
        let n = f64::from(self.count);
        let mean = self.sum / n;
        let error = ((self.squares / n - mean * mean).max(0.0) / n).sqrt();
        (error <= precision * mean).then_some(mean)
    }
}

impl RttFilter {
    /// Adds a successful round trip measured at `now`; an interval of the
    /// baseline's minimum lasts `interval` round trips of the baseline.
    /// Answers whether a new interval began.
    pub(super) fn add(&mut self, rtt: Duration, now: Instant, interval: f64) -> bool {
        let x = rtt.as_secs_f64();
        let dt = match self.at {
            Some(at) if at == now => None,
            Some(at) => Some(now.saturating_duration_since(at).as_secs_f64()),
            None => Some(0.0),
        };
        self.at = Some(now);
        let round = self.short.value.unwrap_or(x);
        if let Some(short) = self.short.value.filter(|short| *short > 0.0) {
            let deviation = x / short - 1.0;
            self.spread
                .add(deviation * deviation, dt, SHORT_ROUNDS * round);
        }
        self.short.add(x, dt, SHORT_ROUNDS * round);
        self.slow.add(x, dt, SLOW_ROUNDS * round);
        let first = *self.first.get_or_insert(now);
        let short = self.short.value.unwrap_or(x);
        let warm = now.saturating_duration_since(first).as_secs_f64() >= SLOW_ROUNDS * short;
        let Some(slow) = self.slow.value.filter(|_| warm) else {
            return false;
        };
        match &mut self.mins {
            None => {
                self.mins = Some((now, slow, slow));
                false
            }
            Some((start, current, previous)) => {
                let baseline = current.min(*previous);
                let age = now.saturating_duration_since(*start).as_secs_f64();
                if age >= interval * baseline {
                    *previous = *current;
                    *current = slow;
                    *start = now;
                    self.quiet_previous = self.quiet_trusted;
                    self.quiet_trusted = None;
                    self.quiet = Moments::default();
                    self.agreement = None;
                    self.probe = Probe::Idle;
                    true
                } else {
                    *current = current.min(slow);
                    false
                }
            }
        }
    }

    /// A round trip that could not have queued behind this client's other
    /// requests: admitted with at most [`QUIET`] in flight.
    pub(super) fn no_load(&mut self, rtt: Duration) {
        self.quiet.add(rtt.as_secs_f64());
        if let Some(mean) = self.quiet.precise_mean(PROBE_SAMPLES, QUIET_PRECISION) {
            self.quiet_trusted = Some(mean);
        }
    }

    /// What a no-load answer does to an algorithm whose limit is `limit`
    /// within `bounds`: it counts towards the baseline, and the limit is
    /// held at [`probe_level`] while a probe runs, kept as it is otherwise.
    /// `None` for a sample that is not a no-load answer.
    pub(super) fn answer_no_load(
        &mut self,
        sample: &Sample,
        limit: usize,
        bounds: (f64, f64),
    ) -> Option<usize> {
        if sample.overload || sample.in_flight > QUIET {
            return None;
        }
        self.no_load(sample.rtt);
        let held = probe_level(bounds);
        Some(if self.probe(sample, held) {
            held
        } else {
            limit
        })
    }

    /// Whether a probe holds the limit at [`QUIET`] now; call after every
    /// sample added, with the limit the caller holds while a probe runs
    /// ([`probe_level`], or its own limit if it holds none).
    ///
    /// The mean of the no-load round trips of an interval is trusted once
    /// [`PROBE_SAMPLES`] of them are within [`QUIET_PRECISION`]. Before
    /// that, the first two (within [`PAIR_PRECISION`]) are the baseline
    /// while they agree with the smoothed round trip (it is within
    /// [`AGREE`] above their mean: no queue either way), until the slow
    /// average has one; if that agrees too, it takes over. When they
    /// disagree soon, two answers are a small sample against many: a probe
    /// holds the limit at [`QUIET`] until [`PROBE_SAMPLES`] no-load answers
    /// came back (or [`PROBE_ROUNDS`] of their round trips passed, and
    /// [`OWN_ROUNDS`] since its first own answer); their
    /// mean is trusted if it is precise, and if not the slow average alone
    /// decides in this interval. One probe per interval. When they
    /// disagree only after agreeing for [`SETTLED_ROUNDS`] of their round
    /// trips, and the no-load answers are precise, a queue built since
    /// (the slow start's overshoot, more load): their mean (or the
    /// smoothed round trip while they agreed) is trusted without a probe
    /// (see [`settled`](Self::settled)).
    ///
    /// The requests in flight when a probe begins come back first, later
    /// the longer the queue they found, and a window of them (under
    /// [`Windowed`](super::Windowed)) later still: the round trips are
    /// counted until the first answer of a request admitted within the limit
    /// held and [`OWN_ROUNDS`] after it, so however long the queue, the probe
    /// gets its no-load answers.
    pub(super) fn probe(&mut self, sample: &Sample, held: usize) -> bool {
        let now = sample.now;
        if self.quiet_trusted.is_some() {
            self.pair = None;
            if let Probe::Holding { .. } = self.probe {
                self.probe = Probe::Done;
            }
            return false;
        }
        match self.probe {
            Probe::Idle => {
                let slow = self
                    .mins
                    .map(|(_, current, previous)| current.min(previous));
                let agrees = match (self.pair, slow) {
                    (Some(pair), Some(slow)) => {
                        self.pair = None;
                        if slow <= pair * (1.0 + AGREE) {
                            self.probe = Probe::Done;
                            return false;
                        }
                        false
                    }
                    (Some(pair), None) => {
                        let short = self.short.value.unwrap_or(pair);
                        if short <= pair * (1.0 + AGREE) {
                            if let Some(agreement) = &mut self.agreement {
                                agreement.low =
                                    Some(agreement.low.map_or(short, |low| low.min(short)));
                            }
                            return false;
                        }
                        false
                    }
                    (None, slow) => {
                        let Some(short) = self.short.value else {
                            return false;
                        };
                        match (self.quiet.precise_mean(2, PAIR_PRECISION), slow) {
                            (Some(mean), _) => {
                                self.pair = Some(mean);
                                self.agreement = Some(Agreement {
                                    since: now,
                                    low: None,
                                });
                                short <= mean * (1.0 + AGREE)
                            }
                            // No pair that agrees with itself, and the slow
                            // average has a baseline: if the no-load answers
                            // there are say the round trips queue, probe.
                            (None, Some(slow)) if self.quiet.count > 0 => {
                                let mean = self.quiet.sum / f64::from(self.quiet.count);
                                slow <= mean * (1.0 + AGREE)
                            }
                            (None, _) => return false,
                        }
                    }
                };
                if agrees {
                    return false;
                }
                self.pair = None;
                if let Some(settled) = self.settled(now) {
                    self.quiet_trusted = Some(settled);
                    self.probe = Probe::Done;
                    return false;
                }
                self.probe = Probe::Holding {
                    began: now,
                    drain: self.short.value.unwrap_or(0.0),
                    own: None,
                };
                true
            }
            Probe::Holding { began, drain, own } => {
                let own = own.or((sample.in_flight <= held).then_some(now));
                self.probe = Probe::Holding { began, drain, own };
                let mean = self.quiet.sum / f64::from(self.quiet.count.max(1));
                let since = |at: Instant| now.saturating_duration_since(at).as_secs_f64();
                let counted = since(began) >= PROBE_ROUNDS * mean
                    && own.is_some_and(|own| since(own) >= OWN_ROUNDS * mean);
                if counted || since(began) >= PROBE_ROUNDS * (drain + mean) {
                    self.probe = Probe::Done;
                    return false;
                }
                true
            }
            Probe::Done => false,
        }
    }

    /// How far round trips stray from the smoothed round trip, as a share
    /// of it: the root mean square of their relative deviations over the
    /// last two round trips or so (for [`Windowed`](super::Windowed), of
    /// its windows' round trips). `None` before the second round trip.
    pub(super) fn spread(&self) -> Option<f64> {
        self.spread.value.map(f64::sqrt)
    }

    /// The no-load round trip to trust without a probe when the round trips
    /// disagree with this interval's no-load answers, if the first two
    /// agreed with the smoothed round trip for [`SETTLED_ROUNDS`] of their
    /// round trips (so the disagreement is a queue that built since, as a
    /// slow start's overshoot or more load builds, not two lucky answers)
    /// and their mean is within [`QUIET_PRECISION`]: that mean, or the
    /// lowest smoothed round trip while it agreed with them if higher (two
    /// answers can both come out low; many round trips with no queue in
    /// sight bound the no-load round trip from above, and are what a
    /// queue is to be measured against).
    fn settled(&self, now: Instant) -> Option<f64> {
        let Agreement { since, low } = self.agreement?;
        let mean = self.quiet.precise_mean(2, QUIET_PRECISION)?;
        let agreed = now.saturating_duration_since(since).as_secs_f64();
        (agreed >= SETTLED_ROUNDS * mean).then(|| low.map_or(mean, |low| low.max(mean)))
    }

    /// The round trip now, averaged over about two round trips.
    pub(super) fn short(&self) -> Option<f64> {
        self.short.value
    }

    /// Whether the baseline is the first two no-load round trips' alone:
    /// enough to grow on, not to cut.
    pub(super) fn is_provisional(&self) -> bool {
        self.pair.is_some()
            && self.mins.is_none()
            && self.quiet_trusted.is_none()
            && self.quiet_previous.is_none()
    }

    /// The no-load round trip: the lower of the lowest slow average over
    /// the current and the previous interval (once the slow average has
    /// run for eight round trips) and the trusted mean of the no-load
    /// round trips of the current interval, or else of the previous one.
    pub(super) fn baseline(&self) -> Option<f64> {
        let slow = self
            .mins
            .map(|(_, current, previous)| current.min(previous));
        let quiet = self.quiet_trusted.or(self.quiet_previous);
        match (slow, quiet) {
            (Some(s), Some(q)) => Some(s.min(q)),
            (s, q) => q.or(self.pair).or(s),
        }
    }

    /// Whether the overload `sample` is the tail of a queue the successes
    /// show: the smoothed round trip shows a queue (`shows_queue(rtt,
    /// baseline)`, in seconds), and the overload took between one and two
    /// of it (a deadline missed by requests that queued behind the rest,
    /// not a quick refusal, nor a request lost while the answers come
    /// back at their usual latency). Its in-flight count then says how
    /// long the queue was, not where the backend's limit lies (see
    /// "Overload" on [`Aimd`](super::Aimd)).
    pub(super) fn queue_tail(
        &self,
        sample: &Sample,
        shows_queue: impl FnOnce(f64, f64) -> bool,
    ) -> bool {
        let (Some(rtt), Some(baseline)) = (self.short(), self.baseline()) else {
            return false;
        };
        let own = sample.rtt.as_secs_f64();
        (rtt..=2.0 * rtt).contains(&own) && shows_queue(rtt, baseline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adaptive::clock::Clock;
    use proptest::prelude::*;

    const MS: Duration = Duration::from_millis(1);
    const EPS: f64 = 1e-9;

    #[test]
    fn an_overload_within_one_to_two_round_trips_of_a_queue_is_its_tail() {
        let c = Clock::new();
        let mut f = RttFilter::default();
        let queue = |rtt: f64, baseline: f64| rtt > 1.5 * baseline;
        // Nothing measured yet: no queue to be the tail of.
        assert!(!f.queue_tail(&c.over(0, 100, 30), queue));
        // A baseline of 40 ms (six precise no-load answers), the round
        // trips at 80.
        for _ in 0..6 {
            f.no_load(40 * MS);
        }
        f.add(80 * MS, c.0, 1000.0);
        assert!((f.baseline().unwrap() - 0.04).abs() < EPS);
        assert!((f.short().unwrap() - 0.08).abs() < EPS);
        // A deadline of 100 ms missed: the queue's tail.
        assert!(f.queue_tail(&c.over(10, 100, 30), queue));
        assert!(f.queue_tail(&c.over(10, 80, 30), queue));
        assert!(f.queue_tail(&c.over(10, 160, 30), queue));
        // A quick refusal, or a request lost for longer than two round
        // trips, is not.
        assert!(!f.queue_tail(&c.over(10, 5, 30), queue));
        assert!(!f.queue_tail(&c.over(10, 161, 30), queue));
        // Nor is a deadline miss while the round trips show no queue.
        assert!(!f.queue_tail(&c.over(10, 100, 30), |_, _| false));
    }

    #[test]
    fn averages_are_time_weighted_and_start_as_plain_means() {
        let c = Clock::new();
        let mut f = RttFilter::default();
        // Two samples of one instant are one average.
        f.add(100 * MS, c.0, 1000.0);
        f.add(200 * MS, c.0, 1000.0);
        assert!((f.short().unwrap() - 0.15).abs() < EPS);
        // The next instant: a plain mean of the two instants so far (its
        // moving-average weight, 1 - exp(-10 ms / 300 ms), is smaller).
        f.add(50 * MS, c.0 + 10 * MS, 1000.0);
        assert!((f.short().unwrap() - 0.1).abs() < EPS);
        assert!((f.slow.value.unwrap() - 0.1).abs() < EPS);
        // Much later, the moving average takes over: weight
        // 1 - exp(-dt / (2 * short)) for the short one.
        let mut f = RttFilter::default();
        f.add(100 * MS, c.0, 1000.0);
        f.add(200 * MS, c.0 + 200 * MS, 1000.0);
        let w = 1.0 - (-1.0_f64).exp();
        assert!((f.short().unwrap() - (0.1 + w * 0.1)).abs() < EPS);
    }

    #[test]
    fn the_spread_is_the_rms_relative_deviation_from_the_smoothed_round_trip() {
        let c = Clock::new();
        let mut f = RttFilter::default();
        assert_eq!(f.spread(), None);
        f.add(100 * MS, c.0, 1000.0);
        assert_eq!(f.spread(), None);
        // 100 ms after 100 ms: no spread.
        for i in 1..50 {
            f.add(100 * MS, c.0 + i * 10 * MS, 1000.0);
        }
        assert!(f.spread().unwrap() < EPS);
        // Alternating 90 and 110 ms: about a tenth either side of the
        // smoothed 100 ms.
        for i in 50..500 {
            let rtt = if i % 2 == 0 { 90 } else { 110 };
            f.add(rtt * MS, c.0 + i * 10 * MS, 1000.0);
        }
        let spread = f.spread().unwrap();
        assert!((spread - 0.1).abs() < 0.01, "{spread}");
        // It forgets within a few round trips once the round trips agree.
        for i in 500..600 {
            f.add(100 * MS, c.0 + i * 10 * MS, 1000.0);
        }
        assert!(f.spread().unwrap() < 0.01, "{:?}", f.spread());
    }

    #[test]
    fn the_baseline_is_the_lowest_slow_average_after_eight_round_trips() {
        let c = Clock::new();
        let mut f = RttFilter::default();
        // 100 ms round trips every 10 ms: no baseline for 800 ms.
        for at in (0..800).step_by(10) {
            f.add(100 * MS, c.0 + at * MS, 1000.0);
            assert_eq!(f.baseline(), None, "{at}");
        }
        f.add(100 * MS, c.0 + 800 * MS, 1000.0);
        assert!((f.baseline().unwrap() - 0.1).abs() < EPS);
        // Longer round trips do not raise it; shorter ones lower it as
        // the slow average comes down, not at once.
        for at in (810..2000).step_by(10) {
            f.add(150 * MS, c.0 + at * MS, 1000.0);
        }
        assert!((f.baseline().unwrap() - 0.1).abs() < EPS);
        f.add(50 * MS, c.0 + 2000 * MS, 1000.0);
        assert!((f.baseline().unwrap() - 0.1).abs() < EPS);
        for at in (2010..4000).step_by(10) {
            f.add(50 * MS, c.0 + at * MS, 1000.0);
        }
        let b = f.baseline().unwrap();
        assert!(b > 0.05 && b < 0.06, "{b}");
    }

    #[test]
    fn the_baseline_forgets_after_two_intervals() {
        let c = Clock::new();
        let mut f = RttFilter::default();
        let mut rotations = 0;
        // An interval of 10 round trips of 100 ms: a second.
        for at in (0..1000).step_by(10) {
            rotations += f.add(100 * MS, c.0 + at * MS, 10.0) as u32;
        }
        assert!((f.baseline().unwrap() - 0.1).abs() < EPS);
        // Slower from now on: the slow average climbs to 200 ms, and the
        // old minimum is gone after two intervals.
        for at in (1000..10_000).step_by(10) {
            rotations += f.add(200 * MS, c.0 + at * MS, 10.0) as u32;
        }
        assert!(rotations >= 2, "{rotations}");
        assert!(f.baseline().unwrap() > 0.19, "{:?}", f.baseline());
        // With no interval, the lowest ever stays.
        let mut f = RttFilter::default();
        for at in (0..1000).step_by(10) {
            f.add(100 * MS, c.0 + at * MS, f64::INFINITY);
        }
        for at in (1000..6000).step_by(10) {
            assert!(!f.add(200 * MS, c.0 + at * MS, f64::INFINITY));
        }
        assert!((f.baseline().unwrap() - 0.1).abs() < EPS);
    }

    /// Adds a success of `rtt` ms at `at` ms, a no-load one if `quiet`,
    /// and answers whether a probe holds the limit after it.
    fn feed(f: &mut RttFilter, c: &Clock, at: u64, rtt: u64, quiet: bool) -> bool {
        let in_flight = if quiet { QUIET } else { 10 };
        feed_under(f, c, at, rtt, in_flight, QUIET)
    }

    /// As [`feed`], admitted with `in_flight`, to a caller that holds
    /// `held` while a probe runs.
    fn feed_under(
        f: &mut RttFilter,
        c: &Clock,
        at: u64,
        rtt: u64,
        in_flight: usize,
        held: usize,
    ) -> bool {
        let sample = Sample {
            rtt: Duration::from_millis(rtt),
            in_flight,
            overload: false,
            now: c.0 + Duration::from_millis(at),
        };
        if in_flight <= QUIET {
            f.no_load(sample.rtt);
        }
        f.add(sample.rtt, sample.now, f64::INFINITY);
        f.probe(&sample, held)
    }

    #[test]
    fn two_no_load_answers_that_agree_are_the_baseline_until_the_slow_average_has_one() {
        let c = Clock::new();
        let mut f = RttFilter::default();
        // One no-load answer is no baseline; two within a tenth are, at once.
        assert!(!feed(&mut f, &c, 0, 100, true));
        assert_eq!(f.baseline(), None);
        assert!(!feed(&mut f, &c, 10, 104, true));
        assert!((f.baseline().unwrap() - 0.102).abs() < EPS);
        assert!(f.is_provisional());
        // Loaded answers at the same latency: the slow average agrees when
        // it has a baseline (after eight round trips) and takes over.
        let mut at = 20;
        while f.mins.is_none() {
            assert!(!feed(&mut f, &c, at, 100, false));
            at += 10;
        }
        assert!(!feed(&mut f, &c, at, 100, false));
        assert!(!f.is_provisional());
        assert_eq!(f.pair, None);
        assert_eq!(f.probe, Probe::Done);
        let b = f.baseline().unwrap();
        assert!(b > 0.1 && b < 0.102, "{b}");
    }

    /// Two no-load answers of `first` and `second` ms at 0 and 10 ms,
    /// loaded answers of 112 ms (within an eighth of them) every 10 ms
    /// until `rise` ms, then 300 ms ones (a queue) until 1000 ms: answers
    /// the filter and whether a probe began.
    fn agree_then_rise(first: u64, second: u64, rise: u64) -> (RttFilter, bool) {
        let c = Clock::new();
        let mut f = RttFilter::default();
        let mut probed = feed(&mut f, &c, 0, first, true);
        probed |= feed(&mut f, &c, 10, second, true);
        for at in (20..1000).step_by(10) {
            let rtt = if at < rise { 112 } else { 300 };
            probed |= feed(&mut f, &c, at, rtt, false);
        }
        (f, probed)
    }

    #[test]
    fn no_load_answers_that_agreed_for_eight_round_trips_are_trusted_when_a_queue_builds() {
        // A mean of 102 ms: agreed from 10 ms to 830 ms, eight of its
        // round trips (826 ms) and more, before the queue: no probe. The
        // smoothed round trip, moving from 102 ms to 112 ms, was higher than
        // the two all along: its lowest while agreeing is trusted.
        let (f, probed) = agree_then_rise(100, 104, 830);
        assert!(!probed);
        assert_eq!(f.probe, Probe::Done);
        let low = f.agreement.and_then(|a| a.low).unwrap();
        assert!(low > 0.102 && low < 0.112, "{low}");
        assert_eq!(f.quiet_trusted, Some(low));
        assert_eq!(f.baseline(), Some(low));
        assert!(!f.is_provisional());
        // A queue after less than eight of them: a probe, as before.
        let (f, probed) = agree_then_rise(100, 104, 500);
        assert!(probed);
        assert_eq!(f.quiet_trusted, None);
        // Answers of 95 and 110 ms agree with each other within a tenth,
        // not within a twentieth: a probe, however long they agreed.
        let (_, probed) = agree_then_rise(95, 110, 830);
        assert!(probed);
    }

    #[test]
    fn two_no_load_answers_against_a_slow_average_start_a_probe() {
        let c = Clock::new();
        let mut f = RttFilter::default();
        // The first two came back in 50 ms; the rest of the first round
        // trip queued behind them (150 ms): the smoothed round trip
        // disagrees, and a probe holds the limit.
        assert!(!feed(&mut f, &c, 50, 50, true));
        assert!(!feed(&mut f, &c, 50, 150, false));
        assert!(feed(&mut f, &c, 52, 50, true));
        assert!(matches!(f.probe, Probe::Holding { began, .. } if began == c.0 + 52 * MS));
        assert_eq!(f.baseline(), None);
        // It holds until six no-load answers in all came back...
        for (i, at) in [120, 160, 200].into_iter().enumerate() {
            assert!(feed(&mut f, &c, at, 150, false), "{i}");
            assert!(feed(&mut f, &c, at + 1, 52, true), "{i}");
        }
        assert!(!feed(&mut f, &c, 240, 48, true));
        // ...and then their mean is the baseline, trusted.
        assert_eq!(f.probe, Probe::Done);
        let mean = (50.0 + 50.0 + 52.0 * 3.0 + 48.0) / 6.0 / 1000.0;
        assert!((f.baseline().unwrap() - mean).abs() < EPS);
        assert!(!f.is_provisional());
        // One probe per interval.
        assert!(!feed(&mut f, &c, 300, 500, false));
    }

    #[test]
    fn a_probe_too_noisy_to_tell_ends_after_four_round_trips_and_trusts_nothing() {
        let c = Clock::new();
        let mut f = RttFilter::default();
        assert!(!feed(&mut f, &c, 50, 50, true));
        assert!(!feed(&mut f, &c, 50, 200, false));
        assert!(feed(&mut f, &c, 51, 52, true));
        let Probe::Holding { began, drain, own } = f.probe else {
            panic!("{:?}", f.probe)
        };
        assert_eq!((began, own), (c.0 + 51 * MS, None));
        assert!((drain - f.short().unwrap()).abs() < EPS);
        // What was admitted before it still comes back, the last at
        // 120 ms; its first own answer comes at 220 ms.
        assert!(feed(&mut f, &c, 120, 200, false));
        assert!(feed(&mut f, &c, 220, 20, true));
        assert!(matches!(f.probe, Probe::Holding { own: Some(own), .. } if own == c.0 + 220 * MS));
        // No-load answers of 20 and 100 ms: with the first two, a mean of
        // (50 + 52 + 20 + 100) / 4 = 55.5 ms, far from precise; one more of
        // 56 ms makes it 55.6. Four of those after it began (273.4 ms) and
        // two after its first own answer (331.2 ms): over.
        assert!(feed(&mut f, &c, 270, 100, true));
        assert!(feed(&mut f, &c, 330, 56, true));
        assert!(!feed(&mut f, &c, 332, 56, true));
        assert_eq!(f.probe, Probe::Done);
        assert_eq!(f.quiet_trusted, None);
        assert_eq!(f.baseline(), None);
    }

    #[test]
    fn no_load_answers_that_disagree_with_each_other_and_the_slow_average_start_a_probe() {
        let c = Clock::new();
        let mut f = RttFilter::default();
        // Two no-load answers, 50 and 80 ms (the second paid for a new
        // connection, say): no pair.
        assert!(!feed(&mut f, &c, 50, 50, true));
        assert!(!feed(&mut f, &c, 80, 80, true));
        assert_eq!(f.pair, None);
        // Then queued answers of 200 ms: no probe until the slow average
        // has a baseline, far above the no-load answers' mean (65 ms); the
        // sample that gives it one starts a probe.
        let mut at = 90;
        while !feed(&mut f, &c, at, 200, false) {
            assert!(f.mins.is_none(), "{at}");
            at += 10;
        }
        assert!(f.mins.is_some());
        assert!(
            matches!(f.probe, Probe::Holding { began, .. } if began == c.0 + Duration::from_millis(at))
        );
        // Had the slow average agreed (within an eighth), no probe.
        let mut f = RttFilter::default();
        assert!(!feed(&mut f, &c, 50, 50, true));
        assert!(!feed(&mut f, &c, 80, 80, true));
        for at in (90..3000).step_by(10) {
            assert!(!feed(&mut f, &c, at, 70, false));
        }
        assert_eq!(f.probe, Probe::Idle);
    }

    /// Two no-load answers of `quiet` ms at 5 and 6 ms, then answers
    /// queued for `queued` ms, one per millisecond, until a probe begins:
    /// a start far above a small backend. Answers when it began.
    fn start_probe(f: &mut RttFilter, c: &Clock, quiet: u64, queued: u64) -> u64 {
        assert!(!feed(f, c, 5, quiet, true));
        assert!(!feed(f, c, 6, quiet, true));
        let mut at = 7;
        while !feed(f, c, at, queued, false) {
            at += 1;
        }
        at
    }

    #[test]
    fn a_probe_waits_for_the_queue_it_found_to_drain() {
        let c = Clock::new();
        let mut f = RttFilter::default();
        // Two no-load answers of 5 ms, then everything queues, and the
        // queue keeps growing.
        let at = start_probe(&mut f, &c, 5, 26);
        // The probe holds; what was admitted before it still comes back,
        // queued, for 40 ms: twice as long as four no-load round trips
        // (20 ms), and it holds all along.
        let start = at;
        for at in start + 1..start + 40 {
            assert!(feed(&mut f, &c, at, 26 + (at - start), false), "{at}");
        }
        // Then the no-load answers come; with the first two, six of them
        // end the probe, and their mean is trusted.
        for at in start + 45..start + 48 {
            assert!(feed(&mut f, &c, at, 5, true), "{at}");
        }
        assert!(!feed(&mut f, &c, start + 48, 5, true));
        assert_eq!(f.probe, Probe::Done);
        assert!((f.baseline().unwrap() - 0.005).abs() < EPS);
    }

    #[test]
    fn a_window_of_answers_from_before_the_probe_does_not_end_it() {
        let c = Clock::new();
        let mut f = RttFilter::default();
        // Over loopback HTTP under `Windowed`, started at 42 above 8
        // workers of 5 ms: the pair, then a window of queued answers
        // starts the probe.
        let at = start_probe(&mut f, &c, 7, 25);
        // The next window closes 32 ms later, past four no-load round
        // trips (28 ms), with a mean of 31 ms: the queue it found, still
        // coming back. The probe holds for its own answers.
        assert!(feed(&mut f, &c, at + 32, 31, false));
        for (i, gap) in [33, 39, 41].into_iter().enumerate() {
            assert!(feed(&mut f, &c, at + gap, 7, true), "{i}");
        }
        assert!(!feed(&mut f, &c, at + 45, 6, true));
        assert_eq!(f.probe, Probe::Done);
        let mean = (7.0 * 5.0 + 6.0) / 6.0 / 1000.0;
        assert!((f.baseline().unwrap() - mean).abs() < EPS);
    }

    #[test]
    fn a_probe_with_no_answer_of_its_own_ends_after_four_times_its_drain() {
        let c = Clock::new();
        let mut f = RttFilter::default();
        let began = start_probe(&mut f, &c, 5, 26);
        let Probe::Holding { drain, .. } = f.probe else {
            panic!("{:?}", f.probe)
        };
        // Only answers admitted before it, ever: it ends four times the
        // smoothed round trip it began with, plus one no-load round trip
        // (5 ms), after it began.
        let end = began as f64 + 4.0 * (drain * 1000.0 + 5.0);
        let mut at = began + 1;
        while (at as f64) < end {
            assert!(feed(&mut f, &c, at, 26, false), "{at}");
            at += 1;
        }
        assert!(!feed(&mut f, &c, at, 26, false));
        assert_eq!((f.probe, f.quiet_trusted), (Probe::Done, None));
    }

    #[test]
    fn a_probe_that_holds_more_than_two_counts_answers_within_that_as_its_own() {
        let c = Clock::new();
        let mut f = RttFilter::default();
        // A caller that holds 10 while probing (a `min` of 10): the first
        // answer admitted with 10 in flight, at 150 ms, is the probe's own;
        // four round trips of the no-load mean (50 ms) after it began and
        // two after that answer, it is over.
        assert!(!feed_under(&mut f, &c, 50, 50, QUIET, 10));
        assert!(!feed_under(&mut f, &c, 50, 200, 11, 10));
        assert!(feed_under(&mut f, &c, 51, 50, QUIET, 10));
        assert!(feed_under(&mut f, &c, 100, 150, 11, 10));
        assert!(feed_under(&mut f, &c, 150, 150, 10, 10));
        assert!(feed_under(&mut f, &c, 250, 150, 10, 10));
        assert!(!feed_under(&mut f, &c, 252, 150, 10, 10));
        assert_eq!(f.probe, Probe::Done);
    }

    #[test]
    fn a_precise_mean_of_six_no_load_answers_is_trusted_without_a_probe() {
        let c = Clock::new();
        let mut f = RttFilter::default();
        // Light load: every answer is a no-load one, at 100 ms.
        for at in 0..6 {
            assert!(!feed(&mut f, &c, at * 10, 100, true));
        }
        assert!((f.quiet_trusted.unwrap() - 0.1).abs() < EPS);
        assert_eq!((f.pair, f.probe), (None, Probe::Idle));
        assert!((f.baseline().unwrap() - 0.1).abs() < EPS);
        assert!(!f.is_provisional());
        // Slower answers later do not raise it (within the interval).
        for at in 6..20 {
            assert!(!feed(&mut f, &c, at * 10, 300, true));
        }
        assert!((f.baseline().unwrap() - 0.1).abs() < EPS);
    }

    proptest! {
        /// Whatever the answers: a probe holds at most once without a new
        /// interval, never longer than its round trips allow, never once
        /// a mean is trusted; the baseline is one of the round trips' means
        /// (within the range of those seen).
        #[test]
        fn the_probe_holds_once_and_the_baseline_stays_within_the_round_trips(
            answers in prop::collection::vec((0u64..40, 1u64..500, any::<bool>()), 0..400),
        ) {
            let c = Clock::new();
            let mut f = RttFilter::default();
            let (mut at, mut holds, mut was_holding) = (0u64, 0u32, false);
            let (mut lo, mut hi) = (f64::INFINITY, 0.0f64);
            for (gap, rtt, quiet) in answers {
                at += gap;
                let holding = feed(&mut f, &c, at, rtt, quiet);
                if holding && !was_holding {
                    holds += 1;
                }
                if holding {
                    prop_assert!(f.quiet_trusted.is_none());
                }
                was_holding = holding;
                let x = rtt as f64 / 1000.0;
                lo = lo.min(x);
                hi = hi.max(x);
                if let Some(b) = f.baseline() {
                    prop_assert!(b >= lo - EPS && b <= hi + EPS, "{} not in [{}, {}]", b, lo, hi);
                }
            }
            prop_assert!(holds <= 1, "{} probes", holds);
        }
    }
}
