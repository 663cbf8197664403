//! Waiting that chooses who is served next: newest first (LIFO), and
//! partitions below their guaranteed share before the rest.
//!
//! These waiters share one *pump*: a single place in the semaphore's own
//! FIFO queue. Whichever waiter is polled drives the pump; when it yields a
//! permit, the dispatcher picks the waiter to hand it to by rank:
//!
//! 1. waiters of a partition holding less than its guaranteed share;
//! 2. the others (of a partition at or above its share, or of a limiter
//!    without partitions);
//! 3. waiters that match no partition, which only get spare capacity.
//!
//! and within a rank, the oldest (FIFO) or newest (LIFO) waiter. So these
//! waiters take turns with plain FIFO waiters of the same limiter, and the
//! pump exists only while they do: it never parks a permit nobody waits for.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, MutexGuard};
use std::task::{Context, Poll, Waker};

use super::partition::Partition;
use super::shared::Shared;
use super::Permit;

type Pump = Pin<Box<dyn Future<Output = Permit> + Send>>;

/// Who a waiter is, for choosing who is served next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Class {
    /// Newest first within its rank.
    pub(super) lifo: bool,
    /// Its partition, on a partitioned limiter: `Some(None)` matched none.
    pub(super) partition: Option<Option<Partition>>,
}

struct Entry {
    id: u64,
    waker: Waker,
    class: Class,
}

/// The dispatched waiters of one limiter, oldest first.
#[derive(Default)]
pub(super) struct DispatchState {
    next_id: u64,
    waiters: Vec<Entry>,
    handed: Vec<(u64, Permit)>,
    pump: Option<Pump>,
}

impl DispatchState {
    fn take_handed(&mut self, id: u64) -> Option<Permit> {
        let at = self.handed.iter().position(|(owner, _)| *owner == id)?;
        Some(self.handed.swap_remove(at).1)
    }

    /// Removes and returns the waiter to serve next.
    fn choose(&mut self, shared: &Shared) -> Option<Entry> {
        let rank = |entry: &Entry| {
            let tier = match entry.class.partition {
                None => 1,
                Some(None) => 2,
                Some(Some(partition)) if shared.below_share(partition) => 0,
                Some(Some(_)) => 1,
            };
            let order = if entry.class.lifo {
                u64::MAX - entry.id
            } else {
                entry.id
            };
            (tier, order)
        };
        let at = (0..self.waiters.len()).min_by_key(|&i| rank(&self.waiters[i]))?;
        Some(self.waiters.remove(at))
    }

    /// Hands `permit` to `entry`, counting it in the entry's partition.
    fn hand(&mut self, entry: Entry, mut permit: Permit) {
        if let Some(Some(partition)) = entry.class.partition {
            permit.join(partition);
        }
        self.handed.push((entry.id, permit));
        entry.waker.wake();
    }

    /// Wakes the waiter that should drive the pump next.
    fn wake_driver(&self) {
        if let Some(entry) = self.waiters.last() {
            entry.waker.wake_by_ref();
        }
    }
}

/// Waits for a dispatched permit. Dropping it leaves at once; a permit it
/// had been handed goes to the next waiter in rank.
pub(super) struct DispatchWait {
    shared: Arc<Shared>,
    class: Class,
    id: Option<u64>,
}

impl DispatchWait {
    pub(super) fn new(shared: Arc<Shared>, class: Class) -> Self {
        Self {
            shared,
            class,
            id: None,
        }
    }

    fn state(&self) -> MutexGuard<'_, DispatchState> {
        self.shared
            .dispatch
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }
}

impl Future for DispatchWait {
    type Output = Permit;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Permit> {
        let shared = Arc::clone(&self.shared);
        let mut state = self.state();
        let id = match self.id {
            Some(id) => {
                if let Some(permit) = state.take_handed(id) {
                    drop(state);
                    self.id = None;
                    return Poll::Ready(permit);
                }
                if let Some(entry) = state.waiters.iter_mut().find(|e| e.id == id) {
                    entry.waker.clone_from(cx.waker());
                }
                id
            }
            None => {
                let id = state.next_id;
                state.next_id += 1;
                let (waker, class) = (cx.waker().clone(), self.class);
                state.waiters.push(Entry { id, waker, class });
                id
            }
        };
        loop {
            let pump = state
                .pump
                .get_or_insert_with(|| Box::pin(Arc::clone(&shared).acquire_queued()));
            let Poll::Ready(permit) = pump.as_mut().poll(cx) else {
                drop(state);
                self.id = Some(id);
                return Poll::Pending;
            };
            state.pump = None;
            let entry = state.choose(&shared).expect("this waiter is queued");
            if entry.id != id {
                state.hand(entry, permit);
                continue;
            }
            // The pump is gone with this permit: another waiter starts the
            // next one.
            state.wake_driver();
            drop(state);
            self.id = None;
            let mut permit = permit;
            if let Some(Some(partition)) = self.class.partition {
                permit.join(partition);
            }
            return Poll::Ready(permit);
        }
    }
}

impl Drop for DispatchWait {
    fn drop(&mut self) {
        let Some(id) = self.id else { return };
        let shared = Arc::clone(&self.shared);
        let mut state = self.state();
        state.waiters.retain(|e| e.id != id);
        let mut released = state.take_handed(id);
        if let Some(permit) = released.take_if(|_| !state.waiters.is_empty()) {
            // Out of its partition first, so the choice sees the shares as
            // they are without it.
            let permit = permit.leave();
            let next = state.choose(&shared).expect("not empty");
            state.hand(next, permit);
        }
        // Whoever is left drives the pump; with nobody left, the pump
        // leaves the semaphore's queue.
        let pump = if state.waiters.is_empty() {
            state.pump.take()
        } else {
            state.wake_driver();
            None
        };
        drop(state);
        drop((released, pump));
    }
}
