//! The simulated backend: workers, a queue, contention past a knee, and an
//! optional overload behaviour.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;
use tower_service::Service;

use crate::rng::SimRng;

/// How a simulated backend behaves; see [`Backend`].
#[derive(Debug, Clone, PartialEq)]
pub struct BackendConfig {
    /// Workers at the start (`C`): requests served at once. At least 1.
    pub workers: usize,
    /// Mean service time of one request when at most `C` are inside: the
    /// unloaded round trip.
    pub service_time: Duration,
    /// How much one service time varies around the mean.
    pub jitter: Jitter,
    /// How much a queue inside slows the workers down (`k`): a request that
    /// starts service with `n` inside takes
    /// `service_time × jitter × (1 + k × max(0, n − C) / C)`. With `k > 0`
    /// throughput falls as the queue grows, which is what makes a limit in
    /// front worth having.
    pub contention: f64,
    /// What happens to requests beyond a number inside, if anything.
    pub overload: Option<Overload>,
    /// Changes of the worker count: `(offset from the start, workers)`, in
    /// order.
    pub capacity_changes: Vec<(Duration, usize)>,
    /// Stalls: `(offset from the start, length)`. During a stall nothing
    /// finishes and no service starts (a pause of the whole machine, say);
    /// what was due then finishes when it ends.
    pub stalls: Vec<(Duration, Duration)>,
}

impl BackendConfig {
    /// `workers` workers of `service_time` each, with no jitter, no
    /// contention, no overload behaviour and no capacity change.
    pub fn new(workers: usize, service_time: Duration) -> Self {
        Self {
            workers,
            service_time,
            jitter: Jitter::None,
            contention: 0.0,
            overload: None,
            capacity_changes: Vec::new(),
            stalls: Vec::new(),
        }
    }

    /// The end of the stall that `offset` falls in, if any.
    pub fn stalled_until(&self, offset: Duration) -> Option<Duration> {
        self.stalls
            .iter()
            .find(|&&(at, length)| at <= offset && offset < at + length)
            .map(|&(at, length)| at + length)
    }

    /// The worker count at `offset` from the start.
    pub fn workers_at(&self, offset: Duration) -> usize {
        self.capacity_changes
            .iter()
            .take_while(|(at, _)| *at <= offset)
            .last()
            .map_or(self.workers, |&(_, w)| w)
    }

    /// How many requests can usefully be inside with `workers` workers: the
    /// workers, or fewer if the overload threshold is lower.
    pub fn bottleneck(&self, workers: usize) -> usize {
        match self.overload {
            Some(o) => workers.min(o.max_inside),
            None => workers,
        }
    }

    /// Requests per second the backend completes with `workers` workers and
    /// no queue: `bottleneck / service_time`.
    pub fn capacity(&self, workers: usize) -> f64 {
        self.bottleneck(workers) as f64 / self.service_time.as_secs_f64()
    }

    /// The backend's own p99 latency: the 99th percentile of one service
    /// time with no queue and no contention (jitter only), rounded up to the
    /// millisecond as tokio's timer rounds every sleep.
    pub fn p99(&self) -> Duration {
        let p99 = self.service_time.as_secs_f64() * self.jitter.p99();
        Duration::from_secs_f64((p99 * 1000.0 - 1e-9).ceil() / 1000.0)
    }
}

/// The spread of service times around their mean. Every variant has mean
/// 1, so jitter does not change the backend's capacity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Jitter {
    /// Every request takes exactly the service time.
    None,
    /// The service time times a log-normal factor with this `sigma` (of
    /// the underlying normal), scaled to mean 1. 0.1 is mild; 0.6 is heavy
    /// (p50 0.84×, p99 3.4× the mean).
    LogNormal {
        /// Standard deviation of the factor's logarithm.
        sigma: f64,
    },
}

impl Jitter {
    /// The factor's 99th percentile: `exp(2.326 σ − σ² / 2)` for the
    /// log-normal (2.326 is the standard normal's 99th percentile).
    fn p99(&self) -> f64 {
        match *self {
            Jitter::None => 1.0,
            Jitter::LogNormal { sigma } => (2.326_347_874 * sigma - sigma * sigma / 2.0).exp(),
        }
    }

    fn draw(&self, rng: &mut SimRng) -> f64 {
        match *self {
            Jitter::None => 1.0,
            Jitter::LogNormal { sigma } => (sigma * rng.normal() - sigma * sigma / 2.0).exp(),
        }
    }
}

/// What a backend does with requests beyond `max_inside` inside.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Overload {
    /// Requests accepted inside at once (queued or served); a request that
    /// arrives when this many are inside meets [`action`](Self::action).
    pub max_inside: usize,
    /// What happens to it.
    pub action: OverloadAction,
}

/// How a backend turns away a request beyond its threshold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OverloadAction {
    /// Answer [`SimResponse::Overloaded`] (an explicit 429 or 503) after
    /// `latency`, without taking a worker.
    Refuse {
        /// How long the refusal takes to arrive.
        latency: Duration,
    },
    /// Never answer, and take no worker: only the client's deadline ends
    /// the request.
    BlackHole,
}

/// A simulated answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimResponse {
    /// The request was served.
    Success,
    /// The backend refused it as overloaded (an HTTP 429 or 503).
    Overloaded,
}

/// A simulated request: the client's deadline travels with it, so that a
/// timeout inside the limiter (see [`Deadline`](crate::Deadline)) can end it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimRequest {
    /// Its number in the order of arrival.
    pub id: u64,
    /// When the client gives up on it.
    pub deadline: Instant,
}

/// Counts of what a backend did so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BackendStats {
    /// Requests that reached the backend.
    pub arrived: u64,
    /// Requests served to the end.
    pub served: u64,
    /// Requests answered [`SimResponse::Overloaded`].
    pub refused: u64,
    /// Requests never answered ([`OverloadAction::BlackHole`]).
    pub black_holed: u64,
    /// Requests inside that the client gave up on (their future was
    /// dropped), queued or in service; the work is abandoned.
    pub abandoned: u64,
}

/// A simulated backend, as a [`tower_service::Service`] of [`SimRequest`]s.
///
/// It has `C` workers ([`BackendConfig::workers`], changed over time by
/// [`set_workers`](Self::set_workers)) and a first-in first-out queue in
/// front of them. A request that gets a worker holds it for one service
/// time, drawn when it starts: the mean times a [`Jitter`] factor, times
/// the contention factor `1 + k × max(0, n − C) / C` where `n` is the
/// number inside (queued or served) at that moment. Past the knee at `C`
/// inside, every extra queued request slows every worker, so throughput
/// *falls* under overload instead of staying flat.
///
/// With an [`Overload`] threshold, a request arriving when the threshold
/// is reached is refused at once or black-holed. Dropping a response
/// future (a client timeout) takes the request out: out of the queue, or
/// off its worker, which is free at once.
///
/// Clones share one backend. Random draws come from a generator seeded at
/// construction; under paused tokio time on a current-thread runtime the
/// backend is fully deterministic.
#[derive(Clone)]
pub struct Backend {
    config: Arc<BackendConfig>,
    state: Arc<Mutex<State>>,
    /// When it was built: stalls are offsets from here.
    start: Instant,
}

struct State {
    workers: usize,
    busy: usize,
    inside: usize,
    queue: VecDeque<oneshot::Sender<()>>,
    rng: SimRng,
    stats: BackendStats,
}

impl Backend {
    /// A backend as `config` says, drawing jitter from `seed`; its
    /// [`stalls`](BackendConfig::stalls) count from now.
    ///
    /// # Panics
    ///
    /// If `config.workers` or a capacity change is 0 workers.
    pub fn new(config: &BackendConfig, seed: u64) -> Self {
        assert!(
            config.workers >= 1 && config.capacity_changes.iter().all(|&(_, w)| w >= 1),
            "a simulated backend needs at least 1 worker"
        );
        Self {
            config: Arc::new(config.clone()),
            state: Arc::new(Mutex::new(State {
                workers: config.workers,
                busy: 0,
                inside: 0,
                queue: VecDeque::new(),
                rng: SimRng::new(seed, 2),
                stats: BackendStats::default(),
            })),
            start: Instant::now(),
        }
    }

    /// Waits out a stall, if one is on now.
    async fn stall(&self) {
        let now = Instant::now().saturating_duration_since(self.start);
        if let Some(end) = self.config.stalled_until(now) {
            tokio::time::sleep_until(self.start + end).await;
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &BackendConfig {
        &self.config
    }

    /// Workers now (`C`).
    pub fn workers(&self) -> usize {
        self.state().workers
    }

    /// Moves the worker count to `workers` (at least 1). More workers take
    /// queued requests at once; fewer let the requests in service finish.
    pub fn set_workers(&self, workers: usize) {
        let mut state = self.state();
        state.workers = workers.max(1);
        state.dispatch();
    }

    /// Requests inside now, queued or in service (not black-holed ones).
    pub fn inside(&self) -> usize {
        self.state().inside
    }

    /// Requests in service now.
    pub fn busy(&self) -> usize {
        self.state().busy
    }

    /// What it did so far.
    pub fn stats(&self) -> BackendStats {
        self.state().stats
    }

    async fn serve(self) -> Result<SimResponse, Infallible> {
        let entry = {
            let mut state = self.state();
            state.stats.arrived += 1;
            match self.config.overload {
                Some(o) if state.inside >= o.max_inside => Err(o.action),
                _ => {
                    state.inside += 1;
                    if state.busy < state.workers {
                        state.busy += 1;
                        Ok(None)
                    } else {
                        let (tx, rx) = oneshot::channel();
                        state.queue.push_back(tx);
                        Ok(Some(rx))
                    }
                }
            }
        };
        let queued = match entry {
            Ok(queued) => queued,
            Err(OverloadAction::Refuse { latency }) => {
                self.state().stats.refused += 1;
                tokio::time::sleep(latency).await;
                return Ok(SimResponse::Overloaded);
            }
            Err(OverloadAction::BlackHole) => {
                self.state().stats.black_holed += 1;
                std::future::pending::<()>().await;
                unreachable!("a black hole never answers")
            }
        };
        let mut ticket = Ticket {
            backend: &self,
            serving: queued.is_none(),
            queued,
            done: false,
        };
        if let Some(rx) = ticket.queued.as_mut() {
            // The sender is only ever used to grant a worker, never dropped
            // unsent while the backend lives.
            let _ = rx.await;
            ticket.queued = None;
            ticket.serving = true;
        }
        self.stall().await;
        let service = {
            let mut state = self.state();
            let jitter = self.config.jitter.draw(&mut state.rng);
            let over = state.inside.saturating_sub(state.workers) as f64 / state.workers as f64;
            self.config
                .service_time
                .mul_f64(jitter * (1.0 + self.config.contention * over))
        };
        tokio::time::sleep(service).await;
        self.stall().await;
        ticket.done = true;
        Ok(SimResponse::Success)
    }
}

impl State {
    /// Hands free workers to queued requests, oldest first, skipping those
    /// whose client gave up.
    fn dispatch(&mut self) {
        while self.busy < self.workers {
            let Some(tx) = self.queue.pop_front() else {
                break;
            };
            if tx.send(()).is_ok() {
                self.busy += 1;
            }
        }
    }
}

/// A request inside the backend; leaving (served or abandoned) frees its
/// place and its worker.
struct Ticket<'a> {
    backend: &'a Backend,
    queued: Option<oneshot::Receiver<()>>,
    serving: bool,
    done: bool,
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        let mut state = self.backend.state();
        state.inside -= 1;
        if self.done {
            state.stats.served += 1;
        } else {
            state.stats.abandoned += 1;
        }
        // A worker granted to a request that was dropped before it ran is
        // still its to give back.
        let granted = self.queued.as_mut().is_some_and(|rx| rx.try_recv().is_ok());
        if self.serving || granted {
            state.busy -= 1;
            state.dispatch();
        }
    }
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.state();
        f.debug_struct("Backend")
            .field("workers", &state.workers)
            .field("busy", &state.busy)
            .field("inside", &state.inside)
            .field("stats", &state.stats)
            .finish()
    }
}

/// The response future of [`Backend`].
pub struct BackendFuture(Pin<Box<dyn Future<Output = Result<SimResponse, Infallible>> + Send>>);

impl Future for BackendFuture {
    type Output = Result<SimResponse, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.0.as_mut().poll(cx)
    }
}

impl std::fmt::Debug for BackendFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendFuture").finish_non_exhaustive()
    }
}

impl Service<SimRequest> for Backend {
    type Response = SimResponse;
    type Error = Infallible;
    type Future = BackendFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _request: SimRequest) -> Self::Future {
        BackendFuture(Box::pin(self.clone().serve()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(backend: &Backend) -> BackendFuture {
        let deadline = Instant::now() + Duration::from_secs(60);
        backend.clone().call(SimRequest { id: 0, deadline })
    }

    #[tokio::test(start_paused = true)]
    async fn workers_queue_and_contention() {
        let mut config = BackendConfig::new(2, Duration::from_millis(100));
        config.contention = 1.0;
        let backend = Backend::new(&config, 1);
        let start = Instant::now();
        // Four requests for two workers: each enters when its task is
        // first polled, in spawn order.
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let f = call(&backend);
                tokio::spawn(async move {
                    f.await.unwrap();
                    Instant::now()
                })
            })
            .collect();
        let mut done = Vec::new();
        for h in handles {
            done.push(h.await.unwrap() - start);
        }
        // First two start with n = 1 and n = 2: no contention, 100 ms.
        assert_eq!(done[0], Duration::from_millis(100));
        assert_eq!(done[1], Duration::from_millis(100));
        // The other two start at 100 ms with n = 2 inside: 100 ms more.
        assert_eq!(done[2], Duration::from_millis(200));
        assert_eq!(done[3], Duration::from_millis(200));
        assert_eq!(backend.stats().served, 4);
        assert_eq!((backend.inside(), backend.busy()), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn queue_slows_workers_past_the_knee() {
        let mut config = BackendConfig::new(1, Duration::from_millis(100));
        config.contention = 1.0;
        let backend = Backend::new(&config, 1);
        let start = Instant::now();
        // Three enter at once: the first starts with 1 inside (poll order).
        let futures: Vec<_> = (0..3).map(|_| call(&backend)).collect();
        let mut joined = Vec::new();
        for f in futures {
            joined.push(tokio::spawn(async move {
                f.await.unwrap();
                Instant::now()
            }));
        }
        let mut done = Vec::new();
        for h in joined {
            done.push(h.await.unwrap() - start);
        }
        // 1st: n = 1 → 100 ms. 2nd starts at 100 with n = 2 → ×2 = 200 ms.
        // 3rd starts at 300 with n = 1 → 100 ms.
        assert_eq!(done, [100, 300, 400].map(Duration::from_millis).to_vec());
    }

    #[tokio::test(start_paused = true)]
    async fn abandoning_frees_the_worker_and_the_queue() {
        let config = BackendConfig::new(1, Duration::from_millis(100));
        let backend = Backend::new(&config, 1);
        let first = tokio::spawn(call(&backend));
        let second = tokio::spawn(call(&backend));
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!((backend.inside(), backend.busy()), (2, 1));
        second.abort();
        let _ = second.await;
        assert_eq!((backend.inside(), backend.busy()), (1, 1));
        first.abort();
        let _ = first.await;
        assert_eq!((backend.inside(), backend.busy()), (0, 0));
        assert_eq!(backend.stats().abandoned, 2);
        let start = Instant::now();
        call(&backend).await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stall_holds_every_answer_and_start_until_it_ends() {
        let mut config = BackendConfig::new(1, Duration::from_millis(100));
        // Stalled from 50 to 250 ms.
        config.stalls = vec![(Duration::from_millis(50), Duration::from_millis(200))];
        let backend = Backend::new(&config, 1);
        let start = Instant::now();
        // Due at 100 ms, mid-stall: answered at 250. Queued behind it, the
        // second starts at 250 and takes its 100 ms.
        let first = tokio::spawn(call(&backend));
        let second = tokio::spawn(call(&backend));
        first.await.unwrap().unwrap();
        assert_eq!(start.elapsed(), Duration::from_millis(250));
        second.await.unwrap().unwrap();
        assert_eq!(start.elapsed(), Duration::from_millis(350));
        // Arriving during a stall: service starts when it ends.
        let backend = Backend::new(&config, 1);
        tokio::time::sleep(Duration::from_millis(60)).await;
        let start = Instant::now();
        call(&backend).await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_millis(290));
        assert_eq!(
            config.stalled_until(Duration::from_millis(249)),
            Some(Duration::from_millis(250))
        );
        assert_eq!(config.stalled_until(Duration::from_millis(250)), None);
    }

    #[tokio::test(start_paused = true)]
    async fn refuses_or_black_holes_above_the_threshold() {
        let mut config = BackendConfig::new(4, Duration::from_millis(100));
        config.overload = Some(Overload {
            max_inside: 1,
            action: OverloadAction::Refuse {
                latency: Duration::from_millis(1),
            },
        });
        let backend = Backend::new(&config, 1);
        let first = tokio::spawn(call(&backend));
        tokio::task::yield_now().await;
        assert_eq!(call(&backend).await.unwrap(), SimResponse::Overloaded);
        assert_eq!(first.await.unwrap().unwrap(), SimResponse::Success);

        config.overload = Some(Overload {
            max_inside: 1,
            action: OverloadAction::BlackHole,
        });
        let backend = Backend::new(&config, 1);
        let first = tokio::spawn(call(&backend));
        tokio::task::yield_now().await;
        let hole = tokio::time::timeout(Duration::from_secs(10), call(&backend)).await;
        assert!(hole.is_err());
        assert_eq!(first.await.unwrap().unwrap(), SimResponse::Success);
        assert_eq!(backend.stats().black_holed, 1);
        assert_eq!(backend.inside(), 0);
    }

    #[test]
    fn p99_and_capacity() {
        let mut config = BackendConfig::new(16, Duration::from_millis(50));
        assert_eq!(config.p99(), Duration::from_millis(50));
        assert_eq!(config.capacity(16), 320.0);
        config.jitter = Jitter::LogNormal { sigma: 0.6 };
        let p99 = config.p99().as_secs_f64() / 0.05;
        assert!((3.2..3.6).contains(&p99), "{p99}");
        config.overload = Some(Overload {
            max_inside: 5,
            action: OverloadAction::BlackHole,
        });
        assert_eq!(config.bottleneck(16), 5);
        assert_eq!(config.capacity(16), 100.0);
        config.capacity_changes = vec![(Duration::from_secs(5), 4), (Duration::from_secs(10), 16)];
        assert_eq!(config.workers_at(Duration::ZERO), 16);
        assert_eq!(config.workers_at(Duration::from_secs(5)), 4);
        assert_eq!(config.workers_at(Duration::from_secs(12)), 16);
    }
}
