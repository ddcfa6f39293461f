//! Fetch from a 1 GiB partition in the page cache over a loopback socket, the
//! two ways Sluice can send record data:
//! - `zero_copy`: the data stays in the segment files and is spliced to the
//!   socket (file → pipe → socket, io_uring operations);
//! - `copying`: the data is read into page-aligned buffers and written.
//!
//! Each iteration reads the whole partition the way a raw fetch client does:
//! one Fetch at a time (partition max bytes 64 KiB, 1 MiB — librdkafka's
//! default — or 16 MiB), the client thread reading each response whole and discarding it
//! before asking for the next. Both the broker side and the client run on this
//! machine's 2 cores. Throughput is in bytes of record data per second.
//!
//! Run: `cargo bench --bench fetch_paths` (builds the 1 GiB partition in a temp
//! dir once, 32 MiB under `cargo test`; `SLUICE_FETCH_MIB` changes the size, `SLUICE_FETCH_SIZES_KIB`
//! the list of fetch sizes, default `64,256,1024,16384`).

mod common;

use std::io::{Read, Write};
use std::rc::Rc;
use std::time::Duration;

use compio::io::AsyncReadExt;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sluice::io::send::{send_chain, Destination, PipePool};
use sluice::protocol::batch::validate_records;
use sluice::storage::commit::GroupCommit;
use sluice::storage::log::{self, LogRef};

const RECORDS_PER_BATCH: i64 = 16;

/// A partition of about `mib` MiB of 16 KiB batches; returns it with its batch length.
fn build_log(
    runtime: &compio::runtime::Runtime,
    dir: &std::path::Path,
    mib: usize,
) -> (LogRef, usize) {
    let log = common::open_log(dir, i64::MAX, 1 << 30);
    let commit = Rc::new(GroupCommit::default());
    let batch = common::keyed_batch(RECORDS_PER_BATCH, 1000);
    let validated = validate_records(&batch, usize::MAX).unwrap();
    let batches = (mib << 20) / batch.len();
    runtime.block_on(async {
        for _ in 0..batches {
            log::append(&log, &commit, batch.clone(), &validated, true)
                .await
                .unwrap();
        }
    });
    (log, batch.len())
}

/// The client: for each Fetch, reads one response frame whole, then asks for
/// the next (one byte stands for the request).
fn client(mut stream: std::net::TcpStream) {
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let mut len = [0u8; 4];
        if stream.read_exact(&mut len).is_err() {
            return;
        }
        let mut left = i32::from_be_bytes(len) as usize;
        while left > 0 {
            let want = left.min(buf.len());
            let n = stream.read(&mut buf[..want]).unwrap();
            assert!(n > 0, "server closed mid-frame");
            left -= n;
        }
        if stream.write_all(&[1]).is_err() {
            return;
        }
    }
}

/// Reads the whole partition as consecutive Fetches of `fetch_bytes`.
async fn fetch_all(
    log: &LogRef,
    stream: &compio::net::TcpStream,
    pipes: &PipePool,
    batch_len: usize,
    fetch_bytes: usize,
    zero_copy_min_bytes: Option<usize>,
) -> u64 {
    let end = log.borrow().high_watermark();
    let mut offset = 0i64;
    let mut sent = 0u64;
    let mut correlation_id = 0;
    while offset < end {
        let read = log::read(log, offset, fetch_bytes, true, zero_copy_min_bytes)
            .await
            .unwrap();
        let records_len = read.records.len();
        correlation_id += 1;
        let frame = common::fetch_frame(read, correlation_id);
        let progress = std::cell::Cell::new(std::time::Instant::now());
        let to = Destination {
            stream,
            pipes,
            progress: &progress,
        };
        send_chain(&to, frame).await.unwrap();
        let mut reader = stream;
        let compio::BufResult(ack, _) = reader.read_exact(vec![0u8; 1]).await;
        ack.unwrap();
        assert_eq!(records_len % batch_len, 0, "whole batches");
        offset += (records_len / batch_len) as i64 * RECORDS_PER_BATCH;
        sent += records_len as u64;
    }
    sent
}

fn fetch(c: &mut Criterion) {
    // `cargo bench` passes --bench; under `cargo test` each case runs once, on
    // a small partition so that the test run stays short.
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let mib: usize = std::env::var("SLUICE_FETCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if benchmarking { 1024 } else { 32 });
    let runtime = compio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    eprintln!("building a {mib} MiB partition...");
    let (log, batch_len) = build_log(&runtime, dir.path(), mib);
    let total = log.borrow().size_bytes();

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let client_thread = std::thread::spawn(move || {
        let stream = std::net::TcpStream::connect(addr).unwrap();
        stream.set_nodelay(true).unwrap();
        client(stream)
    });
    let (server, _) = listener.accept().unwrap();
    server.set_nodelay(true).unwrap();
    let stream = runtime.block_on(async { compio::net::TcpStream::from_std(server).unwrap() });
    let pipes = PipePool::default();

    let mut group = c.benchmark_group(format!("fetch_{mib}MiB_partition"));
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(15));
    group.throughput(Throughput::Bytes(total));
    let sizes: Vec<usize> = std::env::var("SLUICE_FETCH_SIZES_KIB")
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![64, 256, 1024, 16384]);
    for &fetch_kib in &sizes {
        for (name, mode) in [("zero_copy", Some(0)), ("copying", None)] {
            group.bench_function(format!("{name}/fetch_{fetch_kib}KiB"), |b| {
                b.iter(|| {
                    let sent = runtime.block_on(fetch_all(
                        &log,
                        &stream,
                        &pipes,
                        batch_len,
                        fetch_kib << 10,
                        mode,
                    ));
                    assert_eq!(sent, total, "the whole partition was sent");
                })
            });
        }
    }
    group.finish();
    drop(stream);
    client_thread.join().unwrap();
}

criterion_group!(benches, fetch);
criterion_main!(benches);
