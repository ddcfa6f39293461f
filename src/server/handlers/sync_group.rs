//! SyncGroup: the leader hands out the assignment; every member waits for its share.

use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};

use crate::group::state::{Output, SyncRequest};
use crate::io::clock::now_ms;
use crate::protocol::errors::ErrorCode;
use crate::server::connection::RequestContext;
use crate::server::handlers::{check_group_id, on_coordinator, str_bytes};

pub async fn handle(ctx: &RequestContext, request: SyncGroupRequest) -> SyncGroupResponse {
    let version = ctx.api_version;
    let group_id = request.group_id.0.to_string();
    if let Err(code) = check_group_id(&group_id) {
        return SyncGroupResponse::default().with_error_code(code.code());
    }
    let sync = SyncRequest {
        member_id: request.member_id.to_string(),
        group_instance_id: request.group_instance_id.map(|s| s.to_string()),
        generation_id: request.generation_id,
        protocol_type: request.protocol_type.map(|s| s.to_string()),
        protocol_name: request.protocol_name.map(|s| s.to_string()),
        assignments: request
            .assignments
            .into_iter()
            .map(|a| (a.member_id.to_string(), a.assignment))
            .collect(),
    };
    let output = on_coordinator(ctx, &group_id.clone(), move |coordinator| async move {
        let gid = group_id.clone();
        coordinator
            .park_on_group(&gid, move |group, id, _| group.sync(sync, id, now_ms()))
            .await
    })
    .await;
    let output = match output {
        Ok(output) => output,
        Err(code) => return SyncGroupResponse::default().with_error_code(code.code()),
    };
    let Some(Output::Sync(_, sync)) = output else {
        return SyncGroupResponse::default()
            .with_error_code(ErrorCode::CoordinatorNotAvailable.code());
    };
    let mut response = SyncGroupResponse::default()
        .with_error_code(sync.error.map_or(0, |e| e.code()))
        .with_assignment(sync.assignment);
    if version >= 5 {
        response.protocol_type = sync.protocol_type.map(str_bytes);
        response.protocol_name = sync.protocol_name.map(str_bytes);
    }
    response
}
