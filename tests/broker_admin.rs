//! Administration and operation of a broker: CreateTopics validation,
//! DeleteRecords, LogAppendTime, segment rolling, IncrementalAlterConfigs with
//! DescribeConfigs, DescribeCluster, start-up failures and clean shutdown, and
//! Metadata's auto-creation rules. librdkafka where it can, raw protocol otherwise.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::produce_response::PartitionProduceResponse;
use kafka_protocol::messages::{
    ApiKey, CreateTopicsResponse, DeleteRecordsRequest, DeleteRecordsResponse,
    DescribeClusterRequest, DescribeClusterResponse, DescribeConfigsRequest,
    DescribeConfigsResponse,
};
use kafka_protocol::records::Compression;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{Message, Timestamp};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use sluice::protocol::encode;
use uuid::Uuid;

use common::clients::{self, admin, create_topic};
use common::wire::{
    self, create_topics_request, fetch, incremental_alter, incremental_alter_opts, list_offset,
    metadata, produce, sessionless, str_bytes, topic_name, Conn, INVALID_CONFIG,
    INVALID_PARTITIONS, INVALID_REPLICATION_FACTOR, INVALID_TOPIC_EXCEPTION, LEADER_NOT_AVAILABLE,
    NONE, OFFSET_OUT_OF_RANGE, RESOURCE_TOPIC, UNKNOWN_TOPIC_OR_PARTITION,
};
use common::{topic, TestBroker};

const TIMEOUT: Duration = Duration::from_secs(10);

const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;
const SOURCE_TOPIC: i8 = 1;
const SOURCE_DEFAULT: i8 = 5;

// ---------------------------------------------------------------- raw protocol

fn topic_exists(conn: &mut Conn, name: &str) -> bool {
    metadata(conn, None, false)
        .topics
        .iter()
        .any(|t| t.name.as_ref().map(|n| n.0.as_str()) == Some(name))
}

/// A sessionless Fetch v12 of one partition; returns (error, records bytes).
fn raw_fetch(conn: &mut Conn, topic: &str, partition: i32, offset: i64) -> (i16, Bytes) {
    let parts = [(partition, offset, 1 << 20)];
    let request = sessionless(12, topic, Uuid::nil(), &parts, 0, 0, 1 << 20);
    let response = fetch(conn, 12, &request);
    assert_eq!(response.error_code, NONE);
    let p = &response.responses[0].partitions[0];
    (p.error_code, p.records.clone().unwrap_or_default())
}

/// A v2 batch of two records with timestamps `timestamp` and `timestamp + 1`.
fn old_batch(timestamp: i64) -> Bytes {
    let records: Vec<_> = (0..2)
        .map(|i| {
            let value = Some(Bytes::from(format!("raw-{i}")));
            encode::record(i, timestamp + i, None, value, None)
        })
        .collect();
    encode::encode_batch(&records, Compression::None)
}

/// Raw DeleteRecords v2 of one partition: (error, low watermark).
fn raw_delete_records(conn: &mut Conn, topic: &str, partition: i32, offset: i64) -> (i16, i64) {
    let request = DeleteRecordsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(vec![DeleteRecordsTopic::default()
            .with_name(topic_name(topic))
            .with_partitions(vec![DeleteRecordsPartition::default()
                .with_partition_index(partition)
                .with_offset(offset)])]);
    let response: DeleteRecordsResponse = conn.call(ApiKey::DeleteRecords, 2, &request);
    let p = &response.topics[0].partitions[0];
    (p.error_code, p.low_watermark)
}

/// DescribeConfigs v4 of a topic: name -> (value, source).
fn describe_topic_configs(
    conn: &mut Conn,
    topic: &str,
) -> std::collections::BTreeMap<String, (Option<String>, i8)> {
    let request =
        DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(RESOURCE_TOPIC)
            .with_resource_name(str_bytes(topic))
            .with_configuration_keys(None)]);
    let response: DescribeConfigsResponse = conn.call(ApiKey::DescribeConfigs, 4, &request);
    assert_eq!(response.results.len(), 1);
    let result = &response.results[0];
    assert_eq!(
        result.error_code, NONE,
        "DescribeConfigs {topic}: {:?}",
        result.error_message
    );
    result
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

// ---------------------------------------------------------------- rdkafka

fn producer(broker: &TestBroker) -> FutureProducer {
    clients::producer(
        broker,
        &[("linger.ms", "0"), ("message.timeout.ms", "10000")],
    )
}

fn consumer(broker: &TestBroker) -> BaseConsumer {
    clients::consumer(broker, &[("fetch.wait.max.ms", "50")])
}

/// CreateTopics through the admin client of a topic it must refuse: the error.
async fn create_refused(
    admin: &AdminClient<DefaultClientContext>,
    name: &str,
    partitions: i32,
    replication_factor: i32,
    configs: &[(&str, &str)],
    validate_only: bool,
) -> RDKafkaErrorCode {
    let mut new_topic = NewTopic::new(
        name,
        partitions,
        TopicReplication::Fixed(replication_factor),
    );
    for (k, v) in configs {
        new_topic = new_topic.set(k, v);
    }
    let options = AdminOptions::new().validate_only(validate_only);
    let results = admin.create_topics([&new_topic], &options).await.unwrap();
    results[0].as_ref().unwrap_err().1
}

/// Sends `payloads` one by one (each its own batch); returns their offsets.
async fn produce_each(
    producer: &FutureProducer,
    name: &str,
    payloads: &[String],
    timestamp: Option<i64>,
) -> Vec<i64> {
    let mut offsets = Vec::new();
    for payload in payloads {
        let mut record = FutureRecord::<(), _>::to(name)
            .payload(payload)
            .partition(0);
        if let Some(ts) = timestamp {
            record = record.timestamp(ts);
        }
        let delivered = producer
            .send(record, TIMEOUT)
            .await
            .map_err(|(e, _)| e)
            .expect("acked");
        offsets.push(delivered.offset);
    }
    offsets
}

/// Consumes partition 0 of `name` from `start` until `count` messages arrived:
/// (offset, payload, timestamp).
fn consume(
    consumer: &BaseConsumer,
    name: &str,
    start: Offset,
    count: usize,
) -> Vec<(i64, Vec<u8>, Timestamp)> {
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(name, 0, start).unwrap();
    consumer.assign(&assignment).expect("assign");
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while out.len() < count {
        assert!(
            Instant::now() < deadline,
            "timed out after {} of {count} messages: {:?}",
            out.len(),
            out.iter()
                .map(|m: &(i64, Vec<u8>, Timestamp)| m.0)
                .collect::<Vec<_>>()
        );
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => out.push((
                m.offset(),
                m.payload().unwrap_or_default().to_vec(),
                m.timestamp(),
            )),
            Some(Err(e)) => panic!("consume error: {e}"),
            None => {}
        }
    }
    out
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn log_files(broker: &TestBroker, name: &str) -> Vec<(String, u64)> {
    let mut files: Vec<(String, u64)> =
        std::fs::read_dir(broker.data_dir().join(format!("{name}-0")))
            .unwrap_or_else(|e| panic!("partition dir of {name}: {e}"))
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
            .map(|e| {
                (
                    e.file_name().to_string_lossy().to_string(),
                    e.metadata().unwrap().len(),
                )
            })
            .collect();
    files.sort();
    files
}

/// Runs the binary with `args` to its exit (killed after 10 s): (code, stdout, stderr).
fn run_sluice(args: &[&str]) -> (Option<i32>, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sluice");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (stdout, stderr) = (out.join().unwrap(), err.join().unwrap());
    let status = status.unwrap_or_else(|| {
        panic!("sluice {args:?} still running after 10 s; stdout: {stdout} stderr: {stderr}")
    });
    (status.code(), stdout, stderr)
}

// ---------------------------------------------------------------- tests

/// 1. CreateTopics: validate_only creates nothing; 0 partitions and
///    replication factor 3 are refused with the right errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_topics_validation() {
    let broker = TestBroker::start();
    let admin = admin(&broker);
    let mut conn = Conn::open(&broker.addr);

    let name = topic("validate-only");
    let results = admin
        .create_topics(
            [&NewTopic::new(&name, 3, TopicReplication::Fixed(1)).set("retention.ms", "1000")],
            &AdminOptions::new().validate_only(true),
        )
        .await
        .expect("create_topics");
    assert!(results[0].is_ok(), "validate_only create: {:?}", results[0]);
    assert!(
        !topic_exists(&mut conn, &name),
        "validate_only CreateTopics created {name}"
    );
    // validate_only still validates.
    assert_eq!(
        create_refused(&admin, &name, 1, 1, &[("retention.ms", "soon")], true).await,
        RDKafkaErrorCode::InvalidConfig,
        "validate_only with retention.ms=soon"
    );
    // And the name is free for a real create.
    create_topic(&broker, &name, 3, &[]).await;
    assert!(topic_exists(&mut conn, &name));
    assert_eq!(
        create_refused(&admin, &name, 3, 1, &[], true).await,
        RDKafkaErrorCode::TopicAlreadyExists,
        "validate_only for an existing topic"
    );

    let bad = topic("zero-partitions");
    assert_eq!(
        create_refused(&admin, &bad, 0, 1, &[], false).await,
        RDKafkaErrorCode::InvalidPartitions,
        "0 partitions"
    );
    assert!(!topic_exists(&mut conn, &bad), "0-partition topic created");

    let bad = topic("rf3");
    assert_eq!(
        create_refused(&admin, &bad, 1, 3, &[], false).await,
        RDKafkaErrorCode::InvalidReplicationFactor,
        "replication factor 3 on one broker"
    );
    assert!(!topic_exists(&mut conn, &bad), "rf-3 topic created");

    // The same on the wire (CreateTopics v7), validate_only included.
    for (partitions, rf, expected) in [
        (0, 1, INVALID_PARTITIONS),
        (-5, 1, INVALID_PARTITIONS),
        (1, 3, INVALID_REPLICATION_FACTOR),
        (1, 0, INVALID_REPLICATION_FACTOR),
    ] {
        for validate_only in [false, true] {
            let bad = topic("raw-bad");
            let request =
                create_topics_request(&bad, partitions, rf, &[]).with_validate_only(validate_only);
            let response: CreateTopicsResponse = conn.call(ApiKey::CreateTopics, 7, &request);
            assert_eq!(
                response.topics[0].error_code, expected,
                "CreateTopics v7 partitions={partitions} rf={rf} validate_only={validate_only}"
            );
            assert!(!topic_exists(&mut conn, &bad));
        }
    }
}

/// 2. DeleteRecords moves the log start offset: watermarks, ListOffsets,
///    Fetch below it and consumers from the beginning agree, also after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_records_moves_the_log_start() {
    let mut broker = TestBroker::start();
    let name = topic("delete-records");
    create_topic(&broker, &name, 1, &[]).await;
    {
        let producer = producer(&broker);
        let payloads: Vec<String> = (0..100).map(|i| format!("m{i}")).collect();
        let mut deliveries = Vec::new();
        for p in &payloads {
            deliveries.push(
                producer
                    .send_result(FutureRecord::<(), _>::to(&name).payload(p).partition(0))
                    .unwrap(),
            );
        }
        for d in deliveries {
            d.await.unwrap().map_err(|(e, _)| e).expect("acked");
        }
    }

    let admin = admin(&broker);
    let mut offsets = TopicPartitionList::new();
    offsets
        .add_partition_offset(&name, 0, Offset::Offset(40))
        .unwrap();
    let result = admin
        .delete_records(&offsets, &AdminOptions::new())
        .await
        .expect("delete_records");
    let elem = result
        .find_partition(&name, 0)
        .expect("partition in result");
    assert!(elem.error().is_ok(), "delete_records: {:?}", elem.error());
    assert_eq!(elem.offset(), Offset::Offset(40), "new low watermark");

    let check = |broker: &TestBroker, when: &str| {
        let consumer = consumer(broker);
        let (low, high) = consumer
            .fetch_watermarks(&name, 0, TIMEOUT)
            .expect("watermarks");
        assert_eq!((low, high), (40, 100), "{when}: watermarks");
        let mut conn = Conn::open(&broker.addr);
        assert_eq!(
            list_offset(&mut conn, &name, 0, -2),
            (NONE, 40),
            "{when}: ListOffsets earliest"
        );
        assert_eq!(
            list_offset(&mut conn, &name, 0, -1),
            (NONE, 100),
            "{when}: ListOffsets latest"
        );
        for below in [0, 10, 39] {
            let (error, records) = raw_fetch(&mut conn, &name, 0, below);
            assert_eq!(
                error, OFFSET_OUT_OF_RANGE,
                "{when}: Fetch v12 at offset {below}"
            );
            assert!(
                records.is_empty(),
                "{when}: records at deleted offset {below}"
            );
        }
        let (error, records) = raw_fetch(&mut conn, &name, 0, 40);
        assert_eq!(error, NONE, "{when}: Fetch at the log start");
        // The first batch holds offset 40 (it may start earlier: batches are kept whole).
        assert!(records.len() > 61, "{when}: no batch at the log start");
        let base = i64::from_be_bytes(records[..8].try_into().unwrap());
        let last = base + i64::from(i32::from_be_bytes(records[23..27].try_into().unwrap()));
        assert!(
            base <= 40 && 40 <= last,
            "{when}: first batch {base}..={last} does not hold the log start 40"
        );
        let messages = consume(&consumer, &name, Offset::Beginning, 60);
        let got: Vec<i64> = messages.iter().map(|m| m.0).collect();
        assert_eq!(
            got,
            (40..100).collect::<Vec<_>>(),
            "{when}: consumed offsets"
        );
        for (offset, payload, _) in &messages {
            assert_eq!(
                payload,
                format!("m{offset}").as_bytes(),
                "{when}: payload at {offset}"
            );
        }
    };
    check(&broker, "after DeleteRecords");

    // Raw DeleteRecords v2: below the current start is a no-op, beyond the
    // high watermark is refused.
    let mut conn = Conn::open(&broker.addr);
    assert_eq!(
        raw_delete_records(&mut conn, &name, 0, 30),
        (NONE, 40),
        "DeleteRecords v2 before 30 when the log starts at 40"
    );
    let (error, _) = raw_delete_records(&mut conn, &name, 0, 101);
    assert_eq!(
        error, OFFSET_OUT_OF_RANGE,
        "DeleteRecords v2 beyond the high watermark"
    );
    assert_eq!(list_offset(&mut conn, &name, 0, -2), (NONE, 40));
    drop(conn);
    drop(admin);

    broker.restart();
    check(&broker, "after a restart");

    // Offset -1 means the high watermark: everything goes.
    let mut conn = Conn::open(&broker.addr);
    assert_eq!(
        raw_delete_records(&mut conn, &name, 0, -1),
        (NONE, 100),
        "DeleteRecords v2 with offset -1 (high watermark)"
    );
    assert_eq!(list_offset(&mut conn, &name, 0, -2), (NONE, 100));
    assert_eq!(raw_fetch(&mut conn, &name, 0, 99).0, OFFSET_OUT_OF_RANGE);
    let (error, records) = raw_fetch(&mut conn, &name, 0, 100);
    assert_eq!(
        (error, records.len()),
        (NONE, 0),
        "fetch at the high watermark of an emptied log"
    );
}

/// 3. A LogAppendTime topic stamps batches with the broker's clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_append_time_topics_use_the_broker_clock() {
    let broker = TestBroker::start();
    let append = topic("log-append-time");
    let create = topic("create-time");
    create_topic(
        &broker,
        &append,
        1,
        &[("message.timestamp.type", "LogAppendTime")],
    )
    .await;
    create_topic(&broker, &create, 1, &[]).await;
    let producer = producer(&broker);
    let old = 1_500_000_000_000i64;
    let payloads: Vec<String> = (0..3).map(|i| format!("t{i}")).collect();
    let before = now_ms();
    produce_each(&producer, &append, &payloads, Some(old)).await;
    produce_each(&producer, &append, &payloads, None).await;
    produce_each(&producer, &create, &payloads, Some(old)).await;
    let after = now_ms();

    let first = consumer(&broker);
    let messages = consume(&first, &append, Offset::Beginning, 6);
    for (offset, _, timestamp) in &messages {
        match timestamp {
            Timestamp::LogAppendTime(t) => assert!(
                (before - 5000..=after + 5000).contains(t),
                "offset {offset}: log append time {t} not within 5 s of [{before}, {after}]"
            ),
            other => panic!("offset {offset} of a LogAppendTime topic: timestamp {other:?}"),
        }
    }
    // On the wire: Produce v9 reports the append time, and the stored batch has
    // the LogAppendTime attribute with that time as its max timestamp.
    let mut conn = Conn::open(&broker.addr);
    for (name, log_append) in [(&append, true), (&create, false)] {
        let before = now_ms();
        let PartitionProduceResponse {
            error_code: error,
            base_offset,
            log_append_time_ms: append_time,
            ..
        } = produce(&mut conn, name, 0, old_batch(old));
        let after = now_ms();
        assert_eq!(error, NONE, "{name}: Produce v9");
        assert_eq!(
            base_offset,
            if log_append { 6 } else { 3 },
            "{name}: base offset"
        );
        let (error, records) = raw_fetch(&mut conn, name, 0, base_offset);
        assert_eq!(error, NONE);
        let attributes = i16::from_be_bytes(records[21..23].try_into().unwrap());
        let first_timestamp = i64::from_be_bytes(records[27..35].try_into().unwrap());
        let max_timestamp = i64::from_be_bytes(records[35..43].try_into().unwrap());
        if log_append {
            assert!(
                (before - 5000..=after + 5000).contains(&append_time),
                "{name}: Produce v9 log_append_time_ms {append_time} not within 5 s of now"
            );
            assert_ne!(
                attributes & 0x08,
                0,
                "{name}: batch attributes {attributes:#x} lack LogAppendTime"
            );
            assert_eq!(
                max_timestamp, append_time,
                "{name}: stored max timestamp vs Produce answer"
            );
        } else {
            assert_eq!(
                append_time, -1,
                "{name}: Produce v9 log_append_time_ms of a CreateTime topic"
            );
            assert_eq!(
                attributes & 0x08,
                0,
                "{name}: batch attributes {attributes:#x}"
            );
            assert_eq!(
                (first_timestamp, max_timestamp),
                (old, old + 1),
                "{name}: stored timestamps"
            );
        }
    }
    drop(conn);

    // The control: a CreateTime topic keeps the producer's timestamp.
    let second = consumer(&broker);
    let messages = consume(&second, &create, Offset::Beginning, 3);
    for (offset, _, timestamp) in &messages {
        assert_eq!(
            *timestamp,
            Timestamp::CreateTime(old),
            "offset {offset} of a CreateTime topic"
        );
    }
}

/// 4. Small segment.bytes and segment.ms roll segments; reads cross them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_roll_by_size_and_time() {
    let broker = TestBroker::start();
    let by_size = topic("seg-bytes");
    let by_time = topic("seg-ms");
    create_topic(&broker, &by_size, 1, &[("segment.bytes", "1024")]).await;
    create_topic(&broker, &by_time, 1, &[("segment.ms", "100")]).await;
    let producer = producer(&broker);

    let payloads: Vec<String> = (0..40)
        .map(|i| format!("size-{i:03}-{}", "x".repeat(80)))
        .collect();
    let offsets = produce_each(&producer, &by_size, &payloads, None).await;
    assert_eq!(offsets, (0..40).collect::<Vec<_>>());
    let files = log_files(&broker, &by_size);
    assert!(
        files.len() >= 4,
        "segment.bytes=1024 with ~{} bytes written: {files:?}",
        40 * 160
    );
    for (file, size) in &files {
        assert!(
            *size <= 1024,
            "segment {file} is {size} bytes, over segment.bytes=1024"
        );
    }

    let time_payloads: Vec<String> = (0..4).map(|i| format!("time-{i}")).collect();
    for (i, p) in time_payloads.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let offset = produce_each(&producer, &by_time, std::slice::from_ref(p), None).await;
        assert_eq!(offset, vec![i as i64]);
    }
    let files = log_files(&broker, &by_time);
    assert!(
        files.len() >= 4,
        "segment.ms=100 with 4 messages 250 ms apart: {files:?}"
    );

    for (name, payloads) in [(&by_size, &payloads), (&by_time, &time_payloads)] {
        let consumer = consumer(&broker);
        let messages = consume(&consumer, name, Offset::Beginning, payloads.len());
        for (i, (offset, payload, _)) in messages.iter().enumerate() {
            assert_eq!(*offset, i as i64, "{name}: offsets in order");
            assert_eq!(payload, payloads[i].as_bytes(), "{name}: payload {i}");
        }
        // And raw: a fetch at each segment's base offset starts there.
        let mut conn = Conn::open(&broker.addr);
        for (file, _) in log_files(&broker, name) {
            let base: i64 = file
                .trim_end_matches(".log")
                .parse()
                .expect("numeric segment name");
            if base >= payloads.len() as i64 {
                continue; // an empty active segment
            }
            let (error, records) = raw_fetch(&mut conn, name, 0, base);
            assert_eq!(error, NONE, "{name}: fetch at segment base {base}");
            assert_eq!(
                i64::from_be_bytes(records[..8].try_into().unwrap()),
                base,
                "{name}: batch at segment base {base}"
            );
        }
    }
}

/// 5. IncrementalAlterConfigs v0 and v1: SET, APPEND, DELETE and an invalid
///    value, each checked with DescribeConfigs v4 (value and source).
#[test]
fn incremental_alter_configs() {
    let mut broker = TestBroker::start();
    let mut conn = Conn::open(&broker.addr);
    for version in [0i16, 1] {
        let name = topic(&format!("iac-v{version}"));
        wire::create_topic(&mut conn, &name, 1, &[]);
        let what = |s: &str| format!("IncrementalAlterConfigs v{version}: {s}");
        let initial = describe_topic_configs(&mut conn, &name);
        let default_retention = initial["retention.ms"].clone();
        assert_eq!(
            default_retention,
            (Some("604800000".to_string()), SOURCE_DEFAULT),
            "default retention.ms"
        );
        assert_eq!(
            initial["cleanup.policy"],
            (Some("delete".to_string()), SOURCE_DEFAULT)
        );
        let default_segment = initial["segment.bytes"].clone();
        assert_eq!(default_segment.1, SOURCE_DEFAULT);

        // SET
        assert_eq!(
            incremental_alter(
                &mut conn,
                version,
                &name,
                &[("retention.ms", OP_SET, Some("123456"))]
            ),
            NONE,
            "{}",
            what("SET retention.ms")
        );
        let configs = describe_topic_configs(&mut conn, &name);
        assert_eq!(
            configs["retention.ms"],
            (Some("123456".to_string()), SOURCE_TOPIC),
            "{}",
            what("after SET")
        );

        // APPEND to a list config
        assert_eq!(
            incremental_alter(
                &mut conn,
                version,
                &name,
                &[("cleanup.policy", OP_APPEND, Some("compact"))]
            ),
            NONE,
            "{}",
            what("APPEND cleanup.policy")
        );
        let configs = describe_topic_configs(&mut conn, &name);
        let (policy, source) = configs["cleanup.policy"].clone();
        let mut items: Vec<String> = policy
            .unwrap_or_default()
            .split(',')
            .map(|s| s.trim().to_string())
            .collect();
        items.sort();
        assert_eq!(
            items,
            vec!["compact", "delete"],
            "{}",
            what("cleanup.policy after APPEND")
        );
        assert_eq!(source, SOURCE_TOPIC, "{}", what("cleanup.policy source"));
        assert_eq!(
            configs["retention.ms"],
            (Some("123456".to_string()), SOURCE_TOPIC),
            "{}",
            what("APPEND kept retention.ms")
        );

        // DELETE back to the default
        assert_eq!(
            incremental_alter(
                &mut conn,
                version,
                &name,
                &[("retention.ms", OP_DELETE, None)]
            ),
            NONE,
            "{}",
            what("DELETE retention.ms")
        );
        let configs = describe_topic_configs(&mut conn, &name);
        assert_eq!(
            configs["retention.ms"],
            default_retention,
            "{}",
            what("after DELETE")
        );
        let before_invalid = configs;

        // Refusals change nothing: an invalid value (not even the valid change
        // beside it), an unknown key, APPEND to a config that is not a list.
        for changes in [
            vec![("segment.bytes", OP_SET, Some("abc"))],
            vec![
                ("retention.ms", OP_SET, Some("999")),
                ("segment.bytes", OP_SET, Some("abc")),
            ],
            vec![("no.such.config", OP_SET, Some("1"))],
            vec![("retention.ms", OP_APPEND, Some("5"))],
        ] {
            assert_eq!(
                incremental_alter(&mut conn, version, &name, &changes),
                INVALID_CONFIG,
                "{}",
                what(&format!("{changes:?}"))
            );
            let configs = describe_topic_configs(&mut conn, &name);
            assert_eq!(
                configs,
                before_invalid,
                "{}",
                what(&format!("{changes:?} changed configs"))
            );
            assert_eq!(configs["segment.bytes"], default_segment);
        }

        // validate_only: accepted, not applied.
        assert_eq!(
            incremental_alter_opts(
                &mut conn,
                version,
                &name,
                &[("retention.ms", OP_SET, Some("777"))],
                true
            ),
            NONE,
            "{}",
            what("validate_only SET")
        );
        assert_eq!(
            describe_topic_configs(&mut conn, &name),
            before_invalid,
            "{}",
            what("validate_only changed configs")
        );

        // SUBTRACT takes compact out again.
        assert_eq!(
            incremental_alter(
                &mut conn,
                version,
                &name,
                &[("cleanup.policy", OP_SUBTRACT, Some("compact"))]
            ),
            NONE,
            "{}",
            what("SUBTRACT cleanup.policy")
        );
        let configs = describe_topic_configs(&mut conn, &name);
        assert_eq!(
            configs["cleanup.policy"].0.as_deref(),
            Some("delete"),
            "{}",
            what("cleanup.policy after SUBTRACT compact")
        );

        // An unknown topic.
        assert_eq!(
            incremental_alter(
                &mut conn,
                version,
                &topic("no-such"),
                &[("retention.ms", OP_SET, Some("1"))]
            ),
            UNKNOWN_TOPIC_OR_PARTITION,
            "{}",
            what("unknown topic")
        );
    }

    // Overrides survive a restart, defaults stay defaults.
    let name = topic("iac-restart");
    wire::create_topic(&mut conn, &name, 1, &[]);
    assert_eq!(
        incremental_alter(
            &mut conn,
            1,
            &name,
            &[("retention.ms", OP_SET, Some("654321"))]
        ),
        NONE
    );
    drop(conn);
    broker.restart();
    let mut conn = Conn::open(&broker.addr);
    let configs = describe_topic_configs(&mut conn, &name);
    assert_eq!(
        configs["retention.ms"],
        (Some("654321".to_string()), SOURCE_TOPIC),
        "after restart"
    );
    assert_eq!(
        configs["cleanup.policy"],
        (Some("delete".to_string()), SOURCE_DEFAULT),
        "after restart"
    );
}

/// 6. DescribeCluster v0 and v1: one broker at our port; the cluster id is
///    stable across a restart and matches Metadata's.
#[test]
fn describe_cluster() {
    let mut broker = TestBroker::start();
    let mut ids = Vec::new();
    for round in 0..2 {
        if round == 1 {
            broker.restart();
        }
        let port: i32 = broker.addr.rsplit(':').next().unwrap().parse().unwrap();
        let mut conn = Conn::open(&broker.addr);
        for version in [0i16, 1] {
            let what = format!("DescribeCluster v{version} (round {round})");
            let response: DescribeClusterResponse = conn.call(
                ApiKey::DescribeCluster,
                version,
                &DescribeClusterRequest::default(),
            );
            assert_eq!(response.error_code, NONE, "{what}");
            assert!(!response.cluster_id.is_empty(), "{what}: empty cluster id");
            assert_eq!(response.brokers.len(), 1, "{what}: brokers");
            let b = &response.brokers[0];
            assert_eq!(b.port, port, "{what}: broker port");
            assert_eq!(b.host.as_str(), "127.0.0.1", "{what}: broker host");
            assert!(b.broker_id.0 >= 0, "{what}: broker id");
            assert_eq!(response.controller_id, b.broker_id, "{what}: controller");
            if version >= 1 {
                assert_eq!(response.endpoint_type, 1, "{what}: endpoint type (brokers)");
            }
            ids.push(response.cluster_id.to_string());
        }
        let meta = metadata(&mut conn, None, false);
        assert_eq!(
            meta.cluster_id.as_ref().map(|s| s.to_string()),
            Some(ids.last().unwrap().clone()),
            "Metadata and DescribeCluster agree on the cluster id"
        );
    }
    assert!(
        ids.iter().all(|id| id == &ids[0]),
        "cluster id changed: {ids:?}"
    );
}

/// 7. Start-up failures name their cause; --help; SIGTERM exits 0.
#[test]
fn start_up_failures_help_and_sigterm() {
    let mut broker = TestBroker::start();
    let data_dir = broker.data_dir().to_string_lossy().to_string();

    // A second process on the same data dir.
    let (code, stdout, stderr) = run_sluice(&[
        "--data-dir",
        &data_dir,
        "--listen",
        "127.0.0.1:0",
        "--cores",
        "1",
    ]);
    assert!(
        code.is_some_and(|c| c != 0),
        "second broker on the same data dir: exit {code:?}, stdout {stdout:?}, stderr {stderr:?}"
    );
    assert!(
        stderr.to_lowercase().contains("lock"),
        "second broker's message does not mention the lock: {stderr:?}"
    );
    assert!(
        !stdout.contains("listening"),
        "second broker listened: {stdout:?}"
    );
    // The first one is unharmed.
    let mut conn = Conn::open(&broker.addr);
    assert_eq!(metadata(&mut conn, None, false).brokers.len(), 1);
    drop(conn);

    let temp = tempfile::tempdir().unwrap();
    let fresh = temp.path().join("data").to_string_lossy().to_string();
    let config = temp.path().join("sluice.toml");
    std::fs::write(&config, "cores = 1\nretention_hours = 5\n").unwrap();
    let (code, stdout, stderr) = run_sluice(&[
        "--data-dir",
        &fresh,
        "--listen",
        "127.0.0.1:0",
        "--config",
        &config.to_string_lossy(),
    ]);
    assert!(
        code.is_some_and(|c| c != 0),
        "unknown config file key: exit {code:?}, stdout {stdout:?}, stderr {stderr:?}"
    );
    assert!(
        stderr.contains("retention_hours"),
        "stderr does not name the key: {stderr:?}"
    );

    let (code, stdout, stderr) = run_sluice(&[
        "--data-dir",
        &fresh,
        "--listen",
        "127.0.0.1:0",
        "--topic-default",
        "retention.ms=soon",
    ]);
    assert!(
        code.is_some_and(|c| c != 0),
        "--topic-default retention.ms=soon: exit {code:?}, stdout {stdout:?}, stderr {stderr:?}"
    );
    assert!(
        stderr.contains("retention.ms"),
        "stderr does not name the setting: {stderr:?}"
    );

    let (code, stdout, stderr) = run_sluice(&["--help"]);
    assert_eq!(code, Some(0), "--help: stderr {stderr:?}");
    for flag in ["--listen", "--data-dir", "--cores", "--config"] {
        assert!(
            stdout.contains(flag),
            "--help does not mention {flag}: {stdout}"
        );
    }

    // SIGTERM after some traffic: a clean exit.
    let mut conn = Conn::open(&broker.addr);
    wire::create_topic(&mut conn, &topic("before-stop"), 2, &[]);
    assert_eq!(broker.stop(), Some(0), "SIGTERM exit code");
    drop(conn);

    // The lock is released: a new process starts on that dir, and SIGTERM stops it with 0.
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args([
            "--data-dir",
            &data_dir,
            "--listen",
            "127.0.0.1:0",
            "--cores",
            "1",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn sluice");
    let mut first_line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut first_line,
    )
    .unwrap();
    assert!(
        first_line.starts_with("sluice listening on "),
        "restart on the data dir after SIGTERM: {first_line:?}, exit {:?}",
        child.try_wait()
    );
    // SAFETY: signalling our own child process.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("no exit within 10 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(
        status.code(),
        Some(0),
        "SIGTERM exit code of the second run"
    );
}

/// A second broker (another data dir) on a port the first one serves, or on
/// its metrics port, fails to start with "Address already in use" and a
/// non-zero exit, as Kafka does; before, SO_REUSEPORT let it join and the
/// kernel split new connections between two unrelated brokers.
#[test]
fn a_second_broker_cannot_share_a_port() {
    let broker = TestBroker::start_with(&["--metrics-listen", "127.0.0.1:0"]);
    let metrics_addr = broker
        .metrics_url
        .as_deref()
        .and_then(|url| url.strip_prefix("http://"))
        .and_then(|rest| rest.strip_suffix("/metrics"))
        .expect("metrics address")
        .to_string();
    let temp = tempfile::tempdir().unwrap();
    let other_dir = temp.path().join("other").to_string_lossy().to_string();
    for (what, args) in [
        ("the Kafka port", vec!["--listen", broker.addr.as_str()]),
        (
            "the metrics port",
            vec![
                "--listen",
                "127.0.0.1:0",
                "--metrics-listen",
                metrics_addr.as_str(),
            ],
        ),
    ] {
        let mut all = vec!["--data-dir", other_dir.as_str(), "--cores", "2"];
        all.extend(args);
        let (code, stdout, stderr) = run_sluice(&all);
        assert!(
            code.is_some_and(|c| c != 0),
            "second broker on {what}: exit {code:?}, stdout {stdout:?}, stderr {stderr:?}"
        );
        assert!(
            stderr.contains("Address already in use"),
            "second broker on {what}: {stderr:?}"
        );
        assert!(
            !stdout.contains("listening"),
            "second broker on {what} listened: {stdout:?}"
        );
    }
    // Every new connection still reaches the first broker: one cluster id.
    let cluster_ids: std::collections::BTreeSet<String> = (0..20)
        .map(|_| {
            let mut conn = Conn::open(&broker.addr);
            let response = metadata(&mut conn, None, false);
            response
                .cluster_id
                .map(|c| c.to_string())
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(cluster_ids.len(), 1, "{cluster_ids:?}");
}

/// 8. Metadata and auto-creation: allow=false, --auto-create-topics false, invalid names.
#[test]
fn metadata_auto_creation_rules() {
    let broker = TestBroker::start();
    let mut conn = Conn::open(&broker.addr);
    let unknown = topic("no-auto");
    for _ in 0..2 {
        let response = metadata(&mut conn, Some(&[&unknown]), false);
        assert_eq!(response.topics.len(), 1);
        assert_eq!(
            response.topics[0].error_code, UNKNOWN_TOPIC_OR_PARTITION,
            "Metadata v12 allow_auto_topic_creation=false for an unknown topic"
        );
        assert!(response.topics[0].partitions.is_empty());
    }
    assert!(
        !topic_exists(&mut conn, &unknown),
        "allow=false created the topic"
    );

    // The control: allow=true on a default broker creates it.
    let auto = topic("auto");
    let response = metadata(&mut conn, Some(&[&auto]), true);
    assert!(
        matches!(response.topics[0].error_code, NONE | LEADER_NOT_AVAILABLE),
        "auto-create: error {}",
        response.topics[0].error_code
    );
    assert!(
        topic_exists(&mut conn, &auto),
        "allow=true did not create the topic"
    );

    // Invalid names: INVALID_TOPIC_EXCEPTION, nothing created.
    let long = "x".repeat(250);
    for bad in ["bad/name", "..", "with space", long.as_str()] {
        for allow in [true, false] {
            let response = metadata(&mut conn, Some(&[bad]), allow);
            assert_eq!(response.topics.len(), 1, "{bad:?}");
            assert_eq!(
                response.topics[0].error_code, INVALID_TOPIC_EXCEPTION,
                "Metadata v12 (allow_auto_topic_creation={allow}) for the invalid topic name {bad:?}"
            );
            assert!(!topic_exists(&mut conn, bad), "{bad:?} created");
        }
    }

    // --auto-create-topics false: allow=true does not create either.
    let strict = TestBroker::start_with(&["--auto-create-topics", "false"]);
    let mut conn = Conn::open(&strict.addr);
    let name = topic("strict");
    let response = metadata(&mut conn, Some(&[&name]), true);
    assert_eq!(
        response.topics[0].error_code, UNKNOWN_TOPIC_OR_PARTITION,
        "--auto-create-topics false, allow=true"
    );
    assert!(
        !topic_exists(&mut conn, &name),
        "created despite --auto-create-topics false"
    );
    // Explicit creation still works there.
    wire::create_topic(&mut conn, &name, 1, &[]);
    assert_eq!(
        metadata(&mut conn, Some(&[&name]), false).topics[0].error_code,
        NONE
    );
}

/// The transaction log's partition count decides where each transactional
/// id lives, so a broker whose log exists refuses to start with another
/// `--transaction-state-log-num-partitions`, naming both counts; with the
/// count it was written with it starts.
#[test]
fn the_transaction_log_partition_count_cannot_change() {
    let mut broker = TestBroker::start();
    assert_eq!(broker.stop(), Some(0));
    let data_dir = broker.data_dir().to_string_lossy().to_string();
    let (code, stdout, stderr) = run_sluice(&[
        "--data-dir",
        &data_dir,
        "--listen",
        "127.0.0.1:0",
        "--transaction-state-log-num-partitions",
        "10",
    ]);
    assert!(
        code.is_some_and(|c| c != 0),
        "exit {code:?}: {stdout} {stderr}"
    );
    assert!(
        stderr.contains("has 50 partitions") && stderr.contains("is 10"),
        "{stderr}"
    );
    assert!(!stdout.contains("listening"), "{stdout}");
    broker.start_again_with(&["--transaction-state-log-num-partitions", "50"]);
    assert!(broker.pid().is_some());
    // A first start killed while creating the log's directories (here: the
    // last ten gone) starts again with the recorded count and creates them.
    assert_eq!(broker.stop(), Some(0));
    let data = broker.data_dir().to_path_buf();
    let txn_dir = |p: i32| data.join(format!("__sluice_transaction_state-{p}"));
    assert!(txn_dir(49).is_dir());
    for p in 40..50 {
        std::fs::remove_dir_all(txn_dir(p)).unwrap();
    }
    broker.start_again();
    assert!(broker.pid().is_some());
    assert!(txn_dir(49).is_dir(), "the missing partitions were created");
}
