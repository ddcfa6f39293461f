//! JoinGroup: the first step of a classic rebalance. The request parks on the
//! group's coordinator shard until the state machine completes the rebalance.

use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse};

use crate::group::state::{JoinRequest, Output};
use crate::io::clock::now_ms;
use crate::protocol::errors::ErrorCode;
use crate::server::connection::RequestContext;
use crate::server::handlers::{check_group_id, on_coordinator, str_bytes};

pub async fn handle(ctx: &RequestContext, request: JoinGroupRequest) -> JoinGroupResponse {
    let version = ctx.api_version;
    let group_id = request.group_id.0.to_string();
    if let Err(code) = check_group_id(&group_id) {
        return error_response(code, version);
    }
    let client_id = ctx.client_id.clone().unwrap_or_default();
    let join = JoinRequest {
        member_id: request.member_id.to_string(),
        group_instance_id: request.group_instance_id.map(|s| s.to_string()),
        client_id: client_id.clone(),
        client_host: format!("/{}", ctx.conn.peer.ip()),
        session_timeout_ms: request.session_timeout_ms,
        // v0 has no rebalance timeout: Kafka uses the session timeout.
        rebalance_timeout_ms: if version >= 1 {
            request.rebalance_timeout_ms
        } else {
            request.session_timeout_ms
        },
        protocol_type: request.protocol_type.to_string(),
        protocols: request
            .protocols
            .into_iter()
            .map(|p| (p.name.to_string(), p.metadata))
            .collect(),
        require_known_member_id: version >= 4,
    };
    let output = on_coordinator(ctx, &group_id.clone(), move |coordinator| async move {
        let gid = group_id.clone();
        coordinator
            .park_on_group(&gid, move |group, id, config| {
                let new_member_id = move || format!("{client_id}-{}", uuid::Uuid::new_v4());
                group.join(join, id, now_ms(), config, new_member_id)
            })
            .await
    })
    .await;
    let output = match output {
        Ok(output) => output,
        Err(code) => return error_response(code, version),
    };
    let Some(Output::Join(_, join)) = output else {
        return error_response(ErrorCode::CoordinatorNotAvailable, version);
    };
    let mut response = JoinGroupResponse::default()
        .with_error_code(join.error.map_or(0, |e| e.code()))
        .with_generation_id(join.generation_id)
        .with_leader(str_bytes(join.leader))
        .with_member_id(str_bytes(join.member_id))
        .with_members(
            join.members
                .into_iter()
                .map(|m| {
                    let member = JoinGroupResponseMember::default()
                        .with_member_id(str_bytes(m.member_id))
                        .with_metadata(m.metadata);
                    if version >= 5 {
                        member.with_group_instance_id(m.group_instance_id.map(str_bytes))
                    } else {
                        member
                    }
                })
                .collect(),
        );
    // The protocol name is nullable from v7 only; before that an empty string stands for none.
    response.protocol_name = Some(str_bytes(join.protocol_name.clone().unwrap_or_default()));
    if version >= 7 {
        response.protocol_name = join.protocol_name.map(str_bytes);
        response.protocol_type = join.protocol_type.map(str_bytes);
    }
    response
}

fn error_response(code: ErrorCode, version: i16) -> JoinGroupResponse {
    let mut response = JoinGroupResponse::default()
        .with_error_code(code.code())
        .with_generation_id(-1);
    response.protocol_name = if version >= 7 {
        None
    } else {
        Some(str_bytes(""))
    };
    response
}
