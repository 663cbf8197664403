//! The dispatcher behind LIFO and partitioned waits: a lowered limit's
//! debt is paid by every slot that comes back, whether a cancelled waiter
//! had been handed it or the dispatcher's own place in the semaphore's
//! queue brought it.
//!
//! Driven at poll level on `tokio_test` mock tasks, so every step is exact.

use tokio_test::task::spawn;
use tokio_test::{assert_pending, assert_ready_ok};
use tower_concurrency::{Limiter, Policy};

/// Issue 8.2, LIFO: limit 2, both permits out; two LIFO waiters, the
/// older one driving the dispatch. One permit comes back and is handed to
/// the newer waiter; the limit is lowered to 1; the newer waiter is
/// cancelled before it runs. Its permit must pay the cut, so the older
/// waiter is not admitted while the other permit is still out at limit 1.
/// (Before the fix the permit went straight to the older waiter: two in
/// flight at limit 1.)
#[test]
fn a_cancelled_lifo_waiters_handed_permit_pays_a_lowered_limits_debt() {
    let limiter = Limiter::new(2);
    let first = limiter.try_acquire().unwrap();
    let second = limiter.try_acquire().unwrap();
    let policy = Policy::lifo(10);
    let mut older = spawn(limiter.acquire(&policy));
    let mut newer = spawn(limiter.acquire(&policy));
    assert_pending!(older.poll());
    assert_pending!(newer.poll());

    drop(first);
    assert_pending!(older.poll(), "the older one drives: newest first");
    assert!(newer.is_woken(), "handed to the newer waiter");
    assert_eq!(limiter.in_flight(), 2);

    assert_eq!(limiter.set_limit(1), 2);
    drop(newer);
    assert_eq!(limiter.in_flight(), 1, "the handed permit paid the cut");
    assert_eq!(limiter.waiting(), 1);
    assert_pending!(older.poll(), "one is out at limit 1");

    drop(second);
    assert!(older.is_woken());
    let permit = assert_ready_ok!(older.poll());
    assert_eq!(limiter.in_flight(), 1);
    drop(permit);
    assert_eq!((limiter.in_flight(), limiter.available()), (0, 1));
}

/// Issue 8.2, the pump: a slot the semaphore gave the dispatcher's place
/// in its queue, while the limit was lowered before anyone was served
/// with it, pays the cut instead of admitting a waiter.
#[test]
fn the_dispatchers_own_slot_pays_a_lowered_limits_debt() {
    let limiter = Limiter::new(2);
    let first = limiter.try_acquire().unwrap();
    let second = limiter.try_acquire().unwrap();
    let mut waiter = spawn(limiter.acquire(&Policy::lifo(10)));
    assert_pending!(waiter.poll());

    drop(first);
    assert!(waiter.is_woken(), "the slot went to the dispatcher's place");
    limiter.set_limit(1);
    assert_pending!(waiter.poll(), "one is out at limit 1");
    assert_eq!(limiter.in_flight(), 1);

    drop(second);
    let permit = assert_ready_ok!(waiter.poll());
    assert_eq!(limiter.in_flight(), 1);
    drop(permit);
    assert_eq!((limiter.in_flight(), limiter.available()), (0, 1));
}

/// LIFO order holds across many waiters, and cancelling waiters in the
/// middle, at the head and at the tail of the queue keeps it.
#[test]
fn lifo_order_survives_cancellations_anywhere() {
    let limiter = Limiter::new(1);
    let held = limiter.try_acquire().unwrap();
    let mut waiters: Vec<_> = (0..6)
        .map(|_| Some(spawn(limiter.acquire(&Policy::lifo(10)))))
        .collect();
    for w in waiters.iter_mut().flatten() {
        assert_pending!(w.poll());
    }
    // Cancel the oldest, one in the middle and the newest.
    for i in [0, 3, 5] {
        waiters[i] = None;
    }
    assert_eq!(limiter.waiting(), 3);
    let mut permit = held;
    let mut order = Vec::new();
    for _ in 0..3 {
        drop(permit);
        let mut served = None;
        for (i, slot) in waiters.iter_mut().enumerate() {
            if let Some(w) = slot {
                if let std::task::Poll::Ready(p) = w.poll() {
                    served = Some((i, p.unwrap()));
                    *slot = None;
                    break;
                }
            }
        }
        let (i, p) = served.expect("someone was served");
        // Serve again only after everyone saw the hand-off.
        for w in waiters.iter_mut().flatten() {
            assert_pending!(w.poll());
        }
        order.push(i);
        permit = p;
    }
    assert_eq!(order, [4, 2, 1], "newest first");
    drop(permit);
    assert_eq!((limiter.in_flight(), limiter.waiting()), (0, 0));
}
