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
/// first's open transaction is aborted, its writes after the fence are
/// refused, its commit fails, and none of its records become visible.
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
    // The zombie keeps writing after it was fenced: refused, and never visible.
    for i in 0..5 {
        let late = zombie
            .send(
                FutureRecord::to(&name)
                    .key(&format!("k{i}"))
                    .payload(&format!("zombie-late-{i}")),
                Duration::from_secs(10),
            )
            .await;
        assert!(
            late.is_err(),
            "a fenced producer's write is refused: {late:?}"
        );
    }
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

/// Consume-transform-produce (KIP-98, KIP-447): each input batch's output
/// and its consumer offsets commit together. An aborted round leaves both
/// the output and the group's committed offset as they were; the next
/// round redoes it, and in the end every input is in the output once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_transform_produce_commits_output_and_offsets_together() {
    use rdkafka::config::ClientConfig;
    use rdkafka::consumer::StreamConsumer;
    let broker = TestBroker::start();
    let input = topic("ctp-in");
    let output = topic("ctp-out");
    create_topic(&broker, &input, 1, &[]).await;
    create_topic(&broker, &output, 1, &[]).await;
    let plain = producer(&broker, &[]);
    for i in 0..100 {
        send(&plain, &input, &format!("k{i}"), &format!("in-{i}")).await;
    }
    let group = "ctp-group";
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    consumer.subscribe(&[&input]).unwrap();
    let txn = transactional(&broker, "ctp-txn", &[]);
    let mut processed = 0usize;
    let mut round = 0;
    while processed < 100 {
        // Take up to 10 inputs.
        let mut batch = Vec::new();
        while batch.len() < 10 && processed + batch.len() < 100 {
            let m = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
                .await
                .expect("an input in time")
                .expect("consume");
            batch.push((
                m.offset(),
                String::from_utf8(m.payload().unwrap().to_vec()).unwrap(),
            ));
        }
        txn.begin_transaction().unwrap();
        for (_, value) in &batch {
            send(&txn, &output, "k", &value.replace("in-", "out-")).await;
        }
        let next = batch.last().unwrap().0 + 1;
        let mut offsets = TopicPartitionList::new();
        offsets
            .add_partition_offset(&input, 0, Offset::Offset(next))
            .unwrap();
        txn.send_offsets_to_transaction(&offsets, &consumer.group_metadata().unwrap(), TIMEOUT)
            .expect("send offsets");
        if round == 3 {
            // Abort this round: rewind to the last committed offset and redo.
            txn.abort_transaction(TIMEOUT).unwrap();
            let committed = consumer.committed(TIMEOUT).unwrap();
            let at = committed.find_partition(&input, 0).unwrap().offset();
            assert_eq!(
                at,
                Offset::Offset(batch[0].0),
                "an aborted transaction's offsets are not committed"
            );
            consumer
                .seek(&input, 0, at, Duration::from_secs(10))
                .unwrap();
        } else {
            txn.commit_transaction(TIMEOUT).unwrap();
            processed += batch.len();
        }
        round += 1;
    }
    // The group's offset is the end of the input.
    let committed = consumer.committed(TIMEOUT).unwrap();
    assert_eq!(
        committed.find_partition(&input, 0).unwrap().offset(),
        Offset::Offset(100)
    );
    // Every input once in the output, in order, under read_committed.
    let seen = read_values(
        &broker,
        &output,
        1,
        "read_committed",
        100,
        Duration::from_secs(1),
    );
    let expected: Vec<String> = (0..100).map(|i| format!("out-{i}")).collect();
    assert_eq!(seen, expected);
    // The aborted round's output was written (read_uncommitted sees it).
    let all = read_values(
        &broker,
        &output,
        1,
        "read_uncommitted",
        110,
        Duration::from_secs(1),
    );
    assert_eq!(all.len(), 110);
}

/// TxnOffsetCommit and OffsetFetch on the wire: offsets committed in a
/// transaction are unstable (KIP-447 `require_stable`: UNSTABLE_OFFSET_COMMIT)
/// and invisible until it commits; without AddOffsetsToTxn the commit is
/// refused (KIP-890: INVALID_TXN_STATE, TRANSACTION_ABORTABLE from v4).
#[test]
fn transactional_offsets_are_unstable_until_the_commit() {
    use common::wire::{create_topic as create_raw, Conn};
    use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
    use kafka_protocol::messages::txn_offset_commit_request::{
        TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
    };
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::StrBytes;

    let broker = TestBroker::start();
    let mut conn = Conn::open(&broker.addr);
    let name = topic("txn-offsets");
    create_raw(&mut conn, &name, 1, &[]);
    let s = |v: &str| StrBytes::from_string(v.to_string());
    let init: InitProducerIdResponse = conn.call(
        ApiKey::InitProducerId,
        4,
        &InitProducerIdRequest::default()
            .with_transactional_id(Some(s("offsets-txn").into()))
            .with_transaction_timeout_ms(60_000)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1),
    );
    assert_eq!(init.error_code, 0);
    let (pid, epoch) = (init.producer_id, init.producer_epoch);
    let commit = |conn: &mut Conn, version: i16, offset: i64| -> i16 {
        let response: TxnOffsetCommitResponse = conn.call(
            ApiKey::TxnOffsetCommit,
            version,
            &TxnOffsetCommitRequest::default()
                .with_transactional_id(s("offsets-txn").into())
                .with_group_id(s("offsets-group").into())
                .with_producer_id(pid)
                .with_producer_epoch(epoch)
                .with_generation_id(-1)
                .with_topics(vec![TxnOffsetCommitRequestTopic::default()
                    .with_name(TopicName(s(&name)))
                    .with_partitions(vec![TxnOffsetCommitRequestPartition::default()
                        .with_partition_index(0)
                        .with_committed_offset(offset)])]),
        );
        response.topics[0].partitions[0].error_code
    };
    let add_offsets = |conn: &mut Conn| -> i16 {
        let response: AddOffsetsToTxnResponse = conn.call(
            ApiKey::AddOffsetsToTxn,
            3,
            &AddOffsetsToTxnRequest::default()
                .with_transactional_id(s("offsets-txn").into())
                .with_producer_id(pid)
                .with_producer_epoch(epoch)
                .with_group_id(s("offsets-group").into()),
        );
        response.error_code
    };
    let end_txn = |conn: &mut Conn| -> i16 {
        let response: EndTxnResponse = conn.call(
            ApiKey::EndTxn,
            3,
            &EndTxnRequest::default()
                .with_transactional_id(s("offsets-txn").into())
                .with_producer_id(pid)
                .with_producer_epoch(epoch)
                .with_committed(true),
        );
        response.error_code
    };
    // Not added to the transaction.
    assert_eq!(commit(&mut conn, 3, 5), 48, "INVALID_TXN_STATE");
    assert_eq!(commit(&mut conn, 4, 5), 120, "TRANSACTION_ABORTABLE");
    assert_eq!(add_offsets(&mut conn), 0);
    assert_eq!(commit(&mut conn, 3, 42), 0);
    let fetch = |conn: &mut Conn, require_stable: bool| -> (i16, i64) {
        let response: OffsetFetchResponse = conn.call(
            ApiKey::OffsetFetch,
            7,
            &OffsetFetchRequest::default()
                .with_group_id(s("offsets-group").into())
                .with_require_stable(require_stable)
                .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                    .with_name(TopicName(s(&name)))
                    .with_partition_indexes(vec![0])])),
        );
        let p = &response.topics[0].partitions[0];
        (p.error_code, p.committed_offset)
    };
    assert_eq!(
        fetch(&mut conn, false),
        (0, -1),
        "not visible before the commit"
    );
    assert_eq!(
        fetch(&mut conn, true),
        (88, -1),
        "UNSTABLE_OFFSET_COMMIT while open"
    );
    assert_eq!(end_txn(&mut conn), 0);
    // The marker follows the answer: unstable until it is in, then 42.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match fetch(&mut conn, true) {
            (0, 42) => break,
            (88, -1) => assert!(Instant::now() < deadline, "still unstable after 10 s"),
            other => panic!("unexpected {other:?}"),
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(fetch(&mut conn, false), (0, 42));

    // A client starts its next transaction as soon as EndTxn is answered:
    // AddOffsetsToTxn then waits for the previous one's markers (up to
    // 100 ms) instead of answering CONCURRENT_TRANSACTIONS (51), which sent
    // librdkafka into a 20 ms retry backoff.
    assert_eq!(add_offsets(&mut conn), 0);
    assert_eq!(commit(&mut conn, 3, 43), 0);
    assert_eq!(end_txn(&mut conn), 0);
    assert_eq!(add_offsets(&mut conn), 0, "the next transaction waited");
    assert_eq!(
        fetch(&mut conn, true),
        (0, 43),
        "the previous transaction was complete when it could start"
    );
}

/// An independent client, @platformatic/kafka (AddPartitionsToTxn in its
/// batched v4-5 form, EndTxn v4): commit, abort, commit, then a second
/// instance fences the first. librdkafka's read_committed consumer sees
/// exactly the committed records, each once; read_uncommitted sees all.
#[test]
fn platformatic_transactions_commit_abort_and_fence() {
    let broker = TestBroker::start();
    let name = topic("platformatic-txn");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(create_topic(&broker, &name, 3, &[]));
    let stdout = common::run_node_client(
        "platformatic_transactions.mjs",
        &[&broker.addr, &name, "20"],
    );
    let mut committed = BTreeSet::new();
    let mut aborted = BTreeSet::new();
    let mut fenced = None;
    for line in stdout.lines() {
        match line.split_whitespace().collect::<Vec<_>>().as_slice() {
            ["committed", value] => assert!(committed.insert(value.to_string())),
            ["aborted", value] => assert!(aborted.insert(value.to_string())),
            ["fenced", error] => fenced = Some(error.to_string()),
            _ => panic!("unexpected line {line:?}"),
        }
    }
    assert_eq!((committed.len(), aborted.len()), (41, 21), "{stdout}");
    let fenced = fenced.expect("the fencing step ran");
    assert_ne!(fenced, "none", "the fenced instance's commit must fail");
    let seen = read_values(
        &broker,
        &name,
        3,
        "read_committed",
        committed.len(),
        Duration::from_secs(1),
    );
    assert_eq!(
        seen.len(),
        committed.len(),
        "each committed record once: {seen:?}"
    );
    assert_eq!(seen.into_iter().collect::<BTreeSet<_>>(), committed);
    let all = read_values(
        &broker,
        &name,
        3,
        "read_uncommitted",
        committed.len() + aborted.len(),
        Duration::from_secs(1),
    );
    assert_eq!(all.len(), committed.len() + aborted.len());
}
