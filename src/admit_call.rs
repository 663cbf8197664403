//! The future shared by the middlewares that admit inside the response
//! future: take a permit under a policy, then call the inner service.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

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
        // When admission first had to wait, to tell the request how long.
        queued_at: Option<Instant>,
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
            queued_at: None,
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

impl<S, Req> AdmitCall<S, Req>
where
    S: Service<Req>,
{
    /// The request, while it has not been handed to the inner service (for
    /// example after a refusal).
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    pub(crate) fn request(self: Pin<&mut Self>) -> Option<&Req> {
        self.project().call.as_ref().map(|(_, request)| request)
    }

    /// Polls as the future does, calling `on_admit` with the request, its
    /// permit and how long it waited (zero if a permit was free at once)
    /// just before the inner service is called.
    pub(crate) fn poll_admit(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        on_admit: impl FnOnce(&mut Req, &Permit, Duration),
    ) -> Poll<Result<Admitted<S, Req>, Rejected>> {
        let mut this = self.project();
        if this.future.is_none() {
            let mut waited = Duration::ZERO;
            if let Some(admit) = this.admit.as_mut() {
                let permit = match Pin::new(admit).poll(cx) {
                    Poll::Ready(permit) => permit?,
                    Poll::Pending => {
                        this.queued_at.get_or_insert_with(Instant::now);
                        return Poll::Pending;
                    }
                };
                *this.admitted_at = this.timed.then(Instant::now);
                if let Some(queued_at) = *this.queued_at {
                    waited = queued_at.elapsed();
                }
                *this.permit = Some(permit);
            }
            let (mut inner, mut request) =
                this.call.take().expect("AdmitCall polled after completion");
            if let Some(permit) = this.permit.as_ref() {
                on_admit(&mut request, permit, waited);
            }
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

impl<S, Req> Future for AdmitCall<S, Req>
where
    S: Service<Req>,
{
    type Output = Result<Admitted<S, Req>, Rejected>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.poll_admit(cx, |_, _, _| {})
    }
}
