//! Where a limiter reports what happens to it: the hooks the rest of the
//! limiter calls, each a line at the place the event happens, and their
//! dispatch to `tracing` events ([`super::trace`]) and `metrics` handles
//! ([`super::metrics`]). With neither feature on, every hook is an empty
//! inline function and [`Stopwatch`] never reads the clock.
//!
//! The events, metric names and labels are documented in
//! [`crate::observe`].

use std::borrow::Cow;
use std::marker::PhantomData;
use std::sync::OnceLock;

#[cfg(any(feature = "tracing", feature = "metrics"))]
use tokio::time::Instant;

#[cfg(feature = "metrics")]
use super::metrics::Metrics;
use super::partition::Partition;
use super::shared::Shared;
use super::{Permit, Reason, Rejected};

/// The name a limiter reports under until it is given one.
pub(super) const DEFAULT_NAME: &str = "default";

/// What one limiter reports under: its name and, with `metrics`, its
/// metric handles, registered once.
#[derive(Default)]
pub(super) struct Observer {
    name: OnceLock<Cow<'static, str>>,
    #[cfg(feature = "metrics")]
    metrics: OnceLock<Metrics>,
}

/// Why a limit moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cause {
    /// [`Limiter::set_limit`](crate::Limiter::set_limit) or `try_set_limit`.
    SetLimit,
    /// [`Limiter::unpin`](crate::Limiter::unpin).
    Unpin,
    /// A share of a limit held elsewhere (the fleet) moved.
    Capacity,
    /// An adaptive limiter's algorithm.
    Algorithm,
}

impl Cause {
    #[cfg_attr(not(feature = "tracing"), allow(dead_code))]
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Cause::SetLimit => "set_limit",
            Cause::Unpin => "unpin",
            Cause::Capacity => "capacity",
            Cause::Algorithm => "algorithm",
        }
    }
}

/// How a refusal's reason is named in events and metric labels.
#[cfg_attr(not(any(feature = "tracing", feature = "metrics")), allow(dead_code))]
pub(super) fn reason_label(reason: Reason) -> &'static str {
    match reason {
        Reason::Full => "full",
        Reason::QueueFull => "queue_full",
        Reason::TimedOut => "timed_out",
        Reason::Held => "held",
        Reason::KeyFull => "key_full",
        Reason::TooManyKeys => "too_many_keys",
    }
}

/// When a wait began; reads the clock only when something reports waits.
#[derive(Debug, Clone, Copy)]
pub(super) struct Stopwatch {
    #[cfg(any(feature = "tracing", feature = "metrics"))]
    since: Instant,
}

impl Stopwatch {
    /// Starts now.
    #[inline]
    pub(super) fn start() -> Self {
        Self {
            #[cfg(any(feature = "tracing", feature = "metrics"))]
            since: Instant::now(),
        }
    }

    /// Started at `since`, a moment the caller read anyway.
    #[inline]
    pub(super) fn at(since: tokio::time::Instant) -> Self {
        let _ = since;
        Self {
            #[cfg(any(feature = "tracing", feature = "metrics"))]
            since,
        }
    }
}

impl Shared {
    /// This limiter's name: the one given by [`Limiter::named`](crate::Limiter::named),
    /// or `"default"`.
    pub(super) fn name(&self) -> &str {
        self.observer.name.get().map_or(DEFAULT_NAME, |name| name)
    }

    /// The name to report under, fixed from now on: reporting under one
    /// name and then another would split the limiter's figures.
    #[cfg(any(feature = "tracing", feature = "metrics"))]
    pub(super) fn reported_name(&self) -> &str {
        self.observer
            .name
            .get_or_init(|| Cow::Borrowed(DEFAULT_NAME))
    }

    /// Names this limiter unless its name is fixed already.
    pub(super) fn set_name(&self, name: Cow<'static, str>) {
        if self.observer.name.set(name).is_ok() {
            #[cfg(feature = "metrics")]
            self.metrics();
        }
    }

    /// The metric handles, registered on first use.
    #[cfg(feature = "metrics")]
    #[inline]
    fn metrics(&self) -> &Metrics {
        self.observer
            .metrics
            .get_or_init(|| Metrics::register(self.reported_name(), self))
    }

    /// A request took a free permit without waiting.
    #[inline]
    pub(super) fn on_admitted(&self) {
        #[cfg(feature = "metrics")]
        self.metrics().admitted();
        #[cfg(feature = "tracing")]
        super::trace::admitted(self);
    }

    /// A request got its permit after waiting since `since`.
    #[inline]
    pub(super) fn on_admitted_after(&self, since: Stopwatch) {
        let _ = since;
        #[cfg(any(feature = "tracing", feature = "metrics"))]
        let waited = since.since.elapsed();
        #[cfg(feature = "metrics")]
        self.metrics().admitted_after(waited);
        #[cfg(feature = "tracing")]
        super::trace::admitted_after(self, waited);
    }

    /// A queued request's wait ended: admitted, or refused for waiting
    /// too long.
    #[inline]
    pub(super) fn on_waited(&self, since: Stopwatch, outcome: &Result<Permit, Rejected>) {
        match outcome {
            Ok(_) => self.on_admitted_after(since),
            Err(rejected) => self.on_rejected(rejected),
        }
    }

    /// A request was refused.
    #[inline]
    pub(super) fn on_rejected(&self, rejected: &Rejected) {
        let _ = rejected;
        // A refusal is demand too: a fleet with nothing leased must hear of
        // requests that a rejecting policy never lets wait.
        if let Some(signal) = self.queue_signal.get() {
            signal.notify_one();
        }
        #[cfg(feature = "metrics")]
        self.metrics().rejected(rejected.reason());
        #[cfg(feature = "tracing")]
        super::trace::rejected(self, rejected);
    }

    /// A request skipped the limit through a bypass rule.
    #[inline]
    pub(super) fn on_bypassed(&self) {
        #[cfg(feature = "metrics")]
        self.metrics().bypassed();
        #[cfg(feature = "tracing")]
        super::trace::bypassed(self);
    }

    /// A permit was made: one more in flight.
    #[inline]
    pub(super) fn on_permit_out(&self) {
        #[cfg(feature = "metrics")]
        self.metrics().permit_out();
    }

    /// A permit was dropped: one fewer in flight.
    #[inline]
    pub(super) fn on_permit_back(&self) {
        #[cfg(feature = "metrics")]
        if let Some(metrics) = self.observer.metrics.get() {
            metrics.permit_back();
        }
    }

    /// A permit started counting in `partition`.
    #[inline]
    pub(super) fn on_joined(&self, partition: Partition) {
        let _ = partition;
        #[cfg(feature = "metrics")]
        self.metrics().joined(partition);
    }

    /// A permit stopped counting in `partition`.
    #[inline]
    pub(super) fn on_left(&self, partition: Partition) {
        let _ = partition;
        #[cfg(feature = "metrics")]
        if let Some(metrics) = self.observer.metrics.get() {
            metrics.left(partition);
        }
    }

    /// A caller took a place in the queue.
    #[inline]
    pub(super) fn on_queued(&self) {
        if let Some(signal) = self.queue_signal.get() {
            signal.notify_one();
        }
        #[cfg(feature = "metrics")]
        self.metrics().queued();
    }

    /// Counts a caller that does not hold a queue place in the `waiting`
    /// gauge while the guard lives.
    #[inline]
    pub(super) fn watch_queue(&self) -> QueueWatch<'_> {
        self.on_queued();
        QueueWatch {
            #[cfg(feature = "metrics")]
            shared: self,
            _shared: PhantomData,
        }
    }

    /// A caller left the queue (served, refused or gone).
    #[inline]
    pub(super) fn on_unqueued(&self) {
        #[cfg(feature = "metrics")]
        if let Some(metrics) = self.observer.metrics.get() {
            metrics.unqueued();
        }
    }

    /// The limit moved from `old` to `new` (called under the resize lock,
    /// so gauges are set in the order the limit moved).
    #[inline]
    pub(super) fn on_limit_set(&self, old: usize, new: usize, cause: Cause) {
        let _ = (old, new, cause);
        #[cfg(feature = "metrics")]
        self.metrics().limit_set(new, self);
        #[cfg(feature = "tracing")]
        super::trace::limit_set(self, old, new, cause);
    }

    /// The limiter was just partitioned.
    #[inline]
    pub(super) fn on_partitioned(&self) {
        #[cfg(feature = "metrics")]
        if let Some(metrics) = self.observer.metrics.get() {
            metrics.partitioned(self);
        }
    }
}

/// A caller counted in the `waiting` gauge; see [`Shared::watch_queue`].
pub(super) struct QueueWatch<'a> {
    #[cfg(feature = "metrics")]
    shared: &'a Shared,
    _shared: PhantomData<&'a Shared>,
}

impl Drop for QueueWatch<'_> {
    #[inline]
    fn drop(&mut self) {
        #[cfg(feature = "metrics")]
        self.shared.on_unqueued();
    }
}
