//! Exhaustive interleaving check of the lock-free spare pool's ordering
//! (`Shared::release`, `Shared::flush_spare`, `Shared::take_spare` and the
//! waiter's entry in `Shared::wait` / `Shared::queued_slot`, in
//! src/limiter/shared.rs).
//!
//! A permit that comes back while nobody waits lands in the pool (an
//! atomic counter) instead of the semaphore, skipping the semaphore's lock.
//! The hazard is a lost wake-up: a waiter that goes to sleep in the
//! semaphore's queue while a permit sits in the pool, with nobody left to
//! move it. The protocol that rules it out:
//!
//! - a releaser: pays the debt if any (not modelled: debt 0); reads the
//!   semaphore's free permits; if it has none free, adds the permit to the
//!   semaphore; else adds it to the pool, then reads the waiters' count
//!   and, if someone waits, moves the whole pool to the semaphore;
//! - a waiter: counts itself in `waiting`, then moves the pool to the
//!   semaphore, then waits in the semaphore (taking a free permit there
//!   at once, or sleeping until one is added);
//! - a request taking a free permit: from the pool (compare and swap),
//!   else from the semaphore.
//!
//! Every operation on one atomic (or one call into the semaphore, which
//! is linearizable) is one step. The test runs every interleaving of the
//! steps of its threads, sequentially consistent as the code's `SeqCst`
//! orderings make them, and checks at the end of each that no permit was
//! lost or duplicated, and that no waiter sleeps while a permit is free
//! anywhere. The same model with the releaser's read of the waiters'
//! count removed must find the lost wake-up, which shows the check has
//! teeth.
//!
//! The waiters' count is one number here. In the code it is the sum of
//! `waiting` and per-thread shards; a waiter increments one of them and
//! the releaser reads them all after filling the pool, so the argument is
//! the same for the one a given waiter incremented.

/// The shared state: the semaphore (free permits and sleeping waiters,
/// served in order), the pool and the waiters' count.
#[derive(Clone, Debug, Default)]
struct State {
    sem_free: usize,
    sem_sleepers: Vec<usize>,
    spare: usize,
    waiting: usize,
    /// Permits held by each thread.
    held: Vec<usize>,
}

impl State {
    /// The semaphore's `add_permits`: sleepers first, in order.
    fn sem_add(&mut self, mut n: usize) {
        while n > 0 && !self.sem_sleepers.is_empty() {
            let thread = self.sem_sleepers.remove(0);
            self.held[thread] += 1;
            n -= 1;
        }
        self.sem_free += n;
    }
}

/// What a thread does, as a program of steps over its registers.
#[derive(Clone, Debug)]
enum Thread {
    /// Gives back one permit it holds.
    Release { pc: u8, second_read: bool },
    /// Waits for a permit.
    Wait { pc: u8 },
    /// Takes a free permit if there is one (`Limiter::try_acquire`).
    Take { pc: u8 },
}

/// Runs one step of thread `i`; returns false if it cannot move (done, or
/// asleep in the semaphore).
fn step(state: &mut State, threads: &mut [Thread], i: usize) -> bool {
    match &mut threads[i] {
        Thread::Release { pc, second_read } => match *pc {
            // `if self.semaphore.available_permits() == 0`
            0 => {
                state.held[i] -= 1;
                *pc = if state.sem_free == 0 { 2 } else { 3 };
                true
            }
            // `self.semaphore.add_permits(1); return;`
            2 => {
                state.sem_add(1);
                *pc = 9;
                true
            }
            // `self.spare.fetch_add(1, SeqCst);`
            3 => {
                state.spare += 1;
                *pc = if *second_read { 4 } else { 9 };
                true
            }
            // `if self.anyone_waiting() { self.flush_spare() }`
            4 => {
                *pc = if state.waiting != 0 { 5 } else { 9 };
                true
            }
            // `flush_spare`: `if self.spare.load(SeqCst) != 0`
            5 => {
                *pc = if state.spare != 0 { 6 } else { 9 };
                true
            }
            // `let n = self.spare.swap(0, SeqCst); self.semaphore.add_permits(n);`
            6 => {
                let n = std::mem::take(&mut state.spare);
                state.sem_add(n);
                *pc = 9;
                true
            }
            _ => false,
        },
        Thread::Wait { pc } => match *pc {
            // `Counted::enter`: `waiting.fetch_add(1, SeqCst)`
            0 => {
                state.waiting += 1;
                *pc = 1;
                true
            }
            // `flush_spare`: `if self.spare.load(SeqCst) != 0`
            1 => {
                *pc = if state.spare != 0 { 2 } else { 3 };
                true
            }
            // `let n = self.spare.swap(0, SeqCst); self.semaphore.add_permits(n);`
            2 => {
                let n = std::mem::take(&mut state.spare);
                state.sem_add(n);
                *pc = 3;
                true
            }
            // `self.semaphore.acquire()`: a free permit, or sleep.
            3 => {
                if state.sem_free > 0 {
                    state.sem_free -= 1;
                    state.held[i] += 1;
                } else {
                    state.sem_sleepers.push(i);
                }
                *pc = 4;
                true
            }
            _ => false,
        },
        Thread::Take { pc } => match *pc {
            // `take_spare`: `spare.fetch_update(.., |n| n.checked_sub(1))`
            0 => {
                if state.spare > 0 {
                    state.spare -= 1;
                    state.held[i] += 1;
                    *pc = 9;
                } else {
                    *pc = 1;
                }
                true
            }
            // `self.semaphore.try_acquire()`
            1 => {
                if state.sem_free > 0 {
                    state.sem_free -= 1;
                    state.held[i] += 1;
                }
                *pc = 9;
                true
            }
            _ => false,
        },
    }
}

/// Explores every interleaving from `state`; calls `check` at each end.
/// Returns the number of interleavings.
fn explore(state: &State, threads: &[Thread], check: &mut dyn FnMut(&State, &[Thread])) -> usize {
    let mut ends = 0;
    let mut moved = false;
    for i in 0..threads.len() {
        let (mut s, mut t) = (state.clone(), threads.to_vec());
        if step(&mut s, &mut t, i) {
            moved = true;
            ends += explore(&s, &t, check);
        }
    }
    if !moved {
        check(state, threads);
        ends = 1;
    }
    ends
}

/// The permits in the model: 2, held by the releasers at the start
/// (`free` more start free in the semaphore).
fn run(second_read: bool, threads: Vec<Thread>, free: usize) -> Result<usize, String> {
    let mut held = vec![0; threads.len()];
    for (i, t) in threads.iter().enumerate() {
        if matches!(t, Thread::Release { .. }) {
            held[i] = 1;
        }
    }
    let total: usize = held.iter().sum::<usize>() + free;
    let state = State {
        sem_free: free,
        held,
        ..State::default()
    };
    let threads: Vec<_> = threads
        .into_iter()
        .map(|t| match t {
            Thread::Release { .. } => Thread::Release { pc: 0, second_read },
            t => t,
        })
        .collect();
    let mut failure = None;
    let ends = explore(&state, &threads, &mut |end, threads| {
        let counted = end.sem_free + end.spare + end.held.iter().sum::<usize>();
        if counted != total {
            failure.get_or_insert(format!("{counted} permits, not {total}: {end:?}"));
        }
        let free = end.sem_free + end.spare;
        if !end.sem_sleepers.is_empty() && free > 0 {
            failure.get_or_insert(format!(
                "a waiter sleeps while {free} permit(s) are free: {end:?} {threads:?}"
            ));
        }
    });
    failure.map_or(Ok(ends), Err)
}

fn release() -> Thread {
    Thread::Release {
        pc: 0,
        second_read: true,
    }
}

fn wait() -> Thread {
    Thread::Wait { pc: 0 }
}

fn take() -> Thread {
    Thread::Take { pc: 0 }
}

/// The scenarios: waiters and releasers (and a request taking a free
/// permit) racing, from a saturated limit and from one with a free permit.
fn scenarios() -> Vec<(Vec<Thread>, usize)> {
    vec![
        (vec![release(), wait()], 0),
        (vec![release(), wait()], 1),
        (vec![release(), release(), wait()], 0),
        (vec![release(), release(), wait(), wait()], 0),
        (vec![release(), wait(), take()], 0),
        (vec![release(), release(), wait(), take()], 0),
        (vec![release(), wait(), wait()], 1),
    ]
}

#[test]
fn no_interleaving_loses_a_permit_or_a_wake_up() {
    let mut total = 0;
    for (threads, free) in scenarios() {
        let what = format!("{threads:?}, {free} free");
        total += run(true, threads, free).unwrap_or_else(|e| panic!("{what}: {e}"));
    }
    assert!(total > 1000, "{total} interleavings explored");
}

/// Without the releaser's read of the waiters' count, a permit can land in
/// the pool just after a waiter emptied it and went to sleep: the model
/// finds it.
#[test]
fn the_read_of_the_waiters_count_is_needed() {
    let found = scenarios()
        .into_iter()
        .any(|(threads, free)| run(false, threads, free).is_err());
    assert!(found, "the model must find the lost wake-up");
}
