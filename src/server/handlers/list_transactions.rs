//! ListTransactions (KIP-664; KIP-994's duration filter in v1, KIP-1152's
//! transactional-id pattern in v2): the transactional ids of every
//! coordinator shard, filtered as Kafka filters them. A state filter that
//! names no state is returned in `unknown_state_filters` and still filters
//! (so a request with only unknown names lists nothing). The duration filter
//! keeps entries whose last transaction started more than that many ms ago,
//! whatever their state (Kafka's rule: combine it with "Ongoing" for the
//! hanging ones). The pattern must match the whole id.

use std::collections::BTreeSet;

use kafka_protocol::messages::list_transactions_response::TransactionState;
use kafka_protocol::messages::{
    ListTransactionsRequest, ListTransactionsResponse, ProducerId, TransactionalId,
};

use crate::io::clock::now_ms;
use crate::protocol::errors::ErrorCode;
use crate::server::connection::RequestContext;
use crate::server::handlers::str_bytes;
use crate::txn::state::TxnState;

/// Patterns larger than this compile to too much memory to be an id filter.
const PATTERN_SIZE_LIMIT: usize = 1 << 20;
/// Longer patterns are refused before they are parsed (the parse itself
/// costs memory in proportion; a transactional id is at most 32 KiB).
const PATTERN_LEN_MAX: usize = 4096;

/// The pattern, checked alone (so that `a)|(b` cannot escape the anchors),
/// then anchored to match whole ids as Java's `matches()` does.
fn whole_id_pattern(pattern: &str) -> Option<regex::Regex> {
    if pattern.len() > PATTERN_LEN_MAX {
        return None;
    }
    let build = |p: &str| {
        regex::RegexBuilder::new(p)
            .size_limit(PATTERN_SIZE_LIMIT)
            .build()
            .ok()
    };
    build(pattern)?;
    build(&format!("^(?:{pattern})$"))
}

pub async fn handle(
    ctx: &RequestContext,
    request: ListTransactionsRequest,
) -> ListTransactionsResponse {
    let pattern = match request.transactional_id_pattern.as_deref() {
        None | Some("") => None,
        Some(pattern) => match whole_id_pattern(pattern) {
            Some(regex) => Some(regex),
            None => {
                return ListTransactionsResponse::default()
                    .with_error_code(ErrorCode::InvalidRegularExpression.code())
            }
        },
    };
    let mut states = BTreeSet::new();
    let mut unknown = Vec::new();
    for name in &request.state_filters {
        match TxnState::from_name(name) {
            Some(state) => {
                states.insert(state);
            }
            None => unknown.push(name.clone()),
        }
    }
    let filter_states = !request.state_filters.is_empty();
    let producer_ids: BTreeSet<i64> = request.producer_id_filters.iter().map(|p| p.0).collect();
    let shard = &ctx.conn.shard;
    let lists = (0..shard.shard_count()).map(|target| {
        shard.run_on(target, |s| async move {
            let incomplete = crate::node::coordinators::transactions_incomplete(&s);
            (incomplete, s.txns().list())
        })
    });
    let lists = futures_util::future::join_all(lists).await;
    // Kafka lists nothing while a partition of its transaction log loads.
    if lists.iter().any(|(loading, _)| *loading) {
        return ListTransactionsResponse::default()
            .with_error_code(ErrorCode::CoordinatorLoadInProgress.code())
            .with_unknown_state_filters(unknown);
    }
    let now = now_ms();
    let mut listed = Vec::new();
    for (_, list) in lists {
        for meta in list {
            let keep = meta.state != TxnState::Dead
                && (producer_ids.is_empty() || producer_ids.contains(&meta.producer_id))
                && (!filter_states || states.contains(&meta.state))
                && (request.duration_filter < 0 || now - meta.start_ms > request.duration_filter)
                && pattern
                    .as_ref()
                    .is_none_or(|p| p.is_match(&meta.transactional_id));
            if keep {
                listed.push(meta);
            }
        }
    }
    listed.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
    ListTransactionsResponse::default()
        .with_unknown_state_filters(unknown)
        .with_transaction_states(
            listed
                .into_iter()
                .map(|meta| {
                    TransactionState::default()
                        .with_transactional_id(TransactionalId(str_bytes(meta.transactional_id)))
                        .with_producer_id(ProducerId(meta.producer_id))
                        .with_transaction_state(str_bytes(meta.state.name()))
                })
                .collect(),
        )
}
