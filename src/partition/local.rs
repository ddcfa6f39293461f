//! A partition on the shard that owns it: its log and its Kafka state. The
//! handlers talk to this, not to the storage engine's `PartitionLog`, so that
//! the rules transactions and replication add (the last stable offset,
//! leader epochs, the ISR) have one place to go.

use std::cell::RefCell;
use std::sync::Arc;

use bytes::Bytes;

use crate::partition::state::PartitionState;
use crate::protocol::batch::ValidatedRecords;
use crate::protocol::control::EndTxnMarker;
use crate::protocol::errors::ErrorCode;
use crate::storage::commit::GroupCommit;
use crate::storage::log::{
    self, AppendError, AppendOutcome, Isolation, LogRef, ReadError, ReadOutcome,
};
use crate::storage::txn_verification::Verifications;

/// A partition this shard owns. Lives on that shard only.
pub struct Partition {
    pub topic: Arc<str>,
    pub index: i32,
    /// What other shards read of it (also in the metadata image).
    state: Arc<PartitionState>,
    log: LogRef,
    /// KIP-890 part 1: per producer id, the guard of the verification under
    /// way (a transactional batch for a producer with no transaction open
    /// here is written only if the coordinator said the partition is in its
    /// transaction, and no marker came in between).
    verifications: RefCell<Verifications>,
}

/// What a transactional batch needs before it is appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnAppendCheck {
    /// The producer's transaction is open here: append.
    Open,
    /// Ask the coordinator whether this partition is in the transaction,
    /// then append with this guard.
    Verify(u64),
}

impl Partition {
    pub fn new(topic: Arc<str>, index: i32, state: Arc<PartitionState>, log: LogRef) -> Partition {
        Partition {
            topic,
            index,
            state,
            log,
            verifications: RefCell::new(Verifications::default()),
        }
    }

    /// Before a transactional batch of `producer_id` at `producer_epoch`:
    /// whether its transaction is already open here, or the guard of a
    /// verification to run with the coordinator first.
    pub fn begin_txn_append(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        tv2: bool,
    ) -> TxnAppendCheck {
        if self
            .log
            .borrow()
            .has_open_transaction(producer_id, producer_epoch)
        {
            return TxnAppendCheck::Open;
        }
        TxnAppendCheck::Verify(self.verifications.borrow_mut().begin(
            producer_id,
            producer_epoch,
            tv2,
        ))
    }

    /// Produce of a transactional batch: appended only if its transaction is
    /// open here, or `guard` is still the producer's verification (no marker
    /// since the coordinator said the partition is in the transaction); else
    /// INVALID_TXN_STATE.
    pub async fn append_transactional(
        &self,
        commit: &std::rc::Rc<GroupCommit>,
        records: Bytes,
        validated: &ValidatedRecords,
        wants_ack: bool,
        guard: Option<u64>,
    ) -> Result<AppendOutcome, TxnAppendError> {
        let header = validated.first;
        let open = self
            .log
            .borrow()
            .has_open_transaction(header.producer_id, header.producer_epoch);
        if !open
            && !self
                .verifications
                .borrow()
                .holds(header.producer_id, header.producer_epoch, guard)
        {
            return Err(TxnAppendError::NotInTransaction);
        }
        // Reserved synchronously inside: no marker can come between the check and the append.
        let outcome = log::append(&self.log, commit, records, validated, wants_ack).await;
        if !open {
            self.verifications.borrow_mut().used(header.producer_id);
        }
        outcome.map_err(TxnAppendError::Append)
    }

    /// The storage engine's log (for this layer's own housekeeping: retention,
    /// flushes, cleaning, closing).
    pub fn log(&self) -> &LogRef {
        &self.log
    }

    pub fn state(&self) -> &Arc<PartitionState> {
        &self.state
    }

    pub fn leader_epoch(&self) -> i32 {
        self.state.leader_epoch()
    }

    /// Produce: appends one validated batch, durably when the topic's flush
    /// policy says so and `wants_ack`.
    pub async fn append(
        &self,
        commit: &std::rc::Rc<GroupCommit>,
        records: Bytes,
        validated: &ValidatedRecords,
        wants_ack: bool,
    ) -> Result<AppendOutcome, AppendError> {
        log::append(&self.log, commit, records, validated, wants_ack).await
    }

    /// Fetch: whole batches from `offset`, at most `max_bytes` unless the
    /// first batch is larger and `first_may_exceed`; read_committed stops at
    /// the last stable offset and lists the aborted transactions.
    pub async fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        first_may_exceed: bool,
        zero_copy_min_bytes: Option<usize>,
        isolation: Isolation,
    ) -> Result<ReadOutcome, ReadError> {
        log::read_isolated(
            &self.log,
            offset,
            max_bytes,
            first_may_exceed,
            zero_copy_min_bytes,
            isolation,
        )
        .await
    }

    /// Ends `producer_id`'s transaction on this partition with a marker
    /// (commit or abort), durably.
    pub async fn write_marker(
        &self,
        commit: &std::rc::Rc<GroupCommit>,
        producer_id: i64,
        producer_epoch: i16,
        marker: EndTxnMarker,
    ) -> Result<AppendOutcome, AppendError> {
        // A verification under way is stale once a marker is in: the batch
        // it was for belongs to the transaction that just ended.
        self.verifications
            .borrow_mut()
            .on_marker(producer_id, producer_epoch);
        log::append_marker(&self.log, commit, producer_id, producer_epoch, marker, true).await
    }

    /// ListOffsets: (offset, timestamp) for `timestamp`, which is a time in
    /// ms (the first offset at or after it) or one of Kafka's specs: -1
    /// latest, -2 earliest, -4 earliest local, -3 the offset of the largest
    /// timestamp (KIP-734). Under read_committed the last stable offset is
    /// the end: "latest" is it, and a lookup that lands at or past it finds
    /// nothing (Kafka's `fetchOffsetForTimestamp`).
    pub async fn offset_for(
        &self,
        timestamp: i64,
        isolation: Isolation,
    ) -> Result<(i64, i64), ErrorCode> {
        let found = self.offset_for_uncommitted(timestamp).await?;
        if isolation == Isolation::ReadUncommitted {
            return Ok(found);
        }
        let stable = self.state.last_stable_offset();
        Ok(match timestamp {
            -1 => (stable, -1),
            -2 | -4 => found,
            _ if found.0 >= stable => (-1, -1),
            _ => found,
        })
    }

    async fn offset_for_uncommitted(&self, timestamp: i64) -> Result<(i64, i64), ErrorCode> {
        const LATEST: i64 = -1;
        const EARLIEST: i64 = -2;
        const MAX_TIMESTAMP: i64 = -3;
        const EARLIEST_LOCAL: i64 = -4;
        let (start, end, max) = {
            let log = self.log.borrow();
            (
                log.log_start_offset(),
                self.state.high_watermark(),
                log.max_timestamp(),
            )
        };
        match timestamp {
            LATEST => Ok((end, -1)),
            EARLIEST | EARLIEST_LOCAL => Ok((start, -1)),
            // KIP-734, as Kafka 3.8+ answers it: the offset of the record with
            // the largest timestamp, not its batch's last offset (the first
            // record at or after that timestamp is that record).
            MAX_TIMESTAMP if max.1 < 0 => Ok((-1, -1)),
            MAX_TIMESTAMP => match log::offset_for_timestamp(&self.log, max.0).await {
                Ok(Some((offset, timestamp))) => Ok((offset.max(start), timestamp)),
                Ok(None) => Ok((max.1, max.0)),
                Err(_) => Err(ErrorCode::KafkaStorageError),
            },
            t if t >= 0 => match log::offset_for_timestamp(&self.log, t).await {
                Ok(Some((offset, ts))) => Ok((offset.max(start), ts)),
                Ok(None) => Ok((-1, -1)),
                Err(_) => Err(ErrorCode::KafkaStorageError),
            },
            _ => Err(ErrorCode::InvalidRequest),
        }
    }

    /// DeleteRecords: moves the log start to `offset` (-1: the high
    /// watermark); the new log start offset.
    pub fn delete_records_before(&self, offset: i64) -> Result<i64, ErrorCode> {
        self.log.borrow_mut().delete_records_before(offset)
    }
}

/// Why a transactional batch was not appended.
#[derive(Debug, thiserror::Error)]
pub enum TxnAppendError {
    /// Kafka: INVALID_TXN_STATE, "Partition was not added to the transaction".
    #[error("Partition was not added to the transaction")]
    NotInTransaction,
    #[error(transparent)]
    Append(AppendError),
}

impl TxnAppendError {
    pub fn error_code(&self) -> ErrorCode {
        match self {
            TxnAppendError::NotInTransaction => ErrorCode::InvalidTxnState,
            TxnAppendError::Append(e) => e.error_code(),
        }
    }
}
