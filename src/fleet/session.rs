//! The lease task: the one task of a process that talks to the store. It
//! keeps the session alive, leases permits in blocks, hands them to the
//! process's [`Limiter`] as its capacity, and gives idle ones back.
//!
//! Invariant while the lease is valid: the limiter's capacity never exceeds
//! what the store records for this session (`held`), and permits go back
//! to the store only once the capacity was lowered below them and they
//! are not in use. So the permits in use fleet-wide never exceed the
//! permits the store granted, which never exceed the limit.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::Instant;

use super::builder::Config;
use super::store::{Call, Hint, Op, Reply, Store};
use super::{FleetError, FleetStats, Mode, Status};
use crate::Limiter;

/// The capacity of a process failing open: no limit in practice.
pub(crate) const OPEN: usize = 1 << 30;

/// What the [`Fleet`](super::Fleet) handle asks of its lease task.
pub(crate) enum Command {
    SetLimit(u64, oneshot::Sender<Result<usize, FleetError>>),
    Close(oneshot::Sender<Result<(), FleetError>>),
}

/// A unique session id: process, time and a counter.
pub(crate) fn session_id() -> Arc<str> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{}-{nanos:x}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Relaxed)
    )
    .into()
}

pub(crate) struct Session {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) limiter: Limiter,
    pub(crate) cfg: Arc<Config>,
    pub(crate) id: Arc<str>,
    pub(crate) stats: Arc<Mutex<FleetStats>>,
    pub(crate) commands: mpsc::UnboundedReceiver<Command>,
    /// Notified when a request of this process waits or is refused.
    demand: Arc<tokio::sync::Notify>,
    /// Subscribed from the start, so no hint after the join is missed.
    hints: Option<broadcast::Receiver<Hint>>,
    /// Permits the store records for this session.
    held: usize,
    /// The limiter's capacity, as set last.
    capacity: usize,
    epoch: u64,
    /// Until when the lease can be trusted (local monotonic clock).
    valid_until: Instant,
    degraded: bool,
    limit: usize,
    total: usize,
    sessions: usize,
    queued: usize,
    others_queued: bool,
    is_queued: bool,
    learning: bool,
    next_renew: Instant,
    /// No call before then (after an error).
    retry_at: Instant,
    error_backoff: Duration,
    /// No ask for permits before then (queued, or just granted).
    ask_at: Instant,
    backoff: Duration,
    idle_since: Option<Instant>,
    demanded: bool,
    errors: u64,
    rng: u64,
    #[cfg(feature = "metrics")]
    metrics: super::metrics::FleetMetrics,
}

impl Session {
    /// A session the store just joined with `reply`, sent at `sent`.
    pub(crate) fn new(
        store: Arc<dyn Store>,
        limiter: Limiter,
        cfg: Arc<Config>,
        id: Arc<str>,
        commands: mpsc::UnboundedReceiver<Command>,
        joined: Reply,
        sent: Instant,
    ) -> Self {
        let stats = Arc::new(Mutex::new(FleetStats {
            limit: 0,
            configured_limit: cfg.limit,
            leased: 0,
            capacity: 0,
            held: 0,
            sessions: 0,
            queued: 0,
            store_errors: 0,
            mode: cfg.mode,
            status: Status::Leasing,
        }));
        let rng = id.bytes().fold(0x9E37_79B9_7F4A_7C15_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01B3)
        });
        let hints = store.hints();
        let mut session = Self {
            hints,
            demand: limiter.queue_signal(),
            store,
            limiter,
            held: 0,
            capacity: 0,
            epoch: 0,
            valid_until: sent + cfg.validity(),
            degraded: false,
            limit: cfg.limit,
            total: 0,
            sessions: 1,
            queued: 0,
            others_queued: false,
            is_queued: false,
            learning: false,
            next_renew: sent + cfg.renew_every(),
            retry_at: sent,
            error_backoff: cfg.retry_min,
            ask_at: sent,
            backoff: cfg.retry_min,
            idle_since: None,
            demanded: false,
            errors: 0,
            rng,
            #[cfg(feature = "metrics")]
            metrics: super::metrics::FleetMetrics::register(&cfg.name),
            cfg,
            id,
            stats,
            commands,
        };
        session.limiter.set_capacity(0);
        session.absorb(&joined);
        session.publish();
        session
    }

    /// Runs until the fleet is closed or dropped.
    pub(crate) async fn run(mut self) {
        let mut hints = self.hints.take();
        loop {
            let wake = self.next_wake();
            tokio::select! {
                biased;
                command = self.commands.recv() => match command {
                    Some(Command::SetLimit(limit, done)) => {
                        let _ = done.send(self.set_limit(limit).await);
                    }
                    Some(Command::Close(done)) => {
                        let _ = done.send(self.close().await);
                        return;
                    }
                    None => {
                        let _ = self.close().await;
                        return;
                    }
                },
                hint = next_hint(&mut hints) => self.hint(hint),
                () = self.demand.notified() => self.demanded = true,
                () = tokio::time::sleep_until(wake) => {}
            }
            self.step().await;
            self.publish();
        }
    }

    fn hint(&mut self, hint: Option<Hint>) {
        match hint {
            Some(Hint::Want) => self.others_queued = true,
            Some(Hint::Free) if self.is_queued => self.ask_at = Instant::now(),
            Some(Hint::Free) => {}
            Some(Hint::Limit) => self.next_renew = Instant::now(),
            // Missed some: look at everything again.
            None => {
                self.others_queued = true;
                self.next_renew = Instant::now();
            }
        }
    }

    /// When to look again without being woken. Every call waits for
    /// `retry_at`, so a timer for a call is never earlier; and the wake is
    /// at least a millisecond away, so a step that finds nothing to do
    /// cannot spin.
    fn next_wake(&self) -> Instant {
        let now = Instant::now();
        let floor = now + Duration::from_millis(1);
        if self.degraded {
            return self.retry_at.max(floor);
        }
        let mut wake = self.valid_until.min(self.next_renew.max(self.retry_at));
        let can_ask = self.capacity >= self.held;
        if can_ask && (self.is_queued || self.limiter.waiting() > 0) {
            wake = wake.min(self.ask_at.max(self.retry_at));
        }
        // Draining, others wait, or the fleet is over its limit: look
        // often for permits coming back.
        if self.capacity < self.held
            || self.limiter.in_flight() > self.capacity
            || (self.others_queued && self.held > 0)
            || self.total > self.limit
        {
            wake = wake.min(now + self.cfg.drain_poll);
        }
        if let Some(since) = self.idle_since {
            wake = wake.min(since + self.cfg.idle_return);
        }
        wake.max(floor)
    }

    /// One look at the local limiter and, if needed, one store call.
    async fn step(&mut self) {
        let now = Instant::now();
        if !self.degraded && now >= self.valid_until {
            self.degrade();
        }
        if self.degraded {
            if now >= self.retry_at {
                if let Some(reply) = self.call(Op::Renew).await {
                    if reply.lost {
                        self.reassert().await;
                    } else {
                        self.recover();
                    }
                }
            }
            return;
        }
        let in_flight = self.limiter.in_flight();
        let waiting = self.limiter.waiting();
        let wants = waiting > 0 || std::mem::take(&mut self.demanded);
        let target = self.target(now, in_flight, waiting);
        self.set_capacity(target);
        // Read after lowering: from now on, use only goes down to the capacity.
        let spare = self
            .held
            .saturating_sub(self.capacity.max(self.limiter.in_flight()));
        if now < self.retry_at {
            return;
        }
        if spare > 0 || (self.is_queued && !wants) {
            let n = spare as u64;
            self.exchange(Op::Release { n, dequeue: !wants }).await;
            return;
        }
        if wants && self.capacity >= self.held && now >= self.ask_at {
            let idle = self.capacity.saturating_sub(in_flight);
            let need = waiting.saturating_sub(idle).max(1).min(self.limit.max(1));
            let extra = self
                .cfg
                .batch
                .min(self.limit.saturating_sub(self.held + need));
            let op = Op::Acquire {
                need: need as u64,
                extra: extra as u64,
            };
            if let Some(reply) = self.exchange(op).await {
                if reply.granted > 0 {
                    // Give the waiters a moment to take what came before
                    // asking again for those still waiting.
                    self.backoff = self.cfg.retry_min;
                    self.ask_at = Instant::now() + self.cfg.retry_min;
                } else {
                    self.wait_turn(&reply);
                }
            }
            return;
        }
        if now >= self.next_renew {
            self.exchange(Op::Renew).await;
        }
    }

    /// Queued (or learning): ask again after a jittered, doubling delay.
    fn wait_turn(&mut self, reply: &Reply) {
        let mut delay = self.jitter(self.backoff);
        if reply.learning_ms > 0 {
            delay = delay.max(Duration::from_millis(reply.learning_ms).min(self.cfg.retry_max()));
        }
        self.ask_at = Instant::now() + delay;
        self.backoff = (self.backoff * 2).min(self.cfg.retry_max());
    }

    /// Between half and all of `d`.
    fn jitter(&mut self, d: Duration) -> Duration {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        d / 2 + d.mul_f64((self.rng % 1024) as f64 / 2048.0)
    }

    /// The capacity this process should have now: what it holds, less
    /// what it should give back.
    fn target(&mut self, now: Instant, in_flight: usize, waiting: usize) -> usize {
        let mut target = self.held;
        // Over the limit (it was lowered, or lost sessions reasserted):
        // nothing new is admitted here, and every permit that comes back
        // goes back to the store, until the fleet is under its limit; then
        // grants resume in the fleet's order.
        if self.total > self.limit {
            target = 0;
        }
        if self.others_queued {
            if waiting == 0 {
                // Others wait and nobody here does: idle permits go back now.
                target = target.min(in_flight);
            } else {
                let fair = self.limit.div_ceil(self.sessions.max(1));
                if self.held > fair {
                    target = target.min(fair);
                }
            }
        }
        let idle = self.capacity.saturating_sub(in_flight);
        if waiting == 0 && idle > self.cfg.max_idle {
            match self.idle_since {
                None => self.idle_since = Some(now),
                Some(since) if now >= since + self.cfg.idle_return => {
                    target = target.min(in_flight + self.cfg.max_idle);
                    self.idle_since = None;
                }
                Some(_) => {}
            }
        } else {
            self.idle_since = None;
        }
        target
    }

    fn set_capacity(&mut self, capacity: usize) {
        if capacity != self.capacity {
            self.capacity = capacity;
            self.limiter.set_capacity(capacity);
        }
    }

    /// One store call with its time limit; `None` if it failed.
    async fn call(&mut self, op: Op) -> Option<Reply> {
        let sent = Instant::now();
        let call = Call {
            session: Arc::clone(&self.id),
            ttl_ms: millis(self.cfg.ttl),
            wait_ms: millis(self.cfg.wait),
            epoch: self.epoch,
            // The fleet's limit as last seen: a store that lost its data
            // gets back the limit the fleet had, not the one configured.
            configured: self.limit as u64,
            op,
        };
        match tokio::time::timeout(self.cfg.call_timeout, self.store.call(call)).await {
            Ok(Ok(reply)) => {
                if !reply.lost {
                    self.valid_until = sent + self.cfg.validity();
                    self.next_renew = sent + self.cfg.renew_every();
                }
                self.error_backoff = self.cfg.retry_min;
                self.retry_at = Instant::now();
                self.absorb(&reply);
                Some(reply)
            }
            Ok(Err(error)) => {
                self.failed(&*error);
                None
            }
            Err(_) => {
                self.failed(&format!("no answer within {:?}", self.cfg.call_timeout));
                None
            }
        }
    }

    /// A call whose lost session is reasserted at once.
    async fn exchange(&mut self, op: Op) -> Option<Reply> {
        let reply = self.call(op).await?;
        if reply.lost {
            self.reassert().await;
            return None;
        }
        Some(reply)
    }

    fn failed(&mut self, error: &dyn std::fmt::Display) {
        self.errors += 1;
        tracing::warn!(
            target: "tower_concurrency::fleet",
            fleet = %self.cfg.name,
            %error,
            "fleet store call failed"
        );
        let delay = self.jitter(self.error_backoff);
        self.retry_at = Instant::now() + delay;
        self.error_backoff = (self.error_backoff * 2).min(self.cfg.retry_max());
    }

    /// Takes in the fleet's figures from a reply.
    fn absorb(&mut self, reply: &Reply) {
        if self.epoch != 0 && reply.epoch != self.epoch {
            tracing::warn!(
                target: "tower_concurrency::fleet",
                fleet = %self.cfg.name,
                "the fleet's accounting was lost (Redis restarted without its data?): relearning for one lease TTL"
            );
        }
        if self.epoch == 0 && reply.limit as usize != self.cfg.limit {
            tracing::warn!(
                target: "tower_concurrency::fleet",
                fleet = %self.cfg.name,
                configured = self.cfg.limit,
                fleet_limit = reply.limit,
                "this process was configured with a different limit than the fleet's: the fleet's limit wins"
            );
        }
        self.epoch = reply.epoch;
        self.limit = usize::try_from(reply.limit).unwrap_or(usize::MAX);
        self.total = usize::try_from(reply.total).unwrap_or(usize::MAX);
        self.sessions = usize::try_from(reply.sessions).unwrap_or(usize::MAX);
        self.queued = usize::try_from(reply.queued).unwrap_or(usize::MAX);
        self.is_queued = reply.is_queued;
        self.others_queued = reply.queued > u64::from(reply.is_queued);
        self.learning = reply.learning_ms > 0;
        if reply.lost {
            return;
        }
        self.held = usize::try_from(reply.held).unwrap_or(0);
        if self.degraded {
            return;
        }
        let mut capacity = (self.capacity + reply.granted as usize).min(self.held);
        if self.total > self.limit {
            // Over the limit: stop admitting at once (see `target`).
            capacity = 0;
        }
        self.set_capacity(capacity);
    }

    /// The lease can no longer be trusted: apply the mode.
    fn degrade(&mut self) {
        self.degraded = true;
        let capacity = match self.cfg.mode {
            Mode::LocalShare => (self.limit / self.sessions.max(1)).max(1),
            Mode::FailOpen => OPEN,
            Mode::FailClosed => 0,
        };
        tracing::warn!(
            target: "tower_concurrency::fleet",
            fleet = %self.cfg.name,
            mode = ?self.cfg.mode,
            capacity,
            "fleet lease expired without a renewal: admitting on the fallback mode"
        );
        self.set_capacity(capacity);
        self.retry_at = Instant::now();
    }

    /// The store answers again and kept the session.
    fn recover(&mut self) {
        self.degraded = false;
        let held = self.held;
        self.set_capacity(held);
        tracing::info!(
            target: "tower_concurrency::fleet",
            fleet = %self.cfg.name,
            held,
            "fleet store answers again: leasing"
        );
    }

    /// The store lost this session: admit nothing new from it, and tell
    /// the store what is in use.
    async fn reassert(&mut self) {
        let in_use = self.limiter.in_flight();
        if !self.degraded {
            self.set_capacity(self.capacity.min(in_use));
        }
        tracing::warn!(
            target: "tower_concurrency::fleet",
            fleet = %self.cfg.name,
            in_use,
            "fleet lease lost (expired on Redis, or Redis lost its data): reasserting what is in use"
        );
        if self.call(Op::Reassert { n: in_use as u64 }).await.is_some() {
            self.degraded = false;
            let held = self.held;
            self.set_capacity(held);
        }
    }

    async fn set_limit(&mut self, limit: u64) -> Result<usize, FleetError> {
        let old = self.limit;
        match self.call(Op::SetLimit { limit }).await {
            Some(_) => Ok(old),
            None => Err(FleetError::Timeout(self.cfg.call_timeout)),
        }
    }

    /// Admits nothing more, gives idle permits back at once, waits (within
    /// the lease) for those in use, and leaves.
    async fn close(&mut self) -> Result<(), FleetError> {
        self.set_capacity(0);
        let deadline = Instant::now() + self.cfg.ttl;
        let mut released = false;
        loop {
            let in_use = self.limiter.in_flight();
            let now = Instant::now();
            if in_use == 0 || now >= deadline || (!self.degraded && now >= self.valid_until) {
                break;
            }
            if !released && self.held > in_use {
                released = true;
                let n = (self.held - in_use) as u64;
                self.exchange(Op::Release { n, dequeue: true }).await;
            } else if now >= self.next_renew {
                self.exchange(Op::Renew).await;
            }
            tokio::time::sleep(self.cfg.drain_poll).await;
        }
        let result = match self.call(Op::Leave).await {
            Some(_) => Ok(()),
            None => Err(FleetError::Timeout(self.cfg.call_timeout)),
        };
        self.held = 0;
        self.degraded = false;
        if let Ok(mut stats) = self.stats.lock() {
            stats.status = Status::Closed;
            stats.leased = 0;
            stats.capacity = 0;
            stats.store_errors = self.errors;
        }
        result
    }

    fn publish(&mut self) {
        let mut stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        stats.limit = self.limit;
        stats.leased = self.held;
        stats.capacity = self.capacity;
        stats.held = self.total;
        stats.sessions = self.sessions;
        stats.queued = self.queued;
        stats.store_errors = self.errors;
        stats.status = if self.degraded {
            Status::Degraded
        } else if self.learning {
            Status::Learning
        } else {
            Status::Leasing
        };
        #[cfg(feature = "metrics")]
        self.metrics.publish(&stats);
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The next hint; `None` when some were missed. Never resolves without a
/// subscription.
async fn next_hint(hints: &mut Option<broadcast::Receiver<Hint>>) -> Option<Hint> {
    let Some(rx) = hints else {
        return std::future::pending().await;
    };
    match rx.recv().await {
        Ok(hint) => Some(hint),
        Err(broadcast::error::RecvError::Lagged(_)) => None,
        Err(broadcast::error::RecvError::Closed) => {
            *hints = None;
            std::future::pending().await
        }
    }
}
