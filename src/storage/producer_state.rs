//! Idempotent-producer state of one partition: for each producer id, its epoch and
//! the last few batches' sequence ranges, so that a retried batch is recognised as a
//! duplicate (acknowledged with its original offset, not written twice) and a gap in
//! sequences is refused.
//!
//! A batch is a duplicate only when producer id, epoch, first and last sequence
//! all match one of the cached batches (what Kafka's `ProducerStateEntry.
//! findDuplicateBatch` compares). Anything else from a known producer must
//! follow its last sequence, or it is refused with OUT_OF_ORDER_SEQUENCE_NUMBER;
//! never with DUPLICATE_SEQUENCE_NUMBER, which Java clients take as success.
//!
//! Rebuilt at start-up from the batch headers in the log (`Segment::open` reports
//! every batch).

use std::collections::{HashMap, VecDeque};

use crate::protocol::batch::BatchHeader;

/// Kafka lets an idempotent producer have at most 5 batches in flight per
/// partition, so remembering the last 5 is enough to recognise any retry.
pub const CACHED_BATCHES_PER_PRODUCER: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BatchSequence {
    first_sequence: i32,
    last_sequence: i32,
    base_offset: i64,
}

#[derive(Debug, Default)]
struct ProducerEntry {
    epoch: i16,
    /// Oldest first.
    batches: VecDeque<BatchSequence>,
}

/// What to do with an incoming batch from an idempotent producer.
#[derive(Debug, PartialEq, Eq)]
pub enum SequenceCheck {
    /// New and in order: append it.
    Append,
    /// Already in the log at this base offset: acknowledge, do not write.
    Duplicate { base_offset: i64 },
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SequenceError {
    #[error("out of order sequence number")]
    OutOfOrder,
    #[error("producer epoch is older than the current one (fenced)")]
    InvalidEpoch,
}

#[derive(Debug, Default)]
pub struct ProducerStateTable {
    producers: HashMap<i64, ProducerEntry>,
}

/// Kafka's sequence numbers wrap from i32::MAX to 0.
fn next_sequence(sequence: i32) -> i32 {
    if sequence == i32::MAX {
        0
    } else {
        sequence + 1
    }
}

impl ProducerStateTable {
    /// Checks `header` (an incoming batch with a producer id) against the state.
    pub fn check(&self, header: &BatchHeader) -> Result<SequenceCheck, SequenceError> {
        let Some(entry) = self.producers.get(&header.producer_id) else {
            // A producer this partition holds no state for: any sequence is
            // accepted, as Kafka does since KIP-360 (`ProducerAppendInfo`). Its
            // earlier batches may have been removed by retention or
            // DeleteRecords; it cannot be a retry of something stored here.
            return Ok(SequenceCheck::Append);
        };
        if header.producer_epoch < entry.epoch {
            return Err(SequenceError::InvalidEpoch);
        }
        if header.producer_epoch > entry.epoch {
            // A bumped epoch starts its sequences again at 0.
            return if header.base_sequence == 0 {
                Ok(SequenceCheck::Append)
            } else {
                Err(SequenceError::OutOfOrder)
            };
        }
        let last_sequence = header.last_sequence();
        if let Some(cached) = entry
            .batches
            .iter()
            .find(|b| b.first_sequence == header.base_sequence && b.last_sequence == last_sequence)
        {
            return Ok(SequenceCheck::Duplicate {
                base_offset: cached.base_offset,
            });
        }
        let expected = entry
            .batches
            .back()
            .map_or(0, |b| next_sequence(b.last_sequence));
        if header.base_sequence == expected {
            Ok(SequenceCheck::Append)
        } else {
            Err(SequenceError::OutOfOrder)
        }
    }

    /// Records a batch that is now in the log (its base offset assigned).
    pub fn record(&mut self, header: &BatchHeader) {
        if header.producer_id < 0 {
            return;
        }
        let entry = self.producers.entry(header.producer_id).or_default();
        if header.producer_epoch != entry.epoch {
            entry.epoch = header.producer_epoch;
            entry.batches.clear();
        }
        if entry.batches.len() == CACHED_BATCHES_PER_PRODUCER {
            entry.batches.pop_front();
        }
        entry.batches.push_back(BatchSequence {
            first_sequence: header.base_sequence,
            last_sequence: header.last_sequence(),
            base_offset: header.base_offset,
        });
    }

    /// Forgets batches at or after `offset` (their writes were rolled back).
    pub fn truncate_from(&mut self, offset: i64) {
        for entry in self.producers.values_mut() {
            while entry
                .batches
                .back()
                .is_some_and(|b| b.base_offset >= offset)
            {
                entry.batches.pop_back();
            }
        }
        self.producers.retain(|_, entry| !entry.batches.is_empty());
    }

    pub fn producer_count(&self) -> usize {
        self.producers.len()
    }

    /// Appends the table to `out` (the clean-shutdown snapshot, `docs/FORMAT.md`):
    /// a producer count, then per producer (by id) its id, epoch, batch count and
    /// batches (first sequence, last sequence, base offset), big-endian.
    pub fn encode_snapshot(&self, out: &mut Vec<u8>) {
        let mut ids: Vec<i64> = self.producers.keys().copied().collect();
        ids.sort_unstable();
        out.extend_from_slice(&(ids.len() as u32).to_be_bytes());
        for id in ids {
            let entry = &self.producers[&id];
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(&entry.epoch.to_be_bytes());
            out.push(entry.batches.len() as u8);
            for b in &entry.batches {
                out.extend_from_slice(&b.first_sequence.to_be_bytes());
                out.extend_from_slice(&b.last_sequence.to_be_bytes());
                out.extend_from_slice(&b.base_offset.to_be_bytes());
            }
        }
    }

    /// Parses a snapshot written by [`encode_snapshot`] from the start of
    /// `bytes`; returns the table and the bytes it took. None if it is
    /// malformed: truncated, a producer id that is negative or repeated (or not
    /// increasing), more than [`CACHED_BATCHES_PER_PRODUCER`] or no batches, or
    /// base offsets that do not increase or lie outside `[0, log_end_offset)`.
    /// Counts are checked against the bytes present before anything is allocated.
    ///
    /// [`encode_snapshot`]: ProducerStateTable::encode_snapshot
    pub fn decode_snapshot(
        bytes: &[u8],
        log_end_offset: i64,
    ) -> Option<(ProducerStateTable, usize)> {
        const PRODUCER_FIXED_BYTES: usize = 8 + 2 + 1;
        const BATCH_BYTES: usize = 4 + 4 + 8;
        let mut at = 0usize;
        let mut take = |n: usize| -> Option<&[u8]> {
            let slice = bytes.get(at..at.checked_add(n)?)?;
            at += n;
            Some(slice)
        };
        let count = u32::from_be_bytes(take(4)?.try_into().ok()?) as usize;
        // Every producer takes at least PRODUCER_FIXED_BYTES + one batch.
        if count > bytes.len() / (PRODUCER_FIXED_BYTES + BATCH_BYTES) {
            return None;
        }
        let mut producers = HashMap::with_capacity(count);
        let mut previous_id: Option<i64> = None;
        for _ in 0..count {
            let id = i64::from_be_bytes(take(8)?.try_into().ok()?);
            let epoch = i16::from_be_bytes(take(2)?.try_into().ok()?);
            let batch_count = usize::from(take(1)?[0]);
            if id < 0
                || previous_id.is_some_and(|p| p >= id)
                || batch_count == 0
                || batch_count > CACHED_BATCHES_PER_PRODUCER
            {
                return None;
            }
            previous_id = Some(id);
            let mut batches = VecDeque::with_capacity(batch_count);
            for _ in 0..batch_count {
                let batch = BatchSequence {
                    first_sequence: i32::from_be_bytes(take(4)?.try_into().ok()?),
                    last_sequence: i32::from_be_bytes(take(4)?.try_into().ok()?),
                    base_offset: i64::from_be_bytes(take(8)?.try_into().ok()?),
                };
                let in_log = (0..log_end_offset).contains(&batch.base_offset);
                let increasing = batches
                    .back()
                    .is_none_or(|b: &BatchSequence| b.base_offset < batch.base_offset);
                if !in_log || !increasing || batch.first_sequence < 0 || batch.last_sequence < 0 {
                    return None;
                }
                batches.push_back(batch);
            }
            producers.insert(id, ProducerEntry { epoch, batches });
        }
        Some((ProducerStateTable { producers }, at))
    }

    /// For each producer, the base offset of its last batch in the log. The log
    /// cleaner keeps those batches (emptied if need be) so that the state can be
    /// rebuilt from the log after a restart.
    pub fn last_batch_offsets(&self) -> HashMap<i64, i64> {
        self.producers
            .iter()
            .filter_map(|(&id, entry)| entry.batches.back().map(|b| (id, b.base_offset)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(
        producer_id: i64,
        epoch: i16,
        base_sequence: i32,
        records: i32,
        base_offset: i64,
    ) -> BatchHeader {
        BatchHeader {
            base_offset,
            batch_length: 100,
            partition_leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: records - 1,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id,
            producer_epoch: epoch,
            base_sequence,
            record_count: records,
        }
    }

    #[test]
    fn in_order_duplicate_and_gap() {
        let mut table = ProducerStateTable::default();
        let first = batch(7, 0, 0, 3, 0);
        assert_eq!(table.check(&first), Ok(SequenceCheck::Append));
        table.record(&first);
        let second = batch(7, 0, 3, 2, 3);
        assert_eq!(table.check(&second), Ok(SequenceCheck::Append));
        table.record(&second);
        // A retry of the first batch is a duplicate, acknowledged at its offset.
        assert_eq!(
            table.check(&batch(7, 0, 0, 3, -1)),
            Ok(SequenceCheck::Duplicate { base_offset: 0 })
        );
        // Skipping sequence 5 is refused.
        assert_eq!(
            table.check(&batch(7, 0, 6, 1, -1)),
            Err(SequenceError::OutOfOrder)
        );
        // An older epoch is fenced; a newer one restarts at 0.
        assert_eq!(
            table.check(&batch(7, -1, 5, 1, -1)),
            Err(SequenceError::InvalidEpoch)
        );
        assert_eq!(
            table.check(&batch(7, 1, 0, 1, -1)),
            Ok(SequenceCheck::Append)
        );
        assert_eq!(
            table.check(&batch(7, 1, 5, 1, -1)),
            Err(SequenceError::OutOfOrder)
        );
        // A producer the partition has no state for may start anywhere
        // (its earlier batches may be gone); it is never a duplicate.
        assert_eq!(
            table.check(&batch(8, 0, 4, 1, -1)),
            Ok(SequenceCheck::Append)
        );
    }

    #[test]
    fn only_the_last_five_batches_are_remembered() {
        let mut table = ProducerStateTable::default();
        for i in 0..7 {
            table.record(&batch(1, 0, i, 1, i64::from(i)));
        }
        assert_eq!(
            table.check(&batch(1, 0, 6, 1, -1)),
            Ok(SequenceCheck::Duplicate { base_offset: 6 })
        );
        assert_eq!(
            table.check(&batch(1, 0, 2, 1, -1)),
            Ok(SequenceCheck::Duplicate { base_offset: 2 })
        );
        // Sequence 1 fell out of the cache: no longer recognised, and not the next one.
        assert_eq!(
            table.check(&batch(1, 0, 1, 1, -1)),
            Err(SequenceError::OutOfOrder)
        );
    }

    #[test]
    fn sequence_wraps_at_i32_max() {
        let mut table = ProducerStateTable::default();
        table.record(&batch(1, 0, i32::MAX, 1, 0));
        assert_eq!(
            table.check(&batch(1, 0, 0, 1, -1)),
            Ok(SequenceCheck::Append)
        );
    }
}
