//! The HTTP layer around `reqwest::Client` (the `reqwest` feature), over
//! loopback: the permit lives in the `reqwest::Response` until its body is
//! read or dropped, an upstream's `Retry-After` holds new admissions, and
//! responses are classified for adaptive limits.
#![cfg(feature = "reqwest")]

mod support;
use support::{eventually, guard};

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::{routing::get, Router};
use bytes::Bytes;
use http::StatusCode;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tower::{ServiceBuilder, ServiceExt};
use tower_concurrency::adaptive::{LimitAlgorithm, Sample};
use tower_concurrency::http_limit::HttpLimitLayer;
use tower_concurrency::{Limiter, Policy, Reason, Rejected};

async fn serve(app: Router) -> SocketAddr {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn reqwest_client() -> reqwest::Client {
    // No proxy: a proxy set in the environment must not see loopback traffic.
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// A server whose `/stream` sends "first" and then one more chunk per
/// message the test sends on the returned channel, ending when it closes;
/// `/busy` answers `503` with `Retry-After: 3`.
async fn upstream() -> (SocketAddr, Arc<Mutex<Option<mpsc::UnboundedSender<Bytes>>>>) {
    let feed: Arc<Mutex<Option<mpsc::UnboundedSender<Bytes>>>> = Arc::default();
    let app = Router::new()
        .route(
            "/stream",
            get({
                let feed = Arc::clone(&feed);
                move || async move {
                    let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
                    tx.send(Bytes::from_static(b"first")).unwrap();
                    *feed.lock().unwrap() = Some(tx);
                    let chunks = futures::stream::unfold(rx, |mut rx| async move {
                        rx.recv()
                            .await
                            .map(|chunk| (Ok::<_, Infallible>(chunk), rx))
                    });
                    Body::from_stream(chunks)
                }
            }),
        )
        .route(
            "/busy",
            get(|| async {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [("retry-after", "3")],
                    "busy",
                )
            }),
        )
        .route("/ok", get(|| async { "ok" }));
    (serve(app).await, feed)
}

/// The permit is held while the body is unread, given back when the body
/// is dropped unread, and given back when it is read to its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permit_lives_in_the_reqwest_response_body() {
    let (addr, feed) = upstream().await;
    let reqwest = reqwest_client();
    let layer = HttpLimitLayer::new(1);
    let limiter = layer.limiter().clone();
    let client = ServiceBuilder::new().layer(layer).service(reqwest.clone());
    let get = |path: &str| reqwest.get(format!("http://{addr}{path}")).build().unwrap();

    // Head read, body unread: still in flight.
    let response = guard("the head", client.clone().oneshot(get("/stream")))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.url().path(), "/stream", "the URL is kept");
    assert_eq!(limiter.in_flight(), 1, "held while the body is unread");
    // Dropped unread: given back.
    drop(response);
    assert_eq!(
        limiter.in_flight(),
        0,
        "given back when the body is dropped"
    );

    // Read to the end: held until the last chunk, then given back.
    let mut response = guard("the head", client.clone().oneshot(get("/stream")))
        .await
        .unwrap();
    let first = guard("the first chunk", response.chunk()).await.unwrap();
    assert_eq!(first.as_deref(), Some(&b"first"[..]));
    assert_eq!(limiter.in_flight(), 1, "held while the body streams");
    let tx = feed.lock().unwrap().take().unwrap();
    tx.send(Bytes::from_static(b"last")).unwrap();
    drop(tx);
    let mut rest = Vec::new();
    while let Some(chunk) = guard("the rest", response.chunk()).await.unwrap() {
        rest.extend_from_slice(&chunk);
    }
    assert_eq!(rest, b"last");
    eventually("the permit after the body's end", || {
        limiter.in_flight() == 0
    })
    .await;
    drop(response);
}

/// With `honor_retry_after`, an upstream `503` with `Retry-After: 3` holds
/// new admissions for 3 s: a policy that does not queue refuses with
/// `Reason::Held`, answered as a `reqwest::Response` with `Rejected` in its
/// extensions and the request's URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_retry_after_holds_the_reqwest_client() {
    let (addr, _feed) = upstream().await;
    let reqwest = reqwest_client();
    let layer = HttpLimitLayer::new(4)
        .policy(Policy::reject())
        .honor_retry_after(Duration::from_secs(60));
    let limiter = layer.limiter().clone();
    let client = ServiceBuilder::new().layer(layer).service(reqwest.clone());
    let get = |path: &str| reqwest.get(format!("http://{addr}{path}")).build().unwrap();

    let before = tokio::time::Instant::now();
    let busy = guard("busy", client.clone().oneshot(get("/busy")))
        .await
        .unwrap();
    assert_eq!(busy.status(), StatusCode::SERVICE_UNAVAILABLE);
    let until = limiter.held_until().expect("held after Retry-After");
    assert!(until >= before + Duration::from_secs(3), "held for 3 s");
    assert!(until <= tokio::time::Instant::now() + Duration::from_secs(3));

    let refused = guard("refused", client.clone().oneshot(get("/ok")))
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.url().path(), "/ok");
    let rejected = refused.extensions().get::<Rejected>().expect("a refusal");
    assert_eq!(rejected.reason(), Reason::Held);
    assert!(refused.text().await.unwrap().contains("held"));
}

/// An algorithm that keeps its limit and records each sample's overload
/// flag.
#[derive(Clone, Default)]
struct Samples(Arc<Mutex<Vec<bool>>>);

impl LimitAlgorithm for Samples {
    fn initial_limit(&self) -> usize {
        4
    }

    fn update(&mut self, sample: &Sample) -> usize {
        self.0.lock().unwrap().push(sample.overload);
        4
    }
}

/// reqwest responses are classified as HTTP ones: `503` is overload,
/// `200` success.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reqwest_responses_are_classified() {
    let (addr, _feed) = upstream().await;
    let reqwest = reqwest_client();
    let samples = Samples::default();
    let limiter = Limiter::adaptive(samples.clone());
    let client = ServiceBuilder::new()
        .layer(HttpLimitLayer::from_limiter(limiter))
        .service(reqwest.clone());
    for path in ["/ok", "/busy"] {
        let request = reqwest.get(format!("http://{addr}{path}")).build().unwrap();
        let response = guard(path, client.clone().oneshot(request)).await.unwrap();
        response.bytes().await.unwrap();
    }
    assert_eq!(*samples.0.lock().unwrap(), [false, true]);
}
