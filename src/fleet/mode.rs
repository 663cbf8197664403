//! What a process does while the store cannot be reached.

/// What a process admits once its lease can no longer be trusted because
/// the store (Redis) does not answer: see the [module docs](super#faults-and-their-bounds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Use the lease while it is valid, then a local share of the limit:
    /// `max(1, limit / sessions last seen)`. The default.
    #[default]
    LocalShare,
    /// Use the lease while it is valid, then admit without a limit (what
    /// Stripe's and Envoy's rate limiters do).
    FailOpen,
    /// Use the lease while it is valid, then admit nothing: requests queue
    /// within their policy's timeout, or are refused.
    FailClosed,
}

/// Where a fleet's process stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Leasing permits from the store.
    Leasing,
    /// The store lost its data and relearns what live processes hold: no
    /// new grants for one lease TTL.
    Learning,
    /// The store does not answer and the lease expired: the [`Mode`] is in
    /// force.
    Degraded,
    /// Closed: nothing is admitted any more.
    Closed,
}
