//! The metadata image as the quorum's state machine, and the controller's
//! writes through the quorum: the glue between `metadata` (which knows the
//! records and the image) and `cluster` (which knows Raft), on shard 0.
//!
//! Applying a committed command publishes a new image on this node. A topic
//! this node's controller planned is published as planned (its logs were
//! opened with its partition state); a topic another voter's controller made
//! is published from the record, and its partitions have no log here until
//! data replication places replicas (issue 15, in progress).

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;

use futures_util::future::LocalBoxFuture;

use crate::cluster::{Machine, Quorum, QuorumConfig, WriteError};
use crate::io::clock::now_ms;
use crate::io::disk::Disk;
use crate::metadata::controller::{ApiError, MetadataLog, QuorumView, VoterView};
use crate::metadata::records::{self, MetadataRecord};
use crate::metadata::{MetadataImage, TopicMeta};
use crate::node::Node;
use crate::protocol::errors::ErrorCode;
use crate::storage::commit::GroupCommit;

/// The metadata image, driven by the quorum's log.
pub struct MetadataMachine {
    node: Arc<Node>,
    /// The quorum index up to which the start-up replay built the image:
    /// entries and snapshots before it are already in it.
    replayed_end: u64,
    /// Topics this node's controller planned and is writing, by name.
    planned: RefCell<HashMap<Arc<str>, Arc<TopicMeta>>>,
}

impl Machine for MetadataMachine {
    async fn apply(&self, index: u64, command: &str) -> Result<(), String> {
        if index < self.replayed_end {
            return Ok(());
        }
        let record: MetadataRecord =
            serde_json::from_str(command).map_err(|e| format!("undecodable command: {e}"))?;
        let planned = match &record {
            MetadataRecord::CreateTopic { name, id, .. } => self
                .planned
                .borrow_mut()
                .remove(name.as_str())
                .filter(|t| t.id == *id),
            MetadataRecord::SetPartitionCount { name, partitions } => self
                .planned
                .borrow_mut()
                .remove(name.as_str())
                .filter(|t| t.partition_count() == *partitions),
            _ => None,
        };
        let mut image = (**self.node.image()).clone();
        match planned {
            // Checked again here, against every change committed before it
            // (a new leader may have planned on an image that had not yet
            // applied its predecessor's last changes).
            Some(topic) => image = with_planned(&image, topic, &record)?,
            None => {
                if matches!(
                    record,
                    MetadataRecord::CreateTopic { .. } | MetadataRecord::SetPartitionCount { .. }
                ) {
                    tracing::warn!(
                        index,
                        "partitions made by another voter's controller: no log here until \
                         data replication places replicas (not built yet)"
                    );
                }
                record.apply(&mut image, &self.node.config)?;
            }
        }
        self.node.metadata.store(Arc::new(image));
        Ok(())
    }

    fn snapshot(&self) -> Vec<u8> {
        records::encode_snapshot(&self.node.image())
    }

    async fn restore(&self, end: u64, snapshot: &[u8]) -> Result<(), String> {
        if end <= self.replayed_end {
            // The start-up replay read this checkpoint (or a later state).
            return Ok(());
        }
        let image = records::decode_snapshot(snapshot, &self.node.config)?;
        tracing::warn!(
            end,
            topics = image.topics.len(),
            "installed a metadata snapshot from the quorum's leader; partitions without a log \
             here wait for data replication (not built yet)"
        );
        self.node.metadata.store(Arc::new(image));
        Ok(())
    }
}

/// `image` with a topic this node's controller planned, if the change still
/// applies: a new topic's name is still free; added partitions extend the
/// very partitions the plan extended.
fn with_planned(
    image: &MetadataImage,
    planned: Arc<TopicMeta>,
    record: &MetadataRecord,
) -> Result<MetadataImage, String> {
    let current = image.topic(&planned.name);
    if let MetadataRecord::CreateTopic { name, .. } = record {
        return match current {
            Some(_) => Err(format!("topic '{name}' already exists")),
            None => Ok(image.with_topic(planned)),
        };
    }
    let current = current
        .filter(|t| t.id == planned.id)
        .ok_or_else(|| format!("topic '{}' was deleted meanwhile", planned.name))?;
    let extends = current.partitions.len() < planned.partitions.len()
        && current
            .partitions
            .iter()
            .zip(&planned.partitions)
            .all(|(a, b)| Arc::ptr_eq(a, b));
    if !extends {
        return Err(format!(
            "topic '{}' changed meanwhile ({} partitions)",
            planned.name,
            current.partition_count()
        ));
    }
    Ok(image.with_topic(Arc::new(TopicMeta {
        name: current.name.clone(),
        id: current.id,
        partitions: planned.partitions.clone(),
        overrides: current.overrides.clone(),
        config: current.config.clone(),
    })))
}

/// The controller's [`MetadataLog`]: this node's member of the quorum.
pub struct MetadataQuorum {
    quorum: Quorum<MetadataMachine>,
    /// Every voter's controller listener.
    voters: std::collections::BTreeMap<u64, String>,
}

impl MetadataQuorum {
    /// Starts this node's member of the quorum on the current shard (0).
    /// `replayed_end`: where the start-up replay of the quorum's log ended.
    pub async fn start(
        node: &Arc<Node>,
        commit: Rc<GroupCommit>,
        listener: Option<std::net::TcpListener>,
        replayed_end: u64,
    ) -> io::Result<MetadataQuorum> {
        let config = &node.config;
        let mut quorum_config =
            QuorumConfig::new(config.node_id as u64, config.quorum_voters.clone());
        quorum_config.election_timeout_ms = config.controller_quorum_election_timeout_ms;
        quorum_config.heartbeat_interval_ms =
            (config.controller_quorum_election_timeout_ms / 2).clamp(5, 500);
        let machine = MetadataMachine {
            node: node.clone(),
            replayed_end,
            planned: RefCell::new(HashMap::new()),
        };
        let data_dir: &Path = &config.data_dir;
        let quorum = Quorum::start(
            &quorum_config,
            data_dir,
            &Disk::Real,
            commit,
            listener,
            machine,
        )
        .await?;
        Ok(MetadataQuorum {
            quorum,
            voters: config.quorum_voters.clone(),
        })
    }

    /// Answers controller requests from other brokers with `handler`.
    pub fn serve_controller_requests(&self, handler: crate::cluster::ControllerHandler) {
        self.quorum.serve_controller_requests(handler);
    }

    /// Sends a controller request to the quorum's leader (see
    /// [`Quorum::call_controller`]).
    pub async fn call_controller(
        &self,
        request: Vec<u8>,
        timeout: std::time::Duration,
    ) -> io::Result<Vec<u8>> {
        self.quorum.call_controller(request, timeout).await
    }

    /// The quorum's leader as known here.
    pub fn leader(&self) -> Option<i32> {
        self.quorum.status().leader.map(|id| id as i32)
    }

    /// Waits (up to `patience`) until this node leads the quorum: a voter
    /// alone elects itself at once.
    pub async fn wait_to_lead(&self, patience: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + patience;
        loop {
            if self.quorum.status().is_leader {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            compio::time::sleep(crate::cluster::quorum::POLL).await;
        }
    }
}

fn refused(error: WriteError) -> ApiError {
    match error {
        WriteError::NotLeader { leader } => ApiError::new(
            ErrorCode::NotController,
            match leader {
                Some(id) => format!("this node is not the active controller; node {id} is"),
                None => "this node is not the active controller; none is elected yet".to_string(),
            },
        ),
        WriteError::Unknown => ApiError::new(
            ErrorCode::RequestTimedOut,
            "the controller lost its leadership while writing: the change may or may not have \
             been made",
        ),
        WriteError::Stopped(why) => ApiError::new(
            ErrorCode::UnknownServerError,
            format!("the metadata quorum stopped: {why}"),
        ),
    }
}

impl MetadataLog for MetadataQuorum {
    fn write<'a>(
        &'a self,
        record: &MetadataRecord,
        planned: Option<Arc<TopicMeta>>,
    ) -> LocalBoxFuture<'a, Result<(), ApiError>> {
        let command = serde_json::to_string(record).expect("metadata records serialize");
        Box::pin(async move {
            let name = planned.as_ref().map(|t| t.name.clone());
            if let Some(topic) = planned {
                self.quorum
                    .machine()
                    .planned
                    .borrow_mut()
                    .insert(topic.name.clone(), topic);
            }
            let written = self.quorum.write(command).await;
            if let Some(name) = name {
                // Applied (and taken) or not: nothing is planned any more.
                self.quorum.machine().planned.borrow_mut().remove(&name);
            }
            match written {
                Ok(applied) => match applied.refused {
                    None => Ok(()),
                    Some(why) => Err(ApiError::new(ErrorCode::UnknownServerError, why)),
                },
                Err(error) => Err(refused(error)),
            }
        })
    }

    fn status(&self) -> QuorumView {
        let status = self.quorum.status();
        let now = now_ms();
        let voters = self
            .voters
            .iter()
            .map(|(&id, addr)| {
                let mut voter = VoterView {
                    id: id as i32,
                    addr: addr.clone(),
                    log_end_offset: -1,
                    last_fetch_timestamp: -1,
                    last_caught_up_timestamp: -1,
                };
                if id == status.node_id {
                    voter.log_end_offset = status.log_end as i64;
                    if status.is_leader {
                        // Kafka reports the leader as fetching and caught up now.
                        voter.last_fetch_timestamp = now;
                        voter.last_caught_up_timestamp = now;
                    }
                } else if let Some(&end) = status.replicated_end.get(&id) {
                    voter.log_end_offset = end as i64;
                    if let Some(ago) = status.last_ack.get(&id) {
                        let at = now - ago.as_millis() as i64;
                        voter.last_fetch_timestamp = at;
                        if end >= status.committed_end {
                            voter.last_caught_up_timestamp = at;
                        }
                    }
                }
                voter
            })
            .collect();
        QuorumView {
            leader_id: status.leader.map(|id| id as i32),
            leader_epoch: status.term as i32,
            high_watermark: status.committed_end as i64,
            is_leader: status.is_leader,
            voters,
        }
    }

    fn is_leader(&self) -> bool {
        self.quorum.status().is_leader
    }

    fn close(&self) -> LocalBoxFuture<'_, ()> {
        Box::pin(self.quorum.shutdown())
    }
}
