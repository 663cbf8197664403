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
}

impl Rejected {
    pub(super) fn new(reason: Reason, limit: usize, waited: Duration) -> Self {
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

    /// The limit in force when it was refused.
    pub fn limit(&self) -> usize {
        self.limit
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
