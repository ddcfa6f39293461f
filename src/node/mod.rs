//! One broker node's Kafka state: what every shard shares ([`Node`]), and what
//! each shard holds of its own ([`shard::Shard`]): the logs of the partitions
//! it owns, the group coordinator of its groups, its transaction coordinator,
//! the controller on shard 0.

pub mod brokers;
pub mod controller_rpc;
pub mod coordinators;
pub mod fetchers;
pub mod forward;
pub mod quorum;
pub mod replication;
pub mod shard;
pub mod topics;
pub mod txn_env;
pub mod txn_rpc;

use std::sync::atomic::{AtomicI32, AtomicI64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::Config;
use crate::metadata::{MetadataImage, TopicMeta};
use crate::metrics::Metrics;
use crate::runtime::descriptors::DescriptorBudget;
use crate::runtime::shard_for_partition;
use crate::runtime::signal::ShutdownSignal;

/// What every shard of this broker shares: configuration, the metadata image,
/// the shutdown signal, metrics. Nothing here is locked on the request path.
/// (The shards' queues are not here: each shard holds its own copy of them,
/// `Shard::peers`.)
pub struct Node {
    pub config: Config,
    /// This node's own cluster id (its data dir's, or `--cluster-id`);
    /// clients are told [`Node::cluster_id`], the cluster's.
    pub cluster_id: String,
    pub metadata: ArcSwap<MetadataImage>,
    /// How many shards there are (partitions are spread over them).
    pub shard_count: usize,
    pub shutdown: Arc<ShutdownSignal>,
    /// The port actually bound (differs from the config when it asked for port 0).
    pub port: u16,
    pub metrics: Arc<Metrics>,
    /// The next producer id InitProducerId will hand out: every id below it was
    /// handed out (or lies in a block recorded before a restart), none at or
    /// above it was. Written only by the controller; Produce reads it to refuse
    /// batches from ids this broker never issued.
    pub next_producer_id: AtomicI64,
    /// The block of producer ids this broker hands out from now, `[start,
    /// end)` (empty until InitProducerId needs one): ids in it at or above
    /// `next_producer_id` are not issued yet. Ids in blocks granted to other
    /// brokers cannot be checked here.
    pub producer_id_block: (AtomicI64, AtomicI64),
    /// How the open file limit is shared out between connections and partitions.
    pub descriptors: DescriptorBudget,
    /// This run of the broker (KRaft's incarnation id): registrations and
    /// fences name it, so that one meant for an earlier run is ignored.
    pub incarnation: uuid::Uuid,
    /// The metadata quorum's leader as last seen here (-1: none known);
    /// Metadata and DescribeCluster report it as the controller.
    pub active_controller: AtomicI32,
    /// Controlled shutdown has begun: heartbeats stop, so that the
    /// controller does not unfence this broker again.
    pub stopping: std::sync::atomic::AtomicBool,
    /// Partitions of the internal topics whose coordinator has loaded them
    /// here (a node alone reports itself started once it has all of them).
    pub coordinator_partitions: std::sync::atomic::AtomicUsize,
    /// The high watermarks this node's replicated partitions had when it
    /// last wrote them (`storage::hw_checkpoint`), read at start-up: where
    /// each partition's starts.
    pub checkpointed_high_watermarks:
        std::collections::HashMap<crate::storage::hw_checkpoint::Key, i64>,
}

impl Node {
    pub fn image(&self) -> arc_swap::Guard<Arc<MetadataImage>> {
        self.metadata.load()
    }
    /// The cluster id to report: the one the quorum recorded, or (before
    /// that) this node's own.
    pub fn cluster_id(&self) -> String {
        self.image()
            .cluster_id
            .clone()
            .unwrap_or_else(|| self.cluster_id.clone())
    }
    pub fn shard_for(&self, topic: &str, partition: i32) -> usize {
        shard_for_partition(topic, partition, self.shard_count)
    }
    /// The controller to report to clients: the quorum's leader if one is
    /// known and live, else this broker.
    pub fn controller_id(&self) -> i32 {
        let leader = self.active_controller.load(Ordering::Relaxed);
        let image = self.image();
        if leader >= 0 && image.brokers.get(&leader).is_some_and(|b| !b.fenced) {
            leader
        } else {
            self.config.node_id
        }
    }

    /// The brokers to list to clients, by id: the live registered ones, and
    /// this one as it listens now, even before its registration is committed
    /// (a client must be able to come back to the broker it asked).
    pub fn brokers(&self) -> Vec<(i32, String, i32)> {
        let image = self.image();
        let me = self.config.node_id;
        let mut brokers: Vec<(i32, String, i32)> = image
            .live_brokers()
            .filter(|(id, _)| *id != me)
            .map(|(id, b)| (id, b.host.clone(), b.port))
            .collect();
        brokers.push((
            me,
            self.config.advertised_host.clone(),
            self.advertised_port(),
        ));
        brokers.sort_unstable_by_key(|(id, _, _)| *id);
        brokers
    }

    /// Whether broker `id` is live in `image`: registered and not fenced
    /// (this broker always is, to itself).
    pub fn is_live(&self, image: &MetadataImage, id: i32) -> bool {
        id == self.config.node_id || image.brokers.get(&id).is_some_and(|b| !b.fenced)
    }

    /// Whether this broker leads `partition` of `topic`: only the leader
    /// takes produce requests and serves consumers.
    pub fn leads(&self, topic: &TopicMeta, partition: i32) -> bool {
        topic
            .placement(partition)
            .is_some_and(|p| p.leader == self.config.node_id)
    }

    pub fn advertised_port(&self) -> i32 {
        if self.config.advertised_port == 0 {
            i32::from(self.port)
        } else {
            self.config.advertised_port
        }
    }
}
