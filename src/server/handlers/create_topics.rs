//! CreateTopics, including `validate_only`. Replication factor must be 1 (or -1
//! for the default): this is a single-node broker.

use std::collections::BTreeMap;

use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};

use crate::metadata::topic_config::CONFIG_DEFS;
use crate::protocol::errors::ErrorCode;
use crate::runtime::CONTROLLER_SHARD;
use crate::server::dispatch::RequestContext;
use crate::server::handlers::describe_configs::config_source;
use crate::server::handlers::str_bytes;

pub async fn handle(ctx: &RequestContext, request: CreateTopicsRequest) -> CreateTopicsResponse {
    let broker = ctx.conn.shard.broker.clone();
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
        if topic.replication_factor != -1 && topic.replication_factor != 1 {
            results.push(fail(
                ErrorCode::InvalidReplicationFactor,
                "replication factor must be 1 on a single broker".into(),
            ));
            continue;
        }
        if !topic.assignments.is_empty() {
            results.push(fail(
                ErrorCode::InvalidReplicaAssignment,
                "manual replica assignment is not supported".into(),
            ));
            continue;
        }
        let partitions = if topic.num_partitions == -1 {
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
                shard
                    .controller()
                    .create_topic(name, partitions, configs, validate_only)
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
