//! gRPC over the HTTP layer: refusals answered as gRPC statuses, and the
//! `grpc-status` and `grpc-retry-pushback-ms` of responses read.

use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use http::{HeaderMap, Response};

use crate::adaptive::Outcome;
use crate::Rejected;

const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
const GRPC_PUSHBACK: HeaderName = HeaderName::from_static("grpc-retry-pushback-ms");

/// The `grpc-status` a refused gRPC call gets (see
/// [`Rejection::grpc_status`](super::Rejection::grpc_status)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GrpcStatus {
    /// `UNAVAILABLE` (14): the service is busy; clients may retry, also on
    /// another server. The default.
    #[default]
    Unavailable,
    /// `RESOURCE_EXHAUSTED` (8): a quota or a limit ran out.
    ResourceExhausted,
}

impl GrpcStatus {
    /// The numeric code sent in `grpc-status`.
    pub fn code(self) -> u32 {
        match self {
            Self::Unavailable => 14,
            Self::ResourceExhausted => 8,
        }
    }
}

/// Whether `headers` say the message is gRPC: `content-type` is
/// `application/grpc`, alone or followed by `+` (such as `+proto`) or `;`.
/// gRPC-Web (`application/grpc-web`) is not: it gets HTTP answers.
pub(super) fn is_grpc(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(CONTENT_TYPE) else {
        return false;
    };
    let bytes = value.as_bytes();
    let prefix = b"application/grpc";
    bytes.len() >= prefix.len()
        && bytes[..prefix.len()].eq_ignore_ascii_case(prefix)
        && matches!(bytes.get(prefix.len()), None | Some(b'+' | b';'))
}

/// A trailers-only gRPC answer to a refused call: `200`, no body, the
/// status, the message and the pushback in the headers.
pub(super) fn refusal<B: From<Bytes>>(
    status: GrpcStatus,
    rejected: &Rejected,
    retry_after_seconds: Option<u64>,
) -> Response<B> {
    let mut response = Response::new(B::from(Bytes::new()));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert(GRPC_STATUS, HeaderValue::from(status.code()));
    // The refusals' texts are printable ASCII without `%`, so they are
    // already valid percent-encoded `grpc-message` values.
    if let Ok(message) = HeaderValue::try_from(rejected.to_string()) {
        headers.insert(GRPC_MESSAGE, message);
    }
    if let Some(seconds) = retry_after_seconds {
        headers.insert(
            GRPC_PUSHBACK,
            HeaderValue::from(seconds.saturating_mul(1000)),
        );
    }
    response
}

/// The `grpc-status` code in `headers` (or trailers), if any.
pub(super) fn status(headers: &HeaderMap) -> Option<u32> {
    headers.get(GRPC_STATUS)?.to_str().ok()?.trim().parse().ok()
}

/// What a `grpc-status` code says about the limit: `UNAVAILABLE` (14),
/// `RESOURCE_EXHAUSTED` (8) and `DEADLINE_EXCEEDED` (4) are overload, `OK`
/// is success, any other failure says nothing about capacity.
pub(super) fn outcome(code: u32) -> Outcome {
    match code {
        0 => Outcome::Success,
        4 | 8 | 14 => Outcome::Overload,
        _ => Outcome::Ignore,
    }
}

/// How long `headers` (or trailers) ask the client to hold off:
/// `grpc-retry-pushback-ms`, at most `max`. A negative or unreadable value
/// (gRPC's "do not retry") asks nothing.
pub(super) fn pushback(headers: &HeaderMap, max: Duration) -> Option<Duration> {
    let millis: u64 = headers
        .get(GRPC_PUSHBACK)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let wait = Duration::from_millis(millis);
    (!wait.is_zero()).then_some(wait.min(max))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(name: HeaderName, value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(name, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn content_types_that_are_grpc() {
        for yes in [
            "application/grpc",
            "application/grpc+proto",
            "Application/GRPC+json",
            "application/grpc;charset=utf-8",
        ] {
            assert!(is_grpc(&with(CONTENT_TYPE, yes)), "{yes}");
        }
        for no in [
            "application/grpc-web",
            "application/grpc-web+proto",
            "application/json",
            "text/plain",
        ] {
            assert!(!is_grpc(&with(CONTENT_TYPE, no)), "{no}");
        }
        assert!(!is_grpc(&HeaderMap::new()));
    }

    #[test]
    fn codes_classify_as_documented() {
        assert_eq!(outcome(0), Outcome::Success);
        for overload in [4, 8, 14] {
            assert_eq!(outcome(overload), Outcome::Overload);
        }
        for other in [1, 2, 3, 5, 7, 12, 13, 16, 99] {
            assert_eq!(outcome(other), Outcome::Ignore);
        }
        assert_eq!(status(&with(GRPC_STATUS, "14")), Some(14));
        assert_eq!(status(&with(GRPC_STATUS, "x")), None);
    }

    #[test]
    fn pushback_is_read_capped_and_never_panics() {
        let max = Duration::from_secs(10);
        assert_eq!(
            pushback(&with(GRPC_PUSHBACK, "250"), max),
            Some(Duration::from_millis(250))
        );
        assert_eq!(pushback(&with(GRPC_PUSHBACK, "60000"), max), Some(max));
        assert_eq!(pushback(&with(GRPC_PUSHBACK, "-1"), max), None);
        assert_eq!(pushback(&with(GRPC_PUSHBACK, "0"), max), None);
        assert_eq!(
            pushback(&with(GRPC_PUSHBACK, "18446744073709551615"), Duration::MAX),
            Some(Duration::from_millis(u64::MAX))
        );
    }
}
