//! The metrics of a limited axum app, rendered for Prometheus.
//!
//! The app has one limit of 8 requests in flight, named `api`, split into
//! two partitions by the `x-priority` header: `live` is guaranteed 80% of
//! the limit and `batch` 20% (see `Limiter::partitioned`). Each client IP
//! may have at most 4 requests in flight (`limit_per_key`, with axum's
//! `ConnectInfo`), and `/health` skips the limit (`bypass`). When the limit
//! is full a request waits in a FIFO queue of 16 for at most 100 ms.
//!
//! Routes:
//!
//! - `GET /work`: 40 ms of work, behind the limit.
//! - `GET /health`: answers at once, bypassing the limit.
//! - `GET /metrics`: everything the `metrics` recorder holds, in the
//!   Prometheus text format, from `metrics-exporter-prometheus` (outside
//!   the limit: the route is added after the layer).
//!
//! So that it exits by itself, the example serves on 127.0.0.1 (a port the
//! OS picks) and drives a short load of 300 requests from clients bound to
//! their own loopback addresses, so that each has its own IP: four steady
//! `live` clients (127.0.0.2 to .5, 3 requests at a time each), a `batch`
//! client (127.0.0.6, 4 at a time), a noisy `live` client (127.0.0.9, 16 at
//! a time, well over its 4) and a health checker. It prints a snapshot of
//! the gauges while the load runs, what each client got, and at the end
//! every `tower_concurrency` line of `/metrics`, then shuts down. It takes
//! about two seconds.
//!
//! Run it with `cargo run --example metrics --features metrics`.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::routing::get;
use axum::Router;
use futures::StreamExt;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tower_concurrency::http_limit::{HttpLimitLayer, KeyLimit};
use tower_concurrency::{Limiter, Policy};

const LIMIT: usize = 8;
const WORK: Duration = Duration::from_millis(40);
const PER_CLIENT: usize = 4;
const QUEUE_TIMEOUT: Duration = Duration::from_millis(100);

/// One simulated client: where it connects from, its priority, how many
/// requests it sends and how many at a time.
struct Client {
    name: &'static str,
    ip: [u8; 4],
    path: &'static str,
    priority: &'static str,
    requests: usize,
    at_once: usize,
}

const CLIENTS: [Client; 7] = [
    Client::live("live-1", 2, 40, 3),
    Client::live("live-2", 3, 40, 3),
    Client::live("live-3", 4, 40, 3),
    Client::live("live-4", 5, 40, 3),
    Client {
        name: "batch",
        ip: [127, 0, 0, 6],
        path: "/work",
        priority: "batch",
        requests: 60,
        at_once: 4,
    },
    Client::live("noisy", 9, 60, 16),
    Client {
        name: "health",
        ip: [127, 0, 0, 2],
        path: "/health",
        priority: "live",
        requests: 20,
        at_once: 1,
    },
];

impl Client {
    const fn live(name: &'static str, last: u8, requests: usize, at_once: usize) -> Self {
        Self {
            name,
            ip: [127, 0, 0, last],
            path: "/work",
            priority: "live",
            requests,
            at_once,
        }
    }
}

#[tokio::main]
async fn main() {
    // The recorder first: a limiter registers its metrics when it is named.
    let prometheus = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("tower_concurrency_wait_seconds".into()),
            &[0.005, 0.01, 0.025, 0.05, 0.075, 0.1],
        )
        .expect("buckets are not empty")
        .install_recorder()
        .expect("the only recorder of this process");

    let (limiter, [live, batch]) = Limiter::new(LIMIT)
        .named("api")
        .partitioned([("live", 0.8), ("batch", 0.2)])
        .expect("shares add up to 1");
    let limit = HttpLimitLayer::from_limiter(limiter.clone())
        .policy(Policy::fifo(16).timeout(QUEUE_TIMEOUT))
        .bypass(|head| head.uri.path() == "/health")
        .partition_by(move |head| match head.header("x-priority") {
            Some("batch") => Some(batch),
            _ => Some(live),
        })
        .limit_per_key(KeyLimit::new(PER_CLIENT).max_keys(10_000), |head| {
            head.extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|info| info.0.ip())
        });
    let app = Router::new()
        .route(
            "/work",
            get(|| async {
                tokio::time::sleep(WORK).await;
                "done\n"
            }),
        )
        .route("/health", get(|| async { "ok\n" }))
        .layer(limit)
        .route(
            "/metrics",
            get(move || {
                let prometheus = prometheus.clone();
                async move { prometheus.render() }
            }),
        );

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async {
            stopped.await.ok();
        })
        .await
        .unwrap();
    });

    println!(
        "limit {LIMIT} (live 80%, batch 20%), at most {PER_CLIENT} per client IP, \
         a FIFO queue of 16 for at most {} ms, {} ms of work per request\n",
        QUEUE_TIMEOUT.as_millis(),
        WORK.as_millis()
    );
    let load = futures::future::join_all(CLIENTS.iter().map(|client| run(client, addr)));
    let watch = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        println!("while the load runs:");
        for line in scrape(addr).await.lines() {
            let gauge = ["_in_flight{", "_waiting{", "_limit{", "_guaranteed{"]
                .iter()
                .any(|name| line.contains(name));
            if gauge && !line.starts_with('#') {
                println!("  {line}");
            }
        }
        println!();
    };
    let (tallies, ()) = tokio::join!(load, watch);

    println!("what each client got:");
    for (client, tally) in CLIENTS.iter().zip(tallies) {
        let got: Vec<String> = tally
            .iter()
            .map(|(status, n)| format!("{n} x {status}"))
            .collect();
        println!(
            "  {:<7} {:<10} {:>3} requests, {:>2} at a time: {}",
            client.name,
            IpAddr::from(client.ip),
            client.requests,
            client.at_once,
            got.join(", ")
        );
    }

    println!("\nGET /metrics, the tower_concurrency lines:");
    for line in scrape(addr)
        .await
        .lines()
        .filter(|line| line.contains("tower_concurrency"))
    {
        println!("  {line}");
    }
    assert_eq!(limiter.in_flight(), 0);

    stop.send(()).ok();
    server.await.unwrap();
}

/// Sends one client's requests and counts the answers by status.
async fn run(client: &Client, addr: SocketAddr) -> BTreeMap<u16, usize> {
    let http = reqwest::Client::builder()
        .local_address(IpAddr::from(client.ip))
        .build()
        .unwrap();
    let url = format!("http://{addr}{}", client.path);
    let statuses: Vec<u16> = futures::stream::iter(0..client.requests)
        .map(|_| {
            let request = http.get(&url).header("x-priority", client.priority);
            async move {
                let response = request.send().await.unwrap();
                let status = response.status().as_u16();
                response.bytes().await.unwrap();
                status
            }
        })
        .buffer_unordered(client.at_once)
        .collect()
        .await;
    let mut tally = BTreeMap::new();
    for status in statuses {
        *tally.entry(status).or_default() += 1;
    }
    tally
}

/// `GET /metrics`, from the host itself.
async fn scrape(addr: SocketAddr) -> String {
    let http = reqwest::Client::builder()
        .local_address(IpAddr::V4(Ipv4Addr::LOCALHOST))
        .build()
        .unwrap();
    let response = http
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap();
    response.text().await.unwrap()
}
