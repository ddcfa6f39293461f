//! Fetch semantics on the wire (kafka-protocol codec over a plain TcpStream):
//! long-polling with max_wait_ms / min_bytes, the max_bytes and
//! partition_max_bytes limits (KIP-74), offset and topic errors, KIP-227 fetch
//! sessions, and fetching from inside a multi-record batch.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::ForgottenTopic;
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::{FetchRequest, FetchResponse};
use kafka_protocol::records::Compression;
use sluice::protocol::encode;
use uuid::Uuid;

use common::wire::{
    self, create_topic, fetch, fetch_partition, fetch_topic, metadata, sessionless, topic_name,
    Conn, FETCH_SESSION_ID_NOT_FOUND, INVALID_FETCH_SESSION_EPOCH, NONE, OFFSET_OUT_OF_RANGE,
    UNKNOWN_TOPIC_ID, UNKNOWN_TOPIC_OR_PARTITION,
};
use common::TestBroker;

const MB: i32 = 1 << 20;

// ---------------------------------------------------------------- helpers

/// The topic id, as Metadata v12 reports it.
fn topic_id(conn: &mut Conn, name: &str) -> Uuid {
    let response = metadata(conn, Some(&[name]), false);
    assert_eq!(response.topics.len(), 1);
    let topic = &response.topics[0];
    assert_eq!(topic.error_code, NONE, "Metadata v12 for {name}");
    assert!(
        !topic.topic_id.is_nil(),
        "Metadata v12: {name} has a nil topic id"
    );
    topic.topic_id
}

/// A v2 record batch of `count` records with `value_len`-byte values, tagged `tag`.
fn batch(count: usize, value_len: usize, tag: &str) -> Bytes {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let records: Vec<_> = (0..count as i64)
        .map(|i| {
            let key = Some(Bytes::from(format!("{tag}-{i}")));
            let value = Some(Bytes::from(vec![b'v'; value_len]));
            encode::record(i, now + i, key, value, None)
        })
        .collect();
    encode::encode_batch(&records, Compression::None)
}

/// Produce v9 (acks=all) of one batch; returns its base offset.
fn produce(conn: &mut Conn, topic: &str, partition: i32, records: Bytes) -> i64 {
    let p = wire::produce(conn, topic, partition, records);
    assert_eq!(
        p.error_code, NONE,
        "produce to {topic}/{partition}: {:?}",
        p.error_message
    );
    p.base_offset
}

/// A batch as found in a Fetch response.
#[derive(Debug, Clone, Copy, PartialEq)]
struct BatchInfo {
    base_offset: i64,
    last_offset: i64,
    /// Bytes on the wire, log overhead (offset + length) included.
    size: usize,
    records: i32,
}

/// Splits a records field into batches; panics unless it is whole v2 batches only.
fn batches(records: &[u8], what: &str) -> Vec<BatchInfo> {
    let mut out = Vec::new();
    let mut rest = records;
    while !rest.is_empty() {
        assert!(
            rest.len() >= 61,
            "{what}: {} trailing bytes are not a whole batch header (batches so far {out:?})",
            rest.len()
        );
        let base_offset = i64::from_be_bytes(rest[0..8].try_into().unwrap());
        let length = i32::from_be_bytes(rest[8..12].try_into().unwrap());
        assert!(length >= 49, "{what}: batch length {length}");
        let size = 12 + length as usize;
        assert!(
            size <= rest.len(),
            "{what}: batch at offset {base_offset} claims {size} bytes, only {} left (partial batch)",
            rest.len()
        );
        assert_eq!(rest[16], 2, "{what}: magic of batch at {base_offset}");
        let last_offset_delta = i32::from_be_bytes(rest[23..27].try_into().unwrap());
        let count = i32::from_be_bytes(rest[57..61].try_into().unwrap());
        let crc = u32::from_be_bytes(rest[17..21].try_into().unwrap());
        assert_eq!(
            crc32c::crc32c(&rest[21..size]),
            crc,
            "{what}: CRC of batch at {base_offset}"
        );
        out.push(BatchInfo {
            base_offset,
            last_offset: base_offset + i64::from(last_offset_delta),
            size,
            records: count,
        });
        rest = &rest[size..];
    }
    out
}

/// A sessionless Fetch that answers at once (max_wait_ms 0, min_bytes 0).
fn fetch_now(
    conn: &mut Conn,
    version: i16,
    name: &str,
    id: Uuid,
    parts: &[(i32, i64, i32)],
    max_bytes: i32,
) -> FetchResponse {
    fetch(
        conn,
        version,
        &sessionless(version, name, id, parts, 0, 0, max_bytes),
    )
}

/// All partitions of a response, as (partition, data), in response order.
fn partitions(response: &FetchResponse) -> Vec<(i32, PartitionData)> {
    response
        .responses
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| (p.partition_index, p.clone())))
        .collect()
}

fn partition(response: &FetchResponse, index: i32, what: &str) -> PartitionData {
    let found: Vec<_> = partitions(response)
        .into_iter()
        .filter(|(i, _)| *i == index)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "{what}: partition {index} appears {} times in {response:?}",
        found.len()
    );
    found[0].1.clone()
}

fn records_of(p: &PartitionData) -> Bytes {
    p.records.clone().unwrap_or_default()
}

// ---------------------------------------------------------------- tests

/// 1. Long-poll: an empty partition waits max_wait_ms; an append wakes the
///    waiting fetch early; unmet min_bytes waits the full max_wait then returns
///    what is there. Fetch v12 (by name) and v16 (by topic id).
#[test]
fn long_poll_waits_and_wakes_on_append() {
    let broker = TestBroker::start();
    let mut conn = Conn::open(&broker.addr);
    let name = common::topic("long-poll");
    create_topic(&mut conn, &name, 1, &[]);
    let id = topic_id(&mut conn, &name);

    // Empty partition: wait ~max_wait, then an empty answer.
    for version in [12i16, 16] {
        let request = sessionless(version, &name, id, &[(0, 0, MB)], 400, 1, 50 * MB);
        let start = Instant::now();
        let response = fetch(&mut conn, version, &request);
        let elapsed = start.elapsed();
        assert_eq!(response.error_code, NONE, "v{version} top-level error");
        let p = partition(&response, 0, &format!("v{version} empty"));
        assert_eq!(p.error_code, NONE, "v{version}: partition error");
        assert!(
            records_of(&p).is_empty(),
            "v{version}: records from an empty partition"
        );
        assert_eq!(p.high_watermark, 0, "v{version}: high watermark");
        assert!(
            elapsed >= Duration::from_millis(300),
            "v{version}: empty fetch with max_wait_ms=400 returned after {elapsed:?}"
        );
        assert!(
            elapsed < Duration::from_millis(2500),
            "v{version}: empty fetch with max_wait_ms=400 took {elapsed:?}"
        );
        if version >= 13 {
            assert_eq!(
                response.responses[0].topic_id, id,
                "v{version}: topic id echoed"
            );
        }
    }

    // An append 200 ms into a 5 s long-poll wakes it.
    for (version, offset) in [(12i16, 0i64), (16, 1)] {
        let addr = broker.addr.clone();
        let producer_topic = name.clone();
        let producer = std::thread::spawn(move || {
            let mut conn = Conn::open(&addr);
            std::thread::sleep(Duration::from_millis(200));
            produce(&mut conn, &producer_topic, 0, batch(1, 20, "late"))
        });
        let request = sessionless(version, &name, id, &[(0, offset, MB)], 5000, 1, 50 * MB);
        let start = Instant::now();
        let response = fetch(&mut conn, version, &request);
        let elapsed = start.elapsed();
        let produced_at = producer.join().expect("producer thread");
        assert_eq!(produced_at, offset, "v{version}: producer's offset");
        let p = partition(&response, 0, &format!("v{version} woken"));
        assert_eq!(p.error_code, NONE);
        let got = batches(&records_of(&p), &format!("v{version} woken"));
        assert!(
            !got.is_empty(),
            "v{version}: long-poll returned no records after {elapsed:?}"
        );
        assert_eq!(
            got[0].base_offset, offset,
            "v{version}: the appended record"
        );
        assert!(
            elapsed < Duration::from_secs(3),
            "v{version}: fetch woken by an append after 200 ms took {elapsed:?}"
        );
        assert!(
            elapsed >= Duration::from_millis(150),
            "v{version}: fetch returned before the append ({elapsed:?})"
        );
    }

    // min_bytes above what is there: the full max_wait, then what there is.
    for version in [12i16, 16] {
        let request = sessionless(version, &name, id, &[(0, 0, MB)], 500, 1_000_000, 50 * MB);
        let start = Instant::now();
        let response = fetch(&mut conn, version, &request);
        let elapsed = start.elapsed();
        let p = partition(&response, 0, &format!("v{version} min_bytes"));
        assert_eq!(p.error_code, NONE);
        let got = batches(&records_of(&p), &format!("v{version} min_bytes"));
        assert_eq!(
            got.iter().map(|b| b.base_offset).collect::<Vec<_>>(),
            vec![0, 1],
            "v{version}: min_bytes unmet returns both batches there are"
        );
        assert!(
            elapsed >= Duration::from_millis(400),
            "v{version}: min_bytes=1000000 with max_wait_ms=500 returned after {elapsed:?}"
        );
        assert!(
            elapsed < Duration::from_millis(3000),
            "v{version}: {elapsed:?}"
        );
    }
    // min_bytes met at once: no waiting.
    let request = sessionless(12, &name, id, &[(0, 0, MB)], 5000, 1, 50 * MB);
    let start = Instant::now();
    let response = fetch(&mut conn, 12, &request);
    assert!(!records_of(&partition(&response, 0, "immediate")).is_empty());
    assert!(
        start.elapsed() < Duration::from_millis(1000),
        "data available but fetch waited {:?}",
        start.elapsed()
    );
}

/// Two partitions of 4 batches of 5 records (~1.1 KB each); returns the
/// broker, a connection, the topic name and id, and the size of one batch.
fn two_partitions_of_batches() -> (TestBroker, Conn, String, Uuid, i32) {
    let broker = TestBroker::start();
    let mut conn = Conn::open(&broker.addr);
    let name = common::topic("max-bytes");
    create_topic(&mut conn, &name, 2, &[]);
    let id = topic_id(&mut conn, &name);
    for p in 0..2 {
        for b in 0..4i64 {
            let base = produce(&mut conn, &name, p, batch(5, 200, &format!("p{p}b{b}")));
            assert_eq!(base, b * 5);
        }
    }
    // Learn the batch sizes from an unlimited fetch.
    let all = fetch_now(&mut conn, 12, &name, id, &[(0, 0, MB), (1, 0, MB)], 50 * MB);
    let mut sizes = Vec::new();
    for p in 0..2 {
        let got = batches(&records_of(&partition(&all, p, "unlimited")), "unlimited");
        assert_eq!(got.len(), 4, "partition {p}: all batches");
        for (i, b) in got.iter().enumerate() {
            assert_eq!(b.base_offset, i as i64 * 5);
            assert_eq!(b.records, 5);
        }
        sizes.extend(got.iter().map(|b| b.size));
    }
    let batch_size = sizes[0];
    assert!(sizes.iter().all(|&s| s == batch_size), "{sizes:?}");
    (broker, conn, name, id, batch_size as i32)
}

/// Base offsets of the batches of partitions 0 and 1 (whole batches only).
fn two_summaries(response: &FetchResponse, what: &str) -> (Vec<BatchInfo>, Vec<BatchInfo>) {
    (
        batches(
            &records_of(&partition(response, 0, what)),
            &format!("{what}, partition 0"),
        ),
        batches(
            &records_of(&partition(response, 1, what)),
            &format!("{what}, partition 1"),
        ),
    )
}

fn bases(b: &[BatchInfo]) -> Vec<i64> {
    b.iter().map(|b| b.base_offset).collect()
}

/// 2a. Limits that hold: partition_max_bytes and max_bytes with whole
///     batches; KIP-74's first batch even when over max_bytes; and a sweep of
///     limits where each response is whole batches, makes progress and stays
///     within the limits (but for the first batch).
#[test]
fn max_bytes_limits_whole_batches() {
    let (_broker, mut conn, name, id, batch_size) = two_partitions_of_batches();
    for version in [12i16, 16] {
        // partition_max_bytes of 2.5 batches: two whole batches per partition.
        let pmb = batch_size * 5 / 2;
        let what = format!("v{version} partition_max_bytes={pmb} (batch {batch_size})");
        let response = fetch_now(
            &mut conn,
            version,
            &name,
            id,
            &[(0, 0, pmb), (1, 0, pmb)],
            50 * MB,
        );
        let (p0, p1) = two_summaries(&response, &what);
        assert_eq!((bases(&p0), bases(&p1)), (vec![0, 5], vec![0, 5]), "{what}");

        // partition_max_bytes below one batch: the first partition still gets one.
        let what = format!("v{version} partition_max_bytes=100 (batch {batch_size})");
        let response = fetch_now(
            &mut conn,
            version,
            &name,
            id,
            &[(0, 0, 100), (1, 0, 100)],
            50 * MB,
        );
        let (p0, _) = two_summaries(&response, &what);
        assert_eq!(
            bases(&p0),
            vec![0],
            "{what}: first partition gets exactly one batch"
        );

        // Response max_bytes of 2.5 batches: two batches in all, from partition 0.
        let what = format!("v{version} max_bytes={pmb} (batch {batch_size})");
        let response = fetch_now(
            &mut conn,
            version,
            &name,
            id,
            &[(0, 0, MB), (1, 0, MB)],
            pmb,
        );
        let (p0, p1) = two_summaries(&response, &what);
        let total: usize = p0.iter().chain(&p1).map(|b| b.size).sum();
        assert!(total <= pmb as usize, "{what}: {total} bytes returned");
        assert_eq!(
            bases(&p0),
            vec![0, 5],
            "{what}: as many whole batches as fit"
        );
        assert!(p1.is_empty(), "{what}: {p1:?}");

        // max_bytes below one batch: still the first batch of the first
        // partition in request order (here partition 1), nothing else.
        let what = format!("v{version} max_bytes=10, partitions requested as [1, 0]");
        let response = fetch_now(&mut conn, version, &name, id, &[(1, 0, MB), (0, 0, MB)], 10);
        let (p0, p1) = two_summaries(&response, &what);
        assert_eq!(bases(&p1), vec![0], "{what}: first requested partition");
        assert!(
            p0.is_empty(),
            "{what}: exceeded by a second partition: {p0:?}"
        );
    }

    // A sweep of limits.
    let mut max_bytes = 1;
    while max_bytes < 16 * batch_size {
        for pmb in [
            batch_size - 1,
            batch_size,
            batch_size + 1,
            3 * batch_size,
            MB,
        ] {
            let what =
                format!("max_bytes={max_bytes} partition_max_bytes={pmb} batch={batch_size}");
            let response = fetch_now(
                &mut conn,
                12,
                &name,
                id,
                &[(0, 3, pmb), (1, 7, pmb)],
                max_bytes,
            );
            let mut total = 0usize;
            let mut count = 0;
            for (p, start) in [(0, 3i64), (1, 7)] {
                let data = partition(&response, p, &what);
                assert_eq!(data.error_code, NONE, "{what}");
                let got = batches(&records_of(&data), &what);
                if let Some(first) = got.first() {
                    assert!(
                        first.base_offset <= start && start <= first.last_offset,
                        "{what}: partition {p} first batch {first:?} does not hold offset {start}"
                    );
                }
                let bytes: usize = got.iter().map(|b| b.size).sum();
                if got.len() > 1 {
                    assert!(
                        bytes <= pmb as usize,
                        "{what}: partition {p} returned {bytes} bytes"
                    );
                }
                total += bytes;
                count += got.len();
            }
            assert!(count >= 1, "{what}: no progress");
            if count > 1 {
                assert!(
                    total <= max_bytes as usize,
                    "{what}: {total} bytes in {count} batches"
                );
            }
        }
        max_bytes += 431;
    }
}

/// 2b. KIP-74: only the first non-empty partition of the response may exceed
///     its partition_max_bytes (by one batch); later partitions' limits are hard.
#[test]
fn partition_max_bytes_exemption_is_for_the_first_partition_only() {
    let (_broker, mut conn, name, id, batch_size) = two_partitions_of_batches();
    for version in [12i16, 16] {
        for pmb in [100, batch_size - 1] {
            let what = format!("Fetch v{version} partition_max_bytes={pmb} < batch {batch_size}");
            let response = fetch_now(
                &mut conn,
                version,
                &name,
                id,
                &[(0, 0, pmb), (1, 0, pmb)],
                50 * MB,
            );
            let (p0, p1) = two_summaries(&response, &what);
            assert_eq!(
                bases(&p0),
                vec![0],
                "{what}: first partition gets exactly one batch"
            );
            assert!(
                p1.is_empty(),
                "{what}: the second partition got {} bytes ({p1:?}) although the exemption \
                 was used by the first",
                p1.iter().map(|b| b.size).sum::<usize>()
            );
        }
    }
}

/// 2c. What the first partition leaves of max_bytes goes to the next one.
///     Partition 0 has one batch left; partition 1 must get the 2.5 batches
///     remaining as two whole batches (else a partition with a trickle of new
///     data starves a backlogged one behind it).
#[test]
fn max_bytes_left_over_goes_to_the_next_partition() {
    let (_broker, mut conn, name, id, batch_size) = two_partitions_of_batches();
    for version in [12i16, 16] {
        let mb = batch_size * 7 / 2;
        let what = format!("Fetch v{version} max_bytes={mb} (3.5 batches of {batch_size}), partition 0 from 15, partition 1 from 0");
        let response = fetch_now(
            &mut conn,
            version,
            &name,
            id,
            &[(0, 15, MB), (1, 0, MB)],
            mb,
        );
        let (p0, p1) = two_summaries(&response, &what);
        assert_eq!(bases(&p0), vec![15], "{what}: partition 0");
        assert_eq!(bases(&p1), vec![0, 5], "{what}: partition 1");
    }
}

/// 2d. The broker's own cap (`--fetch-max-bytes`, Kafka's broker
///     fetch.max.bytes) bounds every response whatever the client asks, in
///     whole batches, but a first batch larger than the cap still comes whole.
#[test]
fn broker_fetch_max_bytes_caps_every_response() {
    const CAP: usize = 25_000;
    let broker = TestBroker::start_with(&["--fetch-max-bytes", "25000"]);
    let mut conn = Conn::open(&broker.addr);
    let name = common::topic("broker-cap");
    create_topic(&mut conn, &name, 2, &[]);
    let id = topic_id(&mut conn, &name);
    for p in 0..2 {
        for b in 0..4i64 {
            let base = produce(&mut conn, &name, p, batch(10, 1000, &format!("p{p}b{b}")));
            assert_eq!(base, b * 10);
        }
    }
    // One batch larger than the cap, at offset 40 of partition 0.
    assert_eq!(produce(&mut conn, &name, 0, batch(40, 1000, "big")), 40);

    for version in [4i16, 12, 16] {
        let what = format!("Fetch v{version}, max_bytes 50 MB, broker cap {CAP}");
        let response = fetch_now(
            &mut conn,
            version,
            &name,
            id,
            &[(0, 0, MB), (1, 0, MB)],
            50 * MB,
        );
        let (p0, p1) = two_summaries(&response, &what);
        let size = p0[0].size;
        assert!(
            size > 10_000 && 2 * size <= CAP && 3 * size > CAP,
            "{what}: batch size {size}"
        );
        assert_eq!(bases(&p0), vec![0, 10], "{what}: partition 0");
        assert!(
            p1.is_empty(),
            "{what}: partition 1 got {p1:?} beyond the cap"
        );

        // Partition 0 from its last small batch: that one and nothing of the
        // big batch behind it; partition 1 then gets one batch of what is left.
        let response = fetch_now(
            &mut conn,
            version,
            &name,
            id,
            &[(0, 30, MB), (1, 0, MB)],
            50 * MB,
        );
        let (p0, p1) = two_summaries(&response, &what);
        assert_eq!(bases(&p0), vec![30], "{what}: partition 0 from 30");
        assert_eq!(
            bases(&p1),
            vec![0],
            "{what}: partition 1 after partition 0 from 30"
        );

        // KIP-74: the batch over the cap comes whole when it is the first.
        let response = fetch_now(&mut conn, version, &name, id, &[(0, 40, MB)], 50 * MB);
        let got = batches(&records_of(&partition(&response, 0, &what)), &what);
        assert_eq!(got.len(), 1, "{what}: the big batch alone");
        assert_eq!((got[0].base_offset, got[0].records), (40, 40));
        assert!(
            got[0].size > CAP,
            "{what}: the big batch is {} bytes",
            got[0].size
        );
    }
}

/// 3. Offsets beyond the high watermark, at it, and unknown topics by name and by id.
#[test]
fn offset_and_topic_errors() {
    let broker = TestBroker::start();
    let mut conn = Conn::open(&broker.addr);
    let name = common::topic("errors");
    create_topic(&mut conn, &name, 1, &[]);
    let id = topic_id(&mut conn, &name);
    produce(&mut conn, &name, 0, batch(3, 10, "e"));

    for version in [12i16, 13, 16] {
        let what = |s: &str| format!("Fetch v{version}: {s}");
        let response = fetch_now(&mut conn, version, &name, id, &[(0, 4, MB)], 50 * MB);
        let p = partition(&response, 0, &what("offset 4"));
        assert_eq!(
            p.error_code,
            OFFSET_OUT_OF_RANGE,
            "{}",
            what("offset 4 > high watermark 3")
        );
        assert!(
            records_of(&p).is_empty(),
            "{}",
            what("records with an error")
        );

        let response = fetch_now(&mut conn, version, &name, id, &[(0, 1000, MB)], 50 * MB);
        assert_eq!(
            partition(&response, 0, &what("offset 1000")).error_code,
            OFFSET_OUT_OF_RANGE,
            "{}",
            what("offset 1000")
        );

        let response = fetch_now(&mut conn, version, &name, id, &[(0, -5, MB)], 50 * MB);
        assert_eq!(
            partition(&response, 0, &what("offset -5")).error_code,
            OFFSET_OUT_OF_RANGE,
            "{}",
            what("negative offset -5")
        );

        let start = Instant::now();
        let response = fetch(
            &mut conn,
            version,
            &sessionless(version, &name, id, &[(0, 3, MB)], 100, 1, 50 * MB),
        );
        let p = partition(&response, 0, &what("offset 3"));
        assert_eq!(
            p.error_code,
            NONE,
            "{}",
            what("fetch at the high watermark")
        );
        assert!(
            records_of(&p).is_empty(),
            "{}",
            what("records at the high watermark")
        );
        assert_eq!(p.high_watermark, 3, "{}", what("high watermark"));
        assert_eq!(p.log_start_offset, 0, "{}", what("log start offset"));
        assert!(
            start.elapsed() >= Duration::from_millis(70),
            "{}",
            what("no long-poll at hw")
        );

        // Partition 5 of a 1-partition topic.
        let response = fetch_now(&mut conn, version, &name, id, &[(5, 0, MB)], 50 * MB);
        assert_eq!(
            partition(&response, 5, &what("partition 5")).error_code,
            UNKNOWN_TOPIC_OR_PARTITION,
            "{}",
            what("partition 5 of 1")
        );
    }

    // Unknown topic by name (v12).
    let unknown = common::topic("no-such-topic");
    let response = fetch_now(&mut conn, 12, &unknown, Uuid::nil(), &[(0, 0, MB)], 50 * MB);
    assert_eq!(response.error_code, NONE);
    assert_eq!(
        partition(&response, 0, "unknown name").error_code,
        UNKNOWN_TOPIC_OR_PARTITION,
        "Fetch v12 of an unknown topic name"
    );
    assert_eq!(response.responses[0].topic.0.as_str(), unknown);

    // Unknown topic id (v13+), and it was not created by the attempt.
    for version in [13i16, 16] {
        let random = Uuid::new_v4();
        let response = fetch_now(&mut conn, version, "", random, &[(0, 0, MB)], 50 * MB);
        assert_eq!(response.error_code, NONE, "v{version} top-level");
        assert_eq!(
            partition(&response, 0, "unknown id").error_code,
            UNKNOWN_TOPIC_ID,
            "Fetch v{version} of a random topic id"
        );
        assert_eq!(
            response.responses[0].topic_id, random,
            "v{version}: id echoed"
        );
    }
}

/// A session request: (partition, offset) entries to add or update, partitions
/// to forget; topics by name below v13, by id from v13.
struct Session<'a> {
    version: i16,
    name: &'a str,
    id: Uuid,
}

impl Session<'_> {
    fn request(
        &self,
        session_id: i32,
        epoch: i32,
        parts: &[(i32, i64)],
        forget: &[i32],
        max_wait_ms: i32,
    ) -> FetchRequest {
        let mut request = FetchRequest::default()
            .with_max_wait_ms(max_wait_ms)
            .with_min_bytes(1)
            .with_max_bytes(50 * MB)
            .with_session_id(session_id)
            .with_session_epoch(epoch);
        if !parts.is_empty() {
            request.topics = vec![fetch_topic(
                self.version,
                self.name,
                self.id,
                parts
                    .iter()
                    .map(|&(p, o)| fetch_partition(p, o, MB))
                    .collect(),
            )];
        }
        if !forget.is_empty() {
            let topic = ForgottenTopic::default().with_partitions(forget.to_vec());
            request.forgotten_topics_data = vec![if self.version >= 13 {
                topic.with_topic_id(self.id)
            } else {
                topic.with_topic(topic_name(self.name))
            }];
        }
        request
    }

    /// Sends [`Session::request`] on `conn`.
    fn fetch(
        &self,
        conn: &mut Conn,
        session_id: i32,
        epoch: i32,
        parts: &[(i32, i64)],
        forget: &[i32],
        max_wait_ms: i32,
    ) -> FetchResponse {
        let request = self.request(session_id, epoch, parts, forget, max_wait_ms);
        fetch(conn, self.version, &request)
    }
}

/// The (partition, base offsets of its batches) pairs of a response.
fn summary(response: &FetchResponse) -> Vec<(i32, Vec<i64>)> {
    partitions(response)
        .into_iter()
        .map(|(p, data)| {
            let got = batches(&records_of(&data), "session");
            (p, got.iter().map(|b| b.base_offset).collect())
        })
        .collect()
}

/// 4. KIP-227 fetch sessions: Fetch v12 (by name) as asked, and v16 (by id).
#[test]
fn fetch_sessions() {
    let broker = TestBroker::start();
    for version in [12i16, 16] {
        fetch_sessions_at(&broker, version);
    }
}

fn fetch_sessions_at(broker: &TestBroker, version: i16) {
    let mut conn = Conn::open(&broker.addr);
    let name = common::topic("sessions");
    create_topic(&mut conn, &name, 2, &[]);
    let id = topic_id(&mut conn, &name);
    let s = Session {
        version,
        name: &name,
        id,
    };
    let v = format!("Fetch v{version}");
    produce(&mut conn, &name, 0, batch(1, 10, "a"));
    produce(&mut conn, &name, 1, batch(1, 10, "b"));

    // A new session: full request, full response.
    let response = s.fetch(&mut conn, 0, 0, &[(0, 0), (1, 0)], &[], 100);
    assert_eq!(response.error_code, NONE, "{v} epoch 0");
    let session = response.session_id;
    assert_ne!(session, 0, "{v}: epoch 0 must create a session");
    assert_eq!(
        summary(&response),
        vec![(0, vec![0]), (1, vec![0])],
        "{v}: full response of a new session"
    );

    // Epoch 1: the client consumed both records and lists the new offsets.
    let mut epoch = 1;
    let start = Instant::now();
    let response = s.fetch(&mut conn, session, epoch, &[(0, 1), (1, 1)], &[], 200);
    assert_eq!(response.error_code, NONE, "{v} epoch {epoch}");
    assert_eq!(
        response.session_id, session,
        "{v} epoch {epoch}: session id"
    );
    assert_eq!(
        summary(&response),
        vec![],
        "{v} epoch {epoch}: nothing changed, nothing listed"
    );
    assert!(
        start.elapsed() >= Duration::from_millis(150),
        "{v}: an incremental fetch with no data must still long-poll ({:?})",
        start.elapsed()
    );

    // No partitions listed, nothing changed.
    epoch += 1;
    let response = s.fetch(&mut conn, session, epoch, &[], &[], 100);
    assert_eq!(response.error_code, NONE, "{v} epoch {epoch}");
    assert_eq!(response.session_id, session);
    assert_eq!(
        summary(&response),
        vec![],
        "{v} epoch {epoch}: nothing changed"
    );

    // New data in partition 1 only: just partition 1, with the new record.
    produce(&mut conn, &name, 1, batch(1, 10, "c"));
    epoch += 1;
    let response = s.fetch(&mut conn, session, epoch, &[], &[], 1000);
    assert_eq!(response.error_code, NONE, "{v} epoch {epoch}");
    assert_eq!(
        summary(&response),
        vec![(1, vec![1])],
        "{v} epoch {epoch}: only the changed partition, with its new record"
    );
    assert_eq!(partition(&response, 1, &v).high_watermark, 2);
    // The client advances partition 1 to 2: nothing changed again.
    epoch += 1;
    let response = s.fetch(&mut conn, session, epoch, &[(1, 2)], &[], 100);
    assert_eq!(response.error_code, NONE, "{v} epoch {epoch}");
    assert_eq!(
        summary(&response),
        vec![],
        "{v} epoch {epoch}: partition 1 advanced, no news"
    );

    // An incremental fetch listing nothing long-polls on the session's partitions.
    let addr = broker.addr.clone();
    let producer_topic = name.clone();
    let producer = std::thread::spawn(move || {
        let mut conn = Conn::open(&addr);
        std::thread::sleep(Duration::from_millis(200));
        produce(&mut conn, &producer_topic, 0, batch(1, 10, "late"))
    });
    epoch += 1;
    let start = Instant::now();
    let response = s.fetch(&mut conn, session, epoch, &[], &[], 5000);
    let elapsed = start.elapsed();
    assert_eq!(producer.join().unwrap(), 1);
    assert_eq!(response.error_code, NONE, "{v} epoch {epoch}");
    assert_eq!(
        summary(&response),
        vec![(0, vec![1])],
        "{v} epoch {epoch}: woken by an append to a session partition"
    );
    assert!(
        elapsed < Duration::from_secs(3),
        "{v}: session long-poll took {elapsed:?}"
    );
    epoch += 1;
    let response = s.fetch(&mut conn, session, epoch, &[(0, 2)], &[], 50);
    assert_eq!(summary(&response), vec![], "{v} epoch {epoch}");

    // A wrong epoch: INVALID_FETCH_SESSION_EPOCH, top level.
    for wrong in [epoch, epoch + 2, 0x7fff_0000] {
        let response = s.fetch(&mut conn, session, wrong, &[], &[], 0);
        assert_eq!(
            response.error_code,
            INVALID_FETCH_SESSION_EPOCH,
            "{v}: epoch {wrong} when {} is expected",
            epoch + 1
        );
        assert!(
            summary(&response).is_empty(),
            "{v}: data with a session error"
        );
    }
    // The session itself is untouched by a bad request.
    epoch += 1;
    let response = s.fetch(&mut conn, session, epoch, &[], &[], 50);
    assert_eq!(
        response.error_code, NONE,
        "{v}: epoch {epoch} after wrong epochs"
    );
    assert_eq!(summary(&response), vec![]);

    // An unknown session id.
    let unknown = if session == 987_654 { 987_655 } else { 987_654 };
    let response = s.fetch(&mut conn, unknown, 1, &[], &[], 0);
    assert_eq!(
        response.error_code, FETCH_SESSION_ID_NOT_FOUND,
        "{v}: session id {unknown} was never handed out"
    );
    // That error leaves the real session alone.
    epoch += 1;
    let response = s.fetch(&mut conn, session, epoch, &[], &[], 0);
    assert_eq!(
        response.error_code, NONE,
        "{v}: epoch {epoch} after an unknown-id error"
    );

    // Forget partition 0; then new data in both partitions shows only partition 1.
    epoch += 1;
    let response = s.fetch(&mut conn, session, epoch, &[], &[0], 50);
    assert_eq!(response.error_code, NONE, "{v} epoch {epoch} (forget 0)");
    assert_eq!(summary(&response), vec![], "{v} epoch {epoch}");
    produce(&mut conn, &name, 0, batch(1, 10, "d"));
    produce(&mut conn, &name, 1, batch(1, 10, "e"));
    epoch += 1;
    let response = s.fetch(&mut conn, session, epoch, &[], &[], 1000);
    assert_eq!(response.error_code, NONE, "{v} epoch {epoch}");
    assert_eq!(
        summary(&response),
        vec![(1, vec![2])],
        "{v} epoch {epoch}: partition 0 was forgotten, partition 1 has offset 2"
    );
    // Adding partition 0 back in an incremental request includes it.
    epoch += 1;
    let response = s.fetch(&mut conn, session, epoch, &[(0, 2), (1, 3)], &[], 1000);
    assert_eq!(response.error_code, NONE, "{v} epoch {epoch}");
    assert_eq!(
        summary(&response),
        vec![(0, vec![2])],
        "{v} epoch {epoch}: partition 0 re-added"
    );

    // Epoch -1 closes the session (this request itself is served sessionless).
    let response = s.fetch(&mut conn, session, -1, &[(0, 0), (1, 0)], &[], 0);
    assert_eq!(response.error_code, NONE, "{v}: closing request");
    assert_eq!(
        response.session_id, 0,
        "{v}: closing request answered sessionless"
    );
    assert_eq!(
        summary(&response),
        vec![(0, vec![0, 1, 2]), (1, vec![0, 1, 2])],
        "{v}: closing request: full sessionless answer"
    );
    let response = s.fetch(&mut conn, session, epoch + 1, &[], &[], 0);
    assert_eq!(
        response.error_code, FETCH_SESSION_ID_NOT_FOUND,
        "{v}: the closed session {session} used again"
    );
}

/// 5. Fetching at any offset inside a multi-record batch returns that batch.
#[test]
fn fetch_inside_a_batch_returns_the_containing_batch() {
    let broker = TestBroker::start();
    let mut conn = Conn::open(&broker.addr);
    let name = common::topic("inside");
    create_topic(&mut conn, &name, 1, &[]);
    let id = topic_id(&mut conn, &name);
    // Batches at offsets 0, 1..=10, 11, 12..=18.
    assert_eq!(produce(&mut conn, &name, 0, batch(1, 30, "a")), 0);
    assert_eq!(produce(&mut conn, &name, 0, batch(10, 30, "b")), 1);
    assert_eq!(produce(&mut conn, &name, 0, batch(1, 30, "c")), 11);
    assert_eq!(produce(&mut conn, &name, 0, batch(7, 30, "d")), 12);
    let containing = |offset: i64| -> (i64, i64) {
        match offset {
            0 => (0, 0),
            1..=10 => (1, 10),
            11 => (11, 11),
            _ => (12, 18),
        }
    };
    for version in [12i16, 16] {
        for offset in 0..19i64 {
            for pmb in [1, MB] {
                let what = format!("v{version} offset {offset} partition_max_bytes {pmb}");
                let response =
                    fetch_now(&mut conn, version, &name, id, &[(0, offset, pmb)], 50 * MB);
                let p = partition(&response, 0, &what);
                assert_eq!(p.error_code, NONE, "{what}");
                let got = batches(&records_of(&p), &what);
                assert!(!got.is_empty(), "{what}: no records");
                assert_eq!(
                    (got[0].base_offset, got[0].last_offset),
                    containing(offset),
                    "{what}: first batch"
                );
                if pmb == 1 {
                    assert_eq!(got.len(), 1, "{what}: one batch only");
                } else {
                    assert_eq!(got.last().unwrap().last_offset, 18, "{what}: to the end");
                    for pair in got.windows(2) {
                        assert_eq!(
                            pair[1].base_offset,
                            pair[0].last_offset + 1,
                            "{what}: contiguous"
                        );
                    }
                }
            }
        }
    }
}

/// KIP-98 on the wire: a read_committed Fetch (isolation level 1) reports
/// the last stable offset and an aborted-transaction list (empty: nothing
/// was aborted), a read_uncommitted one a null list, at every version; with
/// no transaction open the last stable offset is the high watermark and both
/// return the same records.
#[test]
fn isolation_levels_report_the_stable_offset_and_aborted_list() {
    let broker = TestBroker::start();
    let mut conn = Conn::open(&broker.addr);
    create_topic(&mut conn, "iso", 1, &[]);
    let id = topic_id(&mut conn, "iso");
    produce(&mut conn, "iso", 0, batch(3, 10, "a"));
    produce(&mut conn, "iso", 0, batch(2, 10, "b"));
    for version in 4..=16 {
        let mut answers = Vec::new();
        for isolation in [0i8, 1] {
            let request = sessionless(version, "iso", id, &[(0, 0, 1 << 20)], 0, 0, 1 << 20)
                .with_isolation_level(isolation);
            let response = fetch(&mut conn, version, &request);
            let p = partition(&response, 0, &format!("v{version} isolation {isolation}"));
            assert_eq!(p.error_code, 0);
            assert_eq!(
                (p.high_watermark, p.last_stable_offset),
                (5, 5),
                "v{version}"
            );
            assert_eq!(
                p.aborted_transactions.as_ref().map(Vec::len),
                (isolation == 1).then_some(0),
                "v{version} isolation {isolation}"
            );
            answers.push(records_of(&p));
        }
        assert_eq!(answers[0], answers[1], "v{version}: the same records");
        assert_eq!(batches(&answers[0], "iso").len(), 2);
    }
}
