//! A whole axum app behind the HTTP layer, for `axum::serve`.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use axum_core::body::Body;
use axum_core::extract::Request;
use axum_core::response::Response;
use bytes::Bytes;
use pin_project_lite::pin_project;
use tower_service::Service;

use super::{HttpClassifier, HttpLimit, HttpLimitLayer, ResponseFuture};
use crate::adaptive::Classify;
use crate::BoxError;

/// An axum app (a `Router`, or any axum service) behind an
/// [`HttpLimitLayer`], answering axum's own `Response`, so that
/// `axum::serve` takes it as it is. Built by [`HttpLimitLayer::axum`].
///
/// Wrapping the whole router, rather than `Router::layer`, limits every
/// request the app answers, including the fallback's `404`s, with one
/// service per connection instead of one per route.
#[derive(Debug, Clone)]
pub struct AxumLimit<S, C = HttpClassifier> {
    inner: HttpLimit<S, C>,
}

impl<C: Clone> HttpLimitLayer<C> {
    /// Wraps a whole axum app, answering axum's `Response` (the body mapped
    /// back to `axum::body::Body`), so `axum::serve` serves it directly:
    ///
    /// ```no_run
    /// use axum::{routing::get, Router, ServiceExt};
    /// use tower_concurrency::http_limit::HttpLimitLayer;
    ///
    /// # async fn run() -> std::io::Result<()> {
    /// let router = Router::new().route("/", get(|| async { "hello" }));
    /// let app = HttpLimitLayer::new(64).axum(router);
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    /// axum::serve(listener, app.into_make_service()).await
    /// # }
    /// ```
    ///
    /// *Needs the `axum` feature.*
    pub fn axum<S>(&self, app: S) -> AxumLimit<S, C> {
        AxumLimit {
            inner: tower_layer::Layer::layer(self, app),
        }
    }
}

impl<S, C> AxumLimit<S, C> {
    /// The limited service inside.
    pub fn get_ref(&self) -> &HttpLimit<S, C> {
        &self.inner
    }

    /// The limited service inside, mutably.
    pub fn get_mut(&mut self) -> &mut HttpLimit<S, C> {
        &mut self.inner
    }

    /// The limited service inside.
    pub fn into_inner(self) -> HttpLimit<S, C> {
        self.inner
    }
}

impl<S, C, B> Service<Request> for AxumLimit<S, C>
where
    S: Service<Request, Response = http::Response<B>> + Clone,
    C: Classify<Result<http::Response<B>, S::Error>> + Clone,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = AxumResponseFuture<S, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        AxumResponseFuture {
            inner: self.inner.call(request),
        }
    }
}

pin_project! {
    /// The response future of [`AxumLimit`]: the HTTP layer's, with the
    /// body boxed into axum's `Body` (which still holds the permit until
    /// it ends).
    pub struct AxumResponseFuture<S, C>
    where
        S: Service<Request>,
    {
        #[pin]
        inner: ResponseFuture<S, Request, C>,
    }
}

impl<S, C, B> Future for AxumResponseFuture<S, C>
where
    S: Service<Request, Response = http::Response<B>>,
    C: Classify<Result<http::Response<B>, S::Error>>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Output = Result<Response, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let response = ready!(self.project().inner.poll(cx))?;
        Poll::Ready(Ok(response.map(Body::new)))
    }
}

impl<S, C> std::fmt::Debug for AxumResponseFuture<S, C>
where
    S: Service<Request>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AxumResponseFuture").finish_non_exhaustive()
    }
}
