use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, Response, StatusCode};

use super::grpc::{self, GrpcStatus};
use crate::{Limiter, Rejected};

/// The response the HTTP layer answers a refused request with.
///
/// By default `503 Service Unavailable`, `Retry-After: 1`, and a plain-text
/// body saying why (for example "concurrency limit of 64 reached"). The
/// [`Rejected`] value is also put in the response's extensions, for
/// middleware further out to log or count.
///
/// A gRPC request (`content-type: application/grpc`, with or without a
/// suffix such as `+proto`) gets a gRPC answer instead, with no
/// configuration: `200 OK`, `content-type: application/grpc`, no body, and
/// the status in the headers (a trailers-only response): `grpc-status`
/// [`UNAVAILABLE`](GrpcStatus::Unavailable) by default (see
/// [`grpc_status`](Self::grpc_status)), or
/// [`RESOURCE_EXHAUSTED`](GrpcStatus::ResourceExhausted) when the caller's
/// own key was full; `grpc-message` saying why; and
/// `grpc-retry-pushback-ms` carrying what `Retry-After` carries.
///
/// ```
/// use http::StatusCode;
/// use tower_concurrency::http_limit::{GrpcStatus, Rejection, RetryAfter};
///
/// let rejection = Rejection::too_many_requests()
///     .retry_after(RetryAfter::Estimate { max_seconds: 30 })
///     .body("{\"error\":\"busy\"}")
///     .content_type(http::HeaderValue::from_static("application/json"))
///     .header(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"))
///     .grpc_status(GrpcStatus::ResourceExhausted);
/// assert_eq!(rejection.status(), StatusCode::TOO_MANY_REQUESTS);
/// ```
#[derive(Debug, Clone)]
#[must_use = "a rejection does nothing until a layer answers with it"]
pub struct Rejection {
    status: StatusCode,
    per_key_status: StatusCode,
    retry_after: RetryAfter,
    body: Option<Bytes>,
    content_type: HeaderValue,
    headers: HeaderMap,
    grpc_status: GrpcStatus,
}

/// What the `Retry-After` header of a refusal says (and, for gRPC, its
/// `grpc-retry-pushback-ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryAfter {
    /// No `Retry-After` header.
    Omit,
    /// A fixed number of seconds.
    Seconds(u32),
    /// An estimate of when a permit will be free: the average time a
    /// permit is held, times the requests queued ahead plus one, divided
    /// by the limit; rounded up to whole seconds, at least 1 and at most
    /// `max_seconds`. Reading the clock twice per request is the cost.
    Estimate {
        /// The largest value sent.
        max_seconds: u32,
    },
}

impl Default for Rejection {
    fn default() -> Self {
        Self::service_unavailable()
    }
}

impl Rejection {
    /// `503 Service Unavailable`, `Retry-After: 1`: the server is busy.
    pub fn service_unavailable() -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE)
    }

    /// `429 Too Many Requests`, `Retry-After: 1`: the client sends too much.
    pub fn too_many_requests() -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS)
    }

    /// Any status, `Retry-After: 1`.
    pub fn new(status: StatusCode) -> Self {
        Self {
            status,
            per_key_status: StatusCode::TOO_MANY_REQUESTS,
            retry_after: RetryAfter::Seconds(1),
            body: None,
            content_type: HeaderValue::from_static("text/plain; charset=utf-8"),
            headers: HeaderMap::new(),
            grpc_status: GrpcStatus::Unavailable,
        }
    }

    /// The status for a request refused because its own key was full (see
    /// [`HttpLimitLayer::limit_per_key`](super::HttpLimitLayer::limit_per_key));
    /// default `429 Too Many Requests`: the client, not the service, should
    /// slow down. A request refused because no more keys can be tracked
    /// ([`Reason::TooManyKeys`](crate::Reason::TooManyKeys)) gets
    /// [`status`](Self::status) instead (`503` by default): that is the
    /// service's limit, not the client's.
    #[must_use = "a builder method returns the changed value and changes nothing in place"]
    pub fn per_key_status(mut self, status: StatusCode) -> Self {
        self.per_key_status = status;
        self
    }

    /// Sets the `Retry-After` header (and gRPC's `grpc-retry-pushback-ms`).
    #[must_use = "a builder method returns the changed value and changes nothing in place"]
    pub fn retry_after(mut self, retry_after: RetryAfter) -> Self {
        self.retry_after = retry_after;
        self
    }

    /// A fixed body instead of the default text saying why (not sent to
    /// gRPC clients, whose answer has no body).
    #[must_use = "a builder method returns the changed value and changes nothing in place"]
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// The `Content-Type` of the body (gRPC answers keep
    /// `application/grpc`).
    #[must_use = "a builder method returns the changed value and changes nothing in place"]
    pub fn content_type(mut self, content_type: HeaderValue) -> Self {
        self.content_type = content_type;
        self
    }

    /// Adds a header to every refusal, HTTP and gRPC alike (for example
    /// `cache-control`, or a header naming the instance). It is appended,
    /// so calling this twice with one name sends both values.
    #[must_use = "a builder method returns the changed value and changes nothing in place"]
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.append(name, value);
        self
    }

    /// The `grpc-status` a refused gRPC request gets: `UNAVAILABLE` (14,
    /// the default; clients may retry it, on another server too) or
    /// `RESOURCE_EXHAUSTED` (8). A request refused because its own key was
    /// full always gets `RESOURCE_EXHAUSTED`.
    #[must_use = "a builder method returns the changed value and changes nothing in place"]
    pub fn grpc_status(mut self, status: GrpcStatus) -> Self {
        self.grpc_status = status;
        self
    }

    /// The status answered to an HTTP request refused by the overall limit.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// Whether answering needs permits' hold times measured.
    pub(super) fn needs_timing(&self) -> bool {
        matches!(self.retry_after, RetryAfter::Estimate { .. })
    }

    /// The `Retry-After` seconds to send now, if any.
    pub(super) fn retry_after_seconds(&self, limiter: &Limiter) -> Option<u64> {
        match self.retry_after {
            RetryAfter::Omit => None,
            RetryAfter::Seconds(seconds) => Some(seconds.into()),
            RetryAfter::Estimate { max_seconds } => {
                let hold = limiter.mean_hold().unwrap_or(Duration::ZERO);
                let ahead = limiter.waiting().saturating_add(1);
                let wait = hold.as_secs_f64() * ahead as f64 / limiter.limit() as f64;
                Some((wait.ceil() as u64).clamp(1, max_seconds.max(1).into()))
            }
        }
    }

    /// Builds the answer to `rejected`; `grpc` when the request was a gRPC
    /// call.
    pub(super) fn respond<B>(
        &self,
        rejected: Rejected,
        limiter: &Limiter,
        grpc: bool,
    ) -> Response<B>
    where
        B: From<Bytes>,
    {
        let retry_after = self.retry_after_seconds(limiter);
        let mut response = if grpc {
            let status = if rejected.is_per_key() {
                GrpcStatus::ResourceExhausted
            } else {
                self.grpc_status
            };
            grpc::refusal(status, &rejected, retry_after)
        } else {
            let body = match &self.body {
                Some(body) => body.clone(),
                None => Bytes::from(format!("{rejected}\n")),
            };
            let mut response = Response::new(B::from(body));
            *response.status_mut() = if rejected.is_per_key() {
                self.per_key_status
            } else {
                self.status
            };
            let headers = response.headers_mut();
            headers.insert(CONTENT_TYPE, self.content_type.clone());
            if let Some(seconds) = retry_after {
                headers.insert(RETRY_AFTER, HeaderValue::from(seconds));
            }
            response
        };
        for (name, value) in &self.headers {
            response.headers_mut().append(name, value.clone());
        }
        response.extensions_mut().insert(rejected);
        response
    }
}
