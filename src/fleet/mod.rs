//! One limit for a fleet: a concurrency limit shared by every process that
//! uses the same name, kept on Redis (the `redis` feature).
//!
//! ```no_run
//! use std::time::Duration;
//! use tower_concurrency::fleet::Fleet;
//! use tower_concurrency::http_limit::HttpLimitLayer;
//! use tower_concurrency::{Limiter, Policy};
//!
//! # async fn run() -> Result<(), tower_concurrency::fleet::FleetError> {
//! // Every process that names "payments-api" shares one limit of 64.
//! let fleet = Fleet::builder("payments-api", 64)
//!     .connect("redis://127.0.0.1:6379")
//!     .await?;
//! let limiter: Limiter = fleet.limiter(); // an ordinary Limiter
//! let layer = HttpLimitLayer::from_limiter(limiter)
//!     .policy(Policy::fifo(100).timeout(Duration::from_millis(250)));
//! # let _ = layer;
//! // ... serve; then, on shutdown:
//! fleet.close().await?; // gives every leased permit back at once
//! # Ok(())
//! # }
//! ```
//!
//! `examples/fleet.rs` runs three worker processes on one limit of 6
//! against a private `redis-server`.
//!
//! # One limit per upstream account
//!
//! Workers that share an upstream's per-account limit keep one fleet per
//! account: the name is the account, and every process that calls with
//! that account shares its limit. The fleets of one process can share one
//! connection (they then hear no wake-up hints and rely on their timed
//! retries, see *Fairness* below); each costs one lease task and one
//! renewal per third of the TTL.
//!
//! ```no_run
//! use std::collections::HashMap;
//! use redis::aio::ConnectionManager;
//! use tower_concurrency::fleet::Fleet;
//! use tower_concurrency::ConcurrencyLimitLayer;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let conn = ConnectionManager::new(redis::Client::open("redis://127.0.0.1:6379")?).await?;
//! let mut accounts = HashMap::new();
//! for (account, limit) in [("acme", 10), ("globex", 4)] {
//!     let fleet = Fleet::builder(format!("upstream:{account}"), limit)
//!         .connection(conn.clone())
//!         .await?;
//!     accounts.insert(account, fleet);
//! }
//! // A client for acme's calls, under acme's fleet-wide limit of 10.
//! let acme = ConcurrencyLimitLayer::from_limiter(accounts["acme"].limiter());
//! # let _ = acme;
//! # Ok(())
//! # }
//! ```
//!
//! # Design
//!
//! **An ordinary limiter.** Each process keeps its own [`Limiter`]; every
//! layer, policy, partition, per-key rule, body-held permit, Retry-After,
//! metric and tracing event works on it unchanged. Its
//! [`limit`](Limiter::limit) is the capacity this process leased from the
//! fleet (it may be 0), and reading it, [`in_flight`](Limiter::in_flight)
//! or [`waiting`](Limiter::waiting) stays local and instant. Its capacity
//! is the lease task's alone: [`Limiter::set_limit`] on it moves the
//! fleet's limit for every process, as [`Fleet::set_limit`] does without
//! waiting for the answer. A process that holds no
//! idle permit asks Redis when a request has to wait: under a policy that
//! queues, that request waits one round trip; under
//! [`Policy::reject`](crate::Policy::reject) it is refused, and the ones
//! after it find the permits leased.
//!
//! **Sessions and leases.** A process is one *session* on Redis, with one
//! lease kept alive by a heartbeat every third of the TTL (10 s by
//! default). Leases expire on Redis's own clock (`TIME`), never on a
//! client's. A process trusts its lease until the moment it *sent* its last
//! acknowledged call plus the TTL, less a margin (a tenth of the TTL, at
//! least 50 ms), on its monotonic clock: Redis cannot expire it sooner. A
//! request or a response body has no TTL of its own: the heartbeat covers
//! everything the process holds, so a slow body never loses its permit
//! and no request is failed because a renewal was late.
//!
//! **Batches.** One task per process talks to Redis (so Redis load grows
//! with processes, not requests), with one call at a time. When a request
//! of this process has to wait (or is refused), the task asks for its
//! waiting requests plus a batch (16) and raises the limiter's capacity by
//! what Redis grants. Redis caps a grant at a fair block of the free
//! permits, `max(1, free / (sessions + 1))`: an idle fleet hands out big
//! blocks, a busy one single permits. Permits come back as capacity: more
//! than 16 idle for 100 ms go back to Redis, and idle permits go back at
//! once when another process waits. Below saturation a request costs no
//! Redis call at all; at saturation at most two (one to give a permit
//! back, one for the next process to take it).
//!
//! **Fairness.** A process that Redis cannot serve takes a ticket in the
//! fleet's queue and is served before any later asker: a grant goes only
//! to a session whose free permits exceed the sessions queued before it.
//! Within a process, its [`Policy`](crate::Policy) orders requests as
//! usual. When a process queues, and when permits come back while some
//! wait, Redis publishes a hint so others give back or ask at once; hints
//! are never relied on: a queued process asks again on a timer (10 ms
//! doubling to 250 ms, jittered), and a queue place lapses after 1 s
//! without a new ask.
//!
//! **Accounting.** All keys of one limit carry the hash tag `{tc:<name>}`
//! (so on Redis Cluster they share one slot), and every script refreshes
//! their expiry to three TTLs:
//!
//! | Key | Type | Holds |
//! |---|---|---|
//! | `{tc:<name>}:meta` | hash | `limit`, `total` leased, `epoch`, `learn_until`, `seq` |
//! | `{tc:<name>}:exp` | sorted set | session → lease expiry (ms of Redis `TIME`) |
//! | `{tc:<name>}:held` | hash | session → permits leased |
//! | `{tc:<name>}:queue` | sorted set | session → ticket |
//! | `{tc:<name>}:qexp` | sorted set | session → queue place expiry |
//!
//! Every call is one Lua script (EVALSHA): read `TIME`, reap expired
//! sessions (what they held comes back) and lapsed queue places, then act.
//! The limit lives in Redis: the first process sets it, and
//! [`Fleet::set_limit`] moves it for everyone. A process configured with a
//! different limit than the fleet's gets the fleet's (the fleet's wins),
//! with a warning logged (`tracing`) and both shown in [`FleetStats`].
//! With the `metrics` feature the figures of [`FleetStats`] are also
//! metrics labelled `fleet=<name>`: `tower_concurrency_fleet_limit`,
//! `_leased`, `_held`, `_sessions`, `_queued`, `_degraded` (gauges) and
//! `_store_errors_total`; the limiter's own metrics carry the fleet's name
//! as its `limiter` label.
//! When the limit is lowered below what is leased, nothing in use is
//! revoked: each process, at its next call (at once with hints, within a
//! third of the TTL without), stops admitting and gives back each permit
//! that comes back, until the fleet is under its new limit; until that
//! call it may still admit from permits leased under the old limit.
//!
//! # Faults and their bounds
//!
//! While Redis is healthy the permits in use fleet-wide never exceed the
//! limit: a process hands out at most what Redis granted it, and gives
//! permits back only once they are not in use and its capacity is below
//! them. Batching costs idle permits (at most 16 per process, about none
//! one round trip after another process asks), never over-admission.
//!
//! | Fault | What happens | Bound |
//! |---|---|---|
//! | A process crashes (SIGKILL) | Its lease expires on Redis; the next call of any process reaps it | Its permits come back within one TTL plus one renewal |
//! | A process freezes past its lease (SIGSTOP, GC, laptop sleep), then resumes | On resume its lease task sees the lease expired (no new admission from it), finds the session gone (`LOST`), and reasserts what is in use; grants stop until the fleet is back under the limit | Over-admission at most what it held, while its requests drain |
//! | Redis slow | Every call has a timeout (250 ms); the lease stays in use until it expires | No request waits past its policy's timeout because of Redis |
//! | Redis unreachable, [`Mode::LocalShare`] (default) | Valid leases are used, then `max(1, limit / sessions last seen)` per process | Cut-off processes admit at most their share each. Fleet-wide: `limit` if every process is cut off; if only some are, the others can lease the whole limit once the cut-off ones' leases expire on Redis, so up to `limit + limit × cut-off / sessions` until they reconnect, reassert and grants stop until the fleet is back under the limit |
//! | Redis unreachable, [`Mode::FailOpen`] | Valid leases, then no limit | None |
//! | Redis unreachable, [`Mode::FailClosed`] | Valid leases, then nothing is admitted (requests queue within their timeout, or are refused: 503 with the HTTP layer) | 0; a Redis outage becomes an outage |
//! | Redis back | The next renewal restores leasing; a session Redis lost reasserts | Converges within one renewal |
//! | Redis restarted without its data | The first process that knew the old epoch recreates the accounting in *learning mode*: no new grant for one TTL while live processes reassert what they hold | 0 extra; a process that *starts* in the first renewal interval after the loss, before any old one calls, may be granted up to what the live ones hold |
//! | Failover to a replica that missed writes | Lost grants are not seen by Redis | At most the grants within the replication lag |
//! | `close()` | No new admission; idle permits go back at once; those in use when they finish (within the lease); then the session leaves, and the last one deletes every key | 0 |
//! | Every process crashed | The keys expire after three TTLs | 0 |
//!
//! # Differences from the usual Redis semaphore
//!
//! Stripe's concurrency limiter, Redisson's `RPermitExpirableSemaphore`,
//! the Node `redis-semaphore` and DistributedLock keep one sorted-set entry
//! per *request*:
//!
//! - **Round trips.** They pay one Redis call to acquire and one to release
//!   per request; here a request below saturation costs none and Redis
//!   sees calls per process, not per request.
//! - **Request TTLs.** Their permits expire after a fixed time ("the
//!   longest a request can take"), so a slow request or a streaming body
//!   outlives its permit silently; here only processes have leases.
//! - **Clocks.** Several score entries with client clocks; here every
//!   expiry is on Redis's `TIME`, and each client judges its own lease on
//!   its monotonic clock from the moment it sent the renewal.
//! - **Wake-ups.** They poll, or wait on pub/sub messages that can be
//!   missed (a release published before the waiter subscribed); here a
//!   FIFO queue of processes decides who is next, and pub/sub is only a
//!   hint on top of timed retries.
//! - **Lost leases.** A lost lease is never silently re-acquired, and
//!   losing it never fails the requests in flight: the process stops
//!   admitting, reasserts, and carries on.
//! - **Outages and restarts.** The fallback mode is explicit, and a Redis
//!   that lost its data relearns what is held before granting again.
//! - **Leaks.** Nothing is left behind: a closed fleet deletes its keys,
//!   and a crashed one's keys expire.

mod builder;
mod error;
#[cfg(test)]
mod memory;
#[cfg(feature = "metrics")]
mod metrics;
mod mode;
mod redis_store;
mod session;
mod stats;
mod store;
#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use self::builder::Config;
pub use self::builder::FleetBuilder;
pub use self::error::FleetError;
pub use self::mode::{Mode, Status};
use self::session::{session_id, Command, Session};
pub use self::stats::FleetStats;
use self::store::{Call, Op, Store};
use crate::{InvalidLimit, Limiter};

/// One process's membership of a fleet-wide limit: see the [module
/// docs](self).
///
/// Dropping it closes it in the background (within the tokio runtime);
/// [`close`](Self::close) does it and waits.
pub struct Fleet {
    limiter: Limiter,
    name: Arc<str>,
    stats: Arc<Mutex<FleetStats>>,
    commands: mpsc::UnboundedSender<Command>,
    task: JoinHandle<()>,
}

impl Fleet {
    /// A fleet-wide limit of `limit` named `name`: every process using
    /// the same name (on the same Redis) shares it.
    pub fn builder(name: impl Into<String>, limit: usize) -> FleetBuilder {
        FleetBuilder::new(name, limit)
    }

    /// Joins the fleet on `store` and starts the lease task.
    async fn start(
        config: Config,
        store: Arc<dyn Store>,
        url: Option<&str>,
    ) -> Result<Self, FleetError> {
        let id = session_id();
        let sent = Instant::now();
        let call = Call {
            session: Arc::clone(&id),
            ttl_ms: u64::try_from(config.ttl.as_millis()).unwrap_or(u64::MAX),
            wait_ms: u64::try_from(config.wait.as_millis()).unwrap_or(u64::MAX),
            epoch: 0,
            configured: config.limit as u64,
            op: Op::Join,
        };
        let join_timeout = config.call_timeout * 4;
        let joined = match tokio::time::timeout(join_timeout, store.call(call)).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(error)) => {
                return Err(match error.downcast::<redis::RedisError>() {
                    Ok(redis) => FleetError::from_redis(url, *redis),
                    Err(source) => FleetError::Unreachable {
                        url: url.map(error::hide_password),
                        source,
                    },
                })
            }
            Err(_) => return Err(FleetError::Timeout(join_timeout)),
        };
        let name: Arc<str> = config.name.as_str().into();
        let limiter = Limiter::new(1).named(config.name.clone());
        let (commands, receiver) = mpsc::unbounded_channel();
        let session = Session::new(
            store,
            limiter.clone(),
            Arc::new(config),
            id,
            receiver,
            joined,
            sent,
        );
        let stats = Arc::clone(&session.stats);
        // The limiter's own `set_limit` moves the fleet's limit: its
        // capacity is the lease task's. A weak sender, so that dropping
        // the `Fleet` still closes the session while limiters live on.
        let owner = commands.downgrade();
        let seen = Arc::clone(&stats);
        limiter.lease_from(move |limit| {
            if let Some(commands) = owner.upgrade() {
                let (done, _) = oneshot::channel();
                let _ = commands.send(Command::SetLimit(limit as u64, done));
            }
            seen.lock().unwrap_or_else(|e| e.into_inner()).limit
        });
        let task = tokio::spawn(session.run());
        Ok(Self {
            limiter,
            name,
            stats,
            commands,
            task,
        })
    }

    /// This process's limiter: its capacity is what it leased.
    pub fn limiter(&self) -> Limiter {
        self.limiter.clone()
    }

    /// The fleet's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The fleet's figures as this process last saw them.
    pub fn stats(&self) -> FleetStats {
        self.stats.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Moves the limit of every process of the fleet to `limit`, and
    /// returns the old one. Processes learn it at their next call (within
    /// a third of the TTL, at once with hints). Lowering revokes nothing
    /// in use: processes shrink as their requests finish.
    pub async fn set_limit(&self, limit: usize) -> Result<usize, FleetError> {
        let limit = InvalidLimit::check(limit).map_err(FleetError::InvalidLimit)?;
        let (done, answer) = oneshot::channel();
        self.commands
            .send(Command::SetLimit(limit as u64, done))
            .map_err(|_| FleetError::Closed)?;
        answer.await.map_err(|_| FleetError::Closed)?
    }

    /// Leaves the fleet: admits nothing new, gives idle permits back at
    /// once and the rest as the requests using them finish (within one
    /// lease), then deletes this process's session; the last process out
    /// deletes every key of the limit.
    pub async fn close(self) -> Result<(), FleetError> {
        let (done, answer) = oneshot::channel();
        self.commands
            .send(Command::Close(done))
            .map_err(|_| FleetError::Closed)?;
        let result = answer.await.map_err(|_| FleetError::Closed)?;
        let _ = self.task.await;
        result
    }
}

#[cfg(test)]
impl Fleet {
    /// Dies as a process killed with SIGKILL would: no goodbye to the store.
    pub(crate) fn crash(self) {
        self.task.abort();
    }
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("name", &self.name)
            .field("stats", &self.stats())
            .finish()
    }
}
