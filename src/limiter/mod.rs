//! The shared limit behind every service a layer builds.
//!
//! A [`Limiter`] is a cheap handle (one `Arc`) on a tokio semaphore and the
//! bookkeeping around it. Every [`ConcurrencyLimit`] built from one
//! [`ConcurrencyLimitLayer`], and every clone of those services, holds the
//! same limiter, so one layer value is one limit. Keep a clone of the handle
//! to watch the limit or move it while the server runs:
//!
//! ```
//! use tower_concurrency::{ConcurrencyLimitLayer, Limiter};
//!
//! let limiter = Limiter::new(64);
//! let layer = ConcurrencyLimitLayer::from_limiter(limiter.clone());
//! # let _ = layer;
//!
//! // later, from an admin endpoint or a config reload:
//! assert_eq!(limiter.in_flight(), 0);
//! limiter.set_limit(128);
//! assert_eq!(limiter.limit(), 128);
//! ```
//!
//! The limiter also works without tower: [`Limiter::acquire`] takes a
//! [`Permit`] under a [`Policy`] (wait, refuse, or queue a bounded number of
//! requests for a bounded time, oldest or newest first), and
//! [`Limiter::try_acquire`] takes one only if it is free, never waiting.
//!
//! [`ConcurrencyLimit`]: crate::ConcurrencyLimit
//! [`ConcurrencyLimitLayer`]: crate::ConcurrencyLimitLayer

mod acquire;
mod control;
mod dispatch;
mod error;
mod hold;
#[cfg(feature = "metrics")]
mod metrics;
mod observe;
mod partition;
mod permit;
mod policy;
mod poll;
mod queued;
mod rejected;
mod shared;
#[cfg(feature = "tracing")]
mod trace;

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

pub use self::acquire::Acquire;
pub use self::error::InvalidLimit;
use self::observe::Cause;
use self::partition::Partitions;
pub use self::partition::{InvalidShares, Partition, PartitionStats};
pub use self::permit::Permit;
pub use self::policy::{Order, Policy};
pub(crate) use self::poll::PollPermit;
pub use self::rejected::{Reason, Rejected};
use self::shared::Shared;
use crate::adaptive::LimitAlgorithm;

/// A handle on one concurrency limit, shared by every clone.
///
/// Cloning the handle does not create a new limit: all clones see and move
/// the same one.
#[derive(Clone)]
pub struct Limiter {
    shared: Arc<Shared>,
}

impl Limiter {
    /// A limit of `max` requests in flight.
    ///
    /// # Panics
    ///
    /// If `max` is 0 or above [`InvalidLimit::MAX`], with a message naming
    /// the value. [`Limiter::try_new`] returns the error instead.
    #[track_caller]
    pub fn new(max: usize) -> Self {
        Self::try_new(max).unwrap_or_else(|e| panic!("{e}"))
    }

    /// A limit of `max` requests in flight, or why `max` cannot be one.
    pub fn try_new(max: usize) -> Result<Self, InvalidLimit> {
        let max = InvalidLimit::check(max)?;
        Ok(Self {
            shared: Arc::new(Shared::new(max)),
        })
    }

    /// A limit that `algorithm` moves: it starts at the algorithm's initial
    /// limit, and every finished request the middleware records (see
    /// [`Permit::record`]) is a sample the algorithm answers with a new
    /// limit, clamped to at least 1. Lowering follows the same rule as
    /// [`set_limit`](Self::set_limit): no permit in use is revoked.
    ///
    /// ```
    /// use tower_concurrency::adaptive::Vegas;
    /// use tower_concurrency::Limiter;
    ///
    /// let limiter = Limiter::adaptive(Vegas::new().initial(10));
    /// assert!(limiter.is_adaptive());
    /// assert_eq!(limiter.limit(), 10);
    /// ```
    pub fn adaptive(algorithm: impl LimitAlgorithm) -> Self {
        Self {
            shared: Arc::new(Shared::adaptive(Box::new(algorithm))),
        }
    }

    /// An adaptive limit with the recommended algorithm:
    /// [`Windowed`](crate::adaptive::Windowed)`<`[`Gradient2`](crate::adaptive::Gradient2)`>`
    /// with a slow start of 1.5 per round trip
    /// ([`Gradient2::slow_start`](crate::adaptive::Gradient2::slow_start)),
    /// a tolerance that follows the noise of the round trips down to 1.08
    /// ([`Gradient2::tolerance_floor`](crate::adaptive::Gradient2::tolerance_floor)),
    /// steps near the knee made 0.3 of the way
    /// ([`Gradient2::damping`](crate::adaptive::Gradient2::damping))
    /// and the other defaults, starting at 10. The choice to make when you
    /// do not want to choose; see [`adaptive`](crate::adaptive) for the
    /// others.
    ///
    /// ```
    /// use tower_concurrency::Limiter;
    ///
    /// let limiter = Limiter::adaptive_default();
    /// assert!(limiter.is_adaptive());
    /// assert_eq!(limiter.limit(), 10);
    /// ```
    pub fn adaptive_default() -> Self {
        Self::adaptive(crate::adaptive::recommended())
    }

    /// Names this limiter in its `tracing` events and metrics (the
    /// `limiter` field and label; see [`observe`](crate::observe)), to
    /// tell several limits of one process apart. Unnamed, it reports as
    /// `"default"`.
    ///
    /// A limiter's name is fixed once: by the first call to `named`, or,
    /// if it reports anything before that, as `"default"` at that moment
    /// (its metrics are registered under the name in force then). A later
    /// call leaves the name as it is; [`name`](Self::name) says which
    /// name is in force. So name a limiter when building it, as here. With
    /// the `metrics` feature, naming registers its metrics with the
    /// recorder installed now; an unnamed limiter registers at its first
    /// event.
    ///
    /// ```
    /// use tower_concurrency::Limiter;
    ///
    /// let limiter = Limiter::new(64).named("api");
    /// assert_eq!(limiter.name(), "api");
    /// // The first name stays.
    /// let limiter = limiter.named("other");
    /// assert_eq!(limiter.name(), "api");
    /// ```
    #[must_use]
    pub fn named(self, name: impl Into<Cow<'static, str>>) -> Self {
        self.shared.set_name(name.into());
        self
    }

    /// The name this limiter reports under: the one given to
    /// [`named`](Self::named), or `"default"`.
    pub fn name(&self) -> &str {
        self.shared.name()
    }

    /// Whether an algorithm moves this limit.
    pub fn is_adaptive(&self) -> bool {
        self.shared.is_adaptive()
    }

    /// Hands an adaptive limit back to its algorithm, moving it at once to
    /// the algorithm's latest answer. Returns the old limit. Does nothing to
    /// a fixed limiter.
    pub fn unpin(&self) -> usize {
        self.shared.pin(None, Cause::Unpin)
    }

    /// Whether an adaptive limit is pinned.
    pub fn is_pinned(&self) -> bool {
        self.shared.is_pinned()
    }

    /// Admits no new request until `until`; requests in flight go on. Queued
    /// requests wait out the hold (within their policy's timeout), and a
    /// policy that does not queue refuses with [`Reason::Held`]. A later
    /// hold that ends sooner does not shorten this one. The HTTP layer calls
    /// this when an upstream answers `503` or `429` with `Retry-After` (see
    /// [`HttpLimitLayer::honor_retry_after`](crate::http_limit::HttpLimitLayer::honor_retry_after)).
    pub fn hold_until(&self, until: tokio::time::Instant) {
        self.shared.hold_until(until);
    }

    /// The end of the hold on admissions in force now, if any.
    pub fn held_until(&self) -> Option<tokio::time::Instant> {
        self.shared.held_until()
    }

    /// The current limit.
    pub fn limit(&self) -> usize {
        self.shared.limit()
    }

    /// Permits handed out and not yet given back: requests in flight,
    /// including one handed to a waiter that has not run yet.
    ///
    /// Right after the limit is lowered this can exceed [`limit`](Self::limit):
    /// permits already out are never revoked.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight()
    }

    /// Permits that can be taken at once without waiting.
    pub fn available(&self) -> usize {
        self.shared.available()
    }

    /// Callers waiting for a permit now.
    pub fn waiting(&self) -> usize {
        self.shared.waiting()
    }

    /// Moves the limit to `new` while requests run, and returns the old one.
    ///
    /// Raising it hands the new permits to waiters at once, first come first
    /// served. Lowering it never revokes a permit in use: free permits are
    /// retired now, and the rest of the cut is retired as permits come back,
    /// so new requests wait until fewer than `new` are in flight.
    ///
    /// On an adaptive limiter this pins the limit: the algorithm goes on
    /// learning, but its answers are not applied until
    /// [`unpin`](Self::unpin).
    ///
    /// On a fleet's limiter (feature `redis`) this moves the fleet's limit
    /// for every process, as `Fleet::set_limit` does but without waiting
    /// for Redis, and returns the fleet's limit as this process last saw
    /// it; the limiter's own capacity stays what the process leased.
    ///
    /// # Panics
    ///
    /// If `new` is 0 or above [`InvalidLimit::MAX`], with a message naming
    /// the value. [`Limiter::try_set_limit`] returns the error instead.
    #[track_caller]
    pub fn set_limit(&self, new: usize) -> usize {
        self.try_set_limit(new).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`set_limit`](Self::set_limit), but an invalid limit is returned
    /// as an error and the limit is left as it was.
    pub fn try_set_limit(&self, new: usize) -> Result<usize, InvalidLimit> {
        let new = InvalidLimit::check(new)?;
        if let Some(owner) = self.shared.leased_from.get() {
            return Ok(owner(new));
        }
        Ok(self.shared.pin(Some(new), Cause::SetLimit))
    }

    /// Moves the limit to `capacity`, 0 included (nothing new is admitted
    /// until it is raised), with the same rules as
    /// [`set_limit`](Self::set_limit) otherwise; for a limit whose capacity
    /// is leased from elsewhere (the fleet). Values above
    /// [`InvalidLimit::MAX`] are clamped. Returns the old limit.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn set_capacity(&self, capacity: usize) -> usize {
        self.shared
            .set_limit(capacity.min(InvalidLimit::MAX), Cause::Capacity)
    }

    /// Hands [`set_limit`](Self::set_limit) to `owner` from now on: this
    /// limiter's capacity is leased from elsewhere (the fleet), and its own
    /// limit is the lease's to move. `owner` gets the new limit and returns
    /// the old one. The first owner stays.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn lease_from(&self, owner: impl Fn(usize) -> usize + Send + Sync + 'static) {
        let _ = self.shared.leased_from.set(Box::new(owner));
    }

    /// A signal notified (with `notify_one`, so a signal is never lost
    /// between two waits on it) each time a caller starts waiting for a
    /// permit: the cue to lease more capacity. Costs one atomic load per
    /// wait once asked for, nothing before.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn queue_signal(&self) -> Arc<tokio::sync::Notify> {
        Arc::clone(self.shared.queue_signal.get_or_init(Default::default))
    }

    /// Takes a permit if one is free now, never waiting.
    #[inline]
    pub fn try_acquire(&self) -> Option<Permit> {
        self.shared.try_acquire(None)
    }

    /// Takes a permit under `policy`: at once if one is free, else as the
    /// policy says (wait, refuse, or queue a bounded time in FIFO or LIFO
    /// order). Every waiter of one limiter shares its queue and its count
    /// in [`waiting`](Self::waiting), whatever its policy. Dropping the
    /// future leaves the queue at once and takes no permit.
    ///
    /// ```
    /// use tower_concurrency::{Limiter, Policy, Reason};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let limiter = Limiter::new(1);
    /// let held = limiter.acquire(&Policy::reject()).await.unwrap();
    /// let refused = limiter.acquire(&Policy::reject()).await.unwrap_err();
    /// assert_eq!(refused.reason(), Reason::Full);
    /// drop(held);
    /// assert!(limiter.acquire(&Policy::wait()).await.is_ok());
    /// # }
    /// ```
    pub fn acquire(&self, policy: &Policy) -> Acquire {
        Acquire::new(&self.shared, policy, None)
    }

    /// Like [`acquire`](Self::acquire), for a request of `partition`
    /// (`None`: it matched no partition). See
    /// [`partitioned`](Self::partitioned).
    pub fn acquire_in(&self, policy: &Policy, partition: Option<Partition>) -> Acquire {
        Acquire::new(&self.shared, policy, partition)
    }

    /// Splits the limit into named partitions with guaranteed shares, such
    /// as live traffic 90% and batch 10%.
    ///
    /// Shares are enforced only when the limit is saturated: while permits
    /// are free, any request takes one, so a lone batch job may use the
    /// whole limit at night. Once every permit is taken, each permit that
    /// comes back goes first to a waiter whose partition holds fewer than
    /// its guaranteed `max(1, ceil(limit × share))` permits, then to other
    /// partitions' waiters, and last to requests that matched no partition,
    /// which only ever get spare capacity. No permit in use is revoked, so
    /// a partition below its share gets its share as permits come back.
    /// Shares follow the limit as it moves (adaptive limits included).
    ///
    /// Shares hold whatever the policy. Under [`Policy::reject`] nobody
    /// waits, so a request of a partition below its share that is refused
    /// for want of a permit (or that times out waiting) *claims* one: from
    /// then on, free permits are kept for the claims of partitions below
    /// their share, up to what each lacks, and a request of another
    /// partition at or above its share, or of no partition, is refused
    /// when it would take one of them. A claim is settled when its
    /// partition takes a permit, so borrowing resumes as soon as the
    /// partitions below their share have what they asked for; a partition
    /// that stops asking leaves at most its unmet guarantee free. Under a
    /// bounded queue ([`Policy::fifo`], [`Policy::lifo`]) a request of a
    /// partition below its share may queue past the bound by what its
    /// partition lacks, so others filling the queue cannot shut it out;
    /// queued, it is served first.
    ///
    /// Shares must each be above 0 and add up to at most 1; a limiter is
    /// partitioned once. It hands back the limiter and one [`Partition`]
    /// handle per share, in the order given, so a request is placed in a
    /// partition by its handle, never by a name that could be misspelt:
    /// through the HTTP layer's
    /// [`partition_by`](crate::http_limit::HttpLimitLayer::partition_by), or
    /// [`acquire_in`](Self::acquire_in).
    ///
    /// ```
    /// use tower_concurrency::Limiter;
    ///
    /// let (limiter, [live, batch]) = Limiter::new(100).partitioned([("live", 0.9), ("batch", 0.1)])?;
    /// let stats = limiter.partition_stats(live).unwrap();
    /// assert_eq!((stats.name.as_str(), stats.guaranteed), ("live", 90));
    /// assert_eq!(limiter.partition_stats(batch).unwrap().guaranteed, 10);
    /// # Ok::<(), tower_concurrency::InvalidShares>(())
    /// ```
    pub fn partitioned<N: Into<String>, const P: usize>(
        self,
        shares: [(N, f64); P],
    ) -> Result<(Self, [Partition; P]), InvalidShares> {
        let partitions = Partitions::new(shares)?;
        let handles = std::array::from_fn(|i| partitions.handle(i));
        self.shared
            .partitions
            .set(partitions)
            .map_err(|_| InvalidShares::already_partitioned())?;
        self.shared.on_partitioned();
        Ok((self, handles))
    }

    /// `partition`'s share, guarantee at the current limit, and permits
    /// held now; `None` for a partition of another limiter.
    pub fn partition_stats(&self, partition: Partition) -> Option<PartitionStats> {
        let partitions = self.shared.partitions.get()?;
        partitions.stats(partition, self.limit())
    }

    /// Every partition's [stats](Self::partition_stats), in the order the
    /// shares were given; empty for a limiter without partitions.
    pub fn partitions(&self) -> Vec<PartitionStats> {
        self.shared
            .partitions
            .get()
            .map(|p| p.all_stats(self.limit()))
            .unwrap_or_default()
    }

    /// Requests that skipped this limit through a bypass rule (see
    /// [`HttpLimitLayer::bypass`](crate::http_limit::HttpLimitLayer::bypass)).
    pub fn bypassed(&self) -> u64 {
        self.shared.bypassed()
    }

    /// Counts one request that skipped the limit.
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    pub(crate) fn count_bypass(&self) {
        self.shared.count_bypass();
    }

    /// How long a permit is held on average (a moving average over recent
    /// requests), measured only by middleware that times its requests,
    /// such as the HTTP layer with an estimated `Retry-After`. `None`
    /// until a timed permit has come back.
    pub fn mean_hold(&self) -> Option<std::time::Duration> {
        self.shared.mean_hold()
    }

    /// Whether two handles are on the same limit.
    pub fn same_limit(&self, other: &Limiter) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }
}

impl fmt::Debug for Limiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limiter")
            .field("name", &self.name())
            .field("limit", &self.limit())
            .field("in_flight", &self.in_flight())
            .field("waiting", &self.waiting())
            .field("adaptive", &self.is_adaptive())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowering_with_permits_out_is_paid_back_as_they_return() {
        let limiter = Limiter::new(4);
        let held: Vec<_> = (0..4).map(|_| limiter.try_acquire().unwrap()).collect();
        assert_eq!(limiter.set_limit(2), 4);
        assert_eq!(limiter.in_flight(), 4);
        let mut held = held.into_iter();
        drop(held.next());
        assert!(limiter.try_acquire().is_none(), "3 out, limit 2");
        drop(held.next());
        assert!(limiter.try_acquire().is_none(), "2 out, limit 2");
        drop(held.next());
        let again = limiter.try_acquire().expect("1 out, limit 2");
        assert!(limiter.try_acquire().is_none());
        drop((again, held));
        assert_eq!(limiter.in_flight(), 0);
        assert_eq!(limiter.available(), 2);
    }

    #[test]
    fn raising_cancels_debt_before_adding_permits() {
        let limiter = Limiter::new(4);
        let held: Vec<_> = (0..4).map(|_| limiter.try_acquire().unwrap()).collect();
        limiter.set_limit(1);
        limiter.set_limit(3);
        assert_eq!(limiter.available(), 0, "4 out is still above 3");
        drop(held);
        assert_eq!(limiter.available(), 3);
        assert_eq!(limiter.in_flight(), 0);
    }

    /// The fleet's hooks: a capacity of 0 admits nothing and queues; the
    /// queue signal fires when a caller starts waiting; raising the
    /// capacity admits the waiter.
    #[tokio::test]
    async fn capacity_zero_queues_and_signals() {
        let limiter = Limiter::new(2);
        let signal = limiter.queue_signal();
        assert_eq!(limiter.set_capacity(0), 2);
        assert!(limiter.try_acquire().is_none());
        let mut waiter = tokio_test::task::spawn(limiter.acquire(&Policy::wait()));
        assert!(waiter.poll().is_pending());
        signal.notified().await; // stored by notify_one: does not hang
        assert_eq!(limiter.set_capacity(1), 0);
        assert!(waiter.poll().is_ready());
    }

    #[test]
    fn invalid_limits_are_refused() {
        assert_eq!(Limiter::try_new(0).unwrap_err().value(), 0);
        let limiter = Limiter::new(2);
        assert!(limiter.try_set_limit(0).is_err());
        assert_eq!(limiter.limit(), 2);
    }
}
