//! Partitions of one limit with guaranteed shares.

use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst};

/// A partition of a partitioned [`Limiter`](crate::Limiter), handed back by
/// [`Limiter::partitioned`](crate::Limiter::partitioned).
///
/// It knows which limiter it belongs to: given to another limiter, it
/// counts in no partition there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Partition {
    /// Which set of partitions (one per partitioned limiter) it is of.
    owner: u32,
    /// Its place in that set.
    index: u32,
}

impl Partition {
    /// Its place among its limiter's partitions.
    pub(super) fn index(self) -> usize {
        self.index as usize
    }
}

/// Tells the partitions of different limiters apart.
static OWNERS: AtomicU32 = AtomicU32::new(0);

/// Shares that cannot partition a limit: a share outside 0–1, shares that
/// add up to more than 1, a repeated or empty name, or a limiter that was
/// partitioned already.
#[derive(Debug, Clone, PartialEq)]
pub struct InvalidShares {
    message: String,
}

impl InvalidShares {
    fn new(message: String) -> Self {
        Self { message }
    }

    pub(super) fn already_partitioned() -> Self {
        Self::new("this limiter is partitioned already".into())
    }
}

impl fmt::Display for InvalidShares {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for InvalidShares {}

/// One partition's name, share, and the permits it holds now.
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionStats {
    /// Its name.
    pub name: String,
    /// Its share of the limit, 0 to 1.
    pub share: f64,
    /// The permits guaranteed to it at the current limit: `max(1, ceil(limit × share))`.
    pub guaranteed: usize,
    /// The permits it holds now.
    pub in_flight: usize,
    /// Its handle.
    pub partition: Partition,
}

struct Entry {
    name: String,
    share: f64,
    in_flight: AtomicUsize,
    /// Permits it asked for and was refused while below its share: free
    /// permits kept for it, up to its unmet guarantee, until it takes them.
    claims: AtomicUsize,
}

/// The partitions of one limiter.
pub(super) struct Partitions {
    owner: u32,
    entries: Vec<Entry>,
    /// The sum of every partition's claims, so that the common case (no
    /// claim) costs one load.
    claims: AtomicUsize,
}

impl Partitions {
    pub(super) fn new<N: Into<String>>(
        shares: impl IntoIterator<Item = (N, f64)>,
    ) -> Result<Self, InvalidShares> {
        let mut entries: Vec<Entry> = Vec::new();
        let mut total = 0.0;
        for (name, share) in shares {
            let name = name.into();
            if name.is_empty() {
                return Err(InvalidShares::new("a partition needs a name".into()));
            }
            if !(share > 0.0 && share <= 1.0) {
                return Err(InvalidShares::new(format!(
                    "partition {name:?} has share {share}: a share is above 0 and at most 1"
                )));
            }
            if entries.iter().any(|e| e.name == name) {
                return Err(InvalidShares::new(format!(
                    "partition {name:?} is named twice"
                )));
            }
            total += share;
            entries.push(Entry {
                name,
                share,
                in_flight: AtomicUsize::new(0),
                claims: AtomicUsize::new(0),
            });
        }
        if entries.is_empty() {
            return Err(InvalidShares::new("no partitions given".into()));
        }
        if total > 1.0 + 1e-9 {
            return Err(InvalidShares::new(format!(
                "partition shares add up to {total}: at most 1 (100%)"
            )));
        }
        let owner = OWNERS.fetch_add(1, Relaxed);
        Ok(Self {
            owner,
            entries,
            claims: AtomicUsize::new(0),
        })
    }

    /// The handle of the partition at `index`.
    pub(super) fn handle(&self, index: usize) -> Partition {
        Partition {
            owner: self.owner,
            index: index as u32,
        }
    }

    /// How many partitions there are.
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The entry of `partition`, if it is one of these.
    fn entry(&self, partition: Partition) -> Option<&Entry> {
        (partition.owner == self.owner)
            .then(|| self.entries.get(partition.index()))
            .flatten()
    }

    /// `max(1, ceil(limit × share))`, where a product within rounding
    /// error of a whole number (100 × 0.07 is 7.000000000000001) counts as
    /// that number.
    pub(super) fn guaranteed(&self, partition: Partition, limit: usize) -> usize {
        let share = self.entry(partition).map_or(0.0, |e| e.share);
        ((limit as f64 * share - 1e-9).ceil() as usize).max(1)
    }

    pub(super) fn in_flight(&self, partition: Partition) -> usize {
        self.entry(partition)
            .map_or(0, |e| e.in_flight.load(SeqCst))
    }

    /// Counts a permit in `partition`, settling one of its claims; false
    /// for a partition this limiter does not have (one taken from another
    /// limiter).
    pub(super) fn join(&self, partition: Partition) -> bool {
        let Some(entry) = self.entry(partition) else {
            return false;
        };
        entry.in_flight.fetch_add(1, SeqCst);
        if self.claims.load(SeqCst) != 0
            && entry
                .claims
                .fetch_update(SeqCst, SeqCst, |c| c.checked_sub(1))
                .is_ok()
        {
            self.claims.fetch_sub(1, SeqCst);
        }
        true
    }

    /// Permits `partition` still lacks to reach its guarantee at `limit`.
    fn unmet(&self, partition: Partition, limit: usize) -> usize {
        self.guaranteed(partition, limit)
            .saturating_sub(self.in_flight(partition))
    }

    /// Notes that a request of `partition` was refused for want of a
    /// permit: if the partition is below its share, one more free permit
    /// is kept for it (up to its unmet guarantee).
    pub(super) fn claim(&self, partition: Partition, limit: usize) {
        let Some(entry) = self.entry(partition) else {
            return;
        };
        let unmet = self.unmet(partition, limit);
        if entry
            .claims
            .fetch_update(SeqCst, SeqCst, |c| (c < unmet).then_some(c + 1))
            .is_ok()
        {
            self.claims.fetch_add(1, SeqCst);
        }
    }

    /// Free permits kept for partitions other than `asking` (`None`: a
    /// request of no partition) that are below their share and claimed
    /// them; 0 if `asking` is below its own share, which may take any.
    #[inline]
    pub(super) fn reserved_from(&self, asking: Option<Partition>, limit: usize) -> usize {
        if self.claims.load(SeqCst) == 0 {
            return 0;
        }
        if asking.is_some_and(|p| self.unmet(p, limit) > 0) {
            return 0;
        }
        (0..self.entries.len())
            .map(|i| self.handle(i))
            .filter(|&p| Some(p) != asking)
            .map(|p| {
                let claims = self.entry(p).map_or(0, |e| e.claims.load(SeqCst));
                claims.min(self.unmet(p, limit))
            })
            .sum()
    }

    /// How many more than a queue's bound a request of `partition` may
    /// queue: its unmet guarantee, so that others filling the queue cannot
    /// shut it out.
    pub(super) fn queue_allowance(&self, partition: Option<Partition>, limit: usize) -> usize {
        partition.map_or(0, |p| self.unmet(p, limit))
    }

    pub(super) fn leave(&self, partition: Partition) {
        if let Some(entry) = self.entry(partition) {
            entry.in_flight.fetch_sub(1, SeqCst);
        }
    }

    /// `partition`'s stats at `limit`, if it is one of these.
    pub(super) fn stats(&self, partition: Partition, limit: usize) -> Option<PartitionStats> {
        let entry = self.entry(partition)?;
        Some(PartitionStats {
            name: entry.name.clone(),
            share: entry.share,
            guaranteed: self.guaranteed(partition, limit),
            in_flight: entry.in_flight.load(SeqCst),
            partition,
        })
    }

    /// Every partition's stats at `limit`, in order.
    pub(super) fn all_stats(&self, limit: usize) -> Vec<PartitionStats> {
        (0..self.entries.len())
            .filter_map(|i| self.stats(self.handle(i), limit))
            .collect()
    }
}
