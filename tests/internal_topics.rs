//! Kafka's internal topic names (`__consumer_offsets`, `__transaction_state`,
//! `__share_group_state`, `__cluster_metadata`): no client creates,
//! auto-creates, deletes, produces to or deletes records of them; each path
//! gets Kafka's error. Found with Burrow, whose Metadata request for
//! `__consumer_offsets` used to create an ordinary, forever-empty topic.

mod common;

use std::fs;
use std::io::Write;
use std::time::Duration;

use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use kafka_protocol::messages::{
    ApiKey, CreateTopicsResponse, DeleteRecordsRequest, DeleteRecordsResponse, DeleteTopicsRequest,
    DeleteTopicsResponse,
};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;
use sluice::metadata::records::MetadataRecord;
use sluice::protocol::batch::{self, BatchHeader};

use common::wire::{
    create_topics_request, metadata, produce, topic_name, value_batch, Conn,
    INVALID_TOPIC_EXCEPTION, NONE, UNKNOWN_TOPIC_OR_PARTITION,
};
use common::TestBroker;

const INVALID_REQUEST: i16 = 42;
const INTERNAL: [&str; 4] = [
    "__consumer_offsets",
    "__transaction_state",
    "__share_group_state",
    "__cluster_metadata",
];

fn listed(conn: &mut Conn) -> Vec<String> {
    metadata(conn, None, false)
        .topics
        .iter()
        .filter_map(|t| t.name.as_ref().map(|n| n.0.to_string()))
        .collect()
}

fn delete_topic(conn: &mut Conn, name: &str) -> (i16, Option<String>) {
    let request = DeleteTopicsRequest::default()
        .with_timeout_ms(10_000)
        .with_topic_names(vec![topic_name(name)]);
    let response: DeleteTopicsResponse = conn.call(ApiKey::DeleteTopics, 5, &request);
    let r = &response.responses[0];
    (
        r.error_code,
        r.error_message.as_ref().map(|m| m.to_string()),
    )
}

fn delete_records(conn: &mut Conn, name: &str) -> i16 {
    let request = DeleteRecordsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(vec![DeleteRecordsTopic::default()
            .with_name(topic_name(name))
            .with_partitions(vec![DeleteRecordsPartition::default()
                .with_partition_index(0)
                .with_offset(0)])]);
    let response: DeleteRecordsResponse = conn.call(ApiKey::DeleteRecords, 2, &request);
    response.topics[0].partitions[0].error_code
}

#[test]
fn every_path_to_an_internal_topic_is_refused_with_kafkas_errors() {
    let broker = TestBroker::start_with(&["--auto-create-topics", "true"]);
    let mut conn = Conn::open(&broker.addr);
    for name in INTERNAL {
        // Auto-creation through Metadata (what Burrow triggered): not created,
        // flagged internal.
        for allow in [true, false] {
            let response = metadata(&mut conn, Some(&[name]), allow);
            let t = &response.topics[0];
            assert_eq!(
                (t.error_code, t.is_internal),
                (UNKNOWN_TOPIC_OR_PARTITION, true),
                "Metadata v12 for {name} (allow_auto_topic_creation={allow})"
            );
        }
        // CreateTopics: Kafka's words for its reserved metadata topic.
        let response: CreateTopicsResponse = conn.call(
            ApiKey::CreateTopics,
            7,
            &create_topics_request(name, 1, 1, &[]),
        );
        let t = &response.topics[0];
        assert_eq!(t.error_code, INVALID_REQUEST, "CreateTopics {name}: {t:?}");
        assert_eq!(
            t.error_message.as_deref(),
            Some(format!("Creation of internal topic {name} is prohibited.").as_str())
        );
        // DeleteTopics.
        let (code, message) = delete_topic(&mut conn, name);
        assert_eq!(code, INVALID_REQUEST, "DeleteTopics {name}");
        assert!(
            message
                .as_deref()
                .is_some_and(|m| m.contains("internal topic")),
            "{message:?}"
        );
        // Produce: "Cannot append to internal topic".
        let answer = produce(&mut conn, name, 0, value_batch("x"));
        assert_eq!(answer.error_code, INVALID_TOPIC_EXCEPTION, "Produce {name}");
        assert_eq!(
            answer.error_message.as_deref(),
            Some(format!("Cannot append to internal topic {name}").as_str())
        );
        // DeleteRecords.
        assert_eq!(
            delete_records(&mut conn, name),
            INVALID_TOPIC_EXCEPTION,
            "DeleteRecords {name}"
        );
    }
    let topics = listed(&mut conn);
    for name in INTERNAL {
        assert!(
            !topics.iter().any(|t| t == name),
            "{name} exists: {topics:?}"
        );
    }

    // librdkafka asking for the topic by name, as a lag monitor does: no
    // topic appears, and an ordinary topic is still auto-created next to it.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .set("group.id", "internal-topics-probe")
        .set("allow.auto.create.topics", "true")
        .create()
        .expect("consumer");
    let found = consumer
        .fetch_metadata(Some("__consumer_offsets"), Duration::from_secs(10))
        .expect("metadata");
    assert!(
        found.topics()[0].partitions().is_empty(),
        "librdkafka sees partitions of __consumer_offsets"
    );
    let ordinary = common::topic("ordinary");
    let response = metadata(&mut conn, Some(&[&ordinary]), true);
    assert_eq!(response.topics[0].error_code, NONE);
    let topics = listed(&mut conn);
    assert!(topics.contains(&ordinary));
    assert!(!topics.iter().any(|t| t == "__consumer_offsets"));
}

/// Appends a CreateTopic record for `name` to the metadata log of a stopped
/// broker, as an older Sluice would have written it (before the metadata
/// quorum, its metadata log was `__sluice_metadata-0`; a broker still reads
/// it at start-up, under the quorum's records).
fn write_legacy_topic(data_dir: &std::path::Path, name: &str) {
    let dir = data_dir.join("__sluice_metadata-0");
    if !dir.exists() {
        fs::create_dir_all(&dir).unwrap();
        fs::File::create(dir.join("00000000000000000000.log")).unwrap();
    }
    let mut segments: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    segments.sort();
    let last = segments.last().expect("a metadata segment");
    let bytes = fs::read(last).unwrap();
    let mut at = 0;
    let mut next_offset = 0;
    while at < bytes.len() {
        let header = BatchHeader::parse(&bytes[at..]).expect("metadata batch");
        next_offset = header.last_offset() + 1;
        at += header.total_len();
    }
    let record = MetadataRecord::CreateTopic {
        name: name.to_string(),
        id: uuid::Uuid::new_v4(),
        partitions: 1,
        configs: Default::default(),
        // As an older Sluice wrote it: no replicas (the node that applies it).
        replicas: None,
    };
    let mut batch = record.to_batch(1_700_000_000_000).to_vec();
    batch::set_base_offset(&mut batch, next_offset);
    let mut file = fs::OpenOptions::new().append(true).open(last).unwrap();
    file.write_all(&batch).unwrap();
    file.sync_all().unwrap();
}

/// A data dir from an older Sluice that let a client create
/// `__consumer_offsets`: the broker starts, flags the topic internal,
/// refuses appends to it, and lets it be deleted (the way to clean it up).
#[test]
fn a_leftover_topic_with_an_internal_name_can_only_be_deleted() {
    let mut broker = TestBroker::start_logging(&[]);
    assert_eq!(broker.stop(), Some(0));
    write_legacy_topic(&broker.data_dir, "__consumer_offsets");
    broker.start_again();
    assert!(
        broker.log_text().contains("name Kafka reserves"),
        "no start-up warning about the leftover topic:\n{}",
        broker.log_text()
    );
    let mut conn = Conn::open(&broker.addr);
    let response = metadata(&mut conn, Some(&["__consumer_offsets"]), false);
    let t = &response.topics[0];
    assert_eq!((t.error_code, t.is_internal), (NONE, true), "{t:?}");
    let answer = produce(&mut conn, "__consumer_offsets", 0, value_batch("x"));
    assert_eq!(answer.error_code, INVALID_TOPIC_EXCEPTION);
    assert_eq!(delete_topic(&mut conn, "__consumer_offsets"), (NONE, None));
    assert!(!listed(&mut conn).iter().any(|t| t == "__consumer_offsets"));
    let (code, _) = delete_topic(&mut conn, "__consumer_offsets");
    assert_eq!(code, INVALID_REQUEST, "deleted once, refused after");
    // The deletion is the quorum's, the creation the old log's: after a
    // restart the old log is read first, and the topic stays deleted.
    drop(conn);
    assert_eq!(broker.stop(), Some(0));
    broker.start_again();
    let mut conn = Conn::open(&broker.addr);
    assert!(!listed(&mut conn).iter().any(|t| t == "__consumer_offsets"));
}
