use tower_layer::Layer;

use super::PolicyLimit;
use crate::adaptive::DefaultClassifier;
use crate::{Limiter, Policy};

/// Applies a shared limit with an overload [`Policy`] to every service it
/// wraps. Build it with
/// [`ConcurrencyLimitLayer::with_policy`](crate::ConcurrencyLimitLayer::with_policy)
/// or [`PolicyLimitLayer::new`].
#[derive(Debug, Clone)]
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

    /// The policy requests are admitted under.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }
}

impl<S, C: Clone> Layer<S> for PolicyLimitLayer<C> {
    type Service = PolicyLimit<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        PolicyLimit::new(inner, self.limiter.clone(), self.policy)
            .classifier(self.classifier.clone())
    }
}
