//! One transactional id's state, as Kafka's transaction coordinator keeps it
//! (`TransactionMetadata`): its producer id and epoch, the partitions of the
//! transaction in progress, and where that transaction is in its life.
//!
//! Pure: no I/O, time passed in. A change is made in two steps, as in Kafka:
//! a `prepare_*` method checks the transition, marks it *pending* and returns
//! the proposed values ([`Transit`]); the caller writes them to the
//! transaction log and then applies them with [`TxnMetadata::complete`] (or
//! drops them with [`TxnMetadata::abandon`] if the write failed). While a
//! transition is pending, requests for the id get CONCURRENT_TRANSACTIONS.

use std::collections::BTreeSet;

/// A partition of a transaction: (topic, partition).
pub type TopicPartition = (String, i32);

/// Kafka's "no producer id" and "no epoch".
pub const NO_PRODUCER_ID: i64 = -1;
pub const NO_EPOCH: i16 = -1;

/// An epoch at or above this is exhausted: the next bump takes a new
/// producer id instead (Kafka's `isEpochExhausted`, `Short.MAX_VALUE - 1`).
pub const EPOCH_EXHAUSTED: i16 = i16::MAX - 1;

/// The transaction version (KIP-890) a client used: 0 for the classic
/// protocol, 2 for the one that bumps the epoch at every commit or abort.
pub const TV_CLASSIC: i16 = 0;
pub const TV_EPOCH_BUMP: i16 = 2;

/// Where a transactional id's transaction is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TxnState {
    /// No transaction (after InitProducerId).
    Empty,
    /// Partitions were added: a transaction is open.
    Ongoing,
    /// EndTxn(commit) was decided; markers are being written.
    PrepareCommit,
    /// EndTxn(abort), a timeout or a fence was decided; markers are being written.
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
    /// Only ever pending: the id is being expired.
    Dead,
    /// Only ever pending: an open transaction is being fenced before its abort.
    PrepareEpochFence,
}

impl TxnState {
    pub const ALL: [TxnState; 8] = [
        TxnState::Empty,
        TxnState::Ongoing,
        TxnState::PrepareCommit,
        TxnState::PrepareAbort,
        TxnState::CompleteCommit,
        TxnState::CompleteAbort,
        TxnState::Dead,
        TxnState::PrepareEpochFence,
    ];

    /// The id written to the transaction log.
    pub fn id(self) -> i8 {
        match self {
            TxnState::Empty => 0,
            TxnState::Ongoing => 1,
            TxnState::PrepareCommit => 2,
            TxnState::PrepareAbort => 3,
            TxnState::CompleteCommit => 4,
            TxnState::CompleteAbort => 5,
            TxnState::Dead => 6,
            TxnState::PrepareEpochFence => 7,
        }
    }

    pub fn from_id(id: i8) -> Option<TxnState> {
        TxnState::ALL.into_iter().find(|s| s.id() == id)
    }

    /// The name DescribeTransactions and ListTransactions use.
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
            TxnState::Dead => "Dead",
            TxnState::PrepareEpochFence => "PrepareEpochFence",
        }
    }

    /// Exact, case-sensitive, as Kafka's `fromName`.
    pub fn from_name(name: &str) -> Option<TxnState> {
        TxnState::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The states a transition to `self` may start from (Kafka's `validPreviousStates`).
    fn valid_previous(self) -> &'static [TxnState] {
        use TxnState::*;
        match self {
            Empty => &[Empty, CompleteCommit, CompleteAbort],
            Ongoing => &[Ongoing, Empty, CompleteCommit, CompleteAbort],
            PrepareCommit => &[Ongoing],
            // From the idle states: a TV2 client's abort of nothing.
            PrepareAbort => &[
                Ongoing,
                PrepareEpochFence,
                Empty,
                CompleteCommit,
                CompleteAbort,
            ],
            CompleteCommit => &[PrepareCommit],
            CompleteAbort => &[PrepareAbort],
            Dead => &[Empty, CompleteAbort, CompleteCommit],
            PrepareEpochFence => &[Ongoing],
        }
    }

    /// A transaction is open or being decided.
    pub fn in_progress(self) -> bool {
        matches!(
            self,
            TxnState::Ongoing | TxnState::PrepareCommit | TxnState::PrepareAbort
        )
    }

    /// No transaction: the id may be re-initialised or expired.
    pub fn is_idle(self) -> bool {
        matches!(
            self,
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort
        )
    }
}

/// Why a transition cannot be made. Kafka throws for most of these (they are
/// coordinator bugs); the coordinator answers them with an error instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    #[error("a transition to {0:?} is already pending")]
    Pending(TxnState),
    #[error("cannot go from {from:?} to {to:?}")]
    Invalid { from: TxnState, to: TxnState },
    #[error("the producer epoch is exhausted")]
    EpochExhausted,
    /// KIP-360: the epoch the client expects is neither the current one nor
    /// the one before the last bump.
    #[error("producer fenced")]
    ProducerFenced,
    #[error("a transaction is in progress")]
    InProgress,
}

/// The values a transition proposes; written to the transaction log, then
/// applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transit {
    pub producer_id: i64,
    pub prev_producer_id: i64,
    pub next_producer_id: i64,
    pub producer_epoch: i16,
    pub last_producer_epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    pub partitions: BTreeSet<TopicPartition>,
    pub start_ms: i64,
    pub last_update_ms: i64,
    pub client_tv: i16,
}

/// A transactional id's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnMetadata {
    pub transactional_id: String,
    pub producer_id: i64,
    /// The producer id before the last transition that changed it (a
    /// rotation): a client retrying that InitProducerId or EndTxn still
    /// names it. Not persisted (as in Kafka).
    pub prev_producer_id: i64,
    /// TV2: the producer id the transaction being completed moves to (its
    /// epoch was exhausted); else -1. Not persisted.
    pub next_producer_id: i64,
    pub producer_epoch: i16,
    /// The epoch before the last bump, for KIP-360 retries; -1 after a
    /// restart (not persisted, as in Kafka).
    pub last_producer_epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    pub pending: Option<TxnState>,
    pub partitions: BTreeSet<TopicPartition>,
    /// When the transaction's first partition was added; -1 if none.
    pub start_ms: i64,
    pub last_update_ms: i64,
    /// The transaction version of the request that made the last transition.
    pub client_tv: i16,
    /// A classic fence's PrepareAbort write failed: the epoch is already
    /// bumped in memory, so the next fence does not bump it again.
    pub failed_epoch_fence: bool,
}

impl TxnMetadata {
    /// A transactional id seen for the first time: `producer_id`, no epoch
    /// yet (the first InitProducerId bumps it to 0), not yet in the log.
    pub fn new(
        transactional_id: &str,
        producer_id: i64,
        timeout_ms: i32,
        now_ms: i64,
    ) -> TxnMetadata {
        TxnMetadata {
            transactional_id: transactional_id.to_string(),
            producer_id,
            prev_producer_id: NO_PRODUCER_ID,
            next_producer_id: NO_PRODUCER_ID,
            producer_epoch: NO_EPOCH,
            last_producer_epoch: NO_EPOCH,
            timeout_ms,
            state: TxnState::Empty,
            pending: None,
            partitions: BTreeSet::new(),
            start_ms: -1,
            last_update_ms: now_ms,
            client_tv: TV_CLASSIC,
            failed_epoch_fence: false,
        }
    }

    /// Metadata as the transaction log holds it (what is not persisted
    /// starts at its default).
    pub fn from_transit(transactional_id: &str, t: &Transit) -> TxnMetadata {
        TxnMetadata {
            transactional_id: transactional_id.to_string(),
            producer_id: t.producer_id,
            prev_producer_id: t.prev_producer_id,
            next_producer_id: t.next_producer_id,
            producer_epoch: t.producer_epoch,
            last_producer_epoch: NO_EPOCH,
            timeout_ms: t.timeout_ms,
            state: t.state,
            pending: None,
            partitions: t.partitions.clone(),
            start_ms: t.start_ms,
            last_update_ms: t.last_update_ms,
            client_tv: t.client_tv,
            failed_epoch_fence: false,
        }
    }

    pub fn epoch_exhausted(&self) -> bool {
        self.producer_epoch >= EPOCH_EXHAUSTED
    }

    /// The current values, as a transit to `state` would start from.
    fn transit_to(&self, state: TxnState) -> Transit {
        Transit {
            producer_id: self.producer_id,
            // Every transition records the producer id it started from.
            prev_producer_id: self.producer_id,
            next_producer_id: self.next_producer_id,
            producer_epoch: self.producer_epoch,
            last_producer_epoch: self.last_producer_epoch,
            timeout_ms: self.timeout_ms,
            state,
            partitions: self.partitions.clone(),
            start_ms: self.start_ms,
            last_update_ms: self.last_update_ms,
            client_tv: self.client_tv,
        }
    }

    /// Marks `transit` pending if nothing else is and the state may go there.
    fn propose(&mut self, transit: Transit) -> Result<Transit, TransitionError> {
        if let Some(pending) = self.pending {
            return Err(TransitionError::Pending(pending));
        }
        if !transit.state.valid_previous().contains(&self.state) {
            return Err(TransitionError::Invalid {
                from: self.state,
                to: transit.state,
            });
        }
        self.pending = Some(transit.state);
        Ok(transit)
    }

    /// Fences an open transaction before aborting it (InitProducerId of a
    /// new instance, or a timeout): the epoch goes up by one, unless a
    /// classic fence already bumped it and its write failed.
    pub fn prepare_fence_epoch(&mut self) -> Result<Transit, TransitionError> {
        if self.producer_epoch == i16::MAX {
            return Err(TransitionError::EpochExhausted);
        }
        let mut t = self.transit_to(TxnState::PrepareEpochFence);
        if !self.failed_epoch_fence {
            t.producer_epoch = self.producer_epoch + 1;
        }
        self.propose(t)
    }

    /// InitProducerId: the next epoch of the same producer id. With the
    /// epoch the client expects (KIP-360): the current one bumps; the one
    /// before the last bump is a retry of that bump and gets the current
    /// epoch again; anything else is fenced.
    pub fn prepare_increment_epoch(
        &mut self,
        timeout_ms: i32,
        expected_epoch: Option<i16>,
        now_ms: i64,
    ) -> Result<Transit, TransitionError> {
        if self.epoch_exhausted() {
            return Err(TransitionError::EpochExhausted);
        }
        let current = self.producer_epoch;
        let (epoch, last) = match expected_epoch {
            None => (current + 1, NO_EPOCH),
            Some(e) if current == NO_EPOCH || e == current => (current + 1, current),
            Some(e) if e == self.last_producer_epoch => (current, self.last_producer_epoch),
            Some(_) => return Err(TransitionError::ProducerFenced),
        };
        let mut t = self.transit_to(TxnState::Empty);
        t.producer_epoch = epoch;
        t.last_producer_epoch = last;
        t.timeout_ms = timeout_ms;
        t.partitions.clear();
        t.start_ms = -1;
        t.last_update_ms = now_ms;
        self.propose(t)
    }

    /// InitProducerId with an exhausted epoch: a new producer id at epoch 0.
    pub fn prepare_rotation(
        &mut self,
        new_producer_id: i64,
        timeout_ms: i32,
        now_ms: i64,
        record_last_epoch: bool,
    ) -> Result<Transit, TransitionError> {
        if self.state.in_progress() {
            return Err(TransitionError::InProgress);
        }
        let mut t = self.transit_to(TxnState::Empty);
        t.producer_id = new_producer_id;
        t.producer_epoch = 0;
        t.last_producer_epoch = if record_last_epoch {
            self.producer_epoch
        } else {
            NO_EPOCH
        };
        t.timeout_ms = timeout_ms;
        t.partitions.clear();
        t.start_ms = -1;
        t.last_update_ms = now_ms;
        self.propose(t)
    }

    /// AddPartitionsToTxn / AddOffsetsToTxn: the transaction (re)starts or grows.
    pub fn prepare_add_partitions(
        &mut self,
        partitions: impl IntoIterator<Item = TopicPartition>,
        now_ms: i64,
        client_tv: i16,
    ) -> Result<Transit, TransitionError> {
        let mut t = self.transit_to(TxnState::Ongoing);
        if self.state.is_idle() {
            t.start_ms = now_ms;
        }
        t.partitions.extend(partitions);
        t.last_update_ms = now_ms;
        t.client_tv = client_tv;
        self.propose(t)
    }

    /// EndTxn (or an abort the coordinator decides): PrepareCommit or
    /// PrepareAbort. A TV2 client's epoch goes up by one here, and
    /// `next_producer_id` is where an exhausted epoch moves to at completion.
    pub fn prepare_abort_or_commit(
        &mut self,
        commit: bool,
        client_tv: i16,
        next_producer_id: i64,
        now_ms: i64,
        no_partition_added: bool,
    ) -> Result<Transit, TransitionError> {
        let state = if commit {
            TxnState::PrepareCommit
        } else {
            TxnState::PrepareAbort
        };
        let mut t = self.transit_to(state);
        if client_tv >= TV_EPOCH_BUMP {
            if self.producer_epoch == i16::MAX {
                return Err(TransitionError::EpochExhausted);
            }
            t.producer_epoch = self.producer_epoch + 1;
            t.last_producer_epoch = self.producer_epoch;
        }
        if no_partition_added {
            t.start_ms = now_ms;
        }
        t.next_producer_id = next_producer_id;
        t.last_update_ms = now_ms;
        t.client_tv = client_tv;
        self.propose(t)
    }

    /// Every marker is written: CompleteCommit or CompleteAbort. A TV2
    /// transaction whose epoch was exhausted moves to its next producer id.
    pub fn prepare_complete(&mut self, now_ms: i64) -> Result<Transit, TransitionError> {
        let state = match self.state {
            TxnState::PrepareCommit => TxnState::CompleteCommit,
            TxnState::PrepareAbort => TxnState::CompleteAbort,
            from => {
                return Err(TransitionError::Invalid {
                    from,
                    to: TxnState::CompleteCommit,
                })
            }
        };
        let mut t = self.transit_to(state);
        if self.client_tv >= TV_EPOCH_BUMP && self.next_producer_id != NO_PRODUCER_ID {
            t.producer_id = self.next_producer_id;
            t.producer_epoch = 0;
        }
        t.next_producer_id = NO_PRODUCER_ID;
        t.partitions.clear();
        t.last_update_ms = now_ms;
        self.propose(t)
    }

    /// Expiry of an idle id: its tombstone is being written.
    pub fn prepare_dead(&mut self) -> Result<Transit, TransitionError> {
        let mut t = self.transit_to(TxnState::Dead);
        t.partitions.clear();
        self.propose(t)
    }

    /// Applies a transit whose write succeeded.
    pub fn complete(&mut self, t: &Transit) {
        debug_assert_eq!(
            self.pending,
            Some(t.state),
            "completing what was not pending"
        );
        if t.state == TxnState::CompleteCommit || t.state == TxnState::CompleteAbort {
            self.failed_epoch_fence = false;
        }
        self.producer_id = t.producer_id;
        self.prev_producer_id = t.prev_producer_id;
        self.next_producer_id = t.next_producer_id;
        self.producer_epoch = t.producer_epoch;
        self.last_producer_epoch = t.last_producer_epoch;
        self.timeout_ms = t.timeout_ms;
        self.state = t.state;
        self.partitions = t.partitions.clone();
        self.start_ms = t.start_ms;
        self.last_update_ms = t.last_update_ms;
        self.client_tv = t.client_tv;
        self.pending = None;
    }

    /// Drops the pending transit (its write failed).
    pub fn abandon(&mut self) {
        self.pending = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(topic: &str, partition: i32) -> TopicPartition {
        (topic.to_string(), partition)
    }

    /// Prepares with `f` and completes at once (the write succeeded).
    fn step(
        meta: &mut TxnMetadata,
        f: impl FnOnce(&mut TxnMetadata) -> Result<Transit, TransitionError>,
    ) -> Transit {
        let t = f(meta).expect("transition allowed");
        meta.complete(&t);
        t
    }

    #[test]
    fn state_ids_and_names_round_trip() {
        for state in TxnState::ALL {
            assert_eq!(TxnState::from_id(state.id()), Some(state));
            assert_eq!(TxnState::from_name(state.name()), Some(state));
        }
        assert_eq!(TxnState::from_id(8), None);
        assert_eq!(TxnState::from_name("ongoing"), None, "case-sensitive");
    }

    /// Every (from, to) pair: allowed exactly when Kafka's table allows it.
    #[test]
    fn the_transition_table_is_kafkas() {
        use TxnState::*;
        let allowed = [
            (Empty, Empty),
            (CompleteCommit, Empty),
            (CompleteAbort, Empty),
            (Ongoing, Ongoing),
            (Empty, Ongoing),
            (CompleteCommit, Ongoing),
            (CompleteAbort, Ongoing),
            (Ongoing, PrepareCommit),
            (Ongoing, PrepareAbort),
            (PrepareEpochFence, PrepareAbort),
            (Empty, PrepareAbort),
            (CompleteCommit, PrepareAbort),
            (CompleteAbort, PrepareAbort),
            (PrepareCommit, CompleteCommit),
            (PrepareAbort, CompleteAbort),
            (Empty, Dead),
            (CompleteAbort, Dead),
            (CompleteCommit, Dead),
            (Ongoing, PrepareEpochFence),
        ];
        for from in TxnState::ALL {
            for to in TxnState::ALL {
                let mut meta = TxnMetadata::new("t", 1, 60_000, 0);
                meta.state = from;
                meta.producer_epoch = 3;
                let mut t = meta.transit_to(to);
                t.state = to;
                let ok = meta.propose(t).is_ok();
                assert_eq!(ok, allowed.contains(&(from, to)), "{from:?} -> {to:?}");
                if ok {
                    assert_eq!(meta.pending, Some(to));
                    // Nothing else may be proposed while it is pending.
                    let again = meta.transit_to(to);
                    assert_eq!(meta.propose(again), Err(TransitionError::Pending(to)));
                }
            }
        }
    }

    #[test]
    fn a_classic_transaction_from_init_to_commit() {
        let mut meta = TxnMetadata::new("t", 7, 60_000, 100);
        let init = step(&mut meta, |m| m.prepare_increment_epoch(60_000, None, 100));
        assert_eq!((init.producer_id, init.producer_epoch), (7, 0));
        assert_eq!((meta.state, meta.start_ms), (TxnState::Empty, -1));
        step(&mut meta, |m| {
            m.prepare_add_partitions([tp("a", 0)], 200, TV_CLASSIC)
        });
        assert_eq!((meta.state, meta.start_ms), (TxnState::Ongoing, 200));
        // Adding more keeps the start.
        step(&mut meta, |m| {
            m.prepare_add_partitions([tp("b", 1)], 300, TV_CLASSIC)
        });
        assert_eq!(meta.start_ms, 200);
        assert_eq!(meta.partitions.len(), 2);
        let prepare = step(&mut meta, |m| {
            m.prepare_abort_or_commit(true, TV_CLASSIC, NO_PRODUCER_ID, 400, false)
        });
        assert_eq!(prepare.producer_epoch, 0, "no bump in the classic protocol");
        assert_eq!(meta.state, TxnState::PrepareCommit);
        let done = step(&mut meta, |m| m.prepare_complete(500));
        assert_eq!(done.state, TxnState::CompleteCommit);
        assert!(meta.partitions.is_empty());
        assert_eq!(
            (meta.producer_id, meta.producer_epoch, meta.start_ms),
            (7, 0, 200)
        );
        // The next transaction starts afresh.
        step(&mut meta, |m| {
            m.prepare_add_partitions([tp("a", 0)], 600, TV_CLASSIC)
        });
        assert_eq!(meta.start_ms, 600);
    }

    #[test]
    fn kip_360_retries_and_fencing() {
        let mut meta = TxnMetadata::new("t", 7, 60_000, 0);
        step(&mut meta, |m| m.prepare_increment_epoch(60_000, None, 0));
        step(&mut meta, |m| m.prepare_increment_epoch(60_000, Some(0), 0));
        assert_eq!((meta.producer_epoch, meta.last_producer_epoch), (1, 0));
        // A retry of that bump (the client never saw the answer): epoch 1 again.
        let retry = step(&mut meta, |m| m.prepare_increment_epoch(60_000, Some(0), 0));
        assert_eq!(retry.producer_epoch, 1);
        // An epoch that is neither: fenced.
        assert_eq!(
            meta.prepare_increment_epoch(60_000, Some(5), 0),
            Err(TransitionError::ProducerFenced)
        );
        assert_eq!(
            meta.pending, None,
            "a refused transition leaves nothing pending"
        );
    }

    #[test]
    fn an_exhausted_epoch_rotates_the_producer_id() {
        let mut meta = TxnMetadata::new("t", 7, 60_000, 0);
        meta.producer_epoch = EPOCH_EXHAUSTED;
        assert_eq!(
            meta.prepare_increment_epoch(60_000, None, 0),
            Err(TransitionError::EpochExhausted)
        );
        let t = step(&mut meta, |m| m.prepare_rotation(8, 60_000, 5, true));
        assert_eq!(
            (t.producer_id, t.producer_epoch, t.prev_producer_id),
            (8, 0, 7)
        );
        assert_eq!(meta.last_producer_epoch, EPOCH_EXHAUSTED);
        meta.state = TxnState::Ongoing;
        assert_eq!(
            meta.prepare_rotation(9, 60_000, 5, false),
            Err(TransitionError::InProgress)
        );
    }

    #[test]
    fn tv2_bumps_at_every_end_and_moves_to_the_next_id_when_exhausted() {
        let mut meta = TxnMetadata::new("t", 7, 60_000, 0);
        step(&mut meta, |m| m.prepare_increment_epoch(60_000, None, 0));
        step(&mut meta, |m| {
            m.prepare_add_partitions([tp("a", 0)], 1, TV_EPOCH_BUMP)
        });
        let prepare = step(&mut meta, |m| {
            m.prepare_abort_or_commit(true, TV_EPOCH_BUMP, NO_PRODUCER_ID, 2, false)
        });
        assert_eq!(
            (prepare.producer_epoch, prepare.last_producer_epoch),
            (1, 0)
        );
        step(&mut meta, |m| m.prepare_complete(3));
        assert_eq!((meta.producer_id, meta.producer_epoch), (7, 1));
        // At the last epoch: the prepare takes 32767 and names the next id,
        // which the completion moves to at epoch 0.
        meta.producer_epoch = EPOCH_EXHAUSTED;
        step(&mut meta, |m| {
            m.prepare_add_partitions([tp("a", 0)], 4, TV_EPOCH_BUMP)
        });
        let prepare = step(&mut meta, |m| {
            m.prepare_abort_or_commit(false, TV_EPOCH_BUMP, 8, 5, false)
        });
        assert_eq!((prepare.producer_id, prepare.producer_epoch), (7, i16::MAX));
        let done = step(&mut meta, |m| m.prepare_complete(6));
        assert_eq!(
            (done.producer_id, done.producer_epoch, done.prev_producer_id),
            (8, 0, 7)
        );
        assert_eq!(
            meta.last_producer_epoch, EPOCH_EXHAUSTED,
            "kept, for a retry"
        );
        // An empty abort from an idle state starts the clock now.
        let empty = step(&mut meta, |m| {
            m.prepare_abort_or_commit(false, TV_EPOCH_BUMP, NO_PRODUCER_ID, 9, true)
        });
        assert_eq!((empty.start_ms, empty.producer_epoch), (9, 1));
    }

    #[test]
    fn a_fence_bumps_once_even_if_its_write_failed() {
        let mut meta = TxnMetadata::new("t", 7, 60_000, 0);
        step(&mut meta, |m| m.prepare_increment_epoch(60_000, None, 0));
        step(&mut meta, |m| {
            m.prepare_add_partitions([tp("a", 0)], 1, TV_CLASSIC)
        });
        let fence = meta.prepare_fence_epoch().unwrap();
        assert_eq!(fence.producer_epoch, 1);
        // The classic abort that follows takes the fenced epoch in memory; its
        // write fails.
        meta.abandon();
        meta.producer_epoch = fence.producer_epoch;
        meta.failed_epoch_fence = true;
        let again = meta.prepare_fence_epoch().unwrap();
        assert_eq!(again.producer_epoch, 1, "not bumped twice");
        meta.abandon();
        meta.producer_epoch = i16::MAX;
        meta.failed_epoch_fence = false;
        assert_eq!(
            meta.prepare_fence_epoch(),
            Err(TransitionError::EpochExhausted)
        );
    }

    #[test]
    fn only_an_idle_id_can_die() {
        let mut meta = TxnMetadata::new("t", 7, 60_000, 0);
        step(&mut meta, |m| m.prepare_increment_epoch(60_000, None, 0));
        step(&mut meta, |m| {
            m.prepare_add_partitions([tp("a", 0)], 1, TV_CLASSIC)
        });
        assert!(meta.prepare_dead().is_err());
        step(&mut meta, |m| {
            m.prepare_abort_or_commit(false, TV_CLASSIC, NO_PRODUCER_ID, 2, false)
        });
        assert!(meta.prepare_dead().is_err());
        step(&mut meta, |m| m.prepare_complete(3));
        assert_eq!(meta.prepare_dead().map(|t| t.state), Ok(TxnState::Dead));
    }
}
