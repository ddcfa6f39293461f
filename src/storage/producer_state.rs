//! Idempotent-producer state of one partition: for each producer id, its epoch and
//! the last few batches' sequence ranges, so that a retried batch is recognised as a
//! duplicate (acknowledged with its original offset, not written twice) and a gap in
//! sequences is refused; and each producer's open transaction, from which the
//! partition's first unstable offset (and so its last stable offset) follows.
//!
//! A transaction begins on a partition with the producer's first
//! transactional batch there and ends with a marker (a control batch, see
//! `protocol::control`). Between the two, the producer may write only
//! transactional batches. An ended transaction stays unstable until its
//! marker's write completes ([`ProducerStateTable::on_high_watermark`]).
//!
//! A batch is a duplicate only when producer id, epoch, first and last sequence
//! all match one of the cached batches (what Kafka's `ProducerStateEntry.
//! findDuplicateBatch` compares). Anything else from a known producer must
//! follow its last sequence, or it is refused with OUT_OF_ORDER_SEQUENCE_NUMBER;
//! never with DUPLICATE_SEQUENCE_NUMBER, which Java clients take as success.
//!
//! Rebuilt at start-up from the batch headers in the log (`Segment::open` reports
//! every batch).

use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::protocol::batch::BatchHeader;
use crate::protocol::control::EndTxnMarker;

/// Kafka lets an idempotent producer have at most 5 batches in flight per
/// partition, so remembering the last 5 is enough to recognise any retry.
pub const CACHED_BATCHES_PER_PRODUCER: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BatchSequence {
    first_sequence: i32,
    last_sequence: i32,
    base_offset: i64,
}

#[derive(Debug)]
struct ProducerEntry {
    epoch: i16,
    /// Oldest first.
    batches: VecDeque<BatchSequence>,
    /// The coordinator epoch of the last marker (-1 before any): a marker
    /// from an older coordinator is refused.
    coordinator_epoch: i32,
    /// The first offset of the producer's open transaction on this partition.
    current_txn_first_offset: Option<i64>,
    /// The max timestamp of its last batch or marker (-1: none).
    last_timestamp: i64,
}

impl Default for ProducerEntry {
    fn default() -> Self {
        ProducerEntry {
            epoch: 0,
            batches: VecDeque::new(),
            coordinator_epoch: -1,
            current_txn_first_offset: None,
            last_timestamp: -1,
        }
    }
}

impl ProducerEntry {
    /// Whether the entry still says anything once its batches are gone.
    fn is_empty(&self) -> bool {
        self.batches.is_empty()
            && self.current_txn_first_offset.is_none()
            && self.coordinator_epoch < 0
    }
}

/// A transaction a marker ended on this partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompletedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    /// The marker's offset.
    pub last_offset: i64,
    pub aborted: bool,
}

/// An ended transaction whose marker is not yet readable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Deciding {
    producer_id: i64,
    marker_offset: i64,
}

/// A producer as DescribeProducers reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActiveProducer {
    pub producer_id: i64,
    pub epoch: i16,
    /// The last sequence of its last batch kept (-1: none).
    pub last_sequence: i32,
    pub last_timestamp: i64,
    /// Of its last marker (-1: none).
    pub coordinator_epoch: i32,
    /// Where its open transaction begins (-1: none open).
    pub current_txn_start_offset: i64,
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
    /// A non-transactional batch from a producer with an open transaction.
    #[error("expected a transactional write: the producer has an open transaction")]
    ExpectedTransactional,
    /// A marker from an older coordinator than the partition last heard from.
    #[error("the transaction marker comes from an older coordinator epoch")]
    CoordinatorFenced,
}

#[derive(Debug, Default)]
pub struct ProducerStateTable {
    producers: HashMap<i64, ProducerEntry>,
    /// Open transactions: first offset -> producer id.
    ongoing: BTreeMap<i64, i64>,
    /// Ended transactions whose marker's write has not completed: first offset -> marker.
    deciding: BTreeMap<i64, Deciding>,
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
        if !header.is_transactional() && entry.current_txn_first_offset.is_some() {
            return Err(SequenceError::ExpectedTransactional);
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

    /// Checks a transaction marker for `header`'s producer: not from an
    /// older producer epoch, nor from an older coordinator.
    pub fn check_marker(
        &self,
        header: &BatchHeader,
        marker: &EndTxnMarker,
    ) -> Result<(), SequenceError> {
        let Some(entry) = self.producers.get(&header.producer_id) else {
            return Ok(());
        };
        if header.producer_epoch < entry.epoch {
            return Err(SequenceError::InvalidEpoch);
        }
        if entry.coordinator_epoch > marker.coordinator_epoch {
            return Err(SequenceError::CoordinatorFenced);
        }
        Ok(())
    }

    /// Records a data batch that is now in the log (its base offset
    /// assigned); a transactional one opens the producer's transaction on
    /// this partition if none is open.
    pub fn record(&mut self, header: &BatchHeader) {
        if header.producer_id < 0 {
            return;
        }
        let entry = self.producers.entry(header.producer_id).or_default();
        if header.producer_epoch != entry.epoch {
            entry.epoch = header.producer_epoch;
            entry.batches.clear();
        }
        // A client's header may carry any value: -1 is "none", as stored.
        entry.last_timestamp = header.max_timestamp.max(-1);
        // A batch without sequence numbers (the broker's own transactional
        // writes, as Kafka's coordinator-origin batches) has nothing to dedupe.
        if header.base_sequence >= 0 {
            if entry.batches.len() == CACHED_BATCHES_PER_PRODUCER {
                entry.batches.pop_front();
            }
            entry.batches.push_back(BatchSequence {
                first_sequence: header.base_sequence,
                last_sequence: header.last_sequence(),
                base_offset: header.base_offset,
            });
        }
        if header.is_transactional() && entry.current_txn_first_offset.is_none() {
            entry.current_txn_first_offset = Some(header.base_offset);
            self.ongoing.insert(header.base_offset, header.producer_id);
        }
    }

    /// Records a marker that is now in the log at `header.base_offset`;
    /// returns the transaction it ended, if the producer had one open here
    /// (a marker with nothing open is written but ends nothing, as in Kafka).
    pub fn record_marker(
        &mut self,
        header: &BatchHeader,
        marker: &EndTxnMarker,
    ) -> Option<CompletedTxn> {
        let entry = self.producers.entry(header.producer_id).or_default();
        if header.producer_epoch != entry.epoch {
            entry.epoch = header.producer_epoch;
            entry.batches.clear();
        }
        entry.coordinator_epoch = marker.coordinator_epoch;
        entry.last_timestamp = header.max_timestamp.max(-1);
        let first_offset = entry.current_txn_first_offset.take()?;
        self.ongoing.remove(&first_offset);
        self.deciding.insert(
            first_offset,
            Deciding {
                producer_id: header.producer_id,
                marker_offset: header.base_offset,
            },
        );
        Some(CompletedTxn {
            producer_id: header.producer_id,
            first_offset,
            last_offset: header.base_offset,
            aborted: !marker.commit,
        })
    }

    /// The last stable offset to store with an aborted transaction whose
    /// marker is at `marker_offset` (recorded just before): the first offset
    /// of the oldest transaction still open, else the marker's offset + 1.
    pub fn stable_offset_after_marker(&self, marker_offset: i64) -> i64 {
        self.ongoing
            .keys()
            .next()
            .copied()
            .unwrap_or(marker_offset + 1)
    }

    /// The high watermark moved to `high_watermark`: an ended transaction
    /// whose marker is below it is stable.
    pub fn on_high_watermark(&mut self, high_watermark: i64) {
        self.deciding
            .retain(|_, d| d.marker_offset >= high_watermark);
    }

    /// The first offset of the oldest transaction that is open or whose
    /// marker is not yet readable; None when there is none.
    pub fn first_unstable_offset(&self) -> Option<i64> {
        let ongoing = self.ongoing.keys().next();
        let deciding = self.deciding.keys().next();
        ongoing.into_iter().chain(deciding).min().copied()
    }

    /// Whether `producer_id` has a transaction open here at `producer_epoch`.
    pub fn has_open_transaction(&self, producer_id: i64, producer_epoch: i16) -> bool {
        self.producers
            .get(&producer_id)
            .is_some_and(|e| e.epoch == producer_epoch && e.current_txn_first_offset.is_some())
    }

    /// The producers with a transaction open on this partition: (producer
    /// id, epoch, first offset).
    pub fn open_transactions(&self) -> Vec<(i64, i16, i64)> {
        self.ongoing
            .iter()
            .map(|(&first, &id)| (id, self.producers[&id].epoch, first))
            .collect()
    }

    /// Forgets batches and markers at or after `offset` (their writes were
    /// rolled back): a transaction that began there is no longer open, one
    /// whose marker was there is open again.
    pub fn truncate_from(&mut self, offset: i64) {
        for entry in self.producers.values_mut() {
            while entry
                .batches
                .back()
                .is_some_and(|b| b.base_offset >= offset)
            {
                entry.batches.pop_back();
            }
            if entry.current_txn_first_offset.is_some_and(|f| f >= offset) {
                entry.current_txn_first_offset = None;
            }
        }
        self.ongoing.retain(|&first, _| first < offset);
        let reopened: Vec<(i64, Deciding)> = self
            .deciding
            .iter()
            .filter(|(_, d)| d.marker_offset >= offset)
            .map(|(&first, &d)| (first, d))
            .collect();
        for (first, d) in reopened {
            self.deciding.remove(&first);
            if first < offset {
                if let Some(entry) = self.producers.get_mut(&d.producer_id) {
                    entry.current_txn_first_offset = Some(first);
                    self.ongoing.insert(first, d.producer_id);
                }
            }
        }
        self.producers.retain(|_, entry| !entry.is_empty());
    }

    /// Every producer this partition remembers, by id (DescribeProducers).
    pub fn active_producers(&self) -> Vec<ActiveProducer> {
        let mut all: Vec<ActiveProducer> = self
            .producers
            .iter()
            .map(|(&producer_id, e)| ActiveProducer {
                producer_id,
                epoch: e.epoch,
                last_sequence: e.batches.back().map_or(-1, |b| b.last_sequence),
                last_timestamp: e.last_timestamp,
                coordinator_epoch: e.coordinator_epoch,
                current_txn_start_offset: e.current_txn_first_offset.unwrap_or(-1),
            })
            .collect();
        all.sort_unstable_by_key(|p| p.producer_id);
        all
    }

    pub fn producer_count(&self) -> usize {
        self.producers.len()
    }

    /// Appends the table to `out` (the clean-shutdown snapshot, `docs/FORMAT.md`):
    /// a producer count, then per producer (by id) its id, epoch, coordinator
    /// epoch, open transaction's first offset (-1: none), last timestamp, batch count and
    /// batches (first sequence, last sequence, base offset), big-endian.
    /// Written only when no write is in flight, so no transaction is deciding.
    pub fn encode_snapshot(&self, out: &mut Vec<u8>) {
        let mut ids: Vec<i64> = self.producers.keys().copied().collect();
        ids.sort_unstable();
        out.extend_from_slice(&(ids.len() as u32).to_be_bytes());
        for id in ids {
            let entry = &self.producers[&id];
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(&entry.epoch.to_be_bytes());
            out.extend_from_slice(&entry.coordinator_epoch.to_be_bytes());
            out.extend_from_slice(&entry.current_txn_first_offset.unwrap_or(-1).to_be_bytes());
            out.extend_from_slice(&entry.last_timestamp.to_be_bytes());
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
    /// malformed: truncated, a timestamp below -1, a producer id that is negative or repeated (or not
    /// increasing), more than [`CACHED_BATCHES_PER_PRODUCER`] batches, an entry
    /// that says nothing, an open transaction or base offsets that lie outside
    /// `[0, log_end_offset)`, or base offsets that do not increase.
    /// Counts are checked against the bytes present before anything is allocated.
    ///
    /// [`encode_snapshot`]: ProducerStateTable::encode_snapshot
    pub fn decode_snapshot(
        bytes: &[u8],
        log_end_offset: i64,
    ) -> Option<(ProducerStateTable, usize)> {
        const PRODUCER_FIXED_BYTES: usize = 8 + 2 + 4 + 8 + 8 + 1;
        let mut at = 0usize;
        let mut take = |n: usize| -> Option<&[u8]> {
            let slice = bytes.get(at..at.checked_add(n)?)?;
            at += n;
            Some(slice)
        };
        let count = u32::from_be_bytes(take(4)?.try_into().ok()?) as usize;
        if count > bytes.len() / PRODUCER_FIXED_BYTES {
            return None;
        }
        let mut producers = HashMap::with_capacity(count);
        let mut ongoing = BTreeMap::new();
        let mut previous_id: Option<i64> = None;
        for _ in 0..count {
            let id = i64::from_be_bytes(take(8)?.try_into().ok()?);
            let epoch = i16::from_be_bytes(take(2)?.try_into().ok()?);
            let coordinator_epoch = i32::from_be_bytes(take(4)?.try_into().ok()?);
            let txn_first = i64::from_be_bytes(take(8)?.try_into().ok()?);
            let last_timestamp = i64::from_be_bytes(take(8)?.try_into().ok()?);
            let batch_count = usize::from(take(1)?[0]);
            let current_txn_first_offset = match txn_first {
                -1 => None,
                first if (0..log_end_offset).contains(&first) => Some(first),
                _ => return None,
            };
            if id < 0
                || last_timestamp < -1
                || previous_id.is_some_and(|p| p >= id)
                || batch_count > CACHED_BATCHES_PER_PRODUCER
                || coordinator_epoch < -1
            {
                return None;
            }
            if let Some(first) = current_txn_first_offset {
                // Two producers cannot open a transaction at the same offset.
                if ongoing.insert(first, id).is_some() {
                    return None;
                }
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
            let entry = ProducerEntry {
                epoch,
                batches,
                coordinator_epoch,
                current_txn_first_offset,
                last_timestamp,
            };
            if entry.is_empty() {
                return None;
            }
            producers.insert(id, entry);
        }
        Some((
            ProducerStateTable {
                producers,
                ongoing,
                deciding: BTreeMap::new(),
            },
            at,
        ))
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

    fn transactional(mut header: BatchHeader) -> BatchHeader {
        header.attributes |= 0x10;
        header
    }

    fn marker_at(producer_id: i64, epoch: i16, offset: i64) -> BatchHeader {
        let mut header = batch(producer_id, epoch, -1, 1, offset);
        header.attributes |= 0x30;
        header
    }

    fn end(commit: bool, coordinator_epoch: i32) -> EndTxnMarker {
        EndTxnMarker {
            commit,
            coordinator_epoch,
        }
    }

    #[test]
    fn a_transaction_opens_with_its_first_batch_and_ends_with_its_marker() {
        let mut table = ProducerStateTable::default();
        assert_eq!(table.first_unstable_offset(), None);
        // Producer 1 opens at 10, producer 2 at 12.
        table.record(&transactional(batch(1, 0, 0, 2, 10)));
        table.record(&transactional(batch(2, 0, 0, 1, 12)));
        table.record(&transactional(batch(1, 0, 2, 1, 13)));
        assert_eq!(table.first_unstable_offset(), Some(10));
        assert_eq!(table.open_transactions(), [(1, 0, 10), (2, 0, 12)]);
        // While its transaction is open, producer 1 may not write outside it.
        assert_eq!(
            table.check(&batch(1, 0, 3, 1, -1)),
            Err(SequenceError::ExpectedTransactional)
        );
        assert_eq!(
            table.check(&transactional(batch(1, 0, 3, 1, -1))),
            Ok(SequenceCheck::Append)
        );
        // Producer 1 aborts at 14: deciding until the marker is readable.
        let marker = marker_at(1, 0, 14);
        assert_eq!(table.check_marker(&marker, &end(false, 3)), Ok(()));
        let done = table.record_marker(&marker, &end(false, 3)).unwrap();
        assert_eq!(
            done,
            CompletedTxn {
                producer_id: 1,
                first_offset: 10,
                last_offset: 14,
                aborted: true
            }
        );
        // The stable offset stored with it: producer 2's open transaction.
        assert_eq!(table.stable_offset_after_marker(14), 12);
        assert_eq!(table.first_unstable_offset(), Some(10));
        table.on_high_watermark(14);
        assert_eq!(
            table.first_unstable_offset(),
            Some(10),
            "marker not yet readable"
        );
        table.on_high_watermark(15);
        assert_eq!(table.first_unstable_offset(), Some(12));
        // An older coordinator, an older epoch, are refused.
        let late = marker_at(2, 0, 15);
        assert_eq!(
            table.check_marker(&marker_at(1, 0, 15), &end(true, 2)),
            Err(SequenceError::CoordinatorFenced)
        );
        assert_eq!(
            table.check_marker(&marker_at(1, -1, 15), &end(true, 3)),
            Err(SequenceError::InvalidEpoch)
        );
        // Producer 2 commits; a second marker for it ends nothing.
        assert!(table
            .record_marker(&late, &end(true, 3))
            .is_some_and(|d| !d.aborted));
        assert_eq!(table.stable_offset_after_marker(15), 16);
        assert_eq!(
            table.record_marker(&marker_at(2, 0, 16), &end(true, 3)),
            None
        );
        table.on_high_watermark(17);
        assert_eq!(table.first_unstable_offset(), None);
        assert!(table.open_transactions().is_empty());
        // Producer 1 writes outside a transaction again.
        assert_eq!(
            table.check(&batch(1, 0, 3, 1, -1)),
            Ok(SequenceCheck::Append)
        );
    }

    #[test]
    fn a_rollback_reopens_a_transaction_whose_marker_it_removes() {
        let mut table = ProducerStateTable::default();
        table.record(&transactional(batch(1, 0, 0, 1, 0)));
        table.record_marker(&marker_at(1, 0, 1), &end(true, 0));
        table.record(&transactional(batch(2, 0, 0, 1, 2)));
        // Writes from offset 1 on failed: the marker and producer 2's batch go.
        table.truncate_from(1);
        assert_eq!(table.open_transactions(), [(1, 0, 0)]);
        assert_eq!(table.first_unstable_offset(), Some(0));
        assert_eq!(
            table.check(&batch(1, 0, 1, 1, -1)),
            Err(SequenceError::ExpectedTransactional)
        );
        assert_eq!(table.producer_count(), 1, "producer 2 had nothing left");
    }

    #[test]
    fn the_snapshot_keeps_open_transactions_and_coordinator_epochs() {
        let mut table = ProducerStateTable::default();
        table.record(&transactional(batch(1, 2, 0, 1, 0)));
        table.record(&transactional(batch(2, 0, 0, 1, 1)));
        table.record_marker(&marker_at(2, 0, 2), &end(false, 9));
        table.on_high_watermark(3);
        let mut bytes = Vec::new();
        table.encode_snapshot(&mut bytes);
        let (decoded, used) = ProducerStateTable::decode_snapshot(&bytes, 3).unwrap();
        assert_eq!(used, bytes.len());
        assert_eq!(decoded.open_transactions(), [(1, 2, 0)]);
        assert_eq!(decoded.first_unstable_offset(), Some(0));
        assert_eq!(
            decoded.check_marker(&marker_at(2, 0, 3), &end(true, 8)),
            Err(SequenceError::CoordinatorFenced)
        );
        // An open transaction past the log end is not believed.
        assert!(ProducerStateTable::decode_snapshot(&bytes, 0).is_none());
        // Every truncation and every flipped byte: None or a table, never a panic.
        for len in 0..bytes.len() {
            assert!(ProducerStateTable::decode_snapshot(&bytes[..len], 3).is_none());
        }
        for at in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[at] ^= 0x41;
            let _ = ProducerStateTable::decode_snapshot(&flipped, 3);
        }
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
