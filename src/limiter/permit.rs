use std::fmt;
use std::sync::Arc;

use super::shared::Shared;

/// One admitted request: an owned permit of a [`Limiter`]'s tokio semaphore.
///
/// It holds the limiter alive, can move between tasks and threads, and gives
/// its slot back when dropped, whether the request completed, was cancelled
/// or unwound from a panic. If the limit was lowered while it was out, the
/// slot is retired instead of returned (see [`Limiter::set_limit`]).
///
/// [`Limiter`]: crate::Limiter
/// [`Limiter::set_limit`]: crate::Limiter::set_limit
#[must_use = "the request is admitted only while the permit is held"]
pub struct Permit {
    shared: Arc<Shared>,
}

impl Permit {
    /// Wraps a slot that was already taken from the semaphore.
    pub(super) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// Counts how long this permit was held in its limiter's average hold
    /// time (see [`Limiter::mean_hold`](crate::Limiter::mean_hold)).
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    pub(crate) fn record_hold(&self, held: std::time::Duration) {
        self.shared.record_hold(held);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.shared.release();
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("limit", &self.shared.limit())
            .finish()
    }
}
