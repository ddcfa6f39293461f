//! Exactly-once under faults, checked the way Jepsen checks Kafka: clients
//! record what they were told (a history), faults are injected, and a
//! checker reads everything back at the end and names each anomaly it finds.
//!
//! The workload: several transactional producers write transactions of a few
//! records each over two topics and three partitions, committing most and
//! aborting some, while a read_committed consumer polls. The broker is killed
//! with SIGKILL at random moments and restarted; a transaction whose commit
//! or abort got no answer is "unknown". Anomalies looked for:
//! - lost write: a committed transaction's record is not readable;
//! - aborted read: a record of an aborted transaction is readable, or was
//!   seen by the polling consumer;
//! - partial transaction: some but not all records of one transaction are
//!   readable (atomicity);
//! - duplicate: a record is readable more than once;
//! - order: a producer's records in a partition are out of send order;
//! - phantom write: a readable record that no producer sent to that partition;
//! - stuck consumer: read_committed cannot reach the end once the producers
//!   are gone (an open transaction left behind must be aborted at its timeout).
//!
//! The seed comes from SLUICE_EOS_SEED (printed on failure);
//! SLUICE_EOS_CYCLES sets the number of kill cycles (default 3).

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::clients::create_topic;
use common::{topic, TestBroker};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

const PARTITIONS: i32 = 3;
const PRODUCERS: usize = 3;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Committed,
    Aborted,
    /// No answer (the broker died): either outcome is allowed, but all or nothing.
    Unknown,
}

/// One transaction as its producer saw it: (topic, partition, value) written.
#[derive(Debug, Clone)]
struct Txn {
    records: Vec<(String, i32, String)>,
    outcome: Outcome,
}

type History = Arc<Mutex<Vec<Txn>>>;

/// Runs transactions until `stop` or an error, recording each.
fn producer_loop(
    addr: String,
    transactional_id: String,
    topics: [String; 2],
    seed: u64,
    tag: String,
    stop: Arc<AtomicBool>,
    history: History,
) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let producer: FutureProducer = match ClientConfig::new()
        .set("bootstrap.servers", &addr)
        .set("transactional.id", &transactional_id)
        .set("transaction.timeout.ms", "3000")
        .set("message.timeout.ms", "3000")
        .set("socket.timeout.ms", "2000")
        .create()
    {
        Ok(p) => p,
        Err(_) => return,
    };
    if producer.init_transactions(Duration::from_secs(10)).is_err() {
        return;
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        if producer.begin_transaction().is_err() {
            return;
        }
        let count = rng.gen_range(1..=6);
        let mut records = Vec::new();
        let mut failed = false;
        for _ in 0..count {
            let topic = topics[rng.gen_range(0..2)].clone();
            let partition = rng.gen_range(0..PARTITIONS);
            let value = format!("{tag}-{n}");
            n += 1;
            let sent = runtime.block_on(
                producer.send(
                    FutureRecord::<(), _>::to(&topic)
                        .partition(partition)
                        .payload(&value),
                    Duration::from_secs(3),
                ),
            );
            records.push((topic, partition, value));
            if sent.is_err() {
                failed = true;
                break;
            }
        }
        let commit = !failed && rng.gen_bool(0.8);
        let answer = if commit {
            producer.commit_transaction(Duration::from_secs(5))
        } else {
            producer.abort_transaction(Duration::from_secs(5))
        };
        let outcome = match (answer.is_ok(), commit) {
            (true, true) => Outcome::Committed,
            (true, false) => Outcome::Aborted,
            (false, _) => Outcome::Unknown,
        };
        history.lock().unwrap().push(Txn { records, outcome });
        if outcome == Outcome::Unknown {
            return; // this instance is done; the next cycle starts a new one
        }
    }
}

/// Reads every record of `topics` under `isolation` up to the partitions'
/// high watermarks: (topic, partition, offset, value). Panics (stuck
/// consumer) if the consumer's position does not reach every high watermark
/// in time: under read_committed that needs every transaction decided.
fn read_all(addr: &str, topics: &[String], isolation: &str) -> Vec<(String, i32, i64, String)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("group.id", "eos-check")
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation)
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    let mut high = BTreeMap::new();
    for t in topics {
        for p in 0..PARTITIONS {
            assignment
                .add_partition_offset(t, p, Offset::Beginning)
                .unwrap();
            let (_, h) = consumer
                .fetch_watermarks(t, p, Duration::from_secs(10))
                .unwrap();
            high.insert((t.clone(), p), h);
        }
    }
    consumer.assign(&assignment).unwrap();
    let reached = |consumer: &BaseConsumer| {
        let position = consumer.position().unwrap();
        high.iter()
            .filter(|((t, p), h)| {
                let at = position.find_partition(t, *p).map(|e| e.offset());
                matches!(at, Some(Offset::Offset(o)) if o >= **h) || **h == 0
            })
            .count()
    };
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last_check = Instant::now();
    loop {
        if last_check.elapsed() > Duration::from_millis(300) {
            last_check = Instant::now();
            let done = reached(&consumer);
            if done == high.len() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "stuck consumer: {isolation} reached the high watermark of {done} of {} partitions in 60 s ({high:?}, at {:?})",
                high.len(),
                consumer.position().unwrap()
            );
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => out.push((
                m.topic().to_string(),
                m.partition(),
                m.offset(),
                String::from_utf8(m.payload().unwrap_or_default().to_vec()).unwrap(),
            )),
            Some(Err(e)) => panic!("consume: {e}"),
            None => {}
        }
    }
    out
}

/// The checker: every anomaly of the module documentation, by name.
fn check(
    history: &[Txn],
    committed_read: &[(String, i32, i64, String)],
    seen_live: &BTreeSet<String>,
) -> Vec<String> {
    let mut anomalies = Vec::new();
    let mut count: HashMap<&str, usize> = HashMap::new();
    for (_, _, _, v) in committed_read {
        *count.entry(v.as_str()).or_default() += 1;
    }
    for (v, n) in &count {
        if *n > 1 {
            anomalies.push(format!("duplicate: {v} readable {n} times"));
        }
    }
    let sent: BTreeSet<(&str, i32, &str)> = history
        .iter()
        .flat_map(|txn| &txn.records)
        .map(|(t, p, v)| (t.as_str(), *p, v.as_str()))
        .collect();
    for (t, p, o, v) in committed_read {
        if !sent.contains(&(t.as_str(), *p, v.as_str())) {
            anomalies.push(format!(
                "phantom write: {v} readable in {t}-{p} at {o}, never sent there"
            ));
        }
    }
    for txn in history {
        let visible = txn
            .records
            .iter()
            .filter(|(_, _, v)| count.contains_key(v.as_str()))
            .count();
        let values: Vec<&str> = txn.records.iter().map(|(_, _, v)| v.as_str()).collect();
        match txn.outcome {
            Outcome::Committed if visible < txn.records.len() => anomalies.push(format!(
                "lost write: committed {values:?}, {visible} readable"
            )),
            Outcome::Aborted if visible > 0 => anomalies.push(format!(
                "aborted read: aborted {values:?}, {visible} readable"
            )),
            Outcome::Unknown if visible > 0 && visible < txn.records.len() => anomalies.push(
                format!("partial transaction: {values:?}, {visible} of them readable"),
            ),
            _ => {}
        }
        let final_visible = visible == txn.records.len();
        for (_, _, v) in &txn.records {
            if seen_live.contains(v) && !final_visible {
                anomalies.push(format!(
                    "aborted read: {v} was seen by a read_committed consumer but its transaction did not commit"
                ));
            }
        }
    }
    // Order: per producer tag and partition, values appear in send order.
    let mut last: BTreeMap<(String, i32, String), u64> = BTreeMap::new();
    for (t, p, _, v) in committed_read {
        let (tag, n) = v.rsplit_once('-').unwrap();
        let n: u64 = n.parse().unwrap();
        let key = (t.clone(), *p, tag.to_string());
        if let Some(&before) = last.get(&key) {
            if n <= before {
                anomalies.push(format!("order: {v} after {tag}-{before} in {t}-{p}"));
            }
        }
        last.insert(key, n);
    }
    anomalies
}

#[test]
fn transactions_stay_atomic_and_durable_across_broker_kills() {
    let seed: u64 = env_or("SLUICE_EOS_SEED", rand::random());
    let cycles: usize = env_or("SLUICE_EOS_CYCLES", 3);
    println!("SLUICE_EOS_SEED={seed} SLUICE_EOS_CYCLES={cycles}");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut broker = TestBroker::start_with(&[
        "--transaction-abort-timed-out-transaction-cleanup-interval-ms",
        "200",
    ]);
    let topics = [topic("eos-a"), topic("eos-b")];
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for t in &topics {
        runtime.block_on(create_topic(&broker, t, PARTITIONS, &[]));
    }
    let history: History = Arc::new(Mutex::new(Vec::new()));
    let seen_live: Arc<Mutex<BTreeSet<String>>> = Arc::new(Mutex::new(BTreeSet::new()));
    for cycle in 0..cycles {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for p in 0..PRODUCERS {
            let (addr, topics, stop, history) = (
                broker.addr.clone(),
                topics.clone(),
                stop.clone(),
                history.clone(),
            );
            let seed = rng.gen();
            // The same transactional id in every cycle: each new instance
            // fences the one before.
            let id = format!("eos-{p}");
            let tag = format!("c{cycle}p{p}");
            threads.push(std::thread::spawn(move || {
                producer_loop(addr, id, topics, seed, tag, stop, history)
            }));
        }
        // A read_committed consumer polls while the producers run.
        let live_stop = stop.clone();
        let (addr, live_topics, seen) = (broker.addr.clone(), topics.clone(), seen_live.clone());
        let live = std::thread::spawn(move || {
            let consumer: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", &addr)
                .set("group.id", "eos-live")
                .set("isolation.level", "read_committed")
                .set("enable.auto.commit", "false")
                .set("socket.timeout.ms", "2000")
                .create()
                .unwrap();
            let mut assignment = TopicPartitionList::new();
            for t in &live_topics {
                for p in 0..PARTITIONS {
                    assignment
                        .add_partition_offset(t, p, Offset::Beginning)
                        .unwrap();
                }
            }
            consumer.assign(&assignment).unwrap();
            while !live_stop.load(Ordering::Relaxed) {
                if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                    let v = String::from_utf8(m.payload().unwrap_or_default().to_vec()).unwrap();
                    seen.lock().unwrap().insert(v);
                }
            }
        });
        std::thread::sleep(Duration::from_millis(rng.gen_range(1500..4000)));
        broker.kill();
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            t.join().unwrap();
        }
        live.join().unwrap();
        broker.start_again();
    }
    // The last instances, fenced or timed out, leave nothing open: after the
    // transaction timeout the coordinator aborts what is left.
    std::thread::sleep(Duration::from_secs(4));
    let committed = read_all(&broker.addr, &topics, "read_committed");
    let everything = read_all(&broker.addr, &topics, "read_uncommitted");
    let history = history.lock().unwrap().clone();
    let outcomes = |o| history.iter().filter(|t| t.outcome == o).count();
    println!(
        "{} transactions: {} committed, {} aborted, {} unknown; {} records readable committed, {} in all",
        history.len(),
        outcomes(Outcome::Committed),
        outcomes(Outcome::Aborted),
        outcomes(Outcome::Unknown),
        committed.len(),
        everything.len()
    );
    assert!(
        outcomes(Outcome::Committed) >= 5,
        "the workload did commit transactions"
    );
    let anomalies = check(&history, &committed, &seen_live.lock().unwrap());
    assert!(
        anomalies.is_empty(),
        "SLUICE_EOS_SEED={seed}: {} anomalies:\n{}",
        anomalies.len(),
        anomalies.join("\n")
    );
}

/// The checker finds what it is there to find: each anomaly, planted in a
/// small history, is reported by name.
#[test]
fn the_checker_names_every_anomaly() {
    let txn = |values: &[&str], outcome| Txn {
        records: values
            .iter()
            .map(|v| ("t".to_string(), 0, v.to_string()))
            .collect(),
        outcome,
    };
    let read = |values: &[&str]| -> Vec<(String, i32, i64, String)> {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| ("t".to_string(), 0, i as i64, v.to_string()))
            .collect()
    };
    let none = BTreeSet::new();
    let clean = [
        txn(&["a-0", "a-1"], Outcome::Committed),
        txn(&["a-2"], Outcome::Aborted),
    ];
    assert!(check(&clean, &read(&["a-0", "a-1"]), &none).is_empty());
    let cases: [(&[Txn], Vec<_>, BTreeSet<String>, &str); 7] = [
        (&clean[..1], read(&["a-0"]), none.clone(), "lost write"),
        (
            &clean,
            read(&["a-0", "a-1", "a-2"]),
            none.clone(),
            "aborted read",
        ),
        (
            &[txn(&["a-0", "a-1"], Outcome::Unknown)],
            read(&["a-0"]),
            none.clone(),
            "partial transaction",
        ),
        (
            &clean[..1],
            read(&["a-0", "a-1", "a-1"]),
            none.clone(),
            "duplicate",
        ),
        (&clean[..1], read(&["a-1", "a-0"]), none.clone(), "order"),
        (
            &clean[..1],
            read(&["a-0", "a-1", "b-0"]),
            none.clone(),
            "phantom write",
        ),
        (
            &clean,
            read(&["a-0", "a-1"]),
            BTreeSet::from(["a-2".to_string()]),
            "aborted read",
        ),
    ];
    for (history, committed, seen, anomaly) in cases {
        let found = check(history, &committed, &seen);
        assert!(
            found.iter().any(|a| a.starts_with(anomaly)),
            "{anomaly} not found in {found:?}"
        );
    }
}

/// A consume-transform-produce stage (read_committed consumer in a group,
/// transactional producer, input offsets sent to the transaction) copies an
/// input topic to an output topic while the stage crashes mid-transaction
/// (its instance dropped with a transaction open, output already written)
/// and the broker is killed with SIGKILL. A new instance with the same
/// transactional id fences the old one and resumes from the group's
/// committed offsets. Checked: every input is in the output exactly once
/// under read_committed (anomalies "lost input" and "duplicate output"), and
/// the group's committed offsets end at the input's end ("stuck stage").
///
/// The broker comes back at the same address, as a restarted Kafka broker
/// does. It once came back on another port, and then a stage instance killed
/// inside `send_offsets_to_transaction` blocked forever: librdkafka does not
/// honour that call's timeout while the group coordinator is unreachable
/// (confluentinc/librdkafka#5456), and that client could never reach it again.
#[test]
fn consume_transform_produce_is_exactly_once_across_stage_crashes_and_broker_kills() {
    use std::sync::atomic::AtomicUsize;
    let seed: u64 = env_or("SLUICE_EOS_SEED", rand::random());
    let kills: usize = env_or("SLUICE_EOS_CYCLES", 3);
    // Enough input for the stage to be at work at every kill.
    let inputs = 200 * kills.max(3);
    println!("SLUICE_EOS_SEED={seed} SLUICE_EOS_CYCLES={kills}");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut broker = TestBroker::start_logging(&[
        "--transaction-abort-timed-out-transaction-cleanup-interval-ms",
        "200",
        "--group-initial-rebalance-delay-ms",
        "0",
    ]);
    let input = topic("ctp-in");
    let output = topic("ctp-out");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(create_topic(&broker, &input, PARTITIONS, &[]));
    runtime.block_on(create_topic(&broker, &output, PARTITIONS, &[]));
    let plain: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .set("enable.idempotence", "true")
        .create()
        .unwrap();
    for i in 0..inputs {
        let value = format!("in-{i}");
        runtime
            .block_on(
                plain.send(
                    FutureRecord::<(), _>::to(&input)
                        .partition(i as i32 % PARTITIONS)
                        .payload(&value),
                    Duration::from_secs(10),
                ),
            )
            .expect("input written");
    }
    drop(plain);

    let addr = broker.addr.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let crashes = Arc::new(AtomicUsize::new(0));
    let commits = Arc::new(AtomicUsize::new(0));
    let watch = StageWatch::default();
    let stage = {
        let (addr, stop, crashes, commits, watch) = (
            addr.clone(),
            stop.clone(),
            crashes.clone(),
            commits.clone(),
            watch.clone(),
        );
        let (input, output, seed) = (input.clone(), output.clone(), rng.gen());
        std::thread::spawn(move || {
            ctp_stage(
                &addr, &input, &output, seed, &stop, &crashes, &commits, &watch,
            )
        })
    };
    let watchdog = {
        let (stop, commits, watch) = (stop.clone(), commits.clone(), watch.clone());
        let log_path = broker.log_path();
        std::thread::spawn(move || stage_watchdog(&stop, &commits, &watch, inputs, log_path))
    };
    for _ in 0..kills {
        // Kill while the stage works: after a few more of its commits, at a
        // random moment of the next transaction.
        let target = commits.load(Ordering::Relaxed) + rng.gen_range(3..10);
        let give_up = Instant::now() + Duration::from_secs(60);
        while commits.load(Ordering::Relaxed) < target
            && watch.committed_inputs.load(Ordering::Relaxed) < inputs
            && Instant::now() < give_up
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..150)));
        broker.kill();
        eprintln!("{} test: broker killed", clock());
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..500)));
        broker.start_again_at_same_address();
        eprintln!("{} test: broker started again", clock());
    }
    // Wait for the stage to commit the input's end.
    let probe: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .set("group.id", "eos-ctp")
        .create()
        .unwrap();
    let mut wanted = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        wanted.add_partition(&input, p);
    }
    let ends: Vec<i64> = (0..PARTITIONS)
        .map(|p| (inputs as i64 + (PARTITIONS - 1 - p) as i64) / PARTITIONS as i64)
        .collect();
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let committed = probe.committed_offsets(wanted.clone(), Duration::from_secs(10));
        let at: Vec<Option<i64>> = (0..PARTITIONS)
            .map(|p| {
                committed
                    .as_ref()
                    .ok()
                    .and_then(|c| c.find_partition(&input, p))
                    .and_then(|e| e.offset().to_raw())
            })
            .collect();
        if at.iter().zip(&ends).all(|(a, e)| *a == Some(*e)) {
            break;
        }
        if Instant::now() >= deadline {
            let stable: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", &broker.addr)
                .set("group.id", "eos-ctp")
                .set("isolation.level", "read_committed")
                .create()
                .unwrap();
            let required = stable.committed_offsets(wanted.clone(), Duration::from_secs(5));
            let log = broker.log_text();
            let tail: Vec<&str> = log.lines().rev().take(150).collect();
            panic!(
                "stuck stage: committed input offsets {at:?}, input ends {ends:?}; with require_stable: {required:?}\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    stop.store(true, Ordering::Relaxed);
    stage.join().unwrap();
    watchdog.join().unwrap();
    // The last instance may have left a transaction open (it crashes at
    // random): the timeout aborts it.
    let outputs = read_all(
        &broker.addr,
        std::slice::from_ref(&output),
        "read_committed",
    );
    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    for (_, _, _, v) in &outputs {
        *count.entry(v.clone()).or_default() += 1;
    }
    let mut anomalies = Vec::new();
    for i in 0..inputs {
        match count.remove(&format!("out-{i}")) {
            None => anomalies.push(format!("lost input: in-{i} has no output")),
            Some(1) => {}
            Some(n) => anomalies.push(format!("duplicate output: out-{i} readable {n} times")),
        }
    }
    for (v, _) in count {
        anomalies.push(format!("unexpected output: {v}"));
    }
    let all = read_all(
        &broker.addr,
        std::slice::from_ref(&output),
        "read_uncommitted",
    );
    println!(
        "{} commits, {} stage crashes, {} broker kills; {} outputs readable committed, {} in all",
        commits.load(Ordering::Relaxed),
        crashes.load(Ordering::Relaxed),
        kills,
        outputs.len(),
        all.len()
    );
    if !anomalies.is_empty() {
        // What the broker wrote: the group's offsets log and the stage's
        // transaction log partitions (those with any data), and its log.
        for entry in std::fs::read_dir(&broker.data_dir).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if name.starts_with("__sluice_offsets-")
                || name.starts_with("__sluice_transaction_state-")
            {
                let dump = common::dump_partition_dir(&broker.data_dir, &name);
                if !dump.is_empty() {
                    eprintln!("{name}:\n{dump}");
                }
            }
        }
        eprintln!("broker log:\n{}", broker.log_text());
    }
    assert!(
        anomalies.is_empty(),
        "SLUICE_EOS_SEED={seed}: {} anomalies:\n{}",
        anomalies.len(),
        anomalies.join("\n")
    );
    assert!(
        crashes.load(Ordering::Relaxed) > 0 && all.len() > outputs.len(),
        "the stage did crash with output written and not committed"
    );
}

/// What the stage is doing, for the watchdog that explains a stall: the
/// client call it is in and since when, and the recent librdkafka debug log
/// of its clients.
#[derive(Clone, Default)]
struct StageWatch {
    phase: Arc<Mutex<Option<(&'static str, Instant)>>>,
    log: RingLog,
    /// Inputs in the transactions the stage committed.
    committed_inputs: Arc<std::sync::atomic::AtomicUsize>,
}

impl StageWatch {
    fn enter(&self, call: &'static str) {
        *self.phase.lock().unwrap() = Some((call, Instant::now()));
    }
}

/// Wall-clock seconds (mod 1000) with milliseconds, to line up the stage's
/// and the test's lines with the broker log.
fn clock() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{:03}.{:03}", now.as_secs() % 1000, now.subsec_millis())
}

/// A stage batch as "p0 130..139 p2 41..43" (input partition, first..last offset).
fn describe(batch: &[(i32, i64, String)]) -> String {
    let mut ranges: BTreeMap<i32, (i64, i64)> = BTreeMap::new();
    for &(p, o, _) in batch {
        let r = ranges.entry(p).or_insert((o, o));
        r.0 = r.0.min(o);
        r.1 = r.1.max(o);
    }
    ranges
        .iter()
        .map(|(p, (a, b))| format!("p{p} {a}..{b}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A client context that keeps the last lines librdkafka logged.
#[derive(Clone, Default)]
struct RingLog(Arc<Mutex<std::collections::VecDeque<String>>>);

impl ClientContext for RingLog {
    fn log(&self, _level: RDKafkaLogLevel, fac: &str, line: &str) {
        let mut ring = self.0.lock().unwrap();
        if ring.len() == 400 {
            ring.pop_front();
        }
        ring.push_back(format!("{:?} {fac} {line}", std::time::SystemTime::now()));
    }
}

/// The stage's consumer: its log in the ring, and a flag raised by every
/// rebalance (an assignment resets the positions to the committed offsets).
#[derive(Clone)]
struct StageConsumer {
    log: RingLog,
    rebalanced: Arc<AtomicBool>,
}

impl ClientContext for StageConsumer {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, line: &str) {
        self.log.log(level, fac, line);
    }
}

impl ConsumerContext for StageConsumer {
    fn pre_rebalance(
        &self,
        _consumer: &BaseConsumer<Self>,
        _rebalance: &rdkafka::consumer::Rebalance<'_>,
    ) {
        self.rebalanced.store(true, Ordering::Relaxed);
    }
}

/// Reports a stage that commits nothing for 30 s while input is left: the
/// call it is in, its clients' recent log, every thread's stack (when gdb is
/// installed) and the broker log's tail. It asserts nothing; the test still
/// fails as "stuck stage" if the stall lasts.
fn stage_watchdog(
    stop: &AtomicBool,
    commits: &std::sync::atomic::AtomicUsize,
    watch: &StageWatch,
    inputs: usize,
    broker_log: Option<std::path::PathBuf>,
) {
    // SLUICE_EOS_WATCHDOG_S shortens the wait (to see the report itself).
    let patience = Duration::from_secs(env_or("SLUICE_EOS_WATCHDOG_S", 30));
    let mut last = (commits.load(Ordering::Relaxed), Instant::now());
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(500));
        let now = commits.load(Ordering::Relaxed);
        if now != last.0 {
            last = (now, Instant::now());
            continue;
        }
        let all_done = watch.committed_inputs.load(Ordering::Relaxed) >= inputs;
        if all_done || last.1.elapsed() < patience {
            continue;
        }
        let phase = watch
            .phase
            .lock()
            .unwrap()
            .map(|(call, since)| format!("{call} for {:?}", since.elapsed()));
        eprintln!(
            "watchdog: no stage commit for {patience:?} after {now} commits; stage in {phase:?}"
        );
        eprintln!("watchdog: stage clients' recent log:");
        for line in watch.log.0.lock().unwrap().iter() {
            eprintln!("  {line}");
        }
        // gdb stops every thread of this process, this one included: its
        // output goes to a file (a pipe read by a stopped thread would fill
        // up and hang both), and it gets a minute.
        let stacks = std::env::temp_dir().join(format!("eos-stacks-{}", std::process::id()));
        let gdb = std::fs::File::create(&stacks).and_then(|file| {
            std::process::Command::new("gdb")
                .args(["-p", &std::process::id().to_string(), "-batch", "-ex"])
                .arg("thread apply all bt")
                .stdout(file)
                .stderr(std::process::Stdio::null())
                .spawn()
        });
        if let Ok(mut gdb) = gdb {
            let deadline = Instant::now() + Duration::from_secs(60);
            while gdb.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = gdb.kill();
            let _ = gdb.wait();
            eprintln!(
                "watchdog: threads:\n{}",
                std::fs::read_to_string(&stacks).unwrap_or_default()
            );
            let _ = std::fs::remove_file(&stacks);
        }
        if let Some(text) = broker_log.and_then(|p| std::fs::read_to_string(p).ok()) {
            let tail: Vec<&str> = text.lines().rev().take(100).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            eprintln!("watchdog: broker log tail:\n{}", tail.join("\n"));
        }
        return;
    }
}

/// One stage instance after another until `stop`: each inits its
/// transactional producer (fencing the one before and aborting its open
/// transaction), joins the group, and copies inputs in transactions of up to
/// ten, until an error or a planted crash ends it.
#[allow(clippy::too_many_arguments)]
fn ctp_stage(
    bootstrap: &str,
    input: &str,
    output: &str,
    seed: u64,
    stop: &AtomicBool,
    crashes: &std::sync::atomic::AtomicUsize,
    commits: &std::sync::atomic::AtomicUsize,
    watch: &StageWatch,
) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut rng = StdRng::seed_from_u64(seed);
    while !stop.load(Ordering::Relaxed) {
        eprintln!("{} stage: new instance", clock());
        let producer: FutureProducer<RingLog> = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("transactional.id", "eos-ctp-stage")
            .set("transaction.timeout.ms", "3000")
            .set("message.timeout.ms", "3000")
            .set("socket.timeout.ms", "2000")
            .set("debug", "eos")
            .create_with_context(watch.log.clone())
            .unwrap();
        watch.enter("init_transactions");
        if let Err(e) = producer.init_transactions(Duration::from_secs(5)) {
            eprintln!("{} stage: init_transactions: {e}", clock());
            std::thread::sleep(Duration::from_millis(200));
            continue;
        }
        let context = StageConsumer {
            log: watch.log.clone(),
            rebalanced: Arc::new(AtomicBool::new(false)),
        };
        let consumer: BaseConsumer<StageConsumer> = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", "eos-ctp")
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("isolation.level", "read_committed")
            .set("session.timeout.ms", "6000")
            .set("socket.timeout.ms", "2000")
            .set("debug", "cgrp")
            .create_with_context(context.clone())
            .unwrap();
        consumer.subscribe(&[input]).unwrap();
        'transactions: while !stop.load(Ordering::Relaxed) {
            let mut batch = Vec::new();
            let until = Instant::now() + Duration::from_millis(300);
            watch.enter("consumer.poll");
            while batch.len() < 10 && Instant::now() < until {
                let polled = consumer.poll(Duration::from_millis(50));
                if context.rebalanced.swap(false, Ordering::Relaxed) {
                    // A rebalance (served inside that poll, before any
                    // message it returns) put the consumer back at the
                    // committed offsets: what the batch took before it
                    // comes again, so it is dropped (librdkafka's
                    // transactional example aborts at a revocation).
                    batch.clear();
                }
                if let Some(Ok(m)) = polled {
                    let value =
                        String::from_utf8(m.payload().unwrap_or_default().to_vec()).unwrap();
                    batch.push((m.partition(), m.offset(), value));
                }
            }
            if batch.is_empty() {
                continue;
            }
            watch.enter("begin_transaction");
            if producer.begin_transaction().is_err() {
                break;
            }
            for (_, _, value) in &batch {
                let out = value.replace("in-", "out-");
                watch.enter("producer.send");
                let sent = runtime.block_on(
                    producer.send(
                        FutureRecord::<(), _>::to(output)
                            .partition(rng.gen_range(0..PARTITIONS))
                            .payload(&out),
                        Duration::from_secs(3),
                    ),
                );
                if let Err((e, _)) = sent {
                    eprintln!("{} stage: send: {e}", clock());
                    break 'transactions;
                }
            }
            if rng.gen_bool(0.1) {
                crashes.fetch_add(1, Ordering::Relaxed);
                eprintln!("{} stage: crash with {} open", clock(), describe(&batch));
                break 'transactions; // a crash: the transaction stays open
            }
            let mut offsets = TopicPartitionList::new();
            for (p, o, _) in &batch {
                offsets
                    .add_partition_offset(input, *p, Offset::Offset(o + 1))
                    .unwrap();
            }
            let Ok(group) = consumer.group_metadata().ok_or(()) else {
                break;
            };
            watch.enter("send_offsets_to_transaction");
            let committed = producer
                .send_offsets_to_transaction(&offsets, &group, Duration::from_secs(5))
                .and_then(|_| {
                    watch.enter("commit_transaction");
                    producer.commit_transaction(Duration::from_secs(5))
                });
            if let Err(e) = committed {
                eprintln!(
                    "{} stage: commit of {} failed: {e}",
                    clock(),
                    describe(&batch)
                );
                break;
            }
            commits.fetch_add(1, Ordering::Relaxed);
            watch
                .committed_inputs
                .fetch_add(batch.len(), Ordering::Relaxed);
            eprintln!("{} stage: committed {}", clock(), describe(&batch));
        }
        // The instance is gone. Closing a client whose broker was killed
        // can take long: elsewhere, so the next instance starts now.
        std::thread::spawn(move || drop((consumer, producer)));
    }
}
