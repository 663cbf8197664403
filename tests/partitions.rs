//! Partitions of one limit with guaranteed shares: validation, guarantees
//! at several limits, borrowing while permits are free, the order in which
//! a saturated limiter serves its waiters (FIFO and LIFO within a rank),
//! exact per-partition accounting, and the same over real loopback HTTP.
//!
//! The limiter-level tests run at poll level on `tokio_test` mock tasks: a
//! returned permit is handed over when a queued waiter is next polled, so
//! every step is exact. The loopback tests block handlers on per-class
//! gates the test opens one permit at a time; their timeouts are failure
//! guards, never timing assumptions.

mod support;
use support::{eventually, guard};

use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;

use axum::{routing::get, Router};
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio_test::assert_pending;
use tokio_test::task::{spawn, Spawn};
use tower_concurrency::adaptive::Aimd;
use tower_concurrency::http_limit::HttpLimitLayer;
use tower_concurrency::{Acquire, InvalidShares, Limiter, Partition, Permit, Policy, Reason};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// `Limiter::new(limit)` split into live 90% and batch 10%.
fn live_batch(limiter: Limiter) -> (Limiter, Partition, Partition) {
    let (limiter, [live, batch]) = limiter
        .partitioned([("live", 0.9), ("batch", 0.1)])
        .expect("valid shares");
    (limiter, live, batch)
}

/// Permits each partition holds now, in the order the partitions were given.
fn held(limiter: &Limiter) -> Vec<usize> {
    limiter.partitions().iter().map(|s| s.in_flight).collect()
}

/// Each partition's guarantee at the current limit.
fn guaranteed(limiter: &Limiter) -> Vec<usize> {
    limiter.partitions().iter().map(|s| s.guaranteed).collect()
}

fn err<const P: usize>(result: Result<(Limiter, [Partition; P]), InvalidShares>) -> String {
    result.map(|_| ()).expect_err("invalid shares").to_string()
}

/// Takes `n` permits at once (they must be free) for `partition`.
fn take(limiter: &Limiter, partition: Option<Partition>, n: usize) -> Vec<Permit> {
    (0..n)
        .map(|i| {
            let mut admit = spawn(limiter.acquire_in(&Policy::reject(), partition));
            match admit.poll() {
                Poll::Ready(Ok(permit)) => permit,
                other => panic!("permit {i} was not free: {other:?}"),
            }
        })
        .collect()
}

/// Named waiters of one limiter, each on its own mock task, in arrival
/// order, and the permits handed to those already served.
struct Waiters {
    limiter: Limiter,
    policy: Policy,
    queued: Vec<(String, Spawn<Acquire>)>,
    served: Vec<(String, Permit)>,
}

impl Waiters {
    fn new(limiter: &Limiter, policy: Policy) -> Self {
        Self {
            limiter: limiter.clone(),
            policy,
            queued: Vec::new(),
            served: Vec::new(),
        }
    }

    /// Queues a waiter; it enters the dispatcher when first polled, here.
    fn push(&mut self, name: &str, partition: Option<Partition>) {
        let mut admit = spawn(self.limiter.acquire_in(&self.policy, partition));
        assert_pending!(admit.poll(), "{name} must queue: every permit is taken");
        self.queued.push((name.to_owned(), admit));
    }

    /// Polls every queued waiter in arrival order; returns the names of
    /// those that got a permit, keeping their permits.
    fn poll_all(&mut self) -> Vec<String> {
        let mut admitted = Vec::new();
        let mut still = Vec::new();
        for (name, mut admit) in self.queued.drain(..) {
            match admit.poll() {
                Poll::Ready(Ok(permit)) => {
                    admitted.push(name.clone());
                    self.served.push((name, permit));
                }
                Poll::Ready(Err(refused)) => panic!("{name} was refused: {refused}"),
                Poll::Pending => still.push((name, admit)),
            }
        }
        self.queued = still;
        admitted
    }

    /// Polls everyone and expects exactly one to be served.
    fn serve_one(&mut self) -> String {
        let admitted = self.poll_all();
        assert_eq!(admitted.len(), 1, "one permit came back: {admitted:?}");
        admitted.into_iter().next().unwrap()
    }

    /// Gives back the permit of the served waiter `name`.
    fn release(&mut self, name: &str) {
        let at = self
            .served
            .iter()
            .position(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("{name} holds no permit"));
        drop(self.served.remove(at));
    }

    fn task(&mut self, name: &str) -> &mut Spawn<Acquire> {
        &mut self
            .queued
            .iter_mut()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("{name} is not queued"))
            .1
    }

    fn cancel(&mut self, name: &str) {
        let at = self
            .queued
            .iter()
            .position(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("{name} is not queued"));
        drop(self.queued.remove(at));
    }
}

// ---------------------------------------------------------------------------
// Validation and lookups
// ---------------------------------------------------------------------------

/// Every way shares can be wrong is refused with `InvalidShares`, and the
/// message names the problem (and the partition, where there is one).
#[test]
fn invalid_shares_are_refused_with_a_message_naming_the_problem() {
    let new = || Limiter::new(10);

    let empty_name = err(new().partitioned([("", 0.5)]));
    assert!(empty_name.contains("needs a name"), "{empty_name}");

    for share in [0.0, -0.1, 1.5, f64::NAN, f64::INFINITY] {
        let message = err(new().partitioned([("batch", share)]));
        assert!(
            message.contains("\"batch\""),
            "names the partition: {message}"
        );
        assert!(
            message.contains(&format!("share {share}")),
            "names the share: {message}"
        );
        assert!(
            message.contains("above 0 and at most 1"),
            "says what is allowed: {message}"
        );
    }

    let twice = err(new().partitioned([("live", 0.5), ("live", 0.2)]));
    assert!(twice.contains("\"live\" is named twice"), "{twice}");

    let too_much = err(new().partitioned([("live", 0.6), ("batch", 0.5)]));
    assert!(
        too_much.contains("add up to 1.1"),
        "names the sum: {too_much}"
    );
    assert!(too_much.contains("at most 1"), "{too_much}");

    let none = err(new().partitioned::<&str, 0>([]));
    assert!(none.contains("no partitions"), "{none}");

    // Shares that add up to 1 up to rounding are accepted, and so is a
    // single partition with the whole limit.
    let tenths: [_; 10] = std::array::from_fn(|i| (format!("p{i}"), 0.1));
    assert!(new().partitioned(tenths).is_ok());
    assert!(new()
        .partitioned([("a", 0.7), ("b", 0.2), ("c", 0.1)])
        .is_ok());
    assert!(new().partitioned([("all", 1.0)]).is_ok());
    // Shares may add up to less than 1: the rest is spare capacity.
    assert!(new().partitioned([("live", 0.5), ("batch", 0.2)]).is_ok());
}

/// A limiter is partitioned once, through any of its handles; a refused
/// partitioning leaves the limiter unpartitioned, so a later valid one
/// works.
#[test]
fn a_limiter_is_partitioned_once() {
    let limiter = Limiter::new(10);
    let bad = limiter.clone().partitioned([("live", 2.0)]);
    assert!(bad.is_err());
    assert!(limiter.partitions().is_empty(), "nothing was set");

    let (partitioned, [live, _]) = limiter
        .clone()
        .partitioned([("live", 0.9), ("batch", 0.1)])
        .unwrap();
    assert!(partitioned.same_limit(&limiter));
    assert!(
        limiter.partition_stats(live).is_some(),
        "every handle sees the partitions"
    );

    let again = err(limiter.clone().partitioned([("other", 0.5)]));
    assert!(again.contains("partitioned already"), "{again}");
    let again = err(partitioned.partitioned([("live", 0.9), ("batch", 0.1)]));
    assert!(again.contains("partitioned already"), "{again}");
    // The first partitioning stands.
    assert_eq!(limiter.partitions().len(), 2);
    assert_eq!(limiter.partitions()[0].name, "live");
}

/// `partitioned` hands back one handle per share, in order; stats are
/// looked up by handle, and a handle of another limiter finds nothing
/// there (even one with the same names and shares), nor counts there.
#[test]
fn partitions_are_handles_looked_up_by_handle() {
    let (limiter, live, batch) = live_batch(Limiter::new(10));
    assert_ne!(live, batch);
    assert_eq!(limiter.partition_stats(live).unwrap().name, "live");
    assert_eq!(limiter.partition_stats(batch).unwrap().name, "batch");
    assert_eq!(limiter.partition_stats(live).unwrap().partition, live);

    let stats = limiter.partitions();
    let names: Vec<_> = stats.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["live", "batch"]);
    assert_eq!(stats[0].share, 0.9);
    assert_eq!(stats[1].share, 0.1);
    assert_eq!(held(&limiter), [0, 0]);

    let plain = Limiter::new(10);
    assert_eq!(plain.partition_stats(live), None);
    assert!(plain.partitions().is_empty());

    let (twin, twin_live, _) = live_batch(Limiter::new(10));
    assert_ne!(live, twin_live, "the same name on another limiter");
    assert_eq!(twin.partition_stats(live), None);
    let permit = take(&twin, Some(live), 1);
    assert_eq!(permit[0].partition(), None, "counts in no partition there");
    assert_eq!(held(&twin), [0, 0]);
}

/// Guaranteed = max(1, ceil(limit × share)), recomputed as the limit moves.
#[test]
fn guarantees_round_up_with_a_floor_of_one_and_follow_the_limit() {
    let (limiter, _, _) = live_batch(Limiter::new(10));
    assert_eq!(guaranteed(&limiter), [9, 1]);

    for (limit, expected) in [
        (100, [90, 10]),
        (20, [18, 2]),
        (7, [7, 1]), // 6.3 and 0.7 round up
        (5, [5, 1]), // 4.5 and 0.5
        (3, [3, 1]), // 2.7 and 0.3
        (1, [1, 1]), // 0.9 and 0.1: at least one each
        (1000, [900, 100]),
        (10, [9, 1]),
    ] {
        limiter.set_limit(limit);
        assert_eq!(guaranteed(&limiter), expected, "at limit {limit}");
    }

    // A tiny share still guarantees one permit.
    let (tiny, _) = Limiter::new(1000)
        .partitioned([("main", 0.999), ("probe", 0.0001)])
        .unwrap();
    assert_eq!(guaranteed(&tiny), [999, 1]);
    tiny.set_limit(1);
    assert_eq!(guaranteed(&tiny), [1, 1]);
}

/// Shares written as decimals should guarantee what they say: 7% of 100 is
/// 7, and 55% + 45% of 100 must not guarantee more than the limit.
/// `100.0 * 0.07` is `7.000000000000001` in floating point, so `ceil` gives
/// 8; likewise 55% of 100 gives 56, and the two guarantees add up to 101.
#[test]

fn guarantees_of_decimal_shares_are_not_inflated_by_float_noise() {
    let (limiter, _) = Limiter::new(100)
        .partitioned([("a", 0.07), ("b", 0.55), ("c", 0.38)])
        .unwrap();
    assert_eq!(guaranteed(&limiter), [7, 55, 38]);

    let (split, _) = Limiter::new(100)
        .partitioned([("live", 0.55), ("batch", 0.45)])
        .unwrap();
    let total: usize = guaranteed(&split).iter().sum();
    assert_eq!(total, 100, "{:?}", split.partitions());
}

// ---------------------------------------------------------------------------
// Dispatch at poll level
// ---------------------------------------------------------------------------

/// While permits are free anyone takes one: batch alone takes all 10 of a
/// limit where it is guaranteed 1, and so do requests matching no partition.
#[test]
fn an_idle_limit_lends_everything_to_whoever_asks() {
    let (limiter, _, batch) = live_batch(Limiter::new(10));
    let permits = take(&limiter, Some(batch), 10);
    assert_eq!(held(&limiter), [0, 10]);
    assert!(permits.iter().all(|p| p.partition() == Some(batch)));
    assert_eq!(limiter.in_flight(), 10);

    let mut refused = spawn(limiter.acquire_in(&Policy::reject(), Some(batch)));
    match refused.poll() {
        Poll::Ready(Err(r)) => assert_eq!(r.reason(), Reason::Full),
        other => panic!("the 11th is refused: {other:?}"),
    }
    let mut waiting = spawn(limiter.acquire_in(&Policy::wait(), Some(batch)));
    assert_pending!(waiting.poll());
    drop(waiting);
    assert_eq!(limiter.waiting(), 0);

    drop(permits);
    assert_eq!(held(&limiter), [0, 0]);
    assert_eq!(limiter.available(), 10);

    let unmatched = take(&limiter, None, 10);
    assert_eq!(held(&limiter), [0, 0], "unmatched requests count in none");
    assert!(unmatched.iter().all(|p| p.partition().is_none()));
    assert_eq!(limiter.in_flight(), 10);
    drop(unmatched);

    // Through the plain entry points too, which match no partition.
    let plain: Vec<_> = (0..10).map(|_| limiter.try_acquire().unwrap()).collect();
    assert_eq!(held(&limiter), [0, 0]);
    drop(plain);
    assert_eq!(limiter.available(), 10);
}

/// The scenario of `guaranteed_shares_under_saturation_*`: batch holds all
/// 10 permits of live 90% / batch 10%; then, in this arrival order, batch
/// waiters `b1`, an unmatched `n1`, `b2`, and live waiters `l1`..`l10`
/// queue. Permits come back one at a time; each step checks who is served
/// and the partitions' exact counts. `expected` is the order of service.
fn saturated_live_batch(policy: Policy, expected: [&str; 13]) {
    let (limiter, live, batch) = live_batch(Limiter::new(10));
    let mut initial = take(&limiter, Some(batch), 10);
    let mut w = Waiters::new(&limiter, policy);
    w.push("b1", Some(batch));
    w.push("n1", None);
    w.push("b2", Some(batch));
    for i in 1..=10 {
        w.push(&format!("l{i}"), Some(live));
    }
    assert_eq!(limiter.waiting(), 13);
    assert_eq!(w.poll_all(), Vec::<String>::new());
    assert_eq!(held(&limiter), [0, 10], "no permit in use is revoked");
    assert_eq!(limiter.in_flight(), 10);

    let mut order = Vec::new();

    // The first permit back: the hand-off itself counts the permit in the
    // receiver's partition, before the receiver runs.
    drop(initial.pop());
    assert_eq!(held(&limiter), [0, 9]);
    assert_pending!(w.task("n1").poll(), "n1 drives the dispatch, and waits");
    assert_eq!(held(&limiter), [1, 9], "counted in live at hand-off");
    assert_eq!(limiter.in_flight(), 10);
    order.push(w.serve_one());
    assert_eq!(held(&limiter), [1, 9]);

    // Live is below its 9 until it holds 9: every batch permit goes to live.
    for k in 2..=9 {
        drop(initial.pop());
        order.push(w.serve_one());
        assert_eq!(held(&limiter), [k, 10 - k], "after {k} permits came back");
    }

    // The last batch permit: batch is now below its 1, live at its 9.
    drop(initial.pop());
    assert_eq!(held(&limiter), [9, 0]);
    order.push(w.serve_one());
    assert_eq!(held(&limiter), [9, 1]);
    assert!(initial.is_empty());

    // A live permit back: live is below its share again, and a live waiter
    // is served although batch and unmatched waiters arrived earlier.
    let first_live = order[0].clone();
    w.release(&first_live);
    order.push(w.serve_one());
    assert_eq!(held(&limiter), [9, 1]);

    // The batch permit back: the other batch waiter.
    let first_batch = order[9].clone();
    w.release(&first_batch);
    order.push(w.serve_one());
    assert_eq!(held(&limiter), [9, 1]);

    // Only the unmatched one is left: it gets spare capacity, counted in
    // no partition.
    let second_live = order[1].clone();
    w.release(&second_live);
    order.push(w.serve_one());
    assert_eq!(held(&limiter), [8, 1]);
    assert_eq!(limiter.in_flight(), 10);
    assert_eq!(limiter.waiting(), 0);

    assert_eq!(order, expected);

    drop(w);
    assert_eq!(held(&limiter), [0, 0]);
    assert_eq!(limiter.in_flight(), 0);
    assert_eq!(limiter.available(), 10);
}

/// FIFO within a rank: live waiters oldest first until live holds its 9,
/// then the oldest batch waiter, and the unmatched one last.
#[test]
fn guaranteed_shares_under_saturation_fifo() {
    saturated_live_batch(
        Policy::wait(),
        [
            "l1", "l2", "l3", "l4", "l5", "l6", "l7", "l8", "l9", "b1", "l10", "b2", "n1",
        ],
    );
}

/// LIFO within a rank: the same ranks, newest first within each.
#[test]
fn guaranteed_shares_under_saturation_lifo() {
    saturated_live_batch(
        Policy::lifo(100),
        [
            "l10", "l9", "l8", "l7", "l6", "l5", "l4", "l3", "l2", "b2", "l1", "b1", "n1",
        ],
    );
}

/// Shares of 50% and 20% leave spare capacity. Requests matching no
/// partition hold all 10 permits; as they come back, waiters below their
/// guarantee are served first in arrival order across partitions, then
/// waiters of partitions at or above their share take turns in arrival
/// order, and the unmatched waiter, though it came first, is served last.
#[test]
fn above_share_waiters_take_turns_and_unmatched_come_last() {
    let (limiter, [live, batch]) = Limiter::new(10)
        .partitioned([("live", 0.5), ("batch", 0.2)])
        .unwrap();
    assert_eq!(guaranteed(&limiter), [5, 2]);
    let (live, batch) = (Some(live), Some(batch));
    let mut initial = take(&limiter, None, 10);
    assert_eq!(held(&limiter), [0, 0]);

    let mut w = Waiters::new(&limiter, Policy::wait());
    for (name, partition) in [
        ("n1", None),
        ("b1", batch),
        ("l1", live),
        ("b2", batch),
        ("l2", live),
        ("b3", batch),
        ("l3", live),
        ("l4", live),
        ("l5", live),
        ("l6", live),
        ("l7", live),
    ] {
        w.push(name, partition);
    }

    let mut steps = Vec::new();
    while let Some(permit) = initial.pop() {
        drop(permit);
        let name = w.serve_one();
        steps.push((name, held(&limiter)));
    }
    let expected = [
        ("b1", [0, 1]),
        ("l1", [1, 1]),
        ("b2", [1, 2]),
        ("l2", [2, 2]), // batch holds its 2: b3 waits behind live
        ("l3", [3, 2]),
        ("l4", [4, 2]),
        ("l5", [5, 2]),
        ("b3", [5, 3]), // both at their share: arrival order
        ("l6", [6, 3]),
        ("l7", [7, 3]),
    ];
    let expected: Vec<_> = expected
        .iter()
        .map(|(n, h)| (n.to_string(), h.to_vec()))
        .collect();
    assert_eq!(steps, expected);

    w.release("b1");
    assert_eq!(w.serve_one(), "n1");
    assert_eq!(held(&limiter), [7, 2]);
    assert_eq!(limiter.in_flight(), 10);
}

/// A waiter that is cancelled after a permit was handed to it (but before
/// it ran) gives the permit back to the limiter, and the next in rank gets
/// it from there (so a lowered limit's debt is paid first, see
/// `a_cancelled_waiters_handed_permit_pays_a_lowered_limits_debt`); a
/// cancelled waiter that was handed nothing leaves no trace; and when the
/// last waiter leaves, a permit the dispatcher had taken goes back.
#[test]
fn cancelled_waiters_give_handed_permits_back_and_leak_nothing() {
    let (limiter, live, batch) = live_batch(Limiter::new(10));
    let mut initial = take(&limiter, Some(batch), 10);
    let mut w = Waiters::new(&limiter, Policy::wait());
    w.push("n1", None);
    w.push("l1", Some(live));
    w.push("b1", Some(batch));
    w.push("l2", Some(live));

    drop(initial.pop());
    assert_pending!(w.task("n1").poll());
    assert_eq!(held(&limiter), [1, 9], "handed to l1");
    assert!(w.task("l1").is_woken());
    w.cancel("l1");
    assert_eq!(held(&limiter), [0, 9], "given back");
    assert_eq!(
        limiter.in_flight(),
        10,
        "the dispatcher's place in the queue took it"
    );
    assert!(w.task("l2").is_woken(), "the next in rank drives");
    assert_eq!(limiter.waiting(), 3);
    assert_eq!(w.poll_all(), ["l2"]);
    assert_eq!(held(&limiter), [1, 9]);

    // Cancelling a waiter that holds nothing changes no count.
    w.cancel("b1");
    assert_eq!(held(&limiter), [1, 9]);
    assert_eq!(limiter.waiting(), 1);
    assert_eq!(limiter.in_flight(), 10);

    // n1, alone, drives the dispatch and takes the next permit from the
    // limiter; cancelled before it runs, the permit goes back.
    assert_pending!(w.task("n1").poll());
    drop(initial.pop());
    assert!(w.task("n1").is_woken());
    w.cancel("n1");
    assert_eq!(limiter.waiting(), 0);
    assert_eq!(limiter.in_flight(), 9);
    assert_eq!(limiter.available(), 1);
    assert_eq!(held(&limiter), [1, 8]);

    drop((initial, w));
    assert_eq!(held(&limiter), [0, 0]);
    assert_eq!(limiter.available(), 10);
}

/// Issue 8.2 on a partitioned limiter under `Policy::wait()`: limit 2,
/// both permits out; two live waiters, the older driving; a permit comes
/// back and is handed to the one in rank; the limit drops to 1; that
/// waiter is cancelled before it runs. Its permit pays the cut: the other
/// waiter is not admitted while a permit is still out at limit 1. (Before
/// the fix the permit was passed straight on: two in flight at limit 1.)
#[test]
fn a_cancelled_waiters_handed_permit_pays_a_lowered_limits_debt() {
    let (limiter, [live, _]) = Limiter::new(2)
        .partitioned([("live", 0.5), ("batch", 0.5)])
        .unwrap();
    let mut initial = take(&limiter, None, 2);
    let mut w = Waiters::new(&limiter, Policy::wait());
    w.push("l1", Some(live));
    w.push("l2", Some(live));

    drop(initial.pop());
    assert_pending!(w.task("l2").poll(), "l2 drives, l1 is older");
    assert!(w.task("l1").is_woken(), "handed to l1");
    assert_eq!(held(&limiter), [1, 0]);

    assert_eq!(limiter.set_limit(1), 2);
    w.cancel("l1");
    assert_eq!(limiter.in_flight(), 1, "the handed permit paid the cut");
    assert_eq!(held(&limiter), [0, 0]);
    assert_eq!(w.poll_all(), Vec::<String>::new(), "one is out at limit 1");

    drop(initial.pop());
    assert_eq!(w.poll_all(), ["l2"]);
    assert_eq!(limiter.in_flight(), 1);
    drop(w);
    assert_eq!((limiter.in_flight(), limiter.available()), (0, 1));
}

/// A permit handed to a waiter that is cancelled before it runs comes back
/// and is dispatched again by rank, judged once the permit has left the
/// cancelled waiter's partition.
///
/// Live 9 / batch 1 of 10. Batch holds 10; `b1` then `l1`..`l10` queue.
/// Eight batch permits back serve `l1`..`l8` (live 8, batch 2); the ninth
/// is handed to `l9` (live 9 at hand-off, batch 1). `l9` is cancelled
/// before it runs: without that permit live holds 8, below its 9, while
/// batch holds its 1, so the permit goes to `l10`, not to the older `b1`.
#[test]

fn a_cancelled_waiters_permit_goes_to_the_partition_below_its_share() {
    let (limiter, live, batch) = live_batch(Limiter::new(10));
    let mut initial = take(&limiter, Some(batch), 10);
    let mut w = Waiters::new(&limiter, Policy::wait());
    w.push("b1", Some(batch));
    for i in 1..=10 {
        w.push(&format!("l{i}"), Some(live));
    }
    for k in 1..=8 {
        drop(initial.pop());
        assert_eq!(w.serve_one(), format!("l{k}"));
    }
    assert_eq!(held(&limiter), [8, 2]);

    drop(initial.pop());
    assert_pending!(w.task("b1").poll(), "b1 drives the dispatch");
    assert_eq!(held(&limiter), [9, 1], "handed to l9");
    w.cancel("l9");
    assert_eq!(held(&limiter), [8, 1], "given back");
    assert_eq!(w.poll_all(), ["l10"], "live is below its share without it");
    assert_eq!(held(&limiter), [9, 1]);
}

/// `Limiter::acquire` matches no partition, so on a saturated partitioned
/// limiter it should get spare capacity only: a live waiter below its
/// share that queued after it is served first. It is not: `acquire` (like
/// `ConcurrencyLimit`'s `poll_ready`) waits in the semaphore's own FIFO
/// queue, not in the dispatcher, so it takes the first permit back ahead
/// of the live waiter (`dispatch.rs` notes that dispatched waiters "take
/// turns with plain FIFO waiters"; `Limiter::partitioned` promises
/// unmatched requests "only ever get spare capacity").
#[test]

fn plain_acquire_on_a_partitioned_limiter_gets_spare_capacity_only() {
    let (limiter, live, batch) = live_batch(Limiter::new(10));
    let mut initial = take(&limiter, Some(batch), 10);
    let mut plain = spawn(limiter.acquire(&Policy::wait()));
    assert_pending!(plain.poll());
    let mut w = Waiters::new(&limiter, Policy::wait());
    w.push("l1", Some(live));

    drop(initial.pop());
    assert_pending!(plain.poll(), "the plain waiter matches no partition");
    assert_eq!(w.poll_all(), ["l1"], "live is below its share");
    assert_eq!(held(&limiter), [1, 9]);
}

/// An adaptive limiter partitions too; shares follow a pinned change of its
/// limit, including a lowering paid back as permits return (no permit in
/// use revoked) and unpinning back to the algorithm's limit.
#[test]
fn adaptive_limiter_shares_follow_a_pinned_limit() {
    let (limiter, live, batch) = live_batch(Limiter::adaptive(Aimd::new().initial(10)));
    assert!(limiter.is_adaptive());
    assert_eq!(guaranteed(&limiter), [9, 1]);

    let mut initial = take(&limiter, Some(batch), 10);
    let mut w = Waiters::new(&limiter, Policy::wait());
    w.push("b1", Some(batch));
    for i in 1..=6 {
        w.push(&format!("l{i}"), Some(live));
    }

    assert_eq!(limiter.set_limit(5), 10);
    assert_eq!(limiter.limit(), 5);
    assert_eq!(guaranteed(&limiter), [5, 1]);
    assert_eq!(held(&limiter), [0, 10], "nothing revoked");

    // The first five permits back pay off the cut; nobody is served.
    for k in 1..=5 {
        drop(initial.pop());
        assert_eq!(w.poll_all(), Vec::<String>::new(), "step {k}");
        assert_eq!(held(&limiter), [0, 10 - k]);
    }
    assert_eq!(limiter.in_flight(), 5);

    // Now live, below its 5, comes first; batch's last permit back leaves
    // batch below its 1, and b1 (older than l5) is served.
    let mut order = Vec::new();
    while let Some(permit) = initial.pop() {
        drop(permit);
        order.push(w.serve_one());
    }
    assert_eq!(order, ["l1", "l2", "l3", "l4", "b1"]);
    assert_eq!(held(&limiter), [4, 1]);
    assert_eq!(limiter.in_flight(), 5);

    // Back to the algorithm's 10: the raise serves the two live waiters.
    assert_eq!(limiter.unpin(), 5);
    assert_eq!(limiter.limit(), 10);
    assert_eq!(guaranteed(&limiter), [9, 1]);
    let mut raised = w.poll_all();
    raised.sort();
    assert_eq!(raised, ["l5", "l6"]);
    assert_eq!(held(&limiter), [6, 1]);
    assert_eq!(limiter.available(), 3);

    drop(w);
    assert_eq!(held(&limiter), [0, 0]);
    assert_eq!(limiter.available(), 10);
}

// ---------------------------------------------------------------------------
// Shares under refusing and bounded policies
// ---------------------------------------------------------------------------

/// Polls a fresh `acquire_in` once: it must decide at once.
fn now(limiter: &Limiter, policy: &Policy, partition: Option<Partition>) -> Result<Permit, Reason> {
    let mut acquire = spawn(limiter.acquire_in(policy, partition));
    match acquire.poll() {
        Poll::Ready(outcome) => outcome.map_err(|refused| refused.reason()),
        Poll::Pending => panic!("a refusing policy never waits"),
    }
}

/// Issue 8.6: shares hold under `Policy::reject()`. Live 2 / batch 2 of 4.
/// While permits are free batch borrows them all; once saturated, a live
/// request (0 of its 2) is refused, and the permit that comes back next is
/// kept for live: batch, above its share, and requests of no partition are
/// refused it, and the next live request takes it. A claim lasts until
/// the partition takes a permit, and live claims at most its unmet
/// guarantee. (Before the fix batch took every permit that came back.)
#[test]
fn shares_hold_under_reject() {
    let (limiter, [live, batch]) = Limiter::new(4)
        .partitioned([("live", 0.5), ("batch", 0.5)])
        .unwrap();
    let reject = Policy::reject();
    let now = |partition| now(&limiter, &reject, partition);

    let mut batch_held: Vec<_> = (0..4).map(|_| now(Some(batch)).unwrap()).collect();
    assert_eq!(held(&limiter), [0, 4], "borrowing while not saturated");

    assert_eq!(now(Some(live)).unwrap_err(), Reason::Full);
    drop(batch_held.pop());
    assert_eq!(limiter.available(), 1);
    assert_eq!(now(Some(batch)).unwrap_err(), Reason::Full, "kept for live");
    assert_eq!(now(None).unwrap_err(), Reason::Full, "kept for live");
    assert!(limiter.try_acquire().is_none(), "kept for live");
    let live_one = now(Some(live)).expect("the permit kept for live");
    assert_eq!(held(&limiter), [1, 3]);

    // The claim is settled: a free permit is anyone's again.
    drop(batch_held.pop());
    let borrowed = now(Some(batch)).expect("no claim: borrowing");
    assert_eq!(held(&limiter), [1, 3]);

    // Live asks three times while saturated; it lacks 1, so one permit is
    // kept for it, not three.
    for _ in 0..3 {
        assert_eq!(now(Some(live)).unwrap_err(), Reason::Full);
    }
    drop(borrowed);
    drop(batch_held.pop());
    assert_eq!((limiter.available(), held(&limiter)), (2, vec![1, 1]));
    let again = now(Some(batch)).expect("one of the two is free to batch");
    assert_eq!(now(Some(batch)).unwrap_err(), Reason::Full);
    let live_two = now(Some(live)).expect("kept for live");
    assert_eq!(held(&limiter), [2, 2]);

    drop((batch_held, again, live_one, live_two));
    assert_eq!((limiter.in_flight(), limiter.available()), (0, 4));
}

/// Issue 8.6 with a bounded queue: batch fills the limit and the queue,
/// and a live request below its share still queues (past the bound, by at
/// most its unmet guarantee) and is served first. Above the allowance it
/// is refused. (Before the fix live was refused `QueueFull`.)
#[test]
fn shares_hold_when_others_fill_a_bounded_queue() {
    let (limiter, [live, batch]) = Limiter::new(4)
        .partitioned([("live", 0.5), ("batch", 0.5)])
        .unwrap();
    let bounded = Policy::fifo(2);
    let mut initial = take(&limiter, Some(batch), 4);
    let mut w = Waiters::new(&limiter, bounded);
    w.push("b1", Some(batch));
    w.push("b2", Some(batch));
    assert_eq!(
        now(&limiter, &bounded, Some(batch)).unwrap_err(),
        Reason::QueueFull
    );
    w.push("l1", Some(live));
    w.push("l2", Some(live));
    assert_eq!(
        now(&limiter, &bounded, Some(live)).unwrap_err(),
        Reason::QueueFull,
        "live lacks 2: two may queue past the bound, not three"
    );
    assert_eq!(limiter.waiting(), 4);

    drop(initial.pop());
    assert_eq!(w.poll_all(), ["l1"], "live is below its share");
    drop(initial.pop());
    assert_eq!(w.poll_all(), ["l2"]);
    drop(initial.pop());
    assert_eq!(w.poll_all(), ["b1"]);
    assert_eq!(held(&limiter), [2, 2]);
    drop((initial, w));
    assert_eq!((limiter.in_flight(), limiter.available()), (0, 4));
}

// ---------------------------------------------------------------------------
// Over loopback HTTP
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Live,
    Batch,
    Other,
}

impl Class {
    fn of(headers: &HeaderMap) -> Self {
        match headers.get("x-class").and_then(|v| v.to_str().ok()) {
            Some("live") => Self::Live,
            Some("batch") => Self::Batch,
            _ => Self::Other,
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    fn header(self) -> Option<&'static str> {
        match self {
            Self::Live => Some("live"),
            Self::Batch => Some("batch"),
            Self::Other => None,
        }
    }
}

/// Handlers inside now and ever entered, per class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counts {
    inside: [usize; 3],
    entered: [usize; 3],
}

/// What the gated handlers share with the test: counts and a gate per
/// class, each a semaphore the test adds permits to, one handler each.
#[derive(Clone)]
struct Backend {
    counts: Arc<watch::Sender<Counts>>,
    gates: Arc<[Semaphore; 3]>,
}

impl Backend {
    fn new() -> Self {
        Self {
            counts: Arc::new(watch::Sender::new(Counts::default())),
            gates: Arc::new([Semaphore::new(0), Semaphore::new(0), Semaphore::new(0)]),
        }
    }

    async fn handle(self, headers: HeaderMap) -> &'static str {
        let class = Class::of(&headers);
        self.counts.send_modify(|c| {
            c.inside[class.index()] += 1;
            c.entered[class.index()] += 1;
        });
        self.gates[class.index()]
            .acquire()
            .await
            .expect("never closed")
            .forget();
        self.counts.send_modify(|c| c.inside[class.index()] -= 1);
        "done"
    }

    /// Lets one handler of `class` finish.
    fn finish_one(&self, class: Class) {
        self.gates[class.index()].add_permits(1);
    }

    fn open_all(&self) {
        for gate in self.gates.iter() {
            gate.add_permits(1000);
        }
    }

    fn now(&self) -> Counts {
        *self.counts.borrow()
    }

    async fn until(&self, what: &str, condition: impl FnMut(&Counts) -> bool) -> Counts {
        let mut counts = self.counts.subscribe();
        let seen = *guard(what, counts.wait_for(condition))
            .await
            .expect("the backend lives");
        seen
    }
}

/// Serves the gated backend behind `limiter`, placing requests in its
/// "live" and "batch" partitions by their `x-class` header.
async fn serve_partitioned(
    limiter: &Limiter,
    [live, batch]: [Partition; 2],
    backend: &Backend,
    policy: Policy,
) -> SocketAddr {
    let (live, batch) = (Some(live), Some(batch));
    let layer = HttpLimitLayer::from_limiter(limiter.clone())
        .policy(policy)
        .partition_by(move |head| match head.header("x-class") {
            Some("live") => live,
            Some("batch") => batch,
            _ => None,
        });
    let handler_backend = backend.clone();
    let app = Router::new()
        .route(
            "/",
            get(move |headers: HeaderMap| handler_backend.clone().handle(headers)),
        )
        .layer(layer);
    let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Sends one request of `class` and reads its answer to the end.
fn send(
    set: &mut JoinSet<(StatusCode, Bytes)>,
    client: &HttpClient,
    addr: SocketAddr,
    class: Class,
) {
    let mut request = Request::get(format!("http://{addr}/"));
    if let Some(value) = class.header() {
        request = request.header("x-class", value);
    }
    let pending = client.request(request.body(Empty::new()).unwrap());
    set.spawn(async move {
        let response = pending.await.expect("a response");
        let status = response.status();
        let body = response.into_body().collect().await.expect("a body");
        (status, body.to_bytes())
    });
}

/// Opens every gate and checks that all requests were answered with 200.
async fn finish_all(backend: &Backend, mut set: JoinSet<(StatusCode, Bytes)>, expected: usize) {
    backend.open_all();
    let mut answered = 0;
    while let Some(done) = guard("every answer", set.join_next()).await {
        let (status, body) = done.expect("the request task");
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"done"[..]));
        answered += 1;
    }
    assert_eq!(answered, expected);
    // Close the gates again for whatever comes next.
    for gate in backend.gates.iter() {
        gate.forget_permits(usize::MAX);
    }
}

/// Over HTTP, with only batch traffic (10% share) or only traffic that
/// matches no partition, the whole limit of 10 is used; the 11th waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_http_a_lone_class_uses_the_whole_limit() {
    let (limiter, live, batch) = live_batch(Limiter::new(10));
    let backend = Backend::new();
    let addr = serve_partitioned(&limiter, [live, batch], &backend, Policy::wait()).await;
    let client = client();

    for class in [Class::Batch, Class::Other] {
        let mut set = JoinSet::new();
        for _ in 0..11 {
            send(&mut set, &client, addr, class);
        }
        let i = class.index();
        backend
            .until("10 handlers inside", |c| c.inside[i] == 10)
            .await;
        eventually("the 11th to queue", || limiter.waiting() == 1).await;
        assert_eq!(backend.now().inside, {
            let mut inside = [0; 3];
            inside[i] = 10;
            inside
        });
        assert_eq!(limiter.in_flight(), 10);
        let expected_held = if class == Class::Batch {
            [0, 10]
        } else {
            [0, 0]
        };
        assert_eq!(held(&limiter), expected_held);

        finish_all(&backend, set, 11).await;
        eventually("every permit back", || limiter.in_flight() == 0).await;
        assert_eq!(held(&limiter), [0, 0]);
    }
}

/// Over HTTP: batch traffic saturates the limit of 10 (live 90%, batch
/// 10%), then more batch requests and 12 live ones queue. As batch
/// handlers finish one at a time, the freed permits go to live until 9 live
/// handlers run at once; from then on each finishing batch handler lets
/// exactly one batch waiter in (live stays at 9, batch at 1), and a
/// finishing live handler lets a live waiter in. Requests with no class
/// queued alongside run only once the others are done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_http_live_gets_its_share_while_batch_saturates() {
    let (limiter, live, batch) = live_batch(Limiter::new(10));
    let backend = Backend::new();
    let addr = serve_partitioned(&limiter, [live, batch], &backend, Policy::wait()).await;
    let client = client();
    let (live, batch, other) = (Class::Live.index(), Class::Batch.index(), 2);

    let mut set = JoinSet::new();
    for _ in 0..10 {
        send(&mut set, &client, addr, Class::Batch);
    }
    backend
        .until("batch to fill the limit", |c| c.inside[batch] == 10)
        .await;
    assert_eq!(held(&limiter), [0, 10]);

    for _ in 0..10 {
        send(&mut set, &client, addr, Class::Batch);
    }
    send(&mut set, &client, addr, Class::Other);
    for _ in 0..12 {
        send(&mut set, &client, addr, Class::Live);
    }
    eventually("23 requests to queue", || limiter.waiting() == 23).await;
    assert_eq!(backend.now().inside, [0, 10, 0], "nothing revoked");

    // Batch handlers finish one at a time: live takes each freed permit.
    for k in 1..=9 {
        backend.finish_one(Class::Batch);
        let counts = backend
            .until("a live handler to enter", |c| c.entered[live] == k)
            .await;
        assert_eq!(counts.inside, [k, 10 - k, 0], "after {k} batch finished");
        eventually("its permit counted", || held(&limiter) == [k, 10 - k]).await;
    }

    // Saturated at the shares: each finishing batch handler lets one batch
    // waiter in, and live keeps its 9.
    for round in 1..=4 {
        backend.finish_one(Class::Batch);
        let counts = backend
            .until("a batch waiter to enter", |c| {
                c.entered[batch] == 10 + round
            })
            .await;
        assert_eq!(counts.inside, [9, 1, 0], "batch cycle {round}");
        assert_eq!(counts.entered[live], 9, "no live waiter got a batch permit");
        assert_eq!(held(&limiter), [9, 1]);
    }
    // A finishing live handler lets a live waiter in.
    backend.finish_one(Class::Live);
    let counts = backend
        .until("a live waiter to enter", |c| c.entered[live] == 10)
        .await;
    assert_eq!(counts.inside, [9, 1, 0]);
    assert_eq!(
        counts.entered[other], 0,
        "unmatched gets spare capacity only"
    );
    assert_eq!(limiter.waiting(), 23 - 14);

    finish_all(&backend, set, 33).await;
    eventually("every permit back", || limiter.in_flight() == 0).await;
    assert_eq!(held(&limiter), [0, 0]);
    assert_eq!(backend.now().entered, [12, 20, 1]);
}

/// Issue 8.6 over HTTP with `Policy::reject()`: batch borrows the whole
/// limit of 4 (live 2 / batch 2); a live request is answered 503; when a
/// batch handler finishes, the next batch request is answered 503 and the
/// next live request is admitted with the permit kept for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_http_shares_hold_under_reject() {
    let (limiter, [live, batch]) = Limiter::new(4)
        .partitioned([("live", 0.5), ("batch", 0.5)])
        .unwrap();
    let backend = Backend::new();
    let addr = serve_partitioned(&limiter, [live, batch], &backend, Policy::reject()).await;
    let client = client();
    let (live_i, batch_i) = (Class::Live.index(), Class::Batch.index());

    let mut admitted = JoinSet::new();
    for _ in 0..4 {
        send(&mut admitted, &client, addr, Class::Batch);
    }
    backend
        .until("4 batch handlers inside", |c| c.inside[batch_i] == 4)
        .await;

    let mut refused = JoinSet::new();
    send(&mut refused, &client, addr, Class::Live);
    let (status, _) = guard("live refused", refused.join_next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);

    backend.finish_one(Class::Batch);
    eventually("a batch permit back", || limiter.in_flight() == 3).await;
    send(&mut refused, &client, addr, Class::Batch);
    let (status, _) = guard("batch refused", refused.join_next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "kept for live");

    send(&mut admitted, &client, addr, Class::Live);
    backend
        .until("the live handler inside", |c| c.inside[live_i] == 1)
        .await;
    assert_eq!(held(&limiter), [1, 3]);

    // Four batch requests and the live one, all answered 200.
    finish_all(&backend, admitted, 5).await;
    eventually("every permit back", || limiter.in_flight() == 0).await;
}
