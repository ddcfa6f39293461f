//! Zero-copy Fetch: the spliced path (record data from the segment files to
//! the socket) and the copying path (through page-aligned buffers) send the
//! same bytes, for fetches that span segments, hold compressed and
//! uncompressed batches, are cut by `partition_max_bytes` and `max_bytes`,
//! at every Fetch version shape; and a response keeps reading segments that
//! retention deletes while it is still being sent.
//!
//! One data dir is served three times: `--fetch-zero-copy always` (every piece
//! of record data spliced), `never` (every piece copied) and `auto`.

mod common;

use std::io::Read;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, FetchResponse, ResponseHeader};
use kafka_protocol::protocol::Decodable;
use kafka_protocol::records::Compression;
use sluice::protocol::batch::BatchIter;
use sluice::protocol::encode;
use uuid::Uuid;

use common::wire::{self, create_topic, metadata, sessionless, Conn, NONE};
use common::{topic, TestBroker};

const SEGMENT_BYTES: usize = 64 * 1024;
const OP_SET: i8 = 0;

/// A batch of `count` records of `value_len` bytes whose contents vary, so that
/// compressed batches really are compressed data.
fn batch(count: usize, value_len: usize, seed: u64, compression: Compression) -> Bytes {
    // Current timestamps: retention by time must not remove these.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let records: Vec<_> = (0..count as i64)
        .map(|i| {
            let mut x = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(i as u64);
            let value: Vec<u8> = (0..value_len)
                .map(|_| {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    // Half the bytes from a small alphabet: compressible, not trivially.
                    if x >> 63 == 0 {
                        b'a' + ((x >> 40) % 4) as u8
                    } else {
                        (x >> 33) as u8
                    }
                })
                .collect();
            let key = Some(Bytes::from(format!("key-{seed}-{i}")));
            encode::record(i, now + i, key, Some(Bytes::from(value)), None)
        })
        .collect();
    encode::encode_batch(&records, compression)
}

/// Fills `topic` (2 partitions) with batches of mixed sizes and codecs; returns
/// the high watermark of each partition.
fn fill(conn: &mut Conn, topic: &str) -> [i64; 2] {
    let codecs = [
        Compression::None,
        Compression::Lz4,
        Compression::None,
        Compression::Zstd,
        Compression::Gzip,
        Compression::Snappy,
    ];
    let mut ends = [0i64; 2];
    for i in 0..120u64 {
        let partition = (i % 2) as i32;
        let count = 1 + (i % 7) as usize * 3;
        let value_len = [100, 900, 3000, 20_000][(i % 4) as usize];
        let records = batch(count, value_len, i, codecs[((i / 2) % 6) as usize]);
        let answer = wire::produce(conn, topic, partition, records);
        assert_eq!(answer.error_code, NONE, "produce batch {i}");
        ends[partition as usize] = answer.base_offset + count as i64;
    }
    ends
}

/// Every Fetch the comparison makes: (version, [(partition, offset, partition
/// max bytes)], max_bytes).
/// (version, [(partition, offset, partition max bytes)], max_bytes).
type Case = (i16, Vec<(i32, i64, i32)>, i32);

fn cases(ends: [i64; 2]) -> Vec<Case> {
    let mut cases = Vec::new();
    for version in [4i16, 7, 11, 12, 13, 16] {
        // Everything of one partition: spans every segment.
        cases.push((version, vec![(0, 0, 64 << 20)], 64 << 20));
        // From inside batches, cut by partition_max_bytes at several sizes.
        for (offset, max) in [
            (1, 100_000),
            (ends[0] / 3, 70_000),
            (ends[0] / 2, 1000),
            (7, 0),
        ] {
            cases.push((version, vec![(0, offset, max)], 64 << 20));
        }
        // Two partitions, cut by the response's max_bytes.
        for max_bytes in [1, 50_000, 150_000, 400_000] {
            cases.push((
                version,
                vec![(0, 5, 300_000), (1, ends[1] / 4, 300_000)],
                max_bytes,
            ));
        }
        // At the high watermark and past it.
        cases.push((
            version,
            vec![(1, ends[1], 100_000), (0, ends[0] + 5, 100_000)],
            1 << 20,
        ));
    }
    cases
}

/// Runs every case on one connection; returns the response frames.
fn responses(broker: &TestBroker, topic: &str, topic_id: Uuid, ends: [i64; 2]) -> Vec<Bytes> {
    let mut conn = Conn::open(&broker.addr);
    cases(ends)
        .into_iter()
        .map(|(version, parts, max_bytes)| {
            let request = sessionless(version, topic, topic_id, &parts, 0, 0, max_bytes);
            let correlation_id = conn.send(ApiKey::Fetch, version, &request);
            let frame = conn.recv_frame();
            let mut body = frame.clone();
            let header =
                ResponseHeader::decode(&mut body, ApiKey::Fetch.response_header_version(version))
                    .unwrap();
            assert_eq!(header.correlation_id, correlation_id);
            FetchResponse::decode(&mut body, version)
                .unwrap_or_else(|e| panic!("Fetch v{version} {parts:?}: {e}"));
            assert!(body.is_empty(), "Fetch v{version}: trailing bytes");
            frame
        })
        .collect()
}

/// How many `.log` segment files a partition directory holds.
fn segment_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "log")
        })
        .count()
}

/// Record data of the first partition of a decoded Fetch response.
fn records_of(frame: &Bytes, version: i16) -> Bytes {
    let mut body = frame.clone();
    ResponseHeader::decode(&mut body, ApiKey::Fetch.response_header_version(version)).unwrap();
    let response = FetchResponse::decode(&mut body, version).unwrap();
    response.responses[0].partitions[0]
        .records
        .clone()
        .unwrap_or_default()
}

#[test]
fn spliced_and_copied_fetches_send_identical_bytes() {
    let mut broker = TestBroker::start_with(&["--fetch-zero-copy", "always"]);
    let name = topic("zc");
    let mut conn = Conn::open(&broker.addr);
    create_topic(
        &mut conn,
        &name,
        2,
        &[("segment.bytes", &SEGMENT_BYTES.to_string())],
    );
    let ends = fill(&mut conn, &name);
    let topic_id = metadata(&mut conn, Some(&[name.as_str()]), false).topics[0].topic_id;
    drop(conn);

    let spliced = responses(&broker, &name, topic_id, ends);
    broker.restart_with(&["--fetch-zero-copy", "never"]);
    let copied = responses(&broker, &name, topic_id, ends);
    broker.restart_with(&["--fetch-zero-copy", "auto"]);
    let auto = responses(&broker, &name, topic_id, ends);

    let all_cases = cases(ends);
    assert_eq!(spliced.len(), all_cases.len());
    for (i, (version, parts, max_bytes)) in all_cases.iter().enumerate() {
        assert!(
            spliced[i] == copied[i],
            "Fetch v{version} {parts:?} max_bytes {max_bytes}: spliced ({} bytes) and copied ({} bytes) responses differ",
            spliced[i].len(),
            copied[i].len()
        );
        assert!(
            auto[i] == copied[i],
            "Fetch v{version} {parts:?} max_bytes {max_bytes}: auto and copied responses differ"
        );
    }

    // The whole-partition fetch really spans segments, holds every codec, and
    // every batch in it is intact (CRC32C checked) with contiguous offsets.
    let whole = records_of(&spliced[0], 4);
    assert!(
        whole.len() > 10 * SEGMENT_BYTES,
        "one fetch spans many segments ({} bytes)",
        whole.len()
    );
    let segments = segment_files(&broker.data_dir().join(format!("{name}-0")));
    assert!(segments > 10, "partition 0 has {segments} segments");
    let mut next_offset = 0;
    let mut codecs = std::collections::BTreeSet::new();
    for item in BatchIter::new(&whole, true) {
        let (header, _) = item.expect("every batch of the response is intact");
        assert_eq!(header.base_offset, next_offset, "offsets are contiguous");
        next_offset = header.last_offset() + 1;
        codecs.insert(header.attributes & 0x7);
    }
    assert_eq!(next_offset, ends[0], "the fetch reaches the high watermark");
    assert_eq!(codecs.len(), 5, "batches of every codec: {codecs:?}");
    // Cut by partition_max_bytes inside the data: no more than asked, not empty.
    let cut = records_of(&spliced[1], 4);
    assert!(
        !cut.is_empty() && cut.len() <= 100_000,
        "cut at {}",
        cut.len()
    );
}

#[test]
fn a_response_being_sent_keeps_segments_that_retention_deletes() {
    // The response must outgrow the socket buffers: above the default 8 MiB cap.
    let broker = TestBroker::start_with(&[
        "--fetch-zero-copy",
        "always",
        "--log-retention-check-interval-ms",
        "100",
        "--fetch-max-bytes",
        "67108864",
    ]);
    let name = topic("zc-retention");
    let mut admin = Conn::open(&broker.addr);
    create_topic(&mut admin, &name, 1, &[("segment.bytes", "1048576")]);
    // About 40 MB: more than the socket buffers of both ends can hold.
    let mut end = 0;
    for i in 0..40u64 {
        let answer = wire::produce(
            &mut admin,
            &name,
            0,
            batch(50, 20_000, i, Compression::None),
        );
        assert_eq!(answer.error_code, NONE);
        end = answer.base_offset + 50;
    }
    let topic_id = metadata(&mut admin, Some(&[name.as_str()]), false).topics[0].topic_id;
    let request = sessionless(12, &name, topic_id, &[(0, 0, 64 << 20)], 0, 0, 64 << 20);

    // What the whole partition looks like, read by a client that keeps up.
    let mut fast = Conn::open(&broker.addr);
    fast.send(ApiKey::Fetch, 12, &request);
    let expected = fast.recv_frame();
    let expected_records = records_of(&expected, 12);
    {
        let mut body = expected.clone();
        ResponseHeader::decode(&mut body, 1).unwrap();
        let r = FetchResponse::decode(&mut body, 12).unwrap();
        let p = &r.responses[0].partitions[0];
        assert_eq!(p.error_code, NONE, "fetch of the whole partition: {p:?}");
    }
    assert!(
        expected_records.len() > 30 << 20,
        "the partition is read whole: {} bytes",
        expected_records.len()
    );

    // A client that asks for the same and does not read yet.
    let mut slow = Conn::open(&broker.addr);
    slow.stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    slow.send(ApiKey::Fetch, 12, &request);
    std::thread::sleep(Duration::from_millis(500));

    // Retention removes every closed segment while that response is in flight.
    let dir = broker.data_dir().join(format!("{name}-0"));
    let count_logs = || segment_files(&dir);
    assert!(count_logs() > 30);
    let code = wire::incremental_alter(
        &mut admin,
        1,
        &name,
        &[("retention.bytes", OP_SET, Some("1"))],
    );
    assert_eq!(code, NONE);
    let deadline = Instant::now() + Duration::from_secs(20);
    while count_logs() > 1 {
        assert!(
            Instant::now() < deadline,
            "retention did not delete the segments"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        wire::list_offset(&mut admin, &name, 0, -2),
        (NONE, wire::list_offset(&mut admin, &name, 0, -2).1)
    );
    let earliest = wire::list_offset(&mut admin, &name, 0, -2).1;
    assert!(
        earliest > 0 && earliest < end,
        "log start moved to {earliest}"
    );

    // The response still arrives whole and unchanged.
    let mut len = [0u8; 4];
    slow.stream.read_exact(&mut len).unwrap();
    let len = i32::from_be_bytes(len) as usize;
    assert_eq!(len, expected.len(), "the same response length");
    let mut frame = vec![0u8; len];
    slow.stream.read_exact(&mut frame).unwrap();
    let frame = Bytes::from(frame);
    assert!(
        frame == expected,
        "the response read after deletion is the one built before"
    );
    // And the broker goes on serving: a fetch now starts at the new log start.
    let after = sessionless(
        12,
        &name,
        topic_id,
        &[(0, earliest, 1 << 20)],
        0,
        0,
        1 << 20,
    );
    let response = wire::fetch(&mut admin, 12, &after);
    let p = &response.responses[0].partitions[0];
    assert_eq!(p.error_code, NONE);
    assert_eq!(p.log_start_offset, earliest);
    assert!(!p.records.as_ref().unwrap().is_empty());
}

/// Open descriptors of process `pid`.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

#[test]
fn a_partition_listed_many_times_is_read_once() {
    let broker = TestBroker::start_with(&["--fetch-zero-copy", "always"]);
    let pid = broker.pid().unwrap();
    let name = topic("zc-dup");
    let mut conn = Conn::open(&broker.addr);
    create_topic(&mut conn, &name, 1, &[]);
    for i in 0..4 {
        let answer = wire::produce(&mut conn, &name, 0, batch(10, 10_000, i, Compression::None));
        assert_eq!(answer.error_code, NONE);
    }
    let before = open_fds(pid);
    // 20,000 entries of the same partition: about 400 KB of request.
    let parts: Vec<(i32, i64, i32)> = (0..20_000).map(|i| (0, i % 40, 70_000)).collect();
    let request = sessionless(4, &name, Uuid::nil(), &parts, 0, 0, i32::MAX);
    let response = wire::fetch(&mut conn, 4, &request);
    assert_eq!(response.responses.len(), 1);
    let partitions = &response.responses[0].partitions;
    assert_eq!(partitions.len(), 1, "one answer for the partition");
    // Kafka's semantics: the first place in the request, the last values given.
    let records = partitions[0].records.clone().unwrap();
    let first = BatchIter::new(&records, true).next().unwrap().unwrap().0;
    assert!(
        first.base_offset <= 39 && first.last_offset() >= 39,
        "read from offset 39"
    );
    assert!(records.len() <= 70_000 || BatchIter::new(&records, true).count() == 1);
    let after = open_fds(pid);
    assert!(
        after <= before + 4,
        "descriptors {before} -> {after}: a read must not open one per listed partition"
    );
}

#[test]
fn a_client_that_stops_reading_is_disconnected() {
    let broker = TestBroker::start_with(&[
        "--fetch-zero-copy",
        "always",
        "--send-stall-timeout-ms",
        "1500",
    ]);
    let pid = broker.pid().unwrap();
    let name = topic("zc-stall");
    let mut admin = Conn::open(&broker.addr);
    create_topic(&mut admin, &name, 1, &[("segment.bytes", "1048576")]);
    for i in 0..30u64 {
        let answer = wire::produce(
            &mut admin,
            &name,
            0,
            batch(50, 20_000, i, Compression::None),
        );
        assert_eq!(answer.error_code, NONE);
    }
    let request = sessionless(12, &name, Uuid::nil(), &[(0, 0, 64 << 20)], 0, 0, 64 << 20);
    // A reader that keeps up first: each segment then has its one shared
    // descriptor open (kept for the segment's life, not per response).
    let whole = wire::fetch(&mut admin, 12, &request);
    assert_eq!(whole.responses[0].partitions[0].error_code, NONE);
    let before = open_fds(pid);
    let mut stalled = Conn::open(&broker.addr);
    let correlation_id = stalled.send(ApiKey::Fetch, 12, &request);
    assert!(correlation_id > 0);
    // Do not read for longer than the stall timeout: the broker gives up.
    std::thread::sleep(Duration::from_millis(4000));
    stalled
        .stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut received = 0usize;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match stalled.stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => received += n,
        }
    }
    assert!(
        received < 30 * 50 * 20_000,
        "the connection closed before the whole response ({received} bytes) went out"
    );
    // What the stalled response held is released, and others are served.
    let deadline = Instant::now() + Duration::from_secs(10);
    while open_fds(pid) > before + 2 {
        assert!(
            Instant::now() < deadline,
            "descriptors {before} -> {}",
            open_fds(pid)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let small = sessionless(12, &name, Uuid::nil(), &[(0, 0, 100_000)], 0, 0, 100_000);
    let response = wire::fetch(&mut admin, 12, &small);
    assert_eq!(response.responses[0].partitions[0].error_code, NONE);
}

/// The value of `sluice_fetch_record_bytes_total` for `reader` and `path`
/// on the metrics page at `url`.
fn fetched_bytes(url: &str, reader: &str, path: &str) -> u64 {
    let (_, body) = common::http_get(url, "GET", "/metrics");
    let series = format!("sluice_fetch_record_bytes_total{{reader=\"{reader}\",path=\"{path}\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&series))
        .unwrap_or_else(|| panic!("no {series}in the metrics"))
        .trim()
        .parse()
        .unwrap()
}

/// A follower's fetch is a fetch: the leader sends the record data of
/// three replicas' partition to its two followers from the segment file
/// (splice), not through memory. librdkafka writes 4 MiB in 64 KiB
/// messages (acks=all); once both followers hold the whole log, the
/// leader's metrics count at least the two copies of it as spliced bytes
/// for followers, and next to nothing copied for them.
#[test]
fn followers_fetch_through_the_zero_copy_path() {
    use common::cluster::{create_replicated, leaders, log_bytes, ready_three, wait_for_isr};
    use rdkafka::producer::FutureRecord;
    let dir = tempfile::tempdir().unwrap();
    let (brokers, _) = ready_three(dir.path(), &["--metrics-listen", "127.0.0.1:0"]);
    let name = "replicated-splice";
    create_replicated(&brokers, name, 1, 3, &[]);
    wait_for_isr(&brokers[0].1.addr, name, 3, Duration::from_secs(10));
    let leader = leaders(&brokers[0].1.addr, name).unwrap()[0].0;
    let leading = &brokers.iter().find(|(id, _)| *id == leader).unwrap().1;
    let url = leading
        .metrics_url
        .clone()
        .expect("metrics address printed");
    let before = (
        fetched_bytes(&url, "follower", "splice"),
        fetched_bytes(&url, "follower", "copy"),
    );

    let producer = common::clients::producer(leading, &[("linger.ms", "5")]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let value = vec![b'x'; 64 * 1024];
        let keys: Vec<String> = (0..64).map(|i| format!("k{i}")).collect();
        let sends: Vec<_> = keys
            .iter()
            .map(|key| {
                let record = FutureRecord::to(name).key(key).payload(&value);
                producer.send(record, Duration::from_secs(30))
            })
            .collect();
        for sent in futures_util::future::join_all(sends).await {
            sent.expect("acks=all send");
        }
    });
    let log_len = log_bytes(&leading.data_dir().join(format!("{name}-0"))).len() as u64;
    assert!(log_len >= 4 << 20, "the leader's log holds {log_len} bytes");
    let deadline = Instant::now() + Duration::from_secs(10);
    for (id, broker) in &brokers {
        let dir = broker.data_dir().join(format!("{name}-0"));
        while (log_bytes(&dir).len() as u64) < log_len {
            assert!(Instant::now() < deadline, "broker {id} did not catch up");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let spliced = fetched_bytes(&url, "follower", "splice") - before.0;
    let copied = fetched_bytes(&url, "follower", "copy") - before.1;
    println!("log {log_len} bytes; to followers: {spliced} spliced, {copied} copied");
    assert!(
        spliced >= 2 * log_len,
        "followers got {spliced} spliced bytes of a {log_len}-byte log (copied: {copied})"
    );
    assert!(
        copied * 20 < spliced,
        "followers got {copied} bytes copied against {spliced} spliced"
    );
}
