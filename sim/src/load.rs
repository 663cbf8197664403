//! Open-loop load: when requests arrive, whatever the backend does.

use std::time::Duration;

use crate::rng::SimRng;

/// Offered requests per second over time: a rate from each offset on,
/// starting at zero.
#[derive(Debug, Clone, PartialEq)]
pub struct Rate {
    steps: Vec<(Duration, f64)>,
}

impl Rate {
    /// `per_second` requests per second throughout.
    pub fn constant(per_second: f64) -> Self {
        Self::steps([(Duration::ZERO, per_second)])
    }

    /// A rate that moves to each `(from, per_second)` at `from`. The rate
    /// before the first step is 0 unless it starts at zero.
    ///
    /// # Panics
    ///
    /// If the offsets are not increasing, or a rate is negative or not
    /// finite.
    pub fn steps(steps: impl IntoIterator<Item = (Duration, f64)>) -> Self {
        let mut steps: Vec<_> = steps.into_iter().collect();
        assert!(
            steps.windows(2).all(|w| w[0].0 < w[1].0),
            "rate steps must be in increasing order of time"
        );
        assert!(
            steps.iter().all(|&(_, r)| r.is_finite() && r >= 0.0),
            "rates must be finite and not negative"
        );
        if steps.first().is_none_or(|&(at, _)| at > Duration::ZERO) {
            steps.insert(0, (Duration::ZERO, 0.0));
        }
        Self { steps }
    }

    /// A flash crowd: `base` per second, `peak` from `start` for `length`,
    /// then `base` again.
    pub fn flash_crowd(base: f64, peak: f64, start: Duration, length: Duration) -> Self {
        Self::steps([
            (Duration::ZERO, base),
            (start, peak),
            (start + length, base),
        ])
    }

    /// The rate at `offset`.
    pub fn at(&self, offset: Duration) -> f64 {
        self.steps
            .iter()
            .take_while(|(from, _)| *from <= offset)
            .last()
            .map_or(0.0, |&(_, r)| r)
    }

    /// The offsets where the rate changes (after zero).
    pub fn changes(&self) -> impl Iterator<Item = Duration> + '_ {
        self.steps.iter().skip(1).map(|&(at, _)| at)
    }

    fn next_change_after(&self, offset: Duration) -> Option<Duration> {
        self.changes().find(|&at| at > offset)
    }
}

/// How arrivals are spread at a given rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrivals {
    /// A Poisson process: independent arrivals, exponential gaps (bursty,
    /// like many independent clients).
    Poisson,
    /// Evenly spaced, `1 / rate` apart (restarting at every rate change).
    Even,
}

/// An open-loop load: arrivals at a [`Rate`] regardless of completions,
/// each with a client deadline.
#[derive(Debug, Clone, PartialEq)]
pub struct Load {
    /// Offered requests per second over time.
    pub rate: Rate,
    /// How arrivals are spread.
    pub arrivals: Arrivals,
    /// How long a client waits for an answer, from the request's arrival.
    pub deadline: Duration,
}

impl Load {
    /// The arrival offsets in `[0, duration)`, drawn from `seed`.
    pub fn schedule(&self, duration: Duration, seed: u64) -> Vec<Duration> {
        let mut rng = SimRng::new(seed, 1);
        let mut out = Vec::new();
        let end = duration.as_secs_f64();
        // Even arrivals are placed at `step_start + k / rate` (not by adding
        // gaps, which drifts), and one lands at the start of every step.
        let (mut t, mut step_start, mut k) = (0.0_f64, 0.0_f64, 0_u64);
        let mut due_now = self.arrivals == Arrivals::Even;
        while t < end {
            let offset = Duration::from_secs_f64(t);
            let rate = self.rate.at(offset);
            let next_change = self
                .rate
                .next_change_after(offset)
                .map_or(f64::INFINITY, |d| d.as_secs_f64());
            if rate > 0.0 && due_now {
                out.push(offset);
            }
            let next = match self.arrivals {
                _ if rate <= 0.0 => f64::INFINITY,
                Arrivals::Poisson => t + rng.exponential() / rate,
                Arrivals::Even => step_start + (k + 1) as f64 / rate,
            };
            // A nanosecond of slack keeps float error from adding an
            // arrival just before a change.
            if next < next_change - 1e-9 {
                t = next;
                k += 1;
                due_now = true;
            } else {
                // Past a change the rate is another: a Poisson process is
                // memoryless, so it simply starts afresh there.
                t = next_change;
                step_start = next_change;
                k = 0;
                due_now = self.arrivals == Arrivals::Even;
            }
        }
        out.retain(|&at| at < duration);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn rates_and_steps() {
        let r = Rate::flash_crowd(10.0, 30.0, 5 * S, 5 * S);
        assert_eq!(r.at(Duration::ZERO), 10.0);
        assert_eq!(r.at(5 * S), 30.0);
        assert_eq!(r.at(9 * S), 30.0);
        assert_eq!(r.at(10 * S), 10.0);
        assert_eq!(r.changes().collect::<Vec<_>>(), vec![5 * S, 10 * S]);
        assert_eq!(Rate::steps([(S, 4.0)]).at(Duration::ZERO), 0.0);
    }

    #[test]
    fn even_and_poisson_counts() {
        let even = Load {
            rate: Rate::steps([(Duration::ZERO, 10.0), (2 * S, 100.0)]),
            arrivals: Arrivals::Even,
            deadline: S,
        };
        let at = even.schedule(3 * S, 1);
        assert_eq!(at.iter().filter(|&&t| t < 2 * S).count(), 20);
        assert_eq!(at.iter().filter(|&&t| t >= 2 * S).count(), 100);
        assert_eq!(at[0], Duration::ZERO);
        assert_eq!(at[20], 2 * S);

        let poisson = Load {
            arrivals: Arrivals::Poisson,
            rate: Rate::constant(1000.0),
            ..even
        };
        let at = poisson.schedule(10 * S, 3);
        assert!((9_700..10_300).contains(&at.len()), "{}", at.len());
        assert!(at.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(at, poisson.schedule(10 * S, 3));
        assert_ne!(at, poisson.schedule(10 * S, 4));
    }
}
