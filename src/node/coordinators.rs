//! The group and transaction coordinators follow the leadership of their
//! internal partitions, as in Kafka: the active controller creates the
//! offsets log and the transaction log as replicated topics once enough
//! brokers are registered; a broker that takes the lead of one of their
//! partitions loads it into the coordinator of the shard that owns it, and
//! one that loses it unloads it (its clients get NOT_COORDINATOR and find
//! the new leader with FindCoordinator).

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::config::Config;
use crate::group::offsets::{OFFSETS_PARTITIONS, OFFSETS_TOPIC};
use crate::node::shard::Shard;
use crate::partition::internal::{LoadedPartition, Unloaded};
use crate::partition::local::{Partition, RoleChange};
use crate::txn::coordinator::TXN_TOPIC;

/// One of Sluice's internal topics, as the controller creates it.
struct InternalTopic {
    name: &'static str,
    partitions: i32,
    replication_factor: i16,
    configs: BTreeMap<String, String>,
}

/// Kafka's internal topics' settings: compacted, and room for a large
/// transactional offset commit in one batch; every write synced before it
/// is acknowledged, whatever the broker's default flush policy (an offset
/// commit or a transaction's decision must not be lost once answered).
fn internal_topics(config: &Config) -> [InternalTopic; 2] {
    let configs = |segment_bytes: u64| {
        BTreeMap::from([
            ("cleanup.policy".to_string(), "compact".to_string()),
            ("segment.bytes".to_string(), segment_bytes.to_string()),
            ("flush.messages".to_string(), "1".to_string()),
            ("max.message.bytes".to_string(), (100u32 << 20).to_string()),
        ])
    };
    [
        InternalTopic {
            name: OFFSETS_TOPIC,
            partitions: OFFSETS_PARTITIONS,
            replication_factor: config.offsets_topic_replication_factor,
            configs: configs(config.offsets_topic_segment_bytes),
        },
        InternalTopic {
            name: TXN_TOPIC,
            partitions: config.transaction_state_log_num_partitions,
            replication_factor: config.transaction_state_log_replication_factor,
            configs: configs(crate::txn::coordinator::TxnConfig::default().segment_bytes),
        },
    ]
}

/// On the active controller: creates the internal topics that do not exist
/// yet, once the brokers registered are enough for their replication factor.
pub async fn create_internal_topics(shard: &Rc<Shard>) {
    let Some(controller) = shard.try_controller() else {
        return;
    };
    for topic in internal_topics(&shard.node.config) {
        if shard.node.image().topic(topic.name).is_some() {
            continue;
        }
        let created = controller
            .create_internal_topic(
                topic.name,
                topic.partitions,
                topic.configs,
                topic.replication_factor as usize,
            )
            .await;
        match created {
            Ok(true) => tracing::info!(
                topic = topic.name,
                partitions = topic.partitions,
                replication_factor = topic.replication_factor,
                "internal topic created"
            ),
            Ok(false) => {}
            Err(error) => {
                tracing::debug!(topic = topic.name, error = %error.message, "internal topic not created yet")
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Coordinator {
    Groups,
    Transactions,
}

/// Whether this shard's group coordinator lacks a partition of the offsets
/// log this broker leads (loading it, or about to: the image that gives it
/// the lead is published before the load begins), so that a list of its
/// groups would not be whole.
pub fn groups_incomplete(shard: &Shard) -> bool {
    let groups = shard.groups();
    led_unloaded(shard, OFFSETS_TOPIC, |p| groups.offsets.is_loaded(p))
}

/// [`groups_incomplete`] for the transaction coordinator.
pub fn transactions_incomplete(shard: &Shard) -> bool {
    let txns = shard.txns();
    led_unloaded(shard, TXN_TOPIC, |p| txns.is_loaded(p))
}

fn led_unloaded(shard: &Shard, topic: &str, is_loaded: impl Fn(i32) -> bool) -> bool {
    let image = shard.node.image();
    let Some(meta) = image.topic(topic) else {
        return false;
    };
    // The internal topic's few partitions, not every partition of the shard.
    let me = shard.node.config.node_id;
    let hosted = shard.partitions.borrow();
    (0..meta.partition_count()).any(|index| {
        meta.placement(index).is_some_and(|p| p.leader == me)
            && hosted.contains_key(&(meta.id, index))
            && !is_loaded(index)
    })
}

/// The pause after a failed load of an internal partition (the log cleaner
/// may swap a segment while it is read), doubling up to the most.
const LOAD_BACKOFF: Duration = Duration::from_millis(200);
const LOAD_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Loads internal `partition`, led here in `epoch`, into its coordinator:
/// once every write to its log settled (a follower append the replica
/// fetcher had under way), its log is replayed on a blocking thread (not to
/// stall the shard) and installed, unless the leadership moved meanwhile.
async fn load(
    shard: Rc<Shard>,
    partition: Rc<Partition>,
    coordinator: Coordinator,
    epoch: i32,
    min_isr: i32,
) {
    let index = partition.index;
    let mut backoff = LOAD_BACKOFF;
    for attempt in 1u64.. {
        crate::storage::log::settled(partition.log()).await;
        if !partition.leads_in(epoch) || shard.node.shutdown.is_triggered() {
            // Moved on meanwhile: a later change loads or unloads it.
            return;
        }
        let dir = partition.log().borrow().dir().to_path_buf();
        let loaded = || LoadedPartition {
            partition: partition.clone(),
            leader_epoch: epoch,
            min_isr,
            stop: shard.node.shutdown.clone(),
        };
        let installed = match coordinator {
            Coordinator::Groups => {
                let replayed = compio::runtime::spawn_blocking(move || {
                    crate::group::offsets::replay(&dir, index)
                })
                .await;
                match replayed {
                    Ok(Ok(replayed)) if partition.leads_in(epoch) => {
                        Ok(shard.groups().install(loaded(), replayed))
                    }
                    Ok(Ok(_)) => return,
                    Ok(Err(error)) => Err(error),
                    Err(_) => Err("the replay panicked".to_string()),
                }
            }
            Coordinator::Transactions => {
                let replayed =
                    compio::runtime::spawn_blocking(move || crate::txn::coordinator::replay(&dir))
                        .await;
                match replayed {
                    Ok(Ok(replayed)) if partition.leads_in(epoch) => {
                        Ok(shard.txns().install(loaded(), replayed))
                    }
                    Ok(Ok(_)) => return,
                    Ok(Err(error)) => Err(error),
                    Err(_) => Err("the replay panicked".to_string()),
                }
            }
        };
        match installed {
            Ok(true) => {
                shard
                    .node
                    .coordinator_partitions
                    .fetch_add(1, Ordering::AcqRel);
                return;
            }
            Ok(false) => return,
            // Tried again while this broker leads it in this epoch (its
            // clients get COORDINATOR_LOAD_IN_PROGRESS meanwhile, and retry).
            Err(error) => {
                tracing::error!(topic = %partition.topic, partition = index, attempt, %error, "loading an internal partition failed; trying again");
                compio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(LOAD_BACKOFF_MAX);
            }
        }
    }
}

/// Gives up internal partition `index` (counted while it was loaded).
fn unload(shard: &Shard, coordinator: Coordinator, index: i32) {
    let unloaded = match coordinator {
        Coordinator::Groups => shard.groups().unload(index),
        Coordinator::Transactions => shard.txns().unload(index),
    };
    if unloaded == Unloaded::Loaded {
        shard
            .node
            .coordinator_partitions
            .fetch_sub(1, Ordering::AcqRel);
    }
}

/// How many internal partitions a node that is the whole cluster loads.
pub fn internal_partition_count(config: &Config) -> usize {
    internal_topics(config)
        .iter()
        .map(|t| t.partitions as usize)
        .sum()
}

/// After `partition`'s role changed: a coordinator takes over the internal
/// partitions this broker now leads (once every write to the log is
/// settled, so that the replay reads all of it) and gives up the others.
/// `min_isr` is the topic's min.insync.replicas.
pub fn on_role_change(
    shard: &Rc<Shard>,
    partition: &Rc<Partition>,
    change: RoleChange,
    min_isr: i32,
) {
    let coordinator = match &*partition.topic {
        OFFSETS_TOPIC => Coordinator::Groups,
        TXN_TOPIC => Coordinator::Transactions,
        _ => return,
    };
    let index = partition.index;
    match change {
        RoleChange::Unchanged => {}
        RoleChange::Follows { .. } => unload(shard, coordinator, index),
        RoleChange::Leads => {
            // Led in a new epoch, perhaps without a change in between (an
            // image skipped): what was loaded may be stale; load it anew.
            unload(shard, coordinator, index);
            let epoch = partition.leader_epoch();
            match coordinator {
                Coordinator::Groups => shard.groups().offsets.begin_load(index),
                Coordinator::Transactions => shard.txns().begin_load(index),
            }
            let (shard, partition) = (shard.clone(), partition.clone());
            compio::runtime::spawn(load(shard, partition, coordinator, epoch, min_isr)).detach();
        }
    }
}
