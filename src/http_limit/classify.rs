use std::time::{Duration, SystemTime};

use http::header::RETRY_AFTER;
use http::{HeaderMap, Response, StatusCode};

use super::grpc;
use crate::adaptive::{Classify, Outcome};
use crate::Limiter;

/// The default classifier of the HTTP layer, for HTTP and gRPC.
///
/// | response | outcome |
/// | --- | --- |
/// | an error from the inner service (connection failed, timed out) | overload |
/// | `429 Too Many Requests`, `503 Service Unavailable`, `504 Gateway Timeout`, `408 Request Timeout` | overload |
/// | any other `4xx` or `5xx` | ignore: a client error or a bug says nothing about capacity |
/// | `1xx`, `2xx`, `3xx` | success |
/// | gRPC (`200`, `content-type: application/grpc…`): `grpc-status` `UNAVAILABLE` (14), `RESOURCE_EXHAUSTED` (8), `DEADLINE_EXCEEDED` (4) | overload |
/// | gRPC: any other failure | ignore |
/// | gRPC: `OK` | success |
///
/// A gRPC response carries its `grpc-status` in its headers only when it
/// has no message (a trailers-only response, as a refusal is); otherwise
/// it comes in the trailers after the body. For such a response the HTTP
/// layer takes the sample when the trailers arrive, so its round-trip time
/// runs to the end of the body; a body that ends without trailers, or is
/// dropped first, gives no sample. (This needs the permit held until the
/// body ends, the default [`Release::BodyEnd`](super::Release::BodyEnd).)
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HttpClassifier;

impl HttpClassifier {
    /// The outcome a status code stands for.
    pub fn status(status: StatusCode) -> Outcome {
        match status {
            StatusCode::TOO_MANY_REQUESTS
            | StatusCode::SERVICE_UNAVAILABLE
            | StatusCode::GATEWAY_TIMEOUT
            | StatusCode::REQUEST_TIMEOUT => Outcome::Overload,
            s if s.is_client_error() || s.is_server_error() => Outcome::Ignore,
            _ => Outcome::Success,
        }
    }

    /// The outcome a `grpc-status` code stands for.
    pub fn grpc_status(code: u32) -> Outcome {
        grpc::outcome(code)
    }
}

impl<B, E> Classify<Result<Response<B>, E>> for HttpClassifier {
    fn classify(&self, output: &Result<Response<B>, E>) -> Outcome {
        match output {
            Ok(response)
                if response.status() == StatusCode::OK && grpc::is_grpc(response.headers()) =>
            {
                // Without a status in the head, the trailers decide.
                grpc::status(response.headers()).map_or(Outcome::Success, grpc::outcome)
            }
            Ok(response) => Self::status(response.status()),
            Err(_) => Outcome::Overload,
        }
    }
}

/// Holds `limiter`'s new admissions for `wait` from now, saturating: a
/// wait too long for the clock holds as long as it can, never panics.
pub(super) fn hold_for(limiter: &Limiter, wait: Duration) {
    let now = tokio::time::Instant::now();
    let until = now
        .checked_add(wait)
        .or_else(|| now.checked_add(FOREVER))
        .unwrap_or(now);
    limiter.hold_until(until);
}

/// The longest hold the clock is sure to represent (about 30 years, as
/// tokio's own "far future").
const FOREVER: Duration = Duration::from_secs(86_400 * 365 * 30);

/// How long a `503` or `429` response asks its client to wait: its
/// `Retry-After` as delay-seconds or an HTTP date, at most `max`; for a
/// gRPC response, its `grpc-retry-pushback-ms`.
pub(super) fn retry_after(
    status: StatusCode,
    headers: &HeaderMap,
    max: Duration,
) -> Option<Duration> {
    if status == StatusCode::OK && grpc::is_grpc(headers) {
        return grpc::pushback(headers, max);
    }
    if status != StatusCode::SERVICE_UNAVAILABLE && status != StatusCode::TOO_MANY_REQUESTS {
        return None;
    }
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let wait = match value.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => httpdate::parse_http_date(value)
            .ok()?
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    };
    (!wait.is_zero()).then_some(wait.min(max))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn retry_after_reads_seconds_and_dates_and_caps_them() {
        let max = Duration::from_secs(30);
        let busy = StatusCode::SERVICE_UNAVAILABLE;
        assert_eq!(
            retry_after(busy, &headers("5"), max),
            Some(Duration::from_secs(5))
        );
        assert_eq!(retry_after(busy, &headers("3600"), max), Some(max));
        assert_eq!(retry_after(busy, &headers("0"), max), None);
        assert_eq!(retry_after(busy, &headers("soon"), max), None);
        assert_eq!(retry_after(StatusCode::OK, &headers("5"), max), None);
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
        let wait = retry_after(
            StatusCode::TOO_MANY_REQUESTS,
            &headers(&later),
            Duration::from_secs(600),
        )
        .unwrap();
        assert!(wait > Duration::from_secs(100) && wait <= Duration::from_secs(120));
        let past = httpdate::fmt_http_date(SystemTime::now() - Duration::from_secs(120));
        assert_eq!(retry_after(busy, &headers(&past), max), None);
    }

    #[test]
    fn statuses_classify_as_documented() {
        assert_eq!(HttpClassifier::status(StatusCode::OK), Outcome::Success);
        assert_eq!(
            HttpClassifier::status(StatusCode::NOT_MODIFIED),
            Outcome::Success
        );
        assert_eq!(
            HttpClassifier::status(StatusCode::SERVICE_UNAVAILABLE),
            Outcome::Overload
        );
        assert_eq!(
            HttpClassifier::status(StatusCode::TOO_MANY_REQUESTS),
            Outcome::Overload
        );
        assert_eq!(
            HttpClassifier::status(StatusCode::GATEWAY_TIMEOUT),
            Outcome::Overload
        );
        assert_eq!(
            HttpClassifier::status(StatusCode::NOT_FOUND),
            Outcome::Ignore
        );
        assert_eq!(
            HttpClassifier::status(StatusCode::INTERNAL_SERVER_ERROR),
            Outcome::Ignore
        );
        let err: Result<Response<()>, ()> = Err(());
        assert_eq!(HttpClassifier.classify(&err), Outcome::Overload);
    }
}
