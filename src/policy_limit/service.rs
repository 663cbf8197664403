use std::task::{Context, Poll};

use tower_service::Service;

use super::ResponseFuture;
use crate::adaptive::{Classify, DefaultClassifier};
use crate::admit_call::AdmitCall;
use crate::{BoxError, Limiter, Policy};

/// A concurrency limit that admits under a [`Policy`] and fails refused
/// requests with [`Rejected`](crate::Rejected). See the
/// [module docs](crate::policy_limit).
#[derive(Debug, Clone)]
pub struct PolicyLimit<S, C = DefaultClassifier> {
    inner: S,
    limiter: Limiter,
    policy: Policy,
    classifier: C,
}

impl<S> PolicyLimit<S> {
    /// Wraps `inner` in `limiter`, admitting under `policy`.
    pub fn new(inner: S, limiter: Limiter, policy: Policy) -> Self {
        Self {
            inner,
            limiter,
            policy,
            classifier: DefaultClassifier,
        }
    }
}

impl<S, C> PolicyLimit<S, C> {
    /// Decides what each inner result tells an adaptive limiter; see
    /// [`PolicyLimitLayer::classifier`](super::PolicyLimitLayer::classifier).
    #[must_use]
    pub fn classifier<C2>(self, classifier: C2) -> PolicyLimit<S, C2> {
        PolicyLimit {
            inner: self.inner,
            limiter: self.limiter,
            policy: self.policy,
            classifier,
        }
    }

    /// The limiter this service draws from.
    pub fn limiter(&self) -> &Limiter {
        &self.limiter
    }

    /// The policy requests are admitted under.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, C, Request> Service<Request> for PolicyLimit<S, C>
where
    S: Service<Request> + Clone,
    S::Error: Into<BoxError>,
    C: Classify<Result<S::Response, S::Error>> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Request, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let admit = Some(self.limiter.acquire(&self.policy));
        let admit = AdmitCall::start(admit, &mut self.inner, request, false);
        ResponseFuture::new(admit, self.classifier.clone())
    }
}
