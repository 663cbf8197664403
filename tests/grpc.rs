//! gRPC over loopback with real tonic clients and servers (tonic-health's
//! generated service, implemented here so that it can answer any status):
//! refusals reach tonic clients as the chosen gRPC code with a pushback, a
//! tonic `Channel` in the layer honours an upstream's pushback, one limit
//! holds across all of a server's connections, and the default classifier
//! moves an adaptive limit on gRPC overload, read from trailers-only
//! headers or from the trailers at the body's end.

mod support;
use support::{eventually, guard};

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::sync::Notify;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Server};
use tonic::{Code, Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tower::ServiceBuilder;
use tower_concurrency::adaptive::{LimitAlgorithm, Sample};
use tower_concurrency::http_limit::{GrpcStatus, HttpLimitLayer, Rejection, RetryAfter};
use tower_concurrency::{Limiter, Policy};

/// A health service whose answer is chosen by the requested name:
/// `"ok"` serves, `"unavailable"`, `"exhausted"`, `"deadline"` and
/// `"not-found"` fail with that code (trailers-only), `"wait"` serves once
/// the test notifies; `watch` sends one message and then, for
/// `"unavailable"`, fails (the status in the trailers), otherwise stays
/// open until the client goes away.
#[derive(Clone, Default)]
struct Probe {
    calls: Arc<AtomicUsize>,
    gate: Arc<Notify>,
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

fn serving() -> HealthCheckResponse {
    HealthCheckResponse {
        status: ServingStatus::Serving as i32,
    }
}

#[tonic::async_trait]
impl Health for Probe {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        self.calls.fetch_add(1, SeqCst);
        match request.get_ref().service.as_str() {
            "unavailable" => Err(Status::unavailable("backend down")),
            "exhausted" => Err(Status::resource_exhausted("quota")),
            "deadline" => Err(Status::deadline_exceeded("too slow")),
            "not-found" => Err(Status::not_found("no such service")),
            "wait" => {
                self.gate.notified().await;
                Ok(Response::new(serving()))
            }
            _ => Ok(Response::new(serving())),
        }
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        self.calls.fetch_add(1, SeqCst);
        let first = futures::stream::once(async { Ok(serving()) });
        let stream: WatchStream = if request.get_ref().service == "unavailable" {
            Box::pin(first.chain(futures::stream::once(async {
                Err(Status::unavailable("went away"))
            })))
        } else {
            Box::pin(first.chain(futures::stream::pending()))
        };
        Ok(Response::new(stream))
    }
}

/// Serves `probe` on 127.0.0.1 behind `layer`.
async fn serve(layer: HttpLimitLayer, probe: Probe) -> SocketAddr {
    let incoming = TcpIncoming::bind(([127, 0, 0, 1], 0).into()).unwrap();
    let addr = incoming.local_addr().unwrap();
    tokio::spawn(
        Server::builder()
            .layer(layer)
            .add_service(HealthServer::new(probe))
            .serve_with_incoming(incoming),
    );
    addr
}

/// A new connection to `addr`.
async fn channel(addr: SocketAddr) -> Channel {
    let endpoint = Channel::from_shared(format!("http://{addr}")).unwrap();
    guard("a connection", endpoint.connect()).await.unwrap()
}

fn check(service: &str) -> HealthCheckRequest {
    HealthCheckRequest {
        service: service.to_owned(),
    }
}

/// A refused call reaches the tonic client as `UNAVAILABLE` with no
/// configuration (not `INTERNAL`, as a plain-text refusal would), with
/// the reason in its message and `grpc-retry-pushback-ms` carrying the
/// `Retry-After`; `Rejection::grpc_status` chooses `RESOURCE_EXHAUSTED`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_calls_reach_tonic_clients_as_the_chosen_code() {
    for (rejection, code) in [
        (None, Code::Unavailable),
        (
            Some(
                Rejection::service_unavailable()
                    .grpc_status(GrpcStatus::ResourceExhausted)
                    .retry_after(RetryAfter::Seconds(7)),
            ),
            Code::ResourceExhausted,
        ),
    ] {
        let pushback = if rejection.is_some() { "7000" } else { "1000" };
        let mut layer = HttpLimitLayer::new(1).policy(Policy::reject());
        if let Some(rejection) = rejection {
            layer = layer.rejection(rejection);
        }
        let limiter = layer.limiter().clone();
        let probe = Probe::default();
        let addr = serve(layer, probe.clone()).await;
        let mut client = HealthClient::new(channel(addr).await);

        let held = limiter.try_acquire().unwrap();
        let status = guard("the refusal", client.check(check("ok")))
            .await
            .unwrap_err();
        assert_eq!(status.code(), code, "{status:?}");
        assert_eq!(status.message(), "concurrency limit of 1 reached");
        let metadata = status.metadata();
        assert_eq!(metadata.get("grpc-retry-pushback-ms").unwrap(), pushback);
        assert_eq!(probe.calls.load(SeqCst), 0, "refused before the service");

        drop(held);
        let answer = guard("the answer", client.check(check("ok")))
            .await
            .unwrap();
        assert_eq!(answer.get_ref().status, ServingStatus::Serving as i32);
    }
}

/// One limit for the whole server, across its connections: two streams
/// on two connections hold both permits, a third connection is refused,
/// and once a stream ends its permit serves the third.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_limit_holds_across_all_of_the_servers_connections() {
    let layer = HttpLimitLayer::new(2).policy(Policy::reject());
    let limiter = layer.limiter().clone();
    let addr = serve(layer, Probe::default()).await;

    let mut streams = Vec::new();
    for _ in 0..2 {
        let mut client = HealthClient::new(channel(addr).await);
        let mut stream = guard("a watch", client.watch(check("ok")))
            .await
            .unwrap()
            .into_inner();
        guard("its first message", stream.next())
            .await
            .unwrap()
            .unwrap();
        streams.push((client, stream));
    }
    assert_eq!(limiter.in_flight(), 2, "open streams hold their permits");

    let mut third = HealthClient::new(channel(addr).await);
    let refused = guard("the refusal", third.check(check("ok")))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable);

    drop(streams.pop());
    eventually("the ended stream's permit", || limiter.in_flight() == 1).await;
    guard("the third call", third.check(check("ok")))
        .await
        .unwrap();
}

/// A tonic `Channel` wrapped in the layer with `honor_retry_after` holds
/// new admissions when the upstream answers with a pushback: the next
/// call is refused on the client (as `UNAVAILABLE`, saying the upstream
/// asked to wait) and never reaches the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limited_tonic_channel_honours_the_upstreams_pushback() {
    let server = HttpLimitLayer::new(1)
        .policy(Policy::reject())
        .rejection(Rejection::service_unavailable().retry_after(RetryAfter::Seconds(30)));
    let server_limiter = server.limiter().clone();
    let probe = Probe::default();
    let addr = serve(server, probe.clone()).await;

    let client_layer = HttpLimitLayer::new(8)
        .policy(Policy::reject())
        .honor_retry_after(Duration::from_secs(60));
    let client_limiter = client_layer.limiter().clone();
    let limited = ServiceBuilder::new()
        .layer(client_layer)
        .service(channel(addr).await);
    let mut client = HealthClient::new(limited);

    let held = server_limiter.try_acquire().unwrap();
    let before = tokio::time::Instant::now();
    let pushed_back = guard("the server's refusal", client.check(check("ok")))
        .await
        .unwrap_err();
    assert_eq!(pushed_back.code(), Code::Unavailable);
    let until = client_limiter.held_until().expect("the client holds");
    assert!(until >= before + Duration::from_secs(30));
    drop(held);

    let refused = guard("the client's refusal", client.check(check("ok")))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable);
    assert!(refused.message().contains("held"), "{refused:?}");
    assert_eq!(probe.calls.load(SeqCst), 0, "nothing reached the server");
}

/// Records each sample's overload flag and lowers the limit by one on
/// each overload, from 10.
#[derive(Clone, Default)]
struct Samples(Arc<Mutex<Vec<bool>>>, usize);

impl LimitAlgorithm for Samples {
    fn initial_limit(&self) -> usize {
        10
    }

    fn update(&mut self, sample: &Sample) -> usize {
        self.0.lock().unwrap().push(sample.overload);
        self.1 += usize::from(sample.overload);
        10 - self.1
    }
}

/// The default classifier on a server: `UNAVAILABLE`, `RESOURCE_EXHAUSTED`
/// and `DEADLINE_EXCEEDED` (trailers-only) and `UNAVAILABLE` in the
/// trailers after a message are overload and lower the adaptive limit;
/// `NOT_FOUND` says nothing; `OK` (in the trailers) is a success.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_classifier_moves_an_adaptive_limit_on_grpc_overload() {
    let samples = Samples::default();
    let limiter = Limiter::adaptive(samples.clone());
    let addr = serve(
        HttpLimitLayer::from_limiter(limiter.clone()),
        Probe::default(),
    )
    .await;
    let mut client = HealthClient::new(channel(addr).await);
    let taken = || std::mem::take(&mut *samples.0.lock().unwrap());

    for (service, code) in [
        ("unavailable", Code::Unavailable),
        ("exhausted", Code::ResourceExhausted),
        ("deadline", Code::DeadlineExceeded),
        ("not-found", Code::NotFound),
    ] {
        let status = guard(service, client.check(check(service)))
            .await
            .unwrap_err();
        assert_eq!(status.code(), code);
    }
    eventually("three samples", || samples.0.lock().unwrap().len() == 3).await;
    assert_eq!(taken(), [true, true, true], "NOT_FOUND gave no sample");
    assert_eq!(limiter.limit(), 7);

    // The status in the trailers, after a message: taken at the body's end.
    let mut stream = guard("a watch", client.watch(check("unavailable")))
        .await
        .unwrap()
        .into_inner();
    guard("its message", stream.next()).await.unwrap().unwrap();
    let status = guard("its end", stream.next()).await.unwrap().unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    eventually("the trailers' sample", || {
        !samples.0.lock().unwrap().is_empty()
    })
    .await;
    assert_eq!(taken(), [true]);
    assert_eq!(limiter.limit(), 6);

    guard("ok", client.check(check("ok"))).await.unwrap();
    eventually("the success", || !samples.0.lock().unwrap().is_empty()).await;
    assert_eq!(taken(), [false]);
    assert_eq!(limiter.limit(), 6);
}
