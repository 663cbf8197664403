//! A deterministic simulation harness for
//! [`tower-concurrency`](tower_concurrency)'s limits, fixed or adaptive.
//!
//! A run puts a limiter in front of a simulated backend, drives it with
//! an open-loop load for a few virtual seconds under paused tokio time,
//! and reports what a client saw: goodput, latency, refusals, timeouts,
//! and how the limit moved against the ideal one.
//!
//! # The pieces
//!
//! - [`Backend`]: a [`tower_service::Service`] with `C` workers and a FIFO
//!   queue; service times with seeded jitter, slowed by contention once
//!   more than `C` are inside, so throughput falls under overload; an
//!   optional threshold above which it answers 429 at once or never
//!   answers; a worker count that changes on schedule.
//! - [`Load`]: open-loop arrivals (Poisson or evenly spaced) at a [`Rate`]
//!   that steps over time, each with a client deadline.
//! - The stack of a run is `PolicyLimit → Deadline → Backend`: the
//!   deadline is enforced *inside* the limiter by [`Deadline`], so a
//!   timed-out request completes with an error that [`SimClassifier`] calls
//!   overload. A timeout around the whole stack would drop the limiter's
//!   response future instead, and a dropped future teaches the algorithm
//!   nothing: behind a black hole it would never learn to back off.
//! - [`Scenario`]: backend, load, duration, seed and [`Expect`]ations;
//!   [`Scenario::all`] is the built-in table.
//! - [`run`] one scenario with one [`Algorithm`] into a [`Report`]: a time
//!   series ([`Point`]s of limit, in flight, latency) and [`Figures`] for
//!   the whole run and per [`Phase`], with the settling time after each
//!   change; [`sweep`] the fixed limits to find the best one.
//! - [`check`] a report against its expectations: every figure out of
//!   bounds comes back at once, as [`Failures`].
//!
//! # Determinism
//!
//! Every random draw comes from a seeded generator written here (so a seed
//! means the same numbers whatever `rand` release is around), the runtime
//! is single-threaded and its clock paused, so the same scenario, seed and
//! algorithm give the same [`Report`], request for request.
//!
//! # Example
//!
//! ```
//! use tower_concurrency_sim::{self as sim, Algorithm, Scenario};
//!
//! let scenario = Scenario::knee();
//! let best = sim::run(&scenario, &Algorithm::Fixed(16));
//! let unlimited = sim::run(&scenario, &Algorithm::Unlimited);
//! println!("{best}{unlimited}");
//! // Past the knee a limit at the worker count keeps goodput near
//! // capacity; without one, the queue slows the workers and deadlines
//! // pass.
//! assert!(best.overall.goodput_share() > 0.9);
//! assert!(unlimited.overall.goodput_share() < 0.5);
//!
//! // The issue's targets (goodput against the best fixed limit, p99,
//! // settling) for an algorithm:
//! let aimd = sim::run(&scenario, &Algorithm::Aimd);
//! if let Err(failures) = sim::check(&aimd, &scenario.expect, Some(&best)) {
//!     println!("{failures}");
//! }
//! ```
//!
//! `cargo run --release --example simulate -- all` (from the repository root) runs
//! every scenario with every algorithm and the best fixed limit, prints
//! the figures against their targets, and draws one SVG chart per scenario.

#![forbid(unsafe_code)]
#![deny(missing_docs, unreachable_pub)]

mod backend;
mod check;
mod deadline;
mod load;
mod report;
mod rng;
mod run;
mod scenario;

pub use self::backend::{
    Backend, BackendConfig, BackendFuture, BackendStats, Jitter, Overload, OverloadAction,
    SimRequest, SimResponse,
};
pub use self::check::{check, Bounds, Check, Expect, Failure, Failures, Figure, Scope};
pub use self::deadline::{Deadline, DeadlineExceeded, DeadlineFuture};
pub use self::load::{Arrivals, Load, Rate};
pub use self::report::{Fate, Figures, PhaseReport, Point, Record, Report, Settling};
pub use self::run::{
    run, run_with, sweep, Algorithm, SimClassifier, SimStack, Sweep, FIXED_LIMITS,
};
pub use self::scenario::{Phase, Scenario, RTT};
