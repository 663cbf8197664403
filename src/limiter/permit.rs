use std::fmt;
use std::sync::Arc;

use tokio::time::Instant;

use super::partition::Partition;
use super::shared::Shared;
use crate::adaptive::{Outcome, Sample};

/// One admitted request: an owned permit of a [`Limiter`]'s tokio semaphore.
///
/// It holds the limiter alive, can move between tasks and threads, and gives
/// its slot back when dropped, whether the request completed, was cancelled
/// or unwound from a panic. If the limit was lowered while it was out, the
/// slot is retired instead of returned (see [`Limiter::set_limit`]).
///
/// A permit of an adaptive limiter also notes when it was admitted and how
/// many requests were in flight then; [`record`](Self::record) turns that
/// into a sample for the limiter's algorithm.
///
/// [`Limiter`]: crate::Limiter
/// [`Limiter::set_limit`]: crate::Limiter::set_limit
#[must_use = "the request is admitted only while the permit is held"]
pub struct Permit {
    shared: Arc<Shared>,
    start: Start,
    /// The partition it counts in, or [`NO_PARTITION`].
    partition: u32,
}

const NO_PARTITION: u32 = u32::MAX;

/// When an adaptive limiter's permit was admitted (nanoseconds after its
/// control's epoch, plus one; 0 for none) and how many were in flight then:
/// 12 bytes, so that a permit stays small on the path every request takes.
#[derive(Debug, Clone, Copy)]
pub(super) struct Start {
    nanos: u64,
    in_flight: u32,
}

impl Start {
    /// No sample to take.
    pub(super) const NONE: Self = Self {
        nanos: 0,
        in_flight: 0,
    };

    /// Admitted now, `epoch` being the control's.
    pub(super) fn now(epoch: Instant, in_flight: usize) -> Self {
        let since = Instant::now().saturating_duration_since(epoch).as_nanos();
        Self {
            nanos: u64::try_from(since).unwrap_or(u64::MAX - 1) + 1,
            in_flight: u32::try_from(in_flight).unwrap_or(u32::MAX),
        }
    }

    fn at(self, epoch: Instant) -> Option<Instant> {
        (self.nanos != 0).then(|| epoch + std::time::Duration::from_nanos(self.nanos - 1))
    }
}

impl Permit {
    /// Wraps a slot that was already taken from the semaphore.
    #[inline]
    pub(super) fn new(shared: Arc<Shared>, start: Start) -> Self {
        shared.on_permit_out();
        Self {
            shared,
            start,
            partition: NO_PARTITION,
        }
    }

    /// Counts this permit in `partition`'s share.
    pub(super) fn join(&mut self, partition: Partition) {
        self.leave_partition();
        let partitions = self.shared.partitions.get();
        if partitions.is_some_and(|p| p.join(partition)) {
            self.shared.on_joined(partition);
            self.partition = partition.index() as u32;
        }
    }

    #[inline]
    fn leave_partition(&mut self) {
        if self.partition == NO_PARTITION {
            return;
        }
        let index = std::mem::replace(&mut self.partition, NO_PARTITION);
        if let Some(partitions) = self.shared.partitions.get() {
            let partition = partitions.handle(index as usize);
            partitions.leave(partition);
            self.shared.on_left(partition);
        }
    }

    /// The partition this permit counts in, if any.
    pub fn partition(&self) -> Option<Partition> {
        let partitions = self.shared.partitions.get()?;
        (self.partition != NO_PARTITION).then(|| partitions.handle(self.partition as usize))
    }

    /// Whether [`record`](Self::record) would teach the limiter something:
    /// the limiter is adaptive and nothing was recorded yet.
    #[inline]
    pub fn wants_outcome(&self) -> bool {
        self.start.nanos != 0
    }

    /// Tells an adaptive limiter how the request went: its round-trip time
    /// (from admission to now), the in-flight count at admission, and the
    /// outcome become one [`Sample`] for the algorithm, which may move the
    /// limit at once. Only the first call counts; [`Outcome::Ignore`] and
    /// fixed limiters record nothing. The permit is still held until dropped,
    /// so a response can be timed at its head and hold its permit until its
    /// body ends.
    pub fn record(&mut self, outcome: Outcome) {
        let start = std::mem::replace(&mut self.start, Start::NONE);
        let Some(at) = self.shared.epoch().and_then(|epoch| start.at(epoch)) else {
            return;
        };
        let overload = match outcome {
            Outcome::Success => false,
            Outcome::Overload => true,
            Outcome::Ignore => return,
        };
        let now = Instant::now();
        self.shared.learn(&Sample {
            rtt: now.saturating_duration_since(at),
            in_flight: start.in_flight as usize,
            overload,
            now,
        });
    }

    /// Counts how long this permit was held in its limiter's average hold
    /// time (see [`Limiter::mean_hold`](crate::Limiter::mean_hold)).
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    pub(crate) fn record_hold(&self, held: std::time::Duration) {
        self.shared.record_hold(held);
    }
}

impl Drop for Permit {
    #[inline]
    fn drop(&mut self) {
        self.leave_partition();
        self.shared.on_permit_back();
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
