//! AddPartitionsToTxn: adds partitions to a producer's transaction before it
//! writes to them. Versions 0-3 carry one transaction (what clients send);
//! 4-5 carry a batch of them, each either to add (as a Kafka broker asks a
//! coordinator for a KIP-890 part 2 client, and as some clients send it) or
//! verify-only (KIP-890 part 1: is the partition in the transaction?). In a
//! transaction, every partition must exist and be writable or none is
//! added: the ones at fault get their error and the others
//! OPERATION_NOT_ATTEMPTED, as in Kafka.

use std::collections::BTreeMap;

use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, TopicName, TransactionalId,
};

use crate::group::offsets::OFFSETS_TOPIC;
use crate::metadata::{is_internal_topic, is_sluice_internal};
use crate::protocol::errors::ErrorCode;
use crate::server::connection::RequestContext;
use crate::server::handlers::{fenced_for, from_peer_coordinator, on_txn_coordinator, topic_name};
use crate::txn::state::{TopicPartition, TV_CLASSIC, TV_EPOCH_BUMP};

/// One transaction of the request.
struct Wanted {
    transactional_id: TransactionalId,
    producer_id: i64,
    producer_epoch: i16,
    verify_only: bool,
    topics: Vec<(TopicName, Vec<i32>)>,
}

pub async fn handle(
    ctx: &RequestContext,
    request: AddPartitionsToTxnRequest,
) -> AddPartitionsToTxnResponse {
    let version = ctx.api_version;
    if version <= 3 {
        let wanted = Wanted {
            transactional_id: request.v3_and_below_transactional_id,
            producer_id: request.v3_and_below_producer_id.0,
            producer_epoch: request.v3_and_below_producer_epoch,
            verify_only: false,
            topics: request
                .v3_and_below_topics
                .into_iter()
                .map(|t| (t.name, t.partitions))
                .collect(),
        };
        let results = serve(ctx, wanted, version).await;
        return AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results);
    }
    // The transactions of a batched request are served together (each may
    // wait for its previous transaction's completion).
    let served = request.transactions.into_iter().map(|transaction| {
        let transactional_id = transaction.transactional_id.clone();
        let wanted = Wanted {
            transactional_id: transaction.transactional_id,
            producer_id: transaction.producer_id.0,
            producer_epoch: transaction.producer_epoch,
            verify_only: transaction.verify_only,
            topics: transaction
                .topics
                .into_iter()
                .map(|t| (t.name, t.partitions))
                .collect(),
        };
        async move {
            AddPartitionsToTxnResult::default()
                .with_transactional_id(transactional_id)
                .with_topic_results(serve(ctx, wanted, version).await)
        }
    });
    let by_transaction = futures_util::future::join_all(served).await;
    AddPartitionsToTxnResponse::default().with_results_by_transaction(by_transaction)
}

/// One transaction's partitions: checked, then added (or verified) by its
/// coordinator; a result per partition.
async fn serve(
    ctx: &RequestContext,
    wanted: Wanted,
    version: i16,
) -> Vec<AddPartitionsToTxnTopicResult> {
    let id = wanted.transactional_id.0.to_string();
    let mut valid: Vec<TopicPartition> = Vec::new();
    let mut refused: BTreeMap<TopicPartition, ErrorCode> = BTreeMap::new();
    let from_peer = from_peer_coordinator(ctx);
    {
        let image = ctx.conn.shard.node.image();
        for (name, partitions) in &wanted.topics {
            let name = name.0.as_str();
            for &partition in partitions {
                let tp = (name.to_string(), partition);
                // Kafka leaves internal topics out of what a client may
                // write: TOPIC_AUTHORIZATION_FAILED. (A group coordinator
                // on another broker adds a transaction's offsets partition;
                // no one adds the transaction log's.)
                let error = if is_internal_topic(name)
                    || (is_sluice_internal(name) && !(from_peer && name == OFFSETS_TOPIC))
                {
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
                    None => valid.push(tp),
                }
            }
        }
    }
    let (producer_id, epoch) = (wanted.producer_id, wanted.producer_epoch);
    // Per partition: None added (or in the transaction), else the error.
    let outcome: Result<Vec<Option<ErrorCode>>, ErrorCode> = if id.is_empty() {
        Err(ErrorCode::InvalidRequest)
    } else if !refused.is_empty() {
        Err(ErrorCode::OperationNotAttempted)
    } else if wanted.verify_only {
        let partitions = valid.clone();
        on_txn_coordinator(ctx, &id.clone(), move |c| async move {
            c.verify_partitions(&id, producer_id, epoch, &partitions)
        })
        .await
        .and_then(|r| r)
    } else {
        // Versions 4+ are KIP-890's: the transaction is of version 2.
        let client_tv = if version >= 4 {
            TV_EPOCH_BUMP
        } else {
            TV_CLASSIC
        };
        let partitions = valid.clone();
        let count = valid.len();
        on_txn_coordinator(ctx, &id.clone(), move |c| async move {
            c.add_partitions(&id, producer_id, epoch, &partitions, client_tv)
                .await
        })
        .await
        .and_then(|r| r)
        .map(|()| vec![None; count])
    };
    // Per partition, looked up by key (a request may name many, repeatedly).
    let answered: std::collections::HashMap<&TopicPartition, Option<ErrorCode>> = match &outcome {
        Ok(each) => valid.iter().zip(each.iter().copied()).collect(),
        Err(_) => std::collections::HashMap::new(),
    };
    let code_of = |tp: &TopicPartition| -> i16 {
        if let Some(code) = refused.get(tp) {
            return code.code();
        }
        match &outcome {
            Err(code) => fenced_for(version, 2, *code).code(),
            Ok(_) => answered
                .get(tp)
                .copied()
                .flatten()
                .map_or(0, |code| code.code()),
        }
    };
    wanted
        .topics
        .iter()
        .map(|(name, partitions)| {
            let results = partitions
                .iter()
                .map(|&partition| {
                    let tp = (name.0.to_string(), partition);
                    AddPartitionsToTxnPartitionResult::default()
                        .with_partition_index(partition)
                        .with_partition_error_code(code_of(&tp))
                })
                .collect();
            AddPartitionsToTxnTopicResult::default()
                .with_name(topic_name(name.0.as_str()))
                .with_results_by_partition(results)
        })
        .collect()
}
