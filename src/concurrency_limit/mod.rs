//! Limit how many requests a service handles at once.
//!
//! [`ConcurrencyLimitLayer::new(n)`](ConcurrencyLimitLayer::new) lets at most
//! `n` requests run at the same time through every service it builds. A
//! request waits in `poll_ready` until one of the `n` permits is free; the
//! permit then travels inside the [`ResponseFuture`] and comes back when the
//! response is ready, when the future is dropped, or when it panics.
//!
//! # Example: one limit for a whole axum app
//!
//! ```
//! use axum::{routing::get, Router};
//! use tower_concurrency::ConcurrencyLimitLayer;
//!
//! let limit = ConcurrencyLimitLayer::new(64);
//! let limiter = limit.limiter().clone();
//!
//! let app: Router = Router::new()
//!     .route("/users", get(|| async { "users" }))
//!     .route("/orders", get(|| async { "orders" }))
//!     // 64 for the app, not 64 per route.
//!     .layer(limit);
//!
//! // The handle reads and moves the limit while the server runs.
//! assert_eq!(limiter.limit(), 64);
//! limiter.set_limit(32);
//! # let _ = app;
//! ```
//!
//! # Example: any tower service, such as an HTTP client
//!
//! ```
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_concurrency::ConcurrencyLimitLayer;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), std::convert::Infallible> {
//! let upstream = service_fn(|n: u32| async move { Ok::<_, std::convert::Infallible>(n * 2) });
//! let client = ServiceBuilder::new()
//!     .layer(ConcurrencyLimitLayer::new(3))
//!     .service(upstream);
//!
//! // `oneshot` (like `ready().await?.call()`) calls `poll_ready` first.
//! assert_eq!(client.clone().oneshot(21).await?, 42);
//! # Ok(())
//! # }
//! ```
//!
//! # Calling the service
//!
//! As with every tower service, `poll_ready` must return `Ready(Ok(()))`
//! before each `call`; `call` on a service that has no reserved permit
//! panics, naming the cause. Code that drives services by hand must honour
//! this: axum's own serve-with-hyper example calls `call` directly, which is
//! fine for an axum `Router` (always ready) but panics once this layer is
//! wrapped around the whole router. Use `ServiceExt::oneshot` or
//! `ServiceExt::ready` there.
//!
//! Calling `poll_ready` again while a permit is reserved takes no second
//! permit, a clone of a service never inherits its reserved permit, and
//! dropping a service gives its reserved permit back.
//!
//! # Differences from `tower::limit`
//!
//! - **One layer value is one limit.** tower's `ConcurrencyLimitLayer`
//!   makes a new semaphore on every `layer()` call. axum's `Router::layer`
//!   calls `layer()` once per route (and again per connection when a
//!   `Router<()>` is served), so tower's limit of 64 becomes 64 per route.
//!   Here every service built from one layer, and every clone of them,
//!   shares one [`Limiter`]; tower needs `GlobalConcurrencyLimitLayer` for that.
//! - **The limit is visible and movable.** [`ConcurrencyLimitLayer::limiter`]
//!   reports the limit, permits in flight and callers waiting, and
//!   [`Limiter::set_limit`] changes the limit while requests run, never
//!   revoking a permit in use.
//! - **Bad limits are refused.** A limit of 0 (which in tower waits
//!   forever) or above tokio's maximum panics with the value in the
//!   message; the `try_new` constructors return [`InvalidLimit`].
//! - **The same allocations as tower.** A free permit is taken with no
//!   allocation; a service value that has to wait boxes its queued
//!   acquisition once and reuses the box for every later wait.
//!
//! Like tower's, the permit is given back when the response future
//! completes, so for HTTP it does not cover a response body that streams
//! after the head.
//!
//! # Composing with other middleware
//!
//! Order matters in a `ServiceBuilder` (the first layer is the outermost):
//!
//! - `buffer(100)` then this limit of 10: the buffer's worker takes the
//!   requests, so 111 are accepted at once (100 in the buffer, 1 in the
//!   worker's hands, 10 running). The limit still holds; the queue is in
//!   front of it.
//! - `load_shed()` then this limit: a request that finds no free permit is
//!   refused at once with tower's `Overloaded` instead of waiting. Shed with
//!   a fresh clone per request (as axum does): a long-lived `LoadShed` that
//!   shed keeps its place in the queue, and the next permit given back is
//!   parked there until that service is polled again (tower's limit does
//!   the same).
//! - `timeout(d)` and this limit, in either order: tower's `Timeout` starts
//!   its clock in `call`, and a request waits for its permit in
//!   `poll_ready`, before `call`, so the deadline covers only the work. A
//!   request that times out gives its permit back at once. To bound the
//!   wait too, time the whole call (`tokio::time::timeout(d, svc.oneshot(req))`);
//!   in axum, a timeout added by a later `Router::layer` call does that,
//!   since each route's service is called with `oneshot`.
//! - `retry(policy)` then this limit: each attempt takes its own permit.
//!
//! [`Limiter`]: crate::Limiter
//! [`Limiter::set_limit`]: crate::Limiter::set_limit
//! [`InvalidLimit`]: crate::InvalidLimit

mod future;
mod layer;
mod service;

pub use self::future::ResponseFuture;
pub use self::layer::ConcurrencyLimitLayer;
pub use self::service::ConcurrencyLimit;
