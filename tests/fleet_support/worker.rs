//! Worker processes: the test binary (or the example) run again with
//! `TC_FLEET_WORKER=1`, each joining one fleet and calling the upstream
//! through the HTTP layer on the fleet's limiter.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::{ServiceBuilder, ServiceExt};
use tower_concurrency::fleet::{Fleet, Mode};
use tower_concurrency::http_limit::HttpLimitLayer;
use tower_concurrency::Policy;

/// A worker process seen from its parent.
pub struct Worker {
    pub id: String,
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
}

/// Starts `exe args…` as worker `id` with `env`.
pub fn spawn(exe: &std::path::Path, args: &[&str], id: &str, env: &[(&str, String)]) -> Worker {
    let mut command = Command::new(exe);
    command
        .args(args)
        .env("TC_FLEET_WORKER", "1")
        .env("TC_WORKER_ID", id)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().expect("worker starts");
    let stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    Worker {
        id: id.to_owned(),
        child,
        stdin,
        lines,
    }
}

impl Worker {
    /// The next line of the worker starting with `prefix`, skipping others
    /// (the test harness prints its own).
    pub fn expect(&mut self, prefix: &str, within: Duration) -> String {
        let deadline = std::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(_) => continue,
                Err(_) => panic!("worker {}: no line {prefix:?} within {within:?}", self.id),
            }
        }
    }

    /// Sends one line to the worker.
    pub fn tell(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").expect("worker reads its stdin");
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (`KILL`, `STOP`, `CONT`) by PID.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{signal} {}", self.pid());
    }

    /// Waits for the worker to exit; whether it succeeded.
    pub fn wait(mut self) -> bool {
        self.child.wait().is_ok_and(|s| s.success())
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A value from the worker's environment.
fn env<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Whether this process is a worker.
pub fn is_worker() -> bool {
    std::env::var("TC_FLEET_WORKER").is_ok_and(|v| v == "1")
}

/// A small deterministic generator.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// The worker's whole life, configured by its environment:
/// `REDIS_URL`, `UPSTREAM` (host:port), `FLEET`, `LIMIT`, `TTL_MS`,
/// `MODE` (share/open/closed), `REQUESTS`, `CONCURRENCY`, `MAX_MS`,
/// `TIMEOUT_MS`, `HOLD` (take this many permits and hold them), `SEED`.
///
/// It prints `READY`, then either `HOLDING n` (and holds until killed or
/// told `release`) or runs its requests and prints `REST leased=n
/// in_flight=n ok=n refused=n cancelled=n errors=n`; told `close`, it
/// closes the fleet and prints `CLOSED`.
pub fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

async fn run() {
    let id: String = env("TC_WORKER_ID", "w".to_owned());
    let url: String = env("REDIS_URL", String::new());
    let upstream: String = env("UPSTREAM", String::new());
    let mode = match env("MODE", "share".to_owned()).as_str() {
        "open" => Mode::FailOpen,
        "closed" => Mode::FailClosed,
        _ => Mode::LocalShare,
    };
    let fleet = Fleet::builder(env("FLEET", "test".to_owned()), env("LIMIT", 8usize))
        .ttl(Duration::from_millis(env("TTL_MS", 1000)))
        .call_timeout(Duration::from_millis(env("CALL_TIMEOUT_MS", 100)))
        .mode(mode)
        .connect(&url)
        .await
        .expect("worker joins the fleet");
    let limiter = fleet.limiter();
    let (stdin_tx, mut stdin_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            if stdin_tx.send(line).is_err() {
                return;
            }
        }
    });
    println!("READY {}", std::process::id());
    let hold: usize = env("HOLD", 0);
    if hold > 0 {
        let mut permits = Vec::new();
        for _ in 0..hold {
            permits.push(limiter.acquire(&Policy::wait()).await.expect("waits"));
        }
        println!("HOLDING {hold}");
        while let Some(line) = stdin_rx.recv().await {
            if line == "release" {
                permits.clear();
                println!("RELEASED");
            }
            if line == "close" {
                break;
            }
        }
        drop(permits);
        fleet.close().await.expect("closes");
        println!("CLOSED");
        return;
    }
    let timeout = Duration::from_millis(env("TIMEOUT_MS", 2000));
    let client = Client::builder(TokioExecutor::new()).build_http::<String>();
    let service = ServiceBuilder::new()
        .layer(
            HttpLimitLayer::from_limiter(limiter.clone())
                .policy(Policy::fifo(1000).timeout(timeout)),
        )
        .service(client);
    let requests: usize = env("REQUESTS", 100);
    let concurrency: usize = env("CONCURRENCY", 16);
    let max_ms: u64 = env("MAX_MS", 10);
    let seed: u64 = env("SEED", 1);
    let next = Arc::new(AtomicUsize::new(0));
    let counts = Arc::new([
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
    ]);
    let mut tasks = Vec::new();
    for t in 0..concurrency {
        let service = service.clone();
        let next = Arc::clone(&next);
        let counts = Arc::clone(&counts);
        let upstream = upstream.clone();
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng::new(seed * 1000 + t as u64);
            while next.fetch_add(1, SeqCst) < requests {
                let ms = rng.below(max_ms + 1);
                let chunks = 1 + rng.below(3);
                let cancel_after =
                    (rng.below(10) == 0).then(|| Duration::from_millis(rng.below(ms + 1)));
                let request =
                    http::Request::get(format!("http://{upstream}/work?ms={ms}&chunks={chunks}"))
                        .header("x-worker", &id)
                        .body(String::new())
                        .unwrap();
                let call = async {
                    let response = service.clone().oneshot(request).await.map_err(|_| ())?;
                    let status = response.status();
                    response.into_body().collect().await.map_err(|_| ())?;
                    Ok::<_, ()>(status)
                };
                let outcome = match cancel_after {
                    Some(after) => tokio::time::timeout(after, call).await.ok(),
                    None => Some(call.await),
                };
                let slot = match outcome {
                    Some(Ok(status)) if status.is_success() => 0,
                    Some(Ok(_)) => 1,
                    None => 2,
                    Some(Err(())) => 3,
                };
                counts[slot].fetch_add(1, SeqCst);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    // At rest: let the lease task settle before reporting.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stats = fleet.stats();
    println!(
        "REST leased={} in_flight={} ok={} refused={} cancelled={} errors={}",
        stats.leased,
        limiter.in_flight(),
        counts[0].load(SeqCst),
        counts[1].load(SeqCst),
        counts[2].load(SeqCst),
        counts[3].load(SeqCst),
    );
    while let Some(line) = stdin_rx.recv().await {
        if line == "stats" {
            println!("STATS leased={}", fleet.stats().leased);
        }
        if line == "close" {
            break;
        }
    }
    fleet.close().await.expect("closes");
    println!("CLOSED");
}

/// `key=value` from a worker's line.
pub fn field(line: &str, key: &str) -> usize {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {line:?}"))
}
