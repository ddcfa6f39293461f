//! Heap allocations per request on the hot paths, and their time.
//!
//! A counting global allocator wraps the system one. For each path the bench
//! first counts the allocations (and bytes) of 1,000 requests and prints the
//! average per request, then lets criterion time the same code:
//! - Produce: request header + Produce v9 body decode, batch validation, the
//!   append into the partition log through io_uring (no sync), the response
//!   encoded;
//! - Fetch: the read of 1 MiB from the log as file slices (zero-copy) and the
//!   Fetch v12 response frame written around them.
//!
//! Each path also has an allocation budget, checked when the bench runs (and
//! under `cargo test`, which runs every bench once): a change that makes the
//! hot path allocate more fails here first.
//!
//! Run: `cargo bench --bench allocations`.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ApiKey, ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::Decodable;
use sluice::protocol::batch::validate_records;
use sluice::protocol::frame;
use sluice::storage::commit::GroupCommit;
use sluice::storage::log::{self, LogRef};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static ALLOCATED_BYTES: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; the
// counters are plain atomics with no effect on the memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        ALLOCATED_BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout (via `alloc`).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        ALLOCATED_BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        // SAFETY: the caller's contract for `realloc` is passed on as is.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Average (allocations, bytes) per call of `f` over `n` calls.
fn count(n: u64, mut f: impl FnMut()) -> (f64, f64) {
    f(); // warm-up: lazily created state is not a per-request cost
    let (a0, b0) = (
        ALLOCATIONS.load(Ordering::Relaxed),
        ALLOCATED_BYTES.load(Ordering::Relaxed),
    );
    for _ in 0..n {
        f();
    }
    let (a1, b1) = (
        ALLOCATIONS.load(Ordering::Relaxed),
        ALLOCATED_BYTES.load(Ordering::Relaxed),
    );
    ((a1 - a0) as f64 / n as f64, (b1 - b0) as f64 / n as f64)
}

fn report(path: &str, (allocations, bytes): (f64, f64), budget: f64) {
    eprintln!("allocations/{path}: {allocations:.1} allocations, {bytes:.0} bytes per request (budget {budget})");
    assert!(
        allocations <= budget,
        "{path}: {allocations:.1} allocations per request, over the budget of {budget}"
    );
}

/// One Produce request from its frame to its response frame.
async fn produce_once(log: &LogRef, commit: &Rc<GroupCommit>, frame_bytes: &Bytes) -> Bytes {
    let mut body = frame_bytes.clone();
    let prefix = frame::peek_header(&body).unwrap();
    frame::decode_header(ApiKey::Produce, prefix.api_version, &mut body).unwrap();
    let request = ProduceRequest::decode(&mut body, 9).unwrap();
    let topic = &request.topic_data[0];
    let partition = &topic.partition_data[0];
    let records = partition.records.clone().unwrap();
    let validated = validate_records(&records, usize::MAX).unwrap();
    let outcome = log::append(log, commit, records, &validated, true)
        .await
        .unwrap();
    let response = ProduceResponse::default().with_responses(vec![TopicProduceResponse::default()
        .with_name(topic.name.clone())
        .with_partition_responses(vec![PartitionProduceResponse::default()
            .with_index(partition.index)
            .with_base_offset(outcome.base_offset)
            .with_log_start_offset(outcome.log_start_offset)])]);
    frame::encode_response(ApiKey::Produce, 9, prefix.correlation_id, &response).unwrap()
}

/// One Fetch of 1 MiB from `offset`: the read and the response frame.
async fn fetch_once(log: &LogRef, offset: i64) -> usize {
    let read = log::read(log, offset, 1 << 20, true, Some(0))
        .await
        .unwrap();
    common::fetch_frame(read, 1).len()
}

fn allocations(c: &mut Criterion) {
    let runtime = compio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log = common::open_log(dir.path(), i64::MAX, 1 << 30);
    let commit = Rc::new(GroupCommit::default());
    let records = common::keyed_batch(16, 1000);
    let produce = common::produce_frame(records.clone());

    let counted = count(1000, || {
        runtime.block_on(produce_once(&log, &commit, &produce));
    });
    report("produce_16KiB_batch", counted, 40.0);
    let counted = count(1000, || {
        runtime.block_on(fetch_once(&log, 0));
    });
    report("fetch_1MiB_zero_copy", counted, 40.0);

    let mut group = c.benchmark_group("request_paths");
    group
        .sample_size(20)
        .measurement_time(std::time::Duration::from_secs(1));
    group.throughput(Throughput::Elements(1));
    group.bench_function("produce_16KiB_batch", |b| {
        b.iter(|| runtime.block_on(produce_once(&log, &commit, &produce)))
    });
    group.bench_function("fetch_1MiB_zero_copy", |b| {
        b.iter(|| runtime.block_on(fetch_once(&log, 0)))
    });
    group.finish();
}

criterion_group!(benches, allocations);
criterion_main!(benches);
