//! Body-held permits: an HTTP request counts against the limit until its
//! response body ends or is dropped, on the server (axum over loopback) and
//! on the client (hyper-util's client behind the layer); and the body is
//! forwarded exactly.
//!
//! The loopback tests use real sockets and real time but are deterministic
//! by construction: every body is fed from a channel the test controls, and
//! the test waits on channels or polls the limiter's counts, with a
//! generous overall timeout only as a failure guard.

#![cfg(feature = "http")]

mod support;
use support::{eventually, guard};

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;

use axum::body::Body;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body::{Body as _, Frame};
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tower::{service_fn, Layer, ServiceBuilder, ServiceExt};
use tower_concurrency::http_limit::{HttpLimitLayer, Release, ResponseBody};
use tower_concurrency::{ConcurrencyLimitLayer, Limiter};

/// The sending side of one streaming response body: its handler was
/// entered, and the body ends when this is dropped.
type Feed = mpsc::UnboundedSender<Bytes>;

/// A router whose `/stream` handler announces itself with the sender that
/// feeds its body, so the test decides what the body says and when it ends.
fn streaming_router(entered: mpsc::UnboundedSender<Feed>) -> Router {
    Router::new().route(
        "/stream",
        get(move || {
            let entered = entered.clone();
            async move {
                let (feed, chunks) = mpsc::unbounded_channel::<Bytes>();
                entered.send(feed).expect("the test listens");
                let stream = futures::stream::unfold(chunks, |mut chunks| async move {
                    let chunk = chunks.recv().await?;
                    Some((Ok::<_, Infallible>(chunk), chunks))
                });
                Body::from_stream(stream)
            }
        }),
    )
}

async fn serve(app: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

fn get_request(addr: SocketAddr, path: &str) -> Request<Empty<Bytes>> {
    Request::get(format!("http://{addr}{path}"))
        .body(Empty::new())
        .unwrap()
}

fn request(client: &HttpClient, addr: SocketAddr) -> JoinHandle<Response<Incoming>> {
    let pending = client.request(get_request(addr, "/stream"));
    tokio::spawn(async move { pending.await.expect("a response head") })
}

/// Reads data frames until `expected.len()` bytes came, and compares.
async fn read_exactly<B>(body: &mut B, expected: &[u8])
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Debug,
{
    let mut got = Vec::new();
    while got.len() < expected.len() {
        let frame = guard("a body frame", body.frame())
            .await
            .expect("the body ended early")
            .expect("a body frame");
        if let Ok(data) = frame.into_data() {
            got.extend_from_slice(&data);
        }
    }
    assert_eq!(got, expected);
}

/// Reads what is left of a body to its end.
async fn read_to_end<B>(body: B) -> Bytes
where
    B: http_body::Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    guard("the end of a body", body.collect())
        .await
        .expect("the whole body")
        .to_bytes()
}

/// A download in progress: its head and first chunk arrived, its body is
/// still open.
struct Download {
    response: Response<Incoming>,
    feed: Feed,
}

async fn start_download(
    client: &HttpClient,
    addr: SocketAddr,
    entered: &mut mpsc::UnboundedReceiver<Feed>,
) -> Download {
    let head = request(client, addr);
    let feed = guard("the handler", entered.recv()).await.unwrap();
    feed.send(Bytes::from_static(b"first")).unwrap();
    let mut response = guard("the head", head).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    read_exactly(response.body_mut(), b"first").await;
    Download { response, feed }
}

impl Download {
    /// Sends the rest, ends the body, and reads it to the end.
    async fn finish(self) {
        self.feed.send(Bytes::from_static(b"rest")).unwrap();
        drop(self.feed);
        assert_eq!(read_to_end(self.response.into_body()).await, "rest");
    }
}

/// Server side, default `Release::BodyEnd`: two downloads whose heads are
/// out still hold both permits while their bodies stream; a third request
/// waits without entering its handler, and gets in as soon as one body ends
/// (released before the client sees the end).
#[tokio::test]
async fn server_permits_held_until_bodies_end_and_third_request_waits() {
    let (entered_tx, mut entered) = mpsc::unbounded_channel();
    let layer = HttpLimitLayer::new(2);
    let limiter = layer.limiter().clone();
    let addr = serve(streaming_router(entered_tx).layer(layer)).await;
    let client = client();

    let a = start_download(&client, addr, &mut entered).await;
    let b = start_download(&client, addr, &mut entered).await;
    assert_eq!(limiter.in_flight(), 2, "both bodies still stream");
    assert_eq!(limiter.waiting(), 0);

    let third = request(&client, addr);
    eventually("the third request to queue", || limiter.waiting() == 1).await;
    assert!(entered.try_recv().is_err(), "its handler was not entered");
    assert_eq!(limiter.in_flight(), 2);

    a.finish().await;
    // The permit came back before the client could read the end.
    let feed = guard("the third handler", entered.recv()).await.unwrap();
    assert_eq!(limiter.waiting(), 0);
    assert_eq!(limiter.in_flight(), 2, "b and the third one");

    feed.send(Bytes::from_static(b"third")).unwrap();
    drop(feed);
    let third = guard("the third head", third).await.unwrap();
    assert_eq!(read_to_end(third.into_body()).await, "third");
    b.finish().await;
    assert_eq!(limiter.in_flight(), 0);
    assert_eq!(limiter.available(), 2);
}

/// Serves `app` (the streaming router behind some layer), starts two
/// downloads and returns the permits in flight once both heads are out
/// while both bodies still stream. A third download then gets in at once
/// (it would block here if the two still counted); all are finished.
async fn in_flight_once_heads_are_out(
    app: Router,
    mut entered: mpsc::UnboundedReceiver<Feed>,
    limiter: &Limiter,
) -> usize {
    let addr = serve(app).await;
    let client = client();
    let a = start_download(&client, addr, &mut entered).await;
    let b = start_download(&client, addr, &mut entered).await;
    assert!(!a.response.body().is_end_stream());
    assert!(!b.response.body().is_end_stream());
    let in_flight = limiter.in_flight();
    let c = start_download(&client, addr, &mut entered).await;
    assert_eq!(limiter.waiting(), 0);
    for download in [a, b, c] {
        download.finish().await;
    }
    assert_eq!(limiter.in_flight(), 0);
    in_flight
}

/// Contrast: with `Release::Head` the permits come back once the heads are
/// ready, although both bodies still stream, so a third request gets in.
#[tokio::test]
async fn release_head_frees_permits_while_bodies_still_stream() {
    let (entered_tx, entered) = mpsc::unbounded_channel();
    let layer = HttpLimitLayer::new(2).release(Release::Head);
    let limiter = layer.limiter().clone();
    let app = streaming_router(entered_tx).layer(layer);
    assert_eq!(
        in_flight_once_heads_are_out(app, entered, &limiter).await,
        0
    );
}

/// Contrast: the core `ConcurrencyLimitLayer` gives permits back with the
/// response future, so nothing is counted once heads are out although
/// bodies still stream; `.http()` on it with `Release::Head` behaves alike.
#[tokio::test]
async fn core_layer_frees_permits_once_heads_are_out() {
    let core = ConcurrencyLimitLayer::new(2);
    let limiter = core.limiter().clone();
    let (entered_tx, entered) = mpsc::unbounded_channel();
    let app = streaming_router(entered_tx).layer(core);
    assert_eq!(
        in_flight_once_heads_are_out(app, entered, &limiter).await,
        0
    );

    let head = ConcurrencyLimitLayer::from_limiter(limiter.clone())
        .http()
        .release(Release::Head);
    let (entered_tx, entered) = mpsc::unbounded_channel();
    let app = streaming_router(entered_tx).layer(head);
    assert_eq!(
        in_flight_once_heads_are_out(app, entered, &limiter).await,
        0
    );
}

/// A client that hangs up mid-stream drops the server's response body,
/// which gives its permit back.
#[tokio::test]
async fn client_dropping_the_body_mid_stream_releases_the_server_permit() {
    let (entered_tx, mut entered) = mpsc::unbounded_channel();
    let layer = HttpLimitLayer::new(2);
    let limiter = layer.limiter().clone();
    let addr = serve(streaming_router(entered_tx).layer(layer)).await;
    let client = client();

    let download = start_download(&client, addr, &mut entered).await;
    assert_eq!(limiter.in_flight(), 1);
    let Download { response, feed } = download;
    drop(response);

    // The server learns of the hang-up when it next writes (or reads EOF):
    // keep feeding chunks until its body, and with it the permit, is gone.
    eventually("the server permit to come back", || {
        let _ = feed.send(Bytes::from_static(b"more"));
        limiter.in_flight() == 0
    })
    .await;
    assert!(feed.is_closed(), "the server dropped the body");
    assert_eq!(limiter.available(), 2);
}

/// Client side: a response whose body is unread still holds the permit, so
/// a second request waits before reaching the server; reading the body to
/// the end gives the permit back and the second proceeds; dropping an
/// unread body gives it back too.
#[tokio::test]
async fn client_unread_body_holds_the_permit_until_read_or_dropped() {
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&hits);
    let app = Router::new().route(
        "/",
        get(move || {
            counted.fetch_add(1, SeqCst);
            async { "hello" }
        }),
    );
    let addr = serve(app).await;

    let layer = HttpLimitLayer::new(1);
    let limiter = layer.limiter().clone();
    let svc = ServiceBuilder::new().layer(layer).service(client());

    let first = guard(
        "the first head",
        svc.clone().oneshot(get_request(addr, "/")),
    )
    .await
    .unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    assert!(first.body().has_permit());
    assert_eq!(limiter.in_flight(), 1);

    let second = tokio::spawn(svc.clone().oneshot(get_request(addr, "/")));
    eventually("the second request to queue", || limiter.waiting() == 1).await;
    assert_eq!(hits.load(SeqCst), 1, "the second did not reach the server");

    let mut body = first.into_body();
    read_exactly(&mut body, b"hello").await;
    assert!(!body.has_permit(), "released with the last frame");
    let second = guard("the second head", second).await.unwrap().unwrap();
    assert_eq!(hits.load(SeqCst), 2);
    assert_eq!(limiter.waiting(), 0);
    assert_eq!(limiter.in_flight(), 1, "the second's body is unread");
    assert!(second.body().has_permit());

    let third = tokio::spawn(svc.clone().oneshot(get_request(addr, "/")));
    eventually("the third request to queue", || limiter.waiting() == 1).await;
    assert_eq!(hits.load(SeqCst), 2);
    drop(second);
    let third = guard("the third head", third).await.unwrap().unwrap();
    assert_eq!(hits.load(SeqCst), 3);
    assert_eq!(read_to_end(third.into_body()).await, "hello");
    assert_eq!(limiter.in_flight(), 0);
    assert_eq!(limiter.available(), 1);
}

fn data(frame: Frame<Bytes>) -> Bytes {
    frame.into_data().expect("a data frame")
}

/// Data frames and trailers pass through unchanged, in order; the permit
/// is held until the body ends, and `collect` sees the same body.
#[tokio::test]
async fn frames_and_trailers_pass_through_exactly() {
    fn trailers() -> HeaderMap {
        let mut trailers = HeaderMap::new();
        trailers.insert("x-checksum", HeaderValue::from_static("abc123"));
        trailers
    }
    let layer = HttpLimitLayer::new(1);
    let limiter = layer.limiter().clone();
    let svc = layer.layer(service_fn(|_: Request<()>| async {
        let frames = vec![
            Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"one"))),
            Ok(Frame::data(Bytes::from_static(b"two"))),
            Ok(Frame::trailers(trailers())),
        ];
        Ok::<_, Infallible>(Response::new(StreamBody::new(futures::stream::iter(
            frames,
        ))))
    }));

    let mut body = svc
        .clone()
        .oneshot(Request::new(()))
        .await
        .unwrap()
        .into_body();
    assert!(body.has_permit());
    assert_eq!(data(body.frame().await.unwrap().unwrap()), "one");
    assert!(body.has_permit());
    assert_eq!(limiter.in_flight(), 1);
    assert_eq!(data(body.frame().await.unwrap().unwrap()), "two");
    let last = body.frame().await.unwrap().unwrap();
    assert_eq!(last.into_trailers().expect("trailers"), trailers());
    assert!(body.frame().await.is_none());
    assert!(!body.has_permit());
    assert_eq!(limiter.in_flight(), 0);

    let collected = svc
        .oneshot(Request::new(()))
        .await
        .unwrap()
        .into_body()
        .collect()
        .await
        .unwrap();
    assert_eq!(collected.trailers(), Some(&trailers()));
    assert_eq!(collected.to_bytes(), "onetwo");
    assert_eq!(limiter.in_flight(), 0);
}

/// An error from the inner body is passed on and ends the body: the permit
/// is given back with it.
#[tokio::test]
async fn a_body_error_passes_through_and_releases_the_permit() {
    let layer = HttpLimitLayer::new(1);
    let limiter = layer.limiter().clone();
    let svc = layer.layer(service_fn(|_: Request<()>| async {
        let frames = vec![
            Ok(Frame::data(Bytes::from_static(b"partial"))),
            Err(std::io::Error::other("upstream broke")),
        ];
        Ok::<_, Infallible>(Response::new(StreamBody::new(futures::stream::iter(
            frames,
        ))))
    }));
    let mut body = svc.oneshot(Request::new(())).await.unwrap().into_body();
    assert_eq!(data(body.frame().await.unwrap().unwrap()), "partial");
    assert!(body.has_permit());
    let err = body.frame().await.unwrap().unwrap_err();
    assert_eq!(err.to_string(), "upstream broke");
    assert!(!body.has_permit());
    assert_eq!(limiter.in_flight(), 0);
}

/// `size_hint` and `is_end_stream` are the inner body's, for a `Full` body
/// and for empty bodies; a `Full` body gives the permit back with its only
/// frame (when `is_end_stream` turns true), without a further poll; an
/// empty body gives it back when polled to its end or dropped.
#[tokio::test]
async fn size_hint_and_end_of_stream_match_the_inner_body() {
    async fn respond<B>(limiter: &Limiter, body: B) -> ResponseBody<B>
    where
        B: http_body::Body<Data = Bytes> + Clone + Send + 'static,
    {
        let svc = HttpLimitLayer::from_limiter(limiter.clone()).layer(service_fn(
            move |_: Request<()>| {
                let body = body.clone();
                async move { Ok::<_, Infallible>(Response::new(body)) }
            },
        ));
        svc.oneshot(Request::new(())).await.unwrap().into_body()
    }
    fn same_hints<A: http_body::Body, B: http_body::Body>(ours: &A, inner: &B) {
        assert_eq!(ours.size_hint().lower(), inner.size_hint().lower());
        assert_eq!(ours.size_hint().upper(), inner.size_hint().upper());
        assert_eq!(ours.size_hint().exact(), inner.size_hint().exact());
        assert_eq!(ours.is_end_stream(), inner.is_end_stream());
    }
    let limiter = Limiter::new(1);

    let full = Full::new(Bytes::from_static(b"hello"));
    let mut body = respond(&limiter, full.clone()).await;
    same_hints(&body, &full);
    assert_eq!(body.size_hint().exact(), Some(5));
    assert!(!body.is_end_stream());
    assert_eq!(data(body.frame().await.unwrap().unwrap()), "hello");
    assert!(body.is_end_stream());
    assert!(!body.has_permit(), "released with the last frame");
    assert_eq!(limiter.in_flight(), 0);

    let empty_full = Full::new(Bytes::new());
    let mut body = respond(&limiter, empty_full.clone()).await;
    same_hints(&body, &empty_full);
    assert!(body.is_end_stream());
    assert!(body.has_permit());
    assert!(body.frame().await.is_none());
    assert!(!body.has_permit());
    assert_eq!(limiter.in_flight(), 0);

    let empty = Empty::<Bytes>::new();
    let body = respond(&limiter, empty).await;
    same_hints(&body, &empty);
    assert_eq!(body.size_hint().exact(), Some(0));
    assert_eq!(limiter.in_flight(), 1, "held until polled or dropped");
    drop(body);
    assert_eq!(limiter.in_flight(), 0);
    assert_eq!(limiter.available(), 1);
}

/// The whole router wrapped (not `.layer`) and served by `axum::serve`
/// with the body mapped back into `axum::body::Body`: one limit across
/// connections, held until each body ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_router_wrapped_and_served_holds_the_limit_across_connections() {
    let (entered_tx, mut entered) = mpsc::unbounded_channel();
    let layer = HttpLimitLayer::new(2);
    let limiter = layer.limiter().clone();
    let app = ServiceBuilder::new()
        .map_response(|response: Response<ResponseBody<Body>>| response.map(Body::new))
        .layer(layer)
        .service(streaming_router(entered_tx));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let make = axum::ServiceExt::<axum::extract::Request>::into_make_service(app);
        axum::serve(listener, make).await.unwrap();
    });

    // One client each: three separate connections.
    let (one, two, three) = (client(), client(), client());
    let a = start_download(&one, addr, &mut entered).await;
    let b = start_download(&two, addr, &mut entered).await;
    assert_eq!(limiter.in_flight(), 2);

    let third = request(&three, addr);
    eventually("the third request to queue", || limiter.waiting() == 1).await;
    assert!(entered.try_recv().is_err(), "its handler was not entered");

    b.finish().await;
    let feed = guard("the third handler", entered.recv()).await.unwrap();
    assert_eq!(limiter.in_flight(), 2);
    drop(feed);
    let third = guard("the third head", third).await.unwrap();
    assert_eq!(read_to_end(third.into_body()).await, "");
    a.finish().await;
    assert_eq!(limiter.in_flight(), 0);
    assert_eq!(limiter.waiting(), 0);
}

/// An inner service error comes out as the service's own error type (no
/// boxing, no response made up) and gives the permit back.
#[tokio::test]
async fn inner_service_errors_pass_through_and_release_the_permit() {
    #[derive(Debug, PartialEq)]
    struct Unreachable(&'static str);

    let layer = HttpLimitLayer::new(1);
    let limiter = layer.limiter().clone();
    let svc = layer.layer(service_fn(|_: Request<()>| async {
        Err::<Response<Full<Bytes>>, _>(Unreachable("upstream down"))
    }));
    let err = svc.oneshot(Request::new(())).await.unwrap_err();
    assert_eq!(err, Unreachable("upstream down"));
    assert_eq!(limiter.in_flight(), 0);
    assert_eq!(limiter.available(), 1);
}
