//! Expectations, and checking a report against them.

use std::fmt;

use crate::report::{limit, ms, Report, Settling};

/// A figure of a [`Report`] that a [`Check`] bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Figure {
    /// Goodput as a share of the best fixed limit's goodput over the same
    /// stretch (needs that run; see [`check`]).
    GoodputVsBestFixed,
    /// Goodput as a share of the backend's capacity.
    GoodputShare,
    /// p99 latency of successes over the backend's own p99.
    P99VsBackend,
    /// Unloaded round trips from a phase's start until the limit stays
    /// within ±25% of the ideal (saturated phases only). "Never" fails any
    /// bound.
    SettleRtts,
    /// Time-weighted mean limit over the ideal limit.
    MeanLimitVsIdeal,
    /// Share of requests that succeeded.
    SuccessShare,
    /// Share of requests the limiter refused.
    RejectedShare,
    /// Share of requests that timed out.
    TimedOutShare,
    /// Share of requests the backend refused as overloaded.
    OverloadedShare,
}

impl Figure {
    /// What it is, for messages.
    pub fn describe(&self) -> &'static str {
        match self {
            Figure::GoodputVsBestFixed => "goodput / best fixed limit's goodput",
            Figure::GoodputShare => "goodput / capacity",
            Figure::P99VsBackend => "p99 / backend's own p99",
            Figure::SettleRtts => "settling time (RTTs)",
            Figure::MeanLimitVsIdeal => "mean limit / ideal limit",
            Figure::SuccessShare => "share succeeded",
            Figure::RejectedShare => "share rejected by the limiter",
            Figure::TimedOutShare => "share timed out",
            Figure::OverloadedShare => "share refused by the backend",
        }
    }
}

/// Which stretch of a run a [`Check`] looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The whole run.
    Run,
    /// One phase, by index.
    Phase(usize),
    /// Every phase whose load reaches capacity, one by one.
    SaturatedPhases,
    /// Every phase, one by one.
    EveryPhase,
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Run => f.write_str("whole run"),
            Scope::Phase(i) => write!(f, "phase {i}"),
            Scope::SaturatedPhases => f.write_str("each saturated phase"),
            Scope::EveryPhase => f.write_str("each phase"),
        }
    }
}

/// An allowed range; either end may be open.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bounds {
    /// Lowest allowed value.
    pub min: Option<f64>,
    /// Highest allowed value.
    pub max: Option<f64>,
}

impl Bounds {
    /// At least `min`.
    pub fn at_least(min: f64) -> Self {
        Self {
            min: Some(min),
            max: None,
        }
    }

    /// At most `max`.
    pub fn at_most(max: f64) -> Self {
        Self {
            min: None,
            max: Some(max),
        }
    }

    /// From `min` to `max`, both included.
    pub fn between(min: f64, max: f64) -> Self {
        Self {
            min: Some(min),
            max: Some(max),
        }
    }

    /// Whether `value` is in range.
    pub fn contains(&self, value: f64) -> bool {
        self.min.is_none_or(|m| value >= m) && self.max.is_none_or(|m| value <= m)
    }
}

impl fmt::Display for Bounds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.min, self.max) {
            (Some(lo), Some(hi)) => write!(f, "{lo}..={hi}"),
            (Some(lo), None) => write!(f, ">= {lo}"),
            (None, Some(hi)) => write!(f, "<= {hi}"),
            (None, None) => f.write_str("anything"),
        }
    }
}

/// One expectation: a figure over a stretch lies within bounds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Check {
    /// The figure.
    pub figure: Figure,
    /// Over which stretch.
    pub scope: Scope,
    /// Its allowed range.
    pub bounds: Bounds,
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} [{}] {}",
            self.figure.describe(),
            self.scope,
            self.bounds
        )
    }
}

/// What a scenario's runs must show: a list of [`Check`]s.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Expect {
    /// The checks, in the order failures are reported.
    pub checks: Vec<Check>,
}

impl Expect {
    /// The targets for every adaptive algorithm:
    ///
    /// - goodput over the run ≥ 90% of the best fixed limit's, found by a
    ///   [`sweep`](crate::sweep) (the algorithm is not told the capacity);
    /// - p99 of successes ≤ 3× the backend's own p99;
    /// - in every saturated phase, the limit settles within ±25% of the
    ///   ideal within 50 unloaded round trips.
    pub fn targets() -> Self {
        Self::default()
            .check(
                Figure::GoodputVsBestFixed,
                Scope::Run,
                Bounds::at_least(0.9),
            )
            .check(Figure::P99VsBackend, Scope::Run, Bounds::at_most(3.0))
            .check(
                Figure::SettleRtts,
                Scope::SaturatedPhases,
                Bounds::at_most(50.0),
            )
    }

    /// Adds a check.
    pub fn check(mut self, figure: Figure, scope: Scope, bounds: Bounds) -> Self {
        self.checks.push(Check {
            figure,
            scope,
            bounds,
        });
        self
    }
}

/// A figure outside its bounds.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// The scenario.
    pub scenario: &'static str,
    /// The algorithm.
    pub algorithm: String,
    /// The figure.
    pub figure: Figure,
    /// The phase, or `None` for the whole run.
    pub phase: Option<usize>,
    /// Its value, or `None` if there is none (never settled, nothing
    /// succeeded, no baseline).
    pub value: Option<f64>,
    /// The range it should have been in.
    pub expected: Bounds,
    /// The figures behind the value, in words.
    pub detail: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = self
            .value
            .map_or_else(|| "none".to_owned(), |v| format!("{v:.3}"));
        let phase = self
            .phase
            .map_or_else(|| "whole run".to_owned(), |i| format!("phase {i}"));
        write!(
            f,
            "{}/{}: {} [{}] = {} (expected {}): {}",
            self.scenario,
            self.algorithm,
            self.figure.describe(),
            phase,
            value,
            self.expected,
            self.detail
        )
    }
}

/// Every figure that missed its bounds in one [`check`].
#[derive(Debug, Clone, PartialEq)]
pub struct Failures(pub Vec<Failure>);

impl fmt::Display for Failures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} figure(s) out of bounds:", self.0.len())?;
        for failure in &self.0 {
            writeln!(f, "  - {failure}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Failures {}

/// A figure's value over one stretch, and the numbers behind it.
struct Measured {
    value: Option<f64>,
    detail: String,
}

/// Compares `report` with every check of `expect` and returns *all* the
/// figures out of bounds, not only the first.
///
/// `best_fixed` is the best fixed limit's run of the same scenario (from
/// [`Sweep::best`](crate::Sweep::best)); without it,
/// [`Figure::GoodputVsBestFixed`] fails with no value.
pub fn check(
    report: &Report,
    expect: &Expect,
    best_fixed: Option<&Report>,
) -> Result<(), Failures> {
    let mut failures = Vec::new();
    for c in &expect.checks {
        let phases: Vec<Option<usize>> = match c.scope {
            Scope::Run => vec![None],
            Scope::Phase(i) => vec![Some(i)],
            Scope::EveryPhase => (0..report.phases.len()).map(Some).collect(),
            Scope::SaturatedPhases => report
                .phases
                .iter()
                .filter(|p| p.phase.saturated)
                .map(|p| Some(p.phase.index))
                .collect(),
        };
        for phase in phases {
            let m = measure(report, c.figure, phase, best_fixed);
            if !m.value.is_some_and(|v| c.bounds.contains(v)) {
                failures.push(Failure {
                    scenario: report.scenario,
                    algorithm: report.algorithm.clone(),
                    figure: c.figure,
                    phase,
                    value: m.value,
                    expected: c.bounds,
                    detail: m.detail,
                });
            }
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(Failures(failures))
    }
}

fn measure(
    report: &Report,
    figure: Figure,
    phase: Option<usize>,
    best: Option<&Report>,
) -> Measured {
    let figures = match phase {
        None => Some(&report.overall),
        Some(i) => report.phases.get(i).map(|p| &p.figures),
    };
    let Some(fi) = figures else {
        return Measured {
            value: None,
            detail: format!("the run has no phase {}", phase.unwrap_or(0)),
        };
    };
    let share = |n: u64| Measured {
        value: Some(n as f64 / fi.issued.max(1) as f64),
        detail: format!("{n} of {} requests", fi.issued),
    };
    match figure {
        Figure::GoodputVsBestFixed => {
            let best_figures = best.and_then(|b| match phase {
                None => Some((&b.overall, &b.algorithm)),
                Some(i) => b.phases.get(i).map(|p| (&p.figures, &b.algorithm)),
            });
            match best_figures {
                Some((b, name)) => Measured {
                    value: Some(fi.goodput / b.goodput),
                    detail: format!(
                        "goodput {:.1}/s vs {:.1}/s with the best fixed limit ({name})",
                        fi.goodput, b.goodput
                    ),
                },
                None => Measured {
                    value: None,
                    detail: format!(
                        "goodput {:.1}/s, but no best fixed run to compare with",
                        fi.goodput
                    ),
                },
            }
        }
        Figure::GoodputShare => Measured {
            value: Some(fi.goodput_share()),
            detail: format!(
                "goodput {:.1}/s of capacity {:.1}/s",
                fi.goodput, fi.capacity
            ),
        },
        Figure::P99VsBackend => Measured {
            value: fi
                .p99
                .map(|p| p.as_secs_f64() / report.backend_p99.as_secs_f64()),
            detail: format!(
                "p99 {} (p50 {}) vs the backend's own p99 {}; {} successes",
                ms(fi.p99),
                ms(fi.p50),
                ms(Some(report.backend_p99)),
                fi.succeeded
            ),
        },
        Figure::SettleRtts => settle(report, phase),
        Figure::MeanLimitVsIdeal => {
            let ideal = match phase {
                Some(i) => report.phases[i].phase.ideal_limit as f64,
                None => {
                    let n = report.series.len().max(1) as f64;
                    report
                        .series
                        .iter()
                        .map(|p| p.ideal_limit as f64)
                        .sum::<f64>()
                        / n
                }
            };
            Measured {
                value: Some(fi.mean_limit / ideal),
                detail: format!(
                    "mean limit {:.1} (in flight {:.1}) vs ideal {ideal:.1}",
                    fi.mean_limit, fi.mean_in_flight
                ),
            }
        }
        Figure::SuccessShare => share(fi.succeeded),
        Figure::RejectedShare => share(fi.rejected),
        Figure::TimedOutShare => share(fi.timed_out),
        Figure::OverloadedShare => share(fi.overloaded),
    }
}

fn settle(report: &Report, phase: Option<usize>) -> Measured {
    // Over the whole run: the slowest saturated phase.
    let indices: Vec<usize> = match phase {
        Some(i) => vec![i],
        None => report
            .phases
            .iter()
            .filter(|p| p.phase.saturated)
            .map(|p| p.phase.index)
            .collect(),
    };
    let mut worst: Option<(Option<f64>, String)> = None;
    for i in indices {
        let p = &report.phases[i];
        let (lo, hi) = Settling::band(p.phase.ideal_limit);
        let band = format!(
            "ideal {} (band {lo:.2}..={hi:.2}), mean limit {}, {} workers, {:.2}x load",
            p.phase.ideal_limit,
            limit(p.figures.mean_limit),
            p.phase.workers,
            p.phase.load_factor()
        );
        let (value, detail) = match p.settling {
            Settling::Settled { rtts, .. } => {
                (Some(rtts), format!("settled after {rtts:.1} RTTs; {band}"))
            }
            Settling::Never { last_limit } => (
                None,
                format!(
                    "never settled: limit {} at the end of phase {i}; {band}",
                    limit(last_limit as f64)
                ),
            ),
            Settling::NotSaturated => (
                None,
                format!("phase {i} is not saturated: no settling time; {band}"),
            ),
        };
        let worse = match &worst {
            None => true,
            Some((w, _)) => match (value, w) {
                (None, _) => w.is_some(),
                (Some(v), Some(w)) => v > *w,
                (Some(_), None) => false,
            },
        };
        if worse {
            worst = Some((value, detail));
        }
    }
    let (value, detail) = worst.unwrap_or((None, "no saturated phase".to_owned()));
    Measured { value, detail }
}
