//! `ConcurrencyLimit` composed with tower's middleware: load shedding,
//! timeouts on either side of the limit, a buffer in front of it, and
//! retries. Timed tests run on tokio's paused clock, so a deadline of
//! seconds passes instantly and exactly.

use std::convert::Infallible;
use std::future::{pending, ready, Future, Ready};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::load_shed::error::Overloaded;
use tower::retry::Policy;
use tower::timeout::error::Elapsed;
use tower::{service_fn, Service, ServiceBuilder, ServiceExt};
use tower_concurrency::ConcurrencyLimitLayer;

/// What the inner service is asked to do.
enum Job {
    /// Answer at once.
    Now,
    /// Answer once the sender is used or dropped.
    Until(oneshot::Receiver<()>),
    /// Never answer.
    Never,
}

/// The inner service of most tests (`service_fn(work)`).
async fn work(job: Job) -> Result<&'static str, Infallible> {
    Ok(match job {
        Job::Now => "now",
        Job::Until(gate) => {
            let _ = gate.await;
            "until"
        }
        Job::Never => pending().await,
    })
}

/// A deadline used by the paused-clock tests.
const D: Duration = Duration::from_secs(5);

/// Asserts that `elapsed` is the deadline `d`, give or take the timer's
/// 1 ms resolution (the paused clock jumps straight to the deadline).
fn assert_deadline(elapsed: Duration, d: Duration) {
    assert!(
        elapsed >= d && elapsed <= d + Duration::from_millis(1),
        "expected {d:?}, took {elapsed:?}"
    );
}

/// With `load_shed()` outside a limit of 1 and the permit held by a
/// request whose inner future is blocked, a request through a fresh clone
/// is refused at once (in its first poll) with tower's `Overloaded`, and
/// leaves nothing queued; once the holder completes, the next fresh clone
/// (as axum makes per request) is admitted.
#[tokio::test]
async fn load_shed_outside_limit_refuses_at_once_with_overloaded_then_admits_a_fresh_clone() {
    let limit = ConcurrencyLimitLayer::new(1);
    let limiter = limit.limiter().clone();
    let stack = ServiceBuilder::new()
        .load_shed()
        .layer(limit)
        .service(service_fn(work));

    let (release, gate) = oneshot::channel();
    let mut holder = stack.clone();
    let held = holder.ready().await.unwrap().call(Job::Until(gate));
    assert_eq!(limiter.in_flight(), 1);

    let refused = stack.clone().oneshot(Job::Now).now_or_never();
    let error = refused
        .expect("shed in the first poll, without waiting")
        .unwrap_err();
    assert!(error.is::<Overloaded>(), "not Overloaded: {error}");
    assert_eq!(limiter.waiting(), 0, "the dropped clone left the queue");
    assert_eq!(limiter.in_flight(), 1);

    release.send(()).unwrap();
    assert_eq!(held.await.unwrap(), "until");
    assert_eq!(limiter.in_flight(), 0);
    assert_eq!(stack.clone().oneshot(Job::Now).await.unwrap(), "now");
    assert_eq!(limiter.in_flight(), 0);
    assert_eq!(limiter.available(), 1);
}

/// ONE long-lived `LoadShed<ConcurrencyLimit<_>>` used for requests in a
/// row: it succeeds, sheds while another request holds the permit (and
/// keeps its place in the limiter's queue), and after the holder completes
/// its own next requests succeed. No permit is lost: at the end nothing is
/// in flight or waiting and the whole limit is available.
#[tokio::test]
async fn long_lived_load_shed_gets_the_released_permit_on_its_next_request() {
    let limit = ConcurrencyLimitLayer::new(1);
    let limiter = limit.limiter().clone();
    let stack = ServiceBuilder::new()
        .load_shed()
        .layer(limit)
        .service(service_fn(work));
    let mut shedder = stack.clone();

    let ok = shedder.ready().await.unwrap().call(Job::Now).await;
    assert_eq!(ok.unwrap(), "now");

    let (release, gate) = oneshot::channel();
    let mut holder = stack.clone();
    let held = holder.ready().await.unwrap().call(Job::Until(gate));

    let shed = shedder.ready().await.unwrap().call(Job::Now).await;
    assert!(shed.unwrap_err().is::<Overloaded>());
    assert_eq!(limiter.waiting(), 1, "the shed service stays queued");

    release.send(()).unwrap();
    assert_eq!(held.await.unwrap(), "until");
    drop(holder);
    assert_eq!(
        (limiter.in_flight(), limiter.available()),
        (1, 0),
        "the released permit went to the shed service's queued wait"
    );

    for _ in 0..3 {
        let ok = shedder.ready().await.unwrap().call(Job::Now).await;
        assert_eq!(ok.unwrap(), "now");
    }
    assert_eq!(limiter.in_flight(), 0);
    assert_eq!(limiter.waiting(), 0);
    assert_eq!(limiter.available(), limiter.limit());
}

/// The design question, observed: after a long-lived shedding service
/// (A) shed once, the permit the holder gives back is handed straight to
/// A's queued acquisition (tokio's semaphore serves its queue first), and
/// stays parked there until A is polled again. A SECOND, distinct
/// shedding service (B, a fresh clone) trying in between finds nothing
/// free and is shed too, although no request is running:
/// `in_flight() == 1`, `available() == 0`, `waiting() == 1`. Polling A
/// again uses the parked permit; dropping A instead gives it back.
#[tokio::test]
async fn released_permit_is_parked_in_a_shed_services_queue_so_another_service_is_shed() {
    let limit = ConcurrencyLimitLayer::new(1);
    let limiter = limit.limiter().clone();
    let stack = ServiceBuilder::new()
        .load_shed()
        .layer(limit)
        .service(service_fn(work));

    for round in ["A polled again", "A dropped"] {
        let mut a = stack.clone();
        let (release, gate) = oneshot::channel();
        let mut holder = stack.clone();
        let held = holder.ready().await.unwrap().call(Job::Until(gate));
        let shed = a.ready().await.unwrap().call(Job::Now).await;
        assert!(shed.unwrap_err().is::<Overloaded>(), "{round}");
        release.send(()).unwrap();
        assert_eq!(held.await.unwrap(), "until");

        // Nothing runs, yet the only permit is taken.
        assert_eq!(limiter.in_flight(), 1, "{round}");
        assert_eq!(limiter.available(), 0, "{round}");
        assert_eq!(
            limiter.waiting(),
            1,
            "{round}: A's acquisition is still queued"
        );

        let b = stack.clone().oneshot(Job::Now).now_or_never();
        let error = b.expect("B is shed at once").unwrap_err();
        assert!(error.is::<Overloaded>(), "{round}: B is shed: {error}");
        assert_eq!(limiter.waiting(), 1, "{round}: B left no queued wait");

        if round == "A polled again" {
            let ok = a.ready().await.unwrap().call(Job::Now).await;
            assert_eq!(ok.unwrap(), "now", "A takes the parked permit");
        } else {
            drop(a);
        }
        assert_eq!(limiter.in_flight(), 0, "{round}");
        assert_eq!(limiter.waiting(), 0, "{round}");
        assert_eq!(limiter.available(), 1, "{round}");
        let ok = stack.clone().oneshot(Job::Now).await;
        assert_eq!(ok.unwrap(), "now", "{round}: B's next try is admitted");
    }
}

/// For comparison: `tower::limit::ConcurrencyLimit` parks the permit the
/// same way (its `PollSemaphore` also keeps the queued acquisition of a
/// service that was not ready), so a second shedding service is shed
/// while the long-lived one that shed first is not polled again.
#[tokio::test]
async fn tower_limit_parks_a_released_permit_for_a_shed_service_the_same_way() {
    let stack = ServiceBuilder::new()
        .load_shed()
        .layer(tower::limit::ConcurrencyLimitLayer::new(1))
        .service(service_fn(work));
    let mut a = stack.clone();
    let (release, gate) = oneshot::channel();
    let mut holder = stack.clone();
    let held = holder.ready().await.unwrap().call(Job::Until(gate));
    let shed = a.ready().await.unwrap().call(Job::Now).await;
    assert!(shed.unwrap_err().is::<Overloaded>());
    release.send(()).unwrap();
    assert_eq!(held.await.unwrap(), "until");

    let b = stack.clone().oneshot(Job::Now).now_or_never();
    let error = b.expect("B is shed at once").unwrap_err();
    assert!(
        error.is::<Overloaded>(),
        "B is shed under tower too: {error}"
    );

    let ok = a.ready().await.unwrap().call(Job::Now).await;
    assert_eq!(ok.unwrap(), "now");
}

/// `layer(limit).timeout(d)`: the deadline covers only the work. A request
/// whose inner future never completes fails with `Elapsed` after exactly
/// `d`, its permit is back the moment the error is returned, and the next
/// request is admitted at once.
#[tokio::test(start_paused = true)]
async fn timeout_inside_limit_gives_the_permit_back_when_the_deadline_fires() {
    let limit = ConcurrencyLimitLayer::new(1);
    let limiter = limit.limiter().clone();
    let svc = ServiceBuilder::new()
        .layer(limit)
        .timeout(D)
        .service(service_fn(work));

    let start = Instant::now();
    let error = svc.clone().oneshot(Job::Never).await.unwrap_err();
    assert!(error.is::<Elapsed>(), "not Elapsed: {error}");
    assert_deadline(start.elapsed(), D);
    assert_eq!(limiter.in_flight(), 0);
    assert_eq!(limiter.available(), 1);

    let next = svc.clone().oneshot(Job::Now).now_or_never();
    assert_eq!(next.expect("admitted at once").unwrap(), "now");
    assert_eq!(limiter.in_flight(), 0);
}

/// `timeout(d)` then the limit, observed: tower's `Timeout` starts its
/// deadline in `call` and passes `poll_ready` straight through, so the
/// deadline does NOT cover the wait for a permit. A request queued behind
/// a held permit is still waiting (and counted in `waiting()`) after ten
/// times `d`; once the permit is back it is admitted and succeeds, and
/// from then on `d` covers its work (a request that never completes fails
/// with `Elapsed` exactly `d` after it was admitted).
#[tokio::test(start_paused = true)]
async fn timeout_outside_limit_covers_the_work_but_not_the_wait_for_a_permit() {
    let limit = ConcurrencyLimitLayer::new(1);
    let limiter = limit.limiter().clone();
    let svc = ServiceBuilder::new()
        .timeout(D)
        .layer(limit)
        .service(service_fn(work));

    let held = limiter.try_acquire().unwrap();
    let queued = tokio::spawn(svc.clone().oneshot(Job::Now));
    tokio::time::sleep(D * 10).await;
    assert!(
        !queued.is_finished(),
        "no deadline while waiting for a permit"
    );
    assert_eq!(limiter.waiting(), 1);

    drop(held);
    assert_eq!(queued.await.unwrap().unwrap(), "now");
    assert_eq!(limiter.waiting(), 0);
    assert_eq!(limiter.in_flight(), 0);

    let admitted = Instant::now();
    let error = svc.clone().oneshot(Job::Never).await.unwrap_err();
    assert!(error.is::<Elapsed>(), "not Elapsed: {error}");
    assert_deadline(admitted.elapsed(), D);
    assert_eq!(limiter.in_flight(), 0);
}

/// A deadline that does cover the wait for a permit: `tokio::time::timeout`
/// around the whole `oneshot`. The queued request gives up after exactly
/// `d`, and dropping it leaves the limiter's queue (`waiting()` back to 0)
/// without taking the permit that is given back later.
#[tokio::test(start_paused = true)]
async fn deadline_around_oneshot_covers_the_permit_wait_and_leaves_the_queue() {
    let limit = ConcurrencyLimitLayer::new(1);
    let limiter = limit.limiter().clone();
    let svc = ServiceBuilder::new().layer(limit).service(service_fn(work));

    let held = limiter.try_acquire().unwrap();
    let start = Instant::now();
    let gave_up = tokio::time::timeout(D, svc.clone().oneshot(Job::Now)).await;
    assert!(gave_up.is_err(), "still no permit after the deadline");
    assert_deadline(start.elapsed(), D);
    assert_eq!(limiter.waiting(), 0);
    assert_eq!(limiter.in_flight(), 1, "only the held permit");

    drop(held);
    assert_eq!(limiter.in_flight(), 0);
    assert_eq!(limiter.available(), 1);
}

/// `timeout(d).buffer(n)` then the limit, observed: the buffer is ready
/// while it has room, so `call` (and the deadline) start at once and the
/// caller gets `Elapsed` after exactly `d` while waiting for a permit. But
/// the buffer's worker, the only direct caller of the limit, stays queued
/// for the abandoned request (`waiting() == 1`); the permit given back
/// later is parked in the worker's acquisition, and the next request
/// through the buffer uses it.
#[tokio::test(start_paused = true)]
async fn timeout_around_buffer_covers_the_wait_but_the_worker_keeps_its_queue_place() {
    let limit = ConcurrencyLimitLayer::new(1);
    let limiter = limit.limiter().clone();
    let svc = ServiceBuilder::new()
        .timeout(D)
        .buffer(8)
        .layer(limit)
        .service(service_fn(work));

    let held = limiter.try_acquire().unwrap();
    let start = Instant::now();
    let error = svc.clone().oneshot(Job::Now).await.unwrap_err();
    assert!(error.is::<Elapsed>(), "not Elapsed: {error}");
    assert_deadline(start.elapsed(), D);
    assert_eq!(limiter.waiting(), 1, "the worker is still queued");

    drop(held);
    assert_eq!(
        (limiter.in_flight(), limiter.available()),
        (1, 0),
        "the permit is parked in the worker's queued acquisition"
    );
    assert_eq!(svc.clone().oneshot(Job::Now).await.unwrap(), "now");
    assert_eq!(limiter.in_flight(), 0);
    assert_eq!(limiter.waiting(), 0);
    assert_eq!(limiter.available(), 1);
}

/// Counts how many are inside at once and the peak.
#[derive(Clone)]
struct Gauge(Arc<GaugeState>);

struct GaugeState {
    now: watch::Sender<usize>,
    peak: AtomicUsize,
}

/// One call inside a [`Gauge`]; leaves it when dropped.
struct Inside(Gauge);

impl Gauge {
    fn new() -> Self {
        Self(Arc::new(GaugeState {
            now: watch::Sender::new(0),
            peak: AtomicUsize::new(0),
        }))
    }

    fn enter(&self) -> Inside {
        self.0.now.send_modify(|now| {
            *now += 1;
            self.0.peak.fetch_max(*now, SeqCst);
        });
        Inside(self.clone())
    }

    fn now(&self) -> usize {
        *self.0.now.borrow()
    }

    fn peak(&self) -> usize {
        self.0.peak.load(SeqCst)
    }

    fn subscribe(&self) -> watch::Receiver<usize> {
        self.0.now.subscribe()
    }
}

impl Drop for Inside {
    fn drop(&mut self) {
        let Inside(Gauge(state)) = self;
        state.now.send_modify(|now| *now -= 1);
    }
}

/// Upper bound on the waits of the real-time test, so that a broken limit
/// fails instead of hanging; never a timing assumption.
async fn guard<F: Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(30), future)
        .await
        .unwrap_or_else(|_| panic!("failure guard: gave up waiting for {what}"))
}

/// `buffer(100)` then a limit of 4: 50 concurrent callers queue in the
/// buffer, exactly 4 calls run at once (the peak reaches 4 and never
/// exceeds it), and the buffer's worker is the one caller waiting on the
/// limiter. Calls block on a gate opened once 4 are inside.
#[tokio::test]
async fn buffer_outside_limit_queues_callers_and_runs_at_most_the_limit() {
    const LIMIT: usize = 4;
    const CALLERS: usize = 50;
    let limit = ConcurrencyLimitLayer::new(LIMIT);
    let limiter = limit.limiter().clone();
    let gauge = Gauge::new();
    let gate = Arc::new(watch::Sender::new(false));
    let inner = {
        let (gauge, gate) = (gauge.clone(), gate.clone());
        service_fn(move |n: usize| {
            let (inside, mut open) = (gauge.enter(), gate.subscribe());
            async move {
                open.wait_for(|open| *open).await.unwrap();
                drop(inside);
                Ok::<_, Infallible>(n)
            }
        })
    };
    let svc = ServiceBuilder::new()
        .buffer(100)
        .layer(limit)
        .service(inner);

    let mut calls = JoinSet::new();
    for n in 0..CALLERS {
        calls.spawn(svc.clone().oneshot(n));
    }
    let mut inside = gauge.subscribe();
    guard("the limit to fill", inside.wait_for(|now| *now >= LIMIT))
        .await
        .unwrap();
    guard("the worker to queue on the limiter", async {
        while limiter.waiting() != 1 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert_eq!(gauge.now(), LIMIT);
    assert_eq!(limiter.in_flight(), LIMIT);

    gate.send_replace(true);
    let answers = guard("all calls", calls.join_all()).await;
    let mut answers: Vec<usize> = answers.into_iter().map(Result::unwrap).collect();
    answers.sort_unstable();
    assert_eq!(answers, (0..CALLERS).collect::<Vec<_>>());
    assert_eq!(gauge.peak(), LIMIT);
    assert_eq!(limiter.in_flight(), 0);
}

/// The inner service's one retryable failure.
#[derive(Debug, PartialEq)]
struct Transient;

/// Retries a `Transient` failure once.
#[derive(Clone)]
struct RetryTransientOnce {
    retries_left: usize,
}

impl<Req: Clone, Res> Policy<Req, Res, Transient> for RetryTransientOnce {
    type Future = Ready<()>;

    fn retry(&mut self, _: &mut Req, result: &mut Result<Res, Transient>) -> Option<Ready<()>> {
        match result {
            Err(Transient) if self.retries_left > 0 => {
                self.retries_left -= 1;
                Some(ready(()))
            }
            _ => None,
        }
    }

    fn clone_request(&mut self, request: &Req) -> Option<Req> {
        Some(request.clone())
    }
}

/// `retry(policy)` then a limit of 1: each attempt takes its own permit.
/// The first attempt fails with `Transient`, gives its permit back as its
/// response future completes, and the retry acquires the one permit again
/// (with a limit of 1 it could not run otherwise); both attempts run with
/// exactly one permit in flight, and none is left afterwards.
#[tokio::test]
async fn retry_outside_limit_takes_a_permit_per_attempt() {
    let limit = ConcurrencyLimitLayer::new(1);
    let limiter = limit.limiter().clone();
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let inner = {
        let (limiter, attempts) = (limiter.clone(), attempts.clone());
        service_fn(move |n: u32| {
            let mut attempts = attempts.lock().unwrap();
            attempts.push(limiter.in_flight());
            let result = if attempts.len() == 1 {
                Err(Transient)
            } else {
                Ok(n)
            };
            ready(result)
        })
    };
    let svc = ServiceBuilder::new()
        .retry(RetryTransientOnce { retries_left: 1 })
        .layer(limit)
        .service(inner);

    assert_eq!(svc.oneshot(7).await, Ok(7));
    assert_eq!(
        *attempts.lock().unwrap(),
        [1, 1],
        "two attempts, each holding one permit"
    );
    assert_eq!(limiter.in_flight(), 0);
    assert_eq!(limiter.waiting(), 0);
    assert_eq!(limiter.available(), 1);
}
