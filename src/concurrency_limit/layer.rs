use tower_layer::Layer;

use super::ConcurrencyLimit;
use crate::adaptive::DefaultClassifier;
use crate::{InvalidLimit, Limiter, Policy, PolicyLimitLayer};

/// Applies one shared concurrency limit to every service it wraps.
///
/// The layer holds a [`Limiter`] handle and nothing else. Every service it
/// builds, and every clone of those, draws from that one limiter: applied
/// per route by axum's `Router::layer`, it still limits the whole app.
///
/// `C` classifies responses for an adaptive limiter (see
/// [`classifier`](Self::classifier)); a fixed limiter never calls it.
#[derive(Debug, Clone)]
#[must_use = "a layer does nothing until it wraps a service"]
pub struct ConcurrencyLimitLayer<C = DefaultClassifier> {
    limiter: Limiter,
    classifier: C,
    /// Whether [`classifier`](Self::classifier) was called: without one,
    /// [`http`](Self::http) classifies by status code.
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    custom_classifier: bool,
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
        Self {
            limiter,
            classifier: DefaultClassifier,
            custom_classifier: false,
        }
    }
}

impl<C> ConcurrencyLimitLayer<C> {
    /// Decides what each response tells an adaptive limiter: success,
    /// overload or nothing (see [`Classify`](crate::adaptive::Classify)).
    /// The default counts a response as success and an error as overload.
    #[must_use = "a builder method returns the changed value and changes nothing in place"]
    pub fn classifier<C2>(self, classifier: C2) -> ConcurrencyLimitLayer<C2> {
        ConcurrencyLimitLayer {
            limiter: self.limiter,
            classifier,
            custom_classifier: true,
        }
    }

    /// The same limit, admitting under `policy` instead of only waiting:
    /// refused requests fail with [`Rejected`](crate::Rejected). See
    /// [`policy_limit`](crate::policy_limit).
    #[must_use = "a builder method returns the changed value and changes nothing in place"]
    pub fn policy(self, policy: Policy) -> PolicyLimitLayer<C> {
        PolicyLimitLayer::new(self.limiter, policy).classifier(self.classifier)
    }

    /// The same limit for HTTP services: permits held until the response
    /// body ends, and a policy's refusals answered with a response. See
    /// [`http_limit`](crate::http_limit).
    ///
    /// A classifier set with [`classifier`](Self::classifier) comes along;
    /// without one, the HTTP layer classifies as
    /// [`HttpClassifier`](crate::http_limit::HttpClassifier) does (by status
    /// code, and by `grpc-status` for gRPC).
    #[cfg(feature = "http")]
    #[must_use = "a builder method returns the changed value and changes nothing in place"]
    pub fn http(self) -> crate::http_limit::HttpLimitLayer<C> {
        crate::http_limit::HttpLimitLayer::from_limiter(self.limiter)
            .classifier_from_core(self.classifier, self.custom_classifier)
    }

    /// The limiter every service from this layer shares: read the limit,
    /// in-flight and waiting counts, or move the limit at run time.
    pub fn limiter(&self) -> &Limiter {
        &self.limiter
    }
}

impl<S, C: Clone> Layer<S> for ConcurrencyLimitLayer<C> {
    type Service = ConcurrencyLimit<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        ConcurrencyLimit::from_limiter(inner, self.limiter.clone())
            .classifier(self.classifier.clone())
    }
}
