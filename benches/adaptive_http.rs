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
//! ```text
//! cargo bench --bench adaptive_http
//! ADAPTIVE_HTTP_QUICK=1 cargo bench --bench adaptive_http   # 1 round, shorter runs
//! ```

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
use tower_concurrency::adaptive::{Aimd, Vegas, Windowed};
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
        // xorshift64 for exponential gaps.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let unit = (rng >> 11) as f64 / (1u64 << 53) as f64;
        next += Duration::from_secs_f64(-(1.0 - unit).ln() / rate);
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

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

fn main() {
    let quick = std::env::var_os("ADAPTIVE_HTTP_QUICK").is_some();
    let rounds = if quick { 1 } else { 3 };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let cells = [
        Cell {
            workers: 8,
            service: Duration::from_millis(5),
            step: false,
        },
        Cell {
            workers: 8,
            service: Duration::from_millis(5),
            step: true,
        },
        Cell {
            workers: 32,
            service: Duration::from_millis(20),
            step: false,
        },
        Cell {
            workers: 32,
            service: Duration::from_millis(20),
            step: true,
        },
    ];
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
