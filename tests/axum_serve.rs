//! A whole axum `Router` behind the HTTP layer, served by `axum::serve`
//! over loopback (the `axum` feature).
#![cfg(feature = "axum")]

mod support;
use support::{eventually, guard};

use std::sync::Arc;

use axum::{routing::get, Router, ServiceExt};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tower_concurrency::http_limit::HttpLimitLayer;
use tower_concurrency::Policy;

/// `HttpLimitLayer::axum(router)` is served by `axum::serve` as it is; the
/// one limit covers every request the app answers, the fallback's `404`
/// included, and a held permit lasts until the body is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_serve_takes_a_whole_limited_router() {
    let gate = Arc::new(Notify::new());
    let router = Router::new().route("/", get(|| async { "hello" })).route(
        "/wait",
        get({
            let gate = Arc::clone(&gate);
            move || async move {
                gate.notified().await;
                "done"
            }
        }),
    );
    let layer = HttpLimitLayer::new(1).policy(Policy::reject());
    let limiter = layer.limiter().clone();
    let app = layer.axum(router);

    let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app.into_make_service()).await });

    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let get = |path: &str| {
        let request = Request::get(format!("http://{addr}{path}"))
            .body(Empty::new())
            .unwrap();
        client.request(request)
    };
    let text = |response: http::Response<hyper::body::Incoming>| async move {
        let body = guard("a body", response.into_body().collect()).await;
        String::from_utf8(body.unwrap().to_bytes().to_vec()).unwrap()
    };

    let hello = guard("hello", get("/")).await.unwrap();
    assert_eq!(hello.status(), StatusCode::OK);
    assert_eq!(text(hello).await, "hello");
    eventually("hello's permit back", || limiter.in_flight() == 0).await;

    let waiting = tokio::spawn(get("/wait"));
    eventually("/wait to hold the permit", || limiter.in_flight() == 1).await;
    let refused = guard("the refusal", get("/no-such-route")).await.unwrap();
    assert_eq!(
        refused.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "the fallback is limited too"
    );
    gate.notify_one();
    let done = guard("/wait", waiting).await.unwrap().unwrap();
    assert_eq!(text(done).await, "done");
    eventually("/wait's permit back", || limiter.in_flight() == 0).await;

    let missing = guard("the 404", get("/no-such-route")).await.unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
}
