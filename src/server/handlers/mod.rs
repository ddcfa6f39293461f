//! One file per Kafka API (ApiVersions, which answers with the registry
//! itself, is in `server/registry.rs`). Each handler has the same shape: take
//! the decoded request, validate, route per-partition work to the owning
//! shards, gather, and return the response struct (the registry's entry
//! decodes the request and encodes the response).

pub mod add_offsets_to_txn;
pub mod add_partitions_to_txn;
pub mod alter_configs;
pub mod alter_partition_reassignments;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_groups;
pub mod delete_records;
pub mod delete_topics;
pub mod describe_cluster;
pub mod describe_configs;
pub mod describe_groups;
pub mod describe_producers;
pub mod describe_quorum;
pub mod describe_transactions;
pub mod elect_leaders;
pub mod end_txn;
pub mod fetch;
pub mod find_coordinator;
pub mod heartbeat;
pub mod incremental_alter_configs;
pub mod init_producer_id;
pub mod join_group;
pub mod leave_group;
pub mod list_groups;
pub mod list_offsets;
pub mod list_partition_reassignments;
pub mod list_transactions;
pub mod metadata;
pub mod offset_commit;
pub mod offset_delete;
pub mod offset_fetch;
pub mod offset_for_leader_epoch;
pub mod produce;
pub mod sync_group;
pub mod txn_offset_commit;
pub mod write_txn_markers;

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
use crate::txn::coordinator::TxnCoordinator;

pub(crate) fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

pub(crate) fn str_bytes(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

/// Resolves a topic a client may write by name, or by id when the name is
/// empty (the newer versions of Produce name topics by id).
pub(crate) fn resolve_topic(
    ctx: &RequestContext,
    name: &str,
    id: &uuid::Uuid,
) -> Result<Arc<TopicMeta>, ErrorCode> {
    let image = ctx.conn.shard.node.image();
    if !id.is_nil() {
        return image
            .user_topic_by_id(id)
            .cloned()
            .ok_or(ErrorCode::UnknownTopicId);
    }
    image
        .user_topic(name)
        .cloned()
        .ok_or(ErrorCode::UnknownTopicOrPartition)
}

/// Whether a request naming broker `id` as its sender may come from it (a
/// follower's Fetch, a coordinator's WriteTxnMarkers): `id` is a live
/// registered broker other than this one, and, when its registered host is
/// an IP address, the connection comes from that address. (Kafka asks for
/// the ClusterAction permission; until Sluice has ACLs this keeps a client
/// from posing as a broker by merely naming one.)
pub(crate) fn is_peer_broker(ctx: &RequestContext, id: i32) -> bool {
    let node = &ctx.conn.shard.node;
    if id == node.config.node_id {
        return false;
    }
    let image = node.image();
    let Some(broker) = image.brokers.get(&id).filter(|b| !b.fenced) else {
        return false;
    };
    match broker.host.parse::<std::net::IpAddr>() {
        Ok(ip) => ip == ctx.conn.peer.ip(),
        Err(_) => true,
    }
}

/// Whether the request comes from a coordinator on another broker (its
/// client id names the broker: `node::txn_env::COORDINATOR_CLIENT_PREFIX`).
pub(crate) fn from_peer_coordinator(ctx: &RequestContext) -> bool {
    ctx.client_id
        .as_deref()
        .and_then(|id| id.strip_prefix(crate::node::txn_env::COORDINATOR_CLIENT_PREFIX))
        .and_then(|id| id.parse::<i32>().ok())
        .is_some_and(|id| is_peer_broker(ctx, id))
}

/// The group APIs of a group coordinated by Kafka (JoinGroup, SyncGroup,
/// Heartbeat, LeaveGroup, TxnOffsetCommit, OffsetDelete) refuse an empty
/// group id with INVALID_GROUP_ID; so do we, and overlong ones everywhere.
pub(crate) fn check_group_id(group_id: &str) -> Result<(), ErrorCode> {
    if group_id.is_empty() {
        return Err(ErrorCode::InvalidGroupId);
    }
    check_group_id_len(group_id)
}

/// OffsetCommit, OffsetFetch, DescribeGroups and DeleteGroups take the
/// empty group id, as Kafka does "for backwards compatibility" (KIP-289:
/// older clients commit under `group.id=""`); only an overlong one is
/// refused.
pub(crate) fn check_group_id_len(group_id: &str) -> Result<(), ErrorCode> {
    if group_id.len() > GROUP_ID_LEN_MAX {
        return Err(ErrorCode::InvalidGroupId);
    }
    Ok(())
}

/// Runs `f` with the coordinator of `group_id`, on that group's shard, if
/// this broker coordinates it: else NOT_COORDINATOR (another broker leads
/// the group's offsets partition) or COORDINATOR_LOAD_IN_PROGRESS. (A plain
/// fn returning the future, so that the future borrows `ctx` but not
/// `group_id`.)
pub(crate) fn on_coordinator<'a, R, F, Fut>(
    ctx: &'a RequestContext,
    group_id: &str,
    f: F,
) -> impl Future<Output = Result<R, ErrorCode>> + 'a
where
    R: Send + 'static,
    F: FnOnce(Rc<GroupCoordinator>) -> Fut + Send + 'static,
    Fut: Future<Output = R> + 'static,
{
    let shard = &ctx.conn.shard;
    let target = coordinator_shard(group_id, shard.shard_count());
    let group_id = group_id.to_string();
    shard.run_on(target, move |s| async move {
        let coordinator = s.groups();
        coordinator.serves(&group_id)?;
        Ok(f(coordinator).await)
    })
}

/// Runs `f` with the transaction coordinator of `transactional_id`, on its
/// shard, if this broker coordinates it: else NOT_COORDINATOR or
/// COORDINATOR_LOAD_IN_PROGRESS.
pub(crate) fn on_txn_coordinator<'a, R, F, Fut>(
    ctx: &'a RequestContext,
    transactional_id: &str,
    f: F,
) -> impl Future<Output = Result<R, ErrorCode>> + 'a
where
    R: Send + 'static,
    F: FnOnce(Rc<TxnCoordinator>) -> Fut + Send + 'static,
    Fut: Future<Output = R> + 'static,
{
    let shard = &ctx.conn.shard;
    let target = crate::txn::coordinator::coordinator_shard(
        transactional_id,
        crate::txn::coordinator::log_partitions(
            &shard.node,
            shard.node.config.transaction_state_log_num_partitions,
        ),
        shard.shard_count(),
    );
    let transactional_id = transactional_id.to_string();
    shard.run_on(target, move |s| async move {
        let coordinator = s.txns();
        coordinator.serves(&transactional_id)?;
        Ok(f(coordinator).await)
    })
}

/// Kafka answers PRODUCER_FENCED as INVALID_PRODUCER_EPOCH to clients of
/// versions that predate it.
pub(crate) fn fenced_for(
    version: i16,
    first_version_with_fenced: i16,
    code: ErrorCode,
) -> ErrorCode {
    if code == ErrorCode::ProducerFenced && version < first_version_with_fenced {
        ErrorCode::InvalidProducerEpoch
    } else {
        code
    }
}
