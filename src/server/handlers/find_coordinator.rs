//! FindCoordinator: one broker of the cluster coordinates every group and
//! transactional id, the live broker with the lowest id (this one when it
//! is alone), so that all members of a group meet at the same coordinator
//! whichever broker they ask. (Kafka places each on the leader of its
//! internal partition; Sluice's internal logs are not replicated partitions
//! yet, issue 15.) Batched keys (v4+) get one answer each.

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};

use crate::protocol::errors::ErrorCode;
use crate::server::connection::RequestContext;
use crate::server::handlers::str_bytes;

/// Key types: 0 = consumer group, 1 = transaction.
const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

pub async fn handle(
    ctx: &RequestContext,
    request: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    let (id, host, port) = ctx
        .conn
        .shard
        .node
        .brokers()
        .into_iter()
        .next()
        .expect("this broker is always listed");
    let node_id = BrokerId(id);
    let host = str_bytes(host);
    let error = match request.key_type {
        KEY_TYPE_GROUP | KEY_TYPE_TRANSACTION => None,
        _ => Some(ErrorCode::InvalidRequest),
    };
    let code = error.map_or(0, |e| e.code());
    if ctx.api_version >= 4 {
        let coordinators = request
            .coordinator_keys
            .into_iter()
            .map(|key| {
                Coordinator::default()
                    .with_key(key)
                    .with_node_id(node_id)
                    .with_host(host.clone())
                    .with_port(port)
                    .with_error_code(code)
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    FindCoordinatorResponse::default()
        .with_error_code(code)
        .with_node_id(node_id)
        .with_host(host)
        .with_port(port)
}
