//! ListOffsets: earliest (-2), latest (-1), max timestamp (-3), earliest local
//! (-4, the same as earliest here: no tiered storage), or the first offset whose
//! timestamp is at or after a given time. Under read_committed (isolation
//! level 1, v2+) "latest" is the last stable offset, and a lookup that lands
//! at or past it finds nothing, as in Kafka.

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use crate::protocol::errors::ErrorCode;
use crate::server::connection::RequestContext;
use crate::storage::log::Isolation;

pub async fn handle(ctx: &RequestContext, request: ListOffsetsRequest) -> ListOffsetsResponse {
    let shard = &ctx.conn.shard;
    let version = ctx.api_version;
    let isolation = if request.isolation_level == 1 {
        Isolation::ReadCommitted
    } else {
        Isolation::ReadUncommitted
    };
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let meta = shard
            .node
            .image()
            .user_topic(topic.name.0.as_str())
            .cloned();
        let mut lookups = Vec::with_capacity(topic.partitions.len());
        for p in topic.partitions {
            let meta = meta.clone();
            lookups.push(async move {
                let response =
                    ListOffsetsPartitionResponse::default().with_partition_index(p.partition_index);
                let Some(meta) = meta.filter(|m| m.partition(p.partition_index).is_some()) else {
                    return response
                        .with_error_code(ErrorCode::UnknownTopicOrPartition.code())
                        .with_offset(-1)
                        .with_timestamp(-1);
                };
                if !shard.node.leads(&meta, p.partition_index) {
                    return response
                        .with_error_code(ErrorCode::NotLeaderOrFollower.code())
                        .with_offset(-1)
                        .with_timestamp(-1);
                }
                if meta
                    .partition(p.partition_index)
                    .is_some_and(|s| s.is_offline())
                {
                    return response
                        .with_error_code(ErrorCode::KafkaStorageError.code())
                        .with_offset(-1)
                        .with_timestamp(-1);
                }
                let key = (meta.id, p.partition_index);
                let timestamp = p.timestamp;
                let owner = shard.node.shard_for(&meta.name, p.partition_index);
                let outcome = shard
                    .run_on(owner, move |owner| async move {
                        let Some(partition) = owner.partition(&key) else {
                            return Err(ErrorCode::UnknownTopicOrPartition);
                        };
                        let epoch = partition.leader_epoch();
                        partition
                            .offset_for(timestamp, isolation)
                            .await
                            .map(|(o, t)| (o, t, epoch))
                    })
                    .await;
                match outcome {
                    Ok((offset, timestamp, epoch)) => {
                        let response = response.with_offset(offset).with_timestamp(timestamp);
                        if version >= 4 {
                            response.with_leader_epoch(epoch)
                        } else {
                            response
                        }
                    }
                    Err(code) => response
                        .with_error_code(code.code())
                        .with_offset(-1)
                        .with_timestamp(-1),
                }
            });
        }
        let partitions = futures_util::future::join_all(lookups).await;
        topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(topic.name)
                .with_partitions(partitions),
        );
    }
    ListOffsetsResponse::default().with_topics(topics)
}
