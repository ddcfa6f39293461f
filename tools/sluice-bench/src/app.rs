//! What a command does from start to finish: resolve the workloads, run them
//! against the target (and the mock baseline), print, write the files.

use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::admin::{self, Target};
use crate::chart;
use crate::config::{Cli, Mode, Stop, Workload};
use crate::copy;
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
    let start_mock = |n: i32| -> Result<Target> {
        let mock = Target::mock(n)?;
        if progress {
            eprintln!(
                "sluice-bench: baseline: librdkafka mock cluster, {n} broker(s) at {}",
                mock.bootstrap()
            );
        }
        Ok(mock)
    };
    let mut workloads = workloads;
    let mut mock = None;
    let mut copied = false;
    if let (Mode::Consume(_), Some(n)) = (&cli.mode, args.baseline_mock) {
        // Both read the same batches: a copy of the start of the target's
        // topic, made on each of them.
        let m = start_mock(n)?;
        for w in &mut workloads {
            *w = same_data(w, &target, &m, progress)?;
        }
        mock = Some(m);
        copied = true;
    }
    let results = run_all(&workloads, &target, is_sweep, progress)?;
    let baseline = match args.baseline_mock {
        // Started only now otherwise, so that it is idle, not there, while the
        // target is measured.
        Some(n) if !crate::interrupt::interrupted() => {
            let mock = match mock {
                Some(m) => m,
                None => start_mock(n)?,
            };
            run_all(&workloads, &mock, is_sweep, progress)?
        }
        _ => Vec::new(),
    };
    if copied && !args.keep_copy {
        for w in &workloads {
            if let Err(e) = admin::delete_topic(&target, w) {
                eprintln!("sluice-bench: could not delete the copy {}: {e:#}", w.topic);
            }
        }
    }
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
const MOCK_PARTITION_BYTES: usize = 5 * 1024 * 1024;

/// How much of each partition is copied for a consume comparison: what the
/// mock surely keeps, leaving room for one more large batch.
const SAME_DATA_PARTITION_BYTES: usize = MOCK_PARTITION_BYTES - (1 << 20);

/// Copies the start of every partition of the workload's topic on the target
/// (whole batches, up to what the mock keeps, and up to the workload's share of
/// `--messages`), byte for byte, into a new topic on both the target and the
/// mock; returns the workload that reads that topic to its end. The caller
/// deletes that topic on the target afterwards.
fn same_data(w: &Workload, target: &Target, mock: &Target, progress: bool) -> Result<Workload> {
    let Some(partitions) = admin::existing_partitions(target, w)? else {
        bail!(
            "topic {} does not exist on the target: nothing to consume",
            w.topic
        );
    };
    let starts: Vec<(i32, i64)> = admin::watermarks(target.bootstrap(), w, partitions)?
        .iter()
        .map(|&(p, lo, _)| (p, lo))
        .collect();
    let max_messages = match w.stop {
        Stop::Messages(n) => n.div_ceil(partitions.max(1) as u64),
        _ => u64::MAX,
    };
    let mut copy = w.clone();
    copy.topic = format!(
        "{}-same-{}",
        w.topic,
        crate::workload::clock().unix_now_ns() / 1_000_000
    );
    copy.partitions = partitions;
    copy.stop = Stop::EndOfTopic;
    for t in [target, mock] {
        admin::ensure_topic(t, &copy)?;
    }
    if progress {
        eprintln!(
            "sluice-bench: copying the first {} MiB of each partition of {} on the target, \
             batch for batch, to {} on the target and the mock",
            SAME_DATA_PARTITION_BYTES >> 20,
            w.topic,
            copy.topic
        );
    }
    let copied = copy::copy_prefix(
        &admin::leaders(target, w)?,
        &w.topic,
        &starts,
        SAME_DATA_PARTITION_BYTES,
        max_messages,
        &[admin::leaders(target, &copy)?, admin::leaders(mock, &copy)?],
        &copy.topic,
    )
    .context("copying the data to compare")?;
    if copied.messages == 0 {
        bail!("topic {} on the target has no messages to consume", w.topic);
    }
    eprintln!(
        "sluice-bench: both brokers hold the same {} batches ({} messages, {} bytes, {:.1} KB per batch) in {}",
        copied.batches,
        copied.messages,
        copied.bytes,
        copied.bytes as f64 / copied.batches as f64 / 1e3,
        copy.topic
    );
    Ok(copy)
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
