//! Appends: reserve offsets and file space synchronously, write with
//! io_uring, wait until every earlier write of the partition is complete, then
//! for group commit when the flush policy says so.

use std::rc::Rc;

use bytes::{Bytes, BytesMut};

use crate::io::clock::now_ms;
use crate::protocol::batch::TimestampType;
use crate::protocol::batch::{self, BatchHeader, ValidatedRecords, BATCH_HEADER_LEN};
use crate::protocol::control::{self, EndTxnMarker};
use crate::storage::commit::GroupCommit;
use crate::storage::producer_state::SequenceCheck;
use crate::storage::txn_index::AbortedTxn;

use super::state::*;

impl PartitionLog {
    /// Reserves room for `records` (one validated batch) and patches its header.
    /// Returns what to write and where, or the outcome of a duplicate.
    fn reserve(
        &mut self,
        records: &Bytes,
        validated: &ValidatedRecords,
        now: i64,
    ) -> Result<Reservation, AppendError> {
        self.check_writable()?;
        let header = validated.first;
        // A control batch here is a marker the broker made (Produce refuses
        // clients' control batches).
        let marker = if header.is_control() {
            let marker = control::parse_marker(&header, records)
                .map_err(|_| AppendError::InvalidRecord("not a transaction marker"))?;
            self.producers.check_marker(&header, &marker)?;
            Some(marker)
        } else {
            None
        };
        if marker.is_none() && header.has_producer_id() && header.base_sequence >= 0 {
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
        if let Some(epoch) = self.stamp_epoch {
            batch::set_partition_leader_epoch(&mut patched, epoch);
            self.begin_epoch(epoch, base_offset)?;
        }
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
        match &marker {
            None => self.producers.record(&stored_header),
            Some(marker) => {
                let done = self.producers.record_marker(&stored_header, marker);
                if let Some(done) = done.filter(|d| d.aborted) {
                    active.txn_index.push(AbortedTxn {
                        producer_id: done.producer_id,
                        first_offset: done.first_offset,
                        last_offset: done.last_offset,
                        last_stable_offset: self
                            .producers
                            .stable_offset_after_marker(done.last_offset),
                    });
                }
            }
        }
        let id = self.begin_write(segment_base, position + len, end_offset);
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

    /// Appends are taken: the log is online and no failed write is being
    /// rolled back.
    pub(super) fn check_writable(&self) -> Result<(), AppendError> {
        self.check_online().map_err(AppendError::Storage)?;
        match &self.write_error {
            Some(error) => Err(AppendError::Storage(format!(
                "an earlier write failed and is being rolled back: {error}"
            ))),
            None => Ok(()),
        }
    }

    /// Queues a write reserved up to `end_position` of the segment at
    /// `segment_base` (ending the log at `end_offset`); returns its id.
    pub(super) fn begin_write(
        &mut self,
        segment_base: i64,
        end_position: u64,
        end_offset: i64,
    ) -> u64 {
        let id = self.next_write_id;
        self.next_write_id += 1;
        self.in_flight.push_back(InFlightWrite {
            id,
            segment_base,
            end_position,
            end_offset,
            done: false,
            failed: false,
        });
        id
    }

    /// Notes that a batch of leader `epoch` starts at `offset`: the first
    /// of a new epoch is recorded durably before it is written (a blocking
    /// write of a small file, once per leader change of the partition), so
    /// that the epochs on disk always cover the batches on disk.
    pub(in crate::storage) fn begin_epoch(
        &mut self,
        epoch: i32,
        offset: i64,
    ) -> Result<(), AppendError> {
        if epoch < 0 || (epoch <= self.epochs.latest() && !self.epochs_unsaved) {
            return Ok(());
        }
        let mut epochs = self.epochs.clone();
        epochs.observe(epoch, offset);
        epochs
            .save(&self.disk, &self.dir)
            .map_err(|e| AppendError::Storage(format!("saving the leader epochs: {e}")))?;
        self.epochs = epochs;
        self.epochs_unsaved = false;
        Ok(())
    }

    /// Marks write `id` complete (or failed) and advances the high watermark over
    /// every completed write at the front of the queue; never past a failed one.
    /// Once a failure's fellow writes have all finished, rolls the log back.
    pub(super) fn complete_write(&mut self, id: u64, error: Option<&std::io::Error>) {
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
            self.publish_watermarks(offset);
        }
        if self.write_error.is_some() && self.in_flight.iter().all(|w| w.done) {
            self.roll_back_failed_writes();
        }
    }

    /// Forgets everything after the high watermark (the failed write and any
    /// reserved after it): truncates the files, indexes, offsets and producer
    /// state back to the last complete write, then accepts appends again.
    pub(super) fn roll_back_failed_writes(&mut self) {
        let high_watermark = self.high_watermark();
        self.in_flight.clear();
        while self.segments.len() > 1
            && self
                .segments
                .last()
                .is_some_and(|s| s.base_offset >= high_watermark)
        {
            let segment = self.segments.pop().expect("checked");
            segment.remove_files(&self.disk);
            // The removal must be durable before appends after it are
            // acknowledged, or a power loss brings back an empty last
            // segment above them.
            match self.disk.open_dir(&self.dir) {
                Ok(dir) => self.pending_sync.dir = Some(Rc::new(dir)),
                Err(error) => {
                    self.fail(format!("cannot open the log directory: {error}"));
                    return;
                }
            }
            self.pending_sync
                .files
                .retain(|f| !Rc::ptr_eq(f, &segment.file));
        }
        let active = self
            .segments
            .last_mut()
            .expect("a log has at least one segment");
        let keep = active.readable_bytes;
        let truncated = self
            .disk
            .open_rw(&active.log_path)
            .and_then(|f| self.disk.truncate(&f, keep));
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
        // An epoch begun by a discarded write did not begin (the checkpoint's
        // entry for it is dropped when the log is next opened).
        self.epochs.truncate_from_end(high_watermark);
        self.rollbacks += 1;
        let error = self.write_error.take().unwrap_or_default();
        tracing::warn!(topic = %self.topic, partition = self.partition, high_watermark, %error, "rolled back failed appends; accepting appends again");
        // Wake appends waiting for the watermark: theirs was discarded.
        self.publish_watermarks(high_watermark);
    }

    /// Whether this append must wait for fdatasync before it is acknowledged, and
    /// resets the unflushed count when a sync is due.
    pub(super) fn take_sync_due(&mut self) -> bool {
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
    append_with(log, commit, records, validated, wants_ack, false).await
}

/// [`append`]; with `always_sync`, the write is synced whatever the topic's
/// flush policy (transaction markers: the coordinator's completion record
/// must never become durable before them).
async fn append_with(
    log: &LogRef,
    commit: &Rc<GroupCommit>,
    records: Bytes,
    validated: &ValidatedRecords,
    wants_ack: bool,
    always_sync: bool,
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
            // Acknowledged as durable only once it is: the original's sync may
            // still be running (or, after a process crash, it was read back
            // from the page cache and never synced).
            let file = {
                let log = log.borrow();
                log.config
                    .sync_every_append()
                    .then(|| log.segment_file_at(outcome.base_offset))
                    .flatten()
            };
            if let (Some(file), true) = (file, wants_ack) {
                sync_log(log.clone(), commit.clone(), file)
                    .await
                    .map_err(|error| AppendError::Storage(error.to_string()))?;
            }
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
    let disk = log.borrow().disk.clone();
    let result = disk
        .write_at(&write.file, write.head, write.body, write.position)
        .await;
    log.borrow_mut()
        .complete_write(write.id, result.as_ref().err());
    if let Err(error) = result {
        return Err(AppendError::Storage(error.to_string()));
    }
    // Acknowledge only once every earlier write of the partition is complete: a
    // sync must cover them too, and a failed earlier write discards this one.
    wait_for_watermark(log, end_offset, rollbacks_at_reserve).await?;
    let sync_due = {
        let mut log = log.borrow_mut();
        let due = log.take_sync_due();
        if !due && always_sync {
            // What the sync covers counts as flushed, as for a due one.
            log.unflushed_messages = 0;
            log.last_flush_ms = now_ms();
        }
        due || always_sync
    };
    if sync_due {
        let sync = sync_log(log.clone(), commit.clone(), write.file.clone());
        if wants_ack {
            sync.await
                .map_err(|error| AppendError::Storage(error.to_string()))?;
        } else {
            compio::runtime::spawn(async move {
                let _ = sync.await;
            })
            .detach();
        }
    }
    Ok(write.outcome)
}

/// Appends the marker that ends `producer_id`'s transaction on this
/// partition (commit or abort), as the transaction coordinator does; synced
/// whatever the topic's flush policy, and with `wants_ack` answered once it
/// is. Refused with INVALID_PRODUCER_EPOCH for
/// an epoch older than the producer's, TRANSACTION_COORDINATOR_FENCED for an
/// older coordinator epoch than the last marker's.
pub async fn append_marker(
    log: &LogRef,
    commit: &Rc<GroupCommit>,
    producer_id: i64,
    producer_epoch: i16,
    marker: EndTxnMarker,
    wants_ack: bool,
) -> Result<AppendOutcome, AppendError> {
    let batch = control::marker_batch(producer_id, producer_epoch, marker, now_ms());
    let header =
        BatchHeader::parse(&batch).map_err(|_| AppendError::InvalidRecord("marker header"))?;
    let validated = ValidatedRecords {
        batch_count: 1,
        record_count: 1,
        first: header,
        last: header,
        max_timestamp: header.max_timestamp,
        offset_of_max_timestamp_delta: 0,
    };
    append_with(log, commit, batch, &validated, wants_ack, true).await
}

/// Makes what was written to `file` (the log's active segment) durable in the
/// next group-commit round, with the log's directory when a rolled segment's
/// entry in it is not yet known to be durable. A failure takes the log
/// offline (after a failed fsync the page cache cannot be trusted).
pub async fn sync_log(
    log: LogRef,
    commit: Rc<GroupCommit>,
    file: Rc<compio::fs::File>,
) -> Result<(), Rc<std::io::Error>> {
    // Nothing is cloned or allocated on the common path (nothing pending).
    let pending = {
        let log = log.borrow();
        (!log.pending_sync.is_empty()).then(|| (log.pending_sync.clone(), log.dir.clone()))
    };
    let result = match &pending {
        None => commit.sync(file).await,
        Some((pending, path)) => {
            let mut syncs = Vec::with_capacity(pending.files.len() + 2);
            syncs.push(commit.sync(file));
            for other in &pending.files {
                syncs.push(commit.sync(other.clone()));
            }
            let data = futures_util::future::join_all(syncs);
            let entries = async {
                match &pending.dir {
                    Some(dir) => commit.sync_dir(dir.clone(), path.clone()).await,
                    None => Ok(()),
                }
            };
            let (data, entries) = futures_util::future::join(data, entries).await;
            data.into_iter().collect::<Result<(), _>>().and(entries)
        }
    };
    let mut log = log.borrow_mut();
    match &result {
        Err(error) => log.fail(format!("fsync failed: {error}")),
        // What this round synced is durable; a roll or rollback made while it
        // ran added new handles, which stay pending.
        Ok(()) => {
            if let Some((synced, _)) = &pending {
                let state = &mut log.pending_sync;
                state
                    .files
                    .retain(|f| !synced.files.iter().any(|s| Rc::ptr_eq(f, s)));
                if let (Some(done), Some(now)) = (&synced.dir, &state.dir) {
                    if Rc::ptr_eq(done, now) {
                        state.dir = None;
                    }
                }
            }
        }
    }
    result
}

/// Waits until every write reserved so far has completed (written, or failed
/// and rolled back): the files then hold the whole log as it stands. A
/// coordinator taking over an internal partition reads them, after the
/// replica fetcher's last append.
pub async fn settled(log: &LogRef) {
    loop {
        let listener = {
            let log = log.borrow();
            if log.in_flight.is_empty() || log.check_online().is_err() {
                return;
            }
            log.shared.listen()
        };
        // A rollback may end the writes without moving the watermark.
        let tick = std::pin::pin!(compio::time::sleep(std::time::Duration::from_millis(10)));
        futures_util::future::select(listener, tick).await;
    }
}

/// Waits until the high watermark reaches `end_offset`; fails if the log was
/// rolled back (or failed) since the append was reserved.
pub(super) async fn wait_for_watermark(
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
