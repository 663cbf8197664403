//! Waiting for a permit from inside `poll_ready`.

use std::task::{ready, Context, Poll};

use tokio_util::sync::ReusableBoxFuture;

use super::{Limiter, Permit};

/// The wait of one service value for its next permit.
///
/// The queued acquisition is boxed once per service value and the box is
/// reused for every later wait, so a service that waits often allocates
/// once. A permit is taken without any allocation when one is free.
#[derive(Default)]
pub(crate) struct PollPermit {
    wait: Option<ReusableBoxFuture<'static, Permit>>,
    queued: bool,
}

impl PollPermit {
    /// Takes a permit now, or queues for one and returns `Pending`; the
    /// queued place is kept across calls until the permit arrives.
    #[inline]
    pub(crate) fn poll_acquire(&mut self, limiter: &Limiter, cx: &mut Context<'_>) -> Poll<Permit> {
        if !self.queued {
            if let Some(permit) = limiter.try_acquire() {
                return Poll::Ready(permit);
            }
            let wait = std::sync::Arc::clone(&limiter.shared).wait();
            match &mut self.wait {
                Some(boxed) => boxed.set(wait),
                None => self.wait = Some(ReusableBoxFuture::new(wait)),
            }
            self.queued = true;
        }
        let wait = self.wait.as_mut().expect("a queued wait is boxed");
        let permit = ready!(wait.poll(cx));
        self.queued = false;
        Poll::Ready(permit)
    }
}

impl std::fmt::Debug for PollPermit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PollPermit")
            .field("queued", &self.queued)
            .finish()
    }
}
