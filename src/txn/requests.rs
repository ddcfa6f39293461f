//! What the transaction coordinator decides for each request about one
//! transactional id, as Kafka's `TransactionCoordinator` decides it (the
//! order of the checks included, since it decides which error a client
//! sees). Pure: the caller looks the id up, writes what is to be written to
//! the transaction log, and completes or abandons the transition.

use crate::protocol::errors::ErrorCode;
use crate::txn::state::{
    TopicPartition, Transit, TransitionError, TxnMetadata, TxnState, EPOCH_EXHAUSTED,
    NO_PRODUCER_ID, TV_CLASSIC, TV_EPOCH_BUMP,
};

/// What InitProducerId does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitDecision {
    Error(ErrorCode),
    /// Call again with a fresh producer id (the epoch is exhausted).
    NeedProducerId,
    /// Write this (state Empty), then answer with its id and epoch.
    Write(Transit),
    /// A transaction is open: write this PrepareAbort (the old instance is
    /// fenced by its epoch), complete the abort, and answer
    /// CONCURRENT_TRANSACTIONS; the client retries.
    FenceAndAbort(Transit),
}

/// What EndTxn (or AddPartitionsToTxn) does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndDecision {
    Error(ErrorCode),
    /// Nothing to write (a retry of what is done): answer at once with this
    /// producer id and epoch (TV2; -1, -1 for the classic protocol).
    Done(i64, i16),
    NeedProducerId,
    /// Write this PrepareCommit/PrepareAbort, then [`after_prepare`].
    Prepare(Transit),
}

/// What AddPartitionsToTxn / AddOffsetsToTxn does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddDecision {
    Error(ErrorCode),
    /// Every partition is in the transaction already.
    Done,
    Write(Transit),
}

/// Kafka's valid transaction timeouts: positive and at most
/// `transaction.max.timeout.ms`.
pub fn valid_timeout(timeout_ms: i32, max_timeout_ms: i32) -> bool {
    timeout_ms > 0 && timeout_ms <= max_timeout_ms
}

fn transition_error(error: TransitionError) -> ErrorCode {
    match error {
        TransitionError::Pending(_) => ErrorCode::ConcurrentTransactions,
        TransitionError::ProducerFenced => ErrorCode::ProducerFenced,
        TransitionError::InProgress => ErrorCode::ConcurrentTransactions,
        TransitionError::Invalid { .. } => ErrorCode::InvalidTxnState,
        // Kafka throws here, which the client sees as UNKNOWN_SERVER_ERROR.
        TransitionError::EpochExhausted => ErrorCode::UnknownServerError,
    }
}

/// InitProducerId for an id the coordinator knows (or has just created at
/// epoch -1). `expected` is the (producer id, epoch) the client names
/// (KIP-360), `new_producer_id` a fresh id if the caller has one.
pub fn init_producer_id(
    meta: &mut TxnMetadata,
    timeout_ms: i32,
    expected: Option<(i64, i16)>,
    now_ms: i64,
    new_producer_id: Option<i64>,
    cluster_tv: i16,
) -> InitDecision {
    if meta.pending.is_some() {
        return InitDecision::Error(ErrorCode::ConcurrentTransactions);
    }
    if let Some((expected_id, expected_epoch)) = expected {
        let valid = meta.producer_epoch == -1
            || expected_id == meta.producer_id
            || (expected_id == meta.prev_producer_id && expected_epoch >= EPOCH_EXHAUSTED);
        if !valid {
            return InitDecision::Error(ErrorCode::ProducerFenced);
        }
    }
    match meta.state {
        TxnState::PrepareAbort | TxnState::PrepareCommit => {
            InitDecision::Error(ErrorCode::ConcurrentTransactions)
        }
        TxnState::Empty | TxnState::CompleteAbort | TxnState::CompleteCommit => {
            let rotate = meta.epoch_exhausted()
                && expected.is_none_or(|(_, epoch)| epoch == meta.producer_epoch);
            let transit = if rotate {
                let Some(id) = new_producer_id else {
                    return InitDecision::NeedProducerId;
                };
                meta.prepare_rotation(id, timeout_ms, now_ms, expected.is_some())
            } else {
                meta.prepare_increment_epoch(timeout_ms, expected.map(|(_, e)| e), now_ms)
            };
            match transit {
                Ok(t) => InitDecision::Write(t),
                Err(e) => InitDecision::Error(transition_error(e)),
            }
        }
        TxnState::Ongoing => match fence_and_prepare_abort(meta, cluster_tv, now_ms) {
            Ok(t) => InitDecision::FenceAndAbort(t),
            Err(code) => InitDecision::Error(code),
        },
        TxnState::Dead | TxnState::PrepareEpochFence => {
            InitDecision::Error(ErrorCode::UnknownServerError)
        }
    }
}

/// The abort the coordinator makes of an open transaction (a new instance
/// initialised, or the transaction timed out): the producer is fenced by an
/// epoch one above its own, and PrepareAbort is proposed with that epoch.
/// `cluster_tv` decides how, as in Kafka: the classic way takes the bumped
/// epoch in memory before the write (and remembers it if the write fails, so
/// that the next fence does not bump again); TV2 bumps in the PrepareAbort
/// itself.
pub fn fence_and_prepare_abort(
    meta: &mut TxnMetadata,
    cluster_tv: i16,
    now_ms: i64,
) -> Result<Transit, ErrorCode> {
    let fence = meta.prepare_fence_epoch().map_err(transition_error)?;
    meta.abandon();
    if cluster_tv >= TV_EPOCH_BUMP {
        meta.prepare_abort_or_commit(false, TV_EPOCH_BUMP, NO_PRODUCER_ID, now_ms, false)
    } else {
        meta.producer_epoch = fence.producer_epoch;
        meta.last_producer_epoch = -1;
        meta.prepare_abort_or_commit(false, TV_CLASSIC, NO_PRODUCER_ID, now_ms, false)
    }
    .map_err(transition_error)
}

/// A fence's PrepareAbort write failed: under the classic protocol the epoch
/// stays bumped in memory, and the next fence must not bump it again.
pub fn fence_write_failed(meta: &mut TxnMetadata, cluster_tv: i16) {
    meta.abandon();
    if cluster_tv < TV_EPOCH_BUMP {
        meta.failed_epoch_fence = true;
    }
}

/// AddPartitionsToTxn (not verify-only) and AddOffsetsToTxn.
pub fn add_partitions(
    meta: &mut TxnMetadata,
    producer_id: i64,
    producer_epoch: i16,
    partitions: &[TopicPartition],
    now_ms: i64,
    client_tv: i16,
) -> AddDecision {
    if meta.pending.is_some() {
        return AddDecision::Error(ErrorCode::ConcurrentTransactions);
    }
    if meta.producer_id != producer_id {
        return AddDecision::Error(ErrorCode::InvalidProducerIdMapping);
    }
    if meta.producer_epoch != producer_epoch {
        return AddDecision::Error(ErrorCode::ProducerFenced);
    }
    if matches!(meta.state, TxnState::PrepareCommit | TxnState::PrepareAbort) {
        return AddDecision::Error(ErrorCode::ConcurrentTransactions);
    }
    if meta.state == TxnState::Ongoing && partitions.iter().all(|p| meta.partitions.contains(p)) {
        return AddDecision::Done;
    }
    match meta.prepare_add_partitions(partitions.iter().cloned(), now_ms, client_tv) {
        Ok(t) => AddDecision::Write(t),
        Err(e) => AddDecision::Error(transition_error(e)),
    }
}

/// AddPartitionsToTxn with VerifyOnly (KIP-890 part 1): for each partition,
/// no error if it is in the transaction, TRANSACTION_ABORTABLE if not; or one
/// error for all. Writes nothing and ignores a pending transition (the
/// partition's own check at append time is the last word).
pub fn verify_partitions(
    meta: &TxnMetadata,
    producer_id: i64,
    producer_epoch: i16,
    partitions: &[TopicPartition],
) -> Result<Vec<Option<ErrorCode>>, ErrorCode> {
    if meta.producer_id != producer_id {
        return Err(ErrorCode::InvalidProducerIdMapping);
    }
    if meta.producer_epoch != producer_epoch {
        return Err(ErrorCode::ProducerFenced);
    }
    if matches!(meta.state, TxnState::PrepareCommit | TxnState::PrepareAbort) {
        return Err(ErrorCode::ConcurrentTransactions);
    }
    Ok(partitions
        .iter()
        .map(|p| (!meta.partitions.contains(p)).then_some(ErrorCode::TransactionAbortable))
        .collect())
}

/// EndTxn from a client. `client_tv` is 2 for EndTxn v5+ (the epoch goes up
/// at every end), else 0.
pub fn end_txn(
    meta: &mut TxnMetadata,
    producer_id: i64,
    producer_epoch: i16,
    commit: bool,
    client_tv: i16,
    now_ms: i64,
    new_producer_id: Option<i64>,
) -> EndDecision {
    if client_tv >= TV_EPOCH_BUMP {
        end_txn_tv2(
            meta,
            producer_id,
            producer_epoch,
            commit,
            now_ms,
            new_producer_id,
        )
    } else {
        end_txn_classic(meta, producer_id, producer_epoch, commit, now_ms)
    }
}

fn end_txn_classic(
    meta: &mut TxnMetadata,
    producer_id: i64,
    producer_epoch: i16,
    commit: bool,
    now_ms: i64,
) -> EndDecision {
    use TxnState::*;
    if meta.producer_id != producer_id {
        return EndDecision::Error(ErrorCode::InvalidProducerIdMapping);
    }
    if producer_epoch != meta.producer_epoch {
        return EndDecision::Error(ErrorCode::ProducerFenced);
    }
    if meta.pending.is_some() {
        return EndDecision::Error(ErrorCode::ConcurrentTransactions);
    }
    let error = |code| EndDecision::Error(code);
    match (meta.state, commit) {
        (Ongoing, _) => {
            match meta.prepare_abort_or_commit(commit, TV_CLASSIC, NO_PRODUCER_ID, now_ms, false) {
                Ok(t) => EndDecision::Prepare(t),
                Err(e) => error(transition_error(e)),
            }
        }
        (CompleteCommit, true) | (CompleteAbort, false) => EndDecision::Done(-1, -1),
        (PrepareCommit, true) | (PrepareAbort, false) => error(ErrorCode::ConcurrentTransactions),
        (Dead, _) | (PrepareEpochFence, _) => error(ErrorCode::UnknownServerError),
        _ => error(ErrorCode::InvalidTxnState),
    }
}

fn end_txn_tv2(
    meta: &mut TxnMetadata,
    producer_id: i64,
    producer_epoch: i16,
    commit: bool,
    now_ms: i64,
    new_producer_id: Option<i64>,
) -> EndDecision {
    use TxnState::*;
    let retry_on_overflow = meta.prev_producer_id == producer_id
        && producer_epoch == EPOCH_EXHAUSTED
        && meta.producer_epoch == 0;
    let retry_on_bump = i32::from(meta.producer_epoch) == i32::from(producer_epoch) + 1;
    let valid_epoch = match meta.state {
        PrepareCommit | PrepareAbort => retry_on_bump,
        CompleteCommit | CompleteAbort => {
            retry_on_bump || retry_on_overflow || producer_epoch == meta.producer_epoch
        }
        _ => producer_epoch == meta.producer_epoch,
    };
    let is_retry = retry_on_bump || retry_on_overflow;
    if meta.pending.is_some() {
        return EndDecision::Error(ErrorCode::ConcurrentTransactions);
    }
    if meta.producer_id != producer_id && !retry_on_overflow {
        return EndDecision::Error(ErrorCode::InvalidProducerIdMapping);
    }
    if !valid_epoch {
        return EndDecision::Error(ErrorCode::ProducerFenced);
    }
    let done = EndDecision::Done(meta.producer_id, meta.producer_epoch);
    let (prepare, empty_abort) = match (meta.state, commit) {
        (Ongoing, _) => (true, false),
        (CompleteCommit, true) if is_retry => return done,
        (CompleteAbort, false) if is_retry => return done,
        (CompleteCommit, false) if is_retry => {
            return EndDecision::Error(ErrorCode::InvalidTxnState)
        }
        (CompleteCommit, false) | (CompleteAbort, false) | (Empty, false) => (true, true),
        (PrepareCommit, true) | (PrepareAbort, false) => {
            return EndDecision::Error(ErrorCode::ConcurrentTransactions)
        }
        (Dead, _) | (PrepareEpochFence, _) => {
            return EndDecision::Error(ErrorCode::UnknownServerError)
        }
        _ => return EndDecision::Error(ErrorCode::InvalidTxnState),
    };
    debug_assert!(prepare);
    let next_producer_id = if meta.epoch_exhausted() {
        match new_producer_id {
            Some(id) => id,
            None => return EndDecision::NeedProducerId,
        }
    } else {
        NO_PRODUCER_ID
    };
    match meta.prepare_abort_or_commit(commit, TV_EPOCH_BUMP, next_producer_id, now_ms, empty_abort)
    {
        Ok(t) => EndDecision::Prepare(t),
        Err(e) => EndDecision::Error(transition_error(e)),
    }
}

/// After the Prepare write of an EndTxn: re-checks the id (another request
/// may have run meanwhile) and proposes the completion, which stays pending
/// while the markers are written. Returns the completion and the (producer
/// id, epoch) to answer the client with (-1, -1 for the classic protocol).
pub fn after_prepare(
    meta: &mut TxnMetadata,
    producer_id: i64,
    producer_epoch: i16,
    commit: bool,
    client_tv: i16,
    now_ms: i64,
) -> Result<(Transit, (i64, i16)), ErrorCode> {
    if meta.producer_id != producer_id {
        return Err(ErrorCode::InvalidProducerIdMapping);
    }
    let epoch_ok = if client_tv >= TV_EPOCH_BUMP {
        meta.producer_epoch == producer_epoch
            || i32::from(meta.producer_epoch) == i32::from(producer_epoch) + 1
    } else {
        meta.producer_epoch == producer_epoch
    };
    if !epoch_ok {
        return Err(ErrorCode::ProducerFenced);
    }
    if meta.pending.is_some() {
        return Err(ErrorCode::ConcurrentTransactions);
    }
    let expected = if commit {
        TxnState::PrepareCommit
    } else {
        TxnState::PrepareAbort
    };
    if meta.state != expected {
        return Err(ErrorCode::InvalidTxnState);
    }
    let complete = meta.prepare_complete(now_ms).map_err(transition_error)?;
    let answer = if client_tv >= TV_EPOCH_BUMP {
        (complete.producer_id, complete.producer_epoch)
    } else {
        (-1, -1)
    };
    Ok((complete, answer))
}

/// Whether the coordinator aborts this transaction now: open (not being
/// decided) for longer than its timeout.
pub fn timed_out(meta: &TxnMetadata, now_ms: i64) -> bool {
    meta.pending.is_none()
        && meta.state == TxnState::Ongoing
        && meta.start_ms.saturating_add(i64::from(meta.timeout_ms)) < now_ms
}

/// Whether an idle id has gone unused for `expiration_ms` and may be removed.
pub fn expired(meta: &TxnMetadata, now_ms: i64, expiration_ms: i64) -> bool {
    meta.pending.is_none()
        && meta.state.is_idle()
        && meta.last_update_ms <= now_ms.saturating_sub(expiration_ms)
}

#[cfg(test)]
mod tests;
