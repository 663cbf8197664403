//! Adaptive limits over real loopback HTTP, side by side with the best fixed
//! `tower::limit` and the two Rust peers, `congestion-limiter` 0.1 and
//! `tower-acc` 0.1 (issue 11).
//!
//! The backend is an axum server of hidden capacity: `C` workers (a FIFO
//! semaphore) each holding a request for a fixed service time. The client
//! offers open-loop Poisson load at twice the capacity through a hyper
//! client; each request has a 100 ms deadline, enforced inside the limiter
//! so that a miss is an overload sample; every limiter refuses at once at
//! its limit (ours `Policy::reject()`, tower's and tower-acc's behind
//! `load_shed`, congestion-limiter's `try_acquire`). Goodput counts answers
//! within the deadline per second, as a share of the best fixed limit's in
//! the same round; p99 is over those answers.
//!
//! congestion-limiter's `Gradient` is left out: under concurrent requests it
//! panics ("overflow when subtracting durations", in its moving average), so
//! its `Vegas` stands for it.
//!
//! Cells: C = 8 × 5 ms and C = 32 × 20 ms, steady and with a capacity step
//! (8 → 2 → 8, 32 → 8 → 32: the backend keeps three quarters of its
//! workers busy with nothing for the middle third). Medians of 3 rounds.
//!
//! Then the settling cells (issue 11's third target): the recommended
//! algorithm (`Windowed<Gradient2::recommended()>`, as
//! `Limiter::adaptive_default` builds, but started 4× above or 4× below) in
//! a backend that only slows (no refusal; the offered load at 1.5× keeps
//! every queue short of the deadline), and how long until its limit stays
//! within ±25% of the Little's-law limit: the capacity times the unloaded
//! round trip, measured first (20 requests one at a time, the median), so
//! that the loopback's own latency counts. The limit is read every 5 ms;
//! medians of 3.
//!
//! ```text
//! cargo bench --bench adaptive_http
//! ADAPTIVE_HTTP_QUICK=1 cargo bench --bench adaptive_http   # 1 round, shorter runs
//! ADAPTIVE_HTTP_SETTLE=1 cargo bench --bench adaptive_http  # only the settling cells
//! ```
//!
//! `ADAPTIVE_HTTP_CELLS=16x10,64x40` measures other backends (`workers x
//! service ms`, both kinds of cell each, and their settling cells) instead.
//!
//! `ADAPTIVE_HTTP_TRACE=1` also prints each settling run's limit every
//! 100 ms (`ms:limit`), to stderr.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::{routing::get, Router};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tower::{BoxError, ServiceBuilder, ServiceExt};
use tower_concurrency::adaptive::{Aimd, Gradient2, Vegas, Windowed};
use tower_concurrency::{Limiter, Policy, PolicyLimit};

/// The client's deadline.
const DEADLINE: Duration = Duration::from_millis(100);

#[derive(Clone, Copy)]
struct Cell {
    workers: usize,
    service: Duration,
    step: bool,
}

impl Cell {
    fn name(&self) -> String {
        let kind = if self.step {
            format!(
                "step {}→{}→{}",
                self.workers,
                self.workers / 4,
                self.workers
            )
        } else {
            "steady".to_owned()
        };
        format!("{} × {} ms {kind}", self.workers, self.service.as_millis())
    }

    /// Requests per second at capacity.
    fn capacity(&self) -> f64 {
        self.workers as f64 / self.service.as_secs_f64()
    }
}

/// The limiters compared.
#[derive(Clone, Copy, PartialEq)]
enum Contender {
    Fixed(usize),
    Default,
    WindowedVegas,
    Aimd,
    ClVegas,
    AccVegas,
    AccGradient2,
}

impl Contender {
    fn name(&self) -> String {
        match self {
            Contender::Fixed(n) => format!("tower::limit {n}"),
            Contender::Default => "adaptive_default (Windowed<Gradient2>)".to_owned(),
            Contender::WindowedVegas => "Windowed<Vegas>".to_owned(),
            Contender::Aimd => "Aimd".to_owned(),
            Contender::ClVegas => "congestion-limiter Vegas".to_owned(),
            Contender::AccVegas => "tower-acc Vegas".to_owned(),
            Contender::AccGradient2 => "tower-acc Gradient2".to_owned(),
        }
    }
}

/// What one run measured.
#[derive(Clone, Copy, Default)]
struct Run {
    goodput: f64,
    p99: Duration,
}

/// The backend: `workers` permits (changed by a capacity step), each held
/// for the service time.
async fn backend(cell: Cell) -> (SocketAddr, Arc<Semaphore>) {
    let workers = Arc::new(Semaphore::new(cell.workers));
    let handler_workers = workers.clone();
    let service = cell.service;
    let app = Router::new().route(
        "/",
        get(move || {
            let workers = handler_workers.clone();
            async move {
                let _worker = workers.acquire().await.expect("never closed");
                tokio::time::sleep(service).await;
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, workers)
}

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// One request with the deadline inside: `Ok` for a 200 in time, an error
/// (overload, to every limiter) otherwise.
async fn fetch(client: HttpClient, uri: http::Uri) -> Result<(), BoxError> {
    let request = async {
        let response = client.get(uri).await?;
        let ok = response.status().is_success();
        response.into_body().collect().await?;
        if ok {
            Ok(())
        } else {
            Err(BoxError::from("not 200"))
        }
    };
    tokio::time::timeout(DEADLINE, request).await?
}

type Svc = tower::util::BoxCloneService<(), (), BoxError>;

/// The contender's stack around `inner`: refuses at once at its limit.
fn limited(contender: Contender, inner: Svc) -> Svc {
    match contender {
        Contender::Fixed(n) => Svc::new(
            ServiceBuilder::new()
                .load_shed()
                .concurrency_limit(n)
                .service(inner),
        ),
        Contender::Default => Svc::new(PolicyLimit::new(
            inner,
            Limiter::adaptive_default(),
            Policy::reject(),
        )),
        Contender::WindowedVegas => Svc::new(PolicyLimit::new(
            inner,
            Limiter::adaptive(Windowed::new(Vegas::default())),
            Policy::reject(),
        )),
        Contender::Aimd => Svc::new(PolicyLimit::new(
            inner,
            Limiter::adaptive(Aimd::default()),
            Policy::reject(),
        )),
        Contender::AccVegas => Svc::new(
            ServiceBuilder::new()
                .load_shed()
                .layer(tower_acc::ConcurrencyLimitLayer::new(
                    tower_acc::Vegas::builder().initial_limit(10).build(),
                ))
                .service(inner),
        ),
        Contender::AccGradient2 => Svc::new(
            ServiceBuilder::new()
                .load_shed()
                .layer(tower_acc::ConcurrencyLimitLayer::new(
                    tower_acc::Gradient2::builder().initial_limit(10).build(),
                ))
                .service(inner),
        ),
        Contender::ClVegas => congestion(
            congestion_limiter::limits::Vegas::new_with_initial_limit(10),
            inner,
        ),
    }
}

/// congestion-limiter has no tower layer: take a token or refuse, call,
/// and release it with the outcome.
fn congestion<L>(algorithm: L, inner: Svc) -> Svc
where
    L: congestion_limiter::limits::LimitAlgorithm + Send + Sync + std::fmt::Debug + 'static,
{
    use congestion_limiter::limiter::{DefaultLimiter, Limiter as _, Outcome};
    let limiter = Arc::new(DefaultLimiter::new(algorithm));
    Svc::new(tower::service_fn(move |()| {
        let (limiter, inner) = (limiter.clone(), inner.clone());
        async move {
            let Some(token) = limiter.try_acquire().await else {
                return Err(BoxError::from("refused"));
            };
            let result = inner.oneshot(()).await;
            let outcome = match result {
                Ok(()) => Outcome::Success,
                Err(_) => Outcome::Overload,
            };
            limiter.release(token, Some(outcome)).await;
            result
        }
    }))
}

/// Runs one contender on one cell for `length` and reports it.
async fn run(cell: Cell, contender: Contender, length: Duration, seed: u64) -> Run {
    let (addr, workers) = backend(cell).await;
    let uri: http::Uri = format!("http://{addr}/").parse().unwrap();
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1024)
        .build_http();
    let inner = Svc::new(tower::service_fn(move |()| {
        fetch(client.clone(), uri.clone())
    }));
    let svc = limited(contender, inner);

    // A capacity step: three quarters of the workers taken for the middle
    // third of the run.
    if cell.step {
        let taken = (cell.workers - cell.workers / 4) as u32;
        tokio::spawn(async move {
            tokio::time::sleep(length / 3).await;
            let held = workers.acquire_many(taken).await.expect("never closed");
            tokio::time::sleep(length / 3).await;
            drop(held);
        });
    }

    // Open-loop Poisson arrivals at twice the capacity.
    let rate = 2.0 * cell.capacity();
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let start = Instant::now();
    let mut next = start;
    let mut tasks = Vec::new();
    while next < start + length {
        tokio::time::sleep_until(next).await;
        let (svc, latencies) = (svc.clone(), latencies.clone());
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            if svc.oneshot(()).await.is_ok() {
                latencies.lock().unwrap().push(sent.elapsed());
            }
        }));
        next += exponential_gap(&mut rng, rate);
    }
    for task in tasks {
        let _ = task.await;
    }
    let mut latencies = std::mem::take(&mut *latencies.lock().unwrap());
    latencies.sort();
    let p99 = latencies
        .get((latencies.len() * 99 / 100).min(latencies.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default();
    Run {
        goodput: latencies.len() as f64 / length.as_secs_f64(),
        p99,
    }
}

/// The unloaded round trip through `client`: the median of 20 requests
/// one at a time.
async fn unloaded_rtt(client: &HttpClient, uri: &http::Uri) -> Duration {
    let mut rtts = Vec::new();
    for _ in 0..20 {
        let sent = Instant::now();
        fetch(client.clone(), uri.clone())
            .await
            .expect("an unloaded request answers");
        rtts.push(sent.elapsed());
    }
    rtts.sort();
    rtts[rtts.len() / 2]
}

/// One settling run: the recommended algorithm started at `factor` times
/// the Little's-law limit, under open-loop Poisson load at 1.5× the
/// capacity for `length`. Answers the Little's-law limit and the time after
/// which the limit stayed within ±25% of it (`None` if it never did).
async fn settle(cell: Cell, factor: f64, length: Duration, seed: u64) -> (f64, Option<Duration>) {
    let (addr, _workers) = backend(cell).await;
    let uri: http::Uri = format!("http://{addr}/").parse().unwrap();
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1024)
        .build_http();
    let ideal = cell.capacity() * unloaded_rtt(&client, &uri).await.as_secs_f64();
    let initial = ((ideal * factor).round() as usize).max(1);
    let limiter = Limiter::adaptive(Windowed::new(Gradient2::recommended().initial(initial)));
    let inner = Svc::new(tower::service_fn(move |()| {
        fetch(client.clone(), uri.clone())
    }));
    let svc = Svc::new(PolicyLimit::new(inner, limiter.clone(), Policy::reject()));

    let start = Instant::now();
    let trace = std::env::var_os("ADAPTIVE_HTTP_TRACE").is_some();
    let watch = {
        let limiter = limiter.clone();
        tokio::spawn(async move {
            let mut outside_last = Some(Duration::ZERO);
            let mut inside_since: Option<Duration> = None;
            while start.elapsed() < length {
                let limit = limiter.limit() as f64;
                let at = start.elapsed();
                if trace && at.as_millis() % 100 < 5 {
                    eprint!("{}:{} ", at.as_millis(), limit);
                }
                if (limit - ideal).abs() <= 0.25 * ideal {
                    inside_since.get_or_insert(at);
                } else {
                    inside_since = None;
                    outside_last = Some(at);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            inside_since.and(outside_last)
        })
    };
    let rate = 1.5 * cell.capacity();
    let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = start;
    let mut tasks = Vec::new();
    while next < start + length {
        tokio::time::sleep_until(next).await;
        let svc = svc.clone();
        tasks.push(tokio::spawn(async move {
            let _ = svc.oneshot(()).await;
        }));
        next += exponential_gap(&mut rng, rate);
    }
    for task in tasks {
        let _ = task.await;
    }
    (ideal, watch.await.expect("the watch does not panic"))
}

/// The gap to the next arrival of a Poisson process of `rate` per second
/// (xorshift64 for the uniform draw).
fn exponential_gap(rng: &mut u64, rate: f64) -> Duration {
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    let unit = (*rng >> 11) as f64 / (1u64 << 53) as f64;
    Duration::from_secs_f64(-(1.0 - unit).ln() / rate)
}

/// The backends measured: `workers × service ms`, from
/// `ADAPTIVE_HTTP_CELLS` (such as `16x10,64x40`) or else 8 × 5 and 32 × 20.
fn shapes() -> Vec<(usize, u64)> {
    let Ok(list) = std::env::var("ADAPTIVE_HTTP_CELLS") else {
        return vec![(8, 5), (32, 20)];
    };
    list.split(',')
        .map(|shape| {
            let parsed = shape.trim().split_once('x').and_then(|(w, s)| {
                let workers: usize = w.parse().ok().filter(|&w| w >= 4)?;
                Some((workers, s.parse().ok().filter(|&s| s > 0)?))
            });
            parsed.unwrap_or_else(|| {
                panic!("ADAPTIVE_HTTP_CELLS: {shape:?} is not `workers x ms` (workers at least 4)")
            })
        })
        .collect()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

fn main() {
    let quick = std::env::var_os("ADAPTIVE_HTTP_QUICK").is_some();
    let settle_only = std::env::var_os("ADAPTIVE_HTTP_SETTLE").is_some();
    let rounds = if quick { 1 } else { 3 };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    if !settle_only {
        goodput_cells(&runtime, quick, rounds);
    }
    settle_cells(&runtime, quick, rounds);
}

/// The settling cells: from 4× above and 4× below the Little's-law limit.
fn settle_cells(runtime: &tokio::runtime::Runtime, quick: bool, rounds: usize) {
    let length = if quick {
        Duration::from_secs(3)
    } else {
        Duration::from_secs(4)
    };
    println!(
        "\nsettling (recommended algorithm, started 4x above or below the Little's-law limit, \
         a backend that only slows, Poisson load at 1.5x; {rounds} round(s), medians; run {length:?}): \
         time until the limit stays within +-25% of capacity x unloaded rtt"
    );
    for (workers, service) in shapes() {
        let cell = Cell {
            workers,
            service: Duration::from_millis(service),
            step: false,
        };
        for factor in [4.0, 0.25] {
            let mut ideals = Vec::new();
            let mut times = Vec::new();
            for round in 0..rounds {
                let (ideal, time) =
                    runtime.block_on(settle(cell, factor, length, round as u64 + 1));
                ideals.push(ideal);
                times.push(time.map_or(f64::INFINITY, |t| t.as_secs_f64() * 1e3));
            }
            let time = median(times.clone());
            let each: Vec<String> = times
                .iter()
                .map(|t| {
                    if t.is_finite() {
                        format!("{t:.0}")
                    } else {
                        "never".to_owned()
                    }
                })
                .collect();
            println!(
                "  {} × {} ms from {}x: Little's-law limit {:.1}, settled in {} ms (rounds: {})",
                workers,
                service,
                factor,
                median(ideals),
                if time.is_finite() {
                    format!("{time:.0}")
                } else {
                    "never".to_owned()
                },
                each.join(", ")
            );
        }
    }
}

/// The goodput cells: steady and capacity step, against the peers.
fn goodput_cells(runtime: &tokio::runtime::Runtime, quick: bool, rounds: usize) {
    let cells: Vec<Cell> = shapes()
        .into_iter()
        .flat_map(|(workers, service)| {
            [false, true].map(|step| Cell {
                workers,
                service: Duration::from_millis(service),
                step,
            })
        })
        .collect();
    println!(
        "adaptive limits over loopback HTTP: open-loop Poisson at 2x capacity, {} ms deadline, \
         refusing at the limit; {} round(s), medians; goodput as a share of the best fixed \
         limit's (in its round), p99 of answers in time",
        DEADLINE.as_millis(),
        rounds
    );
    for cell in cells {
        let length = match (quick, cell.step) {
            (true, false) => Duration::from_secs(2),
            (true, true) => Duration::from_secs(3),
            (false, false) => Duration::from_secs(4),
            (false, true) => Duration::from_millis(4500),
        };
        let c = cell.workers;
        let mut contenders: Vec<Contender> = [c * 3 / 4, c, c * 3 / 2, c * 2]
            .into_iter()
            .map(Contender::Fixed)
            .collect();
        contenders.extend([
            Contender::Default,
            Contender::WindowedVegas,
            Contender::Aimd,
            Contender::ClVegas,
            Contender::AccVegas,
            Contender::AccGradient2,
        ]);
        // shares[contender][round], p99s likewise
        let mut shares = vec![Vec::new(); contenders.len()];
        let mut p99s = vec![Vec::new(); contenders.len()];
        let mut best_fixed = Vec::new();
        for round in 0..rounds {
            let runs: Vec<Run> = contenders
                .iter()
                .map(|&k| runtime.block_on(run(cell, k, length, round as u64 + 1)))
                .collect();
            let (best, best_run) = contenders
                .iter()
                .zip(&runs)
                .filter(|(k, _)| matches!(k, Contender::Fixed(_)))
                .max_by(|a, b| a.1.goodput.total_cmp(&b.1.goodput))
                .map(|(k, r)| (*k, *r))
                .unwrap();
            best_fixed.push((best, best_run));
            for (i, r) in runs.iter().enumerate() {
                shares[i].push(r.goodput / best_run.goodput);
                p99s[i].push(r.p99.as_secs_f64() * 1e3);
            }
        }
        println!(
            "\n{} (capacity {:.0}/s, run {:?})",
            cell.name(),
            cell.capacity(),
            length
        );
        let bests: Vec<String> = best_fixed
            .iter()
            .map(|(k, r)| format!("{} {:.0}/s", k.name(), r.goodput))
            .collect();
        println!("  best fixed per round: {}", bests.join(", "));
        println!("  {:<42} {:>8} {:>9}", "limiter", "goodput", "p99 ms");
        for (i, k) in contenders.iter().enumerate() {
            println!(
                "  {:<42} {:>7.1}% {:>9.1}",
                k.name(),
                median(shares[i].clone()) * 100.0,
                median(p99s[i].clone())
            );
        }
    }
}
