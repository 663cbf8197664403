use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http::{Request, Response, StatusCode};
use pin_project_lite::pin_project;
use tower_service::Service;

use super::body::{Held, Trailers};
use super::classify::{hold_for, retry_after};
use super::keyed::KeyPermit;
use super::layer::Config;
use super::{grpc, Admission, HttpClassifier, Release, ResponseBody};
use crate::adaptive::{Classify, Outcome};
use crate::admit_call::AdmitCall;
use crate::{Permit, Rejected};

pin_project! {
    /// The response future of [`HttpLimit`](super::HttpLimit): waits for
    /// admission under the layer's policy, then runs the request. A refused
    /// request resolves to the layer's rejection response, never an error.
    ///
    /// For an adaptive limiter, the response is classified and recorded
    /// when its head is ready: the round-trip time is the upstream's (or
    /// the handler's) time to answer, not how fast the client reads the
    /// body, while the permit is still held until the body ends. A gRPC
    /// response whose status comes in its trailers is recorded when they
    /// arrive (see [`HttpClassifier`]).
    pub struct ResponseFuture<S, Req, C = HttpClassifier>
    where
        S: Service<Req>,
    {
        #[pin]
        pub(super) inner: AdmitCall<S, Req>,
        pub(super) key: Option<KeyPermit>,
        pub(super) config: Arc<Config>,
        pub(super) classifier: C,
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

impl<S, ReqBody, C, ResBody> Future for ResponseFuture<S, Request<ReqBody>, C>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    C: Classify<Result<Response<ResBody>, S::Error>>,
{
    type Output = Result<Response<ResponseBody<ResBody>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let config = &**this.config;
        let admitted = ready!(this
            .inner
            .as_mut()
            .poll_admit(cx, |request, permit, waited| {
                if config.admission_record {
                    Admission::stamp(&config.limiter, request, permit, waited)
                }
            }));
        // Only a refusal needs to know whether the request was gRPC.
        let grpc = admitted.is_err()
            && this
                .inner
                .request()
                .is_some_and(|request| grpc::is_grpc(request.headers()));
        Poll::Ready(settle(config, this.classifier, this.key, grpc, admitted))
    }
}

/// What a request that ran came to (see `AdmitCall`), its response head
/// already an `http::Response`.
pub(super) type Ran<B, E> = (
    Result<Response<B>, E>,
    Option<Permit>,
    Option<tokio::time::Instant>,
);

/// Turns an admission's end into the answer: a refusal's response, or the
/// inner response classified, its `Retry-After` or gRPC pushback honoured,
/// and its body holding the permit (and the key) until it ends.
pub(super) fn settle<B, E, C>(
    config: &Config,
    classifier: &C,
    key: &mut Option<KeyPermit>,
    grpc_request: bool,
    admitted: Result<Ran<B, E>, Rejected>,
) -> Result<Response<ResponseBody<B>>, E>
where
    C: Classify<Result<Response<B>, E>>,
{
    let (outcome, mut permit, admitted_at) = match admitted {
        Ok(ran) => ran,
        Err(rejected) => {
            return Ok(config
                .rejection
                .respond(rejected, &config.limiter, grpc_request))
        }
    };
    let wants_outcome = permit.as_ref().is_some_and(Permit::wants_outcome);
    let body_end = config.release == Release::BodyEnd && permit.is_some();
    // A gRPC response whose status comes in its trailers, if anything is
    // to be read from them.
    let grpc_trailers = body_end
        && (wants_outcome || config.honor_retry_after.is_some())
        && matches!(&outcome, Ok(response) if response.status() == StatusCode::OK
            && grpc::is_grpc(response.headers())
            && grpc::status(response.headers()).is_none());
    let mut trailers = None;
    if let Some(permit) = permit.as_mut().filter(|_| wants_outcome) {
        let head = if config.classify_by_status {
            HttpClassifier.classify(&outcome)
        } else {
            classifier.classify(&outcome)
        };
        if grpc_trailers && head == Outcome::Success {
            trailers = Some(Trailers {
                classify: true,
                pushback: None,
            });
        } else {
            permit.record(head);
        }
    }
    if let (Some(max), Ok(response)) = (config.honor_retry_after, &outcome) {
        if let Some(wait) = retry_after(response.status(), response.headers(), max) {
            hold_for(&config.limiter, wait);
        } else if grpc_trailers {
            trailers
                .get_or_insert(Trailers {
                    classify: false,
                    pushback: None,
                })
                .pushback = Some((config.limiter.clone(), max));
        }
    }
    let held =
        permit.map(|permit| Held::new(permit, key.take(), admitted_at, trailers.map(Box::new)));
    let held = match config.release {
        Release::BodyEnd => held,
        Release::Head => None,
    };
    outcome.map(|response| response.map(|body| ResponseBody::admitted(body, held)))
}

impl<S, Req, C> std::fmt::Debug for ResponseFuture<S, Req, C>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
