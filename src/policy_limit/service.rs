use std::task::{Context, Poll};

use tower_service::Service;

use super::ResponseFuture;
use crate::admit_call::AdmitCall;
use crate::{BoxError, Limiter, Policy};

/// A concurrency limit that admits under a [`Policy`] and fails refused
/// requests with [`Rejected`](crate::Rejected). See the
/// [module docs](crate::policy_limit).
#[derive(Debug, Clone)]
pub struct PolicyLimit<S> {
    inner: S,
    limiter: Limiter,
    policy: Policy,
}

impl<S> PolicyLimit<S> {
    /// Wraps `inner` in `limiter`, admitting under `policy`.
    pub fn new(inner: S, limiter: Limiter, policy: Policy) -> Self {
        Self {
            inner,
            limiter,
            policy,
        }
    }

    /// The limiter this service draws from.
    pub fn limiter(&self) -> &Limiter {
        &self.limiter
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

impl<S, Request> Service<Request> for PolicyLimit<S>
where
    S: Service<Request> + Clone,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Request>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        ResponseFuture::new(AdmitCall::start(
            &self.limiter,
            &self.policy,
            &mut self.inner,
            request,
            false,
        ))
    }
}
