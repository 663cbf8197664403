//! When the limit last fell, and whether it has been calm long enough
//! since for a slow start: shared by [`Vegas`](super::Vegas) and
//! [`Gradient2`](super::Gradient2).

use tokio::time::Instant;

/// Fast growth waits this many round trips after a decrease...
const CALM_ROUNDS: f64 = 20.0;
/// ...or this many after a collapse.
const CALM_ROUNDS_AFTER_COLLAPSE: f64 = 8.0;
/// A run of decreases is a collapse once it has taken the limit below
/// this share of where it began.
const COLLAPSE: f64 = 0.5;

/// The limit's falls: when it last fell, and whether the run of decreases
/// it belongs to is a collapse.
///
/// A slow start waits [`CALM_ROUNDS`] round trips after a decrease, so
/// that the noise of the round trips near the knee does not pass for room
/// to grow. After a collapse (a run of decreases, begun after a calm
/// spell, that has taken the limit below half of where it was) it waits
/// only [`CALM_ROUNDS_AFTER_COLLAPSE`]: the limit is then far below what
/// the backend took a moment ago, and round trips back at the no-load one
/// say that it takes it again (a stall has passed, capacity has come
/// back), so the limit need not climb back a step per round trip.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Falls {
    /// When the limit last fell.
    last: Option<Instant>,
    /// The limit before the current run of decreases.
    from: f64,
    /// Whether the run has taken the limit below [`COLLAPSE`] of `from`.
    collapsed: bool,
}

impl Falls {
    /// The limit fell from `limit` to `new` at `now`; `round` is the
    /// round trip to count calm round trips in (seconds), if known yet.
    pub(super) fn fell(&mut self, limit: f64, new: f64, now: Instant, round: Option<f64>) {
        if self.calm_for(CALM_ROUNDS, now, round) {
            self.from = limit;
        }
        self.collapsed = new < self.from * COLLAPSE;
        self.last = Some(now);
    }

    /// Whether it has been calm long enough at `now` for a slow start,
    /// counting in round trips of `round` seconds.
    pub(super) fn calm(&self, now: Instant, round: f64) -> bool {
        let rounds = if self.collapsed {
            CALM_ROUNDS_AFTER_COLLAPSE
        } else {
            CALM_ROUNDS
        };
        self.calm_for(rounds, now, Some(round))
    }

    /// Whether `rounds` round trips of `round` passed since the last fall
    /// (or the limit never fell).
    fn calm_for(&self, rounds: f64, now: Instant, round: Option<f64>) -> bool {
        match (self.last, round) {
            (None, _) => true,
            (Some(at), Some(round)) => {
                now.saturating_duration_since(at).as_secs_f64() >= rounds * round
            }
            (Some(_), None) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adaptive::clock::Clock;
    use std::time::Duration;

    const MS: Duration = Duration::from_millis(1);
    /// Round trips of 50 ms.
    const ROUND: f64 = 0.05;

    #[test]
    fn a_decrease_waits_twenty_round_trips() {
        let c = Clock::new();
        let mut f = Falls::default();
        assert!(f.calm(c.0, ROUND));
        f.fell(20.0, 15.0, c.0, Some(ROUND));
        assert!(!f.calm(c.0 + 999 * MS, ROUND));
        assert!(f.calm(c.0 + 1000 * MS, ROUND));
    }

    #[test]
    fn a_collapse_waits_eight() {
        let c = Clock::new();
        let mut f = Falls::default();
        // From 20, a run of decreases: to 12 (not yet a collapse), then
        // to 9, under half of where the run began.
        f.fell(20.0, 12.0, c.0, Some(ROUND));
        f.fell(12.0, 9.0, c.0 + 100 * MS, Some(ROUND));
        assert!(!f.calm(c.0 + 499 * MS, ROUND));
        assert!(f.calm(c.0 + 500 * MS, ROUND));
        // Another run, after a calm spell: it begins from where the limit
        // is then (16), and a small decrease is no collapse.
        f.fell(16.0, 15.0, c.0 + 2000 * MS, Some(ROUND));
        assert!(!f.calm(c.0 + 2500 * MS, ROUND));
        assert!(f.calm(c.0 + 3000 * MS, ROUND));
    }

    #[test]
    fn before_any_round_trip_a_fall_starts_a_run_only_the_first_time() {
        let c = Clock::new();
        let mut f = Falls::default();
        // Overloads before any round trip is known: the first begins the
        // run, the next ones belong to it.
        f.fell(10.0, 9.0, c.0, None);
        f.fell(9.0, 4.0, c.0 + 10 * MS, None);
        assert!(!f.calm(c.0 + 409 * MS, ROUND));
        assert!(f.calm(c.0 + 410 * MS, ROUND));
    }
}
