//! DeleteTopics, by name (v1-5) or by id (v6).

use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse};
use uuid::Uuid;

use crate::metadata::is_internal_topic;
use crate::node::controller_rpc::{AdminChange, ControllerAnswer};
use crate::node::forward;
use crate::protocol::errors::ErrorCode;
use crate::server::connection::RequestContext;
use crate::server::handlers::{str_bytes, topic_name};

pub async fn handle(ctx: &RequestContext, request: DeleteTopicsRequest) -> DeleteTopicsResponse {
    let targets: Vec<(Option<String>, Uuid)> = if ctx.api_version >= 6 {
        request
            .topics
            .iter()
            .map(|t| (t.name.as_ref().map(|n| n.0.to_string()), t.topic_id))
            .collect()
    } else {
        request
            .topic_names
            .iter()
            .map(|n| (Some(n.0.to_string()), Uuid::nil()))
            .collect()
    };
    let mut responses = Vec::with_capacity(targets.len());
    for (name, id) in targets {
        let image = ctx.conn.shard.node.image();
        // The controller resolves the name or id (this broker may not know
        // a topic just created).
        let change = match (&name, id.is_nil()) {
            (_, false) => Ok(AdminChange::DeleteTopic { id, name: None }),
            // Kafka's internal topics cannot be deleted. A topic of such a
            // name that an older Sluice let a client create is an ordinary
            // topic, and deleting it is how it is cleaned up.
            (Some(name), true) if is_internal_topic(name) && image.user_topic(name).is_none() => {
                Err((
                    ErrorCode::InvalidRequest,
                    Some(format!("internal topic {name} cannot be deleted")),
                ))
            }
            (Some(name), true) => Ok(AdminChange::DeleteTopic {
                id: Uuid::nil(),
                name: Some(name.clone()),
            }),
            (None, true) => Err((ErrorCode::InvalidRequest, None)),
        };
        drop(image);
        let result = DeletableTopicResult::default()
            .with_name(name.as_deref().map(topic_name))
            .with_topic_id(id);
        let outcome = match change {
            Err(error) => Err(error),
            Ok(change) => match forward::ask(&ctx.conn.shard, change).await {
                Ok(ControllerAnswer::TopicDeleted { id, name }) => Ok((id, name)),
                Ok(other) => Err((
                    ErrorCode::UnknownServerError,
                    Some(format!("the controller answered {other:?}")),
                )),
                Err(e) => Err((e.code, Some(e.message))),
            },
        };
        responses.push(match outcome {
            Ok((topic_id, found_name)) if ctx.api_version >= 6 => result
                .with_topic_id(topic_id)
                .with_name(Some(topic_name(&found_name))),
            Ok(_) => result,
            Err((code, message)) => {
                let result = result.with_error_code(code.code());
                if ctx.api_version >= 5 {
                    result.with_error_message(message.map(str_bytes))
                } else {
                    result
                }
            }
        });
    }
    DeleteTopicsResponse::default().with_responses(responses)
}
