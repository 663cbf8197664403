//! The fleet against a real `redis-server`, with worker processes (this
//! test binary run again) calling one loopback upstream that counts true
//! concurrency. Skipped loudly without `redis-server` on PATH, failed
//! instead with `TC_REQUIRE_REDIS=1`.

mod fleet_support;

use std::time::{Duration, Instant};

use fleet_support::redis::{redis_or_skip, RedisServer};
use fleet_support::upstream;
use fleet_support::worker::{self, field, Worker};
use tower_concurrency::fleet::Fleet;
use tower_concurrency::Policy;

/// The entry point of worker processes; a no-op in a normal test run.
#[test]
fn worker() {
    if worker::is_worker() {
        worker::main();
    }
}

const LONG: Duration = Duration::from_secs(60);

fn spawn_worker(id: &str, env: &[(&str, String)]) -> Worker {
    let exe = std::env::current_exe().unwrap();
    worker::spawn(
        &exe,
        &["worker", "--exact", "--nocapture", "--test-threads=1"],
        id,
        env,
    )
}

/// `meta.total`, Σ of `held`, and the number of keys of the fleet `name`.
fn audit(redis: &RedisServer, name: &str) -> (Option<u64>, u64, usize) {
    let mut conn = redis.client().get_connection().unwrap();
    let tag = format!("{{tc:{name}}}");
    let total: Option<u64> = redis::cmd("HGET")
        .arg(format!("{tag}:meta"))
        .arg("total")
        .query(&mut conn)
        .unwrap();
    let held: Vec<u64> = redis::cmd("HVALS")
        .arg(format!("{tag}:held"))
        .query(&mut conn)
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{tag}*"))
        .query(&mut conn)
        .unwrap();
    (total, held.iter().sum(), keys.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_stay_under_one_limit_and_leave_nothing() {
    let Some(redis) = redis_or_skip("processes_stay_under_one_limit_and_leave_nothing") else {
        return;
    };
    let (addr, counts) = upstream::start().await;
    let limit = 8;
    let mut workers: Vec<Worker> = (0..3)
        .map(|i| {
            spawn_worker(
                &format!("w{i}"),
                &[
                    ("REDIS_URL", redis.url()),
                    ("UPSTREAM", addr.to_string()),
                    ("FLEET", "load".into()),
                    ("LIMIT", limit.to_string()),
                    ("TTL_MS", "1000".into()),
                    ("REQUESTS", "1200".into()),
                    ("CONCURRENCY", "12".into()),
                    ("MAX_MS", "6".into()),
                    // Long enough that no request is refused for the
                    // machine's speed: every one is served or cancelled.
                    ("TIMEOUT_MS", "45000".into()),
                    ("SEED", (i + 1).to_string()),
                ],
            )
        })
        .collect();
    let mut leased = 0;
    let mut ok = 0;
    for w in &mut workers {
        let rest = w.expect("REST", LONG);
        assert_eq!(field(&rest, "in_flight"), 0, "{rest}");
        assert_eq!(field(&rest, "refused"), 0, "nobody starves: {rest}");
        assert_eq!(field(&rest, "errors"), 0, "{rest}");
        assert_eq!(
            field(&rest, "ok") + field(&rest, "cancelled"),
            1200,
            "every request answered: {rest}"
        );
        leased += field(&rest, "leased");
        ok += field(&rest, "ok");
    }
    let peak = counts.peak();
    eprintln!(
        "served {} requests, {ok} ok; upstream peak {peak}",
        counts.served()
    );
    assert!(peak <= limit, "upstream saw {peak} at once, limit {limit}");
    let (total, held, _) = audit(&redis, "load");
    assert_eq!(total, Some(leased as u64), "Redis accounting = Σ leased");
    assert_eq!(held, leased as u64);
    for w in &mut workers {
        w.tell("close");
        w.expect("CLOSED", LONG);
    }
    assert_eq!(
        audit(&redis, "load"),
        (None, 0, 0),
        "no key left after close"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_process_permits_come_back_within_one_ttl() {
    let Some(redis) = redis_or_skip("a_killed_process_permits_come_back_within_one_ttl") else {
        return;
    };
    let ttl = Duration::from_millis(1000);
    let mut holder = spawn_worker(
        "holder",
        &[
            ("REDIS_URL", redis.url()),
            ("FLEET", "kill".into()),
            ("LIMIT", "4".into()),
            ("TTL_MS", ttl.as_millis().to_string()),
            ("HOLD", "4".into()),
        ],
    );
    holder.expect("HOLDING", LONG);
    let fleet = Fleet::builder("kill", 4)
        .ttl(ttl)
        .connect(&redis.url())
        .await
        .unwrap();
    let limiter = fleet.limiter();
    let taker = tokio::spawn(async move {
        let mut permits = Vec::new();
        for _ in 0..4 {
            permits.push(limiter.acquire(&Policy::wait()).await.expect("waits"));
        }
        permits
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !taker.is_finished(),
        "the fleet is full while the holder lives"
    );
    let killed = Instant::now();
    holder.signal("KILL");
    let permits = tokio::time::timeout(LONG, taker).await.unwrap().unwrap();
    let back = killed.elapsed();
    eprintln!("permits back {back:?} after SIGKILL (ttl {ttl:?})");
    // One TTL plus one renewal, and scheduling slack for a loaded machine.
    assert!(
        back <= ttl + ttl / 3 + Duration::from_millis(700),
        "{back:?}"
    );
    assert_eq!(permits.len(), 4);
    drop(permits);
    fleet.close().await.unwrap();
    tokio::time::sleep(ttl * 3).await;
    assert_eq!(
        audit(&redis, "kill").2,
        0,
        "the crashed session's keys expired"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_process_over_admits_at_most_what_it_held_then_recovers() {
    let Some(redis) = redis_or_skip("a_stopped_process_over_admits_at_most_what_it_held") else {
        return;
    };
    let ttl = Duration::from_millis(600);
    let mut frozen = spawn_worker(
        "frozen",
        &[
            ("REDIS_URL", redis.url()),
            ("FLEET", "stop".into()),
            ("LIMIT", "4".into()),
            ("TTL_MS", ttl.as_millis().to_string()),
            ("HOLD", "2".into()),
        ],
    );
    frozen.expect("HOLDING", LONG);
    frozen.signal("STOP");
    tokio::time::sleep(ttl * 2).await;
    let fleet = Fleet::builder("stop", 4)
        .ttl(ttl)
        .connect(&redis.url())
        .await
        .unwrap();
    let limiter = fleet.limiter();
    let mut permits = Vec::new();
    for _ in 0..4 {
        permits.push(
            tokio::time::timeout(LONG, limiter.acquire(&Policy::wait()))
                .await
                .unwrap()
                .expect("waits"),
        );
    }
    // In use fleet-wide now: 4 here + 2 in the frozen process = the bound
    // (limit + what the frozen process held).
    frozen.signal("CONT");
    // It reasserts its 2: the accounting is over the limit, so nothing new
    // is granted until it is back under.
    let deadline = Instant::now() + LONG;
    loop {
        let (total, held, _) = audit(&redis, "stop");
        if total == Some(6) && held == 6 {
            break;
        }
        assert!(Instant::now() < deadline, "no reassert: {total:?} {held}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Over the limit, permits coming back here go back to Redis, so the
    // fleet converges under the limit.
    permits.truncate(2);
    let deadline = Instant::now() + LONG;
    loop {
        let (total, _, _) = audit(&redis, "stop");
        if total.is_some_and(|t| t <= 4) {
            break;
        }
        assert!(Instant::now() < deadline, "did not converge: {total:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(limiter.limit() <= 2, "shrunk: {}", limiter.limit());
    drop(permits);
    frozen.tell("close");
    frozen.expect("CLOSED", LONG);
    fleet.close().await.unwrap();
    assert_eq!(audit(&redis, "stop"), (None, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_without_its_data_keeps_the_peak_under_the_limit() {
    let Some(mut redis) = redis_or_skip("redis_restarted_without_its_data") else {
        return;
    };
    let (addr, counts) = upstream::start().await;
    let limit = 6;
    let mut workers: Vec<Worker> = (0..2)
        .map(|i| {
            spawn_worker(
                &format!("r{i}"),
                &[
                    ("REDIS_URL", redis.url()),
                    ("UPSTREAM", addr.to_string()),
                    ("FLEET", "restart".into()),
                    ("LIMIT", limit.to_string()),
                    ("TTL_MS", "800".into()),
                    ("REQUESTS", "1500".into()),
                    ("CONCURRENCY", "10".into()),
                    ("MAX_MS", "10".into()),
                    ("TIMEOUT_MS", "5000".into()),
                    ("SEED", (i + 7).to_string()),
                ],
            )
        })
        .collect();
    // Restart once requests flow.
    let deadline = Instant::now() + LONG;
    while counts.served() < 300 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    redis.restart_empty();
    for w in &mut workers {
        w.expect("REST", LONG);
    }
    let peak = counts.peak();
    eprintln!(
        "served {}; upstream peak {peak} across a Redis restart",
        counts.served()
    );
    assert!(peak <= limit, "upstream saw {peak} at once, limit {limit}");
    for w in &mut workers {
        w.tell("close");
        w.expect("CLOSED", LONG);
    }
    assert_eq!(audit(&redis, "restart"), (None, 0, 0));
}

/// One fleet per upstream account, all on one shared connection (the
/// module docs' per-account pattern): each account's limit holds across
/// two "processes" (two sessions each), independently of the others, and
/// closing them leaves no key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_fleet_per_account_on_one_shared_connection() {
    let Some(redis) = redis_or_skip("one_fleet_per_account_on_one_shared_connection") else {
        return;
    };
    let conn = redis::aio::ConnectionManager::new(redis.client())
        .await
        .unwrap();
    let join = |account: &str, limit: usize| {
        Fleet::builder(format!("upstream:{account}"), limit)
            .ttl(Duration::from_millis(600))
            .connection(conn.clone())
    };
    let (acme_1, acme_2) = (
        join("acme", 3).await.unwrap(),
        join("acme", 3).await.unwrap(),
    );
    let (globex_1, globex_2) = (
        join("globex", 2).await.unwrap(),
        join("globex", 2).await.unwrap(),
    );
    let take = |fleet: &Fleet, wait: Duration| {
        let limiter = fleet.limiter();
        async move {
            let policy = Policy::fifo(16).timeout(wait);
            let mut permits = Vec::new();
            while let Ok(permit) = limiter.acquire(&policy).await {
                permits.push(permit);
            }
            permits
        }
    };
    let a1 = take(&acme_1, Duration::from_secs(2)).await;
    let a2 = take(&acme_2, Duration::from_millis(300)).await;
    let g1 = take(&globex_1, Duration::from_secs(2)).await;
    let g2 = take(&globex_2, Duration::from_millis(300)).await;
    assert_eq!((a1.len(), a2.len()), (3, 0), "acme's limit, fleet-wide");
    assert_eq!((g1.len(), g2.len()), (2, 0), "globex's own limit");
    // acme's permits move to its other process; globex's stay put.
    drop(a1);
    let a2 = take(&acme_2, Duration::from_secs(2)).await;
    assert_eq!(a2.len(), 3);
    assert_eq!(take(&globex_2, Duration::from_millis(300)).await.len(), 0);
    drop((a2, g1));
    for fleet in [acme_1, acme_2, globex_1, globex_2] {
        fleet.close().await.unwrap();
    }
    for account in ["acme", "globex"] {
        assert_eq!(
            audit(&redis, &format!("upstream:{account}")),
            (None, 0, 0),
            "no key left for {account}"
        );
    }
}
