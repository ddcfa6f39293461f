//! The partition log's state: its segments, producer state and writes in
//! flight; opening (a scan, or a clean start), closing, and what callers read
//! of it. Appends are in `append.rs`, reads in `read.rs`, segment rolls,
//! retention and DeleteRecords in `retention.rs`.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use crate::io::chain::Chain;
use crate::io::clock::now_ms;
use crate::io::disk::Disk;
use crate::protocol::errors::ErrorCode;
use crate::storage::clean_shutdown;
use crate::storage::config::LogConfig;
use crate::storage::epochs::LeaderEpochs;
use crate::storage::producer_state::{ProducerStateTable, SequenceError};
use crate::storage::segment::{
    parse_segment_file_name, OpenError, ScannedBatch, Segment, INDEX_EXTENSIONS,
};
use crate::storage::shared::PartitionShared;
use crate::storage::txn_index::{AbortedTxn, TxnIndex};

pub type LogRef = Rc<RefCell<PartitionLog>>;

pub struct PartitionLog {
    pub topic: Arc<str>,
    pub partition: i32,
    pub(in crate::storage) dir: PathBuf,
    pub(in crate::storage) config: LogConfig,
    /// Sorted by base offset; never empty; the last one takes appends.
    pub(in crate::storage) segments: Vec<Segment>,
    pub(in crate::storage) log_start_offset: i64,
    /// Offset the next appended batch gets.
    pub(in crate::storage) next_offset: i64,
    pub(super) in_flight: VecDeque<InFlightWrite>,
    pub(in crate::storage) next_write_id: u64,
    pub(in crate::storage) producers: ProducerStateTable,
    pub(in crate::storage) shared: Arc<PartitionShared>,
    /// Set when storage failed; the partition then refuses reads and writes.
    pub(in crate::storage) failure: Option<String>,
    /// Set when a write failed (e.g. the disk is full). Appends are refused until
    /// the writes in flight have finished and the log is rolled back to its last
    /// complete write; then appends are tried again, so writes resume when space
    /// returns. (A failed fdatasync is different: see `fail`.)
    pub(in crate::storage) write_error: Option<String>,
    /// How many roll-backs happened; an append reserved before a roll-back was discarded.
    pub(in crate::storage) rollbacks: u64,
    /// Messages appended since the last sync, for `flush.messages` > 1.
    pub(in crate::storage) unflushed_messages: i64,
    /// When the last sync of this log was started, for `flush.ms`.
    pub(in crate::storage) last_flush_ms: i64,
    /// What must be made durable with the next synced append, besides the
    /// file it went to: after a roll, the segment rolled away from (its last
    /// appends may not be synced) and the directory (the new segment's
    /// entry); after a rollback that removed segments, the directory.
    pub(super) pending_sync: PendingSync,
    /// Where the log's file operations go.
    pub(in crate::storage) disk: Disk,
    /// The log cleaner's progress (compacted topics).
    pub(in crate::storage) cleaner: CleanerState,
    /// Where each leader epoch's batches begin (KIP-101).
    pub(in crate::storage) epochs: LeaderEpochs,
    /// The latest epoch is recorded in memory but not yet in the checkpoint
    /// (taken on an empty log); the first append saves it.
    pub(in crate::storage) epochs_unsaved: bool,
    /// The leader epoch appends are stamped with (this broker leads the
    /// partition in it); None: batches keep the epoch they came with (the
    /// internal logs).
    pub(in crate::storage) stamp_epoch: Option<i32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendOutcome {
    pub base_offset: i64,
    /// The timestamp the broker assigned, or -1 for CreateTime topics.
    pub log_append_time_ms: i64,
    pub log_start_offset: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("storage error: {0}")]
    Storage(String),
    #[error(transparent)]
    Sequence(#[from] SequenceError),
    #[error("invalid batch: {0}")]
    InvalidRecord(&'static str),
}

impl AppendError {
    pub fn error_code(&self) -> ErrorCode {
        match self {
            AppendError::Storage(_) => ErrorCode::KafkaStorageError,
            AppendError::Sequence(SequenceError::OutOfOrder) => ErrorCode::OutOfOrderSequenceNumber,
            AppendError::Sequence(SequenceError::InvalidEpoch) => ErrorCode::InvalidProducerEpoch,
            AppendError::Sequence(SequenceError::ExpectedTransactional) => {
                ErrorCode::InvalidTxnState
            }
            AppendError::Sequence(SequenceError::CoordinatorFenced) => {
                ErrorCode::TransactionCoordinatorFenced
            }
            AppendError::InvalidRecord(_) => ErrorCode::InvalidRecord,
        }
    }
}

/// Record data of one partition read for a Fetch.
#[derive(Debug, Clone)]
pub struct ReadOutcome {
    /// Whole batches, starting with the one that holds the fetch offset.
    pub records: Chain,
    /// Length of the first batch in `records` (0 when empty).
    pub first_batch_len: usize,
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    /// For a `read_committed` read, the aborted transactions that overlap
    /// the records returned (consumers drop their records); None otherwise.
    pub aborted: Option<Vec<AbortedTxn>>,
}

/// What a read may return (Fetch's `isolation_level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// Everything up to the high watermark.
    ReadUncommitted,
    /// Up to the last stable offset, with the aborted transactions listed.
    ReadCommitted,
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("offset {offset} is outside [{log_start_offset}, {high_watermark}]")]
    OffsetOutOfRange {
        offset: i64,
        log_start_offset: i64,
        high_watermark: i64,
    },
    #[error("storage error: {0}")]
    Storage(String),
}

impl PartitionLog {
    /// The directory holding this log's files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Directory of a partition's log under the data dir.
    pub fn dir_for(data_dir: &Path, topic: &str, partition: i32) -> PathBuf {
        data_dir.join(format!("{topic}-{partition}"))
    }

    /// The partitions of `topic` that have a directory in `data_dir`, sorted
    /// (an internal log's, whose partition count is a setting).
    pub fn existing_partitions(data_dir: &Path, topic: &str) -> io::Result<Vec<i32>> {
        let prefix = format!("{topic}-");
        let mut found = Vec::new();
        let entries = match fs::read_dir(data_dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(found),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let name = entry?.file_name();
            let partition = name
                .to_str()
                .and_then(|n| n.strip_prefix(&prefix))
                .and_then(|p| p.parse::<i32>().ok());
            if let Some(p) = partition.filter(|p| *p >= 0) {
                found.push(p);
            }
        }
        found.sort_unstable();
        Ok(found)
    }

    /// [`PartitionLog::open`] for a log whose watermark nobody else waits on
    /// (the internal logs, tests, benches), as the `LogRef` its users share.
    pub fn open_private(
        topic: &str,
        partition: i32,
        dir: PathBuf,
        config: LogConfig,
    ) -> Result<LogRef, OpenError> {
        PartitionLog::open_private_on(&Disk::Real, topic, partition, dir, config)
    }

    /// [`PartitionLog::open_private`] on `disk` (a fault-injecting one in tests).
    pub fn open_private_on(
        disk: &Disk,
        topic: &str,
        partition: i32,
        dir: PathBuf,
        config: LogConfig,
    ) -> Result<LogRef, OpenError> {
        let shared = Arc::new(PartitionShared::default());
        let log = PartitionLog::open_on(disk, Arc::from(topic), partition, dir, config, shared)?;
        Ok(Rc::new(RefCell::new(log)))
    }

    /// Opens (recovering) or creates the log in `dir`. Runs on the owning shard at
    /// start-up or topic creation; its file I/O is synchronous.
    pub fn open(
        topic: Arc<str>,
        partition: i32,
        dir: PathBuf,
        config: LogConfig,
        shared: Arc<PartitionShared>,
    ) -> Result<PartitionLog, OpenError> {
        PartitionLog::open_on(&Disk::Real, topic, partition, dir, config, shared)
    }

    /// [`PartitionLog::open`] on `disk`: every later file operation of the
    /// log goes through it.
    pub fn open_on(
        disk: &Disk,
        topic: Arc<str>,
        partition: i32,
        dir: PathBuf,
        config: LogConfig,
        shared: Arc<PartitionShared>,
    ) -> Result<PartitionLog, OpenError> {
        let disk = disk.clone();
        // A new partition's directory, durably: its entry in the data dir
        // must survive a crash as surely as the appends it will hold.
        disk.create_dir_durably(&dir)?;
        let mut bases: Vec<i64> = fs::read_dir(&dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| parse_segment_file_name(&e.file_name().to_string_lossy()))
            .collect();
        bases.sort_unstable();
        let now = now_ms();
        let started = std::time::Instant::now();
        // Deleted (durably) before anything else: from here on a crash means a scanned start.
        let marker = clean_shutdown::take(&disk, &dir)?;
        let clean = match marker {
            None => Err("no clean-shutdown marker".to_string()),
            Some(bytes) => open_clean(&dir, &bases, &bytes, now),
        };
        let (mut segments, producers, scanned_epochs) = match clean {
            Ok((segments, producers, bytes_scanned)) => {
                tracing::info!(
                    %topic,
                    partition,
                    segments = segments.len(),
                    bytes_scanned,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "clean start: the clean-shutdown marker agrees with the files, scan skipped"
                );
                (segments, producers, None)
            }
            Err(reason) => {
                let (segments, producers, epochs) =
                    scan_segments(&disk, &dir, &bases, &config, now)?;
                let bytes_scanned: u64 = segments.iter().map(|s| s.reserved_bytes).sum();
                tracing::info!(
                    %topic,
                    partition,
                    segments = segments.len(),
                    bytes_scanned,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    %reason,
                    "scanned start: every batch checked"
                );
                (segments, producers, Some(epochs))
            }
        };
        if segments.is_empty() {
            segments.push(Segment::create(&disk, &dir, 0, now)?);
            disk.sync_dir(&dir)?;
        }
        let next_offset = segments.last().map(|s| s.next_offset).unwrap_or(0);
        // Never above the log end: a recovery that cut a torn tail may end
        // the log below a checkpoint written before the crash.
        let log_start_offset = read_log_start_checkpoint(&dir)
            .unwrap_or(segments[0].base_offset)
            .max(segments[0].base_offset)
            .min(next_offset);
        shared.set_log_start_offset(log_start_offset);
        // The leader epochs: from the batches when they were all scanned (and
        // kept so, if the checkpoint said otherwise), else the checkpoint.
        let saved = LeaderEpochs::load(&dir).unwrap_or_else(|error| {
            tracing::warn!(%topic, partition, %error, "the leader epoch checkpoint is unreadable; the epochs are rebuilt from the batches at the next scanned start");
            LeaderEpochs::default()
        });
        let mut epochs = scanned_epochs.unwrap_or_else(|| saved.clone());
        epochs.truncate_from_end(next_offset);
        if epochs != saved {
            epochs.save(&disk, &dir)?;
        }
        let mut producers = producers;
        // Every write on disk is complete: no marker is still deciding.
        producers.on_high_watermark(next_offset);
        let last_stable = stable_offset(&producers, log_start_offset, next_offset);
        shared.set_watermarks(next_offset, last_stable);
        Ok(PartitionLog {
            topic,
            partition,
            dir,
            config,
            segments,
            log_start_offset,
            next_offset,
            in_flight: VecDeque::new(),
            next_write_id: 0,
            producers,
            shared,
            failure: None,
            write_error: None,
            rollbacks: 0,
            unflushed_messages: 0,
            last_flush_ms: now,
            pending_sync: PendingSync::default(),
            disk,
            cleaner: CleanerState::default(),
            epochs,
            epochs_unsaved: false,
            stamp_epoch: None,
        })
    }

    pub fn high_watermark(&self) -> i64 {
        self.shared.high_watermark()
    }

    /// The offset `read_committed` consumers may read up to.
    pub fn last_stable_offset(&self) -> i64 {
        self.shared.last_stable_offset()
    }

    /// Publishes a new high watermark with the last stable offset that
    /// follows from it (a marker below it makes its transaction stable).
    pub(in crate::storage) fn publish_watermarks(&mut self, high_watermark: i64) {
        self.producers.on_high_watermark(high_watermark);
        let last_stable = stable_offset(&self.producers, self.log_start_offset, high_watermark);
        self.shared.set_watermarks(high_watermark, last_stable);
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset
    }

    pub fn log_end_offset(&self) -> i64 {
        self.next_offset
    }

    /// Stamps later appends with leader epoch `epoch` (this broker leads
    /// the partition in it), or leaves them as they come (None).
    pub fn set_stamp_epoch(&mut self, epoch: Option<i32>) {
        self.stamp_epoch = epoch;
    }

    /// Records that leader epoch `epoch` begins at the log end (this
    /// broker takes the lead), durably.
    pub fn begin_leader_epoch(&mut self, epoch: i32) -> Result<(), AppendError> {
        let end = self.next_offset;
        if end == 0 {
            // Nothing was ever written: the epoch is known at once (a
            // follower asking is answered), and made durable with the first
            // append (a new topic's partitions are not each a file write).
            if epoch > self.epochs.latest() {
                self.epochs.observe(epoch, 0);
                self.epochs_unsaved = true;
            }
            return Ok(());
        }
        self.begin_epoch(epoch, end)
    }

    /// The latest leader epoch that wrote to this log, or -1.
    pub fn latest_epoch(&self) -> i32 {
        self.epochs.latest()
    }

    /// Where leader epoch `epoch` ends in this log (Kafka's `endOffsetFor`,
    /// see [`crate::storage::epochs::LeaderEpochs::end_offset_for`]); the
    /// end counts only completed writes.
    pub fn end_offset_for_epoch(&self, epoch: i32) -> (i32, i64) {
        self.epochs.end_offset_for(epoch, self.high_watermark())
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    pub fn set_config(&mut self, config: LogConfig) {
        self.config = config;
    }

    pub fn size_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.reserved_bytes).sum()
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    pub(super) fn fail(&mut self, reason: String) {
        tracing::error!(topic = %self.topic, partition = self.partition, %reason, "partition storage failed; taking it offline");
        self.failure = Some(reason);
        self.shared.set_offline();
    }

    pub(super) fn check_online(&self) -> Result<(), String> {
        match &self.failure {
            Some(reason) => Err(reason.clone()),
            None => Ok(()),
        }
    }

    /// Clean shutdown: writes the current index files and, when every write
    /// has completed and the log is healthy, syncs the segments and writes the
    /// clean-shutdown marker so that the next start can skip the scan (see
    /// `clean_shutdown.rs`). Afterwards the log refuses appends, reads and
    /// cleaner passes, so that nothing changes the files behind the marker.
    pub fn close(&mut self) -> io::Result<()> {
        let result = self.close_files();
        if self.failure.is_none() {
            self.failure = Some("the log is closed".to_string());
        }
        result
    }

    pub(super) fn close_files(&mut self) -> io::Result<()> {
        let blocker = if let Some(failure) = &self.failure {
            Some(format!("storage failed: {failure}"))
        } else if self.write_error.is_some() || !self.in_flight.is_empty() {
            Some("writes are still in flight or being rolled back".to_string())
        } else if self
            .segments
            .iter()
            .any(|s| s.readable_bytes != s.reserved_bytes)
        {
            Some("a segment has incomplete writes".to_string())
        } else {
            None
        };
        if let Some(reason) = blocker {
            tracing::info!(topic = %self.topic, partition = self.partition, %reason, "no clean-shutdown marker; the next start scans");
            // Nothing more is written where storage failed.
            if self.failure.is_some() {
                return Ok(());
            }
            if let Some(active) = self.segments.last() {
                active.write_index_files(&self.disk)?;
            }
            return Ok(());
        }
        // Writes (and syncs) the index files that differ from memory: the
        // active segment's at least.
        let segments = self
            .segments
            .iter()
            .map(|segment| segment.prepare_clean_shutdown(&self.disk))
            .collect::<io::Result<Vec<_>>>()?;
        let marker = clean_shutdown::CleanShutdown {
            segments,
            producers: std::mem::take(&mut self.producers),
        };
        let written = clean_shutdown::write(&self.disk, &self.dir, &marker);
        self.producers = marker.producers;
        written
    }

    /// Removes the log's files (topic deletion). The log must not be used afterwards.
    pub fn delete_files(&mut self) -> io::Result<()> {
        // Refuse further use: in-flight requests that still hold the log get
        // KAFKA_STORAGE_ERROR rather than writing into a deleted directory.
        self.failure = Some("partition deleted".to_string());
        self.disk.remove_dir_all(&self.dir)
    }

    /// The file of the segment holding `offset`, if it is still in the log.
    pub(super) fn segment_file_at(&self, offset: i64) -> Option<Rc<compio::fs::File>> {
        self.segments
            .iter()
            .rev()
            .find(|s| s.base_offset <= offset)
            .filter(|s| offset < s.next_offset)
            .map(|s| s.file.clone())
    }

    /// Whether `producer_id` has a transaction open here at `producer_epoch`.
    pub fn has_open_transaction(&self, producer_id: i64, producer_epoch: i16) -> bool {
        self.producers
            .has_open_transaction(producer_id, producer_epoch)
    }

    /// Every producer the log remembers (DescribeProducers).
    pub fn active_producers(&self) -> Vec<crate::storage::producer_state::ActiveProducer> {
        self.producers.active_producers()
    }

    /// (producer id, epoch, first offset) of each open transaction.
    pub fn open_transactions(&self) -> Vec<(i64, i16, i64)> {
        self.producers.open_transactions()
    }

    pub fn producer_count(&self) -> usize {
        self.producers.producer_count()
    }
}

/// The last stable offset: the first unstable offset (not below the log
/// start, which retention may move past an open transaction), or the high
/// watermark if there is none or it is above.
fn stable_offset(
    producers: &ProducerStateTable,
    log_start_offset: i64,
    high_watermark: i64,
) -> i64 {
    producers
        .first_unstable_offset()
        .map_or(high_watermark, |first| {
            first.max(log_start_offset).min(high_watermark)
        })
}

/// Opens every segment with the full scan (lengths, magic, CRC32C),
/// rebuilding indexes and producer state. A torn tail is truncated; if the
/// segment it ends is not the last, the later segments are removed, as Kafka's
/// recovery does: an acknowledgement of anything in them waited for a sync of
/// the segment before (see `maybe_roll`), so what they hold was never
/// acknowledged under the default flush policy, and keeping it would leave a
/// hole in the offsets where the torn records were.
pub(super) fn scan_segments(
    disk: &Disk,
    dir: &Path,
    bases: &[i64],
    config: &LogConfig,
    now: i64,
) -> Result<(Vec<Segment>, ProducerStateTable, LeaderEpochs), OpenError> {
    let mut producers = ProducerStateTable::default();
    let mut epochs = LeaderEpochs::default();
    let mut segments = Vec::with_capacity(bases.len().max(1));
    for (i, &base) in bases.iter().enumerate() {
        let path = dir.join(crate::storage::segment::segment_file_name(base, "log"));
        let mut aborted = TxnIndex::default();
        let (mut segment, torn_bytes) = Segment::open(
            disk,
            &path,
            base,
            config.index_interval_bytes,
            now,
            |batch| {
                epochs.observe(
                    batch.header.partition_leader_epoch,
                    batch.header.base_offset,
                );
                replay_batch(&mut producers, &mut aborted, batch)
            },
        )?;
        segment.txn_index = aborted;
        let next_offset = segment.next_offset;
        segments.push(segment);
        let later = &bases[i + 1..];
        if torn_bytes > 0 && !later.is_empty() {
            for &dropped in later {
                for extension in std::iter::once("log").chain(INDEX_EXTENSIONS) {
                    let file = dir.join(crate::storage::segment::segment_file_name(
                        dropped, extension,
                    ));
                    match disk.remove(&file) {
                        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e.into()),
                        _ => {}
                    }
                }
            }
            disk.sync_dir(dir)?;
            tracing::warn!(
                dir = %dir.display(),
                torn_segment = base,
                log_end_offset = next_offset,
                removed_segments = ?later,
                "a segment before the last ended in a torn write: the segments after it \
                 were removed and the log ends where the torn one does"
            );
            break;
        }
    }
    Ok((segments, producers, epochs))
}

/// Replays one batch found by the start-up scan into the producer state and,
/// for an ABORT marker, the segment's aborted-transaction index.
fn replay_batch(producers: &mut ProducerStateTable, aborted: &mut TxnIndex, batch: &ScannedBatch) {
    let header = &batch.header;
    if !header.is_control() {
        producers.record(header);
        return;
    }
    let Some(marker) = batch.marker else {
        return;
    };
    if let Some(done) = producers.record_marker(header, &marker) {
        if done.aborted {
            aborted.push(AbortedTxn {
                producer_id: done.producer_id,
                first_offset: done.first_offset,
                last_offset: done.last_offset,
                last_stable_offset: producers.stable_offset_after_marker(done.last_offset),
            });
        }
    }
}

/// Opens the segments as the clean-shutdown marker `bytes` describes them,
/// without the scan; Err says why the marker cannot be trusted (then the
/// caller scans). Returns the segments, the producer state and the bytes read.
pub(super) fn open_clean(
    dir: &Path,
    bases: &[i64],
    bytes: &[u8],
    now: i64,
) -> Result<(Vec<Segment>, ProducerStateTable, u64), String> {
    let marker = clean_shutdown::CleanShutdown::decode(bytes)
        .map_err(|e| format!("invalid clean-shutdown marker: {e}"))?;
    if !marker
        .segments
        .iter()
        .map(|s| s.base_offset)
        .eq(bases.iter().copied())
    {
        return Err("the segment files differ from the clean-shutdown marker's".to_string());
    }
    let mut segments = Vec::with_capacity(bases.len());
    let mut bytes_read = 0u64;
    for (i, summary) in marker.segments.iter().enumerate() {
        let is_active = i + 1 == marker.segments.len();
        let path = dir.join(crate::storage::segment::segment_file_name(
            summary.base_offset,
            "log",
        ));
        let (segment, read) = Segment::open_clean(&path, summary, is_active, now)
            .map_err(|e| format!("segment {}: {e}", summary.base_offset))?;
        segments.push(segment);
        bytes_read += read;
    }
    Ok((segments, marker.producers, bytes_read))
}

/// Files and the directory a log must sync before its next acknowledgement
/// (see `PartitionLog::pending_sync`). Each handle is a new `Rc` per change,
/// so that a sync round clears exactly what it synced (`Rc::ptr_eq`), and a
/// change made while the round runs stays pending.
#[derive(Default, Clone)]
pub(super) struct PendingSync {
    pub(super) files: Vec<Rc<compio::fs::File>>,
    pub(super) dir: Option<Rc<compio::fs::File>>,
}

impl PendingSync {
    pub(super) fn is_empty(&self) -> bool {
        self.files.is_empty() && self.dir.is_none()
    }
}

/// A write whose completion is awaited before the high watermark passes it.
pub(super) struct InFlightWrite {
    pub(super) id: u64,
    pub(super) segment_base: i64,
    pub(super) end_position: u64,
    pub(super) end_offset: i64,
    pub(super) done: bool,
    /// The write returned an error (ENOSPC, EIO): nothing from here on is kept.
    pub(super) failed: bool,
}

/// Name of the file holding the log start offset when it is above the first segment's base.
const LOG_START_CHECKPOINT: &str = "log-start-offset";

/// Writes the checkpoint durably (temp file, fsync, rename, directory fsync).
pub(super) fn write_log_start_checkpoint(disk: &Disk, dir: &Path, offset: i64) -> io::Result<()> {
    disk.write_durably(
        &dir.join(LOG_START_CHECKPOINT),
        offset.to_string().as_bytes(),
    )
}

pub(super) fn read_log_start_checkpoint(dir: &Path) -> Option<i64> {
    fs::read_to_string(dir.join(LOG_START_CHECKPOINT))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The cleaner's progress on one log, kept in the log and in `cleaner-checkpoint`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CleanerState {
    pub(in crate::storage) loaded: bool,
    /// Offsets below this were cleaned by an earlier pass (the clean section).
    pub(in crate::storage) first_dirty: i64,
    /// When the earliest tombstone kept in the clean section may be removed: a
    /// pass is due then even without new dirty data.
    pub(in crate::storage) tombstones_due_ms: Option<i64>,
}
