//! Cost of the HTTP layer's per-request rules (issue 5): a request through
//! tower's limit, our core limit, our HTTP layer plain, partitioned and
//! keyed, and the memory a per-key limit holds.
//!
//! Run with `cargo bench --bench rules -- --measurement-time 2 --warm-up-time 1`.
//!
//! Group `per_call` (uncontended, polled by hand with a noop waker, as in
//! `benches/limit.rs`): poll_ready, call, poll the response to completion
//! and drop it (for the HTTP layer, dropping the response body gives the
//! permit back). Every variant gets the same requests, built outside the
//! timed part by `iter_batched`: an `x-priority` header (`live`/`batch`,
//! alternating) and an `x-tenant` header (1,000 rotating decimal values).
//! Dropping the request inside the inner service is timed, equally for all.
//! - `bare`: the inner service alone (the floor every variant pays),
//! - `tower`: `tower::limit::ConcurrencyLimit`, limit 64,
//! - `ours-core`: `tower_concurrency::ConcurrencyLimit`, limit 64,
//! - `ours-http`: `HttpLimitLayer::new(64)`,
//! - `ours-partitioned`: 64 split live 0.9 / batch 0.1, by `x-priority`,
//! - `ours-keyed`: `limit_per_key(KeyLimit::new(8).max_keys(100_000), ..)` keyed by the `x-tenant`
//!   text (`str::to_owned`, one allocation per request),
//! - `ours-keyed-u64`: the same keyed by the header parsed as a `u64`.
//!
//! After the group, the binary reads criterion's medians back from
//! `<criterion home>/per_call/*/new/estimates.json` and prints them with
//! ratios to `tower` and to `ours-http`.
//!
//! Before the group, it prints a memory report, counted by a global
//! allocator that also tracks live bytes: a million requests with distinct
//! tenants, one after another; and 10,000 responses with distinct tenants
//! held at once.

use std::alloc::{GlobalAlloc, Layout, System};
use std::convert::Infallible;
use std::future::{ready, Future};
use std::hint::black_box;
use std::path::PathBuf;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicUsize, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use criterion::{BatchSize, Criterion};
use futures::task::noop_waker_ref;
use http::{HeaderValue, Request, Response};
use http_body_util::Empty;
use tower::{Layer, Service};
use tower_concurrency::http_limit::{HttpLimitLayer, KeyLimit, RequestHead};
use tower_concurrency::Limiter;

// ---------------------------------------------------------------------------
// Allocation counting, with live bytes
// ---------------------------------------------------------------------------

/// `System`, counting while `COUNTING` is on: allocations (reallocations
/// included), allocated bytes, and live bytes (allocated minus freed since
/// counting began, so memory freed then but allocated before counts
/// negative) with their peak. As in `benches/limit.rs`, counting is off
/// during the timed group.
struct CountingAlloc;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicUsize = AtomicUsize::new(0);
static ALLOC_BYTES: AtomicUsize = AtomicUsize::new(0);
static LIVE: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);

impl CountingAlloc {
    fn grow(allocated: usize, freed: usize) {
        if COUNTING.load(Relaxed) {
            ALLOCS.fetch_add(1, Relaxed);
            ALLOC_BYTES.fetch_add(allocated, Relaxed);
            let delta = allocated as isize - freed as isize;
            PEAK.fetch_max(LIVE.fetch_add(delta, Relaxed) + delta, Relaxed);
        }
    }
}

// SAFETY: every call is forwarded unchanged to `System`; the counters only
// observe sizes.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::grow(layout.size(), 0);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Self::grow(layout.size(), 0);
        // SAFETY: same contract as ours.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        Self::grow(new_size, layout.size());
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if COUNTING.load(Relaxed) {
            LIVE.fetch_sub(layout.size() as isize, Relaxed);
        }
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// Resets the counters and starts counting; call only while no other
/// thread allocates (before criterion runs).
fn start_counting() {
    ALLOCS.store(0, Relaxed);
    ALLOC_BYTES.store(0, Relaxed);
    LIVE.store(0, Relaxed);
    PEAK.store(0, Relaxed);
    COUNTING.store(true, Relaxed);
}

fn stop_counting() {
    COUNTING.store(false, Relaxed);
}

// ---------------------------------------------------------------------------
// Requests, inner service, driving by hand
// ---------------------------------------------------------------------------

type Body = Empty<Bytes>;

/// The inner HTTP service: answers an empty body at once, dropping the
/// request.
fn inner() -> impl Service<Request<()>, Response = Response<Body>, Error = Infallible> + Clone {
    tower::service_fn(|req: Request<()>| {
        drop(req);
        ready(Ok::<_, Infallible>(Response::new(Body::new())))
    })
}

/// The request every variant gets: `x-priority` alternating `live` and
/// `batch`, `x-tenant` the given value.
fn request(i: usize, tenant: HeaderValue) -> Request<()> {
    let priority = if i % 2 == 0 { "live" } else { "batch" };
    let mut req = Request::new(());
    let headers = req.headers_mut();
    headers.insert("x-priority", HeaderValue::from_static(priority));
    headers.insert("x-tenant", tenant);
    req
}

fn noop_cx() -> Context<'static> {
    Context::from_waker(noop_waker_ref())
}

/// poll_ready (must be ready), call, poll the response once (must be ready
/// and a success, not a refusal): one request through an always-ready
/// stack. Returns the response; dropping it releases an HTTP permit.
fn respond<S, B>(svc: &mut S, cx: &mut Context<'_>, req: Request<()>) -> Response<B>
where
    S: Service<Request<()>, Response = Response<B>, Error = Infallible>,
{
    match svc.poll_ready(cx) {
        Poll::Ready(Ok(())) => {}
        _ => panic!("service not ready"),
    }
    let fut = pin!(svc.call(req));
    match fut.poll(cx) {
        Poll::Ready(Ok(res)) if res.status().is_success() => res,
        Poll::Ready(Ok(res)) => panic!("refused: {}", res.status()),
        _ => panic!("response not ready"),
    }
}

// ---------------------------------------------------------------------------
// Variants
// ---------------------------------------------------------------------------

const LIMIT: usize = 64;
const PER_KEY: usize = 8;
const MAX_KEYS: usize = 100_000;

fn tenant_text(head: &RequestHead<'_>) -> Option<String> {
    head.header("x-tenant").map(str::to_owned)
}

fn tenant_u64(head: &RequestHead<'_>) -> Option<u64> {
    head.header("x-tenant")?.parse().ok()
}

fn partitioned(limit: usize) -> HttpLimitLayer {
    let (limiter, [live, batch]) = Limiter::new(limit)
        .partitioned([("live", 0.9), ("batch", 0.1)])
        .expect("valid shares");
    let (live, batch) = (Some(live), Some(batch));
    HttpLimitLayer::from_limiter(limiter).partition_by(move |head| {
        match head.header("x-priority") {
            Some("batch") => batch,
            _ => live,
        }
    })
}

fn keyed_text(limit: usize) -> HttpLimitLayer {
    HttpLimitLayer::new(limit).limit_per_key(KeyLimit::new(PER_KEY).max_keys(MAX_KEYS), tenant_text)
}

fn keyed_u64(limit: usize) -> HttpLimitLayer {
    HttpLimitLayer::new(limit).limit_per_key(KeyLimit::new(PER_KEY).max_keys(MAX_KEYS), tenant_u64)
}

// ---------------------------------------------------------------------------
// Memory report
// ---------------------------------------------------------------------------

const DISTINCT: usize = 1_000_000;
const CHECKPOINTS: [usize; 4] = [1_000, 10_000, 100_000, DISTINCT];
const HELD: usize = 10_000;

/// What `DISTINCT` requests with distinct tenants, one after another, cost.
struct Sequential {
    allocs: usize,
    bytes: usize,
    /// Live bytes after the first n requests (the service itself was built
    /// before counting).
    live_at: Vec<(usize, isize)>,
    peak: isize,
}

fn sequential<S, B>(mut svc: S) -> Sequential
where
    S: Service<Request<()>, Response = Response<B>, Error = Infallible>,
{
    let mut cx = noop_cx();
    let mut live_at = Vec::with_capacity(CHECKPOINTS.len());
    start_counting();
    let mut next = CHECKPOINTS.iter().copied().peekable();
    for i in 0..DISTINCT {
        // Built and (by the inner service) dropped inside the count: its
        // allocations are `bare`'s, its live bytes net out to 0.
        let req = request(i, HeaderValue::from(i as u64));
        drop(black_box(respond(&mut svc, &mut cx, req)));
        if next.next_if_eq(&(i + 1)).is_some() {
            stop_counting();
            live_at.push((i + 1, LIVE.load(Relaxed)));
            COUNTING.store(true, Relaxed);
        }
    }
    stop_counting();
    Sequential {
        allocs: ALLOCS.load(Relaxed),
        bytes: ALLOC_BYTES.load(Relaxed),
        live_at,
        peak: PEAK.load(Relaxed),
    }
}

/// Live bytes while `HELD` responses with distinct tenants are held at
/// once (their `Response` values in a vector reserved beforehand, so only
/// heap the service keeps counts), and live bytes once they are dropped.
fn held<S, B>(mut svc: S) -> (isize, isize)
where
    S: Service<Request<()>, Response = Response<B>, Error = Infallible>,
{
    let mut cx = noop_cx();
    let mut responses = Vec::with_capacity(HELD);
    start_counting();
    for i in 0..HELD {
        let req = request(i, HeaderValue::from(i as u64));
        responses.push(respond(&mut svc, &mut cx, req));
    }
    let holding = LIVE.load(Relaxed);
    responses.clear();
    let after = LIVE.load(Relaxed);
    stop_counting();
    (holding, after)
}

fn memory_report() {
    println!("memory: {DISTINCT} requests, each with its own tenant, one after another");
    println!("(each request is built and dropped inside the count; `bare` is that cost alone)");
    let runs = [
        ("bare", sequential(inner())),
        (
            "ours-http",
            sequential(HttpLimitLayer::new(LIMIT).layer(inner())),
        ),
        (
            "ours-keyed (String)",
            sequential(keyed_text(LIMIT).layer(inner())),
        ),
        (
            "ours-keyed-u64",
            sequential(keyed_u64(LIMIT).layer(inner())),
        ),
    ];
    let bare = &runs[0].1;
    let per = |n: usize| n as f64 / DISTINCT as f64;
    println!(
        "{:20} {:>11} {:>10} {:>11} {:>10}  live bytes after 1k / 10k / 100k / 1M requests",
        "", "allocs/req", "- bare", "bytes/req", "peak B"
    );
    for (name, run) in &runs {
        let live: Vec<String> = run.live_at.iter().map(|(_, b)| b.to_string()).collect();
        println!(
            "{:20} {:>11.3} {:>+10.3} {:>11.1} {:>10}  {}",
            name,
            per(run.allocs),
            per(run.allocs) - per(bare.allocs),
            per(run.bytes),
            run.peak,
            live.join(" / ")
        );
    }
    println!(
        "peak B: most live bytes at any moment, from the start of the run; bare's peak is the \
         request's own"
    );
    println!();

    println!("memory: {HELD} responses held at once, each with its own tenant (limit {HELD})");
    let plain = held(HttpLimitLayer::new(HELD).layer(inner()));
    let holds = [
        ("ours-http", plain),
        ("ours-keyed (String)", held(keyed_text(HELD).layer(inner()))),
        ("ours-keyed-u64", held(keyed_u64(HELD).layer(inner()))),
    ];
    println!(
        "{:20} {:>12} {:>10} {:>16} {:>22}",
        "", "live B held", "B/request", "B/key (- plain)", "live B after dropping"
    );
    for (name, (holding, after)) in holds {
        println!(
            "{:20} {:>12} {:>10.1} {:>16.1} {:>22}",
            name,
            holding,
            holding as f64 / HELD as f64,
            (holding - plain.0) as f64 / HELD as f64,
            after
        );
    }
    println!(
        "in the caller's memory besides: size_of Response<ResponseBody<Empty>> = {} B \
         (Response<Empty> = {} B)",
        std::mem::size_of::<Response<tower_concurrency::http_limit::ResponseBody<Body>>>(),
        std::mem::size_of::<Response<Body>>()
    );
    println!();
}

// ---------------------------------------------------------------------------
// Timed group
// ---------------------------------------------------------------------------

const GROUP: &str = "per_call";
const VARIANTS: [&str; 7] = [
    "bare",
    "tower",
    "ours-core",
    "ours-http",
    "ours-partitioned",
    "ours-keyed",
    "ours-keyed-u64",
];
const TENANTS: usize = 1_000;

fn per_call(c: &mut Criterion) {
    fn run<S, B>(
        group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
        name: &str,
        mut svc: S,
    ) where
        S: Service<Request<()>, Response = Response<B>, Error = Infallible>,
    {
        // Prebuilt values: cloning one is a reference count, not a copy.
        let tenants: Vec<HeaderValue> = (0..TENANTS as u64).map(HeaderValue::from).collect();
        let mut cx = noop_cx();
        let mut i = 0;
        group.bench_function(name, |b| {
            b.iter_batched(
                || {
                    i += 1;
                    request(i, tenants[i % TENANTS].clone())
                },
                |req| drop(black_box(respond(&mut svc, &mut cx, req))),
                BatchSize::SmallInput,
            )
        });
    }
    let mut group = c.benchmark_group(GROUP);
    run(&mut group, VARIANTS[0], inner());
    run(
        &mut group,
        VARIANTS[1],
        tower::limit::ConcurrencyLimit::new(inner(), LIMIT),
    );
    run(
        &mut group,
        VARIANTS[2],
        tower_concurrency::ConcurrencyLimit::new(inner(), LIMIT),
    );
    run(
        &mut group,
        VARIANTS[3],
        HttpLimitLayer::new(LIMIT).layer(inner()),
    );
    run(&mut group, VARIANTS[4], partitioned(LIMIT).layer(inner()));
    run(&mut group, VARIANTS[5], keyed_text(LIMIT).layer(inner()));
    run(&mut group, VARIANTS[6], keyed_u64(LIMIT).layer(inner()));
    group.finish();
}

// ---------------------------------------------------------------------------
// Medians and ratios, read back from criterion's files
// ---------------------------------------------------------------------------

/// Where criterion writes: `$CRITERION_HOME`, `$CARGO_TARGET_DIR/criterion`,
/// or `criterion` in the target directory this binary was built in
/// (`<target>/release/deps/rules-*`).
fn criterion_home() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return home.into();
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(target).join("criterion");
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.ancestors().nth(3)?.join("criterion")))
        .filter(|home| home.is_dir())
        .unwrap_or_else(|| PathBuf::from("target/criterion"))
}

/// The number after `"key":` at or after `from` in `json`.
fn number_after(json: &str, from: usize, key: &str) -> Option<f64> {
    let at = from + json[from..].find(&format!("\"{key}\":"))? + key.len() + 3;
    let rest = json[at..].trim_start();
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || "+-.eE".contains(c)))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// A variant's median and its 95% interval, in ns, if written by this run.
fn median(variant: &str, since: SystemTime) -> Option<[f64; 3]> {
    let path = criterion_home()
        .join(GROUP)
        .join(variant)
        .join("new")
        .join("estimates.json");
    let fresh = std::fs::metadata(&path).ok()?.modified().ok()? >= since;
    let json = std::fs::read_to_string(&path).ok().filter(|_| fresh)?;
    let at = json.find("\"median\":")?;
    Some([
        number_after(&json, at, "point_estimate")?,
        number_after(&json, at, "lower_bound")?,
        number_after(&json, at, "upper_bound")?,
    ])
}

fn ratio_table(since: SystemTime) {
    let medians: Vec<_> = VARIANTS.iter().map(|v| (v, median(v, since))).collect();
    let of = |name: &str| {
        medians
            .iter()
            .find(|(v, _)| **v == name)
            .and_then(|(_, m)| m.map(|m| m[0]))
    };
    let (tower, http, bare) = (of("tower"), of("ours-http"), of("bare"));
    let cell = |base: Option<f64>, m: f64| base.map_or("-".into(), |b| format!("{:.2}", m / b));
    println!("{GROUP}: criterion medians (ns per request) and ratios");
    println!(
        "{:18} {:>8} {:>19} {:>9} {:>13} {:>11}",
        "", "median", "95% interval", "/ tower", "/ ours-http", "- bare ns"
    );
    for (variant, m) in medians {
        let Some([m, lo, hi]) = m else {
            println!("{variant:18} {:>8}  (not measured by this run)", "-");
            continue;
        };
        println!(
            "{:18} {:>8.1} {:>19} {:>9} {:>13} {:>11}",
            variant,
            m,
            format!("[{lo:.1}, {hi:.1}]"),
            cell(tower, m),
            cell(http, m),
            bare.map_or("-".into(), |b| format!("{:.1}", m - b)),
        );
    }
    println!("(read from {})", criterion_home().join(GROUP).display());
}

/// With `RULES_CALLS=n RULES_VARIANT=<variant>`, sends `n` requests through
/// that one variant, the same way as the timed group, and exits: for
/// counting instructions with `perf stat -e instructions:u`, which a busy
/// machine does not disturb as it does wall time (subtract a run with
/// `n = 0`, divide by `n`).
fn count_only() -> bool {
    let (Ok(calls), Ok(variant)) = (std::env::var("RULES_CALLS"), std::env::var("RULES_VARIANT"))
    else {
        return false;
    };
    let calls: usize = calls.parse().expect("RULES_CALLS is a number");
    fn send<S, B>(mut svc: S, calls: usize)
    where
        S: Service<Request<()>, Response = Response<B>, Error = Infallible>,
    {
        let tenants: Vec<HeaderValue> = (0..TENANTS as u64).map(HeaderValue::from).collect();
        let mut cx = noop_cx();
        for i in 0..calls {
            let req = request(i, tenants[i % TENANTS].clone());
            drop(black_box(respond(&mut svc, &mut cx, req)));
        }
    }
    match variant.as_str() {
        "bare" => send(inner(), calls),
        "tower" => send(tower::limit::ConcurrencyLimit::new(inner(), LIMIT), calls),
        "ours-core" => send(
            tower_concurrency::ConcurrencyLimit::new(inner(), LIMIT),
            calls,
        ),
        "ours-http" => send(HttpLimitLayer::new(LIMIT).layer(inner()), calls),
        "ours-partitioned" => send(partitioned(LIMIT).layer(inner()), calls),
        "ours-keyed" => send(keyed_text(LIMIT).layer(inner()), calls),
        "ours-keyed-u64" => send(keyed_u64(LIMIT).layer(inner()), calls),
        other => panic!("no variant {other:?}; one of {VARIANTS:?}"),
    }
    true
}

fn main() {
    if count_only() {
        return;
    }
    let since = SystemTime::now();
    memory_report();
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    per_call(&mut c);
    c.final_summary();
    ratio_table(since);
}
