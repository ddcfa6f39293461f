//! Record-batch validation (the CRC32C and framing checks every Produce pays),
//! in bytes per second, for uncompressed batches of small and 1 KiB records.
//!
//! Run: `cargo bench --bench batch_validation`. Under `cargo test` each case runs once.

mod common;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sluice::protocol::batch::validate_records;

fn validation(c: &mut Criterion) {
    let mut group = c.benchmark_group("validate_records");
    for (records, value_bytes) in [(100usize, 100usize), (16, 1024), (1000, 1024)] {
        let batch = common::keyed_batch(records as i64, value_bytes);
        group.throughput(Throughput::Bytes(batch.len() as u64));
        group.bench_with_input(
            BenchmarkId::from_parameter(format!("{records}x{value_bytes}B")),
            &batch,
            |b, batch| b.iter(|| validate_records(batch, usize::MAX).expect("valid")),
        );
    }
    group.finish();
}

criterion_group!(benches, validation);
criterion_main!(benches);
