//! Admission policies on the shared limiter, poll by poll and under paused
//! time: reject, bounded FIFO and LIFO queues, timeouts and cancellation.

use std::time::Duration;

use tokio_test::{assert_pending, assert_ready, task};
use tower_concurrency::{Limiter, Order, Policy, Reason};

/// Reject refuses at once with `Full` and never queues.
#[tokio::test]
async fn reject_refuses_at_once_and_leaves_no_waiter() {
    let limiter = Limiter::new(1);
    let held = limiter.acquire(&Policy::reject()).await.unwrap();
    let err = limiter.acquire(&Policy::reject()).await.unwrap_err();
    assert_eq!(err.reason(), Reason::Full);
    assert_eq!(err.limit(), 1);
    assert_eq!(limiter.waiting(), 0);
    drop(held);
    assert_eq!(
        limiter.available(),
        1,
        "the released permit is free, not parked"
    );
}

/// A full bounded queue refuses with `QueueFull`; a place frees when a
/// waiter is cancelled.
#[tokio::test]
async fn bounded_queue_refuses_when_full_and_cancellation_frees_a_place() {
    let limiter = Limiter::new(1);
    let _held = limiter.try_acquire().unwrap();
    let policy = Policy::fifo(2);
    let mut a = task::spawn(limiter.acquire(&policy));
    let mut b = task::spawn(limiter.acquire(&policy));
    assert_pending!(a.poll());
    assert_pending!(b.poll());
    assert_eq!(limiter.waiting(), 2);
    let err = limiter.acquire(&policy).await.unwrap_err();
    assert_eq!(err.reason(), Reason::QueueFull);
    drop(a);
    assert_eq!(limiter.waiting(), 1);
    let mut c = task::spawn(limiter.acquire(&policy));
    assert_pending!(c.poll());
    assert_eq!(limiter.waiting(), 2);
}

fn served_order(order: Order) -> Vec<usize> {
    let limiter = Limiter::new(1);
    let held = limiter.try_acquire().unwrap();
    let policy = match order {
        Order::Fifo => Policy::fifo(10),
        Order::Lifo => Policy::lifo(10),
    };
    let mut waiters: Vec<_> = (0..4)
        .map(|_| task::spawn(limiter.acquire(&policy)))
        .collect();
    for w in &mut waiters {
        assert_pending!(w.poll());
    }
    let mut served = Vec::new();
    let mut current = Some(held);
    while served.len() < 4 {
        drop(current.take());
        // Only the waiter that is served may be ready; poll every one that was woken.
        let mut ready = None;
        for (i, w) in waiters.iter_mut().enumerate() {
            if served.contains(&i) || !w.is_woken() {
                continue;
            }
            if let std::task::Poll::Ready(permit) = w.poll() {
                assert!(ready.is_none(), "two waiters served by one permit");
                ready = Some((i, permit.unwrap()));
            }
        }
        let (i, permit) = ready.expect("a released permit serves a waiter");
        served.push(i);
        current = Some(permit);
    }
    assert_eq!(limiter.waiting(), 0);
    served
}

/// FIFO serves the oldest waiter first.
#[test]
fn fifo_serves_oldest_first() {
    assert_eq!(served_order(Order::Fifo), vec![0, 1, 2, 3]);
}

/// LIFO serves the newest waiter first.
#[test]
fn lifo_serves_newest_first() {
    assert_eq!(served_order(Order::Lifo), vec![3, 2, 1, 0]);
}

/// A waiter that waits longer than the policy allows is refused with
/// `TimedOut`, after exactly the timeout, and leaves the queue.
#[tokio::test(start_paused = true)]
async fn queue_timeout_refuses_after_the_deadline() {
    for policy in [Policy::fifo(5), Policy::lifo(5)] {
        let limiter = Limiter::new(1);
        let _held = limiter.try_acquire().unwrap();
        let start = tokio::time::Instant::now();
        let err = limiter
            .acquire(&policy.timeout(Duration::from_millis(250)))
            .await
            .unwrap_err();
        assert_eq!(err.reason(), Reason::TimedOut);
        assert_eq!(start.elapsed(), Duration::from_millis(250));
        assert_eq!(err.waited(), Duration::from_millis(250));
        assert_eq!(limiter.waiting(), 0);
        assert!(err.to_string().contains("gave up"));
    }
}

/// A LIFO waiter cancelled after it was handed a permit passes it to the
/// next newest waiter instead of losing it.
#[test]
fn lifo_cancelled_after_handoff_passes_the_permit_on() {
    let limiter = Limiter::new(1);
    let held = limiter.try_acquire().unwrap();
    let policy = Policy::lifo(10);
    let mut old = task::spawn(limiter.acquire(&policy));
    let mut new = task::spawn(limiter.acquire(&policy));
    assert_pending!(old.poll());
    assert_pending!(new.poll());
    drop(held);
    // The old waiter drives the pump (it polled last? either way one is woken);
    // poll the old one: it gets the permit from the pump and hands it to `new`.
    if old.is_woken() {
        assert_pending!(old.poll());
    }
    assert!(new.is_woken());
    drop(new);
    assert!(old.is_woken());
    let permit = assert_ready!(old.poll()).unwrap();
    assert_eq!(limiter.in_flight(), 1);
    drop(permit);
    assert_eq!(limiter.in_flight(), 0);
    assert_eq!(limiter.available(), 1);
}

/// With FIFO and LIFO waiters on one limiter, each kind is served and the
/// pump never keeps a permit once the LIFO waiters are gone.
#[test]
fn lifo_pump_leaves_the_queue_with_the_last_waiter() {
    let limiter = Limiter::new(1);
    let held = limiter.try_acquire().unwrap();
    let mut lifo = task::spawn(limiter.acquire(&Policy::lifo(10)));
    assert_pending!(lifo.poll());
    drop(lifo);
    assert_eq!(limiter.waiting(), 0);
    drop(held);
    assert_eq!(limiter.available(), 1, "no pump parked the permit");
}
