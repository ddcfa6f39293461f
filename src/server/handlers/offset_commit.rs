//! OffsetCommit: checks the member and generation with the group, then stores
//! the offsets durably in the offsets log before answering.

use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};

use crate::group::coordinator::OFFSET_METADATA_MAX_BYTES;
use crate::group::offsets::CommittedOffset;
use crate::io::clock::now_ms;
use crate::protocol::errors::ErrorCode;
use crate::server::connection::RequestContext;
use crate::server::handlers::{check_group_id, on_coordinator};

pub async fn handle(ctx: &RequestContext, request: OffsetCommitRequest) -> OffsetCommitResponse {
    let group_id = request.group_id.0.to_string();
    let group_error = check_group_id(&group_id).err();
    let image = ctx.conn.shard.node.image();
    let now = now_ms();
    // Per partition: Err(code) now, or Ok(offset) to store.
    let mut decided: Vec<(String, i32, Result<CommittedOffset, ErrorCode>)> = Vec::new();
    for topic in &request.topics {
        let name = topic.name.0.to_string();
        let meta = image.topic(&name);
        for p in &topic.partitions {
            let outcome = if let Some(code) = group_error {
                Err(code)
            } else if meta.and_then(|m| m.partition(p.partition_index)).is_none() {
                Err(ErrorCode::UnknownTopicOrPartition)
            } else if p
                .committed_metadata
                .as_ref()
                .is_some_and(|m| m.len() > OFFSET_METADATA_MAX_BYTES)
            {
                Err(ErrorCode::OffsetMetadataTooLarge)
            } else {
                Ok(CommittedOffset {
                    offset: p.committed_offset,
                    leader_epoch: p.committed_leader_epoch,
                    metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                    commit_timestamp_ms: now,
                })
            };
            decided.push((name.clone(), p.partition_index, outcome));
        }
    }
    drop(image);

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
                Err(error) => {
                    tracing::warn!(group = %gid, %error, "storing offsets failed");
                    Some(ErrorCode::CoordinatorNotAvailable)
                }
            }
        })
        .await
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
