//! Offsets committed inside a transaction (TxnOffsetCommit, KIP-98/KIP-447).
//!
//! They are appended to the group's partition of the offsets log as a
//! transactional batch of the producer, and held aside until the
//! transaction's marker reaches that partition: a commit marker makes them
//! the group's committed offsets (unless a later plain commit replaced one),
//! an abort drops them. Until then OffsetFetch with `require_stable` answers
//! UNSTABLE_OFFSET_COMMIT for them. The replay of a partition when it is
//! loaded does the same from the log (`offsets.rs`).
//!
//! As for data partitions (KIP-890 part 1), a commit for a producer with no
//! transaction open in the partition is written only if the verification
//! guard taken before asking the transaction coordinator still holds (no
//! marker came in between).

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::records::Compression;

use crate::group::offsets::{
    coordinator_error, offsets_partition, CommittedOffset, OffsetKey, OffsetStore,
};
use crate::io::clock::now_ms;
use crate::partition::local::{TxnAppendCheck, TxnAppendError};
use crate::protocol::batch::{BatchHeader, ValidatedRecords};
use crate::protocol::control::EndTxnMarker;
use crate::protocol::encode::{self, ProducerFields};
use crate::protocol::errors::ErrorCode;
use crate::storage::commit::GroupCommit;

impl OffsetStore {
    /// Before a transactional commit of `producer_id` to `group`'s
    /// partition: None if its transaction is open there already, else the
    /// guard to write with once the coordinator confirms the partition.
    /// `tv2`: a transaction-version-2 client (TxnOffsetCommit v5+), whose
    /// verification survives the previous transaction's marker.
    pub fn begin_txn_commit(
        &self,
        group: &str,
        producer_id: i64,
        epoch: i16,
        tv2: bool,
    ) -> Option<u64> {
        let loaded = self.loaded(offsets_partition(group))?;
        match loaded.partition.begin_txn_append(producer_id, epoch, tv2) {
            TxnAppendCheck::Open => None,
            TxnAppendCheck::Verify(guard) => Some(guard),
        }
    }

    /// Appends `offsets` of `group` as part of `producer_id`'s transaction
    /// and holds them until its marker. INVALID_TXN_STATE if the transaction
    /// is not open here and `guard` no longer holds.
    pub async fn write_transactional(
        &self,
        commit: &Rc<GroupCommit>,
        group: &str,
        producer_id: i64,
        epoch: i16,
        guard: Option<u64>,
        offsets: Vec<((String, i32), CommittedOffset)>,
    ) -> Result<(), ErrorCode> {
        let partition = offsets_partition(group);
        let loaded = self.loaded(partition).ok_or(ErrorCode::NotCoordinator)?;
        if offsets.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        let producer = ProducerFields {
            producer_id,
            producer_epoch: epoch,
            // The broker's own transactional writes carry no sequence.
            base_sequence: -1,
        };
        let records: Vec<_> = offsets
            .iter()
            .enumerate()
            .map(|(i, ((topic, p), value))| {
                let key = OffsetKey {
                    group: group.to_string(),
                    topic: topic.clone(),
                    partition: *p,
                };
                let key = Bytes::from(serde_json::to_vec(&key).expect("keys serialize"));
                let value = Bytes::from(serde_json::to_vec(value).expect("offsets serialize"));
                let mut record =
                    encode::record(i as i64, now, Some(key), Some(value), Some(producer));
                record.transactional = true;
                record
            })
            .collect();
        let batch = encode::encode_batch(&records, Compression::None);
        let header = BatchHeader::parse(&batch).map_err(|_| ErrorCode::UnknownServerError)?;
        let validated = ValidatedRecords {
            batch_count: 1,
            record_count: records.len() as u64,
            first: header,
            last: header,
            max_timestamp: header.max_timestamp,
            offset_of_max_timestamp_delta: i64::from(header.last_offset_delta),
        };
        let sequence = self.next_sequence.get();
        self.next_sequence.set(sequence + 1);
        // Held before the append starts, in the log's order: a marker
        // appended behind this batch while it is written (a fence or a
        // timeout aborting the transaction) must find and decide them.
        // What each key held before (an earlier commit of this transaction),
        // to put back if this append fails.
        if !self.is_current(&loaded) {
            return Err(ErrorCode::NotCoordinator);
        }
        let mut displaced = Vec::with_capacity(offsets.len());
        {
            let mut pending = self.pending.borrow_mut();
            let held = pending.entry((producer_id, partition)).or_default();
            for ((topic, p), value) in offsets {
                let key = (group.to_string(), topic, p);
                let before = held.insert(key.clone(), (sequence, value));
                displaced.push((key, before));
            }
        }
        let appended = loaded
            .partition
            .append_transactional(
                commit,
                batch,
                &validated,
                loaded.acks(),
                guard,
                &loaded.stop,
            )
            .await;
        if !self.is_current(&loaded) {
            // Given up (or loaded anew) meanwhile: the state is not this
            // write's any more; the new load replays what the log holds.
            return Err(ErrorCode::NotCoordinator);
        }
        if let Err(error) = appended {
            // Not written: undo what this commit held, in `pending` (putting
            // back what it displaced, unless a later commit replaced it) and
            // in any marker's decision taken meanwhile.
            let mut pending = self.pending.borrow_mut();
            if let Some(held) = pending.get_mut(&(producer_id, partition)) {
                for (key, before) in displaced {
                    if held.get(&key).is_some_and(|(seq, _)| *seq == sequence) {
                        match before {
                            Some(value) => held.insert(key, value),
                            None => held.remove(&key),
                        };
                    }
                }
                if held.is_empty() {
                    pending.remove(&(producer_id, partition));
                }
            }
            for held in self.deciding.borrow_mut().values_mut() {
                held.retain(|_, (seq, _)| *seq != sequence);
            }
            return Err(match error {
                TxnAppendError::Produce(e) => coordinator_error(&e),
                other => other.error_code(),
            });
        }
        Ok(())
    }

    /// The marker of `producer_id`'s transaction for offsets-log
    /// `partition`: written, then the held offsets are applied (commit) or
    /// dropped (abort).
    pub async fn complete_txn(
        &self,
        commit_rounds: &Rc<GroupCommit>,
        partition: i32,
        producer_id: i64,
        epoch: i16,
        marker: EndTxnMarker,
    ) -> Result<(), ErrorCode> {
        let loaded = self
            .loaded(partition)
            .ok_or(ErrorCode::NotLeaderOrFollower)?;
        // What the marker decides is what the log holds before it: taken
        // now, as the marker's place in the log is reserved, and unstable
        // (`deciding`) until the marker is durable.
        let ticket = self.next_sequence.get();
        self.next_sequence.set(ticket + 1);
        if let Some(held) = self.pending.borrow_mut().remove(&(producer_id, partition)) {
            self.deciding.borrow_mut().insert(ticket, held);
        }
        let written = loaded
            .partition
            .write_marker(commit_rounds, producer_id, epoch, marker, &loaded.stop)
            .await;
        let decided = self.deciding.borrow_mut().remove(&ticket);
        if !self.is_current(&loaded) {
            // Given up (or loaded anew) meanwhile: the new load replays
            // the marker if it was written.
            return Err(ErrorCode::NotLeaderOrFollower);
        }
        if let Err(error) = written {
            // The coordinator sends the marker again: still undecided.
            if let Some(decided) = decided {
                let mut pending = self.pending.borrow_mut();
                let held = pending.entry((producer_id, partition)).or_default();
                for (key, value) in decided {
                    held.entry(key).or_insert(value);
                }
            }
            return Err(error.error_code());
        }
        if let (true, Some(decided)) = (marker.commit, decided) {
            let mut offsets = self.offsets.borrow_mut();
            for ((group, topic, p), (sequence, value)) in decided {
                let table = offsets.entry(group).or_default();
                // A plain commit written after the transactional one wins.
                let key = (topic, p);
                if table.get(&key).is_none_or(|(seq, _)| *seq < sequence) {
                    table.insert(key, (sequence, value));
                }
            }
        }
        Ok(())
    }

    /// The producers with a transaction open in offsets-log `partition`:
    /// (producer id, epoch, first offset); None if this shard does not own it.
    pub fn open_transactions(&self, partition: i32) -> Option<Vec<(i64, i16, i64)>> {
        self.loaded(partition)
            .map(|loaded| loaded.partition.log().borrow().open_transactions())
    }

    /// Whether a transaction not yet decided holds an offset of `group` for
    /// (`topic`, `partition`) (OffsetFetch's `require_stable`).
    pub fn has_pending(&self, group: &str, topic: &str, partition: i32) -> bool {
        let key = (group.to_string(), topic.to_string(), partition);
        self.pending
            .borrow()
            .iter()
            .filter(|((_, p), _)| *p == offsets_partition(group))
            .any(|(_, held)| held.contains_key(&key))
            || self
                .deciding
                .borrow()
                .values()
                .any(|held| held.contains_key(&key))
    }
}
