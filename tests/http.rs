//! Real HTTP over loopback sockets (127.0.0.1, port 0): the limit on the
//! server side of an axum app, on the client side of hyper and reqwest
//! clients, and around a whole router served by hyper directly.
//!
//! Every test is deterministic by construction: handlers block on a gate
//! the test opens only once the expected number of them are inside and the
//! rest are counted as waiting. The timeouts below are failure guards that
//! turn a hang into a readable panic, never a timing assumption.

mod support;
use support::{eventually, guard};

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;

use axum::{routing::get, Router};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tower::{ServiceBuilder, ServiceExt};
use tower_concurrency::ConcurrencyLimitLayer;

/// Counts handlers inside at once, the peak, and how many ever entered.
#[derive(Clone)]
struct Gauge(Arc<GaugeState>);

struct GaugeState {
    now: watch::Sender<usize>,
    peak: AtomicUsize,
    entered: AtomicUsize,
}

/// One handler inside a [`Gauge`]; leaves it when dropped.
struct Inside(Gauge);

impl Gauge {
    fn new() -> Self {
        Self(Arc::new(GaugeState {
            now: watch::Sender::new(0),
            peak: AtomicUsize::new(0),
            entered: AtomicUsize::new(0),
        }))
    }

    fn enter(&self) -> Inside {
        self.0.entered.fetch_add(1, SeqCst);
        self.0.now.send_modify(|now| {
            *now += 1;
            self.0.peak.fetch_max(*now, SeqCst);
        });
        Inside(self.clone())
    }

    fn now(&self) -> usize {
        *self.0.now.borrow()
    }

    fn peak(&self) -> usize {
        self.0.peak.load(SeqCst)
    }

    fn entered(&self) -> usize {
        self.0.entered.load(SeqCst)
    }

    /// Waits until at least `n` are inside at once.
    async fn reached(&self, n: usize) {
        let mut now = self.0.now.subscribe();
        let what = format!("{n} handlers inside at once");
        guard(&what, now.wait_for(|now| *now >= n))
            .await
            .expect("the gauge outlives the test");
    }
}

impl Drop for Inside {
    fn drop(&mut self) {
        let Inside(Gauge(state)) = self;
        state.now.send_modify(|now| *now -= 1);
    }
}

/// Holds handlers until the test opens it; stays open once opened.
#[derive(Clone)]
struct Gate(Arc<watch::Sender<bool>>);

impl Gate {
    fn new() -> Self {
        Self(Arc::new(watch::Sender::new(false)))
    }

    async fn pass(&self) {
        let mut open = self.0.subscribe();
        open.wait_for(|open| *open)
            .await
            .expect("the gate outlives the handlers");
    }

    fn open(&self) {
        self.0.send_replace(true);
    }
}

/// Binds 127.0.0.1 on a free port and serves `app` with `axum::serve`.
async fn serve(app: Router) -> SocketAddr {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn hyper_client() -> Client<HttpConnector, Empty<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

fn get_request(addr: SocketAddr, path: &str) -> Request<Empty<Bytes>> {
    Request::get(format!("http://{addr}{path}"))
        .body(Empty::new())
        .unwrap()
}

const ROUTES: [&str; 3] = ["/a", "/b", "/c"];

/// What the three-route app records: all handlers together, each route
/// alone, and the gate they all wait on.
struct ThreeRoutes {
    all: Gauge,
    routes: [Gauge; 3],
    gate: Gate,
}

impl ThreeRoutes {
    fn new() -> Self {
        Self {
            all: Gauge::new(),
            routes: [Gauge::new(), Gauge::new(), Gauge::new()],
            gate: Gate::new(),
        }
    }

    /// `/a`, `/b` and `/c`, each answering its own path once the gate opens.
    fn router(&self) -> Router {
        let mut router = Router::new();
        for (path, route) in ROUTES.into_iter().zip(self.routes.clone()) {
            let all = self.all.clone();
            let gate = self.gate.clone();
            let handler = move || {
                let (all, route, gate) = (all.clone(), route.clone(), gate.clone());
                async move {
                    let _all = all.enter();
                    let _route = route.enter();
                    gate.pass().await;
                    path
                }
            };
            router = router.route(path, get(handler));
        }
        router
    }
}

/// Sends `n` concurrent GETs spread round-robin over [`ROUTES`], each on
/// its own task; every task yields (path, status, body).
fn fire_at_routes(addr: SocketAddr, n: usize) -> JoinSet<(&'static str, StatusCode, Bytes)> {
    let client = hyper_client();
    let mut calls = JoinSet::new();
    for path in ROUTES.into_iter().cycle().take(n) {
        let client = client.clone();
        calls.spawn(async move {
            let response = client.request(get_request(addr, path)).await.unwrap();
            let status = response.status();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (path, status, body)
        });
    }
    calls
}

/// The motivating case: ONE `ConcurrencyLimitLayer::new(4)` on a router of
/// three routes limits the whole app to 4 handlers at once, not 4 per
/// route. With 30 requests in flight exactly 4 handlers run, the other 26
/// wait on the shared limiter, and all 30 succeed once the gate opens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_layer_limits_all_routes_of_an_axum_app_together() {
    const LIMIT: usize = 4;
    const REQUESTS: usize = 30;
    let app = ThreeRoutes::new();
    let layer = ConcurrencyLimitLayer::new(LIMIT);
    let limiter = layer.limiter().clone();
    let addr = serve(app.router().layer(layer)).await;

    let calls = fire_at_routes(addr, REQUESTS);
    app.all.reached(LIMIT).await;
    eventually("the other requests to queue on the limiter", || {
        limiter.waiting() == REQUESTS - LIMIT
    })
    .await;
    assert_eq!(app.all.now(), LIMIT, "exactly the limit is inside");
    assert_eq!(app.all.entered(), LIMIT, "nobody else ever got in");
    assert_eq!(limiter.in_flight(), LIMIT);
    assert_eq!(limiter.available(), 0);

    app.gate.open();
    let results = guard("all responses", calls.join_all()).await;
    assert_eq!(results.len(), REQUESTS);
    for (path, status, body) in results {
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(body, path.as_bytes(), "{path} answered by its own handler");
    }

    assert_eq!(
        app.all.peak(),
        LIMIT,
        "the app as a whole never exceeded the limit"
    );
    assert_eq!(app.all.entered(), REQUESTS);
    for (path, route) in ROUTES.iter().zip(&app.routes) {
        assert_eq!(route.entered(), REQUESTS / ROUTES.len(), "{path}");
        assert!(
            (1..=LIMIT).contains(&route.peak()),
            "{path} peaked at {}",
            route.peak()
        );
    }
    let route_peaks: usize = app.routes.iter().map(Gauge::peak).sum();
    assert!(
        route_peaks >= LIMIT,
        "the {LIMIT} inside at the app's peak were spread over the routes, \
         so the route peaks add up to at least {LIMIT}; they add up to {route_peaks}"
    );
    // Every response future completed before its response was written.
    assert_eq!(limiter.in_flight(), 0);
    assert_eq!(limiter.waiting(), 0);
    assert_eq!(limiter.available(), LIMIT);
}

/// The bug this crate exists for, asserted: `tower::limit::ConcurrencyLimitLayer::new(4)`
/// on the same three-route router lets more than 4 handlers run at once,
/// because axum calls `layer()` once per route (and again when a served
/// `Router<()>` is turned into routes per connection), and tower makes a
/// new semaphore on every call. Even at best that is 4 per route, so at
/// least 12 handlers get in; the test waits for 12 and asserts peak > 4.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tower_limit_layer_on_axum_router_lets_more_than_the_limit_in() {
    const LIMIT: usize = 4;
    const REQUESTS: usize = 30;
    let app = ThreeRoutes::new();
    let addr = serve(
        app.router()
            .layer(tower::limit::ConcurrencyLimitLayer::new(LIMIT)),
    )
    .await;

    let calls = fire_at_routes(addr, REQUESTS);
    app.all.reached(ROUTES.len() * LIMIT).await;
    assert!(
        app.all.peak() > LIMIT,
        "tower's layer let {} handlers in at once, more than its limit of {LIMIT}",
        app.all.peak()
    );

    app.gate.open();
    let results = guard("all responses", calls.join_all()).await;
    assert_eq!(results.len(), REQUESTS);
    assert!(results
        .iter()
        .all(|(_, status, _)| *status == StatusCode::OK));
}

/// A server with one gated route `/work`, and the gauge of its handlers.
async fn gated_server() -> (SocketAddr, Gauge, Gate) {
    let (gauge, gate) = (Gauge::new(), Gate::new());
    let handler = {
        let (gauge, gate) = (gauge.clone(), gate.clone());
        move || {
            let (gauge, gate) = (gauge.clone(), gate.clone());
            async move {
                let _inside = gauge.enter();
                gate.pass().await;
                "done"
            }
        }
    };
    let addr = serve(Router::new().route("/work", get(handler))).await;
    (addr, gauge, gate)
}

/// Client side: a hyper-util legacy client behind `ConcurrencyLimitLayer::new(3)`
/// sends 10 concurrent requests through clones with `oneshot`; the server
/// sees exactly 3 at once while 7 wait on the client's limiter, never more
/// than 3, and all 10 succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_around_hyper_client_caps_requests_in_flight_to_a_server() {
    const LIMIT: usize = 3;
    const REQUESTS: usize = 10;
    let (addr, server, gate) = gated_server().await;
    let layer = ConcurrencyLimitLayer::new(LIMIT);
    let limiter = layer.limiter().clone();
    let client = ServiceBuilder::new().layer(layer).service(hyper_client());

    let mut calls = JoinSet::new();
    for _ in 0..REQUESTS {
        let request = get_request(addr, "/work");
        let client = client.clone();
        calls.spawn(async move {
            let response = client.oneshot(request).await.unwrap();
            let status = response.status();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (status, body)
        });
    }
    server.reached(LIMIT).await;
    eventually(
        "the other requests to queue on the client's limiter",
        || limiter.waiting() == REQUESTS - LIMIT,
    )
    .await;
    assert_eq!(server.now(), LIMIT);
    assert_eq!(
        server.entered(),
        LIMIT,
        "no request got past the client's limit"
    );
    assert_eq!(limiter.in_flight(), LIMIT);

    gate.open();
    let results = guard("all responses", calls.join_all()).await;
    assert_eq!(results.len(), REQUESTS);
    for (status, body) in results {
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "done");
    }
    assert_eq!(
        server.peak(),
        LIMIT,
        "the server never saw more than the limit"
    );
    assert_eq!(server.entered(), REQUESTS);
    assert_eq!(limiter.in_flight(), 0);
    assert_eq!(limiter.waiting(), 0);
}

/// Client side with reqwest: `reqwest::Client` is a
/// `tower::Service<reqwest::Request>`, so the same layer caps it; 10
/// concurrent requests through clones reach the server at most 3 at a time
/// and all succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_around_reqwest_client_caps_requests_in_flight_to_a_server() {
    const LIMIT: usize = 3;
    const REQUESTS: usize = 10;
    let (addr, server, gate) = gated_server().await;
    // No proxy: a proxy set in the environment must not see loopback traffic.
    let reqwest = reqwest::Client::builder().no_proxy().build().unwrap();
    let layer = ConcurrencyLimitLayer::new(LIMIT);
    let limiter = layer.limiter().clone();
    let client = ServiceBuilder::new().layer(layer).service(reqwest.clone());

    let mut calls = JoinSet::new();
    for _ in 0..REQUESTS {
        let request = reqwest.get(format!("http://{addr}/work")).build().unwrap();
        let client = client.clone();
        calls.spawn(async move {
            let response = client.oneshot(request).await.unwrap();
            (response.status(), response.text().await.unwrap())
        });
    }
    server.reached(LIMIT).await;
    eventually(
        "the other requests to queue on the client's limiter",
        || limiter.waiting() == REQUESTS - LIMIT,
    )
    .await;
    assert_eq!(server.now(), LIMIT);
    assert_eq!(
        server.entered(),
        LIMIT,
        "no request got past the client's limit"
    );

    gate.open();
    let results = guard("all responses", calls.join_all()).await;
    assert_eq!(results.len(), REQUESTS);
    for (status, body) in results {
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "done");
    }
    assert_eq!(
        server.peak(),
        LIMIT,
        "the server never saw more than the limit"
    );
    assert_eq!(server.entered(), REQUESTS);
    assert_eq!(limiter.in_flight(), 0);
}

/// A whole router wrapped in the limit (`ConcurrencyLimit<Router>`), served
/// per connection by `hyper::server::conn::http1` through hyper-util's
/// `TowerToHyperService`, keeps one limit across connections and honours
/// tower readiness: `TowerToHyperService::call` drives a clone of the
/// service with hyper-util's `Oneshot` (`poll_ready`, then `call`), so no
/// request reaches `ConcurrencyLimit::call` without a permit. (A hand-made
/// `hyper::service::service_fn` that calls `Service::call` directly would
/// panic here; see the crate docs.) `TowerToHyperService` needs hyper-util's
/// `service` feature, which axum turns on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_router_behind_limit_served_by_hyper_keeps_one_limit() {
    const LIMIT: usize = 2;
    const REQUESTS: usize = 6;
    let (gauge, gate) = (Gauge::new(), Gate::new());
    let handler = {
        let (gauge, gate) = (gauge.clone(), gate.clone());
        move || {
            let (gauge, gate) = (gauge.clone(), gate.clone());
            async move {
                let _inside = gauge.enter();
                gate.pass().await;
                "done"
            }
        }
    };
    let router = Router::new().route("/work", get(handler));
    let layer = ConcurrencyLimitLayer::new(LIMIT);
    let limiter = layer.limiter().clone();
    let app = ServiceBuilder::new().layer(layer).service(router);

    let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let service = TowerToHyperService::new(app.clone());
            // A failed connection shows up as a failed request below.
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });

    let client = hyper_client();
    let mut calls = JoinSet::new();
    for _ in 0..REQUESTS {
        let client = client.clone();
        calls.spawn(async move {
            let response = client.request(get_request(addr, "/work")).await.unwrap();
            let status = response.status();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (status, body)
        });
    }
    gauge.reached(LIMIT).await;
    eventually("the other connections to queue on the limiter", || {
        limiter.waiting() == REQUESTS - LIMIT
    })
    .await;
    assert_eq!(gauge.now(), LIMIT);
    assert_eq!(gauge.entered(), LIMIT);
    assert_eq!(limiter.in_flight(), LIMIT);

    gate.open();
    let results = guard("all responses", calls.join_all()).await;
    assert_eq!(results.len(), REQUESTS);
    for (status, body) in results {
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "done");
    }
    assert_eq!(gauge.peak(), LIMIT);
    assert_eq!(gauge.entered(), REQUESTS);
    assert_eq!(limiter.in_flight(), 0);
}

// ---------------------------------------------------------------------------
// The admission record and the classifier of `ConcurrencyLimitLayer::http`
// ---------------------------------------------------------------------------

/// An algorithm that keeps its limit and records whether each sample was
/// overload.
#[derive(Clone, Default)]
struct Samples(Arc<std::sync::Mutex<Vec<bool>>>);

impl tower_concurrency::adaptive::LimitAlgorithm for Samples {
    fn initial_limit(&self) -> usize {
        4
    }

    fn update(&mut self, sample: &tower_concurrency::adaptive::Sample) -> usize {
        self.0.lock().unwrap().push(sample.overload);
        4
    }
}

impl Samples {
    fn taken(&self) -> Vec<bool> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

/// `ConcurrencyLimitLayer::classifier(c).http()` keeps `c` (it used to be
/// dropped for the HTTP classifier: this test failed before), and without
/// a classifier of its own `.http()` classifies by status.
#[tokio::test]
async fn core_layer_to_http_keeps_a_custom_classifier() {
    use http::Response;
    use http_body_util::Full;
    use std::convert::Infallible;
    use tower::{service_fn, Layer};
    use tower_concurrency::adaptive::Outcome;
    use tower_concurrency::Limiter;

    let answer = |status: u16| {
        service_fn(move |_: Request<()>| async move {
            let mut response = Response::new(Full::new(Bytes::from_static(b"x")));
            *response.status_mut() = StatusCode::from_u16(status).unwrap();
            Ok::<_, Infallible>(response)
        })
    };
    async fn call<S, B>(svc: S)
    where
        S: tower::Service<Request<()>, Response = Response<B>, Error = Infallible>,
        B: http_body::Body,
        B::Error: std::fmt::Debug,
    {
        let response = svc.oneshot(Request::new(())).await.unwrap();
        response.into_body().collect().await.unwrap();
    }

    let samples = Samples::default();
    let limiter = Limiter::adaptive(samples.clone());
    let everything_is_overload = |_: &Result<Response<Full<Bytes>>, Infallible>| Outcome::Overload;
    let custom = ConcurrencyLimitLayer::from_limiter(limiter.clone())
        .classifier(everything_is_overload)
        .http();
    call(custom.layer(answer(200))).await;
    assert_eq!(samples.taken(), [true], "the custom classifier decided");

    let by_status = ConcurrencyLimitLayer::from_limiter(limiter).http();
    call(by_status.layer(answer(200))).await;
    call(by_status.layer(answer(503))).await;
    assert_eq!(samples.taken(), [false, true], "classified by status");
}

/// A handler reads how its request was admitted from an `Admission` in
/// its extensions: at once with 1 of 2 in flight, or after waiting 50 ms
/// (paused time) behind a held permit with 2 in flight.
#[tokio::test(start_paused = true)]
async fn handlers_read_the_admission_record_through_axum() {
    use axum::Extension;
    use std::time::Duration;
    use tower_concurrency::http_limit::{Admission, HttpLimitLayer};

    let layer = HttpLimitLayer::new(2).admission_record(true);
    let limiter = layer.limiter().clone();
    let app: Router = Router::new()
        .route(
            "/",
            get(|Extension(admission): Extension<Admission>| async move {
                format!(
                    "{} {} {} {}",
                    admission.waited.as_millis(),
                    admission.in_flight,
                    admission.limit,
                    admission.partition.is_some()
                )
            }),
        )
        .route(
            "/health",
            get(|admission: Option<Extension<Admission>>| async move {
                format!("{}", admission.is_some())
            }),
        )
        .layer(layer.bypass(|head| head.uri.path() == "/health"));
    let text = |app: Router, path: &'static str| async move {
        let request = Request::get(path).body(axum::body::Body::empty()).unwrap();
        let body = app.oneshot(request).await.unwrap().into_body();
        String::from_utf8(body.collect().await.unwrap().to_bytes().to_vec()).unwrap()
    };

    assert_eq!(text(app.clone(), "/").await, "0 1 2 false");
    assert_eq!(
        text(app.clone(), "/health").await,
        "false",
        "bypassed: no record"
    );

    let held = [
        limiter.try_acquire().unwrap(),
        limiter.try_acquire().unwrap(),
    ];
    let waiting = tokio::spawn(text(app.clone(), "/"));
    // Paused time stands still while the request gets into the queue.
    while limiter.waiting() == 0 {
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let [first, _second] = held;
    drop(first);
    assert_eq!(waiting.await.unwrap(), "50 2 2 false");

    // Off by default: no record, no allocation for it.
    let app: Router = Router::new()
        .route(
            "/",
            get(|admission: Option<Extension<Admission>>| async move {
                format!("{}", admission.is_some())
            }),
        )
        .layer(HttpLimitLayer::new(2));
    assert_eq!(text(app, "/").await, "false");
}
