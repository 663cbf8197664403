//! The state every handle of one limit points at.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};

use tokio::sync::Semaphore;

use super::Permit;

/// The semaphore and the bookkeeping that lets its size change at run time.
///
/// Invariant: the semaphore's permits (free, handed out, or handed to a
/// waiter that has not run yet) number `limit + debt`. `debt` is what a
/// lowered limit still has to take back from permits that are out; every
/// returning or newly taken permit pays it first.
pub(super) struct Shared {
    semaphore: Semaphore,
    limit: AtomicUsize,
    debt: AtomicUsize,
    waiting: AtomicUsize,
    resize: Mutex<()>,
}

impl Shared {
    pub(super) fn new(limit: usize) -> Self {
        Self {
            semaphore: Semaphore::new(limit),
            limit: AtomicUsize::new(limit),
            debt: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            resize: Mutex::new(()),
        }
    }

    pub(super) fn limit(&self) -> usize {
        self.limit.load(SeqCst)
    }

    pub(super) fn available(&self) -> usize {
        self.semaphore.available_permits()
    }

    pub(super) fn in_flight(&self) -> usize {
        (self.limit() + self.debt.load(SeqCst)).saturating_sub(self.available())
    }

    pub(super) fn waiting(&self) -> usize {
        self.waiting.load(SeqCst)
    }

    /// Takes a permit if one is free now.
    pub(super) fn try_acquire(self: &Arc<Self>) -> Option<Permit> {
        loop {
            self.semaphore.try_acquire().ok()?.forget();
            if !self.pay_debt() {
                return Some(Permit::new(Arc::clone(self)));
            }
        }
    }

    /// Waits for a permit, first in first out; counted in `waiting` while
    /// it waits. Dropping the future leaves the queue and takes nothing.
    pub(super) async fn acquire(self: Arc<Self>) -> Permit {
        let _waiting = Waiting::enter(&self.waiting);
        loop {
            // The semaphore is never closed.
            if let Ok(slot) = self.semaphore.acquire().await {
                slot.forget();
            }
            if !self.pay_debt() {
                return Permit::new(Arc::clone(&self));
            }
        }
    }

    /// Gives a permit's slot back, or retires it against the debt.
    pub(super) fn release(&self) {
        if !self.pay_debt() {
            self.semaphore.add_permits(1);
        }
    }

    /// Retires one slot against the debt, if anything is owed.
    fn pay_debt(&self) -> bool {
        self.debt.load(SeqCst) != 0
            && self
                .debt
                .fetch_update(SeqCst, SeqCst, |d| d.checked_sub(1))
                .is_ok()
    }

    /// Moves the limit; the caller has checked `new`. Returns the old limit.
    pub(super) fn set_limit(&self, new: usize) -> usize {
        let _resizing = self.resize.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.limit.swap(new, SeqCst);
        if new < old {
            let cut = old - new;
            let freed = self.semaphore.forget_permits(cut);
            self.debt.fetch_add(cut - freed, SeqCst);
        } else if new > old {
            let raise = new - old;
            let owed = self
                .debt
                .fetch_update(SeqCst, SeqCst, |d| Some(d.saturating_sub(raise)))
                .unwrap_or_else(|d| d);
            self.semaphore.add_permits(raise - owed.min(raise));
        }
        old
    }
}

/// Counts one caller in `waiting` for as long as it lives.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn enter(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, SeqCst);
        Self(counter)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, SeqCst);
    }
}
