use super::*;
use crate::io::clock::now_ms;
use std::fs;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;

use crate::protocol::batch::BatchHeader;
use crate::protocol::batch::{validate_records, BatchIter};
use crate::protocol::control::EndTxnMarker;
use crate::protocol::encode::{self, ProducerFields};
use crate::protocol::errors::ErrorCode;
use crate::storage::commit::GroupCommit;
use crate::storage::config::LogConfig;
use crate::storage::producer_state::SequenceError;
use crate::storage::segment::{parse_segment_file_name, OpenError};
use crate::storage::shared::PartitionShared;
use crate::storage::txn_index::AbortedTxn;
use kafka_protocol::records::Compression;

/// One batch of `count` records with timestamps from `first_timestamp`, optionally
/// from an idempotent producer (id, epoch, base sequence).
fn batch(count: i64, first_timestamp: i64, producer: Option<(i64, i16, i32)>) -> Bytes {
    let producer = producer.map(
        |(producer_id, producer_epoch, base_sequence)| ProducerFields {
            producer_id,
            producer_epoch,
            base_sequence,
        },
    );
    let records: Vec<_> = (0..count)
        .map(|i| {
            let key = Some(Bytes::from(format!("key-{i}")));
            encode::record(
                i,
                first_timestamp + i,
                key,
                Some(Bytes::from(vec![b'v'; 40])),
                producer,
            )
        })
        .collect();
    encode::encode_batch(&records, Compression::None)
}

fn open(dir: &Path, segment_bytes: u64) -> LogRef {
    let config = LogConfig {
        segment_bytes,
        ..LogConfig::default()
    };
    PartitionLog::open_private("t", 0, dir.to_path_buf(), config).expect("log opens")
}

async fn append_one(
    log: &LogRef,
    commit: &Rc<GroupCommit>,
    records: Bytes,
) -> Result<AppendOutcome, AppendError> {
    let validated = validate_records(&records, usize::MAX).expect("valid batch");
    append(log, commit, records, &validated, true).await
}

fn run<F: std::future::Future>(f: F) -> F::Output {
    compio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(f)
}

#[test]
fn append_read_roll_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    run(async {
        let commit = Rc::new(GroupCommit::default());
        let log = open(dir.path(), 1024);
        for i in 0..100 {
            let outcome = append_one(&log, &commit, batch(3, 1000 + i * 10, None))
                .await
                .unwrap();
            assert_eq!(outcome.base_offset, i * 3);
        }
        assert_eq!(log.borrow().high_watermark(), 300);
        assert!(log.borrow().segment_count() > 5, "1 KiB segments rolled");
        assert!(commit.stats().rounds >= 1);
        // Every offset is readable and the first batch returned holds it.
        for offset in 0..300 {
            let read = read(&log, offset, 1 << 20, true, None).await.unwrap();
            let header = BatchHeader::parse(&read.records.to_bytes().unwrap()).unwrap();
            assert!(
                header.base_offset <= offset && offset <= header.last_offset(),
                "offset {offset}"
            );
            let mut expected = header.base_offset;
            for item in BatchIter::new(&read.records.to_bytes().unwrap(), true) {
                let (h, _) = item.unwrap();
                assert_eq!(h.base_offset, expected, "batches are contiguous");
                expected = h.last_offset() + 1;
            }
        }
        assert!(read(&log, 300, 1024, true, None)
            .await
            .unwrap()
            .records
            .is_empty());
        assert!(matches!(
            read(&log, 301, 1024, true, None).await,
            Err(ReadError::OffsetOutOfRange { .. })
        ));
        log.borrow_mut().close().unwrap();
    });
    // Reopen: same end, same data.
    run(async {
        let log = open(dir.path(), 1024);
        assert_eq!(log.borrow().log_end_offset(), 300);
        let read = read(&log, 150, 1 << 20, true, None).await.unwrap();
        let header = BatchHeader::parse(&read.records.to_bytes().unwrap()).unwrap();
        assert_eq!(header.base_offset, 150);
    });
}

#[test]
fn max_bytes_is_honoured_but_the_first_batch_always_comes_whole() {
    let dir = tempfile::tempdir().unwrap();
    run(async {
        let commit = Rc::new(GroupCommit::default());
        let log = open(dir.path(), 1 << 20);
        for i in 0..10 {
            append_one(&log, &commit, batch(5, i * 100, None))
                .await
                .unwrap();
        }
        let one = BatchHeader::parse(
            &read(&log, 0, 1 << 20, true, None)
                .await
                .unwrap()
                .records
                .to_bytes()
                .unwrap(),
        )
        .unwrap()
        .total_len();
        let two = read(&log, 0, 2 * one + 1, true, None).await.unwrap();
        assert_eq!(two.records.len(), 2 * one);
        let tiny = read(&log, 0, 10, true, None).await.unwrap();
        assert_eq!(tiny.records.len(), one, "KIP-74: first batch whole");
        let none = read(&log, 0, 10, false, None).await.unwrap();
        assert!(none.records.is_empty());
    });
}

#[test]
fn torn_tail_is_truncated_and_mid_log_corruption_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let segment_path = dir
        .path()
        .join(crate::storage::segment::segment_file_name(0, "log"));
    run(async {
        let commit = Rc::new(GroupCommit::default());
        let log = open(dir.path(), 1 << 20);
        for i in 0..4 {
            append_one(&log, &commit, batch(2, i, None)).await.unwrap();
        }
    });
    let good_len = fs::metadata(&segment_path).unwrap().len();
    // A torn write: half a batch at the tail.
    let extra = batch(2, 99, None);
    let mut bytes = fs::read(&segment_path).unwrap();
    bytes.extend_from_slice(&extra[..extra.len() / 2]);
    fs::write(&segment_path, &bytes).unwrap();
    run(async {
        let log = open(dir.path(), 1 << 20);
        assert_eq!(log.borrow().log_end_offset(), 8);
    });
    assert_eq!(
        fs::metadata(&segment_path).unwrap().len(),
        good_len,
        "torn tail truncated"
    );
    // A flipped byte inside the second batch, with valid batches after it.
    let mut bytes = fs::read(&segment_path).unwrap();
    let first_len = BatchHeader::parse(&bytes).unwrap().total_len();
    bytes[first_len + 70] ^= 0xff;
    fs::write(&segment_path, &bytes).unwrap();
    let result = PartitionLog::open(
        Arc::from("t"),
        0,
        dir.path().to_path_buf(),
        LogConfig::default(),
        Arc::new(PartitionShared::default()),
    );
    match result {
        Err(OpenError::Corrupt { position, .. }) => assert_eq!(position, first_len as u64),
        Err(other) => panic!("expected corruption, got {other}"),
        Ok(_) => panic!("corruption in the middle of the log was not detected"),
    }
}

/// A power loss after a roll can keep the new segment's name but not the
/// old segment's last write. Recovery cuts the torn tail and, as Kafka's does,
/// removes the segments after it: the log ends where the torn one does, with
/// no hole in the offsets, and appends continue from there.
#[test]
fn a_torn_tail_before_the_last_segment_ends_the_log_there() {
    let dir = tempfile::tempdir().unwrap();
    run(async {
        let commit = Rc::new(GroupCommit::default());
        let log = open(dir.path(), 1024);
        for i in 0..40 {
            append_one(&log, &commit, batch(3, 1000 + i, None))
                .await
                .unwrap();
        }
        assert!(log.borrow().segment_count() >= 4, "1 KiB segments rolled");
    });
    let mut bases: Vec<i64> = fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| parse_segment_file_name(&e.unwrap().file_name().to_string_lossy()))
        .collect();
    bases.sort_unstable();
    // Tear the last batch of the second segment in half.
    let torn = dir
        .path()
        .join(crate::storage::segment::segment_file_name(bases[1], "log"));
    let bytes = fs::read(&torn).unwrap();
    let mut batches = Vec::new();
    let mut position = 0;
    while position < bytes.len() {
        let header = BatchHeader::parse(&bytes[position..]).unwrap();
        batches.push((position, header.base_offset));
        position += header.total_len();
    }
    let (last_position, last_base) = *batches.last().unwrap();
    assert!(last_base > bases[1], "the torn segment keeps a batch");
    fs::write(&torn, &bytes[..last_position + 30]).unwrap();

    run(async {
        let commit = Rc::new(GroupCommit::default());
        let log = open(dir.path(), 1024);
        assert_eq!(log.borrow().log_end_offset(), last_base);
        assert_eq!(
            log.borrow().segment_count(),
            2,
            "the later segments removed"
        );
        assert_eq!(fs::metadata(&torn).unwrap().len(), last_position as u64);
        for later in &bases[2..] {
            for extension in ["log", "index", "timeindex"] {
                let path = dir.path().join(crate::storage::segment::segment_file_name(
                    *later, extension,
                ));
                assert!(!path.exists(), "{} removed", path.display());
            }
        }
        // Every offset below the end reads back, contiguously.
        let mut expected = 0;
        while expected < last_base {
            let read = read(&log, expected, 1 << 20, true, None).await.unwrap();
            for item in BatchIter::new(&read.records.to_bytes().unwrap(), true) {
                let (header, _) = item.unwrap();
                assert_eq!(header.base_offset, expected, "no hole");
                expected = header.last_offset() + 1;
            }
        }
        assert_eq!(expected, last_base);
        let outcome = append_one(&log, &commit, batch(3, 5000, None))
            .await
            .unwrap();
        assert_eq!(
            outcome.base_offset, last_base,
            "appends continue at the cut"
        );
        log.borrow_mut().close().unwrap();
    });
    run(async {
        let log = open(dir.path(), 1024);
        assert_eq!(
            log.borrow().log_end_offset(),
            last_base + 3,
            "stable on reopen"
        );
    });
}

/// `count` records from transactional producer `producer_id`, sequences from
/// `base_sequence`.
fn txn_batch(producer_id: i64, base_sequence: i32, count: i64) -> Bytes {
    let producer = ProducerFields {
        producer_id,
        producer_epoch: 0,
        base_sequence,
    };
    let records: Vec<_> = (0..count)
        .map(|i| {
            let mut record = encode::record(
                i,
                1_000 + i,
                Some(Bytes::from(format!("k{i}"))),
                Some(Bytes::from_static(b"v")),
                Some(producer),
            );
            record.transactional = true;
            record
        })
        .collect();
    encode::encode_batch(&records, Compression::None)
}

fn end(commit: bool) -> EndTxnMarker {
    EndTxnMarker {
        commit,
        coordinator_epoch: 0,
    }
}

/// (base offset, producer id, is control) of every batch a read returned.
fn batches_of(read: &ReadOutcome) -> Vec<(i64, i64, bool)> {
    BatchIter::new(&read.records.to_bytes().unwrap(), true)
        .map(|item| {
            let (header, _) = item.unwrap();
            (header.base_offset, header.producer_id, header.is_control())
        })
        .collect()
}

async fn read_committed(log: &LogRef, offset: i64) -> ReadOutcome {
    read_isolated(
        log,
        offset,
        1 << 20,
        true,
        None,
        Isolation::ReadCommitted,
        i64::MAX,
    )
    .await
    .unwrap()
}

/// Two transactions interleaved with plain appends: the last stable offset
/// holds at the oldest open transaction; read_committed stops there and lists
/// the aborted transaction it returns; markers end transactions with Kafka's
/// checks; all of it survives a clean restart and a scanned one alike.
#[test]
fn transactions_move_the_last_stable_offset_and_read_committed_honours_it() {
    let dir = tempfile::tempdir().unwrap();
    run(async {
        let commit = Rc::new(GroupCommit::default());
        let log = open(dir.path(), 1 << 20);
        // Producer 1 opens at 0 (offsets 0-2), a plain batch at 3-4,
        // producer 2 opens at 5 (5-6).
        append_one(&log, &commit, txn_batch(1, 0, 3)).await.unwrap();
        append_one(&log, &commit, batch(2, 0, None)).await.unwrap();
        append_one(&log, &commit, txn_batch(2, 0, 2)).await.unwrap();
        assert_eq!(log.borrow().high_watermark(), 7);
        assert_eq!(log.borrow().last_stable_offset(), 0);
        let nothing = read_committed(&log, 0).await;
        assert!(nothing.records.is_empty());
        assert_eq!(nothing.aborted, Some(vec![]));
        assert_eq!(
            read(&log, 0, 1 << 20, true, None).await.unwrap().aborted,
            None
        );
        // Producer 1 may not write outside its transaction meanwhile.
        let plain = {
            let producer = Some((1, 0, 3));
            batch(1, 0, producer)
        };
        assert_eq!(
            append_one(&log, &commit, plain)
                .await
                .unwrap_err()
                .error_code(),
            ErrorCode::InvalidTxnState
        );
        // Producer 1 aborts at 7: stable up to producer 2's start.
        let outcome = append_marker(&log, &commit, 1, 0, end(false), true)
            .await
            .unwrap();
        assert_eq!(outcome.base_offset, 7);
        assert_eq!(log.borrow().last_stable_offset(), 5);
        let partial = read_committed(&log, 0).await;
        assert_eq!(batches_of(&partial), [(0, 1, false), (3, -1, false)]);
        let aborted_one = AbortedTxn {
            producer_id: 1,
            first_offset: 0,
            last_offset: 7,
            last_stable_offset: 5,
        };
        assert_eq!(partial.aborted, Some(vec![aborted_one]));
        // A marker from an older coordinator than producer 1's last one is
        // fenced; so is one of an older producer epoch.
        let stale = EndTxnMarker {
            commit: true,
            coordinator_epoch: -1,
        };
        assert_eq!(
            append_marker(&log, &commit, 1, 0, stale, true)
                .await
                .unwrap_err()
                .error_code(),
            ErrorCode::TransactionCoordinatorFenced
        );
        assert_eq!(
            append_marker(&log, &commit, 1, -1, end(true), true)
                .await
                .unwrap_err()
                .error_code(),
            ErrorCode::InvalidProducerEpoch
        );
        // Producer 2 commits at 8: everything is stable.
        append_marker(&log, &commit, 2, 0, end(true), true)
            .await
            .unwrap();
        assert_eq!(log.borrow().last_stable_offset(), 9);
        let all = read_committed(&log, 0).await;
        assert_eq!(
            batches_of(&all),
            [
                (0, 1, false),
                (3, -1, false),
                (5, 2, false),
                (7, 1, true),
                (8, 2, true)
            ]
        );
        assert_eq!(all.aborted, Some(vec![aborted_one]));
        // From past the abort marker, no aborted transaction overlaps.
        assert_eq!(read_committed(&log, 8).await.aborted, Some(vec![]));
        // Producer 3 opens at 9 and stays open across the restarts.
        append_one(&log, &commit, txn_batch(3, 0, 1)).await.unwrap();
        assert_eq!(log.borrow().last_stable_offset(), 9);
        log.borrow_mut().close().unwrap();
    });
    let txn_index = dir
        .path()
        .join(crate::storage::segment::segment_file_name(0, "txnindex"));
    assert_eq!(
        fs::metadata(&txn_index).unwrap().len(),
        34,
        "one aborted transaction"
    );
    for scanned in [false, true] {
        if scanned {
            // As after a crash: no clean-shutdown marker, so every batch is
            // scanned and the producer state and index are rebuilt.
            fs::remove_file(&txn_index).unwrap();
        }
        run(async {
            let log = open(dir.path(), 1 << 20);
            assert_eq!(log.borrow().high_watermark(), 10, "scanned: {scanned}");
            assert_eq!(log.borrow().last_stable_offset(), 9, "scanned: {scanned}");
            let all = read_committed(&log, 0).await;
            assert_eq!(batches_of(&all).len(), 5, "scanned: {scanned}");
            assert_eq!(
                all.aborted,
                Some(vec![AbortedTxn {
                    producer_id: 1,
                    first_offset: 0,
                    last_offset: 7,
                    last_stable_offset: 5,
                }]),
                "scanned: {scanned}"
            );
            if scanned {
                log.borrow_mut().close().unwrap();
            } else {
                // Leaves no marker: the next open scans.
                drop(log);
            }
        });
    }
}

#[test]
fn idempotent_duplicates_are_not_written_twice() {
    let dir = tempfile::tempdir().unwrap();
    run(async {
        let commit = Rc::new(GroupCommit::default());
        let log = open(dir.path(), 1 << 20);
        let first = append_one(&log, &commit, batch(3, 0, Some((42, 0, 0))))
            .await
            .unwrap();
        let second = append_one(&log, &commit, batch(2, 0, Some((42, 0, 3))))
            .await
            .unwrap();
        assert_eq!((first.base_offset, second.base_offset), (0, 3));
        let retry = append_one(&log, &commit, batch(3, 0, Some((42, 0, 0))))
            .await
            .unwrap();
        assert_eq!(retry.base_offset, 0, "duplicate acknowledged at its offset");
        assert_eq!(log.borrow().high_watermark(), 5, "and not written again");
        let gap = append_one(&log, &commit, batch(1, 0, Some((42, 0, 9)))).await;
        assert!(matches!(
            gap,
            Err(AppendError::Sequence(SequenceError::OutOfOrder))
        ));
        log.borrow_mut().close().unwrap();
    });
    // The producer state is rebuilt from the log after a restart.
    run(async {
        let commit = Rc::new(GroupCommit::default());
        let log = open(dir.path(), 1 << 20);
        assert_eq!(log.borrow().producer_count(), 1);
        let retry = append_one(&log, &commit, batch(2, 0, Some((42, 0, 3))))
            .await
            .unwrap();
        assert_eq!(retry.base_offset, 3);
        let next = append_one(&log, &commit, batch(1, 0, Some((42, 0, 5))))
            .await
            .unwrap();
        assert_eq!(next.base_offset, 5);
    });
}

#[test]
fn timestamps_and_delete_records() {
    let dir = tempfile::tempdir().unwrap();
    run(async {
        let commit = Rc::new(GroupCommit::default());
        let log = open(dir.path(), 1024);
        for i in 0..50 {
            append_one(&log, &commit, batch(2, 10_000 + i * 100, None))
                .await
                .unwrap();
        }
        // Record i of batch b has timestamp 10000 + 100 b + i.
        assert_eq!(
            offset_for_timestamp(&log, 10_000).await.unwrap(),
            Some((0, 10_000))
        );
        assert_eq!(
            offset_for_timestamp(&log, 10_001).await.unwrap(),
            Some((1, 10_001))
        );
        assert_eq!(
            offset_for_timestamp(&log, 12_050).await.unwrap(),
            Some((42, 12_100))
        );
        assert_eq!(offset_for_timestamp(&log, 99_999).await.unwrap(), None);
        assert_eq!(log.borrow().max_timestamp(), (14_901, 99));

        let segments_before = log.borrow().segment_count();
        assert_eq!(log.borrow_mut().delete_records_before(60), Ok(60));
        assert!(
            log.borrow().segment_count() < segments_before,
            "whole segments below 60 removed"
        );
        assert!(matches!(
            read(&log, 10, 1024, true, None).await,
            Err(ReadError::OffsetOutOfRange { .. })
        ));
        let read = read(&log, 60, 1 << 20, true, None).await.unwrap();
        assert_eq!(
            BatchHeader::parse(&read.records.to_bytes().unwrap())
                .unwrap()
                .base_offset,
            60
        );
        assert_eq!(
            log.borrow_mut().delete_records_before(1000),
            Err(ErrorCode::OffsetOutOfRange)
        );
    });
    run(async {
        let log = open(dir.path(), 1024);
        assert_eq!(
            log.borrow().log_start_offset(),
            60,
            "log start offset survives a restart"
        );
    });
}

#[test]
fn retention_by_size_and_by_time_removes_only_closed_segments() {
    let dir = tempfile::tempdir().unwrap();
    run(async {
        let commit = Rc::new(GroupCommit::default());
        let log = open(dir.path(), 1024);
        for i in 0..60 {
            append_one(&log, &commit, batch(2, 1_000 + i, None))
                .await
                .unwrap();
        }
        let segments = log.borrow().segment_count();
        // Retention off by default for size; time retention of 7 days keeps these
        // (timestamps are from 1970, so use a "now" close to them).
        assert_eq!(log.borrow_mut().apply_retention(2_000), 0);

        log.borrow_mut().set_config(LogConfig {
            segment_bytes: 1024,
            retention_bytes: 3000,
            ..LogConfig::default()
        });
        let removed = log.borrow_mut().apply_retention(2_000);
        assert!(removed > 0 && removed < segments);
        let size = log.borrow().size_bytes();
        assert!((3000..3000 + 1024).contains(&size), "kept {size} bytes");
        let start = log.borrow().log_start_offset();
        assert!(start > 0);
        assert!(matches!(
            read(&log, start - 1, 1024, true, None).await,
            Err(ReadError::OffsetOutOfRange { .. })
        ));
        assert_eq!(
            BatchHeader::parse(
                &read(&log, start, 1 << 20, true, None)
                    .await
                    .unwrap()
                    .records
                    .to_bytes()
                    .unwrap()
            )
            .unwrap()
            .base_offset,
            start
        );

        log.borrow_mut().set_config(LogConfig {
            segment_bytes: 1024,
            retention_ms: 60_000,
            ..LogConfig::default()
        });
        log.borrow_mut().apply_retention(1_000_000_000);
        assert_eq!(
            log.borrow().segment_count(),
            1,
            "only the active segment stays"
        );
        assert_eq!(
            log.borrow().high_watermark(),
            120,
            "retention never moves the end"
        );

        let compact = crate::storage::config::CleanupPolicy {
            delete: false,
            compact: true,
        };
        log.borrow_mut().set_config(LogConfig {
            cleanup_policy: compact,
            retention_ms: 0,
            ..LogConfig::default()
        });
        assert_eq!(
            log.borrow_mut().apply_retention(i64::MAX),
            0,
            "compact-only topics are not deleted by retention"
        );
    });
}

#[test]
fn looser_flush_policies_defer_syncs() {
    let dir = tempfile::tempdir().unwrap();
    run(async {
        let commit = Rc::new(GroupCommit::default());
        let log = open(dir.path(), 1 << 20);
        log.borrow_mut().set_config(LogConfig {
            flush_messages: 10,
            flush_ms: 1_000,
            ..LogConfig::default()
        });
        for i in 0..4 {
            append_one(&log, &commit, batch(2, i, None)).await.unwrap();
        }
        assert_eq!(
            commit.stats().rounds,
            0,
            "8 messages < flush.messages=10: no sync yet"
        );
        let now = now_ms();
        assert!(
            log.borrow_mut().take_periodic_flush(now).is_none(),
            "flush.ms not reached"
        );
        assert!(
            log.borrow_mut().take_periodic_flush(now + 1_000).is_some(),
            "flush.ms reached"
        );
        assert!(
            log.borrow_mut().take_periodic_flush(now + 5_000).is_none(),
            "nothing new to flush"
        );
        for i in 0..5 {
            append_one(&log, &commit, batch(2, i, None)).await.unwrap();
        }
        assert_eq!(
            commit.stats().rounds,
            1,
            "the 10th message triggered a sync"
        );
    });
}

/// A rolled segment's name is durable only once its directory is synced, and
/// the segment rolled away from may hold unsynced appends: the first
/// acknowledged append after a roll waits for a round that syncs both, with
/// its own file; later appends sync their file alone.
#[test]
fn the_first_appends_after_a_roll_wait_for_a_directory_sync() {
    let dir = tempfile::tempdir().unwrap();
    run(async {
        let commit = Rc::new(GroupCommit::default());
        // One batch (~1 KiB) per segment: every append after the first rolls.
        let log = open(dir.path(), 1024);
        append_one(&log, &commit, batch(3, 1000, None))
            .await
            .unwrap();
        assert!(log.borrow().pending_sync.is_empty(), "no roll yet");
        let before = commit.stats();
        let big = batch(20, 2000, None);
        assert!(big.len() > 1024 / 2);
        append_one(&log, &commit, big.clone()).await.unwrap();
        assert_eq!(log.borrow().segment_count(), 2, "rolled");
        let after = commit.stats();
        assert_eq!(
            after.files_synced - before.files_synced,
            3,
            "the new segment, the one rolled away from, and their directory"
        );
        assert!(
            log.borrow().pending_sync.is_empty(),
            "the round cleared what it synced"
        );
        // The same segment again (no roll): the file alone.
        let dir2 = tempfile::tempdir().unwrap();
        let log2 = open(dir2.path(), 1 << 20);
        let commit2 = Rc::new(GroupCommit::default());
        append_one(&log2, &commit2, batch(3, 1000, None))
            .await
            .unwrap();
        append_one(&log2, &commit2, batch(3, 1000, None))
            .await
            .unwrap();
        assert_eq!(
            commit2.stats().files_synced,
            2,
            "one file per append, no directory"
        );
    });
}

/// (base offset, last offset) of every batch from `offset` to the log end.
async fn batch_bounds(log: &LogRef, offset: i64) -> Vec<(i64, i64)> {
    let read = read(log, offset, usize::MAX >> 1, true, None)
        .await
        .unwrap();
    BatchIter::new(&read.records.to_bytes().unwrap(), true)
        .map(|item| {
            let (header, _) = item.unwrap();
            (header.base_offset, header.last_offset())
        })
        .collect()
}

/// Truncation across segments: a straddled batch goes whole, later segments
/// go, the indexes describe what is left (every offset still reads), appends
/// continue at the new end, and a restart (clean or scanned) agrees.
#[test]
fn truncation_cuts_at_a_batch_boundary_and_appends_continue_there() {
    let dir = tempfile::tempdir().unwrap();
    run(async {
        let commit = Rc::new(GroupCommit::default());
        let log = open(dir.path(), 1024);
        for i in 0..100 {
            append_one(&log, &commit, batch(3, 1000 + i * 10, None))
                .await
                .unwrap();
        }
        let segments_before = log.borrow().segment_count();
        // 151 is inside the batch 150-152: the log ends at 150.
        assert_eq!(log.borrow_mut().truncate_to(151).unwrap(), 150);
        assert_eq!(log.borrow().log_end_offset(), 150);
        assert_eq!(log.borrow().high_watermark(), 150);
        assert!(log.borrow().segment_count() < segments_before);
        for offset in [0, 77, 147, 149] {
            let bounds = batch_bounds(&log, offset).await;
            assert_eq!(bounds.first().unwrap().0, offset - offset % 3, "{offset}");
            assert_eq!(bounds.last().unwrap(), &(147, 149));
        }
        assert!(read(&log, 150, 1 << 20, true, None)
            .await
            .unwrap()
            .records
            .is_empty());
        assert!(matches!(
            read(&log, 151, 1024, true, None).await,
            Err(ReadError::OffsetOutOfRange { .. })
        ));
        // At or past the end: nothing to do.
        assert_eq!(log.borrow_mut().truncate_to(150).unwrap(), 150);
        assert_eq!(log.borrow_mut().truncate_to(400).unwrap(), 150);
        let outcome = append_one(&log, &commit, batch(2, 5000, None))
            .await
            .unwrap();
        assert_eq!(outcome.base_offset, 150);
        // A cut exactly at a batch start keeps the batch before it.
        assert_eq!(log.borrow_mut().truncate_to(141).unwrap(), 141);
        assert_eq!(batch_bounds(&log, 138).await, [(138, 140)]);
        log.borrow_mut().close().unwrap();
    });
    let files_above_the_end = fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| parse_segment_file_name(&e.unwrap().file_name().to_string_lossy()))
        .filter(|&base| base >= 141)
        .count();
    assert_eq!(files_above_the_end, 0, "no segment file beyond the cut");
    for scanned in [false, true] {
        if scanned {
            let _ = fs::remove_file(dir.path().join(crate::storage::clean_shutdown::MARKER_FILE));
        }
        run(async {
            let log = open(dir.path(), 1024);
            assert_eq!(log.borrow().log_end_offset(), 141, "scanned: {scanned}");
            assert_eq!(batch_bounds(&log, 138).await, [(138, 140)]);
        });
    }
}

/// The producer state is what the kept batches say: a producer whose last
/// batch was cut may send that sequence again (it is no duplicate now), a
/// committed transaction whose marker was cut is open again, an aborted one
/// whose marker was cut is no longer listed as aborted.
#[test]
fn truncation_rebuilds_producer_and_transaction_state() {
    let dir = tempfile::tempdir().unwrap();
    run(async {
        let commit = Rc::new(GroupCommit::default());
        let log = open(dir.path(), 1 << 20);
        // Producer 9, idempotent: sequences 0-2 at 0-2 and 3-5 at 3-5.
        append_one(&log, &commit, batch(3, 0, Some((9, 0, 0))))
            .await
            .unwrap();
        append_one(&log, &commit, batch(3, 0, Some((9, 0, 3))))
            .await
            .unwrap();
        // Producer 1's transaction at 6-7, aborted at 8; producer 2's at 9-10,
        // committed at 11.
        append_one(&log, &commit, txn_batch(1, 0, 2)).await.unwrap();
        append_marker(&log, &commit, 1, 0, end(false), true)
            .await
            .unwrap();
        append_one(&log, &commit, txn_batch(2, 0, 2)).await.unwrap();
        append_marker(&log, &commit, 2, 0, end(true), true)
            .await
            .unwrap();
        assert_eq!(log.borrow().last_stable_offset(), 12);
        assert_eq!(read_committed(&log, 0).await.aborted.unwrap().len(), 1);

        // Cut producer 2's marker: its transaction is open again.
        assert_eq!(log.borrow_mut().truncate_to(11).unwrap(), 11);
        assert_eq!(log.borrow().last_stable_offset(), 9);
        assert!(log.borrow().has_open_transaction(2, 0));
        // Cut producer 1's marker too: nothing is aborted any more, both are open.
        assert_eq!(log.borrow_mut().truncate_to(8).unwrap(), 8);
        assert_eq!(log.borrow().last_stable_offset(), 6);
        assert!(log.borrow().has_open_transaction(1, 0));
        assert!(!log.borrow().has_open_transaction(2, 0));
        // Back to producer 9's first batch: sequence 3 is next again, and 6 is
        // out of order.
        assert_eq!(log.borrow_mut().truncate_to(3).unwrap(), 3);
        assert!(log.borrow().open_transactions().is_empty());
        assert_eq!(log.borrow().last_stable_offset(), 3);
        let gap = append_one(&log, &commit, batch(3, 0, Some((9, 0, 6)))).await;
        assert_eq!(
            gap.unwrap_err().error_code(),
            ErrorCode::OutOfOrderSequenceNumber
        );
        let again = append_one(&log, &commit, batch(3, 0, Some((9, 0, 3))))
            .await
            .unwrap();
        assert_eq!(again.base_offset, 3, "written again, not a duplicate");
    });
}

/// At or below the first offset the log empties and starts at the offset
/// asked for (a follower whose leader's log starts beyond its end), durably.
#[test]
fn truncation_below_the_log_start_empties_the_log_and_restarts_it_there() {
    let dir = tempfile::tempdir().unwrap();
    run(async {
        let commit = Rc::new(GroupCommit::default());
        let log = open(dir.path(), 1024);
        for i in 0..40 {
            append_one(&log, &commit, batch(2, 1000 + i, None))
                .await
                .unwrap();
        }
        assert_eq!(log.borrow_mut().delete_records_before(30), Ok(30));
        assert_eq!(log.borrow_mut().truncate_to(25).unwrap(), 25);
        assert_eq!(log.borrow().log_start_offset(), 25);
        assert_eq!(log.borrow().log_end_offset(), 25);
        assert_eq!(log.borrow().high_watermark(), 25);
        assert_eq!(log.borrow().segment_count(), 1);
        let outcome = append_one(&log, &commit, batch(2, 9000, None))
            .await
            .unwrap();
        assert_eq!(outcome.base_offset, 25);
        assert_eq!(batch_bounds(&log, 25).await, [(25, 26)]);
    });
    run(async {
        let log = open(dir.path(), 1024);
        assert_eq!(log.borrow().log_start_offset(), 25);
        assert_eq!(log.borrow().log_end_offset(), 27);
    });
}

/// The raw bytes of `log`'s records from offset 0, as a leader sends them.
async fn all_bytes(log: &LogRef) -> Bytes {
    let read = read(log, 0, 1 << 20, true, None).await.unwrap();
    Bytes::from(read.records.to_vec().unwrap())
}

/// A follower's log takes the leader's batches exactly (offsets, epochs,
/// bytes), ends where the leader's does, keeps the leader's epochs, and
/// refuses batches that overlap it or fail their CRC without writing
/// anything; a partial batch at the end is left for the next fetch. After
/// a reopen the epochs come back (from the checkpoint, or a scan).
#[test]
fn a_follower_log_takes_the_leaders_batches_as_they_are() {
    let leader_dir = tempfile::tempdir().unwrap();
    let follower_dir = tempfile::tempdir().unwrap();
    run(async {
        let commit = Rc::new(GroupCommit::default());
        let leader = open(leader_dir.path(), 1 << 20);
        leader.borrow_mut().set_stamp_epoch(Some(3));
        for i in 0..4 {
            append_one(&leader, &commit, batch(2, 1000 + i, None))
                .await
                .unwrap();
        }
        leader.borrow_mut().set_stamp_epoch(Some(5));
        leader.borrow_mut().begin_leader_epoch(5).unwrap();
        for i in 0..3 {
            append_one(&leader, &commit, batch(1, 2000 + i, None))
                .await
                .unwrap();
        }
        assert_eq!(leader.borrow().end_offset_for_epoch(3), (3, 8));
        assert_eq!(leader.borrow().end_offset_for_epoch(4), (3, 8));
        assert_eq!(leader.borrow().end_offset_for_epoch(5), (5, 11));
        let bytes = all_bytes(&leader).await;

        let follower = open(follower_dir.path(), 1 << 20);
        // A batch whose CRC fails: nothing is written.
        let mut corrupt = bytes.to_vec();
        let last = corrupt.len() - 1;
        corrupt[last] ^= 0xff;
        assert!(append_replica(&follower, &commit, Bytes::from(corrupt))
            .await
            .is_err());
        assert_eq!(follower.borrow().log_end_offset(), 0);
        // Everything but the last 10 bytes: the partial last batch waits.
        let cut = bytes.slice(..bytes.len() - 10);
        let end = append_replica(&follower, &commit, cut).await.unwrap();
        assert_eq!(end, 10);
        // Overlapping what it has: refused.
        assert!(append_replica(&follower, &commit, bytes.clone())
            .await
            .is_err());
        let header_len = {
            let mut rest = &bytes[..];
            let mut total = 0;
            while let Ok(h) = BatchHeader::parse(rest) {
                if h.base_offset == 10 {
                    break;
                }
                total += h.total_len();
                rest = &rest[h.total_len()..];
            }
            total
        };
        let end = append_replica(&follower, &commit, bytes.slice(header_len..))
            .await
            .unwrap();
        assert_eq!(end, 11);
        assert_eq!(all_bytes(&follower).await, bytes, "the same bytes");
        assert_eq!(follower.borrow().latest_epoch(), 5);
        assert_eq!(follower.borrow().end_offset_for_epoch(3), (3, 8));
        follower.borrow_mut().close().unwrap();
    });
    run(async {
        // Reopened (clean start: the checkpoint), and scanned (no marker).
        let follower = open(follower_dir.path(), 1 << 20);
        assert_eq!(follower.borrow().end_offset_for_epoch(3), (3, 8));
        drop(follower);
        let follower = open(follower_dir.path(), 1 << 20);
        assert_eq!(follower.borrow().end_offset_for_epoch(3), (3, 8));
        assert_eq!(follower.borrow().latest_epoch(), 5);
        // Cut inside epoch 5: its entry stays (it starts before the cut).
        assert_eq!(follower.borrow_mut().truncate_to(9).unwrap(), 9);
        assert_eq!(follower.borrow().end_offset_for_epoch(5), (5, 9));
        // Cut before epoch 5 began: it is forgotten.
        assert_eq!(follower.borrow_mut().truncate_to(6).unwrap(), 6);
        assert_eq!(follower.borrow().latest_epoch(), 3);
        assert_eq!(follower.borrow().end_offset_for_epoch(5), (-1, -1));
        // An epoch begun at the log end and never written in (the lead
        // taken at start-up from a stale image), then a cut at that end:
        // nothing is cut, but the empty epoch goes, durably. Found by the
        // fault suite: a follower kept naming it, and its leader kept
        // answering the same divergence.
        follower.borrow_mut().begin_leader_epoch(7).unwrap();
        assert_eq!(follower.borrow().latest_epoch(), 7);
        assert_eq!(follower.borrow_mut().truncate_to(6).unwrap(), 6);
        assert_eq!(follower.borrow().latest_epoch(), 3);
        follower.borrow_mut().close().unwrap();
    });
    run(async {
        let follower = open(follower_dir.path(), 1 << 20);
        assert_eq!(
            follower.borrow().latest_epoch(),
            3,
            "the cut epoch stays gone"
        );
    });
}

/// A follower whose log restarted inside the leader's first batch (the
/// leader's log start was moved into it by DeleteRecords) takes that batch
/// by restarting at its base, rather than refusing it as an overlap forever.
#[test]
fn a_follower_restarted_inside_a_batch_takes_it_whole() {
    let leader_dir = tempfile::tempdir().unwrap();
    let follower_dir = tempfile::tempdir().unwrap();
    run(async {
        let commit = Rc::new(GroupCommit::default());
        let leader = open(leader_dir.path(), 1 << 20);
        leader.borrow_mut().set_stamp_epoch(Some(1));
        append_one(&leader, &commit, batch(10, 1000, None))
            .await
            .unwrap();
        let bytes = all_bytes(&leader).await;
        let follower = open(follower_dir.path(), 1 << 20);
        follower.borrow_mut().restart_at(5).unwrap();
        assert_eq!(
            append_replica(&follower, &commit, bytes.clone())
                .await
                .unwrap(),
            10
        );
        assert_eq!(all_bytes(&follower).await, bytes);
        // Not when the log holds data: then an overlap is refused.
        assert!(append_replica(&follower, &commit, bytes).await.is_err());
    });
}
