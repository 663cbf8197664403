use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::Instant;

use super::classify::hold_for;
use super::grpc;
use super::keyed::KeyPermit;
use crate::{Limiter, Permit};

pin_project! {
    /// The response body of [`HttpLimit`](super::HttpLimit): the inner body,
    /// holding the request's permit until it ends, or the body of a refusal.
    ///
    /// Frames, trailers, [`is_end_stream`](Body::is_end_stream) and
    /// [`size_hint`](Body::size_hint) are the inner body's. With
    /// [`Release::BodyEnd`](super::Release::BodyEnd) the permit is given back
    /// when the body ends (its last frame, an error, or `is_end_stream`
    /// after a frame) or is dropped, for example when the client hangs up
    /// mid-stream.
    ///
    /// For gRPC, the trailers are read on their way: their `grpc-status`
    /// is the sample an adaptive limiter learns from (when the head had
    /// none), and with
    /// [`honor_retry_after`](super::HttpLimitLayer::honor_retry_after) their
    /// `grpc-retry-pushback-ms` holds new admissions.
    ///
    /// The [`Default`] body is empty (tower-http's `Timeout` answers with
    /// it).
    pub struct ResponseBody<B> {
        #[pin]
        inner: Inner<B>,
    }
}

pin_project! {
    #[project = InnerProj]
    enum Inner<B> {
        Admitted {
            #[pin]
            body: B,
            held: Option<Held>,
        },
        Refused {
            data: Option<Bytes>,
        },
    }
}

impl<B> ResponseBody<B> {
    pub(super) fn admitted(body: B, held: Option<Held>) -> Self {
        Self {
            inner: Inner::Admitted { body, held },
        }
    }

    /// Whether this body still holds its request's permit.
    pub fn has_permit(&self) -> bool {
        matches!(&self.inner, Inner::Admitted { held: Some(_), .. })
    }
}

impl<B> Default for ResponseBody<B> {
    fn default() -> Self {
        Self {
            inner: Inner::Refused { data: None },
        }
    }
}

impl<B> From<Bytes> for ResponseBody<B> {
    fn from(data: Bytes) -> Self {
        Self {
            inner: Inner::Refused {
                data: (!data.is_empty()).then_some(data),
            },
        }
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body,
    B::Data: From<Bytes>,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match self.project().inner.project() {
            InnerProj::Admitted { mut body, held } => {
                let frame = ready!(body.as_mut().poll_frame(cx));
                let ended = match &frame {
                    Some(Ok(frame)) => {
                        if let (Some(trailers), Some(held)) = (frame.trailers_ref(), held.as_mut())
                        {
                            held.trailers(trailers);
                        }
                        body.is_end_stream()
                    }
                    Some(Err(_)) | None => true,
                };
                if ended {
                    held.take();
                }
                Poll::Ready(frame)
            }
            InnerProj::Refused { data } => {
                Poll::Ready(data.take().map(|data| Ok(Frame::data(data.into()))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Admitted { body, .. } => body.is_end_stream(),
            Inner::Refused { data } => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Admitted { body, .. } => body.size_hint(),
            Inner::Refused { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}

impl<B> std::fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody")
            .field("has_permit", &self.has_permit())
            .finish_non_exhaustive()
    }
}

/// What a response holds until it is done: its permit and its key's
/// count, timed when `Retry-After` is estimated, and for gRPC what to do
/// with the trailers.
pub(super) struct Held {
    permit: Permit,
    _key: Option<KeyPermit>,
    admitted_at: Option<Instant>,
    trailers: Option<Box<Trailers>>,
}

/// What a gRPC response's trailers are read for.
pub(super) struct Trailers {
    /// Record the sample from their `grpc-status`.
    pub(super) classify: bool,
    /// Honour their `grpc-retry-pushback-ms`, at most this long.
    pub(super) pushback: Option<(Limiter, std::time::Duration)>,
}

impl Held {
    pub(super) fn new(
        permit: Permit,
        key: Option<KeyPermit>,
        admitted_at: Option<Instant>,
        trailers: Option<Box<Trailers>>,
    ) -> Self {
        Self {
            permit,
            _key: key,
            admitted_at,
            trailers,
        }
    }

    fn trailers(&mut self, trailers: &http::HeaderMap) {
        let Some(watch) = self.trailers.take() else {
            return;
        };
        if watch.classify {
            if let Some(code) = grpc::status(trailers) {
                self.permit.record(grpc::outcome(code));
            }
        }
        if let Some((limiter, max)) = &watch.pushback {
            if let Some(wait) = grpc::pushback(trailers, *max) {
                hold_for(limiter, wait);
            }
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(at) = self.admitted_at {
            self.permit.record_hold(at.elapsed());
        }
    }
}
