use std::task::{ready, Context, Poll};

use tower_service::Service;

use super::ResponseFuture;
use crate::adaptive::{Classify, DefaultClassifier};
use crate::limiter::PollPermit;
use crate::{InvalidLimit, Limiter, Permit};

/// Holds a request to the limit of its [`Limiter`] until its response
/// future completes.
///
/// `poll_ready` first takes a permit (waiting in line if none is free),
/// then asks the inner service; `call` moves the permit into the
/// [`ResponseFuture`]. See the [module docs](crate::concurrency_limit).
///
/// `C` classifies responses for an adaptive limiter; see
/// [`ConcurrencyLimitLayer::classifier`](super::ConcurrencyLimitLayer::classifier).
#[derive(Debug)]
pub struct ConcurrencyLimit<S, C = DefaultClassifier> {
    inner: S,
    limiter: Limiter,
    permit: Option<Permit>,
    wait: PollPermit,
    classifier: C,
}

impl<S> ConcurrencyLimit<S> {
    /// Wraps `inner` in a new limit of `max` requests in flight, of its own.
    ///
    /// # Panics
    ///
    /// If `max` is 0 or above [`InvalidLimit::MAX`], with a message naming
    /// the value; [`try_new`](Self::try_new) returns the error instead.
    #[track_caller]
    pub fn new(inner: S, max: usize) -> Self {
        Self::from_limiter(inner, Limiter::new(max))
    }

    /// Wraps `inner` in a new limit of `max`, or says why `max` cannot be one.
    pub fn try_new(inner: S, max: usize) -> Result<Self, InvalidLimit> {
        Limiter::try_new(max).map(|limiter| Self::from_limiter(inner, limiter))
    }

    /// Wraps `inner` in an existing, possibly shared, limit.
    pub fn from_limiter(inner: S, limiter: Limiter) -> Self {
        Self {
            inner,
            limiter,
            permit: None,
            wait: PollPermit::default(),
            classifier: DefaultClassifier,
        }
    }
}

impl<S, C> ConcurrencyLimit<S, C> {
    /// Decides what each response tells an adaptive limiter; see
    /// [`ConcurrencyLimitLayer::classifier`](super::ConcurrencyLimitLayer::classifier).
    #[must_use = "a builder method returns the changed value and changes nothing in place"]
    pub fn classifier<C2>(self, classifier: C2) -> ConcurrencyLimit<S, C2> {
        ConcurrencyLimit {
            inner: self.inner,
            limiter: self.limiter,
            permit: self.permit,
            wait: self.wait,
            classifier,
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

    /// The inner service; a permit this service had reserved is given back.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, C: Clone> Clone for ConcurrencyLimit<S, C> {
    /// A clone shares the limit but not a permit reserved by the original.
    fn clone(&self) -> Self {
        ConcurrencyLimit::from_limiter(self.inner.clone(), self.limiter.clone())
            .classifier(self.classifier.clone())
    }
}

impl<S, C, Request> Service<Request> for ConcurrencyLimit<S, C>
where
    S: Service<Request>,
    C: Classify<Result<S::Response, S::Error>> + Clone,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.permit.is_none() {
            self.permit = Some(ready!(self.wait.poll_acquire(&self.limiter, cx)));
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let permit = self.permit.take().expect(
            "ConcurrencyLimit::call without a reserved permit: `poll_ready` must return \
             `Poll::Ready(Ok(()))` before each `call` (use `ServiceExt::ready` or `oneshot`)",
        );
        ResponseFuture::new(self.inner.call(request), permit, self.classifier.clone())
    }
}
