//! Per-key limits and bypass rules of the HTTP layer.
//!
//! What is about HTTP on the wire (a noisy tenant beside a quiet one, a
//! health check answered while the limit is full) runs over loopback
//! sockets with handlers blocked on gates the test opens; the timeouts
//! there are failure guards, never timing assumptions. The rest drives the
//! service in process: `oneshot` on trivial inner services, `tokio_test`
//! mock tasks for futures that must queue, and paused time for timeouts.
//! A request is in flight for its key while its response body is held.

mod support;
use support::{eventually, guard};

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant as StdInstant};

use axum::{routing::get, Router};
use futures::{FutureExt, StreamExt};
use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Bytes, Frame};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio_test::assert_pending;
use tokio_test::task::{spawn, Spawn};
use tower::util::{BoxCloneService, Oneshot};
use tower::{Layer, ServiceExt};
use tower_concurrency::http_limit::{
    HttpLimit, HttpLimitLayer, KeyLimit, Rejection, Release, ResponseBody, RetryAfter,
};
use tower_concurrency::{Limiter, Policy, Reason, Rejected};

// ---------------------------------------------------------------------------
// In-process helpers
// ---------------------------------------------------------------------------

type InnerBody = BoxBody<Bytes, Infallible>;
type Inner = BoxCloneService<Request<()>, Response<InnerBody>, Infallible>;
type Svc = HttpLimit<Inner>;
type Answer = Response<ResponseBody<InnerBody>>;

/// Answers "ok" at once.
fn ok_inner() -> Inner {
    BoxCloneService::new(tower::service_fn(|_: Request<()>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok")).boxed()))
    }))
}

/// Answers at once with a body that sends "first" and then never ends.
fn streaming_inner() -> Inner {
    BoxCloneService::new(tower::service_fn(|_: Request<()>| async {
        let first = futures::stream::iter([Ok::<_, Infallible>(Frame::data(Bytes::from_static(
            b"first",
        )))]);
        let body = StreamBody::new(first.chain(futures::stream::pending()));
        Ok::<_, Infallible>(Response::new(BodyExt::boxed(body)))
    }))
}

/// Answers "ok" once `gate` lets it through (one permit each).
fn gated_inner(gate: Arc<Semaphore>) -> Inner {
    BoxCloneService::new(tower::service_fn(move |_: Request<()>| {
        let gate = Arc::clone(&gate);
        async move {
            gate.acquire().await.expect("never closed").forget();
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok")).boxed()))
        }
    }))
}

/// Keys requests by their `x-tenant` header.
fn by_tenant(layer: HttpLimitLayer, per_key: usize, max_keys: usize) -> HttpLimitLayer {
    layer.limit_per_key(KeyLimit::new(per_key).max_keys(max_keys), |head| {
        head.header("x-tenant").map(str::to_owned)
    })
}

fn req(tenant: Option<&str>) -> Request<()> {
    req_to("/work", tenant)
}

fn req_to(path: &str, tenant: Option<&str>) -> Request<()> {
    let mut request = Request::get(path);
    if let Some(tenant) = tenant {
        request = request.header("x-tenant", tenant);
    }
    request.body(()).unwrap()
}

/// Calls `svc` and expects the answer at once (admitted or refused).
fn now(svc: &Svc, request: Request<()>) -> Answer {
    let answer = svc.clone().oneshot(request).now_or_never();
    answer.expect("answered at once").expect("infallible")
}

/// Calls `svc` on a mock task, polled once.
fn start(svc: &Svc, request: Request<()>) -> Spawn<Oneshot<Svc, Request<()>>> {
    let mut call = spawn(svc.clone().oneshot(request));
    let _ = call.poll();
    call
}

/// An admitted answer: 200, still holding its key and permit.
fn admitted(answer: Answer) -> Answer {
    assert_eq!(answer.status(), StatusCode::OK, "{answer:?}");
    assert!(answer.extensions().get::<Rejected>().is_none());
    answer
}

/// A refusal's status, `Rejected` and body text.
fn refused(answer: Answer) -> (StatusCode, Rejected, String) {
    let status = answer.status();
    let rejected = answer
        .extensions()
        .get::<Rejected>()
        .unwrap_or_else(|| panic!("a refusal carries Rejected: {status}"))
        .clone();
    let body = answer.into_body().collect().now_or_never();
    let body = body
        .expect("a refusal's body is ready")
        .expect("infallible");
    let text = String::from_utf8(body.to_bytes().to_vec()).unwrap();
    (status, rejected, text)
}

fn reason(answer: Answer) -> Reason {
    refused(answer).1.reason()
}

// ---------------------------------------------------------------------------
// Loopback helpers
// ---------------------------------------------------------------------------

const ALPHA: &str = "tenant-alpha-7f3a";
const BRAVO: &str = "tenant-bravo-91c2";

fn tenant_index(headers: &HeaderMap) -> usize {
    match headers.get("x-tenant").and_then(|v| v.to_str().ok()) {
        Some(ALPHA) => 0,
        Some(BRAVO) => 1,
        _ => 2,
    }
}

/// Gated `/work` handlers, with a gate and a count of those inside per
/// tenant (alpha, bravo, anyone else), and an ungated `/health`.
#[derive(Clone)]
struct Backend {
    inside: Arc<watch::Sender<[usize; 3]>>,
    gates: Arc<[Semaphore; 3]>,
}

impl Backend {
    fn new() -> Self {
        Self {
            inside: Arc::new(watch::Sender::new([0; 3])),
            gates: Arc::new([Semaphore::new(0), Semaphore::new(0), Semaphore::new(0)]),
        }
    }

    async fn work(self, headers: HeaderMap) -> &'static str {
        let tenant = tenant_index(&headers);
        self.inside.send_modify(|inside| inside[tenant] += 1);
        self.gates[tenant]
            .acquire()
            .await
            .expect("never closed")
            .forget();
        self.inside.send_modify(|inside| inside[tenant] -= 1);
        "done"
    }

    fn finish_one(&self, tenant: usize) {
        self.gates[tenant].add_permits(1);
    }

    fn open_all(&self) {
        for gate in self.gates.iter() {
            gate.add_permits(1000);
        }
    }

    fn inside(&self) -> [usize; 3] {
        *self.inside.borrow()
    }

    async fn until(&self, what: &str, condition: impl FnMut(&[usize; 3]) -> bool) {
        let mut inside = self.inside.subscribe();
        guard(what, inside.wait_for(condition))
            .await
            .expect("the backend lives");
    }
}

async fn serve(layer: HttpLimitLayer, backend: &Backend) -> SocketAddr {
    let handler = backend.clone();
    let app = Router::new()
        .route(
            "/work",
            get(move |headers: HeaderMap| handler.clone().work(headers)),
        )
        .route("/health", get(|| async { "healthy" }))
        .layer(layer);
    let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// What came back over the wire.
#[derive(Debug)]
struct Wire {
    status: StatusCode,
    retry_after: Option<String>,
    body: String,
}

fn fetch(
    client: &HttpClient,
    addr: SocketAddr,
    path: &str,
    tenant: Option<&str>,
) -> impl Future<Output = Wire> + Send + 'static {
    let mut request = Request::get(format!("http://{addr}{path}"));
    if let Some(tenant) = tenant {
        request = request.header("x-tenant", tenant);
    }
    let pending = client.request(request.body(Empty::new()).unwrap());
    async move {
        let response = pending.await.expect("a response");
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .map(|v| v.to_str().unwrap().to_owned());
        let body = response.into_body().collect().await.expect("a body");
        let body = String::from_utf8(body.to_bytes().to_vec()).unwrap();
        Wire {
            status,
            retry_after,
            body,
        }
    }
}

// ---------------------------------------------------------------------------
// Per-key limits
// ---------------------------------------------------------------------------

/// Over HTTP, limit 10, 3 per tenant: tenant alpha floods with 8 requests;
/// 3 run, the other 5 are answered 429 at once, with a body naming only
/// the caller's own limit (no tenant names), and alpha holds no more than
/// 3 of the 10 permits. Tenant bravo's 3 requests then run beside alpha's,
/// a finishing alpha request makes room for exactly one more of alpha's,
/// and bravo's 4th is refused like alpha's were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_noisy_tenant_is_isolated_from_a_quiet_one() {
    let layer = by_tenant(HttpLimitLayer::new(10), 3, 100);
    let limiter = layer.limiter().clone();
    let backend = Backend::new();
    let addr = serve(layer, &backend).await;
    let client = client();

    let mut running = JoinSet::new();
    for _ in 0..3 {
        running.spawn(fetch(&client, addr, "/work", Some(ALPHA)));
    }
    backend.until("alpha's 3 inside", |i| i[0] == 3).await;

    let mut flood = JoinSet::new();
    for _ in 0..5 {
        flood.spawn(fetch(&client, addr, "/work", Some(ALPHA)));
    }
    while let Some(answer) = guard("alpha's extra answers", flood.join_next()).await {
        let answer = answer.unwrap();
        assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS, "{answer:?}");
        assert_eq!(answer.retry_after.as_deref(), Some("1"));
        assert!(answer.body.contains("at most 3"), "{answer:?}");
        for secret in [ALPHA, BRAVO, "alpha", "bravo", "tenant-"] {
            assert!(
                !answer.body.contains(secret),
                "the body names no key: {answer:?}"
            );
        }
    }
    assert_eq!(backend.inside(), [3, 0, 0]);
    assert_eq!(limiter.in_flight(), 3, "alpha holds no more than 3");
    assert_eq!(limiter.available(), 7);
    assert_eq!(limiter.waiting(), 0, "refused at once, not queued");

    for _ in 0..3 {
        running.spawn(fetch(&client, addr, "/work", Some(BRAVO)));
    }
    backend.until("bravo's 3 inside", |i| i[1] == 3).await;
    assert_eq!(backend.inside(), [3, 3, 0]);
    assert_eq!(limiter.in_flight(), 6);

    let bravo_4th = fetch(&client, addr, "/work", Some(BRAVO)).await;
    assert_eq!(bravo_4th.status, StatusCode::TOO_MANY_REQUESTS);
    let alpha_9th = fetch(&client, addr, "/work", Some(ALPHA)).await;
    assert_eq!(alpha_9th.status, StatusCode::TOO_MANY_REQUESTS);

    backend.finish_one(0);
    let done = guard("an alpha answer", running.join_next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((done.status, done.body.as_str()), (StatusCode::OK, "done"));
    eventually("alpha's permit back", || limiter.in_flight() == 5).await;
    running.spawn(fetch(&client, addr, "/work", Some(ALPHA)));
    backend.until("alpha back at 3", |i| i[0] == 3).await;
    let alpha_again = fetch(&client, addr, "/work", Some(ALPHA)).await;
    assert_eq!(alpha_again.status, StatusCode::TOO_MANY_REQUESTS);

    backend.open_all();
    while let Some(answer) = guard("every answer", running.join_next()).await {
        assert_eq!(answer.unwrap().status, StatusCode::OK);
    }
    eventually("every permit back", || limiter.in_flight() == 0).await;
}

/// A request over its key's limit is refused at once with `429`, the
/// `Rejected` (reason `KeyFull`, limit = the per-key limit) in its
/// extensions, `Retry-After: 1`, and a plain-text body naming only its own
/// limit; it takes no permit and leaves nothing queued.
#[test]
fn key_full_is_answered_429_with_rejected_in_extensions() {
    let layer = by_tenant(HttpLimitLayer::new(10), 2, 100);
    let limiter = layer.limiter().clone();
    let svc = layer.layer(ok_inner());

    let held = [
        admitted(now(&svc, req(Some(ALPHA)))),
        admitted(now(&svc, req(Some(ALPHA)))),
    ];
    assert_eq!(limiter.in_flight(), 2);

    let answer = now(&svc, req(Some(ALPHA)));
    assert_eq!(answer.headers()[RETRY_AFTER], "1");
    assert_eq!(answer.headers()[CONTENT_TYPE], "text/plain; charset=utf-8");
    let (status, rejected, body) = refused(answer);
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(rejected.reason(), Reason::KeyFull);
    assert_eq!(rejected.limit(), 2);
    assert!(rejected.is_per_key());
    assert_eq!(rejected.waited(), Duration::ZERO);
    assert_eq!(
        body,
        "too many requests in flight for this client: at most 2 at once\n"
    );
    assert!(!body.contains(ALPHA) && !body.contains("10"), "{body}");
    assert_eq!(limiter.in_flight(), 2, "a refusal takes no permit");
    assert_eq!(limiter.waiting(), 0);

    // Another key is unaffected.
    let bravo = admitted(now(&svc, req(Some(BRAVO))));
    assert_eq!(limiter.in_flight(), 3);
    drop((held, bravo));
    assert_eq!(limiter.in_flight(), 0);
}

/// A million distinct keys, each seen once in sequence, leave no key
/// tracked: with room for a single tracked key, each new key is admitted
/// only if the one before was forgotten, and afterwards exactly one key
/// in flight fills the table.
#[test]
fn a_million_keys_seen_once_leave_no_key_tracked() {
    #[derive(Clone, Copy)]
    struct Key(u64);
    const KEYS: u64 = 1_000_000;

    let layer = HttpLimitLayer::new(4).limit_per_key(KeyLimit::new(1).max_keys(1), |head| {
        head.extensions.get::<Key>().map(|k| k.0)
    });
    let limiter = layer.limiter().clone();
    let svc = layer.layer(ok_inner());
    let request = |key: u64| {
        let mut request = Request::new(());
        request.extensions_mut().insert(Key(key));
        request
    };

    let started = StdInstant::now();
    for key in 0..KEYS {
        let answer = now(&svc, request(key));
        assert_eq!(answer.status(), StatusCode::OK, "key {key}");
        // Half end their bodies, half drop them unread.
        if key % 2 == 0 {
            let body = answer.into_body().collect().now_or_never();
            assert_eq!(body.unwrap().unwrap().to_bytes(), "ok");
        }
    }
    eprintln!("{KEYS} keys in {:?}", started.elapsed());
    assert_eq!(limiter.in_flight(), 0);

    let held = admitted(now(&svc, request(KEYS)));
    assert_eq!(reason(now(&svc, request(0))), Reason::TooManyKeys);
    drop(held);
    drop(admitted(now(&svc, request(0))));
}

/// With room for 3 keys and 3 keys in flight, a 4th key is refused with
/// `TooManyKeys` (503, the service-level status; limit = 3) while the
/// tracked keys go on; a key stays tracked until its last request ends,
/// and then a new key gets its place. Requests without a key are not
/// affected by the cap.
#[test]
fn exactly_the_keys_in_flight_are_tracked() {
    let layer = by_tenant(HttpLimitLayer::new(20), 2, 3);
    let limiter = layer.limiter().clone();
    assert_eq!(HttpLimitLayer::new(20).tracked_keys(), None, "no key rule");
    assert_eq!(layer.tracked_keys(), Some(0));
    let svc = layer.clone().layer(ok_inner());

    let mut k1 = vec![
        admitted(now(&svc, req(Some("k1")))),
        admitted(now(&svc, req(Some("k1")))),
    ];
    let k2 = admitted(now(&svc, req(Some("k2"))));
    let k3 = admitted(now(&svc, req(Some("k3"))));
    // The number of keys tracked is visible on the layer and its services.
    assert_eq!(layer.tracked_keys(), Some(3));
    assert_eq!(svc.tracked_keys(), Some(3));

    let (status, rejected, body) = refused(now(&svc, req(Some("k4"))));
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(rejected.reason(), Reason::TooManyKeys);
    assert_eq!(rejected.limit(), 3);
    assert!(!rejected.is_per_key());
    assert_eq!(
        body,
        "too many clients have requests in flight (at most 3)\n"
    );
    assert!(!body.contains("k1") && !body.contains("k4"), "{body}");

    // Tracked keys go on, within their own limit.
    let k2_again = admitted(now(&svc, req(Some("k2"))));
    assert_eq!(reason(now(&svc, req(Some("k1")))), Reason::KeyFull);
    // Requests without a key are not counted against the cap.
    let keyless = admitted(now(&svc, req(None)));
    assert_eq!(limiter.in_flight(), 6);

    // k1 still has one in flight: still tracked.
    drop(k1.pop());
    assert_eq!(reason(now(&svc, req(Some("k4")))), Reason::TooManyKeys);
    // Its last one ends: its place is free, and k4 takes it.
    drop(k1.pop());
    let k4 = admitted(now(&svc, req(Some("k4"))));
    assert_eq!(reason(now(&svc, req(Some("k5")))), Reason::TooManyKeys);
    assert_eq!(reason(now(&svc, req(Some("k1")))), Reason::TooManyKeys);

    drop((k2, k2_again, k3, k4, keyless));
    assert_eq!(limiter.in_flight(), 0);
    assert_eq!(layer.tracked_keys(), Some(0));
    let fresh: Vec<_> = ["k5", "k6", "k7"]
        .into_iter()
        .map(|k| admitted(now(&svc, req(Some(k)))))
        .collect();
    assert_eq!(reason(now(&svc, req(Some("k8")))), Reason::TooManyKeys);
    drop(fresh);
}

/// The key's count is given back when the response body ends, while the
/// body value itself is still alive (as it is for the permit).
#[tokio::test]
async fn key_released_when_the_body_ends() {
    let layer = by_tenant(HttpLimitLayer::new(10), 1, 10);
    let limiter = layer.limiter().clone();
    let svc = layer.layer(ok_inner());

    let mut first = admitted(now(&svc, req(Some(ALPHA))));
    assert!(first.body().has_permit());
    assert_eq!(reason(now(&svc, req(Some(ALPHA)))), Reason::KeyFull);

    let frame = first.body_mut().frame().await.unwrap().unwrap();
    assert_eq!(frame.into_data().unwrap(), "ok");
    assert!(!first.body().has_permit(), "the body ended");
    assert_eq!(limiter.in_flight(), 0);
    let second = admitted(now(&svc, req(Some(ALPHA))));
    drop((first, second));
}

/// With `Release::Head`, the key is given back with the permit, as soon as
/// the response head is ready: the body does not hold it.
#[test]
fn release_head_gives_the_key_back_at_the_head() {
    let layer = by_tenant(HttpLimitLayer::new(10).release(Release::Head), 1, 1);
    let limiter = layer.limiter().clone();
    let svc = layer.layer(streaming_inner());

    let first = admitted(now(&svc, req(Some(ALPHA))));
    assert_eq!(limiter.in_flight(), 0);
    let second = admitted(now(&svc, req(Some(ALPHA))));
    let other = admitted(now(&svc, req(Some(BRAVO))));
    drop((first, second, other));
}

/// A body dropped mid-stream (the client hung up) gives its key back.
#[tokio::test]
async fn key_released_when_the_body_is_dropped_mid_stream() {
    let layer = by_tenant(HttpLimitLayer::new(10), 1, 1);
    let limiter = layer.limiter().clone();
    let svc = layer.layer(streaming_inner());

    let mut streaming = admitted(now(&svc, req(Some(ALPHA))));
    let frame = streaming.body_mut().frame().await.unwrap().unwrap();
    assert_eq!(frame.into_data().unwrap(), "first");
    assert!(
        streaming.body_mut().frame().now_or_never().is_none(),
        "the body goes on"
    );
    assert!(streaming.body().has_permit());
    assert_eq!(reason(now(&svc, req(Some(ALPHA)))), Reason::KeyFull);
    assert_eq!(reason(now(&svc, req(Some(BRAVO)))), Reason::TooManyKeys);

    drop(streaming);
    assert_eq!(limiter.in_flight(), 0);
    drop(admitted(now(&svc, req(Some(BRAVO)))));
    drop(admitted(now(&svc, req(Some(ALPHA)))));
}

/// A request counts against its key from the moment it is called, also
/// while it queues for the overall limit; cancelling (dropping) its
/// response future while queued leaves the queue and gives the key back.
/// So does cancelling one whose handler is running.
#[test]
fn key_released_when_the_response_future_is_cancelled() {
    let gate = Arc::new(Semaphore::new(0));
    let layer = by_tenant(HttpLimitLayer::new(1), 1, 2);
    let limiter = layer.limiter().clone();
    let svc = layer.layer(gated_inner(Arc::clone(&gate)));

    // Bravo runs, holding the only permit.
    let mut bravo = start(&svc, req(Some(BRAVO)));
    assert_pending!(bravo.poll());
    assert_eq!(limiter.in_flight(), 1);

    // Alpha queues for the overall limit, counted against its key.
    let mut alpha = start(&svc, req(Some(ALPHA)));
    assert_pending!(alpha.poll());
    assert_eq!(limiter.waiting(), 1);
    assert_eq!(reason(now(&svc, req(Some(ALPHA)))), Reason::KeyFull);
    assert_eq!(reason(now(&svc, req(Some("third")))), Reason::TooManyKeys);

    drop(alpha);
    assert_eq!(limiter.waiting(), 0);
    let mut alpha = start(&svc, req(Some(ALPHA)));
    assert_pending!(alpha.poll(), "queued again, not refused");
    assert_eq!(limiter.waiting(), 1);

    // Cancelling the running one gives back its permit and its key; the
    // permit goes to alpha, whose handler now runs.
    drop(bravo);
    assert!(alpha.is_woken());
    assert_pending!(alpha.poll(), "alpha's handler waits at the gate");
    assert_eq!(limiter.waiting(), 0);
    assert_eq!(limiter.in_flight(), 1);
    let mut bravo = start(&svc, req(Some(BRAVO)));
    assert_pending!(bravo.poll(), "bravo queues: its key was given back");

    gate.add_permits(1);
    let answer = match alpha.poll() {
        std::task::Poll::Ready(answer) => admitted(answer.unwrap()),
        std::task::Poll::Pending => panic!("alpha passed the gate"),
    };
    drop(answer);
    assert!(bravo.is_woken());
    assert_pending!(bravo.poll());
    drop(bravo);
    assert_eq!(limiter.in_flight(), 0);
    assert_eq!(limiter.waiting(), 0);
}

/// A request that times out in the queue is answered 503 `TimedOut` and
/// gives its key back: the same key then queues again instead of being
/// refused as full. Paused time: the timeout elapses without waiting.
#[tokio::test(start_paused = true)]
async fn key_released_when_a_queued_request_times_out() {
    let layer = by_tenant(
        HttpLimitLayer::new(1).policy(Policy::fifo(10).timeout(Duration::from_millis(100))),
        1,
        10,
    );
    let limiter = layer.limiter().clone();
    let svc = layer.layer(ok_inner());

    let bravo = admitted(now(&svc, req(Some(BRAVO))));
    let alpha = tokio::spawn(svc.clone().oneshot(req(Some(ALPHA))));
    eventually("alpha to queue", || limiter.waiting() == 1).await;
    assert_eq!(reason(now(&svc, req(Some(ALPHA)))), Reason::KeyFull);

    let answer = alpha.await.unwrap().unwrap();
    let (status, rejected, _) = refused(answer);
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(rejected.reason(), Reason::TimedOut);
    assert!(rejected.waited() >= Duration::from_millis(100));

    let alpha = tokio::spawn(svc.clone().oneshot(req(Some(ALPHA))));
    eventually("alpha to queue again", || limiter.waiting() == 1).await;
    drop(bravo);
    let answer = admitted(alpha.await.unwrap().unwrap());
    drop(answer);
    assert_eq!(limiter.in_flight(), 0);
}

/// Requests without a key (the rule returns `None`) are limited only by
/// the overall limit: many run at once beyond the per-key limit of 1 and
/// take no place among the tracked keys; past the overall limit they are
/// refused as `Full` (503), not per key.
#[test]
fn requests_without_a_key_are_limited_only_overall() {
    let layer = by_tenant(HttpLimitLayer::new(4).policy(Policy::reject()), 1, 1);
    let limiter = layer.limiter().clone();
    let svc = layer.layer(ok_inner());

    let keyless: Vec<_> = (0..3).map(|_| admitted(now(&svc, req(None)))).collect();
    let alpha = admitted(now(&svc, req(Some(ALPHA))));
    assert_eq!(limiter.in_flight(), 4);

    let (status, rejected, _) = refused(now(&svc, req(None)));
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(rejected.reason(), Reason::Full);
    assert_eq!(rejected.limit(), 4);

    drop(keyless);
    let keyless: Vec<_> = (0..3).map(|_| admitted(now(&svc, req(None)))).collect();
    drop((keyless, alpha));
    assert_eq!(limiter.in_flight(), 0);
}

/// Rejection settings apply to per-key refusals: `per_key_status` sets the
/// status of `KeyFull`; `TooManyKeys` and `Full` get the rejection's own
/// status; a fixed body and `Retry-After` apply to all of them.
#[test]
fn per_key_status_and_too_many_keys_status() {
    let rejection = Rejection::service_unavailable()
        .per_key_status(StatusCode::FORBIDDEN)
        .retry_after(RetryAfter::Seconds(7));
    let layer = by_tenant(
        HttpLimitLayer::new(2)
            .policy(Policy::reject())
            .rejection(rejection),
        1,
        1,
    );
    let svc = layer.layer(ok_inner());
    let alpha = admitted(now(&svc, req(Some(ALPHA))));

    let key_full = now(&svc, req(Some(ALPHA)));
    assert_eq!(key_full.headers()[RETRY_AFTER], "7");
    assert_eq!(key_full.status(), StatusCode::FORBIDDEN);
    assert_eq!(reason(key_full), Reason::KeyFull);

    let too_many = now(&svc, req(Some(BRAVO)));
    assert_eq!(too_many.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reason(too_many), Reason::TooManyKeys);

    let other = admitted(now(&svc, req(None)));
    let full = now(&svc, req(None));
    assert_eq!(full.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reason(full), Reason::Full);
    drop((alpha, other));

    // Another status for the service as a whole: TooManyKeys follows it;
    // KeyFull keeps its own default of 429. A fixed body is used for both, and
    // `Retry-After` can be left out.
    let rejection = Rejection::new(StatusCode::BAD_GATEWAY)
        .body("busy")
        .retry_after(RetryAfter::Omit);
    let layer = by_tenant(HttpLimitLayer::new(2).rejection(rejection), 1, 1);
    let svc = layer.layer(ok_inner());
    let alpha = admitted(now(&svc, req(Some(ALPHA))));
    let key_full = now(&svc, req(Some(ALPHA)));
    assert!(key_full.headers().get(RETRY_AFTER).is_none());
    let (status, rejected, body) = refused(key_full);
    assert_eq!(
        (status, rejected.reason(), body.as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Reason::KeyFull, "busy")
    );
    let (status, rejected, body) = refused(now(&svc, req(Some(BRAVO))));
    assert_eq!(
        (status, rejected.reason(), body.as_str()),
        (StatusCode::BAD_GATEWAY, Reason::TooManyKeys, "busy")
    );
    drop(alpha);

    let layer = by_tenant(
        HttpLimitLayer::new(2).rejection(Rejection::too_many_requests()),
        1,
        1,
    );
    let svc = layer.layer(ok_inner());
    let alpha = admitted(now(&svc, req(Some(ALPHA))));
    let too_many = now(&svc, req(Some(BRAVO)));
    assert_eq!(too_many.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(reason(too_many), Reason::TooManyKeys);
    drop(alpha);
}

#[test]
#[should_panic(expected = "invalid per-key limit 0")]
fn zero_per_key_limit_panics_naming_the_value() {
    let _ = KeyLimit::new(0);
}

#[test]
fn try_new_returns_what_new_would_panic_on() {
    assert_eq!(KeyLimit::try_new(0).unwrap_err().value(), 0);
    let huge = KeyLimit::try_new(usize::MAX).unwrap_err();
    assert!(huge.to_string().contains(&usize::MAX.to_string()), "{huge}");
    assert_eq!(KeyLimit::try_new(3).unwrap().per_key(), 3);
}

#[test]
#[should_panic(expected = "invalid number of tracked keys 0")]
fn zero_tracked_keys_panics_naming_the_value() {
    let _ = KeyLimit::new(1).max_keys(0);
}

// ---------------------------------------------------------------------------
// Bypass
// ---------------------------------------------------------------------------

/// Over HTTP, limit 2 that refuses at once, 1 per tenant: alpha and bravo
/// fill both the limit and their keys. `/health` (bypassed) still answers
/// 200 at once, for alpha too, takes no permit, and is counted; `/work`
/// is refused as usual (503 for a new tenant, 429 for alpha).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bypassed_health_answers_while_the_limit_and_the_key_are_full() {
    let layer = by_tenant(HttpLimitLayer::new(2).policy(Policy::reject()), 1, 100)
        .bypass(|head| head.uri.path() == "/health");
    let limiter = layer.limiter().clone();
    let backend = Backend::new();
    let addr = serve(layer, &backend).await;
    let client = client();

    let mut running = JoinSet::new();
    running.spawn(fetch(&client, addr, "/work", Some(ALPHA)));
    running.spawn(fetch(&client, addr, "/work", Some(BRAVO)));
    backend
        .until("both inside", |i| i[0] == 1 && i[1] == 1)
        .await;
    assert_eq!(limiter.in_flight(), 2);
    assert_eq!(limiter.bypassed(), 0);

    for (n, tenant) in [Some(ALPHA), Some(BRAVO), Some("gamma"), None]
        .into_iter()
        .enumerate()
    {
        let health = fetch(&client, addr, "/health", tenant).await;
        assert_eq!(health.status, StatusCode::OK, "{health:?}");
        assert_eq!(health.body, "healthy");
        assert_eq!(limiter.bypassed(), n as u64 + 1);
        assert_eq!(limiter.in_flight(), 2, "no permit taken");
    }

    let full = fetch(&client, addr, "/work", Some("gamma")).await;
    assert_eq!(full.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(full.body.contains("limit of 2"), "{full:?}");
    let key_full = fetch(&client, addr, "/work", Some(ALPHA)).await;
    assert_eq!(key_full.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limiter.bypassed(), 4, "refusals are not bypasses");

    backend.open_all();
    while let Some(answer) = guard("every answer", running.join_next()).await {
        assert_eq!(answer.unwrap().status, StatusCode::OK);
    }
    eventually("every permit back", || limiter.in_flight() == 0).await;
}

/// In process, with a waiting policy: while a request queues behind the
/// full limit, a bypassed request is answered at once, holds no permit nor
/// key while its body is open, and is counted; bypassed requests are not
/// counted in any partition either.
#[test]
fn bypassed_requests_take_no_permit_and_never_queue() {
    let (limiter, [live, _]) = Limiter::new(1)
        .partitioned([("live", 0.9), ("batch", 0.1)])
        .unwrap();
    let live = Some(live);
    let layer = by_tenant(HttpLimitLayer::from_limiter(limiter.clone()), 1, 2)
        .partition_by(move |_| live)
        .bypass(|head| head.uri.path() == "/health");
    let svc = layer.layer(streaming_inner());

    let work = admitted(now(&svc, req(Some(ALPHA))));
    let mut queued = start(&svc, req(Some(BRAVO)));
    assert_pending!(queued.poll());
    assert_eq!(limiter.waiting(), 1);
    let stats =
        |l: &Limiter| -> Vec<usize> { l.partitions().iter().map(|s| s.in_flight).collect() };
    assert_eq!(stats(&limiter), [1, 0]);

    // Alpha's key and the limit are full; its health check is answered.
    let health: Vec<_> = (0..3)
        .map(|_| admitted(now(&svc, req_to("/health", Some(ALPHA)))))
        .collect();
    assert_eq!(limiter.bypassed(), 3);
    assert_eq!(limiter.in_flight(), 1);
    assert_eq!(limiter.waiting(), 1);
    assert_eq!(stats(&limiter), [1, 0]);
    // A new key while the table is full: bypassed requests take no place.
    let gamma = admitted(now(&svc, req_to("/health", Some("gamma"))));
    assert_eq!(limiter.bypassed(), 4);

    drop(work);
    assert!(queued.is_woken());
    let bravo = match queued.poll() {
        std::task::Poll::Ready(answer) => admitted(answer.unwrap()),
        std::task::Poll::Pending => panic!("bravo is admitted"),
    };
    drop((bravo, health, gamma));
    assert_eq!(limiter.in_flight(), 0);
    assert_eq!(limiter.bypassed(), 4);
}

/// `ResponseBody::has_permit` says whether the body "still holds its
/// request's permit"; a bypassed request never had one, yet its body says
/// it does (the body keeps an empty `Held` until it ends).
#[test]

fn a_bypassed_body_does_not_claim_a_permit() {
    let layer = HttpLimitLayer::new(1).bypass(|head| head.uri.path() == "/health");
    let limiter = layer.limiter().clone();
    let svc = layer.layer(streaming_inner());
    let health = admitted(now(&svc, req_to("/health", None)));
    assert_eq!(limiter.in_flight(), 0);
    assert!(!health.body().has_permit());
}
