//! CreateTopics, including `validate_only`. The partitions' replicas are
//! spread over the live brokers (replication factor -1: the broker's
//! `--default-replication-factor`), or placed as a manual assignment naming
//! live brokers says.

use std::collections::BTreeMap;

use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};

use crate::metadata::controller::{check_replica_assignment, ApiError};

use crate::metadata::topic_config::CONFIG_DEFS;
use crate::node::forward;
use crate::protocol::errors::ErrorCode;
use crate::runtime::CONTROLLER_SHARD;
use crate::server::connection::RequestContext;
use crate::server::handlers::describe_configs::config_source;
use crate::server::handlers::str_bytes;

/// A manual replica assignment, checked as Kafka's controller checks it
/// (`ReplicationControlManager.createTopic`): partition count and replication
/// factor left to -1, partitions 0..n each once, every replica list valid
/// and of one size, naming live brokers. Returns the replica lists in
/// partition order.
fn check_assignments(topic: &CreatableTopic, brokers: &[i32]) -> Result<Vec<Vec<i32>>, ApiError> {
    if topic.replication_factor != -1 {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "A manual partition assignment was specified, but replication factor was not set to -1.",
        ));
    }
    if topic.num_partitions != -1 {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "A manual partition assignment was specified, but numPartitions was not set to -1.",
        ));
    }
    let mut seen = BTreeMap::new();
    let mut replication_factor = None;
    for assignment in &topic.assignments {
        if seen.contains_key(&assignment.partition_index) {
            return Err(ApiError::new(
                ErrorCode::InvalidReplicaAssignment,
                format!(
                    "Found multiple manual partition assignments for partition {}",
                    assignment.partition_index
                ),
            ));
        }
        let replicas: Vec<i32> = assignment.broker_ids.iter().map(|b| b.0).collect();
        check_replica_assignment(&replicas, brokers, replication_factor)?;
        replication_factor = Some(replicas.len());
        seen.insert(assignment.partition_index, replicas);
    }
    let count = seen.len() as i32;
    if !seen.keys().copied().eq(0..count) {
        return Err(ApiError::new(
            ErrorCode::InvalidReplicaAssignment,
            "partitions should be a consecutive 0-based integer sequence",
        ));
    }
    Ok(seen.into_values().collect())
}

pub async fn handle(ctx: &RequestContext, request: CreateTopicsRequest) -> CreateTopicsResponse {
    let broker = ctx.conn.shard.node.clone();
    let mut results = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let result = CreatableTopicResult::default().with_name(topic.name.clone());
        let fail = |code: ErrorCode, message: String| {
            result
                .clone()
                .with_error_code(code.code())
                .with_error_message(Some(str_bytes(message)))
        };
        let mut manual = None;
        let partitions = if !topic.assignments.is_empty() {
            let brokers: Vec<i32> = broker.brokers().into_iter().map(|b| b.0).collect();
            match check_assignments(&topic, &brokers) {
                Ok(lists) => {
                    let count = lists.len() as i32;
                    manual = Some(lists);
                    count
                }
                Err(error) => {
                    results.push(fail(error.code, error.message));
                    continue;
                }
            }
        } else if topic.num_partitions == -1 {
            broker.config.num_partitions
        } else {
            topic.num_partitions
        };
        let mut configs = BTreeMap::new();
        for config in &topic.configs {
            if let Some(value) = &config.value {
                configs.insert(config.name.to_string(), value.to_string());
            }
        }
        let validate_only = request.validate_only;
        let replication_factor = topic.replication_factor;
        let created = ctx
            .conn
            .shard
            .run_on(CONTROLLER_SHARD, move |shard| async move {
                forward::create_topic(
                    &shard,
                    &name,
                    partitions,
                    configs,
                    manual,
                    replication_factor,
                    validate_only,
                )
                .await
            })
            .await;
        match created {
            Ok(meta) => {
                let configs = CONFIG_DEFS
                    .iter()
                    .map(|def| {
                        let source = config_source(&broker, Some(&meta.overrides), def.name);
                        CreatableTopicConfigs::default()
                            .with_name(str_bytes(def.name))
                            .with_value(Some(str_bytes(meta.config.show(def))))
                            .with_config_source(source)
                            .with_read_only(false)
                    })
                    .collect();
                let mut result = result;
                if ctx.api_version >= 5 {
                    result.num_partitions = meta.partition_count();
                    result.replication_factor = meta
                        .placements
                        .first()
                        .map_or(1, |p| p.replicas.len() as i16);
                    result.configs = Some(configs);
                }
                if ctx.api_version >= 7 {
                    result.topic_id = meta.id;
                }
                results.push(result);
            }
            Err(error) => results.push(fail(error.code, error.message)),
        }
    }
    CreateTopicsResponse::default().with_topics(results)
}
