//! `reqwest::Client` (or any service of `reqwest::Request`) behind the HTTP
//! layer.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::{Extensions, Uri};
use reqwest::{Body, ResponseBuilderExt, Url};
use tower_service::Service;

use super::future::settle;
use super::rules::RequestHead;
use super::{grpc, HttpLimit, ResponseBody, ResponseFuture};
use crate::adaptive::Classify;

/// The HTTP layer around a `reqwest::Client`: the same permits held until
/// the response body is read or dropped, the same `Retry-After` (and gRPC
/// pushback) honoured, the same classification and refusals, with
/// `reqwest::Request` in and `reqwest::Response` out.
///
/// The classifier sees each response as an `http::Response<reqwest::Body>`
/// (so [`HttpClassifier`](super::HttpClassifier) works as it is); rules see
/// the method, the URL and the headers (a `reqwest::Request` has no
/// extensions to show). A refusal is a `reqwest::Response` too, with the
/// request's URL, the rejection's status and a
/// [`Rejected`](crate::Rejected) in its extensions.
///
/// *Needs the `reqwest` feature.*
impl<S, C> Service<reqwest::Request> for HttpLimit<S, C>
where
    S: Service<reqwest::Request, Response = reqwest::Response> + Clone,
    C: Classify<Result<http::Response<Body>, S::Error>> + Clone,
{
    type Response = reqwest::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S, reqwest::Request, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner_mut().poll_ready(cx)
    }

    fn call(&mut self, request: reqwest::Request) -> Self::Future {
        let (admit, key) = if self.config().rules.is_empty() {
            (Some(self.admit_plain()), None)
        } else {
            let uri = Uri::try_from(request.url().as_str()).unwrap_or_default();
            let extensions = Extensions::new();
            self.admission(&RequestHead {
                method: request.method(),
                uri: &uri,
                headers: request.headers(),
                extensions: &extensions,
            })
        };
        self.start(admit, key, request)
    }
}

impl<S, C> Future for ResponseFuture<S, reqwest::Request, C>
where
    S: Service<reqwest::Request, Response = reqwest::Response>,
    C: Classify<Result<http::Response<Body>, S::Error>>,
{
    type Output = Result<reqwest::Response, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let admitted = ready!(this.inner.as_mut().poll_admit(cx, |_, _, _| {}));
        let (mut url, mut grpc) = (None, false);
        let admitted = match admitted {
            Ok((outcome, permit, at)) => Ok((
                outcome.map(|response| {
                    url = Some(response.url().clone());
                    http::Response::from(response)
                }),
                permit,
                at,
            )),
            Err(rejected) => {
                if let Some(request) = this.inner.request() {
                    url = Some(request.url().clone());
                    grpc = grpc::is_grpc(request.headers());
                }
                Err(rejected)
            }
        };
        let answer = settle(this.config, this.classifier, this.key, grpc, admitted)?;
        Poll::Ready(Ok(into_reqwest(answer, url)))
    }
}

/// Back into a `reqwest::Response` whose body holds the permit, keeping
/// the URL reqwest reports.
fn into_reqwest(
    response: http::Response<ResponseBody<Body>>,
    url: Option<Url>,
) -> reqwest::Response {
    let mut response = response.map(Body::wrap);
    if let Some(url) = url {
        // reqwest keeps a response's URL in an extension only its response
        // builder sets.
        if let Ok(stamp) = http::Response::builder().url(url).body(()) {
            response
                .extensions_mut()
                .extend(stamp.into_parts().0.extensions);
        }
    }
    reqwest::Response::from(response)
}
