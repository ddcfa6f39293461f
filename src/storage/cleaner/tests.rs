//! The cleaner's tests: passes over real logs in temporary directories.

use super::*;
use crate::io::clock::now_ms;
use crate::storage::config::{CleanupPolicy, LogConfig};
use std::rc::Rc;

use crate::protocol::batch::{validate_records, BatchIter};
use crate::protocol::control::EndTxnMarker;
use crate::protocol::encode::{self, ProducerFields};
use crate::storage::commit::GroupCommit;
use crate::storage::log::{self, read, AppendError};
use kafka_protocol::records::{Compression, Record, RecordBatchDecoder};
use std::cell::Cell;
use std::collections::BTreeMap;

const MINUTE: i64 = 60_000;

fn run<F: std::future::Future>(f: F) -> F::Output {
    compio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(f)
}

fn compact_config(segment_bytes: u64) -> LogConfig {
    LogConfig {
        segment_bytes,
        cleanup_policy: CleanupPolicy {
            delete: false,
            compact: true,
        },
        delete_retention_ms: MINUTE,
        min_cleanable_dirty_ratio: 0.01,
        ..LogConfig::default()
    }
}

fn open(dir: &Path, config: LogConfig) -> LogRef {
    PartitionLog::open_private("t", 0, dir.to_path_buf(), config).expect("log opens")
}

fn record(index: i64, timestamp: i64, key: Option<&str>, value: Option<&str>) -> Record {
    encode::record(
        index,
        timestamp,
        key.map(|k| Bytes::from(k.to_string())),
        value.map(|v| Bytes::from(v.to_string())),
        None,
    )
}

async fn append(log: &LogRef, commit: &Rc<GroupCommit>, batch: Bytes) -> i64 {
    try_append(log, commit, batch).await.expect("append")
}

async fn try_append(
    log: &LogRef,
    commit: &Rc<GroupCommit>,
    batch: Bytes,
) -> Result<i64, AppendError> {
    let validated = validate_records(&batch, usize::MAX).expect("valid batch");
    log::append(log, commit, batch, &validated, true)
        .await
        .map(|o| o.base_offset)
}

/// One single-record batch: `key` = `value` (None: a tombstone).
async fn put(
    log: &LogRef,
    commit: &Rc<GroupCommit>,
    timestamp: i64,
    key: &str,
    value: Option<&str>,
) -> i64 {
    let batch = encode::encode_batch(&[record(0, timestamp, Some(key), value)], Compression::None);
    append(log, commit, batch).await
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    offset: i64,
    key: Option<String>,
    value: Option<String>,
    timestamp: i64,
}

/// Everything a consumer from the beginning sees, with the batch headers.
async fn read_all(log: &LogRef) -> (Vec<Seen>, Vec<BatchHeader>) {
    let mut offset = log.borrow().log_start_offset();
    let mut seen = Vec::new();
    let mut headers = Vec::new();
    loop {
        let outcome = read(log, offset, 1 << 20, true, None).await.expect("read");
        if outcome.records.is_empty() {
            break;
        }
        for item in BatchIter::new(&outcome.records.to_bytes().unwrap(), true) {
            let (header, range) = item.expect("valid batch");
            let mut bytes = outcome.records.to_bytes().unwrap().slice(range);
            let set = RecordBatchDecoder::decode(&mut bytes).expect("decodes");
            for r in set.records {
                seen.push(Seen {
                    offset: r.offset,
                    key: r.key.map(|k| String::from_utf8(k.to_vec()).unwrap()),
                    value: r.value.map(|v| String::from_utf8(v.to_vec()).unwrap()),
                    timestamp: r.timestamp,
                });
            }
            headers.push(header);
            offset = header.last_offset() + 1;
        }
    }
    (seen, headers)
}

fn active_base(log: &LogRef) -> i64 {
    log.borrow().segments.last().unwrap().base_offset
}

/// What compaction must leave of `before`: below `end`, the last record of
/// each key within `[0, end)`; tombstones too unless `tombstones_gone`.
fn expected(before: &[Seen], end: i64, tombstones_gone: bool) -> Vec<Seen> {
    let mut last: BTreeMap<Option<String>, i64> = BTreeMap::new();
    for r in before.iter().filter(|r| r.offset < end) {
        last.insert(r.key.clone(), r.offset);
    }
    before
        .iter()
        .filter(|r| {
            r.offset >= end
                || (last.get(&r.key) == Some(&r.offset) && !(tombstones_gone && r.value.is_none()))
        })
        .cloned()
        .collect()
}

fn strictly_increasing(seen: &[Seen]) -> bool {
    seen.windows(2).all(|w| w[0].offset < w[1].offset)
}

/// A transactional batch of `producer_id` with one record per (key, value).
async fn txn_put(
    log: &LogRef,
    commit: &Rc<GroupCommit>,
    producer_id: i64,
    sequence: i32,
    timestamp: i64,
    pairs: &[(&str, &str)],
) -> i64 {
    let records: Vec<Record> = pairs
        .iter()
        .enumerate()
        .map(|(i, (k, v))| {
            let mut r = encode::record(
                i as i64,
                timestamp,
                Some(Bytes::from(k.to_string())),
                Some(Bytes::from(v.to_string())),
                Some(ProducerFields {
                    producer_id,
                    producer_epoch: 0,
                    base_sequence: sequence,
                }),
            );
            r.transactional = true;
            r
        })
        .collect();
    append(
        log,
        commit,
        encode::encode_batch(&records, Compression::None),
    )
    .await
}

async fn end_txn(log: &LogRef, commit: &Rc<GroupCommit>, producer_id: i64, ok: bool) -> i64 {
    let marker = EndTxnMarker {
        commit: ok,
        coordinator_epoch: 0,
    };
    log::append_marker(log, commit, producer_id, 0, marker, true)
        .await
        .unwrap()
        .base_offset
}

/// Rewrites of other keys, enough to close the segments before them.
async fn filler(log: &LogRef, commit: &Rc<GroupCommit>, timestamp: i64) {
    for i in 0..120 {
        put(
            log,
            commit,
            timestamp + i,
            &format!("o{}", i % 4),
            Some("x"),
        )
        .await;
    }
}

/// Kafka's cleaner with transactions: an aborted transaction's records go
/// (and never displace a committed record of their key), a committed
/// transaction's records are compacted like any other, and a marker goes
/// once no batch of its transaction is left, as a tombstone does (clean
/// section, delete.retention.ms), with its aborted-index entry. A marker
/// after its producer's last data batch stays, and so does that batch,
/// emptied. The result survives a restart with and without the
/// clean-shutdown marker (the index rebuilt from the log).
#[test]
fn aborted_records_go_and_markers_follow_their_data() {
    let dir = tempfile::tempdir().unwrap();
    let now = now_ms();
    // Producer 10's emptied batch and its marker, for after the restarts.
    let (last_at, last_marker) = run(async {
        let commit = Rc::new(GroupCommit::default());
        let log = open(dir.path(), compact_config(1024));
        put(&log, &commit, now - 1000, "k", Some("committed")).await;
        // Producer 7: an aborted transaction over "k", then a
        // committed one over "k2" (its last data).
        let aborted_at = txn_put(&log, &commit, 7, 0, now - 999, &[("k", "aborted")]).await;
        let abort_marker = end_txn(&log, &commit, 7, false).await;
        // Producer 8: a committed "c" that a later write displaces,
        // then a committed "c8" (its last data).
        let c1_at = txn_put(&log, &commit, 8, 0, now - 998, &[("c", "v1")]).await;
        let c_marker = end_txn(&log, &commit, 8, true).await;
        put(&log, &commit, now - 997, "c", Some("v2")).await;
        txn_put(&log, &commit, 8, 1, now - 997, &[("c8", "x")]).await;
        let c8_marker = end_txn(&log, &commit, 8, true).await;
        txn_put(&log, &commit, 7, 1, now - 996, &[("k2", "kept")]).await;
        let k2_marker = end_txn(&log, &commit, 7, true).await;
        // Producer 10: one aborted transaction and nothing else.
        let last_at = txn_put(&log, &commit, 10, 0, now - 995, &[("z", "gone")]).await;
        let last_marker = end_txn(&log, &commit, 10, false).await;
        filler(&log, &commit, now - 900).await;
        assert_eq!(log.borrow().aborted_transactions(0, i64::MAX).len(), 2);

        let first = clean(&log, now, CleanerLimits::default())
            .await
            .unwrap()
            .expect("a pass ran");
        assert_eq!(first.markers_removed, 0, "data was still there: {first:?}");
        let (after, headers) = read_all(&log).await;
        let value_of = |key: &str| {
            after
                .iter()
                .filter(|r| r.key.as_deref() == Some(key))
                .map(|r| r.value.clone().unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            value_of("k"),
            ["committed"],
            "aborted record gone, not mapped"
        );
        assert_eq!(value_of("c"), ["v2"], "committed txn record compacted");
        assert_eq!(value_of("k2"), ["kept"]);
        assert!(value_of("z").is_empty());
        assert!(!after
            .iter()
            .any(|r| r.offset == aborted_at || r.offset == c1_at));
        // Producer 10's last batch stays, emptied, for its state.
        let emptied = headers.iter().find(|h| h.base_offset == last_at);
        assert_eq!(emptied.map(|h| h.record_count), Some(0), "{headers:?}");
        for marker in [abort_marker, c_marker, c8_marker, k2_marker, last_marker] {
            assert!(
                headers
                    .iter()
                    .any(|h| h.is_control() && h.base_offset == marker),
                "marker at {marker} kept while its data was in this pass"
            );
        }
        assert_eq!(log.borrow().aborted_transactions(0, i64::MAX).len(), 2);

        // Within delete.retention.ms of their segments' writes the
        // markers stay; a pass is due at that horizon.
        assert!(clean(&log, now, CleanerLimits::default())
            .await
            .unwrap()
            .is_none_or(|s| s.markers_removed == 0));
        let second = clean(&log, now + 2 * MINUTE, CleanerLimits::default())
            .await
            .unwrap()
            .expect("the markers' horizon makes a pass due");
        assert_eq!(second.markers_removed, 2, "{second:?}");
        let (again, headers) = read_all(&log).await;
        let markers: Vec<i64> = headers
            .iter()
            .filter(|h| h.is_control())
            .map(|h| h.base_offset)
            .collect();
        assert_eq!(markers, [c8_marker, k2_marker, last_marker], "{headers:?}");
        let without = |seen: &[Seen], gone: &[i64]| -> Vec<Seen> {
            seen.iter()
                .filter(|r| !gone.contains(&r.offset))
                .cloned()
                .collect()
        };
        assert_eq!(
            again,
            without(&after, &[abort_marker, c_marker]),
            "only the two markers went"
        );
        let left = log.borrow().aborted_transactions(0, i64::MAX);
        assert_eq!(
            left.iter()
                .map(|a| (a.producer_id, a.last_offset))
                .collect::<Vec<_>>(),
            [(10, last_marker)]
        );
        log.borrow_mut().close().unwrap();
        (last_at, last_marker)
    });
    // After a restart from the clean-shutdown marker, then from a scan.
    for scan in [false, true] {
        if scan {
            fs::remove_file(dir.path().join(crate::storage::clean_shutdown::MARKER_FILE)).unwrap();
        }
        run(async {
            let log = open(dir.path(), compact_config(1024));
            let aborted = log.borrow().aborted_transactions(0, i64::MAX);
            assert_eq!(
                aborted
                    .iter()
                    .map(|a| (a.producer_id, a.first_offset, a.last_offset))
                    .collect::<Vec<_>>(),
                [(10, last_at, last_marker)],
                "scan: {scan}"
            );
            assert!(log.borrow().open_transactions().is_empty(), "scan: {scan}");
            log.borrow_mut().close().unwrap();
        });
    }
}

/// The cleanable range ends at the last stable offset: an open
/// transaction stops the cleaner at its segment until it is decided.
#[test]
fn an_open_transaction_bounds_the_cleanable_range() {
    let dir = tempfile::tempdir().unwrap();
    let now = now_ms();
    run(async {
        let commit = Rc::new(GroupCommit::default());
        let log = open(dir.path(), compact_config(1024));
        filler(&log, &commit, now - 2000).await;
        let open_at = txn_put(&log, &commit, 9, 0, now - 1500, &[("t", "open")]).await;
        filler(&log, &commit, now - 1000).await;
        assert_eq!(log.borrow().last_stable_offset(), open_at);
        let stats = clean(&log, now, CleanerLimits::default())
            .await
            .unwrap()
            .expect("the range before the transaction is cleaned");
        assert!(stats.first_dirty <= open_at, "{stats:?} open at {open_at}");
        let (seen, _) = read_all(&log).await;
        let after_open = seen
            .iter()
            .filter(|r| r.offset > open_at && r.key.as_deref() == Some("o0"))
            .count();
        assert_eq!(
            after_open, 30,
            "nothing past the open transaction was cleaned"
        );
        assert!(seen.iter().any(|r| r.offset == open_at));

        end_txn(&log, &commit, 9, false).await;
        filler(&log, &commit, now - 500).await;
        let stats = clean(&log, now, CleanerLimits::default())
            .await
            .unwrap()
            .expect("a pass ran once the transaction ended");
        assert!(stats.first_dirty > open_at + 120, "{stats:?}");
        let (seen, _) = read_all(&log).await;
        assert!(!seen.iter().any(|r| r.key.as_deref() == Some("t")));
        let o0 = seen
            .iter()
            .filter(|r| r.key.as_deref() == Some("o0") && r.offset < stats.first_dirty)
            .count();
        assert_eq!(o0, 1, "compacted past the old bound");
    });
}

#[test]
fn keeps_the_latest_record_of_each_key_at_its_offset() {
    let dir = tempfile::tempdir().unwrap();
    let now = now_ms();
    let (after, end) = run(async {
        let commit = Rc::new(GroupCommit::default());
        let log = open(dir.path(), compact_config(1024));
        for i in 0..200 {
            let value = format!("value-{i}");
            put(
                &log,
                &commit,
                now - 1000 + i,
                &format!("k{}", i % 10),
                Some(&value),
            )
            .await;
        }
        let (before, _) = read_all(&log).await;
        assert_eq!(before.len(), 200);
        let segments = log.borrow().segment_count();
        let size = log.borrow().size_bytes();
        let end = active_base(&log);
        let stats = clean(&log, now, CleanerLimits::default())
            .await
            .unwrap()
            .expect("a pass ran");
        assert_eq!(stats.first_dirty, end);
        assert!(stats.segments_removed > 0, "{stats:?}");
        assert!(log.borrow().segment_count() < segments);
        assert!(log.borrow().size_bytes() < size / 2);
        assert_eq!(log.borrow().high_watermark(), 200, "the end never moves");
        assert_eq!(log.borrow().log_start_offset(), 0);
        let (after, _) = read_all(&log).await;
        assert_eq!(after, expected(&before, end, false));
        assert!(strictly_increasing(&after));
        assert!(after.len() < 200 && after[0].offset > 0, "offset gaps");
        // Nothing left to do.
        assert_eq!(
            clean(&log, now, CleanerLimits::default()).await.unwrap(),
            None
        );
        // Appends continue at the end.
        assert_eq!(put(&log, &commit, now, "k0", Some("again")).await, 200);
        log.borrow_mut().close().unwrap();
        (after, end)
    });
    // A restart reads the cleaned segments (trusted from the clean-shutdown
    // marker, see clean_shutdown.rs) and the checkpoint.
    run(async {
        let log = open(dir.path(), compact_config(1024));
        assert_eq!(log.borrow().log_end_offset(), 201);
        let (reopened, _) = read_all(&log).await;
        assert_eq!(&reopened[..after.len()], &after[..]);
        assert_eq!(log.borrow_mut().cleaner, CleanerState::default());
        assert_eq!(
            clean(&log, now, CleanerLimits::default()).await.unwrap(),
            None,
            "the checkpoint says it is clean"
        );
        assert_eq!(log.borrow().cleaner.first_dirty, end);
    });
    let names: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|n| !n.ends_with(CLEANED_SUFFIX)),
        "{names:?}"
    );
}

#[test]
fn compressed_batches_are_filtered_and_compressed_again() {
    for compression in [
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let now = now_ms();
        run(async {
            let commit = Rc::new(GroupCommit::default());
            let log = open(dir.path(), compact_config(1024));
            let mut n = 0;
            for _ in 0..60 {
                let records: Vec<Record> = (0..5)
                    .map(|i| {
                        let key = format!("k{}", n % 7);
                        let value = format!("value-{n}-{}", "x".repeat(40));
                        n += 1;
                        record(i, now - 5000 + n, Some(&key), Some(&value))
                    })
                    .collect();
                append(&log, &commit, encode::encode_batch(&records, compression)).await;
            }
            let (before, _) = read_all(&log).await;
            let end = active_base(&log);
            clean(&log, now, CleanerLimits::default())
                .await
                .unwrap()
                .expect("a pass ran");
            let (after, headers) = read_all(&log).await;
            assert_eq!(after, expected(&before, end, false), "{compression:?}");
            assert!(after.len() < before.len());
            for header in headers.iter().filter(|h| h.base_offset < end) {
                assert_eq!(header.compression(), compression as u8);
                assert_eq!(header.last_offset_delta, 4, "batch spans kept");
                assert!(header.record_count <= 5);
            }
            assert!(
                headers
                    .iter()
                    .any(|h| h.record_count > 1 && h.record_count < 5),
                "some batches kept part of their records"
            );
        });
    }
}

#[test]
fn tombstones_stay_for_delete_retention_then_go() {
    let dir = tempfile::tempdir().unwrap();
    let now = now_ms();
    run(async {
        let commit = Rc::new(GroupCommit::default());
        let log = open(dir.path(), compact_config(1024));
        for round in 0..10 {
            for k in 0..5 {
                let value = format!("v{round}-{}", "y".repeat(30));
                put(&log, &commit, now, &format!("k{k}"), Some(&value)).await;
            }
        }
        put(&log, &commit, now, "k1", None).await;
        put(&log, &commit, now, "k3", None).await;
        for i in 0..20 {
            put(&log, &commit, now, &format!("other{i}"), Some("z")).await;
        }
        let (before, _) = read_all(&log).await;
        let end = active_base(&log);
        assert!(end > 52, "the tombstones are in closed segments");
        clean(&log, now, CleanerLimits::default())
            .await
            .unwrap()
            .expect("a pass ran");
        let (after, _) = read_all(&log).await;
        assert_eq!(after, expected(&before, end, false));
        let tombstones = |seen: &[Seen]| seen.iter().filter(|r| r.value.is_none()).count();
        assert_eq!(tombstones(&after), 2, "kept within delete.retention.ms");
        assert!(!after
            .iter()
            .any(|r| r.key.as_deref() == Some("k1") && r.value.is_some()));
        // Later, but not yet past delete.retention.ms: nothing to do.
        assert_eq!(
            clean(&log, now + MINUTE / 2, CleanerLimits::default())
                .await
                .unwrap(),
            None
        );
        // Past it: a pass is due for the tombstones alone.
        let stats = clean(&log, now + 2 * MINUTE, CleanerLimits::default())
            .await
            .unwrap()
            .expect("the tombstones made a pass due");
        assert_eq!(stats.records_removed, 2);
        let (gone, _) = read_all(&log).await;
        assert_eq!(gone, expected(&before, end, true));
        assert_eq!(tombstones(&gone), 0);
        assert_eq!(
            clean(&log, now + 3 * MINUTE, CleanerLimits::default())
                .await
                .unwrap(),
            None,
            "no tombstone left to wait for"
        );
    });
}

#[test]
fn min_compaction_lag_and_dirty_ratio_are_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let t0: i64 = 1_000_000;
    run(async {
        let commit = Rc::new(GroupCommit::default());
        let config = LogConfig {
            min_compaction_lag_ms: 10_000,
            ..compact_config(1024)
        };
        let log = open(dir.path(), config);
        let mut t = t0;
        for i in 0..100 {
            put(
                &log,
                &commit,
                t,
                &format!("k{}", i % 20),
                Some("a-value-of-some-length"),
            )
            .await;
            t += 10;
        }
        // Every record is younger than the lag (newest at t0 + 990).
        assert_eq!(
            clean(&log, t0 + 5_000, CleanerLimits::default())
                .await
                .unwrap(),
            None
        );
        // Only segments whose newest record is 10 s old.
        let stats = clean(&log, t0 + 10_500, CleanerLimits::default())
            .await
            .unwrap()
            .expect("older segments are cleanable");
        assert!(stats.first_dirty > 0 && stats.first_dirty < active_base(&log));
        let stats = clean(&log, t0 + 60_000, CleanerLimits::default())
            .await
            .unwrap()
            .expect("the rest is");
        assert_eq!(stats.first_dirty, active_base(&log));
        // A little new dirty data: below the ratio.
        log.borrow_mut().set_config(LogConfig {
            min_cleanable_dirty_ratio: 0.5,
            ..compact_config(1024)
        });
        let clean_size = log.borrow().size_bytes();
        while log.borrow().size_bytes() < clean_size + 700 {
            put(&log, &commit, t, "k0", Some("a-value-of-some-length")).await;
            t += 10;
        }
        put(&log, &commit, t, "k0", Some("a-value-of-some-length")).await;
        assert_eq!(
            clean(&log, t + 60_000, CleanerLimits::default())
                .await
                .unwrap(),
            None,
            "dirty ratio below 0.5"
        );
        // Much more: above it.
        while log.borrow().size_bytes() < clean_size * 4 {
            put(&log, &commit, t, "k0", Some("a-value-of-some-length")).await;
            t += 10;
        }
        assert!(clean(&log, t + 60_000, CleanerLimits::default())
            .await
            .unwrap()
            .is_some());
    });
}

#[test]
fn a_full_offset_map_cleans_a_prefix_per_pass() {
    let dir = tempfile::tempdir().unwrap();
    let now = now_ms();
    run(async {
        let commit = Rc::new(GroupCommit::default());
        let log = open(dir.path(), compact_config(1024));
        for i in 0..300 {
            put(
                &log,
                &commit,
                now,
                &format!("k{}", (i * 7) % 23),
                Some(&format!("v{i}")),
            )
            .await;
        }
        let (before, _) = read_all(&log).await;
        let end = active_base(&log);
        let limits = CleanerLimits { max_keys: 5 };
        let mut passes = 0;
        while let Some(stats) = clean(&log, now, limits).await.unwrap() {
            passes += 1;
            assert!(passes < 200);
            let (now_seen, _) = read_all(&log).await;
            // Every pass keeps the latest value of every key.
            let latest = |seen: &[Seen]| {
                seen.iter()
                    .map(|r| (r.key.clone(), r.value.clone()))
                    .collect::<BTreeMap<_, _>>()
            };
            assert_eq!(latest(&now_seen), latest(&before));
            if stats.first_dirty == end {
                break;
            }
        }
        assert!(passes > 1, "the map limit split the work");
        let (after, _) = read_all(&log).await;
        assert_eq!(after, expected(&before, end, false));
    });
}

#[test]
fn idempotent_batches_keep_their_producer_fields() {
    let dir = tempfile::tempdir().unwrap();
    let now = now_ms();
    run(async {
        let commit = Rc::new(GroupCommit::default());
        let log = open(dir.path(), compact_config(1024));
        let producer = |sequence| {
            Some(ProducerFields {
                producer_id: 42,
                producer_epoch: 3,
                base_sequence: sequence,
            })
        };
        let mut sequence = 0;
        for b in 0..20 {
            let records: Vec<Record> = (0..3)
                .map(|i| {
                    encode::record(
                        i,
                        now,
                        Some(Bytes::from(format!("p{}", (b * 3 + i) % 4))),
                        Some(Bytes::from(format!("v{b}-{i}"))),
                        producer(sequence),
                    )
                })
                .collect();
            append(
                &log,
                &commit,
                encode::encode_batch(&records, Compression::None),
            )
            .await;
            sequence += 3;
        }
        // Another writer overwrites every key the producer wrote.
        for k in 0..4 {
            put(&log, &commit, now, &format!("p{k}"), Some("overwritten")).await;
        }
        for i in 0..30 {
            put(&log, &commit, now, &format!("filler{i}"), Some("f")).await;
        }
        let producer_end = 60;
        let (_, before) = read_all(&log).await;
        clean(&log, now, CleanerLimits::default())
            .await
            .unwrap()
            .expect("a pass ran");
        let (after, headers) = read_all(&log).await;
        assert!(after.iter().all(|r| r.offset >= producer_end));
        let producers: Vec<&BatchHeader> = headers.iter().filter(|h| h.producer_id == 42).collect();
        assert_eq!(producers.len(), 1, "only the producer's last batch stays");
        let last = producers[0];
        let original = before
            .iter()
            .find(|h| h.base_offset == last.base_offset)
            .unwrap();
        assert_eq!(last.record_count, 0, "emptied");
        assert_eq!(
            (
                last.producer_epoch,
                last.base_sequence,
                last.last_offset_delta
            ),
            (3, original.base_sequence, original.last_offset_delta)
        );
        log.borrow_mut().close().unwrap();
    });
    // The producer state comes back from the emptied batch: the next
    // sequence is accepted, a gap is not.
    run(async {
        let commit = Rc::new(GroupCommit::default());
        let log = open(dir.path(), compact_config(1024));
        let next = |sequence| {
            encode::encode_batch(
                &[encode::record(
                    0,
                    now,
                    Some(Bytes::from_static(b"p0")),
                    Some(Bytes::from_static(b"v")),
                    Some(ProducerFields {
                        producer_id: 42,
                        producer_epoch: 3,
                        base_sequence: sequence,
                    }),
                )],
                Compression::None,
            )
        };
        assert!(try_append(&log, &commit, next(61)).await.is_err());
        assert_eq!(try_append(&log, &commit, next(60)).await.unwrap(), 94);
    });
}

#[test]
fn appends_and_reads_go_on_while_a_pass_runs() {
    let dir = tempfile::tempdir().unwrap();
    let now = now_ms();
    run(async {
        let commit = Rc::new(GroupCommit::default());
        let log = open(dir.path(), compact_config(4096));
        for i in 0..3000 {
            put(
                &log,
                &commit,
                now,
                &format!("k{}", i % 50),
                Some(&"v".repeat(50)),
            )
            .await;
        }
        let done = Cell::new(false);
        let during = Cell::new(0);
        let cleaning = async {
            let stats = clean(&log, now, CleanerLimits::default()).await;
            done.set(true);
            stats
        };
        let traffic = async {
            let mut appended = 0;
            while !done.get() || appended < 20 {
                let offset = put(&log, &commit, now, "live", Some(&appended.to_string())).await;
                assert_eq!(offset, 3000 + appended);
                let outcome = read(&log, 0, 1 << 16, true, None).await.expect("read");
                assert!(!outcome.records.is_empty());
                let outcome = read(&log, offset, 1 << 16, true, None).await.expect("read");
                let header = BatchHeader::parse(&outcome.records.to_bytes().unwrap()).unwrap();
                assert_eq!(header.base_offset, offset);
                if !done.get() {
                    during.set(during.get() + 1);
                }
                appended += 1;
            }
            appended
        };
        let (stats, appended) = futures_util::future::join(cleaning, traffic).await;
        assert!(stats.unwrap().is_some());
        assert!(during.get() > 0, "traffic ran while the pass did");
        let (after, _) = read_all(&log).await;
        assert!(strictly_increasing(&after));
        let live: Vec<_> = after
            .iter()
            .filter(|r| r.key.as_deref() == Some("live"))
            .collect();
        assert_eq!(live.len() as i64, appended, "nothing appended was touched");
        assert_eq!(log.borrow().high_watermark(), 3000 + appended);
    });
}

/// KIP-354: below the dirty ratio nothing is cleaned, until the oldest
/// dirty segment is older than max.compaction.lag.ms.
#[test]
fn max_compaction_lag_cleans_below_the_dirty_ratio() {
    let dir = tempfile::tempdir().unwrap();
    run(async {
        let commit = Rc::new(GroupCommit::default());
        let config = LogConfig {
            min_cleanable_dirty_ratio: 1.0,
            max_compaction_lag_ms: 10 * MINUTE,
            ..compact_config(1024)
        };
        let log = open(dir.path(), config);
        let t = now_ms();
        for i in 0..40 {
            put(
                &log,
                &commit,
                t,
                &format!("k{}", i % 4),
                Some(&"v".repeat(40)),
            )
            .await;
        }
        // The first pass cleans everything once (nothing clean yet: ratio 1).
        clean(&log, t, CleanerLimits::default()).await.unwrap();
        for i in 0..30 {
            put(
                &log,
                &commit,
                t,
                &format!("k{}", i % 4),
                Some(&"w".repeat(40)),
            )
            .await;
        }
        assert!(
            clean(&log, t, CleanerLimits::default())
                .await
                .unwrap()
                .is_none(),
            "below the dirty ratio, within the lag: not cleaned"
        );
        let later = t + 11 * MINUTE;
        assert!(
            clean(&log, later, CleanerLimits::default())
                .await
                .unwrap()
                .is_some(),
            "past max.compaction.lag.ms: cleaned"
        );
    });
}

#[test]
fn keyless_records_that_got_in_are_dropped() {
    // A keyless record that got in (the topic was not compacted then) goes.
    let dir = tempfile::tempdir().unwrap();
    let now = now_ms();
    run(async {
        let commit = Rc::new(GroupCommit::default());
        let log = open(dir.path(), compact_config(1024));
        let batch = encode::encode_batch(&[record(0, now, None, Some("lost"))], Compression::None);
        append(&log, &commit, batch).await;
        for i in 0..30 {
            put(&log, &commit, now, &format!("k{i}"), Some(&"v".repeat(50))).await;
        }
        clean(&log, now, CleanerLimits::default())
            .await
            .unwrap()
            .expect("ran");
        let (after, _) = read_all(&log).await;
        assert!(after.iter().all(|r| r.key.is_some()));
        assert_eq!(after[0].offset, 1);
    });
}
