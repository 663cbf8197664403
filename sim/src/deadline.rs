//! The client's deadline, enforced *inside* the limiter.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;
use tower_service::Service;

use crate::backend::SimRequest;
use tower_concurrency::BoxError;

/// Ends a request at its [`SimRequest::deadline`] with a
/// [`DeadlineExceeded`] error.
///
/// It sits between the limiter and the backend
/// (`PolicyLimit → Deadline → Backend`) rather than around the whole stack,
/// because the limiter only learns from response futures that *complete*:
/// a future dropped by an outer `tokio::time::timeout` records nothing, so
/// an algorithm would never hear of the requests that timed out (behind a
/// black hole, it would hear nothing at all while every permit hangs). Here
/// the deadline becomes an error output, which the classifier sees and
/// counts as overload, with a round-trip time of the whole wait. Since the
/// deadline is an instant carried by the request, time spent queued in the
/// limiter is already spent when the request gets here.
#[derive(Debug, Clone)]
pub struct Deadline<S> {
    inner: S,
}

impl<S> Deadline<S> {
    /// Enforces each request's deadline on `inner`.
    pub fn new(inner: S) -> Self {
        Self { inner }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

/// The error of a request whose deadline passed before its answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeadlineExceeded;

impl fmt::Display for DeadlineExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the client's deadline passed before the backend answered")
    }
}

impl std::error::Error for DeadlineExceeded {}

pin_project! {
    /// The response future of [`Deadline`].
    #[derive(Debug)]
    pub struct DeadlineFuture<F> {
        #[pin]
        inner: tokio::time::Timeout<F>,
    }
}

impl<F, T, E> Future for DeadlineFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Poll::Ready(match ready!(self.project().inner.poll(cx)) {
            Ok(result) => result.map_err(Into::into),
            Err(_) => Err(Box::new(DeadlineExceeded)),
        })
    }
}

impl<S> Service<SimRequest> for Deadline<S>
where
    S: Service<SimRequest>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = DeadlineFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: SimRequest) -> Self::Future {
        let deadline = request.deadline;
        DeadlineFuture {
            inner: tokio::time::timeout_at(deadline, self.inner.call(request)),
        }
    }
}
