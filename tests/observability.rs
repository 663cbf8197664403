//! Observability: `tracing` events, metrics through the `metrics` facade,
//! and `tower::load::Load` for the services. Each part needs its feature:
//! run with `cargo test --all-features --test observability`.

use tower_concurrency::Limiter;

/// An adaptive algorithm for tests: starts at `start`, and every sample
/// raises the limit by one.
#[cfg(any(feature = "metrics", feature = "tracing"))]
struct Step(usize);

#[cfg(any(feature = "metrics", feature = "tracing"))]
impl tower_concurrency::adaptive::LimitAlgorithm for Step {
    fn initial_limit(&self) -> usize {
        self.0
    }

    fn update(&mut self, _: &tower_concurrency::adaptive::Sample) -> usize {
        self.0 += 1;
        self.0
    }
}

/// An algorithm whose answer never moves.
#[cfg(feature = "tracing")]
struct Still(usize);

#[cfg(feature = "tracing")]
impl tower_concurrency::adaptive::LimitAlgorithm for Still {
    fn initial_limit(&self) -> usize {
        self.0
    }

    fn update(&mut self, _: &tower_concurrency::adaptive::Sample) -> usize {
        self.0
    }
}

#[cfg(any(feature = "metrics", feature = "load"))]
fn echo(
) -> impl tower::Service<u32, Response = u32, Error = std::convert::Infallible, Future: Send> + Clone
{
    tower::service_fn(|n: u32| async move { Ok::<_, std::convert::Infallible>(n) })
}

/// Naming is the same with or without features.
#[test]
fn a_limiter_is_named_once() {
    assert_eq!(Limiter::new(1).name(), "default");
    let limiter = Limiter::new(1).named("api");
    assert_eq!(limiter.name(), "api");
    assert_eq!(limiter.clone().name(), "api", "clones share the name");
    assert!(format!("{limiter:?}").contains("name: \"api\""));
    // The first name stays; a second call changes nothing and never panics.
    let twice = Limiter::new(1).named("a").named("b");
    assert_eq!(twice.name(), "a");
    assert_eq!(Limiter::new(1).named(String::from("owned")).name(), "owned");
}

#[cfg(all(feature = "metrics", feature = "http"))]
mod metrics {
    use std::convert::Infallible;
    use std::time::Duration;

    use bytes::Bytes;
    use http::{Request, Response, StatusCode};
    use http_body_util::Full;
    use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
    use tower::{service_fn, Layer, ServiceExt};
    use tower_concurrency::adaptive::Outcome;
    use tower_concurrency::http_limit::HttpLimitLayer;
    use tower_concurrency::{ConcurrencyLimit, Limiter, Policy, Reason, Rejected};

    use super::{echo, Step};

    /// One snapshot of a debugging recorder, looked up by name and labels.
    /// (Taking a snapshot resets the recorder's values: take one per test.)
    struct Snapshot(Vec<(String, Labels, DebugValue)>);

    type Labels = Vec<(String, String)>;

    impl Snapshot {
        fn take(snapshotter: &Snapshotter) -> Self {
            let entries = snapshotter.snapshot().into_vec();
            Self(
                entries
                    .into_iter()
                    .map(|(key, _, _, value)| {
                        let key = key.key();
                        let labels = key
                            .labels()
                            .map(|l| (l.key().to_owned(), l.value().to_owned()))
                            .collect();
                        (key.name().to_owned(), labels, value)
                    })
                    .collect(),
            )
        }

        fn get(&self, name: &str, labels: &[(&str, &str)]) -> &DebugValue {
            let found = self.0.iter().find(|(n, l, _)| {
                n == name
                    && l.len() == labels.len()
                    && labels
                        .iter()
                        .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
            });
            match found {
                Some((_, _, value)) => value,
                None => panic!("no metric {name} {labels:?} in {:#?}", self.0),
            }
        }

        fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
            match self.get(name, labels) {
                DebugValue::Counter(n) => *n,
                other => panic!("{name} is not a counter: {other:?}"),
            }
        }

        fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
            match self.get(name, labels) {
                DebugValue::Gauge(v) => v.0,
                other => panic!("{name} is not a gauge: {other:?}"),
            }
        }

        fn histogram(&self, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
            match self.get(name, labels) {
                DebugValue::Histogram(v) => v.iter().map(|x| x.0).collect(),
                other => panic!("{name} is not a histogram: {other:?}"),
            }
        }

        fn rejected(&self, limiter: &str, reason: &str) -> u64 {
            self.counter(
                "tower_concurrency_rejected_total",
                &[("limiter", limiter), ("reason", reason)],
            )
        }
    }

    fn get(path: &str, client: Option<&str>, priority: &str) -> Request<()> {
        let mut request = Request::get(path).header("x-priority", priority);
        if let Some(client) = client {
            request = request.header("x-client", client);
        }
        request.body(()).unwrap()
    }

    fn reason<B>(response: &Response<B>) -> Reason {
        response.extensions().get::<Rejected>().unwrap().reason()
    }

    /// A scripted sequence through the HTTP layer: every counter and gauge
    /// ends at exactly what happened.
    #[tokio::test(start_paused = true)]
    async fn http_layer_reports_exact_counts() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let (limiter, [live, batch]) = ::metrics::with_local_recorder(&recorder, || {
            Limiter::new(2)
                .named("scripted")
                .partitioned([("live", 0.5), ("batch", 0.5)])
                .unwrap()
        });
        let (live, batch) = (Some(live), Some(batch));
        let layer = HttpLimitLayer::from_limiter(limiter.clone())
            .policy(Policy::fifo(1).timeout(Duration::from_millis(50)))
            .bypass(|head| head.uri.path() == "/health")
            .partition_by(move |head| match head.header("x-priority") {
                Some("batch") => batch,
                _ => live,
            })
            .limit_per_key(
                tower_concurrency::http_limit::KeyLimit::new(1).max_keys(2),
                |head| head.header("x-client").map(str::to_owned),
            );
        let svc = layer.layer(service_fn(|_: Request<()>| async {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
        }));
        let call = |request| svc.clone().oneshot(request);

        // 3 bypassed.
        for _ in 0..3 {
            let health = call(get("/health", None, "live")).await.unwrap();
            assert_eq!(health.status(), StatusCode::OK);
        }
        // a: admitted at once; its body holds the permit.
        let a = call(get("/", Some("a"), "live")).await.unwrap();
        assert!(a.body().has_permit());
        // a again: its key is full.
        let a_again = call(get("/", Some("a"), "live")).await.unwrap();
        assert_eq!(a_again.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(reason(&a_again), Reason::KeyFull);
        // b: admitted at once, batch; the limit of 2 is now full.
        let b = call(get("/", Some("b"), "batch")).await.unwrap();
        assert!(b.body().has_permit());
        // c: a third key, past the 2 tracked.
        let c = call(get("/", Some("c"), "live")).await.unwrap();
        assert_eq!(reason(&c), Reason::TooManyKeys);
        // e waits in the queue of 1, f finds it full, e times out.
        let e = tokio::spawn(call(get("/", None, "live")));
        tokio::task::yield_now().await;
        assert_eq!(limiter.waiting(), 1);
        let f = call(get("/", None, "live")).await.unwrap();
        assert_eq!(reason(&f), Reason::QueueFull);
        let e = e.await.unwrap().unwrap();
        assert_eq!(reason(&e), Reason::TimedOut);
        // g waits 10 ms, until a's body is dropped.
        let g = tokio::spawn(call(get("/", None, "batch")));
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(10)).await;
        drop(a);
        let g = g.await.unwrap().unwrap();
        assert!(g.body().has_permit());
        // An operator raises the limit.
        limiter.set_limit(4);

        let s = Snapshot::take(&snapshotter);
        let name = [("limiter", "scripted")];
        assert_eq!(s.counter("tower_concurrency_admitted_total", &name), 3);
        assert_eq!(s.counter("tower_concurrency_bypassed_total", &name), 3);
        assert_eq!(s.rejected("scripted", "key_full"), 1);
        assert_eq!(s.rejected("scripted", "too_many_keys"), 1);
        assert_eq!(s.rejected("scripted", "queue_full"), 1);
        assert_eq!(s.rejected("scripted", "timed_out"), 1);
        assert_eq!(s.rejected("scripted", "full"), 0);
        assert_eq!(s.rejected("scripted", "held"), 0);
        assert_eq!(s.gauge("tower_concurrency_limit", &name), 4.0);
        assert_eq!(s.gauge("tower_concurrency_in_flight", &name), 2.0);
        assert_eq!(s.gauge("tower_concurrency_waiting", &name), 0.0);
        assert_eq!(
            s.histogram("tower_concurrency_wait_seconds", &name),
            [0.01],
            "only g waited, and was admitted"
        );
        let part = |p| [("limiter", "scripted"), ("partition", p)];
        assert_eq!(
            s.gauge("tower_concurrency_partition_in_flight", &part("live")),
            0.0
        );
        assert_eq!(
            s.gauge("tower_concurrency_partition_in_flight", &part("batch")),
            2.0
        );
        assert_eq!(
            s.gauge("tower_concurrency_partition_guaranteed", &part("live")),
            2.0
        );
        assert_eq!(
            s.gauge("tower_concurrency_partition_guaranteed", &part("batch")),
            2.0
        );
        // The limiter's own counts agree.
        assert_eq!(
            (limiter.in_flight(), limiter.waiting(), limiter.bypassed()),
            (2, 0, 3)
        );
        drop((b, g));
        assert_eq!(limiter.in_flight(), 0);
    }

    /// `ConcurrencyLimit` waits in `poll_ready`; that wait is timed too.
    #[tokio::test(start_paused = true)]
    async fn poll_ready_waits_are_counted_and_timed() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let limiter = ::metrics::with_local_recorder(&recorder, || Limiter::new(1).named("poll"));
        let svc = ConcurrencyLimit::from_limiter(echo(), limiter.clone());

        let held = limiter.try_acquire().unwrap();
        let waiter = tokio::spawn(svc.clone().oneshot(7));
        tokio::task::yield_now().await;
        assert_eq!(limiter.waiting(), 1);
        tokio::time::sleep(Duration::from_millis(5)).await;
        drop(held);
        assert_eq!(waiter.await.unwrap().unwrap(), 7);
        drop(limiter.acquire(&Policy::wait()).await);
        limiter.set_limit(3);

        let s = Snapshot::take(&snapshotter);
        let name = [("limiter", "poll")];
        assert_eq!(s.counter("tower_concurrency_admitted_total", &name), 3);
        assert_eq!(
            s.histogram("tower_concurrency_wait_seconds", &name),
            [0.005]
        );
        assert_eq!(s.gauge("tower_concurrency_in_flight", &name), 0.0);
        assert_eq!(s.gauge("tower_concurrency_waiting", &name), 0.0);
        assert_eq!(s.gauge("tower_concurrency_limit", &name), 3.0);
        for reason in [
            "full",
            "queue_full",
            "timed_out",
            "held",
            "key_full",
            "too_many_keys",
        ] {
            assert_eq!(s.rejected("poll", reason), 0, "{reason}");
        }
    }

    /// Policy refusals, and the gauges while requests are held and queued.
    #[tokio::test(start_paused = true)]
    async fn gauges_follow_permits_and_the_queue() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let limiter = ::metrics::with_local_recorder(&recorder, || Limiter::new(2).named("gauges"));
        let one = limiter.acquire(&Policy::reject()).await.unwrap();
        let two = limiter.acquire(&Policy::reject()).await.unwrap();
        for _ in 0..4 {
            let refused = limiter.acquire(&Policy::reject()).await.unwrap_err();
            assert_eq!(refused.reason(), Reason::Full);
        }
        let queued = tokio::spawn({
            let limiter = limiter.clone();
            async move { limiter.acquire(&Policy::fifo(10)).await.map(drop) }
        });
        let acquiring = tokio::spawn({
            let limiter = limiter.clone();
            async move { drop(limiter.acquire(&Policy::wait()).await) }
        });
        tokio::task::yield_now().await;
        assert_eq!((limiter.in_flight(), limiter.waiting()), (2, 2));

        let s = Snapshot::take(&snapshotter);
        let name = [("limiter", "gauges")];
        assert_eq!(s.gauge("tower_concurrency_in_flight", &name), 2.0);
        assert_eq!(s.gauge("tower_concurrency_waiting", &name), 2.0);
        assert_eq!(s.counter("tower_concurrency_admitted_total", &name), 2);
        assert_eq!(s.rejected("gauges", "full"), 4);
        drop((one, two, queued, acquiring));
    }

    /// The limit gauge follows an adaptive limit, pins and unpins.
    #[test]
    fn the_limit_gauge_follows_every_move() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let limiter = ::metrics::with_local_recorder(&recorder, || {
            Limiter::adaptive(Step(4)).named("moving")
        });
        let mut permit = limiter.try_acquire().unwrap();
        permit.record(Outcome::Success); // the algorithm: 5
        assert_eq!(limiter.limit(), 5);
        drop(permit);
        limiter.set_limit(2);
        let mut permit = limiter.try_acquire().unwrap();
        permit.record(Outcome::Success); // learned 6, not applied
        assert_eq!(limiter.limit(), 2);
        assert_eq!(limiter.unpin(), 2);
        assert_eq!(limiter.limit(), 6);
        drop(permit);

        let s = Snapshot::take(&snapshotter);
        let name = [("limiter", "moving")];
        assert_eq!(s.gauge("tower_concurrency_limit", &name), 6.0);
        assert_eq!(s.counter("tower_concurrency_admitted_total", &name), 2);
        assert_eq!(s.gauge("tower_concurrency_in_flight", &name), 0.0);
    }

    /// An unnamed limiter registers as "default" at its first event, and
    /// keeps that name: naming it later changes nothing and never panics.
    #[test]
    fn an_unnamed_limiter_reports_as_default() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let (limiter, permit) = ::metrics::with_local_recorder(&recorder, || {
            let limiter = Limiter::new(3);
            let permit = limiter.try_acquire().unwrap();
            (limiter, permit)
        });
        let clone = limiter.clone();
        let late = clone.named("late");
        assert_eq!(late.name(), "default", "the name it reports under stays");

        let s = Snapshot::take(&snapshotter);
        let name = [("limiter", "default")];
        assert_eq!(s.counter("tower_concurrency_admitted_total", &name), 1);
        assert_eq!(s.gauge("tower_concurrency_in_flight", &name), 1.0);
        assert_eq!(s.gauge("tower_concurrency_limit", &name), 3.0);
        drop(permit);
    }

    /// Partitions made after naming get their gauges then.
    #[test]
    fn partitions_after_naming_are_reported() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let (limiter, [a, _]) = ::metrics::with_local_recorder(&recorder, || {
            Limiter::new(10)
                .named("late-partitions")
                .partitioned([("a", 0.7), ("b", 0.3)])
                .unwrap()
        });
        let a = Some(a);
        let held = limiter.acquire_in(&Policy::reject(), a);
        let held = futures::executor::block_on(held).unwrap();
        let s = Snapshot::take(&snapshotter);
        let part = |p| [("limiter", "late-partitions"), ("partition", p)];
        assert_eq!(
            s.gauge("tower_concurrency_partition_guaranteed", &part("a")),
            7.0
        );
        assert_eq!(
            s.gauge("tower_concurrency_partition_guaranteed", &part("b")),
            3.0
        );
        assert_eq!(
            s.gauge("tower_concurrency_partition_in_flight", &part("a")),
            1.0
        );
        drop(held);
    }
}

#[cfg(feature = "tracing")]
mod tracing_events {
    use std::collections::BTreeMap;
    use std::fmt::Debug;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use tower_concurrency::adaptive::Outcome;
    use tower_concurrency::{Limiter, Policy};
    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Event, Level, Metadata, Subscriber};

    use super::{Step, Still};

    /// One event: its level, message and other fields.
    #[derive(Debug, Clone)]
    struct Seen {
        level: Level,
        message: String,
        fields: BTreeMap<String, String>,
    }

    impl Seen {
        fn field(&self, name: &str) -> &str {
            self.fields
                .get(name)
                .unwrap_or_else(|| panic!("no field {name} in {self:?}"))
        }
    }

    /// A subscriber that keeps the events of target `tower_concurrency`.
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<Seen>>>);

    impl Capture {
        fn take(&self) -> Vec<Seen> {
            std::mem::take(&mut self.0.lock().unwrap())
        }

        fn at_least(&self, level: Level) -> Vec<Seen> {
            self.take()
                .into_iter()
                .filter(|e| e.level <= level)
                .collect()
        }
    }

    struct Fields<'a>(&'a mut BTreeMap<String, String>);

    impl Visit for Fields<'_> {
        fn record_str(&mut self, field: &Field, value: &str) {
            self.0.insert(field.name().to_owned(), value.to_owned());
        }

        fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
            self.0.insert(field.name().to_owned(), format!("{value:?}"));
        }
    }

    impl Subscriber for Capture {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }

        fn new_span(&self, _: &Attributes<'_>) -> Id {
            Id::from_u64(1)
        }

        fn record(&self, _: &Id, _: &Record<'_>) {}

        fn record_follows_from(&self, _: &Id, _: &Id) {}

        fn event(&self, event: &Event<'_>) {
            if event.metadata().target() != "tower_concurrency" {
                return;
            }
            let mut fields = BTreeMap::new();
            event.record(&mut Fields(&mut fields));
            let message = fields.remove("message").unwrap_or_default();
            self.0.lock().unwrap().push(Seen {
                level: *event.metadata().level(),
                message,
                fields,
            });
        }

        fn enter(&self, _: &Id) {}

        fn exit(&self, _: &Id) {}
    }

    fn capture() -> (Capture, tracing::subscriber::DefaultGuard) {
        let capture = Capture::default();
        let guard = tracing::subscriber::set_default(capture.clone());
        (capture, guard)
    }

    #[tokio::test(start_paused = true)]
    async fn the_fast_path_logs_only_at_trace() {
        let (events, _guard) = capture();
        let limiter = Limiter::new(2).named("fast");
        let permit = limiter.try_acquire().unwrap();
        let admitted = limiter.acquire(&Policy::reject()).await.unwrap();
        drop((permit, admitted));
        let all = events.take();
        assert_eq!(all.len(), 2, "{all:?}");
        for event in all {
            assert_eq!(event.level, Level::TRACE);
            assert_eq!(event.message, "permit acquired without waiting");
            assert_eq!(event.field("limiter"), "fast");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_is_logged_with_its_length() {
        let (events, _guard) = capture();
        let limiter = Limiter::new(1).named("waits");
        let held = limiter.try_acquire().unwrap();
        let waiter = tokio::spawn({
            let limiter = limiter.clone();
            async move { drop(limiter.acquire(&Policy::wait()).await) }
        });
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(30)).await;
        drop(held);
        waiter.await.unwrap();
        let events = events.at_least(Level::DEBUG);
        assert_eq!(events.len(), 1, "{events:?}");
        let event = &events[0];
        assert_eq!(event.level, Level::DEBUG);
        assert_eq!(event.message, "permit acquired after waiting");
        assert_eq!(event.field("limiter"), "waits");
        assert_eq!(event.field("waited"), "30ms");
        assert_eq!(event.field("limit"), "1");
    }

    #[tokio::test(start_paused = true)]
    async fn refusals_name_their_reason_and_scope() {
        let (events, _guard) = capture();
        let limiter = Limiter::new(1).named("refusals");
        let held = limiter.try_acquire().unwrap();
        limiter.acquire(&Policy::reject()).await.unwrap_err();
        limiter
            .acquire(&Policy::fifo(1).timeout(Duration::from_millis(20)))
            .await
            .unwrap_err();
        drop(held);
        let events = events.at_least(Level::DEBUG);
        assert_eq!(events.len(), 2, "{events:?}");
        let (full, timed_out) = (&events[0], &events[1]);
        assert_eq!(full.message, "request rejected");
        assert_eq!(full.level, Level::DEBUG);
        assert_eq!(full.field("reason"), "full");
        assert_eq!(full.field("scope"), "service");
        assert_eq!(full.field("limit"), "1");
        assert_eq!(timed_out.field("reason"), "timed_out");
        assert_eq!(timed_out.field("waited"), "20ms");
    }

    #[cfg(feature = "http")]
    #[tokio::test]
    async fn a_full_key_is_logged_with_the_key_scope() {
        use tower::{service_fn, Layer, ServiceExt};
        use tower_concurrency::http_limit::HttpLimitLayer;

        let (events, _guard) = capture();
        let layer = HttpLimitLayer::from_limiter(Limiter::new(10).named("keys")).limit_per_key(
            tower_concurrency::http_limit::KeyLimit::new(1).max_keys(10),
            |head| head.header("x-client").map(str::to_owned),
        );
        let svc = layer.layer(service_fn(|_: http::Request<()>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Empty::<
                bytes::Bytes,
            >::new()))
        }));
        let request = || {
            http::Request::get("/")
                .header("x-client", "me")
                .body(())
                .unwrap()
        };
        let first = svc.clone().oneshot(request()).await.unwrap();
        let second = svc.clone().oneshot(request()).await.unwrap();
        assert_eq!(second.status(), http::StatusCode::TOO_MANY_REQUESTS);
        drop(first);
        let events = events.at_least(Level::DEBUG);
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0].field("reason"), "key_full");
        assert_eq!(events[0].field("scope"), "key");
        assert_eq!(events[0].field("limiter"), "keys");
    }

    #[test]
    fn operator_moves_are_info_and_algorithm_moves_debug() {
        let (events, _guard) = capture();
        let fixed = Limiter::new(4).named("fixed");
        fixed.set_limit(8);
        fixed.try_set_limit(8).unwrap(); // the same value: still an action
        let adaptive = Limiter::adaptive(Step(4)).named("adaptive");
        adaptive.try_acquire().unwrap().record(Outcome::Success); // 4 -> 5
        adaptive.set_limit(2);
        adaptive.unpin(); // back to 5
        let still = Limiter::adaptive(Still(3)).named("still");
        still.try_acquire().unwrap().record(Outcome::Success); // 3 -> 3: silent

        let moves: Vec<_> = events
            .at_least(Level::DEBUG)
            .into_iter()
            .map(|e| {
                (
                    e.level,
                    e.field("limiter").to_owned(),
                    e.field("cause").to_owned(),
                    e.field("old").to_owned(),
                    e.field("new").to_owned(),
                )
            })
            .collect();
        let expected = [
            (Level::INFO, "fixed", "set_limit", "4", "8"),
            (Level::INFO, "fixed", "set_limit", "8", "8"),
            (Level::DEBUG, "adaptive", "algorithm", "4", "5"),
            (Level::INFO, "adaptive", "set_limit", "5", "2"),
            (Level::INFO, "adaptive", "unpin", "2", "5"),
        ]
        .map(|(level, limiter, cause, old, new)| {
            (
                level,
                limiter.to_owned(),
                cause.to_owned(),
                old.to_owned(),
                new.to_owned(),
            )
        });
        assert_eq!(moves, expected);
    }
}

#[cfg(feature = "load")]
mod load {
    use std::convert::Infallible;

    use tower::balance::p2c::Balance;
    use tower::discover::ServiceList;
    use tower::load::Load;
    use tower::{service_fn, Service, ServiceExt};
    use tower_concurrency::{
        ConcurrencyLimit, ConcurrencyLimitLayer, Limiter, Policy, PolicyLimit,
    };

    use super::echo;

    #[tokio::test]
    async fn load_is_demand_per_permit() {
        let small = ConcurrencyLimit::new(echo(), 2);
        let big = ConcurrencyLimit::new(echo(), 10);
        assert_eq!((small.load(), big.load()), (0.0, 0.0));
        let held: Vec<_> = (0..2)
            .map(|_| small.limiter().try_acquire().unwrap())
            .collect();
        let held_big: Vec<_> = (0..3)
            .map(|_| big.limiter().try_acquire().unwrap())
            .collect();
        assert_eq!(small.load(), 1.0);
        assert_eq!(big.load(), 0.3);
        assert!(big.load() < small.load());
        // A waiter pushes a full limit past 1.
        let limiter = small.limiter().clone();
        let waiter = tokio::spawn(async move { drop(limiter.acquire(&Policy::wait()).await) });
        tokio::task::yield_now().await;
        assert_eq!(small.load(), 1.5);
        drop(held);
        waiter.await.unwrap();
        assert_eq!(small.load(), 0.0);
        drop(held_big);
    }

    #[cfg(feature = "http")]
    #[test]
    fn every_service_reports_its_limiters_load() {
        use tower::Layer;
        use tower_concurrency::http_limit::HttpLimitLayer;

        let limiter = Limiter::new(4);
        let _held = limiter.try_acquire().unwrap();
        let http = HttpLimitLayer::from_limiter(limiter.clone()).layer(service_fn(
            |_: http::Request<()>| async {
                Ok::<_, Infallible>(http::Response::new(
                    http_body_util::Empty::<bytes::Bytes>::new(),
                ))
            },
        ));
        let policy = PolicyLimit::new(echo(), limiter.clone(), Policy::reject());
        let plain = ConcurrencyLimitLayer::from_limiter(limiter).layer(echo());
        assert_eq!(http.load(), 0.25);
        assert_eq!(policy.load(), 0.25);
        assert_eq!(plain.load(), 0.25);
    }

    /// tower's power-of-two-choices balancer over two limited backends
    /// sends each request to the one with less demand per permit.
    #[tokio::test]
    async fn p2c_balances_by_load() {
        let (small, big) = (Limiter::new(2), Limiter::new(8));
        let backends = vec![
            PolicyLimit::new(echo(), small.clone(), Policy::wait()),
            PolicyLimit::new(echo(), big.clone(), Policy::wait()),
        ];
        let mut balance = Balance::new(ServiceList::new(backends));
        // PolicyLimit admits in `call` when a permit is free, so each
        // request holds its permit until its future is dropped.
        let mut pending = Vec::new();
        for n in 0..5 {
            pending.push(balance.ready().await.unwrap().call(n));
        }
        assert_eq!((small.in_flight(), big.in_flight()), (1, 4));
        for n in 5..10 {
            pending.push(balance.ready().await.unwrap().call(n));
        }
        // small at 2/2, big at 8/8: both full.
        assert_eq!((small.in_flight(), big.in_flight()), (2, 8));
        let mut answers = Vec::new();
        for call in pending {
            answers.push(call.await.unwrap());
        }
        assert_eq!(answers, (0..10).collect::<Vec<_>>());
        assert_eq!((small.in_flight(), big.in_flight()), (0, 0));
    }
}
