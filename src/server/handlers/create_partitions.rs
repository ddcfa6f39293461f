//! CreatePartitions: grow a topic's partition count (never shrink, as Kafka).

use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};

use crate::metadata::controller::{check_replica_assignment, ApiError};

use crate::node::controller_rpc::AdminChange;
use crate::node::forward;
use crate::server::connection::RequestContext;
use crate::server::handlers::str_bytes;

/// Manual assignments of the new partitions, checked as Kafka's controller
/// does (`ReplicationControlManager.createPartitions`): each a valid replica
/// list of live brokers. That there is one per new partition, of the
/// topic's replication factor, the controller checks, since it knows the
/// topic.
fn check_assignments(
    topic: &CreatePartitionsTopic,
    brokers: &[i32],
) -> Result<Option<Vec<Vec<i32>>>, ApiError> {
    // An empty list is taken as no list (Kafka refuses it as "0
    // assignment(s)"; kafka-protocol's default request carries one).
    let Some(assignments) = topic.assignments.as_ref().filter(|a| !a.is_empty()) else {
        return Ok(None);
    };
    let mut lists = Vec::with_capacity(assignments.len());
    for assignment in assignments {
        let replicas: Vec<i32> = assignment.broker_ids.iter().map(|b| b.0).collect();
        check_replica_assignment(&replicas, brokers, None)?;
        lists.push(replicas);
    }
    Ok(Some(lists))
}

pub async fn handle(
    ctx: &RequestContext,
    request: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let mut results = Vec::with_capacity(request.topics.len());
    let brokers: Vec<i32> = ctx
        .conn
        .shard
        .node
        .brokers()
        .into_iter()
        .map(|b| b.0)
        .collect();
    for topic in request.topics {
        let result = CreatePartitionsTopicResult::default().with_name(topic.name.clone());
        let assignments = match check_assignments(&topic, &brokers) {
            Ok(assignments) => assignments,
            Err(e) => {
                results.push(
                    result
                        .with_error_code(e.code.code())
                        .with_error_message(Some(str_bytes(e.message))),
                );
                continue;
            }
        };
        let change = AdminChange::CreatePartitions {
            name: topic.name.0.to_string(),
            count: topic.count,
            manual: assignments,
            validate_only: request.validate_only,
        };
        let outcome = forward::ask(&ctx.conn.shard, change).await;
        results.push(match outcome {
            Ok(_) => result,
            Err(e) => result
                .with_error_code(e.code.code())
                .with_error_message(Some(str_bytes(e.message))),
        });
    }
    CreatePartitionsResponse::default().with_results(results)
}
