use std::fmt;
use std::time::Duration;

/// A request refused by a [`Policy`](crate::Policy) instead of admitted.
///
/// As an error it converts into `tower::BoxError` and can be recognised
/// with `downcast_ref::<Rejected>()`, like tower's `Overloaded`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    reason: Reason,
    limit: usize,
    waited: Duration,
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reason {
    /// Every permit was taken and the policy does not queue.
    Full,
    /// Every permit was taken and the queue was full too.
    QueueFull,
    /// The request waited in the queue for as long as the policy allows.
    TimedOut,
    /// Admissions are held, as an upstream asked with `Retry-After` (see
    /// [`Limiter::hold_until`](crate::Limiter::hold_until)), and the policy
    /// does not queue.
    Held,
    /// The request's key (client, tenant, API key) has as many requests in
    /// flight as a key may; [`limit`](Rejected::limit) is that per-key limit.
    KeyFull,
    /// As many distinct keys have requests in flight as are tracked;
    /// [`limit`](Rejected::limit) is that number of keys.
    TooManyKeys,
}

impl Rejected {
    pub(crate) fn new(reason: Reason, limit: usize, waited: Duration) -> Self {
        Self {
            reason,
            limit,
            waited,
        }
    }

    /// Why the request was refused.
    pub fn reason(&self) -> Reason {
        self.reason
    }

    /// The limit in force when it was refused: the concurrency limit, or
    /// for [`Reason::KeyFull`] the per-key limit, or for
    /// [`Reason::TooManyKeys`] the number of keys tracked.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Whether the request's own key was full, rather than the service.
    pub fn is_per_key(&self) -> bool {
        self.reason == Reason::KeyFull
    }

    /// How long it waited before it was refused (zero unless timed out).
    pub fn waited(&self) -> Duration {
        self.waited
    }
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.reason {
            Reason::Full => write!(f, "concurrency limit of {} reached", self.limit),
            Reason::QueueFull => write!(
                f,
                "concurrency limit of {} reached and its queue is full",
                self.limit
            ),
            Reason::KeyFull => write!(
                f,
                "too many requests in flight for this client: at most {} at once",
                self.limit
            ),
            Reason::TooManyKeys => write!(
                f,
                "too many clients have requests in flight (at most {})",
                self.limit
            ),
            Reason::Held => write!(
                f,
                "admissions under a concurrency limit of {} are held: the upstream asked to retry later",
                self.limit
            ),
            Reason::TimedOut => write!(
                f,
                "waited {} ms for a permit under a concurrency limit of {} and gave up",
                self.waited.as_millis(),
                self.limit
            ),
        }
    }
}

impl std::error::Error for Rejected {}
