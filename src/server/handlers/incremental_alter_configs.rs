//! IncrementalAlterConfigs: SET, DELETE, APPEND and SUBTRACT on a topic's
//! overrides (APPEND/SUBTRACT apply to list configs: `cleanup.policy`),
//! applied by the active controller to the overrides it has (forwarded
//! there from any broker), so that no concurrent change is lost.

use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse};

use crate::metadata::topic_config::ConfigOp;
use crate::node::controller_rpc::AdminChange;
use crate::node::forward;
use crate::protocol::errors::ErrorCode;
use crate::server::connection::RequestContext;
use crate::server::handlers::describe_configs::{not_alterable, RESOURCE_TOPIC};
use crate::server::handlers::str_bytes;

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
        let ops: Vec<ConfigOp> = resource
            .configs
            .iter()
            .map(|c| {
                let value = c.value.as_ref().map(|v| v.to_string());
                (c.name.to_string(), c.config_operation, value)
            })
            .collect();
        let change = AdminChange::AlterTopicConfigs {
            name: resource.resource_name.to_string(),
            ops,
            validate_only: request.validate_only,
        };
        let outcome = forward::ask(&ctx.conn.shard, change).await;
        responses.push(match outcome {
            Ok(_) => response,
            Err(error) => fail(error.code, &error.message),
        });
    }
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}
