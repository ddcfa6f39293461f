//! Three Kafka behaviours librdkafka's own test suite relies on (its tests
//! 0011, 0081 and 0092), each checked with librdkafka and on the wire:
//! per-record errors in Produce (KIP-467), manual replica assignment in
//! CreateTopics/CreatePartitions, and Kafka 3's deprecated topic configs.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::alter_configs_request::{AlterConfigsResource, AlterableConfig};
use kafka_protocol::messages::create_partitions_request::{
    CreatePartitionsAssignment, CreatePartitionsTopic,
};
use kafka_protocol::messages::create_topics_request::CreatableReplicaAssignment;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, ApiKey, BrokerId, CreatePartitionsRequest,
    CreatePartitionsResponse, CreateTopicsResponse, DescribeConfigsRequest,
    DescribeConfigsResponse,
};
use kafka_protocol::records::Compression;
use rdkafka::admin::{
    AdminOptions, AlterConfig, NewPartitions, NewTopic, ResourceSpecifier, TopicReplication,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use sluice::protocol::encode;

use common::clients::admin;
use common::wire::{
    create_topic, create_topics_request, latest_offset, produce, str_bytes, topic_name, Conn,
    INVALID_CONFIG, NONE, RESOURCE_TOPIC,
};
use common::TestBroker;

const INVALID_RECORD: i16 = 87;
const INVALID_TIMESTAMP: i16 = 32;
const INVALID_REQUEST: i16 = 42;
const INVALID_REPLICA_ASSIGNMENT: i16 = 39;
const SOURCE_TOPIC: i8 = 1;
const SOURCE_DEFAULT: i8 = 5;

/// A batch of `count` records, timestamped `timestamp(i)`, keyless where
/// `keyless(i)`.
fn batch(
    count: i64,
    keyless: impl Fn(i64) -> bool,
    timestamp: impl Fn(i64) -> i64,
    compression: Compression,
) -> Bytes {
    let records: Vec<_> = (0..count)
        .map(|i| {
            let key = (!keyless(i)).then(|| Bytes::from(format!("k{i}")));
            encode::record(
                i,
                timestamp(i),
                key,
                Some(Bytes::from(format!("v{i}"))),
                None,
            )
        })
        .collect();
    encode::encode_batch(&records, compression)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// KIP-467 on the wire: the refused records are named by index, with a
/// message each, and the batch's error message says how many.
#[test]
fn produce_names_the_records_at_fault() {
    let broker = TestBroker::start();
    let mut conn = Conn::open(&broker.addr);
    let compacted = common::topic("kip467-compact");
    create_topic(&mut conn, &compacted, 1, &[("cleanup.policy", "compact")]);
    let bounded = common::topic("kip467-time");
    create_topic(
        &mut conn,
        &bounded,
        1,
        &[("message.timestamp.before.max.ms", "3600000")],
    );
    let now = now_ms();

    // 100 records, every 10th without a key, on a compacted topic.
    for compression in [Compression::None, Compression::Zstd] {
        let records = batch(100, |i| i % 10 == 3, |_| now, compression);
        let answer = produce(&mut conn, &compacted, 0, records);
        assert_eq!(
            answer.error_code, INVALID_RECORD,
            "{compression:?}: {answer:?}"
        );
        let indexes: Vec<i32> = answer.record_errors.iter().map(|e| e.batch_index).collect();
        assert_eq!(indexes, (0..10).map(|i| i * 10 + 3).collect::<Vec<_>>());
        for e in &answer.record_errors {
            let message = e.batch_index_error_message.as_deref().unwrap_or_default();
            assert!(
                message.contains("Compacted topic cannot accept message without key"),
                "{message}"
            );
        }
        let message = answer.error_message.as_deref().unwrap_or_default();
        assert!(message.contains("10 record errors"), "{message}");
    }
    assert_eq!(latest_offset(&mut conn, &compacted, 0), 0, "nothing stored");

    // Timestamps: two records two hours old in a batch of five.
    let old = now - 2 * 3_600_000;
    let records = batch(
        5,
        |_| false,
        |i| if i == 1 || i == 4 { old } else { now },
        Compression::None,
    );
    let answer = produce(&mut conn, &bounded, 0, records);
    assert_eq!(answer.error_code, INVALID_TIMESTAMP, "{answer:?}");
    let indexes: Vec<i32> = answer.record_errors.iter().map(|e| e.batch_index).collect();
    assert_eq!(indexes, [1, 4]);
    let first = answer.record_errors[0]
        .batch_index_error_message
        .as_deref()
        .unwrap_or_default();
    assert!(
        first.contains(&format!(
            "Timestamp {old} of message with offset 1 is out of range"
        )),
        "{first}"
    );
    // In range: stored.
    let answer = produce(
        &mut conn,
        &bounded,
        0,
        batch(5, |_| false, |_| now, Compression::None),
    );
    assert_eq!((answer.error_code, answer.base_offset), (NONE, 0));
}

/// librdkafka's side of KIP-467 (its test 0011): of a batch of 100 with 10
/// keyless records on a compacted topic, those 10 fail with INVALID_RECORD and
/// the other 90 with _INVALID_DIFFERENT_RECORD (they were refused with the batch).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn librdkafka_fails_only_the_records_at_fault() {
    let broker = TestBroker::start();
    let mut conn = Conn::open(&broker.addr);
    let name = common::topic("kip467-rdkafka");
    create_topic(&mut conn, &name, 1, &[("cleanup.policy", "compact")]);
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .set("linger.ms", "200")
        .set("batch.num.messages", "1000")
        .set("message.timeout.ms", "10000")
        .set("retries", "0")
        .create()
        .expect("producer");
    let sends: Vec<_> = (0..100)
        .map(|i| {
            let producer = producer.clone();
            let topic = name.clone();
            tokio::spawn(async move {
                let value = format!("v{i}");
                let key = format!("k{i}");
                let mut record = FutureRecord::<String, String>::to(&topic)
                    .partition(0)
                    .payload(&value);
                if i % 10 != 7 {
                    record = record.key(&key);
                }
                producer.send(record, Duration::from_secs(15)).await
            })
        })
        .collect();
    let mut outcomes = BTreeMap::new();
    for (i, send) in sends.into_iter().enumerate() {
        let outcome = match send.await.unwrap() {
            Ok(_) => "delivered".to_string(),
            Err((KafkaError::MessageProduction(code), _)) => format!("{code:?}"),
            Err((other, _)) => format!("{other}"),
        };
        outcomes.insert(i, outcome);
    }
    let keyless: Vec<&String> = outcomes
        .iter()
        .filter(|(i, _)| *i % 10 == 7)
        .map(|(_, o)| o)
        .collect();
    let keyed: Vec<&String> = outcomes
        .iter()
        .filter(|(i, _)| *i % 10 != 7)
        .map(|(_, o)| o)
        .collect();
    let invalid_record = format!("{:?}", RDKafkaErrorCode::InvalidRecord);
    assert!(
        keyless.iter().all(|o| **o == invalid_record),
        "keyless records: {keyless:?}"
    );
    // Records refused only for being in a batch with bad ones: librdkafka
    // fails them with its own code, not with the records' error.
    let different = format!("{:?}", RDKafkaErrorCode::InvalidDifferentRecord);
    assert!(
        keyed.iter().all(|o| **o == different),
        "keyed records: {keyed:?}"
    );
    assert_eq!(latest_offset(&mut conn, &name, 0), 0, "nothing stored");
}

/// Manual replica assignment (librdkafka test 0081): accepted when it names
/// this broker, refused with Kafka's errors otherwise; CreatePartitions too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_replica_assignment_is_checked_as_kafka_checks_it() {
    let broker = TestBroker::start();
    let admin = admin(&broker);
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let name = common::topic("assigned");
    let assignment: &[&[i32]] = &[&[1], &[1], &[1]];
    let created = admin
        .create_topics(
            [&NewTopic::new(
                &name,
                3,
                TopicReplication::Variable(assignment),
            )],
            &options,
        )
        .await
        .unwrap();
    assert!(created[0].is_ok(), "{created:?}");
    let more: &[&[i32]] = &[&[1], &[1]];
    let grown = admin
        .create_partitions([&NewPartitions::new(&name, 5).assign(more)], &options)
        .await
        .unwrap();
    assert!(grown[0].is_ok(), "{grown:?}");
    let mut conn = Conn::open(&broker.addr);
    let meta = common::wire::metadata(&mut conn, Some(&[&name]), false);
    assert_eq!(meta.topics[0].partitions.len(), 5);

    // Refused by librdkafka's admin client with Kafka's code.
    for (what, bad) in [
        ("an unknown broker", &[&[2][..]][..]),
        ("a broker twice", &[&[1, 1][..]][..]),
    ] {
        let refused = admin
            .create_topics(
                [&NewTopic::new(
                    &common::topic("bad"),
                    1,
                    TopicReplication::Variable(bad),
                )],
                &options,
            )
            .await
            .unwrap();
        eprintln!(
            "after 9.9: {:?}",
            topic_configs(&mut conn, &name).get("message.format.version")
        );
        let code = refused[0].as_ref().unwrap_err().1;
        assert_eq!(code, RDKafkaErrorCode::InvalidReplicaAssignment, "{what}");
    }

    // On the wire: the cases librdkafka's client would not send.
    let assign = |index: i32, brokers: &[i32]| {
        CreatableReplicaAssignment::default()
            .with_partition_index(index)
            .with_broker_ids(brokers.iter().map(|&b| BrokerId(b)).collect())
    };
    let cases: Vec<(&str, i32, i16, Vec<CreatableReplicaAssignment>, i16)> = vec![
        (
            "num_partitions set",
            2,
            -1,
            vec![assign(0, &[1]), assign(1, &[1])],
            INVALID_REQUEST,
        ),
        (
            "replication factor set",
            -1,
            1,
            vec![assign(0, &[1])],
            INVALID_REQUEST,
        ),
        (
            "a gap",
            -1,
            -1,
            vec![assign(0, &[1]), assign(2, &[1])],
            INVALID_REPLICA_ASSIGNMENT,
        ),
        (
            "a partition twice",
            -1,
            -1,
            vec![assign(0, &[1]), assign(0, &[1])],
            INVALID_REPLICA_ASSIGNMENT,
        ),
        (
            "an empty list",
            -1,
            -1,
            vec![assign(0, &[])],
            INVALID_REPLICA_ASSIGNMENT,
        ),
    ];
    for (what, partitions, factor, assignments, expected) in cases {
        let mut request = create_topics_request(&common::topic("raw"), partitions, factor, &[]);
        request.topics[0].assignments = assignments;
        let response: CreateTopicsResponse = conn.call(ApiKey::CreateTopics, 7, &request);
        assert_eq!(
            response.topics[0].error_code, expected,
            "{what}: {:?}",
            response.topics[0]
        );
    }
    // CreatePartitions whose assignments do not match the new partitions.
    let request = CreatePartitionsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(vec![CreatePartitionsTopic::default()
            .with_name(topic_name(&name))
            .with_count(8)
            .with_assignments(Some(vec![
                CreatePartitionsAssignment::default().with_broker_ids(vec![BrokerId(1)])
            ]))]);
    let response: CreatePartitionsResponse = conn.call(ApiKey::CreatePartitions, 3, &request);
    let result = &response.results[0];
    assert_eq!(result.error_code, INVALID_REPLICA_ASSIGNMENT, "{result:?}");
    assert!(
        result
            .error_message
            .as_deref()
            .is_some_and(|m| m.contains("3 additional partition(s), but only 1")),
        "{result:?}"
    );
    let meta = common::wire::metadata(&mut conn, Some(&[&name]), false);
    assert_eq!(meta.topics[0].partitions.len(), 5, "nothing added");
}

/// ListOffsets MAX_TIMESTAMP (KIP-734) answers with the record that has the
/// largest timestamp, as Kafka 3.8+ does (librdkafka's test 0081 checks it),
/// not with its batch's last offset; compressed batches too.
#[test]
fn max_timestamp_names_the_record_not_the_batch() {
    let broker = TestBroker::start();
    let mut conn = Conn::open(&broker.addr);
    for compression in [Compression::None, Compression::Gzip, Compression::Zstd] {
        let name = common::topic("max-timestamp");
        create_topic(&mut conn, &name, 1, &[]);
        let timestamps = [100, 400, 250];
        let records = batch(3, |_| false, |i| timestamps[i as usize], compression);
        let answer = produce(&mut conn, &name, 0, records);
        assert_eq!(answer.error_code, NONE, "{compression:?}");
        assert_eq!(
            common::wire::list_offset(&mut conn, &name, 0, -3),
            (NONE, 1),
            "{compression:?}: the record with timestamp 400 is at offset 1"
        );
    }
}

/// DescribeConfigs v4 of a topic: name -> (value, source).
fn topic_configs(conn: &mut Conn, topic: &str) -> BTreeMap<String, (Option<String>, i8)> {
    let request =
        DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(RESOURCE_TOPIC)
            .with_resource_name(str_bytes(topic))
            .with_configuration_keys(None)]);
    let response: DescribeConfigsResponse = conn.call(ApiKey::DescribeConfigs, 4, &request);
    response.results[0]
        .configs
        .iter()
        .map(|c| {
            (
                c.name.to_string(),
                (c.value.as_ref().map(|v| v.to_string()), c.config_source),
            )
        })
        .collect()
}

/// Kafka 3's deprecated topic configs (librdkafka test 0092 sets
/// message.format.version): accepted, reported, and where Kafka 3 gives one
/// a meaning (message.timestamp.difference.max.ms), applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deprecated_topic_configs_are_accepted_and_reported() {
    let broker = TestBroker::start();
    let admin = admin(&broker);
    let mut conn = Conn::open(&broker.addr);
    let name = common::topic("deprecated");
    create_topic(&mut conn, &name, 1, &[]);
    let configs = topic_configs(&mut conn, &name);
    assert_eq!(
        configs.get("message.format.version"),
        Some(&(Some("3.0-IV1".to_string()), SOURCE_DEFAULT))
    );
    assert_eq!(
        configs.get("message.downconversion.enable"),
        Some(&(Some("true".to_string()), SOURCE_DEFAULT))
    );

    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let altered = admin
        .alter_configs(
            [&AlterConfig::new(ResourceSpecifier::Topic(&name))
                .set("message.format.version", "0.10.0.0")
                .set("message.timestamp.difference.max.ms", "3600000")],
            &options,
        )
        .await
        .unwrap();
    assert!(altered[0].is_ok(), "{altered:?}");
    let configs = topic_configs(&mut conn, &name);
    assert_eq!(
        configs.get("message.format.version"),
        Some(&(Some("0.10.0.0".to_string()), SOURCE_TOPIC))
    );
    // The difference stands in for message.timestamp.before.max.ms.
    let old = now_ms() - 2 * 3_600_000;
    let answer = produce(
        &mut conn,
        &name,
        0,
        batch(1, |_| false, |_| old, Compression::None),
    );
    assert_eq!(answer.error_code, INVALID_TIMESTAMP, "{answer:?}");
    let answer = produce(
        &mut conn,
        &name,
        0,
        batch(1, |_| false, |_| now_ms(), Compression::None),
    );
    assert_eq!(answer.error_code, NONE, "{answer:?}");

    // An invalid value is still refused (on the wire: the rdkafka crate's
    // AlterConfigs drops per-resource errors).
    let request =
        AlterConfigsRequest::default().with_resources(vec![AlterConfigsResource::default()
            .with_resource_type(RESOURCE_TOPIC)
            .with_resource_name(str_bytes(&name))
            .with_configs(vec![AlterableConfig::default()
                .with_name(str_bytes("message.format.version"))
                .with_value(Some(str_bytes("9.9")))])]);
    let response: AlterConfigsResponse = conn.call(ApiKey::AlterConfigs, 1, &request);
    assert_eq!(
        response.responses[0].error_code, INVALID_CONFIG,
        "{response:?}"
    );
    assert_eq!(
        topic_configs(&mut conn, &name).get("message.format.version"),
        Some(&(Some("0.10.0.0".to_string()), SOURCE_TOPIC)),
        "unchanged"
    );
    let request = create_topics_request(
        &common::topic("bad-format"),
        1,
        1,
        &[("message.downconversion.enable", "maybe")],
    );
    let response: CreateTopicsResponse = conn.call(ApiKey::CreateTopics, 7, &request);
    assert_eq!(response.topics[0].error_code, INVALID_CONFIG);
}
