//! Tower middleware that limits how many requests are in flight at once.
//!
//! ```
//! use axum::{routing::get, Router};
//! use tower_concurrency::ConcurrencyLimitLayer;
//!
//! let app: Router = Router::new()
//!     .route("/", get(|| async { "hello" }))
//!     .route("/slow", get(|| async { "slow" }))
//!     .layer(ConcurrencyLimitLayer::new(64)); // 64 for the whole app
//! # let _ = app;
//! ```
//!
//! - [`concurrency_limit`]: the layer, the service, its response future,
//!   how it differs from `tower::limit`, and how to compose it.
//! - [`policy_limit`]: the same for plain services that should refuse, or
//!   queue a bounded number for a bounded time, instead of waiting.
//! - `http_limit` (feature `http`, on by default): permits held until the
//!   response body ends, refusals answered with `503`/`429` and
//!   `Retry-After` (or as gRPC), partitions, per-key limits and bypass;
//!   `axum::serve` (feature `axum`) and `reqwest::Client` (feature
//!   `reqwest`) included.
//! - [`limiter`]: the shared [`Limiter`] behind every layer, to read and
//!   move the limit at run time or to take permits without tower.
//! - [`adaptive`]: algorithms that move the limit from what responses show.
//! - `fleet` (feature `redis`): one limit shared by every process of a
//!   fleet, kept on Redis, handing out an ordinary [`Limiter`].
//! - [`observe`]: `tracing` events, metrics and `tower::load::Load`, behind
//!   the optional features `tracing`, `metrics` and `load`.
//!
//! # Naming
//!
//! One rule names the whole API, so that the name of a thing says what kind
//! of thing it is:
//!
//! - **Modules** are named after their middleware, as in tower-http
//!   (`concurrency_limit`, `policy_limit`, ...). Each holds `XLayer`, which
//!   holds only configuration; `X`, the service; its `ResponseFuture`; and,
//!   where the permit outlives the response head, its `ResponseBody`.
//! - **Constructors**: `new(n)` panics on an invalid value with a message
//!   naming it, `try_new(n)` returns the error instead, and
//!   `from_limiter(limiter)` shares a limit that already exists.
//! - **Builder methods** are the bare noun of what they set (`.policy(p)`,
//!   `.rejection(r)`), take `self` and return the builder (or the next
//!   builder), and are `#[must_use]`: a builder call whose result is dropped
//!   is a warning, not a silent no-op. No `with_`, no `set_` on builders.
//!   This holds for the adaptive algorithms' parameters too:
//!
//!   ```compile_fail
//!   #![deny(unused_must_use)]
//!   use tower_concurrency::adaptive::Gradient2;
//!
//!   let g = Gradient2::new();
//!   g.clone().max(500); // dropped: `g` keeps its default max of 200
//!   ```
//! - **Getters** are the bare noun (`limit()`, `in_flight()`, `limiter()`);
//!   yes-or-no questions are `is_...`. Services also have tower's
//!   `get_ref`, `get_mut` and `into_inner`.
//! - **Live handles** such as [`Limiter`] change state with `set_...`
//!   (`set_limit`), and `try_set_...` where the value can be invalid.
//! - **Taking a permit** is [`Limiter::acquire`] with a [`Policy`] (a
//!   future that may wait) or [`Limiter::try_acquire`] (never waits);
//!   nothing else.

#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(missing_docs, unreachable_pub)]

pub mod adaptive;
mod admit_call;
pub mod concurrency_limit;
#[cfg(feature = "redis")]
pub mod fleet;
#[cfg(feature = "http")]
pub mod http_limit;
pub mod limiter;
pub mod observe;
pub mod policy_limit;

pub use crate::concurrency_limit::{ConcurrencyLimit, ConcurrencyLimitLayer, ResponseFuture};
pub use crate::limiter::{
    Acquire, InvalidLimit, InvalidShares, Limiter, Order, Partition, PartitionStats, Permit,
    Policy, Reason, Rejected,
};
pub use crate::policy_limit::{PolicyLimit, PolicyLimitLayer};

/// The README's examples, compiled and run as doctests (some need the
/// `axum`, `reqwest` and `redis` features, so they run with `--all-features`).
#[cfg(all(doctest, feature = "axum", feature = "reqwest", feature = "redis"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// A boxed, thread-safe error: the same type as `tower::BoxError`.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
