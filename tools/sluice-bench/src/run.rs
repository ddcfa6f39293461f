//! One run of a workload against one broker: set up the topic and clients,
//! start the load on a common clock, wait for it to finish (and consumers to
//! drain), and turn the counters into a [`RunResult`].

use std::sync::atomic::Ordering;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::admin::{self, Target};
use crate::config::{RunMode, Stop, Workload};
use crate::consume;
use crate::produce;
use crate::progress::Progress;
use crate::report::{ConsumeStats, ProduceStats, RunResult, TxnStats};
use crate::workload::{clock, Shared};

/// Lead time between the clients being ready and the first intended send,
/// so every producer sees the schedule start in the future.
const START_LEAD: Duration = Duration::from_millis(20);

pub fn run(w: &Workload, target: &Target, label: &str, progress_on: bool) -> Result<RunResult> {
    let mut w = w.clone();
    w.bootstrap = target.bootstrap().to_string();
    let partitions = admin::ensure_topic(target, &w)?;
    let shared = Arc::new(Shared::default());

    // Where consumers start, and how many messages consume mode expects.
    let (assignments, expected) = match w.mode {
        RunMode::Produce => (Vec::new(), None),
        RunMode::Consume => {
            let wm = admin::watermarks(&w.bootstrap, &w, partitions)?;
            let available: i64 = wm.iter().map(|&(_, lo, hi)| (hi - lo).max(0)).sum();
            let starts: Vec<(i32, i64)> = wm.iter().map(|&(p, lo, _)| (p, lo)).collect();
            let expected = match w.stop {
                Stop::Messages(n) => Some(n),
                Stop::EndOfTopic => Some(available as u64),
                Stop::Duration(_) => None,
            };
            (consume::split(&starts, w.consumers), expected)
        }
        RunMode::E2e => {
            // Start at the high watermarks: only this run's messages are read.
            let wm = admin::watermarks(&w.bootstrap, &w, partitions)?;
            let starts: Vec<(i32, i64)> = wm.iter().map(|&(p, _, hi)| (p, hi)).collect();
            (consume::split(&starts, w.consumers), None)
        }
    };
    let producers = if w.mode == RunMode::Consume {
        0
    } else {
        w.producers
    };
    let parties = producers + assignments.len() + 1;
    let ready = Arc::new(Barrier::new(parties));
    let go = Arc::new(Barrier::new(parties));

    let consumer_threads = consume::spawn(
        &w,
        &shared,
        assignments,
        consume::Options {
            e2e: w.mode == RunMode::E2e,
            limit: if w.mode == RunMode::Consume {
                expected
            } else {
                None
            },
        },
        &ready,
        &go,
    );
    let producer_threads = if producers > 0 {
        produce::spawn(&w, &shared, &ready, &go)
    } else {
        Vec::new()
    };

    ready.wait();
    let start = clock().now_ns() + START_LEAD.as_nanos() as u64;
    // Consume mode has nothing to warm up: it reads what is there.
    let warmup = if w.mode == RunMode::Consume {
        0
    } else {
        w.warmup.as_nanos() as u64
    };
    shared.start_ns.store(start, Ordering::Relaxed);
    shared
        .warmup_end_ns
        .store(start + warmup, Ordering::Relaxed);
    let failed = shared.setup_failed.load(Ordering::Relaxed);
    if failed {
        shared.stop.store(true, Ordering::Relaxed);
    }
    go.wait();
    if failed {
        join_all(producer_threads);
        join_all(consumer_threads);
        let errors: Vec<String> = shared.errors.snapshot().into_keys().collect();
        bail!("clients could not start: {}", errors.join("; "));
    }
    let progress = Progress::start(shared.clone(), label.to_string(), progress_on);

    match w.mode {
        RunMode::Produce => join_all(producer_threads),
        RunMode::E2e => {
            join_all(producer_threads);
            let delivered = Shared::get(&shared.acked) + Shared::get(&shared.warmup_acked);
            // Also after Ctrl-C: what was acknowledged should still arrive.
            drain(&shared, delivered, w.timeout, false);
            let missing = delivered.saturating_sub(Shared::get(&shared.consumed));
            shared
                .errors
                .record("e2e: acked but not consumed within --timeout-s", missing);
        }
        RunMode::Consume => match (w.stop, expected) {
            (Stop::Duration(d), _) => {
                let end = Instant::now() + d;
                while Instant::now() < end && !shared.stopped() {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            (_, Some(n)) => {
                drain(&shared, n, w.timeout, true);
                let missing = n.saturating_sub(Shared::get(&shared.consumed));
                shared.errors.record(
                    "consume: fewer messages than expected within --timeout-s",
                    missing,
                );
            }
            (_, None) => {}
        },
    }
    shared.stop.store(true, Ordering::Relaxed);
    join_all(consumer_threads);
    progress.finish();
    if crate::interrupt::interrupted() {
        shared.errors.record("interrupted (Ctrl-C): partial run", 1);
    }
    Ok(result(&w, target, partitions, &shared, expected))
}

fn join_all(threads: Vec<std::thread::JoinHandle<()>>) {
    for t in threads {
        // A client thread never panics on broker errors; if it panicked anyway
        // (a bug), the counters it left are still reported.
        let _ = t.join();
    }
}

/// Waits until `target` messages were consumed, or no progress was made for
/// `idle` (or, if `interruptible`, Ctrl-C).
fn drain(shared: &Shared, target: u64, idle: Duration, interruptible: bool) {
    let mut last = Shared::get(&shared.consumed);
    let mut last_change = Instant::now();
    loop {
        let now = Shared::get(&shared.consumed);
        if now >= target || (interruptible && shared.stopped()) {
            return;
        }
        if now != last {
            last = now;
            last_change = Instant::now();
        } else if last_change.elapsed() > idle {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn per_s(n: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        n as f64 / secs
    } else {
        0.0
    }
}

fn result(
    w: &Workload,
    target: &Target,
    partitions: i32,
    s: &Shared,
    expected: Option<u64>,
) -> RunResult {
    let c = clock();
    let measure_start = s.warmup_end();
    let elapsed = |last: u64| {
        // No acknowledgement or message at all: the window is the whole run.
        let end = if last > measure_start {
            last
        } else {
            c.now_ns()
        };
        end.saturating_sub(measure_start) as f64 / 1e9
    };
    let produce = (w.mode != RunMode::Consume).then(|| {
        let acked = Shared::get(&s.acked);
        let bytes = Shared::get(&s.acked_bytes);
        let failed = Shared::get(&s.send_failed) + Shared::get(&s.delivery_failed);
        let secs = elapsed(Shared::get(&s.last_ack_ns));
        ProduceStats {
            messages: acked + failed,
            acked,
            failed,
            bytes,
            elapsed_s: secs,
            msgs_per_s: per_s(acked, secs),
            mb_per_s: per_s(bytes, secs) / 1e6,
            warmup_messages: Shared::get(&s.warmup_acked),
        }
    });
    let consume = (w.mode != RunMode::Produce).then(|| {
        let n = Shared::get(&s.consumed_measured);
        let bytes = Shared::get(&s.consumed_measured_bytes);
        let total = Shared::get(&s.consumed);
        let secs = if w.mode == RunMode::Consume {
            // Reading what is already there: from the first message to the
            // last, so connection and first-fetch set-up are not counted.
            let first = Shared::get(&s.first_consume_ns);
            Shared::get(&s.last_consume_ns).saturating_sub(first) as f64 / 1e9
        } else {
            elapsed(Shared::get(&s.last_consume_ns))
        };
        let expected = match w.mode {
            RunMode::E2e => Some(Shared::get(&s.acked) + Shared::get(&s.warmup_acked)),
            _ => expected,
        };
        ConsumeStats {
            messages: n,
            bytes,
            elapsed_s: secs,
            msgs_per_s: per_s(n, secs),
            mb_per_s: per_s(bytes, secs) / 1e6,
            total_consumed: total,
            expected,
            missing: expected.map_or(0, |e| e.saturating_sub(total)),
        }
    });
    let errors = s.errors.snapshot();
    let p = &w.point;
    RunResult {
        broker: target.label().to_string(),
        bootstrap: w.bootstrap.clone(),
        mode: w.mode.name().to_string(),
        topic: w.topic.clone(),
        partitions,
        producers: if w.mode == RunMode::Consume {
            0
        } else {
            w.producers
        },
        consumers: if w.mode == RunMode::Produce {
            0
        } else {
            w.consumers
        },
        keys: w.keys,
        idempotence: w.idempotence,
        batch_bytes: p.batch_bytes,
        linger_ms: p.linger_ms,
        message_bytes: p.message.to_string(),
        acks: p.acks.clone(),
        compression: p.compression.clone(),
        rate: p.rate,
        warmup_s: w.warmup.as_secs_f64(),
        requested_messages: match w.stop {
            Stop::Messages(n) => Some(n),
            _ => None,
        },
        requested_duration_s: match w.stop {
            Stop::Duration(d) => Some(d.as_secs_f64()),
            _ => None,
        },
        produce,
        consume,
        ack_latency: (w.mode != RunMode::Consume).then(|| s.ack_latency.percentiles()),
        e2e_latency: (w.mode == RunMode::E2e).then(|| s.e2e_latency.percentiles()),
        transactions: w.transactions.map(|t| TxnStats {
            messages_per_transaction: t.messages,
            abort_percent: t.abort_percent,
            committed: Shared::get(&s.txn_committed),
            aborted: Shared::get(&s.txn_aborted),
            committed_messages: Shared::get(&s.txn_committed_messages),
            commit_latency: s.commit_latency.percentiles(),
        }),
        error_count: errors.values().sum(),
        errors,
    }
}
