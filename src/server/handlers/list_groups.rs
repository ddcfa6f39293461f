//! ListGroups: the groups of every coordinator shard, filtered by state (v4+)
//! and type (v5+); COORDINATOR_LOAD_IN_PROGRESS while a partition of
//! `__consumer_offsets` led here loads, as Kafka answers.

use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};

use crate::protocol::errors::ErrorCode;
use crate::server::connection::RequestContext;
use crate::server::handlers::str_bytes;

pub async fn handle(ctx: &RequestContext, request: ListGroupsRequest) -> ListGroupsResponse {
    let version = ctx.api_version;
    let shard = &ctx.conn.shard;
    let lists = (0..shard.shard_count()).map(|target| {
        shard.run_on(target, |s| async move {
            let groups = s.groups();
            let listed = groups
                .list()
                .into_iter()
                .map(|(id, state, protocol_type)| (id, state.name(), protocol_type))
                .collect::<Vec<_>>();
            (crate::node::coordinators::groups_incomplete(&s), listed)
        })
    });
    let states: Vec<String> = request
        .states_filter
        .iter()
        .map(|s| s.to_lowercase())
        .collect();
    let types: Vec<String> = request
        .types_filter
        .iter()
        .map(|s| s.to_lowercase())
        .collect();
    let lists = futures_util::future::join_all(lists).await;
    // Kafka lists nothing while a partition of its groups loads: a list
    // without that partition's groups would look whole.
    if lists.iter().any(|(loading, _)| *loading) {
        return ListGroupsResponse::default()
            .with_error_code(ErrorCode::CoordinatorLoadInProgress.code());
    }
    let mut groups = Vec::new();
    for (_, list) in lists {
        for (group_id, state, protocol_type) in list {
            if version >= 4 && !states.is_empty() && !states.contains(&state.to_lowercase()) {
                continue;
            }
            if version >= 5 && !types.is_empty() && !types.iter().any(|t| t == "classic") {
                continue;
            }
            let mut listed = ListedGroup::default()
                .with_group_id(GroupId(str_bytes(group_id)))
                .with_protocol_type(str_bytes(protocol_type));
            if version >= 4 {
                listed.group_state = str_bytes(state);
            }
            if version >= 5 {
                listed.group_type = str_bytes("classic");
            }
            groups.push(listed);
        }
    }
    groups.sort_by(|a, b| a.group_id.0.cmp(&b.group_id.0));
    ListGroupsResponse::default().with_groups(groups)
}
