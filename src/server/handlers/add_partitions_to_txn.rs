//! AddPartitionsToTxn (versions 0-3, the ones clients send): adds partitions
//! to the producer's transaction before it writes to them. Every partition
//! must exist and be writable, or none is added: the ones at fault get their
//! error and the others OPERATION_NOT_ATTEMPTED, as in Kafka.

use std::collections::BTreeMap;

use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::{AddPartitionsToTxnRequest, AddPartitionsToTxnResponse};

use crate::metadata::is_internal_topic;
use crate::protocol::errors::ErrorCode;
use crate::server::connection::RequestContext;
use crate::server::handlers::{fenced_for, on_txn_coordinator, topic_name};
use crate::txn::state::{TopicPartition, TV_CLASSIC};

pub async fn handle(
    ctx: &RequestContext,
    request: AddPartitionsToTxnRequest,
) -> AddPartitionsToTxnResponse {
    let version = ctx.api_version;
    let id = request.v3_and_below_transactional_id.0.to_string();
    let mut wanted: Vec<TopicPartition> = Vec::new();
    let mut refused: BTreeMap<TopicPartition, ErrorCode> = BTreeMap::new();
    {
        let image = ctx.conn.shard.node.image();
        for topic in &request.v3_and_below_topics {
            let name = topic.name.0.as_str();
            for &partition in &topic.partitions {
                let tp = (name.to_string(), partition);
                // Kafka leaves internal topics out of what a client may
                // write: TOPIC_AUTHORIZATION_FAILED.
                let error = if is_internal_topic(name) {
                    Some(ErrorCode::TopicAuthorizationFailed)
                } else if image
                    .topic(name)
                    .is_none_or(|t| t.partition(partition).is_none())
                {
                    Some(ErrorCode::UnknownTopicOrPartition)
                } else {
                    None
                };
                match error {
                    Some(code) => {
                        refused.insert(tp, code);
                    }
                    None => wanted.push(tp),
                }
            }
        }
    }
    let outcome: Result<(), ErrorCode> = if id.is_empty() {
        Err(ErrorCode::InvalidRequest)
    } else if !refused.is_empty() {
        Err(ErrorCode::OperationNotAttempted)
    } else {
        let (producer_id, epoch) = (
            request.v3_and_below_producer_id.0,
            request.v3_and_below_producer_epoch,
        );
        let partitions = wanted.clone();
        on_txn_coordinator(ctx, &id.clone(), move |c| async move {
            c.add_partitions(&id, producer_id, epoch, &partitions, TV_CLASSIC)
                .await
        })
        .await
    };
    let code_of = |tp: &TopicPartition| -> i16 {
        if let Some(code) = refused.get(tp) {
            return code.code();
        }
        outcome
            .err()
            .map_or(0, |code| fenced_for(version, 2, code).code())
    };
    let mut by_topic: Vec<AddPartitionsToTxnTopicResult> = Vec::new();
    for topic in &request.v3_and_below_topics {
        let results = topic
            .partitions
            .iter()
            .map(|&partition| {
                let tp = (topic.name.0.to_string(), partition);
                AddPartitionsToTxnPartitionResult::default()
                    .with_partition_index(partition)
                    .with_partition_error_code(code_of(&tp))
            })
            .collect();
        by_topic.push(
            AddPartitionsToTxnTopicResult::default()
                .with_name(topic_name(topic.name.0.as_str()))
                .with_results_by_partition(results),
        );
    }
    AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(by_topic)
}
