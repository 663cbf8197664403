//! Multi-threaded stress: hundreds of tasks share one limit through clones
//! of one `ConcurrencyLimit`, cancelling at random while they wait for a
//! permit and while their request runs, some aborted from outside, with the
//! limit moved at random in one of the runs.
//!
//! Nothing here depends on speed: every task does a bounded number of
//! requests and waits by `yield_now`, never by the clock (a 120 s watchdog
//! only turns a hang into a failure). The inner service
//! counts the requests inside it with atomics, and the peak it saw is
//! checked against the limits in force.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::{yield_now, JoinSet};
use tower::{Service, ServiceExt};
use tower_concurrency::{ConcurrencyLimit, Limiter};

/// What the inner service saw.
#[derive(Debug, Default)]
struct Stats {
    /// Requests inside the inner service now.
    current: AtomicUsize,
    /// The most requests inside it at once.
    peak: AtomicUsize,
    /// Requests that got into the inner service.
    started: AtomicUsize,
    /// Requests whose response completed.
    completed: AtomicUsize,
    /// Requests dropped while in flight.
    cancelled_in_flight: AtomicUsize,
    /// Waits for a permit given up.
    cancelled_waiting: AtomicUsize,
}

/// Leaves `current` when the request ends, however it ends.
struct Inside(Arc<Stats>);

impl Inside {
    fn enter(stats: &Arc<Stats>) -> Self {
        let now = stats.current.fetch_add(1, SeqCst) + 1;
        stats.peak.fetch_max(now, SeqCst);
        stats.started.fetch_add(1, SeqCst);
        Self(Arc::clone(stats))
    }
}

impl Drop for Inside {
    fn drop(&mut self) {
        self.0.current.fetch_sub(1, SeqCst);
    }
}

/// The inner service: a request is a number of times to yield; it counts
/// itself inside from `call` until its future finishes or is dropped.
#[derive(Clone)]
struct Tracked(Arc<Stats>);

type BoxFuture = Pin<Box<dyn Future<Output = Result<(), Infallible>> + Send>>;

impl Service<u64> for Tracked {
    type Response = ();
    type Error = Infallible;
    type Future = BoxFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, yields: u64) -> BoxFuture {
        let inside = Inside::enter(&self.0);
        Box::pin(async move {
            for _ in 0..yields {
                yield_now().await;
            }
            drop(inside);
            Ok(())
        })
    }
}

/// A small deterministic PRNG (xorshift64), one per task.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x % n
    }

    fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }
}

async fn yields(n: u64) {
    for _ in 0..n {
        yield_now().await;
    }
}

/// One client: `requests` requests through clones of `svc`, each wait for
/// a permit or request possibly given up after a few yields.
async fn client(svc: ConcurrencyLimit<Tracked>, seed: u64, requests: usize, stats: Arc<Stats>) {
    let mut rng = Rng::new(seed);
    // Some clients keep one service for all their requests (a given-up
    // wait then keeps its place in line), the others take a fresh clone per
    // request (a given-up wait leaves the line with the dropped clone).
    let mut kept = rng.one_in(2).then(|| svc.clone());
    for _ in 0..requests {
        let mut fresh;
        let svc = match kept.as_mut() {
            Some(svc) => svc,
            None => {
                fresh = svc.clone();
                &mut fresh
            }
        };
        if rng.one_in(4) {
            let patience = rng.below(30);
            tokio::select! {
                ready = svc.ready() => { ready.unwrap(); }
                () = yields(patience) => {
                    stats.cancelled_waiting.fetch_add(1, SeqCst);
                    continue;
                }
            }
        } else {
            svc.ready().await.unwrap();
        }
        let response = svc.call(rng.below(6));
        if rng.one_in(5) {
            let patience = rng.below(6);
            tokio::select! {
                biased;
                done = response => {
                    done.unwrap();
                    stats.completed.fetch_add(1, SeqCst);
                }
                () = yields(patience) => {
                    stats.cancelled_in_flight.fetch_add(1, SeqCst);
                }
            }
        } else {
            response.await.unwrap();
            stats.completed.fetch_add(1, SeqCst);
        }
        yields(rng.below(3)).await;
    }
}

/// Rounds of each load test, each with other seeds.
const ROUNDS: u64 = 4;
/// Clients per round.
const TASKS: u64 = 300;
/// Requests per client.
const REQUESTS: usize = 6;

/// Spawns `TASKS` clients on `svc` (seeded from `round`), aborts every
/// seventh one after a while, and waits for all of them. Returns how many
/// were aborted before they finished.
async fn run_clients(svc: &ConcurrencyLimit<Tracked>, round: u64, stats: &Arc<Stats>) -> usize {
    let mut set = JoinSet::new();
    let mut handles = Vec::new();
    for i in 0..TASKS {
        let seed = round * TASKS + i;
        let handle = set.spawn(client(svc.clone(), seed, REQUESTS, Arc::clone(stats)));
        if i % 7 == 3 {
            handles.push(handle);
        }
    }
    yields(20).await;
    for handle in handles {
        handle.abort();
    }
    let mut aborted = 0;
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(()) => {}
            Err(e) if e.is_cancelled() => aborted += 1,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
    aborted
}

/// Fails the test instead of hanging it if `work` never ends (a lost
/// wake-up or a livelock). The bound is a safety net only: each run takes a
/// fraction of a second, and nothing is asserted about how long it took.
async fn watchdog<F: Future>(work: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(120), work)
        .await
        .expect("stuck for 120 s: lost wake-up or livelock")
}

/// Everything given back: nothing in flight or waiting, all permits free,
/// and exactly `limit` of them can be taken.
fn assert_at_rest(limiter: &Limiter, stats: &Stats) {
    assert_eq!(stats.current.load(SeqCst), 0);
    assert_eq!(limiter.in_flight(), 0, "{limiter:?}");
    assert_eq!(limiter.waiting(), 0, "{limiter:?}");
    assert_eq!(limiter.available(), limiter.limit(), "{limiter:?}");
    let taken: Vec<_> = std::iter::from_fn(|| limiter.try_acquire()).collect();
    assert_eq!(taken.len(), limiter.limit());
}

/// A fixed limit of 8 under 300 cancelling clients on two threads: the
/// inner service never sees more than 8 requests at once, does see 8, and
/// every permit comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixed_limit_is_never_exceeded_and_is_reached() {
    for round in 0..ROUNDS {
        let stats = Arc::new(Stats::default());
        let svc = ConcurrencyLimit::new(Tracked(Arc::clone(&stats)), 8);
        let limiter = svc.limiter().clone();

        let aborted = watchdog(run_clients(&svc, round, &stats)).await;
        drop(svc);

        let peak = stats.peak.load(SeqCst);
        assert!(peak <= 8, "round {round}: peak {peak} above the limit of 8");
        assert_eq!(peak, 8, "round {round}: {TASKS} clients never filled 8");
        assert!(stats.completed.load(SeqCst) > 0);
        assert!(stats.cancelled_waiting.load(SeqCst) > 0);
        assert!(stats.cancelled_in_flight.load(SeqCst) > 0);
        eprintln!("round {round}: aborted {aborted} clients; {stats:?}");
        assert_at_rest(&limiter, &stats);
    }
}

/// The same load while a controller moves the limit at random between 4
/// and 12: the inner service never sees more than the highest limit set,
/// and everything is given back at the limit last set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_limit_is_never_exceeded_and_everything_is_given_back() {
    for round in 0..ROUNDS {
        let stats = Arc::new(Stats::default());
        let svc = ConcurrencyLimit::new(Tracked(Arc::clone(&stats)), 8);
        let limiter = svc.limiter().clone();
        let done = Arc::new(AtomicBool::new(false));

        let controller = tokio::spawn({
            let limiter = limiter.clone();
            let done = Arc::clone(&done);
            async move {
                let mut rng = Rng::new(u64::MAX - round);
                let mut highest = limiter.limit();
                let mut moves = 0;
                // At least 10 moves whatever the scheduling: a fast round
                // must not end before the limit has moved.
                while (!done.load(SeqCst) || moves < 10) && moves < 5_000 {
                    let new = 4 + rng.below(9) as usize;
                    highest = highest.max(new);
                    limiter.set_limit(new);
                    moves += 1;
                    yields(1 + rng.below(8)).await;
                }
                (highest, moves)
            }
        });

        let aborted = watchdog(run_clients(&svc, round, &stats)).await;
        done.store(true, SeqCst);
        let (highest, moves) = controller.await.unwrap();
        drop(svc);

        let peak = stats.peak.load(SeqCst);
        assert!(highest <= 12);
        assert!(
            peak <= highest,
            "round {round}: peak {peak} above the highest limit {highest}"
        );
        assert!(moves > 1, "round {round}: the limit never moved");
        assert!(stats.completed.load(SeqCst) > 0);
        eprintln!(
            "round {round}: moved the limit {moves} times (highest {highest}), \
             aborted {aborted} clients; {stats:?}"
        );
        assert_at_rest(&limiter, &stats);
    }
}

/// Waiters aborted from outside while queued leave the line without taking
/// a permit: with the only permit held, 200 tasks queue, half of them are
/// aborted, and when the permit comes back the other half all get through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborted_waiters_leave_the_line_without_a_permit() {
    let stats = Arc::new(Stats::default());
    let mut svc = ConcurrencyLimit::new(Tracked(Arc::clone(&stats)), 1);
    let limiter = svc.limiter().clone();
    svc.ready().await.unwrap();

    // Each task adds a permit here once its first `poll_ready` pended.
    let queued = Arc::new(Semaphore::new(0));
    let released = Arc::new(AtomicBool::new(false));
    let early = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    for _ in 0..200 {
        let mut clone = svc.clone();
        let queued = Arc::clone(&queued);
        let released = Arc::clone(&released);
        let early = Arc::clone(&early);
        handles.push(tokio::spawn(async move {
            let mut first = true;
            std::future::poll_fn(|cx| {
                let polled = clone.poll_ready(cx);
                if std::mem::take(&mut first) {
                    assert!(polled.is_pending(), "the only permit is held");
                    queued.add_permits(1);
                }
                polled
            })
            .await
            .unwrap();
            if !released.load(SeqCst) {
                early.fetch_add(1, SeqCst);
            }
            clone.call(2).await.unwrap();
        }));
    }
    let _all = watchdog(queued.acquire_many(200)).await.unwrap();
    assert_eq!(limiter.waiting(), 200);
    assert_eq!(limiter.in_flight(), 1);

    for handle in handles.iter().step_by(2) {
        handle.abort();
    }
    released.store(true, SeqCst);
    drop(svc);

    let mut finished = Vec::new();
    for (i, handle) in handles.into_iter().enumerate() {
        match watchdog(handle).await {
            Ok(()) => finished.push(i),
            Err(e) => assert!(e.is_cancelled() && i % 2 == 0, "task {i}: {e}"),
        }
    }
    assert_eq!(
        early.load(SeqCst),
        0,
        "a waiter got a permit while it was held"
    );
    assert_eq!(finished.len(), 100, "finished: {finished:?}");
    assert_eq!(stats.started.load(SeqCst), finished.len());
    assert_eq!(stats.peak.load(SeqCst), 1);
    assert_at_rest(&limiter, &stats);
}
