//! Last in, first out waiting on top of the semaphore's FIFO queue.
//!
//! The LIFO waiters of a limiter share one *pump*: a single place in the
//! semaphore's own queue. Whichever waiter is polled drives the pump; when
//! it yields a permit, the permit goes to the newest waiter. So LIFO
//! waiters take turns with FIFO waiters of the same limiter, and among
//! themselves the freshest is served first. The pump exists only while
//! LIFO waiters do, so it never parks a permit nobody waits for.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, MutexGuard};
use std::task::{Context, Poll, Waker};

use super::shared::Shared;
use super::Permit;

type Pump = Pin<Box<dyn Future<Output = Permit> + Send>>;

/// The LIFO waiters of one limiter, newest last.
#[derive(Default)]
pub(super) struct LifoState {
    next_id: u64,
    waiters: Vec<(u64, Waker)>,
    handed: Vec<(u64, Permit)>,
    pump: Option<Pump>,
}

impl LifoState {
    fn take_handed(&mut self, id: u64) -> Option<Permit> {
        let at = self.handed.iter().position(|(owner, _)| *owner == id)?;
        Some(self.handed.swap_remove(at).1)
    }
}

/// Waits for a permit, newest waiter first. Dropping it leaves the stack
/// at once; a permit it had been handed goes to the next newest waiter.
pub(super) struct LifoWait {
    shared: Arc<Shared>,
    id: Option<u64>,
}

impl LifoWait {
    pub(super) fn new(shared: Arc<Shared>) -> Self {
        Self { shared, id: None }
    }

    fn state(&self) -> MutexGuard<'_, LifoState> {
        self.shared.lifo.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Future for LifoWait {
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
                if let Some((_, waker)) = state.waiters.iter_mut().find(|(w, _)| *w == id) {
                    waker.clone_from(cx.waker());
                }
                id
            }
            None => {
                let id = state.next_id;
                state.next_id += 1;
                state.waiters.push((id, cx.waker().clone()));
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
            let (newest, waker) = state.waiters.pop().expect("this waiter is queued");
            if newest == id {
                // The pump is gone with this permit: the newest of those
                // left starts the next one.
                if let Some((_, next)) = state.waiters.last() {
                    next.wake_by_ref();
                }
                drop(state);
                self.id = None;
                return Poll::Ready(permit);
            }
            state.handed.push((newest, permit));
            waker.wake();
        }
    }
}

impl Drop for LifoWait {
    fn drop(&mut self) {
        let Some(id) = self.id else { return };
        let mut state = self.state();
        state.waiters.retain(|(w, _)| *w != id);
        let mut released = state.take_handed(id);
        if let Some(permit) = released.take_if(|_| !state.waiters.is_empty()) {
            let (next, waker) = state.waiters.pop().expect("not empty");
            state.handed.push((next, permit));
            waker.wake();
        }
        // Whoever is newest now drives the pump; with nobody left, the pump
        // leaves the semaphore's queue.
        let pump = match state.waiters.last() {
            Some((_, waker)) => {
                waker.wake_by_ref();
                None
            }
            None => state.pump.take(),
        };
        drop(state);
        drop((released, pump));
    }
}
