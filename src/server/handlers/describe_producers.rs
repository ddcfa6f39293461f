//! DescribeProducers (KIP-664): the producers each partition remembers,
//! with the first offset of any transaction they have open there. With
//! ListTransactions and DescribeTransactions this finds a hanging
//! transaction (open on a partition, unknown to its coordinator), which
//! WriteTxnMarkers then aborts.

use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::{DescribeProducersRequest, DescribeProducersResponse, ProducerId};

use crate::protocol::errors::ErrorCode;
use crate::server::connection::RequestContext;
use crate::storage::producer_state::ActiveProducer;

pub async fn handle(
    ctx: &RequestContext,
    request: DescribeProducersRequest,
) -> DescribeProducersResponse {
    let shard = &ctx.conn.shard;
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let meta = shard
            .node
            .image()
            .user_topic(topic.name.0.as_str())
            .cloned();
        let mut partitions = Vec::with_capacity(topic.partition_indexes.len());
        for index in topic.partition_indexes {
            let result = PartitionResponse::default().with_partition_index(index);
            let Some(meta) = meta.as_ref().filter(|m| m.partition(index).is_some()) else {
                partitions.push(result.with_error_code(ErrorCode::UnknownTopicOrPartition.code()));
                continue;
            };
            let key = (meta.id, index);
            let owner = shard.node.shard_for(&meta.name, index);
            let outcome = shard
                .run_on(owner, move |owner| async move {
                    let partition = owner
                        .partition(&key)
                        .ok_or(ErrorCode::NotLeaderOrFollower)?;
                    if partition.state().is_offline() {
                        return Err(ErrorCode::KafkaStorageError);
                    }
                    let producers = partition.log().borrow().active_producers();
                    Ok(producers)
                })
                .await;
            partitions.push(match outcome {
                Ok(producers) => {
                    result.with_active_producers(producers.iter().map(producer_state).collect())
                }
                Err(code) => result.with_error_code(code.code()),
            });
        }
        topics.push(
            TopicResponse::default()
                .with_name(topic.name)
                .with_partitions(partitions),
        );
    }
    DescribeProducersResponse::default().with_topics(topics)
}

fn producer_state(p: &ActiveProducer) -> ProducerState {
    ProducerState::default()
        .with_producer_id(ProducerId(p.producer_id))
        .with_producer_epoch(i32::from(p.epoch))
        .with_last_sequence(p.last_sequence)
        .with_last_timestamp(p.last_timestamp)
        .with_coordinator_epoch(p.coordinator_epoch)
        .with_current_txn_start_offset(p.current_txn_start_offset)
}
