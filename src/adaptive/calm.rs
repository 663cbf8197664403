//! When the limit last fell, and whether it has been calm long enough
//! since for a slow start: shared by [`Vegas`](super::Vegas) and
//! [`Gradient2`](super::Gradient2).

use tokio::time::Instant;

/// Fast growth waits this many round trips after a decrease...
const CALM_ROUNDS: f64 = 20.0;
/// ...or this many after a collapse.
const CALM_ROUNDS_AFTER_COLLAPSE: f64 = 8.0;
/// A decrease is a collapse when it takes the limit below this share of
/// where it was at most [`CALM_ROUNDS_AFTER_COLLAPSE`] round trips before.
const COLLAPSE: f64 = 0.5;

/// The limit's falls: when it last fell, and whether that fall was a
/// collapse.
///
/// A slow start waits [`CALM_ROUNDS`] round trips after a decrease, so
/// that the noise of the round trips near the knee does not pass for room
/// to grow. After a collapse (the limit below half of where it was at most
/// [`CALM_ROUNDS_AFTER_COLLAPSE`] round trips before) it waits only that
/// many, and only as far as where the limit was before the collapse until
/// the 20 have passed: the limit is then far below what the backend took a
/// moment ago, and round trips back at the no-load one say that it takes
/// it again (a stall has passed, capacity has come back), so the limit
/// need not climb back a step per round trip; past that level nothing
/// says so, and a collapse made by noise (one slow window) must not end
/// in an overshoot. A slow slide through many small decreases is no
/// collapse.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Falls {
    /// When the limit last fell.
    last: Option<Instant>,
    /// The highest limit a fall started from within the last
    /// [`CALM_ROUNDS_AFTER_COLLAPSE`] round trips, and when.
    peak: Option<(Instant, f64)>,
    /// Whether the last fall was a collapse.
    collapsed: bool,
}

impl Falls {
    /// The limit fell from `limit` to `new` at `now`; `round` is the
    /// round trip to count calm round trips in (seconds), if known yet.
    /// The limit only grows between falls, so the limit a fall starts
    /// from is the highest since the one before.
    pub(super) fn fell(&mut self, limit: f64, new: f64, now: Instant, round: Option<f64>) {
        let recent = |at: Instant| match round {
            Some(round) => {
                now.saturating_duration_since(at).as_secs_f64() < CALM_ROUNDS_AFTER_COLLAPSE * round
            }
            None => true,
        };
        let peak = match self.peak {
            Some((at, peak)) if recent(at) && peak >= limit => (at, peak),
            _ => (now, limit),
        };
        self.peak = Some(peak);
        self.collapsed = new < peak.1 * COLLAPSE;
        self.last = Some(now);
    }

    /// How far a slow start may take the limit, `limit` now, at `now`,
    /// counting in round trips of `round` seconds: anywhere once it has
    /// been calm for [`CALM_ROUNDS`], back to where it was before a
    /// collapse once it has been calm for [`CALM_ROUNDS_AFTER_COLLAPSE`]
    /// after it, and nowhere (`None`) otherwise, or if that is not above
    /// `limit`.
    pub(super) fn slow_start_ceiling(&self, now: Instant, round: f64, limit: f64) -> Option<f64> {
        let ceiling = if self.calm_for(CALM_ROUNDS, now, round) {
            f64::INFINITY
        } else {
            match self.peak {
                Some((_, peak))
                    if self.collapsed && self.calm_for(CALM_ROUNDS_AFTER_COLLAPSE, now, round) =>
                {
                    peak
                }
                _ => return None,
            }
        };
        (ceiling > limit).then_some(ceiling)
    }

    /// Whether `rounds` round trips of `round` passed since the last fall
    /// (or the limit never fell).
    fn calm_for(&self, rounds: f64, now: Instant, round: f64) -> bool {
        self.last
            .is_none_or(|at| now.saturating_duration_since(at).as_secs_f64() >= rounds * round)
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
        assert_eq!(f.slow_start_ceiling(c.0, ROUND, 1.0), Some(f64::INFINITY));
        f.fell(20.0, 15.0, c.0, Some(ROUND));
        assert_eq!(f.slow_start_ceiling(c.0 + 999 * MS, ROUND, 1.0), None);
        assert_eq!(
            f.slow_start_ceiling(c.0 + 1000 * MS, ROUND, 1.0),
            Some(f64::INFINITY)
        );
    }

    #[test]
    fn a_collapse_waits_eight() {
        let c = Clock::new();
        let mut f = Falls::default();
        // From 20: to 12 (not yet a collapse), then, 5 round trips later,
        // to 9: under half of where it was within 8 round trips.
        f.fell(20.0, 12.0, c.0, Some(ROUND));
        f.fell(12.0, 9.0, c.0 + 250 * MS, Some(ROUND));
        assert_eq!(f.slow_start_ceiling(c.0 + 649 * MS, ROUND, 1.0), None);
        // Back to 20 after 8 round trips, anywhere after 20.
        assert_eq!(f.slow_start_ceiling(c.0 + 650 * MS, ROUND, 1.0), Some(20.0));
        assert_eq!(
            f.slow_start_ceiling(c.0 + 1250 * MS, ROUND, 1.0),
            Some(f64::INFINITY)
        );
        // A small decrease later is no collapse: 20 round trips again.
        f.fell(16.0, 15.0, c.0 + 2000 * MS, Some(ROUND));
        assert_eq!(f.slow_start_ceiling(c.0 + 2500 * MS, ROUND, 1.0), None);
        assert_eq!(
            f.slow_start_ceiling(c.0 + 3000 * MS, ROUND, 1.0),
            Some(f64::INFINITY)
        );
    }

    #[test]
    fn a_slow_slide_is_no_collapse() {
        let c = Clock::new();
        let mut f = Falls::default();
        // From 20 to 9 by a decrease every 5 round trips: never below half
        // of where it was 8 round trips before.
        let mut limit = 20.0;
        for i in 0..11u32 {
            f.fell(limit, limit - 1.0, c.0 + i * 250 * MS, Some(ROUND));
            limit -= 1.0;
        }
        assert_eq!(
            f.slow_start_ceiling(c.0 + (2500 + 999) * MS, ROUND, 1.0),
            None
        );
        assert!(f
            .slow_start_ceiling(c.0 + (2500 + 1000) * MS, ROUND, 1.0)
            .is_some());
    }

    #[test]
    fn before_any_round_trip_every_fall_is_recent() {
        let c = Clock::new();
        let mut f = Falls::default();
        // Overloads before any round trip is known: 10 to 9, then to 4.
        f.fell(10.0, 9.0, c.0, None);
        f.fell(9.0, 4.0, c.0 + 10 * MS, None);
        assert_eq!(f.slow_start_ceiling(c.0 + 409 * MS, ROUND, 1.0), None);
        assert_eq!(f.slow_start_ceiling(c.0 + 410 * MS, ROUND, 1.0), Some(10.0));
    }
}
