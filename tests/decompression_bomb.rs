//! A "zip bomb": a zstd batch of about 48 KiB, well within max.message.bytes,
//! whose records decompress to 1 GiB. Produce stores it as sent; what
//! decompresses stored batches (ListOffsets by timestamp, the log cleaner, the
//! key check of Produce to a compacted topic) stops at the decompression limit
//! (64 MiB by default). The broker answers, stays up, serves other clients, and
//! its peak resident memory stays far below the decompressed size.

mod common;

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::records::Compression;
use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use sluice::protocol::batch::{compute_crc, BatchHeader, BatchIter};
use sluice::protocol::encode;

use common::wire::*;
use common::TestBroker;

const MIB: usize = 1 << 20;
/// Records of the bomb, each with a 1 MiB value of zeros: 1 GiB in all.
const BOMB_RECORDS: usize = 1024;
const BOMB_TIMESTAMP: i64 = 1_700_000_002_000;
/// Peak resident memory the broker may reach: a quarter of the bomb. The
/// decompression limit (64 MiB) plus zstd's window and the broker's own
/// footprint stay well below it; decoding the bomb whole would not.
const RSS_MAX_BYTES: u64 = 256 << 20;

fn zigzag(value: i64, out: &mut Vec<u8>) {
    let mut v = ((value << 1) ^ (value >> 63)) as u64;
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// The bomb: one zstd batch of BOMB_RECORDS keyed records (`bomb-<i>`, 1 MiB
/// of zeros each, timestamps from BOMB_TIMESTAMP), compressed as a stream so
/// that the test never holds it decompressed.
fn bomb() -> Bytes {
    let zeros = vec![0u8; MIB];
    let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
    for i in 0..BOMB_RECORDS {
        let key = format!("bomb-{i}");
        let mut head = vec![0u8]; // attributes
        zigzag(i as i64, &mut head); // timestamp delta
        zigzag(i as i64, &mut head); // offset delta
        zigzag(key.len() as i64, &mut head);
        head.extend_from_slice(key.as_bytes());
        zigzag(MIB as i64, &mut head);
        let mut length = Vec::new();
        zigzag((head.len() + MIB + 1) as i64, &mut length);
        encoder.write_all(&length).unwrap();
        encoder.write_all(&head).unwrap();
        encoder.write_all(&zeros).unwrap();
        encoder.write_all(&[0]).unwrap(); // no headers
    }
    let area = encoder.finish().unwrap();
    let mut b = Vec::with_capacity(61 + area.len());
    b.extend_from_slice(&0i64.to_be_bytes()); // base offset
    b.extend_from_slice(&((49 + area.len()) as i32).to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes()); // leader epoch
    b.push(2); // magic
    b.extend_from_slice(&0u32.to_be_bytes()); // crc, below
    b.extend_from_slice(&4i16.to_be_bytes()); // zstd
    b.extend_from_slice(&(BOMB_RECORDS as i32 - 1).to_be_bytes());
    b.extend_from_slice(&BOMB_TIMESTAMP.to_be_bytes());
    b.extend_from_slice(&(BOMB_TIMESTAMP + BOMB_RECORDS as i64 - 1).to_be_bytes());
    b.extend_from_slice(&(-1i64).to_be_bytes()); // producer id
    b.extend_from_slice(&(-1i16).to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes());
    b.extend_from_slice(&(BOMB_RECORDS as i32).to_be_bytes());
    b.extend_from_slice(&area);
    let crc = compute_crc(&b);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(b)
}

/// An uncompressed one-record batch.
fn record(key: &str, value: &str, timestamp: i64) -> Bytes {
    let record = encode::record(
        0,
        timestamp,
        Some(Bytes::from(key.to_string())),
        Some(Bytes::from(value.to_string())),
        None,
    );
    encode::encode_batch(&[record], Compression::None)
}

/// A field of /proc/<pid>/status in bytes (VmRSS, VmHWM).
fn status_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"));
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// Samples the broker's VmRSS every 10 ms until dropped; keeps the largest.
struct RssSampler {
    stop: Arc<AtomicBool>,
    max: Arc<AtomicU64>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let max = Arc::new(AtomicU64::new(0));
        let (s, m) = (stop.clone(), max.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                m.fetch_max(status_bytes(pid, "VmRSS:"), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        RssSampler { stop, max }
    }
    fn max(&self) -> u64 {
        self.max.load(Ordering::Relaxed)
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Every batch header of partition 0, fetched from offset 0 (records not decoded).
fn batch_headers(conn: &mut Conn, topic: &str) -> Vec<BatchHeader> {
    let mut headers: Vec<BatchHeader> = Vec::new();
    let mut offset = 0;
    loop {
        let request = sessionless(
            12,
            topic,
            uuid::Uuid::nil(),
            &[(0, offset, 4 << 20)],
            0,
            0,
            4 << 20,
        );
        let response = fetch(conn, 12, &request);
        let p = &response.responses[0].partitions[0];
        assert_eq!(p.error_code, NONE);
        let records = p.records.clone().unwrap_or_default();
        let before = headers.len();
        for item in BatchIter::new(&records, true) {
            let (header, _) = item.unwrap();
            offset = header.last_offset() + 1;
            headers.push(header);
        }
        if headers.len() == before {
            return headers;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zstd_bomb_is_answered_and_cleaned_around_within_bounded_memory() {
    let broker = TestBroker::start_with(&["--log-cleaner-interval-ms", "200"]);
    let pid = broker.pid().unwrap();
    let bomb = bomb();
    assert!(
        bomb.len() < 1_048_588,
        "the bomb fits max.message.bytes: {} bytes",
        bomb.len()
    );
    let idle_rss = status_bytes(pid, "VmRSS:");
    let sampler = RssSampler::start(pid);
    let mut conn = Conn::open(&broker.addr);

    // ListOffsets by timestamp, on a topic that stores the bomb as sent.
    let timed = common::topic("bomb-time");
    create_topic(&mut conn, &timed, 1, &[]);
    assert_eq!(
        produce(
            &mut conn,
            &timed,
            0,
            record("a", "before", BOMB_TIMESTAMP - 1000)
        )
        .base_offset,
        0
    );
    let stored = produce(&mut conn, &timed, 0, bomb.clone());
    assert_eq!(
        (stored.error_code, stored.base_offset),
        (NONE, 1),
        "stored as sent"
    );
    let after = 1 + BOMB_RECORDS as i64;
    assert_eq!(
        produce(
            &mut conn,
            &timed,
            0,
            record("c", "after", BOMB_TIMESTAMP + 5000)
        )
        .base_offset,
        after
    );
    let started = Instant::now();
    // Record 5 of the bomb is the first at BOMB_TIMESTAMP + 5; beyond the
    // limit, the answer is the batch's first offset (a consumer seeking there
    // misses nothing) with its max timestamp.
    assert_eq!(
        list_offset(&mut conn, &timed, 0, BOMB_TIMESTAMP + 5),
        (NONE, 1),
        "batch-level answer for the bomb"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered in {:?}",
        started.elapsed()
    );
    assert_eq!(
        list_offset(&mut conn, &timed, 0, BOMB_TIMESTAMP - 1000),
        (NONE, 0)
    );
    assert_eq!(
        list_offset(&mut conn, &timed, 0, BOMB_TIMESTAMP + 4000),
        (NONE, after)
    );

    // Produce to a compacted topic looks at every key: the bomb is refused.
    let compacted = common::topic("bomb-refused");
    create_topic(&mut conn, &compacted, 1, &[("cleanup.policy", "compact")]);
    let refused = produce(&mut conn, &compacted, 0, bomb.clone());
    assert_eq!(
        refused.error_code, MESSAGE_TOO_LARGE,
        "{:?}",
        refused.error_message
    );
    assert_eq!(
        produce(&mut conn, &compacted, 0, record("k", "v", 1)).base_offset,
        0
    );

    // A topic that held the bomb before it became compacted: the cleaner keeps
    // the bomb as it is and compacts around it.
    let cleaned = common::topic("bomb-cleaned");
    create_topic(&mut conn, &cleaned, 1, &[("segment.bytes", "1024")]);
    for key in 0..5 {
        produce(&mut conn, &cleaned, 0, record(&format!("k{key}"), "old", 1));
    }
    assert_eq!(produce(&mut conn, &cleaned, 0, bomb.clone()).base_offset, 5);
    let newer = 5 + BOMB_RECORDS as i64;
    for key in 0..5 {
        let answer = produce(&mut conn, &cleaned, 0, record(&format!("k{key}"), "new", 2));
        assert_eq!(answer.base_offset, newer + key);
    }
    // Rolls the segment: every batch above is in a closed segment.
    produce(&mut conn, &cleaned, 0, record("end", &"e".repeat(1100), 3));
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .create()
        .expect("admin client");
    let alter = AlterConfig::new(ResourceSpecifier::Topic(&cleaned))
        .set("cleanup.policy", "compact")
        .set("segment.bytes", "1024")
        .set("min.cleanable.dirty.ratio", "0.01");
    let altered = admin
        .alter_configs([&alter], &AdminOptions::new())
        .await
        .expect("alter_configs");
    assert!(altered[0].is_ok(), "{altered:?}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let headers = loop {
        let headers = tokio::task::block_in_place(|| batch_headers(&mut conn, &cleaned));
        if headers.first().is_some_and(|h| h.base_offset > 0) {
            break headers;
        }
        assert!(Instant::now() < deadline, "not compacted: {headers:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let offsets: Vec<i64> = headers.iter().map(|h| h.base_offset).collect();
    assert_eq!(
        offsets[..6],
        [5, newer, newer + 1, newer + 2, newer + 3, newer + 4],
        "the old k0..k4 went, the rest stayed"
    );
    let kept = &headers[0];
    let original = BatchHeader::parse(&bomb).unwrap();
    assert_eq!(
        (kept.crc, kept.record_count, kept.batch_length),
        (original.crc, original.record_count, original.batch_length),
        "the bomb is kept byte for byte"
    );

    // Still up, still serving: another client, another topic.
    let other = common::topic("bystander");
    let mut fresh = Conn::open(&broker.addr);
    create_topic(&mut fresh, &other, 1, &[]);
    assert_eq!(
        produce(&mut fresh, &other, 0, record("x", "y", 1)).base_offset,
        0
    );
    assert_eq!(latest_offset(&mut fresh, &other, 0), 1);
    assert_eq!(latest_offset(&mut conn, &timed, 0), after + 1);

    let peak = status_bytes(pid, "VmHWM:");
    let sampled = sampler.max();
    eprintln!(
        "broker RSS: idle {} MiB, sampled max {} MiB, peak (VmHWM) {} MiB; the bomb ({} bytes) decompresses to {} MiB",
        idle_rss >> 20,
        sampled >> 20,
        peak >> 20,
        bomb.len(),
        BOMB_RECORDS
    );
    assert!(peak < RSS_MAX_BYTES, "peak RSS {} MiB", peak >> 20);
    assert!(sampled < RSS_MAX_BYTES, "sampled RSS {} MiB", sampled >> 20);
}
