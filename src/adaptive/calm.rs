//! When the limit last fell, and whether it has been calm long enough
//! since for a slow start: shared by [`Vegas`](super::Vegas) and
//! [`Gradient2`](super::Gradient2).

use tokio::time::Instant;

/// Fast growth waits this many round trips after a decrease...
const CALM_ROUNDS: f64 = 20.0;
/// ...or this many after a collapse...
const CALM_ROUNDS_AFTER_COLLAPSE: f64 = 8.0;
/// ...or this many in a row whose samples, at the limit, all showed no
/// queue, if the round trips are steady (see [`Falls::room`]).
const ROOM_ROUNDS: f64 = 5.0;
/// The margin of the test for no queue (for a slow start, and room): a
/// round trip within a sixteenth of the baseline ([`Gradient2`](super::Gradient2)),
/// a queue of at most a sixteenth of the limit ([`Vegas`](super::Vegas)).
pub(super) const NO_QUEUE_MARGIN: f64 = 1.0 / 16.0;
/// A decrease is a collapse when it takes the limit below this share of
/// where it was at most [`CALM_ROUNDS_AFTER_COLLAPSE`] round trips before.
const COLLAPSE: f64 = 0.5;

/// The limit's falls: when it last fell, whether that fall was a
/// collapse, and whether the round trips have shown room since.
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
/// collapse, but the smaller decreases that follow a collapse within
/// [`CALM_ROUNDS_AFTER_COLLAPSE`] round trips of each other are part of
/// it (the queue the capacity drop left behind draining, the limit
/// settling at the knee of what is left).
///
/// **Room**: [`ROOM_ROUNDS`] round trips in a row of samples that reached
/// the limit and showed no queue (more if the round trips are noisier than
/// the test's margin, see [`room`](Falls::room)) are as good as the calm:
/// near the knee a step or two of growth shows the queue again and breaks
/// the run, so such a run says the backend takes several steps more than
/// the limit (its capacity came back after a long stay at a lower one,
/// whose small decreases at the knee would otherwise hold the slow start
/// off for 20 round trips from the last of them). After a collapse, room
/// too takes the limit only back to where it was.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Falls {
    /// When the limit last fell.
    last: Option<Instant>,
    /// The highest limit a fall started from within the last
    /// [`CALM_ROUNDS_AFTER_COLLAPSE`] round trips (or, after a collapse,
    /// before the falls that continue it), and when.
    peak: Option<(Instant, f64)>,
    /// Whether the last fall was a collapse.
    collapsed: bool,
    /// Since when every sample that reached the limit showed no queue
    /// (since the last fall).
    room_since: Option<Instant>,
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
        let continues = self.collapsed && self.last.is_some_and(recent);
        let peak = match self.peak {
            Some((at, peak)) if (recent(at) || continues) && peak >= limit => (at, peak),
            _ => (now, limit),
        };
        self.peak = Some(peak);
        self.collapsed = new < peak.1 * COLLAPSE;
        self.last = Some(now);
        self.room_since = None;
    }

    /// A sample that reached the limit came back at `now`, showing a
    /// queue (`queue`) or none.
    pub(super) fn reached(&mut self, now: Instant, queue: bool) {
        if queue {
            self.room_since = None;
        } else {
            self.room_since.get_or_insert(now);
        }
    }

    /// Whether the samples that reached the limit showed no queue for
    /// [`ROOM_ROUNDS`] round trips of `round` seconds in a row, at `now`,
    /// or longer in proportion when the round trips' `spread` exceeds the
    /// margin of the test for no queue (a sixteenth): noise that large
    /// passes the test by chance, a window or two at a time.
    pub(super) fn room(&self, now: Instant, round: f64, spread: Option<f64>) -> bool {
        let noise = spread.map_or(1.0, |spread| (spread / NO_QUEUE_MARGIN).max(1.0));
        self.room_since.is_some_and(|since| {
            now.saturating_duration_since(since).as_secs_f64() >= ROOM_ROUNDS * noise * round
        })
    }

    /// How far a slow start may take the limit, `limit` now, at `now`,
    /// counting in round trips of `round` seconds (`spread`: see
    /// [`room`](Self::room)): anywhere once it has
    /// been calm for [`CALM_ROUNDS`] (or, with no collapse to come back
    /// from, once there is [room](Self::room)), back to where it was
    /// before a collapse once it has been calm for
    /// [`CALM_ROUNDS_AFTER_COLLAPSE`] after it or there is room, and
    /// nowhere (`None`) otherwise, or if that is not above `limit`.
    pub(super) fn slow_start_ceiling(
        &self,
        now: Instant,
        round: f64,
        spread: Option<f64>,
        limit: f64,
    ) -> Option<f64> {
        let room = self.room(now, round, spread);
        let ceiling = if self.calm_for(CALM_ROUNDS, now, round) {
            f64::INFINITY
        } else {
            match self.peak {
                Some((_, peak))
                    if self.collapsed
                        && (room || self.calm_for(CALM_ROUNDS_AFTER_COLLAPSE, now, round)) =>
                {
                    peak
                }
                _ if room => f64::INFINITY,
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
        assert_eq!(
            f.slow_start_ceiling(c.0, ROUND, None, 1.0),
            Some(f64::INFINITY)
        );
        f.fell(20.0, 15.0, c.0, Some(ROUND));
        assert_eq!(f.slow_start_ceiling(c.0 + 999 * MS, ROUND, None, 1.0), None);
        assert_eq!(
            f.slow_start_ceiling(c.0 + 1000 * MS, ROUND, None, 1.0),
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
        assert_eq!(f.slow_start_ceiling(c.0 + 649 * MS, ROUND, None, 1.0), None);
        // Back to 20 after 8 round trips, anywhere after 20.
        assert_eq!(
            f.slow_start_ceiling(c.0 + 650 * MS, ROUND, None, 1.0),
            Some(20.0)
        );
        assert_eq!(
            f.slow_start_ceiling(c.0 + 1250 * MS, ROUND, None, 1.0),
            Some(f64::INFINITY)
        );
        // A small decrease later is no collapse: 20 round trips again.
        f.fell(16.0, 15.0, c.0 + 2000 * MS, Some(ROUND));
        assert_eq!(
            f.slow_start_ceiling(c.0 + 2500 * MS, ROUND, None, 1.0),
            None
        );
        assert_eq!(
            f.slow_start_ceiling(c.0 + 3000 * MS, ROUND, None, 1.0),
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
            f.slow_start_ceiling(c.0 + (2500 + 999) * MS, ROUND, None, 1.0),
            None
        );
        assert!(f
            .slow_start_ceiling(c.0 + (2500 + 1000) * MS, ROUND, None, 1.0)
            .is_some());
    }

    #[test]
    fn smaller_falls_soon_after_a_collapse_are_part_of_it() {
        let c = Clock::new();
        let mut f = Falls::default();
        // From 74 to 36 (a collapse), then down to 18 by small decreases,
        // each within 8 round trips (400 ms) of the one before but the
        // last ones more than 8 after the collapse.
        f.fell(74.0, 36.0, c.0, Some(ROUND));
        let mut limit = 36.0;
        for (i, new) in [23.0, 21.0, 20.0, 19.0, 18.0].into_iter().enumerate() {
            f.fell(limit, new, c.0 + (i as u32 + 1) * 300 * MS, Some(ROUND));
            limit = new;
        }
        // 8 round trips after the last fall (at 1500 ms): back to 74.
        assert_eq!(
            f.slow_start_ceiling(c.0 + 1899 * MS, ROUND, None, 18.0),
            None
        );
        assert_eq!(
            f.slow_start_ceiling(c.0 + 1900 * MS, ROUND, None, 18.0),
            Some(74.0)
        );
        // A fall more than 8 round trips after the last one starts afresh.
        f.fell(30.0, 29.0, c.0 + 2000 * MS, Some(ROUND));
        assert_eq!(
            f.slow_start_ceiling(c.0 + 2500 * MS, ROUND, None, 29.0),
            None
        );
    }

    #[test]
    fn five_round_trips_of_room_allow_a_slow_start() {
        let c = Clock::new();
        let mut f = Falls::default();
        f.fell(20.0, 18.0, c.0, Some(ROUND));
        // Samples at the limit with no queue from 100 ms, one with a
        // queue at 200 ms: the run starts again at 250 ms.
        f.reached(c.0 + 100 * MS, false);
        f.reached(c.0 + 200 * MS, true);
        for at in (250..=500).step_by(50) {
            f.reached(c.0 + at * MS, false);
        }
        assert!(!f.room(c.0 + 499 * MS, ROUND, None));
        assert_eq!(
            f.slow_start_ceiling(c.0 + 499 * MS, ROUND, None, 18.0),
            None
        );
        // Five round trips (250 ms) of room, long before the 20 calm ones.
        assert!(f.room(c.0 + 500 * MS, ROUND, None));
        assert_eq!(
            f.slow_start_ceiling(c.0 + 500 * MS, ROUND, None, 18.0),
            Some(f64::INFINITY)
        );
        // Round trips twice as noisy as the test's margin (a spread of an
        // eighth): twice as long.
        let noisy = Some(0.125);
        assert!(!f.room(c.0 + 749 * MS, ROUND, noisy));
        assert!(f.room(c.0 + 750 * MS, ROUND, noisy));
        assert!(f.room(c.0 + 500 * MS, ROUND, Some(0.05)));
        // A fall ends the run.
        f.fell(19.0, 18.5, c.0 + 600 * MS, Some(ROUND));
        assert!(!f.room(c.0 + 2000 * MS, ROUND, None));
        // After a collapse, room takes the limit back to where it was,
        // before the 8 calm round trips.
        let mut f = Falls::default();
        f.fell(40.0, 10.0, c.0, Some(ROUND));
        f.reached(c.0 + 50 * MS, false);
        assert_eq!(
            f.slow_start_ceiling(c.0 + 300 * MS, ROUND, None, 10.0),
            Some(40.0)
        );
    }

    #[test]
    fn before_any_round_trip_every_fall_is_recent() {
        let c = Clock::new();
        let mut f = Falls::default();
        // Overloads before any round trip is known: 10 to 9, then to 4.
        f.fell(10.0, 9.0, c.0, None);
        f.fell(9.0, 4.0, c.0 + 10 * MS, None);
        assert_eq!(f.slow_start_ceiling(c.0 + 409 * MS, ROUND, None, 1.0), None);
        assert_eq!(
            f.slow_start_ceiling(c.0 + 410 * MS, ROUND, None, 1.0),
            Some(10.0)
        );
    }
}
