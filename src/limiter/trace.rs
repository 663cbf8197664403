//! A limiter's `tracing` events (the `tracing` feature), all with the
//! target `tower_concurrency` and the limiter's name in the field
//! `limiter`. Fields are computed only when a subscriber wants the event.
//! The events are documented in [`crate::observe`].

use std::time::Duration;

use super::observe::{reason_label, Cause};
use super::shared::Shared;
use super::Rejected;

/// Admitted without waiting: the hot path, so `trace` only.
pub(super) fn admitted(shared: &Shared) {
    tracing::trace!(
        target: "tower_concurrency",
        limiter = shared.reported_name(),
        in_flight = shared.in_flight(),
        limit = shared.limit(),
        "permit acquired without waiting"
    );
}

/// Admitted after waiting `waited`.
pub(super) fn admitted_after(shared: &Shared, waited: Duration) {
    tracing::debug!(
        target: "tower_concurrency",
        limiter = shared.reported_name(),
        waited = ?waited,
        in_flight = shared.in_flight(),
        waiting = shared.waiting(),
        limit = shared.limit(),
        "permit acquired after waiting"
    );
}

/// Refused; `scope` says whether the service or the request's key was full.
pub(super) fn rejected(shared: &Shared, rejected: &Rejected) {
    tracing::debug!(
        target: "tower_concurrency",
        limiter = shared.reported_name(),
        reason = reason_label(rejected.reason()),
        scope = if rejected.is_per_key() { "key" } else { "service" },
        limit = rejected.limit(),
        waited = ?rejected.waited(),
        in_flight = shared.in_flight(),
        waiting = shared.waiting(),
        "request rejected"
    );
}

/// Skipped the limit through a bypass rule.
pub(super) fn bypassed(shared: &Shared) {
    tracing::trace!(
        target: "tower_concurrency",
        limiter = shared.reported_name(),
        "request bypassed the limit"
    );
}

/// The limit moved: an operator's move at `info` (even to the same value,
/// as a record of the action), an algorithm's at `debug` and only when the
/// limit changed.
pub(super) fn limit_set(shared: &Shared, old: usize, new: usize, cause: Cause) {
    match cause {
        Cause::Algorithm | Cause::Capacity if old == new => {}
        Cause::Algorithm | Cause::Capacity => tracing::debug!(
            target: "tower_concurrency",
            limiter = shared.reported_name(),
            old,
            new,
            cause = cause.as_str(),
            in_flight = shared.in_flight(),
            "concurrency limit changed"
        ),
        Cause::SetLimit | Cause::Unpin => tracing::info!(
            target: "tower_concurrency",
            limiter = shared.reported_name(),
            old,
            new,
            cause = cause.as_str(),
            in_flight = shared.in_flight(),
            "concurrency limit changed"
        ),
    }
}
