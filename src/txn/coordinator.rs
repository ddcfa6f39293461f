//! The transaction coordinator of one shard: the transactional ids whose
//! partition of the transaction log ([`TXN_TOPIC`], an internal topic
//! replicated like any other) the shard owns and this broker leads, their
//! state in memory, and the log that makes every change durable in the
//! in-sync replicas before it is applied. Taking a partition's lead, the
//! coordinator loads it (replays its log) and completes the transactions it
//! finds decided; losing it, it forgets its ids (the new leader has them).
//! The partition's leader epoch is the coordinator epoch its markers carry,
//! so a deposed coordinator's late markers are refused.
//!
//! A request runs the pure decision of `requests.rs`, writes what it decided
//! (one record, synced and in the in-sync replicas) and applies it, unless
//! the partition was given up or loaded anew meanwhile. An EndTxn is answered once its
//! PrepareCommit/PrepareAbort is durable; its markers are then written (and
//! synced) to every partition of the transaction and the Complete record
//! after them (applied once written, its sync left to the next write), in a
//! task of its own. Until then the id's completion is pending: the producer's
//! AddPartitionsToTxn and AddOffsetsToTxn wait for it (up to 100 ms) and other
//! requests get CONCURRENT_TRANSACTIONS. When a partition is loaded (after a
//! restart, or a move of its leadership), transactions found in
//! PrepareCommit/PrepareAbort are completed the same way; open ones are
//! aborted when they time out.
//!
//! Lives on one shard (`RefCell`, no borrow across an `.await`).

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::LocalBoxFuture;
use kafka_protocol::records::Compression;

use crate::io::clock::now_ms;
use crate::node::Node;
use crate::partition::internal::{LoadedPartition, Unloaded};
use crate::partition::local::{Acks, ProduceError};
use crate::protocol::batch::validate_records;
use crate::protocol::encode;
use crate::protocol::errors::ErrorCode;
use crate::runtime::shard_for_partition;
use crate::storage::commit::GroupCommit;
use crate::storage::log::PartitionLog;
use crate::storage::replay;
use crate::txn::log as records;
use crate::txn::requests::{self, AddDecision, EndDecision, InitDecision};
use crate::txn::state::{TopicPartition, Transit, TxnMetadata, TxnState};

/// Name (and directory prefix) of the transaction log: Kafka's
/// `__transaction_state`, under a name of Sluice's own (as the offsets log),
/// so that it never meets the directories of an ordinary topic an older
/// Sluice let a client create under Kafka's name.
pub const TXN_TOPIC: &str = "__sluice_transaction_state";

/// Kafka's transaction settings, with Kafka's names and defaults.
#[derive(Debug, Clone)]
pub struct TxnConfig {
    /// `transaction.max.timeout.ms`: the longest timeout a producer may ask for.
    pub max_timeout_ms: i32,
    /// `transaction.abort.timed.out.transaction.cleanup.interval.ms`.
    pub abort_interval_ms: u64,
    /// `transactional.id.expiration.ms`: an idle id is forgotten after this.
    pub id_expiration_ms: i64,
    /// `transaction.remove.expired.transaction.cleanup.interval.ms`.
    pub expiration_interval_ms: u64,
    /// `transaction.state.log.num.partitions`: fixed once the log exists,
    /// since it decides which partition holds each id.
    pub partitions: i32,
    /// `transaction.state.log.segment.bytes`.
    pub segment_bytes: u64,
    /// The finalized `transaction.version` (KIP-890): decides how the
    /// coordinator's own aborts bump the epoch.
    pub transaction_version: i16,
}

impl Default for TxnConfig {
    fn default() -> Self {
        TxnConfig {
            max_timeout_ms: 900_000,
            abort_interval_ms: 10_000,
            id_expiration_ms: 604_800_000,
            expiration_interval_ms: 3_600_000,
            partitions: 50,
            segment_bytes: 100 << 20,
            transaction_version: 0,
        }
    }
}

/// What the coordinator needs of the rest of the node.
pub trait TxnEnv {
    /// A fresh producer id (never handed out before, across restarts).
    fn allocate_producer_id(&self) -> LocalBoxFuture<'_, Result<i64, ErrorCode>>;
    /// Writes the marker that ends `producer_id`'s transaction to each
    /// partition (on whichever broker leads it), as coordinator
    /// `coordinator_epoch`; one result per partition.
    fn write_markers(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
        coordinator_epoch: i32,
        partitions: Vec<TopicPartition>,
    ) -> LocalBoxFuture<'_, Vec<(TopicPartition, Result<(), ErrorCode>)>>;
}

/// Java's `String.hashCode` (over UTF-16 code units, wrapping).
fn java_string_hash(s: &str) -> i32 {
    s.encode_utf16().fold(0i32, |h, unit| {
        h.wrapping_mul(31).wrapping_add(i32::from(unit))
    })
}

/// The file in the data dir that records the transaction log's partition
/// count, written (durably) before the first start creates the log.
pub const PARTITIONS_FILE: &str = "transaction-state-partitions";

/// Refuses a transaction log written with another partition count than
/// `partitions` (`transaction.state.log.num.partitions`): which partition
/// holds an id depends on the count, so ids would be looked for where they
/// are not. Run once at start-up, before the shards open (and create) the
/// log's partitions. The count is recorded in [`PARTITIONS_FILE`] first, so
/// that a first start killed while creating the directories starts again
/// (the missing ones are created); a data dir from before the file existed
/// is judged by its highest partition directory, and then gets the file.
pub fn check_log_partitions(data_dir: &Path, partitions: i32) -> Result<(), String> {
    let file = data_dir.join(PARTITIONS_FILE);
    let recorded = match std::fs::read_to_string(&file) {
        Ok(text) => Some(
            text.trim()
                .parse::<i32>()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| {
                    format!(
                        "{} does not hold a partition count ({text:?})",
                        file.display()
                    )
                })?,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(format!("reading {}: {e}", file.display())),
    };
    let found = match recorded {
        Some(count) => count,
        None => PartitionLog::existing_partitions(data_dir, TXN_TOPIC)
            .map_err(|e| format!("listing {}: {e}", data_dir.display()))?
            .last()
            .map_or(partitions, |&last| last + 1),
    };
    if found != partitions {
        return Err(format!(
            "the transaction log in {} has {found} partitions but \
             --transaction-state-log-num-partitions is {partitions}; the count is fixed once \
             the log exists (it decides where each transactional id lives): start with \
             --transaction-state-log-num-partitions {found}",
            data_dir.display(),
        ));
    }
    if recorded.is_none() {
        crate::io::fs::write_durably(&file, format!("{partitions}\n").as_bytes())
            .map_err(|e| format!("writing {}: {e}", file.display()))?;
    }
    Ok(())
}

/// The transaction-log partition of `transactional_id`, as Kafka places it
/// (`Utils.abs(hashCode) % partitions`, where abs(MIN) is 0).
pub fn txn_partition(transactional_id: &str, partitions: i32) -> i32 {
    let hash = java_string_hash(transactional_id);
    let abs = if hash == i32::MIN { 0 } else { hash.abs() };
    abs % partitions.max(1)
}

/// The transaction log's partition count: the topic's, fixed when the
/// controller created it (every broker places ids by it, whatever its own
/// `--transaction-state-log-num-partitions`), or `configured` before it
/// exists.
pub fn log_partitions(node: &Node, configured: i32) -> i32 {
    node.image()
        .topic(TXN_TOPIC)
        .map_or(configured, |t| t.partition_count())
}

/// The shard that coordinates `transactional_id`.
pub fn coordinator_shard(transactional_id: &str, partitions: i32, shard_count: usize) -> usize {
    shard_for_partition(
        TXN_TOPIC,
        txn_partition(transactional_id, partitions),
        shard_count,
    )
}

/// Backoff between attempts to write markers or a completion that failed.
const RETRY_BACKOFF: Duration = Duration::from_millis(200);

/// How long AddPartitionsToTxn and AddOffsetsToTxn wait for the producer's
/// previous transaction to complete (its markers, then CompleteCommit or
/// CompleteAbort) before answering CONCURRENT_TRANSACTIONS. Kafka answers at
/// once and the client retries after a backoff (librdkafka: 20 ms, the Java
/// client: `retry.backoff.ms`), longer than a completion takes here.
const COMPLETION_WAIT_MAX: Duration = Duration::from_millis(100);

pub struct TxnCoordinator {
    config: TxnConfig,
    /// The transaction-log partitions this shard leads and has loaded.
    loaded: RefCell<HashMap<i32, Rc<LoadedPartition>>>,
    /// Being loaded: COORDINATOR_LOAD_IN_PROGRESS meanwhile.
    loading: RefCell<HashSet<i32>>,
    txns: RefCell<HashMap<String, TxnMetadata>>,
    commit: Rc<GroupCommit>,
    env: Rc<dyn TxnEnv>,
    node: Arc<Node>,
    /// The ids whose decided transaction's markers and completion are being
    /// written, with the number of such tasks
    /// ([`TxnCoordinator::spawn_completion`]).
    completing: RefCell<HashMap<String, usize>>,
    /// Notified whenever such a task ends (see [`COMPLETION_WAIT_MAX`]).
    completed: event_listener::Event,
}

/// Kafka's answer to a transactional client when the transaction log refused
/// a write (`TransactionStateManager`'s mapping).
fn coordinator_error(error: &ProduceError) -> ErrorCode {
    match error.error_code() {
        ErrorCode::UnknownTopicOrPartition
        | ErrorCode::NotEnoughReplicas
        | ErrorCode::NotEnoughReplicasAfterAppend
        | ErrorCode::RequestTimedOut => ErrorCode::CoordinatorNotAvailable,
        ErrorCode::NotLeaderOrFollower | ErrorCode::KafkaStorageError => ErrorCode::NotCoordinator,
        ErrorCode::MessageTooLarge | ErrorCode::RecordListTooLarge => ErrorCode::UnknownServerError,
        other => other,
    }
}

/// Replays partition `dir` of the transaction log: the last state of each
/// id (blocking reads: a coordinator runs it off its shard).
pub fn replay(dir: &Path) -> Result<HashMap<String, TxnMetadata>, String> {
    let mut txns = HashMap::new();
    replay::for_each_record(dir, |record| {
        if record.control {
            // No transaction writes to this log (markers are refused);
            // one found is skipped, not read as a transactional id.
            return Ok(());
        }
        let key = record.key.ok_or("transaction record without a key")?;
        let id = match records::decode_key(&key) {
            Ok(id) => id,
            Err(records::RecordError::KeyVersion(version)) => {
                tracing::warn!(version, "skipping a transaction-log key of another version");
                return Ok(());
            }
            Err(e) => return Err(e.to_string()),
        };
        match record.value {
            None => {
                txns.remove(&id);
            }
            Some(value) => {
                let t = records::decode_value(&value).map_err(|e| e.to_string())?;
                txns.insert(id.clone(), TxnMetadata::from_transit(&id, &t));
            }
        }
        Ok(())
    })?;
    Ok(txns)
}

impl TxnCoordinator {
    /// A coordinator with no partition loaded yet.
    pub fn new(
        config: TxnConfig,
        commit: Rc<GroupCommit>,
        env: Rc<dyn TxnEnv>,
        node: Arc<Node>,
    ) -> TxnCoordinator {
        TxnCoordinator {
            config,
            loaded: RefCell::new(HashMap::new()),
            loading: RefCell::new(HashSet::new()),
            txns: RefCell::new(HashMap::new()),
            commit,
            env,
            node,
            completing: RefCell::new(HashMap::new()),
            completed: event_listener::Event::new(),
        }
    }

    fn log_partitions(&self) -> i32 {
        log_partitions(&self.node, self.config.partitions)
    }

    fn partition_of(&self, transactional_id: &str) -> i32 {
        txn_partition(transactional_id, self.log_partitions())
    }

    /// Whether this shard coordinates `transactional_id` now:
    /// NOT_COORDINATOR when this broker does not lead its partition of the
    /// transaction log, COORDINATOR_LOAD_IN_PROGRESS while it loads.
    pub fn serves(&self, transactional_id: &str) -> Result<(), ErrorCode> {
        let partition = self.partition_of(transactional_id);
        if self.loaded.borrow().contains_key(&partition) {
            Ok(())
        } else if self.loading.borrow().contains(&partition) {
            Err(ErrorCode::CoordinatorLoadInProgress)
        } else {
            Err(ErrorCode::NotCoordinator)
        }
    }

    fn loaded(&self, partition: i32) -> Option<Rc<LoadedPartition>> {
        self.loaded.borrow().get(&partition).cloned()
    }

    /// Whether `partition` is loaded here (its load done).
    pub fn is_loaded(&self, partition: i32) -> bool {
        self.loaded.borrow().contains_key(&partition)
    }

    /// A load of `partition` has begun (the leadership was taken).
    pub fn begin_load(&self, partition: i32) {
        self.loading.borrow_mut().insert(partition);
    }

    /// Takes over the ids of `loaded`'s partition, as its log replayed
    /// (every write to it settled before), then completes the transactions
    /// found decided (their markers may not all be written): whether it was
    /// installed (not if the partition was unloaded meanwhile).
    pub fn install(
        self: &Rc<Self>,
        loaded: LoadedPartition,
        replayed: HashMap<String, TxnMetadata>,
    ) -> bool {
        let index = loaded.partition.index;
        if !self.loading.borrow_mut().remove(&index) {
            return false;
        }
        let count = replayed.len();
        self.forget(index);
        self.txns.borrow_mut().extend(replayed);
        self.loaded.borrow_mut().insert(index, Rc::new(loaded));
        tracing::info!(
            partition = index,
            transactional_ids = count,
            "coordinating the transactional ids of a transaction-log partition"
        );
        let now = now_ms();
        let partitions = self.log_partitions();
        let deciding: Vec<(String, Transit, Transit)> = {
            let mut txns = self.txns.borrow_mut();
            txns.values_mut()
                .filter(|m| txn_partition(&m.transactional_id, partitions) == index)
                .filter(|m| matches!(m.state, TxnState::PrepareCommit | TxnState::PrepareAbort))
                .filter_map(|m| {
                    let prepared = transit_of(m);
                    m.prepare_complete(now)
                        .ok()
                        .map(|complete| (m.transactional_id.clone(), prepared, complete))
                })
                .collect()
        };
        for (id, prepared, complete) in deciding {
            tracing::info!(transactional_id = %id, state = prepared.state.name(), "completing a transaction decided by an earlier coordinator");
            self.spawn_completion(id, prepared, complete);
        }
        true
    }

    /// Gives up the ids of `partition` (another broker leads it now).
    pub fn unload(&self, partition: i32) -> Unloaded {
        let was_loading = self.loading.borrow_mut().remove(&partition);
        let was_loaded = self.loaded.borrow_mut().remove(&partition).is_some();
        self.forget(partition);
        if was_loading || was_loaded {
            tracing::info!(
                partition,
                "no longer coordinating the transactional ids of a transaction-log partition"
            );
        }
        match (was_loaded, was_loading) {
            (true, _) => Unloaded::Loaded,
            (false, true) => Unloaded::Loading,
            (false, false) => Unloaded::Neither,
        }
    }

    fn forget(&self, partition: i32) {
        let partitions = self.log_partitions();
        self.txns
            .borrow_mut()
            .retain(|id, _| txn_partition(id, partitions) != partition);
    }

    pub fn config(&self) -> &TxnConfig {
        &self.config
    }

    /// Runs the timers (timed-out transactions, expired ids) until the
    /// node stops.
    pub fn start(self: &Rc<Self>) {
        let this = self.clone();
        compio::runtime::spawn(async move {
            let abort_every = this.config.abort_interval_ms as i64;
            let expire_every = this.config.expiration_interval_ms as i64;
            let (mut last_abort, mut last_expiry) = (now_ms(), now_ms());
            while !this.node.shutdown.is_triggered() {
                compio::time::sleep(Duration::from_millis(100)).await;
                let now = now_ms();
                if now - last_abort >= abort_every {
                    last_abort = now;
                    this.abort_timed_out(now).await;
                }
                if now - last_expiry >= expire_every {
                    last_expiry = now;
                    this.expire_ids(now).await;
                }
            }
        })
        .detach();
    }

    /// A copy of an id's state (DescribeTransactions).
    pub fn describe(&self, transactional_id: &str) -> Option<TxnMetadata> {
        self.txns.borrow().get(transactional_id).cloned()
    }

    /// Every id this shard coordinates (ListTransactions).
    pub fn list(&self) -> Vec<TxnMetadata> {
        self.txns.borrow().values().cloned().collect()
    }

    /// The partition of `transactional_id` as loaded now: what a request
    /// starts from; its state may be changed after an await only if the
    /// same load is still current ([`TxnCoordinator::is_current`]).
    fn current(&self, transactional_id: &str) -> Result<Rc<LoadedPartition>, ErrorCode> {
        self.loaded(self.partition_of(transactional_id))
            .ok_or(ErrorCode::NotCoordinator)
    }

    /// Whether `loaded` is still this coordinator's load of its partition,
    /// led in the same epoch (not given up, nor loaded anew since).
    fn is_current(&self, loaded: &Rc<LoadedPartition>) -> bool {
        loaded.still_leads()
            && self
                .loaded(loaded.partition.index)
                .is_some_and(|now| Rc::ptr_eq(&now, loaded))
    }

    /// Appends `value` (None: a tombstone) for `transactional_id` to
    /// `loaded`; with `durable`, returns once the in-sync replicas have it
    /// (on disk), else once it is written here (its sync and replication
    /// run in the background, and any later durable write to the log
    /// covers it). NOT_COORDINATOR if `loaded` is not current, before or
    /// after.
    async fn append(
        &self,
        loaded: &Rc<LoadedPartition>,
        transactional_id: &str,
        value: Option<&Transit>,
        durable: bool,
    ) -> Result<(), ErrorCode> {
        if !self.is_current(loaded) {
            return Err(ErrorCode::NotCoordinator);
        }
        let key = Bytes::from(records::encode_key(transactional_id));
        let value = value.map(|t| Bytes::from(records::encode_value(t)));
        let record = encode::record(0, now_ms(), Some(key), value, None);
        let batch = encode::encode_batch(&[record], Compression::None);
        let validated =
            validate_records(&batch, usize::MAX).map_err(|_| ErrorCode::UnknownServerError)?;
        let acks = if durable { loaded.acks() } else { Acks::None };
        loaded
            .partition
            .append(&self.commit, batch, &validated, acks, &loaded.stop)
            .await
            .map_err(|error| {
                tracing::warn!(%error, transactional_id, "transaction log write failed");
                coordinator_error(&error)
            })?;
        if !self.is_current(loaded) {
            // Given up while it was replicated: the new leader has it.
            return Err(ErrorCode::NotCoordinator);
        }
        Ok(())
    }

    /// Writes `transit` for `id` and applies it, or drops it if the write failed.
    async fn write_and_apply(&self, id: &str, transit: &Transit) -> Result<(), ErrorCode> {
        let loaded = self.current(id)?;
        let written = self.append(&loaded, id, Some(transit), true).await;
        if !self.is_current(&loaded) {
            // The state is a later load's now: not this write's to undo.
            return Err(ErrorCode::NotCoordinator);
        }
        let mut txns = self.txns.borrow_mut();
        let meta = txns.get_mut(id).ok_or(ErrorCode::NotCoordinator)?;
        match written {
            Ok(()) => {
                meta.complete(transit);
                Ok(())
            }
            Err(code) => {
                meta.abandon();
                Err(code)
            }
        }
    }

    /// InitProducerId with a transactional id: the producer id and epoch the
    /// client is to use. An open transaction of an earlier instance is
    /// aborted first (the answer is then CONCURRENT_TRANSACTIONS; the client
    /// retries).
    pub async fn init_producer_id(
        self: &Rc<Self>,
        id: &str,
        timeout_ms: i32,
        expected: Option<(i64, i16)>,
    ) -> Result<(i64, i16), ErrorCode> {
        if !requests::valid_timeout(timeout_ms, self.config.max_timeout_ms) {
            return Err(ErrorCode::InvalidTransactionTimeout);
        }
        if !self.txns.borrow().contains_key(id) {
            let loaded = self.current(id)?;
            let producer_id = self.env.allocate_producer_id().await?;
            if !self.is_current(&loaded) {
                return Err(ErrorCode::NotCoordinator);
            }
            self.txns
                .borrow_mut()
                .entry(id.to_string())
                .or_insert_with(|| TxnMetadata::new(id, producer_id, timeout_ms, now_ms()));
        }
        let mut new_producer_id = None;
        loop {
            let decision = {
                let mut txns = self.txns.borrow_mut();
                let meta = txns.get_mut(id).ok_or(ErrorCode::ConcurrentTransactions)?;
                requests::init_producer_id(
                    meta,
                    timeout_ms,
                    expected,
                    now_ms(),
                    new_producer_id,
                    self.config.transaction_version,
                )
            };
            match decision {
                InitDecision::Error(code) => return Err(code),
                InitDecision::NeedProducerId => {
                    new_producer_id = Some(self.env.allocate_producer_id().await?);
                }
                InitDecision::Write(t) => {
                    self.write_and_apply(id, &t).await?;
                    return Ok((t.producer_id, t.producer_epoch));
                }
                InitDecision::FenceAndAbort(abort) => {
                    tracing::info!(
                        transactional_id = id,
                        epoch = abort.producer_epoch,
                        "a new instance fences the open transaction and aborts it"
                    );
                    let loaded = self.current(id)?;
                    self.abort_fenced(&loaded, id, abort).await?;
                    return Err(ErrorCode::ConcurrentTransactions);
                }
            }
        }
    }

    /// Writes a fenced abort's PrepareAbort and completes the abort in the
    /// background; decided under `loaded`, which must still be current.
    async fn abort_fenced(
        self: &Rc<Self>,
        loaded: &Rc<LoadedPartition>,
        id: &str,
        abort: Transit,
    ) -> Result<(), ErrorCode> {
        let written = self.append(loaded, id, Some(&abort), true).await;
        if !self.is_current(loaded) {
            return Err(ErrorCode::NotCoordinator);
        }
        let complete = {
            let mut txns = self.txns.borrow_mut();
            let meta = txns.get_mut(id).ok_or(ErrorCode::NotCoordinator)?;
            if meta.pending != Some(abort.state) {
                // Not this decision's any more.
                return Err(ErrorCode::ConcurrentTransactions);
            }
            if let Err(code) = written {
                requests::fence_write_failed(meta, self.config.transaction_version);
                return Err(code);
            }
            meta.complete(&abort);
            meta.prepare_complete(now_ms())
                .map_err(|_| ErrorCode::UnknownServerError)?
        };
        self.spawn_completion(id.to_string(), abort, complete);
        Ok(())
    }

    /// AddPartitionsToTxn / AddOffsetsToTxn.
    pub async fn add_partitions(
        &self,
        id: &str,
        producer_id: i64,
        producer_epoch: i16,
        partitions: &[TopicPartition],
        client_tv: i16,
    ) -> Result<(), ErrorCode> {
        let deadline = std::time::Instant::now() + COMPLETION_WAIT_MAX;
        loop {
            // Listening before looking, so that a completion in between
            // is not missed.
            let completed = self.completed.listen();
            let (decision, completing) = {
                let mut txns = self.txns.borrow_mut();
                let meta = txns
                    .get_mut(id)
                    .ok_or(ErrorCode::InvalidProducerIdMapping)?;
                // Only while the task that completes it runs (not for a
                // transaction stuck on a refused marker). Whoever asks: a
                // TV2 producer may already use the producer id the
                // completion installs, and the decision after the wait
                // checks who it is.
                let completing = self.completing.borrow().contains_key(id);
                let decision = requests::add_partitions(
                    meta,
                    producer_id,
                    producer_epoch,
                    partitions,
                    now_ms(),
                    client_tv,
                );
                (decision, completing)
            };
            match decision {
                // The previous transaction's markers are being written: the
                // answer waits for them rather than sending the client into
                // its retry backoff.
                AddDecision::Error(ErrorCode::ConcurrentTransactions) if completing => {
                    let left = deadline.saturating_duration_since(std::time::Instant::now());
                    if left.is_zero() {
                        return Err(ErrorCode::ConcurrentTransactions);
                    }
                    let _ = compio::time::timeout(left, completed).await;
                }
                AddDecision::Error(code) => return Err(code),
                AddDecision::Done => return Ok(()),
                AddDecision::Write(t) => return self.write_and_apply(id, &t).await,
            }
        }
    }

    /// AddPartitionsToTxn with VerifyOnly: which of `partitions` are in the
    /// transaction (see `requests::verify_partitions`).
    pub fn verify_partitions(
        &self,
        id: &str,
        producer_id: i64,
        producer_epoch: i16,
        partitions: &[TopicPartition],
    ) -> Result<Vec<Option<ErrorCode>>, ErrorCode> {
        let txns = self.txns.borrow();
        let meta = txns.get(id).ok_or(ErrorCode::InvalidProducerIdMapping)?;
        requests::verify_partitions(meta, producer_id, producer_epoch, partitions)
    }

    /// EndTxn: answered once the decision is durable, with the producer id
    /// and epoch to use next (TV2; -1, -1 for the classic protocol).
    pub async fn end_txn(
        self: &Rc<Self>,
        id: &str,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
        client_tv: i16,
    ) -> Result<(i64, i16), ErrorCode> {
        let mut new_producer_id = None;
        let prepared = loop {
            let decision = {
                let mut txns = self.txns.borrow_mut();
                let meta = txns
                    .get_mut(id)
                    .ok_or(ErrorCode::InvalidProducerIdMapping)?;
                requests::end_txn(
                    meta,
                    producer_id,
                    producer_epoch,
                    commit,
                    client_tv,
                    now_ms(),
                    new_producer_id,
                )
            };
            match decision {
                EndDecision::Error(code) => return Err(code),
                EndDecision::Done(id, epoch) => return Ok((id, epoch)),
                EndDecision::NeedProducerId => {
                    new_producer_id = Some(self.env.allocate_producer_id().await?);
                }
                EndDecision::Prepare(t) => break t,
            }
        };
        self.write_and_apply(id, &prepared).await?;
        let (complete, answer) = {
            let mut txns = self.txns.borrow_mut();
            let meta = txns.get_mut(id).ok_or(ErrorCode::NotCoordinator)?;
            requests::after_prepare(
                meta,
                producer_id,
                producer_epoch,
                commit,
                client_tv,
                now_ms(),
            )?
        };
        self.spawn_completion(id.to_string(), prepared, complete);
        Ok(answer)
    }

    /// Writes the markers of a decided transaction (`prepared`), then its
    /// completion, retrying what fails until the node stops.
    fn spawn_completion(self: &Rc<Self>, id: String, prepared: Transit, complete: Transit) {
        // The load this completion runs for: it stops once that is not
        // current (the new leader completes it).
        let Ok(loaded) = self.current(&id) else {
            return;
        };
        let this = self.clone();
        *self.completing.borrow_mut().entry(id.clone()).or_default() += 1;
        compio::runtime::spawn(async move {
            this.complete_transaction(&loaded, &id, prepared, complete)
                .await;
            let mut completing = this.completing.borrow_mut();
            if let Some(count) = completing.get_mut(&id) {
                *count -= 1;
                if *count == 0 {
                    completing.remove(&id);
                }
            }
            drop(completing);
            this.completed.notify(usize::MAX);
        })
        .detach();
    }

    async fn complete_transaction(
        &self,
        loaded: &Rc<LoadedPartition>,
        id: &str,
        prepared: Transit,
        complete: Transit,
    ) {
        let commit = prepared.state == TxnState::PrepareCommit;
        let mut remaining: Vec<TopicPartition> = prepared.partitions.iter().cloned().collect();
        while !remaining.is_empty() {
            let results = self
                .env
                .write_markers(
                    prepared.producer_id,
                    prepared.producer_epoch,
                    commit,
                    loaded.leader_epoch,
                    remaining.clone(),
                )
                .await;
            let mut stuck = false;
            remaining = results
                .into_iter()
                .filter_map(|(partition, result)| match result {
                    Ok(()) => None,
                    // A deleted topic has nothing left to mark.
                    Err(ErrorCode::UnknownTopicOrPartition) => None,
                    // Kafka stops here too: the transaction stays undecided
                    // (its requests get CONCURRENT_TRANSACTIONS) until a
                    // restart drives it again.
                    Err(
                        code @ (ErrorCode::InvalidProducerEpoch
                        | ErrorCode::TransactionCoordinatorFenced),
                    ) => {
                        tracing::error!(transactional_id = %id, ?partition, ?code, "a partition refused the transaction marker");
                        stuck = true;
                        Some(partition)
                    }
                    Err(code) => {
                        tracing::warn!(transactional_id = %id, ?partition, ?code, "writing a transaction marker failed; retrying");
                        Some(partition)
                    }
                })
                .collect();
            if stuck || self.node.shutdown.is_triggered() || !self.is_current(loaded) {
                return;
            }
            if !remaining.is_empty() {
                compio::time::sleep(RETRY_BACKOFF).await;
            }
        }
        loop {
            // The completion need not wait for its sync: the markers are
            // durable, and if it is lost in a crash the replay finds the
            // transaction prepared and writes the markers again. The next
            // transaction's first write syncs the log (it comes later in the
            // same log), so nothing durable ever follows a lost completion.
            if self
                .append(loaded, id, Some(&complete), false)
                .await
                .is_ok()
            {
                // `append` checked that this load is still current.
                if let Some(meta) = self.txns.borrow_mut().get_mut(id) {
                    if meta.pending == Some(complete.state) {
                        meta.complete(&complete);
                    }
                }
                return;
            }
            if self.node.shutdown.is_triggered() || !self.is_current(loaded) {
                return;
            }
            compio::time::sleep(RETRY_BACKOFF).await;
        }
    }

    /// Aborts every transaction open past its timeout: the producer is
    /// fenced (epoch + 1) and its partitions get abort markers.
    async fn abort_timed_out(self: &Rc<Self>, now: i64) {
        // Each decision with the load it was taken under: a later one
        // (the partition given up and led again meanwhile) is not its.
        let due: Vec<(String, Transit, Rc<LoadedPartition>)> = {
            let mut txns = self.txns.borrow_mut();
            txns.values_mut()
                .filter(|m| requests::timed_out(m, now))
                .filter_map(|m| {
                    let loaded = self.current(&m.transactional_id).ok()?;
                    requests::fence_and_prepare_abort(m, self.config.transaction_version, now)
                        .ok()
                        .map(|t| (m.transactional_id.clone(), t, loaded))
                })
                .collect()
        };
        for (id, abort, loaded) in due {
            tracing::info!(transactional_id = %id, epoch = abort.producer_epoch, "aborting a transaction that timed out");
            if let Err(code) = self.abort_fenced(&loaded, &id, abort).await {
                tracing::warn!(transactional_id = %id, ?code, "could not abort a timed-out transaction; trying again later");
            }
        }
    }

    /// Forgets the ids idle for longer than `transactional.id.expiration.ms`
    /// (a tombstone each).
    async fn expire_ids(&self, now: i64) {
        let due: Vec<(String, Rc<LoadedPartition>)> = {
            let mut txns = self.txns.borrow_mut();
            txns.values_mut()
                .filter(|m| requests::expired(m, now, self.config.id_expiration_ms))
                .filter_map(|m| {
                    let loaded = self.current(&m.transactional_id).ok()?;
                    m.prepare_dead()
                        .ok()
                        .map(|_| (m.transactional_id.clone(), loaded))
                })
                .collect()
        };
        for (id, loaded) in due {
            let written = self.append(&loaded, &id, None, true).await;
            if !self.is_current(&loaded) {
                continue;
            }
            let mut txns = self.txns.borrow_mut();
            match written {
                Ok(()) => {
                    txns.remove(&id);
                    tracing::info!(transactional_id = %id, "transactional id expired");
                }
                Err(_) => {
                    if let Some(meta) = txns.get_mut(&id) {
                        meta.abandon();
                    }
                }
            }
        }
    }
}

/// The values a transit to `m`'s current state would carry: what the
/// markers of a transaction found being decided are written with.
fn transit_of(m: &TxnMetadata) -> Transit {
    Transit {
        producer_id: m.producer_id,
        prev_producer_id: m.prev_producer_id,
        next_producer_id: m.next_producer_id,
        producer_epoch: m.producer_epoch,
        last_producer_epoch: m.last_producer_epoch,
        timeout_ms: m.timeout_ms,
        state: m.state,
        partitions: m.partitions.clone(),
        start_ms: m.start_ms,
        last_update_ms: m.last_update_ms,
        client_tv: m.client_tv,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_is_kafkas() {
        // Java: "".hashCode() == 0, "a".hashCode() == 97,
        // "transactional-id".hashCode() == -1016617637 (computed by hand below).
        assert_eq!(java_string_hash(""), 0);
        assert_eq!(java_string_hash("a"), 97);
        assert_eq!(java_string_hash("ab"), 97 * 31 + 98);
        let by_hand = "transactional-id"
            .bytes()
            .fold(0i32, |h, b| h.wrapping_mul(31).wrapping_add(i32::from(b)));
        assert_eq!(java_string_hash("transactional-id"), by_hand);
        // Outside the BMP: two UTF-16 code units.
        assert_eq!(java_string_hash("😀"), 0xD83D * 31 + 0xDE00);
        for id in ["", "a", "transactional-id", "😀", "polygenelubricants"] {
            let p = txn_partition(id, 50);
            assert!((0..50).contains(&p), "{id}: {p}");
        }
        // "polygenelubricants".hashCode() is Integer.MIN_VALUE: abs is 0.
        assert_eq!(java_string_hash("polygenelubricants"), i32::MIN);
        assert_eq!(txn_partition("polygenelubricants", 50), 0);
    }
}
