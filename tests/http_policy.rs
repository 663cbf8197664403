//! Overload answered by the HTTP layer: refusals become `503`/`429`
//! responses with `Retry-After` (over loopback, through axum's `.layer()`
//! with no `HandleErrorLayer`), and the policies' queues, timeouts,
//! cancellation and estimates over `HttpLimit` under paused time.

#![cfg(feature = "http")]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body::Body as _;
use http_body_util::{BodyExt, Full};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_test::{assert_pending, task};
use tower::{service_fn, Layer, Service, ServiceExt};
use tower_concurrency::http_limit::{HttpLimit, HttpLimitLayer, Rejection, RetryAfter};
use tower_concurrency::{Limiter, Permit, Policy, Reason, Rejected};

const GUARD: Duration = Duration::from_secs(60);

async fn guard<F: Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(GUARD, future)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// Lets other tasks run until `cond` holds, without moving paused time.
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..10_000 {
        if cond() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("never happened: {what}");
}

/// The `Retry-After` header as seconds; it must be a valid delay-seconds
/// value whenever it is present.
fn retry_after(headers: &HeaderMap) -> Option<u64> {
    let value = headers.get(RETRY_AFTER)?;
    let text = value.to_str().expect("Retry-After is visible ASCII");
    Some(
        text.parse::<u64>()
            .unwrap_or_else(|_| panic!("Retry-After {text:?} is not delay-seconds")),
    )
}

fn take_all(limiter: &Limiter) -> Vec<Permit> {
    let held: Vec<_> = std::iter::from_fn(|| limiter.try_acquire()).collect();
    assert_eq!(held.len(), limiter.limit());
    held
}

// ---------------------------------------------------------------------------
// Over loopback: what a refused client receives.
// ---------------------------------------------------------------------------

/// What a client received.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

async fn fetch(addr: SocketAddr) -> Answer {
    let response = guard("a response", reqwest::get(format!("http://{addr}/")))
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = guard("a body", response.bytes()).await.unwrap();
    Answer {
        status,
        headers,
        body,
    }
}

async fn serve(app: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn hello() -> Router {
    Router::new().route("/", get(|| async { "ok" }))
}

/// Serves `/` behind a limit of 2 that refuses at once with `rejection`,
/// and fetches it while the test holds both permits. Checks what every
/// refusal has: answered at once with nothing queued, `Retry-After` (if
/// any) valid, a `Content-Length` matching the body, and the `Rejected`
/// kept out of the wire.
async fn refused_with(rejection: Option<Rejection>) -> Answer {
    let mut layer = HttpLimitLayer::new(2).policy(Policy::reject());
    if let Some(rejection) = rejection {
        layer = layer.rejection(rejection);
    }
    let limiter = layer.limiter().clone();
    let addr = serve(hello().layer(layer)).await;

    let held = take_all(&limiter);
    let answer = fetch(addr).await;
    assert_eq!(limiter.waiting(), 0, "a refusal queues nothing");
    assert_eq!(limiter.in_flight(), 2);
    let _ = retry_after(&answer.headers);
    assert_eq!(
        answer.headers[CONTENT_LENGTH],
        answer.body.len().to_string().as_str()
    );

    drop(held);
    let ok = fetch(addr).await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(ok.body, "ok");
    assert!(ok.headers.get(RETRY_AFTER).is_none());
    answer
}

/// Default rejection: `503`, `Retry-After: 1`, a plain-text body naming the
/// limit.
#[tokio::test]
async fn reject_answers_503_with_retry_after_1_and_a_text_body_naming_the_limit() {
    let answer = refused_with(None).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(retry_after(&answer.headers), Some(1));
    assert_eq!(answer.headers[RETRY_AFTER], "1");
    let content_type = answer.headers[CONTENT_TYPE].to_str().unwrap();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    assert_eq!(answer.body, "concurrency limit of 2 reached\n");
}

/// `too_many_requests()` answers `429`, still with `Retry-After: 1` and the
/// default text body.
#[tokio::test]
async fn too_many_requests_answers_429() {
    let answer = refused_with(Some(Rejection::too_many_requests())).await;
    assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(retry_after(&answer.headers), Some(1));
    assert_eq!(answer.body, "concurrency limit of 2 reached\n");
}

/// Any status, a custom body and a custom content type are sent as set.
#[tokio::test]
async fn custom_status_body_and_content_type_are_sent() {
    let rejection = Rejection::new(StatusCode::BAD_GATEWAY)
        .body(r#"{"error":"busy"}"#)
        .content_type(HeaderValue::from_static("application/json"));
    let answer = refused_with(Some(rejection)).await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    assert_eq!(answer.headers[CONTENT_TYPE], "application/json");
    assert_eq!(answer.body, r#"{"error":"busy"}"#);
    assert_eq!(retry_after(&answer.headers), Some(1));
}

/// An empty custom body is sent as an empty body with `Content-Length: 0`.
#[tokio::test]
async fn an_empty_custom_body_is_sent_empty() {
    let answer = refused_with(Some(Rejection::service_unavailable().body(""))).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(answer.body.is_empty());
    assert_eq!(answer.headers[CONTENT_LENGTH], "0");
}

/// `RetryAfter::Omit` sends no `Retry-After`; `Seconds(7)` sends "7";
/// `Estimate { max_seconds: 30 }` sends an integer in 1..=30.
#[tokio::test]
async fn retry_after_settings_are_valid_header_values() {
    let omit = Rejection::service_unavailable().retry_after(RetryAfter::Omit);
    let answer = refused_with(Some(omit)).await;
    assert!(answer.headers.get(RETRY_AFTER).is_none());

    let fixed = Rejection::too_many_requests().retry_after(RetryAfter::Seconds(7));
    let answer = refused_with(Some(fixed)).await;
    assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(answer.headers[RETRY_AFTER], "7");

    let estimate =
        Rejection::service_unavailable().retry_after(RetryAfter::Estimate { max_seconds: 30 });
    let answer = refused_with(Some(estimate)).await;
    let seconds = retry_after(&answer.headers).expect("an estimate is sent");
    assert!((1..=30).contains(&seconds), "{seconds}");
}

fn assert_infallible<S>(_: &S)
where
    S: Service<axum::extract::Request, Error = Infallible>,
{
}

/// axum's `.layer()` takes the layer with a bounded-queue policy as it is:
/// the service's error stays `Infallible` (no `HandleErrorLayer`), a
/// request is queued, one beyond the queue is answered `503` with
/// `QueueFull` at once, and the queued one is served once the permit is
/// back.
#[tokio::test]
async fn axum_layer_with_a_policy_needs_no_handle_error_layer() {
    let layer = HttpLimitLayer::new(1).policy(Policy::fifo(1));
    let limiter = layer.limiter().clone();
    assert_infallible(&layer.layer(hello()));
    let addr = serve(hello().layer(layer)).await;

    let held = take_all(&limiter);
    let queued = tokio::spawn(fetch(addr));
    guard("the request to queue", async {
        while limiter.waiting() != 1 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
    let refused = fetch(addr).await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        refused.body,
        "concurrency limit of 1 reached and its queue is full\n"
    );
    assert!(!queued.is_finished());

    drop(held);
    let served = guard("the queued request", queued).await.unwrap();
    assert_eq!(served.status, StatusCode::OK);
    assert_eq!(served.body, "ok");
    assert_eq!(limiter.in_flight(), 0);
    assert_eq!(limiter.waiting(), 0);
}

// ---------------------------------------------------------------------------
// Paused time, no sockets: `HttpLimit` driven directly.
// ---------------------------------------------------------------------------

/// An inner HTTP service whose calls are counted, announce themselves with
/// a gate, and answer only when the test opens that gate.
#[derive(Clone)]
struct Gated {
    entered: mpsc::UnboundedSender<(u32, oneshot::Sender<()>)>,
    calls: Arc<AtomicUsize>,
}

type Entered = mpsc::UnboundedReceiver<(u32, oneshot::Sender<()>)>;

impl Service<Request<u32>> for Gated {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<u32>) -> Self::Future {
        let id = *request.body();
        self.calls.fetch_add(1, SeqCst);
        let (open, gate) = oneshot::channel();
        self.entered.send((id, open)).expect("the test listens");
        Box::pin(async move {
            let _ = gate.await;
            Ok(Response::new(Full::new(Bytes::from(id.to_string()))))
        })
    }
}

/// `HttpLimit` with `policy` (limit 1) around a gated service.
fn gated(policy: Policy) -> (HttpLimit<Gated>, Limiter, Entered, Arc<AtomicUsize>) {
    let (entered, rx) = mpsc::unbounded_channel();
    let calls = Arc::new(AtomicUsize::new(0));
    let inner = Gated {
        entered,
        calls: Arc::clone(&calls),
    };
    let layer = HttpLimitLayer::new(1).policy(policy);
    let limiter = layer.limiter().clone();
    (layer.layer(inner), limiter, rx, calls)
}

/// What one request came to, its body read to the end (which gives back
/// its permit).
#[derive(Debug)]
struct Outcome {
    status: StatusCode,
    retry_after: Option<u64>,
    rejected: Option<Rejected>,
    body: Bytes,
}

async fn outcome<S, B>(svc: S, request: Request<u32>) -> Outcome
where
    S: Service<Request<u32>, Response = Response<B>, Error = Infallible>,
    B: http_body::Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    let response = svc.oneshot(request).await.unwrap();
    let (parts, body) = response.into_parts();
    Outcome {
        status: parts.status,
        retry_after: retry_after(&parts.headers),
        rejected: parts.extensions.get::<Rejected>().cloned(),
        body: body.collect().await.unwrap().to_bytes(),
    }
}

/// Queues 4 requests behind a held permit, releases it, and returns the
/// order in which they got in (each holds the permit until its gate opens
/// and its body is read).
async fn served_order(policy: Policy) -> Vec<u32> {
    let (svc, limiter, mut entered, calls) = gated(policy);
    let held = limiter.try_acquire().unwrap();
    let mut tasks = Vec::new();
    for id in 0..4u32 {
        tasks.push(tokio::spawn(outcome(svc.clone(), Request::new(id))));
        until("queued in order", || limiter.waiting() == id as usize + 1).await;
    }
    assert_eq!(calls.load(SeqCst), 0);

    drop(held);
    let mut served = Vec::new();
    for _ in 0..4 {
        let (id, gate) = guard("the next admission", entered.recv()).await.unwrap();
        assert_eq!(limiter.in_flight(), 1);
        served.push(id);
        gate.send(()).unwrap();
    }
    for (id, task) in tasks.into_iter().enumerate() {
        let done = task.await.unwrap();
        assert_eq!(done.status, StatusCode::OK);
        assert_eq!(done.body, id.to_string());
    }
    assert_eq!(limiter.in_flight(), 0);
    assert_eq!(limiter.waiting(), 0);
    served
}

/// FIFO over `HttpLimit`: each freed permit goes to the oldest waiter.
#[tokio::test(start_paused = true)]
async fn fifo_queue_over_http_admits_the_oldest_request_next() {
    assert_eq!(served_order(Policy::fifo(8)).await, vec![0, 1, 2, 3]);
}

/// LIFO over `HttpLimit`: each freed permit goes to the newest waiter.
#[tokio::test(start_paused = true)]
async fn lifo_queue_over_http_admits_the_newest_request_next() {
    assert_eq!(served_order(Policy::lifo(8)).await, vec![3, 2, 1, 0]);
}

/// A queued request that waits out the policy's timeout is answered `503`
/// after exactly the timeout, with `Rejected { TimedOut }` in the response
/// extensions, and never reaches the inner service.
#[tokio::test(start_paused = true)]
async fn queue_timeout_answers_503_after_exactly_the_timeout() {
    let timeout = Duration::from_millis(250);
    for policy in [Policy::fifo(4), Policy::lifo(4)] {
        let (svc, limiter, _entered, calls) = gated(policy.timeout(timeout));
        let _held = limiter.try_acquire().unwrap();
        let start = Instant::now();
        let done = outcome(svc, Request::new(1)).await;
        assert_eq!(start.elapsed(), timeout, "{policy:?}");
        assert_eq!(done.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(done.retry_after, Some(1));
        let rejected = done.rejected.expect("Rejected in the extensions");
        assert_eq!(rejected.reason(), Reason::TimedOut);
        assert_eq!(rejected.waited(), timeout);
        assert_eq!(rejected.limit(), 1);
        assert_eq!(done.body, format!("{rejected}\n"));
        assert_eq!(limiter.waiting(), 0);
        assert_eq!(calls.load(SeqCst), 0);
    }
}

/// With the queue full, a request is answered `503` at once with
/// `Rejected { QueueFull }` in the extensions; the refusal body is exact
/// in its size hint and end of stream.
#[tokio::test(start_paused = true)]
async fn full_queue_answers_503_at_once_with_queue_full() {
    let (svc, limiter, mut entered, calls) = gated(Policy::fifo(1).timeout(Duration::from_secs(5)));
    let held = limiter.try_acquire().unwrap();
    let queued = tokio::spawn(outcome(svc.clone(), Request::new(1)));
    until("one queued", || limiter.waiting() == 1).await;

    let start = Instant::now();
    let response = svc.clone().oneshot(Request::new(2)).await.unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let rejected = response.extensions().get::<Rejected>().unwrap().clone();
    assert_eq!(rejected.reason(), Reason::QueueFull);
    assert_eq!(rejected.limit(), 1);
    assert_eq!(rejected.waited(), Duration::ZERO);
    let body = response.into_body();
    assert!(!body.has_permit());
    let text = "concurrency limit of 1 reached and its queue is full\n";
    assert_eq!(body.size_hint().exact(), Some(text.len() as u64));
    assert!(!body.is_end_stream());
    assert_eq!(body.collect().await.unwrap().to_bytes(), text);
    assert_eq!(limiter.waiting(), 1, "the queued one is still there");

    drop(held);
    let (id, gate) = guard("the queued request", entered.recv()).await.unwrap();
    assert_eq!(id, 1);
    gate.send(()).unwrap();
    let done = queued.await.unwrap();
    assert_eq!(done.status, StatusCode::OK);
    assert_eq!(calls.load(SeqCst), 1);
    assert_eq!(limiter.in_flight(), 0);
}

/// Dropping a queued response future leaves the queue at once and takes
/// no permit; the inner service is never called (wait, FIFO, LIFO).
#[tokio::test(start_paused = true)]
async fn dropping_a_queued_response_future_leaves_the_queue_at_once() {
    for policy in [
        Policy::wait(),
        Policy::fifo(4).timeout(Duration::from_secs(1)),
        Policy::lifo(4),
    ] {
        let (mut svc, limiter, _entered, calls) = gated(policy);
        let held = limiter.try_acquire().unwrap();
        let future = svc.ready().await.unwrap().call(Request::new(1));
        let mut queued = task::spawn(future);
        assert_pending!(queued.poll());
        assert_eq!(limiter.waiting(), 1, "{policy:?}");

        drop(queued);
        assert_eq!(limiter.waiting(), 0, "{policy:?}");
        assert_eq!(limiter.in_flight(), 1);
        drop(held);
        assert_eq!(limiter.available(), 1, "{policy:?}: no permit parked");
        assert_eq!(calls.load(SeqCst), 0);
    }
}

/// One long-lived `HttpLimit` value that was refused (at once, or after a
/// queue timeout) hoards nothing: once the permit is back, `available()`
/// is the limit with no waiter parked, and the same value and a clone are
/// admitted at once.
#[tokio::test(start_paused = true)]
async fn a_refused_long_lived_service_hoards_no_permit() {
    let echo = service_fn(|request: Request<u32>| async move {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(
            request.into_body().to_string(),
        ))))
    });
    for policy in [
        Policy::reject(),
        Policy::lifo(2).timeout(Duration::from_millis(40)),
    ] {
        let layer = HttpLimitLayer::new(1).policy(policy);
        let limiter = layer.limiter().clone();
        let mut svc = layer.layer(echo);

        let held = limiter.try_acquire().unwrap();
        let refused = outcome(svc.ready().await.unwrap(), Request::new(1)).await;
        assert_eq!(
            refused.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{policy:?}"
        );
        drop(held);
        assert_eq!(limiter.available(), 1, "{policy:?}");
        assert_eq!(limiter.waiting(), 0);

        svc.ready().await.unwrap();
        assert_eq!(limiter.available(), 1, "poll_ready reserves nothing");
        let start = Instant::now();
        let again = outcome(&mut svc, Request::new(2)).await;
        assert_eq!((again.status, again.body), (StatusCode::OK, "2".into()));
        let clone = outcome(svc.clone(), Request::new(3)).await;
        assert_eq!((clone.status, clone.body), (StatusCode::OK, "3".into()));
        assert_eq!(start.elapsed(), Duration::ZERO, "admitted at once");
        assert_eq!(limiter.available(), 1);
        assert_eq!(limiter.in_flight(), 0);
    }
}

/// `RetryAfter::Estimate` follows the measured hold time: with no sample
/// it says 1; after requests that each held the permit 3 s (timed from
/// admission to the end of the body, queue time excluded) `mean_hold()` is
/// 3 s, and with one in flight and two queued a refusal says
/// ceil(3 s × (2 + 1) / 1) = 9, capped at `max_seconds`.
#[tokio::test(start_paused = true)]
async fn estimated_retry_after_grows_with_the_measured_hold_time() {
    let estimate = |max_seconds| {
        Rejection::service_unavailable().retry_after(RetryAfter::Estimate { max_seconds })
    };
    let three_seconds = service_fn(|_: Request<u32>| async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"done"))))
    });
    let limiter = Limiter::new(1);
    let timed = HttpLimitLayer::from_limiter(limiter.clone())
        .policy(Policy::fifo(2))
        .rejection(estimate(30))
        .layer(three_seconds);
    let probe = |max_seconds| {
        HttpLimitLayer::from_limiter(limiter.clone())
            .policy(Policy::reject())
            .rejection(estimate(max_seconds))
            .layer(three_seconds)
    };

    // No timed permit has come back yet: the floor.
    let held = limiter.try_acquire().unwrap();
    assert_eq!(limiter.mean_hold(), None);
    let first = outcome(probe(30), Request::new(0)).await;
    assert_eq!(first.retry_after, Some(1));
    drop(held);

    for id in 1..=3 {
        let start = Instant::now();
        let done = outcome(timed.clone(), Request::new(id)).await;
        assert_eq!(done.status, StatusCode::OK);
        assert_eq!(start.elapsed(), Duration::from_secs(3));
    }
    assert_eq!(limiter.mean_hold(), Some(Duration::from_secs(3)));

    // One in flight, two queued, then refusals.
    let running = tokio::spawn(outcome(timed.clone(), Request::new(4)));
    until("one in flight", || limiter.in_flight() == 1).await;
    let queued: Vec<_> = (5..7)
        .map(|id| tokio::spawn(outcome(timed.clone(), Request::new(id))))
        .collect();
    until("two queued", || limiter.waiting() == 2).await;

    let start = Instant::now();
    let full = outcome(timed.clone(), Request::new(7)).await;
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(full.rejected.unwrap().reason(), Reason::QueueFull);
    let seconds = full.retry_after.unwrap();
    assert!((2..=30).contains(&seconds), "{seconds}");
    assert_eq!(seconds, 9);
    assert_eq!(
        outcome(probe(30), Request::new(8)).await.retry_after,
        Some(9)
    );
    assert_eq!(
        outcome(probe(5), Request::new(9)).await.retry_after,
        Some(5)
    );

    for task in std::iter::once(running).chain(queued) {
        assert_eq!(
            guard("a request", task).await.unwrap().status,
            StatusCode::OK
        );
    }
    assert_eq!(
        limiter.mean_hold(),
        Some(Duration::from_secs(3)),
        "time spent queued is not counted as holding"
    );
    assert_eq!(limiter.in_flight(), 0);
}

/// Issue 8.4: `honor_retry_after(Duration::MAX)` ("no cap") and an
/// upstream asking for the largest `Retry-After` (or gRPC pushback) there
/// is must not panic: the hold saturates to as long as the clock can
/// represent. Before the fix this panicked with "overflow when adding
/// duration to instant".
#[tokio::test]
async fn the_largest_retry_after_and_no_cap_hold_without_panicking() {
    let huge = u64::MAX.to_string();
    for (name, status, content_type) in [
        ("retry-after", StatusCode::SERVICE_UNAVAILABLE, "text/plain"),
        ("retry-after", StatusCode::TOO_MANY_REQUESTS, "text/plain"),
        ("grpc-retry-pushback-ms", StatusCode::OK, "application/grpc"),
    ] {
        let huge = huge.clone();
        let upstream = service_fn(move |_: Request<()>| {
            let huge = huge.clone();
            async move {
                let mut response = Response::new(Full::new(Bytes::new()));
                *response.status_mut() = status;
                let headers = response.headers_mut();
                headers.insert(name, HeaderValue::from_str(&huge).unwrap());
                headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
                headers.insert("grpc-status", HeaderValue::from_static("14"));
                Ok::<_, Infallible>(response)
            }
        });
        let layer = HttpLimitLayer::new(2)
            .policy(Policy::reject())
            .honor_retry_after(Duration::MAX);
        let limiter = layer.limiter().clone();
        let client = layer.layer(upstream);
        let answer = client.clone().oneshot(Request::new(())).await.unwrap();
        assert_eq!(answer.status(), status);
        let until = limiter.held_until().expect("held");
        assert!(
            until > Instant::now() + Duration::from_secs(86_400 * 365),
            "{name}: held for years"
        );
        let refused = client.oneshot(Request::new(())).await.unwrap();
        let reason = refused.extensions().get::<Rejected>().map(Rejected::reason);
        assert_eq!(reason, Some(Reason::Held), "{name}");
    }
}
