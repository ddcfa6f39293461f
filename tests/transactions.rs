//! Transactions (KIP-98) with real clients: librdkafka's transactional
//! producer, read_committed and read_uncommitted consumers.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::clients::{consumer, create_topic, producer};
use common::{topic, TestBroker};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

const TIMEOUT: Duration = Duration::from_secs(30);

fn transactional(broker: &TestBroker, id: &str, extra: &[(&str, &str)]) -> FutureProducer {
    let mut settings = vec![("transactional.id", id)];
    settings.extend_from_slice(extra);
    let producer = producer(broker, &settings);
    producer
        .init_transactions(TIMEOUT)
        .expect("init_transactions");
    producer
}

async fn send(producer: &FutureProducer, topic: &str, key: &str, value: &str) {
    producer
        .send(
            FutureRecord::to(topic).key(key).payload(value),
            Duration::from_secs(30),
        )
        .await
        .unwrap_or_else(|(e, _)| panic!("send {value}: {e}"));
}

/// Every value in `topic`'s `partitions` read at `isolation`, until
/// nothing new arrives for `quiet` (and at least `at_least` arrived).
fn read_values(
    broker: &TestBroker,
    topic: &str,
    partitions: i32,
    isolation: &str,
    at_least: usize,
    quiet: Duration,
) -> Vec<String> {
    let consumer: BaseConsumer = consumer(broker, &[("isolation.level", isolation)]);
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        assignment
            .add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let mut values = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last_new = Instant::now();
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                values.push(String::from_utf8(m.payload().unwrap_or_default().to_vec()).unwrap());
                last_new = Instant::now();
            }
            Some(Err(e)) => panic!("consume: {e}"),
            None if values.len() >= at_least && last_new.elapsed() >= quiet => break,
            None => {}
        }
    }
    values
}

/// Commit, abort, commit: read_committed sees exactly the committed
/// records, each once; read_uncommitted sees every record written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_records_are_seen_and_aborted_ones_are_not() {
    let broker = TestBroker::start();
    let name = topic("txn");
    create_topic(&broker, &name, 3, &[]).await;
    let producer = transactional(&broker, "txn-commit-abort", &[]);
    let mut committed = BTreeSet::new();
    for (round, commit) in [(0, true), (1, false), (2, true)] {
        producer.begin_transaction().unwrap();
        for i in 0..30 {
            let value = format!("r{round}-{i}");
            send(&producer, &name, &format!("k{i}"), &value).await;
            if commit {
                committed.insert(value);
            }
        }
        if commit {
            producer.commit_transaction(TIMEOUT).expect("commit");
        } else {
            producer.abort_transaction(TIMEOUT).expect("abort");
        }
    }
    let seen = read_values(
        &broker,
        &name,
        3,
        "read_committed",
        60,
        Duration::from_secs(1),
    );
    let seen_set: BTreeSet<String> = seen.iter().cloned().collect();
    assert_eq!(seen.len(), seen_set.len(), "no duplicates: {seen:?}");
    assert_eq!(seen_set, committed, "exactly the committed records");
    let all = read_values(
        &broker,
        &name,
        3,
        "read_uncommitted",
        90,
        Duration::from_secs(1),
    );
    assert_eq!(all.len(), 90, "every record written, markers not delivered");
}

/// A second instance with the same transactional id fences the first: the
/// first's open transaction is aborted, its commit fails, and none of its
/// records become visible.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_instance_fences_the_old_one() {
    let broker = TestBroker::start();
    let name = topic("txn-fence");
    create_topic(&broker, &name, 2, &[]).await;
    let zombie = transactional(&broker, "txn-fence", &[]);
    zombie.begin_transaction().unwrap();
    for i in 0..10 {
        send(&zombie, &name, &format!("k{i}"), &format!("zombie-{i}")).await;
    }
    let fresh = transactional(&broker, "txn-fence", &[]);
    fresh.begin_transaction().unwrap();
    for i in 0..10 {
        send(&fresh, &name, &format!("k{i}"), &format!("fresh-{i}")).await;
    }
    fresh
        .commit_transaction(TIMEOUT)
        .expect("the new instance commits");
    let error = zombie
        .commit_transaction(TIMEOUT)
        .expect_err("the fenced instance cannot commit");
    assert!(
        error.rdkafka_error_code().is_some(),
        "a broker error: {error}"
    );
    let seen = read_values(
        &broker,
        &name,
        2,
        "read_committed",
        10,
        Duration::from_secs(1),
    );
    let expected: BTreeSet<String> = (0..10).map(|i| format!("fresh-{i}")).collect();
    assert_eq!(seen.iter().cloned().collect::<BTreeSet<_>>(), expected);
    assert_eq!(seen.len(), 10);
}

/// A transaction left open past its timeout is aborted by the coordinator:
/// read_committed consumers are not held back by it, and its producer's
/// commit fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_transaction_is_aborted_when_it_times_out() {
    let broker = TestBroker::start_with(&[
        "--transaction-abort-timed-out-transaction-cleanup-interval-ms",
        "100",
    ]);
    let name = topic("txn-timeout");
    create_topic(&broker, &name, 1, &[]).await;
    let hung = transactional(
        &broker,
        "txn-hung",
        &[
            ("transaction.timeout.ms", "1500"),
            ("message.timeout.ms", "1500"),
        ],
    );
    hung.begin_transaction().unwrap();
    send(&hung, &name, "k", "hung").await;
    // Another producer commits after it on the same partition.
    let other = transactional(&broker, "txn-other", &[]);
    other.begin_transaction().unwrap();
    send(&other, &name, "k", "after").await;
    other.commit_transaction(TIMEOUT).unwrap();
    // Held back until the hung transaction times out and is aborted.
    let started = Instant::now();
    let seen = read_values(
        &broker,
        &name,
        1,
        "read_committed",
        1,
        Duration::from_millis(500),
    );
    let waited = started.elapsed();
    assert_eq!(seen, ["after"], "only the committed record");
    // Held back by the open transaction (its 1.5 s timeout started just
    // before; the read then waits 0.5 s for quiet), then released by the
    // coordinator's abort, not by anything the hung producer did. Without
    // the hold-back the read would end after about 0.6 s.
    assert!(
        waited >= Duration::from_millis(1200) && waited < Duration::from_secs(20),
        "read_committed waited {waited:?}"
    );
    assert!(
        hung.commit_transaction(TIMEOUT).is_err(),
        "the timed-out transaction cannot commit"
    );
}
