//! Running a scenario under paused time.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;
use tower_service::Service;

use crate::backend::{Backend, SimRequest, SimResponse};
use crate::deadline::{Deadline, DeadlineExceeded};
use crate::report::{Fate, Figures, PhaseReport, Point, Record, Report, Settling};
use crate::scenario::Scenario;
use tower_concurrency::adaptive::{
    Aimd, Classify, Gradient2, LimitAlgorithm, Outcome, Vegas, Windowed,
};
use tower_concurrency::{BoxError, InvalidLimit, Limiter, PolicyLimit, Rejected};

/// The limit a run is made with.
#[derive(Clone, Copy)]
pub enum Algorithm {
    /// A fixed limit ([`Limiter::new`]).
    Fixed(usize),
    /// No limit at all (the largest limit a [`Limiter`] takes).
    Unlimited,
    /// [`Aimd::default`] with a latency budget: its
    /// [`timeout`](Aimd::timeout) is 1.5 times the scenario's unloaded
    /// round trip, in every scenario (and inside [`Windowed`] too). AIMD
    /// only sees latency beyond its budget, and a user who knows nothing
    /// of the backend's capacity still knows how long a request should
    /// take. (Without a timeout its budget is twice the no-load round trip;
    /// the targets here were set with the timeout.)
    Aimd,
    /// [`Vegas::default`].
    Vegas,
    /// [`Gradient2::default`].
    Gradient2,
    /// [`Windowed`] with its default window, around another algorithm's
    /// defaults (not a fixed or unlimited one).
    Windowed(&'static Algorithm),
    /// What [`Limiter::adaptive_default`] builds:
    /// `Windowed<Gradient2::recommended()>` (a slow start of 1.5, a
    /// tolerance that follows the noise down to 1.08, steps near the knee
    /// damped to 0.3).
    Recommended,
    /// Any limiter, built per run.
    Custom {
        /// Its name in reports.
        name: &'static str,
        /// Builds a fresh limiter for a run of the scenario.
        build: fn(&Scenario) -> Limiter,
    },
}

impl Algorithm {
    /// The adaptive algorithms with their defaults, bare and windowed, and
    /// the recommended one.
    pub const ADAPTIVE: [Algorithm; 7] = [
        Algorithm::Aimd,
        Algorithm::Vegas,
        Algorithm::Gradient2,
        Algorithm::Windowed(&Algorithm::Aimd),
        Algorithm::Windowed(&Algorithm::Vegas),
        Algorithm::Windowed(&Algorithm::Gradient2),
        Algorithm::Recommended,
    ];

    /// Its name in reports: `aimd`, `windowed-vegas`, `fixed-16`, ...
    pub fn name(&self) -> String {
        match self {
            Algorithm::Fixed(n) => format!("fixed-{n}"),
            Algorithm::Unlimited => "unlimited".to_owned(),
            Algorithm::Aimd => "aimd".to_owned(),
            Algorithm::Vegas => "vegas".to_owned(),
            Algorithm::Gradient2 => "gradient2".to_owned(),
            Algorithm::Windowed(inner) => format!("windowed-{}", inner.name()),
            Algorithm::Recommended => "recommended".to_owned(),
            Algorithm::Custom { name, .. } => (*name).to_owned(),
        }
    }

    /// The algorithm behind an adaptive variant.
    fn algorithm(&self, scenario: &Scenario) -> Option<Box<dyn LimitAlgorithm>> {
        Some(match self {
            Algorithm::Aimd => Box::new(Aimd::default().timeout(scenario.unloaded_rtt() * 3 / 2)),
            Algorithm::Vegas => Box::new(Vegas::default()),
            Algorithm::Gradient2 => Box::new(Gradient2::default()),
            Algorithm::Windowed(inner) => Box::new(Windowed::new(inner.algorithm(scenario)?)),
            Algorithm::Fixed(_)
            | Algorithm::Unlimited
            | Algorithm::Recommended
            | Algorithm::Custom { .. } => return None,
        })
    }

    /// A fresh limiter for one run of `scenario`.
    ///
    /// # Panics
    ///
    /// For `Fixed(0)`, and for `Windowed` around a variant that is not an
    /// adaptive algorithm.
    pub fn limiter(&self, scenario: &Scenario) -> Limiter {
        match self {
            Algorithm::Fixed(n) => Limiter::new(*n),
            Algorithm::Unlimited => Limiter::new(InvalidLimit::MAX),
            Algorithm::Custom { build, .. } => build(scenario),
            Algorithm::Recommended => Limiter::adaptive_default(),
            _ => Limiter::adaptive(
                self.algorithm(scenario)
                    .unwrap_or_else(|| panic!("{} is not an adaptive algorithm", self.name())),
            ),
        }
    }
}

impl fmt::Debug for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// How the simulation's limiter classifies results: a success is a
/// success; an explicit overload answer (429/503), a missed deadline (an
/// error from [`Deadline`]) or any other error is overload. Requests the
/// limiter itself refuses never reach it.
#[derive(Debug, Clone, Copy, Default)]
pub struct SimClassifier;

impl Classify<Result<SimResponse, BoxError>> for SimClassifier {
    fn classify(&self, output: &Result<SimResponse, BoxError>) -> Outcome {
        match output {
            Ok(SimResponse::Success) => Outcome::Success,
            Ok(SimResponse::Overloaded) | Err(_) => Outcome::Overload,
        }
    }
}

/// The service stack of a run: `PolicyLimit → Deadline → Backend`.
pub type SimStack = PolicyLimit<Deadline<Backend>, SimClassifier>;

/// Runs `scenario` with `algorithm` on a fresh current-thread runtime with
/// paused time: virtual seconds take milliseconds, and the same seed gives
/// the same report.
///
/// # Panics
///
/// If called from inside a tokio runtime (which cannot block on another):
/// there, await [`run_with`] instead.
pub fn run(scenario: &Scenario, algorithm: &Algorithm) -> Report {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime");
    runtime.block_on(run_with(
        scenario,
        algorithm.name(),
        algorithm.limiter(scenario),
    ))
}

/// Runs `scenario` with `limiter`, reported under `name`.
///
/// Call it on a current-thread runtime whose time is paused (for example
/// from `#[tokio::test(start_paused = true)]`); with real time it works but
/// takes the scenario's full duration and is not deterministic.
pub async fn run_with(scenario: &Scenario, name: impl Into<String>, limiter: Limiter) -> Report {
    let start = Instant::now();
    let backend = Backend::new(&scenario.backend, scenario.seed);
    let stack: SimStack = PolicyLimit::new(
        Deadline::new(backend.clone()),
        limiter.clone(),
        scenario.policy,
    )
    .classifier(SimClassifier);
    let log = Log::default();
    let phases = scenario.phases();

    let changes = {
        let backend = backend.clone();
        let changes = scenario.backend.capacity_changes.clone();
        let end = scenario.duration;
        tokio::spawn(async move {
            for (at, workers) in changes.into_iter().filter(|&(at, _)| at < end) {
                tokio::time::sleep_until(start + at).await;
                backend.set_workers(workers);
            }
        })
    };

    let sampler = {
        let (limiter, backend, log) = (limiter.clone(), backend.clone(), log.clone());
        let (every, end) = (scenario.sample_every, scenario.duration);
        let ideals: Vec<(Duration, usize)> =
            phases.iter().map(|p| (p.start, p.ideal_limit)).collect();
        tokio::spawn(async move {
            let mut series = Vec::new();
            let mut seen = 0;
            let mut at = Duration::ZERO;
            while at < end {
                tokio::time::sleep_until(start + at).await;
                let ended_log = log.lock();
                let ended = &ended_log[seen..];
                seen = ended_log.len();
                let ok: Vec<Duration> = ended
                    .iter()
                    .filter(|r| r.fate == Fate::Success)
                    .map(Record::latency)
                    .collect();
                series.push(Point {
                    at,
                    limit: limiter.limit(),
                    in_flight: limiter.in_flight(),
                    waiting: limiter.waiting(),
                    inside: backend.inside(),
                    workers: backend.workers(),
                    ideal_limit: ideals
                        .iter()
                        .rev()
                        .find(|(s, _)| *s <= at)
                        .map_or(0, |i| i.1),
                    completed: ended.len(),
                    succeeded: ok.len(),
                    mean_latency: (!ok.is_empty())
                        .then(|| ok.iter().sum::<Duration>() / ok.len() as u32),
                    max_latency: ok.iter().max().copied(),
                });
                at += every;
            }
            series
        })
    };

    let arrivals = scenario.load.schedule(scenario.duration, scenario.seed);
    let mut requests = Vec::with_capacity(arrivals.len());
    for (id, offset) in arrivals.into_iter().enumerate() {
        if Instant::now() < start + offset {
            tokio::time::sleep_until(start + offset).await;
        }
        requests.push(tokio::spawn(request(
            stack.clone(),
            id as u64,
            start,
            scenario.load.deadline,
            log.clone(),
        )));
    }
    for r in requests {
        r.await.expect("a simulated request panicked");
    }
    changes.await.expect("the capacity schedule panicked");
    let series = sampler.await.expect("the sampler panicked");
    let requests = std::mem::take(&mut *log.lock());

    let rtt = scenario.unloaded_rtt();
    let phase_reports: Vec<PhaseReport> = phases
        .iter()
        .map(|phase| PhaseReport {
            phase: *phase,
            figures: Figures::compute(
                &requests,
                &series,
                (phase.start, phase.end),
                phase.index + 1 == phases.len(),
                phase.capacity,
            ),
            settling: Settling::compute(phase, &series, rtt),
        })
        .collect();
    let mean_capacity = phases
        .iter()
        .map(|p| p.capacity * p.length().as_secs_f64())
        .sum::<f64>()
        / scenario.duration.as_secs_f64();
    Report {
        scenario: scenario.name,
        algorithm: name.into(),
        seed: scenario.seed,
        unloaded_rtt: rtt,
        backend_p99: scenario.backend.p99(),
        overall: Figures::compute(
            &requests,
            &series,
            (Duration::ZERO, scenario.duration),
            true,
            mean_capacity,
        ),
        phases: phase_reports,
        series,
        requests,
    }
}

/// Requests that ended, in the order they ended.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<Record>>>);

impl Log {
    fn lock(&self) -> MutexGuard<'_, Vec<Record>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One client request: sent now, with its deadline, and logged when it
/// ends. The outer timeout only fires for a request still waiting for a
/// permit at its deadline (a queueing policy); once admitted, the
/// [`Deadline`] inside the limiter fires first at the same instant.
async fn request(mut stack: SimStack, id: u64, start: Instant, deadline: Duration, log: Log) {
    let issued = Instant::now();
    let deadline = issued + deadline;
    std::future::poll_fn(|cx| stack.poll_ready(cx))
        .await
        .expect("the simulated stack is always ready");
    let call = stack.call(SimRequest { id, deadline });
    let fate = match tokio::time::timeout_at(deadline, call).await {
        Ok(Ok(SimResponse::Success)) => Fate::Success,
        Ok(Ok(SimResponse::Overloaded)) => Fate::Overloaded,
        Ok(Err(e)) if e.is::<DeadlineExceeded>() => Fate::TimedOut,
        Ok(Err(e)) if e.is::<Rejected>() => Fate::Rejected,
        Ok(Err(e)) => panic!("unexpected error in the simulation: {e}"),
        Err(_) => Fate::TimedOut,
    };
    log.lock().push(Record {
        issued: issued - start,
        done: Instant::now() - start,
        fate,
    });
}

/// The fixed limits a [`sweep`] tries by default.
pub const FIXED_LIMITS: [usize; 15] = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192];

/// Runs of one scenario with a range of fixed limits.
#[derive(Debug, Clone, PartialEq)]
pub struct Sweep {
    /// Each limit and its run, in the order given.
    pub runs: Vec<(usize, Report)>,
}

impl Sweep {
    /// The limit with the most goodput over the run (the lowest such
    /// limit on a tie), and its run.
    ///
    /// # Panics
    ///
    /// If the sweep is empty.
    pub fn best(&self) -> (usize, &Report) {
        let mut best: Option<&(usize, Report)> = None;
        for run in &self.runs {
            if best.is_none_or(|b| run.1.overall.goodput > b.1.overall.goodput) {
                best = Some(run);
            }
        }
        let (limit, report) = best.expect("an empty sweep has no best limit");
        (*limit, report)
    }
}

/// Runs `scenario` with each fixed limit in `limits` (see [`FIXED_LIMITS`]),
/// on as many threads as there are cores.
pub fn sweep(scenario: &Scenario, limits: &[usize]) -> Sweep {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let next = std::sync::atomic::AtomicUsize::new(0);
    let done = Mutex::new(Vec::with_capacity(limits.len()));
    std::thread::scope(|scope| {
        for _ in 0..threads.min(limits.len()) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(&limit) = limits.get(i) else {
                    break;
                };
                let report = run(scenario, &Algorithm::Fixed(limit));
                done.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((i, limit, report));
            });
        }
    });
    let mut done = done.into_inner().unwrap_or_else(|e| e.into_inner());
    done.sort_by_key(|(i, _, _)| *i);
    Sweep {
        runs: done
            .into_iter()
            .map(|(_, limit, report)| (limit, report))
            .collect(),
    }
}
