//! The algorithm behind an adaptive limiter, and pinning it.

use std::sync::{Mutex, MutexGuard};

use tokio::time::Instant;

use crate::adaptive::{LimitAlgorithm, Sample};
use crate::InvalidLimit;

/// An adaptive limiter's algorithm and what it last learned.
pub(super) struct Control {
    state: Mutex<State>,
    epoch: Instant,
}

struct State {
    algorithm: Box<dyn LimitAlgorithm>,
    learned: usize,
    pinned: bool,
}

/// Limits an algorithm answers are clamped into.
fn clamp(limit: usize) -> usize {
    limit.clamp(1, InvalidLimit::MAX)
}

impl Control {
    /// The control and the limit to start with.
    pub(super) fn new(algorithm: Box<dyn LimitAlgorithm>) -> (Self, usize) {
        let learned = clamp(algorithm.initial_limit());
        let state = State {
            algorithm,
            learned,
            pinned: false,
        };
        (
            Self {
                state: Mutex::new(state),
                epoch: Instant::now(),
            },
            learned,
        )
    }

    /// The moment its permits' admission times count from.
    pub(super) fn epoch(&self) -> Instant {
        self.epoch
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Feeds `sample`, then calls `apply` with the new limit unless the
    /// limit is pinned; under the lock, so limits apply in sample order.
    pub(super) fn learn(&self, sample: &Sample, apply: impl FnOnce(usize)) {
        let mut state = self.state();
        if !sample.overload {
            state.algorithm.served(sample);
        }
        state.learned = clamp(state.algorithm.update(sample));
        if !state.pinned {
            apply(state.learned);
        }
    }

    /// Pins (`Some`) or releases (`None`) the limit; `apply` gets the limit
    /// to use now: the pinned one, or the last one learned.
    pub(super) fn pin(&self, pinned: Option<usize>, apply: impl FnOnce(usize) -> usize) -> usize {
        let mut state = self.state();
        state.pinned = pinned.is_some();
        apply(pinned.unwrap_or(state.learned))
    }

    pub(super) fn is_pinned(&self) -> bool {
        self.state().pinned
    }
}
