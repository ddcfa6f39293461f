//! The log of one partition: an ordered list of segments, the last one active.
//!
//! Lives on the partition's owning shard and is reached through `LogRef`
//! (`Rc<RefCell<_>>`). A `RefCell` borrow is never held across an `.await`: each
//! operation does its bookkeeping synchronously, releases the borrow, awaits the
//! I/O, and borrows again to finish.
//!
//! Appends are *reserved* synchronously (offsets and file positions are decided,
//! producer sequences checked, the batch header patched) and then written with
//! io_uring. Several writes to one partition may be in flight; they complete in
//! any order, and the high watermark only moves past a write once every earlier
//! write has completed (`in_flight`).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use compio::io::{AsyncReadAtExt, AsyncWriteAtExt};

use crate::io::aligned;
use crate::io::chain::{Chain, FileSlice, Piece};
use crate::protocol::batch::TimestampType;
use crate::protocol::batch::{self, BatchHeader, ValidatedRecords, BATCH_HEADER_LEN};
use crate::protocol::compression::decompressed_bytes_max;
use crate::protocol::errors::ErrorCode;
use crate::protocol::records::{records_area, RecordIter};
use crate::storage::clean_shutdown;
use crate::storage::cleaner::CleanerState;
use crate::storage::commit::GroupCommit;
use crate::storage::config::LogConfig;
use crate::storage::producer_state::{ProducerStateTable, SequenceCheck, SequenceError};
use crate::storage::segment::{parse_segment_file_name, OpenError, Segment};
use crate::storage::shared::PartitionShared;

pub type LogRef = Rc<RefCell<PartitionLog>>;

/// A write whose completion is awaited before the high watermark passes it.
struct InFlightWrite {
    id: u64,
    segment_base: i64,
    end_position: u64,
    end_offset: i64,
    done: bool,
    /// The write returned an error (ENOSPC, EIO): nothing from here on is kept.
    failed: bool,
}

pub struct PartitionLog {
    pub topic: Arc<str>,
    pub partition: i32,
    pub(super) dir: PathBuf,
    config: LogConfig,
    /// Sorted by base offset; never empty; the last one takes appends.
    pub(super) segments: Vec<Segment>,
    log_start_offset: i64,
    /// Offset the next appended batch gets.
    next_offset: i64,
    in_flight: VecDeque<InFlightWrite>,
    next_write_id: u64,
    pub(super) producers: ProducerStateTable,
    shared: Arc<PartitionShared>,
    /// Set when storage failed; the partition then refuses reads and writes.
    pub(super) failure: Option<String>,
    /// Set when a write failed (e.g. the disk is full). Appends are refused until
    /// the writes in flight have finished and the log is rolled back to its last
    /// complete write; then appends are tried again, so writes resume when space
    /// returns. (A failed fdatasync is different: see `fail`.)
    write_error: Option<String>,
    /// How many roll-backs happened; an append reserved before a roll-back was discarded.
    rollbacks: u64,
    /// Messages appended since the last sync, for `flush.messages` > 1.
    unflushed_messages: i64,
    /// When the last sync of this log was started, for `flush.ms`.
    last_flush_ms: i64,
    /// The log cleaner's progress (compacted topics).
    pub(super) cleaner: CleanerState,
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
    pub log_start_offset: i64,
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

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl PartitionLog {
    /// Directory of a partition's log under the data dir.
    pub fn dir_for(data_dir: &Path, topic: &str, partition: i32) -> PathBuf {
        data_dir.join(format!("{topic}-{partition}"))
    }

    /// [`PartitionLog::open`] for a log whose watermark nobody else waits on
    /// (the internal logs, tests, benches), as the `LogRef` its users share.
    pub fn open_private(
        topic: &str,
        partition: i32,
        dir: PathBuf,
        config: LogConfig,
    ) -> Result<LogRef, OpenError> {
        let shared = Arc::new(PartitionShared::default());
        let log = PartitionLog::open(Arc::from(topic), partition, dir, config, shared)?;
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
        fs::create_dir_all(&dir)?;
        let mut bases: Vec<i64> = fs::read_dir(&dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| parse_segment_file_name(&e.file_name().to_string_lossy()))
            .collect();
        bases.sort_unstable();
        let now = now_ms();
        let started = std::time::Instant::now();
        // Deleted (durably) before anything else: from here on a crash means a scanned start.
        let marker = clean_shutdown::take(&dir)?;
        let clean = match marker {
            None => Err("no clean-shutdown marker".to_string()),
            Some(bytes) => open_clean(&dir, &bases, &bytes, now),
        };
        let (mut segments, producers) = match clean {
            Ok((segments, producers, bytes_scanned)) => {
                tracing::info!(
                    %topic,
                    partition,
                    segments = segments.len(),
                    bytes_scanned,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "clean start: the clean-shutdown marker agrees with the files, scan skipped"
                );
                (segments, producers)
            }
            Err(reason) => {
                let (segments, producers) = scan_segments(&dir, &bases, &config, now)?;
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
                (segments, producers)
            }
        };
        if segments.is_empty() {
            segments.push(Segment::create(&dir, 0, now)?);
        }
        let log_start_offset = read_log_start_checkpoint(&dir)
            .unwrap_or(segments[0].base_offset)
            .max(segments[0].base_offset);
        let next_offset = segments.last().map(|s| s.next_offset).unwrap_or(0);
        shared.set_log_start_offset(log_start_offset);
        shared.set_high_watermark(next_offset);
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
            cleaner: CleanerState::default(),
        })
    }

    pub fn high_watermark(&self) -> i64 {
        self.shared.high_watermark()
    }
    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset
    }
    pub fn log_end_offset(&self) -> i64 {
        self.next_offset
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

    fn fail(&mut self, reason: String) {
        tracing::error!(topic = %self.topic, partition = self.partition, %reason, "partition storage failed; taking it offline");
        self.failure = Some(reason);
        self.shared.set_offline();
    }

    fn check_online(&self) -> Result<(), String> {
        match &self.failure {
            Some(reason) => Err(reason.clone()),
            None => Ok(()),
        }
    }

    /// Rolls to a new segment if the active one is full or old.
    fn maybe_roll(&mut self, incoming_bytes: u64, now: i64) -> io::Result<()> {
        let active = self
            .segments
            .last()
            .expect("a log has at least one segment");
        let too_big = active.reserved_bytes + incoming_bytes > self.config.segment_bytes;
        let too_old = now.saturating_sub(active.created_ms) > self.config.segment_ms;
        if active.is_empty() || !(too_big || too_old) {
            return Ok(());
        }
        active.write_index_files()?;
        let segment = Segment::create(&self.dir, self.next_offset, now)?;
        self.segments.push(segment);
        Ok(())
    }

    /// Reserves room for `records` (one validated batch) and patches its header.
    /// Returns what to write and where, or the outcome of a duplicate.
    fn reserve(
        &mut self,
        records: &Bytes,
        validated: &ValidatedRecords,
        now: i64,
    ) -> Result<Reservation, AppendError> {
        self.check_online().map_err(AppendError::Storage)?;
        if let Some(error) = &self.write_error {
            return Err(AppendError::Storage(format!(
                "an earlier write failed and is being rolled back: {error}"
            )));
        }
        let header = validated.first;
        if header.has_producer_id() && header.base_sequence >= 0 {
            if let SequenceCheck::Duplicate { base_offset } = self.producers.check(&header)? {
                return Ok(Reservation::Duplicate(AppendOutcome {
                    base_offset,
                    log_append_time_ms: -1,
                    log_start_offset: self.log_start_offset,
                }));
            }
        }
        let len = records.len() as u64;
        self.maybe_roll(len, now)
            .map_err(|e| AppendError::Storage(e.to_string()))?;

        let base_offset = self.next_offset;
        let mut patched = BytesMut::from(&records[..BATCH_HEADER_LEN]);
        batch::set_base_offset(&mut patched, base_offset);
        let log_append_time_ms = match self.config.message_timestamp_type {
            TimestampType::LogAppendTime => {
                // The CRC covers the timestamps, so patch with the full batch in view.
                let mut whole = BytesMut::from(&records[..]);
                batch::set_base_offset(&mut whole, base_offset);
                batch::set_log_append_time(&mut whole, now);
                patched = whole.split_to(BATCH_HEADER_LEN);
                patched.unsplit(whole);
                now
            }
            TimestampType::CreateTime => -1,
        };
        let stored_header =
            BatchHeader::parse(&patched).map_err(|_| AppendError::InvalidRecord("header"))?;
        let (head, body) = if patched.len() > BATCH_HEADER_LEN {
            // LogAppendTime: the patched copy holds the whole batch.
            (patched.freeze(), Bytes::new())
        } else {
            (patched.freeze(), records.slice(BATCH_HEADER_LEN..))
        };

        let index_interval = self.config.index_interval_bytes;
        let active = self
            .segments
            .last_mut()
            .expect("a log has at least one segment");
        let position = active.reserved_bytes;
        active.note_batch(&stored_header, position, index_interval);
        active.reserved_bytes += len;
        let segment_base = active.base_offset;
        let file = active.file.clone();
        let end_offset = stored_header.last_offset() + 1;
        self.next_offset = end_offset;
        self.producers.record(&stored_header);
        let id = self.next_write_id;
        self.next_write_id += 1;
        self.in_flight.push_back(InFlightWrite {
            id,
            segment_base,
            end_position: position + len,
            end_offset,
            done: false,
            failed: false,
        });
        self.unflushed_messages += i64::from(stored_header.record_count);
        Ok(Reservation::Write(PendingWrite {
            id,
            file,
            position,
            head,
            body,
            outcome: AppendOutcome {
                base_offset,
                log_append_time_ms,
                log_start_offset: self.log_start_offset,
            },
        }))
    }

    /// Marks write `id` complete (or failed) and advances the high watermark over
    /// every completed write at the front of the queue; never past a failed one.
    /// Once a failure's fellow writes have all finished, rolls the log back.
    fn complete_write(&mut self, id: u64, error: Option<&std::io::Error>) {
        if let Some(w) = self.in_flight.iter_mut().find(|w| w.id == id) {
            w.done = true;
            w.failed = error.is_some();
        }
        if let Some(error) = error {
            tracing::warn!(topic = %self.topic, partition = self.partition, %error, "append failed; refusing appends until it is rolled back");
            self.write_error.get_or_insert_with(|| error.to_string());
        }
        let mut new_watermark = None;
        while self.in_flight.front().is_some_and(|w| w.done && !w.failed) {
            let w = self.in_flight.pop_front().expect("front exists");
            if let Some(segment) = self
                .segments
                .iter_mut()
                .rev()
                .find(|s| s.base_offset == w.segment_base)
            {
                segment.readable_bytes = segment.readable_bytes.max(w.end_position);
            }
            new_watermark = Some(w.end_offset);
        }
        if let Some(offset) = new_watermark {
            self.shared.set_high_watermark(offset);
        }
        if self.write_error.is_some() && self.in_flight.iter().all(|w| w.done) {
            self.roll_back_failed_writes();
        }
    }

    /// Forgets everything after the high watermark (the failed write and any
    /// reserved after it): truncates the files, indexes, offsets and producer
    /// state back to the last complete write, then accepts appends again.
    fn roll_back_failed_writes(&mut self) {
        let high_watermark = self.high_watermark();
        self.in_flight.clear();
        while self.segments.len() > 1
            && self
                .segments
                .last()
                .is_some_and(|s| s.base_offset >= high_watermark)
        {
            let segment = self.segments.pop().expect("checked");
            segment.remove_files();
        }
        let active = self
            .segments
            .last_mut()
            .expect("a log has at least one segment");
        let keep = active.readable_bytes;
        let truncated = fs::OpenOptions::new()
            .write(true)
            .open(&active.log_path)
            .and_then(|f| f.set_len(keep));
        if let Err(error) = truncated {
            self.fail(format!("cannot roll back a failed write: {error}"));
            return;
        }
        active.reserved_bytes = keep;
        active.next_offset = high_watermark.max(active.base_offset);
        active.index.truncate_to_position(keep as u32);
        let relative = u32::try_from(high_watermark - active.base_offset).unwrap_or(u32::MAX);
        active.time_index.truncate_to_relative_offset(relative);
        self.next_offset = high_watermark;
        self.producers.truncate_from(high_watermark);
        self.rollbacks += 1;
        let error = self.write_error.take().unwrap_or_default();
        tracing::warn!(topic = %self.topic, partition = self.partition, high_watermark, %error, "rolled back failed appends; accepting appends again");
        // Wake appends waiting for the watermark: theirs was discarded.
        self.shared.set_high_watermark(high_watermark);
    }

    /// Whether this append must wait for fdatasync before it is acknowledged, and
    /// resets the unflushed count when a sync is due.
    fn take_sync_due(&mut self) -> bool {
        if self.config.sync_every_append() || self.unflushed_messages >= self.config.flush_messages
        {
            self.unflushed_messages = 0;
            self.last_flush_ms = now_ms();
            true
        } else {
            false
        }
    }

    /// `flush.ms`: the active segment's file if unsynced appends are older than
    /// the topic's flush interval (only reachable when `flush.messages` > 1,
    /// since otherwise every acknowledged append is synced).
    pub fn take_periodic_flush(&mut self, now: i64) -> Option<Rc<compio::fs::File>> {
        if self.unflushed_messages == 0
            || now.saturating_sub(self.last_flush_ms) < self.config.flush_ms
        {
            return None;
        }
        self.unflushed_messages = 0;
        self.last_flush_ms = now;
        self.segments.last().map(|s| s.file.clone())
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

    fn close_files(&mut self) -> io::Result<()> {
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
            if let Some(active) = self.segments.last() {
                active.write_index_files()?;
            }
            return Ok(());
        }
        // Writes (and syncs) the index files that differ from memory: the
        // active segment's at least.
        let segments = self
            .segments
            .iter()
            .map(Segment::prepare_clean_shutdown)
            .collect::<io::Result<Vec<_>>>()?;
        let marker = clean_shutdown::CleanShutdown {
            segments,
            producers: std::mem::take(&mut self.producers),
        };
        let written = clean_shutdown::write(&self.dir, &marker);
        self.producers = marker.producers;
        written
    }

    /// Finds where to start reading `offset`: (segment index, file position, readable end).
    fn locate(&self, offset: i64) -> Option<(usize, u64, u64)> {
        let count = self.segments.partition_point(|s| s.base_offset <= offset);
        if count == 0 {
            return None;
        }
        let i = count - 1;
        let segment = &self.segments[i];
        let relative = u32::try_from(offset - segment.base_offset).unwrap_or(u32::MAX);
        let position = u64::from(segment.index.lookup(relative).position);
        Some((i, position, segment.readable_bytes))
    }

    /// The start of the last batch indexed at or before `position` in the
    /// segment a read is walking (a batch boundary), if that segment is still
    /// in the log and its index has one.
    fn batch_start_at_or_below(&self, view: &SegmentView, position: u64) -> Option<u64> {
        let i = self
            .segments
            .partition_point(|s| s.base_offset < view.base_offset);
        // The same file, not only the same base offset: the cleaner may have
        // swapped in a compacted segment whose positions mean something else.
        let segment = self
            .segments
            .get(i)
            .filter(|s| s.base_offset == view.base_offset && Rc::ptr_eq(&s.file, &view.file))?;
        let position = u32::try_from(position).unwrap_or(u32::MAX);
        segment
            .index
            .last_at_or_below_position(position)
            .map(|e| u64::from(e.position))
    }

    /// Offset of the first batch whose max timestamp is >= `timestamp_ms`, with
    /// that batch's position, or None if every batch is older.
    fn locate_timestamp(&self, timestamp_ms: i64) -> Option<(Rc<compio::fs::File>, u64, u64, i64)> {
        let segment = self
            .segments
            .iter()
            .find(|s| s.max_timestamp_ms >= timestamp_ms)?;
        let relative = segment.time_index.lookup(timestamp_ms);
        let position = u64::from(segment.index.lookup(relative).position);
        Some((
            segment.file.clone(),
            position,
            segment.readable_bytes,
            segment.base_offset,
        ))
    }

    /// (max timestamp, offset) over the whole log, for ListOffsets MAX_TIMESTAMP.
    pub fn max_timestamp(&self) -> (i64, i64) {
        self.segments
            .iter()
            .filter(|s| s.max_timestamp_ms >= 0)
            .max_by_key(|s| s.max_timestamp_ms)
            .map(|s| (s.max_timestamp_ms, s.offset_of_max_timestamp))
            .unwrap_or((-1, -1))
    }

    /// Removes the log's files (topic deletion). The log must not be used afterwards.
    pub fn delete_files(&mut self) -> io::Result<()> {
        // Refuse further use: in-flight requests that still hold the log get
        // KAFKA_STORAGE_ERROR rather than writing into a deleted directory.
        self.failure = Some("partition deleted".to_string());
        fs::remove_dir_all(&self.dir)
    }

    /// DeleteRecords: moves the log start offset to `offset` (-1: the high
    /// watermark) and removes the segments entirely below it. Returns the new
    /// log start offset.
    pub fn delete_records_before(&mut self, offset: i64) -> Result<i64, ErrorCode> {
        if self.failure.is_some() {
            return Err(ErrorCode::KafkaStorageError);
        }
        let high_watermark = self.high_watermark();
        let target = if offset == -1 { high_watermark } else { offset };
        if target < 0 || target > high_watermark {
            return Err(ErrorCode::OffsetOutOfRange);
        }
        if target <= self.log_start_offset {
            return Ok(self.log_start_offset);
        }
        write_log_start_checkpoint(&self.dir, target).map_err(|error| {
            tracing::error!(topic = %self.topic, partition = self.partition, %error, "writing the log start checkpoint");
            ErrorCode::KafkaStorageError
        })?;
        self.log_start_offset = target;
        self.shared.set_log_start_offset(target);
        while self.segments.len() > 1 && self.segments[1].base_offset <= target {
            let segment = self.segments.remove(0);
            // Readers holding the file keep it readable until they finish (Linux unlink semantics).
            segment.remove_files();
        }
        Ok(target)
    }

    pub fn producer_count(&self) -> usize {
        self.producers.producer_count()
    }

    /// Retention, for topics whose cleanup.policy includes `delete`: removes the
    /// oldest closed segments while the newest record in them is older than
    /// `retention.ms`, or while the log without them would still hold at least
    /// `retention.bytes` (Kafka's rules). The active segment is never removed.
    /// Returns how many segments went.
    pub fn apply_retention(&mut self, now_ms: i64) -> usize {
        if self.failure.is_some() || !self.config.cleanup_policy.delete {
            return 0;
        }
        let mut removed = 0;
        let mut total: u64 = self.size_bytes();
        while self.segments.len() > 1 {
            let oldest = &self.segments[0];
            // A segment without timestamps is aged by when it was written.
            let newest_ms = if oldest.max_timestamp_ms >= 0 {
                oldest.max_timestamp_ms
            } else {
                oldest.created_ms
            };
            let too_old = self.config.retention_ms >= 0
                && now_ms.saturating_sub(newest_ms) > self.config.retention_ms;
            let too_big = self.config.retention_bytes >= 0
                && total.saturating_sub(oldest.reserved_bytes)
                    >= self.config.retention_bytes as u64;
            if !(too_old || too_big) {
                break;
            }
            let segment = self.segments.remove(0);
            total -= segment.reserved_bytes;
            // Readers holding the file keep it readable until they finish (Linux unlink semantics).
            segment.remove_files();
            removed += 1;
        }
        if removed > 0 {
            let start = self.segments[0].base_offset.max(self.log_start_offset);
            self.log_start_offset = start;
            self.shared.set_log_start_offset(start);
            tracing::info!(topic = %self.topic, partition = self.partition, removed, log_start_offset = start, "retention removed segments");
        }
        removed
    }
}

enum Reservation {
    Duplicate(AppendOutcome),
    Write(PendingWrite),
}

struct PendingWrite {
    id: u64,
    file: Rc<compio::fs::File>,
    position: u64,
    head: Bytes,
    body: Bytes,
    outcome: AppendOutcome,
}

/// Appends one validated batch; waits for durability when the topic's flush
/// policy says so and `acks` asked for an acknowledgement.
pub async fn append(
    log: &LogRef,
    commit: &Rc<GroupCommit>,
    records: Bytes,
    validated: &ValidatedRecords,
    wants_ack: bool,
) -> Result<AppendOutcome, AppendError> {
    if validated.batch_count != 1 {
        // Kafka: produce requests of v3 and above carry exactly one batch per partition.
        return Err(AppendError::InvalidRecord(
            "exactly one record batch per partition is allowed",
        ));
    }
    let reservation = log.borrow_mut().reserve(&records, validated, now_ms())?;
    let write = match reservation {
        Reservation::Duplicate(outcome) => {
            // The original may still be in flight: answer once it is complete (or
            // fail with it, and the producer's retry then appends it anew).
            let end_offset = outcome.base_offset + i64::from(validated.first.last_offset_delta) + 1;
            let rollbacks = log.borrow().rollbacks;
            wait_for_watermark(log, end_offset, rollbacks).await?;
            return Ok(outcome);
        }
        Reservation::Write(write) => write,
    };
    let (rollbacks_at_reserve, end_offset) = {
        let log = log.borrow();
        let end = log
            .in_flight
            .iter()
            .find(|w| w.id == write.id)
            .map_or(log.next_offset, |w| w.end_offset);
        (log.rollbacks, end)
    };
    let mut file: &compio::fs::File = &write.file;
    let result = if write.body.is_empty() {
        file.write_all_at(write.head, write.position).await.0
    } else {
        file.write_vectored_all_at([write.head, write.body], write.position)
            .await
            .0
    };
    log.borrow_mut()
        .complete_write(write.id, result.as_ref().err());
    if let Err(error) = result {
        return Err(AppendError::Storage(error.to_string()));
    }
    // Acknowledge only once every earlier write of the partition is complete: a
    // sync must cover them too, and a failed earlier write discards this one.
    wait_for_watermark(log, end_offset, rollbacks_at_reserve).await?;
    let sync_due = log.borrow_mut().take_sync_due();
    if sync_due {
        let commit = commit.clone();
        let file = write.file.clone();
        let sync = async move { commit.sync(file).await };
        if wants_ack {
            if let Err(error) = sync.await {
                log.borrow_mut().fail(format!("fdatasync failed: {error}"));
                return Err(AppendError::Storage(error.to_string()));
            }
        } else {
            let log = log.clone();
            compio::runtime::spawn(async move {
                if let Err(error) = sync.await {
                    log.borrow_mut().fail(format!("fdatasync failed: {error}"));
                }
            })
            .detach();
        }
    }
    Ok(write.outcome)
}

/// Waits until the high watermark reaches `end_offset`; fails if the log was
/// rolled back (or failed) since the append was reserved.
async fn wait_for_watermark(
    log: &LogRef,
    end_offset: i64,
    rollbacks_at_reserve: u64,
) -> Result<(), AppendError> {
    loop {
        let listener = {
            let log = log.borrow();
            let listener = log.shared.listen();
            if log.rollbacks != rollbacks_at_reserve {
                return Err(AppendError::Storage(
                    "discarded: an earlier write to the partition failed".into(),
                ));
            }
            log.check_online().map_err(AppendError::Storage)?;
            if log.high_watermark() >= end_offset {
                return Ok(());
            }
            listener
        };
        listener.await;
    }
}

/// Reads whole batches from `offset` on, at most `max_bytes` of them, except that
/// the first batch is returned whole even if larger (KIP-74) when
/// `first_may_exceed` is set, so that a consumer always makes progress. The
/// batches may span segments.
///
/// Only batch headers are read to decide what to return: the batch holding
/// `offset` (found from the offset index), and at the end the last batch that
/// fits (found from the offset index by position, then a short walk). The
/// record data itself stays in the segment files when a range is at least
/// `zero_copy_min_bytes` long (the connection splices it to the socket);
/// shorter ranges, or every range when it is None, are read into page-aligned
/// memory.
pub async fn read(
    log: &LogRef,
    offset: i64,
    max_bytes: usize,
    first_may_exceed: bool,
    zero_copy_min_bytes: Option<usize>,
) -> Result<ReadOutcome, ReadError> {
    let (mut segment, mut position, high_watermark, log_start_offset) = {
        let log = log.borrow();
        log.check_online().map_err(ReadError::Storage)?;
        let high_watermark = log.high_watermark();
        if offset < log.log_start_offset || offset > high_watermark {
            return Err(ReadError::OffsetOutOfRange {
                offset,
                log_start_offset: log.log_start_offset,
                high_watermark,
            });
        }
        let empty = ReadOutcome {
            records: Chain::default(),
            first_batch_len: 0,
            high_watermark,
            log_start_offset: log.log_start_offset,
        };
        if offset == high_watermark || (max_bytes == 0 && !first_may_exceed) {
            return Ok(empty);
        }
        let Some((i, position, _)) = log.locate(offset) else {
            return Ok(empty);
        };
        (
            SegmentView::of(&log.segments[i], zero_copy_min_bytes.is_some()),
            position,
            high_watermark,
            log.log_start_offset,
        )
    };
    let mut ranges: Vec<(SegmentView, u64, u64, Option<Bytes>)> = Vec::new();
    let mut budget = max_bytes as u64;
    let mut first_batch_len = 0;
    loop {
        let mut walker = HeaderWalker::new(&segment);
        // The batch holding `offset`, or the first after it (offsets may have gaps).
        let mut found = None;
        while position < segment.readable {
            let (last_offset, len) = walker.header_at(position).await?;
            if last_offset >= offset {
                found = Some((position, len));
                break;
            }
            position += len;
        }
        if let Some((start, first_len)) = found {
            if ranges.is_empty() {
                first_batch_len = first_len as usize;
            }
            if first_len > budget {
                if ranges.is_empty() && first_may_exceed {
                    let end = start + first_len;
                    let inline = walker.cached(start, end);
                    ranges.push((segment, start, end, inline));
                }
                break;
            }
            let limit = start + budget;
            let mut end = start + first_len;
            if segment.readable <= limit {
                end = segment.readable;
            } else {
                // Jump close to the limit with the index, then walk the last few headers.
                if let Some(hint) = log.borrow().batch_start_at_or_below(&segment, limit) {
                    end = end.max(hint);
                }
                while end < segment.readable {
                    let (_, len) = walker.header_at(end).await?;
                    if end + len > limit {
                        break;
                    }
                    end += len;
                }
            }
            budget -= end - start;
            let inline = walker.cached(start, end);
            let segment_done = end == segment.readable;
            ranges.push((segment.clone(), start, end, inline));
            if !segment_done || budget == 0 {
                break;
            }
        }
        // Go on in the next segment. Found by base offset: retention or the cleaner
        // may have replaced the list while this read was waiting.
        let log_ref = log.borrow();
        let next = log_ref
            .segments
            .partition_point(|s| s.base_offset <= segment.base_offset);
        let Some(next) = log_ref.segments.get(next) else {
            break;
        };
        position = if offset > next.base_offset {
            let relative = u32::try_from(offset - next.base_offset).unwrap_or(u32::MAX);
            u64::from(next.index.lookup(relative).position)
        } else {
            0
        };
        segment = SegmentView::of(next, zero_copy_min_bytes.is_some());
    }
    let mut records = Chain::default();
    for (segment, start, end, inline) in ranges {
        let len = (end - start) as usize;
        let splice_from = segment
            .shared
            .clone()
            .filter(|_| zero_copy_min_bytes.is_some_and(|min| len >= min));
        let piece = match (inline, splice_from) {
            (_, Some(file)) => Piece::File(FileSlice {
                file,
                position: start,
                len,
            }),
            (Some(bytes), None) => Piece::Memory(bytes),
            (None, None) => Piece::Memory(
                aligned::read_at(&segment.file, start, len)
                    .await
                    .map_err(|e| ReadError::Storage(format!("read at {start}: {e}")))?,
            ),
        };
        records.push(piece);
    }
    if records.is_empty() {
        first_batch_len = 0;
    }
    Ok(ReadOutcome {
        records,
        first_batch_len,
        high_watermark,
        log_start_offset,
    })
}

/// What a read needs of a segment, taken while the log is borrowed.
#[derive(Clone)]
struct SegmentView {
    base_offset: i64,
    file: Rc<compio::fs::File>,
    /// The descriptor responses may hold, when the read may splice (None when
    /// it may not, or when the descriptor could not be opened: then it copies).
    shared: Option<Arc<std::fs::File>>,
    readable: u64,
}

impl SegmentView {
    fn of(segment: &Segment, may_splice: bool) -> SegmentView {
        let shared = if may_splice {
            segment
                .shared_file()
                .inspect_err(
                    |error| tracing::warn!(%error, "no shared descriptor for a segment; copying"),
                )
                .ok()
        } else {
            None
        };
        SegmentView {
            base_offset: segment.base_offset,
            file: segment.file.clone(),
            shared,
            readable: segment.readable_bytes,
        }
    }
}

/// Bytes read per header lookup that misses the cached chunk. Large enough that
/// the walk from an index entry to the wanted batch (at most an index interval,
/// 4 KiB by default) and a small fetch's whole data usually come in one read.
const HEADER_CHUNK_BYTES: u64 = 32 * 1024;

/// Reads batch headers of one segment, a chunk at a time.
struct HeaderWalker<'a> {
    segment: &'a SegmentView,
    chunk: Bytes,
    chunk_position: u64,
}

impl<'a> HeaderWalker<'a> {
    fn new(segment: &'a SegmentView) -> HeaderWalker<'a> {
        HeaderWalker {
            segment,
            chunk: Bytes::new(),
            chunk_position: 0,
        }
    }

    /// (last offset, total length) of the batch at `position`, checked to lie
    /// within the segment's readable bytes.
    async fn header_at(&mut self, position: u64) -> Result<(i64, u64), ReadError> {
        let header_end = position + BATCH_HEADER_LEN as u64;
        if header_end > self.segment.readable {
            return Err(ReadError::Storage(format!(
                "batch header at {position} runs past the readable end {}",
                self.segment.readable
            )));
        }
        if self.cached(position, header_end).is_none() {
            let len = HEADER_CHUNK_BYTES.min(self.segment.readable - position) as usize;
            self.chunk = aligned::read_at(&self.segment.file, position, len)
                .await
                .map_err(|e| ReadError::Storage(format!("read at {position}: {e}")))?;
            self.chunk_position = position;
        }
        let at = (position - self.chunk_position) as usize;
        let header = BatchHeader::parse(&self.chunk[at..])
            .map_err(|e| ReadError::Storage(format!("corrupt batch at {position}: {e}")))?;
        let len = header.total_len() as u64;
        if header.magic != 2 || len < BATCH_HEADER_LEN as u64 {
            // Never walk by a length that is not a batch's: a damaged header
            // could otherwise stop the walk (length 0) or land mid-batch.
            return Err(ReadError::Storage(format!(
                "corrupt batch at {position}: magic {}, length {len}",
                header.magic
            )));
        }
        if position + len > self.segment.readable {
            return Err(ReadError::Storage(format!(
                "batch at {position} runs past the readable end {}",
                self.segment.readable
            )));
        }
        Ok((header.last_offset(), len))
    }

    /// `[start, end)` of the segment if the cached chunk holds all of it.
    fn cached(&self, start: u64, end: u64) -> Option<Bytes> {
        let chunk_end = self.chunk_position + self.chunk.len() as u64;
        (start >= self.chunk_position && end <= chunk_end).then(|| {
            self.chunk
                .slice((start - self.chunk_position) as usize..(end - self.chunk_position) as usize)
        })
    }
}

async fn read_exact(
    file: &compio::fs::File,
    position: u64,
    len: usize,
) -> Result<BytesMut, ReadError> {
    let buf = BytesMut::with_capacity(len);
    let compio::BufResult(result, buf) = file.read_exact_at(buf, position).await;
    result.map_err(|e| ReadError::Storage(format!("read at {position}: {e}")))?;
    Ok(buf)
}

/// Finds the first offset whose record timestamp is >= `timestamp_ms`, with that
/// timestamp. Scans batch headers from the time index's hint, then the records of
/// the first batch that qualifies (decompressing if needed).
pub async fn offset_for_timestamp(
    log: &LogRef,
    timestamp_ms: i64,
) -> Result<Option<(i64, i64)>, ReadError> {
    let (file, mut position, readable_end, decompressed_bytes_max) = {
        let log = log.borrow();
        log.check_online().map_err(ReadError::Storage)?;
        let limit = decompressed_bytes_max(log.config.max_message_bytes);
        match log.locate_timestamp(timestamp_ms) {
            Some((file, position, readable, _base)) => (file, position, readable, limit),
            None => return Ok(None),
        }
    };
    while position < readable_end {
        let header_bytes = read_exact(&file, position, BATCH_HEADER_LEN).await?;
        let header =
            BatchHeader::parse(&header_bytes).map_err(|e| ReadError::Storage(e.to_string()))?;
        let len = header.total_len() as u64;
        if len < BATCH_HEADER_LEN as u64 {
            return Err(ReadError::Storage(format!("corrupt batch at {position}")));
        }
        if header.max_timestamp >= timestamp_ms {
            // The batch-level answer: its first offset is at or before the
            // exact one, so a consumer that seeks there misses nothing.
            let batch_level = Some((header.base_offset, header.max_timestamp));
            // LogAppendTime batches carry the time in the header only.
            if header.is_log_append_time() {
                return Ok(batch_level);
            }
            let whole = read_exact(&file, position, len as usize).await?.freeze();
            let area = match records_area(&header, &whole, decompressed_bytes_max) {
                Ok(area) => area,
                Err(error) => {
                    tracing::warn!(position, base_offset = header.base_offset, %error, "ListOffsets by timestamp: batch not decompressed; answering with its first offset");
                    return Ok(batch_level);
                }
            };
            for record in RecordIter::new(&area, header.record_count) {
                let Ok(record) = record else { break };
                let timestamp = header.base_timestamp.wrapping_add(record.timestamp_delta);
                if timestamp >= timestamp_ms {
                    let offset = header.base_offset + i64::from(record.offset_delta);
                    return Ok(Some((offset, timestamp)));
                }
            }
            return Ok(batch_level);
        }
        position += len;
    }
    Ok(None)
}

/// Opens every segment with the full scan (lengths, magic, CRC32C; torn tail
/// of the active segment truncated), rebuilding indexes and producer state.
fn scan_segments(
    dir: &Path,
    bases: &[i64],
    config: &LogConfig,
    now: i64,
) -> Result<(Vec<Segment>, ProducerStateTable), OpenError> {
    let mut producers = ProducerStateTable::default();
    let mut segments = Vec::with_capacity(bases.len().max(1));
    for (i, &base) in bases.iter().enumerate() {
        let is_active = i + 1 == bases.len();
        let path = dir.join(crate::storage::segment::segment_file_name(base, "log"));
        let segment = Segment::open(
            &path,
            base,
            is_active,
            config.index_interval_bytes,
            now,
            |header| producers.record(header),
        )?;
        segments.push(segment);
    }
    Ok((segments, producers))
}

/// Opens the segments as the clean-shutdown marker `bytes` describes them,
/// without the scan; Err says why the marker cannot be trusted (then the
/// caller scans). Returns the segments, the producer state and the bytes read.
fn open_clean(
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

/// Name of the file holding the log start offset when it is above the first segment's base.
const LOG_START_CHECKPOINT: &str = "log-start-offset";

/// Writes the checkpoint durably: temp file, fsync, rename.
fn write_log_start_checkpoint(dir: &Path, offset: i64) -> io::Result<()> {
    use std::io::Write;
    let tmp = dir.join(format!("{LOG_START_CHECKPOINT}.tmp"));
    let mut file = fs::File::create(&tmp)?;
    file.write_all(offset.to_string().as_bytes())?;
    file.sync_all()?;
    fs::rename(&tmp, dir.join(LOG_START_CHECKPOINT))?;
    fs::File::open(dir)?.sync_all()
}

fn read_log_start_checkpoint(dir: &Path) -> Option<i64> {
    fs::read_to_string(dir.join(LOG_START_CHECKPOINT))
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::batch::{validate_records, BatchIter};
    use crate::protocol::encode::{self, ProducerFields};
    use kafka_protocol::records::Compression;

    /// One batch of `count` records with timestamps from `first_timestamp`, optionally
    /// from an idempotent producer (id, epoch, base sequence).
    fn batch(count: i64, first_timestamp: i64, producer: Option<(i64, i16, i32)>) -> Bytes {
        let producer =
            producer.map(
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
}
