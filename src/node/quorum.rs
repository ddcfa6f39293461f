//! The metadata image as the quorum's state machine, and the controller's
//! writes through the quorum: the glue between `metadata` (which knows the
//! records and the image) and `cluster` (which knows Raft), on shard 0.
//!
//! Applying a committed command publishes a new image on this node, after
//! opening the logs of the partitions it places here (and before removing
//! those of partitions no longer here): the same on every node, whichever
//! controller wrote the command.

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
use crate::metadata::MetadataImage;
use crate::node::controller_rpc;
use crate::node::shard::Shard;
use crate::node::topics;
use crate::protocol::errors::ErrorCode;
use crate::storage::commit::GroupCommit;

/// The metadata image, driven by the quorum's log.
pub struct MetadataMachine {
    /// The controller shard, where the quorum runs: from it, the other
    /// shards open and remove the logs of the partitions this node hosts.
    shard: Rc<Shard>,
    /// The quorum index up to which the start-up replay built the image:
    /// entries and snapshots before it are already in it.
    replayed_end: u64,
}

impl MetadataMachine {
    /// Publishes `image`: the logs of partitions this node no longer hosts
    /// are removed first (a topic deleted and created again under its name
    /// uses the same directories), then those of partitions it now hosts
    /// are opened (a partition is in the image only once its log exists
    /// here). Once shutdown has begun the other shards may have stopped:
    /// the image is published alone, and the next start opens what it
    /// places here.
    async fn publish(&self, image: MetadataImage) {
        let node = &self.shard.node;
        if node.shutdown.is_triggered() {
            node.metadata.store(Arc::new(image));
            return;
        }
        let old = node.image().clone();
        let changes = topics::local_changes(&old, &image, node.config.node_id);
        topics::remove_partitions(&self.shard, &changes.removed).await;
        topics::open_partitions(&self.shard, &changes.opened).await;
        node.metadata.store(Arc::new(image));
        topics::reconfigure_partitions(&self.shard, &changes.reconfigured).await;
        // Every shard's partitions take the leaderships and ISRs the new
        // image gives them.
        let roles = (0..node.shard_count).map(|id| {
            self.shard.try_run_on(id, |shard| async move {
                let image = shard.node.image().clone();
                crate::node::replication::apply_roles(&shard, &image);
            })
        });
        futures_util::future::join_all(roles).await;
    }
}

impl Machine for MetadataMachine {
    async fn apply(&self, index: u64, command: &str) -> Result<(), String> {
        if index < self.replayed_end {
            return Ok(());
        }
        let record: MetadataRecord =
            serde_json::from_str(command).map_err(|e| format!("undecodable command: {e}"))?;
        let mut image = (**self.shard.node.image()).clone();
        record.apply(&mut image, &self.shard.node.config)?;
        self.publish(image).await;
        Ok(())
    }

    fn snapshot(&self) -> Vec<u8> {
        records::encode_snapshot(&self.shard.node.image())
    }

    async fn restore(&self, end: u64, snapshot: &[u8]) -> Result<(), String> {
        if end <= self.replayed_end {
            // The start-up replay read this checkpoint (or a later state).
            return Ok(());
        }
        let mut image = records::decode_snapshot(snapshot, &self.shard.node.config)?;
        // The partitions both images know keep their state (and logs).
        let old = self.shard.node.image().clone();
        for topic in image.topics.values_mut() {
            if let Some(known) = old.topic_by_id(&topic.id) {
                let mut merged = (**topic).clone();
                for (p, state) in merged.partitions.iter_mut().enumerate() {
                    if let Some(kept) = known.partitions.get(p) {
                        *state = kept.clone();
                    }
                }
                *topic = Arc::new(merged);
            }
        }
        image.topics_by_id = image.topics.values().map(|t| (t.id, t.clone())).collect();
        tracing::info!(
            end,
            topics = image.topics.len(),
            "installed a metadata snapshot from the quorum's leader"
        );
        self.publish(image).await;
        Ok(())
    }
}

/// The controller's [`MetadataLog`]: this node's member of the quorum.
pub struct MetadataQuorum {
    quorum: Quorum<MetadataMachine>,
    /// How long a request to the active controller may take.
    request_timeout_ms: u64,
    /// Every voter's controller listener.
    voters: std::collections::BTreeMap<u64, String>,
    /// The index after the last entry this node wrote (and so applied).
    written_end: std::cell::Cell<u64>,
}

impl MetadataQuorum {
    /// Starts this node's member of the quorum on the current shard (0).
    /// `replayed_end`: where the start-up replay of the quorum's log ended.
    pub async fn start(
        shard: &Rc<Shard>,
        commit: Rc<GroupCommit>,
        listener: Option<std::net::TcpListener>,
        replayed_end: u64,
    ) -> io::Result<MetadataQuorum> {
        let config = &shard.node.config;
        let mut quorum_config =
            QuorumConfig::new(config.node_id as u64, config.quorum_voters.clone());
        quorum_config.election_timeout_ms = config.controller_quorum_election_timeout_ms;
        quorum_config.heartbeat_interval_ms =
            (config.controller_quorum_election_timeout_ms / 2).clamp(5, 500);
        let machine = MetadataMachine {
            shard: shard.clone(),
            replayed_end,
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
            // controller.quorum.request.timeout.ms's default.
            request_timeout_ms: 2000,
            voters: config.quorum_voters.clone(),
            written_end: std::cell::Cell::new(0),
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
            if self.quorum.status().leads_applied {
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
    fn write<'a>(&'a self, record: &MetadataRecord) -> LocalBoxFuture<'a, Result<(), ApiError>> {
        let command = serde_json::to_string(record).expect("metadata records serialize");
        Box::pin(async move {
            match self.quorum.write(command).await {
                Ok((applied, end)) => match applied.refused {
                    None => {
                        self.written_end.set(self.written_end.get().max(end));
                        Ok(())
                    }
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

    fn applied_end(&self) -> u64 {
        self.quorum.status().applied_end.max(self.written_end.get())
    }

    fn leads_applied(&self) -> bool {
        self.quorum.status().leads_applied
    }

    fn producer_id_block(&self) -> LocalBoxFuture<'_, Result<(i64, i64), ApiError>> {
        Box::pin(async move {
            let timeout = std::time::Duration::from_millis(self.request_timeout_ms);
            let answer = self
                .call_controller(controller_rpc::producer_ids_request(), timeout)
                .await
                .map_err(|e| {
                    ApiError::new(
                        ErrorCode::CoordinatorNotAvailable,
                        format!("the active controller did not grant producer ids: {e}"),
                    )
                })?;
            controller_rpc::producer_ids_answer(&answer)
        })
    }

    fn close(&self) -> LocalBoxFuture<'_, ()> {
        Box::pin(self.quorum.shutdown())
    }
}
