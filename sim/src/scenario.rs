//! Scenarios: a backend, a load, a duration, a seed and what to expect.

use std::time::Duration;

use crate::backend::{BackendConfig, Jitter, Overload, OverloadAction};
use crate::check::{Bounds, Expect, Figure, Scope};
use crate::load::{Arrivals, Load, Rate};
use tower_concurrency::Policy;

/// The unloaded round trip of every built-in scenario: one mean service
/// time. A phase of 100 of them is 5 s of virtual time.
pub const RTT: Duration = Duration::from_millis(50);

/// One simulated situation: run it with [`run`](crate::run) and any
/// [`Algorithm`](crate::Algorithm), then [`check`](crate::check) the
/// [`Report`](crate::Report) against [`expect`](Self::expect).
///
/// [`Scenario::all`] is the table of built-in scenarios; their fields are
/// public so a variant is one struct update away.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// Short name, as on the command line (`knee`, `capacity-step`, ...).
    pub name: &'static str,
    /// What it shows, in one sentence.
    pub summary: &'static str,
    /// The backend.
    pub backend: BackendConfig,
    /// The offered load.
    pub load: Load,
    /// How the limiter admits when full. The built-in scenarios refuse at
    /// once ([`Policy::reject`]): under open-loop overload a queue in front
    /// only adds its wait to every request's latency.
    pub policy: Policy,
    /// Virtual time the load runs for.
    pub duration: Duration,
    /// Seed of every random draw (arrivals, jitter).
    pub seed: u64,
    /// How often the time series is sampled.
    pub sample_every: Duration,
    /// What a run must show.
    pub expect: Expect,
}

/// A stretch of a scenario in which the worker count and the offered rate
/// stay the same. Phases start at zero, at every capacity or rate change,
/// and at the start and the end of every stall.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Phase {
    /// Its position, from 0.
    pub index: usize,
    /// Offset of its start.
    pub start: Duration,
    /// Offset of its end (the next phase's start, or the duration).
    pub end: Duration,
    /// Backend workers (`C`).
    pub workers: usize,
    /// Offered requests per second.
    pub offered: f64,
    /// What the backend completes per second when kept busy without a
    /// queue: `min(C, overload threshold) / service time`.
    pub capacity: f64,
    /// The ideal limit, by Little's law: capacity × unloaded latency (the
    /// workers, or the overload threshold if lower), plus a small queue
    /// allowance of `ceil(C / 8)` when the workers are the bottleneck (none
    /// when an overload threshold is, since one more is refused or lost).
    pub ideal_limit: usize,
    /// Whether the offered load reaches the capacity. Only then does a
    /// limit have to find the ideal: below it, any limit above the load's
    /// own concurrency serves everyone.
    pub saturated: bool,
}

impl Phase {
    /// Its length.
    pub fn length(&self) -> Duration {
        self.end - self.start
    }

    /// Offered load as a multiple of capacity.
    pub fn load_factor(&self) -> f64 {
        self.offered / self.capacity
    }
}

impl Scenario {
    /// Every built-in scenario, in a fixed order.
    ///
    /// | name | backend | load | phases |
    /// |---|---|---|---|
    /// | `knee` | 16 workers, contention 0.5 | 1.5× capacity | 1 × 100 RTTs |
    /// | `capacity-step` | 16 → 4 → 16 workers | 400/s (1.25× of 16) | 3 × 100 RTTs |
    /// | `flash-crowd` | 16 workers | 0.5× → 3× → 0.5× | 3 × 100 RTTs |
    /// | `backpressure-429` | 16 workers, 429 above 5 inside | 1.5× of 5 | 1 × 100 RTTs |
    /// | `black-hole` | 16 workers, no answer above 5 inside | 1.5× of 5 | 1 × 100 RTTs |
    /// | `jitter` | 16 workers, log-normal σ 0.6 | 1.5× capacity | 1 × 100 RTTs |
    /// | `large-32`, `large-64`, `large-128` | 32, 64, 128 workers | 1.5× capacity | 1 × 100 RTTs |
    /// | `small-slow` | 3 workers, no contention | 1.5× capacity | 1 × 100 RTTs |
    /// | `stall` | 16 workers, stalled for 200 ms at 2 s | 1.5× capacity, 150 ms deadline | 3 phases, 100 RTTs in all |
    /// | `capacity-return` | 32 → 8 → 32 workers | 1.25× of 32 | 3 × 40 RTTs |
    ///
    /// All have a 50 ms mean service time ([`RTT`]), Poisson arrivals, a
    /// refusing policy, a client deadline of 1 s (500 ms behind the black
    /// hole) and mild jitter (σ 0.1) unless said otherwise, and expect
    /// [`Expect::targets`] plus what their own constructor adds.
    pub fn all() -> Vec<Scenario> {
        vec![
            Self::knee(),
            Self::capacity_step(),
            Self::flash_crowd(),
            Self::backpressure_429(),
            Self::black_hole(),
            Self::jitter(),
            Self::large(32),
            Self::large(64),
            Self::large(128),
            Self::small_slow(),
            Self::stall(),
            Self::capacity_return(),
        ]
    }

    /// The built-in scenario called `name`.
    pub fn named(name: &str) -> Option<Scenario> {
        Self::all().into_iter().find(|s| s.name == name)
    }

    fn base(name: &'static str, summary: &'static str) -> Self {
        let mut backend = BackendConfig::new(16, RTT);
        backend.jitter = Jitter::LogNormal { sigma: 0.1 };
        backend.contention = 0.5;
        let capacity = backend.capacity(16);
        Self {
            name,
            summary,
            backend,
            load: Load {
                rate: Rate::constant(1.5 * capacity),
                arrivals: Arrivals::Poisson,
                deadline: 20 * RTT,
            },
            policy: Policy::reject(),
            duration: 100 * RTT,
            seed: 1,
            sample_every: RTT / 5,
            expect: Expect::targets(),
        }
    }

    /// Goodput past the knee: 1.5× the capacity of 16 workers whose queue
    /// slows them (contention 0.5).
    pub fn knee() -> Self {
        Self::base(
            "knee",
            "16 workers slowed by their own queue, offered 1.5x their capacity",
        )
    }

    /// The backend loses three quarters of its workers and gets them back:
    /// 16 → 4 → 16, under a steady 400/s (1.25× the capacity of 16, 5× the
    /// capacity of 4).
    pub fn capacity_step() -> Self {
        let mut s = Self::base(
            "capacity-step",
            "workers drop 16 -> 4 -> 16 under a steady 1.25x load",
        );
        s.backend.capacity_changes = vec![(100 * RTT, 4), (200 * RTT, 16)];
        s.load.rate = Rate::constant(1.25 * s.backend.capacity(16));
        s.duration = 300 * RTT;
        s
    }

    /// A flash crowd: half the capacity, then three times it, then half.
    /// Besides the targets, the quiet phases must serve at least 95% of
    /// their requests (a limit must come back up after the crowd).
    pub fn flash_crowd() -> Self {
        let mut s = Self::base("flash-crowd", "load 0.5x -> 3x -> 0.5x of capacity");
        let capacity = s.backend.capacity(16);
        s.load.rate = Rate::flash_crowd(0.5 * capacity, 3.0 * capacity, 100 * RTT, 100 * RTT);
        s.duration = 300 * RTT;
        s.expect = s
            .expect
            .check(
                Figure::SuccessShare,
                Scope::Phase(0),
                Bounds::at_least(0.95),
            )
            .check(
                Figure::SuccessShare,
                Scope::Phase(2),
                Bounds::at_least(0.95),
            );
        s
    }

    /// A backend that answers 429 at once (1 ms) when 5 are inside, though
    /// it has 16 workers: the ideal limit is 5, and only the 429s say so.
    pub fn backpressure_429() -> Self {
        let mut s = Self::base(
            "backpressure-429",
            "16 workers, but an explicit 429 when 5 are inside; 1.5x of that",
        );
        s.backend.overload = Some(Overload {
            max_inside: 5,
            action: OverloadAction::Refuse {
                latency: Duration::from_millis(1),
            },
        });
        s.load.rate = Rate::constant(1.5 * s.backend.capacity(16));
        s
    }

    /// A backend that never answers what arrives when 5 are inside: only
    /// the client's deadline (500 ms, 10 RTTs) ends those requests, and only
    /// a timeout inside the limiter tells the algorithm. Besides the
    /// targets, at most 5% of requests may time out.
    pub fn black_hole() -> Self {
        let mut s = Self::base(
            "black-hole",
            "no answer at all when 5 are inside; 1.5x of that; 500 ms deadline",
        );
        s.backend.overload = Some(Overload {
            max_inside: 5,
            action: OverloadAction::BlackHole,
        });
        s.load.rate = Rate::constant(1.5 * s.backend.capacity(16));
        s.load.deadline = 10 * RTT;
        s.expect = s
            .expect
            .check(Figure::TimedOutShare, Scope::Run, Bounds::at_most(0.05));
        s
    }

    /// Heavy service-time jitter (log-normal σ 0.6: p99 3.4× the mean)
    /// at 1.5× capacity: latency alone says little about the queue.
    pub fn jitter() -> Self {
        let mut s = Self::base(
            "jitter",
            "heavy service-time jitter (log-normal sigma 0.6) at 1.5x capacity",
        );
        s.backend.jitter = Jitter::LogNormal { sigma: 0.6 };
        s
    }

    /// A backend of `workers` workers (32, 64 or 128 for the built-in
    /// ones), far above the initial limit of every algorithm (10), at 1.5×
    /// its capacity: besides the targets, the limit must settle within
    /// ±25% of the ideal within 40 round trips (2 s).
    ///
    /// # Panics
    ///
    /// For a worker count other than 32, 64 or 128 (a scenario's name is
    /// static).
    pub fn large(workers: usize) -> Self {
        let name = match workers {
            32 => "large-32",
            64 => "large-64",
            128 => "large-128",
            other => panic!("no built-in large scenario with {other} workers"),
        };
        let mut s = Self::base(
            name,
            "many workers, far above the initial limit, 1.5x capacity",
        );
        s.backend.workers = workers;
        s.load.rate = Rate::constant(1.5 * s.backend.capacity(workers));
        s.expect = s
            .expect
            .check(Figure::SettleRtts, Scope::Phase(0), Bounds::at_most(40.0));
        s
    }

    /// Three workers that only slow down (no refusal, no contention), below
    /// the initial limit of every algorithm (10), at 1.5× their capacity:
    /// the first round trips come back queued behind the initial limit.
    /// The limit must settle within ±25% of the ideal (4) within 40 round
    /// trips (2 s), with p99 at most 3× the backend's, and goodput at least
    /// 80% of capacity. Not against the best fixed limit: a backend that
    /// never slows its workers rewards any queue with goodput, so the best
    /// fixed limit by goodput is the largest (with 3.4× the backend's p99);
    /// a limit is there for the latency.
    pub fn small_slow() -> Self {
        let mut s = Self::base(
            "small-slow",
            "3 workers that only slow down, below the initial limit, 1.5x capacity",
        );
        s.backend.workers = 3;
        s.backend.contention = 0.0;
        s.load.rate = Rate::constant(1.5 * s.backend.capacity(3));
        s.expect = Expect::default()
            .check(Figure::GoodputShare, Scope::Run, Bounds::at_least(0.8))
            .check(Figure::P99VsBackend, Scope::Run, Bounds::at_most(3.0))
            .check(Figure::SettleRtts, Scope::Phase(0), Bounds::at_most(40.0));
        s
    }

    /// The backend stalls for 200 ms (4 round trips) at 2 s (phase 1):
    /// nothing finishes, and with a 150 ms client deadline whatever was
    /// inside times out. One stall is no reason to keep the limit down:
    /// after it (phase 2), the limit must be back within ±25% of the ideal
    /// within 20 round trips (1 s); and the targets for goodput and p99 hold
    /// (the limit settles before the stall too).
    pub fn stall() -> Self {
        let mut s = Self::base(
            "stall",
            "16 workers stalled for 200 ms at 2 s, 150 ms deadline, 1.5x capacity",
        );
        s.backend.stalls = vec![(40 * RTT, 4 * RTT)];
        s.load.deadline = 3 * RTT;
        s.expect = Expect::default()
            .check(
                Figure::GoodputVsBestFixed,
                Scope::Run,
                Bounds::at_least(0.9),
            )
            .check(Figure::P99VsBackend, Scope::Run, Bounds::at_most(3.0))
            .check(Figure::SettleRtts, Scope::Phase(0), Bounds::at_most(50.0))
            .check(Figure::SettleRtts, Scope::Phase(2), Bounds::at_most(20.0));
        s
    }

    /// Capacity comes back after a drop: 32 → 8 → 32 workers, 2 s each,
    /// under a steady 1.25× of 32's capacity. Besides the targets, the limit
    /// must settle within 20 round trips (1 s) of each change.
    pub fn capacity_return() -> Self {
        let mut s = Self::base(
            "capacity-return",
            "workers drop 32 -> 8 -> 32 under a steady 1.25x load",
        );
        s.backend.workers = 32;
        s.backend.capacity_changes = vec![(40 * RTT, 8), (80 * RTT, 32)];
        s.load.rate = Rate::constant(1.25 * s.backend.capacity(32));
        s.duration = 120 * RTT;
        s.expect = s.expect.check(
            Figure::SettleRtts,
            Scope::SaturatedPhases,
            Bounds::at_most(20.0),
        );
        s
    }

    /// The same scenario with another seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// The unloaded round trip: the backend's mean service time. Settling
    /// times are counted in these.
    pub fn unloaded_rtt(&self) -> Duration {
        self.backend.service_time
    }

    /// The phases: from zero, from every capacity or rate change, and from
    /// the start and the end of every stall.
    pub fn phases(&self) -> Vec<Phase> {
        let mut starts: Vec<Duration> = std::iter::once(Duration::ZERO)
            .chain(self.backend.capacity_changes.iter().map(|&(at, _)| at))
            .chain(
                self.backend
                    .stalls
                    .iter()
                    .flat_map(|&(at, length)| [at, at + length]),
            )
            .chain(self.load.rate.changes())
            .filter(|&at| at < self.duration)
            .collect();
        starts.sort();
        starts.dedup();
        let ends: Vec<Duration> = starts
            .iter()
            .skip(1)
            .copied()
            .chain([self.duration])
            .collect();
        starts
            .iter()
            .zip(ends)
            .enumerate()
            .map(|(index, (&start, end))| {
                let workers = self.backend.workers_at(start);
                let bottleneck = self.backend.bottleneck(workers);
                let threshold_binds = self
                    .backend
                    .overload
                    .is_some_and(|o| o.max_inside <= workers);
                let allowance = if threshold_binds {
                    0
                } else {
                    workers.div_ceil(8)
                };
                let capacity = self.backend.capacity(workers);
                let offered = self.load.rate.at(start);
                Phase {
                    index,
                    start,
                    end,
                    workers,
                    offered,
                    capacity,
                    ideal_limit: bottleneck + allowance,
                    saturated: offered >= capacity * 0.999,
                }
            })
            .collect()
    }

    /// The phase that `offset` falls in (the last one past the end).
    pub fn phase_at(&self, offset: Duration) -> Phase {
        let phases = self.phases();
        phases
            .iter()
            .rev()
            .find(|p| p.start <= offset)
            .copied()
            .unwrap_or(phases[0])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_and_ideals() {
        let s = Scenario::capacity_step();
        let phases = s.phases();
        assert_eq!(phases.len(), 3);
        assert_eq!(
            phases.iter().map(|p| p.workers).collect::<Vec<_>>(),
            [16, 4, 16]
        );
        assert_eq!(
            phases.iter().map(|p| p.ideal_limit).collect::<Vec<_>>(),
            [18, 5, 18]
        );
        assert!(phases.iter().all(|p| p.saturated));
        assert_eq!(phases[1].start, Duration::from_secs(5));
        assert_eq!(phases[2].end, Duration::from_secs(15));

        let f = Scenario::flash_crowd().phases();
        assert_eq!(
            f.iter().map(|p| p.saturated).collect::<Vec<_>>(),
            [false, true, false]
        );
        assert!((f[1].load_factor() - 3.0).abs() < 1e-9);

        for name in ["backpressure-429", "black-hole"] {
            let p = Scenario::named(name).unwrap().phases();
            assert_eq!((p.len(), p[0].ideal_limit), (1, 5), "{name}");
            assert_eq!(p[0].capacity, 100.0);
        }
        let names: Vec<_> = Scenario::all().iter().map(|s| s.name).collect();
        assert_eq!(
            names,
            [
                "knee",
                "capacity-step",
                "flash-crowd",
                "backpressure-429",
                "black-hole",
                "jitter",
                "large-32",
                "large-64",
                "large-128",
                "small-slow",
                "stall",
                "capacity-return",
            ]
        );
    }
}
