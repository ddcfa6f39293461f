//! DescribeGroups: state, protocol and members (with their metadata and
//! assignments) of each group. An unknown group is reported as Dead, as Kafka does.

use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse};

use crate::group::state::GroupState;
use crate::server::connection::RequestContext;
use crate::server::handlers::{check_group_id_len, on_coordinator, str_bytes};

/// Operations a client may perform on a group with no authorizer: READ 3,
/// DELETE 6, DESCRIBE 8 (AclOperation bits).
const GROUP_OPERATIONS: i32 = (1 << 3) | (1 << 6) | (1 << 8);

pub async fn handle(
    ctx: &RequestContext,
    request: DescribeGroupsRequest,
) -> DescribeGroupsResponse {
    let version = ctx.api_version;
    let mut described = Vec::with_capacity(request.groups.len());
    for group_id in request.groups {
        let id = group_id.0.to_string();
        let mut out = DescribedGroup::default().with_group_id(group_id.clone());
        if let Err(code) = check_group_id_len(&id) {
            described.push(
                out.with_error_code(code.code())
                    .with_group_state(str_bytes("Dead")),
            );
            continue;
        }
        let gid = id.clone();
        let described_group = on_coordinator(ctx, &id, move |coordinator| async move {
            let state = coordinator.group_state(&gid).unwrap_or(GroupState::Dead);
            let details = coordinator.with_group(&gid, |g| {
                (
                    g.protocol_type().map(str::to_string),
                    g.protocol_name().map(str::to_string),
                    g.members(),
                )
            });
            let (protocol_type, protocol, members) = details.unwrap_or((None, None, Vec::new()));
            (state.name(), protocol_type, protocol, members)
        })
        .await;
        let (state, protocol_type, protocol, members) = match described_group {
            Ok(described) => described,
            Err(code) => {
                described.push(
                    out.with_error_code(code.code())
                        .with_group_state(str_bytes("Dead")),
                );
                continue;
            }
        };
        out = out
            .with_group_state(str_bytes(state))
            .with_protocol_type(str_bytes(protocol_type.unwrap_or_default()))
            .with_protocol_data(str_bytes(protocol.unwrap_or_default()))
            .with_members(
                members
                    .into_iter()
                    .map(|m| {
                        let member = DescribedGroupMember::default()
                            .with_member_id(str_bytes(m.member_id))
                            .with_client_id(str_bytes(m.client_id))
                            .with_client_host(str_bytes(m.client_host))
                            .with_member_metadata(m.metadata)
                            .with_member_assignment(m.assignment);
                        if version >= 4 {
                            member.with_group_instance_id(m.group_instance_id.map(str_bytes))
                        } else {
                            member
                        }
                    })
                    .collect(),
            );
        if version >= 3 && request.include_authorized_operations {
            out.authorized_operations = GROUP_OPERATIONS;
        }
        described.push(out);
    }
    DescribeGroupsResponse::default().with_groups(described)
}
