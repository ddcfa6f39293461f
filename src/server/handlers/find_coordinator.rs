//! FindCoordinator: a group is coordinated by the leader of its partition of
//! the offsets log, a transactional id by the leader of its partition of the
//! transaction log (as Kafka places them), so that every member of a group
//! meets at one coordinator whichever broker it asks, and the coordinator
//! moves with the partition's leadership. COORDINATOR_NOT_AVAILABLE while
//! the internal topic is not created yet (too few brokers registered for its
//! replication factor) or the partition has no live leader. Batched keys
//! (v4+) get one answer each.

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;

use crate::group::offsets::{offsets_partition, OFFSETS_TOPIC};
use crate::protocol::errors::ErrorCode;
use crate::server::connection::RequestContext;
use crate::server::handlers::str_bytes;
use crate::txn::coordinator::{log_partitions, txn_partition, TXN_TOPIC};

/// Key types: 0 = consumer group, 1 = transaction.
const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

/// The broker coordinating `key`: (id, host, port), or why there is none.
fn coordinator_of(
    ctx: &RequestContext,
    key_type: i8,
    key: &str,
) -> Result<(i32, String, i32), ErrorCode> {
    let node = &ctx.conn.shard.node;
    let (topic, partition) = match key_type {
        KEY_TYPE_GROUP => (OFFSETS_TOPIC, offsets_partition(key)),
        KEY_TYPE_TRANSACTION => (
            TXN_TOPIC,
            txn_partition(
                key,
                log_partitions(node, node.config.transaction_state_log_num_partitions),
            ),
        ),
        _ => return Err(ErrorCode::InvalidRequest),
    };
    let leader = node
        .image()
        .topic(topic)
        .and_then(|t| t.placement(partition))
        .map_or(-1, |p| p.leader);
    node.brokers()
        .into_iter()
        .find(|(id, _, _)| *id == leader)
        .ok_or(ErrorCode::CoordinatorNotAvailable)
}

pub async fn handle(
    ctx: &RequestContext,
    request: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    if ctx.api_version >= 4 {
        let coordinators = request
            .coordinator_keys
            .into_iter()
            .map(|key| {
                let answer = Coordinator::default();
                match coordinator_of(ctx, request.key_type, key.as_str()) {
                    Ok((id, host, port)) => answer
                        .with_node_id(BrokerId(id))
                        .with_host(str_bytes(host))
                        .with_port(port),
                    Err(code) => answer
                        .with_node_id(BrokerId(-1))
                        .with_host(StrBytes::default())
                        .with_port(-1)
                        .with_error_code(code.code()),
                }
                .with_key(key)
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    match coordinator_of(ctx, request.key_type, request.key.as_str()) {
        Ok((id, host, port)) => FindCoordinatorResponse::default()
            .with_node_id(BrokerId(id))
            .with_host(str_bytes(host))
            .with_port(port),
        Err(code) => FindCoordinatorResponse::default()
            .with_error_code(code.code())
            .with_node_id(BrokerId(-1))
            .with_host(StrBytes::default())
            .with_port(-1),
    }
}
