//! The future shared by the middlewares that admit inside the response
//! future: take a permit under a policy, then call the inner service.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower_service::Service;

use crate::{Acquire, Permit, Rejected};

pin_project! {
    /// Admits, then calls; resolves to the inner outcome with its permit,
    /// or to the rejection. Waiting happens here, not in `poll_ready`, so a
    /// dropped request leaves the queue at once and a refused one leaves
    /// nothing queued behind it. Without an `Acquire` (a bypassed request) it
    /// just calls.
    ///
    /// The permit outlives the inner future on every path: the future is
    /// the first field, so it is dropped first when the request is
    /// cancelled, and it is dropped before the permit is handed on when
    /// it completes.
    pub(crate) struct AdmitCall<S, Req>
    where
        S: Service<Req>,
    {
        // Declared first: fields drop in order.
        #[pin]
        future: Option<S::Future>,
        admit: Option<Acquire>,
        call: Option<(S, Req)>,
        permit: Option<Permit>,
        timed: bool,
        admitted_at: Option<Instant>,
    }
}

impl<S, Req> AdmitCall<S, Req>
where
    S: Service<Req> + Clone,
{
    /// Takes the ready `inner` (leaving a clone in its place, as
    /// `poll_ready` readied the original) and starts `admit`, or with
    /// `None` skips admission. With `timed`, the moment of admission is
    /// read from the clock.
    pub(crate) fn start(admit: Option<Acquire>, inner: &mut S, request: Req, timed: bool) -> Self {
        let clone = inner.clone();
        let ready = std::mem::replace(inner, clone);
        Self {
            admit,
            call: Some((ready, request)),
            permit: None,
            timed,
            admitted_at: None,
            future: None,
        }
    }
}

/// What a request that ran came to: the inner outcome, its permit (none if
/// it bypassed the limit), and when it was admitted if the call was timed.
pub(crate) type Admitted<S, Req> = (
    Result<<S as Service<Req>>::Response, <S as Service<Req>>::Error>,
    Option<Permit>,
    Option<Instant>,
);

impl<S, Req> Future for AdmitCall<S, Req>
where
    S: Service<Req>,
{
    type Output = Result<Admitted<S, Req>, Rejected>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if this.future.is_none() {
            if let Some(admit) = this.admit.as_mut() {
                *this.permit = Some(ready!(Pin::new(admit).poll(cx))?);
                *this.admitted_at = this.timed.then(Instant::now);
            }
            let (mut inner, request) = this.call.take().expect("AdmitCall polled after completion");
            this.future.set(Some(inner.call(request)));
        }
        let future = this
            .future
            .as_mut()
            .as_pin_mut()
            .expect("called after admission");
        let outcome = ready!(future.poll(cx));
        // The inner future goes before its permit is handed on.
        this.future.set(None);
        Poll::Ready(Ok((outcome, this.permit.take(), *this.admitted_at)))
    }
}
