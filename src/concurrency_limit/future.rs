use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;

use crate::adaptive::{Classify, DefaultClassifier};
use crate::Permit;

pin_project! {
    /// The response future of [`ConcurrencyLimit`], holding the request's
    /// permit.
    ///
    /// The permit is given back as soon as the inner future completes,
    /// and otherwise when this future is dropped (cancelled) or unwinds
    /// from a panic in the inner future. For an adaptive limiter, the
    /// classified output is recorded as a sample first.
    ///
    /// [`ConcurrencyLimit`]: super::ConcurrencyLimit
    #[derive(Debug)]
    pub struct ResponseFuture<F, C = DefaultClassifier> {
        #[pin]
        inner: F,
        permit: Option<Permit>,
        classifier: C,
    }
}

impl<F, C> ResponseFuture<F, C> {
    pub(super) fn new(inner: F, permit: Permit, classifier: C) -> Self {
        Self {
            inner,
            permit: Some(permit),
            classifier,
        }
    }
}

impl<F, C> Future for ResponseFuture<F, C>
where
    F: Future,
    C: Classify<F::Output>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let output = ready!(this.inner.poll(cx));
        if let Some(mut permit) = this.permit.take() {
            if permit.wants_outcome() {
                permit.record(this.classifier.classify(&output));
            }
        }
        Poll::Ready(output)
    }
}
