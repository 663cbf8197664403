use tower_layer::Layer;

use super::PolicyLimit;
use crate::adaptive::DefaultClassifier;
use crate::{Limiter, Policy};

/// Applies a shared limit with an overload [`Policy`] to every service it
/// wraps. Build it with
/// [`ConcurrencyLimitLayer::policy`](crate::ConcurrencyLimitLayer::policy)
/// or [`PolicyLimitLayer::new`].
#[derive(Debug, Clone)]
#[must_use = "a layer does nothing until it wraps a service"]
pub struct PolicyLimitLayer<C = DefaultClassifier> {
    limiter: Limiter,
    policy: Policy,
    classifier: C,
}

impl PolicyLimitLayer {
    /// A layer on `limiter` that admits under `policy`.
    pub fn new(limiter: Limiter, policy: Policy) -> Self {
        Self {
            limiter,
            policy,
            classifier: DefaultClassifier,
        }
    }
}

impl<C> PolicyLimitLayer<C> {
    /// Decides what each inner result tells an adaptive limiter (default:
    /// a response is success, an error overload). See
    /// [`Classify`](crate::adaptive::Classify).
    #[must_use = "a builder method returns the changed value and changes nothing in place"]
    pub fn classifier<C2>(self, classifier: C2) -> PolicyLimitLayer<C2> {
        PolicyLimitLayer {
            limiter: self.limiter,
            policy: self.policy,
            classifier,
        }
    }

    /// The limiter every service from this layer shares.
    pub fn limiter(&self) -> &Limiter {
        &self.limiter
    }

    /// Admits under `policy` instead of the one given so far.
    #[must_use = "a builder method returns the changed value and changes nothing in place"]
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }
}

impl<S, C: Clone> Layer<S> for PolicyLimitLayer<C> {
    type Service = PolicyLimit<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        PolicyLimit::new(inner, self.limiter.clone(), self.policy)
            .classifier(self.classifier.clone())
    }
}
