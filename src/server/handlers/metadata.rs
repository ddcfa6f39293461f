//! Metadata: the live brokers, topics and partitions. Unknown topics are
//! created when the client allows it and `auto_create_topics` is on.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse};

use crate::metadata::{is_internal_topic, is_sluice_internal, validate_topic_name, TopicMeta};
use crate::node::forward;
use crate::node::Node;
use crate::protocol::errors::ErrorCode;
use crate::runtime::CONTROLLER_SHARD;
use crate::server::connection::RequestContext;
use crate::server::handlers::{str_bytes, topic_name};

/// Kafka ACL operation bits (AclOperation codes) allowed on a topic: READ 3,
/// WRITE 4, CREATE 5, DELETE 6, ALTER 7, DESCRIBE 8, DESCRIBE_CONFIGS 10, ALTER_CONFIGS 11.
const TOPIC_OPERATIONS: i32 =
    (1 << 3) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 7) | (1 << 8) | (1 << 10) | (1 << 11);
/// On the cluster: CREATE 5, ALTER 7, DESCRIBE 8, CLUSTER_ACTION 9,
/// DESCRIBE_CONFIGS 10, ALTER_CONFIGS 11, IDEMPOTENT_WRITE 12.
const CLUSTER_OPERATIONS: i32 =
    (1 << 5) | (1 << 7) | (1 << 8) | (1 << 9) | (1 << 10) | (1 << 11) | (1 << 12);

pub async fn handle(ctx: &RequestContext, request: MetadataRequest) -> MetadataResponse {
    let broker = ctx.conn.shard.node.clone();
    // v0: an empty list means all topics; v1+: null means all, empty means none.
    let all_topics = match &request.topics {
        None => true,
        Some(topics) => topics.is_empty() && ctx.api_version == 0,
    };
    let include_topic_operations = request.include_topic_authorized_operations;
    let include_cluster_operations = request.include_cluster_authorized_operations;
    let may_create = broker.config.auto_create_topics
        && (ctx.api_version < 4 || request.allow_auto_topic_creation);

    let mut topics = Vec::new();
    if all_topics {
        for topic in broker.image().topics.values() {
            if is_sluice_internal(&topic.name) {
                continue;
            }
            topics.push(describe_topic(topic, &broker, ctx.api_version));
        }
    } else {
        for wanted in request.topics.unwrap_or_default() {
            let response = match (&wanted.name, wanted.topic_id.is_nil()) {
                (Some(name), _) => find_or_create(ctx, name.0.as_str(), may_create).await,
                (None, false) => match broker.image().user_topic_by_id(&wanted.topic_id) {
                    Some(topic) => describe_topic(topic, &broker, ctx.api_version),
                    None => MetadataResponseTopic::default()
                        .with_topic_id(wanted.topic_id)
                        .with_error_code(ErrorCode::UnknownTopicId.code()),
                },
                (None, true) => MetadataResponseTopic::default()
                    .with_error_code(ErrorCode::InvalidRequest.code()),
            };
            topics.push(response);
        }
    }
    let brokers = broker
        .brokers()
        .into_iter()
        .map(|(id, host, port)| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(id))
                .with_host(str_bytes(host))
                .with_port(port)
        })
        .collect();
    let mut response = MetadataResponse::default()
        .with_brokers(brokers)
        .with_topics(topics);
    // Fields newer than the request's version must stay at their defaults.
    if ctx.api_version >= 1 {
        response.controller_id = BrokerId(broker.controller_id());
    }
    if ctx.api_version >= 2 {
        response.cluster_id = Some(str_bytes(broker.cluster_id()));
    }
    // No authorizer: every operation is allowed, and a client that asks is told so.
    if (8..=10).contains(&ctx.api_version) && include_cluster_operations {
        response.cluster_authorized_operations = CLUSTER_OPERATIONS;
    }
    if ctx.api_version >= 8 && include_topic_operations {
        for topic in &mut response.topics {
            topic.topic_authorized_operations = TOPIC_OPERATIONS;
        }
    }
    response
}

async fn find_or_create(
    ctx: &RequestContext,
    name: &str,
    may_create: bool,
) -> MetadataResponseTopic {
    let broker = &ctx.conn.shard.node;
    if let Some(topic) = broker.image().user_topic(name) {
        return describe_topic(topic, broker, ctx.api_version);
    }
    let error = |code: ErrorCode| {
        MetadataResponseTopic::default()
            .with_name(Some(topic_name(name)))
            .with_error_code(code.code())
    };
    if validate_topic_name(name).is_err() {
        return error(ErrorCode::InvalidTopicException);
    }
    if is_internal_topic(name) {
        // Never auto-created: Sluice keeps that state in logs of its own.
        return error(ErrorCode::UnknownTopicOrPartition).with_is_internal(true);
    }
    if !may_create {
        return error(ErrorCode::UnknownTopicOrPartition);
    }
    match auto_create(ctx, name).await {
        Ok(topic) => describe_topic(&topic, broker, ctx.api_version),
        Err(code) => error(code),
    }
}

/// Creates `name` with the broker's default partition count; a concurrent
/// creation of the same topic counts as success.
pub(crate) async fn auto_create(
    ctx: &RequestContext,
    name: &str,
) -> Result<Arc<TopicMeta>, ErrorCode> {
    let partitions = ctx.conn.shard.node.config.num_partitions;
    let owned = name.to_string();
    let result = ctx
        .conn
        .shard
        .run_on(CONTROLLER_SHARD, move |shard| async move {
            forward::create_topic(&shard, &owned, partitions, BTreeMap::new(), None, -1, false)
                .await
                .map_err(|e| e.code.code())
        })
        .await;
    match result {
        Ok(topic) => Ok(topic),
        Err(code) if code == ErrorCode::TopicAlreadyExists.code() => ctx
            .conn
            .shard
            .node
            .image()
            .topic(name)
            .cloned()
            .ok_or(ErrorCode::UnknownTopicOrPartition),
        Err(code) => Err(ErrorCode::try_from_code(code).unwrap_or(ErrorCode::UnknownServerError)),
    }
}

pub(crate) fn describe_topic(
    topic: &TopicMeta,
    node: &Node,
    version: i16,
) -> MetadataResponseTopic {
    let me = node.config.node_id;
    let image = node.image();
    let partitions = topic
        .partitions
        .iter()
        .enumerate()
        .map(|(index, shared)| {
            let index = index as i32;
            let placement = topic.placement(index);
            let replicas = placement.map_or_else(Vec::new, |p| p.replicas.clone());
            // This broker's replica is offline when its log failed here;
            // another's when its broker is fenced.
            let locally_offline = replicas.contains(&me) && shared.is_offline();
            let offline: Vec<i32> = replicas
                .iter()
                .copied()
                .filter(|&r| {
                    if r == me {
                        locally_offline
                    } else {
                        !node.is_live(&image, r)
                    }
                })
                .collect();
            let isr: Vec<i32> = placement
                .map_or_else(Vec::new, |p| p.isr.clone())
                .into_iter()
                .filter(|r| !offline.contains(r))
                .collect();
            // The placement's leader while its broker is live, else none.
            let leader = placement
                .map(|p| p.leader)
                .filter(|&l| node.is_live(&image, l))
                .unwrap_or(-1);
            let error = if leader == me && locally_offline {
                ErrorCode::KafkaStorageError.code()
            } else if leader < 0 {
                ErrorCode::LeaderNotAvailable.code()
            } else {
                0
            };
            let ids = |list: &[i32]| list.iter().map(|&id| BrokerId(id)).collect::<Vec<_>>();
            let mut partition = MetadataResponsePartition::default()
                .with_partition_index(index)
                .with_error_code(error)
                .with_leader_id(BrokerId(leader))
                .with_replica_nodes(ids(&replicas))
                .with_isr_nodes(ids(&isr));
            if version >= 5 {
                partition.offline_replicas = ids(&offline);
            }
            if version >= 7 {
                partition.leader_epoch =
                    placement.map_or(-1, |p| p.leader_epoch.max(shared.leader_epoch()));
            }
            partition
        })
        .collect();
    // Only a topic left by an older Sluice can carry an internal name;
    // flagging it keeps it out of clients' pattern subscriptions.
    let response = MetadataResponseTopic::default()
        .with_name(Some(topic_name(&topic.name)))
        .with_is_internal(is_internal_topic(&topic.name))
        .with_partitions(partitions);
    if version >= 10 {
        response.with_topic_id(topic.id)
    } else {
        response
    }
}
