//! Consumer clients: one thread and one librdkafka consumer each, with
//! partitions assigned explicitly (no group membership, so no rebalance
//! delay and nothing committed), starting at given offsets.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Barrier};
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::config::Workload;
use crate::produce::error_kind;
use crate::workload::{client_error, client_log, client_log_level, clock, send_time_of, Shared};

/// What one consumer reads: (partition, start offset) pairs.
pub type Assignment = Vec<(i32, i64)>;

/// Splits partitions round-robin over `consumers` (some get none if there
/// are more consumers than partitions).
pub fn split(starts: &[(i32, i64)], consumers: usize) -> Vec<Assignment> {
    let mut out = vec![Vec::new(); consumers.max(1)];
    for (i, p) in starts.iter().enumerate() {
        out[i % consumers.max(1)].push(*p);
    }
    out
}

pub struct Options {
    /// Read the send time from each value and record end-to-end latency.
    pub e2e: bool,
    /// Stop after this many messages in all (exactly: later ones are not counted).
    pub limit: Option<u64>,
}

pub fn spawn(
    w: &Workload,
    shared: &Arc<Shared>,
    assignments: Vec<Assignment>,
    opts: Options,
    ready: &Arc<Barrier>,
    go: &Arc<Barrier>,
) -> Vec<JoinHandle<()>> {
    let opts = Arc::new(opts);
    assignments
        .into_iter()
        .enumerate()
        .map(|(i, a)| {
            let (w, shared, ready, go, opts) = (
                w.clone(),
                shared.clone(),
                ready.clone(),
                go.clone(),
                opts.clone(),
            );
            std::thread::Builder::new()
                .name(format!("consumer-{i}"))
                .spawn(move || run(&w, i, a, &opts, shared, &ready, &go))
                .expect("spawning a consumer thread")
        })
        .collect()
}

/// Routes the consumer's librdkafka logs and errors to stderr.
struct Ctx;

impl ClientContext for Ctx {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        client_log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        client_error(error, reason);
    }
}

impl ConsumerContext for Ctx {}

fn consumer_config(w: &Workload, index: usize) -> rdkafka::ClientConfig {
    let mut c = rdkafka::ClientConfig::new();
    // A group id unique to this run: librdkafka wants one, and nothing is
    // committed with it (partitions are assigned, not subscribed).
    let group = format!(
        "sluice-bench-{}-{}",
        std::process::id(),
        clock().unix_now_ns()
    );
    c.set("bootstrap.servers", &w.bootstrap)
        .set("client.id", format!("sluice-bench-consumer-{index}"))
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false");
    for (k, v) in &w.extra {
        c.set(k, v);
    }
    c.set_log_level(client_log_level(&w.extra));
    c
}

fn run(
    w: &Workload,
    index: usize,
    assignment: Assignment,
    opts: &Options,
    shared: Arc<Shared>,
    ready: &Barrier,
    go: &Barrier,
) {
    let consumer = match consumer_config(w, index).create_with_context::<_, BaseConsumer<Ctx>>(Ctx)
    {
        Ok(c) => {
            let mut tpl = TopicPartitionList::new();
            for &(p, offset) in &assignment {
                let _ = tpl.add_partition_offset(&w.topic, p, Offset::Offset(offset));
            }
            if let Err(e) = c.assign(&tpl) {
                shared
                    .errors
                    .record(format!("setup: consumer assign: {e}"), 1);
                shared.setup_failed.store(true, Ordering::Relaxed);
            }
            Some(c)
        }
        Err(e) => {
            shared
                .errors
                .record(format!("setup: consumer config: {e}"), 1);
            shared.setup_failed.store(true, Ordering::Relaxed);
            None
        }
    };
    ready.wait();
    go.wait();
    let Some(consumer) = consumer else { return };
    if assignment.is_empty() {
        return;
    }
    let c = clock();
    let warmup_end_unix = c.to_unix_ns(shared.warmup_end());
    // Start with everyone else, so consume mode's clock covers all reads.
    let start = Shared::get(&shared.start_ns);
    // Consumers stop only when the runner says so (not at Ctrl-C itself), so
    // that an interrupted e2e run still reads what was acknowledged.
    let stop = || shared.stop.load(Ordering::Relaxed);
    while c.now_ns() < start && !stop() {
        std::thread::sleep(Duration::from_nanos(start.saturating_sub(c.now_ns())));
    }
    while !stop() {
        let m = match consumer.poll(Duration::from_millis(100)) {
            None => continue,
            Some(Err(e)) => {
                shared
                    .errors
                    .record(format!("consume: {}", error_kind(&e)), 1);
                continue;
            }
            Some(Ok(m)) => m,
        };
        let now = c.now_ns();
        let n = shared.consumed.fetch_add(1, Ordering::Relaxed);
        if let Some(limit) = opts.limit {
            if n >= limit {
                // Another consumer reached the limit first: not counted.
                shared.consumed.fetch_sub(1, Ordering::Relaxed);
                shared.stop.store(true, Ordering::Relaxed);
                break;
            }
        }
        let value = m.payload().unwrap_or(&[]);
        let bytes = value.len() + m.key().map_or(0, |k| k.len());
        Shared::add(&shared.consumed_bytes_all, bytes as u64);
        let measured = if opts.e2e {
            match send_time_of(value) {
                Some(sent) if sent >= warmup_end_unix => {
                    shared
                        .e2e_latency
                        .record_ns(c.to_unix_ns(now).saturating_sub(sent));
                    true
                }
                Some(_) => false,
                None => {
                    shared.errors.record("e2e: value without send time", 1);
                    false
                }
            }
        } else {
            true
        };
        if measured {
            Shared::add(&shared.consumed_measured, 1);
            Shared::add(&shared.consumed_measured_bytes, bytes as u64);
            shared.note_consume(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_round_robin() {
        let starts: Vec<(i32, i64)> = (0..5).map(|p| (p, 0)).collect();
        let a = split(&starts, 2);
        assert_eq!(a[0], vec![(0, 0), (2, 0), (4, 0)]);
        assert_eq!(a[1], vec![(1, 0), (3, 0)]);
        let a = split(&starts[..1], 3);
        assert_eq!(a.len(), 3);
        assert!(a[1].is_empty() && a[2].is_empty());
    }
}
