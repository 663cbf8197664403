//! The record of a request's admission, put in its extensions.

use std::time::Duration;

use http::Request;

use crate::{Limiter, Partition, Permit};

/// How a request was admitted: with
/// [`admission_record(true)`](super::HttpLimitLayer::admission_record), the
/// HTTP layer puts one in each admitted request's extensions before the
/// inner service sees it, so a handler can read how long its request
/// waited and how full the limit was.
///
/// A request that [bypassed](super::HttpLimitLayer::bypass) the limit has
/// none.
///
/// ```
/// use axum::{routing::get, Extension, Router};
/// use tower_concurrency::http_limit::{Admission, HttpLimitLayer};
///
/// let app: Router = Router::new()
///     .route(
///         "/",
///         get(|Extension(admission): Extension<Admission>| async move {
///             format!(
///                 "waited {:?}, {} of {} in flight",
///                 admission.waited, admission.in_flight, admission.limit
///             )
///         }),
///     )
///     .layer(HttpLimitLayer::new(64).admission_record(true));
/// # let _ = app;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Admission {
    /// How long the request waited for its permit; zero when one was free
    /// at once (the clock is read only when it had to wait).
    pub waited: Duration,
    /// Requests in flight just after this one was admitted, itself
    /// included.
    pub in_flight: usize,
    /// The limit when it was admitted.
    pub limit: usize,
    /// The partition it counts in, if the limiter is partitioned and the
    /// request matched one.
    pub partition: Option<Partition>,
}

impl Admission {
    /// Records the admission of `request` under `limiter`.
    pub(super) fn stamp<B>(
        limiter: &Limiter,
        request: &mut Request<B>,
        permit: &Permit,
        waited: Duration,
    ) {
        request.extensions_mut().insert(Admission {
            waited,
            in_flight: limiter.in_flight(),
            limit: limiter.limit(),
            partition: permit.partition(),
        });
    }
}
