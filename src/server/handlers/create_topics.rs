//! CreateTopics, including `validate_only`. Replication factor must be 1 (or -1
//! for the default): this is a single-node broker. A manual replica assignment
//! is accepted when it names only this broker.

use std::collections::{BTreeMap, BTreeSet};

use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};

use crate::metadata::controller::{check_replica_assignment, ApiError};

use crate::metadata::topic_config::CONFIG_DEFS;
use crate::node::topics;
use crate::protocol::errors::ErrorCode;
use crate::runtime::CONTROLLER_SHARD;
use crate::server::connection::RequestContext;
use crate::server::handlers::describe_configs::config_source;
use crate::server::handlers::str_bytes;

/// A manual replica assignment, checked as Kafka's controller checks it
/// (`ReplicationControlManager.createTopic`): partition count and replication
/// factor left to -1, partitions 0..n each once, every replica list valid
/// and of one size. Returns the partition count. On one node the only valid
/// list is `[node_id]`, which is where the partitions go anyway.
fn check_assignments(topic: &CreatableTopic, node_id: i32) -> Result<i32, ApiError> {
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
    let mut seen = BTreeSet::new();
    let mut replication_factor = None;
    for assignment in &topic.assignments {
        if !seen.insert(assignment.partition_index) {
            return Err(ApiError::new(
                ErrorCode::InvalidReplicaAssignment,
                format!(
                    "Found multiple manual partition assignments for partition {}",
                    assignment.partition_index
                ),
            ));
        }
        let replicas: Vec<i32> = assignment.broker_ids.iter().map(|b| b.0).collect();
        check_replica_assignment(&replicas, &[node_id], replication_factor)?;
        replication_factor = Some(replicas.len());
    }
    let count = seen.len() as i32;
    if !seen.iter().copied().eq(0..count) {
        return Err(ApiError::new(
            ErrorCode::InvalidReplicaAssignment,
            "partitions should be a consecutive 0-based integer sequence",
        ));
    }
    Ok(count)
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
        let partitions = if !topic.assignments.is_empty() {
            match check_assignments(&topic, broker.config.node_id) {
                Ok(partitions) => partitions,
                Err(error) => {
                    results.push(fail(error.code, error.message));
                    continue;
                }
            }
        } else if topic.replication_factor != -1 && topic.replication_factor != 1 {
            results.push(fail(
                ErrorCode::InvalidReplicationFactor,
                "replication factor must be 1 on a single broker".into(),
            ));
            continue;
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
        let created = ctx
            .conn
            .shard
            .run_on(CONTROLLER_SHARD, move |shard| async move {
                topics::create_topic(&shard, &name, partitions, configs, validate_only).await
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
                    result.replication_factor = 1;
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
