//! A fleet's figures, as this process last saw them.

use super::{Mode, Status};

/// A fleet's figures: see [`Fleet::stats`](super::Fleet::stats). The
/// fleet-wide ones are as of this process's last call to the store (at
/// least every third of a lease TTL while it is healthy).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FleetStats {
    /// The fleet-wide limit.
    pub limit: usize,
    /// The limit this process was configured with; it differs from
    /// [`limit`](Self::limit) when another process (or
    /// [`Fleet::set_limit`](super::Fleet::set_limit)) set the fleet's limit
    /// first: the fleet's limit wins.
    pub configured_limit: usize,
    /// Permits this process leased from the fleet.
    pub leased: usize,
    /// Permits this process's limiter may hand out now (its
    /// [`Limiter::limit`](crate::Limiter::limit)).
    pub capacity: usize,
    /// Permits leased fleet-wide.
    pub held: usize,
    /// Processes (sessions) alive.
    pub sessions: usize,
    /// Sessions waiting for permits.
    pub queued: usize,
    /// Store calls that failed or timed out.
    pub store_errors: u64,
    /// The configured mode for store outages.
    pub mode: Mode,
    /// Where this process stands.
    pub status: Status,
}
