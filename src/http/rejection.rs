use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use http::{Response, StatusCode};

use crate::{Limiter, Rejected};

/// The response the HTTP layer answers a refused request with.
///
/// By default `503 Service Unavailable`, `Retry-After: 1`, and a plain-text
/// body saying why (for example "concurrency limit of 64 reached"). The
/// [`Rejected`] value is also put in the response's extensions, for
/// middleware further out to log or count.
///
/// ```
/// use http::StatusCode;
/// use tower_concurrency::http::{Rejection, RetryAfter};
///
/// let rejection = Rejection::too_many_requests()
///     .retry_after(RetryAfter::Estimate { max_seconds: 30 })
///     .body("{\"error\":\"busy\"}")
///     .content_type(http::HeaderValue::from_static("application/json"));
/// assert_eq!(rejection.status(), StatusCode::TOO_MANY_REQUESTS);
/// ```
#[derive(Debug, Clone)]
pub struct Rejection {
    status: StatusCode,
    per_key_status: StatusCode,
    retry_after: RetryAfter,
    body: Option<Bytes>,
    content_type: HeaderValue,
}

/// What the `Retry-After` header of a refusal says.
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
        Self::with_status(StatusCode::SERVICE_UNAVAILABLE)
    }

    /// `429 Too Many Requests`, `Retry-After: 1`: the client sends too much.
    pub fn too_many_requests() -> Self {
        Self::with_status(StatusCode::TOO_MANY_REQUESTS)
    }

    /// Any status, `Retry-After: 1`.
    pub fn with_status(status: StatusCode) -> Self {
        Self {
            status,
            per_key_status: StatusCode::TOO_MANY_REQUESTS,
            retry_after: RetryAfter::Seconds(1),
            body: None,
            content_type: HeaderValue::from_static("text/plain; charset=utf-8"),
        }
    }

    /// The status for a request refused because its own key was full
    /// (see [`HttpLimitLayer::limit_per_key`](super::HttpLimitLayer::limit_per_key));
    /// default `429 Too Many Requests`: the client, not the service, should
    /// slow down.
    pub fn per_key_status(mut self, status: StatusCode) -> Self {
        self.per_key_status = status;
        self
    }

    /// Sets the `Retry-After` header.
    pub fn retry_after(mut self, retry_after: RetryAfter) -> Self {
        self.retry_after = retry_after;
        self
    }

    /// A fixed body instead of the default text saying why.
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// The `Content-Type` of the body.
    pub fn content_type(mut self, content_type: HeaderValue) -> Self {
        self.content_type = content_type;
        self
    }

    /// The status answered.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The `Retry-After` setting.
    pub fn retry_after_setting(&self) -> RetryAfter {
        self.retry_after
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

    /// Builds the answer to `rejected`.
    pub(super) fn respond<B>(&self, rejected: Rejected, limiter: &Limiter) -> Response<B>
    where
        B: From<Bytes>,
    {
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
        if let Some(seconds) = self.retry_after_seconds(limiter) {
            headers.insert(RETRY_AFTER, HeaderValue::from(seconds));
        }
        response.extensions_mut().insert(rejected);
        response
    }
}
