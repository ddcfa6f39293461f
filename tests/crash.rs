//! Crash consistency: a broker receiving acks=all traffic from librdkafka is
//! killed with SIGKILL at random moments, many times in a row. After every
//! restart each acknowledged message must be at its acknowledged offset, and the
//! log must hold no duplicates and no holes.
//!
//! The kill moments come from a seeded generator; a failure prints the seed
//! (set SLUICE_CRASH_SEED to replay it). SLUICE_CRASH_CYCLES sets the number of
//! kill cycles (default 12).

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{topic, TestBroker};
use rand::{Rng, SeedableRng};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

const PARTITIONS: i32 = 3;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Every message in the topic, per partition in offset order: (offset, value).
fn read_everything(addr: &str, name: &str) -> BTreeMap<i32, Vec<(i64, String)>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("group.id", "crash-check")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut out = BTreeMap::new();
    let mut assignment = TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for p in 0..PARTITIONS {
        let (_, high) = consumer
            .fetch_watermarks(name, p, Duration::from_secs(30))
            .expect("watermarks");
        ends.insert(p, high);
        out.insert(p, Vec::new());
        assignment
            .add_partition_offset(name, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let total: i64 = ends.values().sum();
    let mut read = 0i64;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while read < total {
        assert!(
            std::time::Instant::now() < deadline,
            "read {read} of {total}"
        );
        if let Some(message) = consumer.poll(Duration::from_millis(200)) {
            let m = message.expect("consume");
            let value = String::from_utf8(m.payload().unwrap_or_default().to_vec()).unwrap();
            out.get_mut(&m.partition())
                .unwrap()
                .push((m.offset(), value));
            read += 1;
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_survive_repeated_sigkill() {
    let cycles: usize = env_or("SLUICE_CRASH_CYCLES", 12);
    let seed: u64 = env_or("SLUICE_CRASH_SEED", rand::random());
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    eprintln!("crash test: seed {seed}, {cycles} cycles (replay with SLUICE_CRASH_SEED={seed})");

    let mut broker = TestBroker::start();
    let name = topic("crash");
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .create()
        .unwrap();
    let created = admin
        .create_topics(
            [&NewTopic::new(
                &name,
                PARTITIONS,
                TopicReplication::Fixed(1),
            )],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    assert!(created[0].is_ok());

    // value -> (partition, offset) of every acknowledged message, over all cycles.
    let acked: Arc<Mutex<BTreeMap<String, (i32, i64)>>> = Arc::default();
    let mut next_value = 0u64;
    for cycle in 0..cycles {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &broker.addr)
            .set("acks", "all")
            .set("linger.ms", "1")
            .set("message.timeout.ms", "5000")
            .set("enable.idempotence", "true")
            .create()
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let mut senders = Vec::new();
        for _ in 0..16 {
            let producer = producer.clone();
            let stop = stop.clone();
            let acked = acked.clone();
            let name = name.clone();
            let first = next_value;
            next_value += 1_000_000;
            senders.push(tokio::spawn(async move {
                let mut i = first;
                while !stop.load(Ordering::Relaxed) {
                    let value = format!("c{cycle}-m{i}");
                    let key = format!("k{}", i % 7);
                    let record = FutureRecord::to(&name).key(&key).payload(&value);
                    if let Ok(delivered) = producer.send(record, Duration::from_secs(5)).await {
                        acked
                            .lock()
                            .unwrap()
                            .insert(value, (delivered.partition, delivered.offset));
                    }
                    i += 1;
                }
            }));
        }
        let run_ms = rng.gen_range(300..1500);
        tokio::time::sleep(Duration::from_millis(run_ms)).await;
        broker.kill();
        stop.store(true, Ordering::Relaxed);
        // Sends in flight at the kill can only time out; they are not acknowledged.
        for sender in senders {
            sender.abort();
        }
        drop(producer);
        broker.restart_after_kill();

        let log = read_everything(&broker.addr, &name);
        let acked = acked.lock().unwrap();
        let mut seen = HashSet::new();
        for (partition, messages) in &log {
            for (index, (offset, value)) in messages.iter().enumerate() {
                assert_eq!(
                    *offset, index as i64,
                    "seed {seed} cycle {cycle}: hole in partition {partition}"
                );
                assert!(
                    seen.insert(value.clone()),
                    "seed {seed} cycle {cycle}: {value} is in the log twice"
                );
            }
        }
        for (value, (partition, offset)) in acked.iter() {
            let stored = log[partition].get(*offset as usize).map(|(_, v)| v);
            assert_eq!(
                stored,
                Some(value),
                "seed {seed} cycle {cycle}: acknowledged {value} at {partition}/{offset}"
            );
        }
        eprintln!(
            "crash test: cycle {cycle} killed after {run_ms} ms; {} acknowledged messages checked, {} in the log",
            acked.len(),
            seen.len()
        );
    }
    let total = acked.lock().unwrap().len();
    assert!(
        total > cycles * 10,
        "the test produced too little traffic to mean anything ({total})"
    );
    eprintln!("crash test: {cycles} kill cycles, {total} acknowledged messages all present");
}
