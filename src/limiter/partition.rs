//! Partitions of one limit with guaranteed shares.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

/// A partition of a partitioned [`Limiter`](crate::Limiter), found by name
/// with [`Limiter::partition`](crate::Limiter::partition).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Partition(pub(super) usize);

impl Partition {
    /// Its index as a permit stores it (a limiter has far fewer than
    /// `u32::MAX` partitions).
    pub(super) fn index(self) -> u32 {
        self.0 as u32
    }

    pub(super) fn from_index(index: u32) -> Self {
        Self(index as usize)
    }
}

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
}

struct Entry {
    name: String,
    share: f64,
    in_flight: AtomicUsize,
}

/// The partitions of one limiter.
pub(super) struct Partitions {
    entries: Vec<Entry>,
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
        Ok(Self { entries })
    }

    pub(super) fn find(&self, name: &str) -> Option<Partition> {
        self.entries
            .iter()
            .position(|e| e.name == name)
            .map(Partition)
    }

    /// `max(1, ceil(limit × share))`, where a product within rounding
    /// error of a whole number (100 × 0.07 is 7.000000000000001) counts as
    /// that number.
    pub(super) fn guaranteed(&self, partition: Partition, limit: usize) -> usize {
        let share = self.entries.get(partition.0).map_or(0.0, |e| e.share);
        ((limit as f64 * share - 1e-9).ceil() as usize).max(1)
    }

    pub(super) fn in_flight(&self, partition: Partition) -> usize {
        self.entries
            .get(partition.0)
            .map_or(0, |e| e.in_flight.load(SeqCst))
    }

    /// Counts a permit in `partition`; false for a partition this limiter
    /// does not have (one taken from another limiter).
    pub(super) fn join(&self, partition: Partition) -> bool {
        self.entries
            .get(partition.0)
            .map(|e| e.in_flight.fetch_add(1, SeqCst))
            .is_some()
    }

    pub(super) fn leave(&self, partition: Partition) {
        if let Some(entry) = self.entries.get(partition.0) {
            entry.in_flight.fetch_sub(1, SeqCst);
        }
    }

    pub(super) fn stats(&self, limit: usize) -> Vec<PartitionStats> {
        (0..self.entries.len())
            .map(|i| {
                let entry = &self.entries[i];
                PartitionStats {
                    name: entry.name.clone(),
                    share: entry.share,
                    guaranteed: self.guaranteed(Partition(i), limit),
                    in_flight: self.in_flight(Partition(i)),
                }
            })
            .collect()
    }
}
