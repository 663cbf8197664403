//! `PolicyLimit` around plain (non-HTTP) services: refusals as boxed
//! `Rejected` errors, permits given back whatever ends a request, bounded
//! queues with timeouts, FIFO/LIFO order, cancellation, no hoarding, and
//! composition under `tower::ServiceBuilder` with a buffer outside.
//!
//! Timing and ordering tests run under paused time; nothing depends on the
//! wall clock.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_test::{assert_pending, task};
use tower::{service_fn, BoxError, Service, ServiceBuilder, ServiceExt};
use tower_concurrency::{ConcurrencyLimitLayer, Limiter, Policy, Reason, Rejected};

/// A failure guard for awaits that must finish; under paused time it fires
/// as soon as the runtime would otherwise idle forever.
const GUARD: Duration = Duration::from_secs(60);

async fn guard<F: Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(GUARD, future)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// Lets other tasks run until `cond` holds, without moving paused time.
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..10_000 {
        if cond() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("never happened: {what}");
}

fn echo() -> impl Service<u32, Response = u32, Error = Infallible, Future: Send> + Clone + Send {
    service_fn(|x: u32| async move { Ok::<_, Infallible>(x) })
}

fn rejected(err: &BoxError) -> &Rejected {
    err.downcast_ref::<Rejected>()
        .unwrap_or_else(|| panic!("expected a Rejected, got {err:?}"))
}

/// An inner service whose calls are counted, announce themselves with a
/// gate, and finish only when the test opens that gate.
#[derive(Clone)]
struct Gated {
    entered: mpsc::UnboundedSender<(u32, oneshot::Sender<()>)>,
    calls: Arc<AtomicUsize>,
}

type Entered = mpsc::UnboundedReceiver<(u32, oneshot::Sender<()>)>;

fn gated() -> (Gated, Entered, Arc<AtomicUsize>) {
    let (entered, rx) = mpsc::unbounded_channel();
    let calls = Arc::new(AtomicUsize::new(0));
    let service = Gated {
        entered,
        calls: Arc::clone(&calls),
    };
    (service, rx, calls)
}

impl Service<u32> for Gated {
    type Response = u32;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<u32, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, id: u32) -> Self::Future {
        self.calls.fetch_add(1, SeqCst);
        let (open, gate) = oneshot::channel();
        self.entered.send((id, open)).expect("the test listens");
        Box::pin(async move {
            let _ = gate.await;
            Ok(id)
        })
    }
}

/// When every permit is taken, `Policy::reject` fails the call with a
/// `tower::BoxError` that downcasts to `Rejected { Full, limit 1 }`.
#[tokio::test]
async fn reject_when_full_fails_with_a_boxed_rejected_full() {
    let layer = ConcurrencyLimitLayer::new(1).policy(Policy::reject());
    let limiter = layer.limiter().clone();
    let svc = ServiceBuilder::new().layer(layer).service(echo());

    let held = limiter.try_acquire().unwrap();
    // The error type is tower's BoxError (and the crate's alias of it).
    let err: BoxError = svc.clone().oneshot(1).await.unwrap_err();
    let again: tower_concurrency::BoxError = err;
    let refusal = rejected(&again);
    assert_eq!(refusal.reason(), Reason::Full);
    assert_eq!(refusal.limit(), 1);
    assert_eq!(refusal.waited(), Duration::ZERO);
    assert_eq!(again.to_string(), "concurrency limit of 1 reached");
    assert_eq!(limiter.waiting(), 0, "a refusal leaves nothing queued");

    // `Rejected` is a std error of its own and boxes like any other.
    let reboxed: BoxError = Box::new(refusal.clone());
    assert!(reboxed.is::<Rejected>());

    drop(held);
    assert_eq!(svc.oneshot(2).await.unwrap(), 2);
}

#[derive(Debug, PartialEq)]
struct Boom(u32);

impl fmt::Display for Boom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "boom {}", self.0)
    }
}

impl std::error::Error for Boom {}

/// An inner error is boxed as it is (not wrapped, not mistaken for a
/// refusal) and its permit comes back.
#[tokio::test]
async fn inner_errors_pass_through_as_box_error() {
    let layer = ConcurrencyLimitLayer::new(1).policy(Policy::reject());
    let limiter = layer.limiter().clone();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(|x: u32| async move { Err::<u32, _>(Boom(x)) }));

    let err = svc.clone().oneshot(7).await.unwrap_err();
    assert!(!err.is::<Rejected>());
    assert_eq!(err.downcast_ref::<Boom>(), Some(&Boom(7)));
    assert_eq!(limiter.in_flight(), 0);

    // An inner service that already fails with BoxError keeps its error.
    let limiter = Limiter::new(1);
    let svc = ServiceBuilder::new()
        .layer(ConcurrencyLimitLayer::from_limiter(limiter.clone()).policy(Policy::reject()))
        .service(service_fn(|x: u32| async move {
            Err::<u32, BoxError>(Box::new(Boom(x)))
        }));
    let err = svc.oneshot(8).await.unwrap_err();
    assert_eq!(err.downcast_ref::<Boom>(), Some(&Boom(8)));
    assert_eq!(limiter.in_flight(), 0);
}

/// The permit is held while the inner future runs and given back when the
/// response is ready.
#[tokio::test]
async fn permit_released_when_the_response_completes() {
    let layer = ConcurrencyLimitLayer::new(1).policy(Policy::reject());
    let limiter = layer.limiter().clone();
    let (inner, mut entered, _) = gated();
    let svc = ServiceBuilder::new().layer(layer).service(inner);

    let mut running = task::spawn(svc.clone().oneshot(1));
    assert_pending!(running.poll());
    let (_, gate) = entered.try_recv().expect("admitted and called");
    assert_eq!(limiter.in_flight(), 1);
    let err = svc.clone().oneshot(2).await.unwrap_err();
    assert_eq!(rejected(&err).reason(), Reason::Full);

    gate.send(()).unwrap();
    assert!(running.is_woken());
    assert_eq!(running.await.unwrap(), 1);
    assert_eq!(limiter.in_flight(), 0);
    assert_eq!(limiter.available(), 1);
}

/// Dropping the response future mid-call (admitted, inner still running)
/// gives the permit back at once.
#[tokio::test]
async fn permit_released_when_the_response_future_is_dropped() {
    let layer = ConcurrencyLimitLayer::new(1).policy(Policy::reject());
    let limiter = layer.limiter().clone();
    let (inner, mut entered, calls) = gated();
    let svc = ServiceBuilder::new().layer(layer).service(inner);

    let mut running = task::spawn(svc.clone().oneshot(1));
    assert_pending!(running.poll());
    assert_eq!(calls.load(SeqCst), 1);
    assert_eq!(limiter.in_flight(), 1);
    drop(running);
    assert_eq!(limiter.in_flight(), 0);
    assert_eq!(limiter.available(), 1);
    // The gate's sender side went away with the inner future.
    let (_, gate) = entered.try_recv().unwrap();
    assert!(gate.is_closed());
}

/// A panic in the inner future (on a spawned task) or in the inner `call`
/// (caught with `catch_unwind`) gives the permit back, and the service
/// keeps working.
#[tokio::test]
async fn permit_released_when_the_inner_service_panics() {
    let layer = ConcurrencyLimitLayer::new(1).policy(Policy::reject());
    let limiter = layer.limiter().clone();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(|x: u32| {
            assert_ne!(x, 1, "inner call panics on purpose");
            async move {
                assert_ne!(x, 2, "inner future panics on purpose");
                Ok::<_, Infallible>(x)
            }
        }));

    // Panic inside the inner future, on its own task.
    let joined = tokio::spawn(svc.clone().oneshot(2)).await;
    assert!(joined.unwrap_err().is_panic());
    assert_eq!(limiter.in_flight(), 0);
    assert_eq!(limiter.available(), 1);

    // Panic inside the inner `call`, which runs once admitted.
    let caught = AssertUnwindSafe(svc.clone().oneshot(1))
        .catch_unwind()
        .await;
    assert!(caught.is_err());
    assert_eq!(limiter.in_flight(), 0);
    assert_eq!(limiter.available(), 1);

    assert_eq!(svc.oneshot(3).await.unwrap(), 3);
}

/// A bounded queue with a timeout, FIFO and LIFO: beyond `max` waiters a
/// request is refused at once with `QueueFull`; the queued ones are refused
/// with `TimedOut` after exactly the timeout, without calling the inner
/// service.
#[tokio::test(start_paused = true)]
async fn bounded_queue_refuses_when_full_and_times_out_after_exactly_the_timeout() {
    let timeout = Duration::from_millis(100);
    for policy in [Policy::fifo(2), Policy::lifo(2)] {
        let layer = ConcurrencyLimitLayer::new(1).policy(policy.timeout(timeout));
        let limiter = layer.limiter().clone();
        let (inner, _entered, calls) = gated();
        let svc = ServiceBuilder::new().layer(layer).service(inner);

        let held = limiter.try_acquire().unwrap();
        let start = Instant::now();
        let a = tokio::spawn(svc.clone().oneshot(1));
        let b = tokio::spawn(svc.clone().oneshot(2));
        until("two queued", || limiter.waiting() == 2).await;

        let err = svc.clone().oneshot(3).await.unwrap_err();
        let refusal = rejected(&err);
        assert_eq!(refusal.reason(), Reason::QueueFull, "{policy:?}");
        assert_eq!(refusal.limit(), 1);
        assert_eq!(refusal.waited(), Duration::ZERO);
        assert_eq!(start.elapsed(), Duration::ZERO, "refused at once");

        for queued in [a, b] {
            let err = guard("a queued request", queued)
                .await
                .unwrap()
                .unwrap_err();
            let refusal = rejected(&err);
            assert_eq!(refusal.reason(), Reason::TimedOut, "{policy:?}");
            assert_eq!(refusal.waited(), timeout);
        }
        assert_eq!(start.elapsed(), timeout);
        assert_eq!(limiter.waiting(), 0);
        assert_eq!(
            calls.load(SeqCst),
            0,
            "no refused request reached the inner service"
        );
        drop(held);
        assert_eq!(limiter.available(), 1);
    }
}

/// A queued request whose permit frees before its deadline is admitted
/// then, and runs.
#[tokio::test(start_paused = true)]
async fn queued_request_admitted_before_its_deadline_runs() {
    let layer =
        ConcurrencyLimitLayer::new(1).policy(Policy::fifo(1).timeout(Duration::from_millis(100)));
    let limiter = layer.limiter().clone();
    let svc = ServiceBuilder::new().layer(layer).service(echo());

    let held = limiter.try_acquire().unwrap();
    let start = Instant::now();
    let queued = tokio::spawn(svc.oneshot(5));
    until("queued", || limiter.waiting() == 1).await;
    tokio::time::sleep(Duration::from_millis(60)).await;
    drop(held);
    assert_eq!(
        guard("the queued request", queued).await.unwrap().unwrap(),
        5
    );
    assert_eq!(start.elapsed(), Duration::from_millis(60));
    assert_eq!(limiter.in_flight(), 0);
    assert_eq!(limiter.waiting(), 0);
}

/// Queues 4 requests behind a held permit, releases it, and returns the
/// order in which the inner service was entered (each request holds the
/// permit until the test opens its gate).
async fn served_order(policy: Policy) -> Vec<u32> {
    let layer = ConcurrencyLimitLayer::new(1).policy(policy);
    let limiter = layer.limiter().clone();
    let (inner, mut entered, calls) = gated();
    let svc = ServiceBuilder::new().layer(layer).service(inner);

    let held = limiter.try_acquire().unwrap();
    let mut tasks = Vec::new();
    for id in 0..4u32 {
        tasks.push(tokio::spawn(svc.clone().oneshot(id)));
        until("queued in order", || limiter.waiting() == id as usize + 1).await;
    }
    assert_eq!(calls.load(SeqCst), 0);

    drop(held);
    let mut served = Vec::new();
    for _ in 0..4 {
        let (id, gate) = guard("the next admission", entered.recv()).await.unwrap();
        assert_eq!(limiter.in_flight(), 1, "one at a time");
        served.push(id);
        gate.send(()).unwrap();
    }
    for (id, task) in tasks.into_iter().enumerate() {
        assert_eq!(task.await.unwrap().unwrap(), id as u32);
    }
    assert_eq!(limiter.in_flight(), 0);
    assert_eq!(limiter.waiting(), 0);
    served
}

/// With a FIFO queue, each freed permit goes to the oldest queued request.
#[tokio::test(start_paused = true)]
async fn fifo_queue_admits_the_oldest_request_next() {
    assert_eq!(served_order(Policy::fifo(10)).await, vec![0, 1, 2, 3]);
}

/// With a LIFO queue, each freed permit goes to the newest queued request.
#[tokio::test(start_paused = true)]
async fn lifo_queue_admits_the_newest_request_next() {
    assert_eq!(served_order(Policy::lifo(10)).await, vec![3, 2, 1, 0]);
}

/// Dropping a queued response future leaves the queue at once, takes no
/// permit and never calls the inner service (wait, FIFO and LIFO).
#[tokio::test]
async fn dropping_a_queued_response_future_leaves_the_queue_and_takes_no_permit() {
    for policy in [
        Policy::wait(),
        Policy::fifo(4),
        Policy::lifo(4).timeout(Duration::from_secs(30)),
    ] {
        let layer = ConcurrencyLimitLayer::new(1).policy(policy);
        let limiter = layer.limiter().clone();
        let (inner, _entered, calls) = gated();
        let mut svc = ServiceBuilder::new().layer(layer).service(inner);

        let held = limiter.try_acquire().unwrap();
        let future = svc.ready().await.unwrap().call(1);
        let mut queued = task::spawn(future);
        assert_pending!(queued.poll());
        assert_eq!(limiter.waiting(), 1, "{policy:?}");

        drop(queued);
        assert_eq!(limiter.waiting(), 0, "{policy:?}: left the queue at once");
        assert_eq!(limiter.in_flight(), 1, "only the held permit is out");
        drop(held);
        assert_eq!(limiter.available(), 1, "{policy:?}: no permit parked");
        assert_eq!(limiter.in_flight(), 0);
        assert_eq!(calls.load(SeqCst), 0);
    }
}

/// One long-lived service value that was refused (at once, or after timing
/// out in the queue) holds nothing afterwards: `poll_ready` reserves no
/// permit, and once the permit is back the same value and a clone are
/// admitted at once.
#[tokio::test(start_paused = true)]
async fn a_long_lived_service_value_hoards_no_permit() {
    for policy in [
        Policy::reject(),
        Policy::fifo(1).timeout(Duration::from_millis(50)),
    ] {
        let layer = ConcurrencyLimitLayer::new(1).policy(policy);
        let limiter = layer.limiter().clone();
        let mut svc = ServiceBuilder::new().layer(layer).service(echo());

        let held = limiter.try_acquire().unwrap();
        let err = svc.ready().await.unwrap().call(1).await.unwrap_err();
        assert!(err.is::<Rejected>(), "{policy:?}");
        drop(held);
        assert_eq!(limiter.available(), 1, "{policy:?}");
        assert_eq!(limiter.waiting(), 0);

        svc.ready().await.unwrap();
        assert_eq!(limiter.available(), 1, "poll_ready reserves nothing");
        let start = Instant::now();
        assert_eq!(svc.call(2).await.unwrap(), 2);
        assert_eq!(svc.clone().oneshot(3).await.unwrap(), 3);
        assert_eq!(start.elapsed(), Duration::ZERO, "admitted at once");
        assert_eq!(limiter.in_flight(), 0);
        assert_eq!(limiter.available(), 1);
    }
}

/// Under `ServiceBuilder` with `buffer` outside: the buffer's worker is not
/// blocked by a queued request (waiting happens in the response future), a
/// refusal comes through the buffer as a `Rejected`, and the queued request
/// runs once the permit is back.
#[tokio::test]
async fn works_under_service_builder_with_buffer_outside() {
    let layer = ConcurrencyLimitLayer::new(1).policy(Policy::fifo(1));
    let limiter = layer.limiter().clone();
    let svc = ServiceBuilder::new().buffer(8).layer(layer).service(echo());

    let held = limiter.try_acquire().unwrap();
    let queued = tokio::spawn(svc.clone().oneshot(1));
    guard("the request to queue", async {
        while limiter.waiting() != 1 {
            tokio::task::yield_now().await;
        }
    })
    .await;

    let err = guard("the refusal", svc.clone().oneshot(2))
        .await
        .unwrap_err();
    assert_eq!(rejected(&err).reason(), Reason::QueueFull);
    assert!(!queued.is_finished());

    drop(held);
    assert_eq!(
        guard("the queued request", queued).await.unwrap().unwrap(),
        1
    );
    assert_eq!(svc.oneshot(3).await.unwrap(), 3);
    assert_eq!(limiter.in_flight(), 0);
    assert_eq!(limiter.waiting(), 0);
}

/// LIFO: when the newest waiter (the one polled last, so the one the shared
/// pump would wake) times out, the older waiters are not stranded: the next
/// freed permit goes to the newest of those left, then the next.
#[tokio::test(start_paused = true)]
async fn lifo_waiters_outlive_a_newer_waiter_that_timed_out() {
    let limiter = Limiter::new(1);
    let (inner, mut entered, calls) = gated();
    let patient = ServiceBuilder::new()
        .layer(ConcurrencyLimitLayer::from_limiter(limiter.clone()).policy(Policy::lifo(8)))
        .service(inner.clone());
    let hasty = ServiceBuilder::new()
        .layer(
            ConcurrencyLimitLayer::from_limiter(limiter.clone())
                .policy(Policy::lifo(8).timeout(Duration::from_millis(100))),
        )
        .service(inner);

    let held = limiter.try_acquire().unwrap();
    let start = Instant::now();
    let old = tokio::spawn(patient.clone().oneshot(0));
    until("old queued", || limiter.waiting() == 1).await;
    let mid = tokio::spawn(patient.clone().oneshot(1));
    until("mid queued", || limiter.waiting() == 2).await;
    let new = tokio::spawn(hasty.oneshot(2));
    until("new queued", || limiter.waiting() == 3).await;

    let err = guard("the newest to time out", new)
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(rejected(&err).reason(), Reason::TimedOut);
    assert_eq!(start.elapsed(), Duration::from_millis(100));
    assert_eq!(limiter.waiting(), 2);

    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(held);
    let mut served = Vec::new();
    for _ in 0..2 {
        let (id, gate) = guard("the next admission", entered.recv()).await.unwrap();
        served.push(id);
        gate.send(()).unwrap();
    }
    assert_eq!(served, vec![1, 0]);
    assert_eq!(guard("mid", mid).await.unwrap().unwrap(), 1);
    assert_eq!(guard("old", old).await.unwrap().unwrap(), 0);
    assert_eq!(calls.load(SeqCst), 2);
    assert_eq!(limiter.available(), 1);
    assert_eq!(limiter.waiting(), 0);
}

/// FIFO and LIFO services sharing one limiter: every waiter is served, one
/// at a time, the FIFO ones oldest first and the LIFO ones newest first,
/// and no permit is lost or parked at the end.
#[tokio::test(start_paused = true)]
async fn fifo_and_lifo_services_on_one_limiter_are_all_served() {
    let limiter = Limiter::new(1);
    let (inner, mut entered, _) = gated();
    let with = |policy| {
        ServiceBuilder::new()
            .layer(ConcurrencyLimitLayer::from_limiter(limiter.clone()).policy(policy))
            .service(inner.clone())
    };
    let (fifo, lifo) = (with(Policy::fifo(8)), with(Policy::lifo(8)));

    let held = limiter.try_acquire().unwrap();
    let mut tasks = Vec::new();
    for id in 0..6u32 {
        let svc = if id % 2 == 0 {
            fifo.clone()
        } else {
            lifo.clone()
        };
        tasks.push(tokio::spawn(svc.oneshot(id)));
        until("queued in order", || limiter.waiting() == id as usize + 1).await;
    }
    drop(held);
    let mut served = Vec::new();
    for _ in 0..6 {
        let (id, gate) = guard("the next admission", entered.recv()).await.unwrap();
        assert_eq!(limiter.in_flight(), 1);
        served.push(id);
        gate.send(()).unwrap();
    }
    let fifo_order: Vec<_> = served.iter().copied().filter(|id| id % 2 == 0).collect();
    let lifo_order: Vec<_> = served.iter().copied().filter(|id| id % 2 == 1).collect();
    assert_eq!(fifo_order, vec![0, 2, 4], "served {served:?}");
    assert_eq!(lifo_order, vec![5, 3, 1], "served {served:?}");
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(limiter.available(), 1);
    assert_eq!(limiter.waiting(), 0);
}

/// Raising the limit while LIFO requests are queued admits the newest ones
/// at once, one per new permit.
#[tokio::test(start_paused = true)]
async fn raising_the_limit_admits_the_newest_lifo_waiters_at_once() {
    let layer = ConcurrencyLimitLayer::new(1).policy(Policy::lifo(8));
    let limiter = layer.limiter().clone();
    let (inner, mut entered, calls) = gated();
    let svc = ServiceBuilder::new().layer(layer).service(inner);

    let held = limiter.try_acquire().unwrap();
    let mut tasks = Vec::new();
    for id in 0..4u32 {
        tasks.push(tokio::spawn(svc.clone().oneshot(id)));
        until("queued in order", || limiter.waiting() == id as usize + 1).await;
    }
    limiter.set_limit(3);
    let mut first = Vec::new();
    let mut gates = Vec::new();
    for _ in 0..2 {
        let (id, gate) = guard("an admission", entered.recv()).await.unwrap();
        first.push(id);
        gates.push(gate);
    }
    first.sort_unstable();
    assert_eq!(first, vec![2, 3]);
    until("two admitted", || limiter.waiting() == 2).await;
    assert_eq!(limiter.in_flight(), 3);
    assert_eq!(calls.load(SeqCst), 2);

    drop(held);
    for gate in gates {
        gate.send(()).unwrap();
    }
    for _ in 0..2 {
        let (_, gate) = guard("an admission", entered.recv()).await.unwrap();
        gate.send(()).unwrap();
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(limiter.available(), 3);
    assert_eq!(limiter.in_flight(), 0);
}
