//! A concurrency limit that refuses, or queues a bounded time, instead of
//! only waiting.
//!
//! [`PolicyLimit`] admits each request under a [`Policy`]: wait, reject at
//! once, or queue at most N requests for at most a given time in FIFO or
//! LIFO order. A refused request fails with [`Rejected`], boxed into
//! `tower::BoxError`, which says why (full, queue full, waited too long)
//! and carries the limit; find it with `downcast_ref::<Rejected>()`.
//!
//! Unlike tower's `load_shed` in front of a limit, nothing is left queued
//! behind a refused request: waiting happens inside the response future,
//! so `poll_ready` only asks the inner service, a refusal completes the
//! future, and dropping a queued future leaves the queue at once without
//! taking a permit. The inner service must be `Clone` (the ready service
//! travels in the response future and a clone takes its place).
//!
//! For HTTP services, [`http_limit`](crate::http_limit) answers refusals with a `503`
//! or `429` response instead of an error.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use tower::{service_fn, BoxError, Service, ServiceExt};
//! use tower_concurrency::{ConcurrencyLimitLayer, Policy, Reason, Rejected};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let layer = ConcurrencyLimitLayer::new(1)
//!     .policy(Policy::fifo(10).timeout(Duration::from_millis(100)));
//! let limiter = layer.limiter().clone();
//! let svc = tower::ServiceBuilder::new()
//!     .layer(layer)
//!     .service(service_fn(|x: u32| async move { Ok::<_, BoxError>(x) }));
//!
//! let held = limiter.try_acquire().unwrap(); // the only permit is taken
//! let err = svc.clone().oneshot(1).await.unwrap_err();
//! let rejected = err.downcast_ref::<Rejected>().unwrap();
//! assert_eq!(rejected.reason(), Reason::TimedOut);
//!
//! drop(held);
//! assert_eq!(svc.oneshot(2).await.unwrap(), 2);
//! # }
//! ```
//!
//! Policies, layers and their builder methods are `#[must_use]`: a policy
//! is `Copy`, so a builder call whose result is dropped would silently
//! change nothing.
//!
//! ```compile_fail
//! #![deny(unused_must_use)]
//! use std::time::Duration;
//! use tower_concurrency::Policy;
//!
//! let policy = Policy::fifo(8);
//! policy.timeout(Duration::from_millis(100)); // error: the new policy is dropped
//! # let _ = policy;
//! ```
//!
//! [`Policy`]: crate::Policy
//! [`Rejected`]: crate::Rejected

mod future;
mod layer;
mod service;

pub use self::future::ResponseFuture;
pub use self::layer::PolicyLimitLayer;
pub use self::service::PolicyLimit;
