//! The HTTP layer inside tower-http's usual stack, over loopback:
//! `TraceLayer` → `TimeoutLayer` → `CompressionLayer` → `HttpLimitLayer`.
//! tower-http's `Timeout` answers with an empty `ResponseBody::default()`,
//! so this stack compiling at all is the first check.

mod support;
use support::{eventually, guard};

use std::net::SocketAddr;
use std::time::Duration;

use axum::{routing::get, Router};
use http::header::{ACCEPT_ENCODING, CONTENT_ENCODING};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_concurrency::http_limit::HttpLimitLayer;
use tower_concurrency::Policy;
use tower_http::compression::CompressionLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

const BIG: usize = 64 * 1024;

async fn serve(app: Router) -> SocketAddr {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// Over loopback: a compressible answer comes back gzipped and gives its
/// permit back once read; a handler that never answers is cut by the
/// timeout with `408` and its permit is given back; while it runs, the
/// limit of 1 refuses a second request with `503`, through compression and
/// tracing unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_timeout_compression_then_limit_over_loopback() {
    let limit = HttpLimitLayer::new(1).policy(Policy::reject());
    let limiter = limit.limiter().clone();
    let stack = ServiceBuilder::new()
        .layer(TraceLayer::new_for_http())
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_millis(200),
        ))
        .layer(CompressionLayer::new())
        .layer(limit);
    let app = Router::new()
        .route("/big", get(|| async { "a".repeat(BIG) }))
        .route("/never", get(std::future::pending::<&'static str>))
        .layer(stack);
    let addr = serve(app).await;
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let get = |path: &str| {
        Request::get(format!("http://{addr}{path}"))
            .header(ACCEPT_ENCODING, "gzip")
            .body(Empty::new())
            .unwrap()
    };

    let big = guard("the big answer", client.request(get("/big")))
        .await
        .unwrap();
    assert_eq!(big.status(), StatusCode::OK);
    assert_eq!(big.headers()[CONTENT_ENCODING], "gzip");
    let gzipped = guard("the big body", big.into_body().collect())
        .await
        .unwrap()
        .to_bytes();
    assert!(gzipped.len() < BIG / 10, "compressed: {}", gzipped.len());
    eventually("the big answer's permit", || limiter.in_flight() == 0).await;

    let never = tokio::spawn(client.request(get("/never")));
    eventually("the endless handler to hold the permit", || {
        limiter.in_flight() == 1
    })
    .await;
    let refused = guard("the refusal", client.request(get("/big")))
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(refused.headers().contains_key(http::header::RETRY_AFTER));

    let timed_out = guard("the timeout", never).await.unwrap().unwrap();
    assert_eq!(timed_out.status(), StatusCode::REQUEST_TIMEOUT);
    eventually("the timed-out request's permit", || {
        limiter.in_flight() == 0
    })
    .await;
}
