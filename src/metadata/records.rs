//! The records of the metadata log (the quorum's commands) and its replay at
//! start-up.
//!
//! Each change is one Kafka record (in an ordinary v2 record batch, so the log is
//! kept, validated and recovered by the same storage engine as user data) whose
//! value is the JSON of a [`MetadataRecord`]. JSON keeps the log readable with
//! any Kafka tool (`kcat -C` on a copy of the files) and easy to evolve.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::records::Compression;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::config::Config;
use crate::metadata::reassign;
use crate::metadata::{
    BrokerMeta, MetadataImage, PartitionState, Placement, TopicMeta, METADATA_LOG_DIR,
};
use crate::protocol::encode;
use crate::storage::replay;

/// Producer ids are handed out in blocks; a block is recorded before any id in it is used.
pub const PRODUCER_ID_BLOCK: i64 = 1000;
/// How a refused producer id block's refusal begins.
pub const BLOCK_OVERLAP: &str = "the producer id block overlaps one recorded before it";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum MetadataRecord {
    CreateTopic {
        name: String,
        id: Uuid,
        partitions: i32,
        configs: BTreeMap<String, String>,
        /// Each partition's replicas, the leader first. Absent in records
        /// written before brokers had replicas: the node applying it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        replicas: Option<Vec<Vec<i32>>>,
    },
    DeleteTopic {
        name: String,
        id: Uuid,
    },
    SetPartitionCount {
        name: String,
        /// The topic grown (absent in older records): a topic deleted and
        /// created again under its name meanwhile is not grown.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<Uuid>,
        partitions: i32,
        /// The new partitions' replicas (as in `CreateTopic`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        replicas: Option<Vec<Vec<i32>>>,
    },
    SetTopicConfigs {
        name: String,
        configs: BTreeMap<String, String>,
    },
    /// Every producer id below `end` may have been handed out.
    ProducerIdBlock {
        end: i64,
    },
    /// A broker (re)registered: where clients reach it, and this run's
    /// incarnation. It is live (unfenced) from here.
    RegisterBroker {
        id: i32,
        host: String,
        port: i32,
        incarnation: Uuid,
    },
    /// The broker's session expired (no heartbeat within
    /// `broker.session.timeout.ms`); ignored if it registered again since.
    FenceBroker {
        id: i32,
        incarnation: Uuid,
    },
    /// A fenced broker heartbeats again.
    UnfenceBroker {
        id: i32,
        incarnation: Uuid,
    },
    /// The cluster's id: the first active controller's own (from its data
    /// dir or `--cluster-id`); later ones change nothing.
    ClusterId {
        id: String,
    },
    /// One partition's leader, ISR and epochs, as a whole (KRaft's
    /// PartitionChangeRecord): an ISR change the leader asked for, or a
    /// snapshot's partition state. Applied only on top of the partition
    /// epoch it was planned from (`partition_epoch` is that plus one).
    PartitionChange {
        topic_id: Uuid,
        partition: i32,
        leader: i32,
        isr: Vec<i32>,
        leader_epoch: i32,
        partition_epoch: i32,
        /// A reassignment under way (KIP-455; absent: none), in a snapshot's
        /// partition state; planned changes keep the partition's own.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reassigning: Option<Reassigning>,
    },
    /// AlterPartitionReassignments (KIP-455) for one partition: move it to
    /// `target` replicas, or (None) cancel the move under way. Applied on
    /// top of the partition epoch it was planned from, like PartitionChange.
    ReassignPartition {
        topic_id: Uuid,
        partition: i32,
        target: Option<Vec<i32>>,
        partition_epoch: i32,
    },
}

/// A partition's reassignment under way, as a snapshot records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reassigning {
    pub replicas: Vec<i32>,
    pub adding: Vec<i32>,
    pub removing: Vec<i32>,
}

impl MetadataRecord {
    /// Encodes the record as a one-record batch.
    pub fn to_batch(&self, timestamp_ms: i64) -> Bytes {
        let value = serde_json::to_vec(self).expect("metadata records serialize");
        encode::encode_batch(
            &[encode::record(
                0,
                timestamp_ms,
                None,
                Some(Bytes::from(value)),
                None,
            )],
            Compression::None,
        )
    }

    /// Applies the record to `image`.
    pub fn apply(self, image: &mut MetadataImage, config: &Config) -> Result<(), String> {
        match self {
            MetadataRecord::CreateTopic {
                name,
                id,
                partitions,
                configs,
                replicas,
            } => {
                // Checked again here, against every change committed before
                // it: a new leader may have planned on an image that had not
                // yet applied its predecessor's last changes.
                if image.topic(&name).is_some() {
                    return Err(format!("topic '{name}' already exists"));
                }
                let topic_config = config
                    .topic_defaults
                    .with_overrides(&configs)
                    .map_err(|e| e.to_string())?;
                let topic = TopicMeta {
                    name: Arc::from(name.as_str()),
                    id,
                    partitions: (0..partitions)
                        .map(|_| Arc::new(PartitionState::default()))
                        .collect(),
                    placements: placements(replicas, partitions, config)?,
                    overrides: configs,
                    config: topic_config,
                };
                *image = image.with_topic(Arc::new(topic));
            }
            MetadataRecord::DeleteTopic { name, id } => {
                if image.topic(&name).is_some_and(|t| t.id == id) {
                    *image = image.without_topic(&name);
                }
            }
            MetadataRecord::SetPartitionCount {
                name,
                id,
                partitions,
                replicas,
            } => {
                let old = image
                    .topic(&name)
                    .filter(|t| id.is_none_or(|id| t.id == id))
                    .ok_or_else(|| format!("unknown topic {name} (id {id:?})"))?;
                let added = partitions - old.partition_count();
                if added <= 0 {
                    return Err(format!(
                        "topic {name} has {} partitions, not fewer than {partitions}",
                        old.partition_count()
                    ));
                }
                let mut shared = old.partitions.clone();
                while (shared.len() as i32) < partitions {
                    shared.push(Arc::new(PartitionState::default()));
                }
                let mut placed = old.placements.clone();
                placed.extend(placements(replicas, added, config)?);
                let topic = TopicMeta {
                    name: old.name.clone(),
                    id: old.id,
                    partitions: shared,
                    placements: placed,
                    overrides: old.overrides.clone(),
                    config: old.config.clone(),
                };
                *image = image.with_topic(Arc::new(topic));
            }
            MetadataRecord::SetTopicConfigs { name, configs } => {
                let old = image
                    .topic(&name)
                    .ok_or_else(|| format!("unknown topic {name}"))?;
                let topic_config = config
                    .topic_defaults
                    .with_overrides(&configs)
                    .map_err(|e| e.to_string())?;
                let topic = TopicMeta {
                    name: old.name.clone(),
                    id: old.id,
                    partitions: old.partitions.clone(),
                    placements: old.placements.clone(),
                    overrides: configs,
                    config: topic_config,
                };
                *image = image.with_topic(Arc::new(topic));
            }
            MetadataRecord::ProducerIdBlock { end } => {
                // A block is [end - PRODUCER_ID_BLOCK, end): refused if a
                // block recorded before it reaches into it (two controllers
                // would hand out the same ids).
                if image.next_producer_id > end - PRODUCER_ID_BLOCK {
                    return Err(format!(
                        "{BLOCK_OVERLAP}: [{}, {end}) starts below {}",
                        end - PRODUCER_ID_BLOCK,
                        image.next_producer_id
                    ));
                }
                image.next_producer_id = end;
            }
            MetadataRecord::RegisterBroker {
                id,
                host,
                port,
                incarnation,
            } => {
                // A new run of a broker that was live (killed and restarted
                // within its session): it may have lost what it had not
                // synced, so it leaves the ISRs as a fenced one does (KIP-966's
                // unclean shutdown) before it comes back.
                if let Some(old) = image
                    .brokers
                    .get(&id)
                    .filter(|b| !b.fenced && b.incarnation != incarnation)
                {
                    let old = old.incarnation;
                    set_fenced(image, id, old, true);
                    leave_isrs(image, id);
                }
                image.brokers.insert(
                    id,
                    BrokerMeta {
                        host,
                        port,
                        incarnation,
                        fenced: false,
                    },
                );
                lead_leaderless(image, id);
                complete_moves(image);
            }
            MetadataRecord::FenceBroker { id, incarnation } => {
                if set_fenced(image, id, incarnation, true) {
                    leave_isrs(image, id);
                }
            }
            MetadataRecord::UnfenceBroker { id, incarnation } => {
                if set_fenced(image, id, incarnation, false) {
                    lead_leaderless(image, id);
                    complete_moves(image);
                }
            }
            MetadataRecord::ClusterId { id } => {
                image.cluster_id.get_or_insert(id);
            }
            change @ MetadataRecord::PartitionChange { .. } => {
                change_partition(image, change, true)?
            }
            MetadataRecord::ReassignPartition {
                topic_id,
                partition,
                target,
                partition_epoch,
            } => {
                let current = image
                    .topic_by_id(&topic_id)
                    .and_then(|t| t.placement(partition))
                    .ok_or_else(|| format!("unknown partition {topic_id}/{partition}"))?;
                check_planned_epoch(current, partition_epoch)?;
                let next = reassign::reassigned(current, target.as_deref(), |b| is_live(image, b))
                    .map_err(|refusal| refusal.to_string())?;
                check_placement(&next)?;
                set_placement(image, topic_id, partition, next);
            }
        }
        Ok(())
    }
}

/// How a refused PartitionChange's refusal begins (another change of the
/// partition was committed since it was planned).
pub const STALE_PARTITION_EPOCH: &str = "the partition changed since the change was planned";

/// Applies a PartitionChange: on top of the partition epoch it was planned
/// from when `planned` (STALE_PARTITION_EPOCH otherwise), or as it is (a
/// snapshot's partition state).
fn change_partition(
    image: &mut MetadataImage,
    change: MetadataRecord,
    planned: bool,
) -> Result<(), String> {
    let MetadataRecord::PartitionChange {
        topic_id,
        partition,
        leader,
        isr,
        leader_epoch,
        partition_epoch,
        reassigning,
    } = change
    else {
        return Err(format!("not a partition change: {change:?}"));
    };
    let current = image
        .topic_by_id(&topic_id)
        .and_then(|t| t.placement(partition))
        .ok_or_else(|| format!("unknown partition {topic_id}/{partition}"))?;
    if planned {
        check_planned_epoch(current, partition_epoch)?;
    }
    let mut placement = Placement {
        isr,
        leader,
        leader_epoch,
        partition_epoch,
        ..current.clone()
    };
    if let Some(moving) = reassigning {
        placement.replicas = moving.replicas;
        placement.adding = moving.adding;
        placement.removing = moving.removing;
    }
    // The ISR change that brings the last added replica in sync completes
    // the partition's move.
    if planned {
        reassign::complete_if_ready(&mut placement, |b| is_live(image, b));
    }
    check_placement(&placement)?;
    set_placement(image, topic_id, partition, placement);
    Ok(())
}

/// A planned change of a partition applies only on top of the partition
/// epoch it was planned from (`partition_epoch` is that plus one).
fn check_planned_epoch(current: &Placement, partition_epoch: i32) -> Result<(), String> {
    if partition_epoch != current.partition_epoch + 1 {
        return Err(format!(
            "{STALE_PARTITION_EPOCH}: planned from partition epoch {}, now {}",
            partition_epoch - 1,
            current.partition_epoch
        ));
    }
    Ok(())
}

/// A partition's state must hold together: the ISR within the replicas and
/// not empty, the leader (if any) in the ISR, the replicas being added or
/// removed among the replicas (and not both).
fn check_placement(p: &Placement) -> Result<(), String> {
    if p.isr.is_empty()
        || p.isr.iter().any(|r| !p.replicas.contains(r))
        || (p.leader >= 0 && !p.isr.contains(&p.leader))
        || p.leader < -1
    {
        return Err(format!(
            "leader {} and ISR {:?} do not fit replicas {:?}",
            p.leader, p.isr, p.replicas
        ));
    }
    let moving = p.adding.iter().chain(&p.removing);
    if moving.clone().any(|r| !p.replicas.contains(r))
        || p.adding.iter().any(|r| p.removing.contains(r))
        || p.target().is_empty()
    {
        return Err(format!(
            "adding {:?} and removing {:?} do not fit replicas {:?}",
            p.adding, p.removing, p.replicas
        ));
    }
    Ok(())
}

/// Replaces the placement of one partition.
fn set_placement(image: &mut MetadataImage, topic_id: Uuid, partition: i32, placement: Placement) {
    let Some(topic) = image.topic_by_id(&topic_id) else {
        return;
    };
    let mut topic = (**topic).clone();
    topic.placements[partition as usize] = placement;
    *image = image.with_topic(Arc::new(topic));
}

/// Changes the placement of every partition `change` returns a new one for.
fn change_placements(
    image: &mut MetadataImage,
    mut change: impl FnMut(&MetadataImage, &TopicMeta, &Placement) -> Option<Placement>,
) {
    let mut changed: Vec<Arc<TopicMeta>> = Vec::new();
    for topic in image.topics.values() {
        let mut new: Option<TopicMeta> = None;
        for (i, placement) in topic.placements.iter().enumerate() {
            if let Some(next) = change(image, topic, placement) {
                new.get_or_insert_with(|| (**topic).clone()).placements[i] = next;
            }
        }
        changed.extend(new.map(Arc::new));
    }
    for topic in changed {
        *image = image.with_topic(topic);
    }
}

/// Whether broker `id` is registered and not fenced in `image`.
fn is_live(image: &MetadataImage, id: i32) -> bool {
    image.brokers.get(&id).is_some_and(|b| !b.fenced)
}

/// Broker `id` was fenced: it leaves every ISR (except as the last member,
/// which stays so that the partition waits for it: the ISR is never
/// empty), and the partitions it led get a new leader from their ISR, the
/// first live one in replica order; none when no other in-sync replica is
/// live, unless the topic allows an unclean election: then any live
/// replica, alone in the ISR. Every change bumps the partition epoch, a new
/// leader the leader epoch.
fn leave_isrs(image: &mut MetadataImage, id: i32) {
    change_placements(image, |image, topic, p| {
        without_replica(image, topic, p, id, |_| true)
    });
}

/// Partition `p` of `topic` with broker `id` out of its ISR and not its
/// leader, as [`leave_isrs`] does for each partition; None if that changes
/// nothing. (Also for a replica whose log failed on a live broker.) A new
/// leader must be live and `eligible` (not offline where it is).
pub(crate) fn without_replica(
    image: &MetadataImage,
    topic: &TopicMeta,
    p: &Placement,
    id: i32,
    eligible: impl Fn(i32) -> bool,
) -> Option<Placement> {
    let can_lead = |r: i32| r != id && is_live(image, r) && eligible(r);
    // A partition whose one replica this is: nobody else can lead it, it
    // waits for the broker as it is (Metadata shows it leaderless while
    // the broker is fenced), and its epoch stays.
    if (!p.isr.contains(&id) && p.leader != id) || p.replicas == [id] {
        return None;
    }
    let mut next = p.clone();
    if p.isr.len() > 1 {
        next.isr.retain(|&r| r != id);
    }
    if p.leader == id {
        let from_isr = p
            .replicas
            .iter()
            .copied()
            .find(|&r| next.isr.contains(&r) && can_lead(r));
        let unclean = || {
            topic
                .config
                .unclean_leader_election
                .then(|| p.replicas.iter().copied().find(|&r| can_lead(r)))
                .flatten()
        };
        next.leader = match (from_isr, unclean()) {
            (Some(leader), _) => leader,
            (None, Some(leader)) => {
                tracing::warn!(topic = %topic.name, leader, "unclean leader election: a replica out of the ISR leads; records may be lost");
                next.isr = vec![leader];
                leader
            }
            (None, None) => -1,
        };
        next.leader_epoch += 1;
    }
    // The last in-sync replica, not leading (already out of the lead):
    // nothing changes, and no new partition epoch is spent on it.
    if next == *p {
        return None;
    }
    next.partition_epoch += 1;
    Some(next)
}

/// Broker `id` is live (again): the leaderless partitions it is in sync
/// for (or, where the topic allows an unclean election, holds a replica of)
/// get it as leader.
fn lead_leaderless(image: &mut MetadataImage, id: i32) {
    change_placements(image, |_, topic, p| {
        if p.leader >= 0 || !p.replicas.contains(&id) {
            return None;
        }
        let mut next = p.clone();
        if !p.isr.contains(&id) {
            if !topic.config.unclean_leader_election {
                return None;
            }
            next.isr = vec![id];
        }
        next.leader = id;
        next.leader_epoch += 1;
        next.partition_epoch += 1;
        Some(next)
    });
}

/// A broker is live again: moves that waited for a live in-sync replica of
/// their new list to lead complete now, each in a new partition epoch.
fn complete_moves(image: &mut MetadataImage) {
    change_placements(image, |image, _, p| {
        if !p.reassigning() {
            return None;
        }
        let mut next = p.clone();
        reassign::complete_if_ready(&mut next, |b| is_live(image, b)).then(|| {
            next.partition_epoch += 1;
            next
        })
    });
}

/// The placements of `count` new partitions from a record's replica lists
/// (none: records from before replicas, all on the node applying them).
fn placements(
    replicas: Option<Vec<Vec<i32>>>,
    count: i32,
    config: &Config,
) -> Result<Vec<Placement>, String> {
    let Some(replicas) = replicas else {
        return Ok((0..count)
            .map(|_| Placement::new(vec![config.node_id]))
            .collect());
    };
    if replicas.len() != count as usize || replicas.iter().any(Vec::is_empty) {
        return Err(format!("{count} partitions but replica lists {replicas:?}"));
    }
    Ok(replicas.into_iter().map(Placement::new).collect())
}

/// Fences or unfences broker `id` if it is still in `incarnation`; returns
/// whether that changed anything.
fn set_fenced(image: &mut MetadataImage, id: i32, incarnation: Uuid, fenced: bool) -> bool {
    match image
        .brokers
        .get_mut(&id)
        .filter(|b| b.incarnation == incarnation && b.fenced != fenced)
    {
        Some(broker) => {
            broker.fenced = fenced;
            true
        }
        None => false,
    }
}

/// The records that rebuild `image` from nothing: a snapshot of it.
pub fn snapshot_records(image: &MetadataImage) -> Vec<MetadataRecord> {
    let mut records: Vec<MetadataRecord> = image
        .topics
        .values()
        .flat_map(|topic| {
            let create = MetadataRecord::CreateTopic {
                name: topic.name.to_string(),
                id: topic.id,
                partitions: topic.partition_count(),
                configs: topic.overrides.clone(),
                replicas: Some(topic.replica_lists()),
            };
            // Each partition whose leader, ISR or epochs moved since creation.
            let changes = topic
                .placements
                .iter()
                .enumerate()
                .filter(|(_, p)| **p != Placement::new(p.replicas.clone()))
                .map(|(i, p)| MetadataRecord::PartitionChange {
                    topic_id: topic.id,
                    partition: i as i32,
                    leader: p.leader,
                    isr: p.isr.clone(),
                    leader_epoch: p.leader_epoch,
                    partition_epoch: p.partition_epoch,
                    reassigning: p.reassigning().then(|| Reassigning {
                        replicas: p.replicas.clone(),
                        adding: p.adding.clone(),
                        removing: p.removing.clone(),
                    }),
                });
            std::iter::once(create).chain(changes).collect::<Vec<_>>()
        })
        .collect();
    records.push(MetadataRecord::ProducerIdBlock {
        end: image.next_producer_id,
    });
    // The brokers before the partitions' state, which the snapshot decoder
    // sets as it is (registering a broker elects leaders).
    let mut brokers: Vec<MetadataRecord> = image
        .cluster_id
        .iter()
        .map(|id| MetadataRecord::ClusterId { id: id.clone() })
        .collect();
    for (&id, broker) in &image.brokers {
        brokers.push(MetadataRecord::RegisterBroker {
            id,
            host: broker.host.clone(),
            port: broker.port,
            incarnation: broker.incarnation,
        });
        if broker.fenced {
            brokers.push(MetadataRecord::FenceBroker {
                id,
                incarnation: broker.incarnation,
            });
        }
    }
    brokers.extend(records);
    brokers
}

/// A snapshot of `image`, encoded (a JSON array of records).
pub fn encode_snapshot(image: &MetadataImage) -> Vec<u8> {
    serde_json::to_vec(&snapshot_records(image)).expect("metadata records serialize")
}

/// The image a snapshot describes.
pub fn decode_snapshot(bytes: &[u8], config: &Config) -> Result<MetadataImage, String> {
    let records: Vec<MetadataRecord> =
        serde_json::from_slice(bytes).map_err(|e| format!("metadata snapshot: {e}"))?;
    let mut image = MetadataImage::default();
    for record in records {
        match record {
            // Where handing out ids resumes, not a block being taken.
            MetadataRecord::ProducerIdBlock { end } => image.next_producer_id = end,
            // A partition's state as it was, not a change to check.
            change @ MetadataRecord::PartitionChange { .. } => {
                change_partition(&mut image, change, false)
                    .map_err(|e| format!("metadata snapshot: {e}"))?
            }
            record => record.apply(&mut image, config)?,
        }
    }
    Ok(image)
}

/// Rebuilds the metadata image at start-up, before the shards run: the
/// metadata log of Sluice before the quorum (`__sluice_metadata-0`, read if
/// it is still there: its records are older than the quorum's), then the
/// quorum's newest checkpoint (which replaces all of it), then the committed
/// commands after the checkpoint. Returns the image and the quorum index
/// after what was replayed. `alone`: this node is the quorum's only voter.
pub fn replay(
    data_dir: &Path,
    config: &Config,
    alone: bool,
) -> Result<(MetadataImage, u64), String> {
    let mut image = MetadataImage::default();
    replay::for_each_record(&data_dir.join(METADATA_LOG_DIR), |record| {
        let Some(value) = record.value else {
            return Ok(());
        };
        let parsed: MetadataRecord = serde_json::from_slice(&value).map_err(|e| e.to_string())?;
        parsed.apply(&mut image, config)
    })?;
    let committed = crate::cluster::replay::committed(data_dir, alone)
        .map_err(|e| format!("the metadata quorum's log: {e}"))?;
    if let Some((_, bytes)) = &committed.checkpoint {
        image = decode_snapshot(bytes, config)?;
    }
    for (index, command) in committed.commands {
        let record: MetadataRecord =
            serde_json::from_str(&command).map_err(|e| format!("metadata command {index}: {e}"))?;
        // A refused command was refused everywhere; it changes nothing.
        if let Err(refused) = record.apply(&mut image, config) {
            tracing::debug!(index, %refused, "a refused metadata command");
        }
    }
    Ok((image, committed.end))
}

#[cfg(test)]
#[path = "records_tests.rs"]
mod tests;
