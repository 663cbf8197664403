//! What a run recorded, and the figures computed from it.

use std::fmt;
use std::time::Duration;

use crate::scenario::Phase;

/// How one simulated request ended, as its client saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Answered with success before its deadline.
    Success,
    /// Answered "overloaded" (429/503) by the backend.
    Overloaded,
    /// Its deadline passed first (in the backend, a black hole, or waiting
    /// for a permit).
    TimedOut,
    /// Refused by the limiter.
    Rejected,
}

/// One simulated request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    /// When it was sent, from the start of the run.
    pub issued: Duration,
    /// When its client had an answer or gave up, from the start of the run.
    pub done: Duration,
    /// How it ended.
    pub fate: Fate,
}

impl Record {
    /// Its latency as the client saw it.
    pub fn latency(&self) -> Duration {
        self.done - self.issued
    }
}

/// One sample of the time series, taken every
/// [`sample_every`](crate::Scenario::sample_every).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// When, from the start of the run.
    pub at: Duration,
    /// The limiter's limit.
    pub limit: usize,
    /// Requests holding a permit.
    pub in_flight: usize,
    /// Requests waiting for a permit.
    pub waiting: usize,
    /// Requests inside the backend (queued or in service).
    pub inside: usize,
    /// The backend's workers.
    pub workers: usize,
    /// The phase's ideal limit.
    pub ideal_limit: usize,
    /// Requests that ended since the previous point.
    pub completed: usize,
    /// Of those, successes.
    pub succeeded: usize,
    /// Mean latency of those successes.
    pub mean_latency: Option<Duration>,
    /// Longest latency of those successes.
    pub max_latency: Option<Duration>,
}

/// Figures over a stretch of a run (a phase, or all of it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Figures {
    /// Requests sent in the stretch (in the last phase and the whole run,
    /// also any sent at the very end).
    pub issued: u64,
    /// Of those, answered with success before their deadline.
    pub succeeded: u64,
    /// Of those, answered "overloaded" by the backend.
    pub overloaded: u64,
    /// Of those, timed out.
    pub timed_out: u64,
    /// Of those, refused by the limiter.
    pub rejected: u64,
    /// Offered requests per second.
    pub offered: f64,
    /// Successes per second that *completed* in the stretch.
    pub goodput: f64,
    /// The backend's capacity in requests per second (time-weighted over
    /// the stretch).
    pub capacity: f64,
    /// Median latency of the successes sent in the stretch.
    pub p50: Option<Duration>,
    /// 99th percentile latency of the successes sent in the stretch.
    pub p99: Option<Duration>,
    /// Time-weighted mean of the limit.
    pub mean_limit: f64,
    /// Time-weighted mean of the requests in flight.
    pub mean_in_flight: f64,
}

impl Figures {
    fn share(&self, n: u64) -> f64 {
        n as f64 / self.issued.max(1) as f64
    }

    /// Goodput as a share of capacity.
    pub fn goodput_share(&self) -> f64 {
        self.goodput / self.capacity
    }

    /// Share of requests sent that succeeded.
    pub fn success_share(&self) -> f64 {
        self.share(self.succeeded)
    }

    /// Share of requests sent that the backend refused as overloaded.
    pub fn overloaded_share(&self) -> f64 {
        self.share(self.overloaded)
    }

    /// Share of requests sent that timed out.
    pub fn timed_out_share(&self) -> f64 {
        self.share(self.timed_out)
    }

    /// Share of requests sent that the limiter refused.
    pub fn rejected_share(&self) -> f64 {
        self.share(self.rejected)
    }

    /// Figures over `[from, to)`. Requests count where they were sent;
    /// with `last`, those sent at or after `to` count too (an arrival
    /// planned just before the end that tokio's millisecond timer sent at
    /// the end).
    pub(crate) fn compute(
        requests: &[Record],
        series: &[Point],
        (from, to): (Duration, Duration),
        last: bool,
        capacity: f64,
    ) -> Self {
        let secs = (to - from).as_secs_f64();
        let within = |d: Duration| from <= d && d < to;
        let sent: Vec<&Record> = requests
            .iter()
            .filter(|r| from <= r.issued && (last || r.issued < to))
            .collect();
        let count = |fate: Fate| sent.iter().filter(|r| r.fate == fate).count() as u64;
        let completed_ok = requests
            .iter()
            .filter(|r| r.fate == Fate::Success && within(r.done))
            .count();
        let mut latencies: Vec<Duration> = sent
            .iter()
            .filter(|r| r.fate == Fate::Success)
            .map(|r| r.latency())
            .collect();
        latencies.sort();
        let points: Vec<&Point> = series.iter().filter(|p| within(p.at)).collect();
        let mean = |f: fn(&Point) -> usize| {
            points.iter().map(|p| f(p) as f64).sum::<f64>() / points.len().max(1) as f64
        };
        Self {
            issued: sent.len() as u64,
            succeeded: count(Fate::Success),
            overloaded: count(Fate::Overloaded),
            timed_out: count(Fate::TimedOut),
            rejected: count(Fate::Rejected),
            offered: sent.len() as f64 / secs,
            goodput: completed_ok as f64 / secs,
            capacity,
            p50: percentile(&latencies, 0.50),
            p99: percentile(&latencies, 0.99),
            mean_limit: mean(|p| p.limit),
            mean_in_flight: mean(|p| p.in_flight),
        }
    }
}

/// Nearest rank: the `ceil(p × n)`-th smallest of sorted `values`.
pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// How soon a limit settled near the ideal after a phase began.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Settling {
    /// The phase's load does not reach capacity: no limit to find.
    NotSaturated,
    /// From `after` into the phase to its end, the limit stayed within
    /// ±25% of the ideal.
    Settled {
        /// Time from the phase's start.
        after: Duration,
        /// The same in unloaded round trips.
        rtts: f64,
    },
    /// The limit was outside the band at the end of the phase.
    Never {
        /// The limit at the phase's last sample.
        last_limit: usize,
    },
}

impl Settling {
    /// The band a settled limit stays in: ±25% of `ideal`.
    pub fn band(ideal: usize) -> (f64, f64) {
        (0.75 * ideal as f64, 1.25 * ideal as f64)
    }

    pub(crate) fn compute(phase: &Phase, series: &[Point], rtt: Duration) -> Self {
        if !phase.saturated {
            return Settling::NotSaturated;
        }
        let points: Vec<&Point> = series
            .iter()
            .filter(|p| phase.start <= p.at && p.at < phase.end)
            .collect();
        let (lo, hi) = Self::band(phase.ideal_limit);
        let out = |p: &&Point| !(lo..=hi).contains(&(p.limit as f64));
        match points.iter().rposition(out) {
            _ if points.is_empty() => Settling::Never { last_limit: 0 },
            Some(i) if i + 1 == points.len() => Settling::Never {
                last_limit: points[i].limit,
            },
            last_out => {
                let after = last_out.map_or(Duration::ZERO, |i| points[i + 1].at - phase.start);
                Settling::Settled {
                    after,
                    rtts: after.as_secs_f64() / rtt.as_secs_f64(),
                }
            }
        }
    }
}

/// One phase of a run: where it stands, its figures, and how the limit
/// settled.
#[derive(Debug, Clone, PartialEq)]
pub struct PhaseReport {
    /// The phase.
    pub phase: Phase,
    /// Its figures.
    pub figures: Figures,
    /// How the limit settled in it.
    pub settling: Settling,
}

/// Everything one run recorded and computed. Two runs of one scenario with
/// one seed and one algorithm compare equal.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The scenario's name.
    pub scenario: &'static str,
    /// The algorithm's name.
    pub algorithm: String,
    /// The seed it ran with.
    pub seed: u64,
    /// The unloaded round trip that settling times are counted in.
    pub unloaded_rtt: Duration,
    /// The backend's own p99 (see [`BackendConfig::p99`](crate::BackendConfig::p99)).
    pub backend_p99: Duration,
    /// Figures over the whole run.
    pub overall: Figures,
    /// Figures per phase.
    pub phases: Vec<PhaseReport>,
    /// The time series.
    pub series: Vec<Point>,
    /// Every request, in the order they ended.
    pub requests: Vec<Record>,
}

impl Report {
    /// p99 of successes over the backend's own p99, if anything succeeded.
    pub fn p99_vs_backend(&self) -> Option<f64> {
        self.overall
            .p99
            .map(|p| p.as_secs_f64() / self.backend_p99.as_secs_f64())
    }
}

pub(crate) fn ms(d: Option<Duration>) -> String {
    d.map_or_else(|| "-".to_owned(), |d| format!("{} ms", d.as_millis()))
}

/// A limit for people: one decimal, or "unlimited" for the largest limit.
pub(crate) fn limit(value: f64) -> String {
    if value >= tower_concurrency::InvalidLimit::MAX as f64 {
        "unlimited".to_owned()
    } else {
        format!("{value:.1}")
    }
}

impl fmt::Display for Settling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Settling::NotSaturated => f.write_str("not saturated"),
            Settling::Settled { rtts, .. } => write!(f, "settled after {rtts:.1} RTTs"),
            Settling::Never { last_limit } => {
                let last = limit(*last_limit as f64);
                write!(f, "never settled (limit {last} at the end)")
            }
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.overall;
        writeln!(
            f,
            "{} / {} (seed {}): goodput {:.1}/s = {:.1}% of capacity; p50 {}, p99 {} (backend p99 {}); \
             rejected {:.1}%, timed out {:.1}%, overloaded {:.1}%",
            self.scenario,
            self.algorithm,
            self.seed,
            o.goodput,
            100.0 * o.goodput_share(),
            ms(o.p50),
            ms(o.p99),
            ms(Some(self.backend_p99)),
            100.0 * o.rejected_share(),
            100.0 * o.timed_out_share(),
            100.0 * o.overloaded_share(),
        )?;
        for p in &self.phases {
            let (ph, fi) = (&p.phase, &p.figures);
            writeln!(
                f,
                "  phase {} {:.1}-{:.1} s: {} workers, {:.0}/s offered ({:.2}x), ideal {}; \
                 mean limit {}, in flight {:.1}; goodput {:.1}/s ({:.1}%), p99 {}; {}",
                ph.index,
                ph.start.as_secs_f64(),
                ph.end.as_secs_f64(),
                ph.workers,
                ph.offered,
                ph.load_factor(),
                ph.ideal_limit,
                limit(fi.mean_limit),
                fi.mean_in_flight,
                fi.goodput,
                100.0 * fi.goodput_share(),
                ms(fi.p99),
                p.settling,
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 0.5), Some(Duration::from_millis(50)));
        assert_eq!(percentile(&v, 0.99), Some(Duration::from_millis(99)));
        assert_eq!(percentile(&v[..1], 0.99), Some(Duration::from_millis(1)));
        assert_eq!(percentile(&[], 0.5), None);
    }

    fn point(at_ms: u64, limit: usize) -> Point {
        Point {
            at: Duration::from_millis(at_ms),
            limit,
            in_flight: 0,
            waiting: 0,
            inside: 0,
            workers: 16,
            ideal_limit: 16,
            completed: 0,
            succeeded: 0,
            mean_latency: None,
            max_latency: None,
        }
    }

    #[test]
    fn settling_is_the_last_entry_into_the_band() {
        let phase = Phase {
            index: 0,
            start: Duration::ZERO,
            end: Duration::from_millis(100),
            workers: 16,
            offered: 20.0,
            capacity: 10.0,
            ideal_limit: 16,
            saturated: true,
        };
        let rtt = Duration::from_millis(10);
        let limits = [40, 30, 16, 25, 17, 18, 20, 12, 16, 19];
        let series: Vec<Point> = (0..10).map(|i| point(i * 10, limits[i as usize])).collect();
        // Band 12..20: 25 at 30 ms is the last sample out.
        assert_eq!(
            Settling::compute(&phase, &series, rtt),
            Settling::Settled {
                after: Duration::from_millis(40),
                rtts: 4.0
            }
        );
        let mut late = series.clone();
        late[9].limit = 21;
        assert_eq!(
            Settling::compute(&phase, &late, rtt),
            Settling::Never { last_limit: 21 }
        );
        let flat: Vec<Point> = (0..10).map(|i| point(i * 10, 16)).collect();
        assert!(matches!(
            Settling::compute(&phase, &flat, rtt),
            Settling::Settled { rtts, .. } if rtts == 0.0
        ));
    }
}
