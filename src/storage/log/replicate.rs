//! A follower's appends: batches exactly as the leader's log holds them
//! (offsets, leader epochs, control batches and all), written through the
//! same reserve → write → group-commit path as Produce, so the follower's log
//! end offset (what it reports to the leader with its next fetch) counts only
//! what is durable under the topic's flush policy.

use std::rc::Rc;

use bytes::Bytes;

use crate::io::clock::now_ms;
use crate::protocol::batch::{self, BatchHeader};
use crate::protocol::control;
use crate::storage::commit::GroupCommit;
use crate::storage::txn_index::AbortedTxn;

use super::append::{sync_log, wait_for_watermark};
use super::state::*;

/// Offsets a segment can address from its base (index entries are 32-bit).
const SEGMENT_OFFSET_SPAN: i64 = i32::MAX as i64;

struct ReplicaWrite {
    id: u64,
    file: Rc<compio::fs::File>,
    position: u64,
    end_offset: i64,
}

impl PartitionLog {
    /// Reserves room for the whole batches `headers` describe (`records`
    /// holds exactly them) and notes them in the indexes, producer state,
    /// transaction indexes and leader epochs.
    fn reserve_replica(
        &mut self,
        records: &Bytes,
        headers: &[BatchHeader],
        now: i64,
    ) -> Result<ReplicaWrite, AppendError> {
        self.check_writable()?;
        let (first, last) = match (headers.first(), headers.last()) {
            (Some(first), Some(last)) => (*first, *last),
            _ => return Err(AppendError::InvalidRecord("no batch to replicate")),
        };
        // The leader's offsets continue this log (the cleaner may have left
        // gaps between its batches, never overlaps).
        if first.base_offset < self.next_offset {
            return Err(AppendError::InvalidRecord(
                "the leader's batch overlaps this replica's log",
            ));
        }
        if last.last_offset() - first.base_offset >= SEGMENT_OFFSET_SPAN {
            return Err(AppendError::InvalidRecord(
                "the leader's batches span more offsets than a segment holds",
            ));
        }
        let len = records.len() as u64;
        let active_base = self.segments.last().map_or(0, |s| s.base_offset);
        // A new segment (if one is rolled) starts at the first batch.
        let end_before = self.next_offset;
        self.next_offset = first.base_offset;
        let rolled = if last.last_offset() - active_base >= SEGMENT_OFFSET_SPAN {
            self.roll_now(now)
        } else {
            self.maybe_roll(len, now)
        };
        let epochs = headers.iter().try_for_each(|header| {
            self.begin_epoch(header.partition_leader_epoch, header.base_offset)
        });
        if let Err(error) = rolled {
            self.next_offset = end_before;
            return Err(AppendError::Storage(error.to_string()));
        }
        if let Err(error) = epochs {
            self.next_offset = end_before;
            return Err(error);
        }
        let index_interval = self.config.index_interval_bytes;
        let active = self
            .segments
            .last_mut()
            .expect("a log has at least one segment");
        let position = active.reserved_bytes;
        let mut at = position;
        for header in headers {
            active.note_batch(header, at, index_interval);
            at += header.total_len() as u64;
            if !header.is_control() {
                self.producers.record(header);
                continue;
            }
            let start = (at - position) as usize - header.total_len();
            let bytes = &records[start..start + header.total_len()];
            let Ok(marker) = control::parse_marker(header, bytes) else {
                // A control batch this broker does not know: kept as the
                // leader has it, as Kafka does.
                continue;
            };
            if let Some(done) = self
                .producers
                .record_marker(header, &marker)
                .filter(|d| d.aborted)
            {
                active.txn_index.push(AbortedTxn {
                    producer_id: done.producer_id,
                    first_offset: done.first_offset,
                    last_offset: done.last_offset,
                    last_stable_offset: self.producers.stable_offset_after_marker(done.last_offset),
                });
            }
        }
        active.reserved_bytes += len;
        let segment_base = active.base_offset;
        let file = active.file.clone();
        let end_offset = last.last_offset() + 1;
        self.next_offset = end_offset;
        let id = self.begin_write(segment_base, position + len, end_offset);
        self.unflushed_messages += headers
            .iter()
            .map(|h| i64::from(h.record_count.max(0)))
            .sum::<i64>();
        Ok(ReplicaWrite {
            id,
            file,
            position,
            end_offset,
        })
    }
}

/// Appends the leader's batches at the start of `records` (a trailing
/// partial batch is left for the next fetch) and returns the new log end
/// offset, once the write is complete and, when the topic's flush policy
/// says so, synced. Every batch is checked (v2, CRC, offsets increasing and
/// past this log's end) before anything is written: the leader is a peer,
/// not trusted blindly.
pub async fn append_replica(
    log: &LogRef,
    commit: &Rc<GroupCommit>,
    records: Bytes,
) -> Result<i64, AppendError> {
    let (headers, whole) = batch::split_replicated(&records)
        .map_err(|_| AppendError::InvalidRecord("a malformed batch from the leader"))?;
    if headers.is_empty() {
        return Ok(log.borrow().log_end_offset());
    }
    let records = records.slice(..whole);
    {
        // An empty log that starts inside the leader's first batch (the
        // leader's log start was moved into a batch by DeleteRecords and
        // this log restarted there): it restarts at the batch's base, as
        // Kafka's follower does, rather than refuse it forever.
        let mut log = log.borrow_mut();
        let (start, end) = (log.log_start_offset(), log.log_end_offset());
        let first = headers[0].base_offset;
        if start == end && first < end && headers[0].last_offset() >= end {
            log.restart_at(first)
                .map_err(|e| AppendError::Storage(e.to_string()))?;
        }
    }
    let write = log
        .borrow_mut()
        .reserve_replica(&records, &headers, now_ms())?;
    let rollbacks = log.borrow().rollbacks;
    let disk = log.borrow().disk.clone();
    let result = disk
        .write_at(&write.file, records, Bytes::new(), write.position)
        .await;
    log.borrow_mut()
        .complete_write(write.id, result.as_ref().err());
    if let Err(error) = result {
        return Err(AppendError::Storage(error.to_string()));
    }
    wait_for_watermark(log, write.end_offset, rollbacks).await?;
    let sync_due = log.borrow_mut().take_sync_due();
    if sync_due {
        sync_log(log.clone(), commit.clone(), write.file.clone())
            .await
            .map_err(|error| AppendError::Storage(error.to_string()))?;
    }
    Ok(write.end_offset)
}
