use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http::Response;
use pin_project_lite::pin_project;
use tower_service::Service;

use super::body::Held;
use super::classify::retry_after;
use super::keyed::KeyPermit;
use super::layer::Config;
use super::{HttpClassifier, Release, ResponseBody};
use crate::adaptive::Classify;
use crate::admit_call::AdmitCall;

pin_project! {
    /// The response future of [`HttpLimit`](super::HttpLimit): waits for
    /// admission under the layer's policy, then runs the request. A refused
    /// request resolves to the layer's rejection response, never an error.
    ///
    /// For an adaptive limiter, the response is classified and recorded
    /// when its head is ready: the round-trip time is the upstream's (or
    /// the handler's) time to answer, not how fast the client reads the
    /// body, while the permit is still held until the body ends.
    pub struct ResponseFuture<S, Req, C = HttpClassifier>
    where
        S: Service<Req>,
    {
        #[pin]
        inner: AdmitCall<S, Req>,
        key: Option<KeyPermit>,
        config: Arc<Config>,
        classifier: C,
    }
}

impl<S, Req, C> ResponseFuture<S, Req, C>
where
    S: Service<Req>,
{
    pub(super) fn new(
        inner: AdmitCall<S, Req>,
        key: Option<KeyPermit>,
        config: Arc<Config>,
        classifier: C,
    ) -> Self {
        Self {
            inner,
            key,
            config,
            classifier,
        }
    }
}

impl<S, Req, C, ResBody> Future for ResponseFuture<S, Req, C>
where
    S: Service<Req, Response = Response<ResBody>>,
    C: Classify<Result<Response<ResBody>, S::Error>>,
{
    type Output = Result<Response<ResponseBody<ResBody>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let (outcome, mut permit, admitted_at) = match ready!(this.inner.poll(cx)) {
            Ok(admitted) => admitted,
            Err(rejected) => {
                return Poll::Ready(Ok(this
                    .config
                    .rejection
                    .respond(rejected, &this.config.limiter)))
            }
        };
        if let Some(permit) = permit.as_mut().filter(|p| p.wants_outcome()) {
            permit.record(this.classifier.classify(&outcome));
        }
        if let (Some(max), Ok(response)) = (this.config.honor_retry_after, &outcome) {
            if let Some(wait) = retry_after(response.status(), response.headers(), max) {
                this.config
                    .limiter
                    .hold_until(tokio::time::Instant::now() + wait);
            }
        }
        let held = permit.map(|permit| Held::new(permit, this.key.take(), admitted_at));
        let held = match this.config.release {
            Release::BodyEnd => held,
            Release::Head => None,
        };
        Poll::Ready(outcome.map(|response| response.map(|body| ResponseBody::admitted(body, held))))
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
