//! Issue 8.3: a request's permit outlives its inner future on every path:
//! the inner future completes, or the response future is dropped while
//! the inner one is pending. The inner future's `Drop` checks that no
//! permit is free at that moment (limit 1, so a free permit would let a
//! new request start while the old one is still being torn down).
//!
//! Driven at poll level on `tokio_test` mock tasks.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio_test::task::spawn;
use tokio_test::{assert_pending, assert_ready};
use tower::{Layer, Service, ServiceExt};
use tower_concurrency::{Limiter, Policy, PolicyLimitLayer};

/// Counts its drops, and the drops that saw a free permit.
#[derive(Clone, Default)]
struct Drops {
    limiter: Option<Limiter>,
    dropped: Arc<AtomicUsize>,
    permit_was_free: Arc<AtomicUsize>,
}

/// The inner future: pending forever, or ready at once with `R`'s
/// response if the request said so.
struct Inner<R> {
    drops: Drops,
    finish: bool,
    request: std::marker::PhantomData<fn() -> R>,
}

impl<R: Finishes> Future for Inner<R> {
    type Output = Result<R::Response, Infallible>;

    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Self::Output> {
        if self.finish {
            Poll::Ready(Ok(R::response()))
        } else {
            Poll::Pending
        }
    }
}

impl<R> Drop for Inner<R> {
    fn drop(&mut self) {
        let limiter = self.drops.limiter.as_ref().expect("set");
        if limiter.available() != 0 {
            self.drops.permit_was_free.fetch_add(1, SeqCst);
        }
        self.drops.dropped.fetch_add(1, SeqCst);
    }
}

/// A service whose future finishes at once if the request says so.
#[derive(Clone)]
struct Svc(Drops);

impl<R: Finishes> Service<R> for Svc {
    type Response = R::Response;
    type Error = Infallible;
    type Future = Inner<R>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: R) -> Inner<R> {
        Inner {
            drops: self.0.clone(),
            finish: request.finishes(),
            request: std::marker::PhantomData,
        }
    }
}

/// A request that says whether its inner future finishes at once.
trait Finishes {
    type Response;
    fn finishes(&self) -> bool;
    fn response() -> Self::Response;
}

impl Finishes for bool {
    type Response = u32;
    fn finishes(&self) -> bool {
        *self
    }
    fn response() -> u32 {
        7
    }
}

impl Finishes for http::Request<bool> {
    type Response = http::Response<String>;
    fn finishes(&self) -> bool {
        *self.body()
    }
    fn response() -> http::Response<String> {
        http::Response::new("done".into())
    }
}

fn drops(limiter: &Limiter) -> Drops {
    Drops {
        limiter: Some(limiter.clone()),
        ..Drops::default()
    }
}

#[test]
fn policy_limit_drops_the_inner_future_before_the_permit() {
    let limiter = Limiter::new(1);
    let drops = drops(&limiter);
    let svc = PolicyLimitLayer::new(limiter.clone(), Policy::reject()).layer(Svc(drops.clone()));

    // Cancelled while the inner future is pending.
    let mut pending = spawn(svc.clone().oneshot(false));
    assert_pending!(pending.poll());
    assert_eq!(limiter.in_flight(), 1);
    drop(pending);
    assert_eq!(drops.dropped.load(SeqCst), 1);
    assert_eq!(limiter.in_flight(), 0);

    // Completed: the inner future is gone before the permit comes back.
    let mut done = spawn(svc.oneshot(true));
    let _ = assert_ready!(done.poll());
    drop(done);
    assert_eq!(drops.dropped.load(SeqCst), 2);
    assert_eq!(limiter.in_flight(), 0);
    assert_eq!(drops.permit_was_free.load(SeqCst), 0, "a permit was free");
}

#[test]
fn http_limit_drops_the_inner_future_before_the_permit() {
    use tower_concurrency::http_limit::HttpLimitLayer;

    let limiter = Limiter::new(1);
    let drops = drops(&limiter);
    let svc = HttpLimitLayer::from_limiter(limiter.clone())
        .policy(Policy::reject())
        .layer(Svc(drops.clone()));
    let request = |finish| http::Request::new(finish);

    let mut pending = spawn(svc.clone().oneshot(request(false)));
    assert_pending!(pending.poll());
    assert_eq!(limiter.in_flight(), 1);
    drop(pending);
    assert_eq!(drops.dropped.load(SeqCst), 1);
    assert_eq!(limiter.in_flight(), 0);

    let mut done = spawn(svc.oneshot(request(true)));
    let _ = assert_ready!(done.poll());
    drop(done);
    assert_eq!(drops.dropped.load(SeqCst), 2);
    assert_eq!(drops.permit_was_free.load(SeqCst), 0, "a permit was free");
}
