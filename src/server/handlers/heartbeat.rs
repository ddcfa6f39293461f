//! Heartbeat: keeps a member's session alive and tells it when to rejoin.

use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};

use crate::io::clock::now_ms;
use crate::protocol::errors::ErrorCode;
use crate::server::connection::RequestContext;
use crate::server::handlers::{check_group_id, on_coordinator};

pub async fn handle(ctx: &RequestContext, request: HeartbeatRequest) -> HeartbeatResponse {
    let group_id = request.group_id.0.to_string();
    if let Err(code) = check_group_id(&group_id) {
        return HeartbeatResponse::default().with_error_code(code.code());
    }
    let member_id = request.member_id.to_string();
    let instance_id = request.group_instance_id.map(|s| s.to_string());
    let generation_id = request.generation_id;
    let code = on_coordinator(ctx, &group_id.clone(), move |coordinator| async move {
        let result = coordinator.with_group(&group_id, |group| {
            group.heartbeat(&member_id, instance_id.as_deref(), generation_id, now_ms())
        });
        match result {
            Some(Ok(())) => 0,
            Some(Err(error)) => error.code(),
            None => ErrorCode::UnknownMemberId.code(),
        }
    })
    .await
    .unwrap_or_else(|code| code.code());
    HeartbeatResponse::default().with_error_code(code)
}
