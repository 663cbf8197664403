//! Adaptive limiters end to end: what each middleware records as a sample,
//! how the limit follows the algorithm, pinning, and the upstream
//! `Retry-After` hold. Timed parts run under paused tokio time.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::time::{sleep, Instant};
use tower::{service_fn, BoxError, ServiceBuilder, ServiceExt};
use tower_concurrency::adaptive::{LimitAlgorithm, Outcome, Sample};
use tower_concurrency::http_limit::HttpLimitLayer;
use tower_concurrency::{ConcurrencyLimitLayer, Limiter, Policy, Reason, Rejected};

/// An algorithm that remembers every sample (and every success `served`
/// to it, with the number of updates before it) and answers a scripted
/// limit.
#[derive(Clone)]
struct Script {
    samples: Arc<Mutex<Vec<Sample>>>,
    served: Arc<Mutex<Vec<(Sample, usize)>>>,
    answer: Arc<Mutex<usize>>,
}

impl Script {
    fn new(initial: usize) -> Self {
        Self {
            samples: Arc::default(),
            served: Arc::default(),
            answer: Arc::new(Mutex::new(initial)),
        }
    }

    fn answer(&self, limit: usize) {
        *self.answer.lock().unwrap() = limit;
    }

    fn samples(&self) -> Vec<Sample> {
        self.samples.lock().unwrap().clone()
    }
}

impl LimitAlgorithm for Script {
    fn initial_limit(&self) -> usize {
        *self.answer.lock().unwrap()
    }

    fn update(&mut self, sample: &Sample) -> usize {
        self.samples.lock().unwrap().push(*sample);
        *self.answer.lock().unwrap()
    }

    fn served(&mut self, sample: &Sample) {
        let updates = self.samples.lock().unwrap().len();
        self.served.lock().unwrap().push((*sample, updates));
    }
}

/// A success records the round-trip time from admission, the in-flight
/// count at admission, and moves the limit to the algorithm's answer.
#[tokio::test(start_paused = true)]
async fn core_layer_records_rtt_in_flight_and_applies_the_answer() {
    let script = Script::new(4);
    let limiter = Limiter::adaptive(script.clone());
    assert_eq!(limiter.limit(), 4);
    let svc = ServiceBuilder::new()
        .layer(ConcurrencyLimitLayer::from_limiter(limiter.clone()))
        .service(service_fn(|ms: u64| async move {
            sleep(Duration::from_millis(ms)).await;
            Ok::<_, Infallible>(ms)
        }));
    script.answer(7);
    let (a, b) = tokio::join!(svc.clone().oneshot(30), svc.clone().oneshot(50));
    assert_eq!((a.unwrap(), b.unwrap()), (30, 50));
    let samples = script.samples();
    assert_eq!(samples.len(), 2);
    assert_eq!(samples[0].rtt, Duration::from_millis(30));
    assert_eq!(samples[1].rtt, Duration::from_millis(50));
    assert_eq!(samples[0].in_flight, 1, "admitted first");
    assert_eq!(samples[1].in_flight, 2, "admitted second");
    assert!(samples.iter().all(|s| !s.overload));
    assert_eq!(limiter.limit(), 7);
}

/// An error is overload by default; a dropped response future records
/// nothing; a custom classifier decides otherwise.
#[tokio::test(start_paused = true)]
async fn errors_are_overload_cancellation_records_nothing_and_classifiers_decide() {
    let script = Script::new(2);
    let limiter = Limiter::adaptive(script.clone());
    let failing = service_fn(|fail: bool| async move {
        sleep(Duration::from_millis(10)).await;
        if fail {
            Err::<(), BoxError>("upstream timed out".into())
        } else {
            Ok(())
        }
    });
    let svc = ServiceBuilder::new()
        .layer(ConcurrencyLimitLayer::from_limiter(limiter.clone()))
        .service(failing);
    assert!(svc.clone().oneshot(true).await.is_err());
    assert!(script.samples()[0].overload);
    assert!(
        script.served.lock().unwrap().is_empty(),
        "an overload is not served"
    );
    svc.clone().oneshot(false).await.unwrap();
    assert_eq!(
        *script.served.lock().unwrap(),
        [(script.samples()[1], 1)],
        "a success is served once, just before its update"
    );

    let cancelled =
        tokio::time::timeout(Duration::from_millis(5), svc.clone().oneshot(false)).await;
    assert!(cancelled.is_err());
    assert_eq!(
        script.samples().len(),
        2,
        "a cancelled request is no sample"
    );
    assert_eq!(limiter.in_flight(), 0);

    let ignore_errors = |r: &Result<(), BoxError>| match r {
        Ok(()) => Outcome::Success,
        Err(_) => Outcome::Ignore,
    };
    let svc = ServiceBuilder::new()
        .layer(ConcurrencyLimitLayer::from_limiter(limiter.clone()).classifier(ignore_errors))
        .service(failing);
    assert!(svc.clone().oneshot(true).await.is_err());
    svc.oneshot(false).await.unwrap();
    let samples = script.samples();
    assert_eq!(samples.len(), 3, "the ignored error added nothing");
    assert!(!samples[2].overload);
}

/// The policy middleware records samples too; its own refusals are not
/// samples (no request ran).
#[tokio::test(start_paused = true)]
async fn policy_limit_records_samples_but_not_its_refusals() {
    let script = Script::new(1);
    let limiter = Limiter::adaptive(script.clone());
    let svc = ServiceBuilder::new()
        .layer(ConcurrencyLimitLayer::from_limiter(limiter.clone()).policy(Policy::reject()))
        .service(service_fn(|()| async {
            sleep(Duration::from_millis(20)).await;
            Ok::<_, BoxError>(())
        }));
    let (first, second) = tokio::join!(svc.clone().oneshot(()), async {
        tokio::task::yield_now().await;
        svc.clone().oneshot(()).await
    });
    first.unwrap();
    let refused = second.unwrap_err();
    assert_eq!(
        refused.downcast_ref::<Rejected>().unwrap().reason(),
        Reason::Full
    );
    let samples = script.samples();
    assert_eq!(samples.len(), 1);
    assert_eq!(samples[0].rtt, Duration::from_millis(20));
}

fn respond(status: StatusCode, retry_after: Option<&'static str>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(b"body")));
    *response.status_mut() = status;
    if let Some(value) = retry_after {
        response.headers_mut().insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static(value),
        );
    }
    response
}

/// HTTP: the sample is taken at the response head (the body may stream
/// for long after), 503 and 429 are overload, 404 and 500 say nothing.
#[tokio::test(start_paused = true)]
async fn http_layer_samples_at_the_head_and_classifies_by_status() {
    let script = Script::new(4);
    let limiter = Limiter::adaptive(script.clone());
    let svc = ServiceBuilder::new()
        .layer(HttpLimitLayer::from_limiter(limiter.clone()))
        .service(service_fn(|req: Request<()>| async move {
            sleep(Duration::from_millis(40)).await;
            let status = StatusCode::from_u16(req.uri().path()[1..].parse().unwrap()).unwrap();
            Ok::<_, Infallible>(respond(status, None))
        }));
    let call = |code: u16| {
        let svc = svc.clone();
        async move {
            let request = Request::get(format!("/{code}")).body(()).unwrap();
            svc.oneshot(request).await.unwrap()
        }
    };
    let ok = call(200).await;
    assert_eq!(script.samples().len(), 1, "recorded at the head");
    assert_eq!(script.samples()[0].rtt, Duration::from_millis(40));
    assert_eq!(limiter.in_flight(), 1, "the body still holds its permit");
    sleep(Duration::from_secs(1)).await;
    ok.into_body().collect().await.unwrap();
    assert_eq!(limiter.in_flight(), 0);
    assert_eq!(
        script.samples().len(),
        1,
        "the body's end is no second sample"
    );

    for code in [503, 429, 404, 500] {
        drop(call(code).await);
    }
    let overloads: Vec<bool> = script.samples().iter().map(|s| s.overload).collect();
    assert_eq!(
        overloads,
        vec![false, true, true],
        "404 and 500 are ignored"
    );
}

/// Pinning fixes the limit while the algorithm goes on learning; unpinning
/// moves to its latest answer. `set_limit` on an adaptive limiter pins.
#[tokio::test(start_paused = true)]
async fn pin_and_unpin() {
    let script = Script::new(3);
    let limiter = Limiter::adaptive(script.clone());
    let svc = ServiceBuilder::new()
        .layer(ConcurrencyLimitLayer::from_limiter(limiter.clone()))
        .service(service_fn(|()| async { Ok::<_, Infallible>(()) }));
    assert_eq!(limiter.set_limit(10), 3);
    assert!(limiter.is_pinned());
    script.answer(6);
    svc.clone().oneshot(()).await.unwrap();
    assert_eq!(limiter.limit(), 10, "pinned");
    assert_eq!(script.samples().len(), 1, "still learning");
    assert_eq!(limiter.unpin(), 10);
    assert_eq!(limiter.limit(), 6, "the latest answer");
    limiter.set_limit(2);
    assert!(limiter.is_pinned());
    svc.oneshot(()).await.unwrap();
    assert_eq!(limiter.limit(), 2);
}

/// Lowering by the algorithm with permits out is exact: no new admission
/// until in-flight falls under the new limit.
#[tokio::test(start_paused = true)]
async fn shrinking_with_permits_out_never_admits_above_the_new_limit() {
    let script = Script::new(4);
    let limiter = Limiter::adaptive(script.clone());
    let mut held: Vec<_> = (0..4).map(|_| limiter.try_acquire().unwrap()).collect();
    script.answer(2);
    held[0].record(Outcome::Success);
    assert_eq!(limiter.limit(), 2);
    assert_eq!(limiter.in_flight(), 4);
    held.truncate(2);
    assert!(limiter.try_acquire().is_none(), "2 out, limit 2");
    held.pop();
    let again = limiter.try_acquire().expect("1 out, limit 2");
    assert!(limiter.try_acquire().is_none());
    drop((held, again));
    assert_eq!(limiter.available(), 2);
}

/// A client that honours `Retry-After`: after an upstream 503 with
/// `Retry-After: 3`, new requests are held for 3 s (refused with `Held`
/// under a reject policy, queued ones wait it out), capped by the maximum.
#[tokio::test(start_paused = true)]
async fn upstream_retry_after_holds_new_admissions() {
    let upstream = service_fn(|req: Request<()>| async move {
        let response = match req.uri().path() {
            "/busy" => respond(StatusCode::SERVICE_UNAVAILABLE, Some("3")),
            "/forever" => respond(StatusCode::TOO_MANY_REQUESTS, Some("86400")),
            _ => respond(StatusCode::OK, None),
        };
        Ok::<_, Infallible>(response)
    });
    let get = |path: &str| Request::get(path).body(()).unwrap();

    let layer = HttpLimitLayer::new(4)
        .policy(Policy::reject())
        .honor_retry_after(Duration::from_secs(60));
    let limiter = layer.limiter().clone();
    let client = ServiceBuilder::new().layer(layer).service(upstream);
    let busy = client.clone().oneshot(get("/busy")).await.unwrap();
    assert_eq!(busy.status(), StatusCode::SERVICE_UNAVAILABLE);
    drop(busy);
    let start = Instant::now();
    assert_eq!(limiter.held_until(), Some(start + Duration::from_secs(3)));
    let refused = client.clone().oneshot(get("/ok")).await.unwrap();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        refused.extensions().get::<Rejected>().unwrap().reason(),
        Reason::Held
    );
    sleep(Duration::from_secs(3)).await;
    assert_eq!(limiter.held_until(), None);
    assert_eq!(
        client.clone().oneshot(get("/ok")).await.unwrap().status(),
        StatusCode::OK
    );

    // A queued request waits the hold out, then goes.
    let layer = HttpLimitLayer::new(4)
        .policy(Policy::fifo(8))
        .honor_retry_after(Duration::from_secs(60));
    let client = ServiceBuilder::new().layer(layer).service(upstream);
    drop(client.clone().oneshot(get("/busy")).await.unwrap());
    let start = Instant::now();
    let ok = client.clone().oneshot(get("/ok")).await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(start.elapsed(), Duration::from_secs(3));

    // A huge Retry-After is capped; without honor_retry_after nothing holds.
    let layer = HttpLimitLayer::new(4).honor_retry_after(Duration::from_secs(10));
    let limiter = layer.limiter().clone();
    let client = ServiceBuilder::new().layer(layer).service(upstream);
    drop(client.oneshot(get("/forever")).await.unwrap());
    assert_eq!(
        limiter.held_until(),
        Some(Instant::now() + Duration::from_secs(10))
    );
    let layer = HttpLimitLayer::new(4);
    let limiter = layer.limiter().clone();
    let client = ServiceBuilder::new().layer(layer).service(upstream);
    drop(client.oneshot(get("/busy")).await.unwrap());
    assert_eq!(limiter.held_until(), None);
}

/// While held, the core (poll_ready) service waits the hold out too.
#[tokio::test(start_paused = true)]
async fn core_service_waits_out_a_hold() {
    let limiter = Limiter::new(2);
    let svc = ServiceBuilder::new()
        .layer(ConcurrencyLimitLayer::from_limiter(limiter.clone()))
        .service(service_fn(|()| async { Ok::<_, Infallible>(()) }));
    let start = Instant::now();
    limiter.hold_until(start + Duration::from_millis(700));
    svc.oneshot(()).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_millis(700));
    assert_eq!(limiter.waiting(), 0);
}
