//! One wait in the semaphore's own queue, cancellable without losing track
//! of the debt.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use pin_project_lite::pin_project;
use tokio::sync::{AcquireError, SemaphorePermit};

use super::shared::Shared;

pin_project! {
    /// Waits for a slot. If it is dropped after the semaphore handed it a
    /// slot but before it was polled, tokio would pass that slot straight
    /// to the next waiter, past a lowered limit's debt; instead the slot is
    /// taken out and given back through [`Shared::release`].
    pub(super) struct Queued<'a, F>
    where
        F: Future<Output = Result<SemaphorePermit<'a>, AcquireError>>,
    {
        #[pin]
        acquire: F,
        shared: &'a Shared,
        done: bool,
    }

    impl<'a, F> PinnedDrop for Queued<'a, F>
    where
        F: Future<Output = Result<SemaphorePermit<'a>, AcquireError>>,
    {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if *this.done {
                return;
            }
            let mut cx = Context::from_waker(Waker::noop());
            if let Poll::Ready(Ok(slot)) = this.acquire.poll(&mut cx) {
                slot.forget();
                this.shared.release();
            }
        }
    }
}

impl<'a, F> Queued<'a, F>
where
    F: Future<Output = Result<SemaphorePermit<'a>, AcquireError>>,
{
    pub(super) fn new(acquire: F, shared: &'a Shared) -> Self {
        Self {
            acquire,
            shared,
            done: false,
        }
    }
}

impl<'a, F> Future for Queued<'a, F>
where
    F: Future<Output = Result<SemaphorePermit<'a>, AcquireError>>,
{
    /// `false` only if the semaphore was closed, which never happens.
    type Output = bool;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<bool> {
        let this = self.project();
        let slot = std::task::ready!(this.acquire.poll(cx));
        *this.done = true;
        Poll::Ready(slot.map(SemaphorePermit::forget).is_ok())
    }
}
