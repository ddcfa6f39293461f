//! OffsetCommit: checks the member and generation with the group, then stores
//! the offsets durably in the offsets log before answering.

use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};

use crate::group::coordinator::OFFSET_METADATA_MAX_BYTES;
use crate::group::offsets::CommittedOffset;
use crate::io::clock::now_ms;
use crate::metadata::MetadataImage;
use crate::protocol::errors::ErrorCode;
use crate::server::connection::RequestContext;
use crate::server::handlers::{check_group_id_len, on_coordinator};

pub async fn handle(ctx: &RequestContext, request: OffsetCommitRequest) -> OffsetCommitResponse {
    let group_id = request.group_id.0.to_string();
    let group_error = check_group_id_len(&group_id).err();
    let decided = decide(
        &ctx.conn.shard.node.image(),
        group_error,
        request.topics.iter().flat_map(|topic| {
            topic.partitions.iter().map(|p| PartitionCommit {
                topic: topic.name.0.as_str(),
                partition: p.partition_index,
                offset: p.committed_offset,
                leader_epoch: p.committed_leader_epoch,
                metadata: p.committed_metadata.as_deref(),
            })
        }),
    );

    let to_store: Vec<((String, i32), CommittedOffset)> = decided
        .iter()
        .filter_map(|(t, p, o)| o.as_ref().ok().map(|o| ((t.clone(), *p), o.clone())))
        .collect();
    let store_error = if to_store.is_empty() {
        None
    } else {
        let member_id = request.member_id.to_string();
        let instance_id = request.group_instance_id.as_ref().map(|s| s.to_string());
        let generation = request.generation_id_or_member_epoch;
        let gid = group_id.clone();
        on_coordinator(ctx, &group_id, move |coordinator| async move {
            // No live group: only a "simple" commit (no member, no generation) is allowed.
            let simple = if generation < 0 && member_id.is_empty() {
                Ok(())
            } else {
                Err(crate::group::state::GroupError::UnknownMemberId)
            };
            let check = coordinator
                .with_group(&gid, |group| {
                    group.validate_offset_commit(&member_id, instance_id.as_deref(), generation)
                })
                .unwrap_or(simple);
            if let Err(error) = check {
                return ErrorCode::try_from_code(error.code());
            }
            match coordinator.commit_offsets(&gid, to_store).await {
                Ok(()) => None,
                Err(code) => {
                    tracing::debug!(group = %gid, ?code, "storing offsets failed");
                    Some(code)
                }
            }
        })
        .await
        .unwrap_or_else(Some)
    };

    let mut topics: Vec<OffsetCommitResponseTopic> = Vec::new();
    for (name, partition, outcome) in decided {
        let code = match outcome {
            Err(code) => code.code(),
            Ok(_) => store_error.map_or(0, |c| c.code()),
        };
        let entry = OffsetCommitResponsePartition::default()
            .with_partition_index(partition)
            .with_error_code(code);
        match topics.last_mut() {
            Some(t) if t.name.0.as_str() == name => t.partitions.push(entry),
            _ => topics.push(
                OffsetCommitResponseTopic::default()
                    .with_name(crate::server::handlers::topic_name(&name))
                    .with_partitions(vec![entry]),
            ),
        }
    }
    OffsetCommitResponse::default().with_topics(topics)
}

/// One partition of an offset commit (OffsetCommit or TxnOffsetCommit), as
/// the request carries it.
pub(crate) struct PartitionCommit<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<&'a str>,
}

/// Per partition, in request order: the offset to store, or the error to
/// answer with now (`request_error` for all, an unknown partition, metadata
/// over Kafka's limit).
pub(crate) fn decide<'a>(
    image: &MetadataImage,
    request_error: Option<ErrorCode>,
    partitions: impl Iterator<Item = PartitionCommit<'a>>,
) -> Vec<(String, i32, Result<CommittedOffset, ErrorCode>)> {
    let now = now_ms();
    partitions
        .map(|p| {
            let outcome = if let Some(code) = request_error {
                Err(code)
            } else if image
                .topic(p.topic)
                .and_then(|m| m.partition(p.partition))
                .is_none()
            {
                Err(ErrorCode::UnknownTopicOrPartition)
            } else if p
                .metadata
                .is_some_and(|m| m.len() > OFFSET_METADATA_MAX_BYTES)
            {
                Err(ErrorCode::OffsetMetadataTooLarge)
            } else {
                Ok(CommittedOffset {
                    offset: p.offset,
                    leader_epoch: p.leader_epoch,
                    metadata: p.metadata.map(str::to_string),
                    commit_timestamp_ms: now,
                })
            };
            (p.topic.to_string(), p.partition, outcome)
        })
        .collect()
}
