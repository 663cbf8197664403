//! An axum server to copy: one concurrency limit around the routes that do
//! the work, an admin route to read and move it, and a health route that
//! answers even when the limit is full.
//!
//! Routes:
//!
//! - `GET /slow`: sleeps 200 ms. Behind the limit (2 at a time here).
//! - `GET /health`: answers at once. Outside the limit.
//! - `GET /limit`: the limit, requests in flight and requests waiting, as text.
//! - `PUT /limit` with a number as the body: moves the limit while requests
//!   run; 0, a value too large or not a number gets a 400 saying why.
//!
//! So that it exits by itself, the example serves on 127.0.0.1 (a port the
//! OS picks), runs a short self-test with a hyper-util client, prints what it
//! saw and shuts the server down gracefully. Run it with
//! `cargo run --example axum_server`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::routing::get;
use axum::Router;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tower_concurrency::{ConcurrencyLimitLayer, Limiter};

const SLOW: Duration = Duration::from_millis(200);

/// The app: `/slow` behind `limit`, `/health` and `/limit` outside it.
fn app(limit: ConcurrencyLimitLayer) -> Router {
    // A handle on the same limit as the layer, for the admin route.
    let limiter = limit.limiter().clone();

    // The routes that do real work, then the limit around them. `.layer`
    // wraps the routes added before it, and this one layer value is one
    // limit for all of them (not one per route). A request holds its permit
    // until its handler returns the response; a body streamed after that is
    // not counted.
    let limited = Router::new().route("/slow", get(slow)).layer(limit);

    // Merged in after `.layer`, these routes are outside the limit: health
    // checks and the admin route answer even while every permit is taken.
    // Added before `.layer` they would share the limit and wait in line
    // behind the slow requests.
    Router::new()
        .route("/health", get(|| async { "ok" }))
        // Guard this route in a real deployment (auth, or an internal port).
        .route("/limit", get(show_limit).put(set_limit))
        .with_state(limiter)
        .merge(limited)
}

/// `GET /slow`: the work the limit protects.
async fn slow() -> &'static str {
    tokio::time::sleep(SLOW).await;
    "done"
}

/// `GET /limit`: what the limiter sees now.
async fn show_limit(State(limiter): State<Limiter>) -> String {
    format!(
        "limit {}, in flight {}, waiting {}",
        limiter.limit(),
        limiter.in_flight(),
        limiter.waiting()
    )
}

/// `PUT /limit` with a body such as `8`: moves the limit while requests run.
/// Raising it starts waiting requests at once; lowering it never cuts off a
/// request already running.
async fn set_limit(
    State(limiter): State<Limiter>,
    body: String,
) -> Result<String, (StatusCode, String)> {
    let bad = |message| (StatusCode::BAD_REQUEST, message);
    let new: usize = body
        .trim()
        .parse()
        .map_err(|_| bad(format!("not a whole number: {body:?}")))?;
    // `try_set_limit` refuses 0 and values above the largest limit, with a
    // message naming the value, and leaves the limit as it was.
    let old = limiter.try_set_limit(new).map_err(|e| bad(e.to_string()))?;
    Ok(format!("limit {old} -> {new}"))
}

#[tokio::main]
async fn main() {
    // At most 2 requests in /slow at once, for the whole app.
    let app = app(ConcurrencyLimitLayer::new(2));

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                stopped.await.ok();
            })
            .await
    });
    println!("serving on http://{addr}; self-test:\n");

    self_test(addr).await;

    // Stop accepting, let open requests finish, then return.
    stop.send(()).ok();
    server.await.unwrap().unwrap();
    println!("\nserver shut down");
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// Fills the limit with slow requests, checks that /health and /limit still
/// answer, refuses bad limits, then raises the limit so the waiting requests
/// start.
async fn self_test(addr: SocketAddr) {
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let call = |method, path, body| show(&client, addr, method, path, body);

    call(Method::GET, "/limit", "").await;

    let sent = Instant::now();
    let slow_requests: Vec<_> = (0..5)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                send(&client, addr, Method::GET, "/slow", "").await;
                sent.elapsed().as_millis()
            })
        })
        .collect();
    println!("                    5 x GET /slow sent at once (limit 2, each takes 200 ms)");
    tokio::time::sleep(Duration::from_millis(50)).await;

    let asked = Instant::now();
    call(Method::GET, "/health", "").await;
    println!(
        "                    (in {} ms, though the limit is full: /health is outside it)",
        asked.elapsed().as_millis()
    );
    call(Method::GET, "/limit", "").await;
    call(Method::PUT, "/limit", "0").await;
    call(Method::PUT, "/limit", "many").await;
    let raised = sent.elapsed().as_millis();
    call(Method::PUT, "/limit", "5").await;
    call(Method::GET, "/limit", "").await;

    let mut answered = Vec::new();
    for request in slow_requests {
        answered.push(request.await.unwrap());
    }
    answered.sort();
    let answered: Vec<_> = answered.iter().map(u128::to_string).collect();
    println!(
        "5 x GET /slow       answered after {} ms:",
        answered.join(", ")
    );
    println!(
        "                    2 ran at first; the 3 waiting started at {raised} ms, when the limit went to 5"
    );
}

/// Sends one request and prints it with the answer.
async fn show(
    client: &HttpClient,
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: &'static str,
) {
    let (status, text) = send(client, addr, method.clone(), path, body).await;
    let request = match body {
        "" => format!("{method} {path}"),
        body => format!("{method} {path} {body:?}"),
    };
    println!("{request:<20}{} {text}", status.as_u16());
}

/// Sends one request; returns the status and the body as text.
async fn send(
    client: &HttpClient,
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: &'static str,
) -> (StatusCode, String) {
    let request = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap();
    let response = client.request(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}
