//! Concurrency limits for HTTP: permits that last until the response body
//! ends, and overload answered with `503`/`429` and `Retry-After`.
//!
//! *Needs the `http` feature (on by default).*
//!
//! # Why the body matters
//!
//! hyper drops a service's response future as soon as the response head is
//! ready, then streams the body. A limit whose permit lives in the future
//! (tower's, or [`ConcurrencyLimit`](crate::ConcurrencyLimit)) is free again
//! while the body still streams: a server sending 1,000 large downloads "at
//! a limit of 10" has 1,000 in flight. [`HttpLimit`] moves the permit into
//! the [`ResponseBody`], which gives it back when the body ends or is
//! dropped (the client hung up).
//!
//! [`Release::BodyEnd`] is the default on both sides. On a server the body
//! is the work (and the connection) the limit protects. On a client a
//! response whose body is unread still occupies the upstream's connection
//! and its slot, so it should count against the upstream's limit; read or
//! drop response bodies promptly, since an unread body keeps its permit.
//! [`Release::Head`] gives the permit back when the head is ready, as tower
//! does.
//!
//! # Overload is answered, not queued forever
//!
//! The layer takes a [`Policy`](crate::Policy): wait (the default), reject
//! at once, or a bounded FIFO or LIFO queue with a timeout. A refused request
//! is answered by the layer itself with the [`Rejection`] response (default
//! `503 Service Unavailable` with `Retry-After: 1` and a text body saying
//! why; `429`, an estimated `Retry-After` and the body are configurable), so
//! the service's error type is unchanged and axum needs no
//! `HandleErrorLayer`. Waiting happens in the response future: a request
//! whose client goes away leaves the queue at once, and a refusal leaves
//! nothing queued behind it.
//!
//! # Example: an axum app
//!
//! ```
//! use std::time::Duration;
//! use axum::{routing::get, Router};
//! use tower_concurrency::http_limit::{HttpLimitLayer, Rejection, RetryAfter};
//! use tower_concurrency::Policy;
//!
//! let limit = HttpLimitLayer::new(64)
//!     .policy(Policy::lifo(128).timeout(Duration::from_millis(250)))
//!     .rejection(Rejection::service_unavailable().retry_after(RetryAfter::Estimate { max_seconds: 10 }));
//!
//! let app: Router = Router::new()
//!     .route("/download", get(|| async { "a long body" }))
//!     .route("/api", get(|| async { "ok" }))
//!     .layer(limit); // 64 for the app, held until each body ends
//! # let _ = app;
//! ```
//!
//! # Around a whole router served by `axum::serve`
//!
//! With the `axum` feature, [`HttpLimitLayer::axum`] wraps the whole
//! router and answers axum's own `Response`, so `axum::serve` takes it:
//! `axum::serve(listener, HttpLimitLayer::new(64).axum(router).into_make_service())`
//! (`into_make_service` from `axum::ServiceExt`).
//!
//! # gRPC
//!
//! A gRPC call (`content-type: application/grpc`, with or without a suffix
//! such as `+proto`) refused by the layer is answered as gRPC with no
//! configuration: `200`, trailers-only, `grpc-status` `UNAVAILABLE` (or
//! `RESOURCE_EXHAUSTED`, see [`Rejection::grpc_status`]), `grpc-message`,
//! and `grpc-retry-pushback-ms` carrying what `Retry-After` carries. So
//! `tonic::transport::Server::builder().layer(HttpLimitLayer::new(n))` is
//! one limit for a whole tonic server, across its connections. On a
//! client, a tonic `Channel` in the layer with
//! [`honor_retry_after`](HttpLimitLayer::honor_retry_after) holds new calls
//! while an upstream's pushback lasts, and [`HttpClassifier`] reads
//! `grpc-status` for adaptive limits (from the trailers at the body's end
//! when the head has none).
//!
//! # reqwest
//!
//! With the `reqwest` feature, [`HttpLimit`] also serves `reqwest::Request`
//! (around `reqwest::Client`), answering `reqwest::Response`s whose bodies
//! hold their permits, with the same `Retry-After` handling and
//! classification.
//!
//! # Example: a client that stays under an upstream's limit
//!
//! ```
//! use hyper_util::client::legacy::Client;
//! use hyper_util::rt::TokioExecutor;
//! use tower::ServiceBuilder;
//! use tower_concurrency::http_limit::HttpLimitLayer;
//!
//! let client = Client::builder(TokioExecutor::new()).build_http::<String>();
//! let limited = ServiceBuilder::new()
//!     .layer(HttpLimitLayer::new(3)) // 3 requests until their bodies are read
//!     .service(client);
//! # let _ = limited;
//! ```

mod admission;
#[cfg(feature = "axum")]
mod axum;
mod body;
mod classify;
mod future;
mod grpc;
mod keyed;
mod layer;
mod rejection;
#[cfg(feature = "reqwest")]
mod reqwest;
mod rules;
mod service;

pub use self::admission::Admission;
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub use self::axum::{AxumLimit, AxumResponseFuture};
pub use self::body::ResponseBody;
pub use self::classify::HttpClassifier;
pub use self::future::ResponseFuture;
pub use self::grpc::GrpcStatus;
pub use self::keyed::KeyLimit;
pub use self::layer::HttpLimitLayer;
pub use self::rejection::{Rejection, RetryAfter};
pub use self::rules::RequestHead;
pub use self::service::HttpLimit;

/// When an HTTP response gives its permit back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Release {
    /// When the response body ends or is dropped (the default).
    #[default]
    BodyEnd,
    /// When the response head is ready, as tower's limit does.
    Head,
}
