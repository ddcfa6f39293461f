//! Start-up of a partition with one large active segment, side by side:
//! - unclean (no clean-shutdown marker, e.g. after a crash): every batch is
//!   read back and its length, magic and CRC32C checked, the indexes and
//!   producer state rebuilt;
//! - clean (the marker a clean shutdown writes): the marker, the index files
//!   and the tail after the last index entry are read and checked, the scan is
//!   skipped (`storage::clean_shutdown`).
//!
//! Throughput is in bytes of log brought online.
//!
//! Run: `cargo bench --bench recovery` (builds a 1 GiB segment in a temp dir
//! once; `SLUICE_RECOVERY_MIB` changes the size). The file is in the page
//! cache after it is written, so this measures the scan's CPU cost, which is
//! what a restart after a process crash pays; a cold cache adds the disk's
//! read time on top.

mod common;

use std::fs::OpenOptions;
use std::io::Write;
use std::sync::Arc;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use sluice::protocol::batch::set_base_offset;
use sluice::storage::clean_shutdown::{CleanShutdown, MARKER_FILE};
use sluice::storage::config::LogConfig;
use sluice::storage::log::PartitionLog;
use sluice::storage::segment::{segment_file_name, Segment};
use sluice::storage::shared::PartitionShared;

/// Writes a segment of about `mib` MiB of valid batches with consecutive offsets.
fn build_segment(dir: &std::path::Path, mib: usize) -> u64 {
    let template = common::keyed_batch(16, 1000);
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(dir.join(segment_file_name(0, "log")))
        .unwrap();
    let target = (mib as u64) << 20;
    let mut written = 0u64;
    let mut offset = 0i64;
    let mut chunk = BytesMut::with_capacity(8 << 20);
    while written < target {
        let mut batch = BytesMut::from(&template[..]);
        // The CRC does not cover the base offset, so patching it keeps the batch valid.
        set_base_offset(&mut batch, offset);
        offset += 16;
        chunk.extend_from_slice(&batch);
        written += batch.len() as u64;
        if chunk.len() >= 8 << 20 {
            file.write_all(&chunk).unwrap();
            chunk.clear();
        }
    }
    file.write_all(&chunk).unwrap();
    file.sync_all().unwrap();
    written
}

fn recovery(c: &mut Criterion) {
    // `cargo test` runs benches once without `--bench`: keep that quick.
    let full_run = std::env::args().any(|a| a == "--bench");
    let default_mib = if full_run { 1024 } else { 8 };
    let mib: usize = std::env::var("SLUICE_RECOVERY_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_mib);
    let dir = tempfile::tempdir().unwrap();
    let bytes = build_segment(dir.path(), mib);
    let runtime = compio::runtime::Runtime::new().unwrap();
    let open = || {
        runtime.block_on(async {
            let log = PartitionLog::open(
                Arc::from("bench"),
                0,
                dir.path().to_path_buf(),
                LogConfig::default(),
                Arc::new(PartitionShared::default()),
            )
            .expect("recovers");
            assert!(log.log_end_offset() > 0);
            log
        })
    };
    // A clean shutdown writes the index files and the marker; keep the marker
    // to put back before each clean open (an open deletes it).
    open().close().expect("clean close");
    let marker_path = dir.path().join(MARKER_FILE);
    let marker = std::fs::read(&marker_path).expect("a clean close writes the marker");
    assert_trusted(dir.path(), &marker);
    std::fs::remove_file(&marker_path).unwrap();

    let mut group = c.benchmark_group("recovery");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(bytes));
    group.bench_function(format!("unclean_active_segment_{mib}MiB"), |b| {
        b.iter(&open)
    });
    group.bench_function(format!("clean_active_segment_{mib}MiB"), |b| {
        b.iter_batched(
            || std::fs::write(&marker_path, &marker).unwrap(),
            |()| open(),
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

/// The clean open must not silently fall back to the scan: check up front
/// that the marker is trusted for these files, as `PartitionLog::open` checks it.
fn assert_trusted(dir: &std::path::Path, marker: &[u8]) {
    let marker = CleanShutdown::decode(marker).expect("marker decodes");
    assert_eq!(marker.segments.len(), 1);
    let summary = &marker.segments[0];
    let path = dir.join(segment_file_name(summary.base_offset, "log"));
    Segment::open_clean(&path, summary, true, 0).expect("the marker agrees with the files");
}

criterion_group!(benches, recovery);
criterion_main!(benches);
