//! The fleet when Redis misbehaves — delayed, stalled, reset or
//! black-holed by a TCP proxy in the test — and bad input. Skipped loudly
//! without `redis-server` on PATH, failed instead with `TC_REQUIRE_REDIS=1`.

mod fleet_support;

use std::time::{Duration, Instant};

use fleet_support::proxy::{Fault, Proxy};
use fleet_support::redis::{free_port, redis_or_skip, RedisServer};
use tower_concurrency::fleet::{Fleet, FleetError, Mode, Status};
use tower_concurrency::{Permit, Policy};

const TTL: Duration = Duration::from_millis(600);
const CALL: Duration = Duration::from_millis(100);

async fn fleet(url: &str, name: &str, limit: usize, mode: Mode) -> Fleet {
    Fleet::builder(name, limit)
        .ttl(TTL)
        .call_timeout(CALL)
        .mode(mode)
        .connect(url)
        .await
        .expect("joins")
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until every fleet is leasing and none of their store calls failed
/// for a whole lease TTL (three renewals): each is answered again, not
/// just living on a lease that is still valid.
async fn answered_again(fleets: &[&Fleet]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let errors: Vec<u64> = fleets.iter().map(|f| f.stats().store_errors).collect();
        tokio::time::sleep(TTL).await;
        let leasing = fleets.iter().all(|f| f.stats().status == Status::Leasing);
        let quiet = fleets
            .iter()
            .zip(&errors)
            .all(|(f, e)| f.stats().store_errors == *e);
        if leasing && quiet {
            return;
        }
        assert!(Instant::now() < deadline, "gave up waiting for answers");
    }
}

/// Takes every permit `fleet` can get now, waiting at most `wait` each.
async fn take_all(fleet: &Fleet, max: usize, wait: Duration) -> Vec<Permit> {
    let limiter = fleet.limiter();
    let mut permits = Vec::new();
    let policy = Policy::fifo(100).timeout(wait);
    for _ in 0..max {
        match limiter.acquire(&policy).await {
            Ok(p) => permits.push(p),
            Err(_) => break,
        }
    }
    permits
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_delayed_stalled_reset_and_black_holed() {
    let Some(redis) = redis_or_skip("redis_delayed_stalled_reset_and_black_holed") else {
        return;
    };
    let proxy = Proxy::start(([127, 0, 0, 1], redis.port()).into()).await;
    let limit = 4;
    let a = fleet(&proxy.url(), "faults", limit, Mode::LocalShare).await;
    let b = fleet(&proxy.url(), "faults", limit, Mode::LocalShare).await;
    let policy_timeout = Duration::from_millis(200);

    // A delay below the call timeout changes nothing.
    proxy.set(Fault::Delay(Duration::from_millis(20)));
    let held_a = take_all(&a, 3, Duration::from_secs(5)).await;
    let held_b = take_all(&b, 3, Duration::from_millis(500)).await;
    assert_eq!(
        held_a.len() + held_b.len(),
        limit,
        "the fleet's limit, through a slow link"
    );
    drop((held_a, held_b));

    for fault in [Fault::Stall, Fault::BlackHole, Fault::Reset] {
        proxy.set(Fault::Pass);
        // Both leasing, and each has seen the other (the share is the
        // limit over the sessions last seen).
        eventually("leasing again", || {
            let (sa, sb) = (a.stats(), b.stats());
            sa.status == Status::Leasing
                && sb.status == Status::Leasing
                && sa.sessions == 2
                && sb.sessions == 2
        })
        .await;
        proxy.set(fault);
        // No request waits past its policy's timeout, whatever Redis does.
        let started = Instant::now();
        let permits = take_all(&a, 8, policy_timeout).await;
        let waited = started.elapsed();
        assert!(
            waited <= policy_timeout * 9 + Duration::from_millis(500),
            "{fault:?}: {waited:?}"
        );
        drop(permits);
        // Once the lease expires: the local share, limit / sessions.
        eventually("the fallback mode", || a.stats().status == Status::Degraded).await;
        let share = limit / 2;
        assert_eq!(a.limiter().limit(), share, "{fault:?}");
        let permits_a = take_all(&a, 8, Duration::from_millis(50)).await;
        assert_eq!(permits_a.len(), share, "{fault:?}: local share bound");
        drop(permits_a);
    }
    // Redis back: the fleet converges to leasing, under the limit. A
    // status of `Leasing` alone can be a lease still valid while calls
    // fail (a connection being remade): a process that then runs out of
    // lease admits its local share on top of the others' (the mode's
    // documented bound). So wait until both are answered again.
    proxy.set(Fault::Pass);
    answered_again(&[&a, &b]).await;
    let held_a = take_all(&a, 4, Duration::from_secs(2)).await;
    let held_b = take_all(&b, 4, Duration::from_millis(300)).await;
    assert_eq!(held_a.len() + held_b.len(), limit);
    drop((held_a, held_b));
    assert!(a.stats().store_errors > 0);
    a.close().await.unwrap();
    b.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_closed_admits_nothing_while_redis_is_cut() {
    let Some(redis) = redis_or_skip("fail_closed_admits_nothing_while_redis_is_cut") else {
        return;
    };
    let proxy = Proxy::start(([127, 0, 0, 1], redis.port()).into()).await;
    let a = fleet(&proxy.url(), "closed", 4, Mode::FailClosed).await;
    let held = take_all(&a, 2, Duration::from_secs(5)).await;
    assert_eq!(held.len(), 2);
    proxy.set(Fault::BlackHole);
    eventually("the fallback mode", || a.stats().status == Status::Degraded).await;
    assert_eq!(a.limiter().limit(), 0);
    let refused = a.limiter().acquire(&Policy::reject()).await;
    assert!(refused.is_err(), "fail-closed refuses");
    // Requests in flight are never failed: the two permits are still held.
    assert_eq!(a.limiter().in_flight(), 2);
    drop(held);
    proxy.set(Fault::Pass);
    eventually("leasing again", || a.stats().status == Status::Leasing).await;
    assert_eq!(take_all(&a, 4, Duration::from_secs(2)).await.len(), 4);
    a.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_errors() {
    let Some(redis) = redis_or_skip("bad_input_gets_clear_errors") else {
        return;
    };
    let message = |e: FleetError| e.to_string();
    let e = message(
        Fleet::builder("x", 4)
            .connect("http://127.0.0.1:1")
            .await
            .unwrap_err(),
    );
    assert!(e.contains("invalid Redis URL"), "{e}");
    let closed = format!("redis://127.0.0.1:{}", free_port());
    let e = Fleet::builder("x", 4)
        .call_timeout(Duration::from_millis(200))
        .connect(&closed)
        .await
        .unwrap_err();
    assert!(matches!(e, FleetError::Unreachable { .. }), "{e:?}");
    assert!(e.to_string().contains("cannot reach Redis at"), "{e}");
    let e = message(
        Fleet::builder("", 4)
            .connect(&redis.url())
            .await
            .unwrap_err(),
    );
    assert!(e.contains("invalid fleet name \"\""), "{e}");
    let e = message(
        Fleet::builder("a{b}", 4)
            .connect(&redis.url())
            .await
            .unwrap_err(),
    );
    assert!(e.contains("braces"), "{e}");
    let e = message(
        Fleet::builder("x", 0)
            .connect(&redis.url())
            .await
            .unwrap_err(),
    );
    assert!(e.contains("limit 0"), "{e}");
    // A wrong password, and the password never printed.
    let locked = RedisServer::with_password("s3cret");
    let wrong = format!("redis://:wrong@127.0.0.1:{}", locked.port());
    let e = Fleet::builder("x", 4).connect(&wrong).await.unwrap_err();
    assert!(matches!(e, FleetError::Auth { .. }), "{e:?}");
    assert!(!e.to_string().contains("wrong@"), "{e}");
    let fleet = Fleet::builder("x", 4).connect(&locked.url()).await.unwrap();
    // A second process with another limit: the fleet's wins, reported.
    let second = Fleet::builder("x", 9).connect(&locked.url()).await.unwrap();
    let stats = second.stats();
    assert_eq!((stats.limit, stats.configured_limit), (4, 9));
    assert!(fleet.set_limit(0).await.is_err());
    second.close().await.unwrap();
    fleet.close().await.unwrap();
}
