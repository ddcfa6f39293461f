//! Record-batch validation (the CRC32C and framing checks every Produce pays),
//! in bytes per second, for uncompressed batches of small and 1 KiB records.
//!
//! Run: `cargo bench --bench batch_validation`. Under `cargo test` each case runs once.

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use sluice::protocol::batch::validate_records;

fn batch(records: usize, value_bytes: usize) -> Bytes {
    let records: Vec<Record> = (0..records as i64)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i,
            sequence: i as i32 - 1,
            timestamp: 1_700_000_000_000 + i,
            key: Some(Bytes::from(format!("key-{i}"))),
            value: Some(Bytes::from(vec![b'x'; value_bytes])),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut buf, records.iter(), &options).expect("encode");
    buf.freeze()
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
