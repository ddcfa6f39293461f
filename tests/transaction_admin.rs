//! The transaction admin APIs (KIP-664) on the wire: ListTransactions with
//! its state, producer-id, duration and pattern filters, DescribeTransactions,
//! DescribeProducers, and the abort of a hanging transaction with
//! WriteTxnMarkers, the way `kafka-transactions.sh` finds and aborts one.
//! The transactions themselves come from librdkafka's transactional producer.

mod common;

use std::time::{Duration, Instant};

use common::clients::{consumer, create_topic, producer};
use common::wire::Conn;
use common::{topic, TestBroker};
use kafka_protocol::messages::describe_producers_request::TopicRequest;
use kafka_protocol::messages::describe_producers_response::ProducerState;
use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

const TIMEOUT: Duration = Duration::from_secs(30);

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn transactional(broker: &TestBroker, id: &str) -> FutureProducer {
    let producer = producer(
        broker,
        &[
            ("transactional.id", id),
            ("transaction.timeout.ms", "600000"),
        ],
    );
    producer
        .init_transactions(TIMEOUT)
        .expect("init_transactions");
    producer
}

async fn send(producer: &FutureProducer, topic: &str, partition: i32, value: &str) {
    producer
        .send(
            FutureRecord::<(), _>::to(topic)
                .partition(partition)
                .payload(value),
            TIMEOUT,
        )
        .await
        .unwrap_or_else(|(e, _)| panic!("send {value}: {e}"));
}

/// ListTransactions at v2: (error, unknown state filters, [(id, state)]).
fn list(
    conn: &mut Conn,
    states: &[&str],
    producer_ids: &[i64],
    duration: i64,
    pattern: Option<&str>,
) -> (i16, Vec<String>, Vec<(String, String)>) {
    let response: ListTransactionsResponse = conn.call(
        ApiKey::ListTransactions,
        2,
        &ListTransactionsRequest::default()
            .with_state_filters(states.iter().map(|v| s(v)).collect())
            .with_producer_id_filters(producer_ids.iter().map(|&p| ProducerId(p)).collect())
            .with_duration_filter(duration)
            .with_transactional_id_pattern(pattern.map(s)),
    );
    (
        response.error_code,
        response
            .unknown_state_filters
            .iter()
            .map(|v| v.to_string())
            .collect(),
        response
            .transaction_states
            .iter()
            .map(|t| {
                (
                    t.transactional_id.0.to_string(),
                    t.transaction_state.to_string(),
                )
            })
            .collect(),
    )
}

fn describe_producers(
    conn: &mut Conn,
    name: &str,
    partitions: &[i32],
) -> Vec<(i16, Vec<ProducerState>)> {
    let response: DescribeProducersResponse = conn.call(
        ApiKey::DescribeProducers,
        0,
        &DescribeProducersRequest::default().with_topics(vec![TopicRequest::default()
            .with_name(TopicName(s(name)))
            .with_partition_indexes(partitions.to_vec())]),
    );
    assert_eq!(response.topics.len(), 1);
    response.topics[0]
        .partitions
        .iter()
        .map(|p| (p.error_code, p.active_producers.clone()))
        .collect()
}

fn write_abort_marker(
    conn: &mut Conn,
    name: &str,
    pid: i64,
    epoch: i16,
    coordinator_epoch: i32,
) -> i16 {
    write_marker(conn, name, pid, epoch, coordinator_epoch, false)
}

fn write_marker(
    conn: &mut Conn,
    name: &str,
    pid: i64,
    epoch: i16,
    coordinator_epoch: i32,
    commit: bool,
) -> i16 {
    let response: WriteTxnMarkersResponse = conn.call(
        ApiKey::WriteTxnMarkers,
        1,
        &WriteTxnMarkersRequest::default().with_markers(vec![WritableTxnMarker::default()
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_transaction_result(commit)
            .with_coordinator_epoch(coordinator_epoch)
            .with_topics(vec![WritableTxnMarkerTopic::default()
                .with_name(TopicName(s(name)))
                .with_partition_indexes(vec![0])])]),
    );
    assert_eq!(response.markers.len(), 1);
    assert_eq!(response.markers[0].producer_id.0, pid);
    response.markers[0].topics[0].partitions[0].error_code
}

/// List, describe and describe the producers of an open transaction, then
/// of the same id once committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_and_committed_transactions_are_listed_and_described() {
    let broker = TestBroker::start();
    let name = topic("txn-admin");
    create_topic(&broker, &name, 2, &[]).await;
    let plain = producer(&broker, &[]);
    plain
        .send(
            FutureRecord::<(), _>::to(&name)
                .partition(0)
                .payload("plain"),
            TIMEOUT,
        )
        .await
        .unwrap();
    let id = format!("admin-{}", uuid::Uuid::new_v4().simple());
    let txn = transactional(&broker, &id);
    let idle = format!("idle-{}", uuid::Uuid::new_v4().simple());
    let _idle = transactional(&broker, &idle);
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    txn.begin_transaction().unwrap();
    send(&txn, &name, 0, "t0").await;
    send(&txn, &name, 1, "t1").await;

    let mut conn = Conn::open(&broker.addr);
    let (error, unknown, all) = list(&mut conn, &[], &[], -1, None);
    assert_eq!((error, unknown.len()), (0, 0));
    assert!(all.contains(&(id.clone(), "Ongoing".into())), "{all:?}");
    assert!(all.contains(&(idle.clone(), "Empty".into())), "{all:?}");
    // State filters: exact names; an unknown one is reported and still filters.
    let (_, unknown, ongoing) = list(&mut conn, &["Ongoing", "Bogus"], &[], -1, None);
    assert_eq!(unknown, vec!["Bogus".to_string()]);
    assert!(ongoing.contains(&(id.clone(), "Ongoing".into())));
    assert!(!ongoing.iter().any(|(i, _)| *i == idle));
    let (_, _, only_unknown) = list(&mut conn, &["ongoing"], &[], -1, None);
    assert!(
        only_unknown.is_empty(),
        "names are case-sensitive: {only_unknown:?}"
    );
    // The pattern matches the whole id.
    let (_, _, by_pattern) = list(&mut conn, &[], &[], -1, Some("admin-[0-9a-f]+"));
    assert_eq!(by_pattern, vec![(id.clone(), "Ongoing".to_string())]);
    let (_, _, prefix_only) = list(&mut conn, &[], &[], -1, Some("admin-"));
    assert!(prefix_only.is_empty(), "{prefix_only:?}");
    assert_eq!(
        list(&mut conn, &[], &[], -1, Some("(")).0,
        128,
        "INVALID_REGULAR_EXPRESSION"
    );
    assert_eq!(
        list(&mut conn, &[], &[], -1, Some("a)|(b")).0,
        128,
        "cannot escape the anchors"
    );
    let huge = "a".repeat(100_000);
    assert_eq!(
        list(&mut conn, &[], &[], -1, Some(&huge)).0,
        128,
        "too long"
    );

    let described: DescribeTransactionsResponse = conn.call(
        ApiKey::DescribeTransactions,
        0,
        &DescribeTransactionsRequest::default().with_transactional_ids(vec![
            s(&id).into(),
            s("no-such-id").into(),
            s("").into(),
        ]),
    );
    let [open, missing, empty] = &described.transaction_states[..] else {
        panic!("three answers: {described:?}");
    };
    assert_eq!(open.error_code, 0);
    assert_eq!(open.transaction_state.as_str(), "Ongoing");
    assert_eq!(open.transaction_timeout_ms, 600_000);
    assert!(
        (started - 5_000..started + 5_000).contains(&open.transaction_start_time_ms),
        "start {} near {started}",
        open.transaction_start_time_ms
    );
    assert_eq!(open.topics.len(), 1);
    assert_eq!(open.topics[0].topic.0.as_str(), name);
    assert_eq!(open.topics[0].partitions, vec![0, 1]);
    assert_eq!(missing.error_code, 105, "TRANSACTIONAL_ID_NOT_FOUND");
    assert_eq!(empty.error_code, 42, "INVALID_REQUEST");
    let (pid, epoch) = (open.producer_id.0, open.producer_epoch);

    // Producer-id filter and duration filter.
    let (_, _, by_pid) = list(&mut conn, &[], &[pid], -1, None);
    assert_eq!(by_pid, vec![(id.clone(), "Ongoing".to_string())]);
    let (_, _, long_running) = list(&mut conn, &["Ongoing"], &[], 3_600_000, None);
    assert!(
        !long_running.iter().any(|(i, _)| *i == id),
        "started just now"
    );
    std::thread::sleep(Duration::from_millis(20));
    let (_, _, running) = list(&mut conn, &["Ongoing"], &[], 10, None);
    assert!(running.iter().any(|(i, _)| *i == id));

    // Partition 0 holds a plain (not idempotent: no producer id) batch and
    // the open transaction, which starts at offset 1; partition 1's at 0.
    let partitions = describe_producers(&mut conn, &name, &[0, 1, 7]);
    assert_eq!(partitions.len(), 3);
    let ours = |producers: &[ProducerState]| {
        producers
            .iter()
            .find(|p| p.producer_id.0 == pid)
            .cloned()
            .expect("the transactional producer is listed")
    };
    assert_eq!(partitions[0].0, 0);
    assert_eq!(partitions[0].1.len(), 1, "{:?}", partitions[0].1);
    let p0 = ours(&partitions[0].1);
    assert_eq!(
        (
            p0.producer_epoch,
            p0.current_txn_start_offset,
            p0.last_sequence,
            p0.coordinator_epoch
        ),
        (i32::from(epoch), 1, 0, -1)
    );
    assert!((started - 5_000..started + 5_000).contains(&p0.last_timestamp));
    assert_eq!(ours(&partitions[1].1).current_txn_start_offset, 0);
    assert_eq!(partitions[2].0, 3, "UNKNOWN_TOPIC_OR_PARTITION");

    txn.commit_transaction(TIMEOUT).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, _, after) = list(&mut conn, &[], &[pid], -1, None);
        if after == vec![(id.clone(), "CompleteCommit".to_string())] {
            break;
        }
        assert!(Instant::now() < deadline, "not complete: {after:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    let p0 = ours(&describe_producers(&mut conn, &name, &[0])[0].1);
    assert_eq!((p0.current_txn_start_offset, p0.coordinator_epoch), (-1, 0));
}

/// A hanging transaction: open on a partition while its coordinator knows
/// nothing of it (here the transaction log is lost while the broker is
/// down). read_committed is held at its first offset. ListTransactions does
/// not show it, DescribeProducers does, and WriteTxnMarkers(abort) with the
/// producer's epoch ends it, as `kafka-transactions.sh abort` does: then
/// read_committed reads past it, and its records stay invisible.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_transaction_is_found_and_aborted() {
    let mut broker = TestBroker::start();
    let name = topic("txn-hanging");
    create_topic(&broker, &name, 1, &[]).await;
    let id = format!("hanging-{}", uuid::Uuid::new_v4().simple());
    {
        // A second instance: epoch 1, so that an older epoch can be tried.
        drop(transactional(&broker, &id));
        let txn = transactional(&broker, &id);
        txn.begin_transaction().unwrap();
        for i in 0..3 {
            send(&txn, &name, 0, &format!("hanging-{i}")).await;
        }
        broker.kill();
        std::mem::forget(txn); // its broker is gone; closing it would wait
    }
    let mut lost = 0;
    for entry in std::fs::read_dir(broker.data_dir()).unwrap() {
        let path = entry.unwrap().path();
        let file_name = path.file_name().unwrap().to_string_lossy().to_string();
        if file_name.starts_with("__sluice_transaction_state-") {
            std::fs::remove_dir_all(&path).unwrap();
            lost += 1;
        }
    }
    assert_eq!(lost, 50, "the transaction log's partitions are removed");
    broker.start_again();
    let plain = producer(&broker, &[]);
    plain
        .send(
            FutureRecord::<(), _>::to(&name)
                .partition(0)
                .payload("after"),
            TIMEOUT,
        )
        .await
        .unwrap();

    // Held back: read_committed sees nothing, the LSO is the hanging start.
    let mut conn = Conn::open(&broker.addr);
    let lso = |conn: &mut Conn| -> i64 {
        use kafka_protocol::messages::list_offsets_request::{
            ListOffsetsPartition, ListOffsetsTopic,
        };
        let response: ListOffsetsResponse = conn.call(
            ApiKey::ListOffsets,
            5,
            &ListOffsetsRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_isolation_level(1)
                .with_topics(vec![ListOffsetsTopic::default()
                    .with_name(TopicName(s(&name)))
                    .with_partitions(vec![ListOffsetsPartition::default()
                        .with_partition_index(0)
                        .with_timestamp(-1)])]),
        );
        response.topics[0].partitions[0].offset
    };
    assert_eq!(lso(&mut conn), 0, "held at the hanging transaction");
    let (_, _, listed) = list(&mut conn, &[], &[], -1, None);
    assert!(
        !listed.iter().any(|(i, _)| *i == id),
        "the coordinator lost it: {listed:?}"
    );
    let producers = describe_producers(&mut conn, &name, &[0]);
    let hanging: Vec<&ProducerState> = producers[0]
        .1
        .iter()
        .filter(|p| p.current_txn_start_offset >= 0)
        .collect();
    assert_eq!(hanging.len(), 1, "{producers:?}");
    let (pid, epoch) = (hanging[0].producer_id.0, hanging[0].producer_epoch as i16);
    assert_eq!(hanging[0].current_txn_start_offset, 0);
    let coordinator_epoch = hanging[0].coordinator_epoch.max(0);

    // An older or newer epoch, a commit, a coordinator epoch this node never
    // had, another producer: refused, and nothing changes.
    assert_eq!(epoch, 1);
    for (what, pid, epoch, coordinator_epoch, commit, code) in [
        ("older epoch", pid, epoch - 1, coordinator_epoch, false, 47),
        ("newer epoch", pid, epoch + 1, coordinator_epoch, false, 47),
        ("a commit", pid, epoch, coordinator_epoch, true, 42),
        ("coordinator epoch 5", pid, epoch, 5, false, 42),
        (
            "no open transaction",
            pid + 1000,
            0,
            coordinator_epoch,
            false,
            48,
        ),
    ] {
        assert_eq!(
            write_marker(&mut conn, &name, pid, epoch, coordinator_epoch, commit),
            code,
            "{what}"
        );
        assert_eq!(lso(&mut conn), 0, "{what} changed nothing");
    }
    assert_eq!(
        write_abort_marker(&mut conn, &name, pid, epoch, coordinator_epoch),
        0
    );
    assert_eq!(
        lso(&mut conn),
        5,
        "three records, the marker, and the plain one"
    );
    let producers = describe_producers(&mut conn, &name, &[0]);
    assert!(producers[0]
        .1
        .iter()
        .all(|p| p.current_txn_start_offset == -1));

    let reader: BaseConsumer = consumer(&broker, &[("isolation.level", "read_committed")]);
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(&name, 0, Offset::Beginning)
        .unwrap();
    reader.assign(&assignment).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    while seen.is_empty() && Instant::now() < deadline {
        if let Some(m) = reader.poll(Duration::from_millis(200)) {
            let m = m.expect("consume");
            seen.push(String::from_utf8(m.payload().unwrap().to_vec()).unwrap());
        }
    }
    assert_eq!(
        seen,
        vec!["after".to_string()],
        "the aborted records are not read"
    );
}
