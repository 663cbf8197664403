//! The future shared by the middlewares that admit inside the response
//! future: take a permit under a policy, then call the inner service.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower_service::Service;

use crate::{Admit, Limiter, Permit, Policy, Rejected};

pin_project! {
    /// Admits, then calls; resolves to the inner outcome with its permit,
    /// or to the rejection. Waiting happens here, not in `poll_ready`, so a
    /// dropped request leaves the queue at once and a refused one leaves
    /// nothing queued behind it.
    pub(crate) struct AdmitCall<S, Req>
    where
        S: Service<Req>,
    {
        admit: Admit,
        call: Option<(S, Req)>,
        permit: Option<Permit>,
        timed: bool,
        admitted_at: Option<Instant>,
        #[pin]
        future: Option<S::Future>,
    }
}

impl<S, Req> AdmitCall<S, Req>
where
    S: Service<Req> + Clone,
{
    /// Takes the ready `inner` (leaving a clone in its place, as
    /// `poll_ready` readied the original) and starts admission. With
    /// `timed`, the moment of admission is read from the clock.
    pub(crate) fn start(
        limiter: &Limiter,
        policy: &Policy,
        inner: &mut S,
        request: Req,
        timed: bool,
    ) -> Self {
        let clone = inner.clone();
        let ready = std::mem::replace(inner, clone);
        Self {
            admit: limiter.admit(policy),
            call: Some((ready, request)),
            permit: None,
            timed,
            admitted_at: None,
            future: None,
        }
    }
}

/// What an admitted request came to: the inner outcome, its permit, and
/// when it was admitted if the call was timed.
pub(crate) type Admitted<S, Req> = (
    Result<<S as Service<Req>>::Response, <S as Service<Req>>::Error>,
    Permit,
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
            let permit = ready!(Pin::new(&mut *this.admit).poll(cx))?;
            *this.permit = Some(permit);
            *this.admitted_at = this.timed.then(Instant::now);
            let (mut inner, request) = this.call.take().expect("admitted once");
            this.future.set(Some(inner.call(request)));
        }
        let future = this.future.as_pin_mut().expect("called after admission");
        let outcome = ready!(future.poll(cx));
        let permit = this
            .permit
            .take()
            .expect("AdmitCall polled after completion");
        Poll::Ready(Ok((outcome, permit, *this.admitted_at)))
    }
}
