//! The metadata controller: the single writer of cluster metadata. Runs on shard
//! 0; handlers on any shard reach it with `run_on(CONTROLLER_SHARD, …)`.
//!
//! Every change follows the same steps, one change at a time (`lock`):
//! validate and plan (`plan_*`: for new partitions, which brokers host them)
//! → write the change through the metadata quorum (`record_*`), which
//! returns once it is committed and applied here. Applying it, on every
//! node, opens the logs of the partitions that node hosts before the new
//! image is published, so a partition is in a node's image only once its log
//! exists there. `node::topics` runs the steps; this file knows only the
//! metadata.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures_util::future::LocalBoxFuture;
use uuid::Uuid;

use crate::metadata::reassign;
use crate::metadata::records::{self, MetadataRecord, BLOCK_OVERLAP, PRODUCER_ID_BLOCK};
use crate::metadata::topic_config::{deprecation_note, TopicConfig};
use crate::metadata::{
    is_internal_topic, validate_topic_name, PartitionState, Placement, TopicMeta,
    PARTITIONS_PER_TOPIC_MAX,
};
use crate::node::Node;
use crate::protocol::errors::ErrorCode;

/// An error to report to the client: a Kafka error code and a message.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
        }
    }
}

/// Checks one partition's manual replica assignment the way Kafka's
/// controller does (`ReplicationControlManager.validateManualPartitionAssignment`):
/// not empty, only registered brokers (on one node: this one), none twice, and
/// as many replicas as `replication_factor` when that is known.
pub fn check_replica_assignment(
    replicas: &[i32],
    registered: &[i32],
    replication_factor: Option<usize>,
) -> Result<(), ApiError> {
    let refuse = |message: String| Err(ApiError::new(ErrorCode::InvalidReplicaAssignment, message));
    if replicas.is_empty() {
        return refuse("The manual partition assignment includes an empty replica list.".into());
    }
    let mut sorted = replicas.to_vec();
    sorted.sort_unstable();
    for (i, broker) in sorted.iter().enumerate() {
        if !registered.contains(broker) {
            return refuse(format!(
                "The manual partition assignment includes broker {broker}, but no such broker is registered."
            ));
        }
        if i > 0 && sorted[i - 1] == *broker {
            return refuse(format!(
                "The manual partition assignment includes the broker {broker} more than once."
            ));
        }
    }
    if let Some(factor) = replication_factor.filter(|&f| f != sorted.len()) {
        return refuse(format!(
            "The manual partition assignment includes a partition with {} replica(s), but this is \
             not consistent with previous partitions, which have {factor} replica(s).",
            sorted.len()
        ));
    }
    Ok(())
}

/// Logs, for each deprecated config being set, what Sluice does with it.
fn note_deprecated(topic: &str, configs: &BTreeMap<String, String>) {
    for (key, value) in configs {
        if let Some(note) = deprecation_note(key) {
            tracing::info!(topic, config = %key, %value, "{note}");
        }
    }
}

/// Where the controller's changes become durable and agreed on: the
/// metadata quorum (`node::quorum` implements it over `cluster`).
pub trait MetadataLog {
    /// Writes `record` and returns once it is committed and applied to the
    /// image here (applying opens the logs of the partitions this node
    /// hosts, and removes those of deleted ones).
    fn write<'a>(&'a self, record: &MetadataRecord) -> LocalBoxFuture<'a, Result<(), ApiError>>;
    /// The quorum as this node sees it.
    fn status(&self) -> QuorumView;
    /// The index after the last entry applied to this node's image.
    fn applied_end(&self) -> u64;
    /// Whether this node leads the quorum now and its image holds
    /// everything committed before its term (only the leader's writes can
    /// succeed, and a change planned on an older image could undo a
    /// predecessor's last ones).
    fn leads_applied(&self) -> bool;
    /// A block of producer ids, `[start, end)`, granted by the active
    /// controller (this node or another).
    fn producer_id_block(&self) -> LocalBoxFuture<'_, Result<(i64, i64), ApiError>>;
    /// Stops taking part in the quorum (shutdown).
    fn close(&self) -> LocalBoxFuture<'_, ()>;
}

/// The metadata quorum as DescribeQuorum reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QuorumView {
    pub leader_id: Option<i32>,
    /// KRaft's leader epoch: the Raft term.
    pub leader_epoch: i32,
    /// The offset after the last committed entry.
    pub high_watermark: i64,
    /// Whether this node leads (only the leader knows the voters' progress).
    pub is_leader: bool,
    /// Every voter, as far as this node knows.
    pub voters: Vec<VoterView>,
}

/// One voter of the metadata quorum (DescribeQuorum's ReplicaState).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VoterView {
    pub id: i32,
    /// Its controller listener (host:port).
    pub addr: String,
    /// The offset after its last entry, -1 when unknown here.
    pub log_end_offset: i64,
    /// Wall-clock ms of its last acknowledgement to the leader, -1 if none.
    pub last_fetch_timestamp: i64,
    /// Wall-clock ms when it last had everything committed, -1 if unknown.
    pub last_caught_up_timestamp: i64,
}

pub struct Controller {
    node: Arc<Node>,
    log: Rc<dyn MetadataLog>,
    /// One change at a time.
    lock: async_lock::Mutex<()>,
    /// One producer id allocation at a time (not `lock`: the block it may
    /// ask for is granted, on the leader, under `lock`).
    ids: async_lock::Mutex<()>,
    /// Each broker's replicas whose log failed there, as its last
    /// heartbeat listed them (kept in memory, as Kafka's controller keeps
    /// heartbeat state): they may not lead or join an ISR.
    offline: std::cell::RefCell<HashMap<i32, HashSet<(Uuid, i32)>>>,
}

impl Controller {
    /// The controller of `node` (on shard 0), writing to `log`.
    pub fn open(node: &Arc<Node>, log: Rc<dyn MetadataLog>) -> Controller {
        Controller {
            node: node.clone(),
            log,
            lock: async_lock::Mutex::new(()),
            ids: async_lock::Mutex::new(()),
            offline: Default::default(),
        }
    }

    /// Broker `broker`'s heartbeat listed `offline` (all of its replicas
    /// whose log failed there).
    pub fn note_offline(&self, broker: i32, offline: &[(Uuid, i32)]) {
        let mut known = self.offline.borrow_mut();
        if offline.is_empty() {
            known.remove(&broker);
        } else {
            known.insert(broker, offline.iter().copied().collect());
        }
    }

    /// Whether broker `broker`'s replica of `partition` is offline (its log
    /// failed there).
    fn is_offline(&self, broker: i32, topic_id: Uuid, partition: i32) -> bool {
        self.offline
            .borrow()
            .get(&broker)
            .is_some_and(|set| set.contains(&(topic_id, partition)))
    }

    pub async fn close(&self) {
        self.log.close().await;
    }

    /// The metadata quorum as this node sees it.
    pub fn quorum(&self) -> QuorumView {
        self.log.status()
    }

    /// The index after the last metadata entry this node's image holds.
    pub fn applied_end(&self) -> u64 {
        self.log.applied_end()
    }

    /// NOT_CONTROLLER unless this node leads the metadata quorum.
    pub fn check_leader(&self) -> Result<(), ApiError> {
        if self.log.leads_applied() {
            return Ok(());
        }
        let leader = self.log.status().leader_id;
        Err(ApiError::new(
            ErrorCode::NotController,
            match leader {
                Some(id) if id == self.node.config.node_id => {
                    "this node was just elected and has not applied its predecessor's entries yet"
                        .to_string()
                }
                Some(id) => format!("this node is not the active controller; node {id} is"),
                None => "this node is not the active controller; none is elected yet".to_string(),
            },
        ))
    }

    /// On the active controller: records the next block of producer ids and
    /// returns it, `[start, end)`.
    pub async fn grant_producer_id_block(&self) -> Result<(i64, i64), ApiError> {
        let _guard = self.lock.lock().await;
        self.check_leader()?;
        let mut attempts = 0;
        loop {
            // Past every block applied here; the quorum refuses the block if
            // one committed before it (by an earlier leader, not yet applied
            // here) reaches into it: then past that one.
            let start = self.node.image().next_producer_id;
            let end = start + PRODUCER_ID_BLOCK;
            match self.persist(&MetadataRecord::ProducerIdBlock { end }).await {
                Ok(()) => return Ok((start, end)),
                Err(error) if error.message.starts_with(BLOCK_OVERLAP) && attempts < 3 => {
                    attempts += 1;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Records a broker's registration, fencing or unfencing (which one is
    /// decided by the broker sessions in `node::brokers`).
    pub async fn record_broker(&self, record: MetadataRecord) -> Result<(), ApiError> {
        debug_assert!(matches!(
            record,
            MetadataRecord::RegisterBroker { .. }
                | MetadataRecord::FenceBroker { .. }
                | MetadataRecord::UnfenceBroker { .. }
        ));
        let _guard = self.lock.lock().await;
        self.check_leader()?;
        self.persist(&record).await
    }

    /// ElectLeaders (KIP-460) on the active controller: for each of
    /// `partitions` (None: every partition), a preferred election makes the
    /// first replica leader again when it is live and in sync; an unclean
    /// one gives a leaderless partition a live replica, in sync if one is.
    /// Returns each partition's outcome; with None, only the partitions an
    /// election was tried for (ELECTION_NOT_NEEDED ones are left out, as
    /// Kafka does).
    pub async fn elect_leaders(
        &self,
        unclean: bool,
        partitions: Option<Vec<(String, i32)>>,
    ) -> Result<Vec<(String, i32, Result<(), ApiError>)>, ApiError> {
        let _guard = self.lock.lock().await;
        self.check_leader()?;
        let all = partitions.is_none();
        let wanted: Vec<(String, i32)> = partitions.unwrap_or_else(|| {
            self.node
                .image()
                .topics
                .values()
                .flat_map(|t| (0..t.partition_count()).map(|p| (t.name.to_string(), p)))
                .collect()
        });
        let mut results = Vec::with_capacity(wanted.len());
        for (topic, partition) in wanted {
            let outcome = self.elect_one(unclean, &topic, partition).await;
            let not_needed = outcome
                .as_ref()
                .is_err_and(|e| e.code == ErrorCode::ElectionNotNeeded);
            if !(all && not_needed) {
                results.push((topic, partition, outcome));
            }
        }
        Ok(results)
    }

    async fn elect_one(&self, unclean: bool, topic: &str, partition: i32) -> Result<(), ApiError> {
        let image = self.node.image();
        let Some((meta, current)) = image
            .topic(topic)
            .and_then(|t| t.placement(partition).map(|p| (t.clone(), p.clone())))
        else {
            return Err(ApiError::new(
                ErrorCode::UnknownTopicOrPartition,
                format!("no partition {partition} of topic '{topic}'"),
            ));
        };
        // Live, and its replica not offline there (a failed log cannot lead).
        let live = |id: i32| {
            image.brokers.get(&id).is_some_and(|b| !b.fenced)
                && !self.is_offline(id, meta.id, partition)
        };
        let (leader, isr) = if unclean {
            if current.leader >= 0 && live(current.leader) {
                return Err(ApiError::new(
                    ErrorCode::ElectionNotNeeded,
                    "the partition has a live leader",
                ));
            }
            let in_sync = current
                .replicas
                .iter()
                .copied()
                .find(|&r| current.isr.contains(&r) && live(r));
            match in_sync {
                Some(r) => (r, current.isr.clone()),
                None => match current.replicas.iter().copied().find(|&r| live(r)) {
                    Some(r) => (r, vec![r]),
                    None => {
                        return Err(ApiError::new(
                            ErrorCode::EligibleLeadersNotAvailable,
                            "no replica of the partition is live",
                        ))
                    }
                },
            }
        } else {
            let preferred = current.replicas[0];
            if current.leader == preferred {
                return Err(ApiError::new(
                    ErrorCode::ElectionNotNeeded,
                    "the preferred replica leads",
                ));
            }
            if !live(preferred) || !current.isr.contains(&preferred) {
                return Err(ApiError::new(
                    ErrorCode::PreferredLeaderNotAvailable,
                    format!(
                        "the preferred replica, broker {preferred}, is not live, online and in sync"
                    ),
                ));
            }
            (preferred, current.isr.clone())
        };
        drop(image);
        tracing::info!(topic = %meta.name, partition, from = current.leader, to = leader, unclean, "electing a leader");
        self.persist(&MetadataRecord::PartitionChange {
            topic_id: meta.id,
            partition,
            leader,
            isr,
            leader_epoch: current.leader_epoch + 1,
            partition_epoch: current.partition_epoch + 1,
            reassigning: None,
        })
        .await
    }

    /// Records this node's cluster id as the cluster's, if none is yet.
    pub async fn record_cluster_id(&self) -> Result<(), ApiError> {
        let _guard = self.lock.lock().await;
        self.check_leader()?;
        if self.node.image().cluster_id.is_some() {
            return Ok(());
        }
        let id = self.node.cluster_id.clone();
        tracing::info!(cluster_id = %id, "recording the cluster id");
        self.persist(&MetadataRecord::ClusterId { id }).await
    }

    /// Writes `record` through the quorum; it is applied to the image once
    /// this returns.
    async fn persist(&self, record: &MetadataRecord) -> Result<(), ApiError> {
        self.log.write(record).await
    }

    /// Validates a topic creation without doing it.
    pub fn check_create(
        &self,
        name: &str,
        partitions: i32,
        configs: &BTreeMap<String, String>,
    ) -> Result<TopicConfig, ApiError> {
        validate_topic_name(name)
            .map_err(|m| ApiError::new(ErrorCode::InvalidTopicException, m))?;
        if is_internal_topic(name) {
            // Kafka's answer for its own reserved metadata topic.
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!("Creation of internal topic {name} is prohibited."),
            ));
        }
        if self.node.image().topic(name).is_some() {
            return Err(ApiError::new(
                ErrorCode::TopicAlreadyExists,
                format!("topic '{name}' already exists"),
            ));
        }
        if !(1..=PARTITIONS_PER_TOPIC_MAX).contains(&partitions) {
            return Err(ApiError::new(
                ErrorCode::InvalidPartitions,
                format!("number of partitions must be between 1 and {PARTITIONS_PER_TOPIC_MAX}"),
            ));
        }
        self.check_descriptors(partitions)?;
        self.node
            .config
            .topic_defaults
            .with_overrides(configs)
            .map_err(|e| ApiError::new(ErrorCode::InvalidConfig, e.to_string()))
    }

    /// Refuses new partitions the descriptor budget has no room for, with
    /// POLICY_VIOLATION and a message naming the limit (one lock holder at a
    /// time checks and creates, so two requests cannot both take the last room).
    fn check_descriptors(&self, new_partitions: i32) -> Result<(), ApiError> {
        self.node
            .descriptors
            .check_new_partitions(new_partitions.max(0) as u64)
            .map_err(|message| ApiError::new(ErrorCode::PolicyViolation, message))
    }

    /// One change at a time: callers hold this from their `plan_*` step to
    /// their `record_*` step.
    pub async fn lock(&self) -> async_lock::MutexGuard<'_, ()> {
        self.lock.lock().await
    }

    /// The brokers partitions may be placed on: the live registered ones
    /// and this one, by id.
    pub fn placeable_brokers(&self) -> Vec<i32> {
        self.node
            .brokers()
            .into_iter()
            .map(|(id, _, _)| id)
            .collect()
    }

    /// Replica lists for `count` new partitions of `replication_factor`
    /// replicas each: partition p's first replica (its preferred leader) is
    /// the live broker p places after a point chosen by `seed` (as Kafka
    /// starts its round-robin at a random broker), the others the brokers
    /// after it. `manual`, when the request gave an assignment (already
    /// checked), is used as it is.
    fn place(
        &self,
        count: i32,
        seed: u128,
        manual: Option<Vec<Vec<i32>>>,
        replication_factor: usize,
    ) -> Result<Vec<Placement>, ApiError> {
        if let Some(manual) = manual {
            return Ok(manual.into_iter().map(Placement::new).collect());
        }
        let brokers = self.placeable_brokers();
        if replication_factor == 0 || replication_factor > brokers.len() {
            return Err(ApiError::new(
                ErrorCode::InvalidReplicationFactor,
                format!(
                    "Unable to replicate the partition {replication_factor} time(s): The target \
                     replication factor of {replication_factor} cannot be reached because only {} \
                     broker(s) are registered.",
                    brokers.len()
                ),
            ));
        }
        let n = brokers.len();
        let start = (seed % n as u128) as usize;
        Ok((0..count as usize)
            .map(|p| {
                let replicas = (0..replication_factor)
                    .map(|r| brokers[(start + p + r) % n])
                    .collect();
                Placement::new(replicas)
            })
            .collect())
    }

    /// The replication factor to create a topic with: the request's, or
    /// `--default-replication-factor` for -1.
    pub fn replication_factor(&self, requested: i16) -> Result<usize, ApiError> {
        match requested {
            -1 => Ok(self.node.config.default_replication_factor as usize),
            r if r >= 1 => Ok(r as usize),
            r => Err(ApiError::new(
                ErrorCode::InvalidReplicationFactor,
                format!("Replication factor must be larger than 0, or -1 to use the default value; got {r}."),
            )),
        }
    }

    /// AlterPartition (KIP-497), from the leader of one partition: a new
    /// ISR planned from `leader_epoch` and `partition_epoch`. Refused with
    /// FENCED_LEADER_EPOCH / NOT_LEADER_OR_FOLLOWER when the asker no longer
    /// leads, INVALID_UPDATE_VERSION when the partition changed since,
    /// INELIGIBLE_REPLICA when it adds a fenced broker.
    pub async fn alter_isr(
        &self,
        broker: i32,
        topic_id: Uuid,
        partition: i32,
        leader_epoch: i32,
        partition_epoch: i32,
        isr: Vec<i32>,
    ) -> Result<(), ApiError> {
        let _guard = self.lock.lock().await;
        self.check_leader()?;
        let image = self.node.image();
        let Some(current) = image
            .topic_by_id(&topic_id)
            .and_then(|t| t.placement(partition))
            .cloned()
        else {
            return Err(ApiError::new(
                ErrorCode::UnknownTopicOrPartition,
                format!("no partition {partition} of topic {topic_id}"),
            ));
        };
        if current.leader != broker {
            return Err(ApiError::new(
                ErrorCode::NotLeaderOrFollower,
                format!(
                    "broker {broker} does not lead the partition; {} does",
                    current.leader
                ),
            ));
        }
        if leader_epoch != current.leader_epoch {
            return Err(ApiError::new(
                ErrorCode::FencedLeaderEpoch,
                format!(
                    "leader epoch {leader_epoch}, the partition's is {}",
                    current.leader_epoch
                ),
            ));
        }
        if partition_epoch != current.partition_epoch {
            return Err(ApiError::new(
                ErrorCode::InvalidUpdateVersion,
                format!(
                    "partition epoch {partition_epoch}, the partition's is {}",
                    current.partition_epoch
                ),
            ));
        }
        let added_fenced = isr
            .iter()
            .find(|r| !current.isr.contains(r) && image.brokers.get(r).is_none_or(|b| b.fenced));
        if let Some(r) = added_fenced {
            return Err(ApiError::new(
                ErrorCode::IneligibleReplica,
                format!("broker {r} is fenced: it cannot join the ISR"),
            ));
        }
        let added_offline = isr
            .iter()
            .find(|&&r| !current.isr.contains(&r) && self.is_offline(r, topic_id, partition));
        if let Some(r) = added_offline {
            return Err(ApiError::new(
                ErrorCode::IneligibleReplica,
                format!("broker {r}'s replica is offline: it cannot join the ISR"),
            ));
        }
        if !isr.contains(&broker) || isr.iter().any(|r| !current.replicas.contains(r)) {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!(
                    "ISR {isr:?} must hold the leader and only replicas of {:?}",
                    current.replicas
                ),
            ));
        }
        drop(image);
        tracing::info!(%topic_id, partition, from = ?current.isr, to = ?isr, "ISR change");
        self.persist(&MetadataRecord::PartitionChange {
            topic_id,
            partition,
            leader: current.leader,
            isr,
            leader_epoch,
            partition_epoch: partition_epoch + 1,
            reassigning: None,
        })
        .await
    }

    /// Broker `broker` (live) reports its replica of `partition` offline:
    /// its log failed there. The replica leaves the ISR (unless it is the
    /// last member) and, if it led, the first live in-sync replica leads
    /// (`records::without_replica`). Nothing to do when it is already out.
    pub async fn replica_offline(
        &self,
        broker: i32,
        topic_id: Uuid,
        partition: i32,
    ) -> Result<(), ApiError> {
        let _guard = self.lock.lock().await;
        self.check_leader()?;
        let image = self.node.image();
        let Some(topic) = image.topic_by_id(&topic_id) else {
            return Ok(());
        };
        let Some(current) = topic.placement(partition) else {
            return Ok(());
        };
        let eligible = |r: i32| !self.is_offline(r, topic_id, partition);
        let Some(next) = records::without_replica(&image, topic, current, broker, eligible) else {
            return Ok(());
        };
        tracing::warn!(topic = %topic.name, partition, broker, leader = next.leader, isr = ?next.isr, "a replica's log failed; it leaves the ISR");
        let record = MetadataRecord::PartitionChange {
            topic_id,
            partition,
            leader: next.leader,
            isr: next.isr,
            leader_epoch: next.leader_epoch,
            partition_epoch: next.partition_epoch,
            reassigning: None,
        };
        drop(image);
        self.persist(&record).await
    }

    /// AlterPartitionReassignments (KIP-455) for one partition: move it to
    /// `target` (registered brokers, none twice), or (None) cancel the move
    /// under way (`metadata::reassign` says how a move goes). Refused with
    /// UNKNOWN_TOPIC_OR_PARTITION, INVALID_REPLICA_ASSIGNMENT,
    /// NO_REASSIGNMENT_IN_PROGRESS, or INVALID_REPLICATION_FACTOR for a
    /// change of replica count the request did not allow (KIP-860). A
    /// target that is the partition's replicas already changes nothing.
    pub async fn reassign(
        &self,
        topic: &str,
        partition: i32,
        target: Option<Vec<i32>>,
        allow_replication_factor_change: bool,
    ) -> Result<(), ApiError> {
        let _guard = self.lock.lock().await;
        self.check_leader()?;
        let image = self.node.image();
        let Some((topic_id, current)) = image
            .user_topic(topic)
            .and_then(|t| t.placement(partition).map(|p| (t.id, p.clone())))
        else {
            return Err(ApiError::new(
                ErrorCode::UnknownTopicOrPartition,
                format!("no partition {partition} of topic '{topic}'"),
            ));
        };
        if let Some(target) = &target {
            let registered: Vec<i32> = image.brokers.keys().copied().collect();
            check_replica_assignment(target, &registered, None)?;
            if !allow_replication_factor_change && target.len() != current.original().len() {
                return Err(ApiError::new(
                    ErrorCode::InvalidReplicationFactor,
                    format!(
                        "the partition has {} replicas, the target {}: the request does not allow a change of replication factor",
                        current.original().len(),
                        target.len()
                    ),
                ));
            }
        }
        let live = |b: i32| image.brokers.get(&b).is_some_and(|b| !b.fenced);
        let next = reassign::reassigned(&current, target.as_deref(), live).map_err(|refusal| {
            let code = match refusal {
                reassign::Refusal::NoneInProgress => ErrorCode::NoReassignmentInProgress,
                reassign::Refusal::Invalid(_) => ErrorCode::InvalidReplicaAssignment,
            };
            ApiError::new(code, refusal.to_string())
        })?;
        let unchanged = Placement {
            partition_epoch: current.partition_epoch,
            ..next.clone()
        };
        if unchanged == current {
            return Ok(());
        }
        drop(image);
        tracing::info!(topic, partition, from = ?current.replicas, to = ?next.replicas, adding = ?next.adding, removing = ?next.removing, "reassigning the partition");
        self.persist(&MetadataRecord::ReassignPartition {
            topic_id,
            partition,
            target,
            partition_epoch: current.partition_epoch + 1,
        })
        .await
    }

    /// Validates a new topic and builds it (a fresh id, where each partition
    /// goes), without recording it. `manual`: a checked replica assignment.
    pub fn plan_topic(
        &self,
        name: &str,
        partitions: i32,
        configs: BTreeMap<String, String>,
        manual: Option<Vec<Vec<i32>>>,
        replication_factor: usize,
    ) -> Result<Arc<TopicMeta>, ApiError> {
        let topic_config = self.check_create(name, partitions, &configs)?;
        let shared: Vec<Arc<PartitionState>> = (0..partitions)
            .map(|_| Arc::new(PartitionState::default()))
            .collect();
        let id = Uuid::new_v4();
        Ok(Arc::new(TopicMeta {
            name: Arc::from(name),
            id,
            partitions: shared,
            placements: self.place(partitions, id.as_u128(), manual, replication_factor)?,
            overrides: configs,
            config: topic_config,
        }))
    }

    /// Records a planned topic; once this returns it is in the image, and
    /// the partitions this node hosts have their logs.
    pub async fn record_topic(&self, topic: &Arc<TopicMeta>) -> Result<(), ApiError> {
        let record = MetadataRecord::CreateTopic {
            name: topic.name.to_string(),
            id: topic.id,
            partitions: topic.partition_count(),
            configs: topic.overrides.clone(),
            replicas: Some(topic.replica_lists()),
        };
        self.persist(&record).await?;
        tracing::info!(topic = %topic.name, partitions = topic.partition_count(), "topic created");
        note_deprecated(&topic.name, &topic.overrides);
        Ok(())
    }

    /// Creates one of Sluice's own topics (the offsets log, the transaction
    /// log) unless it exists: `partitions` of `replication_factor` replicas
    /// over the registered brokers, with `configs`. Its name is reserved, so
    /// no client can have taken it. INVALID_REPLICATION_FACTOR while fewer
    /// brokers are registered (the caller asks again later, as Kafka waits
    /// for `offsets.topic.replication.factor` brokers).
    pub async fn create_internal_topic(
        &self,
        name: &str,
        partitions: i32,
        configs: BTreeMap<String, String>,
        replication_factor: usize,
    ) -> Result<bool, ApiError> {
        let _change = self.lock().await;
        self.check_leader()?;
        if self.node.image().topic(name).is_some() {
            return Ok(false);
        }
        let config = self
            .node
            .config
            .topic_defaults
            .with_overrides(&configs)
            .map_err(|e| ApiError::new(ErrorCode::InvalidConfig, e.to_string()))?;
        let id = Uuid::new_v4();
        let topic = Arc::new(TopicMeta {
            name: Arc::from(name),
            id,
            partitions: (0..partitions)
                .map(|_| Arc::new(PartitionState::default()))
                .collect(),
            placements: self.place(partitions, id.as_u128(), None, replication_factor)?,
            overrides: configs,
            config,
        });
        self.record_topic(&topic).await?;
        Ok(true)
    }

    /// Records the deletion of `topic` (it must still be the topic of that
    /// name) and publishes it; its logs are removed afterwards.
    pub async fn record_deletion(&self, topic: &TopicMeta) -> Result<(), ApiError> {
        let image = self.node.image();
        if image.topic(&topic.name).is_none_or(|t| t.id != topic.id) {
            return Err(ApiError::new(
                ErrorCode::UnknownTopicOrPartition,
                format!("topic '{}' does not exist", topic.name),
            ));
        }
        drop(image);
        let record = MetadataRecord::DeleteTopic {
            name: topic.name.to_string(),
            id: topic.id,
        };
        self.persist(&record).await?;
        tracing::info!(topic = %topic.name, "topic deleted");
        Ok(())
    }

    /// The topic `name` as clients may name it, or UNKNOWN_TOPIC_OR_PARTITION.
    pub fn existing_topic(&self, name: &str) -> Result<Arc<TopicMeta>, ApiError> {
        self.node.image().user_topic(name).cloned().ok_or_else(|| {
            ApiError::new(
                ErrorCode::UnknownTopicOrPartition,
                format!("topic '{name}' does not exist"),
            )
        })
    }

    /// Validates growing `name` to `count` partitions and builds the grown
    /// topic (the existing partitions' state shared with the old one), without
    /// recording it. `assignments`, when the request gave manual replica
    /// assignments, is how many it gave. Returns the grown topic and the first
    /// new partition.
    pub fn plan_partitions(
        &self,
        name: &str,
        count: i32,
        manual: Option<Vec<Vec<i32>>>,
    ) -> Result<(Arc<TopicMeta>, i32), ApiError> {
        let assignments = manual.as_ref().map(Vec::len);
        let old = self.existing_topic(name)?;
        if count <= old.partition_count() {
            return Err(ApiError::new(
                ErrorCode::InvalidPartitions,
                format!(
                    "topic has {} partitions; the new count must be larger",
                    old.partition_count()
                ),
            ));
        }
        if count > PARTITIONS_PER_TOPIC_MAX {
            return Err(ApiError::new(
                ErrorCode::InvalidPartitions,
                format!("at most {PARTITIONS_PER_TOPIC_MAX} partitions"),
            ));
        }
        let additional = count - old.partition_count();
        if let Some(given) = assignments.filter(|&given| given as i64 != i64::from(additional)) {
            return Err(ApiError::new(
                ErrorCode::InvalidReplicaAssignment,
                format!(
                    "Attempted to add {additional} additional partition(s), but only {given} assignment(s) were specified."
                ),
            ));
        }
        self.check_descriptors(additional)?;
        let mut shared = old.partitions.clone();
        shared.extend((old.partition_count()..count).map(|_| Arc::new(PartitionState::default())));
        let mut placements = old.placements.clone();
        let seed = old.id.as_u128() + old.partition_count() as u128;
        // The topic's replication factor: its first partition's.
        let factor = old.placements.first().map_or(1, |p| p.original().len());
        if let Some(list) = manual.iter().flatten().find(|l| l.len() != factor) {
            return Err(ApiError::new(
                ErrorCode::InvalidReplicaAssignment,
                format!(
                    "The manual partition assignment includes a partition with {} replica(s), but this is \
                     not consistent with previous partitions, which have {factor} replica(s).",
                    list.len()
                ),
            ));
        }
        placements.extend(self.place(additional, seed, manual, factor)?);
        let topic = Arc::new(TopicMeta {
            name: old.name.clone(),
            id: old.id,
            partitions: shared,
            placements,
            overrides: old.overrides.clone(),
            config: old.config.clone(),
        });
        Ok((topic, old.partition_count()))
    }

    /// Records a grown topic planned from its first `first_new` partitions.
    pub async fn record_partitions(
        &self,
        topic: &Arc<TopicMeta>,
        first_new: i32,
    ) -> Result<(), ApiError> {
        let record = MetadataRecord::SetPartitionCount {
            name: topic.name.to_string(),
            id: Some(topic.id),
            partitions: topic.partition_count(),
            replicas: Some(
                topic.placements[first_new as usize..]
                    .iter()
                    .map(|p| p.replicas.clone())
                    .collect(),
            ),
        };
        self.persist(&record).await
    }

    /// Validates `configs` as the new overrides of `name`; returns the topic
    /// and its new effective config.
    pub fn plan_configs(
        &self,
        name: &str,
        configs: &BTreeMap<String, String>,
    ) -> Result<(Arc<TopicMeta>, TopicConfig), ApiError> {
        let old = self.existing_topic(name)?;
        let topic_config = self
            .node
            .config
            .topic_defaults
            .with_overrides(configs)
            .map_err(|e| ApiError::new(ErrorCode::InvalidConfig, e.to_string()))?;
        Ok((old, topic_config))
    }

    /// Records `configs` as the overrides of `name` and publishes them; the
    /// logs are told afterwards.
    pub async fn record_configs(
        &self,
        name: &str,
        configs: BTreeMap<String, String>,
    ) -> Result<(), ApiError> {
        note_deprecated(name, &configs);
        let record = MetadataRecord::SetTopicConfigs {
            name: name.to_string(),
            configs,
        };
        self.persist(&record).await
    }

    /// Hands out a new producer id from this broker's block; when it is used
    /// up, the active controller grants the next (KIP-730's
    /// AllocateProducerIds), recorded before any id in it is handed out, so
    /// that no id is handed out twice in the cluster, even across restarts.
    pub async fn allocate_producer_id(&self) -> Result<i64, ApiError> {
        let _guard = self.ids.lock().await;
        let next = &self.node.next_producer_id;
        let mut id = next.load(Ordering::Acquire);
        // This broker's block (`Node::producer_id_block`) is used up.
        let block = &self.node.producer_id_block;
        if id >= block.1.load(Ordering::Acquire) {
            // Whatever kept the controller from granting a block, the client
            // is to try again (Kafka's answer while it has no ids to give).
            let (start, end) = self.log.producer_id_block().await.map_err(|error| {
                ApiError::new(
                    ErrorCode::CoordinatorNotAvailable,
                    format!("no producer ids to hand out yet: {}", error.message),
                )
            })?;
            // Granted by another node: wait (briefly) until this node's image
            // has the block too, so that a partition here takes the ids at
            // once (other nodes apply it within a replication round trip).
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
            while self.node.image().next_producer_id < end && std::time::Instant::now() < deadline {
                compio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
            block.0.store(start, Ordering::Release);
            block.1.store(end, Ordering::Release);
            id = start;
        }
        next.store(id + 1, Ordering::Release);
        Ok(id)
    }
}
