//! librdkafka (through the rdkafka crate) against a real broker process.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use common::clients::{admin, consumer, create_topic, producer};
use common::{topic, TestBroker};
use rdkafka::admin::{
    AdminOptions, AlterConfig, NewPartitions, NewTopic, ResourceSpecifier, TopicReplication,
};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use rdkafka::{Offset, TopicPartitionList};

const TIMEOUT: Duration = Duration::from_secs(30);

#[allow(clippy::type_complexity)]
fn consume_all(
    consumer: &BaseConsumer,
    name: &str,
    partitions: i32,
    expected: usize,
) -> Vec<(
    i32,
    i64,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Option<i64>,
    Vec<(String, Vec<u8>)>,
)> {
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        assignment
            .add_partition_offset(name, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).expect("assign");
    let mut out = Vec::with_capacity(expected);
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while out.len() < expected {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {} of {expected} messages",
            out.len()
        );
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                let headers = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                            .collect()
                    })
                    .unwrap_or_default();
                out.push((
                    m.partition(),
                    m.offset(),
                    m.key().map(<[u8]>::to_vec),
                    m.payload().map(<[u8]>::to_vec),
                    m.timestamp().to_millis(),
                    headers,
                ));
            }
            Some(Err(e)) => panic!("consume error: {e}"),
            None => {}
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_create_describe_alter_delete_topics() {
    let broker = TestBroker::start();
    let admin = admin(&broker);
    let name = topic("admin");
    create_topic(&broker, &name, 3, &[("retention.ms", "3600000")]).await;

    // Creating it again is refused with TOPIC_ALREADY_EXISTS.
    let again = admin
        .create_topics(
            [&NewTopic::new(&name, 3, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    assert_eq!(
        again[0].as_ref().unwrap_err().1,
        RDKafkaErrorCode::TopicAlreadyExists
    );
    // Kafka's topic name rules.
    let bad = admin
        .create_topics(
            [&NewTopic::new("bad/name", 1, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    assert_eq!(
        bad[0].as_ref().unwrap_err().1,
        RDKafkaErrorCode::InvalidTopic
    );
    let bad = admin
        .create_topics(
            [&NewTopic::new("x", 1, TopicReplication::Fixed(1)).set("retention.ms", "soon")],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    assert_eq!(
        bad[0].as_ref().unwrap_err().1,
        RDKafkaErrorCode::InvalidConfig
    );

    let metadata = admin
        .inner()
        .fetch_metadata(Some(&name), TIMEOUT)
        .expect("metadata");
    assert_eq!(metadata.topics().len(), 1);
    assert_eq!(metadata.topics()[0].partitions().len(), 3);
    assert_eq!(metadata.brokers().len(), 1);

    // DescribeConfigs: every config with value and source.
    let described = admin
        .describe_configs([&ResourceSpecifier::Topic(&name)], &AdminOptions::new())
        .await
        .unwrap();
    let resource = described[0].as_ref().expect("describe ok");
    let entry = resource.get("retention.ms").expect("retention.ms listed");
    assert_eq!(entry.value.as_deref(), Some("3600000"));
    assert_eq!(entry.source, rdkafka::admin::ConfigSource::DynamicTopic);
    let max_message = resource
        .get("max.message.bytes")
        .expect("max.message.bytes listed");
    assert_eq!(max_message.value.as_deref(), Some("1048588"));
    assert_eq!(max_message.source, rdkafka::admin::ConfigSource::Default);
    for key in [
        "cleanup.policy",
        "segment.bytes",
        "segment.ms",
        "retention.bytes",
        "message.timestamp.type",
        "min.insync.replicas",
    ] {
        assert!(
            resource.get(key).is_some(),
            "{key} missing from DescribeConfigs"
        );
    }

    // AlterConfigs, then CreatePartitions.
    let alter = AlterConfig::new(ResourceSpecifier::Topic(&name)).set("cleanup.policy", "compact");
    let altered = admin
        .alter_configs([&alter], &AdminOptions::new())
        .await
        .unwrap();
    assert!(altered[0].is_ok(), "{:?}", altered[0]);
    let described = admin
        .describe_configs([&ResourceSpecifier::Topic(&name)], &AdminOptions::new())
        .await
        .unwrap();
    let resource = described[0].as_ref().unwrap();
    assert_eq!(
        resource.get("cleanup.policy").unwrap().value.as_deref(),
        Some("compact")
    );
    let grown = admin
        .create_partitions([&NewPartitions::new(&name, 5)], &AdminOptions::new())
        .await
        .unwrap();
    assert!(grown[0].is_ok(), "{:?}", grown[0]);
    let shrunk = admin
        .create_partitions([&NewPartitions::new(&name, 2)], &AdminOptions::new())
        .await
        .unwrap();
    assert_eq!(
        shrunk[0].as_ref().unwrap_err().1,
        RDKafkaErrorCode::InvalidPartitions
    );
    let metadata = admin.inner().fetch_metadata(Some(&name), TIMEOUT).unwrap();
    assert_eq!(metadata.topics()[0].partitions().len(), 5);

    let deleted = admin
        .delete_topics(&[&name], &AdminOptions::new())
        .await
        .unwrap();
    assert!(deleted[0].is_ok(), "{:?}", deleted[0]);
    let metadata = admin.inner().fetch_metadata(None, TIMEOUT).unwrap();
    assert!(
        metadata.topics().iter().all(|t| t.name() != name),
        "deleted topic still listed"
    );
    let missing = admin
        .delete_topics(&[&name], &AdminOptions::new())
        .await
        .unwrap();
    assert_eq!(
        missing[0].as_ref().unwrap_err().1,
        RDKafkaErrorCode::UnknownTopicOrPartition
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_thousand_keyed_messages_round_trip_in_order() {
    const COUNT: usize = 100_000;
    const KEYS: usize = 1000;
    let broker = TestBroker::start();
    let name = topic("keyed");
    create_topic(&broker, &name, 3, &[]).await;
    let producer = producer(&broker, &[("linger.ms", "5")]);
    let mut deliveries = Vec::with_capacity(COUNT);
    for i in 0..COUNT {
        let key = format!("key-{}", i % KEYS);
        let value = format!("value-{i}");
        let record = FutureRecord::to(&name).key(&key).payload(&value);
        deliveries.push(producer.send_result(record).expect("queue"));
    }
    let mut acked: HashMap<(i32, i64), usize> = HashMap::with_capacity(COUNT);
    for (i, delivery) in deliveries.into_iter().enumerate() {
        let delivered = delivery
            .await
            .expect("delivery")
            .map_err(|(e, _)| e)
            .expect("acked");
        let (partition, offset) = (delivered.partition, delivered.offset);
        assert!(
            acked.insert((partition, offset), i).is_none(),
            "two messages acknowledged at {partition}/{offset}"
        );
    }

    let consumer = consumer(&broker, &[]);
    let messages = consume_all(&consumer, &name, 3, COUNT);
    assert_eq!(messages.len(), COUNT);
    let mut next_offset = [0i64; 3];
    let mut last_index_per_key: HashMap<Vec<u8>, usize> = HashMap::new();
    let mut key_partition: HashMap<Vec<u8>, i32> = HashMap::new();
    for (partition, offset, key, value, _, _) in &messages {
        let p = *partition as usize;
        assert_eq!(
            *offset, next_offset[p],
            "offsets in partition {partition} are contiguous"
        );
        next_offset[p] += 1;
        let index = acked[&(*partition, *offset)];
        assert_eq!(
            value.as_deref(),
            Some(format!("value-{index}").as_bytes()),
            "payload at the acknowledged offset"
        );
        let key = key.clone().expect("key");
        assert_eq!(key, format!("key-{}", index % KEYS).into_bytes());
        assert_eq!(
            *key_partition.entry(key.clone()).or_insert(*partition),
            *partition,
            "a key stays on one partition"
        );
        if let Some(previous) = last_index_per_key.insert(key, index) {
            assert!(previous < index, "per-key order preserved");
        }
    }
    assert_eq!(next_offset.iter().sum::<i64>() as usize, COUNT);
    assert!(
        next_offset.iter().all(|&n| n > 0),
        "all 3 partitions used: {next_offset:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_compression_codec_round_trips() {
    let broker = TestBroker::start();
    for codec in ["gzip", "snappy", "lz4", "zstd"] {
        let name = topic(codec);
        create_topic(&broker, &name, 1, &[]).await;
        let producer = producer(&broker, &[("compression.type", codec), ("linger.ms", "20")]);
        let mut deliveries = Vec::new();
        for i in 0..500 {
            let value = format!("{codec} message {i} {}", "x".repeat(i % 100));
            deliveries.push(
                producer
                    .send_result(FutureRecord::<(), _>::to(&name).payload(&value))
                    .unwrap(),
            );
        }
        for d in deliveries {
            d.await.unwrap().map_err(|(e, _)| e).expect("acked");
        }
        let consumer = consumer(&broker, &[]);
        let messages = consume_all(&consumer, &name, 1, 500);
        for (i, m) in messages.iter().enumerate() {
            assert_eq!(m.1, i as i64);
            assert_eq!(
                m.3.as_deref(),
                Some(format!("{codec} message {i} {}", "x".repeat(i % 100)).as_bytes())
            );
        }
        // Compressed batches are stored as sent: far fewer bytes than the payloads.
        let log_bytes: u64 = std::fs::read_dir(broker.data_dir().join(format!("{name}-0")))
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
            .map(|e| e.metadata().unwrap().len())
            .sum();
        let payload_bytes: u64 = messages
            .iter()
            .map(|m| m.3.as_ref().unwrap().len() as u64)
            .sum();
        assert!(
            log_bytes < payload_bytes,
            "{codec}: {log_bytes} on disk for {payload_bytes} of payload"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_timestamps_and_a_900kb_message() {
    let broker = TestBroker::start();
    let name = topic("headers");
    create_topic(&broker, &name, 1, &[]).await;
    let small_producer = producer(&broker, &[]);
    let big = vec![7u8; 900 * 1024];
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: "trace-id",
            value: Some("abc123"),
        })
        .insert(Header {
            key: "empty",
            value: None::<&[u8]>,
        });
    small_producer
        .send(
            FutureRecord::to(&name)
                .key("k1")
                .payload("small")
                .headers(headers)
                .timestamp(1_700_000_000_123),
            TIMEOUT,
        )
        .await
        .map_err(|(e, _)| e)
        .expect("small acked");
    small_producer
        .send(FutureRecord::to(&name).key("big").payload(&big), TIMEOUT)
        .await
        .map_err(|(e, _)| e)
        .expect("900 KB acked");
    // Over max.message.bytes (1048588): refused with MESSAGE_TOO_LARGE by the broker.
    let too_big = vec![1u8; 1_100_000];
    let refused_producer = producer(&broker, &[("message.max.bytes", "2000000")]);
    let refused = refused_producer
        .send(
            FutureRecord::to(&name).key("huge").payload(&too_big),
            TIMEOUT,
        )
        .await;
    let error = refused.expect_err("oversized batch refused").0;
    assert_eq!(
        error.rdkafka_error_code(),
        Some(RDKafkaErrorCode::MessageSizeTooLarge),
        "{error}"
    );

    let consumer = consumer(&broker, &[("fetch.message.max.bytes", "1048576")]);
    let messages = consume_all(&consumer, &name, 1, 2);
    let (_, offset, key, value, timestamp, headers) = &messages[0];
    assert_eq!(*offset, 0);
    assert_eq!(key.as_deref(), Some(b"k1".as_ref()));
    assert_eq!(value.as_deref(), Some(b"small".as_ref()));
    assert_eq!(*timestamp, Some(1_700_000_000_123));
    assert_eq!(
        headers,
        &vec![
            ("trace-id".to_string(), b"abc123".to_vec()),
            ("empty".to_string(), vec![])
        ]
    );
    assert_eq!(messages[1].1, 1);
    assert_eq!(messages[1].3.as_deref(), Some(big.as_slice()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_offsets_by_time_earliest_and_latest() {
    let broker = TestBroker::start();
    let name = topic("times");
    create_topic(&broker, &name, 1, &[]).await;
    // One message per batch (linger 0, awaited one by one) so that batch
    // boundaries do not blur the lookup.
    let producer = producer(&broker, &[("linger.ms", "0")]);
    let base = 1_700_000_000_000i64;
    for i in 0..20i64 {
        producer
            .send(
                FutureRecord::<(), _>::to(&name)
                    .payload(&format!("m{i}"))
                    .timestamp(base + i * 1000),
                TIMEOUT,
            )
            .await
            .map_err(|(e, _)| e)
            .expect("acked");
    }
    let consumer = consumer(&broker, &[]);
    let (low, high) = consumer
        .fetch_watermarks(&name, 0, TIMEOUT)
        .expect("watermarks");
    assert_eq!((low, high), (0, 20));
    let mut query = TopicPartitionList::new();
    query
        .add_partition_offset(&name, 0, Offset::Offset(base + 5500))
        .unwrap();
    let found = consumer
        .offsets_for_times(query, TIMEOUT)
        .expect("offsets_for_times");
    assert_eq!(
        found.find_partition(&name, 0).unwrap().offset(),
        Offset::Offset(6)
    );
    let mut query = TopicPartitionList::new();
    query
        .add_partition_offset(&name, 0, Offset::Offset(base))
        .unwrap();
    let found = consumer.offsets_for_times(query, TIMEOUT).unwrap();
    assert_eq!(
        found.find_partition(&name, 0).unwrap().offset(),
        Offset::Offset(0)
    );
    // After the last timestamp: no such offset (librdkafka reports End).
    let mut query = TopicPartitionList::new();
    query
        .add_partition_offset(&name, 0, Offset::Offset(base + 1_000_000))
        .unwrap();
    let found = consumer.offsets_for_times(query, TIMEOUT).unwrap();
    assert_eq!(
        found.find_partition(&name, 0).unwrap().offset(),
        Offset::End
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_producer_writes_each_message_once() {
    let broker = TestBroker::start();
    let name = topic("idempotent");
    create_topic(&broker, &name, 2, &[]).await;
    let producer = producer(
        &broker,
        &[("enable.idempotence", "true"), ("linger.ms", "2")],
    );
    let mut deliveries = Vec::new();
    for i in 0..5000 {
        let key = format!("k{}", i % 10);
        let value = format!("v{i}");
        deliveries.push(
            producer
                .send_result(FutureRecord::to(&name).key(&key).payload(&value))
                .unwrap(),
        );
    }
    for d in deliveries {
        d.await.unwrap().map_err(|(e, _)| e).expect("acked");
    }
    let consumer = consumer(&broker, &[]);
    let messages = consume_all(&consumer, &name, 2, 5000);
    let mut seen = BTreeMap::new();
    for m in &messages {
        let value = String::from_utf8(m.3.clone().unwrap()).unwrap();
        assert!(seen.insert(value, m.1).is_none(), "duplicate message");
    }
    assert_eq!(seen.len(), 5000);
    // Nothing beyond the 5000: the high watermarks add up exactly.
    let total: i64 = (0..2)
        .map(|p| consumer.fetch_watermarks(&name, p, TIMEOUT).unwrap().1)
        .sum();
    assert_eq!(total, 5000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_survives_a_clean_restart_at_the_same_offsets() {
    let mut broker = TestBroker::start();
    let name = topic("restart");
    create_topic(&broker, &name, 3, &[("segment.bytes", "4096")]).await;
    let producer = producer(&broker, &[("linger.ms", "1")]);
    let mut acked = Vec::new();
    for i in 0..3000 {
        let key = format!("k{}", i % 17);
        let value = format!("value-{i}");
        let delivered = producer
            .send(FutureRecord::to(&name).key(&key).payload(&value), TIMEOUT)
            .await
            .map_err(|(e, _)| e)
            .expect("acked");
        acked.push((delivered.partition, delivered.offset, value));
    }
    drop(producer);
    broker.restart();
    let segments = std::fs::read_dir(broker.data_dir().join(format!("{name}-0")))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".log")
        })
        .count();
    assert!(
        segments > 1,
        "small segment.bytes rolled segments ({segments})"
    );
    let consumer = consumer(&broker, &[]);
    let messages = consume_all(&consumer, &name, 3, acked.len());
    let by_position: HashMap<(i32, i64), Vec<u8>> = messages
        .into_iter()
        .map(|(p, o, _, v, _, _)| ((p, o), v.unwrap()))
        .collect();
    for (p, o, value) in &acked {
        assert_eq!(
            by_position.get(&(*p, *o)).map(Vec::as_slice),
            Some(value.as_bytes()),
            "{p}/{o} after restart"
        );
    }
    // The topic and its configs are still there.
    let admin = admin(&broker);
    let described = admin
        .describe_configs([&ResourceSpecifier::Topic(&name)], &AdminOptions::new())
        .await
        .unwrap();
    assert_eq!(
        described[0]
            .as_ref()
            .unwrap()
            .get("segment.bytes")
            .unwrap()
            .value
            .as_deref(),
        Some("4096")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamps_outside_the_topic_bounds_are_refused() {
    let broker = TestBroker::start();
    let name = topic("timestamps");
    create_topic(
        &broker,
        &name,
        1,
        &[("message.timestamp.after.max.ms", "60000")],
    )
    .await;
    let producer = producer(&broker, &[("linger.ms", "0")]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let future = producer
        .send(
            FutureRecord::<(), _>::to(&name)
                .payload("from the future")
                .timestamp(now + 3_600_000),
            TIMEOUT,
        )
        .await;
    let error = future
        .map_err(|(e, _)| e)
        .expect_err("an hour ahead is refused");
    assert_eq!(
        error.rdkafka_error_code(),
        Some(RDKafkaErrorCode::InvalidTimestamp),
        "{error}"
    );
    producer
        .send(
            FutureRecord::<(), _>::to(&name)
                .payload("now")
                .timestamp(now),
            TIMEOUT,
        )
        .await
        .map_err(|(e, _)| e)
        .expect("the present is accepted");
    let consumer = consumer(&broker, &[]);
    assert_eq!(
        consumer.fetch_watermarks(&name, 0, TIMEOUT).unwrap(),
        (0, 1),
        "only the valid message was written"
    );
}

/// The polling driver (what runs where io_uring is blocked, e.g. under Docker's
/// default seccomp profile) serves the same workload, across a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_driver_serves_produce_fetch_and_restart() {
    let mut broker = TestBroker::start_with(&["--io-driver", "polling"]);
    let name = topic("polling");
    create_topic(&broker, &name, 4, &[("segment.bytes", "8192")]).await;
    let producer = producer(&broker, &[("linger.ms", "2"), ("compression.type", "lz4")]);
    let mut deliveries = Vec::new();
    for i in 0..10_000 {
        let key = format!("k{}", i % 50);
        let value = format!("v{i}");
        deliveries.push(
            producer
                .send_result(FutureRecord::to(&name).key(&key).payload(&value))
                .unwrap(),
        );
    }
    let mut acked = HashMap::new();
    for (i, d) in deliveries.into_iter().enumerate() {
        let delivered = d.await.unwrap().map_err(|(e, _)| e).expect("acked");
        acked.insert((delivered.partition, delivered.offset), format!("v{i}"));
    }
    drop(producer);
    broker.restart();
    let consumer = consumer(&broker, &[]);
    let messages = consume_all(&consumer, &name, 4, acked.len());
    for (p, o, _, v, _, _) in messages {
        assert_eq!(
            acked.get(&(p, o)).map(String::as_bytes),
            v.as_deref(),
            "{p}/{o}"
        );
    }
}

/// Size retention removes whole old segments in the background; clients see the
/// log start move and a consumer from the beginning starts there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_moves_the_log_start_for_clients() {
    let broker = TestBroker::start_with(&["--log-retention-check-interval-ms", "100"]);
    let name = topic("retention");
    create_topic(
        &broker,
        &name,
        1,
        &[("segment.bytes", "1024"), ("retention.bytes", "2048")],
    )
    .await;
    let producer = producer(&broker, &[("linger.ms", "0")]);
    for i in 0..200 {
        let value = format!("{i:0>100}");
        producer
            .send(FutureRecord::<(), _>::to(&name).payload(&value), TIMEOUT)
            .await
            .map_err(|(e, _)| e)
            .expect("acked");
    }
    let consumer = consumer(&broker, &[]);
    let disk_bytes = || -> u64 {
        std::fs::read_dir(broker.data_dir().join(format!("{name}-0")))
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
            .map(|e| e.metadata().unwrap().len())
            .sum()
    };
    // Retention runs every 100 ms; wait for a pass after the last append.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while disk_bytes() >= 2048 + 1024 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let bytes = disk_bytes();
    assert!(
        bytes < 2048 + 1024,
        "{bytes} bytes left on disk with retention.bytes=2048"
    );
    let (low, high) = consumer.fetch_watermarks(&name, 0, TIMEOUT).unwrap();
    assert_eq!(high, 200);
    assert!(
        low > 150,
        "only the newest few segments are kept, low watermark {low}"
    );
    let messages = consume_all(&consumer, &name, 1, (high - low) as usize);
    assert_eq!(
        messages[0].1, low,
        "a consumer from the beginning starts at the new log start"
    );
}
