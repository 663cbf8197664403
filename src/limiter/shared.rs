//! The state every handle of one limit points at.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crossbeam_utils::CachePadded;
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;

use super::control::Control;
use super::dispatch::{Class, DispatchState, DispatchWait};
use super::hold::Hold;
use super::observe::{Cause, Observer, Stopwatch};
use super::partition::{Partition, Partitions};
use super::permit::Start;
use super::queued::Queued;
use super::Permit;
use crate::adaptive::{LimitAlgorithm, Sample};

/// The semaphore and the bookkeeping that lets its size change at run time.
///
/// Invariant: the permits (free in the semaphore or in the `spare` pool,
/// handed out, or handed to a waiter that has not run yet) number
/// `limit + debt`. `debt` is what a lowered limit still has to take back
/// from permits that are out; every returning or newly taken permit pays
/// it first.
pub(super) struct Shared {
    /// On cache lines of its own: waiters and releases write it all the
    /// time, and the fields read on every request should not share them.
    semaphore: CachePadded<Semaphore>,
    /// Permits taken out of the semaphore and free: a permit that comes back
    /// while nobody waits lands here without the semaphore's lock, and the
    /// next request takes it from here. Waiters flush it into the semaphore.
    spare: CachePadded<AtomicUsize>,
    limit: AtomicUsize,
    debt: AtomicUsize,
    /// On a cache line of its own: only waiters touch it, and they should
    /// not slow down the semaphore next to it.
    waiting: CachePadded<AtomicUsize>,
    /// Callers of [`wait`](Self::wait) (services waiting in `poll_ready`)
    /// count themselves here instead, in the shard of the thread they
    /// start on: when most requests wait, one shared counter would bounce
    /// between the threads at every wait (measured: 1.15–1.4× tower's time
    /// in the contended benchmark with one counter, 0.98× without).
    wait_shards: [CachePadded<AtomicUsize>; SHARDS],
    resize: Mutex<()>,
    pub(super) dispatch: Mutex<DispatchState>,
    pub(super) partitions: OnceLock<Partitions>,
    bypassed: AtomicU64,
    /// Moving average of how long permits are held, in nanoseconds (0: no
    /// sample yet); fed only by callers that time their requests.
    mean_hold_nanos: AtomicU64,
    /// The algorithm of an adaptive limiter; `None` for a fixed one.
    control: Option<Control>,
    hold: Hold,
    /// Its name, and what it reports to (see `observe.rs`).
    pub(super) observer: Observer,
    /// Notified each time a caller starts waiting, once someone asked for
    /// it (see [`Limiter::queue_signal`](super::Limiter::queue_signal)).
    pub(super) queue_signal: OnceLock<Arc<Notify>>,
    /// Where `set_limit` goes when the capacity is leased from elsewhere
    /// (the fleet): given the new limit, it returns the old one.
    pub(super) leased_from: OnceLock<Box<dyn Fn(usize) -> usize + Send + Sync>>,
}

impl Shared {
    pub(super) fn new(limit: usize) -> Self {
        Self::with_control(limit, None)
    }

    pub(super) fn adaptive(algorithm: Box<dyn LimitAlgorithm>) -> Self {
        let (control, limit) = Control::new(algorithm);
        Self::with_control(limit, Some(control))
    }

    fn with_control(limit: usize, control: Option<Control>) -> Self {
        Self {
            semaphore: CachePadded::new(Semaphore::new(limit)),
            spare: CachePadded::new(AtomicUsize::new(0)),
            limit: AtomicUsize::new(limit),
            debt: AtomicUsize::new(0),
            waiting: CachePadded::new(AtomicUsize::new(0)),
            wait_shards: Default::default(),
            resize: Mutex::new(()),
            dispatch: Mutex::default(),
            partitions: OnceLock::new(),
            bypassed: AtomicU64::new(0),
            mean_hold_nanos: AtomicU64::new(0),
            control,
            hold: Hold::default(),
            observer: Observer::default(),
            queue_signal: OnceLock::new(),
            leased_from: OnceLock::new(),
        }
    }

    /// Notes that a request of `partition` was refused for want of a
    /// permit, so that free permits are kept for it while it is below its
    /// share.
    pub(super) fn claim(&self, partition: Option<Partition>) {
        if let (Some(partitions), Some(partition)) = (self.partitions.get(), partition) {
            partitions.claim(partition, self.limit());
        }
    }

    /// Whether `partition` holds fewer permits than its guaranteed share.
    pub(super) fn below_share(&self, partition: Partition) -> bool {
        self.partitions
            .get()
            .is_some_and(|p| p.in_flight(partition) < p.guaranteed(partition, self.limit()))
    }

    pub(super) fn count_bypass(&self) {
        self.bypassed.fetch_add(1, Relaxed);
        self.on_bypassed();
    }

    pub(super) fn bypassed(&self) -> u64 {
        self.bypassed.load(Relaxed)
    }

    pub(super) fn is_adaptive(&self) -> bool {
        self.control.is_some()
    }

    /// A permit for a slot just taken; an adaptive limiter's permit notes
    /// when it was admitted and how many were in flight.
    #[inline]
    pub(super) fn permit(self: &Arc<Self>) -> Permit {
        Arc::clone(self).into_permit()
    }

    /// Like [`permit`](Self::permit), moving the handle in.
    #[inline]
    fn into_permit(self: Arc<Self>) -> Permit {
        let start = match &self.control {
            None => Start::NONE,
            Some(control) => Start::now(control.epoch(), self.in_flight()),
        };
        Permit::new(self, start)
    }

    /// The moment an adaptive limiter's permits are timed from.
    pub(super) fn epoch(&self) -> Option<Instant> {
        self.control.as_ref().map(Control::epoch)
    }

    /// Feeds a finished request to the algorithm and applies its answer.
    pub(super) fn learn(&self, sample: &Sample) {
        if let Some(control) = &self.control {
            control.learn(sample, |limit| {
                self.set_limit(limit, Cause::Algorithm);
            });
        }
    }

    /// Pins the limit (`Some`) or hands it back to the algorithm (`None`);
    /// a fixed limiter just moves. Returns the old limit.
    pub(super) fn pin(&self, pinned: Option<usize>, cause: Cause) -> usize {
        match (&self.control, pinned) {
            (Some(control), _) => control.pin(pinned, |limit| self.set_limit(limit, cause)),
            (None, Some(limit)) => self.set_limit(limit, cause),
            (None, None) => self.limit(),
        }
    }

    pub(super) fn is_pinned(&self) -> bool {
        self.control.as_ref().is_some_and(Control::is_pinned)
    }

    pub(super) fn hold_until(&self, until: Instant) {
        self.hold.extend(until);
    }

    #[inline]
    pub(super) fn held_until(&self) -> Option<Instant> {
        self.hold.until()
    }

    pub(super) fn limit(&self) -> usize {
        self.limit.load(SeqCst)
    }

    pub(super) fn available(&self) -> usize {
        self.semaphore.available_permits() + self.spare.load(SeqCst)
    }

    pub(super) fn in_flight(&self) -> usize {
        (self.limit() + self.debt.load(SeqCst)).saturating_sub(self.available())
    }

    pub(super) fn waiting(&self) -> usize {
        self.waiting.load(SeqCst) + self.shard_waiting()
    }

    /// Callers of `wait` waiting now.
    #[inline]
    fn shard_waiting(&self) -> usize {
        self.wait_shards.iter().map(|s| s.load(SeqCst)).sum()
    }

    /// Whether anyone waits: read after filling the pool (see `release`).
    #[inline]
    fn anyone_waiting(&self) -> bool {
        self.waiting.load(SeqCst) != 0 || self.wait_shards.iter().any(|s| s.load(SeqCst) != 0)
    }

    /// Adds one permit's hold time to the moving average (weight 1/8).
    pub(super) fn record_hold(&self, held: Duration) {
        let sample = u64::try_from(held.as_nanos()).unwrap_or(u64::MAX).max(1);
        let _ = self.mean_hold_nanos.fetch_update(Relaxed, Relaxed, |mean| {
            Some(match mean {
                0 => sample,
                _ => mean - mean / 8 + sample / 8,
            })
        });
    }

    /// The average hold time, once a timed permit has come back.
    pub(super) fn mean_hold(&self) -> Option<Duration> {
        match self.mean_hold_nanos.load(Relaxed) {
            0 => None,
            nanos => Some(Duration::from_nanos(nanos)),
        }
    }

    /// Takes a permit if one is free now for a request of `partition`
    /// (`None`: of no partition): on a partitioned limiter, free permits
    /// kept for partitions below their share that asked for them are not
    /// free to the others (see `Partitions::reserved_from`).
    #[inline]
    pub(super) fn try_acquire(self: &Arc<Self>, partition: Option<Partition>) -> Option<Permit> {
        if self.held_until().is_some() {
            return None;
        }
        if let Some(partitions) = self.partitions.get() {
            let reserved = partitions.reserved_from(partition, self.limit());
            if reserved != 0 && self.available() <= reserved {
                return None;
            }
        }
        loop {
            if !self.take_spare() {
                self.semaphore.try_acquire().ok()?.forget();
            }
            if !self.pay_debt() {
                let permit = self.permit();
                self.on_admitted();
                return Some(permit);
            }
        }
    }

    /// Takes a place in the queue if fewer than `max` wait (no bound if
    /// `None`); the place is counted in `waiting` until the guard drops. A
    /// request of a partition below its share may queue past a full queue
    /// by its unmet guarantee, so that others filling the queue cannot shut
    /// it out; `Some(0)` (refuse at once) stays 0.
    pub(super) fn enter_queue(
        self: &Arc<Self>,
        max: Option<usize>,
        partition: Option<Partition>,
    ) -> Option<QueuePlace> {
        let allowance = match (max, self.partitions.get()) {
            (Some(max), Some(partitions)) if max > 0 => {
                partitions.queue_allowance(partition, self.limit())
            }
            _ => 0,
        };
        let max = max.map_or(usize::MAX, |max| max.saturating_add(allowance));
        self.waiting
            .fetch_update(SeqCst, SeqCst, |w| {
                (w + self.shard_waiting() < max).then_some(w + 1)
            })
            .ok()?;
        self.on_queued();
        Some(QueuePlace(Arc::clone(self)))
    }

    /// Waits in the semaphore's own queue, first in first out, for a slot,
    /// without counting itself in `waiting`. Dropping the future leaves the
    /// queue and takes nothing. A slot the semaphore hands over is kept even
    /// if the limit was lowered since (it was counted in flight, and permits
    /// in flight are never revoked); one that arrives while admissions are
    /// held goes back, and the wait resumes when the hold ends.
    async fn queued_slot(&self) {
        loop {
            // Counted in `waiting` by the caller, so releases now go to the
            // semaphore; what landed in the pool before goes there too.
            self.flush_spare();
            Queued::new(self.semaphore.acquire(), self).await;
            match self.held_until() {
                Some(until) => {
                    self.release();
                    tokio::time::sleep_until(until).await;
                }
                None => return,
            }
        }
    }

    /// Waits for a slot in the semaphore's queue, for the dispatcher.
    pub(super) async fn pump(self: Arc<Self>) {
        self.queued_slot().await;
    }

    /// Waits for a permit in the semaphore's queue; callers that count
    /// themselves hold a [`QueuePlace`].
    pub(super) async fn acquire_queued(self: Arc<Self>) -> Permit {
        self.queued_slot().await;
        self.into_permit()
    }

    /// Waits for a permit, first in first out, counted in `waiting`. On a
    /// partitioned limiter the wait is dispatched as a request of no
    /// partition, which only gets spare capacity.
    pub(super) async fn wait(self: Arc<Self>) -> Permit {
        let since = Stopwatch::start();
        let waiting = (Counted::enter(self.wait_shard()), self.watch_queue());
        if self.partitions.get().is_some() {
            let class = Class {
                lifo: false,
                partition: Some(None),
            };
            let permit = DispatchWait::new(Arc::clone(&self), class).await;
            drop(waiting);
            self.on_admitted_after(since);
            return permit;
        }
        self.queued_slot().await;
        drop(waiting);
        self.on_admitted_after(since);
        self.into_permit()
    }

    /// Gives a permit's slot back, or retires it against the debt.
    #[inline]
    pub(super) fn release(&self) {
        if self.pay_debt() {
            return;
        }
        // No free permit in the semaphore means the limit is saturated and
        // someone is likely waiting: hand the permit over through the
        // semaphore, without touching the waiters' counter.
        if self.semaphore.available_permits() == 0 {
            self.semaphore.add_permits(1);
            return;
        }
        // Free permits in the semaphore: nobody sleeps there (a waiter for
        // one permit takes a free one at once). Keep the permit in the
        // pool, lock-free. A waiter counts itself before it flushes the
        // pool, and this checks for waiters after filling it, so one of the
        // two moves the permit to the semaphore where the waiter gets it
        // (tests/spare_pool.rs checks every interleaving).
        self.spare.fetch_add(1, SeqCst);
        if self.anyone_waiting() {
            self.flush_spare();
        }
    }

    /// Takes one permit from the pool, if any.
    #[inline]
    fn take_spare(&self) -> bool {
        self.spare.load(SeqCst) != 0
            && self
                .spare
                .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
                .is_ok()
    }

    /// Moves the pool's permits to the semaphore, for its waiters.
    fn flush_spare(&self) {
        if self.spare.load(SeqCst) != 0 {
            let n = self.spare.swap(0, SeqCst);
            self.semaphore.add_permits(n);
        }
    }

    /// Takes up to `n` free permits out of circulation; returns how many.
    fn retire_free(&self, n: usize) -> usize {
        let from_pool = self
            .spare
            .fetch_update(SeqCst, SeqCst, |s| Some(s - s.min(n)))
            .map_or(0, |s| s.min(n));
        from_pool + self.semaphore.forget_permits(n - from_pool)
    }

    /// Retires free slots against the debt while both exist.
    fn reclaim_free(&self) {
        while self.debt.load(SeqCst) != 0 && self.retire_free(1) == 1 {
            if !self.pay_debt() {
                self.semaphore.add_permits(1);
                return;
            }
        }
    }

    /// Retires one slot against the debt, if anything is owed.
    #[inline]
    pub(super) fn pay_debt(&self) -> bool {
        self.debt.load(SeqCst) != 0
            && self
                .debt
                .fetch_update(SeqCst, SeqCst, |d| d.checked_sub(1))
                .is_ok()
    }

    /// Moves the limit; the caller has checked `new`. Returns the old limit.
    pub(super) fn set_limit(&self, new: usize, cause: Cause) -> usize {
        let _resizing = self.resize.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.limit.swap(new, SeqCst);
        if new < old {
            let cut = old - new;
            let freed = self.retire_free(cut);
            self.debt.fetch_add(cut - freed, SeqCst);
            // A permit released between the two lines above went back to
            // the semaphore although it was owed: take it now.
            self.reclaim_free();
        } else if new > old {
            let raise = new - old;
            let owed = self
                .debt
                .fetch_update(SeqCst, SeqCst, |d| Some(d.saturating_sub(raise)))
                .unwrap_or_else(|d| d);
            self.semaphore.add_permits(raise - owed.min(raise));
        }
        self.on_limit_set(old, new, cause);
        old
    }
}

/// Shards of the count of callers of `wait`.
const SHARDS: usize = 4;

impl Shared {
    /// The shard of the current thread.
    #[inline]
    fn wait_shard(&self) -> &AtomicUsize {
        use std::cell::Cell;
        use std::sync::atomic::AtomicUsize as Next;
        static NEXT: Next = Next::new(0);
        thread_local! {
            static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
        }
        let shard = SHARD.with(|shard| {
            if shard.get() == usize::MAX {
                shard.set(NEXT.fetch_add(1, Relaxed) % SHARDS);
            }
            shard.get()
        });
        &self.wait_shards[shard]
    }
}

/// One caller counted in a count of waiters while it lives.
struct Counted<'a>(&'a AtomicUsize);

impl<'a> Counted<'a> {
    fn enter(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, SeqCst);
        Self(counter)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, SeqCst);
    }
}

/// A counted place in a limiter's queue, given up on drop.
pub(super) struct QueuePlace(Arc<Shared>);

impl Drop for QueuePlace {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, SeqCst);
        self.0.on_unqueued();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Adjacent-line prefetch on x86_64 and aarch64 pulls cache lines in
    /// pairs: the contended fields sit 128 bytes apart there.
    #[test]
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    fn contended_fields_are_128_bytes_apart() {
        assert_eq!(std::mem::align_of::<CachePadded<AtomicUsize>>(), 128);
        let shared = Shared::new(1);
        let at = |p: *const u8| p as usize;
        let spare = at((&*shared.spare as *const AtomicUsize).cast());
        let waiting = at((&*shared.waiting as *const AtomicUsize).cast());
        assert!(spare.abs_diff(waiting) >= 128);
    }
}
