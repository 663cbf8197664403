use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;
use tower_service::Service;

use crate::adaptive::{Classify, DefaultClassifier};
use crate::admit_call::AdmitCall;
use crate::{BoxError, Permit};

pin_project! {
    /// The response future of [`PolicyLimit`](super::PolicyLimit): waits
    /// for admission, then runs the request holding its permit, which is
    /// given back when the response is ready or the future is dropped. For
    /// an adaptive limiter, the classified result is recorded first.
    pub struct ResponseFuture<S, Req, C = DefaultClassifier>
    where
        S: Service<Req>,
    {
        #[pin]
        inner: AdmitCall<S, Req>,
        classifier: C,
    }
}

impl<S, Req, C> ResponseFuture<S, Req, C>
where
    S: Service<Req>,
{
    pub(super) fn new(inner: AdmitCall<S, Req>, classifier: C) -> Self {
        Self { inner, classifier }
    }
}

impl<S, Req, C> Future for ResponseFuture<S, Req, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<Result<S::Response, S::Error>>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let (outcome, permit, _) = ready!(this.inner.poll(cx))?;
        if let Some(mut permit) = permit.filter(Permit::wants_outcome) {
            permit.record(this.classifier.classify(&outcome));
        }
        Poll::Ready(outcome.map_err(Into::into))
    }
}

impl<S, Req, C> std::fmt::Debug for ResponseFuture<S, Req, C>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
