//! The storage engine under injected faults, through its I/O seam
//! (`io::disk::Disk::Faulty`): a crash at every sync point of appends, segment
//! rolls, retention, compaction and clean shutdown, each recovered from the
//! image of what was durable at that point; and failed writes and syncs
//! (EIO, ENOSPC).
//!
//! What each recovery is checked for (the anomalies, as Jepsen names them):
//! - **lost write**: a record acknowledged before the crash is not in the
//!   recovered log at its acknowledged offset (unless retention or compaction
//!   was allowed to remove it: below the recovered log start, or an older
//!   value of a key whose newer value is there);
//! - **torn or corrupt data**: the recovered log does not open, or a batch in
//!   it does not decode (lengths, CRC);
//! - **phantom record**: a record in the recovered log that was never written
//!   at that offset;
//! - **inconsistent offsets**: offsets not strictly increasing.
//!
//! `SLUICE_CRASH_POINTS_LONG=1` runs larger workloads (more crash points).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use kafka_protocol::records::{Compression, RecordBatchDecoder};
use sluice::io::disk::{Disk, Fault, FaultyDisk};
use sluice::protocol::batch::{validate_records, BatchIter};
use sluice::protocol::encode;
use sluice::storage::cleaner::{self, CleanerLimits};
use sluice::storage::commit::GroupCommit;
use sluice::storage::config::{CleanupPolicy, LogConfig};
use sluice::storage::log::{self, AppendError, LogRef, PartitionLog};

const EIO: i32 = 5;
const ENOSPC: i32 = 28;

fn long() -> bool {
    std::env::var("SLUICE_CRASH_POINTS_LONG").is_ok_and(|v| v == "1")
}

fn run<F: std::future::Future>(f: F) -> F::Output {
    compio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(f)
}

/// A one-record batch: key `key`, value `value`.
fn batch(key: &str, value: &str, timestamp: i64) -> Bytes {
    let record = encode::record(
        0,
        timestamp,
        Some(Bytes::from(key.to_string())),
        Some(Bytes::from(value.to_string())),
        None,
    );
    encode::encode_batch(&[record], Compression::None)
}

async fn append(
    log: &LogRef,
    commit: &Rc<GroupCommit>,
    key: &str,
    value: &str,
    timestamp: i64,
) -> Result<i64, AppendError> {
    let records = batch(key, value, timestamp);
    let validated = validate_records(&records, usize::MAX).expect("valid");
    log::append(log, commit, records, &validated, true)
        .await
        .map(|o| o.base_offset)
}

/// Every (offset, key, value) of `log` from its start, checking each batch
/// decodes; and the log start offset.
async fn read_all(log: &LogRef) -> Result<(i64, Vec<(i64, String, String)>), String> {
    let start = log.borrow().log_start_offset();
    let mut offset = start;
    let mut out = Vec::new();
    loop {
        let outcome = log::read(log, offset, 1 << 20, true, None)
            .await
            .map_err(|e| format!("read at {offset}: {e:?}"))?;
        if outcome.records.is_empty() {
            return Ok((start, out));
        }
        let bytes = outcome.records.to_bytes().map_err(|e| e.to_string())?;
        for item in BatchIter::new(&bytes, true) {
            let (header, range) = item.map_err(|e| format!("torn or corrupt batch: {e}"))?;
            let mut one = bytes.slice(range);
            let set = RecordBatchDecoder::decode(&mut one)
                .map_err(|e| format!("undecodable batch: {e}"))?;
            for r in set.records {
                let text =
                    |b: Option<Bytes>| String::from_utf8(b.unwrap_or_default().to_vec()).unwrap();
                out.push((r.offset, text(r.key), text(r.value)));
            }
            offset = header.last_offset() + 1;
        }
    }
}

/// (offset, key, value).
type Record = (i64, String, String);
/// Offset -> every (key, value) written there, acknowledged or not.
type Written = BTreeMap<i64, Vec<(String, String)>>;
/// (sync point, crash image, what was acknowledged by then).
type Image = (u64, PathBuf, Vec<Record>);

/// A workload's run on a watched disk: crash images taken at every sync
/// point, each with what had been acknowledged by then.
struct Harness {
    _temp: tempfile::TempDir,
    data: PathBuf,
    images_dir: PathBuf,
    disk: Arc<FaultyDisk>,
    /// (offset, key, value) acknowledged so far, in order.
    acked: Arc<Mutex<Vec<Record>>>,
    /// Every (offset, key, value) ever written with an acknowledgement or not
    /// (what a recovered log may hold).
    written: Arc<Mutex<Written>>,
    /// (sync point, image, acknowledged by then).
    images: Arc<Mutex<Vec<Image>>>,
}

impl Harness {
    fn new() -> Harness {
        let temp = tempfile::tempdir().unwrap();
        let data = temp.path().join("data");
        let images_dir = temp.path().join("images");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::create_dir_all(&images_dir).unwrap();
        let disk = FaultyDisk::new(&data).unwrap();
        let acked = Arc::new(Mutex::new(Vec::new()));
        let images = Arc::new(Mutex::new(Vec::new()));
        {
            let (acked, images, images_dir) = (acked.clone(), images.clone(), images_dir.clone());
            disk.on_sync(Box::new(move |n, disk| {
                let image = images_dir.join(format!("{n:05}"));
                disk.crash_image(&image).expect("crash image");
                let acked = acked.lock().unwrap().clone();
                images.lock().unwrap().push((n, image, acked));
            }));
        }
        Harness {
            _temp: temp,
            data,
            images_dir,
            disk,
            acked,
            written: Arc::new(Mutex::new(BTreeMap::new())),
            images,
        }
    }

    fn disk(&self) -> Disk {
        Disk::Faulty(self.disk.clone())
    }

    fn open(&self, config: LogConfig) -> LogRef {
        PartitionLog::open_private_on(&self.disk(), "t", 0, self.data.join("t-0"), config)
            .expect("log opens")
    }

    async fn append(&self, log: &LogRef, commit: &Rc<GroupCommit>, key: &str, value: &str) {
        let timestamp = 1_700_000_000_000;
        let offset = append(log, commit, key, value, timestamp)
            .await
            .expect("append");
        self.written
            .lock()
            .unwrap()
            .entry(offset)
            .or_default()
            .push((key.to_string(), value.to_string()));
        self.acked
            .lock()
            .unwrap()
            .push((offset, key.to_string(), value.to_string()));
    }

    /// Recovers every crash image, and the image of a crash after the
    /// workload, and checks each; returns the number of crash points.
    /// `compacted`: an acknowledged record may be missing if a newer
    /// acknowledged record of its key is there. `removed`: retention or
    /// DeleteRecords ran, so records below the recovered log start are gone
    /// by right.
    fn check_every_crash(&self, config: &LogConfig, compacted: bool, removed: bool) -> usize {
        let last = self.images_dir.join("after-the-workload");
        self.disk.crash_image(&last).expect("final crash image");
        let acked_at_end = self.acked.lock().unwrap().clone();
        self.images
            .lock()
            .unwrap()
            .push((u64::MAX, last, acked_at_end));
        let images = self.images.lock().unwrap().clone();
        let written = self.written.lock().unwrap().clone();
        assert!(!images.is_empty(), "no sync point was reached");
        // The empty start is a crash point too.
        for (n, image, acked) in &images {
            let what = format!("crash after sync point {n} ({})", image.display());
            let dir = image.join("t-0");
            if !dir.exists() {
                assert!(
                    acked.is_empty(),
                    "{what}: the partition directory is gone with {} records acknowledged",
                    acked.len()
                );
                continue;
            }
            let log = PartitionLog::open_private(&format!("image-{n}"), 0, dir, config.clone())
                .unwrap_or_else(|e| panic!("{what}: the log does not open: {e}"));
            let (start, records) = run(read_all(&log)).unwrap_or_else(|e| panic!("{what}: {e}"));
            let mut last = -1;
            let found: BTreeMap<i64, (String, String)> = records
                .iter()
                .map(|(offset, key, value)| {
                    assert!(*offset > last, "{what}: offsets not increasing at {offset}");
                    last = *offset;
                    let candidates = written.get(offset).cloned().unwrap_or_default();
                    assert!(
                        candidates.contains(&(key.clone(), value.clone())),
                        "{what}: phantom record {key}={value} at {offset}"
                    );
                    (*offset, (key.clone(), value.clone()))
                })
                .collect();
            let newest_by_key: BTreeMap<&String, i64> = acked
                .iter()
                .map(|(offset, key, _)| (key, *offset))
                .collect();
            for (offset, key, value) in acked {
                if removed && *offset < start {
                    continue; // removed by retention, which may remove it
                }
                match found.get(offset) {
                    Some((k, v)) if k == key && v == value => {}
                    None if compacted && newest_by_key[key] > *offset => {}
                    other => panic!(
                        "{what}: lost write: {key}={value} acknowledged at {offset}, recovered {other:?} (log start {start})"
                    ),
                }
            }
        }
        images.len()
    }
}

fn small_segments(segment_bytes: u64) -> LogConfig {
    LogConfig {
        segment_bytes,
        ..LogConfig::default()
    }
}

/// Appends across many segment rolls, then a clean shutdown; a crash at every
/// sync point on the way.
#[test]
fn a_crash_at_every_sync_point_of_appends_rolls_and_shutdown_loses_nothing_acknowledged() {
    let harness = Harness::new();
    let config = small_segments(512);
    let records = if long() { 400 } else { 60 };
    run(async {
        let commit = Rc::new(GroupCommit::on(harness.disk()));
        let log = harness.open(config.clone());
        for i in 0..records {
            harness
                .append(&log, &commit, &format!("k{}", i % 7), &format!("v{i}"))
                .await;
        }
        assert!(
            log.borrow().segment_count() > 5,
            "the workload rolls segments"
        );
        log.borrow_mut().close().expect("clean shutdown");
    });
    let points = harness.check_every_crash(&config, false, false);
    println!("appends, rolls, clean shutdown: {points} crash points checked");
    assert!(
        points as u64 >= records,
        "{points} sync points for {records} appends"
    );
}

/// Retention deletes closed segments (and DeleteRecords moves the log start,
/// a durable checkpoint) between appends.
#[test]
fn a_crash_at_every_sync_point_of_retention_loses_nothing_it_kept() {
    let harness = Harness::new();
    let config = small_segments(512);
    let rounds = if long() { 12 } else { 4 };
    run(async {
        let commit = Rc::new(GroupCommit::on(harness.disk()));
        let log = harness.open(config.clone());
        let mut i = 0;
        for round in 0..rounds {
            for _ in 0..15 {
                harness
                    .append(&log, &commit, &format!("k{i}"), &format!("v{i}"))
                    .await;
                i += 1;
            }
            if round % 2 == 0 {
                let mut retained = config.clone();
                retained.retention_bytes = 1024;
                log.borrow_mut().set_config(retained);
                let removed = log.borrow_mut().apply_retention(i64::MAX / 2);
                assert!(removed > 0, "round {round}: retention removed nothing");
                log.borrow_mut().set_config(config.clone());
            } else {
                let hw = log.borrow().high_watermark();
                log.borrow_mut()
                    .delete_records_before(hw - 3)
                    .expect("DeleteRecords");
            }
        }
        log.borrow_mut().close().expect("clean shutdown");
    });
    let points = harness.check_every_crash(&config, false, true);
    println!("retention and DeleteRecords: {points} crash points checked");
}

/// Compaction passes (cleaned segments renamed over the originals, the
/// cleaner checkpoint) between appends on a compacted log.
#[test]
fn a_crash_at_every_sync_point_of_compaction_keeps_every_latest_value() {
    let harness = Harness::new();
    let config = LogConfig {
        segment_bytes: 512,
        cleanup_policy: CleanupPolicy {
            delete: false,
            compact: true,
        },
        min_cleanable_dirty_ratio: 0.01,
        ..LogConfig::default()
    };
    let passes = if long() { 8 } else { 3 };
    run(async {
        let commit = Rc::new(GroupCommit::on(harness.disk()));
        let log = harness.open(config.clone());
        let mut i = 0;
        for _ in 0..passes {
            for _ in 0..40 {
                harness
                    .append(&log, &commit, &format!("k{}", i % 5), &format!("v{i}"))
                    .await;
                i += 1;
            }
            let stats = cleaner::clean(&log, 1_800_000_000_000, CleanerLimits::default())
                .await
                .expect("cleaning");
            assert!(stats.is_some(), "a pass ran");
        }
        log.borrow_mut().close().expect("clean shutdown");
    });
    let points = harness.check_every_crash(&config, true, false);
    println!("compaction: {points} crash points checked");
}

/// Reopens the log in `dir` (the real files, as a restart after the fault).
fn reopen_and_read(dir: &Path, config: &LogConfig) -> Vec<(i64, String, String)> {
    let log = PartitionLog::open_private("reopened", 0, dir.to_path_buf(), config.clone())
        .expect("reopens");
    run(read_all(&log)).expect("reads").1
}

/// A failed write (EIO, then ENOSPC) fails that append only: the log rolls
/// it back and takes the next appends; everything acknowledged is there.
#[test]
fn a_failed_write_fails_its_append_and_the_log_goes_on() {
    for errno in [EIO, ENOSPC] {
        let harness = Harness::new();
        let config = small_segments(1 << 20);
        harness.disk.inject(Fault::Write { nth: 5, errno });
        let acked = run(async {
            let commit = Rc::new(GroupCommit::on(harness.disk()));
            let log = harness.open(config.clone());
            let mut acked = Vec::new();
            for i in 0..10 {
                let value = format!("v{i}");
                match append(&log, &commit, "k", &value, 1).await {
                    Ok(offset) => acked.push((offset, "k".to_string(), value)),
                    Err(error) => {
                        assert_eq!(i, 4, "errno {errno}: append {i} failed: {error}");
                        assert!(
                            error.to_string().contains(&format!("os error {errno}")),
                            "{error}"
                        );
                    }
                }
            }
            log.borrow_mut().close().expect("close");
            acked
        });
        assert_eq!(
            acked.len(),
            9,
            "errno {errno}: the other appends are acknowledged"
        );
        let offsets: Vec<i64> = acked.iter().map(|(o, _, _)| *o).collect();
        assert_eq!(
            offsets,
            (0..9).collect::<Vec<_>>(),
            "errno {errno}: no gap where the failed append was"
        );
        assert_eq!(
            reopen_and_read(&harness.data.join("t-0"), &config),
            acked,
            "errno {errno}"
        );
    }
}

/// A failed sync (the page cache can no longer be trusted) takes the log
/// offline: that append and every later one is refused, nothing is
/// acknowledged that was not synced, and a restart recovers what was.
#[test]
fn a_failed_sync_takes_the_log_offline_and_a_restart_recovers_what_was_synced() {
    let harness = Harness::new();
    let config = small_segments(1 << 20);
    let acked = run(async {
        let commit = Rc::new(GroupCommit::on(harness.disk()));
        let log = harness.open(config.clone());
        for i in 0..3 {
            harness.append(&log, &commit, "k", &format!("v{i}")).await;
        }
        harness.disk.inject(Fault::Sync {
            nth: harness.disk.syncs() + 1,
            errno: EIO,
        });
        // Written, never acknowledged: a recovered log may hold them or not.
        for (offset, value) in [(3, "lost"), (4, "after")] {
            harness
                .written
                .lock()
                .unwrap()
                .entry(offset)
                .or_default()
                .push(("k".to_string(), value.to_string()));
        }
        let failed = append(&log, &commit, "k", "lost", 1).await;
        assert!(
            failed.is_err(),
            "the append whose sync failed is not acknowledged"
        );
        let refused = append(&log, &commit, "k", "after", 1).await;
        assert!(
            matches!(&refused, Err(AppendError::Storage(m)) if m.contains("offline") || m.contains("fsync")),
            "the log refuses appends after a failed sync: {refused:?}"
        );
        harness.acked.lock().unwrap().clone()
    });
    // A restart (the files as they are) has the three acknowledged records,
    // and so has every crash image, the one taken at the failed sync included.
    let recovered = reopen_and_read(&harness.data.join("t-0"), &config);
    assert_eq!(&recovered[..3], &acked[..], "what was synced is there");
    let points = harness.check_every_crash(&config, false, false);
    assert!(points >= 4, "{points} crash points");
}

/// A roll that fails for another reason than space or descriptors running
/// short (here the partition's directory is gone, as when a disk is pulled
/// or remounted read-only) takes the log offline, as Kafka takes a log
/// directory offline: that append and every later one are refused, even
/// once the directory is back; a restart recovers every acknowledged record.
#[test]
fn a_failed_roll_takes_the_log_offline() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("t-0");
    let moved = temp.path().join("elsewhere");
    let config = small_segments(4096);
    let acked = run(async {
        let commit = Rc::new(GroupCommit::on(Disk::Real));
        let log = PartitionLog::open_private_on(&Disk::Real, "t", 0, dir.clone(), config.clone())
            .expect("log opens");
        let mut acked = Vec::new();
        for i in 0..10 {
            let value = format!("v{i}");
            let offset = append(&log, &commit, "k", &value, 1).await.expect("append");
            acked.push((offset, "k".to_string(), value));
        }
        std::fs::rename(&dir, &moved).unwrap();
        let mut failed = None;
        for i in 10..200 {
            let value = format!("v{i}");
            match append(&log, &commit, "k", &value, 1).await {
                Ok(offset) => acked.push((offset, "k".to_string(), value)),
                Err(error) => {
                    failed = Some(error);
                    break;
                }
            }
        }
        let failed = failed.expect("an append needed a roll, which failed");
        assert!(
            matches!(&failed, AppendError::Storage(m) if m.contains("No such file")),
            "{failed:?}"
        );
        std::fs::rename(&moved, &dir).unwrap();
        let refused = append(&log, &commit, "k", "after", 1).await;
        assert!(
            matches!(&refused, Err(AppendError::Storage(m)) if m.contains("rolling a new segment failed")),
            "the log stays offline: {refused:?}"
        );
        acked
    });
    assert!(acked.len() > 10, "appends went on until the roll");
    assert_eq!(reopen_and_read(&dir, &config), acked);
}

/// A transaction marker is synced whatever the topic's flush policy: on a
/// topic with `flush.messages` far above its traffic, the image of a crash
/// right after the marker's append holds the transaction's data and its
/// marker. (The coordinator writes its completion record once the markers
/// are appended: a marker lost in a crash after that would leave the
/// transaction open on the partition forever.)
#[test]
fn a_transaction_marker_is_durable_whatever_the_flush_policy() {
    use sluice::protocol::control::EndTxnMarker;
    use sluice::protocol::encode::ProducerFields;
    let harness = Harness::new();
    let config = LogConfig {
        flush_messages: 1_000_000,
        flush_ms: i64::MAX,
        ..LogConfig::default()
    };
    let image = harness.images_dir.join("after-the-marker");
    let marker_at = run(async {
        let commit = Rc::new(GroupCommit::on(harness.disk()));
        let log = harness.open(config.clone());
        let mut record = encode::record(
            0,
            1_700_000_000_000,
            Some(Bytes::from_static(b"k")),
            Some(Bytes::from_static(b"in-a-transaction")),
            Some(ProducerFields {
                producer_id: 7,
                producer_epoch: 0,
                base_sequence: 0,
            }),
        );
        record.transactional = true;
        let records = encode::encode_batch(&[record], Compression::None);
        let validated = validate_records(&records, usize::MAX).expect("valid");
        log::append(&log, &commit, records, &validated, true)
            .await
            .expect("append");
        let marker = EndTxnMarker {
            commit: true,
            coordinator_epoch: 0,
        };
        let at = log::append_marker(&log, &commit, 7, 0, marker, true)
            .await
            .expect("marker")
            .base_offset;
        harness.disk.crash_image(&image).expect("crash image");
        at
    });
    let log =
        PartitionLog::open_private("image", 0, image.join("t-0"), config).expect("the image opens");
    let (_, records) = run(read_all(&log)).expect("readable");
    let offsets: Vec<i64> = records.iter().map(|r| r.0).collect();
    assert_eq!(offsets, [0, marker_at], "data and marker survive the crash");
    assert!(
        log.borrow().open_transactions().is_empty(),
        "no transaction left open"
    );
}

/// A truncation (a follower's after a leader change, a Raft log's) crashed
/// at each of its sync points leaves a prefix of the log as it was, at least
/// as long as the truncated one, with no hole; once it returns, the cut is
/// durable, and appends after it survive a crash.
#[test]
fn a_truncation_crashed_at_every_sync_point_leaves_a_prefix_and_is_durable_once_done() {
    let harness = Harness::new();
    let config = small_segments(600);
    let (before, images_before) = run(async {
        let commit = Rc::new(GroupCommit::on(harness.disk()));
        let log = harness.open(config.clone());
        for i in 0..60 {
            harness
                .append(&log, &commit, &format!("k{i}"), &format!("v{i}"))
                .await;
        }
        let before = read_all(&log).await.expect("readable").1;
        let images_before = harness.images.lock().unwrap().len();
        assert!(log.borrow().segment_count() > 3, "several segments");
        assert_eq!(log.borrow_mut().truncate_to(25).expect("truncated"), 25);
        // Then appends at the new end, acknowledged.
        for i in 0..5 {
            let offset = append(&log, &commit, "after", &format!("a{i}"), 1)
                .await
                .expect("append after the cut");
            assert_eq!(offset, 25 + i);
        }
        let last = harness.images_dir.join("after-the-appends");
        harness.disk.crash_image(&last).expect("crash image");
        harness
            .images
            .lock()
            .unwrap()
            .push((u64::MAX, last, Vec::new()));
        (before, images_before)
    });
    let images = harness.images.lock().unwrap().clone();
    let during = &images[images_before..];
    assert!(during.len() >= 3, "the truncation and appends synced");
    let mut prefixes = 0;
    for (n, image, _) in during {
        let log = PartitionLog::open_private("image", 0, image.join("t-0"), config.clone())
            .unwrap_or_else(|e| panic!("sync point {n}: the image does not open: {e}"));
        let (_, records) = run(read_all(&log)).expect("readable");
        let offsets: Vec<i64> = records.iter().map(|r| r.0).collect();
        let contiguous: Vec<i64> = (0..records.len() as i64).collect();
        assert_eq!(offsets, contiguous, "sync point {n}: a hole in the log");
        assert!(records.len() >= 25, "sync point {n}: cut below 25");
        let is_prefix = records.len() <= before.len() && records[..] == before[..records.len()];
        let is_after =
            records[..25] == before[..25] && records[25..].iter().all(|r| r.1 == "after");
        assert!(
            is_prefix || is_after,
            "sync point {n}: neither a prefix of the log before the cut nor the cut log with \
             later appends: {records:?}"
        );
        prefixes += usize::from(is_prefix && records.len() > 25);
    }
    let last = &during.last().unwrap().1;
    let log = PartitionLog::open_private("image", 0, last.join("t-0"), config).unwrap();
    let (_, records) = run(read_all(&log)).unwrap();
    assert_eq!(records.len(), 30, "the cut and the 5 appends after it");
    println!(
        "{} sync points, {prefixes} of them before the cut was durable",
        during.len()
    );
}
