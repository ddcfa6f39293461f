//! IncrementalAlterConfigs: SET, DELETE, APPEND and SUBTRACT on a topic's
//! overrides (APPEND/SUBTRACT apply to list configs: `cleanup.policy`).

use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse};

use crate::protocol::errors::ErrorCode;
use crate::server::connection::RequestContext;
use crate::server::handlers::alter_configs::set_topic_configs;
use crate::server::handlers::describe_configs::{not_alterable, RESOURCE_TOPIC};
use crate::server::handlers::str_bytes;

const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

pub async fn handle(
    ctx: &RequestContext,
    request: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let mut responses = Vec::with_capacity(request.resources.len());
    for resource in request.resources {
        let response = AlterConfigsResourceResponse::default()
            .with_resource_type(resource.resource_type)
            .with_resource_name(resource.resource_name.clone());
        let fail = |code: ErrorCode, message: &str| {
            response
                .clone()
                .with_error_code(code.code())
                .with_error_message(Some(str_bytes(message)))
        };
        if resource.resource_type != RESOURCE_TOPIC {
            responses.push(fail(
                ErrorCode::InvalidRequest,
                &not_alterable(resource.resource_type),
            ));
            continue;
        }
        let name = resource.resource_name.to_string();
        let Some(topic) = ctx.conn.shard.node.image().user_topic(&name).cloned() else {
            responses.push(fail(ErrorCode::UnknownTopicOrPartition, "unknown topic"));
            continue;
        };
        let mut configs = topic.overrides.clone();
        let mut bad = None;
        for change in &resource.configs {
            let key = change.name.to_string();
            let value = change
                .value
                .as_ref()
                .map(|v| v.to_string())
                .unwrap_or_default();
            match change.config_operation {
                OP_SET => {
                    configs.insert(key, value);
                }
                OP_DELETE => {
                    configs.remove(&key);
                }
                OP_APPEND | OP_SUBTRACT if key == "cleanup.policy" => {
                    let current = configs.get(&key).cloned().unwrap_or_else(|| {
                        topic.config.show(
                            crate::metadata::topic_config::config_def("cleanup.policy")
                                .expect("known config"),
                        )
                    });
                    let mut items: Vec<String> = current
                        .split(',')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect();
                    for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                        if change.config_operation == OP_APPEND {
                            if !items.iter().any(|i| i == item) {
                                items.push(item.to_string());
                            }
                        } else {
                            items.retain(|i| i != item);
                        }
                    }
                    configs.insert(key, items.join(","));
                }
                OP_APPEND | OP_SUBTRACT => bad = Some(format!("{key} is not a list config")),
                _ => {
                    bad = Some(format!(
                        "unknown config operation {}",
                        change.config_operation
                    ))
                }
            }
        }
        if let Some(message) = bad {
            responses.push(fail(ErrorCode::InvalidConfig, &message));
            continue;
        }
        responses.push(
            match set_topic_configs(ctx, name, configs, request.validate_only).await {
                Ok(()) => response,
                Err((code, message)) => fail(code, &message),
            },
        );
    }
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}
