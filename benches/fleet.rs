//! The fleet against the classic Redis semaphore and the local limiter.
//!
//! `cargo bench --bench fleet --features redis`
//!
//! One private `redis-server` (started here), 4 clients (each its own
//! fleet session and Redis connection, as 4 processes would have), a limit
//! of 32, and closed-loop workers that take a permit, hold it 1 ms and
//! give it back: 16 workers (50% of the limit) and 48 (150%). Compared,
//! side by side in one run:
//!
//! - **fleet**: this crate's batch leasing (`Fleet`), through its limiter;
//! - **classic**: one Redis round trip to acquire (a Lua script on a sorted
//!   set of holders scored by expiry, reaping expired ones, as Stripe,
//!   Redisson and redis-semaphore do) and one to release (`ZREM`); a
//!   refused acquire polls again after 10 ms (redis-semaphore's default);
//! - **local**: one process-local `Limiter` of 32, the ceiling.
//!
//! Reported: requests per second, Redis calls per request (round trips:
//! the top-level commands from `INFO commandstats`) and commands per
//! request (every command Redis ran, those inside scripts included),
//! admission latency p50/p99, and the peak in flight across all clients.

#[path = "../tests/fleet_support/redis.rs"]
mod redis_server;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use redis::Script;
use tower_concurrency::fleet::Fleet;
use tower_concurrency::{Limiter, Policy};

const LIMIT: usize = 32;
const CLIENTS: usize = 4;
const HOLD: Duration = Duration::from_millis(1);
const RUN: Duration = Duration::from_secs(2);
const WARMUP: Duration = Duration::from_millis(500);

const CLASSIC_ACQUIRE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
";

/// One design's way to take and give back a permit.
#[derive(Clone)]
enum Design {
    Fleet(Limiter),
    Classic {
        conn: ConnectionManager,
        script: Arc<Script>,
        next: Arc<AtomicUsize>,
    },
    Local(Limiter),
}

enum Held {
    Permit(#[allow(dead_code)] tower_concurrency::Permit),
    Classic(String),
}

impl Design {
    async fn acquire(&self) -> Held {
        match self {
            Design::Fleet(limiter) | Design::Local(limiter) => {
                Held::Permit(limiter.acquire(&Policy::wait()).await.expect("waits"))
            }
            Design::Classic { conn, script, next } => {
                let id = format!(
                    "{load}-{}",
                    next.fetch_add(1, SeqCst),
                    load = std::process::id()
                );
                loop {
                    let got: i64 = script
                        .key("{bench}:classic")
                        .arg(LIMIT)
                        .arg(10_000)
                        .arg(&id)
                        .invoke_async(&mut conn.clone())
                        .await
                        .expect("classic acquire");
                    if got == 1 {
                        return Held::Classic(id);
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }

    async fn release(&self, held: Held) {
        if let (Design::Classic { conn, .. }, Held::Classic(id)) = (self, held) {
            let _: i64 = redis::cmd("ZREM")
                .arg("{bench}:classic")
                .arg(id)
                .query_async(&mut conn.clone())
                .await
                .expect("classic release");
        }
    }
}

/// Top-level calls and all commands Redis ran, from `INFO commandstats`,
/// leaving out the `INFO` calls themselves.
async fn commandstats(conn: &mut ConnectionManager) -> (u64, u64) {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .unwrap();
    let mut calls = HashMap::new();
    for line in info.lines() {
        let Some(rest) = line.strip_prefix("cmdstat_") else {
            continue;
        };
        let Some((name, stats)) = rest.split_once(':') else {
            continue;
        };
        let n = stats
            .split(',')
            .find_map(|kv| kv.strip_prefix("calls="))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        calls.insert(name.to_owned(), n);
    }
    let all: u64 = calls
        .iter()
        .filter(|(k, _)| *k != "info")
        .map(|(_, v)| v)
        .sum();
    // Commands a script runs are counted under their own names; the
    // round trips are the commands clients send.
    let top: u64 = [
        "evalsha",
        "eval",
        "zrem",
        "script|load",
        "ping",
        "subscribe",
    ]
    .iter()
    .map(|k| calls.get(*k).copied().unwrap_or(0))
    .sum();
    (top, all)
}

struct Row {
    design: &'static str,
    load: &'static str,
    rps: f64,
    calls_per_request: f64,
    commands_per_request: f64,
    p50: Duration,
    p99: Duration,
    peak: usize,
}

async fn run(
    design: &'static str,
    load: &'static str,
    clients: Vec<Design>,
    workers: usize,
    info: &mut ConnectionManager,
) -> Row {
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for w in 0..workers {
        let client = clients[w % clients.len()].clone();
        let (stop, measuring) = (Arc::clone(&stop), Arc::clone(&measuring));
        let (in_flight, peak) = (Arc::clone(&in_flight), Arc::clone(&peak));
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while !stop.load(SeqCst) {
                let start = Instant::now();
                let held = client.acquire().await;
                let waited = start.elapsed();
                let now = in_flight.fetch_add(1, SeqCst) + 1;
                peak.fetch_max(now, SeqCst);
                tokio::time::sleep(HOLD).await;
                in_flight.fetch_sub(1, SeqCst);
                client.release(held).await;
                if measuring.load(SeqCst) {
                    latencies.push(waited);
                }
            }
            latencies
        }));
    }
    tokio::time::sleep(WARMUP).await;
    let before = commandstats(info).await;
    measuring.store(true, SeqCst);
    let started = Instant::now();
    tokio::time::sleep(RUN).await;
    measuring.store(false, SeqCst);
    let elapsed = started.elapsed();
    let after = commandstats(info).await;
    stop.store(true, SeqCst);
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    latencies.sort_unstable();
    let n = latencies.len().max(1);
    let at = |q: f64| {
        latencies
            .get(((n as f64 * q) as usize).min(n - 1))
            .copied()
            .unwrap_or_default()
    };
    Row {
        design,
        load,
        rps: latencies.len() as f64 / elapsed.as_secs_f64(),
        calls_per_request: (after.0 - before.0) as f64 / n as f64,
        commands_per_request: (after.1 - before.1) as f64 / n as f64,
        p50: at(0.50),
        p99: at(0.99),
        peak: peak.load(SeqCst),
    }
}

/// The median of `values` (sorted here).
fn median<T: PartialOrd + Copy>(values: &mut [T]) -> T {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap());
    values[values.len() / 2]
}

/// One design's rounds at one load, summed up: medians of throughput and
/// latency, means of Redis traffic, the highest peak.
fn summary(rounds: &mut [Row]) -> Row {
    let n = rounds.len() as f64;
    Row {
        design: rounds[0].design,
        load: rounds[0].load,
        rps: median(&mut rounds.iter().map(|r| r.rps).collect::<Vec<_>>()),
        calls_per_request: rounds.iter().map(|r| r.calls_per_request).sum::<f64>() / n,
        commands_per_request: rounds.iter().map(|r| r.commands_per_request).sum::<f64>() / n,
        p50: median(&mut rounds.iter().map(|r| r.p50).collect::<Vec<_>>()),
        p99: median(&mut rounds.iter().map(|r| r.p99).collect::<Vec<_>>()),
        peak: rounds.iter().map(|r| r.peak).max().unwrap_or(0),
    }
}

fn main() {
    if !redis_server::redis_server_on_path() {
        eprintln!(
            "benches/fleet: `redis-server` is not on PATH (apt-get install -y redis-server); nothing measured"
        );
        return;
    }
    let rounds: usize = std::env::var("FLEET_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let redis = redis_server::RedisServer::start();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let rows = runtime.block_on(async {
        let mut info = ConnectionManager::new(redis.client()).await.unwrap();
        let script = Arc::new(Script::new(CLASSIC_ACQUIRE));
        let mut rows = Vec::new();
        for (load, workers) in [("50%", LIMIT / 2), ("150%", LIMIT * 3 / 2)] {
            let (mut ours, mut classic, mut local) = (Vec::new(), Vec::new(), Vec::new());
            // Rounds interleave the designs, so that the machine's noise
            // falls on all of them alike.
            for round in 0..rounds {
                // Ours: 4 sessions, as 4 processes.
                let mut fleets = Vec::new();
                for _ in 0..CLIENTS {
                    fleets.push(
                        Fleet::builder(format!("bench-{load}-{round}"), LIMIT)
                            .connect(&redis.url())
                            .await
                            .unwrap(),
                    );
                }
                let clients = fleets.iter().map(|f| Design::Fleet(f.limiter())).collect();
                ours.push(run("fleet (batch leasing)", load, clients, workers, &mut info).await);
                for fleet in fleets {
                    fleet.close().await.unwrap();
                }
                // Holder ids unique across clients: one counter for all.
                let next = Arc::new(AtomicUsize::new(0));
                let mut clients = Vec::new();
                for _ in 0..CLIENTS {
                    clients.push(Design::Classic {
                        conn: ConnectionManager::new(redis.client()).await.unwrap(),
                        script: Arc::clone(&script),
                        next: Arc::clone(&next),
                    });
                }
                classic
                    .push(run("classic (2 round trips)", load, clients, workers, &mut info).await);
                let limiter = Limiter::new(LIMIT);
                let clients = (0..CLIENTS)
                    .map(|_| Design::Local(limiter.clone()))
                    .collect();
                local.push(run("local Limiter (ceiling)", load, clients, workers, &mut info).await);
            }
            rows.push(summary(&mut ours));
            rows.push(summary(&mut classic));
            rows.push(summary(&mut local));
        }
        rows
    });
    println!();
    println!(
        "limit {LIMIT}, {CLIENTS} clients, hold {HOLD:?}, {rounds} rounds of {RUN:?} per design and load \
         (medians; Redis traffic averaged; highest peak), redis-server on loopback"
    );
    println!();
    println!("| design | load | req/s | vs local | Redis calls/req | Redis commands/req | admission p50 | admission p99 | peak in flight |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for chunk in rows.chunks(3) {
        let local = chunk[2].rps;
        for r in chunk {
            println!(
                "| {} | {} | {:.0} | {:.2}× | {:.4} | {:.4} | {:.1?} | {:.1?} | {} |",
                r.design,
                r.load,
                r.rps,
                r.rps / local,
                r.calls_per_request,
                r.commands_per_request,
                r.p50,
                r.p99,
                r.peak
            );
        }
    }
    for r in &rows {
        assert!(
            r.peak <= LIMIT,
            "{} at {}: peak {} above the limit",
            r.design,
            r.load,
            r.peak
        );
    }
}
