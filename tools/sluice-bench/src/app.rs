//! What a command does from start to finish: resolve the workloads, run them
//! against the target (and the mock baseline), print, write the files.

use std::path::Path;

use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::admin::Target;
use crate::chart;
use crate::config::{Cli, Mode, RunMode, Stop, Workload};
use crate::progress;
use crate::report::{self, Report, RunResult};
use crate::run;
use crate::sweep;

/// Runs the command; Ok(true) if the run had errors (exit code 1).
pub fn main(cli: Cli) -> Result<bool> {
    let args = cli.mode.args();
    let workloads = args.workloads(&cli.mode)?;
    let progress = progress::enabled();
    let is_sweep = matches!(cli.mode, Mode::Sweep(_));

    let target = Target::Broker {
        bootstrap: args.bootstrap.clone(),
    };
    let results = run_all(&workloads, &target, is_sweep, progress)?;
    let baseline = match args.baseline_mock {
        Some(n) if !crate::interrupt::interrupted() => {
            let mock = Target::mock(n)?;
            if progress {
                eprintln!(
                    "sluice-bench: baseline: librdkafka mock cluster, {n} broker(s) at {}",
                    mock.bootstrap()
                );
            }
            let mut mock_workloads = workloads.clone();
            if matches!(cli.mode, Mode::Consume(_)) {
                // A new mock cluster is empty: give it as many messages as
                // were read from the target (as many as it keeps), and read those.
                for (w, r) in mock_workloads.iter_mut().zip(&results) {
                    let n = r.consume.as_ref().map_or(0, |c| c.total_consumed);
                    let fill = n.min(mock_capacity(w));
                    if fill < n {
                        eprintln!(
                            "sluice-bench: the mock cluster keeps only {MOCK_PARTITION_BYTES} bytes \
                             per partition: its consume run reads {fill} messages, not {n}"
                        );
                    }
                    prefill(w, &mock, fill)?;
                    w.stop = Stop::Messages(fill.max(1));
                }
            }
            run_all(&mock_workloads, &mock, is_sweep, progress)?
        }
        _ => Vec::new(),
    };
    let ratios: Vec<Vec<report::Ratio>> = results
        .iter()
        .zip(&baseline)
        .map(|(t, m)| report::ratios(t, m))
        .collect();

    let mut best = None;
    if is_sweep {
        println!(
            "sweep: {} points against {}\n",
            results.len(),
            args.bootstrap
        );
        print!("{}", sweep::render_table(&results, &baseline));
        for r in results
            .iter()
            .chain(&baseline)
            .filter(|r| r.error_count > 0)
        {
            println!(
                "\n{} point batch.size={} linger.ms={} acks={} message={}:",
                r.broker, r.batch_bytes, r.linger_ms, r.acks, r.message_bytes
            );
            print!("{}", report::render_errors(&r.errors));
        }
        println!();
        print!("{}", sweep::render_verdict(&results, args.p99_budget_ms));
        best = args
            .p99_budget_ms
            .and_then(|b| sweep::best_within(&results, b))
            .cloned();
    } else {
        for r in results.iter().chain(&baseline) {
            print!("{}", report::render_run(r));
            println!();
        }
        if let Some(rs) = ratios.first() {
            println!("{} vs librdkafka mock cluster:", args.bootstrap);
            print!("{}", report::render_ratios(rs));
            if results.iter().any(|r| r.e2e_latency.is_some()) {
                // Found by reading librdkafka's mock Fetch handler: an empty
                // fetch is parked for the full MaxWait and not woken by new data.
                println!(
                    "note: the mock cluster answers a Fetch that finds no data only after \
                     fetch.wait.max.ms (500 ms by default), even if data arrives meanwhile, so its \
                     end-to-end latency is dominated by that; -X fetch.wait.max.ms=N lowers it for both"
                );
            }
        }
    }

    let total_errors: u64 = results.iter().chain(&baseline).map(|r| r.error_count).sum();
    if let Some(dir) = &args.out {
        let report = Report {
            tool: "sluice-bench",
            version: env!("CARGO_PKG_VERSION"),
            mode: cli.mode.name().to_string(),
            command_line: std::env::args().collect(),
            started_unix_s: crate::workload::clock().to_unix_ns(0) / 1_000_000_000,
            results: results.clone(),
            baseline_mock: baseline.clone(),
            ratios,
            p99_budget_ms: args.p99_budget_ms,
            best_within_budget: best,
            total_errors,
        };
        write_outputs(dir, &report, is_sweep)?;
    }
    if total_errors > 0 {
        eprintln!("sluice-bench: the run had {total_errors} errors");
    }
    Ok(total_errors > 0)
}

fn run_all(
    workloads: &[Workload],
    target: &Target,
    is_sweep: bool,
    progress: bool,
) -> Result<Vec<RunResult>> {
    let mut out = Vec::with_capacity(workloads.len());
    for (i, w) in workloads.iter().enumerate() {
        let label = if is_sweep {
            format!(
                "{} {}/{} batch={} linger={} msg={} acks={}",
                target.label(),
                i + 1,
                workloads.len(),
                w.point.batch_bytes,
                w.point.linger_ms,
                w.point.message,
                w.point.acks
            )
        } else {
            format!("{} {}", target.label(), w.mode.name())
        };
        let r = run::run(w, target, &label, progress)
            .with_context(|| format!("{} run against {}", w.mode.name(), target.bootstrap()))?;
        out.push(r);
        if crate::interrupt::interrupted() {
            break;
        }
    }
    Ok(out)
}

/// What librdkafka's mock cluster keeps of a partition before dropping its
/// oldest batches (rdkafka_mock.c: max_size 5 MiB, max_cnt 100000 batches).
const MOCK_PARTITION_BYTES: u64 = 5 * 1024 * 1024;

/// How many messages of the workload's size the mock topic surely keeps:
/// half its capacity, as unkeyed batches do not spread exactly evenly, with
/// 32 bytes of record and batch overhead per message.
fn mock_capacity(w: &Workload) -> u64 {
    let per_message = w.point.message.max() as u64 + 32;
    w.partitions.max(1) as u64 * MOCK_PARTITION_BYTES / 2 / per_message
}

/// Produces `n` messages of the workload's size and keys to the mock
/// cluster's topic, unthrottled and unmeasured.
fn prefill(w: &Workload, mock: &Target, n: u64) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    let mut p = w.clone();
    p.mode = RunMode::Produce;
    p.stop = Stop::Messages(n);
    p.warmup = Duration::ZERO;
    p.point.rate = 0.0;
    p.producers = p.producers.max(1);
    // Spread unkeyed messages per message, not per sticky batch, so no
    // partition overflows the mock's per-partition limit.
    p.extra
        .push(("sticky.partitioning.linger.ms".into(), "0".into()));
    let r = run::run(&p, mock, "mock prefill", false).context("filling the mock topic")?;
    if r.error_count > 0 {
        bail!(
            "filling the mock topic: {} errors: {:?}",
            r.error_count,
            r.errors
        );
    }
    Ok(())
}

fn write_outputs(dir: &Path, report: &Report, is_sweep: bool) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let runs: Vec<&RunResult> = report.results.iter().chain(&report.baseline_mock).collect();
    report::write_csv(&dir.join("results.csv"), &runs)?;
    report::write_json(&dir.join("results.json"), report)?;
    if is_sweep {
        chart::write_chart(
            &dir.join("chart.svg"),
            &report.results,
            report.p99_budget_ms,
        )?;
    }
    Ok(())
}
