use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http::Response;
use pin_project_lite::pin_project;
use tower_service::Service;

use super::body::Held;
use super::layer::Config;
use super::{Release, ResponseBody};
use crate::admit_call::AdmitCall;
use crate::Limiter;

pin_project! {
    /// The response future of [`HttpLimit`](super::HttpLimit): waits for
    /// admission under the layer's policy, then runs the request. A refused
    /// request resolves to the layer's rejection response, never an error.
    pub struct ResponseFuture<S, Req>
    where
        S: Service<Req>,
    {
        #[pin]
        inner: AdmitCall<S, Req>,
        limiter: Limiter,
        config: Arc<Config>,
    }
}

impl<S, Req> ResponseFuture<S, Req>
where
    S: Service<Req>,
{
    pub(super) fn new(inner: AdmitCall<S, Req>, limiter: Limiter, config: Arc<Config>) -> Self {
        Self {
            inner,
            limiter,
            config,
        }
    }
}

impl<S, Req, ResBody> Future for ResponseFuture<S, Req>
where
    S: Service<Req, Response = Response<ResBody>>,
{
    type Output = Result<Response<ResponseBody<ResBody>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let (outcome, permit, admitted_at) = match ready!(this.inner.poll(cx)) {
            Ok(admitted) => admitted,
            Err(rejected) => {
                return Poll::Ready(Ok(this.config.rejection.respond(rejected, this.limiter)))
            }
        };
        let held = Held::new(permit, admitted_at);
        let held = match this.config.release {
            Release::BodyEnd => Some(held),
            Release::Head => None,
        };
        Poll::Ready(outcome.map(|response| response.map(|body| ResponseBody::admitted(body, held))))
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
