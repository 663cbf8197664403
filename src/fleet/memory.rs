//! The fleet's accounting in memory, with the semantics of the Lua scripts
//! in `scripts/` line for line, on tokio's clock: the deterministic tests
//! drive it under paused time, and can take it down or wipe it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;
use tokio::time::Instant;

use super::store::{Call, Hint, Op, Reply, Store, StoreFuture};

/// An in-memory store shared by every session of one test fleet.
#[derive(Clone)]
pub(crate) struct MemoryStore {
    inner: Arc<Mutex<State>>,
    hints: broadcast::Sender<Hint>,
    origin: Instant,
}

#[derive(Default)]
struct State {
    meta: Option<Meta>,
    /// session -> lease expiry (ms)
    exp: HashMap<Arc<str>, u64>,
    held: HashMap<Arc<str>, u64>,
    /// ticket -> session, and back
    queue: BTreeMap<u64, Arc<str>>,
    tickets: HashMap<Arc<str>, u64>,
    qexp: HashMap<Arc<str>, u64>,
    /// When every key expires (3 TTLs after the last call), as PEXPIRE does.
    keys_expire: u64,
    down: bool,
    calls: u64,
}

#[derive(Debug, Clone, Copy)]
struct Meta {
    limit: u64,
    total: u64,
    epoch: u64,
    learn_until: u64,
    seq: u64,
}

/// What the accounting holds, for the tests' invariants.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Audit {
    /// `meta.total`, or `None` when no key exists.
    pub(crate) total: Option<u64>,
    /// Σ of the per-session counts.
    pub(crate) sum_held: u64,
    pub(crate) sessions: usize,
    pub(crate) queued: usize,
    pub(crate) limit: Option<u64>,
}

impl MemoryStore {
    pub(crate) fn new() -> Self {
        Self {
            inner: Arc::default(),
            hints: broadcast::channel(64).0,
            origin: Instant::now(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every call fails while down, as if the store were unreachable.
    pub(crate) fn set_down(&self, down: bool) {
        self.state().down = down;
    }

    /// Wipes everything, as a restart without persistence does.
    pub(crate) fn lose_data(&self) {
        let mut state = self.state();
        let down = state.down;
        *state = State {
            down,
            ..State::default()
        };
    }

    /// Calls answered so far.
    pub(crate) fn calls(&self) -> u64 {
        self.state().calls
    }

    /// The accounting now (expired sessions not reaped; expired keys gone).
    pub(crate) fn audit(&self) -> Audit {
        let now = self.now_ms();
        let state = self.state();
        if state.keys_expire <= now {
            return Audit::default();
        }
        Audit {
            total: state.meta.map(|m| m.total),
            sum_held: state.held.values().sum(),
            sessions: state.exp.len(),
            queued: state.queue.len(),
            limit: state.meta.map(|m| m.limit),
        }
    }

    fn now_ms(&self) -> u64 {
        // Starts at 1 s, so an epoch is never 0.
        1000 + u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn run(&self, call: &Call) -> Result<Reply, &'static str> {
        let now = self.now_ms();
        let mut guard = self.state();
        let st = &mut *guard;
        if st.down {
            return Err("the in-memory store is down");
        }
        st.calls += 1;
        if st.keys_expire <= now {
            *st = State {
                calls: st.calls,
                ..State::default()
            };
        }
        st.keys_expire = now + 3 * call.ttl_ms;
        let s = &call.session;
        let ttl = call.ttl_ms;
        // prologue.lua
        let meta = st.meta.get_or_insert(Meta {
            limit: call.configured,
            total: 0,
            epoch: now,
            learn_until: if call.epoch > 0 { now + ttl } else { 0 },
            seq: 0,
        });
        if call.epoch > 0
            && call.epoch != meta.epoch
            && now < meta.epoch + ttl
            && meta.learn_until < meta.epoch + ttl
        {
            meta.learn_until = meta.epoch + ttl;
        }
        let dead: Vec<Arc<str>> = st
            .exp
            .iter()
            .filter(|(_, &e)| e <= now)
            .map(|(d, _)| Arc::clone(d))
            .collect();
        for d in &dead {
            let h = st.held.remove(d).unwrap_or(0);
            meta.total -= h;
            st.exp.remove(d);
            unqueue(&mut st.queue, &mut st.tickets, &mut st.qexp, d);
        }
        let stale: Vec<Arc<str>> = st
            .qexp
            .iter()
            .filter(|(_, &e)| e <= now)
            .map(|(w, _)| Arc::clone(w))
            .collect();
        for w in &stale {
            unqueue(&mut st.queue, &mut st.tickets, &mut st.qexp, w);
        }
        let alive = st.exp.contains_key(s);
        let mut granted = 0;
        let mut lost = false;
        let mut publish = None;
        match call.op {
            Op::Join => {
                st.exp.insert(Arc::clone(s), now + ttl);
            }
            Op::Acquire { need, extra } => {
                let want = need + extra;
                if !alive {
                    lost = true;
                } else {
                    st.exp.insert(Arc::clone(s), now + ttl);
                    let free = meta.limit as i64 - meta.total as i64;
                    let rank = st.tickets.get(s).map(|t| st.queue.range(..t).count());
                    let ahead = rank.unwrap_or(st.queue.len()) as i64;
                    let block = free.div_euclid(st.exp.len() as i64 + 1);
                    let mut g = (need as i64 + (extra as i64).min(block)).min(free - ahead);
                    if meta.learn_until > now {
                        g = 0;
                    }
                    if g > 0 {
                        *st.held.entry(Arc::clone(s)).or_default() += g as u64;
                        meta.total += g as u64;
                        granted = g as u64;
                        unqueue(&mut st.queue, &mut st.tickets, &mut st.qexp, s);
                    } else if want > 0 {
                        if rank.is_none() {
                            meta.seq += 1;
                            st.queue.insert(meta.seq, Arc::clone(s));
                            st.tickets.insert(Arc::clone(s), meta.seq);
                            publish = Some(Hint::Want);
                        }
                        st.qexp.insert(Arc::clone(s), now + call.wait_ms);
                    }
                }
            }
            Op::Renew => {
                if alive {
                    st.exp.insert(Arc::clone(s), now + ttl);
                } else {
                    lost = true;
                }
            }
            Op::Release { n, dequeue } => {
                if alive {
                    st.exp.insert(Arc::clone(s), now + ttl);
                    let h = st.held.get(s).copied().unwrap_or(0);
                    let n = n.min(h);
                    if n > 0 {
                        if h == n {
                            st.held.remove(s);
                        } else {
                            st.held.insert(Arc::clone(s), h - n);
                        }
                        meta.total -= n;
                    }
                    if dequeue {
                        unqueue(&mut st.queue, &mut st.tickets, &mut st.qexp, s);
                    }
                    if n > 0 && !st.queue.is_empty() {
                        publish = Some(Hint::Free);
                    }
                } else {
                    lost = true;
                }
            }
            Op::Reassert { n } => {
                st.exp.insert(Arc::clone(s), now + ttl);
                let h = st.held.remove(s).unwrap_or(0);
                if n > 0 {
                    st.held.insert(Arc::clone(s), n);
                }
                meta.total = meta.total + n - h;
            }
            Op::Leave => {
                let h = st.held.remove(s).unwrap_or(0);
                meta.total -= h;
                st.exp.remove(s);
                unqueue(&mut st.queue, &mut st.tickets, &mut st.qexp, s);
                if st.exp.is_empty() {
                    let (limit, epoch) = (meta.limit, meta.epoch);
                    *st = State {
                        calls: st.calls,
                        ..State::default()
                    };
                    return Ok(Reply {
                        limit,
                        epoch,
                        ..Reply::default()
                    });
                }
                if h > 0 && !st.queue.is_empty() {
                    publish = Some(Hint::Free);
                }
            }
            Op::SetLimit { limit } => {
                meta.limit = limit;
                if alive {
                    st.exp.insert(Arc::clone(s), now + ttl);
                }
                publish = Some(Hint::Limit);
            }
        }
        let reply = Reply {
            lost,
            granted,
            held: st.held.get(s).copied().unwrap_or(0),
            limit: meta.limit,
            total: meta.total,
            sessions: st.exp.len() as u64,
            queued: st.queue.len() as u64,
            is_queued: st.tickets.contains_key(s),
            epoch: meta.epoch,
            learning_ms: meta.learn_until.saturating_sub(now),
        };
        drop(guard);
        if let Some(hint) = publish {
            let _ = self.hints.send(hint);
        }
        Ok(reply)
    }
}

fn unqueue(
    queue: &mut BTreeMap<u64, Arc<str>>,
    tickets: &mut HashMap<Arc<str>, u64>,
    qexp: &mut HashMap<Arc<str>, u64>,
    s: &Arc<str>,
) {
    if let Some(t) = tickets.remove(s) {
        queue.remove(&t);
    }
    qexp.remove(s);
}

impl Store for MemoryStore {
    fn call(&self, call: Call) -> StoreFuture<'_> {
        Box::pin(async move { self.run(&call).map_err(Into::into) })
    }

    fn hints(&self) -> Option<broadcast::Receiver<Hint>> {
        Some(self.hints.subscribe())
    }
}
