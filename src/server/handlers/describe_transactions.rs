//! DescribeTransactions (KIP-664): the state of each transactional id, from
//! its coordinator: state, timeout, start time, producer id and epoch, and
//! the partitions in the transaction.

use std::collections::BTreeMap;

use kafka_protocol::messages::describe_transactions_response::{TopicData, TransactionState};
use kafka_protocol::messages::{
    DescribeTransactionsRequest, DescribeTransactionsResponse, ProducerId,
};

use crate::protocol::errors::ErrorCode;
use crate::server::connection::RequestContext;
use crate::server::handlers::{on_txn_coordinator, str_bytes, topic_name};
use crate::txn::state::TxnState;

pub async fn handle(
    ctx: &RequestContext,
    request: DescribeTransactionsRequest,
) -> DescribeTransactionsResponse {
    let mut states = Vec::with_capacity(request.transactional_ids.len());
    for id in request.transactional_ids {
        let name = id.0.to_string();
        let mut state = TransactionState::default()
            .with_transactional_id(id)
            .with_transaction_state(str_bytes(""))
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
            .with_transaction_start_time_ms(-1);
        if name.is_empty() {
            states.push(state.with_error_code(ErrorCode::InvalidRequest.code()));
            continue;
        }
        let described =
            on_txn_coordinator(
                ctx,
                &name.clone(),
                move |c| async move { c.describe(&name) },
            )
            .await;
        let described = match described {
            Ok(described) => described,
            Err(code) => {
                states.push(state.with_error_code(code.code()));
                continue;
            }
        };
        let Some(meta) = described.filter(|m| m.state != TxnState::Dead) else {
            states.push(state.with_error_code(ErrorCode::TransactionalIdNotFound.code()));
            continue;
        };
        let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for (topic, partition) in &meta.partitions {
            topics.entry(topic).or_default().push(*partition);
        }
        state.transaction_state = str_bytes(meta.state.name());
        state.transaction_timeout_ms = meta.timeout_ms;
        state.transaction_start_time_ms = meta.start_ms;
        state.producer_id = ProducerId(meta.producer_id);
        state.producer_epoch = meta.producer_epoch;
        state.topics = topics
            .into_iter()
            .map(|(topic, partitions)| {
                TopicData::default()
                    .with_topic(topic_name(topic))
                    .with_partitions(partitions)
            })
            .collect();
        states.push(state);
    }
    DescribeTransactionsResponse::default().with_transaction_states(states)
}
