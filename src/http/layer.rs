use std::sync::Arc;
use std::time::Duration;

use tower_layer::Layer;

use super::{HttpClassifier, HttpLimit, Rejection, Release};
use crate::{InvalidLimit, Limiter, Policy};

/// Applies one shared limit to HTTP services: permits held until the
/// response body ends, overload answered with a response. See the
/// [module docs](crate::http).
///
/// `C` classifies responses for an adaptive limiter; the default,
/// [`HttpClassifier`], goes by status code.
#[derive(Debug, Clone)]
pub struct HttpLimitLayer<C = HttpClassifier> {
    limiter: Limiter,
    config: Config,
    classifier: C,
}

/// What every service of one layer shares besides the limiter.
#[derive(Debug, Clone)]
pub(super) struct Config {
    pub(super) policy: Policy,
    pub(super) release: Release,
    pub(super) rejection: Rejection,
    pub(super) honor_retry_after: Option<Duration>,
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
                honor_retry_after: None,
            },
            classifier: HttpClassifier,
        }
    }
}

impl<C> HttpLimitLayer<C> {
    /// Decides what each response tells an adaptive limiter (see
    /// [`Classify`](crate::adaptive::Classify)); the default is
    /// [`HttpClassifier`].
    pub fn classifier<C2>(self, classifier: C2) -> HttpLimitLayer<C2> {
        HttpLimitLayer {
            limiter: self.limiter,
            config: self.config,
            classifier,
        }
    }

    /// For clients: when the upstream answers `503` or `429` with a
    /// `Retry-After` (seconds or a date), admit no new request for that long,
    /// but at most `max` (see [`Limiter::hold_until`]). Requests in flight
    /// go on; queued ones wait out the hold within their policy's timeout,
    /// and a policy that does not queue refuses them with
    /// [`Reason::Held`](crate::Reason::Held). Off by default: on a server,
    /// one handler's `503` would hold the whole app.
    pub fn honor_retry_after(mut self, max: Duration) -> Self {
        self.config.honor_retry_after = Some(max);
        self
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

impl<S, C: Clone> Layer<S> for HttpLimitLayer<C> {
    type Service = HttpLimit<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        let config = Arc::new(self.config.clone());
        HttpLimit::new(inner, self.limiter.clone(), config, self.classifier.clone())
    }
}
