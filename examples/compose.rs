//! Where to put the limit among other tower middleware, measured.
//!
//! Each case builds a `ServiceBuilder` stack around a `tower::service_fn`
//! backend (no HTTP) that counts how many requests it runs at once. In a
//! `ServiceBuilder` the first layer is the outermost one.
//!
//! - (a) `load_shed()` then the limit: requests beyond the limit are refused
//!   at once with `Overloaded` instead of waiting.
//! - (b) `buffer(100)` then `limit(10)`: 111 requests are taken at once
//!   (100 in the buffer, 1 in its worker's hands, 10 running); 10 run at a
//!   time.
//! - (c) `timeout` outside or inside the limit: either way tower's deadline
//!   covers only the work, not the wait for a permit; a deadline around the
//!   whole call covers both.
//! - (d) `retry` outside the limit: each attempt takes (and gives back) its
//!   own permit.
//!
//! The tokio clock is paused (`start_paused`): it jumps ahead whenever every
//! task waits, so the times printed are exact and the run takes no real time.
//!
//! Run it with `cargo run --example compose`.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use tokio::time::{sleep, Instant};
use tower::load_shed::error::Overloaded;
use tower::retry::Policy;
use tower::timeout::error::Elapsed;
use tower::{service_fn, BoxError, Service, ServiceBuilder, ServiceExt};
use tower_concurrency::ConcurrencyLimitLayer;

#[tokio::main(flavor = "current_thread", start_paused = true)]
async fn main() {
    load_shed().await;
    buffer().await;
    timeout().await;
    retry().await;
}

async fn load_shed() {
    println!("(a) load_shed() then limit(3): 10 requests at once, 50 ms of work each");
    let seen = Arc::new(Gauge::default());
    let service = ServiceBuilder::new()
        .load_shed()
        .layer(ConcurrencyLimitLayer::new(3))
        .service(backend(&seen, ms(50)));

    let start = Instant::now();
    // A fresh clone per request, as axum does: a shed request leaves no
    // place in the limit's queue behind.
    let results = join_all((0..10).map(|n| {
        let call = service.clone().oneshot(n);
        async move { (call.await, start.elapsed()) }
    }))
    .await;
    let served: Vec<_> = results.iter().filter(|(r, _)| r.is_ok()).collect();
    let shed: Vec<_> = results
        .iter()
        .filter(|(r, _)| r.as_ref().is_err_and(|e| e.is::<Overloaded>()))
        .collect();
    println!(
        "    {} served, done at {} ms; {} refused with Overloaded at {} ms; backend peak {}",
        served.len(),
        latest(served.iter().map(|(_, t)| *t)),
        shed.len(),
        latest(shed.iter().map(|(_, t)| *t)),
        seen.peak()
    );
    println!("    Without load_shed the other 7 would wait for a permit instead.\n");
}

async fn buffer() {
    println!("(b) buffer(100) then limit(10): 120 requests at once, 10 ms of work each");
    let seen = Arc::new(Gauge::default());
    let limit = ConcurrencyLimitLayer::new(10);
    let limiter = limit.limiter().clone();
    let service = ServiceBuilder::new()
        .buffer(100)
        .layer(limit)
        .service(backend(&seen, ms(10)));

    let start = Instant::now();
    let calls = join_all((0..120).map(|n| {
        let mut service = service.clone();
        async move {
            // Ready once the buffer has room for the request.
            service.ready().await.unwrap();
            let accepted = start.elapsed();
            service.call(n).await.unwrap();
            accepted
        }
    }));
    let mid_run = async {
        sleep(ms(5)).await;
        (limiter.in_flight(), limiter.waiting())
    };
    let (accepted, (in_flight, waiting)) = tokio::join!(calls, mid_run);
    let at_once = accepted.iter().filter(|t| t.is_zero()).count();
    println!(
        "    {at_once} accepted at 0 ms (10 running, 1 in the buffer worker's hands, 100 in the \
         buffer),\n    the other {} by {} ms; backend peak {}; all answered by {} ms",
        accepted.len() - at_once,
        latest(accepted.into_iter()),
        seen.peak(),
        start.elapsed().as_millis()
    );
    println!(
        "    Mid-run the limiter shows {in_flight} in flight, {waiting} waiting: only the buffer's \
         worker waits\n    at the limit; the other requests queue in the buffer.\n"
    );
}

async fn timeout() {
    println!("(c) timeout(100 ms) and limit(1): 3 requests at once, 40 ms of work each");
    let seen = Arc::new(Gauge::default());
    let outside = ServiceBuilder::new()
        .timeout(ms(100))
        .layer(ConcurrencyLimitLayer::new(1))
        .service(backend(&seen, ms(40)));
    let inside = ServiceBuilder::new()
        .layer(ConcurrencyLimitLayer::new(1))
        .timeout(ms(100))
        .service(backend(&seen, ms(40)));
    let whole_call = ServiceBuilder::new()
        .layer(ConcurrencyLimitLayer::new(1))
        .service(backend(&seen, ms(40)))
        .map_err(BoxError::from);
    println!(
        "    timeout then limit:                     {}",
        three_at_once(outside, None).await
    );
    println!(
        "    limit then timeout:                     {}",
        three_at_once(inside, None).await
    );
    println!(
        "    tokio::time::timeout around `oneshot`:  {}",
        three_at_once(whole_call, Some(ms(100))).await
    );
    println!(
        "    tower's Timeout starts its clock in `call`, and the limit makes a request wait in\n    \
         `poll_ready`, before `call`: in either order the deadline covers only the 40 ms of work.\n    \
         To bound the wait for a permit too, time the whole call, readiness included.\n"
    );
}

/// Sends requests 1, 2, 3 at once, each under `deadline` if there is one;
/// says how each ended and when.
async fn three_at_once<S>(service: S, deadline: Option<Duration>) -> String
where
    S: Service<u32, Response = u32, Error = BoxError> + Clone,
{
    let start = Instant::now();
    let outcomes = join_all((1..=3).map(|n| {
        let call = service.clone().oneshot(n);
        async move {
            let result = match deadline {
                Some(deadline) => tokio::time::timeout(deadline, call)
                    .await
                    .unwrap_or_else(|elapsed| Err(elapsed.into())),
                None => call.await,
            };
            let outcome = match result {
                Ok(_) => "ok",
                Err(e) if e.is::<Elapsed>() || e.is::<tokio::time::error::Elapsed>() => "timed out",
                Err(_) => "failed",
            };
            format!("#{n} {outcome} at {} ms", start.elapsed().as_millis())
        }
    }))
    .await;
    outcomes.join(", ")
}

async fn retry() {
    println!("(d) retry() then limit(1): callers A and B at once; each attempt takes 10 ms,");
    println!("    the first two attempts of each fail");
    let limit = ConcurrencyLimitLayer::new(1);
    let limiter = limit.limiter().clone();
    let start = Instant::now();
    let flaky = service_fn(move |job: Job| {
        let in_flight = limiter.in_flight();
        async move {
            let attempt = job.attempts.fetch_add(1, SeqCst) + 1;
            println!(
                "    {:>3} ms  {} attempt {attempt}, holding a permit ({in_flight} in flight)",
                start.elapsed().as_millis(),
                job.caller
            );
            sleep(ms(10)).await;
            if attempt < 3 {
                Err("try again")
            } else {
                Ok(attempt)
            }
        }
    });
    let service = ServiceBuilder::new()
        .retry(UpTo(2))
        .layer(limit)
        .service(flaky);

    let results = join_all(['A', 'B'].map(|caller| {
        let job = Job {
            caller,
            attempts: Arc::default(),
        };
        service.clone().oneshot(job)
    }))
    .await;
    let attempts: usize = results.into_iter().map(|r| r.unwrap()).sum();
    println!(
        "    Both served after {attempts} attempts in all, one permit each: every attempt gave its \
         permit back\n    and queued again, so A's retries did not shut B out. (limit then retry \
         would hold\n    one permit across all of a caller's attempts.)"
    );
}

/// One caller's request; the attempt count is shared by its retries.
#[derive(Clone)]
struct Job {
    caller: char,
    attempts: Arc<AtomicUsize>,
}

/// Retries a failed request up to this many times.
#[derive(Clone)]
struct UpTo(usize);

impl<Req: Clone, Res, E> Policy<Req, Res, E> for UpTo {
    type Future = std::future::Ready<()>;

    fn retry(&mut self, _: &mut Req, result: &mut Result<Res, E>) -> Option<Self::Future> {
        if result.is_err() && self.0 > 0 {
            self.0 -= 1;
            Some(std::future::ready(()))
        } else {
            None
        }
    }

    fn clone_request(&mut self, request: &Req) -> Option<Req> {
        Some(request.clone())
    }
}

/// A backend where each request takes `work`; `seen` counts how many run at once.
fn backend(
    seen: &Arc<Gauge>,
    work: Duration,
) -> impl Service<u32, Response = u32, Error = Infallible, Future: Send> + Clone + Send {
    let seen = Arc::clone(seen);
    service_fn(move |n: u32| {
        let seen = Arc::clone(&seen);
        async move {
            let _running = seen.enter();
            sleep(work).await;
            Ok(n)
        }
    })
}

/// Requests running now, and the most that ran at once.
#[derive(Default)]
struct Gauge {
    now: AtomicUsize,
    peak: AtomicUsize,
}

impl Gauge {
    fn enter(self: &Arc<Self>) -> Running {
        let now = self.now.fetch_add(1, SeqCst) + 1;
        self.peak.fetch_max(now, SeqCst);
        Running(Arc::clone(self))
    }

    fn peak(&self) -> usize {
        self.peak.load(SeqCst)
    }
}

/// One running request; leaves the gauge when dropped (done or cancelled).
struct Running(Arc<Gauge>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, SeqCst);
    }
}

fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

/// The latest of some times, in whole ms.
fn latest(times: impl Iterator<Item = Duration>) -> u128 {
    times.max().unwrap_or_default().as_millis()
}
