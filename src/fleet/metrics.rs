//! A fleet's figures as metrics (the `metrics` feature), labelled with the
//! fleet's name (`fleet`), updated by the lease task after every step.

use metrics::{Counter, Gauge, Unit};

use super::{FleetStats, Status};

const LIMIT: &str = "tower_concurrency_fleet_limit";
const LEASED: &str = "tower_concurrency_fleet_leased";
const HELD: &str = "tower_concurrency_fleet_held";
const SESSIONS: &str = "tower_concurrency_fleet_sessions";
const QUEUED: &str = "tower_concurrency_fleet_queued";
const DEGRADED: &str = "tower_concurrency_fleet_degraded";
const ERRORS: &str = "tower_concurrency_fleet_store_errors_total";

/// One fleet's metric handles.
pub(super) struct FleetMetrics {
    limit: Gauge,
    leased: Gauge,
    held: Gauge,
    sessions: Gauge,
    queued: Gauge,
    degraded: Gauge,
    errors: Counter,
    errors_seen: u64,
}

impl FleetMetrics {
    pub(super) fn register(name: &str) -> Self {
        metrics::describe_gauge!(LIMIT, Unit::Count, "The fleet-wide concurrency limit.");
        metrics::describe_gauge!(
            LEASED,
            Unit::Count,
            "Permits this process leased from the fleet."
        );
        metrics::describe_gauge!(HELD, Unit::Count, "Permits leased fleet-wide.");
        metrics::describe_gauge!(SESSIONS, Unit::Count, "Processes of the fleet alive.");
        metrics::describe_gauge!(QUEUED, Unit::Count, "Processes waiting for permits.");
        metrics::describe_gauge!(
            DEGRADED,
            Unit::Count,
            "1 while the store does not answer and the fallback mode is in force."
        );
        metrics::describe_counter!(ERRORS, Unit::Count, "Store calls that failed or timed out.");
        let labels = [("fleet", name.to_owned())];
        Self {
            limit: metrics::gauge!(LIMIT, &labels),
            leased: metrics::gauge!(LEASED, &labels),
            held: metrics::gauge!(HELD, &labels),
            sessions: metrics::gauge!(SESSIONS, &labels),
            queued: metrics::gauge!(QUEUED, &labels),
            degraded: metrics::gauge!(DEGRADED, &labels),
            errors: metrics::counter!(ERRORS, &labels),
            errors_seen: 0,
        }
    }

    pub(super) fn publish(&mut self, stats: &FleetStats) {
        self.limit.set(stats.limit as f64);
        self.leased.set(stats.leased as f64);
        self.held.set(stats.held as f64);
        self.sessions.set(stats.sessions as f64);
        self.queued.set(stats.queued as f64);
        self.degraded
            .set(f64::from(u8::from(stats.status == Status::Degraded)));
        self.errors
            .increment(stats.store_errors.saturating_sub(self.errors_seen));
        self.errors_seen = stats.store_errors;
    }
}
