//! AlterPartitionReassignments (KIP-455): move partitions to new replica
//! lists, or cancel moves under way (a null replica list). Made by the
//! active controller (forwarded there from any broker, KIP-590); each
//! partition answers on its own. The move itself is asynchronous: the new
//! replicas catch up as followers, and the controller completes it once
//! they are in the ISR (`metadata::reassign`). Version 1 can refuse a
//! change of replication factor (KIP-860).

use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse,
};

use crate::node::controller_rpc::AdminChange;
use crate::node::forward;
use crate::server::connection::RequestContext;
use crate::server::handlers::str_bytes;

pub async fn handle(
    ctx: &RequestContext,
    request: AlterPartitionReassignmentsRequest,
) -> AlterPartitionReassignmentsResponse {
    // Version 0 has no such field: a change of replication factor is allowed.
    let allow = ctx.api_version < 1 || request.allow_replication_factor_change;
    let mut responses = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for partition in topic.partitions {
            let change = AdminChange::Reassign {
                topic: topic.name.0.to_string(),
                partition: partition.partition_index,
                target: partition
                    .replicas
                    .map(|list| list.iter().map(|b| b.0).collect()),
                allow_replication_factor_change: allow,
            };
            let outcome = forward::ask(&ctx.conn.shard, change).await;
            let result = ReassignablePartitionResponse::default()
                .with_partition_index(partition.partition_index);
            partitions.push(match outcome {
                Ok(_) => result,
                Err(error) => result
                    .with_error_code(error.code.code())
                    .with_error_message(Some(str_bytes(error.message))),
            });
        }
        responses.push(
            ReassignableTopicResponse::default()
                .with_name(topic.name)
                .with_partitions(partitions),
        );
    }
    AlterPartitionReassignmentsResponse::default()
        .with_allow_replication_factor_change(allow)
        .with_responses(responses)
}
