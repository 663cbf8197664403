//! Holding new admissions until a moment, as an upstream's `Retry-After`
//! asks.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::Mutex;

use tokio::time::Instant;

/// Until when no new request is admitted, if at all. The flag keeps the
/// common case (no hold) to one atomic load.
#[derive(Default)]
pub(super) struct Hold {
    active: AtomicBool,
    until: Mutex<Option<Instant>>,
}

impl Hold {
    /// Holds admissions until `until`, or longer if already held longer.
    pub(super) fn extend(&self, until: Instant) {
        let mut current = self.until.lock().unwrap_or_else(|e| e.into_inner());
        if current.is_none_or(|c| c < until) {
            *current = Some(until);
        }
        self.active.store(true, SeqCst);
    }

    /// The end of the hold in force now, if any.
    #[inline]
    pub(super) fn until(&self) -> Option<Instant> {
        if !self.active.load(Relaxed) {
            return None;
        }
        self.until_slow()
    }

    #[cold]
    fn until_slow(&self) -> Option<Instant> {
        let mut current = self.until.lock().unwrap_or_else(|e| e.into_inner());
        match *current {
            Some(until) if until > Instant::now() => Some(until),
            _ => {
                *current = None;
                self.active.store(false, SeqCst);
                None
            }
        }
    }
}
