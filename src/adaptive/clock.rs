//! Samples for the algorithms' unit tests.

use std::time::Duration;

use tokio::time::Instant;

use super::Sample;

/// Samples of one run, `at` milliseconds after its start.
pub(super) struct Clock(pub(super) Instant);

impl Clock {
    pub(super) fn new() -> Self {
        Self(Instant::now())
    }

    /// A success answered in `rtt` ms, admitted with `in_flight` in flight.
    pub(super) fn ok(&self, at: u64, rtt: u64, in_flight: usize) -> Sample {
        Sample {
            rtt: Duration::from_millis(rtt),
            in_flight,
            overload: false,
            now: self.0 + Duration::from_millis(at),
        }
    }

    /// An overload, otherwise like [`ok`](Self::ok).
    pub(super) fn over(&self, at: u64, rtt: u64, in_flight: usize) -> Sample {
        Sample {
            overload: true,
            ..self.ok(at, rtt, in_flight)
        }
    }
}
