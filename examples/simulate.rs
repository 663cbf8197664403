//! Runs the simulation scenarios with every adaptive algorithm and the best
//! fixed limit, prints their figures against the targets, and draws one
//! SVG chart per scenario.
//!
//! ```text
//! cargo run --release --example simulate -- [SCENARIO|all] [--out DIR] [--seed N | --seeds A-B]
//! cargo run --release --example simulate -- knee --out /tmp/sim
//! cargo run --release --example simulate -- all --seeds 1-30
//! ```
//!
//! SCENARIO is one of `knee`, `capacity-step`, `flash-crowd`,
//! `backpressure-429`, `black-hole`, `jitter`, `large-32`, `large-64`,
//! `large-128`, `small-slow`, `stall`, `capacity-return` (default: `all`). Charts go
//! to `target/sim/<scenario>.svg` unless `--out` says otherwise: for each
//! run, the limit, the requests in flight and the ideal limit (dashed) over
//! time on the left axis, and the mean latency of successes on the right.
//!
//! `--seeds A-B` checks robustness instead: every scenario × algorithm with
//! each seed from A to B, one cell per seed, `ok` or the figures that miss
//! (`g` goodput vs the best fixed limit, `p` p99 vs the backend's, `s0`
//! settling in phase 0 in RTTs, `-` for never, `t` share timed out, `q0`
//! share succeeded in quiet phase 0). No charts.
//!
//! `--trace ALGORITHM` (a name as in the reports: `windowed-vegas`, ...)
//! prints that algorithm's run of one scenario tick by tick instead: the
//! limit, in flight, inside the backend, workers, the ideal limit, what
//! ended and succeeded, and the mean and longest latency of the successes.

use std::error::Error;
use std::path::{Path, PathBuf};
use std::time::Duration;

use plotters::prelude::*;
use tower_concurrency_sim::{self as sim, Algorithm, Report, Scenario, Settling, FIXED_LIMITS};

struct Args {
    scenarios: Vec<Scenario>,
    out: PathBuf,
    seed: Option<u64>,
    seeds: Option<Vec<u64>>,
    trace: Option<String>,
}

fn usage() -> String {
    let names: Vec<_> = Scenario::all().iter().map(|s| s.name).collect();
    format!(
        "usage: simulate [SCENARIO|all] [--out DIR] [--seed N | --seeds A-B | --trace ALGORITHM]\nscenarios: {}",
        names.join(", ")
    )
}

fn parse() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let (mut which, mut out, mut seed, mut seeds, mut trace) =
        (None, PathBuf::from("target/sim"), None, None, None);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--out" => out = args.next().ok_or_else(usage)?.into(),
            "--seed" => {
                let n = args.next().ok_or_else(usage)?;
                seed = Some(
                    n.parse()
                        .map_err(|_| format!("not a seed: {n}\n{}", usage()))?,
                );
            }
            "--seeds" => {
                let range = args.next().ok_or_else(usage)?;
                let bad = || format!("not a range of seeds: {range}\n{}", usage());
                let (a, b) = range.split_once('-').ok_or_else(bad)?;
                let (a, b): (u64, u64) =
                    (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
                if a > b {
                    return Err(bad());
                }
                seeds = Some((a..=b).collect());
            }
            "--trace" => trace = Some(args.next().ok_or_else(usage)?),
            "-h" | "--help" => return Err(usage()),
            name if which.is_none() => which = Some(name.to_owned()),
            other => return Err(format!("unexpected argument {other}\n{}", usage())),
        }
    }
    let scenarios = match which.as_deref() {
        None | Some("all") => Scenario::all(),
        Some(name) => vec![Scenario::named(name)
            .ok_or_else(|| format!("no scenario called {name}\n{}", usage()))?],
    };
    Ok(Args {
        scenarios,
        out,
        seed,
        seeds,
        trace,
    })
}

fn main() -> Result<(), Box<dyn Error>> {
    let args = match parse() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    if let Some(seeds) = &args.seeds {
        robustness(&args.scenarios, seeds);
        return Ok(());
    }
    if let Some(name) = &args.trace {
        let algorithm = Algorithm::ADAPTIVE
            .iter()
            .find(|a| a.name() == *name)
            .ok_or_else(|| format!("no adaptive algorithm called {name}"))?;
        for scenario in &args.scenarios {
            let scenario = scenario.clone().with_seed(args.seed.unwrap_or(1));
            trace(&scenario, algorithm);
        }
        return Ok(());
    }
    std::fs::create_dir_all(&args.out)?;
    let (mut runs, mut passed) = (0, 0);
    for mut scenario in args.scenarios {
        if let Some(seed) = args.seed {
            scenario = scenario.with_seed(seed);
        }
        describe(&scenario);

        let sweep = sim::sweep(&scenario, &FIXED_LIMITS);
        let (best_limit, best) = sweep.best();
        let line: Vec<String> = sweep
            .runs
            .iter()
            .map(|(limit, r)| format!("{limit}: {:.0}", r.overall.goodput))
            .collect();
        println!("fixed limits (goodput/s): {}", line.join(", "));
        println!(
            "best fixed limit: {best_limit} ({:.1}/s)\n",
            best.overall.goodput
        );

        let reports: Vec<Report> = std::thread::scope(|scope| {
            let handles: Vec<_> = Algorithm::ADAPTIVE
                .iter()
                .map(|a| {
                    let scenario = &scenario;
                    scope.spawn(move || sim::run(scenario, a))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("a run panicked"))
                .collect()
        });

        println!(
            "{:<20} {:>9} {:>7} {:>6} {:>7} {:>7} {:>6} {:>6} {:>6} {:>6}  {:<20} {:<20} result",
            "algorithm",
            "goodput/s",
            "vs best",
            "% cap",
            "p50",
            "p99",
            "p99/be",
            "rej%",
            "t/o%",
            "429%",
            "mean limit/phase",
            "settle RTTs/phase",
        );
        row(best, best, None);
        let mut failures = Vec::new();
        for report in &reports {
            let outcome = sim::check(report, &scenario.expect, Some(best));
            runs += 1;
            match &outcome {
                Ok(()) => passed += 1,
                Err(f) => failures.extend(f.0.iter().cloned()),
            }
            row(report, best, Some(outcome.is_ok()));
        }
        if !failures.is_empty() {
            println!("\nmissed targets:");
            for f in &failures {
                println!("  - {f}");
            }
        }
        let path = args.out.join(format!("{}.svg", scenario.name));
        let mut charted = vec![best];
        charted.extend(reports.iter());
        chart(&scenario, &charted, &path)?;
        println!("\nchart: {}\n", path.display());
    }
    println!("{passed} of {runs} adaptive runs meet every target");
    Ok(())
}

/// Every scenario × adaptive algorithm with each seed: one line per
/// algorithm and scenario, one cell per seed (`ok`, or the figures that
/// miss: `g` goodput vs best fixed, `p` p99 vs the backend's, `s` the
/// slowest settling in RTTs, `t` share timed out, `q` share succeeded in
/// a quiet phase).
fn robustness(scenarios: &[Scenario], seeds: &[u64]) {
    let (mut runs, mut passed) = (0, 0);
    for scenario in scenarios {
        let runs_by_seed: Vec<(Report, Vec<Report>)> = seeds
            .iter()
            .map(|&seed| {
                let scenario = scenario.clone().with_seed(seed);
                let best = sim::sweep(&scenario, &FIXED_LIMITS).best().1.clone();
                let reports = std::thread::scope(|scope| {
                    let handles: Vec<_> = Algorithm::ADAPTIVE
                        .iter()
                        .map(|a| {
                            let scenario = &scenario;
                            scope.spawn(move || sim::run(scenario, a))
                        })
                        .collect();
                    handles
                        .into_iter()
                        .map(|h| h.join().expect("a run panicked"))
                        .collect()
                });
                (best, reports)
            })
            .collect();
        println!("=== {} (seeds {:?})", scenario.name, seeds);
        for (i, algorithm) in Algorithm::ADAPTIVE.iter().enumerate() {
            let cells: Vec<String> = runs_by_seed
                .iter()
                .map(|(best, reports)| {
                    let report = &reports[i];
                    runs += 1;
                    match sim::check(report, &scenario.expect, Some(best)) {
                        Ok(()) => {
                            passed += 1;
                            "ok".to_owned()
                        }
                        Err(f) => {
                            f.0.iter()
                                .map(|f| {
                                    let v = f.value.map_or("-".to_owned(), |v| format!("{v:.2}"));
                                    let tag = match f.figure {
                                        sim::Figure::GoodputVsBestFixed => "g",
                                        sim::Figure::P99VsBackend => "p",
                                        sim::Figure::SettleRtts => "s",
                                        sim::Figure::TimedOutShare => "t",
                                        sim::Figure::SuccessShare => "q",
                                        _ => "?",
                                    };
                                    let phase = f.phase.map_or(String::new(), |p| p.to_string());
                                    format!("{tag}{phase}={v}")
                                })
                                .collect::<Vec<_>>()
                                .join(",")
                        }
                    }
                })
                .collect();
            println!("  {:<20} {}", algorithm.name(), cells.join(" | "));
        }
    }
    println!("{passed} of {runs} adaptive runs meet every target");
}

/// One run, tick by tick.
fn trace(scenario: &Scenario, algorithm: &Algorithm) {
    describe(scenario);
    let report = sim::run(scenario, algorithm);
    println!(
        "{:>7} {:>5} {:>5} {:>6} {:>7} {:>5} {:>5} {:>4} {:>7} {:>7}",
        "at ms", "limit", "in", "inside", "workers", "ideal", "ended", "ok", "mean", "max"
    );
    for p in &report.series {
        println!(
            "{:>7} {:>5} {:>5} {:>6} {:>7} {:>5} {:>5} {:>4} {:>7} {:>7}",
            p.at.as_millis(),
            p.limit,
            p.in_flight,
            p.inside,
            p.workers,
            p.ideal_limit,
            p.completed,
            p.succeeded,
            millis(p.mean_latency),
            millis(p.max_latency),
        );
    }
    let best = sim::sweep(scenario, &FIXED_LIMITS).best().1.clone();
    row(&best, &best, None);
    row(
        &report,
        &best,
        Some(sim::check(&report, &scenario.expect, Some(&best)).is_ok()),
    );
}

fn describe(scenario: &Scenario) {
    println!("=== {}: {}", scenario.name, scenario.summary);
    println!(
        "backend: {} workers, service time {} ms ({:?}), contention {}, overload {:?}; \
         own p99 {} ms; deadline {} ms; seed {}",
        scenario.backend.workers,
        scenario.backend.service_time.as_millis(),
        scenario.backend.jitter,
        scenario.backend.contention,
        scenario.backend.overload,
        scenario.backend.p99().as_millis(),
        scenario.load.deadline.as_millis(),
        scenario.seed,
    );
    for p in scenario.phases() {
        println!(
            "  phase {}: {:.1}-{:.1} s, {} workers, capacity {:.0}/s, offered {:.0}/s ({:.2}x), ideal limit {}{}",
            p.index,
            p.start.as_secs_f64(),
            p.end.as_secs_f64(),
            p.workers,
            p.capacity,
            p.offered,
            p.load_factor(),
            p.ideal_limit,
            if p.saturated { "" } else { " (not saturated)" },
        );
    }
    println!("targets:");
    for c in &scenario.expect.checks {
        println!("  {c}");
    }
}

fn millis(d: Option<Duration>) -> String {
    d.map_or_else(|| "-".to_owned(), |d| format!("{}ms", d.as_millis()))
}

fn row(report: &Report, best: &Report, passed: Option<bool>) {
    let o = &report.overall;
    let limits: Vec<String> = report
        .phases
        .iter()
        .map(|p| format!("{:.1}", p.figures.mean_limit))
        .collect();
    let settles: Vec<String> = report
        .phases
        .iter()
        .map(|p| match p.settling {
            Settling::NotSaturated => "-".to_owned(),
            Settling::Settled { rtts, .. } => format!("{rtts:.1}"),
            Settling::Never { .. } => "never".to_owned(),
        })
        .collect();
    let verdict = match passed {
        None => "(best fixed)".to_owned(),
        Some(true) => "PASS".to_owned(),
        Some(false) => "FAIL".to_owned(),
    };
    println!(
        "{:<20} {:>9.1} {:>7} {:>6.1} {:>7} {:>7} {:>6} {:>6.1} {:>6.1} {:>6.1}  {:<20} {:<20} {}",
        report.algorithm,
        o.goodput,
        format!("{:.2}", o.goodput / best.overall.goodput),
        100.0 * o.goodput_share(),
        millis(o.p50),
        millis(o.p99),
        report
            .p99_vs_backend()
            .map_or_else(|| "-".to_owned(), |x| format!("{x:.2}")),
        100.0 * o.rejected_share(),
        100.0 * o.timed_out_share(),
        100.0 * o.overloaded_share(),
        limits.join("/"),
        settles.join("/"),
        verdict,
    );
}

fn chart(scenario: &Scenario, reports: &[&Report], path: &Path) -> Result<(), Box<dyn Error>> {
    let end = scenario.duration.as_secs_f64();
    let root = SVGBackend::new(path, (1200, 280 * reports.len() as u32)).into_drawing_area();
    root.fill(&WHITE)?;
    for (area, report) in root.split_evenly((reports.len(), 1)).iter().zip(reports) {
        let points = &report.series;
        let top = points
            .iter()
            .map(|p| p.limit.max(p.in_flight).max(p.ideal_limit))
            .max()
            .unwrap_or(1) as f64
            * 1.1;
        let slowest = points
            .iter()
            .filter_map(|p| p.mean_latency)
            .max()
            .unwrap_or(scenario.unloaded_rtt())
            .as_secs_f64()
            * 1000.0
            * 1.1;
        let o = &report.overall;
        let caption = format!(
            "{} / {}: goodput {:.0}/s ({:.0}% of capacity), p99 {}, rejected {:.0}%, timed out {:.0}%",
            report.scenario,
            report.algorithm,
            o.goodput,
            100.0 * o.goodput_share(),
            millis(o.p99),
            100.0 * o.rejected_share(),
            100.0 * o.timed_out_share(),
        );
        let mut chart = ChartBuilder::on(area)
            .caption(caption, ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(50)
            .right_y_label_area_size(60)
            .build_cartesian_2d(0f64..end, 0f64..top)?
            .set_secondary_coord(0f64..end, 0f64..slowest);
        chart
            .configure_mesh()
            .x_desc("virtual time (s)")
            .y_desc("requests")
            .light_line_style(WHITE)
            .draw()?;
        chart
            .configure_secondary_axes()
            .y_desc("mean latency (ms)")
            .draw()?;

        let at = |p: &sim::Point| p.at.as_secs_f64();
        chart
            .draw_secondary_series(LineSeries::new(
                points
                    .iter()
                    .filter_map(|p| p.mean_latency.map(|l| (at(p), l.as_secs_f64() * 1000.0))),
                MAGENTA.mix(0.5),
            ))?
            .label("mean latency (right)")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], MAGENTA.mix(0.5)));
        chart
            .draw_series(LineSeries::new(
                points.iter().map(|p| (at(p), p.in_flight as f64)),
                GREEN.mix(0.8),
            ))?
            .label("in flight")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], GREEN));
        chart
            .draw_series(DashedLineSeries::new(
                points.iter().map(|p| (at(p), p.ideal_limit as f64)),
                6,
                4,
                RED.stroke_width(2),
            ))?
            .label("ideal limit")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED.stroke_width(2)));
        chart
            .draw_series(LineSeries::new(
                points.iter().map(|p| (at(p), p.limit as f64)),
                BLUE.stroke_width(2),
            ))?
            .label("limit")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(2)));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
    }
    root.present()?;
    Ok(())
}
