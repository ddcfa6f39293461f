//! Reaching the transaction coordinator of a transactional id from anywhere
//! in the cluster: a partition leader verifying a transactional batch
//! (KIP-890 part 1) or adding its partition to a version-2 transaction
//! (part 2), a group coordinator doing the same for a transaction's offsets.
//! The coordinator is the leader of the id's transaction-log partition: on
//! this broker the request goes to its shard; on another, it is an
//! AddPartitionsToTxn (v5, the brokers' batched form) to that broker.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::add_partitions_to_txn_request::{
    AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction,
};
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, ApiKey, ProducerId, RequestHeader,
    ResponseHeader, TopicName, TransactionalId,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};

use crate::io::rpc::RpcClient;
use crate::node::shard::Shard;
use crate::node::txn_env::COORDINATOR_CLIENT_PREFIX;
use crate::protocol::errors::ErrorCode;
use crate::txn::coordinator::{coordinator_shard, log_partitions, txn_partition, TXN_TOPIC};
use crate::txn::state::{TopicPartition, TV_EPOCH_BUMP};

/// The AddPartitionsToTxn version brokers send each other.
const ADD_VERSION: i16 = 5;
/// How long the coordinator has to answer (it may wait up to 100 ms for the
/// producer's previous transaction).
const ADD_TIMEOUT: Duration = Duration::from_secs(10);

/// What to ask of the coordinator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    /// Which of the partitions are in the transaction.
    Verify,
    /// Add them to it (transaction version 2).
    Add,
}

/// Asks the coordinator of `transactional_id` about `partitions`: per
/// partition None (in the transaction now) or its error
/// (TRANSACTION_ABORTABLE: not in it); or the transaction's error.
pub async fn ask_coordinator(
    shard: &Rc<Shard>,
    transactional_id: &str,
    producer_id: i64,
    producer_epoch: i16,
    partitions: Vec<TopicPartition>,
    ask: Ask,
) -> Result<Vec<Option<ErrorCode>>, ErrorCode> {
    let node = &shard.node;
    let count = log_partitions(node, node.config.transaction_state_log_num_partitions);
    let leader = node
        .image()
        .topic(TXN_TOPIC)
        .and_then(|t| t.placement(txn_partition(transactional_id, count)))
        .map_or(-1, |p| p.leader);
    if leader < 0 {
        return Err(ErrorCode::CoordinatorNotAvailable);
    }
    if leader != node.config.node_id {
        return ask_remote(
            shard,
            leader,
            transactional_id,
            producer_id,
            producer_epoch,
            partitions,
            ask,
        )
        .await;
    }
    let target = coordinator_shard(transactional_id, count, shard.shard_count());
    let id = transactional_id.to_string();
    shard
        .run_on(target, move |s| async move {
            let c = s.txns();
            c.serves(&id)?;
            match ask {
                Ask::Verify => c.verify_partitions(&id, producer_id, producer_epoch, &partitions),
                Ask::Add => c
                    .add_partitions(&id, producer_id, producer_epoch, &partitions, TV_EPOCH_BUMP)
                    .await
                    .map(|()| vec![None; partitions.len()]),
            }
        })
        .await
}

async fn ask_remote(
    shard: &Rc<Shard>,
    broker: i32,
    transactional_id: &str,
    producer_id: i64,
    producer_epoch: i16,
    partitions: Vec<TopicPartition>,
    ask: Ask,
) -> Result<Vec<Option<ErrorCode>>, ErrorCode> {
    let address = shard
        .node
        .image()
        .brokers
        .get(&broker)
        .filter(|b| !b.fenced)
        .map(|b| format!("{}:{}", b.host, b.port))
        .ok_or(ErrorCode::CoordinatorNotAvailable)?;
    let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (topic, index) in &partitions {
        topics.entry(topic).or_default().push(*index);
    }
    let transaction = AddPartitionsToTxnTransaction::default()
        .with_transactional_id(TransactionalId(StrBytes::from_string(
            transactional_id.to_string(),
        )))
        .with_producer_id(ProducerId(producer_id))
        .with_producer_epoch(producer_epoch)
        .with_verify_only(ask == Ask::Verify)
        .with_topics(
            topics
                .into_iter()
                .map(|(topic, indexes)| {
                    AddPartitionsToTxnTopic::default()
                        .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                        .with_partitions(indexes)
                })
                .collect(),
        );
    let request = AddPartitionsToTxnRequest::default().with_transactions(vec![transaction]);
    let me = shard.node.config.node_id;
    let header = RequestHeader::default()
        .with_request_api_key(ApiKey::AddPartitionsToTxn as i16)
        .with_request_api_version(ADD_VERSION)
        .with_correlation_id(1)
        .with_client_id(Some(StrBytes::from_string(format!(
            "{COORDINATOR_CLIENT_PREFIX}{me}"
        ))));
    let mut buf = BytesMut::new();
    header
        .encode(
            &mut buf,
            AddPartitionsToTxnRequest::header_version(ADD_VERSION),
        )
        .expect("a request header encodes");
    request
        .encode(&mut buf, ADD_VERSION)
        .expect("an AddPartitionsToTxn request encodes");
    let mut client = RpcClient::new(address);
    let bytes = client
        .call(buf.to_vec(), ADD_TIMEOUT)
        .await
        .map_err(|error| {
            tracing::debug!(broker, %error, "asking a transaction coordinator");
            ErrorCode::CoordinatorNotAvailable
        })?;
    let mut bytes = Bytes::from(bytes);
    let response = ResponseHeader::decode(
        &mut bytes,
        AddPartitionsToTxnResponse::header_version(ADD_VERSION),
    )
    .ok()
    .filter(|h| h.correlation_id == 1)
    .and_then(|_| AddPartitionsToTxnResponse::decode(&mut bytes, ADD_VERSION).ok())
    .ok_or(ErrorCode::CoordinatorNotAvailable)?;
    if let Some(code) = ErrorCode::try_from_code(response.error_code) {
        return Err(code);
    }
    let mut answered: BTreeMap<(String, i32), i16> = BTreeMap::new();
    for result in response.results_by_transaction {
        for topic in result.topic_results {
            for p in topic.results_by_partition {
                answered.insert(
                    (topic.name.0.to_string(), p.partition_index),
                    p.partition_error_code,
                );
            }
        }
    }
    let mut each = Vec::with_capacity(partitions.len());
    for p in &partitions {
        let code = *answered.get(p).ok_or(ErrorCode::UnknownServerError)?;
        match ErrorCode::try_from_code(code) {
            None => each.push(None),
            Some(ErrorCode::TransactionAbortable) => {
                each.push(Some(ErrorCode::TransactionAbortable))
            }
            // Anything else is the transaction's (every partition has it).
            Some(other) => return Err(other),
        }
    }
    Ok(each)
}
