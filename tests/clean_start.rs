//! The clean-shutdown marker: a clean restart trusts the files and skips the
//! batch-by-batch scan; a crash, or any disagreement between the marker and
//! the files (a tampered marker, a damaged index, a segment changed after the
//! shutdown), means the scan runs, and either way the same data is served.
//!
//! Which start happened is read from the broker's log: one info line per
//! partition, "clean start" or "scanned start", with the bytes scanned.

mod common;

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use kafka_protocol::records::Compression;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use sluice::protocol::encode;

use common::clients;
use common::wire::*;
use common::TestBroker;

const TIMEOUT: Duration = Duration::from_secs(30);

/// How a partition log was opened, as its log line says.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Start {
    Clean { bytes_scanned: u64 },
    Scanned { bytes_scanned: u64, reason: String },
}

/// Every start of `topic`/`partition` the broker logged, oldest first.
fn starts(broker: &TestBroker, topic: &str, partition: i32) -> Vec<Start> {
    let topic_field = format!("topic={topic} ");
    let partition_field = format!("partition={partition} ");
    let field = |line: &str, name: &str| -> String {
        let start = line.find(&format!("{name}=")).expect(name) + name.len() + 1;
        let rest = &line[start..];
        rest.split(' ').next().unwrap().to_string()
    };
    broker
        .log_text()
        .lines()
        .filter(|l| l.contains(&topic_field) && l.contains(&partition_field))
        .filter_map(|line| {
            let bytes_scanned = || field(line, "bytes_scanned").parse().unwrap();
            if line.contains("clean start") {
                Some(Start::Clean {
                    bytes_scanned: bytes_scanned(),
                })
            } else if line.contains("scanned start") {
                let reason = line[line.find("reason=").expect("reason") + 7..].to_string();
                Some(Start::Scanned {
                    bytes_scanned: bytes_scanned(),
                    reason,
                })
            } else {
                None
            }
        })
        .collect()
}

fn last_start(broker: &TestBroker, topic: &str) -> Start {
    starts(broker, topic, 0).pop().expect("a start was logged")
}

fn partition_dir(broker: &TestBroker, topic: &str) -> PathBuf {
    broker.data_dir().join(format!("{topic}-0"))
}

/// The partition's files with this extension, in offset order.
fn files(broker: &TestBroker, topic: &str, extension: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(partition_dir(broker, topic))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == extension))
        .collect();
    files.sort();
    files
}

fn log_bytes(broker: &TestBroker, topic: &str) -> u64 {
    files(broker, topic, "log")
        .iter()
        .map(|p| fs::metadata(p).unwrap().len())
        .sum()
}

/// Produces `count` one-record batches numbered from `first`.
fn fill(conn: &mut Conn, topic: &str, first: usize, count: usize) {
    for i in first..first + count {
        let response = produce(conn, topic, 0, value_batch(&format!("{topic}-{i:04}")));
        assert_eq!(response.error_code, NONE);
        assert_eq!(response.base_offset, i as i64);
    }
}

/// Every (offset, value) of partition 0, fetched from offset 0 with Fetch v12.
fn contents(conn: &mut Conn, topic: &str) -> (i16, Vec<(i64, String)>) {
    read_partition(conn, topic, 0)
}

fn expected(topic: &str, count: usize) -> Vec<(i64, String)> {
    (0..count)
        .map(|i| (i as i64, format!("{topic}-{i:04}")))
        .collect()
}

fn producer(broker: &TestBroker) -> FutureProducer {
    clients::producer(broker, &[("linger.ms", "5")])
}

/// Every (offset, key, value) of partition 0 up to `last_offset`, read by librdkafka.
fn consume(broker: &TestBroker, topic: &str, last_offset: i64) -> Vec<(i64, String, String)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .set("group.id", "clean-start-reader")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&assignment).expect("assign");
    let deadline = std::time::Instant::now() + TIMEOUT;
    let mut seen = Vec::new();
    while seen.last().is_none_or(|(o, _, _)| *o < last_offset) {
        assert!(
            std::time::Instant::now() < deadline,
            "stuck after {} records",
            seen.len()
        );
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => seen.push((
                m.offset(),
                String::from_utf8(m.key().unwrap().to_vec()).unwrap(),
                String::from_utf8(m.payload().unwrap().to_vec()).unwrap(),
            )),
            Some(Err(e)) => panic!("consume: {e}"),
            None => {}
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_restart_skips_the_scan_and_serves_every_message_at_the_same_offsets() {
    let mut broker = TestBroker::start_logging(&[]);
    let topic = common::topic("clean");
    let mut conn = Conn::open(&broker.addr);
    create_topic(&mut conn, &topic, 1, &[("segment.bytes", "16384")]);
    drop(conn);
    let producer = producer(&broker);
    let mut produced = Vec::new();
    for i in 0..500 {
        let (key, value) = (
            format!("k{}", i % 37),
            format!("value-{i}-{}", "x".repeat(i % 200)),
        );
        let delivery = producer
            .send(FutureRecord::to(&topic).key(&key).payload(&value), TIMEOUT)
            .await
            .unwrap_or_else(|(e, _)| panic!("produce {i}: {e}"));
        produced.push((delivery.offset, key, value));
    }
    drop(producer);
    assert_eq!(produced.last().unwrap().0, 499);
    let bytes = log_bytes(&broker, &topic);
    assert!(files(&broker, &topic, "log").len() > 3, "several segments");

    broker.restart();
    let Start::Clean { bytes_scanned } = last_start(&broker, &topic) else {
        panic!("not a clean start: {:?}", starts(&broker, &topic, 0));
    };
    // Only the tail after the last index entry of each segment is read.
    assert!(
        bytes_scanned < bytes / 4,
        "{bytes_scanned} of {bytes} bytes read"
    );
    assert!(
        !partition_dir(&broker, &topic)
            .join("clean-shutdown")
            .exists(),
        "the marker is deleted before the partition takes appends"
    );
    let consumed = tokio::task::block_in_place(|| consume(&broker, &topic, 499));
    assert_eq!(consumed, produced, "every message at its offset");

    // Appends go on at the end.
    let producer = self::producer(&broker);
    let next = producer
        .send(FutureRecord::to(&topic).key("k").payload("after"), TIMEOUT)
        .await
        .unwrap_or_else(|(e, _)| panic!("produce after: {e}"));
    assert_eq!(next.offset, 500);
}

#[test]
fn after_sigkill_the_scan_runs() {
    let mut broker = TestBroker::start_logging(&[]);
    let topic = common::topic("killed");
    let mut conn = Conn::open(&broker.addr);
    create_topic(&mut conn, &topic, 1, &[("segment.bytes", "2048")]);
    fill(&mut conn, &topic, 0, 60);
    drop(conn);

    broker.restart_after_kill();
    assert_eq!(
        last_start(&broker, &topic),
        Start::Scanned {
            bytes_scanned: log_bytes(&broker, &topic),
            reason: "no clean-shutdown marker".to_string()
        }
    );
    let mut conn = Conn::open(&broker.addr);
    assert_eq!(contents(&mut conn, &topic), (NONE, expected(&topic, 60)));
    fill(&mut conn, &topic, 60, 5);
    drop(conn);

    // Clean, then killed: the clean start deleted the marker, so this scans again.
    broker.restart();
    assert!(matches!(last_start(&broker, &topic), Start::Clean { .. }));
    broker.restart_after_kill();
    assert!(
        matches!(last_start(&broker, &topic), Start::Scanned { bytes_scanned, .. } if bytes_scanned == log_bytes(&broker, &topic)),
        "{:?}",
        starts(&broker, &topic, 0)
    );
    let mut conn = Conn::open(&broker.addr);
    assert_eq!(contents(&mut conn, &topic), (NONE, expected(&topic, 65)));
}

/// A v2 batch of `count` records from an idempotent producer.
fn idempotent_batch(count: i64, producer_id: i64, epoch: i16, base_sequence: i32) -> Bytes {
    let producer = Some(encode::ProducerFields {
        producer_id,
        producer_epoch: epoch,
        base_sequence,
    });
    let records: Vec<_> = (0..count)
        .map(|i| {
            let value = Some(Bytes::from(format!("seq-{}", base_sequence as i64 + i)));
            encode::record(i, 1_700_000_000_000 + i, None, value, producer)
        })
        .collect();
    encode::encode_batch(&records, Compression::None)
}

#[test]
fn an_idempotent_duplicate_is_still_detected_after_a_clean_restart() {
    let mut broker = TestBroker::start_logging(&[]);
    let topic = common::topic("idempotent-clean");
    let mut conn = Conn::open(&broker.addr);
    create_topic(&mut conn, &topic, 1, &[]);
    let mut request = InitProducerIdRequest::default()
        .with_transaction_timeout_ms(60_000)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    request.transactional_id = None;
    let init: InitProducerIdResponse = conn.call(ApiKey::InitProducerId, 4, &request);
    assert_eq!(init.error_code, NONE);
    let (pid, epoch) = (init.producer_id.0, init.producer_epoch);
    // Seven batches of 3: sequences 0..21 at offsets 0..21.
    let batches: Vec<Bytes> = (0..7)
        .map(|b| idempotent_batch(3, pid, epoch, b * 3))
        .collect();
    for (b, batch) in batches.iter().enumerate() {
        let answer = produce(&mut conn, &topic, 0, batch.clone());
        assert_eq!(
            (answer.error_code, answer.base_offset),
            (NONE, b as i64 * 3)
        );
    }
    drop(conn);

    broker.restart();
    assert!(
        matches!(last_start(&broker, &topic), Start::Clean { .. }),
        "{:?}",
        starts(&broker, &topic, 0)
    );
    let mut conn = Conn::open(&broker.addr);
    // The last batch retried (same id, epoch, sequence): acknowledged at its
    // offset, not written again.
    let retry = produce(&mut conn, &topic, 0, batches[6].clone());
    assert_eq!((retry.error_code, retry.base_offset), (NONE, 18));
    // So is an older one still among the last five.
    let older = produce(&mut conn, &topic, 0, batches[2].clone());
    assert_eq!((older.error_code, older.base_offset), (NONE, 6));
    assert_eq!(
        latest_offset(&mut conn, &topic, 0),
        21,
        "nothing written twice"
    );
    // A gap is refused; the next sequence is appended.
    let gap = produce(&mut conn, &topic, 0, idempotent_batch(1, pid, epoch, 25));
    assert_eq!(gap.error_code, OUT_OF_ORDER_SEQUENCE_NUMBER);
    let next = produce(&mut conn, &topic, 0, idempotent_batch(2, pid, epoch, 21));
    assert_eq!((next.error_code, next.base_offset), (NONE, 21));
    assert_eq!(latest_offset(&mut conn, &topic, 0), 23);
}

#[test]
fn a_marker_that_disagrees_with_the_files_means_a_scan_and_the_same_data() {
    let mut broker = TestBroker::start_logging(&[]);
    let topic = common::topic("tampered");
    let mut conn = Conn::open(&broker.addr);
    create_topic(&mut conn, &topic, 1, &[("segment.bytes", "2048")]);
    fill(&mut conn, &topic, 0, 60);
    drop(conn);
    let marker = partition_dir(&broker, &topic).join("clean-shutdown");

    // Each case: a clean stop (which writes a marker), a change, a start.
    type Tamper = Box<dyn Fn(&TestBroker, &str)>;
    let cases: Vec<(&str, Tamper, &str)> = vec![
        (
            "a flipped byte in the marker",
            Box::new(|b, t| {
                let path = partition_dir(b, t).join("clean-shutdown");
                let mut bytes = fs::read(&path).unwrap();
                bytes[20] ^= 0x04;
                fs::write(&path, bytes).unwrap();
            }),
            "invalid clean-shutdown marker: CRC32C mismatch",
        ),
        (
            "a truncated index",
            Box::new(|b, t| {
                let index = files(b, t, "index").remove(1);
                let bytes = fs::read(&index).unwrap();
                fs::write(&index, &bytes[..bytes.len() - 8]).unwrap();
            }),
            "the marker says",
        ),
        (
            "an index entry pointing past its segment",
            Box::new(|b, t| {
                let index = files(b, t, "index").remove(0);
                let mut bytes = fs::read(&index).unwrap();
                let at = bytes.len() - 4;
                bytes[at..].copy_from_slice(&u32::MAX.to_be_bytes());
                fs::write(&index, bytes).unwrap();
            }),
            "does not match the marker's CRC32C",
        ),
        (
            "a deleted time index",
            Box::new(|b, t| fs::remove_file(files(b, t, "timeindex").pop().unwrap()).unwrap()),
            ".timeindex",
        ),
        (
            "a closed segment touched (same bytes, new mtime)",
            Box::new(|b, t| {
                let segment = files(b, t, "log").remove(1);
                let bytes = fs::read(&segment).unwrap();
                std::thread::sleep(Duration::from_millis(20));
                fs::write(&segment, bytes).unwrap();
            }),
            "modified after the clean shutdown",
        ),
        (
            "half a batch appended to the active segment",
            Box::new(|b, t| {
                let active = files(b, t, "log").pop().unwrap();
                let mut bytes = fs::read(&active).unwrap();
                let extra = value_batch("torn");
                bytes.extend_from_slice(&extra[..extra.len() / 2]);
                fs::write(&active, bytes).unwrap();
            }),
            "the marker says",
        ),
    ];
    for (what, tamper, reason) in cases {
        assert_eq!(broker.stop(), Some(0), "{what}");
        assert!(marker.exists(), "{what}: a clean stop writes the marker");
        tamper(&broker, &topic);
        broker.restart_after_kill();
        match last_start(&broker, &topic) {
            Start::Scanned {
                bytes_scanned,
                reason: logged,
            } => {
                assert!(logged.contains(reason), "{what}: {logged}");
                assert!(bytes_scanned > 0, "{what}");
            }
            other => panic!("{what}: trusted the files: {other:?}"),
        }
        let mut conn = Conn::open(&broker.addr);
        assert_eq!(
            contents(&mut conn, &topic),
            (NONE, expected(&topic, 60)),
            "{what}"
        );
        assert_eq!(latest_offset(&mut conn, &topic, 0), 60, "{what}");
    }

    // The active segment cut short after the shutdown: the scan cuts the torn
    // batch, and the log goes on from there.
    assert_eq!(broker.stop(), Some(0));
    let active = files(&broker, &topic, "log").pop().unwrap();
    let length = fs::metadata(&active).unwrap().len();
    fs::File::options()
        .write(true)
        .open(&active)
        .unwrap()
        .set_len(length - 10)
        .unwrap();
    broker.restart_after_kill();
    assert!(
        matches!(last_start(&broker, &topic), Start::Scanned { ref reason, .. } if reason.contains("the marker says")),
        "{:?}",
        starts(&broker, &topic, 0)
    );
    let mut conn = Conn::open(&broker.addr);
    assert_eq!(contents(&mut conn, &topic), (NONE, expected(&topic, 59)));
    fill(&mut conn, &topic, 59, 1);
    drop(conn);
    // And a clean restart after all that is clean again.
    broker.restart();
    assert!(matches!(last_start(&broker, &topic), Start::Clean { .. }));
    let mut conn = Conn::open(&broker.addr);
    assert_eq!(contents(&mut conn, &topic), (NONE, expected(&topic, 60)));
}
