//! Waiting that chooses who is served next: newest first (LIFO), and
//! partitions below their guaranteed share before the rest.
//!
//! These waiters share one *pump*: a single place in the semaphore's own
//! FIFO queue. Whichever waiter is polled drives the pump; when it yields a
//! slot, the slot first pays what a lowered limit still owes, and otherwise
//! the dispatcher picks the waiter to hand it to by rank:
//!
//! 1. waiters of a partition holding less than its guaranteed share;
//! 2. the others (of a partition at or above its share, or of a limiter
//!    without partitions);
//! 3. waiters that match no partition, which only get spare capacity.
//!
//! and within a rank, the oldest FIFO waiter, else the newest LIFO one. So
//! these waiters take turns with plain FIFO waiters of the same limiter,
//! and the pump exists only while they do: it never parks a permit nobody
//! waits for.
//!
//! Every operation is O(1) in the number of waiters (O(partitions) to
//! choose): the waiters live in a slab, linked into one list per partition
//! (plus one for the rest) and order, so a hand-off takes a list's head or
//! tail, and a cancelled waiter unlinks itself. When the queue empties
//! after a burst, its memory is given back.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, MutexGuard};
use std::task::{Context, Poll, Waker};

use slab::Slab;

use super::partition::Partition;
use super::shared::Shared;
use super::Permit;

type Pump = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Slots kept after the queue empties; a larger slab is given back.
const KEEP: usize = 64;

/// Who a waiter is, for choosing who is served next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Class {
    /// Newest first within its rank.
    pub(super) lifo: bool,
    /// Its partition, on a partitioned limiter: `Some(None)` matched none.
    pub(super) partition: Option<Option<Partition>>,
}

impl Class {
    /// The group of lists it waits in: its partition's index, or the one
    /// after the partitions for everyone else.
    fn group(self, partitions: usize) -> usize {
        match self.partition {
            Some(Some(partition)) if partition.index() < partitions => partition.index(),
            _ => partitions,
        }
    }
}

/// One waiter: linked in a list while it waits, or holding the permit
/// handed to it until it runs.
enum Node {
    Waiting {
        waker: Waker,
        class: Class,
        /// Arrival order, to compare the heads of different lists.
        seq: u64,
        /// Its list: `group * 2 + lifo`.
        list: usize,
        prev: Option<usize>,
        next: Option<usize>,
    },
    Handed(Permit),
}

/// A doubly linked list of waiting nodes, oldest at the head.
#[derive(Debug, Default, Clone, Copy)]
struct List {
    head: Option<usize>,
    tail: Option<usize>,
}

/// The dispatched waiters of one limiter.
#[derive(Default)]
pub(super) struct DispatchState {
    nodes: Slab<Node>,
    lists: Vec<List>,
    /// Nodes linked in a list (the rest hold handed permits).
    linked: usize,
    next_seq: u64,
    pump: Option<Pump>,
    /// The waiter whose waker the pump holds: the one to replace if it
    /// leaves, so that a waiter leaving wakes nobody otherwise.
    driver: Option<usize>,
}

impl DispatchState {
    /// Links a new waiter at the tail of its list; returns its key.
    fn push(&mut self, shared: &Shared, class: Class, waker: Waker) -> usize {
        let partitions = shared.partitions.get().map_or(0, |p| p.len());
        let list = class.group(partitions) * 2 + usize::from(class.lifo);
        if self.lists.len() <= list {
            self.lists.resize(list + 1, List::default());
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let prev = self.lists[list].tail;
        let key = self.nodes.insert(Node::Waiting {
            waker,
            class,
            seq,
            list,
            prev,
            next: None,
        });
        match prev {
            Some(prev) => self.set_next(prev, Some(key)),
            None => self.lists[list].head = Some(key),
        }
        self.lists[list].tail = Some(key);
        self.linked += 1;
        key
    }

    fn set_next(&mut self, key: usize, to: Option<usize>) {
        if let Some(Node::Waiting { next, .. }) = self.nodes.get_mut(key) {
            *next = to;
        }
    }

    fn set_prev(&mut self, key: usize, to: Option<usize>) {
        if let Some(Node::Waiting { prev, .. }) = self.nodes.get_mut(key) {
            *prev = to;
        }
    }

    /// Takes a waiting node out of its list (it stays in the slab).
    fn unlink(&mut self, key: usize) {
        let Some(&Node::Waiting {
            list, prev, next, ..
        }) = self.nodes.get(key)
        else {
            return;
        };
        match prev {
            Some(prev) => self.set_next(prev, next),
            None => self.lists[list].head = next,
        }
        match next {
            Some(next) => self.set_prev(next, prev),
            None => self.lists[list].tail = prev,
        }
        self.linked -= 1;
    }

    /// Removes a node from the slab, giving back the slab's memory when
    /// the last one leaves after a burst.
    fn remove(&mut self, key: usize) -> Option<Node> {
        let node = self.nodes.try_remove(key)?;
        if self.nodes.is_empty() && self.nodes.capacity() > KEEP {
            self.nodes = Slab::new();
            self.lists = Vec::new();
        }
        Some(node)
    }

    /// The key of the waiter to serve next.
    fn choose(&self, shared: &Shared) -> Option<usize> {
        let partitions = shared.partitions.get();
        let count = partitions.map_or(0, |p| p.len());
        let mut best: Option<((u8, bool, u64), usize)> = None;
        for (list, entry) in self.lists.iter().enumerate() {
            let lifo = list % 2 == 1;
            let Some(key) = (if lifo { entry.tail } else { entry.head }) else {
                continue;
            };
            let Some(&Node::Waiting { seq, .. }) = self.nodes.get(key) else {
                continue;
            };
            let group = list / 2;
            let tier = match partitions {
                None => 1,
                Some(_) if group >= count => 2,
                Some(p) if shared.below_share(p.handle(group)) => 0,
                Some(_) => 1,
            };
            let rank = (tier, lifo, if lifo { u64::MAX - seq } else { seq });
            if best.is_none_or(|(b, _)| rank < b) {
                best = Some((rank, key));
            }
        }
        best.map(|(_, key)| key)
    }

    /// Hands `permit` to the waiting node `key`, counting it in the node's
    /// partition.
    fn hand(&mut self, key: usize, mut permit: Permit) {
        self.unlink(key);
        let Some(node) = self.nodes.get_mut(key) else {
            return;
        };
        if let Node::Waiting { class, .. } = node {
            if let Some(Some(partition)) = class.partition {
                permit.join(partition);
            }
        }
        if let Node::Waiting { waker, .. } = std::mem::replace(node, Node::Handed(permit)) {
            waker.wake();
        }
    }

    /// Wakes a waiter to drive the pump next: the one to be served next.
    fn wake_driver(&mut self, shared: &Shared) {
        self.driver = None;
        if let Some(Node::Waiting { waker, .. }) =
            self.choose(shared).and_then(|k| self.nodes.get(k))
        {
            waker.wake_by_ref();
        }
    }

    /// Waiters linked now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.linked
    }
}

/// Waits for a dispatched permit. Dropping it leaves at once; a permit it
/// had been handed goes back through the release that pays a lowered
/// limit's debt first.
pub(super) struct DispatchWait {
    shared: Arc<Shared>,
    class: Class,
    key: Option<usize>,
}

impl DispatchWait {
    pub(super) fn new(shared: Arc<Shared>, class: Class) -> Self {
        Self {
            shared,
            class,
            key: None,
        }
    }
}

impl Future for DispatchWait {
    type Output = Permit;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Permit> {
        let shared = Arc::clone(&self.shared);
        let mut state = lock(&shared);
        let key = match self.key {
            Some(key) => {
                if let Some(Node::Waiting { waker, .. }) = state.nodes.get_mut(key) {
                    waker.clone_from(cx.waker());
                } else if let Some(Node::Handed(permit)) = state.remove(key) {
                    drop(state);
                    self.key = None;
                    return Poll::Ready(permit);
                }
                key
            }
            None => {
                let key = state.push(&shared, self.class, cx.waker().clone());
                self.key = Some(key);
                key
            }
        };
        loop {
            let pump = state
                .pump
                .get_or_insert_with(|| Box::pin(Arc::clone(&shared).pump()));
            if pump.as_mut().poll(cx).is_pending() {
                state.driver = Some(key);
                return Poll::Pending;
            }
            state.pump = None;
            // A slot the pump brings pays what a lowered limit still owes
            // before anyone is served with it.
            if shared.pay_debt() {
                continue;
            }
            let permit = shared.permit();
            let next = state.choose(&shared).expect("this waiter is queued");
            if next != key {
                state.hand(next, permit);
                continue;
            }
            // The pump is gone with this permit: another waiter starts the
            // next one.
            state.unlink(key);
            state.remove(key);
            state.wake_driver(&shared);
            drop(state);
            self.key = None;
            let mut permit = permit;
            if let Some(Some(partition)) = self.class.partition {
                permit.join(partition);
            }
            return Poll::Ready(permit);
        }
    }
}

fn lock(shared: &Shared) -> MutexGuard<'_, DispatchState> {
    shared.dispatch.lock().unwrap_or_else(|e| e.into_inner())
}

impl Drop for DispatchWait {
    fn drop(&mut self) {
        let Some(key) = self.key else { return };
        let shared = Arc::clone(&self.shared);
        let mut state = lock(&shared);
        state.unlink(key);
        // A permit handed to it goes back through `Permit`'s drop, which
        // pays a lowered limit's debt before it offers the slot to anyone.
        let handed = state.remove(key);
        // Whoever is left drives the pump; with nobody left, the pump
        // leaves the semaphore's queue.
        let pump = if state.linked == 0 {
            state.driver = None;
            state.pump.take()
        } else {
            if state.driver == Some(key) {
                state.wake_driver(&shared);
            }
            None
        };
        drop(state);
        drop((handed, pump));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Limiter, Policy};
    use tokio_test::task::spawn;

    /// The queue's memory is given back once a burst has drained.
    #[test]
    fn memory_is_given_back_after_a_burst() {
        let limiter = Limiter::new(1);
        let held = limiter.try_acquire().unwrap();
        let mut waiters: Vec<_> = (0..1000)
            .map(|_| spawn(limiter.acquire(&Policy::lifo(2000))))
            .collect();
        for w in &mut waiters {
            assert!(w.poll().is_pending());
        }
        {
            let state = limiter.shared.dispatch.lock().unwrap();
            assert_eq!(state.len(), 1000);
            assert!(state.nodes.capacity() >= 1000);
        }
        drop(waiters);
        drop(held);
        let state = limiter.shared.dispatch.lock().unwrap();
        assert_eq!(state.len(), 0);
        assert!(state.nodes.capacity() <= KEEP, "{}", state.nodes.capacity());
        assert!(state.pump.is_none());
    }
}
