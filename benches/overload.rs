//! Overload over loopback: an axum backend with 4 slots of 10 ms work,
//! driven open loop at twice its capacity, behind each limit in turn.
//!
//! ```text
//! cargo bench --bench overload                       # one run, ~35 s
//! OVERLOAD_RUNS=3 cargo bench --bench overload       # three runs and their medians
//! OVERLOAD_VARIANTS=ours-fifo,ours-lifo OVERLOAD_FIFO_Q=8 cargo bench --bench overload
//! ```
//!
//! The backend's scarce resource is its own `Semaphore` of [`SLOTS`]
//! permits (FIFO) held for [`WORK`], so its nominal capacity is
//! `SLOTS / WORK` = 400 requests/s; without a limit in front, requests pile
//! up on that semaphore. Each variant gets a fresh server and a fresh client
//! whose connection pool is warmed up first. A ticker then sends requests at
//! their planned times whether or not earlier ones are done (open loop).
//! Each request's deadline and latency count from its planned time, so a
//! generator falling behind shows up as latency instead of hiding it
//! (coordinated omission).
//!
//! # Layout
//!
//! The server runs on its own current-thread runtime in its own OS thread;
//! the generator and the client run on another current-thread runtime on the
//! main thread. On 2 cores each side has one, and the ticker never waits
//! behind server work in a shared run queue. The generator's lag (how late
//! each request left after its planned time) is reported so it can be
//! checked, and the server tells each answer how long the request waited
//! for its slot (in the limit and on the backend's semaphore) and how long
//! the work took.
//!
//! # Reference figures
//!
//! Before the variants, the bench measures the unloaded latency (a quarter
//! of capacity, no limit) for the "p99 at most 3x unloaded p99" target, and
//! the backend's real saturation throughput (closed loop, slots never
//! idle). That is about 90% of nominal with `tokio::time::sleep`: tokio's
//! timer has 1 ms ticks and rounds deadlines up, and work that starts the
//! moment an earlier sleep ended starts just after a tick, so each 10 ms
//! of work occupies its slot for 11 ms. No limit can get goodput above that.
//! So by default the work is `std::thread::sleep` on the blocking pool
//! (precise to microseconds, ~99% of nominal), which tells the limiter's
//! behaviour apart from the timer's; `OVERLOAD_WORK=tokio` uses
//! `tokio::time::sleep` instead.
//!
//! # Queue settings
//!
//! Under sustained 2x overload a bounded queue is always full, so in FIFO
//! order every admitted request waits `q / SLOTS` service times: `q` sets
//! the latency, and the queue only has to be non-empty when a slot frees
//! for no slot to go idle. FIFO: `q = 4` (one waiter per slot, a wait of
//! about one service time) and `t = 25 ms` (about two service times: it only
//! fires on stalls, and bounds a served request at ~36 ms, 3x an unloaded
//! p99 of ~12 ms). LIFO serves the newest first, so extra depth absorbs
//! bursts without lengthening the wait of those served; the oldest wait
//! out their timeout and get a 503. LIFO: `q = 8`, `t = 25 ms`.
//!
//! # Settings (environment)
//!
//! `OVERLOAD_SECS` (4), `OVERLOAD_FACTOR` (2.0: offered load as a multiple
//! of capacity), `OVERLOAD_DEADLINE_MS` (250), `OVERLOAD_FIFO_Q` (4),
//! `OVERLOAD_FIFO_TIMEOUT_MS` (25), `OVERLOAD_LIFO_Q` (8),
//! `OVERLOAD_LIFO_TIMEOUT_MS` (25), `OVERLOAD_UNLOADED_SECS` (3),
//! `OVERLOAD_RUNS` (1), `OVERLOAD_VARIANTS` (all, comma-separated: none,
//! tower-limit, tower-shed, ours-wait, ours-reject, ours-fifo, ours-lifo),
//! `OVERLOAD_WORK` (`thread`, the default, or `tokio`).
//!
//! Run without `--bench` (as `cargo test --all-targets` does), it makes only
//! a short smoke run of every variant.

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::error_handling::HandleErrorLayer;
use axum::extract::{Request, State};
use axum::middleware::map_request;
use axum::routing::get;
use axum::serve::ListenerExt;
use axum::{Extension, Router};
use http::{StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::{oneshot, Semaphore};
use tokio::time::{Instant, MissedTickBehavior};
use tower::limit::ConcurrencyLimitLayer;
use tower::load_shed::LoadShedLayer;
use tower::{BoxError, ServiceBuilder};
use tower_concurrency::http_limit::HttpLimitLayer;
use tower_concurrency::Policy;

/// The backend's slots, and the limit every limiting variant puts in front.
const SLOTS: usize = 4;
/// The work one request does while it holds a slot.
const WORK: Duration = Duration::from_millis(10);
/// Connections opened before each variant, so connects do not count.
const WARM_CONNECTIONS: usize = 64;

fn capacity() -> f64 {
    SLOTS as f64 / WORK.as_secs_f64()
}

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

// ---------------------------------------------------------------- settings

struct Settings {
    smoke: bool,
    secs: f64,
    factor: f64,
    deadline: Duration,
    fifo: (usize, Duration),
    lifo: (usize, Duration),
    unloaded_secs: f64,
    saturation_secs: f64,
    runs: usize,
    variants: Vec<Variant>,
    work: Work,
}

impl Settings {
    fn from_env() -> Self {
        // cargo passes `--bench` under `cargo bench`; without it we are
        // run as a test and only check that everything works.
        let smoke = !std::env::args().any(|arg| arg == "--bench");
        let ms = |name, default| Duration::from_millis(env(name, default));
        let variants = match std::env::var("OVERLOAD_VARIANTS") {
            Ok(list) => list
                .split(',')
                .map(|name| Variant::from_name(name.trim()))
                .collect(),
            Err(_) => Variant::ALL.to_vec(),
        };
        let mut settings = Self {
            smoke,
            secs: env("OVERLOAD_SECS", 4.0),
            factor: env("OVERLOAD_FACTOR", 2.0),
            deadline: ms("OVERLOAD_DEADLINE_MS", 250),
            fifo: (
                env("OVERLOAD_FIFO_Q", 4),
                ms("OVERLOAD_FIFO_TIMEOUT_MS", 25),
            ),
            lifo: (
                env("OVERLOAD_LIFO_Q", 8),
                ms("OVERLOAD_LIFO_TIMEOUT_MS", 25),
            ),
            unloaded_secs: env("OVERLOAD_UNLOADED_SECS", 3.0),
            saturation_secs: 2.0,
            runs: env("OVERLOAD_RUNS", 1_usize).max(1),
            variants,
            work: match std::env::var("OVERLOAD_WORK").as_deref() {
                Ok("tokio") => Work::Tokio,
                Err(_) | Ok("thread") => Work::Thread,
                Ok(other) => panic!("OVERLOAD_WORK={other:?}: expected tokio or thread"),
            },
        };
        if smoke {
            settings.secs = 0.2;
            settings.unloaded_secs = 0.2;
            settings.saturation_secs = 0.1;
            settings.runs = 1;
        }
        settings
    }

    fn rate(&self) -> f64 {
        capacity() * self.factor
    }
}

fn env<T: FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(value) => value
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a valid value")),
        Err(_) => default,
    }
}

// ---------------------------------------------------------------- the server

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    None,
    TowerLimit,
    TowerShed,
    OursWait,
    OursReject,
    OursFifo,
    OursLifo,
}

impl Variant {
    const ALL: [Variant; 7] = [
        Variant::None,
        Variant::TowerLimit,
        Variant::TowerShed,
        Variant::OursWait,
        Variant::OursReject,
        Variant::OursFifo,
        Variant::OursLifo,
    ];

    fn name(self) -> &'static str {
        match self {
            Variant::None => "none",
            Variant::TowerLimit => "tower-limit",
            Variant::TowerShed => "tower-shed",
            Variant::OursWait => "ours-wait",
            Variant::OursReject => "ours-reject",
            Variant::OursFifo => "ours-fifo",
            Variant::OursLifo => "ours-lifo",
        }
    }

    fn from_name(name: &str) -> Self {
        Self::ALL
            .into_iter()
            .find(|v| v.name() == name)
            .unwrap_or_else(|| panic!("unknown variant {name:?}"))
    }

    fn describe(self, settings: &Settings) -> String {
        let queue = |(q, t): (usize, Duration)| format!("q = {q}, t = {} ms", t.as_millis());
        match self {
            Variant::None => "no limit".into(),
            Variant::TowerLimit => format!("tower ConcurrencyLimit({SLOTS})"),
            Variant::TowerShed => {
                format!("tower HandleError(503) + LoadShed + ConcurrencyLimit({SLOTS})")
            }
            Variant::OursWait => format!("HttpLimitLayer::new({SLOTS})"),
            Variant::OursReject => "Policy::reject()".into(),
            Variant::OursFifo => format!("Policy::fifo, {}", queue(settings.fifo)),
            Variant::OursLifo => format!("Policy::lifo, {}", queue(settings.lifo)),
        }
    }

    /// The app: one route, so the layer axum applies per route is one limit.
    fn app(self, settings: &Settings) -> Router {
        let backend = Backend {
            slots: Arc::new(Semaphore::new(SLOTS)),
            work: settings.work,
        };
        let app = Router::new().route("/work", get(work)).with_state(backend);
        let ours = |policy| HttpLimitLayer::new(SLOTS).policy(policy);
        let app = match self {
            Variant::None => app,
            Variant::TowerLimit => app.layer(ConcurrencyLimitLayer::new(SLOTS)),
            Variant::TowerShed => app.layer(
                ServiceBuilder::new()
                    .layer(HandleErrorLayer::new(|_: BoxError| async {
                        StatusCode::SERVICE_UNAVAILABLE
                    }))
                    .layer(LoadShedLayer::new())
                    .layer(ConcurrencyLimitLayer::new(SLOTS)),
            ),
            Variant::OursWait => app.layer(HttpLimitLayer::new(SLOTS)),
            Variant::OursReject => app.layer(ours(Policy::reject())),
            Variant::OursFifo => {
                let (q, t) = settings.fifo;
                app.layer(ours(Policy::fifo(q).timeout(t)))
            }
            Variant::OursLifo => {
                let (q, t) = settings.lifo;
                app.layer(ours(Policy::lifo(q).timeout(t)))
            }
        };
        // Outermost, so the stamp is taken before any limit.
        app.layer(map_request(|mut request: Request| async move {
            request.extensions_mut().insert(Arrived(Instant::now()));
            request
        }))
    }
}

/// When a request reached the server, stamped outside every limit.
#[derive(Debug, Clone, Copy)]
struct Arrived(Instant);

const WAIT_HEADER: &str = "x-wait-us";
const WORK_HEADER: &str = "x-work-us";

/// How the backend spends [`WORK`] while it holds a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Work {
    /// `tokio::time::sleep`: the scenario. tokio's timer has 1 ms ticks and
    /// rounds deadlines up, so work that starts just after a tick (as it
    /// does when it starts the moment an earlier sleep ended) takes 11 ms.
    Tokio,
    /// `std::thread::sleep` on the blocking pool: precise to a few
    /// microseconds, so the backend's capacity is the nominal 400/s. For
    /// telling the limiter's behaviour apart from the timer's.
    Thread,
}

/// The backend's state: its slots and how it works.
#[derive(Debug, Clone)]
struct Backend {
    slots: Arc<Semaphore>,
    work: Work,
}

/// One request's work: a backend slot (FIFO), held for [`WORK`]. It tells
/// the client how long it waited for its slot since it reached the server
/// (in the limit and on the backend's semaphore) and how long the work took.
async fn work(
    State(backend): State<Backend>,
    Extension(Arrived(arrived)): Extension<Arrived>,
) -> ([(&'static str, String); 2], &'static str) {
    let slot = backend
        .slots
        .acquire()
        .await
        .expect("the semaphore is never closed");
    let started = Instant::now();
    match backend.work {
        Work::Tokio => tokio::time::sleep(WORK).await,
        Work::Thread => tokio::task::spawn_blocking(|| std::thread::sleep(WORK))
            .await
            .expect("the work does not panic"),
    }
    let worked = started.elapsed();
    drop(slot);
    let micros = |d: Duration| d.as_micros().to_string();
    let headers = [
        (WAIT_HEADER, micros(started - arrived)),
        (WORK_HEADER, micros(worked)),
    ];
    (headers, "ok")
}

/// A server on 127.0.0.1:0, on its own runtime in its own thread. Dropping
/// it stops the runtime, and with it every connection.
struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start(app: Router) -> Self {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("overload-server".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("server runtime");
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                        .await
                        .expect("bind 127.0.0.1:0");
                    addr_tx
                        .send(listener.local_addr().expect("local address"))
                        .expect("main thread waits for the address");
                    let listener = listener.tap_io(|tcp| {
                        let _ = tcp.set_nodelay(true);
                    });
                    tokio::select! {
                        served = axum::serve(listener, app).into_future() => served.expect("serve"),
                        _ = stopped => {}
                    }
                });
            })
            .expect("spawn the server thread");
        let addr = addr_rx.recv().expect("the server reports its address");
        Self {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn uri(&self) -> Uri {
        format!("http://{}/work", self.addr)
            .parse()
            .expect("a valid URI")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

// ---------------------------------------------------------------- the client

fn client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1024)
        .build(connector)
}

/// Opens [`WARM_CONNECTIONS`] pooled connections (whatever the answers),
/// then lets the server drain.
async fn warm_up(client: &HttpClient, uri: &Uri) {
    let requests: Vec<_> = (0..WARM_CONNECTIONS)
        .map(|_| {
            let (client, uri) = (client.clone(), uri.clone());
            tokio::spawn(async move {
                if let Ok(response) = client.get(uri).await {
                    let _ = response.into_body().collect().await;
                }
            })
        })
        .collect();
    for request in requests {
        let _ = request.await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// A 200 answered within the deadline.
#[derive(Debug, Clone, Copy)]
struct Success {
    /// From the planned send time to the end of the body.
    latency: Duration,
    /// Server side, from arrival to a backend slot (limit and backend queue).
    wait: Duration,
    /// Server side, the work itself (the 10 ms sleep, as the timer ran it).
    work: Duration,
}

#[derive(Debug, Clone, Copy)]
enum Outcome {
    Ok(Success),
    /// 503 within the deadline.
    Shed,
    /// No whole answer within the deadline.
    TimedOut,
    /// Any other status, or a connection error.
    Other,
}

async fn request(client: HttpClient, uri: Uri, planned: Instant, deadline: Duration) -> Outcome {
    let exchange = async {
        let response = client.get(uri).await?;
        let micros = |name| {
            let value = response.headers().get(name)?.to_str().ok()?;
            value.parse().ok().map(Duration::from_micros)
        };
        let timings = micros(WAIT_HEADER).zip(micros(WORK_HEADER));
        let status = response.status();
        response.into_body().collect().await?;
        Ok::<_, BoxError>((status, timings))
    };
    let outcome = tokio::time::timeout_at(planned + deadline, exchange).await;
    // `timeout_at` polls the exchange before its timer, so an answer read
    // by a late-running task can come back after the deadline: not in time.
    let latency = planned.elapsed();
    match outcome {
        Err(_) => Outcome::TimedOut,
        Ok(Ok((StatusCode::OK, _))) if latency > deadline => Outcome::TimedOut,
        Ok(Ok((StatusCode::OK, Some((wait, work))))) => Outcome::Ok(Success {
            latency,
            wait,
            work,
        }),
        Ok(Ok((StatusCode::SERVICE_UNAVAILABLE, _))) => Outcome::Shed,
        Ok(_) => Outcome::Other,
    }
}

/// What one open-loop run saw.
struct Measured {
    outcomes: Vec<Outcome>,
    /// How late each request was spawned after its planned time.
    lag: Vec<Duration>,
    /// From the first planned send to the end of sending or the last
    /// success, whichever is later: what goodput is divided by, so the
    /// answers that come after the last send are not counted for free.
    span: Duration,
}

/// Sends `rate` requests a second for `secs`, each at its planned time
/// whether or not earlier ones are done, and waits for them all.
async fn open_loop(
    client: &HttpClient,
    uri: &Uri,
    rate: f64,
    secs: f64,
    deadline: Duration,
) -> Measured {
    let n = (rate * secs).round() as usize;
    let period = Duration::from_secs_f64(1.0 / rate);
    let mut ticker = tokio::time::interval_at(Instant::now() + Duration::from_millis(5), period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut tasks = Vec::with_capacity(n);
    let mut lag = Vec::with_capacity(n);
    let mut first = None;
    for _ in 0..n {
        // With `Burst`, `tick` returns the planned instant, not the late one.
        let planned = ticker.tick().await;
        first.get_or_insert(planned);
        lag.push(planned.elapsed());
        let task = tokio::spawn(request(client.clone(), uri.clone(), planned, deadline));
        tasks.push((planned, task));
    }
    let first = first.unwrap_or_else(Instant::now);
    let mut end = first + period * n as u32;
    let mut outcomes = Vec::with_capacity(n);
    for (planned, task) in tasks {
        let outcome = task.await.expect("a request task panicked");
        if let Outcome::Ok(success) = outcome {
            end = end.max(planned + success.latency);
        }
        outcomes.push(outcome);
    }
    Measured {
        outcomes,
        lag,
        span: end - first,
    }
}

/// The backend's real throughput: `4 * SLOTS` clients in a closed loop keep
/// its semaphore always waited on, so its slots are never idle. Counts the
/// answers that complete in a window that leaves out the start.
async fn saturation(settings: &Settings) -> f64 {
    let server = Server::start(Variant::None.app(settings));
    let (client, uri) = (client(), server.uri());
    warm_up(&client, &uri).await;
    let window = Duration::from_secs_f64(settings.saturation_secs);
    let from = Instant::now() + window / 10;
    let until = from + window;
    let workers: Vec<_> = (0..4 * SLOTS)
        .map(|_| {
            let (client, uri) = (client.clone(), uri.clone());
            tokio::spawn(async move {
                let mut done = 0_u32;
                while Instant::now() < until {
                    let Ok(response) = client.get(uri.clone()).await else {
                        continue;
                    };
                    let ok = response.status() == StatusCode::OK;
                    let read = response.into_body().collect().await.is_ok();
                    let now = Instant::now();
                    if ok && read && now >= from && now < until {
                        done += 1;
                    }
                }
                done
            })
        })
        .collect();
    let mut done = 0;
    for worker in workers {
        done += worker.await.expect("a saturation worker panicked");
    }
    f64::from(done) / window.as_secs_f64()
}

// ---------------------------------------------------------------- figures

#[derive(Debug, Clone, Copy, Default)]
struct Row {
    sent: f64,
    goodput_per_sec: f64,
    goodput_pct: f64,
    p50_ms: f64,
    p99_ms: f64,
    shed_pct: f64,
    timed_out_pct: f64,
    other_pct: f64,
    wait_p50_ms: f64,
    wait_p99_ms: f64,
    work_p50_ms: f64,
    lag_p99_ms: f64,
    lag_max_ms: f64,
}

impl Row {
    fn from_measured(measured: &Measured) -> Self {
        let sent = measured.outcomes.len();
        let mut ok = Vec::new();
        let (mut shed, mut timed_out, mut other) = (0, 0, 0);
        for outcome in &measured.outcomes {
            match *outcome {
                Outcome::Ok(success) => ok.push(success),
                Outcome::Shed => shed += 1,
                Outcome::TimedOut => timed_out += 1,
                Outcome::Other => other += 1,
            }
        }
        let share = |n: usize| 100.0 * n as f64 / sent.max(1) as f64;
        let sorted = |f: fn(&Success) -> Duration| {
            let mut v: Vec<Duration> = ok.iter().map(f).collect();
            v.sort_unstable();
            v
        };
        let (latency, wait, work) = (
            sorted(|s| s.latency),
            sorted(|s| s.wait),
            sorted(|s| s.work),
        );
        let mut lag = measured.lag.clone();
        lag.sort_unstable();
        let goodput = ok.len() as f64 / measured.span.as_secs_f64();
        Self {
            sent: sent as f64,
            goodput_per_sec: goodput,
            goodput_pct: 100.0 * goodput / capacity(),
            p50_ms: ms(percentile(&latency, 0.50)),
            p99_ms: ms(percentile(&latency, 0.99)),
            shed_pct: share(shed),
            timed_out_pct: share(timed_out),
            other_pct: share(other),
            wait_p50_ms: ms(percentile(&wait, 0.50)),
            wait_p99_ms: ms(percentile(&wait, 0.99)),
            work_p50_ms: ms(percentile(&work, 0.50)),
            lag_p99_ms: ms(percentile(&lag, 0.99)),
            lag_max_ms: ms(lag.last().copied()),
        }
    }

    /// The median of each figure on its own.
    fn median(rows: &[Row]) -> Row {
        let m = |f: fn(&Row) -> f64| {
            let mut column: Vec<f64> = rows.iter().map(f).collect();
            column.sort_by(f64::total_cmp);
            median(&column)
        };
        Row {
            sent: m(|r| r.sent),
            goodput_per_sec: m(|r| r.goodput_per_sec),
            goodput_pct: m(|r| r.goodput_pct),
            p50_ms: m(|r| r.p50_ms),
            p99_ms: m(|r| r.p99_ms),
            shed_pct: m(|r| r.shed_pct),
            timed_out_pct: m(|r| r.timed_out_pct),
            other_pct: m(|r| r.other_pct),
            wait_p50_ms: m(|r| r.wait_p50_ms),
            wait_p99_ms: m(|r| r.wait_p99_ms),
            work_p50_ms: m(|r| r.work_p50_ms),
            lag_p99_ms: m(|r| r.lag_p99_ms),
            lag_max_ms: m(|r| r.lag_max_ms),
        }
    }
}

/// Nearest-rank percentile of sorted samples (NaN if none).
fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn ms(d: Option<Duration>) -> f64 {
    d.map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
}

fn median(sorted: &[f64]) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// Figures of one whole run: unloaded p99, saturation, and every variant.
struct Run {
    unloaded: Row,
    saturation: f64,
    rows: Vec<(Variant, Row)>,
}

async fn run(settings: &Settings) -> Run {
    // Unloaded latency: a quarter of capacity, no limit.
    let unloaded = {
        let server = Server::start(Variant::None.app(settings));
        let (client, uri) = (client(), server.uri());
        warm_up(&client, &uri).await;
        let rate = capacity() / 4.0;
        let measured = open_loop(
            &client,
            &uri,
            rate,
            settings.unloaded_secs,
            settings.deadline,
        )
        .await;
        Row::from_measured(&measured)
    };
    let saturation = saturation(settings).await;
    let mut rows = Vec::new();
    for &variant in &settings.variants {
        let server = Server::start(variant.app(settings));
        let (client, uri) = (client(), server.uri());
        warm_up(&client, &uri).await;
        let measured = open_loop(
            &client,
            &uri,
            settings.rate(),
            settings.secs,
            settings.deadline,
        )
        .await;
        let row = Row::from_measured(&measured);
        eprintln!(
            "  {:<12} goodput {:5.1} %  p99 {:6.1} ms",
            variant.name(),
            row.goodput_pct,
            row.p99_ms
        );
        rows.push((variant, row));
        drop(client);
        drop(server);
    }
    Run {
        unloaded,
        saturation,
        rows,
    }
}

fn print_table(title: &str, run: &Run, settings: &Settings) {
    println!("### {title}\n");
    println!(
        "unloaded (no limit, {:.0} req/s): p50 {:.1} ms, p99 {:.1} ms (work p50 {:.1} ms); \
         backend saturation throughput (closed loop): {:.0} req/s = {:.1} % of nominal capacity\n",
        capacity() / 4.0,
        run.unloaded.p50_ms,
        run.unloaded.p99_ms,
        run.unloaded.work_p50_ms,
        run.saturation,
        100.0 * run.saturation / capacity(),
    );
    println!(
        "| variant | sent | goodput % cap | goodput/s | % of saturation | p50 ms | p99 ms \
         | shed % | timed out % | other % | server wait p50/p99 ms | work p50 ms \
         | gen lag p99/max ms | limit |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    for (variant, row) in &run.rows {
        println!(
            "| {} | {:.0} | {:.1} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} \
             | {:.1} / {:.1} | {:.1} | {:.1} / {:.1} | {} |",
            variant.name(),
            row.sent,
            row.goodput_pct,
            row.goodput_per_sec,
            100.0 * row.goodput_per_sec / run.saturation,
            row.p50_ms,
            row.p99_ms,
            row.shed_pct,
            row.timed_out_pct,
            row.other_pct,
            row.wait_p50_ms,
            row.wait_p99_ms,
            row.work_p50_ms,
            row.lag_p99_ms,
            row.lag_max_ms,
            variant.describe(settings),
        );
    }
    println!();
}

fn print_targets(run: &Run) {
    let row = |v| run.rows.iter().find(|(w, _)| *w == v).map(|(_, r)| *r);
    let verdict = |met: bool| if met { "met" } else { "NOT met" };
    println!("### Targets\n");
    match (row(Variant::OursReject), row(Variant::TowerShed)) {
        (Some(ours), Some(tower)) => println!(
            "- ours-reject goodput {:.1} % >= tower-shed goodput {:.1} %: {}",
            ours.goodput_pct,
            tower.goodput_pct,
            verdict(ours.goodput_pct >= tower.goodput_pct)
        ),
        _ => println!("- ours-reject vs tower-shed: not run"),
    }
    let bound = 3.0 * run.unloaded.p99_ms;
    for variant in [Variant::OursFifo, Variant::OursLifo] {
        let Some(r) = row(variant) else {
            println!("- {}: not run", variant.name());
            continue;
        };
        let of_saturation = 100.0 * r.goodput_per_sec / run.saturation;
        println!(
            "- {}: goodput {:.1} % of capacity >= 97 %: {} ({:.1} % of measured saturation: {}); \
             p99 {:.1} ms <= 3 x unloaded p99 = {:.1} ms: {}",
            variant.name(),
            r.goodput_pct,
            verdict(r.goodput_pct >= 97.0),
            of_saturation,
            verdict(of_saturation >= 97.0),
            r.p99_ms,
            bound,
            verdict(r.p99_ms <= bound),
        );
    }
    println!();
}

fn main() {
    let settings = Settings::from_env();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime");

    println!("## Overload over loopback\n");
    if settings.smoke {
        println!("(smoke run: not `cargo bench`, figures are not meaningful)\n");
    }
    println!(
        "backend: {SLOTS} slots x {} ms of work ({}) = capacity {:.0} req/s; \
         offered {:.0} req/s ({:.2} x) open loop for {} s per variant; \
         client deadline {} ms from the planned send time; {} warm connections; {} run(s)\n",
        WORK.as_millis(),
        match settings.work {
            Work::Tokio => "tokio::time::sleep",
            Work::Thread => "std::thread::sleep on the blocking pool",
        },
        capacity(),
        settings.rate(),
        settings.factor,
        settings.secs,
        settings.deadline.as_millis(),
        WARM_CONNECTIONS,
        settings.runs,
    );

    let mut runs = Vec::new();
    for i in 0..settings.runs {
        eprintln!("run {} of {}", i + 1, settings.runs);
        let run = runtime.block_on(run(&settings));
        if settings.runs > 1 {
            print_table(&format!("Run {}", i + 1), &run, &settings);
        }
        runs.push(run);
    }
    let summary = if runs.len() == 1 {
        runs.pop().expect("one run")
    } else {
        let mut saturation: Vec<f64> = runs.iter().map(|r| r.saturation).collect();
        saturation.sort_by(f64::total_cmp);
        let unloaded: Vec<Row> = runs.iter().map(|r| r.unloaded).collect();
        let rows = settings
            .variants
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let rows: Vec<Row> = runs.iter().map(|r| r.rows[i].1).collect();
                (v, Row::median(&rows))
            })
            .collect();
        Run {
            unloaded: Row::median(&unloaded),
            saturation: median(&saturation),
            rows,
        }
    };
    let title = if settings.runs > 1 {
        format!("Median of {} runs", settings.runs)
    } else {
        "Results".to_string()
    };
    print_table(&title, &summary, &settings);
    if !settings.smoke {
        print_targets(&summary);
    }
}
