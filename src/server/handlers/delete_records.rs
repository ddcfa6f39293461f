//! DeleteRecords: move a partition's log start offset forward; whole segments
//! below it are removed.

use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};

use crate::metadata::is_internal_topic;
use crate::protocol::errors::ErrorCode;
use crate::server::connection::RequestContext;

pub async fn handle(ctx: &RequestContext, request: DeleteRecordsRequest) -> DeleteRecordsResponse {
    let shard = &ctx.conn.shard;
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let meta = shard
            .node
            .image()
            .user_topic(topic.name.0.as_str())
            .cloned();
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for p in topic.partitions {
            let result =
                DeleteRecordsPartitionResult::default().with_partition_index(p.partition_index);
            if is_internal_topic(topic.name.0.as_str()) {
                // Kafka: "Cannot delete records of internal topic".
                partitions.push(
                    result
                        .with_low_watermark(-1)
                        .with_error_code(ErrorCode::InvalidTopicException.code()),
                );
                continue;
            }
            let Some(meta) = meta
                .as_ref()
                .filter(|m| m.partition(p.partition_index).is_some())
            else {
                partitions.push(
                    result
                        .with_low_watermark(-1)
                        .with_error_code(ErrorCode::UnknownTopicOrPartition.code()),
                );
                continue;
            };
            if !shard.node.leads(meta, p.partition_index) {
                partitions.push(
                    result
                        .with_low_watermark(-1)
                        .with_error_code(ErrorCode::NotLeaderOrFollower.code()),
                );
                continue;
            }
            let key = (meta.id, p.partition_index);
            let offset = p.offset;
            let owner = shard.node.shard_for(&meta.name, p.partition_index);
            let outcome = shard
                .run_on(owner, move |owner| async move {
                    match owner.partition(&key) {
                        Some(partition) => partition.delete_records_before(offset),
                        None => Err(ErrorCode::UnknownTopicOrPartition),
                    }
                })
                .await;
            partitions.push(match outcome {
                Ok(low_watermark) => result.with_low_watermark(low_watermark),
                Err(code) => result.with_low_watermark(-1).with_error_code(code.code()),
            });
        }
        topics.push(
            DeleteRecordsTopicResult::default()
                .with_name(topic.name)
                .with_partitions(partitions),
        );
    }
    DeleteRecordsResponse::default().with_topics(topics)
}
