//! Committed offsets of the groups a shard coordinates, and their log.
//!
//! The offsets log is an internal topic (`__sluice_offsets`) replicated like
//! any other; a shard coordinates the groups of the partitions of it that it
//! owns *and this broker leads*. Taking the lead, it loads the partition: it
//! replays the log into the table (`load`); losing it, it forgets them
//! (`unload`), and clients find the new leader with FindCoordinator.
//!
//! A commit is appended to the group's partition as an acks=all write (the
//! in-sync replicas have it, with at least the topic's min.insync.replicas)
//! before it is acknowledged; only then does the in-memory table change.
//! Each record's key names (group, topic, partition) and its value holds the
//! offset, or is null (a tombstone) when the offset was deleted or expired.
//!
//! Lives on one shard (`RefCell`, no borrow across an `.await`).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::records::Compression;
use serde::{Deserialize, Serialize};

use crate::io::clock::now_ms;
pub use crate::partition::internal::{LoadedPartition, Unloaded};
use crate::partition::local::ProduceError;
use crate::protocol::batch::validate_records;
use crate::protocol::encode;
use crate::protocol::errors::ErrorCode;
use crate::storage::commit::GroupCommit;
use crate::storage::replay;

/// Name (and directory prefix) of the internal offsets log.
pub const OFFSETS_TOPIC: &str = "__sluice_offsets";
/// Partitions of the offsets log; fixed forever, since it decides where each
/// group's offsets are (Kafka's offsets.topic.num.partitions is 50; fewer suit
/// a small cluster).
pub const OFFSETS_PARTITIONS: i32 = 16;
/// Default size of the offsets log's segments (`--offsets-topic-segment-bytes`).
/// Only closed segments are compacted, so this bounds what compaction leaves behind.
pub const OFFSETS_SEGMENT_BYTES: u64 = 64 << 20;

/// The offsets-log partition of a group.
pub fn offsets_partition(group_id: &str) -> i32 {
    (crc32c::crc32c(group_id.as_bytes()) % OFFSETS_PARTITIONS as u32) as i32
}

/// One committed offset, as OffsetFetch returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    pub commit_timestamp_ms: i64,
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct OffsetKey {
    pub(super) group: String,
    pub(super) topic: String,
    pub(super) partition: i32,
}

/// (topic, partition) -> (commit sequence, offset). The sequence orders commits
/// whose appends complete out of order.
type GroupOffsets = BTreeMap<(String, i32), (u64, CommittedOffset)>;

/// A transaction's offsets: (group, topic, partition) -> (commit sequence, offset).
pub(super) type PendingOffsets = BTreeMap<(String, String, i32), (u64, CommittedOffset)>;

/// Kafka's answer to a group's client when the offsets log refused a write
/// (`GroupMetadataManager`'s mapping).
pub(super) fn coordinator_error(error: &ProduceError) -> ErrorCode {
    match error.error_code() {
        ErrorCode::UnknownTopicOrPartition
        | ErrorCode::NotEnoughReplicas
        | ErrorCode::NotEnoughReplicasAfterAppend => ErrorCode::CoordinatorNotAvailable,
        ErrorCode::NotLeaderOrFollower | ErrorCode::KafkaStorageError => ErrorCode::NotCoordinator,
        ErrorCode::MessageTooLarge | ErrorCode::RecordListTooLarge => {
            ErrorCode::InvalidCommitOffsetSize
        }
        other => other,
    }
}

#[derive(Default)]
pub struct OffsetStore {
    /// The offsets-log partitions this shard leads and has loaded.
    pub(super) loaded: RefCell<HashMap<i32, Rc<LoadedPartition>>>,
    /// Being loaded: COORDINATOR_LOAD_IN_PROGRESS meanwhile.
    loading: RefCell<HashSet<i32>>,
    pub(super) offsets: RefCell<HashMap<String, GroupOffsets>>,
    pub(super) next_sequence: Cell<u64>,
    /// Offsets committed in transactions not yet decided (KIP-98), per
    /// (producer id, offsets-log partition); see `txn_offsets.rs`.
    pub(super) pending: RefCell<HashMap<(i64, i32), PendingOffsets>>,
    /// Offsets a transaction marker is deciding while it is written (by the
    /// marker's ticket): still unstable until the marker is durable.
    pub(super) deciding: RefCell<HashMap<u64, PendingOffsets>>,
}

/// What replaying one partition of the offsets log finds, its records
/// numbered from 1 in log order (installed after the sequences taken so far).
#[derive(Default)]
pub struct Replayed {
    offsets: HashMap<String, GroupOffsets>,
    pending: HashMap<(i64, i32), PendingOffsets>,
    records: u64,
}

/// Replays partition `partition` of the offsets log in `dir` (blocking
/// reads: a coordinator runs it off its shard), numbering records in log
/// order, as the live writes take them: a transaction's offsets, decided by
/// a marker later, must still compare with the plain commits around them.
pub fn replay(dir: &Path, partition: i32) -> Result<Replayed, String> {
    let mut found = Replayed::default();
    let Replayed {
        offsets,
        pending,
        records,
    } = &mut found;
    replay::for_each_record(dir, |record| {
        *records += 1;
        let sequence = *records;
        // Transactional commits wait for their transaction's marker.
        if record.control {
            let key = record.key.as_deref().unwrap_or_default();
            let commit = match key {
                [0, 0, 0, 1] => true,
                [0, 0, 0, 0] => false,
                _ => return Ok(()), // not a transaction marker: Kafka ignores those
            };
            let decided = pending.remove(&(record.producer_id, partition));
            if let (true, Some(decided)) = (commit, decided) {
                for ((group, topic, p), (seq, value)) in decided {
                    // A plain commit written after the transactional
                    // one wins (as live, and as Kafka compares).
                    let table = offsets.entry(group).or_default();
                    let key = (topic, p);
                    if table.get(&key).is_none_or(|(before, _)| *before < seq) {
                        table.insert(key, (seq, value));
                    }
                }
            }
            return Ok(());
        }
        let key = record.key.ok_or("offset record without key")?;
        let key: OffsetKey = serde_json::from_slice(&key).map_err(|e| e.to_string())?;
        if record.transactional {
            let value = record.value.ok_or("transactional offset without a value")?;
            let value: CommittedOffset =
                serde_json::from_slice(&value).map_err(|e| e.to_string())?;
            pending
                .entry((record.producer_id, partition))
                .or_default()
                .insert((key.group, key.topic, key.partition), (sequence, value));
            return Ok(());
        }
        let group = offsets.entry(key.group).or_default();
        match record.value {
            Some(value) => {
                let value: CommittedOffset =
                    serde_json::from_slice(&value).map_err(|e| e.to_string())?;
                group.insert((key.topic, key.partition), (sequence, value));
            }
            None => {
                group.remove(&(key.topic, key.partition));
            }
        }
        Ok(())
    })?;
    offsets.retain(|_, group| !group.is_empty());
    Ok(found)
}

impl OffsetStore {
    pub fn new() -> OffsetStore {
        OffsetStore::default()
    }

    /// Whether this shard coordinates the groups of offsets-log `partition`:
    /// COORDINATOR_LOAD_IN_PROGRESS while it loads, NOT_COORDINATOR when
    /// this broker does not lead it.
    pub fn status(&self, partition: i32) -> Result<(), ErrorCode> {
        if self.loaded.borrow().contains_key(&partition) {
            Ok(())
        } else if self.loading.borrow().contains(&partition) {
            Err(ErrorCode::CoordinatorLoadInProgress)
        } else {
            Err(ErrorCode::NotCoordinator)
        }
    }

    /// The loaded partition, with the leader epoch it is led in.
    pub fn loaded(&self, partition: i32) -> Option<Rc<LoadedPartition>> {
        self.loaded.borrow().get(&partition).cloned()
    }

    /// Whether `loaded` is still this store's load of its partition, led in
    /// the same epoch: state may change after an await only if so.
    pub(super) fn is_current(&self, loaded: &Rc<LoadedPartition>) -> bool {
        loaded.still_leads()
            && self
                .loaded(loaded.partition.index)
                .is_some_and(|now| Rc::ptr_eq(&now, loaded))
    }

    /// Whether `partition` is loaded here (its load done).
    pub fn is_loaded(&self, partition: i32) -> bool {
        self.loaded.borrow().contains_key(&partition)
    }

    /// A load of `partition` has begun (the leadership was taken).
    pub fn begin_load(&self, partition: i32) {
        self.loading.borrow_mut().insert(partition);
    }

    /// Takes over the groups of `loaded`'s partition, as its log replayed
    /// (every write to it settled before): whether it was installed (not if
    /// the partition was unloaded meanwhile: the leadership moved on again).
    pub fn install(&self, loaded: LoadedPartition, replayed: Replayed) -> bool {
        let index = loaded.partition.index;
        if !self.loading.borrow_mut().remove(&index) {
            return false;
        }
        let base = self.next_sequence.get();
        self.next_sequence.set(base + replayed.records + 1);
        self.forget(index);
        let mut offsets = self.offsets.borrow_mut();
        for (group, mut table) in replayed.offsets {
            for (seq, _) in table.values_mut() {
                *seq += base;
            }
            offsets.insert(group, table);
        }
        let mut pending = self.pending.borrow_mut();
        for (key, mut held) in replayed.pending {
            for (seq, _) in held.values_mut() {
                *seq += base;
            }
            pending.insert(key, held);
        }
        self.loaded.borrow_mut().insert(index, Rc::new(loaded));
        true
    }

    /// [`replay`] and [`OffsetStore::install`] at once, on this thread.
    pub fn load(&self, loaded: LoadedPartition) -> Result<bool, String> {
        let dir = loaded.partition.log().borrow().dir().to_path_buf();
        let replayed = replay(&dir, loaded.partition.index)?;
        Ok(self.install(loaded, replayed))
    }

    /// Stops coordinating the groups of `partition` (the leadership moved):
    /// their offsets are forgotten here; the new leader loads them. Returns
    /// whether it was loaded (or loading).
    pub fn unload(&self, partition: i32) -> Unloaded {
        let was_loading = self.loading.borrow_mut().remove(&partition);
        let was_loaded = self.loaded.borrow_mut().remove(&partition).is_some();
        self.forget(partition);
        match (was_loaded, was_loading) {
            (true, _) => Unloaded::Loaded,
            (false, true) => Unloaded::Loading,
            (false, false) => Unloaded::Neither,
        }
    }

    fn forget(&self, partition: i32) {
        self.offsets
            .borrow_mut()
            .retain(|group, _| offsets_partition(group) != partition);
        self.pending
            .borrow_mut()
            .retain(|(_, p), _| *p != partition);
        for held in self.deciding.borrow_mut().values_mut() {
            held.retain(|(group, _, _), _| offsets_partition(group) != partition);
        }
    }

    /// Appends `changes` (None: delete) for `group` to its log, waits until
    /// the in-sync replicas have them, then applies them.
    pub async fn write(
        &self,
        commit: &Rc<GroupCommit>,
        group: &str,
        changes: Vec<((String, i32), Option<CommittedOffset>)>,
    ) -> Result<(), ErrorCode> {
        let loaded = self
            .loaded(offsets_partition(group))
            .ok_or(ErrorCode::NotCoordinator)?;
        if changes.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        let records: Vec<_> = changes
            .iter()
            .enumerate()
            .map(|(i, ((topic, partition), value))| {
                let key = OffsetKey {
                    group: group.to_string(),
                    topic: topic.clone(),
                    partition: *partition,
                };
                let key = Bytes::from(serde_json::to_vec(&key).expect("keys serialize"));
                let value = value
                    .as_ref()
                    .map(|v| Bytes::from(serde_json::to_vec(v).expect("offsets serialize")));
                encode::record(i as i64, now, Some(key), value, None)
            })
            .collect();
        let batch = encode::encode_batch(&records, Compression::None);
        let validated =
            validate_records(&batch, usize::MAX).map_err(|_| ErrorCode::UnknownServerError)?;
        let sequence = self.next_sequence.get();
        self.next_sequence.set(sequence + 1);
        if !self.is_current(&loaded) {
            return Err(ErrorCode::NotCoordinator);
        }
        loaded
            .partition
            .append(commit, batch, &validated, loaded.acks(), &loaded.stop)
            .await
            .map_err(|e| coordinator_error(&e))?;
        if !self.is_current(&loaded) {
            // Unloaded while it was replicated: the new leader has it.
            return Err(ErrorCode::NotCoordinator);
        }
        let mut offsets = self.offsets.borrow_mut();
        let table = offsets.entry(group.to_string()).or_default();
        for (key, value) in changes {
            match value {
                Some(value) => {
                    if table.get(&key).is_none_or(|(seq, _)| *seq < sequence) {
                        table.insert(key, (sequence, value));
                    }
                }
                None => {
                    table.remove(&key);
                }
            }
        }
        if table.is_empty() {
            offsets.remove(group);
        }
        Ok(())
    }

    pub fn get(&self, group: &str, topic: &str, partition: i32) -> Option<CommittedOffset> {
        let offsets = self.offsets.borrow();
        offsets
            .get(group)?
            .get(&(topic.to_string(), partition))
            .map(|(_, o)| o.clone())
    }

    /// Every committed offset of `group`, ordered by topic and partition.
    pub fn group_offsets(&self, group: &str) -> Vec<((String, i32), CommittedOffset)> {
        let offsets = self.offsets.borrow();
        offsets
            .get(group)
            .map(|table| {
                table
                    .iter()
                    .map(|(k, (_, v))| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Groups that have committed offsets.
    pub fn groups(&self) -> Vec<String> {
        self.offsets.borrow().keys().cloned().collect()
    }

    pub fn has_offsets(&self, group: &str) -> bool {
        self.offsets.borrow().contains_key(group)
    }

    /// Offsets committed before `cutoff_ms` by groups for which `expirable` says yes.
    pub fn expired(
        &self,
        cutoff_ms: i64,
        expirable: impl Fn(&str) -> bool,
    ) -> Vec<(String, Vec<(String, i32)>)> {
        let offsets = self.offsets.borrow();
        offsets
            .iter()
            .filter(|(group, _)| expirable(group))
            .map(|(group, table)| {
                let old = table
                    .iter()
                    .filter(|(_, (_, o))| o.commit_timestamp_ms < cutoff_ms)
                    .map(|(k, _)| k.clone())
                    .collect::<Vec<_>>();
                (group.clone(), old)
            })
            .filter(|(_, old)| !old.is_empty())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn offset(offset: i64, at: i64) -> CommittedOffset {
        CommittedOffset {
            offset,
            leader_epoch: 0,
            metadata: Some(format!("m{offset}")),
            commit_timestamp_ms: at,
        }
    }

    /// Opens offsets partition `partition` in `dir` as its only replica
    /// (leader) and loads it into `store`.
    fn load(store: &OffsetStore, dir: &Path, partition: i32) {
        use crate::metadata::Placement;
        use crate::partition::local::Partition;
        use crate::partition::state::PartitionState;
        use crate::storage::config::{CleanupPolicy, LogConfig};
        use crate::storage::log::PartitionLog;
        let state = Arc::new(PartitionState::default());
        let config = LogConfig {
            segment_bytes: OFFSETS_SEGMENT_BYTES,
            cleanup_policy: CleanupPolicy {
                delete: false,
                compact: true,
            },
            ..LogConfig::default()
        };
        let log = PartitionLog::open(
            Arc::from(OFFSETS_TOPIC),
            partition,
            PartitionLog::dir_for(dir, OFFSETS_TOPIC, partition),
            config,
            state.log_state(),
        )
        .unwrap();
        let partition = Rc::new(Partition::new(
            Arc::from(OFFSETS_TOPIC),
            partition,
            state,
            Rc::new(std::cell::RefCell::new(log)),
            1,
        ));
        partition.apply_placement(&Placement::new(vec![1]));
        store.begin_load(partition.index);
        store
            .load(LoadedPartition {
                partition,
                leader_epoch: 0,
                min_isr: 1,
                stop: Arc::new(crate::runtime::signal::ShutdownSignal::default()),
            })
            .unwrap();
    }

    /// A store that leads (and has loaded) every offsets partition in `dir`.
    fn open(dir: &Path) -> OffsetStore {
        let store = OffsetStore::new();
        for partition in 0..OFFSETS_PARTITIONS {
            load(&store, dir, partition);
        }
        store
    }

    fn close(store: &OffsetStore) {
        for loaded in store.loaded.borrow().values() {
            loaded.partition.log().borrow_mut().close().unwrap();
        }
    }

    fn run<F: std::future::Future>(f: F) -> F::Output {
        compio::runtime::Runtime::new()
            .expect("runtime")
            .block_on(f)
    }

    #[test]
    fn commits_survive_a_reopen_and_tombstones_delete() {
        let dir = tempfile::tempdir().unwrap();
        run(async {
            let commit = Rc::new(GroupCommit::default());
            let store = open(dir.path());
            store
                .write(
                    &commit,
                    "g1",
                    vec![
                        (("t".into(), 0), Some(offset(10, 1))),
                        (("t".into(), 1), Some(offset(20, 1))),
                    ],
                )
                .await
                .unwrap();
            store
                .write(&commit, "g1", vec![(("t".into(), 0), Some(offset(11, 2)))])
                .await
                .unwrap();
            store
                .write(&commit, "g2", vec![(("u".into(), 0), Some(offset(5, 3)))])
                .await
                .unwrap();
            store
                .write(&commit, "g2", vec![(("u".into(), 0), None)])
                .await
                .unwrap();
            assert_eq!(store.get("g1", "t", 0).map(|o| o.offset), Some(11));
            assert!(
                !store.has_offsets("g2"),
                "a group whose offsets are all deleted is gone"
            );
            close(&store);
        });
        run(async {
            let store = open(dir.path());
            let offsets = store.group_offsets("g1");
            assert_eq!(offsets.len(), 2);
            assert_eq!(offsets[0], (("t".to_string(), 0), offset(11, 2)));
            assert_eq!(offsets[1].1.metadata.as_deref(), Some("m20"));
            assert!(
                store.get("g2", "u", 0).is_none(),
                "the tombstone replays too"
            );
        });
    }

    /// A transaction's offsets written before a restart and committed by
    /// its marker after it (the coordinator completes the commit) replace
    /// the plain commit before them; a plain commit written after them is
    /// kept. Found by the exactly-once test: the replay gave every offset
    /// the same sequence, so the marker after the restart changed nothing
    /// and the group went back to its previous offset.
    #[test]
    fn transactional_offsets_decided_after_a_restart_apply_in_log_order() {
        use crate::protocol::control::EndTxnMarker;
        let dir = tempfile::tempdir().unwrap();
        let marker = |commit| EndTxnMarker {
            commit,
            coordinator_epoch: 0,
        };
        let partition = offsets_partition("g");
        run(async {
            let commit = Rc::new(GroupCommit::default());
            let store = open(dir.path());
            let plain = |o| vec![(("t".into(), 0), Some(offset(o, 1)))];
            store.write(&commit, "g", plain(80)).await.unwrap();
            store.write(&commit, "g", plain(5)).await.unwrap();
            // Producer 7: p0 = 90; producer 8: p0 = 95, then a plain 99.
            for (pid, value) in [(7, 90), (8, 95)] {
                let guard = store.begin_txn_commit("g", pid, 0, false);
                store
                    .write_transactional(
                        &commit,
                        "g",
                        pid,
                        0,
                        guard,
                        vec![(("t".into(), 0), offset(value, 2))],
                    )
                    .await
                    .unwrap();
            }
            store
                .write(&commit, "g", vec![(("t".into(), 1), Some(offset(99, 3)))])
                .await
                .unwrap();
            assert!(store.has_pending("g", "t", 0));
            close(&store);
        });
        run(async {
            let commit = Rc::new(GroupCommit::default());
            let store = open(dir.path());
            assert!(store.has_pending("g", "t", 0), "still undecided");
            assert_eq!(store.get("g", "t", 0).map(|o| o.offset), Some(5));
            store
                .complete_txn(&commit, partition, 7, 0, marker(true))
                .await
                .unwrap();
            assert_eq!(store.get("g", "t", 0).map(|o| o.offset), Some(90));
            assert!(store.has_pending("g", "t", 0), "producer 8's is open");
            // A plain commit after producer 8's offsets: it stays.
            store
                .write(&commit, "g", vec![(("t".into(), 0), Some(offset(100, 4)))])
                .await
                .unwrap();
            store
                .complete_txn(&commit, partition, 8, 0, marker(true))
                .await
                .unwrap();
            assert_eq!(store.get("g", "t", 0).map(|o| o.offset), Some(100));
            assert!(!store.has_pending("g", "t", 0));
            close(&store);
        });
        // And a replay of all that gives the same.
        run(async {
            let store = open(dir.path());
            assert_eq!(store.get("g", "t", 0).map(|o| o.offset), Some(100));
            assert_eq!(store.get("g", "t", 1).map(|o| o.offset), Some(99));
            assert!(!store.has_pending("g", "t", 0));
        });
    }

    #[test]
    fn only_old_offsets_of_expirable_groups_expire() {
        let dir = tempfile::tempdir().unwrap();
        run(async {
            let commit = Rc::new(GroupCommit::default());
            let store = open(dir.path());
            store
                .write(
                    &commit,
                    "idle",
                    vec![
                        (("t".into(), 0), Some(offset(1, 100))),
                        (("t".into(), 1), Some(offset(2, 900))),
                    ],
                )
                .await
                .unwrap();
            store
                .write(
                    &commit,
                    "busy",
                    vec![(("t".into(), 0), Some(offset(3, 100)))],
                )
                .await
                .unwrap();
            let expired = store.expired(500, |group| group == "idle");
            assert_eq!(
                expired,
                vec![("idle".to_string(), vec![("t".to_string(), 0)])]
            );
        });
    }

    /// A partition given up (another broker leads it) takes its groups'
    /// offsets with it: NOT_COORDINATOR for them, commits refused; loaded
    /// again, the log brings them back. Other partitions are untouched.
    #[test]
    fn an_unloaded_partition_forgets_its_groups_until_loaded_again() {
        let dir = tempfile::tempdir().unwrap();
        let (moving, staying) = ("g-moving", "g-staying");
        let mut staying_group = staying.to_string();
        let mut n = 0;
        while offsets_partition(&staying_group) == offsets_partition(moving) {
            n += 1;
            staying_group = format!("{staying}-{n}");
        }
        run(async {
            let commit = Rc::new(GroupCommit::default());
            let store = open(dir.path());
            for group in [moving, staying_group.as_str()] {
                store
                    .write(&commit, group, vec![(("t".into(), 0), Some(offset(7, 1)))])
                    .await
                    .unwrap();
            }
            let partition = offsets_partition(moving);
            let loaded = store.loaded(partition).unwrap();
            assert_eq!(store.unload(partition), Unloaded::Loaded);
            assert_eq!(store.status(partition), Err(ErrorCode::NotCoordinator));
            assert!(store.get(moving, "t", 0).is_none(), "forgotten here");
            assert_eq!(
                store
                    .write(&commit, moving, vec![(("t".into(), 0), Some(offset(8, 2)))])
                    .await,
                Err(ErrorCode::NotCoordinator)
            );
            assert_eq!(
                store.get(&staying_group, "t", 0).map(|o| o.offset),
                Some(7),
                "another partition's groups stay"
            );
            store.begin_load(partition);
            assert_eq!(
                store.status(partition),
                Err(ErrorCode::CoordinatorLoadInProgress)
            );
            store
                .load(LoadedPartition {
                    partition: loaded.partition.clone(),
                    leader_epoch: 0,
                    min_isr: 1,
                    stop: loaded.stop.clone(),
                })
                .unwrap();
            assert_eq!(store.status(partition), Ok(()));
            assert_eq!(store.get(moving, "t", 0).map(|o| o.offset), Some(7));
            close(&store);
        });
    }
}
