//! One limit for a whole axum app, and why `tower::limit` does not give you one.
//!
//! An axum app with three routes (`/users`, `/orders`, `/search`) sits behind
//! one `.layer(ConcurrencyLimitLayer::new(4))`. A client sends 40 requests at
//! once, spread over the routes; every handler sleeps 50 ms and counts how
//! many requests run at the same time, per route and overall.
//!
//! The same app and burst then run behind `tower::limit::ConcurrencyLimitLayer::new(4)`.
//! axum's `Router::layer` builds one service per route, and tower's layer
//! makes a new semaphore for each, so that app runs 4 per route: 12 at once.
//!
//! Last, the limiter handle kept from the layer reads the limit while the
//! first burst runs, and `set_limit(8)` raises it on the running server.
//!
//! Run it with `cargo run --example demo`. It serves on 127.0.0.1 (a port
//! the OS picks), needs no network, and exits after about a second.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::routing::get;
use axum::Router;
use http::StatusCode;
use http_body_util::Empty;
use hyper::body::Bytes;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tower_concurrency::ConcurrencyLimitLayer;

const ROUTES: [&str; 3] = ["/users", "/orders", "/search"];
const LIMIT: usize = 4;
const RAISED: usize = 8;
const BURST: usize = 40;
const WORK: Duration = Duration::from_millis(50);

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// How many requests run now, and the most that ran at once.
#[derive(Default)]
struct Gauge {
    now: AtomicUsize,
    peak: AtomicUsize,
}

impl Gauge {
    fn enter(&self) {
        let now = self.now.fetch_add(1, SeqCst) + 1;
        self.peak.fetch_max(now, SeqCst);
    }

    fn leave(&self) {
        self.now.fetch_sub(1, SeqCst);
    }

    /// The peak so far, starting a new count.
    fn take_peak(&self) -> usize {
        self.peak.swap(0, SeqCst)
    }
}

/// What the server saw: overall, and for each of `ROUTES`.
#[derive(Default)]
struct Seen {
    overall: Gauge,
    routes: [Gauge; ROUTES.len()],
}

/// One burst's line in the table.
struct Row {
    name: String,
    all_ok: bool,
    peaks: [usize; ROUTES.len()],
    overall: usize,
    took: Duration,
}

/// The app without any limit: each route does 50 ms of work.
fn routes(seen: Arc<Seen>) -> Router {
    let mut router = Router::new();
    for (route, path) in ROUTES.into_iter().enumerate() {
        router = router.route(
            path,
            get(move |State(seen): State<Arc<Seen>>| work(seen, route)),
        );
    }
    router.with_state(seen)
}

async fn work(seen: Arc<Seen>, route: usize) -> &'static str {
    seen.overall.enter();
    seen.routes[route].enter();
    tokio::time::sleep(WORK).await;
    seen.routes[route].leave();
    seen.overall.leave();
    ROUTES[route]
}

/// Serves `app` on a free loopback port until the example exits.
async fn serve(app: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// Sends `BURST` requests at once, round-robin over the routes, and reads
/// back what the server saw.
async fn burst(name: String, client: &HttpClient, addr: SocketAddr, seen: &Seen) -> Row {
    let started = Instant::now();
    let requests = (0..BURST).map(|i| {
        let uri = format!("http://{addr}{}", ROUTES[i % ROUTES.len()]);
        client.get(uri.parse().unwrap())
    });
    let responses = futures::future::join_all(requests).await;
    let took = started.elapsed();
    Row {
        name,
        all_ok: responses
            .iter()
            .all(|r| matches!(r, Ok(res) if res.status() == StatusCode::OK)),
        peaks: seen.routes.each_ref().map(Gauge::take_peak),
        overall: seen.overall.take_peak(),
        took,
    }
}

#[tokio::main]
async fn main() {
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    println!(
        "{BURST} requests at once over {}; each handler sleeps {} ms.",
        ROUTES.join(", "),
        WORK.as_millis()
    );
    println!("Both apps are built with `.layer(ConcurrencyLimitLayer::new({LIMIT}))` once.\n");

    // This crate: one layer value, one limit for every route it wraps.
    let ours = ConcurrencyLimitLayer::new(LIMIT);
    let limiter = ours.limiter().clone();
    let seen = Arc::new(Seen::default());
    let addr = serve(routes(seen.clone()).layer(ours)).await;

    // Look at the limit once while the burst runs (in its third round).
    let sample = async {
        tokio::time::sleep(WORK * 5 / 2).await;
        (limiter.limit(), limiter.in_flight(), limiter.waiting())
    };
    let name = format!("tower_concurrency, limit {LIMIT}");
    let (first, (limit, in_flight, waiting)) =
        tokio::join!(burst(name, &client, addr, &seen), sample);
    println!(
        "mid-burst, the limiter handle reports: limit {limit}, in_flight() {in_flight}, \
         waiting() {waiting} (queued for a permit)"
    );

    // Move the limit of the running server through the same handle.
    let old = limiter.set_limit(RAISED);
    println!("limiter.set_limit({RAISED}) on the running server (was {old})\n");
    let name = format!("tower_concurrency, set_limit({RAISED})");
    let raised = burst(name, &client, addr, &seen).await;

    // tower's layer: a new semaphore for each route axum builds.
    let seen = Arc::new(Seen::default());
    let app = routes(seen.clone()).layer(tower::limit::ConcurrencyLimitLayer::new(LIMIT));
    let addr = serve(app).await;
    let name = format!("tower::limit, limit {LIMIT}");
    let tower = burst(name, &client, addr, &seen).await;

    print_table(&[first, tower, raised]);
    println!();
    println!(
        "tower_concurrency: one layer value is one limit, so the whole app ran {LIMIT} at a time."
    );
    println!(
        "tower::limit: axum applied the layer to each route, so each route got its own {LIMIT} \
         ({} at once for the app);\n  it finished sooner only because it let that many run.",
        LIMIT * ROUTES.len()
    );
    println!(
        "set_limit({RAISED}): the kept handle moved the limit of the running server, no restart."
    );
}

fn print_table(rows: &[Row]) {
    let cell = |s: &str| format!("{s:>9}");
    let paths: String = ROUTES.map(cell).concat();
    println!(
        "{:<34}{:>9}{:>9}   peak in flight seen by the server{:>10}",
        "", "requests", "all 200", "time"
    );
    println!("{:<34}{:>18}   {paths}{:>9}", "", "", "overall");
    for row in rows {
        let peaks: String = row.peaks.map(|p| cell(&p.to_string())).concat();
        println!(
            "{:<34}{BURST:>9}{:>9}   {peaks}{:>9}{:>7} ms",
            row.name,
            if row.all_ok { "yes" } else { "NO" },
            row.overall,
            row.took.as_millis()
        );
    }
}
