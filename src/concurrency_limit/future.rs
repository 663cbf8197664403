use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;

use crate::Permit;

pin_project! {
    /// The response future of [`ConcurrencyLimit`], holding the request's
    /// permit.
    ///
    /// The permit is given back as soon as the inner future completes,
    /// and otherwise when this future is dropped (cancelled) or unwinds
    /// from a panic in the inner future.
    ///
    /// [`ConcurrencyLimit`]: super::ConcurrencyLimit
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        permit: Option<Permit>,
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn new(inner: F, permit: Permit) -> Self {
        Self {
            inner,
            permit: Some(permit),
        }
    }
}

impl<F: Future> Future for ResponseFuture<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let output = ready!(this.inner.poll(cx));
        this.permit.take();
        Poll::Ready(output)
    }
}
