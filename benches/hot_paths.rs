//! The produce and fetch hot paths, piece by piece:
//! - request header + Produce v9 body decode (bytes of request per second);
//! - offset index lookup (lookups per second over a 100,000-entry index);
//! - the append path into a partition log through io_uring, without syncs
//!   (bytes per second) — what the shard does per batch besides fdatasync —
//!   once into memory (a tmpfs file: offsets, indexes, producer state and the
//!   io_uring write, no disk behind it) and once into a file on the data disk;
//! - Fetch response encoding with record data for 16 partitions (bytes per second);
//! - durable appends (fdatasync before the answer): one at a time against 64
//!   in flight sharing group-commit rounds (appends per second);
//! - a cross-shard queue round trip (calls per second): one at a time, which is
//!   the latency a request pays per hop, and 64 in flight, which is the rate a
//!   shard can hand work to another.
//!
//! Run: `cargo bench --bench hot_paths`. Under `cargo test` each case runs once.

use std::cell::Cell;
use std::rc::Rc;

mod common;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{ApiKey, FetchResponse, ProduceRequest, TopicName};
use kafka_protocol::protocol::{Decodable, StrBytes};
use sluice::node::shard::SHARD_QUEUE_DEPTH;
use sluice::protocol::batch::validate_records;
use sluice::protocol::frame;
use sluice::runtime::queue;
use sluice::storage::commit::GroupCommit;
use sluice::storage::index::{OffsetEntry, OffsetIndex};
use sluice::storage::log::{self};

fn decode(c: &mut Criterion) {
    let frame_bytes = common::produce_frame(common::keyed_batch(16, 1000));
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Bytes(frame_bytes.len() as u64));
    group.bench_function("produce_v9_header_and_body_16KiB", |b| {
        b.iter(|| {
            let mut body = frame_bytes.clone();
            let prefix = frame::peek_header(&body).unwrap();
            frame::decode_header(ApiKey::Produce, prefix.api_version, &mut body).unwrap();
            let request = ProduceRequest::decode(&mut body, 9).unwrap();
            let records = request.topic_data[0].partition_data[0]
                .records
                .as_ref()
                .unwrap();
            validate_records(records, usize::MAX).unwrap()
        })
    });
    group.finish();
}

fn index_lookup(c: &mut Criterion) {
    let mut index = OffsetIndex::default();
    for i in 0..100_000u32 {
        index.push(OffsetEntry {
            relative_offset: i * 16,
            position: i * 4096,
        });
    }
    let mut group = c.benchmark_group("offset_index");
    group.throughput(Throughput::Elements(1024));
    group.bench_function("lookup_100k_entries_x1024", |b| {
        b.iter(|| {
            let mut sum = 0u64;
            for probe in 0..1024u32 {
                sum += u64::from(
                    index
                        .lookup(probe.wrapping_mul(1_562_501) % 1_600_000)
                        .position,
                );
            }
            sum
        })
    });
    group.finish();
}

/// A partition log in a fresh directory under `parent`, with syncs off.
fn bench_log(parent: &std::path::Path) -> (tempfile::TempDir, log::LogRef) {
    bench_log_flushing(parent, i64::MAX)
}

/// A partition log that syncs every `flush_messages` messages (1: every
/// acknowledged append is durable, the default).
fn bench_log_flushing(
    parent: &std::path::Path,
    flush_messages: i64,
) -> (tempfile::TempDir, log::LogRef) {
    let dir = tempfile::tempdir_in(parent).unwrap();
    let log = common::open_log(dir.path(), flush_messages, 256 << 20);
    (dir, log)
}

fn append(c: &mut Criterion) {
    let runtime = compio::runtime::Runtime::new().unwrap();
    let commit = Rc::new(GroupCommit::default());
    let records = common::keyed_batch(16, 1000);
    let validated = validate_records(&records, usize::MAX).unwrap();
    let mut group = c.benchmark_group("append");
    // Every iteration really writes 16 KiB: keep the run short so the temp dir stays small.
    group
        .sample_size(10)
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    group.throughput(Throughput::Bytes(records.len() as u64));
    let shm = std::path::Path::new("/dev/shm");
    let disk = std::env::temp_dir();
    let targets = [
        ("memory_tmpfs", shm.is_dir().then_some(shm)),
        ("file_data_disk", Some(disk.as_path())),
    ];
    for (name, parent) in targets {
        let Some(parent) = parent else {
            eprintln!("append/{name}: skipped, no such directory");
            continue;
        };
        let (_dir, log) = bench_log(parent);
        group.bench_function(format!("io_uring_16KiB_batch_no_sync/{name}"), |b| {
            b.iter(|| {
                runtime
                    .block_on(log::append(
                        &log,
                        &commit,
                        records.clone(),
                        &validated,
                        true,
                    ))
                    .unwrap()
            })
        });
    }
    group.finish();
}

fn fetch_response(c: &mut Criterion) {
    let records = common::keyed_batch(16, 1000);
    let partitions: Vec<PartitionData> = (0..16)
        .map(|p| {
            PartitionData::default()
                .with_partition_index(p)
                .with_high_watermark(1000)
                .with_records(Some(records.clone()))
        })
        .collect();
    let response = FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
        .with_topic(TopicName(StrBytes::from_static_str("orders")))
        .with_partitions(partitions)]);
    let mut group = c.benchmark_group("fetch_response");
    group.throughput(Throughput::Bytes(16 * records.len() as u64));
    group.bench_function("encode_v12_16_partitions_16KiB_each", |b| {
        b.iter_batched(
            || response.clone(),
            |response| frame::encode_response(ApiKey::Fetch, 12, 1, &response).unwrap(),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

/// Durable appends (acks=all, `flush.messages=1`): one at a time, each paying
/// its own fdatasync, against 64 in flight over 4 partitions of one shard,
/// where group commit covers many appends with one sync round.
fn durable_append(c: &mut Criterion) {
    let runtime = compio::runtime::Runtime::new().unwrap();
    let commit = Rc::new(GroupCommit::default());
    let records = common::keyed_batch(1, 1000);
    let validated = validate_records(&records, usize::MAX).unwrap();
    let disk = std::env::temp_dir();
    let logs: Vec<_> = (0..4).map(|_| bench_log_flushing(&disk, 1)).collect();
    let mut group = c.benchmark_group("durable_append");
    group
        .sample_size(10)
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(3));
    group.throughput(Throughput::Elements(1));
    group.bench_function("1KiB_one_at_a_time_own_fdatasync", |b| {
        b.iter(|| {
            runtime
                .block_on(log::append(
                    &logs[0].1,
                    &commit,
                    records.clone(),
                    &validated,
                    true,
                ))
                .unwrap()
        })
    });
    const IN_FLIGHT: usize = 64;
    group.throughput(Throughput::Elements(IN_FLIGHT as u64));
    group.bench_function("1KiB_64_in_flight_group_commit", |b| {
        b.iter(|| {
            runtime.block_on(futures_util::future::join_all((0..IN_FLIGHT).map(|i| {
                log::append(&logs[i % 4].1, &commit, records.clone(), &validated, true)
            })))
        })
    });
    group.finish();
    let stats = commit.stats();
    eprintln!(
        "durable_append: {} appends covered by {} sync rounds ({:.1} per round)",
        stats.appends_covered,
        stats.rounds,
        stats.appends_covered as f64 / stats.rounds.max(1) as f64
    );
}

fn cross_shard(c: &mut Criterion) {
    // The other shard: a thread with its own runtime serving a queue, exactly as
    // a broker shard serves its own (the context here is a plain counter).
    let (sender, receiver) = queue::bounded::<Cell<u64>>(SHARD_QUEUE_DEPTH);
    let server = std::thread::spawn(move || {
        compio::runtime::Runtime::new()
            .unwrap()
            .block_on(queue::serve(Rc::new(Cell::new(0)), receiver))
    });
    let runtime = compio::runtime::Runtime::new().unwrap();
    let mut group = c.benchmark_group("cross_shard");
    group.throughput(Throughput::Elements(1));
    group.bench_function("round_trip_one_at_a_time", |b| {
        b.iter(|| {
            runtime
                .block_on(queue::call(&sender, |count: Rc<Cell<u64>>| async move {
                    count.set(count.get() + 1);
                    count.get()
                }))
                .unwrap()
        })
    });
    const IN_FLIGHT: u64 = 64;
    group.throughput(Throughput::Elements(IN_FLIGHT));
    group.bench_function("round_trips_64_in_flight", |b| {
        b.iter(|| {
            runtime.block_on(futures_util::future::join_all((0..IN_FLIGHT).map(|i| {
                queue::call(&sender, move |count: Rc<Cell<u64>>| async move {
                    count.set(count.get() + 1);
                    i
                })
            })))
        })
    });
    group.finish();
    drop(sender);
    server.join().unwrap();
}

criterion_group!(
    benches,
    decode,
    index_lookup,
    append,
    durable_append,
    fetch_response,
    cross_shard
);
criterion_main!(benches);
