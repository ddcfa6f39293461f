//! Metadata changes asked of a broker that does not lead the quorum,
//! forwarded to the active controller (KIP-590), so that a client may send
//! CreateTopics, DeleteTopics, CreatePartitions, AlterConfigs,
//! IncrementalAlterConfigs and AlterPartitionReassignments, or have a topic
//! auto-created by Metadata, at any broker.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::metadata::controller::ApiError;
use crate::metadata::TopicMeta;
use crate::node::controller_rpc::{
    answer_of, unexpected, AdminChange, ControllerAnswer, ControllerRequest,
};
use crate::node::shard::{ControllerCall, Shard};
use crate::node::topics;
use crate::protocol::errors::ErrorCode;
use crate::runtime::CONTROLLER_SHARD;

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
    let id = match ask_controller(&call, &request).await? {
        ControllerAnswer::TopicCreated { id } => id,
        other => return Err(unexpected(other)),
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

/// Sends `request` to the active controller over `call`; its answer (a
/// refusal as its Kafka error, no answer as REQUEST_TIMED_OUT).
async fn ask_controller(
    call: &ControllerCall,
    request: &ControllerRequest,
) -> Result<ControllerAnswer, ApiError> {
    let bytes = serde_json::to_vec(request).expect("requests encode");
    let answer = call(bytes).await.map_err(|e| {
        ApiError::new(
            ErrorCode::RequestTimedOut,
            format!("the active controller did not answer: {e}"),
        )
    })?;
    answer_of(&answer)
}

/// [`admin_change`] asked from any shard of this broker.
pub(crate) async fn ask(
    shard: &Rc<Shard>,
    change: AdminChange,
) -> Result<ControllerAnswer, ApiError> {
    shard
        .run_on(CONTROLLER_SHARD, move |shard| async move {
            admin_change(&shard, change).await
        })
        .await
}

/// Makes `change` on the controller shard: here when this node leads the
/// quorum, else by the active controller; returns its answer once it is
/// committed and this broker's image holds every entry the controller had
/// applied when it answered (so that what the client reads next from this
/// broker shows the change).
pub(crate) async fn admin_change(
    shard: &Rc<Shard>,
    change: AdminChange,
) -> Result<ControllerAnswer, ApiError> {
    let controller = shard.controller();
    let call = shard.call_controller.borrow().clone();
    let Some(call) = call.filter(|_| controller.check_leader().is_err()) else {
        return make_admin_change(shard, change).await;
    };
    let request = ControllerRequest::Admin(change);
    let (through, answer) = match ask_controller(&call, &request).await? {
        ControllerAnswer::Made { through, answer } => (through, *answer),
        other => return Err(unexpected(other)),
    };
    let deadline = Instant::now() + APPLIED_PATIENCE;
    while controller.applied_end() < through {
        if Instant::now() >= deadline {
            return Err(ApiError::new(
                ErrorCode::RequestTimedOut,
                "the change was made but has not reached this broker yet",
            ));
        }
        compio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(answer)
}

/// Makes `change` as the active controller (on its controller shard);
/// answers Live, or the new overrides of an IncrementalAlterConfigs.
pub(crate) async fn make_admin_change(
    shard: &Rc<Shard>,
    change: AdminChange,
) -> Result<ControllerAnswer, ApiError> {
    // Decided from this node's image only while it is the controller and
    // holds everything committed before its term.
    shard.controller().check_leader()?;
    match change {
        AdminChange::DeleteTopic { id, name } => {
            let image = shard.node.image();
            // By name as the client named it, or by id: the topic here,
            // which the asking broker may not have known yet.
            let topic = match &name {
                Some(name) => image.user_topic(name).cloned().ok_or_else(|| {
                    ApiError::new(
                        ErrorCode::UnknownTopicOrPartition,
                        format!("topic '{name}' does not exist"),
                    )
                }),
                None => image.user_topic_by_id(&id).cloned().ok_or_else(|| {
                    ApiError::new(ErrorCode::UnknownTopicId, format!("no topic has id {id}"))
                }),
            }?;
            drop(image);
            let (id, name) = (topic.id, topic.name.to_string());
            topics::delete_topic(shard, topic).await?;
            return Ok(ControllerAnswer::TopicDeleted { id, name });
        }
        AdminChange::CreatePartitions {
            name,
            count,
            manual,
            validate_only,
        } => topics::create_partitions(shard, &name, count, manual, validate_only).await?,
        AdminChange::SetTopicConfigs {
            name,
            configs,
            validate_only,
        } => topics::set_topic_configs(shard, &name, configs, validate_only).await?,
        AdminChange::AlterTopicConfigs {
            name,
            ops,
            validate_only,
        } => {
            let overrides = topics::alter_topic_configs(shard, &name, &ops, validate_only).await?;
            return Ok(ControllerAnswer::Configs { overrides });
        }
        AdminChange::Reassign {
            topic,
            partition,
            target,
            allow_replication_factor_change,
        } => {
            let controller = shard.controller();
            controller
                .reassign(&topic, partition, target, allow_replication_factor_change)
                .await?
        }
    }
    Ok(ControllerAnswer::Live)
}
