//! Property test of the dispatcher (LIFO and partitioned waits): random
//! sequences of waiters arriving (LIFO or FIFO, of either partition or of
//! none), polls, cancellations, permits given back and limit changes, on
//! a partitioned and an unpartitioned limiter, at poll level.
//!
//! After every step: the permits the test holds are counted in flight and
//! in their partitions; `waiting` counts exactly the waiters not yet
//! served; and while in flight is at or above the limit nothing but a
//! raise of the limit makes it grow. At the end, with every permit given
//! back and the limit raised, every waiter left is served (none was lost
//! by the dispatcher's lists), and then nothing is left in flight.

use std::task::Poll;

use proptest::collection::vec;
use proptest::prelude::*;
use tokio_test::task::{spawn, Spawn};
use tower_concurrency::{Acquire, Limiter, Partition, Permit, Policy};

#[derive(Clone, Debug)]
enum Op {
    /// A waiter of partition `0`, `1` or none (`2`), LIFO or FIFO.
    Arrive(u8, bool),
    Poll(usize),
    Cancel(usize),
    Release(usize),
    SetLimit(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..3u8, any::<bool>()).prop_map(|(p, lifo)| Op::Arrive(p, lifo)),
        4 => any::<usize>().prop_map(Op::Poll),
        2 => any::<usize>().prop_map(Op::Cancel),
        3 => any::<usize>().prop_map(Op::Release),
        1 => (1..=5usize).prop_map(Op::SetLimit),
    ]
}

struct World {
    limiter: Limiter,
    parts: Vec<Partition>,
    waiters: Vec<Spawn<Acquire>>,
    held: Vec<Permit>,
}

impl World {
    fn new(partitioned: bool) -> Self {
        let (limiter, parts) = if partitioned {
            let (limiter, parts) = Limiter::new(3)
                .partitioned([("a", 0.5), ("b", 0.3)])
                .unwrap();
            (limiter, parts.to_vec())
        } else {
            (Limiter::new(3), Vec::new())
        };
        Self {
            limiter,
            parts,
            waiters: Vec::new(),
            held: Vec::new(),
        }
    }

    fn poll(&mut self, i: usize) {
        if let Poll::Ready(outcome) = self.waiters[i].poll() {
            self.held.push(outcome.expect("unbounded: never refused"));
            drop(self.waiters.remove(i));
        }
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Arrive(p, lifo) => {
                let partition = self.parts.get(p as usize).copied();
                let policy = if lifo {
                    Policy::lifo(usize::MAX)
                } else {
                    Policy::wait()
                };
                let mut waiter = spawn(self.limiter.acquire_in(&policy, partition));
                match waiter.poll() {
                    Poll::Ready(outcome) => self.held.push(outcome.expect("never refused")),
                    Poll::Pending => self.waiters.push(waiter),
                }
            }
            Op::Poll(i) if !self.waiters.is_empty() => self.poll(i % self.waiters.len()),
            Op::Cancel(i) if !self.waiters.is_empty() => {
                let i = i % self.waiters.len();
                drop(self.waiters.remove(i));
            }
            Op::Release(i) if !self.held.is_empty() => {
                let i = i % self.held.len();
                drop(self.held.remove(i));
            }
            Op::SetLimit(n) => {
                self.limiter.set_limit(n);
            }
            _ => {}
        }
    }

    fn check(&self, before: usize, op: &Op) -> Result<(), TestCaseError> {
        let limiter = &self.limiter;
        let in_flight = limiter.in_flight();
        prop_assert!(
            in_flight >= self.held.len(),
            "{in_flight} < {}",
            self.held.len()
        );
        prop_assert_eq!(limiter.waiting(), self.waiters.len());
        if !matches!(op, Op::SetLimit(_)) {
            prop_assert!(
                in_flight <= before.max(limiter.limit()),
                "in flight grew from {} to {} at limit {} on {:?}",
                before,
                in_flight,
                limiter.limit(),
                op
            );
        }
        for stats in limiter.partitions() {
            let held = self
                .held
                .iter()
                .filter(|p| p.partition() == Some(stats.partition))
                .count();
            prop_assert!(stats.in_flight >= held);
        }
        Ok(())
    }

    /// Gives everything back, raises the limit and serves every waiter.
    fn finish(mut self) -> Result<(), TestCaseError> {
        self.held.clear();
        self.limiter.set_limit(5);
        let mut rounds = 0;
        while !self.waiters.is_empty() {
            rounds += 1;
            prop_assert!(
                rounds <= 1000,
                "{} waiters never served",
                self.waiters.len()
            );
            for i in (0..self.waiters.len()).rev() {
                self.poll(i);
            }
            self.held.clear();
        }
        prop_assert_eq!(self.limiter.waiting(), 0);
        prop_assert_eq!(self.limiter.in_flight(), 0);
        prop_assert_eq!(self.limiter.available(), 5);
        for stats in self.limiter.partitions() {
            prop_assert_eq!(stats.in_flight, 0);
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn dispatch_keeps_its_counts_and_loses_no_waiter(
        partitioned in any::<bool>(),
        ops in vec(op(), 1..80),
    ) {
        let mut world = World::new(partitioned);
        for op in &ops {
            let before = world.limiter.in_flight();
            world.apply(op);
            world.check(before, op)?;
        }
        world.finish()?;
    }
}
