//! A tonic server with one limit for the whole app, across every
//! connection and every service, and a tonic client that honours the
//! server's pushback.
//!
//! tonic itself offers only `concurrency_limit_per_connection`: a server
//! with 1,000 clients each allowed 32 calls has no bound at all.
//! `Server::builder().layer(HttpLimitLayer::new(n))` puts one limit in
//! front of all of them. A refused call is answered as gRPC, with no
//! configuration: `UNAVAILABLE` (or `RESOURCE_EXHAUSTED`, see
//! `Rejection::grpc_status`), a message saying why, and
//! `grpc-retry-pushback-ms`.
//!
//! The example serves the standard gRPC health service on 127.0.0.1 (a port
//! the OS picks) with a limit of 2 that refuses at once, fills the limit by
//! hand, shows a client's call refused with `UNAVAILABLE`, then a client
//! whose `Channel` sits in its own layer with `honor_retry_after`: after
//! the server's pushback it holds its own calls instead of sending them.
//!
//! Run it with `cargo run --example grpc`; it needs no network and exits at
//! once.

use std::time::Duration;

use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Server};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tower::ServiceBuilder;
use tower_concurrency::http_limit::{HttpLimitLayer, Rejection, RetryAfter};
use tower_concurrency::Policy;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The server: one limit for every connection and every service.
    let limit = HttpLimitLayer::new(2)
        .policy(Policy::reject())
        .rejection(Rejection::service_unavailable().retry_after(RetryAfter::Seconds(5)));
    let limiter = limit.limiter().clone();
    let (_reporter, health) = tonic_health::server::health_reporter();
    let incoming = TcpIncoming::bind(([127, 0, 0, 1], 0).into())?;
    let addr = incoming.local_addr()?;
    tokio::spawn(
        Server::builder()
            .layer(limit)
            .add_service(health)
            .serve_with_incoming(incoming),
    );
    println!("serving gRPC health on {addr}, limit {}", limiter.limit());

    let channel = Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let overall = || HealthCheckRequest {
        service: String::new(),
    };

    let mut plain = HealthClient::new(channel.clone());
    let answer = plain.check(overall()).await?;
    println!("check: {:?}", answer.get_ref().status());

    // Two long calls elsewhere hold both permits.
    let held = [limiter.try_acquire(), limiter.try_acquire()];
    let refused = plain.check(overall()).await.unwrap_err();
    println!(
        "while full: {:?} \"{}\", pushback {:?} ms",
        refused.code(),
        refused.message(),
        refused.metadata().get("grpc-retry-pushback-ms")
    );
    assert_eq!(refused.code(), tonic::Code::Unavailable);

    // A client that honours the pushback: after the refusal it holds its
    // own new calls for the 5 s the server asked (at most 30 s).
    let client_limit = HttpLimitLayer::new(16)
        .policy(Policy::reject())
        .honor_retry_after(Duration::from_secs(30));
    let client_limiter = client_limit.limiter().clone();
    let mut polite = HealthClient::new(ServiceBuilder::new().layer(client_limit).service(channel));
    let refused = polite.check(overall()).await.unwrap_err();
    println!("polite client, refused by the server: {:?}", refused.code());
    drop(held);
    let held_back = polite.check(overall()).await.unwrap_err();
    println!(
        "polite client, its next call held back locally for {:?}: \"{}\"",
        client_limiter
            .held_until()
            .map(|until| until - tokio::time::Instant::now()),
        held_back.message()
    );
    assert!(held_back.message().contains("held"));

    let answer = plain.check(overall()).await?;
    println!(
        "check once a permit is free: {:?}",
        answer.get_ref().status()
    );
    Ok(())
}
