//! Start-up recovery against damaged files: deleted index files are rebuilt, a
//! torn tail is cut off, and corruption in the middle of a log takes only that
//! partition offline (KAFKA_STORAGE_ERROR) while everything else keeps working.

mod common;

use std::fs;
use std::path::PathBuf;

use kafka_protocol::messages::{ApiKey, MetadataResponse};

use common::wire::*;
use common::TestBroker;

const KAFKA_STORAGE_ERROR: i16 = 56;

fn log_files(broker: &TestBroker, topic: &str, partition: i32, extension: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> =
        fs::read_dir(broker.data_dir().join(format!("{topic}-{partition}")))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == extension))
            .collect();
    files.sort();
    files
}

/// Produces `count` one-record batches to `topic`/`partition`.
fn fill(conn: &mut Conn, topic: &str, partition: i32, count: usize) {
    for i in 0..count {
        let response = produce(
            conn,
            topic,
            partition,
            value_batch(&format!("{topic}-{partition}-{i:04}")),
        );
        assert_eq!(response.error_code, NONE);
        assert_eq!(response.base_offset, i as i64);
    }
}

/// Every record value of a partition from offset 0 (Fetch v12).
fn values(conn: &mut Conn, topic: &str, partition: i32) -> (i16, Vec<String>) {
    let (error, records) = read_partition(conn, topic, partition);
    (error, records.into_iter().map(|(_, value)| value).collect())
}

#[test]
fn deleted_indexes_are_rebuilt_and_a_torn_tail_is_cut() {
    let mut broker = TestBroker::start();
    let mut conn = Conn::open(&broker.addr);
    let topic = common::topic("recover");
    create_topic(&mut conn, &topic, 1, &[("segment.bytes", "1024")]);
    fill(&mut conn, &topic, 0, 40);
    drop(conn);
    assert_eq!(broker.stop(), Some(0));

    for index in log_files(&broker, &topic, 0, "index")
        .into_iter()
        .chain(log_files(&broker, &topic, 0, "timeindex"))
    {
        fs::remove_file(index).unwrap();
    }
    // A torn write: half a batch at the end of the active segment.
    let active = log_files(&broker, &topic, 0, "log").pop().unwrap();
    let torn = value_batch("torn");
    let mut bytes = fs::read(&active).unwrap();
    let good_len = bytes.len();
    bytes.extend_from_slice(&torn[..torn.len() / 2]);
    fs::write(&active, &bytes).unwrap();

    broker.restart_after_kill();
    let mut conn = Conn::open(&broker.addr);
    let (error, read) = values(&mut conn, &topic, 0);
    assert_eq!(error, NONE);
    assert_eq!(
        read.len(),
        40,
        "all 40 records readable after the indexes were rebuilt"
    );
    assert_eq!(read[39], format!("{topic}-0-0039"));
    assert_eq!(
        fs::metadata(&active).unwrap().len() as usize,
        good_len,
        "the torn tail was truncated"
    );
    assert_eq!(latest_offset(&mut conn, &topic, 0), 40);
    // The log takes appends again at the right offset.
    assert_eq!(
        produce(&mut conn, &topic, 0, value_batch("after")).base_offset,
        40
    );
}

#[test]
fn corruption_in_the_middle_takes_only_that_partition_offline() {
    let mut broker = TestBroker::start();
    let mut conn = Conn::open(&broker.addr);
    let topic = common::topic("corrupt");
    create_topic(&mut conn, &topic, 2, &[("segment.bytes", "1024")]);
    fill(&mut conn, &topic, 0, 30);
    fill(&mut conn, &topic, 1, 30);
    drop(conn);
    assert_eq!(broker.stop(), Some(0));

    // Flip a byte inside a record of the first (closed) segment of partition 0.
    let first = log_files(&broker, &topic, 0, "log").remove(0);
    let mut bytes = fs::read(&first).unwrap();
    bytes[100] ^= 0x5a;
    fs::write(&first, &bytes).unwrap();

    broker.restart_after_kill();
    let mut conn = Conn::open(&broker.addr);
    let metadata: MetadataResponse = conn.call(
        ApiKey::Metadata,
        12,
        &metadata_request(Some(&[&topic]), false),
    );
    let partitions = &metadata.topics[0].partitions;
    assert_eq!(
        partitions[0].error_code, KAFKA_STORAGE_ERROR,
        "partition 0 is reported offline"
    );
    assert_eq!(partitions[0].offline_replicas.len(), 1);
    assert_eq!(partitions[1].error_code, NONE);

    assert_eq!(
        values(&mut conn, &topic, 0).0,
        KAFKA_STORAGE_ERROR,
        "no wrong data is served"
    );
    assert_eq!(
        produce(&mut conn, &topic, 0, value_batch("x")).error_code,
        KAFKA_STORAGE_ERROR
    );
    assert_eq!(list_offset(&mut conn, &topic, 0, -1).0, KAFKA_STORAGE_ERROR);

    // The healthy partition and new topics work as before.
    let (error, read) = values(&mut conn, &topic, 1);
    assert_eq!((error, read.len()), (NONE, 30));
    assert_eq!(
        produce(&mut conn, &topic, 1, value_batch("y")).base_offset,
        30
    );
    let other = common::topic("healthy");
    create_topic(&mut conn, &other, 1, &[]);
    assert_eq!(
        produce(&mut conn, &other, 0, value_batch("z")).base_offset,
        0
    );
}
