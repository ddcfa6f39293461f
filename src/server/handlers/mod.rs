//! One file per Kafka API (ApiVersions, which answers with the registry
//! itself, is in `server/registry.rs`). Each handler has the same shape: take
//! the decoded request, validate, route per-partition work to the owning
//! shards, gather, and return the response struct (the registry's entry
//! decodes the request and encodes the response).

pub mod alter_configs;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_groups;
pub mod delete_records;
pub mod delete_topics;
pub mod describe_cluster;
pub mod describe_configs;
pub mod describe_groups;
pub mod fetch;
pub mod find_coordinator;
pub mod heartbeat;
pub mod incremental_alter_configs;
pub mod init_producer_id;
pub mod join_group;
pub mod leave_group;
pub mod list_groups;
pub mod list_offsets;
pub mod metadata;
pub mod offset_commit;
pub mod offset_delete;
pub mod offset_fetch;
pub mod produce;
pub mod sync_group;

use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;

use kafka_protocol::messages::TopicName;
use kafka_protocol::protocol::StrBytes;

use crate::group::coordinator::{GroupCoordinator, GROUP_ID_LEN_MAX};
use crate::group::coordinator_shard;
use crate::metadata::TopicMeta;
use crate::protocol::errors::ErrorCode;
use crate::server::connection::RequestContext;

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
    let image = ctx.conn.shard.node.image();
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

/// Kafka refuses empty group ids with INVALID_GROUP_ID; so do we, and overlong ones.
pub(crate) fn check_group_id(group_id: &str) -> Result<(), ErrorCode> {
    if group_id.is_empty() || group_id.len() > GROUP_ID_LEN_MAX {
        return Err(ErrorCode::InvalidGroupId);
    }
    Ok(())
}

/// Runs `f` with the coordinator of `group_id`, on that group's shard. (A plain
/// fn returning the future, so that the future borrows `ctx` but not `group_id`.)
pub(crate) fn on_coordinator<'a, R, F, Fut>(
    ctx: &'a RequestContext,
    group_id: &str,
    f: F,
) -> impl Future<Output = R> + 'a
where
    R: Send + 'static,
    F: FnOnce(Rc<GroupCoordinator>) -> Fut + Send + 'static,
    Fut: Future<Output = R> + 'static,
{
    let shard = &ctx.conn.shard;
    let target = coordinator_shard(group_id, shard.shard_count());
    shard.run_on(target, move |s| f(s.groups()))
}
