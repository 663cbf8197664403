//! How waiting scales with the depth of the queue: FIFO (the semaphore's
//! own queue), LIFO and partitioned (the dispatcher), at 1k, 10k, 40k and 100k
//! waiters.
//!
//! Run with `cargo bench --bench queue` (`QUEUE_RUNS=n` for more runs; the
//! medians are printed).
//!
//! - **drain**: limit 4 with its permits held, `depth` tasks queued on a
//!   current-thread runtime; the time from giving the 4 permits back until
//!   every waiter has been admitted and has given its permit back.
//! - **timeout**: limit 4 on a 2-worker runtime, `depth` tasks queued with
//!   a 250 ms timeout; each admitted request holds its permit for 1 ms, so
//!   most are refused. The refusal latency (from each task's start), p50
//!   and max, should be 250 ms plus scheduling, whatever the depth.

use std::time::Duration;

use tokio::time::Instant;
use tower_concurrency::{Limiter, Partition, Policy};

const LIMIT: usize = 4;
const DEPTHS: [usize; 4] = [1_000, 10_000, 40_000, 100_000];
const TIMEOUT: Duration = Duration::from_millis(250);

/// How the waiters queue: the table's columns, in this order.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Order {
    Fifo,
    Lifo,
    Partitioned,
}

const ORDERS: [Order; 3] = [Order::Fifo, Order::Lifo, Order::Partitioned];

impl Order {
    /// A limiter of `LIMIT`, the policy its waiters use, and the partitions
    /// they alternate between (none but for `Partitioned`).
    fn setup(self, depth: usize, timeout: Option<Duration>) -> (Limiter, Policy, Vec<Partition>) {
        let policy = match self {
            Order::Lifo => Policy::lifo(depth),
            _ => Policy::fifo(depth),
        };
        let policy = match timeout {
            Some(t) => policy.timeout(t),
            None => policy,
        };
        match self {
            Order::Partitioned => {
                let (limiter, parts) = Limiter::new(LIMIT)
                    .partitioned([("live", 0.5), ("batch", 0.5)])
                    .expect("valid shares");
                (limiter, policy, parts.to_vec())
            }
            _ => (Limiter::new(LIMIT), policy, Vec::new()),
        }
    }
}

fn partition_of(parts: &[Partition], i: usize) -> Option<Partition> {
    (!parts.is_empty()).then(|| parts[i % parts.len()])
}

/// Lets queued tasks run until `depth` wait.
async fn until_waiting(limiter: &Limiter, depth: usize) {
    while limiter.waiting() < depth {
        tokio::task::yield_now().await;
    }
}

/// Time to drain `depth` waiters, in milliseconds.
fn drain(order: Order, depth: usize) -> f64 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let (limiter, policy, parts) = order.setup(depth, None);
        let held: Vec<_> = (0..LIMIT).map(|_| limiter.try_acquire().unwrap()).collect();
        let tasks: Vec<_> = (0..depth)
            .map(|i| {
                let limiter = limiter.clone();
                let partition = partition_of(&parts, i);
                tokio::spawn(async move {
                    let permit = limiter.acquire_in(&policy, partition).await;
                    drop(permit.expect("no bound is reached"));
                })
            })
            .collect();
        until_waiting(&limiter, depth).await;
        let start = Instant::now();
        drop(held);
        for t in tasks {
            t.await.expect("task");
        }
        let elapsed = start.elapsed();
        assert_eq!(limiter.in_flight(), 0);
        elapsed.as_secs_f64() * 1e3
    })
}

/// Refusal latencies (p50, max) in milliseconds, and how many were refused.
fn timeouts(order: Order, depth: usize) -> (f64, f64, usize) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let (limiter, policy, parts) = order.setup(depth, Some(TIMEOUT));
        let tasks: Vec<_> = (0..depth)
            .map(|i| {
                let limiter = limiter.clone();
                let partition = partition_of(&parts, i);
                tokio::spawn(async move {
                    let start = Instant::now();
                    match limiter.acquire_in(&policy, partition).await {
                        Ok(permit) => {
                            tokio::time::sleep(Duration::from_millis(1)).await;
                            drop(permit);
                            None
                        }
                        Err(_) => Some(start.elapsed()),
                    }
                })
            })
            .collect();
        let mut refused = Vec::new();
        for t in tasks {
            refused.extend(t.await.expect("task"));
        }
        refused.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let p50 = refused.get(refused.len() / 2).map_or(0.0, |d| ms(*d));
        let max = refused.last().map_or(0.0, |d| ms(*d));
        (p50, max, refused.len())
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    // `cargo test --benches` runs this with `--bench`-less arguments: keep
    // it short then.
    let quick = std::env::args().any(|a| a == "--test");
    let runs: usize = std::env::var("QUEUE_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(if quick { 1 } else { 5 });
    let depths: &[usize] = if quick { &DEPTHS[..1] } else { &DEPTHS };

    println!("drain: ms to admit every waiter, limit {LIMIT}, current thread (median of {runs})");
    println!("| depth | FIFO | LIFO | partitioned | LIFO ÷ FIFO | partitioned ÷ FIFO |");
    println!("| ---: | ---: | ---: | ---: | ---: | ---: |");
    for &depth in depths {
        let ms: Vec<f64> = ORDERS
            .iter()
            .map(|&order| median((0..runs).map(|_| drain(order, depth)).collect()))
            .collect();
        println!(
            "| {depth} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
            ms[0],
            ms[1],
            ms[2],
            ms[1] / ms[0],
            ms[2] / ms[0]
        );
    }

    println!();
    println!(
        "timeout: refusal latency p50 / max in ms, {} ms timeout, limit {LIMIT}, 1 ms per admitted request, 2 workers (median of {runs})",
        TIMEOUT.as_millis()
    );
    println!("| depth | FIFO | LIFO | partitioned |");
    println!("| ---: | ---: | ---: | ---: |");
    for &depth in depths {
        let cells: Vec<String> = ORDERS
            .iter()
            .map(|&order| {
                let figures: Vec<_> = (0..runs).map(|_| timeouts(order, depth)).collect();
                let p50 = median(figures.iter().map(|f| f.0).collect());
                let max = median(figures.iter().map(|f| f.1).collect());
                let refused = figures.iter().map(|f| f.2).min().unwrap_or(0);
                format!("{p50:.0} / {max:.0} ({refused} refused)")
            })
            .collect();
        println!("| {depth} | {} |", cells.join(" | "));
    }
}
