//! A streamed response keeps its permit until its body ends.
//!
//! An axum route, `GET /download`, answers at once with its head, then
//! streams a body of 5 chunks, 100 ms apart (half a second). The limit is 2.
//! Client A starts a download, client B another 200 ms later, and once both
//! heads have arrived client C asks for a third. Three servers, three layers:
//!
//! 1. `HttpLimitLayer::new(2)`, policy wait (the default). The permits
//!    live in the response bodies, so C waits while A and B stream, and
//!    gets in when A's body ends (B still streaming).
//! 2. The same with `.policy(Policy::reject())`. C is answered `503` at
//!    once by the layer, with `Retry-After` and a body saying why; after A's
//!    body ends, a fourth request D gets in.
//! 3. The core `ConcurrencyLimitLayer::new(2)`. Its permit goes back when
//!    the head is ready (as tower's does, and as `HttpLimitLayer` does with
//!    `.release(Release::Head)`), so while A and B stream the limiter counts
//!    0 in flight, and C gets in at once: 3 bodies streaming under a limit
//!    of 2.
//!
//! The client is a hyper-util legacy client reading each body frame by
//! frame, so the example sees when a body ends. It prints a timeline per
//! scenario and panics if any of the facts above does not hold.
//!
//! Run it with `cargo run --example streaming`. It serves on 127.0.0.1 (a
//! port the OS picks), needs no network, and exits after about 3 seconds.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::routing::get;
use axum::Router;
use http::header::RETRY_AFTER;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::{Bytes, Incoming};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tower_concurrency::http_limit::HttpLimitLayer;
use tower_concurrency::{ConcurrencyLimitLayer, Limiter, Policy};

const LIMIT: usize = 2;
const CHUNKS: usize = 5;
const CHUNK_GAP: Duration = Duration::from_millis(100);
/// How long after A client B starts its download.
const STAGGER: Duration = Duration::from_millis(200);
/// Slack for "at the same moment" between two clients' views: the server
/// frees A's permit once it has sent A's last chunk, so C's head can reach
/// its client a moment before A's client has read the end of A's body (or
/// that client's task runs late on a busy machine). Far below the 300 ms C
/// would be early by if its permit had not waited for A's body.
const SLACK_MS: u128 = 100;

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// `GET /download`: the head at once, then `CHUNKS` chunks, `CHUNK_GAP`
/// apart. The body ends right after the last chunk.
async fn download() -> Body {
    let chunks = futures::stream::unfold(1, |n| async move {
        if n > CHUNKS {
            return None;
        }
        tokio::time::sleep(CHUNK_GAP).await;
        let chunk = Bytes::from(format!("chunk {n} of {CHUNKS}\n"));
        Some((Ok::<_, Infallible>(chunk), n + 1))
    });
    Body::from_stream(chunks)
}

/// The app: `/download` and nothing else, to be wrapped in a limit.
fn app() -> Router {
    Router::new().route("/download", get(download))
}

/// Serves `app` on a free loopback port until the example exits.
async fn serve(app: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// Milliseconds since a scenario started; prints its timeline.
#[derive(Clone, Copy)]
struct Clock(Instant);

impl Clock {
    fn start() -> Self {
        Self(Instant::now())
    }

    fn ms(self) -> u128 {
        self.0.elapsed().as_millis()
    }

    fn say(self, who: &str, what: &str) {
        println!("{:>6} ms  {who:<8} {what}", self.ms());
    }

    fn limiter(self, limiter: &Limiter, note: &str) {
        let counts = format!(
            "in_flight {}, waiting {}  {note}",
            limiter.in_flight(),
            limiter.waiting()
        );
        self.say("limiter", &counts);
    }
}

/// A response whose head has arrived.
struct Head {
    response: Response<Incoming>,
    /// When the request was sent, in ms.
    sent: u128,
    /// When its head arrived, in ms.
    at: u128,
}

/// Sends `GET /download` as `who` and returns once the head arrived.
async fn request(client: HttpClient, addr: SocketAddr, clock: Clock, who: &str) -> Head {
    let sent = clock.ms();
    let uri = format!("http://{addr}/download").parse().unwrap();
    let response = client.get(uri).await.unwrap();
    let at = clock.ms();
    let status = response.status();
    match response.headers().get(RETRY_AFTER) {
        None => clock.say(who, &format!("head {status}, body streaming")),
        Some(after) => {
            let after = after.to_str().unwrap();
            clock.say(who, &format!("head {status}, Retry-After: {after}"));
        }
    }
    Head { response, sent, at }
}

/// Reads `head`'s body to the end frame by frame, in its own task; the task
/// returns when the body ended, in ms, and the body.
fn read_body(head: Head, clock: Clock, who: &'static str) -> JoinHandle<(u128, String)> {
    tokio::spawn(async move {
        let streamed = head.response.status() == StatusCode::OK;
        let mut body = head.response.into_body();
        let mut text = Vec::new();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.unwrap().into_data() {
                text.extend_from_slice(&data);
            }
        }
        let ended = clock.ms();
        let text = String::from_utf8(text).unwrap();
        if streamed {
            clock.say(
                who,
                &format!("body ended ({} chunks)", text.lines().count()),
            );
        }
        (ended, text)
    })
}

/// Starts A, and B `STAGGER` later; returns once both heads arrived, with
/// the tasks reading their bodies.
async fn start_two(
    client: &HttpClient,
    addr: SocketAddr,
    clock: Clock,
) -> [JoinHandle<(u128, String)>; 2] {
    let a = request(client.clone(), addr, clock, "A").await;
    let a = read_body(a, clock, "A");
    tokio::time::sleep(STAGGER).await;
    let b = request(client.clone(), addr, clock, "B").await;
    let b = read_body(b, clock, "B");
    [a, b]
}

/// Waits until `condition` holds (the limiter's counts have no
/// notification), checking every millisecond; panics after 5 s.
async fn until(mut condition: impl FnMut() -> bool) {
    let check = async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), check)
        .await
        .expect("the limiter never showed the expected count");
}

/// The end of a streamed download, checked to be whole.
async fn ended(body: JoinHandle<(u128, String)>) -> u128 {
    let (at, text) = body.await.unwrap();
    assert_eq!(text.lines().count(), CHUNKS, "a whole body: {text:?}");
    at
}

/// Scenario 1: the permit is held until the body ends, and C waits.
async fn body_held_wait(client: &HttpClient) {
    println!("\n1. HttpLimitLayer::new({LIMIT}), policy wait (the default)");
    let layer = HttpLimitLayer::new(LIMIT);
    let limiter = layer.limiter().clone();
    let addr = serve(app().layer(layer)).await;

    let clock = Clock::start();
    let [a, b] = start_two(client, addr, clock).await;
    assert_eq!(
        limiter.in_flight(),
        2,
        "A's and B's bodies hold the permits"
    );

    clock.say("C", "sent");
    let c = tokio::spawn(request(client.clone(), addr, clock, "C"));
    until(|| limiter.waiting() == 1).await;
    clock.limiter(&limiter, "(A and B stream; C waits)");
    assert_eq!((limiter.in_flight(), limiter.waiting()), (2, 1));
    assert!(!c.is_finished(), "C must wait while both bodies stream");

    let c = c.await.unwrap();
    assert_eq!(c.response.status(), StatusCode::OK);
    let (c_sent, c_in) = (c.sent, c.at);
    let c = read_body(c, clock, "C");
    let a_end = ended(a).await;
    let b_end = ended(b).await;
    ended(c).await;

    assert!(
        c_in + SLACK_MS >= a_end && c_in < b_end,
        "C gets in when A's body ends ({a_end} ms), not before, and before B's ends \
         ({b_end} ms); it got in at {c_in} ms"
    );
    println!(
        "  => C waited {} ms: it got in when A's body ended, while B's still streamed.",
        c_in - c_sent
    );
}

/// Scenario 2: the layer answers 503 at once; once a body ends, D gets in.
async fn body_held_reject(client: &HttpClient) {
    println!("\n2. HttpLimitLayer::new({LIMIT}).policy(Policy::reject())");
    let layer = HttpLimitLayer::new(LIMIT).policy(Policy::reject());
    let limiter = layer.limiter().clone();
    let addr = serve(app().layer(layer)).await;

    let clock = Clock::start();
    let [a, b] = start_two(client, addr, clock).await;

    clock.say("C", "sent");
    let c = request(client.clone(), addr, clock, "C").await;
    let c_out = c.at;
    let status = c.response.status();
    let retry_after = c.response.headers().get(RETRY_AFTER).cloned();
    let (_, text) = read_body(c, clock, "C").await.unwrap();
    println!("{:>6}     {:<8} body: {:?}", "", "C", text);
    clock.limiter(&limiter, "(A and B stream; nobody waits)");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(retry_after.as_ref().map(|v| v.as_bytes()), Some(&b"1"[..]));
    assert_eq!((limiter.in_flight(), limiter.waiting()), (2, 0));

    let a_end = ended(a).await;
    assert!(c_out < a_end, "C is refused at once, not after a body ends");
    clock.say("D", "sent, A's body has ended");
    let d = request(client.clone(), addr, clock, "D").await;
    assert_eq!(d.response.status(), StatusCode::OK);
    let d_in = d.at;
    clock.limiter(&limiter, "(B and D stream)");
    assert_eq!(limiter.in_flight(), 2);
    let d = read_body(d, clock, "D");
    let b_end = ended(b).await;
    ended(d).await;
    assert!(d_in < b_end, "D gets in while B still streams");
    println!("  => C was refused at once, with no queue; D got in as soon as A's body ended.");
}

/// Scenario 3: the core layer's permit goes back with the head.
async fn head_released(client: &HttpClient) {
    println!("\n3. ConcurrencyLimitLayer::new({LIMIT}): the permit goes back with the head");
    let layer = ConcurrencyLimitLayer::new(LIMIT);
    let limiter = layer.limiter().clone();
    let addr = serve(app().layer(layer)).await;

    let clock = Clock::start();
    let [a, b] = start_two(client, addr, clock).await;
    clock.limiter(&limiter, "(though A and B stream)");
    assert_eq!(limiter.in_flight(), 0, "the heads gave the permits back");

    clock.say("C", "sent");
    let c = request(client.clone(), addr, clock, "C").await;
    assert_eq!(c.response.status(), StatusCode::OK);
    clock.limiter(&limiter, "(A, B and C stream: 3 under a limit of 2)");
    assert_eq!(limiter.in_flight(), 0);
    let c_in = c.at;
    let c = read_body(c, clock, "C");
    let a_end = ended(a).await;
    ended(b).await;
    ended(c).await;
    assert!(c_in < a_end, "C streamed while A and B still streamed");
    println!("  => the limit counted the handlers, not the downloads.");
}

#[tokio::main]
async fn main() {
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    println!(
        "GET /download streams {CHUNKS} chunks, {} ms apart; limit {LIMIT}. \
         A starts, B {} ms later, then C.",
        CHUNK_GAP.as_millis(),
        STAGGER.as_millis()
    );
    body_held_wait(&client).await;
    body_held_reject(&client).await;
    head_released(&client).await;
}
