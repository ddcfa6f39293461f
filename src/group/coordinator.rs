//! The group coordinator of one shard: the groups whose offsets partition this
//! shard owns and this broker leads, their parked JoinGroup/SyncGroup
//! requests, their timers, and their committed offsets.
//!
//! Handlers on any shard reach it with `run_on(coordinator_shard(group), …)`.
//! The state machine (`state.rs`) decides; this file only delivers its answers
//! (`Output`s) to the requests waiting for them and drives its clock.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures_channel::oneshot;

use crate::group::offsets::{
    offsets_partition, CommittedOffset, LoadedPartition, OffsetStore, Replayed, Unloaded,
};
use crate::group::state::{Group, GroupConfig, GroupState, Output, RequestId};
use crate::io::clock::now_ms;
use crate::node::Node;
use crate::protocol::errors::ErrorCode;
use crate::storage::commit::GroupCommit;

/// How often group timers (session expiry, rebalance deadlines) are checked. A
/// member is therefore removed at most this much after its session timeout.
const TICK_INTERVAL: Duration = Duration::from_millis(100);
/// How often expired offsets are looked for.
const OFFSET_EXPIRY_INTERVAL_MS: i64 = 60_000;
/// Longest group id accepted; group ids are keys of the offsets log.
pub const GROUP_ID_LEN_MAX: usize = 1024;
/// Largest offset metadata string (Kafka's offset.metadata.max.bytes).
pub const OFFSET_METADATA_MAX_BYTES: usize = 4096;

pub struct GroupCoordinator {
    pub config: GroupConfig,
    /// Offsets of empty groups older than this are deleted (offsets.retention.minutes).
    offsets_retention_ms: i64,
    groups: RefCell<HashMap<String, Group>>,
    pending: RefCell<HashMap<RequestId, oneshot::Sender<Output>>>,
    next_request_id: Cell<RequestId>,
    pub offsets: OffsetStore,
    commit: Rc<GroupCommit>,
}

impl GroupCoordinator {
    pub fn new(
        config: GroupConfig,
        offsets_retention_ms: i64,
        offsets: OffsetStore,
        commit: Rc<GroupCommit>,
    ) -> Self {
        GroupCoordinator {
            config,
            offsets_retention_ms,
            groups: RefCell::new(HashMap::new()),
            pending: RefCell::new(HashMap::new()),
            next_request_id: Cell::new(1),
            offsets,
            commit,
        }
    }

    /// Runs the group timers until the node stops.
    pub fn start_timers(self: &Rc<Self>, node: &Arc<Node>) {
        let this = self.clone();
        let node = node.clone();
        compio::runtime::spawn(async move {
            let mut last_expiry = now_ms();
            while !node.shutdown.is_triggered() {
                compio::time::sleep(TICK_INTERVAL).await;
                let now = now_ms();
                this.tick(now);
                if now - last_expiry >= OFFSET_EXPIRY_INTERVAL_MS {
                    last_expiry = now;
                    this.expire_offsets(now).await;
                }
            }
            // Shutting down: parked JoinGroup/SyncGroup requests must not hold the
            // connections open for a rebalance timeout. Dropping their senders makes
            // them answer COORDINATOR_NOT_AVAILABLE, after which clients retry elsewhere.
            this.pending.borrow_mut().clear();
        })
        .detach();
    }

    fn tick(&self, now: i64) {
        let outputs: Vec<Output> = {
            let mut groups = self.groups.borrow_mut();
            groups
                .values_mut()
                .flat_map(|g| g.tick(now, &self.config))
                .collect()
        };
        self.deliver(outputs);
    }

    fn deliver(&self, outputs: Vec<Output>) {
        let mut pending = self.pending.borrow_mut();
        for output in outputs {
            let id = match &output {
                Output::Join(id, _) | Output::Sync(id, _) => *id,
            };
            if let Some(sender) = pending.remove(&id) {
                // The client may have gone; its answer is then dropped.
                let _ = sender.send(output);
            }
        }
    }

    fn park(&self) -> (RequestId, oneshot::Receiver<Output>) {
        let id = self.next_request_id.get();
        self.next_request_id.set(id + 1);
        let (tx, rx) = oneshot::channel();
        self.pending.borrow_mut().insert(id, tx);
        (id, rx)
    }

    /// Runs `f` on the group (created if missing) and waits for the answer it parks.
    pub async fn park_on_group(
        &self,
        group_id: &str,
        f: impl FnOnce(&mut Group, RequestId, &GroupConfig) -> Vec<Output>,
    ) -> Option<Output> {
        let (id, rx) = self.park();
        let outputs = {
            let mut groups = self.groups.borrow_mut();
            let group = groups
                .entry(group_id.to_string())
                .or_insert_with(|| Group::new(group_id.to_string()));
            f(group, id, &self.config)
        };
        self.deliver(outputs);
        rx.await.ok()
    }

    /// Runs `f` on an existing group, or returns None.
    pub fn with_group<R>(&self, group_id: &str, f: impl FnOnce(&mut Group) -> R) -> Option<R> {
        self.groups.borrow_mut().get_mut(group_id).map(f)
    }

    /// Runs `f` on the group and delivers the outputs it returns besides its result.
    pub fn with_group_delivering<R>(
        &self,
        group_id: &str,
        f: impl FnOnce(&mut Group) -> (R, Vec<Output>),
    ) -> Option<R> {
        let (result, outputs) = self.groups.borrow_mut().get_mut(group_id).map(f)?;
        self.deliver(outputs);
        Some(result)
    }

    /// The state of a group: live groups, and groups known only by their offsets (Empty).
    pub fn group_state(&self, group_id: &str) -> Option<GroupState> {
        match self.groups.borrow().get(group_id) {
            Some(group) if group.state() != GroupState::Dead => Some(group.state()),
            _ => self
                .offsets
                .has_offsets(group_id)
                .then_some(GroupState::Empty),
        }
    }

    /// Every group this shard coordinates, with its state and protocol type (empty
    /// for a group known only by its offsets, as Kafka reports it).
    pub fn list(&self) -> Vec<(String, GroupState, String)> {
        let groups = self.groups.borrow();
        let mut out: Vec<_> = groups
            .values()
            .filter(|g| {
                g.state() != GroupState::Dead
                    && (!g.is_empty() || self.offsets.has_offsets(g.group_id()))
            })
            .map(|g| {
                (
                    g.group_id().to_string(),
                    g.state(),
                    g.protocol_type().unwrap_or_default().to_string(),
                )
            })
            .collect();
        for group in self.offsets.groups() {
            if !groups.contains_key(&group) {
                out.push((group, GroupState::Empty, String::new()));
            }
        }
        out
    }

    /// DeleteGroups: only an empty group can be deleted; its offsets go too.
    pub async fn delete_group(&self, group_id: &str) -> Result<(), ErrorCode> {
        let state = self
            .group_state(group_id)
            .ok_or(ErrorCode::GroupIdNotFound)?;
        if state != GroupState::Empty {
            return Err(ErrorCode::NonEmptyGroup);
        }
        let changes = self
            .offsets
            .group_offsets(group_id)
            .into_iter()
            .map(|(k, _)| (k, None))
            .collect();
        self.offsets.write(&self.commit, group_id, changes).await?;
        let outputs = self
            .groups
            .borrow_mut()
            .remove(group_id)
            .map(|mut g| g.mark_dead())
            .unwrap_or_default();
        self.deliver(outputs);
        Ok(())
    }

    /// Stores offsets (already validated against the group) durably.
    pub async fn commit_offsets(
        &self,
        group_id: &str,
        offsets: Vec<((String, i32), CommittedOffset)>,
    ) -> Result<(), ErrorCode> {
        let changes = offsets.into_iter().map(|(k, v)| (k, Some(v))).collect();
        self.offsets.write(&self.commit, group_id, changes).await
    }

    /// Stores offsets as part of a producer's transaction (already validated
    /// against the group); see `txn_offsets.rs`.
    pub async fn commit_transactional(
        &self,
        group_id: &str,
        producer_id: i64,
        epoch: i16,
        guard: Option<u64>,
        offsets: Vec<((String, i32), CommittedOffset)>,
    ) -> Result<(), ErrorCode> {
        self.offsets
            .write_transactional(&self.commit, group_id, producer_id, epoch, guard, offsets)
            .await
    }

    /// The marker of a transaction for one of this shard's offsets partitions.
    pub async fn complete_txn(
        &self,
        partition: i32,
        producer_id: i64,
        epoch: i16,
        marker: crate::protocol::control::EndTxnMarker,
    ) -> Result<(), ErrorCode> {
        self.offsets
            .complete_txn(&self.commit, partition, producer_id, epoch, marker)
            .await
    }

    pub async fn delete_offsets(
        &self,
        group_id: &str,
        partitions: Vec<(String, i32)>,
    ) -> Result<(), ErrorCode> {
        let changes = partitions.into_iter().map(|k| (k, None)).collect();
        self.offsets.write(&self.commit, group_id, changes).await
    }

    /// Deletes offsets older than the retention of groups that have no members.
    async fn expire_offsets(&self, now: i64) {
        let cutoff = now.saturating_sub(self.offsets_retention_ms);
        let expired = self.offsets.expired(cutoff, |group| {
            self.groups.borrow().get(group).is_none_or(|g| g.is_empty())
        });
        for (group, partitions) in expired {
            tracing::info!(%group, partitions = partitions.len(), "expiring committed offsets");
            if let Err(error) = self.delete_offsets(&group, partitions).await {
                tracing::warn!(%group, ?error, "expiring offsets failed");
            }
        }
    }

    /// Whether this shard coordinates `group_id` now: NOT_COORDINATOR when
    /// this broker does not lead its offsets partition (the client asks
    /// FindCoordinator again), COORDINATOR_LOAD_IN_PROGRESS while loading.
    pub fn serves(&self, group_id: &str) -> Result<(), ErrorCode> {
        self.offsets.status(offsets_partition(group_id))
    }

    /// Takes over the groups of an offsets partition this broker now leads.
    pub fn install(&self, loaded: LoadedPartition, replayed: Replayed) -> bool {
        let index = loaded.partition.index;
        let installed = self.offsets.install(loaded, replayed);
        if installed {
            tracing::info!(
                partition = index,
                "coordinating the groups of an offsets partition"
            );
        }
        installed
    }

    /// Gives up the groups of offsets partition `partition` (another broker
    /// leads it now): their members' parked requests are answered
    /// COORDINATOR_NOT_AVAILABLE, after which they find the new coordinator
    /// and join again there.
    pub fn unload(&self, partition: i32) -> Unloaded {
        let unloaded = self.offsets.unload(partition);
        if unloaded == Unloaded::Neither {
            return unloaded;
        }
        let outputs: Vec<Output> = {
            let mut groups = self.groups.borrow_mut();
            let moved: Vec<String> = groups
                .keys()
                .filter(|g| offsets_partition(g) == partition)
                .cloned()
                .collect();
            moved
                .into_iter()
                .filter_map(|g| groups.remove(&g))
                .flat_map(|mut g| g.mark_dead())
                .collect()
        };
        self.deliver(outputs);
        tracing::info!(
            partition,
            "no longer coordinating the groups of an offsets partition"
        );
        unloaded
    }
}
