//! Committed offsets of the groups a shard coordinates, and their log.
//!
//! A commit is appended to the group's partition of the internal offsets log
//! and synced (group commit) before it is acknowledged; only then does the
//! in-memory table change. Each record's key names (group, topic, partition) and
//! its value holds the offset, or is null (a tombstone) when the offset was
//! deleted or expired. At start-up the table is rebuilt by replaying the log.
//!
//! Lives on one shard (`RefCell`, no borrow across an `.await`).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::records::Compression;
use serde::{Deserialize, Serialize};

use crate::io::clock::now_ms;
use crate::protocol::batch::validate_records;
use crate::protocol::encode;
use crate::runtime::shard_for_partition;
use crate::storage::commit::GroupCommit;
use crate::storage::config::{CleanupPolicy, LogConfig};
use crate::storage::log::{self, LogRef, PartitionLog};
use crate::storage::replay;
use crate::storage::txn_verification::Verifications;

/// Name (and directory prefix) of the internal offsets log.
pub const OFFSETS_TOPIC: &str = "__sluice_offsets";
/// Partitions of the offsets log; fixed forever, since it decides where each
/// group's offsets are (Kafka's offsets.topic.num.partitions is 50; fewer suit
/// a single node).
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

pub struct OffsetStore {
    /// The offsets-log partitions this shard owns.
    pub(super) logs: HashMap<i32, LogRef>,
    pub(super) offsets: RefCell<HashMap<String, GroupOffsets>>,
    pub(super) next_sequence: Cell<u64>,
    /// Offsets committed in transactions not yet decided (KIP-98), per
    /// (producer id, offsets-log partition); see `txn_offsets.rs`.
    pub(super) pending: RefCell<HashMap<(i64, i32), PendingOffsets>>,
    /// Offsets a transaction marker is deciding while it is written (by the
    /// marker's ticket): still unstable until the marker is durable.
    pub(super) deciding: RefCell<HashMap<u64, PendingOffsets>>,
    /// Verification guards of transactional commits under way, per
    /// offsets-log partition (as the data partitions keep them).
    pub(super) verifications: RefCell<HashMap<i32, Verifications>>,
}

/// A transaction's offsets: (group, topic, partition) -> (commit sequence, offset).
pub(super) type PendingOffsets = BTreeMap<(String, String, i32), (u64, CommittedOffset)>;

impl OffsetStore {
    /// Replays and opens the offsets-log partitions owned by `shard_id`, with
    /// segments of `segment_bytes`. The log is compacted (cleanup.policy=compact):
    /// only the latest record of each (group, topic, partition) is kept.
    pub fn open(
        data_dir: &Path,
        shard_id: usize,
        shard_count: usize,
        segment_bytes: u64,
    ) -> Result<OffsetStore, String> {
        let mut logs = HashMap::new();
        let mut offsets: HashMap<String, GroupOffsets> = HashMap::new();
        let mut pending: HashMap<(i64, i32), PendingOffsets> = HashMap::new();
        // Commit sequences in log order, as the live writes take them: a
        // transaction's offsets, decided by a marker after the restart, must
        // still compare with the plain commits around them.
        let mut sequence = 0u64;
        for partition in 0..OFFSETS_PARTITIONS {
            if shard_for_partition(OFFSETS_TOPIC, partition, shard_count) != shard_id {
                continue;
            }
            let dir = PartitionLog::dir_for(data_dir, OFFSETS_TOPIC, partition);
            replay::for_each_record(&dir, |record| {
                sequence += 1;
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
            let config = LogConfig {
                segment_bytes,
                cleanup_policy: CleanupPolicy {
                    delete: false,
                    compact: true,
                },
                ..LogConfig::default()
            };
            let log = PartitionLog::open_private(OFFSETS_TOPIC, partition, dir, config)
                .map_err(|e| e.to_string())?;
            logs.insert(partition, log);
        }
        offsets.retain(|_, group| !group.is_empty());
        Ok(OffsetStore {
            logs,
            offsets: RefCell::new(offsets),
            next_sequence: Cell::new(sequence + 1),
            pending: RefCell::new(pending),
            deciding: RefCell::new(HashMap::new()),
            verifications: RefCell::new(HashMap::new()),
        })
    }

    /// Appends `changes` (None: delete) for `group` to its log, waits until they
    /// are durable, then applies them.
    pub async fn write(
        &self,
        commit: &Rc<GroupCommit>,
        group: &str,
        changes: Vec<((String, i32), Option<CommittedOffset>)>,
    ) -> Result<(), String> {
        if changes.is_empty() {
            return Ok(());
        }
        let log = self
            .logs
            .get(&offsets_partition(group))
            .ok_or("offsets partition not on this shard")?
            .clone();
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
        let validated = validate_records(&batch, usize::MAX).map_err(|e| e.to_string())?;
        let sequence = self.next_sequence.get();
        self.next_sequence.set(sequence + 1);
        log::append(&log, commit, batch, &validated, true)
            .await
            .map_err(|e| e.to_string())?;
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

    /// The offsets-log partitions of this shard, for the log cleaner.
    pub fn logs(&self) -> Vec<LogRef> {
        self.logs.values().cloned().collect()
    }

    pub fn close(&self) {
        for log in self.logs.values() {
            let _ = log.borrow_mut().close();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offset(offset: i64, at: i64) -> CommittedOffset {
        CommittedOffset {
            offset,
            leader_epoch: 0,
            metadata: Some(format!("m{offset}")),
            commit_timestamp_ms: at,
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
            let store = OffsetStore::open(dir.path(), 0, 1, OFFSETS_SEGMENT_BYTES).unwrap();
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
            store.close();
        });
        run(async {
            let store = OffsetStore::open(dir.path(), 0, 1, OFFSETS_SEGMENT_BYTES).unwrap();
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
            let store = OffsetStore::open(dir.path(), 0, 1, OFFSETS_SEGMENT_BYTES).unwrap();
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
            store.close();
        });
        run(async {
            let commit = Rc::new(GroupCommit::default());
            let store = OffsetStore::open(dir.path(), 0, 1, OFFSETS_SEGMENT_BYTES).unwrap();
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
            store.close();
        });
        // And a replay of all that gives the same.
        run(async {
            let store = OffsetStore::open(dir.path(), 0, 1, OFFSETS_SEGMENT_BYTES).unwrap();
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
            let store = OffsetStore::open(dir.path(), 0, 1, OFFSETS_SEGMENT_BYTES).unwrap();
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

    #[test]
    fn shards_own_disjoint_offsets_partitions() {
        let dir = tempfile::tempdir().unwrap();
        run(async {
            let owned: Vec<usize> = (0..3)
                .map(|shard| {
                    OffsetStore::open(dir.path(), shard, 3, OFFSETS_SEGMENT_BYTES)
                        .unwrap()
                        .logs
                        .len()
                })
                .collect();
            assert_eq!(owned.iter().sum::<usize>(), OFFSETS_PARTITIONS as usize);
        });
    }
}
