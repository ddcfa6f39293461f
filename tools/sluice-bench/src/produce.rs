//! Producer clients: one thread and one librdkafka producer each, sharing a
//! global open-loop schedule.
//!
//! At a fixed rate, message i has the intended send time start + i/rate no
//! matter how late the previous sends were, and both its ack latency and its
//! end-to-end latency count from that intended time. A stall in the broker (or
//! in the client's queue) therefore shows as latency of every message that
//! should have been sent during it, instead of silently lowering the send rate
//! (coordinated omission). Unthrottled, the intended time is the moment of
//! the send call.
//!
//! Delivery reports are served by the ThreadedProducer's own polling thread
//! as soon as they arrive, so the ack latency is not inflated by how often
//! the sending loop would get round to polling.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};

use crate::config::{Stop, Transactions, Workload};
use crate::workload::{client_error, client_log, client_log_level, clock, MessageGen, Rng, Shared};

/// The longest single sleep while waiting for an intended send time, so a
/// stop request is noticed promptly even at very low rates.
const MAX_SLEEP: Duration = Duration::from_millis(10);

/// Default message.timeout.ms: librdkafka's 300 s would let a dead broker
/// hang a benchmark for five minutes before reporting it. -X overrides.
const MESSAGE_TIMEOUT_MS: &str = "30000";

struct Ctx {
    shared: Arc<Shared>,
    /// The idempotent producer has its producer id (seen in its statistics).
    pid_ready: AtomicBool,
}

/// How an idempotent producer's statistics say it has its producer id.
const PID_ASSIGNED: &[u8] = br#""idemp_state": "Assigned""#;

impl ClientContext for Ctx {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        client_log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        client_error(error, reason);
    }

    fn stats_raw(&self, statistics: &[u8]) {
        if statistics
            .windows(PID_ASSIGNED.len())
            .any(|w| w == PID_ASSIGNED)
        {
            self.pid_ready.store(true, Ordering::Relaxed);
        }
    }
}

/// Short, stable name for an error, used as its kind in the summary.
pub fn error_kind(e: &KafkaError) -> String {
    match e {
        KafkaError::MessageProduction(code) => format!("{code:?}"),
        KafkaError::MessageConsumption(code) => format!("{code:?}"),
        other => other.to_string(),
    }
}

impl ProducerContext for Ctx {
    /// The message's intended send time (clock ns): no allocation per message.
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, intended: usize) {
        let now = clock().now_ns();
        let intended = intended as u64;
        let s = &self.shared;
        let measured = intended >= s.warmup_end();
        match result {
            Ok(m) => {
                let bytes = m.payload_len() + m.key().map_or(0, |k| k.len());
                Shared::add(&s.acked_bytes_all, bytes as u64);
                if measured {
                    Shared::add(&s.acked, 1);
                    Shared::add(&s.acked_bytes, bytes as u64);
                    s.last_ack_ns.fetch_max(now, Ordering::Relaxed);
                    s.ack_latency.record_ns(now.saturating_sub(intended));
                } else {
                    Shared::add(&s.warmup_acked, 1);
                }
            }
            Err((e, _)) => {
                s.errors.record(format!("delivery: {}", error_kind(e)), 1);
                if measured {
                    Shared::add(&s.delivery_failed, 1);
                }
            }
        }
    }
}

fn producer_config(w: &Workload, index: usize) -> rdkafka::ClientConfig {
    let p = &w.point;
    let mut c = rdkafka::ClientConfig::new();
    c.set("bootstrap.servers", &w.bootstrap)
        .set("client.id", format!("sluice-bench-producer-{index}"))
        .set("acks", if p.acks == "all" { "-1" } else { &p.acks })
        .set("batch.size", p.batch_bytes.to_string())
        .set("linger.ms", p.linger_ms.to_string())
        .set("compression.type", &p.compression)
        .set("enable.idempotence", w.idempotence.to_string())
        .set("message.timeout.ms", MESSAGE_TIMEOUT_MS);
    // -X last, so it overrides everything above.
    if w.transactions.is_some() {
        // One id per producer and run: two runs at once must not fence each other.
        c.set(
            "transactional.id",
            format!("sluice-bench-{}-{index}", std::process::id()),
        );
    } else if w.idempotence {
        // Statistics are how the producer tells that it has its producer id.
        c.set("statistics.interval.ms", "50");
    }
    for (k, v) in &w.extra {
        c.set(k, v);
    }
    c.set_log_level(client_log_level(&w.extra));
    c
}

/// Starts the producer threads. Each creates its client, connects (fetches
/// the topic's metadata) and waits at `ready`; the load starts after `go`.
pub fn spawn(
    w: &Workload,
    shared: &Arc<Shared>,
    ready: &Arc<Barrier>,
    go: &Arc<Barrier>,
) -> Vec<JoinHandle<()>> {
    (0..w.producers)
        .map(|i| {
            let (w, shared, ready, go) = (w.clone(), shared.clone(), ready.clone(), go.clone());
            std::thread::Builder::new()
                .name(format!("producer-{i}"))
                .spawn(move || run(&w, i, shared, &ready, &go))
                .expect("spawning a producer thread")
        })
        .collect()
}

fn run(w: &Workload, index: usize, shared: Arc<Shared>, ready: &Barrier, go: &Barrier) {
    let ctx = Ctx {
        shared: shared.clone(),
        pid_ready: AtomicBool::new(false),
    };
    let producer: Option<ThreadedProducer<Ctx>> =
        match producer_config(w, index).create_with_context::<_, ThreadedProducer<Ctx>>(ctx) {
            Ok(p) => {
                // Connect before the clock starts, so connection set-up is not
                // charged to the first messages' latency.
                if let Err(e) = p.client().fetch_metadata(Some(&w.topic), w.timeout) {
                    shared
                        .errors
                        .record(format!("setup: producer metadata: {e}"), 1);
                    shared.setup_failed.store(true, Ordering::Relaxed);
                } else if w.transactions.is_some() {
                    // The producer id comes with init_transactions.
                    if let Err(e) = p
                        .init_transactions(w.timeout)
                        .and_then(|()| p.begin_transaction())
                    {
                        shared
                            .errors
                            .record(format!("setup: init_transactions: {e}"), 1);
                        shared.setup_failed.store(true, Ordering::Relaxed);
                    }
                } else if w.idempotence && !wait_for_pid(&p, w.timeout) {
                    // librdkafka 2.12 may take its 500 ms PID timer to get
                    // an id; messages sent before that just wait, which
                    // would be charged to the broker.
                    shared.errors.record(
                        "setup: idempotent producer got no producer id within --timeout-s",
                        1,
                    );
                    shared.setup_failed.store(true, Ordering::Relaxed);
                }
                Some(p)
            }
            Err(e) => {
                shared
                    .errors
                    .record(format!("setup: producer config: {e}"), 1);
                shared.setup_failed.store(true, Ordering::Relaxed);
                None
            }
        };
    ready.wait();
    go.wait();
    let Some(producer) = producer else { return };
    if shared.stopped() {
        return;
    }
    let mut txn = w.transactions.map(|t| TxnState::new(t, index));
    send_loop(w, index, &shared, &producer, txn.as_mut());
    if let Some(txn) = txn.as_mut() {
        // The last transaction ends too (commit or abort as drawn).
        if txn.in_txn > 0 {
            txn.end(w, &shared, &producer, false);
        }
    }
    // Wait for the outstanding delivery reports. Whatever is still in flight
    // after the deadline is purged when the producer is dropped, and the
    // purge's delivery reports count it as failed.
    let flush_timeout = w.timeout + Duration::from_millis(30_000);
    let _ = producer.flush(flush_timeout);
}

/// Waits until the idempotent producer has its producer id.
fn wait_for_pid(p: &ThreadedProducer<Ctx>, timeout: Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if p.client().context().pid_ready.load(Ordering::Relaxed) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

/// A transactional producer's progress through its current transaction.
struct TxnState {
    config: Transactions,
    in_txn: u64,
    rng: Rng,
}

impl TxnState {
    fn new(config: Transactions, index: usize) -> TxnState {
        TxnState {
            config,
            in_txn: 0,
            rng: Rng::new(0x7a11 + index as u64),
        }
    }

    /// Counts a message sent; ends the transaction after the configured number.
    fn sent(&mut self, w: &Workload, s: &Shared, producer: &ThreadedProducer<Ctx>) -> bool {
        self.in_txn += 1;
        if self.in_txn < self.config.messages {
            return true;
        }
        self.end(w, s, producer, true)
    }

    /// Commits (or aborts, as drawn) the open transaction, timing the call,
    /// and begins the next if `again`. False if the producer cannot go on.
    fn end(
        &mut self,
        w: &Workload,
        s: &Shared,
        producer: &ThreadedProducer<Ctx>,
        again: bool,
    ) -> bool {
        let abort = (self.rng.next_u64() % 10_000) as f64 / 100.0 < self.config.abort_percent;
        let started = clock().now_ns();
        // The transaction's messages are delivered first, also before an
        // abort (which would otherwise purge those still queued: the broker
        // is to write them and then abort them). A flush with no wait sends
        // what lingers at once (as librdkafka's own commit does); the wait
        // is here rather than in the client crate's flush, which polls in
        // 100 ms steps while the producer's own thread serves the events.
        let _ = producer.flush(Duration::ZERO);
        let deadline = started + w.timeout.as_nanos() as u64;
        while producer.in_flight_count() > 0 && clock().now_ns() < deadline {
            std::thread::sleep(Duration::from_micros(50));
        }
        let ended = if abort {
            producer.abort_transaction(w.timeout)
        } else {
            producer.commit_transaction(w.timeout)
        };
        s.commit_latency
            .record_ns(clock().now_ns().saturating_sub(started));
        let messages = std::mem::take(&mut self.in_txn);
        match ended {
            Ok(()) if abort => Shared::add(&s.txn_aborted, 1),
            Ok(()) => {
                Shared::add(&s.txn_committed, 1);
                Shared::add(&s.txn_committed_messages, messages);
            }
            Err(e) => {
                s.errors.record(format!("transaction: {e}"), 1);
                let abortable = matches!(&e, KafkaError::Transaction(t) if t.txn_requires_abort());
                if !abortable || producer.abort_transaction(w.timeout).is_err() {
                    return false;
                }
                Shared::add(&s.txn_aborted, 1);
            }
        }
        if !again {
            return true;
        }
        match producer.begin_transaction() {
            Ok(()) => true,
            Err(e) => {
                s.errors.record(format!("transaction: begin: {e}"), 1);
                false
            }
        }
    }
}

fn send_loop(
    w: &Workload,
    index: usize,
    s: &Shared,
    producer: &ThreadedProducer<Ctx>,
    mut txn: Option<&mut TxnState>,
) {
    let c = clock();
    let rate = w.point.rate;
    let start = Shared::get(&s.start_ns);
    let warmup_end = s.warmup_end();
    let mut gen = MessageGen::new(w.point.message, w.keys, 0x5eed + index as u64);
    // Everyone starts at the same instant, also when unthrottled.
    wait_until(s, start);
    loop {
        if s.stopped() {
            return;
        }
        let intended = if rate > 0.0 {
            let i = s.next_index.fetch_add(1, Ordering::Relaxed);
            start + (i as f64 * 1e9 / rate) as u64
        } else {
            c.now_ns()
        };
        let measured = intended >= warmup_end;
        if measured {
            match w.stop {
                Stop::Messages(n) => {
                    if s.claimed.fetch_add(1, Ordering::Relaxed) >= n {
                        return;
                    }
                }
                Stop::Duration(d) => {
                    if intended >= warmup_end + d.as_nanos() as u64 {
                        return;
                    }
                }
                Stop::EndOfTopic => return,
            }
        }
        // Open loop: wait for the intended time; if we are behind, send at once.
        wait_until(s, intended);
        let (key, value) = gen.next(c.to_unix_ns(intended));
        let mut record: BaseRecord<'_, [u8], [u8], usize> =
            BaseRecord::with_opaque_to(&w.topic, intended as usize).payload(value);
        if let Some(k) = key {
            record = record.key(k);
        }
        loop {
            match producer.send(record) {
                Ok(()) => {
                    Shared::add(if measured { &s.sent } else { &s.warmup_sent }, 1);
                    if let Some(txn) = txn.as_deref_mut() {
                        if !txn.sent(w, s, producer) {
                            return;
                        }
                    }
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    // The client's queue is full: wait for acknowledgements
                    // to make room. At a fixed rate this wait is part of
                    // the measured latency, as it should be.
                    record = r;
                    std::thread::sleep(Duration::from_millis(1));
                    if s.stopped() {
                        return;
                    }
                }
                Err((e, _)) => {
                    s.errors.record(format!("send: {}", error_kind(&e)), 1);
                    if measured {
                        Shared::add(&s.send_failed, 1);
                    }
                    break;
                }
            }
        }
    }
}

/// Sleeps until the clock reaches `t` (clock ns) or the run is stopped.
fn wait_until(s: &Shared, t: u64) {
    let c = clock();
    loop {
        let now = c.now_ns();
        if now >= t || s.stopped() {
            return;
        }
        std::thread::sleep(Duration::from_nanos(t - now).min(MAX_SLEEP));
    }
}
