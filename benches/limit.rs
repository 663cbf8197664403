//! Side-by-side benchmark: no limit (`bare`), `tower::limit::ConcurrencyLimit`
//! (`tower`) and `tower_concurrency::ConcurrencyLimit` (`ours`).
//!
//! Run with `cargo bench --bench limit -- --measurement-time 3 --warm-up-time 1`.
//!
//! Groups:
//! - `uncontended`: one long-lived service, always a free permit; poll_ready,
//!   call and poll the response once, by hand with a noop waker.
//! - `ready_call`: one long-lived service (limit 64) on a current-thread
//!   runtime, called as `svc.ready().await?.call(x).await?` in a loop, in
//!   front of a `service_fn` answering `ready(Ok(x))`; tower's side is
//!   `GlobalConcurrencyLimitLayer`.
//! - `uncontended_fresh_clone`: the same, but every request goes through a
//!   fresh clone that is dropped afterwards (the axum pattern).
//! - `wait_path_long_lived` / `wait_path_fresh_clone` (tower and ours only):
//!   the queued path alone, single-threaded: limit 1, its permit held
//!   outside, so every request waits, is handed the permit on release and
//!   completes; one long-lived service, or a fresh clone per request.
//! - `contended`: 256 tasks on a 2-worker runtime, limit 8, each task sends
//!   16 requests through its own long-lived clone; the inner future yields
//!   once. Peak concurrency inside the inner service is checked.
//! - `contended_fresh_clone`: the same, but each request uses a fresh clone
//!   (`svc.clone().oneshot(req)`), so most requests queue in a new service.
//!
//! Before the groups, the binary prints a memory table: size of a service
//! value and heap allocations per operation, counted by a global allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use futures::task::noop_waker_ref;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::{Service, ServiceExt};

type Tower<S> = tower::limit::ConcurrencyLimit<S>;
type Ours<S> = tower_concurrency::ConcurrencyLimit<S>;

// ---------------------------------------------------------------------------
// Allocation counting
// ---------------------------------------------------------------------------

/// `System`, counting allocations (and reallocations) while `COUNTING` is on.
/// Off during the timed groups, where it costs one relaxed load per alloc.
struct CountingAlloc;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicUsize = AtomicUsize::new(0);
static ALLOC_BYTES: AtomicUsize = AtomicUsize::new(0);

impl CountingAlloc {
    fn count(size: usize) {
        if COUNTING.load(Relaxed) {
            ALLOCS.fetch_add(1, Relaxed);
            ALLOC_BYTES.fetch_add(size, Relaxed);
        }
    }
}

// SAFETY: every call is forwarded unchanged to `System`; the counters only
// observe sizes.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::count(layout.size());
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Self::count(layout.size());
        // SAFETY: same contract as ours.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        Self::count(new_size);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// Allocations and allocated bytes made while `f` runs; call it only while
/// no other thread allocates (before any runtime or criterion thread).
fn count_allocs<R>(f: impl FnOnce() -> R) -> (usize, usize, R) {
    ALLOCS.store(0, Relaxed);
    ALLOC_BYTES.store(0, Relaxed);
    COUNTING.store(true, Relaxed);
    let out = f();
    COUNTING.store(false, Relaxed);
    (ALLOCS.load(Relaxed), ALLOC_BYTES.load(Relaxed), out)
}

// ---------------------------------------------------------------------------
// Inner services
// ---------------------------------------------------------------------------

/// Always ready; answers with `std::future::Ready`. Zero-sized, so the size
/// of a wrapped service is the wrapper's own overhead.
#[derive(Clone, Copy, Debug)]
struct Echo;

impl Service<u64> for Echo {
    type Response = u64;
    type Error = Infallible;
    type Future = std::future::Ready<Result<u64, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: u64) -> Self::Future {
        std::future::ready(Ok(req))
    }
}

/// Requests inside the contended inner service now, and the most seen.
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

/// The contended inner service: counts itself in `IN_FLIGHT` from `call`
/// until its future completes, and yields once in between.
fn yielding() -> impl Service<u64, Response = u64, Error = Infallible, Future: Send> + Clone + Send
{
    tower::service_fn(|req: u64| {
        let now = IN_FLIGHT.fetch_add(1, Relaxed) + 1;
        PEAK.fetch_max(now, Relaxed);
        async move {
            tokio::task::yield_now().await;
            IN_FLIGHT.fetch_sub(1, Relaxed);
            Ok(req)
        }
    })
}

// ---------------------------------------------------------------------------
// Driving a service by hand
// ---------------------------------------------------------------------------

fn noop_cx() -> Context<'static> {
    Context::from_waker(noop_waker_ref())
}

/// poll_ready (must be ready), call, and poll the response once (must be
/// ready): one request through an always-ready stack.
fn call_ready<S>(svc: &mut S, cx: &mut Context<'_>, req: u64) -> u64
where
    S: Service<u64, Response = u64, Error = Infallible>,
{
    match svc.poll_ready(cx) {
        Poll::Ready(Ok(())) => {}
        _ => panic!("service not ready"),
    }
    let fut = pin!(svc.call(req));
    match fut.poll(cx) {
        Poll::Ready(Ok(out)) => out,
        _ => panic!("response not ready"),
    }
}

// ---------------------------------------------------------------------------
// Memory table
// ---------------------------------------------------------------------------

/// Takes a limit's only permit from outside the service, so that the
/// service has to wait for it; taking it allocates nothing.
trait Hold {
    type Guard;
    fn take(&self) -> Self::Guard;
}

impl Hold for Arc<Semaphore> {
    type Guard = OwnedSemaphorePermit;
    fn take(&self) -> OwnedSemaphorePermit {
        Arc::clone(self)
            .try_acquire_owned()
            .expect("the permit is free")
    }
}

impl Hold for tower_concurrency::Limiter {
    type Guard = tower_concurrency::Permit;
    fn take(&self) -> tower_concurrency::Permit {
        self.try_acquire().expect("the permit is free")
    }
}

fn tower_limit1() -> (Tower<Echo>, Arc<Semaphore>) {
    let sem = Arc::new(Semaphore::new(1));
    (Tower::with_semaphore(Echo, Arc::clone(&sem)), sem)
}

fn ours_limit1() -> (Ours<Echo>, tower_concurrency::Limiter) {
    let limiter = tower_concurrency::Limiter::new(1);
    (Ours::from_limiter(Echo, limiter.clone()), limiter)
}

/// One request through `svc` that must wait: `holder` owns the only
/// permit, so poll_ready is Pending; the permit is given back, poll_ready
/// is Ready, the call completes, and the permit is taken again.
fn waited_request<S, H>(svc: &mut S, holder: &H, held: &mut Option<H::Guard>, cx: &mut Context<'_>)
where
    S: Service<u64, Response = u64, Error = Infallible>,
    H: Hold,
{
    assert!(svc.poll_ready(cx).is_pending(), "must wait: permit is held");
    drop(held.take());
    black_box(call_ready(svc, cx, 7));
    *held = Some(holder.take());
}

struct Row {
    what: &'static str,
    tower: String,
    ours: String,
}

fn per_op(allocs: usize, bytes: usize, n: usize) -> String {
    if allocs == 0 {
        "0".to_string()
    } else {
        format!("{:.3} ({} B)", allocs as f64 / n as f64, bytes / allocs)
    }
}

/// (a) one long-lived service, free permit: allocations per call.
fn allocs_uncontended<S: Service<u64, Response = u64, Error = Infallible>>(
    mut svc: S,
    n: usize,
) -> String {
    let mut cx = noop_cx();
    call_ready(&mut svc, &mut cx, 0);
    let (a, b, ()) = count_allocs(|| {
        for i in 0..n as u64 {
            black_box(call_ready(&mut svc, &mut cx, i));
        }
    });
    per_op(a, b, n)
}

/// (a') fresh clone per request, free permit: allocations per request.
fn allocs_uncontended_clone<S>(proto: S, n: usize) -> String
where
    S: Service<u64, Response = u64, Error = Infallible> + Clone,
{
    let mut cx = noop_cx();
    let (a, b, ()) = count_allocs(|| {
        for i in 0..n as u64 {
            let mut svc = proto.clone();
            black_box(call_ready(&mut svc, &mut cx, i));
        }
    });
    per_op(a, b, n)
}

/// (b) one long-lived service that waits `n` times: the first wait, then
/// allocations per later wait.
fn allocs_long_lived_wait<S, H>(mut svc: S, holder: H, n: usize) -> (String, String)
where
    S: Service<u64, Response = u64, Error = Infallible>,
    H: Hold,
{
    let mut cx = noop_cx();
    let mut held = Some(holder.take());
    let (a1, b1, ()) = count_allocs(|| waited_request(&mut svc, &holder, &mut held, &mut cx));
    let (a, b, ()) = count_allocs(|| {
        for _ in 0..n {
            waited_request(&mut svc, &holder, &mut held, &mut cx);
        }
    });
    (per_op(a1, b1, 1), per_op(a, b, n))
}

/// (c) axum pattern: a fresh clone per request, which must wait.
fn allocs_fresh_clone_wait<S, H>(proto: S, holder: H, n: usize) -> String
where
    S: Service<u64, Response = u64, Error = Infallible> + Clone,
    H: Hold,
{
    let mut cx = noop_cx();
    let mut held = Some(holder.take());
    let (a, b, ()) = count_allocs(|| {
        for _ in 0..n {
            let mut svc = proto.clone();
            waited_request(&mut svc, &holder, &mut held, &mut cx);
            drop(svc);
        }
    });
    per_op(a, b, n)
}

/// Heap allocations made by cloning a service.
fn allocs_clone<S: Clone>(proto: &S, n: usize) -> String {
    let (a, b, ()) = count_allocs(|| {
        for _ in 0..n {
            drop(black_box(proto.clone()));
        }
    });
    per_op(a, b, n)
}

fn memory_table() {
    const N: usize = 10_000;
    let mut rows = Vec::new();
    rows.push(Row {
        what: "bytes per service value / clone (size_of; inner: ZST)",
        tower: format!("{} B", std::mem::size_of::<Tower<Echo>>()),
        ours: format!("{} B", std::mem::size_of::<Ours<Echo>>()),
    });
    rows.push(Row {
        what: "size_of response future (inner: Ready<Result<u64,_>>)",
        tower: format!(
            "{} B",
            std::mem::size_of::<<Tower<Echo> as Service<u64>>::Future>()
        ),
        ours: format!(
            "{} B",
            std::mem::size_of::<<Ours<Echo> as Service<u64>>::Future>()
        ),
    });
    rows.push(Row {
        what: "allocs per clone",
        tower: allocs_clone(&tower_limit1().0, N),
        ours: allocs_clone(&ours_limit1().0, N),
    });
    rows.push(Row {
        what: "(a) allocs per uncontended call",
        tower: allocs_uncontended(tower_limit1().0, N),
        ours: allocs_uncontended(ours_limit1().0, N),
    });
    rows.push(Row {
        what: "(a') allocs per uncontended request, fresh clone",
        tower: allocs_uncontended_clone(tower_limit1().0, N),
        ours: allocs_uncontended_clone(ours_limit1().0, N),
    });
    let (t1, tn) = {
        let (s, h) = tower_limit1();
        allocs_long_lived_wait(s, h, N)
    };
    let (o1, on) = {
        let (s, h) = ours_limit1();
        allocs_long_lived_wait(s, h, N)
    };
    rows.push(Row {
        what: "(b) long-lived service: allocs, first wait",
        tower: t1,
        ours: o1,
    });
    rows.push(Row {
        what: "(b) long-lived service: allocs per later wait",
        tower: tn,
        ours: on,
    });
    rows.push(Row {
        what: "(c) fresh clone per request that waits: allocs per request",
        tower: {
            let (s, h) = tower_limit1();
            allocs_fresh_clone_wait(s, h, N)
        },
        ours: {
            let (s, h) = ours_limit1();
            allocs_fresh_clone_wait(s, h, N)
        },
    });

    let w = rows.iter().map(|r| r.what.len()).max().unwrap_or(0);
    println!("memory (allocs per op; in parentheses: bytes per allocation)");
    println!("{:w$}  {:>16}  {:>16}", "", "tower", "ours");
    for r in &rows {
        println!("{:w$}  {:>16}  {:>16}", r.what, r.tower, r.ours);
    }
    println!();
}

// ---------------------------------------------------------------------------
// Timed groups
// ---------------------------------------------------------------------------

fn uncontended(c: &mut Criterion) {
    let mut group = c.benchmark_group("uncontended");
    let mut cx = noop_cx();

    let mut bare = Echo;
    group.bench_function("bare", |b| {
        b.iter(|| call_ready(&mut bare, &mut cx, black_box(1)))
    });
    let mut tower = Tower::new(Echo, 8);
    group.bench_function("tower", |b| {
        b.iter(|| call_ready(&mut tower, &mut cx, black_box(1)))
    });
    let mut ours = Ours::new(Echo, 8);
    group.bench_function("ours", |b| {
        b.iter(|| call_ready(&mut ours, &mut cx, black_box(1)))
    });
    group.finish();
}

/// The shape of issue 8.5: a current-thread runtime, one long-lived service
/// with a limit of 64 in front of a `service_fn` answering `ready(Ok(x))`,
/// called as `svc.ready().await?.call(x).await?`; tower's side is
/// `GlobalConcurrencyLimitLayer`.
fn ready_call(c: &mut Criterion) {
    fn run<S>(
        group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
        name: &str,
        mut svc: S,
    ) where
        S: Service<u64, Response = u64, Error = Infallible>,
    {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let ns = ready_call_ns(&rt, &mut svc, iters);
                Duration::from_nanos((ns * iters as f64) as u64)
            })
        });
    }
    let answer = || tower::service_fn(|x: u64| std::future::ready(Ok::<_, Infallible>(x)));
    let mut group = c.benchmark_group("ready_call");
    run(&mut group, "bare", answer());
    run(
        &mut group,
        "tower",
        tower::ServiceBuilder::new()
            .layer(tower::limit::GlobalConcurrencyLimitLayer::new(64))
            .service(answer()),
    );
    run(
        &mut group,
        "ours",
        tower::ServiceBuilder::new()
            .layer(tower_concurrency::ConcurrencyLimitLayer::new(64))
            .service(answer()),
    );
    group.finish();
}

/// `iters` requests through `svc` on the current-thread runtime `rt`, as
/// `svc.ready().await?.call(x).await?`; nanoseconds per request.
fn ready_call_ns<S>(rt: &tokio::runtime::Runtime, svc: &mut S, iters: u64) -> f64
where
    S: Service<u64, Response = u64, Error = Infallible>,
{
    rt.block_on(async {
        let start = std::time::Instant::now();
        for x in 0..iters {
            let out = svc
                .ready()
                .await
                .unwrap_or_else(|e| match e {})
                .call(black_box(x))
                .await
                .unwrap_or_else(|e| match e {});
            black_box(out);
        }
        start.elapsed().as_nanos() as f64 / iters as f64
    })
}

/// Median of `v`.
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The shapes of issue 8.5, interleaved: each round runs every variant once,
/// so a change of load on a shared machine hits them alike; the table gives
/// the medians over rounds and the median of the per-round ratios.
fn shapes_table() {
    let rounds: usize = std::env::var("SHAPE_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(15);
    let answer = || tower::service_fn(|x: u64| std::future::ready(Ok::<_, Infallible>(x)));
    let current = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let mut bare = answer();
    let mut tower = tower::ServiceBuilder::new()
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(64))
        .service(answer());
    let mut ours = tower::ServiceBuilder::new()
        .layer(tower_concurrency::ConcurrencyLimitLayer::new(64))
        .service(answer());
    let workers = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let tower_storm = Tower::new(yielding(), LIMIT);
    let ours_storm = Ours::new(yielding(), LIMIT);
    let storm_ms = |run: &dyn Fn()| {
        let start = std::time::Instant::now();
        run();
        start.elapsed().as_secs_f64() * 1e3
    };
    const ITERS: u64 = 1_000_000;
    let mut rows: [Vec<f64>; 6] = Default::default();
    let (mut call_ratio, mut storm_ratio) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let b = ready_call_ns(&current, &mut bare, ITERS);
        let t = ready_call_ns(&current, &mut tower, ITERS);
        let o = ready_call_ns(&current, &mut ours, ITERS);
        call_ratio.push((o - b) / (t - b));
        rows[0].push(b);
        rows[1].push(t);
        rows[2].push(o);
        let sb = storm_ms(&|| workers.block_on(storm(&yielding(), false)));
        let st = storm_ms(&|| workers.block_on(storm(&tower_storm, false)));
        let so = storm_ms(&|| workers.block_on(storm(&ours_storm, false)));
        storm_ratio.push(so / st);
        rows[3].push(sb);
        rows[4].push(st);
        rows[5].push(so);
    }
    let [b, t, o, sb, st, so] = rows.map(median);
    println!("shapes of issue 8.5, {rounds} interleaved rounds, medians");
    println!("| shape | bare | tower | ours | ours ÷ tower |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    println!(
        "| ready().await?.call(x).await?, current thread, limit 64, ns per call | {b:.1} | {t:.1} | {o:.1} | {:.2} |",
        o / t
    );
    println!(
        "| the same, overhead above bare, ns per call | – | {:.1} | {:.1} | {:.2} (median of per-round ratios) |",
        t - b,
        o - b,
        median(call_ratio)
    );
    println!(
        "| contended: 2 workers, 256 tasks, limit 8, inner yields once, ms per {} requests | {sb:.2} | {st:.2} | {so:.2} | {:.2} (median of per-round ratios) |",
        TASKS * PER_TASK,
        median(storm_ratio)
    );
    println!();
}

fn uncontended_fresh_clone(c: &mut Criterion) {
    fn run<S>(
        group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
        name: &str,
        proto: S,
    ) where
        S: Service<u64, Response = u64, Error = Infallible> + Clone,
    {
        let mut cx = noop_cx();
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut svc = proto.clone();
                call_ready(&mut svc, &mut cx, black_box(1))
            })
        });
    }
    let mut group = c.benchmark_group("uncontended_fresh_clone");
    run(&mut group, "bare", Echo);
    run(&mut group, "tower", Tower::new(Echo, 8));
    run(&mut group, "ours", Ours::new(Echo, 8));
    group.finish();
}

/// The wait path alone, single-threaded and polled by hand: a limit of 1
/// whose permit is held outside, so every request queues, is handed the
/// permit on release, and completes. `fresh` uses a new clone per request.
fn wait_path(c: &mut Criterion, name: &str, fresh: bool) {
    fn run<S, H>(
        group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
        variant: &str,
        (mut svc, holder): (S, H),
        fresh: bool,
    ) where
        S: Service<u64, Response = u64, Error = Infallible> + Clone,
        H: Hold,
    {
        let mut cx = noop_cx();
        let mut held = Some(holder.take());
        group.bench_function(variant, |b| {
            b.iter(|| {
                if fresh {
                    let mut clone = svc.clone();
                    waited_request(&mut clone, &holder, &mut held, &mut cx);
                } else {
                    waited_request(&mut svc, &holder, &mut held, &mut cx);
                }
            })
        });
    }
    let mut group = c.benchmark_group(name);
    run(&mut group, "tower", tower_limit1(), fresh);
    run(&mut group, "ours", ours_limit1(), fresh);
    group.finish();
}

const TASKS: usize = 256;
const PER_TASK: usize = 16;
const LIMIT: usize = 8;

/// `TASKS` tasks, `PER_TASK` requests each, through `proto`'s clones; one
/// long-lived clone per task, or (`fresh`) one clone per request.
async fn storm<S>(proto: &S, fresh: bool)
where
    S: Service<u64, Response = u64, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
{
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let mut svc = proto.clone();
            tokio::spawn(async move {
                let mut sum = 0;
                for i in 0..PER_TASK as u64 {
                    let req = t as u64 * 1000 + i;
                    sum += if fresh {
                        svc.clone().oneshot(req).await
                    } else {
                        svc.ready()
                            .await
                            .unwrap_or_else(|e| match e {})
                            .call(req)
                            .await
                    }
                    .unwrap_or_else(|e| match e {});
                }
                sum
            })
        })
        .collect();
    for t in tasks {
        black_box(t.await.expect("task panicked"));
    }
}

fn contended_group(c: &mut Criterion, name: &str, fresh: bool) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements((TASKS * PER_TASK) as u64));
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(20);

    let mut peaks = Vec::new();
    let variants: [(&str, Option<usize>); 3] = [
        ("bare", None),
        ("tower", Some(LIMIT)),
        ("ours", Some(LIMIT)),
    ];
    for (variant, limit) in variants {
        PEAK.store(0, Relaxed);
        let check = move || {
            let peak = PEAK.load(Relaxed);
            if let Some(limit) = limit {
                assert!(peak <= limit, "{variant}: {peak} in flight, limit {limit}");
            }
        };
        let id = BenchmarkId::from_parameter(variant);
        match variant {
            "bare" => {
                let proto = yielding();
                group.bench_function(id, |b| {
                    b.to_async(&rt).iter(|| async {
                        storm(&proto, fresh).await;
                        check();
                    })
                });
            }
            "tower" => {
                let proto = Tower::new(yielding(), LIMIT);
                group.bench_function(id, |b| {
                    b.to_async(&rt).iter(|| async {
                        storm(&proto, fresh).await;
                        check();
                    })
                });
            }
            _ => {
                let proto = Ours::new(yielding(), LIMIT);
                group.bench_function(id, |b| {
                    b.to_async(&rt).iter(|| async {
                        storm(&proto, fresh).await;
                        check();
                    })
                });
            }
        }
        assert_eq!(IN_FLIGHT.load(Relaxed), 0);
        peaks.push(format!("{variant}={}", PEAK.load(Relaxed)));
    }
    group.finish();
    println!(
        "{name}: peak in flight inside the inner service: {}\n",
        peaks.join(", ")
    );
}

fn contended(c: &mut Criterion) {
    contended_group(c, "contended", false);
}

fn contended_fresh_clone(c: &mut Criterion) {
    contended_group(c, "contended_fresh_clone", true);
}

fn main() {
    memory_table();
    shapes_table();
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    uncontended(&mut c);
    ready_call(&mut c);
    uncontended_fresh_clone(&mut c);
    wait_path(&mut c, "wait_path_long_lived", false);
    wait_path(&mut c, "wait_path_fresh_clone", true);
    contended(&mut c);
    contended_fresh_clone(&mut c);
    c.final_summary();
}
