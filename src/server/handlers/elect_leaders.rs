//! ElectLeaders (KIP-183, KIP-460): a preferred election gives each listed
//! partition (or every partition) back to its first replica when that one
//! is live and in sync; an unclean one gives a leaderless partition a live
//! replica. Made by the active controller (forwarded there from any other
//! broker, KIP-590); each partition answers on its own: ELECTION_NOT_NEEDED,
//! PREFERRED_LEADER_NOT_AVAILABLE, ELIGIBLE_LEADERS_NOT_AVAILABLE,
//! UNKNOWN_TOPIC_OR_PARTITION.

use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{ElectLeadersRequest, ElectLeadersResponse, TopicName};

use crate::node::brokers::elected;
use crate::node::controller_rpc::{ControllerAnswer, ControllerRequest};
use crate::protocol::errors::ErrorCode;
use crate::runtime::CONTROLLER_SHARD;
use crate::server::connection::RequestContext;
use crate::server::handlers::str_bytes;

pub async fn handle(ctx: &RequestContext, request: ElectLeadersRequest) -> ElectLeadersResponse {
    let unclean = match request.election_type {
        0 => false,
        1 => true,
        _ => {
            return ElectLeadersResponse::default()
                .with_error_code(ErrorCode::InvalidRequest.code());
        }
    };
    let partitions: Option<Vec<(String, i32)>> = request.topic_partitions.map(|topics| {
        topics
            .iter()
            .flat_map(|t| {
                let name = t.topic.0.to_string();
                t.partitions.iter().map(move |&p| (name.clone(), p))
            })
            .collect()
    });
    let answer = ctx
        .conn
        .shard
        .run_on(CONTROLLER_SHARD, move |shard| async move {
            let controller = shard.controller();
            if controller.check_leader().is_ok() {
                return match controller.elect_leaders(unclean, partitions).await {
                    Ok(results) => elected(results),
                    Err(error) => crate::node::controller_rpc::refused(error),
                };
            }
            let request = ControllerRequest::ElectLeaders {
                unclean,
                partitions,
            };
            let bytes = serde_json::to_vec(&request).expect("requests encode");
            match crate::node::replication::call_controller(&shard, bytes).await {
                Ok(answer) => answer,
                Err(why) => ControllerAnswer::Refused {
                    code: ErrorCode::RequestTimedOut.code(),
                    message: format!("the active controller did not answer: {why}"),
                },
            }
        })
        .await;
    let results = match answer {
        ControllerAnswer::Elected { results } => results,
        ControllerAnswer::Refused { code, .. } => {
            return ElectLeadersResponse::default().with_error_code(code);
        }
        _ => {
            return ElectLeadersResponse::default()
                .with_error_code(ErrorCode::UnknownServerError.code());
        }
    };
    let mut topics: Vec<ReplicaElectionResult> = Vec::new();
    for (topic, partition, code, message) in results {
        let result = PartitionResult::default()
            .with_partition_id(partition)
            .with_error_code(code)
            .with_error_message(message.map(str_bytes));
        match topics.iter_mut().find(|t| t.topic.0.as_str() == topic) {
            Some(t) => t.partition_result.push(result),
            None => topics.push(
                ReplicaElectionResult::default()
                    .with_topic(TopicName(str_bytes(topic)))
                    .with_partition_result(vec![result]),
            ),
        }
    }
    ElectLeadersResponse::default().with_replica_election_results(topics)
}
