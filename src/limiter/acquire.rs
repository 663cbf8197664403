use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::time::Instant;

use super::dispatch::{Class, DispatchWait};
use super::observe::Stopwatch;
use super::shared::Shared;
use super::{Limiter, Order, Partition, Permit, Policy, Reason, Rejected};

type Waiting = Pin<Box<dyn Future<Output = Result<Permit, Rejected>> + Send>>;

/// A request's way to a permit under a [`Policy`]: see
/// [`Limiter::acquire`](crate::Limiter::acquire).
///
/// It resolves at once when a permit is free or the policy refuses; only
/// a request that has to queue allocates. Dropping it while queued leaves
/// the queue at once and takes no permit.
#[must_use = "futures do nothing unless polled"]
pub struct Acquire {
    state: State,
}

enum State {
    Decided(Option<Result<Permit, Rejected>>),
    Waiting(Waiting),
}

impl Acquire {
    pub(super) fn new(shared: &Arc<Shared>, policy: &Policy, partition: Option<Partition>) -> Self {
        if let Some(mut permit) = shared.try_acquire(partition) {
            if let Some(partition) = partition {
                permit.join(partition);
            }
            return Self::decided(Ok(permit));
        }
        let Some(place) = shared.enter_queue(policy.max_waiting(), partition) else {
            let reason = match policy.max_waiting() {
                Some(0) if shared.held_until().is_some() => Reason::Held,
                Some(0) => Reason::Full,
                _ => Reason::QueueFull,
            };
            if reason != Reason::Held {
                shared.claim(partition);
            }
            let rejected = Rejected::new(reason, shared.limit(), Default::default());
            shared.on_rejected(&rejected);
            return Self::decided(Err(rejected));
        };
        let shared = Arc::clone(shared);
        let lifo = policy.order() == Order::Lifo;
        // On a partitioned limiter every wait is dispatched, so shares hold;
        // otherwise only LIFO needs the dispatcher.
        let class = match shared.partitions.get() {
            Some(_) => Some(Class {
                lifo,
                partition: Some(partition),
            }),
            None => lifo.then_some(Class {
                lifo,
                partition: None,
            }),
        };
        let timeout = policy.wait_timeout();
        let waiting = async move {
            let _place = place;
            let since = Instant::now();
            let permit = async {
                match class {
                    None => Arc::clone(&shared).acquire_queued().await,
                    Some(class) => DispatchWait::new(Arc::clone(&shared), class).await,
                }
            };
            let outcome = match timeout {
                None => Ok(permit.await),
                Some(timeout) => tokio::time::timeout(timeout, permit).await.map_err(|_| {
                    shared.claim(partition);
                    Rejected::new(Reason::TimedOut, shared.limit(), since.elapsed())
                }),
            };
            shared.on_waited(Stopwatch::at(since), &outcome);
            outcome
        };
        Self {
            state: State::Waiting(Box::pin(waiting)),
        }
    }

    /// An admission already refused, for rules checked before the limit.
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    pub(crate) fn rejected(limiter: &Limiter, rejected: Rejected) -> Self {
        limiter.shared.on_rejected(&rejected);
        Self::decided(Err(rejected))
    }

    fn decided(outcome: Result<Permit, Rejected>) -> Self {
        Self {
            state: State::Decided(Some(outcome)),
        }
    }
}

impl Future for Acquire {
    type Output = Result<Permit, Rejected>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.state {
            State::Decided(outcome) => {
                Poll::Ready(outcome.take().expect("Acquire polled after completion"))
            }
            State::Waiting(waiting) => waiting.as_mut().poll(cx),
        }
    }
}

impl std::fmt::Debug for Acquire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.state {
            State::Decided(_) => "decided",
            State::Waiting(_) => "waiting",
        };
        f.debug_struct("Acquire").field("state", &state).finish()
    }
}
