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
//! - [`limiter`]: the shared [`Limiter`] behind a layer, to read and move
//!   the limit at run time or to take permits without tower.
//! - [`observe`]: `tracing` events, metrics and `tower::load::Load`, behind
//!   the optional features `tracing`, `metrics` and `load`.

#![forbid(unsafe_code)]
#![deny(missing_docs, unreachable_pub)]

pub mod adaptive;
mod admit_call;
pub mod concurrency_limit;
#[cfg(feature = "redis")]
pub mod fleet;
#[cfg(feature = "http")]
pub mod http;
pub mod limiter;
pub mod observe;
pub mod policy_limit;
#[cfg(feature = "sim")]
pub mod sim;

pub use crate::concurrency_limit::{ConcurrencyLimit, ConcurrencyLimitLayer, ResponseFuture};
pub use crate::limiter::{
    Admit, InvalidLimit, InvalidShares, Limiter, Order, Partition, PartitionStats, Permit, Policy,
    Reason, Rejected,
};
pub use crate::policy_limit::{PolicyLimit, PolicyLimitLayer};

/// A boxed, thread-safe error: the same type as `tower::BoxError`.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
