//! OffsetFetch: a group's committed offsets (all, or the partitions asked for);
//! v8+ asks for several groups at once. With `require_stable` (v7+, KIP-447)
//! a partition whose offset a transaction not yet decided holds answers
//! UNSTABLE_OFFSET_COMMIT (the consumer retries).

use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{GroupId, OffsetFetchRequest, OffsetFetchResponse};

use crate::group::offsets::CommittedOffset;
use crate::server::connection::RequestContext;
use crate::server::handlers::{check_group_id_len, on_coordinator, str_bytes, topic_name};

/// (topic, partition, offset if committed, held by an undecided
/// transaction), or a group-level error.
type GroupOffsets = Result<Vec<(String, i32, Option<CommittedOffset>, bool)>, i16>;

/// Kafka's UNSTABLE_OFFSET_COMMIT.
const UNSTABLE_OFFSET_COMMIT: i16 = 88;

/// Looks up `wanted` (None: everything committed) for one group on its coordinator.
async fn lookup(
    ctx: &RequestContext,
    group_id: String,
    wanted: Option<Vec<(String, Vec<i32>)>>,
    require_stable: bool,
) -> GroupOffsets {
    check_group_id_len(&group_id).map_err(|c| c.code())?;
    let gid = group_id.clone();
    on_coordinator(ctx, &group_id, move |coordinator| async move {
        match wanted {
            None => coordinator
                .offsets
                .group_offsets(&gid)
                .into_iter()
                .map(|((t, p), o)| {
                    let unstable = require_stable && coordinator.offsets.has_pending(&gid, &t, p);
                    (t, p, Some(o), unstable)
                })
                .collect(),
            Some(topics) => topics
                .into_iter()
                .flat_map(|(t, parts)| parts.into_iter().map(move |p| (t.clone(), p)))
                .map(|(t, p)| {
                    let offset = coordinator.offsets.get(&gid, &t, p);
                    let unstable = require_stable && coordinator.offsets.has_pending(&gid, &t, p);
                    (t, p, offset, unstable)
                })
                .collect(),
        }
    })
    .await
    .map_err(|code| code.code())
}

pub async fn handle(ctx: &RequestContext, request: OffsetFetchRequest) -> OffsetFetchResponse {
    let version = ctx.api_version;
    if version >= 8 {
        let mut groups = Vec::with_capacity(request.groups.len());
        for group in request.groups {
            let wanted = group.topics.map(|ts| {
                ts.into_iter()
                    .map(|t| (t.name.0.to_string(), t.partition_indexes))
                    .collect()
            });
            let result = lookup(
                ctx,
                group.group_id.0.to_string(),
                wanted,
                request.require_stable,
            )
            .await;
            groups.push(group_response(group.group_id, result));
        }
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let wanted = request.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes))
            .collect()
    });
    let require_stable = version >= 7 && request.require_stable;
    let (error, offsets) =
        match lookup(ctx, request.group_id.0.to_string(), wanted, require_stable).await {
            Ok(offsets) => (0, offsets),
            Err(code) => (code, Vec::new()),
        };
    let mut topics: Vec<OffsetFetchResponseTopic> = Vec::new();
    for (topic, partition, offset, unstable) in offsets {
        let offset = offset.filter(|_| !unstable);
        let mut entry = OffsetFetchResponsePartition::default()
            .with_partition_index(partition)
            .with_error_code(if unstable { UNSTABLE_OFFSET_COMMIT } else { 0 })
            .with_committed_offset(offset.as_ref().map_or(-1, |o| o.offset))
            .with_metadata(Some(str_bytes(
                offset
                    .as_ref()
                    .and_then(|o| o.metadata.clone())
                    .unwrap_or_default(),
            )));
        if version >= 5 {
            entry.committed_leader_epoch = offset.as_ref().map_or(-1, |o| o.leader_epoch);
        }
        match topics.last_mut() {
            Some(t) if t.name.0.as_str() == topic => t.partitions.push(entry),
            _ => topics.push(
                OffsetFetchResponseTopic::default()
                    .with_name(topic_name(&topic))
                    .with_partitions(vec![entry]),
            ),
        }
    }
    let mut response = OffsetFetchResponse::default().with_topics(topics);
    if version >= 2 {
        response.error_code = error;
    }
    response
}

fn group_response(group_id: GroupId, result: GroupOffsets) -> OffsetFetchResponseGroup {
    let response = OffsetFetchResponseGroup::default().with_group_id(group_id);
    let offsets = match result {
        Ok(offsets) => offsets,
        Err(code) => return response.with_error_code(code),
    };
    let mut topics: Vec<OffsetFetchResponseTopics> = Vec::new();
    for (topic, partition, offset, unstable) in offsets {
        let offset = offset.filter(|_| !unstable);
        let entry = OffsetFetchResponsePartitions::default()
            .with_partition_index(partition)
            .with_error_code(if unstable { UNSTABLE_OFFSET_COMMIT } else { 0 })
            .with_committed_offset(offset.as_ref().map_or(-1, |o| o.offset))
            .with_committed_leader_epoch(offset.as_ref().map_or(-1, |o| o.leader_epoch))
            .with_metadata(Some(str_bytes(
                offset
                    .as_ref()
                    .and_then(|o| o.metadata.clone())
                    .unwrap_or_default(),
            )));
        match topics.last_mut() {
            Some(t) if t.name.0.as_str() == topic => t.partitions.push(entry),
            _ => topics.push(
                OffsetFetchResponseTopics::default()
                    .with_name(topic_name(&topic))
                    .with_partitions(vec![entry]),
            ),
        }
    }
    response.with_topics(topics)
}
