//! An axum server to copy: one concurrency limit around the routes that do
//! the work, with the policy for when it is full chosen on the command line,
//! an admin route to read and move the limit, and a health route that
//! answers even when the limit is full.
//!
//! Routes:
//!
//! - `GET /slow`: sleeps 200 ms. Behind `HttpLimitLayer` (2 at a time
//!   here): a request holds its permit until its response body has been
//!   sent. When both permits are taken, the policy decides (see [`Choice`]);
//!   a refused request gets `503 Service Unavailable` with `Retry-After`
//!   and a body saying why, from the layer itself.
//! - `GET /health`: answers at once. Outside the limit.
//! - `GET /limit`: the limit, requests in flight and requests waiting, as text.
//! - `PUT /limit` with a number as the body: moves the limit while requests
//!   run; 0, a value too large or not a number gets a 400 saying why.
//!
//! So that it exits by itself, the example serves on 127.0.0.1 (a port the
//! OS picks), runs a short self-test with a hyper-util client, prints what it
//! saw and shuts the server down gracefully. The self-test sends 8 requests
//! to `/slow`, one every 10 ms, and prints what each got: with `wait` all 8
//! are served 2 at a time; with `reject` 2 are served and 6 refused at once;
//! with `fifo` and `lifo` 2 are served, 4 queue and the last 2 are refused,
//! then `fifo` serves the 2 oldest of the queue and `lifo` the 2 newest,
//! while the others give up after 300 ms.
//!
//! Run it with `cargo run --example axum_server` (policy `wait`), or name
//! the policy: `cargo run --example axum_server -- reject` (or `fifo`, `lifo`).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::routing::get;
use axum::Router;
use http::header::RETRY_AFTER;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tower_concurrency::http_limit::{HttpLimitLayer, Rejection, RetryAfter};
use tower_concurrency::{Limiter, Policy};

const LIMIT: usize = 2;
const SLOW: Duration = Duration::from_millis(200);
/// How many requests the `fifo` and `lifo` queues hold, and for how long.
const QUEUE: usize = 4;
const QUEUE_TIMEOUT: Duration = Duration::from_millis(300);
/// The self-test's burst: this many requests to `/slow`, this far apart.
const BURST: usize = 8;
const BURST_GAP: Duration = Duration::from_millis(10);

/// What a request to `/slow` does when every permit is taken, named by the
/// first command-line argument.
#[derive(Debug, Clone, Copy)]
enum Choice {
    /// `wait` (the default): wait in line for as long as it takes. This is
    /// backpressure, as tower's limit does: nothing is refused, a burst is
    /// served at the pace the limit allows, and callers see the delay. For
    /// work that must be done by callers that can wait.
    Wait,
    /// `reject`: refuse at once. Protects latency: whoever gets in is served
    /// at full speed, and the rest are told to come back later (`503` with
    /// `Retry-After`) and retry, here or on another instance.
    Reject,
    /// `fifo`: wait in a short queue, oldest first, for a short time. Absorbs
    /// short bursts the limit can catch up with, without letting a long
    /// overload pile up an endless queue: when the queue is full, or a
    /// request has waited too long, it is refused.
    Fifo,
    /// `lifo`: the same short queue, newest first. Under overload the
    /// freshest requests are served and the oldest time out: their clients
    /// are the likeliest to have given up already, so serving them would
    /// waste the permit.
    Lifo,
}

impl Choice {
    fn from_arg(arg: Option<&str>) -> Option<Self> {
        match arg.unwrap_or("wait") {
            "wait" => Some(Self::Wait),
            "reject" => Some(Self::Reject),
            "fifo" => Some(Self::Fifo),
            "lifo" => Some(Self::Lifo),
            _ => None,
        }
    }

    fn policy(self) -> Policy {
        match self {
            Self::Wait => Policy::wait(),
            Self::Reject => Policy::reject(),
            Self::Fifo => Policy::fifo(QUEUE).timeout(QUEUE_TIMEOUT),
            Self::Lifo => Policy::lifo(QUEUE).timeout(QUEUE_TIMEOUT),
        }
    }

    fn describe(self) -> String {
        let queue = |order| {
            format!(
                "queue {QUEUE} at most, {order} first, {} ms at most each",
                QUEUE_TIMEOUT.as_millis()
            )
        };
        match self {
            Self::Wait => "wait: queue without bound".into(),
            Self::Reject => "reject: refuse when full".into(),
            Self::Fifo => format!("fifo: {}", queue("oldest")),
            Self::Lifo => format!("lifo: {}", queue("newest")),
        }
    }
}

/// The limit around `/slow`: `LIMIT` requests at once, each holding its
/// permit until its response body ends; when full, as `choice` says.
fn limit(choice: Choice) -> HttpLimitLayer {
    HttpLimitLayer::new(LIMIT)
        .policy(choice.policy())
        // A refused request gets a 503 whose `Retry-After` estimates when a
        // permit will be free, in whole seconds from 1 to 10 (here always 1:
        // a request holds its permit for 200 ms).
        .rejection(
            Rejection::service_unavailable().retry_after(RetryAfter::Estimate { max_seconds: 10 }),
        )
}

/// The app: `/slow` behind `limit`, `/health` and `/limit` outside it.
fn app(limit: HttpLimitLayer) -> Router {
    // A handle on the same limit as the layer, for the admin route.
    let limiter = limit.limiter().clone();

    // The routes that do real work, then the limit around them. `.layer`
    // wraps the routes added before it, and this one layer value is one
    // limit for all of them (not one per route). A request holds its permit
    // until its response body ends (or the client hangs up), so a streamed
    // body counts for as long as it streams.
    let limited = Router::new().route("/slow", get(slow)).layer(limit);

    // Merged in after `.layer`, these routes are outside the limit: health
    // checks and the admin route answer even while every permit is taken.
    // Added before `.layer` they would share the limit, and wait in line or
    // be refused along with the slow requests.
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
    let arg = std::env::args().nth(1);
    let Some(choice) = Choice::from_arg(arg.as_deref()) else {
        eprintln!("usage: cargo run --example axum_server -- [wait|reject|fifo|lifo]");
        std::process::exit(2);
    };
    let app = app(limit(choice));

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
    println!("serving on http://{addr}");
    println!("/slow: {LIMIT} at once, policy {}", choice.describe());
    println!("self-test:\n");

    self_test(addr).await;

    // Stop accepting, let open requests finish, then return.
    stop.send(()).ok();
    server.await.unwrap().unwrap();
    println!("\nserver shut down");
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// What a request got back.
struct Answer {
    status: StatusCode,
    retry_after: Option<String>,
    text: String,
}

/// One request of the burst: when it was sent and answered, in ms since
/// the burst started, and what it got.
struct Sent {
    sent: u128,
    answered: u128,
    answer: Answer,
}

/// Sends a burst to /slow while checking that /health and /limit still
/// answer, shows what the policy made of it, refuses bad limits, then
/// raises the limit.
async fn self_test(addr: SocketAddr) {
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let call = |method, path, body| show(&client, addr, method, path, body);

    call(Method::GET, "/limit", "").await;

    let start = Instant::now();
    let burst: Vec<_> = (0..BURST)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                tokio::time::sleep(BURST_GAP * i as u32).await;
                let sent = start.elapsed().as_millis();
                let answer = send(&client, addr, Method::GET, "/slow", "").await;
                let answered = start.elapsed().as_millis();
                Sent {
                    sent,
                    answered,
                    answer,
                }
            })
        })
        .collect();
    println!(
        "                    {BURST} x GET /slow, one every {} ms (each takes {} ms)",
        BURST_GAP.as_millis(),
        SLOW.as_millis(),
    );

    // Midway through the burst, once every request has been sent.
    tokio::time::sleep(BURST_GAP * BURST as u32 + Duration::from_millis(20)).await;
    let asked = Instant::now();
    call(Method::GET, "/health", "").await;
    println!(
        "                    (in {} ms, though the limit is full: /health is outside it)",
        asked.elapsed().as_millis()
    );
    call(Method::GET, "/limit", "").await;

    let mut results = Vec::new();
    for request in burst {
        results.push(request.await.unwrap());
    }
    print_burst(&results);

    call(Method::PUT, "/limit", "0").await;
    call(Method::PUT, "/limit", "many").await;
    call(Method::PUT, "/limit", "5").await;
    call(Method::GET, "/limit", "").await;

    // The new limit lets 5 run at once.
    let start = Instant::now();
    let five = (0..5).map(|_| send(&client, addr, Method::GET, "/slow", ""));
    let answers = futures::future::join_all(five).await;
    let ok = answers
        .iter()
        .filter(|a| a.status == StatusCode::OK)
        .count();
    println!(
        "5 x GET /slow       {ok} x 200 in {} ms, all at once under the new limit",
        start.elapsed().as_millis()
    );
}

/// The burst's table, then how many got 200 and how many 503.
fn print_burst(results: &[Sent]) {
    println!("\n  #  sent  answered  status");
    for (n, r) in results.iter().enumerate() {
        let a = &r.answer;
        let refusal = match a.status {
            StatusCode::OK => String::new(),
            _ => format!(
                "  Retry-After: {}  {}",
                a.retry_after.as_deref().unwrap_or("none"),
                a.text.trim_end()
            ),
        };
        println!(
            "{:>3} {:>5} {:>9}  {}{refusal}",
            n + 1,
            r.sent,
            r.answered,
            a.status.as_u16()
        );
    }
    let count = |status| results.iter().filter(|r| r.answer.status == status).count();
    let mut retry_after: Vec<_> = results
        .iter()
        .filter_map(|r| r.answer.retry_after.as_deref())
        .collect();
    retry_after.sort();
    retry_after.dedup();
    let retry_after = match retry_after.as_slice() {
        [] => String::new(),
        seen => format!(" (Retry-After: {})", seen.join(", ")),
    };
    println!(
        "  => {} x 200, {} x 503{retry_after}\n",
        count(StatusCode::OK),
        count(StatusCode::SERVICE_UNAVAILABLE),
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
    let answer = send(client, addr, method.clone(), path, body).await;
    let request = match body {
        "" => format!("{method} {path}"),
        body => format!("{method} {path} {body:?}"),
    };
    println!("{request:<20}{} {}", answer.status.as_u16(), answer.text);
}

/// Sends one request; returns the status, `Retry-After` and body as text.
async fn send(
    client: &HttpClient,
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: &'static str,
) -> Answer {
    let request = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap();
    let response = client.request(request).await.unwrap();
    let status = response.status();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .map(|value| value.to_str().unwrap_or("?").to_owned());
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        retry_after,
        text: String::from_utf8_lossy(&bytes).into_owned(),
    }
}
