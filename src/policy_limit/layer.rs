use tower_layer::Layer;

use super::PolicyLimit;
use crate::{Limiter, Policy};

/// Applies a shared limit with an overload [`Policy`] to every service it
/// wraps. Build it with
/// [`ConcurrencyLimitLayer::with_policy`](crate::ConcurrencyLimitLayer::with_policy)
/// or [`PolicyLimitLayer::new`].
#[derive(Debug, Clone)]
pub struct PolicyLimitLayer {
    limiter: Limiter,
    policy: Policy,
}

impl PolicyLimitLayer {
    /// A layer on `limiter` that admits under `policy`.
    pub fn new(limiter: Limiter, policy: Policy) -> Self {
        Self { limiter, policy }
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

impl<S> Layer<S> for PolicyLimitLayer {
    type Service = PolicyLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PolicyLimit::new(inner, self.limiter.clone(), self.policy)
    }
}
