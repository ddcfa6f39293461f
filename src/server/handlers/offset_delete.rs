//! OffsetDelete: removes a group's committed offsets for some partitions,
//! unless a live member of the group is subscribed to the topic.

use std::collections::BTreeSet;

use bytes::Buf;
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{
    ConsumerProtocolSubscription, OffsetDeleteRequest, OffsetDeleteResponse,
};
use kafka_protocol::protocol::Decodable;

use crate::group::state::GroupState;
use crate::protocol::errors::ErrorCode;
use crate::server::connection::RequestContext;
use crate::server::handlers::{check_group_id, on_coordinator};

/// Topics named in consumer-protocol subscriptions (a version, then the subscription).
fn subscribed_topics(metadata: &[bytes::Bytes]) -> BTreeSet<String> {
    let mut topics = BTreeSet::new();
    for bytes in metadata {
        let mut buf = bytes.clone();
        if buf.remaining() < 2 {
            continue;
        }
        let version = buf.get_i16();
        if let Ok(subscription) =
            ConsumerProtocolSubscription::decode(&mut buf, version.clamp(0, 3))
        {
            topics.extend(subscription.topics.into_iter().map(|t| t.to_string()));
        }
    }
    topics
}

pub async fn handle(ctx: &RequestContext, request: OffsetDeleteRequest) -> OffsetDeleteResponse {
    let group_id = request.group_id.0.to_string();
    if let Err(code) = check_group_id(&group_id) {
        return OffsetDeleteResponse::default().with_error_code(code.code());
    }
    let wanted: Vec<(String, Vec<i32>)> = request
        .topics
        .iter()
        .map(|t| {
            (
                t.name.0.to_string(),
                t.partitions.iter().map(|p| p.partition_index).collect(),
            )
        })
        .collect();
    let gid = group_id.clone();
    let outcome = on_coordinator(ctx, &group_id, move |coordinator| async move {
        let Some(state) = coordinator.group_state(&gid) else {
            return Err(ErrorCode::GroupIdNotFound.code());
        };
        let subscribed = if state == GroupState::Empty {
            BTreeSet::new()
        } else {
            coordinator
                .with_group(&gid, |g| subscribed_topics(&g.selected_protocol_metadata()))
                .unwrap_or_default()
        };
        let mut codes = Vec::new();
        let mut delete = Vec::new();
        for (topic, partitions) in &wanted {
            let code = if subscribed.contains(topic) {
                ErrorCode::GroupSubscribedToTopic.code()
            } else {
                0
            };
            for &p in partitions {
                if code == 0 {
                    delete.push((topic.clone(), p));
                }
                codes.push(code);
            }
        }
        if let Err(code) = coordinator.delete_offsets(&gid, delete).await {
            tracing::debug!(group = %gid, ?code, "deleting offsets failed");
            return Err(code.code());
        }
        Ok(codes)
    })
    .await
    .unwrap_or_else(|code| Err(code.code()));
    let codes = match outcome {
        Ok(codes) => codes,
        Err(code) => return OffsetDeleteResponse::default().with_error_code(code),
    };
    let mut codes = codes.into_iter();
    let topics = request
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    OffsetDeleteResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(codes.next().unwrap_or(0))
                })
                .collect();
            OffsetDeleteResponseTopic::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    OffsetDeleteResponse::default().with_topics(topics)
}
