//! A limiter's metric handles (the `metrics` feature): registered once per
//! limiter with the recorder installed then, and updated at each event
//! without looking anything up. The names are documented in
//! [`crate::observe`].

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, SharedString, Unit};

use super::observe::reason_label;
use super::partition::Partition;
use super::shared::Shared;
use super::Reason;

const LIMIT: &str = "tower_concurrency_limit";
const IN_FLIGHT: &str = "tower_concurrency_in_flight";
const WAITING: &str = "tower_concurrency_waiting";
const PARTITION_IN_FLIGHT: &str = "tower_concurrency_partition_in_flight";
const PARTITION_GUARANTEED: &str = "tower_concurrency_partition_guaranteed";
const ADMITTED: &str = "tower_concurrency_admitted_total";
const REJECTED: &str = "tower_concurrency_rejected_total";
const BYPASSED: &str = "tower_concurrency_bypassed_total";
const WAIT: &str = "tower_concurrency_wait_seconds";

/// Every reason a request is refused for, in the order of [`reason_index`].
const REASONS: [Reason; 6] = [
    Reason::Full,
    Reason::QueueFull,
    Reason::TimedOut,
    Reason::Held,
    Reason::KeyFull,
    Reason::TooManyKeys,
];

fn reason_index(reason: Reason) -> usize {
    match reason {
        Reason::Full => 0,
        Reason::QueueFull => 1,
        Reason::TimedOut => 2,
        Reason::Held => 3,
        Reason::KeyFull => 4,
        Reason::TooManyKeys => 5,
    }
}

/// The handles of one limiter.
pub(super) struct Metrics {
    name: SharedString,
    limit: Gauge,
    in_flight: Gauge,
    waiting: Gauge,
    admitted: Counter,
    rejected: [Counter; REASONS.len()],
    bypassed: Counter,
    wait: Histogram,
    /// One pair per partition, made when the limiter is partitioned.
    partitions: OnceLock<Box<[PartitionGauges]>>,
}

struct PartitionGauges {
    in_flight: Gauge,
    guaranteed: Gauge,
}

impl Metrics {
    /// Registers the handles of the limiter `name` with the recorder in
    /// force, and sets the gauges that are not counts of events: the limit
    /// and, if partitioned, the guarantees. Nothing is in flight or waiting
    /// yet (the first permit or queue place registers), so those gauges
    /// start from zero and move by increments.
    pub(super) fn register(name: &str, shared: &Shared) -> Self {
        describe();
        let name = SharedString::from(name.to_owned());
        let labels = [("limiter", name.clone())];
        let rejected = REASONS.map(|reason| {
            let labels = [
                ("limiter", name.clone()),
                ("reason", SharedString::from(reason_label(reason))),
            ];
            metrics::counter!(REJECTED, &labels)
        });
        let metrics = Self {
            limit: metrics::gauge!(LIMIT, &labels),
            in_flight: metrics::gauge!(IN_FLIGHT, &labels),
            waiting: metrics::gauge!(WAITING, &labels),
            admitted: metrics::counter!(ADMITTED, &labels),
            rejected,
            bypassed: metrics::counter!(BYPASSED, &labels),
            wait: metrics::histogram!(WAIT, &labels),
            partitions: OnceLock::new(),
            name,
        };
        metrics.limit.set(shared.limit() as f64);
        metrics.partitioned(shared);
        metrics
    }

    /// Makes the partitions' gauges, if the limiter has partitions, and
    /// sets their guarantees at the current limit.
    pub(super) fn partitioned(&self, shared: &Shared) {
        let Some(partitions) = shared.partitions.get() else {
            return;
        };
        let stats = partitions.all_stats(shared.limit());
        let gauges = self.partitions.get_or_init(|| {
            stats
                .iter()
                .map(|stats| {
                    let labels = [
                        ("limiter", self.name.clone()),
                        ("partition", SharedString::from(stats.name.clone())),
                    ];
                    PartitionGauges {
                        in_flight: metrics::gauge!(PARTITION_IN_FLIGHT, &labels),
                        guaranteed: metrics::gauge!(PARTITION_GUARANTEED, &labels),
                    }
                })
                .collect()
        });
        for (gauges, stats) in gauges.iter().zip(&stats) {
            gauges.guaranteed.set(stats.guaranteed as f64);
        }
    }

    pub(super) fn admitted(&self) {
        self.admitted.increment(1);
    }

    pub(super) fn admitted_after(&self, waited: Duration) {
        self.admitted.increment(1);
        self.wait.record(waited);
    }

    pub(super) fn rejected(&self, reason: Reason) {
        self.rejected[reason_index(reason)].increment(1);
    }

    pub(super) fn bypassed(&self) {
        self.bypassed.increment(1);
    }

    pub(super) fn permit_out(&self) {
        self.in_flight.increment(1.0);
    }

    pub(super) fn permit_back(&self) {
        self.in_flight.decrement(1.0);
    }

    pub(super) fn queued(&self) {
        self.waiting.increment(1.0);
    }

    pub(super) fn unqueued(&self) {
        self.waiting.decrement(1.0);
    }

    pub(super) fn joined(&self, partition: Partition) {
        if let Some(gauges) = self.partition(partition) {
            gauges.in_flight.increment(1.0);
        }
    }

    pub(super) fn left(&self, partition: Partition) {
        if let Some(gauges) = self.partition(partition) {
            gauges.in_flight.decrement(1.0);
        }
    }

    fn partition(&self, partition: Partition) -> Option<&PartitionGauges> {
        self.partitions.get()?.get(partition.index())
    }

    /// The limit is now `new`: its gauge and the guarantees that follow it.
    pub(super) fn limit_set(&self, new: usize, shared: &Shared) {
        self.limit.set(new as f64);
        if let (Some(gauges), Some(partitions)) = (self.partitions.get(), shared.partitions.get()) {
            for (gauges, stats) in gauges.iter().zip(partitions.all_stats(new)) {
                gauges.guaranteed.set(stats.guaranteed as f64);
            }
        }
    }
}

/// Describes every metric to the recorder (units and help texts).
fn describe() {
    metrics::describe_gauge!(LIMIT, Unit::Count, "The concurrency limit in force.");
    metrics::describe_gauge!(
        IN_FLIGHT,
        Unit::Count,
        "Permits held now: requests in flight."
    );
    metrics::describe_gauge!(WAITING, Unit::Count, "Requests waiting for a permit now.");
    metrics::describe_gauge!(
        PARTITION_IN_FLIGHT,
        Unit::Count,
        "Permits a partition holds now."
    );
    metrics::describe_gauge!(
        PARTITION_GUARANTEED,
        Unit::Count,
        "Permits guaranteed to a partition at the current limit."
    );
    metrics::describe_counter!(
        ADMITTED,
        Unit::Count,
        "Requests admitted: given a permit, at once or after waiting."
    );
    metrics::describe_counter!(REJECTED, Unit::Count, "Requests refused, by reason.");
    metrics::describe_counter!(
        BYPASSED,
        Unit::Count,
        "Requests that skipped the limit through a bypass rule."
    );
    metrics::describe_histogram!(
        WAIT,
        Unit::Seconds,
        "Time a request waited for its permit, for requests admitted after waiting."
    );
}
