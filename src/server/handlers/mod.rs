//! One file per Kafka API. Each handler has the same shape: take the decoded
//! request, validate, route per-partition work to the owning shards, gather, and
//! return the response struct (the dispatcher encodes it).

pub mod alter_configs;
pub mod api_versions;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_records;
pub mod delete_topics;
pub mod describe_cluster;
pub mod describe_configs;
pub mod fetch;
pub mod find_coordinator;
pub mod incremental_alter_configs;
pub mod init_producer_id;
pub mod list_offsets;
pub mod metadata;
pub mod produce;

use std::sync::Arc;

use kafka_protocol::messages::TopicName;
use kafka_protocol::protocol::StrBytes;

use crate::metadata::TopicMeta;
use crate::protocol::errors::ErrorCode;
use crate::server::dispatch::RequestContext;

pub(crate) fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

pub(crate) fn str_bytes(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

/// Resolves a topic by name, or by id when the name is empty (the newer
/// versions of Produce and Fetch name topics by id).
pub(crate) fn resolve_topic(
    ctx: &RequestContext,
    name: &str,
    id: &uuid::Uuid,
) -> Result<Arc<TopicMeta>, ErrorCode> {
    let image = ctx.conn.shard.broker.image();
    if !id.is_nil() {
        return image
            .topic_by_id(id)
            .cloned()
            .ok_or(ErrorCode::UnknownTopicId);
    }
    image
        .topic(name)
        .cloned()
        .ok_or(ErrorCode::UnknownTopicOrPartition)
}
