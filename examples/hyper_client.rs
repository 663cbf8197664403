//! A limit on an HTTP client: ten requests issued at once through a
//! hyper-util client, never more than three on the wire.
//!
//! The client is wrapped in `ConcurrencyLimitLayer::new(3)` with a tower
//! `ServiceBuilder`; each request goes through its own clone with
//! `ServiceExt::oneshot`, and all clones share the one limit. A local axum
//! server counts how many requests it handles at once (each takes 100 ms).
//! The example prints when each request leaves the client and when its
//! answer comes back, and checks that the server never saw more than three.
//!
//! Run it with `cargo run --example hyper_client`. The server runs on
//! 127.0.0.1 (a port the OS picks); the example exits in about half a second.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::routing::get;
use axum::Router;
use http::Request;
use http_body_util::Empty;
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tower::{ServiceBuilder, ServiceExt};
use tower_concurrency::ConcurrencyLimitLayer;

const LIMIT: usize = 3;
const REQUESTS: usize = 10;

#[tokio::main]
async fn main() {
    let server = Arc::new(Counter::default());
    let addr = serve(server.clone()).await;
    let started = Instant::now();
    let at = move || started.elapsed().as_millis();

    let hyper = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let client = ServiceBuilder::new()
        .layer(ConcurrencyLimitLayer::new(LIMIT))
        // Inside the limit: runs once a request holds a permit.
        .map_request(move |request: Request<Empty<Bytes>>| {
            println!("{:>4} ms  {} sent", at(), request.uri().path());
            request
        })
        .service(hyper);

    println!("{REQUESTS} requests issued at once, limit {LIMIT}, the server takes 100 ms each:");
    let calls = (1..=REQUESTS).map(|n| {
        let request = Request::get(format!("http://{addr}/work/{n}"))
            .body(Empty::new())
            .unwrap();
        // `oneshot` waits for `poll_ready` (a permit), then calls.
        let call = client.clone().oneshot(request);
        async move {
            let response = call.await.unwrap();
            println!("{:>4} ms  /work/{n} answered {}", at(), response.status());
        }
    });
    futures::future::join_all(calls).await;

    let peak = server.peak.load(SeqCst);
    println!("the server saw at most {peak} requests at once");
    assert_eq!(
        peak, LIMIT,
        "the client limit should hold the server at {LIMIT}"
    );
}

/// Requests the server is handling now, and the most at once.
#[derive(Default)]
struct Counter {
    now: AtomicUsize,
    peak: AtomicUsize,
}

/// A local server whose `/work/{n}` takes 100 ms and counts requests.
async fn serve(counter: Arc<Counter>) -> SocketAddr {
    async fn work(State(counter): State<Arc<Counter>>, Path(n): Path<usize>) -> String {
        let now = counter.now.fetch_add(1, SeqCst) + 1;
        counter.peak.fetch_max(now, SeqCst);
        tokio::time::sleep(Duration::from_millis(100)).await;
        counter.now.fetch_sub(1, SeqCst);
        format!("work {n} done")
    }
    let app = Router::new()
        .route("/work/{n}", get(work))
        .with_state(counter);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}
