//! What the lease task asks of the store that keeps the fleet-wide
//! accounting, and what it hears back. Two stores implement it with the
//! same semantics: Redis (the Lua scripts in `scripts/`) and, for the
//! deterministic tests, memory (`memory.rs`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::broadcast;

/// One call of a session on its fleet's accounting.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    /// The session making it (one per process).
    pub(crate) session: Arc<str>,
    /// The session lease's length, in milliseconds of the store's clock.
    pub(crate) ttl_ms: u64,
    /// How long a place in the fleet's queue lasts without a new ask.
    pub(crate) wait_ms: u64,
    /// The accounting's epoch this session last saw; 0 before its first reply.
    pub(crate) epoch: u64,
    /// The limit this process was configured with: the fleet's limit if
    /// it is the first to arrive.
    pub(crate) configured: u64,
    pub(crate) op: Op,
}

/// What a call does, after the prologue every call runs: read the store's
/// clock, create the accounting if it is missing (a new epoch, learning
/// for one TTL if the caller knew an older one), reap expired sessions and
/// queue places, and keep every key alive for three TTLs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// Opens the session, holding nothing.
    Join,
    /// Asks for `need` more permits (requests waiting) and up to `extra`
    /// ahead of need; granted only to a session whose turn it is in the
    /// fleet's queue, otherwise it queues (or keeps its place). The need is
    /// granted as far as permits are free, the extra up to a fair block of
    /// them, `free / (sessions + 1)`.
    Acquire { need: u64, extra: u64 },
    /// Keeps the session alive.
    Renew,
    /// Gives `n` permits back; `dequeue` also leaves the fleet's queue.
    Release { n: u64, dequeue: bool },
    /// A session the store lost says it holds `n` permits in use: the
    /// store takes its word, even past the limit.
    Reassert { n: u64 },
    /// Closes the session, giving everything back; the last one out deletes
    /// every key.
    Leave,
    /// Moves the fleet's limit.
    SetLimit { limit: u64 },
}

/// The fleet's accounting as a call left it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Reply {
    /// The session was not found: expired, or the store lost its data.
    /// Nothing was done; it has to reassert.
    pub(crate) lost: bool,
    /// Permits granted by this call.
    pub(crate) granted: u64,
    /// Permits the session holds now.
    pub(crate) held: u64,
    /// The fleet's limit.
    pub(crate) limit: u64,
    /// Permits held fleet-wide.
    pub(crate) total: u64,
    /// Sessions alive.
    pub(crate) sessions: u64,
    /// Sessions waiting in the fleet's queue.
    pub(crate) queued: u64,
    /// Whether this session is one of them.
    pub(crate) is_queued: bool,
    /// The accounting's epoch (it changes when the store lost its data).
    pub(crate) epoch: u64,
    /// Milliseconds of learning mode left: no grants until then.
    pub(crate) learning_ms: u64,
}

/// A hint published to every session of a fleet. Never relied on: the
/// lease task retries on timers whether it hears hints or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hint {
    /// A session started waiting for permits: idle ones should come back.
    Want,
    /// Permits came back while sessions wait: waiters should ask again.
    Free,
    /// The limit moved.
    Limit,
}

impl Hint {
    pub(crate) fn parse(message: &[u8]) -> Option<Self> {
        match message {
            b"want" => Some(Self::Want),
            b"free" => Some(Self::Free),
            b"limit" => Some(Self::Limit),
            _ => None,
        }
    }
}

/// Why a store call failed (its time limit is the caller's).
pub(crate) type StoreError = Box<dyn std::error::Error + Send + Sync>;

/// A store call in flight.
pub(crate) type StoreFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Reply, StoreError>> + Send + 'a>>;

/// Where a fleet's accounting lives.
pub(crate) trait Store: Send + Sync + 'static {
    /// Runs one call atomically.
    fn call(&self, call: Call) -> StoreFuture<'_>;

    /// Hints from the fleet, if this store carries them.
    fn hints(&self) -> Option<broadcast::Receiver<Hint>>;
}
