//! Topics, partitions and their configs: the cluster metadata.
//!
//! The current state is an immutable [`MetadataImage`] behind an `ArcSwap`: every
//! shard reads it without a lock (one atomic load per request). Changes (create or
//! delete a topic, add partitions, alter configs, allocate producer ids) are made
//! by the controller (`controller.rs`), which runs on shard 0, writes each change
//! as a record to the internal metadata log (`__sluice_metadata-0`, kept by the
//! storage engine like any partition), and then publishes a new image.
//!
//! Each partition has a [`PartitionState`]: the few facts about it that other
//! shards need without asking its owner (watermarks, leader epoch, "new data"
//! notifications).

pub mod controller;
pub mod reassign;
pub mod records;
pub mod topic_config;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use uuid::Uuid;

use crate::metadata::topic_config::TopicConfig;

/// Upper bound on partitions per topic: each partition holds open files and
/// per-shard state; this keeps a single request from exhausting descriptors.
pub const PARTITIONS_PER_TOPIC_MAX: i32 = 10_000;
/// Kafka's limit on topic name length.
pub const TOPIC_NAME_LEN_MAX: usize = 249;
/// Directory of the internal metadata log under the data dir.
pub const METADATA_LOG_DIR: &str = "__sluice_metadata-0";
/// Topic names with this prefix are reserved for Sluice's internal logs, whose
/// directories share the data dir with user partitions.
pub const RESERVED_TOPIC_PREFIX: &str = "__sluice";

/// The names Kafka keeps for its own topics (`Topic.isInternal`, plus the
/// KRaft metadata topic). Sluice keeps this state in internal logs of its own,
/// but a client must still not create, auto-create, delete or produce to a
/// topic of these names: tools such as Burrow ask Metadata for
/// `__consumer_offsets`, and an ordinary topic of that name would be created
/// and stay empty forever.
pub const KAFKA_INTERNAL_TOPICS: &[&str] = &[
    "__consumer_offsets",
    "__transaction_state",
    "__share_group_state",
    "__cluster_metadata",
];

/// Whether `name` is one of Kafka's internal topic names.
pub fn is_internal_topic(name: &str) -> bool {
    KAFKA_INTERNAL_TOPICS.contains(&name)
}

/// Whether `name` is one of Sluice's own internal topics (no client can
/// create such a name: [`validate_topic_name`] reserves the prefix).
pub fn is_sluice_internal(name: &str) -> bool {
    name.starts_with(RESERVED_TOPIC_PREFIX)
}

pub use crate::partition::state::PartitionState;

/// Where one partition's replicas are and which of them leads (KRaft's
/// PartitionRecord): the same in every node's image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The brokers that hold a replica, the preferred leader first.
    pub replicas: Vec<i32>,
    /// The in-sync replicas.
    pub isr: Vec<i32>,
    /// The broker that leads, -1 for none (every in-sync replica is fenced).
    pub leader: i32,
    /// Bumped at every change of leader.
    pub leader_epoch: i32,
    /// Bumped at every change of the partition (leader, ISR, replicas):
    /// an ISR change asked for names the one it was based on (KRaft's
    /// partition epoch).
    pub partition_epoch: i32,
    /// While the partition is reassigned (KIP-455): the replicas being
    /// added (they follow, and the reassignment completes once all of them
    /// are in the ISR) and those being removed (they leave then). Both
    /// are in `replicas` meanwhile.
    pub adding: Vec<i32>,
    pub removing: Vec<i32>,
}

impl Placement {
    /// A new partition on `replicas`: the first leads, all are in sync.
    pub fn new(replicas: Vec<i32>) -> Placement {
        Placement {
            leader: replicas.first().copied().unwrap_or(-1),
            isr: replicas.clone(),
            replicas,
            leader_epoch: 0,
            partition_epoch: 0,
            adding: Vec::new(),
            removing: Vec::new(),
        }
    }

    pub fn hosts(&self, broker: i32) -> bool {
        self.replicas.contains(&broker)
    }

    /// Whether a reassignment is under way.
    pub fn reassigning(&self) -> bool {
        !self.adding.is_empty() || !self.removing.is_empty()
    }

    /// The replicas before the reassignment under way (all of them when
    /// none is): the replicas not being added.
    pub fn original(&self) -> Vec<i32> {
        let adding = &self.adding;
        self.replicas
            .iter()
            .copied()
            .filter(|r| !adding.contains(r))
            .collect()
    }

    /// The replicas once the reassignment under way completes: the
    /// replicas not being removed.
    pub fn target(&self) -> Vec<i32> {
        let removing = &self.removing;
        self.replicas
            .iter()
            .copied()
            .filter(|r| !removing.contains(r))
            .collect()
    }
}

/// One topic as the metadata image knows it.
#[derive(Debug, Clone)]
pub struct TopicMeta {
    pub name: Arc<str>,
    pub id: Uuid,
    /// Indexed by partition number.
    pub partitions: Vec<Arc<PartitionState>>,
    /// Where each partition's replicas are, indexed by partition number.
    pub placements: Vec<Placement>,
    /// Topic-level config overrides as the user gave them.
    pub overrides: BTreeMap<String, String>,
    /// Effective config: broker defaults overlaid by `overrides`.
    pub config: TopicConfig,
}

impl TopicMeta {
    pub fn partition_count(&self) -> i32 {
        self.partitions.len() as i32
    }
    /// Each partition's replicas, in partition order (as records carry them).
    pub fn replica_lists(&self) -> Vec<Vec<i32>> {
        self.placements.iter().map(|p| p.replicas.clone()).collect()
    }
    pub fn placement(&self, index: i32) -> Option<&Placement> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.placements.get(i))
    }
    pub fn partition(&self, index: i32) -> Option<&Arc<PartitionState>> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.partitions.get(i))
    }
}

/// A broker registered with the controller (KRaft's broker registration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerMeta {
    /// Where clients reach it (its advertised listener).
    pub host: String,
    pub port: i32,
    /// Differs at each start of the broker's process: a fence or unfence
    /// meant for an earlier run does not apply to this one.
    pub incarnation: Uuid,
    /// No heartbeat reached the controller within `broker.session.timeout.ms`:
    /// it is left out of Metadata until it heartbeats again.
    pub fenced: bool,
}

/// An immutable snapshot of the cluster metadata.
#[derive(Debug, Default, Clone)]
pub struct MetadataImage {
    pub topics: BTreeMap<Arc<str>, Arc<TopicMeta>>,
    pub topics_by_id: HashMap<Uuid, Arc<TopicMeta>>,
    /// First producer id not yet handed out.
    pub next_producer_id: i64,
    /// The registered brokers, by node id.
    pub brokers: BTreeMap<i32, BrokerMeta>,
    /// The cluster's id, once the first active controller recorded its own:
    /// every broker reports the same one.
    pub cluster_id: Option<String>,
}

impl MetadataImage {
    pub fn topic(&self, name: &str) -> Option<&Arc<TopicMeta>> {
        self.topics.get(name)
    }
    /// A topic clients may name: not one of Sluice's internal topics (the
    /// offsets and transaction logs), which only brokers read and write.
    pub fn user_topic(&self, name: &str) -> Option<&Arc<TopicMeta>> {
        self.topic(name).filter(|t| !is_sluice_internal(&t.name))
    }
    pub fn user_topic_by_id(&self, id: &Uuid) -> Option<&Arc<TopicMeta>> {
        self.topic_by_id(id)
            .filter(|t| !is_sluice_internal(&t.name))
    }
    pub fn topic_by_id(&self, id: &Uuid) -> Option<&Arc<TopicMeta>> {
        self.topics_by_id.get(id)
    }
    pub fn with_topic(&self, topic: Arc<TopicMeta>) -> MetadataImage {
        let mut image = self.clone();
        if let Some(old) = image.topics.insert(topic.name.clone(), topic.clone()) {
            image.topics_by_id.remove(&old.id);
        }
        image.topics_by_id.insert(topic.id, topic);
        image
    }
    /// The registered brokers that are not fenced, by node id.
    pub fn live_brokers(&self) -> impl Iterator<Item = (i32, &BrokerMeta)> {
        self.brokers
            .iter()
            .filter(|(_, b)| !b.fenced)
            .map(|(&id, b)| (id, b))
    }
    pub fn without_topic(&self, name: &str) -> MetadataImage {
        let mut image = self.clone();
        if let Some(old) = image.topics.remove(name) {
            image.topics_by_id.remove(&old.id);
        }
        image
    }
}

/// Kafka's topic name rules: 1 to 249 of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("topic name is empty".into());
    }
    if name == "." || name == ".." {
        return Err("topic name cannot be '.' or '..'".into());
    }
    if name.len() > TOPIC_NAME_LEN_MAX {
        return Err(format!(
            "topic name is longer than {TOPIC_NAME_LEN_MAX} characters"
        ));
    }
    if name.starts_with(RESERVED_TOPIC_PREFIX) {
        return Err(format!(
            "topic names starting with '{RESERVED_TOPIC_PREFIX}' are reserved"
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "topic name contains '{bad}'; only [a-zA-Z0-9._-] are allowed"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names() {
        assert!(validate_topic_name("orders.v1_eu-west").is_ok());
        assert!(validate_topic_name(&"a".repeat(249)).is_ok());
        assert!(validate_topic_name(&"a".repeat(250)).is_err());
        assert!(validate_topic_name("").is_err());
        assert!(validate_topic_name(".").is_err());
        assert!(validate_topic_name("..").is_err());
        assert!(validate_topic_name("a/b").is_err());
        assert!(validate_topic_name("naïve").is_err());
        assert!(
            validate_topic_name("__sluice_metadata").is_err(),
            "would share the metadata log's directory"
        );
    }
}
