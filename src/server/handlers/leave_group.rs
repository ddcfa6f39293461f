//! LeaveGroup: one member (v0-2) or several (v3+, KIP-345 batch leave).

use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};

use crate::group::state::LeaveMember;
use crate::io::clock::now_ms;
use crate::protocol::errors::ErrorCode;
use crate::server::connection::RequestContext;
use crate::server::handlers::{check_group_id, on_coordinator, str_bytes};

pub async fn handle(ctx: &RequestContext, request: LeaveGroupRequest) -> LeaveGroupResponse {
    let version = ctx.api_version;
    let group_id = request.group_id.0.to_string();
    if let Err(code) = check_group_id(&group_id) {
        return LeaveGroupResponse::default().with_error_code(code.code());
    }
    let members: Vec<LeaveMember> = if version >= 3 {
        request
            .members
            .iter()
            .map(|m| LeaveMember {
                member_id: m.member_id.to_string(),
                group_instance_id: m.group_instance_id.as_ref().map(|s| s.to_string()),
            })
            .collect()
    } else {
        vec![LeaveMember {
            member_id: request.member_id.to_string(),
            group_instance_id: None,
        }]
    };
    let leaving = members.clone();
    let results = on_coordinator(ctx, &group_id.clone(), move |coordinator| async move {
        coordinator
            .with_group_delivering(&group_id, |group| group.leave(&leaving, now_ms()))
            .map(|results| {
                results
                    .into_iter()
                    .map(|r| r.err().map_or(0, |e| e.code()))
                    .collect::<Vec<i16>>()
            })
    })
    .await;
    let results = match results {
        Ok(results) => results,
        Err(code) => return LeaveGroupResponse::default().with_error_code(code.code()),
    };
    let Some(codes) = results else {
        return LeaveGroupResponse::default().with_error_code(ErrorCode::UnknownMemberId.code());
    };
    if version < 3 {
        return LeaveGroupResponse::default().with_error_code(codes.first().copied().unwrap_or(0));
    }
    let members = members
        .into_iter()
        .zip(codes)
        .map(|(m, code)| {
            MemberResponse::default()
                .with_member_id(str_bytes(m.member_id))
                .with_group_instance_id(m.group_instance_id.map(str_bytes))
                .with_error_code(code)
        })
        .collect();
    LeaveGroupResponse::default().with_members(members)
}
