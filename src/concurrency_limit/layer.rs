use tower_layer::Layer;

use super::ConcurrencyLimit;
use crate::{InvalidLimit, Limiter, Policy, PolicyLimitLayer};

/// Applies one shared concurrency limit to every service it wraps.
///
/// The layer holds a [`Limiter`] handle and nothing else. Every service it
/// builds, and every clone of those, draws from that one limiter: applied
/// per route by axum's `Router::layer`, it still limits the whole app.
#[derive(Debug, Clone)]
pub struct ConcurrencyLimitLayer {
    limiter: Limiter,
}

impl ConcurrencyLimitLayer {
    /// A layer with a limit of `max` requests in flight.
    ///
    /// # Panics
    ///
    /// If `max` is 0 or above [`InvalidLimit::MAX`], with a message naming
    /// the value; [`try_new`](Self::try_new) returns the error instead.
    #[track_caller]
    pub fn new(max: usize) -> Self {
        Self::from_limiter(Limiter::new(max))
    }

    /// A layer with a limit of `max`, or why `max` cannot be one.
    pub fn try_new(max: usize) -> Result<Self, InvalidLimit> {
        Limiter::try_new(max).map(Self::from_limiter)
    }

    /// A layer on an existing limiter, for example one that other layers
    /// or a background task also hold.
    pub fn from_limiter(limiter: Limiter) -> Self {
        Self { limiter }
    }

    /// The same limit, admitting under `policy` instead of only waiting:
    /// refused requests fail with [`Rejected`](crate::Rejected). See
    /// [`policy_limit`](crate::policy_limit).
    pub fn with_policy(self, policy: Policy) -> PolicyLimitLayer {
        PolicyLimitLayer::new(self.limiter, policy)
    }

    /// The same limit for HTTP services: permits held until the response
    /// body ends, and a policy's refusals answered with a response. See
    /// [`http`](crate::http).
    #[cfg(feature = "http")]
    pub fn http(self) -> crate::http::HttpLimitLayer {
        crate::http::HttpLimitLayer::from_limiter(self.limiter)
    }

    /// The limiter every service from this layer shares: read the limit,
    /// in-flight and waiting counts, or move the limit at run time.
    pub fn limiter(&self) -> &Limiter {
        &self.limiter
    }
}

impl<S> Layer<S> for ConcurrencyLimitLayer {
    type Service = ConcurrencyLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ConcurrencyLimit::from_limiter(inner, self.limiter.clone())
    }
}
