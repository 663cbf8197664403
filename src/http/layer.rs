use std::sync::Arc;

use tower_layer::Layer;

use super::{HttpLimit, Rejection, Release};
use crate::{InvalidLimit, Limiter, Policy};

/// Applies one shared limit to HTTP services: permits held until the
/// response body ends, overload answered with a response. See the
/// [module docs](crate::http).
#[derive(Debug, Clone)]
pub struct HttpLimitLayer {
    limiter: Limiter,
    config: Config,
}

/// What every service of one layer shares besides the limiter.
#[derive(Debug, Clone)]
pub(super) struct Config {
    pub(super) policy: Policy,
    pub(super) release: Release,
    pub(super) rejection: Rejection,
}

impl HttpLimitLayer {
    /// A limit of `max` in flight: waits when full (see
    /// [`policy`](Self::policy)), releases when the body ends.
    ///
    /// # Panics
    ///
    /// If `max` is 0 or above [`InvalidLimit::MAX`], naming the value;
    /// [`try_new`](Self::try_new) returns the error instead.
    #[track_caller]
    pub fn new(max: usize) -> Self {
        Self::from_limiter(Limiter::new(max))
    }

    /// A limit of `max`, or why `max` cannot be one.
    pub fn try_new(max: usize) -> Result<Self, InvalidLimit> {
        Limiter::try_new(max).map(Self::from_limiter)
    }

    /// A layer on an existing, possibly shared, limiter.
    pub fn from_limiter(limiter: Limiter) -> Self {
        Self {
            limiter,
            config: Config {
                policy: Policy::wait(),
                release: Release::BodyEnd,
                rejection: Rejection::default(),
            },
        }
    }

    /// What a request does when every permit is taken: wait (the default),
    /// be refused at once, or queue a bounded time. A refused request is
    /// answered with the [`rejection`](Self::rejection) response.
    pub fn policy(mut self, policy: Policy) -> Self {
        self.config.policy = policy;
        self
    }

    /// When the permit is given back: at the end of the body (the default)
    /// or when the response head is ready.
    pub fn release(mut self, release: Release) -> Self {
        self.config.release = release;
        self
    }

    /// The response a refused request gets (default: 503, `Retry-After: 1`).
    pub fn rejection(mut self, rejection: Rejection) -> Self {
        self.config.rejection = rejection;
        self
    }

    /// The limiter every service from this layer shares.
    pub fn limiter(&self) -> &Limiter {
        &self.limiter
    }
}

impl<S> Layer<S> for HttpLimitLayer {
    type Service = HttpLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        HttpLimit::new(inner, self.limiter.clone(), Arc::new(self.config.clone()))
    }
}
