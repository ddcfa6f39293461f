//! A partition on the shard that owns it: its log and its Kafka state. The
//! handlers talk to this, not to the storage engine's `PartitionLog`, so that
//! the rules transactions and replication add (the last stable offset,
//! leader epochs, the ISR) have one place to go.

use std::cell::{Cell, Ref, RefCell};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::io::clock::now_ms;
use crate::metadata::Placement;
use crate::partition::replica::{Leadership, Role};
use crate::partition::state::PartitionState;
use crate::protocol::batch::ValidatedRecords;
use crate::protocol::control::EndTxnMarker;
use crate::protocol::errors::ErrorCode;
use crate::runtime::signal::ShutdownSignal;
use crate::storage::commit::GroupCommit;
use crate::storage::log::{
    self, AppendError, AppendOutcome, Isolation, LogRef, PartitionLog, ReadError, ReadOutcome,
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
    /// This broker's id (the replica it is).
    me: i32,
    /// Leader or follower, and the leader's view of its followers.
    role: RefCell<Role>,
    /// The checkpointed high watermark, until the first role takes it.
    recovered_high_watermark: Cell<Option<i64>>,
}

/// How a Produce wants its batch acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// acks=0: no answer.
    None,
    /// acks=1: once this broker has it.
    Leader,
    /// acks=all: once every in-sync replica has it, and only if there are at
    /// least `min_isr` of them; `timeout` is the request's.
    All { min_isr: i32, timeout: Duration },
}

impl Acks {
    fn wants_ack(self) -> bool {
        self != Acks::None
    }
}

/// Why an append was not acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    #[error(transparent)]
    Append(#[from] AppendError),
    /// A replication rule refused or failed it: NOT_LEADER_OR_FOLLOWER,
    /// NOT_ENOUGH_REPLICAS(_AFTER_APPEND), REQUEST_TIMED_OUT.
    #[error("{1}")]
    Replication(ErrorCode, String),
}

impl ProduceError {
    pub fn error_code(&self) -> ErrorCode {
        match self {
            ProduceError::Append(e) => e.error_code(),
            ProduceError::Replication(code, _) => *code,
        }
    }
}

/// What a follower's fetch gets from its leader's partition.
pub struct ReplicaRead {
    pub records: crate::io::chain::Chain,
    pub high_watermark: i64,
    pub log_start_offset: i64,
    /// KIP-320: the follower's log diverged; it must cut at this (epoch,
    /// end offset) before fetching again.
    pub diverging_epoch: Option<(i32, i64)>,
}

/// How a change of the image changed this broker's role for a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleChange {
    Unchanged,
    /// It leads now (it did not, or in an earlier epoch).
    Leads,
    /// It follows `leader` (-1: no leader) in `leader_epoch` now.
    Follows {
        leader: i32,
        leader_epoch: i32,
    },
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
    pub fn new(
        topic: Arc<str>,
        index: i32,
        state: Arc<PartitionState>,
        log: LogRef,
        me: i32,
    ) -> Partition {
        Partition {
            topic,
            index,
            state,
            log,
            verifications: RefCell::new(Verifications::default()),
            me,
            role: RefCell::new(Role::Unassigned),
            recovered_high_watermark: Cell::new(None),
        }
    }

    /// The high watermark the partition had when this node last
    /// checkpointed it (before a restart): where its high watermark starts
    /// when it first takes a role, capped at the log's end.
    pub fn set_recovered_high_watermark(&self, high_watermark: Option<i64>) {
        self.recovered_high_watermark.set(high_watermark);
    }

    /// The high watermark a partition taking its first role starts from:
    /// the checkpointed one, within the log; else the log start (nothing
    /// past it is known committed: the tail may be an old epoch's, never
    /// replicated).
    fn first_high_watermark(&self, log: &PartitionLog) -> i64 {
        let start = log.log_start_offset();
        match self.recovered_high_watermark.take() {
            Some(hw) => hw.clamp(start, log.log_end_offset().max(start)),
            None => start,
        }
    }

    pub fn role(&self) -> Ref<'_, Role> {
        self.role.borrow()
    }

    /// Whether this broker has led the partition without a break since
    /// `leader_epoch` (its log not cut meanwhile: what was written or
    /// loaded then still stands).
    pub fn leads_in(&self, leader_epoch: i32) -> bool {
        matches!(&*self.role.borrow(), Role::Leader(l)
            if l.began_epoch <= leader_epoch && leader_epoch <= l.leader_epoch)
    }

    /// Takes the role `placement` gives this broker: leader (stamping its
    /// epoch on appends, tracking the followers), or follower of another
    /// (appends refused; the replica fetcher fills the log). Whoever waits
    /// on the partition is woken: an acks=all append waiting under a
    /// leadership that ended fails.
    pub fn apply_placement(&self, placement: &Placement) -> RoleChange {
        let now = now_ms();
        let mut role = self.role.borrow_mut();
        let change = if placement.leader == self.me {
            match &mut *role {
                Role::Leader(l) if l.leader_epoch == placement.leader_epoch => {
                    // A reassignment may give a partition of one replica
                    // followers, or take them all away.
                    let replicated = placement.replicas.len() > 1;
                    if replicated != self.state.is_replicated() {
                        self.state
                            .set_replicated(replicated, self.state.high_watermark());
                    }
                    l.update(
                        placement.partition_epoch,
                        &placement.replicas,
                        &placement.isr,
                        now,
                    );
                    RoleChange::Unchanged
                }
                // The same leader in the next epoch (a replica left the
                // list): it leads on in place. Its log, the appends waiting
                // for replication, its followers' positions and a
                // coordinator loaded from it stay; new batches carry the new
                // epoch, which starts at the log end. (A jump of more than
                // one epoch may hide a leadership elsewhere meanwhile: that
                // starts anew below.)
                Role::Leader(l) if placement.leader_epoch == l.leader_epoch + 1 => {
                    let mut log = self.log.borrow_mut();
                    log.set_stamp_epoch(Some(placement.leader_epoch));
                    if let Err(error) = log.begin_leader_epoch(placement.leader_epoch) {
                        tracing::warn!(topic = %self.topic, partition = self.index, %error, "recording the new leader epoch");
                    }
                    let log_end = log.log_end_offset();
                    drop(log);
                    self.state.set_leader_epoch(placement.leader_epoch);
                    let replicated = placement.replicas.len() > 1;
                    if replicated != self.state.is_replicated() {
                        self.state
                            .set_replicated(replicated, self.state.high_watermark());
                    }
                    l.leader_epoch = placement.leader_epoch;
                    l.epoch_start_offset = log_end;
                    l.update(
                        placement.partition_epoch,
                        &placement.replicas,
                        &placement.isr,
                        now,
                    );
                    l.restart_lag_clocks(now);
                    // Readers waiting with the old epoch look again.
                    self.state.notify();
                    tracing::debug!(topic = %self.topic, partition = self.index, epoch = placement.leader_epoch, "leading on in the next epoch");
                    RoleChange::Unchanged
                }
                _ => {
                    let mut log = self.log.borrow_mut();
                    let log_end = log.log_end_offset();
                    let replicated = placement.replicas.len() > 1;
                    // The watermark carries over from an earlier role here
                    // (follower, or leader in an earlier epoch); at start-up
                    // it is the checkpointed one.
                    let start = match &*role {
                        Role::Follower { .. } | Role::Leader(_) => {
                            self.state.stored_high_watermark()
                        }
                        Role::Unassigned => self.first_high_watermark(&log),
                    };
                    log.set_stamp_epoch(Some(placement.leader_epoch));
                    // The new epoch starts at the log end even before it
                    // writes (Kafka's `assign` on becoming leader): a
                    // follower asking where the previous epoch ended is
                    // answered by it.
                    if let Err(error) = log.begin_leader_epoch(placement.leader_epoch) {
                        tracing::warn!(topic = %self.topic, partition = self.index, %error, "recording the new leader epoch");
                    }
                    drop(log);
                    self.state.set_leader_epoch(placement.leader_epoch);
                    self.state
                        .set_replicated(replicated, start.clamp(0, log_end.max(0)));
                    *role = Role::Leader(Leadership::new(
                        self.me,
                        placement.leader_epoch,
                        placement.partition_epoch,
                        &placement.replicas,
                        &placement.isr,
                        log_end,
                        now,
                    ));
                    RoleChange::Leads
                }
            }
        } else {
            let same = matches!(&*role, Role::Follower { leader, leader_epoch }
                if *leader == placement.leader && *leader_epoch == placement.leader_epoch);
            if same {
                RoleChange::Unchanged
            } else {
                // A leader's watermark carries over; at start-up it is the
                // checkpointed one.
                let hw = match &*role {
                    Role::Unassigned => self.first_high_watermark(&self.log.borrow()),
                    _ => self.state.high_watermark(),
                };
                self.log.borrow_mut().set_stamp_epoch(None);
                self.state.set_leader_epoch(placement.leader_epoch);
                self.state.set_replicated(true, hw);
                *role = Role::Follower {
                    leader: placement.leader,
                    leader_epoch: placement.leader_epoch,
                };
                RoleChange::Follows {
                    leader: placement.leader,
                    leader_epoch: placement.leader_epoch,
                }
            }
        };
        drop(role);
        if change != RoleChange::Unchanged {
            self.state.notify();
        }
        // A leader whose ISR is itself alone (or just changed) moves the
        // watermark at once, not at its next append.
        self.advance_high_watermark();
        change
    }

    /// The partition leaves this broker (deleted, or moved elsewhere): it
    /// neither leads nor follows any more, and whoever waits on it (an
    /// acks=all append under its leadership) is woken to fail at once
    /// (NOT_LEADER_OR_FOLLOWER), not when its request times out.
    pub fn resign(&self) {
        *self.role.borrow_mut() = Role::Unassigned;
        self.state.notify();
    }

    /// The leader's step after anything moved a log end (its own append, a
    /// follower's fetch, an ISR change): the high watermark follows.
    fn advance_high_watermark(&self) {
        if !self.state.is_replicated() {
            return;
        }
        let role = self.role.borrow();
        let Role::Leader(l) = &*role else {
            return;
        };
        let log_end = self.state.log_end_offset();
        if let Some(hw) = l.high_watermark(self.me, log_end) {
            self.state.advance_high_watermark(hw, false);
        }
    }

    /// KIP-320: a request naming `requested` as the partition's leader epoch
    /// (-1: no check) is from the past (FENCED_LEADER_EPOCH) or ahead of
    /// this broker's metadata (UNKNOWN_LEADER_EPOCH).
    pub fn check_leader_epoch(&self, requested: i32) -> Result<(), ErrorCode> {
        let current = self.state.leader_epoch();
        match requested {
            r if r < 0 || r == current => Ok(()),
            r if r < current => Err(ErrorCode::FencedLeaderEpoch),
            _ => Err(ErrorCode::UnknownLeaderEpoch),
        }
    }

    /// The leader epoch this broker leads the partition in, or
    /// NOT_LEADER_OR_FOLLOWER.
    fn check_leads(&self) -> Result<i32, ProduceError> {
        match &*self.role.borrow() {
            Role::Leader(l) => Ok(l.leader_epoch),
            _ => Err(ProduceError::Replication(
                ErrorCode::NotLeaderOrFollower,
                "this broker does not lead the partition".into(),
            )),
        }
    }

    /// The committed ISR's size while leading, else 0.
    fn isr_len(&self) -> usize {
        match &*self.role.borrow() {
            Role::Leader(l) => l.isr_len(),
            _ => 0,
        }
    }

    /// acks=all's check before appending: NOT_ENOUGH_REPLICAS when the ISR
    /// is smaller than `min.insync.replicas`.
    fn check_isr(&self, acks: Acks) -> Result<(), ProduceError> {
        let Acks::All { min_isr, .. } = acks else {
            return Ok(());
        };
        let isr = self.isr_len();
        if (isr as i32) < min_isr {
            return Err(ProduceError::Replication(
                ErrorCode::NotEnoughReplicas,
                format!(
                    "the partition has {isr} in-sync replica(s), fewer than min.insync.replicas={min_isr}"
                ),
            ));
        }
        Ok(())
    }

    /// After an append ending at `end_offset`, made while leading in
    /// `epoch`: with acks=all, waits until the high watermark passes it,
    /// under that same leadership (a leadership lost and regained meanwhile
    /// may have cut the batch), within the request's timeout or until
    /// shutdown.
    async fn await_replication(
        &self,
        end_offset: i64,
        epoch: i32,
        acks: Acks,
        stop: &ShutdownSignal,
    ) -> Result<(), ProduceError> {
        self.advance_high_watermark();
        let Acks::All { min_isr, timeout } = acks else {
            return Ok(());
        };
        let deadline = Instant::now() + timeout;
        loop {
            let listener = self.state.listen();
            if !self.leads_in(epoch) || stop.is_triggered() {
                return Err(ProduceError::Replication(
                    ErrorCode::NotLeaderOrFollower,
                    "the leadership moved before the in-sync replicas had the batch".into(),
                ));
            }
            if self.state.is_offline() {
                return Err(ProduceError::Replication(
                    ErrorCode::KafkaStorageError,
                    "partition is offline".into(),
                ));
            }
            if self.state.high_watermark() >= end_offset {
                let isr = self.isr_len();
                if (isr as i32) < min_isr {
                    return Err(ProduceError::Replication(
                        ErrorCode::NotEnoughReplicasAfterAppend,
                        format!("written, but the in-sync replicas fell to {isr}, fewer than min.insync.replicas={min_isr}"),
                    ));
                }
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(ProduceError::Replication(
                    ErrorCode::RequestTimedOut,
                    "the in-sync replicas did not all have the batch within the request's timeout"
                        .into(),
                ));
            }
            let timer = std::pin::pin!(compio::time::sleep(deadline - now));
            let stopping = std::pin::pin!(stop.wait());
            let timer_or_stop = futures_util::future::select(timer, stopping);
            futures_util::future::select(listener, timer_or_stop).await;
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
        acks: Acks,
        guard: Option<u64>,
        stop: &ShutdownSignal,
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
        let epoch = self.check_leads().map_err(TxnAppendError::Produce)?;
        self.check_isr(acks).map_err(TxnAppendError::Produce)?;
        // Reserved synchronously inside: no marker can come between the check and the append.
        let outcome = log::append(&self.log, commit, records, validated, acks.wants_ack()).await;
        if !open {
            self.verifications.borrow_mut().used(header.producer_id);
        }
        let outcome = outcome.map_err(|e| TxnAppendError::Produce(e.into()))?;
        let end = outcome.base_offset + i64::from(validated.first.last_offset_delta) + 1;
        self.await_replication(end, epoch, acks, stop)
            .await
            .map_err(TxnAppendError::Produce)?;
        Ok(outcome)
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
    /// policy says so and `acks` wants an answer; with acks=all, answered
    /// once the in-sync replicas have it.
    pub async fn append(
        &self,
        commit: &std::rc::Rc<GroupCommit>,
        records: Bytes,
        validated: &ValidatedRecords,
        acks: Acks,
        stop: &ShutdownSignal,
    ) -> Result<AppendOutcome, ProduceError> {
        let epoch = self.check_leads()?;
        self.check_isr(acks)?;
        let outcome = log::append(&self.log, commit, records, validated, acks.wants_ack()).await?;
        let end = outcome.base_offset + i64::from(validated.first.last_offset_delta) + 1;
        self.await_replication(end, epoch, acks, stop).await?;
        Ok(outcome)
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
        let limit = if self.state.is_replicated() {
            self.state.high_watermark()
        } else {
            i64::MAX
        };
        let mut read = log::read_isolated(
            &self.log,
            offset,
            max_bytes,
            first_may_exceed,
            zero_copy_min_bytes,
            isolation,
            limit,
        )
        .await?;
        if self.state.is_replicated() {
            read.high_watermark = read.high_watermark.min(limit);
            read.last_stable_offset = read.last_stable_offset.min(limit);
        }
        Ok(read)
    }

    /// A follower's fetch (KIP-320): from `offset`, with `last_fetched_epoch`
    /// the epoch of the follower's last batch. The leader first checks that
    /// the follower's log agrees with its own up to `offset`; if not, it
    /// answers where the follower must cut (the diverging epoch) and nothing
    /// else. Otherwise it notes the follower's position (which may move the
    /// high watermark) and reads from its log up to the log end, not the
    /// high watermark.
    pub async fn read_for_replica(
        &self,
        replica: i32,
        offset: i64,
        last_fetched_epoch: i32,
        max_bytes: usize,
        first_may_exceed: bool,
        zero_copy_min_bytes: Option<usize>,
    ) -> Result<ReplicaRead, ErrorCode> {
        if !matches!(&*self.role.borrow(), Role::Leader(_)) {
            return Err(ErrorCode::NotLeaderOrFollower);
        }
        let (log_end, log_start) = {
            let log = self.log.borrow();
            (log.high_watermark(), log.log_start_offset())
        };
        if last_fetched_epoch >= 0 {
            let (epoch, end) = self.log.borrow().end_offset_for_epoch(last_fetched_epoch);
            if end < 0 || end < offset || epoch < last_fetched_epoch {
                return Ok(ReplicaRead {
                    records: Default::default(),
                    high_watermark: self.state.high_watermark(),
                    log_start_offset: log_start,
                    diverging_epoch: Some((epoch, end)),
                });
            }
        }
        if offset > log_end || offset < log_start {
            return Err(ErrorCode::OffsetOutOfRange);
        }
        let known = match &mut *self.role.borrow_mut() {
            Role::Leader(l) => l.on_fetch(replica, offset, log_end, now_ms()),
            _ => false,
        };
        if !known {
            return Err(ErrorCode::NotLeaderOrFollower);
        }
        self.advance_high_watermark();
        // Up to the log end: a follower reads what consumers may not yet.
        let read = log::read(
            &self.log,
            offset,
            max_bytes,
            first_may_exceed,
            zero_copy_min_bytes,
        )
        .await;
        match read {
            Ok(read) => Ok(ReplicaRead {
                records: read.records,
                high_watermark: self.state.high_watermark(),
                log_start_offset: read.log_start_offset,
                diverging_epoch: None,
            }),
            Err(ReadError::OffsetOutOfRange { .. }) => Err(ErrorCode::OffsetOutOfRange),
            Err(ReadError::Storage(message)) => {
                tracing::warn!(topic = %self.topic, partition = self.index, %message, "a follower's read failed");
                Err(ErrorCode::KafkaStorageError)
            }
        }
    }

    /// On the leader: the ISR change to ask the controller for now, with
    /// the leader epoch and partition epoch it is based on.
    /// `eligible`: whether a replica may join the ISR (it is not fenced).
    pub fn isr_change(
        &self,
        lag_max_ms: i64,
        retry_ms: i64,
        eligible: impl Fn(i32) -> bool,
    ) -> Option<(Vec<i32>, i32, i32)> {
        let hw = self.state.high_watermark();
        match &mut *self.role.borrow_mut() {
            // A leader whose log failed asks nothing: the controller moves
            // the partition off it.
            Role::Leader(l) if self.state.is_replicated() && !self.state.is_offline() => l
                .isr_change(self.me, hw, now_ms(), lag_max_ms, retry_ms, eligible)
                .map(|isr| (isr, l.leader_epoch, l.partition_epoch)),
            _ => None,
        }
    }

    /// On the leader: an ISR change asked for was refused; the next upkeep
    /// plans again from the image.
    pub fn forget_pending_isr(&self) {
        if let Role::Leader(l) = &mut *self.role.borrow_mut() {
            l.pending = None;
        }
    }

    /// On a follower: where its next fetch starts, and the epoch of its last
    /// batch (KIP-320's `last_fetched_epoch`).
    pub fn fetch_position(&self) -> (i64, i32) {
        let log = self.log.borrow();
        (log.high_watermark(), log.latest_epoch())
    }

    /// On a follower in `leader_epoch`: appends what the leader sent and
    /// takes its high watermark (never above this log's end) and log start.
    /// Refused once the role has changed.
    pub async fn append_from_leader(
        &self,
        commit: &std::rc::Rc<GroupCommit>,
        leader_epoch: i32,
        records: Bytes,
        leader_high_watermark: i64,
        leader_log_start: i64,
    ) -> Result<(), ProduceError> {
        self.check_follows(leader_epoch)?;
        if !records.is_empty() {
            log::append_replica(&self.log, commit, records).await?;
            self.check_follows(leader_epoch)?;
        }
        let end = self.state.log_end_offset();
        self.state
            .advance_high_watermark(leader_high_watermark.min(end), true);
        let start = self.log.borrow().log_start_offset();
        if leader_log_start > start && leader_log_start <= end {
            if let Err(code) = self
                .log
                .borrow_mut()
                .delete_records_before(leader_log_start)
            {
                tracing::warn!(topic = %self.topic, partition = self.index, ?code, "following the leader's log start");
            }
        }
        Ok(())
    }

    fn check_follows(&self, leader_epoch: i32) -> Result<(), ProduceError> {
        match &*self.role.borrow() {
            Role::Follower {
                leader_epoch: e, ..
            } if *e == leader_epoch => Ok(()),
            _ => Err(ProduceError::Replication(
                ErrorCode::NotLeaderOrFollower,
                "no longer a follower in this epoch".into(),
            )),
        }
    }

    /// On a follower: where its log ends for the leader's `epoch` (Kafka's
    /// `endOffsetForEpoch`, for the truncation after a diverging epoch).
    pub fn end_offset_for_epoch(&self, epoch: i32) -> (i32, i64) {
        self.log.borrow().end_offset_for_epoch(epoch)
    }

    /// On a follower in `leader_epoch`: cuts the log to end at or below
    /// `offset` (KIP-101), or empties it to start at `offset` when
    /// `restart`; returns the new end.
    pub fn truncate_as_follower(
        &self,
        leader_epoch: i32,
        offset: i64,
        restart: bool,
    ) -> Result<i64, ProduceError> {
        self.check_follows(leader_epoch)?;
        let mut log = self.log.borrow_mut();
        let cut = if restart {
            log.restart_at(offset)
        } else {
            log.truncate_to(offset)
        };
        let end = cut
            .map_err(|e| ProduceError::Replication(ErrorCode::KafkaStorageError, e.to_string()))?;
        drop(log);
        let hw = self.state.stored_high_watermark().min(end);
        self.state.advance_high_watermark(hw, true);
        Ok(end)
    }

    /// Ends `producer_id`'s transaction on this partition with a marker
    /// (commit or abort), durably.
    pub async fn write_marker(
        &self,
        commit: &std::rc::Rc<GroupCommit>,
        producer_id: i64,
        producer_epoch: i16,
        marker: EndTxnMarker,
        stop: &ShutdownSignal,
    ) -> Result<AppendOutcome, ProduceError> {
        let epoch = self.check_leads()?;
        // A verification under way is stale once a marker is in: the batch
        // it was for belongs to the transaction that just ended.
        self.verifications
            .borrow_mut()
            .on_marker(producer_id, producer_epoch);
        let outcome =
            log::append_marker(&self.log, commit, producer_id, producer_epoch, marker, true)
                .await?;
        // As Kafka writes markers: acks=all, whatever min.insync.replicas.
        let acks = Acks::All {
            min_isr: 1,
            timeout: MARKER_TIMEOUT,
        };
        self.await_replication(outcome.base_offset + 1, epoch, acks, stop)
            .await?;
        Ok(outcome)
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
            // Nothing at or past the high watermark is found (a replicated
            // partition's records not yet on every in-sync replica).
            MAX_TIMESTAMP => match log::offset_for_timestamp(&self.log, max.0).await {
                Ok(Some((offset, _))) if offset.max(start) >= end => Ok((-1, -1)),
                Ok(Some((offset, timestamp))) => Ok((offset.max(start), timestamp)),
                Ok(None) if max.1 >= end => Ok((-1, -1)),
                Ok(None) => Ok((max.1, max.0)),
                Err(_) => Err(ErrorCode::KafkaStorageError),
            },
            t if t >= 0 => match log::offset_for_timestamp(&self.log, t).await {
                Ok(Some((offset, _))) if offset.max(start) >= end => Ok((-1, -1)),
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
        // Never past what the in-sync replicas all have (Kafka's rule).
        let high_watermark = self.state.high_watermark();
        let offset = if offset == -1 { high_watermark } else { offset };
        if offset > high_watermark {
            return Err(ErrorCode::OffsetOutOfRange);
        }
        self.log.borrow_mut().delete_records_before(offset)
    }
}

/// How long a transaction marker waits for the in-sync replicas.
const MARKER_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a transactional batch was not appended.
#[derive(Debug, thiserror::Error)]
pub enum TxnAppendError {
    /// Kafka: INVALID_TXN_STATE, "Partition was not added to the transaction".
    #[error("Partition was not added to the transaction")]
    NotInTransaction,
    #[error(transparent)]
    Produce(ProduceError),
}

impl TxnAppendError {
    pub fn error_code(&self) -> ErrorCode {
        match self {
            TxnAppendError::NotInTransaction => ErrorCode::InvalidTxnState,
            TxnAppendError::Produce(e) => e.error_code(),
        }
    }
}
