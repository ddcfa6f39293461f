//! AlterConfigs (the legacy, replace-everything form): a topic's overrides
//! become exactly the given set. Broker configs are static (set at start-up).

use std::collections::BTreeMap;

use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{AlterConfigsRequest, AlterConfigsResponse};

use crate::node::controller_rpc::AdminChange;
use crate::node::forward;
use crate::protocol::errors::ErrorCode;
use crate::server::connection::RequestContext;
use crate::server::handlers::describe_configs::{not_alterable, RESOURCE_TOPIC};
use crate::server::handlers::str_bytes;

pub async fn handle(ctx: &RequestContext, request: AlterConfigsRequest) -> AlterConfigsResponse {
    let mut responses = Vec::with_capacity(request.resources.len());
    for resource in request.resources {
        let response = AlterConfigsResourceResponse::default()
            .with_resource_type(resource.resource_type)
            .with_resource_name(resource.resource_name.clone());
        if resource.resource_type != RESOURCE_TOPIC {
            responses.push(
                response
                    .with_error_code(ErrorCode::InvalidRequest.code())
                    .with_error_message(Some(str_bytes(not_alterable(resource.resource_type)))),
            );
            continue;
        }
        let configs: BTreeMap<String, String> = resource
            .configs
            .iter()
            .filter_map(|c| {
                c.value
                    .as_ref()
                    .map(|v| (c.name.to_string(), v.to_string()))
            })
            .collect();
        let outcome = set_topic_configs(
            ctx,
            resource.resource_name.to_string(),
            configs,
            request.validate_only,
        )
        .await;
        responses.push(match outcome {
            Ok(()) => response,
            Err((code, message)) => response
                .with_error_code(code.code())
                .with_error_message(Some(str_bytes(message))),
        });
    }
    AlterConfigsResponse::default().with_responses(responses)
}

/// Replaces `name`'s overrides through the active controller.
pub(crate) async fn set_topic_configs(
    ctx: &RequestContext,
    name: String,
    configs: BTreeMap<String, String>,
    validate_only: bool,
) -> Result<(), (ErrorCode, String)> {
    let change = AdminChange::SetTopicConfigs {
        name,
        configs,
        validate_only,
    };
    forward::ask(&ctx.conn.shard, change)
        .await
        .map(|_| ())
        .map_err(|e| (e.code, e.message))
}
