//! Metadata changes asked of a broker that does not lead the quorum,
//! forwarded to the active controller (KIP-590), so that a client may send
//! CreateTopics, or have a topic auto-created by Metadata, at any broker.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::metadata::controller::ApiError;
use crate::metadata::TopicMeta;
use crate::node::controller_rpc::{ControllerAnswer, ControllerRequest};
use crate::node::shard::Shard;
use crate::node::topics;
use crate::protocol::errors::ErrorCode;

/// How long a forwarded creation waits for the new topic to reach this
/// broker's image once the controller has made it.
const APPLIED_PATIENCE: Duration = Duration::from_secs(10);

/// CreateTopics (and auto-creation), on the controller shard: made here when
/// this node leads the quorum, else by the active controller. Returns the
/// topic as this node's image has it (when validating only: as planned here).
pub async fn create_topic(
    shard: &Rc<Shard>,
    name: &str,
    partitions: i32,
    configs: BTreeMap<String, String>,
    manual: Option<Vec<Vec<i32>>>,
    replication_factor: i16,
    validate_only: bool,
) -> Result<Arc<TopicMeta>, ApiError> {
    let controller = shard.controller();
    let call = shard.call_controller.borrow().clone();
    let Some(call) = call.filter(|_| controller.check_leader().is_err()) else {
        return topics::create_topic(
            shard,
            name,
            partitions,
            configs,
            manual,
            replication_factor,
            validate_only,
        )
        .await;
    };
    let request = ControllerRequest::CreateTopic {
        name: name.to_string(),
        partitions,
        configs: configs.clone(),
        manual: manual.clone(),
        replication_factor,
        validate_only,
    };
    let bytes = serde_json::to_vec(&request).expect("requests encode");
    let answer = call(bytes).await.map_err(|e| {
        ApiError::new(
            ErrorCode::RequestTimedOut,
            format!("the active controller did not answer: {e}"),
        )
    })?;
    let id = match serde_json::from_slice::<ControllerAnswer>(&answer) {
        Ok(ControllerAnswer::TopicCreated { id }) => id,
        Ok(ControllerAnswer::Refused { code, message }) => {
            let code = ErrorCode::try_from_code(code).unwrap_or(ErrorCode::UnknownServerError);
            return Err(ApiError::new(code, message));
        }
        Ok(other) => {
            return Err(ApiError::new(
                ErrorCode::UnknownServerError,
                format!("the controller answered {other:?}"),
            ))
        }
        Err(error) => {
            return Err(ApiError::new(
                ErrorCode::UnknownServerError,
                format!("undecodable answer: {error}"),
            ))
        }
    };
    if validate_only {
        let factor = controller.replication_factor(replication_factor)?;
        return controller.plan_topic(name, partitions, configs, manual, factor);
    }
    let deadline = Instant::now() + APPLIED_PATIENCE;
    loop {
        if let Some(topic) = shard.node.image().topic_by_id(&id) {
            return Ok(topic.clone());
        }
        if Instant::now() >= deadline {
            return Err(ApiError::new(
                ErrorCode::RequestTimedOut,
                "the topic was created but has not reached this broker yet",
            ));
        }
        compio::time::sleep(Duration::from_millis(5)).await;
    }
}
