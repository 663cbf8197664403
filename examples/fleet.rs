//! One limit for a fleet: three worker processes share one limit of 6.
//!
//! `cargo run --example fleet --features redis`
//!
//! Starts a private `redis-server` (or uses `REDIS_URL`), runs three worker
//! processes (this example run again) that call one loopback upstream
//! through the HTTP layer on a fleet-wide limit of 6, and prints the peak
//! concurrency the upstream saw from each worker and overall: 6, not 18.
//! Then a worker holding every permit is killed with SIGKILL, and its
//! permits come back to the others when its lease expires.

#[path = "../tests/fleet_support/mod.rs"]
mod fleet_support;

use std::time::{Duration, Instant};

use fleet_support::redis::{redis_server_on_path, RedisServer};
use fleet_support::{upstream, worker};
use tower_concurrency::fleet::Fleet;
use tower_concurrency::Policy;

const LIMIT: usize = 6;
const TTL: Duration = Duration::from_secs(2);

#[tokio::main]
async fn main() {
    if worker::is_worker() {
        // This process is one of the workers.
        tokio::task::spawn_blocking(worker::main).await.unwrap();
        return;
    }
    let (url, _server) = match std::env::var("REDIS_URL") {
        Ok(url) => (url, None),
        Err(_) if redis_server_on_path() => {
            let server = RedisServer::start();
            (server.url(), Some(server))
        }
        Err(_) => {
            eprintln!(
                "This example needs Redis: install `redis-server` (Debian/Ubuntu: \
                 apt-get install -y redis-server) or set REDIS_URL=redis://host:port."
            );
            std::process::exit(1);
        }
    };
    println!("Redis at {url}; one limit of {LIMIT} for 3 worker processes");
    let (addr, counts) = upstream::start().await;
    let exe = std::env::current_exe().unwrap();
    let env = |extra: &[(&'static str, String)]| {
        let mut env = vec![
            ("REDIS_URL", url.clone()),
            ("UPSTREAM", addr.to_string()),
            ("FLEET", "example".to_owned()),
            ("LIMIT", LIMIT.to_string()),
            ("TTL_MS", TTL.as_millis().to_string()),
        ];
        env.extend_from_slice(extra);
        env
    };
    let mut workers: Vec<_> = (0..3)
        .map(|i| {
            let env = env(&[
                ("REQUESTS", "400".to_owned()),
                ("CONCURRENCY", "10".to_owned()),
                ("MAX_MS", "20".to_owned()),
                ("SEED", (i + 1).to_string()),
            ]);
            worker::spawn(&exe, &[], &format!("w{i}"), &env)
        })
        .collect();
    for w in &mut workers {
        let rest = w.expect("REST", Duration::from_secs(120));
        let peak = counts.peak_of(&w.id);
        println!(
            "worker {} (pid {}): {} requests ok, peak {peak} at once",
            w.id,
            w.pid(),
            worker::field(&rest, "ok")
        );
    }
    println!(
        "upstream: {} requests served, peak {} at once across the fleet (limit {LIMIT}, 3 × 10 callers)",
        counts.served(),
        counts.peak()
    );
    for w in &mut workers {
        w.tell("close");
        w.expect("CLOSED", Duration::from_secs(30));
    }

    // A worker holding every permit is killed.
    let mut holder = worker::spawn(&exe, &[], "holder", &env(&[("HOLD", LIMIT.to_string())]));
    holder.expect("HOLDING", Duration::from_secs(30));
    println!(
        "worker holder (pid {}) holds all {LIMIT} permits",
        holder.pid()
    );
    let fleet = Fleet::builder("example", LIMIT)
        .ttl(TTL)
        .connect(&url)
        .await
        .expect("joins");
    let limiter = fleet.limiter();
    let waiting = tokio::spawn(async move {
        let mut permits = Vec::new();
        for _ in 0..LIMIT {
            permits.push(limiter.acquire(&Policy::wait()).await.expect("waits"));
        }
        permits
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    println!(
        "this process waits for permits: {} of {LIMIT} so far",
        fleet.limiter().in_flight()
    );
    let killed = Instant::now();
    holder.signal("KILL");
    println!("SIGKILL sent to the holder");
    let permits = waiting.await.unwrap();
    println!(
        "its {} permits came back after {:?} (lease TTL {TTL:?}, renewed every {:?})",
        permits.len(),
        killed.elapsed(),
        TTL / 3
    );
    drop(permits);
    fleet.close().await.expect("closes");
}
