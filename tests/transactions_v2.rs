//! KIP-890 part 2 (transaction version 2) on the wire, the way Java 4 and
//! franz-go clients use it once ApiVersions finalizes `transaction.version`
//! at 2: no AddPartitionsToTxn (Produce v12 adds the partition), no
//! AddOffsetsToTxn (TxnOffsetCommit v5 adds the offsets partition), and
//! EndTxn v5 bumps the epoch at every end and answers with it. No client in
//! this project's reach speaks it (librdkafka, kafka-python, kafkajs and
//! @platformatic/kafka all stay on the classic protocol), so the requests
//! are built here.

mod common;

use bytes::Bytes;
use common::wire::{create_topic, produce_request, Conn};
use common::{topic, TestBroker};
use kafka_protocol::messages::add_partitions_to_txn_request::{
    AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction,
};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::txn_offset_commit_request::{
    TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Compression;
use sluice::protocol::encode;

const ID: &str = "tv2-producer";
const GROUP: &str = "tv2-group";

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// A transactional batch of one record.
fn batch(value: &str, producer_id: i64, epoch: i16, sequence: i32) -> Bytes {
    let fields = Some(encode::ProducerFields {
        producer_id,
        producer_epoch: epoch,
        base_sequence: sequence,
    });
    let mut record = encode::record(
        0,
        1_700_000_000_000,
        None,
        Some(Bytes::from(value.to_string())),
        fields,
    );
    record.transactional = true;
    encode::encode_batch(&[record], Compression::None)
}

fn produce(conn: &mut Conn, version: i16, name: &str, partition: i32, records: Bytes) -> i16 {
    let request =
        produce_request(name, partition, records).with_transactional_id(Some(s(ID).into()));
    let response: ProduceResponse = conn.call(ApiKey::Produce, version, &request);
    response.responses[0].partition_responses[0].error_code
}

fn end_txn(conn: &mut Conn, producer_id: i64, epoch: i16, commit: bool) -> (i16, i64, i16) {
    let response: EndTxnResponse = conn.call(
        ApiKey::EndTxn,
        5,
        &EndTxnRequest::default()
            .with_transactional_id(s(ID).into())
            .with_producer_id(ProducerId(producer_id))
            .with_producer_epoch(epoch)
            .with_committed(commit),
    );
    (
        response.error_code,
        response.producer_id.0,
        response.producer_epoch,
    )
}

/// The read_committed end of a partition (its last stable offset).
fn lso(conn: &mut Conn, name: &str, partition: i32) -> i64 {
    let response: ListOffsetsResponse = conn.call(
        ApiKey::ListOffsets,
        5,
        &ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_isolation_level(1)
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(TopicName(s(name)))
                .with_partitions(vec![ListOffsetsPartition::default()
                    .with_partition_index(partition)
                    .with_timestamp(-1)])]),
    );
    response.topics[0].partitions[0].offset
}

fn wait_for_lso(conn: &mut Conn, name: &str, partition: i32, wanted: i64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while lso(conn, name, partition) != wanted {
        assert!(
            std::time::Instant::now() < deadline,
            "LSO of {name}-{partition} not {wanted}"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

fn verify(
    conn: &mut Conn,
    producer_id: i64,
    epoch: i16,
    name: &str,
    partitions: &[i32],
    verify_only: bool,
) -> Vec<i16> {
    let response: AddPartitionsToTxnResponse = conn.call(
        ApiKey::AddPartitionsToTxn,
        5,
        &AddPartitionsToTxnRequest::default().with_transactions(vec![
            AddPartitionsToTxnTransaction::default()
                .with_transactional_id(s(ID).into())
                .with_producer_id(ProducerId(producer_id))
                .with_producer_epoch(epoch)
                .with_verify_only(verify_only)
                .with_topics(vec![AddPartitionsToTxnTopic::default()
                    .with_name(TopicName(s(name)))
                    .with_partitions(partitions.to_vec())]),
        ]),
    );
    assert_eq!(response.error_code, 0);
    assert_eq!(response.results_by_transaction.len(), 1);
    let result = &response.results_by_transaction[0];
    assert_eq!(result.transactional_id.0.as_str(), ID);
    result.topic_results[0]
        .results_by_partition
        .iter()
        .map(|p| p.partition_error_code)
        .collect()
}

fn committed_offset(conn: &mut Conn, name: &str) -> (i16, i64) {
    let response: OffsetFetchResponse = conn.call(
        ApiKey::OffsetFetch,
        7,
        &OffsetFetchRequest::default()
            .with_group_id(s(GROUP).into())
            .with_require_stable(true)
            .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                .with_name(TopicName(s(name)))
                .with_partition_indexes(vec![0])])),
    );
    let p = &response.topics[0].partitions[0];
    (p.error_code, p.committed_offset)
}

/// ApiVersions v4 lists `transaction.version` as supported 0-2 and
/// finalized at 2; v3 leaves the supported range out (its minimum is 0, as
/// Kafka does); a broker started with --transaction-version 0 finalizes
/// nothing, so clients stay on the classic protocol.
#[test]
fn api_versions_finalizes_transaction_version_two() {
    let broker = TestBroker::start();
    let mut conn = Conn::open(&broker.addr);
    let v4: ApiVersionsResponse = conn.call(ApiKey::ApiVersions, 4, &ApiVersionsRequest::default());
    assert_eq!(v4.error_code, 0);
    let supported: Vec<(String, i16, i16)> = v4
        .supported_features
        .iter()
        .map(|f| (f.name.to_string(), f.min_version, f.max_version))
        .collect();
    assert_eq!(supported, vec![("transaction.version".to_string(), 0, 2)]);
    let finalized: Vec<(String, i16, i16)> = v4
        .finalized_features
        .iter()
        .map(|f| (f.name.to_string(), f.min_version_level, f.max_version_level))
        .collect();
    assert_eq!(finalized, vec![("transaction.version".to_string(), 2, 2)]);
    assert!(v4.finalized_features_epoch >= 0);
    let max = |r: &ApiVersionsResponse, key: ApiKey| {
        r.api_keys
            .iter()
            .find(|a| a.api_key == key as i16)
            .map(|a| a.max_version)
    };
    assert_eq!(max(&v4, ApiKey::Produce), Some(13));
    assert_eq!(max(&v4, ApiKey::EndTxn), Some(5));
    assert_eq!(max(&v4, ApiKey::TxnOffsetCommit), Some(5));
    let v3: ApiVersionsResponse = conn.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    assert!(v3.supported_features.is_empty());
    assert_eq!(v3.finalized_features.len(), 1);

    let classic = TestBroker::start_with(&["--transaction-version", "0"]);
    let mut conn = Conn::open(&classic.addr);
    let v4: ApiVersionsResponse = conn.call(ApiKey::ApiVersions, 4, &ApiVersionsRequest::default());
    assert!(
        v4.finalized_features.is_empty(),
        "level 0 is expressed by absence"
    );
    assert_eq!(v4.supported_features.len(), 1);
}

/// Two transactions without AddPartitionsToTxn or AddOffsetsToTxn: the
/// first commits a record and an offset, the second aborts; each EndTxn v5
/// bumps the epoch, a retried EndTxn gets the same answer, the old epoch is
/// fenced, and read_committed sees exactly the committed record.
#[test]
fn transactions_without_add_partitions_bump_the_epoch_at_every_end() {
    let broker = TestBroker::start();
    let mut conn = Conn::open(&broker.addr);
    let name = topic("tv2");
    create_topic(&mut conn, &name, 3, &[]);
    let init: InitProducerIdResponse = conn.call(
        ApiKey::InitProducerId,
        5,
        &InitProducerIdRequest::default()
            .with_transactional_id(Some(s(ID).into()))
            .with_transaction_timeout_ms(60_000)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1),
    );
    assert_eq!(init.error_code, 0);
    let (pid, epoch0) = (init.producer_id.0, init.producer_epoch);

    // Produce v11 still verifies only: partition 1 was never added.
    assert_eq!(
        produce(&mut conn, 11, &name, 1, batch("v11", pid, epoch0, 0)),
        120,
        "TRANSACTION_ABORTABLE"
    );
    // Produce v12 adds partition 0 itself.
    assert_eq!(
        produce(&mut conn, 12, &name, 0, batch("committed", pid, epoch0, 0)),
        0
    );
    assert_eq!(
        verify(&mut conn, pid, epoch0, &name, &[0, 2], true),
        vec![0, 120],
        "verify-only: 0 is in, 2 is not"
    );
    // TxnOffsetCommit v5 adds the group's offsets partition itself.
    let commit: TxnOffsetCommitResponse = conn.call(
        ApiKey::TxnOffsetCommit,
        5,
        &TxnOffsetCommitRequest::default()
            .with_transactional_id(s(ID).into())
            .with_group_id(s(GROUP).into())
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch0)
            .with_generation_id(-1)
            .with_topics(vec![TxnOffsetCommitRequestTopic::default()
                .with_name(TopicName(s(&name)))
                .with_partitions(vec![TxnOffsetCommitRequestPartition::default()
                    .with_partition_index(0)
                    .with_committed_offset(7)])]),
    );
    assert_eq!(commit.topics[0].partitions[0].error_code, 0);
    assert_eq!(
        committed_offset(&mut conn, &name),
        (88, -1),
        "UNSTABLE_OFFSET_COMMIT while open"
    );
    let described: DescribeTransactionsResponse = conn.call(
        ApiKey::DescribeTransactions,
        0,
        &DescribeTransactionsRequest::default().with_transactional_ids(vec![s(ID).into()]),
    );
    let topics: Vec<(String, Vec<i32>)> = described.transaction_states[0]
        .topics
        .iter()
        .map(|t| (t.topic.0.to_string(), t.partitions.clone()))
        .collect();
    assert_eq!(
        topics.len(),
        2,
        "the data partition and the offsets partition: {topics:?}"
    );
    assert!(topics.contains(&(name.clone(), vec![0])));

    let (error, next_pid, epoch1) = end_txn(&mut conn, pid, epoch0, true);
    assert_eq!(
        (error, next_pid, epoch1),
        (0, pid, epoch0 + 1),
        "EndTxn v5 answers the bumped epoch"
    );
    // The next transaction starts at once, while the markers of the last are
    // still being written (a TV2 client does not wait): its first batch is
    // added and written (CONCURRENT_TRANSACTIONS, retriable, at most while
    // the last one completes).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match produce(&mut conn, 12, &name, 0, batch("aborted", pid, epoch1, 0)) {
            0 => break,
            51 if std::time::Instant::now() < deadline => {}
            other => panic!("the next transaction's first batch: error {other}"),
        }
    }
    // Partition 0: the committed record, its marker, then the open batch.
    wait_for_lso(&mut conn, &name, 0, 2);
    // Unstable until the offsets partition's marker is in too, then 7.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match committed_offset(&mut conn, &name) {
            (0, 7) => break,
            (88, -1) => assert!(std::time::Instant::now() < deadline, "still unstable"),
            other => panic!("committed offset {other:?}"),
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }

    // The second transaction goes on.
    assert_eq!(
        verify(&mut conn, pid, epoch1, &name, &[2], false),
        vec![0],
        "v5 add (not verify-only)"
    );
    assert_eq!(
        produce(
            &mut conn,
            11,
            &name,
            2,
            batch("aborted-too", pid, epoch1, 0)
        ),
        0,
        "added above"
    );
    // The previous epoch is fenced.
    assert_eq!(
        produce(&mut conn, 12, &name, 1, batch("zombie", pid, epoch0, 1)),
        47,
        "INVALID_PRODUCER_EPOCH"
    );
    let (error, _, epoch2) = end_txn(&mut conn, pid, epoch1, false);
    assert_eq!((error, epoch2), (0, epoch1 + 1));
    // A retried EndTxn (the answer was lost) gets the same answer, once the
    // markers are written (CONCURRENT_TRANSACTIONS until then, as in Kafka).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let retried = loop {
        match end_txn(&mut conn, pid, epoch1, false) {
            (51, _, _) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(5))
            }
            other => break other,
        }
    };
    assert_eq!(retried, (0, pid, epoch2));
    // A commit retried at that epoch is not a retry of anything.
    assert_eq!(
        end_txn(&mut conn, pid, epoch1, true).0,
        48,
        "INVALID_TXN_STATE"
    );
    wait_for_lso(&mut conn, &name, 0, 4);
    wait_for_lso(&mut conn, &name, 2, 2);

    // read_committed: only "committed"; read_uncommitted: both on partition 0.
    let read = |conn: &mut Conn, isolation: i8| -> Vec<String> {
        let mut request = common::wire::sessionless(
            12,
            &name,
            uuid::Uuid::nil(),
            &[(0, 0, 1 << 20)],
            0,
            0,
            1 << 20,
        );
        request.isolation_level = isolation;
        let response = common::wire::fetch(conn, 12, &request);
        let p = &response.responses[0].partitions[0];
        assert_eq!(p.error_code, 0);
        let aborted: Vec<i64> = p
            .aborted_transactions
            .iter()
            .flatten()
            .map(|a| a.first_offset)
            .collect();
        let mut records = p.records.clone().unwrap_or_default();
        let mut values = Vec::new();
        for set in kafka_protocol::records::RecordBatchDecoder::decode_all(&mut records).unwrap() {
            for r in set.records {
                if r.control || (isolation == 1 && aborted.contains(&r.offset)) {
                    continue;
                }
                values.push(String::from_utf8(r.value.unwrap().to_vec()).unwrap());
            }
        }
        values
    };
    assert_eq!(read(&mut conn, 1), vec!["committed".to_string()]);
    assert_eq!(
        read(&mut conn, 0),
        vec!["committed".to_string(), "aborted".to_string()]
    );
}
