//! ListOffsets: earliest (-2), latest (-1), max timestamp (-3), earliest local
//! (-4, the same as earliest here: no tiered storage), or the first offset whose
//! timestamp is at or after a given time.

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use crate::protocol::errors::ErrorCode;
use crate::server::connection::RequestContext;
use crate::storage::log;

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;

pub async fn handle(ctx: &RequestContext, request: ListOffsetsRequest) -> ListOffsetsResponse {
    let shard = &ctx.conn.shard;
    let version = ctx.api_version;
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let meta = shard.node.image().topic(topic.name.0.as_str()).cloned();
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
                        let Some(log) = owner.log(&key) else {
                            return Err(ErrorCode::UnknownTopicOrPartition);
                        };
                        lookup(&log, timestamp).await
                    })
                    .await;
                match outcome {
                    Ok((offset, timestamp)) => {
                        let response = response.with_offset(offset).with_timestamp(timestamp);
                        if version >= 4 {
                            response.with_leader_epoch(0)
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

/// (offset, timestamp) for one partition; runs on the owning shard.
async fn lookup(log_ref: &log::LogRef, timestamp: i64) -> Result<(i64, i64), ErrorCode> {
    let (start, end, max) = {
        let log = log_ref.borrow();
        (
            log.log_start_offset(),
            log.high_watermark(),
            log.max_timestamp(),
        )
    };
    match timestamp {
        LATEST => Ok((end, -1)),
        EARLIEST | EARLIEST_LOCAL => Ok((start, -1)),
        MAX_TIMESTAMP => Ok(if max.1 >= 0 { (max.1, max.0) } else { (-1, -1) }),
        t if t >= 0 => match log::offset_for_timestamp(log_ref, t).await {
            Ok(Some((offset, ts))) => Ok((offset.max(start), ts)),
            Ok(None) => Ok((-1, -1)),
            Err(_) => Err(ErrorCode::KafkaStorageError),
        },
        _ => Err(ErrorCode::InvalidRequest),
    }
}
