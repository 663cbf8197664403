use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;
use tower_service::Service;

use crate::admit_call::AdmitCall;
use crate::BoxError;

pin_project! {
    /// The response future of [`PolicyLimit`](super::PolicyLimit): waits
    /// for admission, then runs the request holding its permit, which is
    /// given back when the response is ready or the future is dropped.
    pub struct ResponseFuture<S, Req>
    where
        S: Service<Req>,
    {
        #[pin]
        inner: AdmitCall<S, Req>,
    }
}

impl<S, Req> ResponseFuture<S, Req>
where
    S: Service<Req>,
{
    pub(super) fn new(inner: AdmitCall<S, Req>) -> Self {
        Self { inner }
    }
}

impl<S, Req> Future for ResponseFuture<S, Req>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let (outcome, _permit, _) = ready!(self.project().inner.poll(cx))?;
        Poll::Ready(outcome.map_err(Into::into))
    }
}

impl<S, Req> std::fmt::Debug for ResponseFuture<S, Req>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
