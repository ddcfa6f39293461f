//! OffsetForLeaderEpoch (KIP-101, KIP-320): where a leader epoch ends in the
//! leader's log. A consumer asks it after a leader change to learn whether
//! the records it already read are still in the log (if the epoch of its
//! last record ends before its position, the log was cut under it and it
//! resets or reports truncation); a follower could ask it before fetching
//! (Sluice's followers use Fetch's diverging epoch instead).
//!
//! Answered by the partition's leader only: NOT_LEADER_OR_FOLLOWER elsewhere,
//! FENCED_LEADER_EPOCH / UNKNOWN_LEADER_EPOCH when the asker's idea of the
//! current epoch is older / newer than the leader's.

use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use crate::protocol::errors::ErrorCode;
use crate::server::connection::RequestContext;

pub async fn handle(
    ctx: &RequestContext,
    request: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let shard = &ctx.conn.shard;
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        // Not about the internal topics (Sluice's followers learn where
        // their logs diverge from Fetch, and a replica id is a claim).
        let meta = shard
            .node
            .image()
            .user_topic(topic.topic.0.as_str())
            .cloned();
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for p in topic.partitions {
            let answer = EpochEndOffset::default()
                .with_partition(p.partition)
                .with_leader_epoch(-1)
                .with_end_offset(-1);
            let Some(meta) = meta.as_ref().filter(|m| m.partition(p.partition).is_some()) else {
                partitions.push(answer.with_error_code(ErrorCode::UnknownTopicOrPartition.code()));
                continue;
            };
            if !shard.node.leads(meta, p.partition) {
                partitions.push(answer.with_error_code(ErrorCode::NotLeaderOrFollower.code()));
                continue;
            }
            let key = (meta.id, p.partition);
            let owner = shard.node.shard_for(&meta.name, p.partition);
            let (current, wanted) = (p.current_leader_epoch, p.leader_epoch);
            let found = shard
                .run_on(owner, move |owner| async move {
                    let partition = owner
                        .partition(&key)
                        .ok_or(ErrorCode::UnknownTopicOrPartition)?;
                    partition.check_leader_epoch(current)?;
                    if partition.state().is_offline() {
                        return Err(ErrorCode::KafkaStorageError);
                    }
                    Ok(partition.end_offset_for_epoch(wanted))
                })
                .await;
            partitions.push(match found {
                Ok((epoch, end)) => answer.with_leader_epoch(epoch).with_end_offset(end),
                Err(code) => answer.with_error_code(code.code()),
            });
        }
        topics.push(
            OffsetForLeaderTopicResult::default()
                .with_topic(topic.topic)
                .with_partitions(partitions),
        );
    }
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}
