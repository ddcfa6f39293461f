//! Record-batch validation (the CRC32C and framing checks every Produce pays),
//! in bytes per second, for uncompressed batches of small and 1 KiB records.
//!
//! Run: `cargo bench --bench batch_validation`. Under `cargo test` each case runs once.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kafka_protocol::records::Compression;
use sluice::protocol::batch::validate_records;
use sluice::protocol::encode;

fn batch(records: usize, value_bytes: usize) -> Bytes {
    let records: Vec<_> = (0..records as i64)
        .map(|i| {
            let key = Some(Bytes::from(format!("key-{i}")));
            encode::record(
                i,
                1_700_000_000_000 + i,
                key,
                Some(Bytes::from(vec![b'x'; value_bytes])),
                None,
            )
        })
        .collect();
    encode::encode_batch(&records, Compression::None)
}

fn validation(c: &mut Criterion) {
    let mut group = c.benchmark_group("validate_records");
    for (records, value_bytes) in [(100usize, 100usize), (16, 1024), (1000, 1024)] {
        let batch = batch(records, value_bytes);
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
